//! The local host's side of the migration pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::local::store::{ImageRecord, Kind, SnapshotRecord};
use crate::backend::local::LocalBackend;
use crate::error::Result;
use crate::image::boot;
use crate::kernels::KernelName;
use crate::migrate::{HvmRegistration, Journal, MigrationHost, Source, SourceDisk, MIGRATION_TAG};

fn open_disk(path: &Path) -> Result<crate::image::source::Disk> {
    crate::image::source::open_file(path).map_err(|e| crate::error::Error::io("open", path, e))
}
use crate::model::{Image, Virtualization};

impl LocalBackend {
    /// The PV-GRUB flavor of an image's kernel, from its name.
    pub fn kernel_flavor(region: &str, image: &Image) -> Option<crate::kernels::Flavor> {
        let k = image.kernel_id.as_ref()?;
        Self::kernels(region)
            .into_iter()
            .find(|i| &i.image_id == k)
            .and_then(|i| i.name.as_deref().and_then(KernelName::parse))
            .and_then(|n| n.flavor)
    }

    fn tagged(
        &self,
        region: &str,
        migration_id: &str,
    ) -> Result<(Vec<SnapshotRecord>, Vec<ImageRecord>)> {
        let tag = |t: &BTreeMap<String, String>| {
            t.get(MIGRATION_TAG).map(String::as_str) == Some(migration_id)
        };
        let snaps = self
            .store
            .all::<SnapshotRecord>(region, Kind::Snapshot)?
            .into_iter()
            .filter(|s| tag(&s.tags))
            .collect();
        let images = self
            .store
            .all::<ImageRecord>(region, Kind::Image)?
            .into_iter()
            .filter(|i| tag(&i.tags))
            .collect();
        Ok((snaps, images))
    }
}

#[async_trait]
impl MigrationHost for LocalBackend {
    async fn instance_state(&self, region: &str, instance_id: &str) -> Result<String> {
        Ok(self.instance_record(region, instance_id)?.state)
    }

    async fn stop_instance(&self, region: &str, instance_id: &str) -> Result<()> {
        let mut inst = self.instance_record(region, instance_id)?;
        self.set_instance_state(region, &mut inst, "stopped")
    }

    async fn start_instance(&self, region: &str, instance_id: &str) -> Result<()> {
        let mut inst = self.instance_record(region, instance_id)?;
        self.set_instance_state(region, &mut inst, "running")
    }

    async fn source_disk(
        &self,
        region: &str,
        source: &Source,
        journal: &mut Journal,
    ) -> Result<SourceDisk> {
        let (image_id, volume) = match source {
            Source::Image(id) => (id.clone(), None),
            Source::Instance(id) => {
                let inst = self.live_instance(region, id)?;
                (inst.image_id.clone(), Some(inst.root_volume_id.clone()))
            }
        };
        let rec = self.image_record(region, &image_id)?;
        let flavor = Self::kernel_flavor(region, &rec.image);
        let path = match (volume, journal.temporary_snapshot.clone()) {
            (None, _) => self.root_disk(region, &image_id)?.1,
            (Some(_), Some(snap)) => self.snapshot_path(region, &snap)?,
            (Some(vol), None) => {
                let mut tags = BTreeMap::new();
                tags.insert(MIGRATION_TAG.to_string(), journal.migration_id.clone());
                let snap = self.create_snapshot(
                    region,
                    &self.volume_path(region, &vol)?,
                    &format!("root of {vol}"),
                    &tags,
                )?;
                journal.temporary_snapshot = Some(snap.snapshot_id.clone());
                journal.save()?;
                self.snapshot_path(region, &snap.snapshot_id)?
            }
        };
        Ok(SourceDisk {
            image: rec.image,
            description: rec.description,
            tags: rec.tags,
            disk: open_disk(&path)?,
            snapshot_id: None,
            flavor,
            volume_type: None,
        })
    }

