"""amitool ready.d hook: serve the EBS direct APIs from LocalStack community.

LocalStack exec()s this file inside its own process once all services are
ready (see localstack/README.md).  `__file__` and `__name__` are not defined
here, and every helper must be reached through this module's globals.

What it changes, and why:

1. Registers an `ebs` service.  The community edition has no EBS direct APIs
   (StartSnapshot, PutSnapshotBlock, CompleteSnapshot, ListSnapshotBlocks,
   GetSnapshotBlock, ListChangedBlocks), but the bundled moto implements them.
   The service is a Skeleton over the botocore `ebs` spec whose every
   operation is proxied to moto, exactly like LocalStack's own moto-backed
   services.
2. Block size: moto reports BlockSize 512; AWS uses 524288 bytes (512 KiB).
   A client that trusts 512 would split an image into 1024 times too many
   blocks and read back garbage offsets.
3. Snapshot state: moto creates the EC2 snapshot behind StartSnapshot as
   `completed` at once.  On AWS it stays `pending` until CompleteSnapshot, so
   the EC2 snapshot is kept `pending` until then (a client that forgets
   CompleteSnapshot must not see a usable snapshot).
4. ListSnapshotBlocks returns BlockIndex as numbers sorted by index (moto
   returns the path strings in arrival order), and an unknown snapshot id or
   block index is answered with ResourceNotFoundException / ValidationException
   like AWS instead of a Python KeyError (HTTP 500).
5. StartSnapshot with ParentSnapshotId (moto ignores it): the child starts
   with every block of the parent at the same index, as on AWS; blocks put
   later replace the parent's.  The parent must exist and be completed, and
   the child's VolumeSize may not be smaller than the parent's.
6. ListChangedBlocks as EBS answers it (moto lists only blocks present in
   both snapshots, unpaginated, without checking that they are related):
   the blocks that differ between two completed snapshots of one lineage
   (snapshots of one volume; a StartSnapshot child is of its parent's), a
   block only in the first without a SecondBlockToken, sorted, paginated
   by MaxResults (100-10000) and NextToken from StartingBlockIndex;
   snapshots of different lineages are a ValidationException.
7. Request bodies up to 8 MiB are kept in memory.  Twisted writes every body
   of 100,000 bytes or more to a temporary file and reads it back, which is
   every PutSnapshotBlock (512 KiB): a file created, written and read per
   block, a share of LocalStack's CPU in every streamed migration.
8. PutSnapshotBlock and GetSnapshotBlock call moto's EBS backend (with the
   checks above) directly.  Through moto's HTTP layer each block was
   serialized to an HTTP request for moto, parsed again by moto, and moto's
   response parsed back into a dict for LocalStack's serializer: three
   passes over 512 KiB per block.  Errors are raised as that path raises
   them (moto's code, message and status).
9. A block that was put or got is not logged: LocalStack logs every request
   at INFO through one locked handler, a line per 512 KiB block (thousands
   per migration), 14 % of LocalStack's busy time in a fleet by py-spy.
   A refused block is still logged.
"""

import json
import base64
import hashlib
import logging

LOG = logging.getLogger("amitool.hooks.ebs")

AWS_EBS_BLOCK_SIZE = 524288


