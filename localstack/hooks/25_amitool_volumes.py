"""amitool ready.d hook: give LocalStack's EBS volumes data, as AWS's have.

LocalStack exec()s this file inside its own process once all services are
ready (see localstack/README.md).  `__file__` and `__name__` are not defined
here, and every helper must be reached through this module's globals.

moto's volumes, and the snapshots CreateSnapshot makes of them, hold no
bytes: only snapshots written through the EBS direct API (20_amitool_ebs.py)
do.  On AWS a volume made from a snapshot has the snapshot's blocks, a
snapshot of a volume has the volume's, and an instance's root volume is made
from its image's snapshot.  This hook models that, so that the stand-in SSM
agent (30_amitool_ssm.py) can run amitool's script on real volume contents
and the image amitool registers afterwards holds what the script wrote:

1. A volume's data is a sparse file `$FILESYSTEM_ROOT/amitool-volumes/<id>`,
   made on first use from the blocks of the snapshot the volume was created
   from (when the EBS direct API holds any), holes elsewhere.
2. CreateSnapshot of a volume with data gives the new snapshot the volume's
   non-zero 512 KiB blocks, with their SHA256 checksums, readable through
   ListSnapshotBlocks / GetSnapshotBlock like any snapshot uploaded there.
   The file is made when the volume is (from a snapshot, or an instance's
   root), so that a test can write into a running instance's volume as its
   guest would, and the next snapshot holds what it wrote; the snapshot is
   of the volume's lineage (ListChangedBlocks compares within one).
3. DeleteVolume deletes the volume's file.
4. RunInstances without block device mappings makes the root volume from the
   image's root snapshot, at the image's root device name and size, as AWS
   does (moto attaches an empty 8 GiB volume at /dev/sda1 whatever the
   image).  Only for images whose mappings the EC2 hook keeps.

The agent reaches `volume_file` and `volumes_dir` through the module
`amitool_volumes`.
"""

import base64
import hashlib
import logging
import os
import sys
import tempfile
import types

LOG = logging.getLogger("amitool.hooks.volumes")

EBS_BLOCK_SIZE = 524288


def _volumes_dir():
    root = os.environ.get("FILESYSTEM_ROOT") or tempfile.gettempdir()
    path = os.path.join(root, "amitool-volumes")
    os.makedirs(path, exist_ok=True)
    return path


def _as_bytes(data):
    return data if isinstance(data, bytes) else str(data).encode("utf-8")


def _ebs_snapshot(account_id, region, snapshot_id):
    from moto.ebs.models import ebs_backends

    if not snapshot_id:
        return None
    return ebs_backends[account_id][region].snapshots.get(snapshot_id)


def _volume_path(volume):
    return os.path.join(_volumes_dir(), volume.id)


def volume_file(volume):
    """The volume's data as a file, made from its snapshot's blocks on first use."""
    path = _volume_path(volume)
    if os.path.exists(path):
        return path
    backend = volume.ec2_backend
    source = _ebs_snapshot(backend.account_id, backend.region_name, volume.snapshot_id)
    partial = path + ".partial"
    with open(partial, "wb") as f:
        f.truncate(volume.size << 30)
        for index, block in sorted((source.blocks if source else {}).items(), key=lambda kv: int(kv[0])):
            f.seek(int(index) * EBS_BLOCK_SIZE)
            f.write(_as_bytes(block.block_data))
    os.rename(partial, path)
    return path


def _blocks_of_file(path):
    """(index, bytes) of every 512 KiB block of the file that is not all zeros."""
    zero = bytes(EBS_BLOCK_SIZE)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break  # only a hole is left
            end = os.lseek(fd, start, os.SEEK_HOLE)
            index = start // EBS_BLOCK_SIZE
            while index * EBS_BLOCK_SIZE < end:
                f.seek(index * EBS_BLOCK_SIZE)
                data = f.read(EBS_BLOCK_SIZE)
                data += bytes(EBS_BLOCK_SIZE - len(data))
                if data != zero:
                    yield index, data
                index += 1
            offset = index * EBS_BLOCK_SIZE


def _snapshot_blocks(volume):
    """The blocks a snapshot of this volume holds: the volume file's, else its source snapshot's."""
    from moto.ebs.models import Block

    path = _volume_path(volume)
    if os.path.exists(path):
        blocks = {}
        for index, data in _blocks_of_file(path):
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            blocks[str(index)] = Block(data, checksum, "SHA256", str(len(data)))
        return blocks
    backend = volume.ec2_backend
    source = _ebs_snapshot(backend.account_id, backend.region_name, volume.snapshot_id)
    if source is not None and source.blocks:
        return dict(source.blocks)
    return None


def _patch_volumes():
    from moto.ebs.models import EBSSnapshot, ebs_backends
    from moto.ec2.models.elastic_block_store import EBSBackend

    if getattr(EBSBackend, "_amitool_volumes_patched", False):
        return
    original_create_snapshot = EBSBackend.create_snapshot
    original_delete_volume = EBSBackend.delete_volume
    original_create_volume = EBSBackend.create_volume

    def create_volume(self, *args, **kwargs):
        volume = original_create_volume(self, *args, **kwargs)
        if volume.snapshot_id:
            volume_file(volume)
        return volume

    def create_snapshot(self, volume_id, description, owner_id=None, from_ami=None):
        snapshot = original_create_snapshot(self, volume_id, description, owner_id, from_ami)
        blocks = _snapshot_blocks(snapshot.volume)
        if blocks:
            ebs_snapshot = EBSSnapshot(self.account_id, snapshot)
            ebs_snapshot.blocks = blocks
            ebs_snapshot.status = "completed"
            ebs_snapshot.lineage = volume_id
            snapshot.status = "completed"  # the EBS hook's constructor set it pending
            ebs_backends[self.account_id][self.region_name].snapshots[snapshot.id] = ebs_snapshot
            LOG.info("amitool: %s of %s holds %d blocks", snapshot.id, volume_id, len(blocks))
        return snapshot

    def delete_volume(self, volume_id):
        volume = original_delete_volume(self, volume_id)
        path = _volume_path(volume)
        if os.path.exists(path):
            os.unlink(path)
        return volume

    EBSBackend.create_snapshot = create_snapshot
    EBSBackend.create_volume = create_volume
    EBSBackend.delete_volume = delete_volume
    EBSBackend._amitool_volumes_patched = True


def _patch_instance_root():
    from moto.ec2.models.instances import Instance

    if getattr(Instance, "_amitool_patched", False):
        return
    original_setup = Instance.setup_defaults

    def setup_defaults(self):
        backend = self.ec2_backend
        ami = backend.amis.get(self.image_id)
        registered = ami.__dict__.get("_amitool_bdm") if ami is not None else None
        for mapping in registered or []:
            ebs = mapping.get("Ebs") or {}
            if mapping.get("DeviceName") != ami.root_device_name:
                continue
            if ebs.get("SnapshotId") not in backend.snapshots:
                continue
            volume = backend.create_volume(
                size=ebs["VolumeSize"],
                zone_name=self._placement.zone,
                snapshot_id=ebs["SnapshotId"],
                encrypted=bool(ebs.get("Encrypted")),
                volume_type=ebs.get("VolumeType"),
            )
            backend.attach_volume(volume.id, self.id, ami.root_device_name, True)
            return
        original_setup(self)

    Instance.setup_defaults = setup_defaults
    Instance._amitool_patched = True


_patch_volumes()
_patch_instance_root()
_module = types.ModuleType("amitool_volumes")
_module.volume_file = volume_file
_module.volumes_dir = _volumes_dir
sys.modules["amitool_volumes"] = _module