    async fn image_named(&self, region: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .all::<crate::backend::local::store::ImageRecord>(
                region,
                crate::backend::local::store::Kind::Image,
            )?
            .into_iter()
            .find(|r| r.image.name.as_deref() == Some(name))
            .map(|r| r.image.image_id))
    }

    async fn source_in_place(&self, region: &str, source: &Source) -> Result<Option<SourceDisk>> {
        let (image_id, path) = match source {
            Source::Image(id) => (id.clone(), self.root_disk(region, id)?.1),
            Source::Instance(id) => {
                let inst = self.live_instance(region, id)?;
                (
                    inst.image_id.clone(),
                    self.volume_path(region, &inst.root_volume_id)?,
                )
            }
        };
        let rec = self.image_record(region, &image_id)?;
        Ok(Some(SourceDisk {
            flavor: Self::kernel_flavor(region, &rec.image),
            image: rec.image,
            description: rec.description,
            tags: rec.tags,
            disk: open_disk(&path)?,
            snapshot_id: None,
            volume_type: None,
        }))
    }

    async fn store_disk(
        &self,
        region: &str,
        path: &Path,
        tags: &BTreeMap<String, String>,
        _journal: &mut Journal,
    ) -> Result<String> {
        // The built disk is this migration's own file in the state directory:
        // it becomes the snapshot by a rename, not a second copy.
        Ok(self
            .adopt_as_snapshot(region, path, "HVM root disk built by amitool", tags)?
            .snapshot_id)
    }

    async fn registered_by(&self, region: &str, migration_id: &str) -> Result<Option<String>> {
        Ok(self
            .tagged(region, migration_id)?
            .1
            .into_iter()
            .next()
            .map(|i| i.image.image_id))
    }

    async fn register_hvm(
        &self,
        region: &str,
        reg: &HvmRegistration,
        migration_id: &str,
    ) -> Result<Image> {
        if let Some(done) = self.tagged(region, migration_id)?.1.into_iter().next() {
            return Ok(done.image);
        }
        let rec = ImageRecord {
            image: Image {
                name: Some(reg.name.clone()),
                virtualization_type: Some(Virtualization::Hvm),
                architecture: Some(reg.architecture.clone()),
                root_device_name: Some("/dev/xvda".into()),
                ena_support: Some(reg.ena_support),
                sriov_net_support: Some("simple".into()),
                boot_mode: Some("legacy-bios".into()),
                ..Default::default()
            },
            root_snapshot_id: Some(reg.snapshot_id.clone()),
            description: Some(reg.description.clone()),
            tags: reg.tags.clone(),
            grub_cfg: Some(reg.grub_cfg.clone()),
            drivers: Some(reg.drivers.clone()),
        };
        self.register(region, rec)
    }

    async fn verify_registered(
        &self,
        region: &str,
        image_id: &str,
        reg: &HvmRegistration,
    ) -> Result<Vec<String>> {
        let (rec, path) = self.root_disk(region, image_id)?;
        let mut problems = boot::hvm_problems(&path, rec.grub_cfg.as_deref());
        if rec.root_snapshot_id.as_deref() != Some(reg.snapshot_id.as_str()) {
            problems.push(format!("its root snapshot is not {}", reg.snapshot_id));
        }
        Ok(problems)
    }

    async fn delete_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()> {
        self.store.remove(region, Kind::Snapshot, snapshot_id)
    }

    async fn tagged_snapshots(&self, region: &str, migration_id: &str) -> Result<Vec<String>> {
        Ok(self
            .tagged(region, migration_id)?
            .0
            .into_iter()
            .map(|s| s.snapshot_id)
            .collect())
    }

    async fn cleanup(&self, journal: &Journal) -> Result<Vec<String>> {
        let (snaps, images) = self.tagged(&journal.region, &journal.migration_id)?;
        let keep: Vec<String> = images
            .iter()
            .filter_map(|i| i.root_snapshot_id.clone())
            .collect();
        let mut removed = vec![];
        for s in snaps.into_iter().filter(|s| !keep.contains(&s.snapshot_id)) {
            self.store
                .remove(&journal.region, Kind::Snapshot, &s.snapshot_id)?;
            removed.push(s.snapshot_id);
        }
        Ok(removed)
    }

    fn work_dir(&self, migration_id: &str) -> PathBuf {
        self.store.root.join("work").join(migration_id)
    }

    fn host_name(&self) -> &'static str {
        "local"
    }

    fn journal_dir(&self) -> PathBuf {
        self.store.root.join("migrations")
    }
}
