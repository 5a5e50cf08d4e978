//! The cut-over's data volumes: snapshotted for the replacement (found
//! again by their tags after a kill), snapshotted at each warm sync, or
//! moved from the stopped source to the replacement and back.

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{ResourceType, TagSpecification};

use super::{filter, save, tag, ROLE_TAG, WAIT};
use crate::backend::aws::transfer::transfer_err;
use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::migrate::cutover::{DataVolume, Replace};
use crate::migrate::warm::DataSnapshot;
use crate::migrate::{Journal, Recorder, MIGRATION_TAG};

/// Every data volume is copied (or moved): journaled, and the step says how each went.
fn volumes_done(
    journal: &mut Journal,
    r: &mut Replace,
    rec: &mut Recorder,
    each: impl Fn(&DataVolume) -> String,
) -> Result<()> {
    r.volumes_copied = true;
    save(journal, r)?;
    rec.done(
        crate::migrate::StepName::DataVolumes,
        if r.volumes.is_empty() {
            "none besides the root".to_string()
        } else {
            r.volumes.iter().map(each).collect::<Vec<_>>().join(", ")
        },
    );
    Ok(())
}
impl AwsBackend {
    /// The snapshot of data volume `v` this migration takes for `role`
    /// (`data`: the replacement's copy; `data-sync`: a warm sync's, with its
    /// generation): the one an earlier run took (found by its tags after a
    /// kill), else a new one, tagged (not waited for).
    pub(super) async fn data_snapshot(
        &self,
        region: &str,
        mid: &str,
        v: &DataVolume,
        role: &str,
        sync: Option<&str>,
        description: String,
    ) -> Result<String> {
        let sync_tag = crate::backend::aws::host::SYNC_TAG;
        let mut find = self
            .ec2(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter(&format!("tag:{MIGRATION_TAG}"), mid))
            .filters(filter("volume-id", &v.volume_id))
            .filters(filter(&format!("tag:{ROLE_TAG}"), role));
        if let Some(g) = sync {
            find = find.filters(filter(&format!("tag:{sync_tag}"), g));
        }
        let earlier = find
            .send()
            .await
            .map_err(|e| self.err("DescribeSnapshots", region, e))?;
        if let Some(s) = earlier.snapshots().first().and_then(|s| s.snapshot_id()) {
            return Ok(s.to_string());
        }
        let mut tags = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(tag(MIGRATION_TAG, mid))
            .tags(tag(ROLE_TAG, role))
            .tags(tag("amitool:device", &v.device));
        if let Some(g) = sync {
            tags = tags.tags(tag(sync_tag, g));
        }
        Ok(self
            .ec2(region)
            .create_snapshot()
            .volume_id(&v.volume_id)
            .description(description)
            .tag_specifications(tags.build())
            .send()
            .await
            .map_err(|e| self.err("CreateSnapshot", region, e))?
            .snapshot_id()
            .unwrap_or_default()
            .to_string())
    }

    /// Each data volume snapshotted (found again by its tags after a kill).
    pub(super) async fn copy_data_volumes(
        &self,
        journal: &mut Journal,
        r: &mut Replace,
        rec: &mut Recorder,
    ) -> Result<()> {
        let (region, source, mid) = (
            journal.region.clone(),
            journal.source_id.clone(),
            journal.migration_id.clone(),
        );
        for n in 0..r.volumes.len() {
            if r.volumes[n].snapshot_id.is_some() {
                continue;
            }
            let v = r.volumes[n].clone();
            let snap = self
                .data_snapshot(
                    &region,
                    &mid,
                    &v,
                    "data",
                    None,
                    format!(
                        "amitool {mid}: {} of {source} for its replacement",
                        v.device
                    ),
                )
                .await?;
            r.volumes[n].snapshot_id = Some(snap);
            save(journal, r)?;
        }
        for v in &r.volumes {
            if let Some(s) = &v.snapshot_id {
                self.wait_snapshot(&region, s).await?;
            }
        }
        volumes_done(journal, r, rec, |v| {
            format!(
                "{} {} → {}",
                v.device,
                v.volume_id,
                v.snapshot_id.as_deref().unwrap_or("-")
            )
        })?;
        Ok(())
    }

