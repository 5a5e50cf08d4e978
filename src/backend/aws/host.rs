//! The AWS side of the migration pipeline with EBS direct APIs: the source's
//! root snapshot is read where it lies (GetSnapshotBlock), edited through the
//! same overlay as on the local host, and streamed block by block into the
//! new snapshot with a journal: no local copy, and no instance, volume or
//! attachment is ever made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Filter, ResourceType,
    VolumeType,
};

use crate::backend::aws::images::{tag_spec, SNAPSHOT_WAIT};
use crate::backend::aws::transfer::{self, transfer_err};
use crate::backend::aws::{filter, AwsBackend};
use crate::error::{Error, Result};
use crate::kernels::KernelName;
use crate::migrate::{
    HelperOptions, HvmRegistration, Journal, MigrationHost, Source, SourceDisk, MIGRATION_TAG,
};
use crate::model::{Image, ImageFilter};

/// The warm sync a snapshot was taken for (`--warm`).
pub const SYNC_TAG: &str = "amitool:sync";

fn tag_filter(migration_id: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{MIGRATION_TAG}"))
        .values(migration_id)
        .build()
}

impl AwsBackend {
    /// CreateSnapshot of a volume, tagged with the migration (not waited for).
    pub(crate) async fn create_snapshot_of(
        &self,
        region: &str,
        volume: &str,
        migration_id: &str,
        generation: Option<u32>,
    ) -> Result<String> {
        // A migration snapshots a volume once (a warm one once per sync): a
        // run killed between CreateSnapshot and its journal finds the
        // snapshot it made by tag.
        let mut find = self
            .ec2(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter("volume-id", volume))
            .filters(filter(&format!("tag:{MIGRATION_TAG}"), migration_id));
        if let Some(g) = generation {
            find = find.filters(filter(&format!("tag:{SYNC_TAG}"), g.to_string()));
        }
        let earlier = find
            .send()
            .await
            .map_err(|e| self.err("DescribeSnapshots", region, e))?;
        if let Some(id) = earlier
            .snapshots()
            .iter()
            .filter(|s| s.state() != Some(&aws_sdk_ec2::types::SnapshotState::Error))
            .find_map(|s| s.snapshot_id())
        {
            return Ok(id.to_string());
        }
        let mut tags = BTreeMap::new();
        tags.insert(MIGRATION_TAG.to_string(), migration_id.to_string());
        if let Some(g) = generation {
            tags.insert(SYNC_TAG.to_string(), g.to_string());
        }
        let out = self
            .ec2(region)
            .create_snapshot()
            .volume_id(volume)
            .description(format!("{volume}, for amitool {migration_id}"))
            .tag_specifications(tag_spec(ResourceType::Snapshot, &tags))
            .send()
            .await
            .map_err(|e| self.err("CreateSnapshot", region, e))?;
        out.snapshot_id()
            .map(String::from)
            .ok_or_else(|| Error::missing("CreateSnapshot", region, "snapshot id"))
    }

    /// Whether a snapshot is encrypted, and with which key.
    async fn snapshot_key(&self, region: &str, snapshot_id: &str) -> Result<Option<String>> {
        let out = self
            .ec2(region)
            .describe_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
            .map_err(|e| {
                if super::error::code(&e).is_some_and(|c| c.starts_with("InvalidSnapshot")) {
                    return Error::not_found("snapshot", snapshot_id, region);
                }
                self.err("DescribeSnapshots", region, e)
            })?;
        let snap = out
            .snapshots()
            .first()
            .ok_or_else(|| Error::not_found("snapshot", snapshot_id, region))?;
        if snap.encrypted() == Some(true) {
            let key = snap
                .kms_key_id()
                .map(String::from)
                .unwrap_or_else(|| "the account's default EBS key".into());
            return Ok(Some(key));
        }
        Ok(None)
    }

    /// The PV-GRUB flavor of a kernel, from its name in the region.
    pub(crate) async fn flavor_of(
        &self,
        region: &str,
        kernel_id: Option<&str>,
    ) -> Option<crate::kernels::Flavor> {
        let k = kernel_id?;
        let image = self.describe_raw(region, k).await.ok()?;
        KernelName::parse(image.name()?)?.flavor
    }
}

#[async_trait]
impl MigrationHost for AwsBackend {
    async fn instance_state(&self, region: &str, instance_id: &str) -> Result<String> {
        Ok(super::instances::state_name(
            &self.describe_instance(region, instance_id).await?,
        ))
    }