def _amitool_ebs_fix_models():
    import moto.ebs.models as ebs_models

    snapshot_cls = ebs_models.EBSSnapshot
    if getattr(snapshot_cls, "_amitool_patched", False):
        return
    original_init = snapshot_cls.__init__

    def __init__(self, account_id, snapshot):
        original_init(self, account_id, snapshot)
        self.block_size = AWS_EBS_BLOCK_SIZE
        # AWS keeps the snapshot pending until CompleteSnapshot.
        snapshot.status = "pending"
        self.ec2_snapshot = snapshot

    snapshot_cls.__init__ = __init__
    snapshot_cls._amitool_patched = True

    backend_cls = ebs_models.EBSBackend
    original_complete = backend_cls.complete_snapshot
    original_put = backend_cls.put_snapshot_block
    original_get = backend_cls.get_snapshot_block
    original_list = backend_cls.list_snapshot_blocks

    def lookup(self, snapshot_id):
        snapshot = self.snapshots.get(snapshot_id)
        if snapshot is None:
            raise _ebs_error(
                404,
                "ResourceNotFoundException",
                f"The snapshot '{snapshot_id}' does not exist.",
                "SNAPSHOT_NOT_FOUND",
            )
        return snapshot

    def complete_snapshot(self, snapshot_id):
        snapshot = lookup(self, snapshot_id)
        result = original_complete(self, snapshot_id)
        ec2_snapshot = getattr(snapshot, "ec2_snapshot", None)
        if ec2_snapshot is not None:
            ec2_snapshot.status = "completed"
        return result

    def put_snapshot_block(self, snapshot_id, block_index, *args, **kwargs):
        snapshot = lookup(self, snapshot_id)
        if snapshot.status != "pending":
            raise _ebs_error(
                400,
                "ValidationException",
                f"The snapshot '{snapshot_id}' is not in pending state.",
                "INVALID_SNAPSHOT_STATE",
            )
        index = _block_index(block_index)
        max_blocks = snapshot.volume_size * (1 << 30) // AWS_EBS_BLOCK_SIZE
        if index >= max_blocks:
            raise _ebs_error(
                400,
                "ValidationException",
                f"Block index {index} is beyond the volume size of "
                f"{snapshot.volume_size} GiB.",
                "INVALID_BLOCK",
            )
        # moto takes the checksum at face value; EBS refuses a block whose
        # SHA-256 is not the one sent (amitool sends the source's checked
        # checksum for a block it passes through, and hashes the others).
        data, checksum = kwargs.get("block_data"), kwargs.get("checksum")
        if data is not None and checksum:
            got = base64.b64encode(hashlib.sha256(_as_block_bytes(data)).digest()).decode()
            if got != checksum:
                raise _ebs_error(
                    400,
                    "ValidationException",
                    f"The checksum {checksum} of block {index} does not match its data ({got}).",
                    "INVALID_BLOCK",
                )
        return original_put(self, snapshot_id, str(index), *args, **kwargs)

    def get_snapshot_block(self, snapshot_id, block_index):
        snapshot = lookup(self, snapshot_id)
        key = str(_block_index(block_index))
        if key not in snapshot.blocks:
            raise _ebs_error(
                400,
                "ValidationException",
                f"The block index {key} has no data in snapshot '{snapshot_id}'.",
                "INVALID_BLOCK",
            )
        return original_get(self, snapshot_id, key)

    def list_snapshot_blocks(self, snapshot_id):
        lookup(self, snapshot_id)
        return original_list(self, snapshot_id)

    backend_cls.complete_snapshot = complete_snapshot
    backend_cls.put_snapshot_block = put_snapshot_block
    backend_cls.get_snapshot_block = get_snapshot_block
    backend_cls.list_snapshot_blocks = list_snapshot_blocks


def _block_index(raw):
    try:
        index = int(raw)
    except (TypeError, ValueError):
        index = -1
    if index < 0:
        raise _ebs_error(
            400,
            "ValidationException",
            f"Invalid block index '{raw}'.",
            "INVALID_BLOCK",
        )
    return index


def _lineage(snapshot):
    """What ListChangedBlocks compares within: the volume a snapshot was
    taken of (CreateSnapshot), else the first snapshot of its parent chain."""
    return getattr(snapshot, "lineage", None) or snapshot.snapshot_id


def _as_block_bytes(data):
    return data if isinstance(data, bytes) else str(data).encode("utf-8")


def _ebs_error(status, code, message, reason):
    from moto.core.exceptions import JsonRESTError

    error = JsonRESTError(code, message)
    error.code = status
    body = json.loads(error.description)
    body["Reason"] = reason
    error.description = json.dumps(body)
    return error


