"""amitool ready.d hook: let LocalStack's STS run on Python 3.11.

localstack-core 4.14.0 declares Requires-Python >=3.10, but
localstack/services/stores.py uses Python 3.12 generic class syntax
(`class RegionBundle[BaseStoreType](dict):`).  On 3.11 importing it raises
SyntaxError, so every provider built on LocalStack stores fails with
"InternalError: invalid syntax (stores.py, line 193)": among the services
amitool starts that is STS (GetCallerIdentity).  EC2, SSM and EBS are moto
based and unaffected.

On 3.11 this hook compiles stores.py with the two class headers written
without the type parameter (BaseStoreType is already a module-level TypeVar,
so nothing else changes) and registers the module before the first STS
request imports it.  On 3.12 or later it does nothing.

LocalStack exec()s this file inside its own process; see localstack/README.md.
"""

import importlib.util
import logging
import re
import sys

LOG = logging.getLogger("amitool.hooks.py311")
MODULE = "localstack.services.stores"


def _amitool_load_stores_for_py311():
    if sys.version_info >= (3, 12) or MODULE in sys.modules:
        return
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.origin:
        raise RuntimeError(f"amitool hook: cannot find {MODULE}")
    with open(spec.origin, encoding="utf-8") as handle:
        source = handle.read()
    try:
        compile(source, spec.origin, "exec")
        return  # a LocalStack that already works on this Python
    except SyntaxError:
        pass
    rewritten, count = re.subn(
        r"^class (\w+)\[BaseStoreType\]\(", r"class \1(", source, flags=re.MULTILINE
    )
    if count == 0:
        raise RuntimeError(f"amitool hook: {spec.origin} has no generic class to rewrite")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE] = module
    try:
        exec(compile(rewritten, spec.origin, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[MODULE]
        raise
    parent, _, name = MODULE.rpartition(".")
    setattr(sys.modules[parent], name, module)
    LOG.info("amitool: loaded %s for Python 3.11 (%d class headers rewritten)", MODULE, count)


_amitool_load_stores_for_py311()
