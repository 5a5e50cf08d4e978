"""amitool ready.d hook: make LocalStack's EC2 images look like a PV-era AWS account.

LocalStack exec()s this file inside its own process once all services are
ready (see localstack/README.md).  `__file__` and `__name__` are not defined
here; start.sh passes every path through the environment:

  AMITOOL_DATA_DIR      the repository's data/ (kernels.json is read from it)
  AMITOOL_SEED_DIR      the repository's localstack/seed/ (images.json)
  AMITOOL_SEED_SUMMARY  optional file that receives the seeded ids as JSON

What it changes, and why (moto-ext 5.1.54 as bundled with LocalStack 4.14.0):

1. Per-region AKIs.  moto loads one identical image list into every region,
   has no kernel images and cannot give an image a KernelId.  Every entry of
   data/kernels.json becomes a public `kernel` image owned by amazon
   (137112412989), with its real aki- id, in its own region only.
2. Per-region machine images from seed/images.json: PV images (EBS and
   instance-store, x86_64 and i386, owned by self / amazon / Canonical) whose
   KernelId is the region's PV-GRUB AKI, and HVM images with EnaSupport,
   SriovNetSupport and BootMode.  moto's default images stay untouched.
3. RegisterImage keeps what AWS keeps.  moto keeps only Name and Description;
   this hook keeps VirtualizationType (default paravirtual), Architecture
   (default i386), KernelId, RamdiskId, RootDeviceName, the block device
   mappings as registered, EnaSupport, SriovNetSupport, BootMode,
   ImdsSupport, TpmSupport, ImageLocation and TagSpecifications (image and
   snapshot).  It also checks what AWS checks: name syntax and uniqueness
   (InvalidAMIName.Malformed / .Duplicate), that the kernel/ramdisk exist in
   the region (InvalidAMIID.NotFound), that mapped snapshots exist
   (InvalidSnapshot.NotFound) and that a volume is not smaller than its
   snapshot (InvalidBlockDeviceMapping).
4. `Ami.block_device_mappings` is a property that always reports one
   auto-created 15 GiB snapshot; images registered or seeded here report
   their own mappings instead, and RegisterImage no longer leaves that extra
   snapshot behind.  Snapshots used by an image refuse deletion
   (InvalidSnapshot.InUse), as on AWS.
5. DescribeImages accepts aki-/ari- ids in ImageIds (moto rejects anything
   but ami- as malformed) and gains the filters block-device-mapping.*,
   ena-support, ramdisk-id, sriov-net-support, description, hypervisor and
   root-device-name.
6. DescribeSnapshots honours OwnerIds (moto ignores it and lists every
   snapshot, including one per default image: over a thousand); without
   OwnerIds or SnapshotIds it lists the account's own and public snapshots,
   like AWS.  Progress reads 0% until the snapshot is completed.
7. Regions of the aws-cn and aws-us-gov partitions (cn-north-1,
   us-gov-west-1, ... which data/kernels.json lists) are served as themselves.
   LocalStack otherwise rewrites every region outside the `aws` partition to
   us-east-1 with only a log warning, so cn-north-1 would answer with
   us-east-1's AKIs.
8. A resource's tags are looked up by its id.  moto reads them through
   describe_tags, which matches a regex against every tag of every resource,
   and does so for each resource a filter looks at: a DescribeSnapshots or
   DescribeImages filtered by tag cost resources x tags, grew with every
   test's snapshots, and was most of LocalStack's CPU in the suite (py-spy:
   82 % of its busy samples).  Same tags, same order.
"""

import hashlib
import json
import logging
import os
import re

LOG = logging.getLogger("amitool.hooks.ec2")

ACCOUNT_ID = "000000000000"
AMAZON_OWNER_ID = "137112412989"
AMI_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
IMAGE_ID_PREFIXES = ("ami-", "aki-", "ari-")
ARCHITECTURES = ("i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac")
VIRTUALIZATION_TYPES = ("hvm", "paravirtual")
BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")
DEFAULT_VOLUME_TYPE = "gp2"


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _env_path(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"amitool hook: environment variable {name} is not set")
    return value


