//! The AWS side of `import` and `export`: a raw disk to a snapshot and a
//! registered image, and an image's root snapshot back to a sparse file.

use std::path::Path;

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, ResourceType, Tag,
    TagSpecification, VolumeType,
};

use crate::backend::aws::transfer::{self, transfer_err};
use crate::backend::aws::AwsBackend;
use crate::backend::ImportRequest;
use crate::error::{Error, Result};
use crate::model::{Image, ImageFilter, Virtualization};

/// How long to wait for a snapshot to complete.
pub const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

impl AwsBackend {
    pub fn ebs(&self, region: &str) -> aws_sdk_ebs::Client {
        super::client::ebs_client(self.sdk_config(), region)
    }

    /// One image with everything EC2 says of it.
    pub async fn describe_raw(
        &self,
        region: &str,
        image_id: &str,
    ) -> Result<aws_sdk_ec2::types::Image> {
        let out = self
            .ec2(region)
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| {
                if super::error::code(&e).is_some_and(|c| c.starts_with("InvalidAMIID")) {
                    return Error::ImageNotFound {
                        image_id: image_id.into(),
                        region: region.into(),
                    };
                }
                self.err("DescribeImages", region, e)
            })?;
        out.images()
            .iter()
            .find(|i| i.image_id() == Some(image_id))
            .cloned()
            .ok_or_else(|| Error::ImageNotFound {
                image_id: image_id.into(),
                region: region.into(),
            })
    }

    /// The root snapshot of an EBS-backed image.
    pub fn root_snapshot(
        image: &aws_sdk_ec2::types::Image,
    ) -> Result<(String, Option<VolumeType>)> {
        let id = image.image_id().unwrap_or("the image");
        if image.root_device_type().map(|t| t.as_str()) == Some("instance-store") {
            return Err(Error::refused(
                id,
                format!("{id} is instance-store backed: it has no EBS snapshot"),
            ));
        }
        let root = image.root_device_name().unwrap_or("/dev/sda1");
        let bdm = image
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(root))
            .or_else(|| {
                image
                    .block_device_mappings()
                    .iter()
                    .find(|m| m.ebs().is_some())
            });
        let ebs = bdm.and_then(|m| m.ebs()).and_then(|e| {
            e.snapshot_id()
                .map(|s| (s.to_string(), e.volume_type().cloned()))
        });
        ebs.ok_or_else(|| {
            Error::refused(
                id,
                format!("{id} has no root snapshot in its block device mapping"),
            )
        })
    }

    pub async fn wait_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()> {
        self.ec2(region)
            .wait_until_snapshot_completed()
            .snapshot_ids(snapshot_id)
            .wait(SNAPSHOT_WAIT)
            .await
            .map(|_| ())
            .map_err(|e| transfer_err("wait for snapshot", region, e))
    }

    pub async fn delete_snapshot_quietly(&self, region: &str, snapshot_id: &str) -> Result<()> {
        self.ec2(region)
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteSnapshot", region, e))
    }

    pub async fn import(&self, region: &str, req: &ImportRequest) -> Result<Image> {
        crate::image::guest::check_importable(&req.file, req.virtualization)
            .map_err(|reason| Error::refused(req.file.display().to_string(), reason))?;
        crate::ids::check_image_name(req.name.as_deref())?;
        let pv = req.virtualization == Virtualization::Paravirtual;
        match (&req.kernel_id, pv) {
            (None, true) => {
                return Err(Error::InvalidInput(
                    "a paravirtual image needs --kernel AKI (see `amitool kernels`)".into(),
                ))
            }
            (Some(_), false) => {
                return Err(Error::InvalidInput("an hvm image takes no --kernel".into()))
            }
            (Some(k), true) => {
                let kernel = self.describe_raw(region, k).await?;
                if kernel.image_type().map(|t| t.as_str()) != Some("kernel") {
                    return Err(Error::refused(
                        k,
                        format!("{k} in {region} is not a kernel image"),
                    ));
                }
                if kernel.architecture().map(|a| a.as_str()) != Some(req.architecture.as_str()) {
                    return Err(Error::refused(
                        k,
                        format!("kernel {k} is not {}", req.architecture),
                    ));
                }
            }
            _ => {}
        }
        let name = req.name.clone().unwrap_or_else(|| {
            req.file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "imported".into())
        });
        let description = format!("imported by amitool from {}", req.file.display());
        // Only the blocks that hold data are read (SEEK_DATA) and sent: a
        // sparse 1 TiB image costs its data, not a scan of its holes.
        let tags = vec![("amitool:import".to_string(), name.clone())];
        let disk = crate::image::source::open_file(&req.file)
            .map_err(|e| Error::io("open", &req.file, e))?;
        let blocks = crate::backend::aws::transfer::file_blocks(&disk);
        let scratch = tempfile::tempdir()
            .map_err(|e| Error::io("create a work directory in", std::env::temp_dir(), e))?;
        let mut journal =
            crate::migrate::Journal::new(scratch.path(), &crate::migrate::new_migration_id());
        let (snapshot_id, _) = crate::backend::aws::stream::upload_journaled(
            &self.ebs(region),
            region,
            disk,
            blocks,
            &description,
            &tags,
            None,
            None,
            &mut journal,
        )
        .await?;
        let registered = async {
            self.wait_snapshot(region, &snapshot_id).await?;
            let root = if pv { "/dev/sda1" } else { "/dev/xvda" };
            let size = std::fs::metadata(&req.file)
                .map(|m| m.len().div_ceil(1 << 30).max(1))
                .unwrap_or(1);
            let mut r = self
                .ec2(region)
                .register_image()
                .name(&name)
                .description(&description)
                .architecture(ArchitectureValues::from(req.architecture.as_str()))
                .virtualization_type(req.virtualization.as_str())
                .root_device_name(root)
                .block_device_mappings(
                    BlockDeviceMapping::builder()
                        .device_name(root)
                        .ebs(
                            EbsBlockDevice::builder()
                                .snapshot_id(&snapshot_id)
                                .volume_size(size as i32)
                                .volume_type(VolumeType::Gp2)
                                .delete_on_termination(true)
                                .build(),
                        )
                        .build(),
                );
            if let Some(k) = &req.kernel_id {
                r = r.kernel_id(k);
            } else {
                r = r
                    .ena_support(req.ena_support)
                    .boot_mode(BootModeValues::LegacyBios);
            }
            let out = r
                .send()
                .await
                .map_err(|e| self.err("RegisterImage", region, e))?;
            let id = out
                .image_id()
                .ok_or_else(|| Error::missing("RegisterImage", region, "image id"))?
                .to_string();
            let filter = ImageFilter {
                image_ids: vec![id],
                ..Default::default()
            };
            crate::backend::Backend::describe_images(self, region, &filter)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| Error::missing("DescribeImages", region, "the registered image"))
        }
        .await;
        if registered.is_err() {
            // Nothing half-made is left behind.
            let _ = self.delete_snapshot_quietly(region, &snapshot_id).await;
        }
        registered
    }

    pub async fn export(&self, region: &str, image_id: &str, out: &Path) -> Result<u64> {
        if out.exists() {
            return Err(Error::refused(
                out.display().to_string(),
                format!("{} exists; amitool does not overwrite", out.display()),
            ));
        }
        let image = self.describe_raw(region, image_id).await?;
        let (snapshot_id, _) = Self::root_snapshot(&image)?;
        let result = transfer::download(self.ebs(region), region, &snapshot_id, out, false).await;
        if let Err(e) = result {
            // Nothing half-written stays: the file, and coldsnap's FILE.partial.
            let mut partial = out.as_os_str().to_owned();
            partial.push(".partial");
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_file(out);
            // coldsnap says only that blocks failed; a full disk is named.
            let dir = out
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if crate::image::sparse::available_bytes(dir)
                .is_some_and(|n| n < 2 * crate::image::BLOCK)
            {
                return Err(Error::NoSpace {
                    path: out.to_path_buf(),
                    dir: dir.to_path_buf(),
                });
            }
            return Err(e);
        }
        let f = std::fs::File::open(out).map_err(|e| Error::io("open", out, e))?;
        Ok(crate::image::sparse::data_segments(&f)
            .map_err(|e| Error::io("read", out, e))?
            .iter()
            .map(|s| s.1)
            .sum())
    }
}

/// EC2 tags for a resource type.
pub fn tag_spec(
    kind: ResourceType,
    tags: &std::collections::BTreeMap<String, String>,
) -> TagSpecification {
    let mut b = TagSpecification::builder().resource_type(kind);
    for (k, v) in tags {
        b = b.tags(Tag::builder().key(k).value(v).build());
    }
    b.build()
}
