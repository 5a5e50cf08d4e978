"""amitool ready.d hook: let LocalStack's STS, S3 and Step Functions run on Python 3.11.

localstack-core 4.14.0 declares Requires-Python >=3.10, but some of its
modules use Python 3.12 syntax: localstack/services/stores.py
(`class RegionBundle[BaseStoreType](dict):`, so every provider built on
LocalStack stores fails with "InternalError: invalid syntax (stores.py, line
193)": among the services amitool starts, STS), and on the way to S3 and
Step Functions the modules of PY312_MODULES; localstack/packages/api.py
evaluates `Lock | None`, and threading.Lock is a function before 3.13. EC2,
SSM and EBS are moto based and unaffected.

This hook puts an import finder first on sys.meta_path that loads exactly
those modules from their source rewritten for 3.11 (see
_py312_syntax_for_py311), before the first request imports them.

S3 (utils/tagging.py) imports `deprecated` from `warnings`, which Python
3.13 added; on older Pythons this hook puts typing_extensions' identical
decorator there.

LocalStack exec()s this file inside its own process; see localstack/README.md.
"""

import importlib.machinery
import importlib.util
import logging
import re
import sys

LOG = logging.getLogger("amitool.hooks.py311")


def _py312_syntax_for_py311(source):
    """What Python 3.12 syntax LocalStack uses, written for 3.11: PEP 695
    type parameters dropped from class and def headers (a class so made
    still takes a subscript, `MockedBaseState[CommonStateField]`, and
    ignores it) (`class
    RegionBundle[BaseStoreType](dict):`, `class MockedBaseState[T: X](...)`),
    `type Alias = ...` statements made assignments, and annotations postponed
    (PEP 563) so that the dropped parameters and `Lock | None` (threading.Lock
    is a function on 3.11) are never evaluated."""
    count = 0
    for pattern, replacement in (
        (
            r"^(\s*)(class \w+)\[[^\]\n]*\](\(.*\):)[ \t]*$",
            r"\1\2\3\n\1    __class_getitem__ = classmethod(lambda cls, item: cls)",
        ),
        (r"^(\s*(?:async\s+)?def \w+)\[[^\]\n]*\]\(", r"\1("),
        (r"^(\s*)type (\w+) = ", r"\1\2 = "),
    ):
        source, n = re.subn(pattern, replacement, source, flags=re.MULTILINE)
        count += n
    return "from __future__ import annotations\n" + source, count + 1


class _AmitoolRewritingLoader(importlib.machinery.SourceFileLoader):
    rewrite = None

    def get_code(self, fullname):
        # Always from the rewritten source: a cached .pyc is the original.
        source = self.get_source(fullname)
        rewritten, count = self.rewrite(source)
        if count == 0:
            raise ImportError(f"amitool hook: nothing to rewrite in {self.path}")
        LOG.info("amitool: loaded %s for Python 3.11 (%d rewrites)", fullname, count)
        return compile(rewritten, self.path, "exec", dont_inherit=True)


class _AmitoolRewritingFinder:
    """Finds the listed LocalStack modules and loads them rewritten."""

    def __init__(self, rewrites):
        self.rewrites = rewrites

    def find_spec(self, fullname, path=None, target=None):
        rewrite = self.rewrites.get(fullname)
        if rewrite is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not spec.origin:
            return None
        loader = _AmitoolRewritingLoader(fullname, spec.origin)
        loader.rewrite = staticmethod(rewrite)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


# The modules of localstack-core 4.14.0 that Python 3.11 cannot load as
# they are, among those EC2, SSM, STS, EBS, S3 and Step Functions import.
PY312_MODULES = (
    "localstack.services.stores",
    "localstack.services.events.models",
    "localstack.services.stepfunctions.asl.component.test_state.state.base_mock",
    "localstack.services.kms.utils",
    "localstack.services.sqs.queue",
    "localstack.state.pickle",
)
# `install_lock: Lock | None`: threading.Lock is a function before 3.13.
LOCK_MODULES = ("localstack.packages.api",)


def _amitool_py311_modules():
    import threading

    names = list(PY312_MODULES) if sys.version_info < (3, 12) else []
    if not isinstance(threading.Lock, type):
        names += LOCK_MODULES
    rewrites = {name: _py312_syntax_for_py311 for name in names if name not in sys.modules}
    if rewrites and not any(isinstance(f, _AmitoolRewritingFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AmitoolRewritingFinder(rewrites))


def _amitool_warnings_deprecated():
    """S3 imports `deprecated` from `warnings` (Python 3.13); typing_extensions
    has the same decorator."""
    import warnings

    if not hasattr(warnings, "deprecated"):
        from typing_extensions import deprecated

        warnings.deprecated = deprecated
        LOG.info("amitool: warnings.deprecated from typing_extensions (Python < 3.13)")


_amitool_py311_modules()
_amitool_warnings_deprecated()