def _client_error(code, message):
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _as_bool(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _as_int(value):
    if value is None or value == "":
        return None
    return int(value)


def _region_hex(region):
    return hashlib.sha256(region.encode()).hexdigest()[:8]


def _arch_from_kernel_name(name):
    if "x86_64" in name:
        return "x86_64"
    if "i386" in name:
        return "i386"
    raise RuntimeError(f"amitool hook: cannot tell the architecture of kernel {name!r}")


def _drop_snapshot(backend, snapshot):
    backend.snapshots.pop(snapshot.id, None)


def _rename_snapshot(backend, snapshot, new_id):
    backend.snapshots.pop(snapshot.id, None)
    snapshot.id = new_id
    backend.snapshots[new_id] = snapshot


# --------------------------------------------------------------------------
# model patches
# --------------------------------------------------------------------------


def _patch_ami_model():
    from moto.ec2.models.amis import Ami

    if getattr(Ami, "_amitool_patched", False):
        return

    original_bdm = Ami.block_device_mappings.fget
    original_filter = Ami.get_filter_value

    def block_device_mappings(self):
        registered = self.__dict__.get("_amitool_bdm")
        if registered is not None:
            return [json.loads(json.dumps(mapping)) for mapping in registered]
        return original_bdm(self)

    def mapping_values(self, key):
        values = []
        for mapping in self.block_device_mappings:
            if key == "device-name":
                values.append(mapping.get("DeviceName"))
                continue
            ebs = mapping.get("Ebs") or {}
            field = {
                "snapshot-id": "SnapshotId",
                "volume-size": "VolumeSize",
                "volume-type": "VolumeType",
                "delete-on-termination": "DeleteOnTermination",
                "encrypted": "Encrypted",
            }.get(key)
            if field and field in ebs:
                value = ebs[field]
                values.append(str(value).lower() if isinstance(value, bool) else str(value))
        return [value for value in values if value is not None]

    def get_filter_value(self, filter_name, method_name=None):
        if filter_name.startswith("block-device-mapping."):
            return mapping_values(self, filter_name.split(".", 1)[1])
        if filter_name == "ena-support":
            return bool(getattr(self, "ena_support", None))
        if filter_name == "ramdisk-id":
            return getattr(self, "ramdisk_id", None)
        if filter_name == "sriov-net-support":
            return getattr(self, "sriov_net_support", None)
        if filter_name in ("description", "hypervisor", "root-device-name", "image-type"):
            return getattr(self, filter_name.replace("-", "_"), None)
        return original_filter(self, filter_name, method_name)

    Ami.block_device_mappings = property(block_device_mappings)
    Ami.get_filter_value = get_filter_value
    Ami._amitool_patched = True


def _patch_ami_backend():
    from moto.ec2.exceptions import InvalidAMIIdError
    from moto.ec2.models.amis import Ami, AmiBackend
    from moto.ec2.utils import generic_filter, random_ami_id

    if getattr(AmiBackend, "_amitool_patched", False):
        return

    original_describe = AmiBackend.describe_images

    def describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        # moto answers InvalidAMIID.Malformed for anything but ami-; AWS
        # describes AKIs and ARIs by id as well.
        if ami_ids and any(not i.startswith("ami-") for i in ami_ids):
            malformed = [i for i in ami_ids if not i.startswith(IMAGE_ID_PREFIXES)]
            if malformed:
                return original_describe(self, ami_ids=malformed)
            images = [ami for ami in self.amis.values() if ami.id in ami_ids]
            deleted = [i for i in ami_ids if i in self.deleted_amis]
            if not images and not deleted:
                raise InvalidAMIIdError(ami_ids)
            return generic_filter(filters, images) if filters else images
        return original_describe(
            self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners
        )

    def check_name(self, name):
        if not name or not AMI_NAME_RE.match(name):
            raise _client_error(
                "InvalidAMIName.Malformed",
                "AMI names must be between 3 and 128 characters long, and may contain "
                "letters, numbers, '(', ')', '[', ']', ' ', '.', '/', '-', \"'\", '@' "
                "and '_'",
            )
        for ami in self.amis.values():
            if ami.owner_id == self.account_id and ami.name == name:
                raise _client_error(
                    "InvalidAMIName.Duplicate",
                    f"AMI name {name} is already in use by AMI {ami.id}",
                )

    def check_enum(parameter, value, allowed):
        if value is not None and value not in allowed:
            raise _client_error(
                "InvalidParameterValue",
                f"Value ({value}) for parameter {parameter} is invalid. "
                f"Valid values: {', '.join(allowed)}",
            )

    def check_image_ref(self, image_id, image_type):
        if not image_id:
            return
        ami = self.amis.get(image_id)
        if ami is None or ami.image_type != image_type:
            raise InvalidAMIIdError([image_id])

    def normalise_mappings(self, mappings):
        result = []
        snapshots = []
        for raw in mappings or []:
            mapping = {"DeviceName": raw.get("DeviceName")}
            if raw.get("VirtualName"):
                mapping["VirtualName"] = raw["VirtualName"]
            if raw.get("NoDevice") is not None:
                mapping["NoDevice"] = ""
            ebs_in = raw.get("Ebs")
            if ebs_in:
                ebs = {}
                snapshot = None
                snapshot_id = ebs_in.get("SnapshotId")
                if snapshot_id:
                    snapshot = self.snapshots.get(snapshot_id)
                    if snapshot is None:
                        raise _client_error(
                            "InvalidSnapshot.NotFound",
                            f"The snapshot '{snapshot_id}' does not exist.",
                        )
                    ebs["SnapshotId"] = snapshot_id
                    snapshots.append(snapshot)
                size = _as_int(ebs_in.get("VolumeSize"))
                snapshot_size = snapshot.volume.size if snapshot is not None else None
                if size is None:
                    size = snapshot_size
                if size is None:
                    raise _client_error(
                        "InvalidBlockDeviceMapping",
                        f"The device '{mapping['DeviceName']}' needs a snapshot id or a "
                        "volume size.",
                    )
                if snapshot_size is not None and size < snapshot_size:
                    raise _client_error(
                        "InvalidBlockDeviceMapping",
                        f"Volume of size {size}GB is smaller than snapshot "
                        f"'{snapshot_id}', expect size >= {snapshot_size}GB",
                    )
                ebs["VolumeSize"] = size
                delete = _as_bool(ebs_in.get("DeleteOnTermination"))
                ebs["DeleteOnTermination"] = True if delete is None else delete
                ebs["VolumeType"] = ebs_in.get("VolumeType") or DEFAULT_VOLUME_TYPE
                for key in ("Iops", "Throughput"):
                    if ebs_in.get(key) is not None:
                        ebs[key] = _as_int(ebs_in[key])
                encrypted = _as_bool(ebs_in.get("Encrypted"))
                if encrypted is None and snapshot is not None:
                    encrypted = bool(snapshot.encrypted)
                ebs["Encrypted"] = bool(encrypted)
                if ebs_in.get("KmsKeyId"):
                    ebs["KmsKeyId"] = ebs_in["KmsKeyId"]
                mapping["Ebs"] = ebs
            result.append(mapping)
        return result, snapshots

    def register_image(self, name=None, description=None, **params):
        """RegisterImage with the fields AWS keeps (see the hook's docstring)."""
        check_name(self, name)
        virtualization_type = params.get("virtualization_type") or "paravirtual"
        architecture = params.get("architecture") or "i386"
        check_enum("VirtualizationType", virtualization_type, VIRTUALIZATION_TYPES)
        check_enum("Architecture", architecture, ARCHITECTURES)
        check_enum("BootMode", params.get("boot_mode"), BOOT_MODES)
        check_image_ref(self, params.get("kernel_id"), "kernel")
        check_image_ref(self, params.get("ramdisk_id"), "ramdisk")
        mappings, snapshots = normalise_mappings(self, params.get("block_device_mappings"))
        image_location = params.get("image_location")

        ami_id = random_ami_id()
        ami = Ami(
            self,
            ami_id,
            name=name,
            description=description,
            virtualization_type=virtualization_type,
            architecture=architecture,
            image_location=image_location or f"{self.account_id}/{name}",
            hypervisor="xen",
            root_device_type="instance-store" if image_location else "ebs",
            root_device_name=params.get("root_device_name") or "/dev/sda1",
            region_name=f"{self.region_name}a",
            boot_mode=params.get("boot_mode"),
        )
        # Ami() always creates a snapshot of its own; AWS does not.
        _drop_snapshot(self, ami.ebs_snapshot)
        ami._amitool_bdm = mappings
        ami.kernel_id = params.get("kernel_id")
        ami.ramdisk_id = params.get("ramdisk_id")
        ami.ramdisk = ami.ramdisk_id
        ami.ena_support = True if params.get("ena_support") else None
        ami.sriov_net_support = params.get("sriov_net_support")
        ami.sriov = ami.sriov_net_support
        ami.imds_support = params.get("imds_support")
        ami.tpm_support = params.get("tpm_support")
        ami.platform_details = "Linux/UNIX"
        ami.usage_operation = "RunInstances"
        for snapshot in snapshots:
            if not snapshot.from_ami:
                snapshot.from_ami = ami_id
        for spec in params.get("tag_specifications") or []:
            tags = {tag["Key"]: tag.get("Value", "") for tag in spec.get("Tags", [])}
            resource_type = spec.get("ResourceType")
            if resource_type == "image":
                ami.add_tags(tags)
            elif resource_type == "snapshot":
                for snapshot in snapshots:
                    snapshot.add_tags(tags)
            else:
                raise _client_error(
                    "InvalidParameterValue",
                    f"'{resource_type}' is not a valid taggable resource type for this "
                    "operation.",
                )
        self.amis[ami_id] = ami
        return ami

    AmiBackend.describe_images = describe_images
    AmiBackend.register_image = register_image
    AmiBackend._amitool_patched = True


def _patch_amis_response():
    from moto.core.responses import ActionResult
    from moto.ec2.responses.amis import AmisResponse

    if getattr(AmisResponse, "_amitool_patched", False):
        return

    def register_image(self):
        params = {
            "virtualization_type": self._get_param("VirtualizationType"),
            "architecture": self._get_param("Architecture"),
            "kernel_id": self._get_param("KernelId"),
            "ramdisk_id": self._get_param("RamdiskId"),
            "root_device_name": self._get_param("RootDeviceName"),
            "block_device_mappings": self._get_param("BlockDeviceMappings", []),
            "ena_support": _as_bool(self._get_param("EnaSupport")),
            "sriov_net_support": self._get_param("SriovNetSupport"),
            "boot_mode": self._get_param("BootMode"),
            "imds_support": self._get_param("ImdsSupport"),
            "tpm_support": self._get_param("TpmSupport"),
            "image_location": self._get_param("ImageLocation"),
            "tag_specifications": self._get_param("TagSpecifications", []),
        }
        name = self._get_param("Name")
        description = self._get_param("Description")
        self.error_on_dryrun()
        image = self.ec2_backend.register_image(name, description, **params)
        return ActionResult({"ImageId": image.id})

    AmisResponse.register_image = register_image
    AmisResponse._amitool_patched = True


def _patch_describe_snapshots():
    import moto.ec2.responses.elastic_block_store as ebs_responses

    response_cls = ebs_responses.ElasticBlockStore
    if getattr(response_cls, "_amitool_patched", False):
        return
    template = ebs_responses.DESCRIBE_SNAPSHOTS_RESPONSE.replace(
        "<progress>100%</progress>",
        "<progress>{{ '100%' if snapshot.status == 'completed' else '0%' }}</progress>",
    )

    def describe_snapshots(self):
        filters = self._filters_from_querystring()
        snapshot_ids = self._get_param("SnapshotIds", [])
        owner_ids = self._get_param("OwnerIds", [])
        account_id = self.ec2_backend.account_id
        snapshots = self.ec2_backend.describe_snapshots(
            snapshot_ids=snapshot_ids, filters=filters
        )
        if owner_ids:
            wanted = {
                {"self": account_id, "amazon": AMAZON_OWNER_ID}.get(owner, owner)
                for owner in owner_ids
            }
            snapshots = [snap for snap in snapshots if snap.owner_id in wanted]
        elif not snapshot_ids:
            # AWS lists the snapshots the caller may restore: its own and
            # public ones, not those behind every public image.
            snapshots = [
                snap
                for snap in snapshots
                if snap.owner_id == account_id or "all" in snap.create_volume_permission_groups
            ]
        return self.response_template(template).render(snapshots=snapshots)

    response_cls.describe_snapshots = describe_snapshots
    response_cls._amitool_patched = True


def _patch_tag_lookup():
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    # Its own mark, in its own __dict__: every EC2 model inherits from this
    # class, and the other hooks test `_amitool_patched` on their classes.
    if "_amitool_tag_lookup" in vars(TaggedEC2Resource):
        return

    def get_tags(self):
        resource_id = getattr(self, "id", None)
        tags = self.ec2_backend.tags.get(resource_id) if resource_id else None
        if not tags:
            return []
        resource_type = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [
            {"resource_id": resource_id, "key": key, "value": value, "resource_type": resource_type}
            for key, value in list(tags.items())
        ]

    TaggedEC2Resource.get_tags = get_tags
    TaggedEC2Resource._amitool_tag_lookup = True


def _patch_region_rewriter():
    from boto3.session import Session
    from localstack.aws.handlers.region import DefaultRegionRewriterStrategy

    if getattr(DefaultRegionRewriterStrategy, "_amitool_patched", False):
        return
    session = Session()
    other_partitions = {
        region
        for partition in ("aws-cn", "aws-us-gov")
        for region in session.get_available_regions("ec2", partition)
    }
    original_apply = DefaultRegionRewriterStrategy.apply

    def apply(self, context):
        if context.region in other_partitions:
            return
        original_apply(self, context)

    DefaultRegionRewriterStrategy.apply = apply
    DefaultRegionRewriterStrategy._amitool_patched = True


# --------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------


def _load_kernels():
    path = os.path.join(_env_path("AMITOOL_DATA_DIR"), "kernels.json")
    with open(path, encoding="utf-8") as handle:
        kernels = json.load(handle)["kernels"]
    by_region = {}
    for entry in kernels:
        by_region.setdefault(entry["region"], []).append(entry)
    return path, by_region


def _load_seed():
    path = os.path.join(_env_path("AMITOOL_SEED_DIR"), "images.json")
    with open(path, encoding="utf-8") as handle:
        return path, json.load(handle)


def _seed_kernel(backend, region, entry):
    from moto.ec2.models.amis import Ami

    name = entry["name"]
    version = re.search(r"_(\d+\.\d+)-", name)
    bits = "64-bit" if _arch_from_kernel_name(name) == "x86_64" else "32-bit"
    ami = Ami(
        backend,
        entry["kernel_id"],
        name=name,
        description=f"PV-GRUB release {version.group(1) if version else '?'}, {bits}",
        owner_id=AMAZON_OWNER_ID,
        owner_alias="amazon",
        public=True,
        virtualization_type="paravirtual",
        architecture=_arch_from_kernel_name(name),
        image_type="kernel",
        image_location=f"amazon/{name}",
        hypervisor="xen",
        root_device_type="instance-store",
        region_name=f"{region}a",
        creation_date="2013-05-02T00:00:00.000Z",
        boot_mode=None,
    )
    _drop_snapshot(backend, ami.ebs_snapshot)
    ami._amitool_bdm = []
    ami.root_device_name = None
    ami.sriov = None
    backend.amis[ami.id] = ami
    return ami.id


def _resolve_kernel(image, region_kernels):
    names = image.get("kernel")
    if not names:
        return None, True
    if isinstance(names, str):
        names = [names]
    by_name = {entry["name"]: entry["kernel_id"] for entry in region_kernels}
    for name in names:
        if name in by_name:
            return by_name[name], True
    return None, False


def _seed_image(backend, region, image, owners, kernel_id):
    from moto.ec2.models.amis import Ami

    owner = owners[image["owner"]]
    region_hex = _region_hex(region)
    ami_id = f"ami-{region_hex}{image['id_suffix']}"
    instance_store = image.get("root_device_type") == "instance-store"
    location = image.get("image_location") or f"{owner['owner_id']}/{image['name']}"
    ami = Ami(
        backend,
        ami_id,
        name=image["name"],
        description=image.get("description"),
        owner_id=owner["owner_id"],
        owner_alias=owner.get("owner_alias"),
        public=bool(image.get("public")),
        virtualization_type=image["virtualization_type"],
        architecture=image["architecture"],
        creation_date=image.get("creation_date"),
        image_type="machine",
        image_location=location.replace("{region}", region),
        hypervisor="xen",
        root_device_type=image.get("root_device_type", "ebs"),
        root_device_name=image.get("root_device_name", "/dev/sda1"),
        region_name=f"{region}a",
        snapshot_description=f"Root volume of {image['name']}",
        boot_mode=image.get("boot_mode"),
        tags=image.get("tags"),
    )
    mappings = []
    snapshot_id = None
    if instance_store:
        _drop_snapshot(backend, ami.ebs_snapshot)
    else:
        volume = image.get("root_volume", {})
        snapshot = ami.ebs_snapshot
        snapshot_id = f"snap-{region_hex}{image['id_suffix']}"
        _rename_snapshot(backend, snapshot, snapshot_id)
        snapshot.volume.size = volume.get("size", 8)
        mappings.append(
            {
                "DeviceName": ami.root_device_name,
                "Ebs": {
                    "SnapshotId": snapshot_id,
                    "VolumeSize": volume.get("size", 8),
                    "DeleteOnTermination": volume.get("delete_on_termination", True),
                    "VolumeType": volume.get("type", "standard"),
                    "Encrypted": False,
                },
            }
        )
    mappings.extend(image.get("extra_mappings", []))
    ami._amitool_bdm = mappings
    ami.kernel_id = kernel_id
    ami.ramdisk_id = None
    ami.ramdisk = None
    ami.ena_support = True if image.get("ena_support") else None
    ami.sriov_net_support = image.get("sriov_net_support")
    ami.sriov = ami.sriov_net_support
    ami.imds_support = image.get("imds_support")
    ami.platform_details = "Linux/UNIX"
    ami.usage_operation = "RunInstances"
    backend.amis[ami_id] = ami
    return ami_id, snapshot_id


def _seed_all():
    from moto.ec2.models import ec2_backends

    kernels_path, kernels = _load_kernels()
    seed_path, seed = _load_seed()
    owners = seed["owners"]
    summary = {"kernels_file": kernels_path, "seed_file": seed_path, "regions": {}}
    seeded_somewhere = {image["name"]: 0 for image in seed["images"]}

    for region in sorted(kernels):
        backend = ec2_backends[ACCOUNT_ID][region]
        region_summary = {"kernels": [], "images": [], "skipped": []}
        for entry in kernels[region]:
            region_summary["kernels"].append(
                {"id": _seed_kernel(backend, region, entry), "name": entry["name"]}
            )
        for image in seed["images"]:
            if image.get("regions") and region not in image["regions"]:
                continue
            kernel_id, found = _resolve_kernel(image, kernels[region])
            if not found:
                region_summary["skipped"].append(image["name"])
                continue
            ami_id, snapshot_id = _seed_image(backend, region, image, owners, kernel_id)
            seeded_somewhere[image["name"]] += 1
            region_summary["images"].append(
                {
                    "id": ami_id,
                    "name": image["name"],
                    "owner": image["owner"],
                    "virtualization_type": image["virtualization_type"],
                    "kernel_id": kernel_id,
                    "snapshot_id": snapshot_id,
                }
            )
        summary["regions"][region] = region_summary
        LOG.info(
            "amitool: %s: %d AKIs, %d images seeded, skipped (no kernel): %s",
            region,
            len(region_summary["kernels"]),
            len(region_summary["images"]),
            ", ".join(region_summary["skipped"]) or "none",
        )

    unseeded = [name for name, count in seeded_somewhere.items() if count == 0]
    if unseeded:
        raise RuntimeError(
            "amitool hook: these seed images matched no region's kernels in "
            f"{kernels_path}: {', '.join(unseeded)}"
        )

    summary_path = os.environ.get("AMITOOL_SEED_SUMMARY")
    if summary_path:
        tmp_path = f"{summary_path}.tmp"
        with open(tmp_path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp_path, summary_path)


_patch_ami_model()
_patch_ami_backend()
_patch_amis_response()
_patch_describe_snapshots()
_patch_tag_lookup()
_patch_region_rewriter()
_seed_all()