def _amitool_ebs_fix_responses():
    import moto.ebs.responses as ebs_responses

    response_cls = ebs_responses.EBSResponse
    if getattr(response_cls, "_amitool_patched", False):
        return

    def list_snapshot_blocks(self):
        snapshot_id = self.path.split("/")[-2]
        snapshot = self.ebs_backend.list_snapshot_blocks(snapshot_id=snapshot_id)
        blocks = sorted(
            (
                {"BlockIndex": int(index), "BlockToken": block.block_token}
                for index, block in snapshot.blocks.items()
            ),
            key=lambda block: block["BlockIndex"],
        )
        return json.dumps(
            {
                "Blocks": blocks,
                "VolumeSize": snapshot.volume_size,
                "BlockSize": snapshot.block_size,
            }
        )

    def list_changed_blocks(self):
        # As EBS answers it: the blocks that differ between two snapshots of
        # one lineage (snapshots of one volume, or children of one parent
        # chain), each with the token of the side that holds it (a block
        # only in the first has no SecondBlockToken), sorted, paginated by
        # MaxResults / NextToken from StartingBlockIndex. Without a first
        # snapshot, every block of the second.
        params = self._get_params()
        second_id = self.path.split("/")[-2]
        first_id = params.get("firstSnapshotId")
        backend = self.ebs_backend
        second = backend.list_snapshot_blocks(snapshot_id=second_id)
        first = backend.list_snapshot_blocks(snapshot_id=first_id) if first_id else None
        for snap in (first, second):
            if snap is not None and snap.status != "completed":
                raise _ebs_error(
                    400,
                    "ValidationException",
                    f"The snapshot '{snap.snapshot_id}' is not completed.",
                    "INVALID_SNAPSHOT_STATE",
                )
        if first is not None and _lineage(first) != _lineage(second):
            raise _ebs_error(
                400,
                "ValidationException",
                f"The snapshots '{first_id}' and '{second_id}' are not of the same volume or lineage.",
                "INVALID_DEPENDENCY_REQUEST",
            )
        try:
            max_results = int(params.get("maxResults") or 10000)
            start = int(params.get("pageToken") or params.get("startingBlockIndex") or 0)
        except ValueError:
            raise _ebs_error(400, "ValidationException", "Invalid pagination parameter.", "INVALID_PAGE_TOKEN")
        if not 100 <= max_results <= 10000:
            raise _ebs_error(
                400,
                "ValidationException",
                "MaxResults must be between 100 and 10000.",
                "INVALID_PARAMETER_VALUE",
            )
        a = first.blocks if first is not None else {}
        b = second.blocks
        changed = []
        for index in sorted({int(k) for k in a} | {int(k) for k in b}):
            if index < start:
                continue
            x, y = a.get(str(index)), b.get(str(index))
            if x is not None and y is not None and (
                x is y or _as_block_bytes(x.block_data) == _as_block_bytes(y.block_data)
            ):
                continue
            entry = {"BlockIndex": index}
            if x is not None:
                entry["FirstBlockToken"] = x.block_token
            if y is not None:
                entry["SecondBlockToken"] = y.block_token
            changed.append(entry)
        body = {
            "ChangedBlocks": changed[:max_results],
            "VolumeSize": second.volume_size,
            "BlockSize": second.block_size,
        }
        if len(changed) > max_results:
            body["NextToken"] = str(changed[max_results]["BlockIndex"])
        return json.dumps(body)

    def start_snapshot(self):
        params = json.loads(self.body)
        parent_id = params.get("ParentSnapshotId")
        parent = None
        if parent_id:
            parent = self.ebs_backend.snapshots.get(parent_id)
            if parent is None:
                raise _ebs_error(
                    404,
                    "ResourceNotFoundException",
                    f"The parent snapshot '{parent_id}' does not exist.",
                    "SNAPSHOT_NOT_FOUND",
                )
            if parent.status != "completed":
                raise _ebs_error(
                    400,
                    "ValidationException",
                    f"The parent snapshot '{parent_id}' is not completed.",
                    "INVALID_PARENT_SNAPSHOT",
                )
            if int(params.get("VolumeSize") or 0) < int(parent.volume_size):
                raise _ebs_error(
                    400,
                    "ValidationException",
                    "The volume size cannot be smaller than the parent snapshot's.",
                    "INVALID_VOLUME_SIZE",
                )
        snapshot = self.ebs_backend.start_snapshot(
            volume_size=params.get("VolumeSize"),
            tags=params.get("Tags"),
            description=params.get("Description"),
        )
        if parent is not None:
            snapshot.blocks = dict(parent.blocks)
            snapshot.parent_snapshot_id = parent_id
        # A child is of its parent's lineage; a new snapshot starts its own.
        snapshot.lineage = _lineage(parent) if parent is not None else snapshot.snapshot_id
        body = snapshot.to_json()
        if parent is not None:
            body["ParentSnapshotId"] = parent_id
        return json.dumps(body)

    response_cls.list_snapshot_blocks = list_snapshot_blocks
    response_cls.list_changed_blocks = list_changed_blocks
    response_cls.start_snapshot = start_snapshot
    response_cls._amitool_patched = True


