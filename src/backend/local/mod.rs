//! The local backend: a small model of a Xen host that keeps images,
//! snapshots, volumes and instances as files in a state directory, so every
//! command also runs on local disk images. Its kernels (AKIs) are the PV-GRUB
//! kernels of the built-in table, in every PV region; its instance types are
//! the table's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::{Backend, ImportRequest, InstanceTypeQuery};
use crate::catalog;
use crate::error::{Error, Result};
use crate::kernels::KernelName;
use crate::model::{Image, ImageFilter, InstanceType, Virtualization};

mod host;
mod instances;
mod launch;
pub mod store;

use store::{ImageRecord, InstanceRecord, Kind, SnapshotRecord, Store, VolumeRecord};

/// The account id the local host reports for images it keeps.
pub const LOCAL_OWNER: &str = "000000000000";
/// The owner of AWS's PV-GRUB kernels.
pub const AMAZON_OWNER: &str = "137112412989";

pub struct LocalBackend {
    pub store: Store,
}

/// The default state directory: under the user's data directory.
pub fn default_state_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("amitool")
        .join("local")
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Days to a civil date (Howard Hinnant's algorithm), to print like EC2.
    let days = (secs / 86400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let t = secs % 86400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

impl LocalBackend {
    pub fn new(state_dir: PathBuf) -> Self {
        let store = Store::new(state_dir);
        // What a killed run left half-written goes before anything reads the state.
        for p in store.sweep() {
            tracing::debug!("removed {}, left half-written by a killed run", p.display());
        }
        LocalBackend { store }
    }

    /// The PV-GRUB kernels this host ships in `region`.
    pub fn kernels(region: &str) -> Vec<Image> {
        catalog::kernels()
            .in_region(region)
            .map(|k| Image {
                region: region.to_string(),
                image_id: k.kernel_id.clone(),
                name: Some(k.name.clone()),
                virtualization_type: Some(Virtualization::Paravirtual),
                architecture: KernelName::parse(&k.name).and_then(|n| n.architecture),
                image_type: Some("kernel".into()),
                root_device_type: Some("instance-store".into()),
                state: Some("available".into()),
                owner_id: Some(AMAZON_OWNER.into()),
                ..Default::default()
            })
            .collect()
    }

    pub fn image_record(&self, region: &str, image_id: &str) -> Result<ImageRecord> {
        self.store
            .read(region, Kind::Image, image_id)?
            .ok_or_else(|| Error::ImageNotFound {
                image_id: image_id.to_string(),
                region: region.to_string(),
            })
    }

    pub fn instance_record(&self, region: &str, instance_id: &str) -> Result<InstanceRecord> {
        self.store
            .read(region, Kind::Instance, instance_id)?
            .ok_or_else(|| Error::not_found("instance", instance_id, region))
    }

    /// An instance that still has its root volume (not terminated).
    pub fn live_instance(&self, region: &str, instance_id: &str) -> Result<InstanceRecord> {
        let inst = self.instance_record(region, instance_id)?;
        if inst.state == "terminated" {
            return Err(Error::refused(
                instance_id,
                format!("{instance_id} is terminated: its root volume is gone"),
            ));
        }
        Ok(inst)
    }

    pub fn snapshot_path(&self, region: &str, snapshot_id: &str) -> Result<PathBuf> {
        self.store.data_path(region, Kind::Snapshot, snapshot_id)
    }

    pub fn volume_path(&self, region: &str, volume_id: &str) -> Result<PathBuf> {
        self.store.data_path(region, Kind::Volume, volume_id)
    }

    /// A point-in-time, read-only copy of `src`: the local CreateSnapshot.
    pub fn create_snapshot(
        &self,
        region: &str,
        src: &Path,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<SnapshotRecord> {
        let (rec, making) = self.snapshot_from(region, src, false, description, tags)?;
        making.finish()?;
        Ok(rec)
    }

    /// Make a file of the state directory a snapshot by moving it in.
    pub fn adopt_as_snapshot(
        &self,
        region: &str,
        src: &Path,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<SnapshotRecord> {
        let (rec, making) = self.snapshot_from(region, src, true, description, tags)?;
        making.finish()?;
        Ok(rec)
    }

    /// A new read-only snapshot holding `src`'s bytes: moved in when asked
    /// and possible, else copied sparse. It stays pending (removed if the
    /// process dies) until the caller finishes what it makes of it.
    fn snapshot_from(
        &self,
        region: &str,
        src: &Path,
        move_in: bool,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(SnapshotRecord, store::Pending)> {
        let id = self.store.new_id(region, Kind::Snapshot)?;
        let size = std::fs::metadata(src)
            .map_err(|e| Error::io("stat", src, e))?
            .len();
        let making = self.store.begin(region, Kind::Snapshot, &id)?;
        let dst = self.snapshot_path(region, &id)?;
        if !(move_in && std::fs::rename(src, &dst).is_ok()) {
            self.store.copy_in(src, region, Kind::Snapshot, &id)?;
        }
        store::make_read_only(&dst)?;
        let rec = SnapshotRecord {
            snapshot_id: id.clone(),
            size,
            state: "completed".into(),
            description: Some(description.to_string()),
            tags: tags.clone(),
        };
        self.store.write(region, Kind::Snapshot, &id, &rec)?;
        Ok((rec, making))
    }

    /// RegisterImage: a new image over an existing snapshot.
    pub fn register(&self, region: &str, mut rec: ImageRecord) -> Result<Image> {
        // EC2: InvalidAMIName.Duplicate.
        if let Some(name) = rec.image.name.as_deref() {
            crate::ids::check_image_name(Some(name))?;
            let taken = self
                .store
                .all::<ImageRecord>(region, Kind::Image)?
                .into_iter()
                .find(|r| r.image.name.as_deref() == Some(name));
            if let Some(r) = taken {
                return Err(Error::refused(
                    name,
                    format!(
                        "image name {name:?} is already in use by {} in {region}",
                        r.image.image_id
                    ),
                ));
            }
        }
        let id = self.store.new_id(region, Kind::Image)?;
        rec.image.image_id = id.clone();
        rec.image.region = region.to_string();
        rec.image.creation_date = Some(now());
        rec.image.state = Some("available".into());
        rec.image.owner_id = Some(LOCAL_OWNER.into());
        rec.image.image_type = Some("machine".into());
        rec.image.root_device_type = Some("ebs".into());
        self.store.write(region, Kind::Image, &id, &rec)?;
        Ok(rec.image)
    }

    /// Register a local raw disk as an AMI: snapshot it, then RegisterImage.
    pub fn import(&self, region: &str, req: &ImportRequest) -> Result<Image> {
        // What EC2 refuses, and what it registers but nothing boots.
        crate::image::guest::check_importable(&req.file, req.virtualization)
            .map_err(|reason| Error::refused(req.file.display().to_string(), reason))?;
        crate::ids::check_image_name(req.name.as_deref())?;
        if let Some(k) = &req.kernel_id {
            let kernel = Self::kernels(region)
                .into_iter()
                .find(|i| &i.image_id == k)
                .ok_or_else(|| {
                    Error::refused(
                        k,
                        format!("kernel {k} is not one of the PV-GRUB kernels of {region}"),
                    )
                })?;
            if kernel.architecture.as_deref() != Some(req.architecture.as_str()) {
                return Err(Error::refused(
                    k,
                    format!(
                        "kernel {k} is {} and the image is {}",
                        kernel
                            .architecture
                            .as_deref()
                            .unwrap_or("of unknown architecture"),
                        req.architecture
                    ),
                ));
            }
        }
        if req.virtualization == Virtualization::Paravirtual && req.kernel_id.is_none() {
            return Err(Error::InvalidInput(
                "a paravirtual image needs --kernel AKI (see `amitool kernels`)".into(),
            ));
        }
        if req.virtualization == Virtualization::Hvm && req.kernel_id.is_some() {
            return Err(Error::InvalidInput("an hvm image takes no --kernel".into()));
        }
        let name = req.name.clone().unwrap_or_else(|| {
            req.file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "imported".into())
        });
        // The snapshot and the image are made as one: a run killed between
        // them leaves neither (the next run's sweep removes the snapshot).
        let (snap, making) = self.snapshot_from(
            region,
            &req.file,
            false,
            &format!("imported from {}", req.file.display()),
            &BTreeMap::new(),
        )?;
        crate::migrate::hooks::pause_in_blocking("local-import-snapshot");
        let pv = req.virtualization == Virtualization::Paravirtual;
        let rec = ImageRecord {
            image: Image {
                name: Some(name),
                virtualization_type: Some(req.virtualization),
                architecture: Some(req.architecture.clone()),
                kernel_id: req.kernel_id.clone(),
                root_device_name: Some(if pv { "/dev/sda1" } else { "/dev/xvda" }.into()),
                ena_support: (!pv).then_some(req.ena_support),
                boot_mode: (!pv).then(|| "legacy-bios".into()),
                ..Default::default()
            },
            root_snapshot_id: Some(snap.snapshot_id.clone()),
            description: Some(format!("imported from {}", req.file.display())),
            tags: BTreeMap::new(),
            grub_cfg: None,
            drivers: None,
        };
        let image = self.register(region, rec)?;
        making.finish()?;
        Ok(image)
    }

    /// The root disk of an image, as a path to its read-only snapshot.
    pub fn root_disk(&self, region: &str, image_id: &str) -> Result<(ImageRecord, PathBuf)> {
        let rec = self.image_record(region, image_id)?;
        let snap = rec.root_snapshot_id.clone().ok_or_else(|| {
            Error::refused(
                image_id,
                format!("{image_id} in {region} has no root snapshot (instance-store image)"),
            )
        })?;
        let path = self.snapshot_path(region, &snap)?;
        if !path.is_file() {
            return Err(Error::not_found(
                "snapshot",
                format!("{snap} (the root of {image_id})"),
                format!("the state directory {}", self.store.root.display()),
            ));
        }
        Ok((rec, path))
    }

    /// Write an image's root disk to a new raw file.
    pub fn export(&self, region: &str, image_id: &str, out: &Path) -> Result<u64> {
        let (_, path) = self.root_disk(region, image_id)?;
        store::copy_file_sparse(&path, out)
    }

    /// A volume from the image's snapshot and an instance record over it.
    pub fn create_instance(
        &self,
        region: &str,
        image_id: &str,
        instance_type: &str,
    ) -> Result<(InstanceRecord, PathBuf)> {
        let (rec, snap_path) = self.root_disk(region, image_id)?;
        let vol = self.store.new_id(region, Kind::Volume)?;
        // The volume and its instance are made as one, like the image and its snapshot.
        let making = self.store.begin(region, Kind::Volume, &vol)?;
        let size = self.store.copy_in(&snap_path, region, Kind::Volume, &vol)?;
        self.store.write(
            region,
            Kind::Volume,
            &vol,
            &VolumeRecord {
                volume_id: vol.clone(),
                size,
                snapshot_id: rec.root_snapshot_id.clone(),
            },
        )?;
        let id = self.store.new_id(region, Kind::Instance)?;
        let inst = InstanceRecord {
            instance_id: id.clone(),
            image_id: image_id.to_string(),
            instance_type: instance_type.to_string(),
            root_volume_id: vol.clone(),
            state: "pending".into(),
        };
        self.store.write(region, Kind::Instance, &id, &inst)?;
        making.finish()?;
        Ok((inst, self.volume_path(region, &vol)?))
    }

    pub fn set_instance_state(
        &self,
        region: &str,
        inst: &mut InstanceRecord,
        state: &str,
    ) -> Result<()> {
        inst.state = state.to_string();
        self.store
            .write(region, Kind::Instance, &inst.instance_id.clone(), inst)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn terminate_instances(
        &self,
        region: &str,
        instance_ids: &[String],
    ) -> Result<Vec<super::Terminated>> {
        // All known before any is ended: an unknown id ends none.
        let mut found = vec![];
        for id in instance_ids {
            found.push(self.instance_record(region, id)?);
        }
        let mut out = vec![];
        for mut inst in found {
            let previous = inst.state.clone();
            if previous != "terminated" {
                // Its root volume goes with it (DeleteOnTermination).
                self.store
                    .remove(region, Kind::Volume, &inst.root_volume_id)?;
                self.set_instance_state(region, &mut inst, "terminated")?;
            }
            out.push(super::Terminated {
                region: region.to_string(),
                instance_id: inst.instance_id.clone(),
                previous_state: previous,
                state: "terminated".into(),
            });
        }
        Ok(out)
    }

    async fn image_disk(&self, region: &str, image_id: &str) -> Result<super::ImageDisk> {
        let (rec, path) = self.root_disk(region, image_id)?;
        let disk =
            crate::image::source::open_file(&path).map_err(|e| Error::io("open", &path, e))?;
        Ok(super::ImageDisk {
            flavor: Self::kernel_flavor(region, &rec.image),
            image: rec.image,
            disk,
        })
    }

    async fn boot_drivers(
        &self,
        region: &str,
        image_id: &str,
    ) -> Result<Option<crate::image::inspect::Drivers>> {
        Ok(self.image_record(region, image_id)?.drivers)
    }

    fn default_region(&self) -> Option<String> {
        Some(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()))
    }

    async fn enabled_regions(&self) -> Result<Vec<String>> {
        let t = catalog::compat();
        Ok(t.regions
            .iter()
            .filter(|r| r.partition == "aws")
            .map(|r| r.name.clone())
            .collect())
    }

    async fn region_exists(&self, _region: &str) -> Result<bool> {
        Ok(false)
    }

    async fn describe_images(&self, region: &str, f: &ImageFilter) -> Result<Vec<Image>> {
        let mut images: Vec<Image> = self
            .store
            .all::<ImageRecord>(region, Kind::Image)?
            .into_iter()
            .map(|r| r.image)
            .collect();
        images.extend(Self::kernels(region));
        let owner_ok = |i: &Image| match f.owner.as_deref() {
            None => true,
            Some("self") => i.owner_id.as_deref() == Some(LOCAL_OWNER),
            Some("amazon") => i.owner_id.as_deref() == Some(AMAZON_OWNER),
            Some(acct) => i.owner_id.as_deref() == Some(acct),
        };
        let out: Vec<Image> = images
            .into_iter()
            .filter(|i| f.matches(i) && owner_ok(i))
            .collect();
        if let [id] = f.image_ids.as_slice() {
            if out.is_empty() {
                return Err(Error::ImageNotFound {
                    image_id: id.clone(),
                    region: region.to_string(),
                });
            }
        }
        Ok(out)
    }

    async fn describe_instance_types(
        &self,
        region: &str,
        q: &InstanceTypeQuery,
    ) -> Result<Vec<InstanceType>> {
        let t = catalog::compat();
        for n in &q.names {
            if t.instance_type(n).is_none() {
                return Err(Error::UnknownInstanceType {
                    instance_type: n.clone(),
                    region: region.to_string(),
                });
            }
        }
        Ok(t.instance_types
            .iter()
            .map(|c| &c.info)
            .filter(|i| q.names.is_empty() || q.names.contains(&i.instance_type))
            .filter(|i| q.virtualization.is_none_or(|v| i.accepts(v)))
            .filter(|i| {
                q.architecture
                    .as_ref()
                    .is_none_or(|a| i.supported_architectures.contains(a))
            })
            .cloned()
            .collect())
    }

    async fn describe_instances(
        &self,
        region: &str,
        state: Option<&str>,
        virt: Option<Virtualization>,
    ) -> Result<Vec<crate::model::InstanceInfo>> {
        self.list_instances(region, state, virt)
    }

    async fn offered_instance_types(&self, region: &str) -> Result<BTreeSet<String>> {
        let t = catalog::compat();
        let known = t.region(region);
        Ok(t.instance_types
            .iter()
            .map(|c| c.info.instance_type.clone())
            .filter(|n| known.is_none_or(|r| r.offers(n) != Some(false)))
            .collect())
    }

    fn launcher(&self) -> Option<&dyn crate::backend::Launcher> {
        Some(self)
    }

    fn boot_check(&self) -> Option<&dyn crate::migrate::verify::BootCheck> {
        Some(self)
    }

    fn migration_host(&self) -> Option<&dyn crate::migrate::MigrationHost> {
        Some(self)
    }

    async fn import_image(&self, region: &str, req: &ImportRequest) -> Result<Image> {
        self.import(region, req)
    }

    async fn export_image(&self, region: &str, image_id: &str, out: &Path) -> Result<u64> {
        if out.exists() {
            return Err(Error::refused(
                out.display().to_string(),
                format!("{} exists; amitool does not overwrite", out.display()),
            ));
        }
        self.export(region, image_id, out)
    }
}
