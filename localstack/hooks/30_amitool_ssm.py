"""amitool's stand-in SSM agent for LocalStack (ready.d hook, exec'd in-process).

LocalStack's SSM (moto) answers SendCommand with Success and empty output and
runs nothing. This hook plays the agent for amitool's preparation script
only, and honestly: it runs the script in its check-only mode
(AMITOOL_CHECK_ONLY=1), which validates every input and touches no device,
and returns the script's real output and exit status. It also makes a new
invocation unknown for a moment (InvocationDoesNotExist), as AWS does right
after SendCommand, and reports it as a JSON error (moto's is XML, which the
SSM JSON protocol cannot parse). Any other command is left to moto.
"""
import base64
import re
import subprocess
import tempfile
import time

from moto.core.exceptions import JsonRESTError
from moto.ssm import models as ssm_models

_AMITOOL = re.compile(
    r"^echo ([A-Za-z0-9+/=]+) \| base64 -d > (/tmp/amitool-mig-[0-9a-f]{12}\.sh) && bash \2$"
)
_original_init = ssm_models.Command.__init__
_original_get = ssm_models.Command.get_invocation


def _run_amitool_script(command):
    match = _AMITOOL.match(command)
    if not match:
        return None
    body = base64.b64decode(match.group(1)).decode("utf-8", "replace")
    if not body.startswith("#!/bin/bash\n# amitool's preparation script"):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(body)
        path = f.name
    done = subprocess.run(
        ["bash", path],
        env={"AMITOOL_CHECK_ONLY": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout[-24000:], done.stderr[-8000:]


def _init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self._amitool_ready_at = time.time() + 0.3
    if self.document_name != "AWS-RunShellScript":
        return
    commands = (self.parameters or {}).get("commands") or []
    if len(commands) != 1:
        return
    result = _run_amitool_script(commands[0])
    if result is None:
        return
    code, out, err = result
    status = "Success" if code == 0 else "Failed"
    self.status = status
    for inv in self.invocations:
        inv.update(
            {
                "ResponseCode": code,
                "Status": status,
                "StatusDetails": status,
                "StandardOutputContent": out,
                "StandardErrorContent": err,
            }
        )


def _get_invocation(self, instance_id, plugin_name):
    if time.time() < getattr(self, "_amitool_ready_at", 0):
        raise JsonRESTError("InvocationDoesNotExist", "The invocation does not exist yet")
    try:
        return _original_get(self, instance_id, plugin_name)
    except Exception as e:  # moto raises this one as XML, which SSM's JSON clients cannot read
        if "InvocationDoesNotExist" in str(e):
            raise JsonRESTError("InvocationDoesNotExist", "The invocation does not exist") from e
        raise


ssm_models.Command.__init__ = _init
ssm_models.Command.get_invocation = _get_invocation
