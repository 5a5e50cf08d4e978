//! The local host's side of the migration pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::backend::local::store::{ImageRecord, Kind};
use crate::backend::local::LocalBackend;
use crate::error::Result;
use crate::image::boot;
use crate::kernels::KernelName;
use crate::migrate::{HvmRegistration, MigrationHost, Source, SourceDisk};
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
}

#[async_trait]
impl MigrationHost for LocalBackend {
    async fn source_disk(
        &self,
        region: &str,
        source: &Source,
        migration_id: &str,
    ) -> Result<SourceDisk> {
        let (image_id, volume) = match source {
            Source::Image(id) => (id.clone(), None),
            Source::Instance(id) => {
                let inst = self.instance_record(region, id)?;
                (inst.image_id.clone(), Some(inst.root_volume_id.clone()))
            }
        };
        let rec = self.image_record(region, &image_id)?;
        let flavor = Self::kernel_flavor(region, &rec.image);
        if let Some(vol) = volume {
            let mut tags = BTreeMap::new();
            tags.insert("amitool:migration".to_string(), migration_id.to_string());
            let snap = self.create_snapshot(
                region,
                &self.volume_path(region, &vol),
                &format!("root of {vol}"),
                &tags,
            )?;
            return Ok(SourceDisk {
                path: self.snapshot_path(region, &snap.snapshot_id),
                image: rec.image,
                description: rec.description,
                tags: rec.tags,
                flavor,
                temporary_snapshot: Some(snap.snapshot_id),
            });
        }
        let (rec, path) = self.root_disk(region, &image_id)?;
        Ok(SourceDisk {
            image: rec.image,
            description: rec.description,
            tags: rec.tags,
            path,
            flavor,
            temporary_snapshot: None,
        })
    }

    async fn store_disk(
        &self,
        region: &str,
        path: &Path,
        tags: &BTreeMap<String, String>,
    ) -> Result<String> {
        // The built disk is this migration's own file in the state directory:
        // it becomes the snapshot by a rename, not a second copy.
        Ok(self
            .adopt_as_snapshot(region, path, "HVM root disk built by amitool", tags)?
            .snapshot_id)
    }

    async fn register_hvm(&self, region: &str, reg: &HvmRegistration) -> Result<Image> {
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

    async fn boot_problems(&self, region: &str, image_id: &str) -> Result<Vec<String>> {
        let (rec, path) = self.root_disk(region, image_id)?;
        Ok(boot::hvm_problems(&path, rec.grub_cfg.as_deref()))
    }

    async fn delete_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()> {
        self.store.remove(region, Kind::Snapshot, snapshot_id)
    }

    fn work_dir(&self, migration_id: &str) -> PathBuf {
        self.store.root.join("work").join(migration_id)
    }
}