    async fn stop_instance(&self, region: &str, instance_id: &str) -> Result<()> {
        self.stop_and_wait(region, instance_id).await
    }

    async fn start_instance(&self, region: &str, instance_id: &str) -> Result<()> {
        self.start_and_wait(region, instance_id).await
    }

    async fn image_named(&self, region: &str, name: &str) -> Result<Option<String>> {
        use crate::backend::Backend;
        let f = crate::model::ImageFilter {
            owner: Some("self".into()),
            name: Some(name.to_string()),
            ..Default::default()
        };
        Ok(self
            .describe_images(region, &f)
            .await?
            .into_iter()
            .find(|i| i.name.as_deref() == Some(name))
            .map(|i| i.image_id))
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
                let (vol, image) = self.instance_root(region, id).await?;
                (image, Some(vol))
            }
        };
        let raw = self.describe_raw(region, &image_id).await?;
        // Refuse before anything is made or read.
        let image = super::convert::migratable(region, &raw)?;
        let (ami_snapshot, volume_type) = Self::root_snapshot(&raw)?;
        let snapshot_id = match (volume, journal.temporary_snapshot.clone()) {
            (None, _) => ami_snapshot,
            (Some(_), Some(snap)) => snap,
            (Some(vol), None) => {
                let snap = self
                    .create_snapshot_of(
                        region,
                        &vol,
                        &journal.migration_id,
                        journal.sync_generation(),
                    )
                    .await?;
                journal.temporary_snapshot = Some(snap.clone());
                journal.save()?;
                self.wait_snapshot(region, &snap).await?;
                snap
            }
        };
        journal.kms_key = self.snapshot_key(region, &snapshot_id).await?;
        journal.save()?;
        let flavor = self.flavor_of(region, image.kernel_id.as_deref()).await;
        let tags = raw
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect();
        // Read where it lies, block by block (GetSnapshotBlock).
        let disk =
            super::blocks::SnapshotSource::open(self.ebs(region), region, &snapshot_id).await?;
        Ok(SourceDisk {
            description: raw.description().map(String::from),
            tags,
            disk: std::sync::Arc::new(disk),
            snapshot_id: Some(snapshot_id),
            flavor,
            image,
            volume_type: volume_type.map(|t| t.as_str().to_string()),
        })
    }

    async fn source_in_place(&self, region: &str, source: &Source) -> Result<Option<SourceDisk>> {
        // An image's root snapshot is read where it lies; an instance's root
        // volume only through a snapshot, which a dry run does not make.
        let Source::Image(image_id) = source else {
            return Ok(None);
        };
        let raw = self.describe_raw(region, image_id).await?;
        let image = super::convert::migratable(region, &raw)?;
        let (snapshot_id, volume_type) = Self::root_snapshot(&raw)?;
        let disk =
            super::blocks::SnapshotSource::open(self.ebs(region), region, &snapshot_id).await?;
        Ok(Some(SourceDisk {
            description: raw.description().map(String::from),
            tags: raw
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect(),
            disk: std::sync::Arc::new(disk),
            snapshot_id: Some(snapshot_id),
            flavor: self.flavor_of(region, image.kernel_id.as_deref()).await,
            image,
            volume_type: volume_type.map(|t| t.as_str().to_string()),
        }))
    }

    fn method<'a>(
        &'a self,
        name: crate::migrate::Method,
        helper: &HelperOptions,
    ) -> Result<Box<dyn crate::migrate::method::Method + 'a>> {
        match name {
            crate::migrate::Method::Helper => Ok(Box::new(super::helper::Helper {
                aws: self,
                options: helper.clone(),
            })),
            other => Err(Error::Unsupported(format!(
                "the aws backend has no {other} method"
            ))),
        }
    }

    async fn store_disk(
        &self,
        region: &str,
        path: &Path,
        tags: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> Result<String> {
        let disk = crate::image::source::open_file(path).map_err(|e| Error::io("open", path, e))?;
        let blocks = transfer::file_blocks(&disk);
        Ok(self
            .upload(region, disk, blocks, None, tags, journal)
            .await?
            .0)
    }

    /// The stream: each block of the view read where the source lies and
    /// written into the new snapshot, no local copy.
    async fn store_view(
        &self,
        region: &str,
        view: std::sync::Arc<crate::image::overlay::HvmView>,
        tags: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> Result<(String, crate::image::overlay::TransferStats)> {
        let v = view.clone();
        let blocks = crate::interrupt::blocking(move || v.blocks())
            .await?
            .map_err(|e| Error::io("read", crate::image::source::BlockSource::name(&*view), e))?;
        self.upload(region, view, blocks, None, tags, journal).await
    }

    /// ListChangedBlocks, every page.
    async fn changed_blocks(&self, region: &str, first: &str, second: &str) -> Result<Vec<u64>> {
        let mut pages = self
            .ebs(region)
            .list_changed_blocks()
            .first_snapshot_id(first)
            .second_snapshot_id(second)
            .max_results(10_000)
            .into_paginator()
            .send();
        let mut out = vec![];
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| super::error::convert("ListChangedBlocks", region, None, e))?;
            out.extend(
                page.changed_blocks()
                    .iter()
                    .filter_map(|b| b.block_index())
                    .map(|i| i as u64),
            );
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The child snapshot: only `blocks` are read and written.
    async fn store_view_over(
        &self,
        region: &str,
        view: std::sync::Arc<crate::image::overlay::HvmView>,
        parent: &str,
        blocks: Vec<u64>,
        tags: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> Result<(String, crate::image::overlay::TransferStats)> {
        self.upload(region, view, blocks, Some(parent), tags, journal)
            .await
    }

    async fn registered_by(&self, region: &str, migration_id: &str) -> Result<Option<String>> {
        let existing = self
            .ec2(region)
            .describe_images()
            .owners("self")
            .filters(tag_filter(migration_id))
            .send()
            .await
            .map_err(|e| self.err("DescribeImages", region, e))?;
        Ok(existing
            .images()
            .first()
            .and_then(|i| i.image_id())
            .map(String::from))
    }

    async fn register_hvm(
        &self,
        region: &str,
        reg: &HvmRegistration,
        migration_id: &str,
    ) -> Result<Image> {
        // Look up before creating: RegisterImage has no client token.
        let id = match self.registered_by(region, migration_id).await? {
            Some(id) => id,
            None => {
                let out = self
                    .ec2(region)
                    .register_image()
                    .name(&reg.name)
                    .description(&reg.description)
                    .architecture(ArchitectureValues::from(reg.architecture.as_str()))
                    .virtualization_type("hvm")
                    .root_device_name("/dev/xvda")
                    .block_device_mappings(
                        BlockDeviceMapping::builder()
                            .device_name("/dev/xvda")
                            .ebs(
                                EbsBlockDevice::builder()
                                    .snapshot_id(&reg.snapshot_id)
                                    .volume_size(reg.volume_size_gib as i32)
                                    .volume_type(VolumeType::from(
                                        reg.volume_type.as_deref().unwrap_or("gp2"),
                                    ))
                                    .delete_on_termination(true)
                                    .build(),
                            )
                            .build(),
                    )
                    .ena_support(reg.ena_support)
                    .sriov_net_support("simple")
                    .boot_mode(BootModeValues::LegacyBios)
                    .tag_specifications(tag_spec(ResourceType::Image, &reg.tags))
                    .send()
                    .await
                    .map_err(|e| self.err("RegisterImage", region, e))?;
                out.image_id()
                    .map(String::from)
                    .ok_or_else(|| Error::missing("RegisterImage", region, "image id"))?
            }
        };
        let filter = ImageFilter {
            image_ids: vec![id.clone()],
            ..Default::default()
        };
        crate::backend::Backend::describe_images(self, region, &filter)
            .await?
            .into_iter()
            .next()
            .ok_or(Error::ImageNotFound {
                image_id: id,
                region: region.into(),
            })
    }

    async fn verify_registered(
        &self,
        region: &str,
        image_id: &str,
        reg: &HvmRegistration,
    ) -> Result<Vec<String>> {
        let raw = self.describe_raw(region, image_id).await?;
        let mut problems = vec![];
        let mut want = |what: &str, have: Option<&str>, expected: &str| {
            if have != Some(expected) {
                problems.push(format!(
                    "{what} is {} instead of {expected}",
                    have.unwrap_or("unset")
                ));
            }
        };
        want(
            "virtualization type",
            raw.virtualization_type().map(|v| v.as_str()),
            "hvm",
        );
        want(
            "architecture",
            raw.architecture().map(|a| a.as_str()),
            &reg.architecture,
        );
        want("root device", raw.root_device_name(), "/dev/xvda");
        want(
            "root snapshot",
            Self::root_snapshot(&raw)
                .ok()
                .as_ref()
                .map(|s| s.0.as_str()),
            &reg.snapshot_id,
        );
        if let Some(k) = raw.kernel_id() {
            problems.push(format!("it names kernel {k}"));
        }
        if raw.ena_support().unwrap_or(false) != reg.ena_support {
            problems.push(format!("EnaSupport is not {}", reg.ena_support));
        }
        Ok(problems)
    }

    async fn delete_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()> {
        self.delete_snapshot_quietly(region, snapshot_id).await
    }

    async fn tagged_snapshots(&self, region: &str, migration_id: &str) -> Result<Vec<String>> {
        let out = self
            .ec2(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(tag_filter(migration_id))
            .send()
            .await
            .map_err(|e| self.err("DescribeSnapshots", region, e))?;
        Ok(out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(String::from))
            .collect())
    }

    async fn cleanup(&self, journal: &Journal) -> Result<Vec<String>> {
        // A helper migration also made an instance and volumes.
        let mut helper_journal = journal.clone();
        let mut removed = self.helper_cleanup(&mut helper_journal, false).await;
        let region = &journal.region;
        let keep = match &journal.image_id {
            Some(id) => self
                .describe_raw(region, id)
                .await
                .ok()
                .and_then(|i| Self::root_snapshot(&i).ok())
                .map(|s| s.0),
            None => None,
        };
        let out = self
            .ec2(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(tag_filter(&journal.migration_id))
            .send()
            .await
            .map_err(|e| self.err("DescribeSnapshots", region, e))?;
        let mut ids: Vec<String> = out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(String::from))
            .collect();
        // A pending upload may not be listed by EC2 yet: the journal knows it.
        ids.extend(journal.upload.iter().map(|u| u.snapshot_id.clone()));
        ids.extend(journal.temporary_snapshot.iter().cloned());
        ids.sort();
        ids.dedup();
        ids.retain(|i| Some(i) != keep.as_ref() && !removed.contains(i));
        for id in ids {
            match self.delete_snapshot_quietly(region, &id).await {
                Ok(()) => removed.push(id),
                Err(Error::Aws { code, .. }) if code.starts_with("InvalidSnapshot.NotFound") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    fn work_dir(&self, migration_id: &str) -> PathBuf {
        std::env::var_os("AMITOOL_WORK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                dirs::cache_dir()
                    .unwrap_or_else(std::env::temp_dir)
                    .join("amitool")
                    .join("work")
            })
            .join(migration_id)
    }

    fn request_budgets(&self) -> Vec<crate::migrate::RequestBudget> {
        super::budget::reports()
            .into_iter()
            .map(|(region, api, r)| crate::migrate::RequestBudget {
                region,
                api: format!("{api:?}"),
                max_per_second: r.max_per_second,
                per_second: r.per_second,
                requests: r.requests,
                throttled: r.throttled,
            })
            .collect()
    }

    fn host_name(&self) -> &'static str {
        "aws"
    }
}

impl AwsBackend {
    /// Upload `blocks` of `disk` into a new snapshot tagged `tags` (a child
    /// of `parent`: its blocks kept where not written) and wait until it completes.
    pub(crate) async fn upload(
        &self,
        region: &str,
        disk: crate::image::source::Disk,
        blocks: Vec<u64>,
        parent: Option<&str>,
        tags: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> Result<(String, crate::image::overlay::TransferStats)> {
        let tags: Vec<(String, String)> = tags
            .iter()
            .filter(|(k, _)| !k.starts_with("aws:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = journal.kms_key.clone();
        let (snapshot_id, stats) = crate::backend::aws::stream::upload_journaled(
            &self.ebs(region),
            region,
            disk,
            blocks,
            &format!("HVM root disk built by amitool {}", journal.migration_id),
            &tags,
            key.as_deref(),
            parent,
            journal,
        )
        .await?;
        self.ec2(region)
            .wait_until_snapshot_completed()
            .snapshot_ids(&snapshot_id)
            .wait(SNAPSHOT_WAIT)
            .await
            .map_err(|e| transfer_err("wait for the uploaded snapshot", region, e))?;
        Ok((snapshot_id, stats))
    }
}