def _amitool_ebs_register_service():
    from localstack.aws.skeleton import Skeleton
    from localstack.aws.spec import load_service
    from localstack.services.moto import _proxy_moto
    from localstack.utils.bootstrap import get_enabled_apis
    from localstack.services.plugins import (
        SERVICE_PLUGINS,
        Service,
        ServiceContainer,
        ServiceState,
    )

    if "ebs" in SERVICE_PLUGINS._services:
        return
    model = load_service("ebs")
    dispatch_table = {name: _proxy_moto for name in model.operation_names}
    dispatch_table.update(_amitool_ebs_block_handlers())
    service = Service("ebs", skeleton=Skeleton(model, dispatch_table))
    # `exists()` consults the provider specs, `require()` the containers.
    specs = SERVICE_PLUGINS.api_provider_specs
    specs["ebs"] = [SERVICE_PLUGINS.get_active_provider("ebs")]
    SERVICE_PLUGINS._services["ebs"] = ServiceContainer(service, ServiceState.RUNNING)
    # The set of enabled APIs is cached; anything that asked before this hook
    # ran (the health endpoint does) would keep answering "not enabled".
    get_enabled_apis.cache_clear()
    LOG.info("amitool: registered ebs service (%d operations)", len(dispatch_table))


def _amitool_ebs_block_handlers():
    from localstack.aws.api import CommonServiceException
    from moto.core.exceptions import RESTError
    from moto.ebs.models import ebs_backends

    def backend(context):
        return ebs_backends[context.account_id][context.region]

    def as_service_error(e):
        # What dispatch_to_moto raises for a moto RESTError.
        return CommonServiceException(e.error_type, e.message, status_code=e.code)

    def put_snapshot_block(context, request):
        data = request.get("BlockData")
        if hasattr(data, "read"):
            data = data.read()
        try:
            checksum, algorithm = backend(context).put_snapshot_block(
                snapshot_id=request["SnapshotId"],
                block_index=str(request["BlockIndex"]),
                block_data=data if data is not None else b"",
                checksum=request.get("Checksum"),
                checksum_algorithm=request.get("ChecksumAlgorithm"),
                data_length=None if request.get("DataLength") is None else str(request["DataLength"]),
            )
        except RESTError as e:
            raise as_service_error(e) from e
        return {"Checksum": checksum, "ChecksumAlgorithm": algorithm}

    def get_snapshot_block(context, request):
        try:
            block = backend(context).get_snapshot_block(
                snapshot_id=request["SnapshotId"], block_index=str(request["BlockIndex"])
            )
        except RESTError as e:
            raise as_service_error(e) from e
        data = _as_block_bytes(block.block_data)
        return {
            "DataLength": int(block.data_length) if block.data_length else len(data),
            "BlockData": data,
            "Checksum": block.checksum,
            "ChecksumAlgorithm": block.checksum_algorithm,
        }

    return {"PutSnapshotBlock": put_snapshot_block, "GetSnapshotBlock": get_snapshot_block}


def _amitool_bodies_in_memory():
    import io
    import twisted.web.http as twisted_http

    original = twisted_http._getContentFile
    if getattr(original, "_amitool_patched", False):
        return

    def content_file(length):
        if length is not None and length <= 8 * 1024 * 1024:
            return io.BytesIO()
        return original(length)

    content_file._amitool_patched = True
    twisted_http._getContentFile = content_file


def _amitool_quiet_block_logs():
    from localstack.aws.handlers.logging import ResponseLogger

    original = ResponseLogger.__call__
    if getattr(original, "_amitool_patched", False):
        return
    quiet = ("PutSnapshotBlock", "GetSnapshotBlock")

    def __call__(self, chain, context, response):
        op = context.operation
        if op is not None and op.name in quiet and not context.service_exception:
            return
        return original(self, chain, context, response)

    __call__._amitool_patched = True
    ResponseLogger.__call__ = __call__


_amitool_quiet_block_logs()
_amitool_bodies_in_memory()
_amitool_ebs_fix_models()
_amitool_ebs_fix_responses()
_amitool_ebs_register_service()