    /// `--warm`: this sync's snapshot of each data volume of the running
    /// source (found again by its tags after a kill), waited for; then the
    /// sync before's deleted.
    pub(super) async fn run_sync_data(
        &self,
        journal: &mut Journal,
        rec: &mut Recorder,
    ) -> Result<()> {
        let (region, source, mid) = (
            journal.region.clone(),
            journal.source_id.clone(),
            journal.migration_id.clone(),
        );
        let generation = journal.sync_generation().unwrap_or(0).to_string();
        let facts = self.source_facts(&region, &source).await?;
        let mut made = vec![];
        for v in &facts.volumes {
            let snap = self
                .data_snapshot(
                    &region,
                    &mid,
                    v,
                    "data-sync",
                    Some(&generation),
                    format!("amitool {mid}: {} of {source}, sync {generation}", v.device),
                )
                .await?;
            made.push(DataSnapshot {
                volume_id: v.volume_id.clone(),
                snapshot_id: snap,
            });
        }
        for d in &made {
            self.wait_snapshot(&region, &d.snapshot_id).await?;
        }
        let w = journal.warm.get_or_insert_with(Default::default);
        let old = std::mem::replace(&mut w.data, made.clone());
        journal.save()?;
        for d in old.iter().filter(|o| !made.contains(o)) {
            let _ = self
                .ec2(&region)
                .delete_snapshot()
                .snapshot_id(&d.snapshot_id)
                .send()
                .await;
        }
        rec.done(
            crate::migrate::StepName::DataSync,
            if made.is_empty() {
                "no data volume besides the root".to_string()
            } else {
                made.iter()
                    .map(|d| format!("{} → {}", d.volume_id, d.snapshot_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        Ok(())
    }

    /// `--move-data-volumes`: each data volume detached from the stopped
    /// source and attached to the replacement at its device; journaled
    /// volume by volume (a resume skips the moved ones).
    pub(super) async fn move_data_volumes(
        &self,
        journal: &mut Journal,
        r: &mut Replace,
        replacement: &str,
        rec: &mut Recorder,
    ) -> Result<()> {
        let (region, source) = (journal.region.clone(), journal.source_id.clone());
        for n in 0..r.volumes.len() {
            if r.volumes[n].moved {
                continue;
            }
            let v = r.volumes[n].clone();
            self.move_volume(&region, &v, &source, replacement).await?;
            r.volumes[n].moved = true;
            save(journal, r)?;
        }
        volumes_done(journal, r, rec, |v| {
            format!("{} {} moved to {replacement}", v.device, v.volume_id)
        })?;
        Ok(())
    }

    /// Detach `v` from `from` (when it is attached there) and attach it to
    /// `to` at its device, waiting for each; nothing when it is on `to`.
    pub(super) async fn move_volume(
        &self,
        region: &str,
        v: &DataVolume,
        from: &str,
        to: &str,
    ) -> Result<()> {
        let ec2 = self.ec2(region);
        let described = ec2
            .describe_volumes()
            .volume_ids(&v.volume_id)
            .send()
            .await
            .map_err(|e| self.err("DescribeVolumes", region, e))?;
        let on: Option<String> = described
            .volumes()
            .first()
            .and_then(|vol| vol.attachments().first())
            .and_then(|a| a.instance_id())
            .map(String::from);
        if on.as_deref() == Some(to) {
            return Ok(());
        }
        if on.as_deref() == Some(from) {
            ec2.detach_volume()
                .volume_id(&v.volume_id)
                .instance_id(from)
                .send()
                .await
                .map_err(|e| self.err("DetachVolume", region, e))?;
            ec2.wait_until_volume_available()
                .volume_ids(&v.volume_id)
                .wait(WAIT)
                .await
                .map_err(|e| transfer_err("wait for the volume to detach", region, e))?;
        } else if let Some(other) = on {
            return Err(Error::refused(
                &v.volume_id,
                format!(
                    "{} is attached to {other}, neither {from} nor {to}: amitool leaves it there",
                    v.volume_id
                ),
            ));
        }
        ec2.attach_volume()
            .volume_id(&v.volume_id)
            .instance_id(to)
            .device(&v.device)
            .send()
            .await
            .map_err(|e| self.err("AttachVolume", region, e))?;
        ec2.wait_until_volume_in_use()
            .volume_ids(&v.volume_id)
            .wait(WAIT)
            .await
            .map_err(|e| transfer_err("wait for the volume to attach", region, e))?;
        Ok(())
    }
}
