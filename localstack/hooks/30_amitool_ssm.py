"""amitool's stand-in SSM agent for LocalStack (ready.d hook, exec'd in-process).

LocalStack's SSM (moto) answers SendCommand with Success and empty output and
runs nothing. This hook plays the agent for amitool's preparation script
only, and runs it for real on the instance's volumes: there are no block
devices to attach here, so every volume EC2 has attached to the instance
becomes a file in a fresh directory, named after its device (sdf, from
/dev/sdf) and holding the volume's data (25_amitool_volumes.py), beside
sdf.volume-id with the volume's id. The script is run unchanged with
AMITOOL_VOLUME_DIR pointing there; its device guard checks those files as it
checks block devices (exact size, expected volume id). What it writes lands
in the volume, so a later CreateSnapshot holds it. As on AWS, SendCommand
returns at once and the invocation stays InProgress while the script runs (a
thread); then its real output and exit status are returned. It also makes a new invocation unknown for a moment
(InvocationDoesNotExist), as AWS does right after SendCommand, and reports it
as a JSON error (moto's is XML, which the SSM JSON protocol cannot parse).
Any other command is left to moto.
"""
import base64
import os
import re
import subprocess
import tempfile
import threading
import time

from moto.core.exceptions import JsonRESTError
from moto.ssm import models as ssm_models

_AMITOOL = re.compile(
    r"^echo ([A-Za-z0-9+/=]+) \| base64 -d > (/tmp/amitool-mig-[0-9a-f]{12}\.sh) && bash \2$"
)
_original_init = ssm_models.Command.__init__
_original_get = ssm_models.Command.get_invocation


def _attached_volumes(account_id, region, instance_id):
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[account_id][region]
    return [
        volume
        for volume in backend.volumes.values()
        if volume.attachment is not None and volume.attachment.instance.id == instance_id
    ]


def _amitool_script(command):
    """The body of amitool's preparation script in `command`, or None."""
    match = _AMITOOL.match(command)
    if not match:
        return None
    body = base64.b64decode(match.group(1)).decode("utf-8", "replace")
    if not body.startswith("#!/bin/bash\n# amitool's preparation script"):
        return None
    return body


def _run_amitool_script(body, volumes):
    """Run `body` on `volumes` ((device name, volume file, volume id)): its
    exit status, output and error output."""
    import amitool_volumes

    # Beside the volume files: the devices are hard links to them.
    with tempfile.TemporaryDirectory(prefix="ssm-", dir=amitool_volumes.volumes_dir()) as devices:
        for name, path, volume_id in volumes:
            os.link(path, os.path.join(devices, name))
            with open(os.path.join(devices, name + ".volume-id"), "w") as f:
                f.write(volume_id)
        script = os.path.join(devices, "script.sh")
        with open(script, "w") as f:
            f.write(body)
        env = {"AMITOOL_VOLUME_DIR": devices, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        # Anything the script stamps with the clock is stamped as the tests
        # fix it (E2FSPROGS_FAKE_TIME), so the helper's disk and the direct
        # method's compare byte for byte.
        if os.environ.get("AMITOOL_AGENT_FAKE_TIME"):
            env["E2FSPROGS_FAKE_TIME"] = os.environ["AMITOOL_AGENT_FAKE_TIME"]
        try:
            done = subprocess.run(
                ["bash", script],
                env=env,
                capture_output=True,
                text=True,
                timeout=3600,
            )
        except subprocess.TimeoutExpired:
            return 124, "", "the script ran for more than 3600 s"
    return done.returncode, done.stdout[-24000:], done.stderr[-8000:]


def _finish(command, inv, body, volumes):
    try:
        code, out, err = _run_amitool_script(body, volumes)
    except Exception as e:  # the agent reports, it never leaves a command running
        code, out, err = 1, "", f"the stand-in agent failed: {e}"
    status = "Success" if code == 0 else "Failed"
    # One dict update, so a reader sees the whole result or none of it.
    inv.update(
        {
            "ResponseCode": code,
            "Status": status,
            "StatusDetails": status,
            "StandardOutputContent": out,
            "StandardErrorContent": err,
        }
    )
    command.status = status
    command.status_details = status


def _init(self, *args, **kwargs):
    """As on AWS, SendCommand returns at once and the invocation is
    InProgress until the script ends (run in a thread, on the volumes
    attached when the command was sent)."""
    import amitool_volumes

    _original_init(self, *args, **kwargs)
    self._amitool_ready_at = time.time() + 0.3
    if self.document_name != "AWS-RunShellScript":
        return
    commands = (self.parameters or {}).get("commands") or []
    if len(commands) != 1:
        return
    body = _amitool_script(commands[0])
    if body is None:
        return
    for inv in self.invocations:
        volumes = [
            (
                os.path.basename(v.attachment.device),
                amitool_volumes.volume_file(v),
                v.id,
            )
            for v in _attached_volumes(self.account_id, self.backend_region, inv["InstanceId"])
        ]
        inv.update({"Status": "InProgress", "StatusDetails": "InProgress"})
        self.status = self.status_details = "InProgress"
        threading.Thread(
            target=_finish, args=(self, inv, body, volumes), daemon=True
        ).start()


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


# The instance profile a launched helper needs (its SSM agent registers with
# it on AWS): amitool refuses to launch a helper without one, and EC2 (moto
# here) refuses a profile IAM does not have, so the tests' profile exists.
HELPER_PROFILE = "amitool-helper-ssm"


def _seed_helper_profile():
    from moto.iam.models import iam_backends

    iam = iam_backends["000000000000"]["global"]
    if not iam.instance_profiles.get(HELPER_PROFILE) and HELPER_PROFILE not in {
        p.name for p in iam.instance_profiles.values()
    }:
        iam.create_instance_profile(HELPER_PROFILE, "/", [])


_seed_helper_profile()
