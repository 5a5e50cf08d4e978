//! `migrate --method helper`: the HVM disk's bytes are copied on a helper
//! instance in the source's account, driven by SSM. The pipeline
//! (`migrate::run`) resolved, inspected (where it lies) and planned the
//! migration, as for every method; this method only moves bytes. It stages
//! the HVM disk's boot area (built in Rust) as a snapshot, makes two volumes
//! in the helper's zone (the source from its snapshot, the target from the
//! boot area), attaches them, runs the preparation script
//! (templates/prepare.sh.j2) to copy the planned byte ranges and write the
//! planned files, and snapshots the target. Every resource is tagged and
//! journaled, and removed again at the end or on failure (the helper only if
//! amitool launched it).

mod resources;
mod ssm;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::VolumeType;

use crate::backend::aws::AwsBackend;
use crate::error::{Error, Result};
use crate::image::hvm::Range;
use crate::migrate::journal::Journal;
use crate::migrate::method::{Job, Method};
use crate::migrate::script::{self, Device, Mode, Params, Report};
use crate::migrate::Recorder;

pub use crate::migrate::HelperOptions;

/// The SSM public parameter for the latest Amazon Linux 2023.
pub const HELPER_AMI_PARAMETER: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
pub(crate) const WAIT: Duration = Duration::from_secs(900);
pub(crate) const GIB: u64 = 1 << 30;

pub(crate) fn ec2_err<'a, E>(
    aws: &'a AwsBackend,
    action: &'static str,
    region: &str,
) -> impl FnOnce(aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> Error + 'a
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let region = region.to_string();
    move |e| aws.err(action, &region, e)
}

fn device(dev: &str, size_gib: u64, volume: &str) -> Device {
    Device {
        device: dev.into(),
        size: size_gib * GIB,
        identity: volume.into(),
    }
}

fn refused(r: &Report, what: &str) -> Error {
    Error::Script {
        action: "the preparation script",
        message: format!(
            "refused to {what}: {}",
            r.reason.as_deref().unwrap_or("no reason given")
        ),
    }
}

const BLOCK: u64 = crate::image::BLOCK;

/// Ranges closer than this on both sides are copied as one: the bytes
/// between hold no data and read as zeros (dd's conv=sparse writes none of
/// them), and one dd costs more than reading a few MiB of an unwritten volume.
const JOIN_GAP: u64 = 4 << 20;
/// At most this many ranges per SSM command (each is a line of the script).
const RANGES_PER_COMMAND: usize = 512;

/// `ranges` with the small gaps between neighbours (by source and target
/// alike) filled, in order.
fn coalesce(ranges: &[Range], gap: u64) -> Vec<Range> {
    let mut out: Vec<Range> = vec![];
    for r in ranges {
        match out.last_mut() {
            Some(l)
                if r.src >= l.src + l.len
                    && r.src - (l.src + l.len) <= gap
                    && r.dst.checked_sub(l.dst) == Some(r.src - l.src) =>
            {
                l.len = r.src + r.len - l.src
            }
            _ => out.push(*r),
        }
    }
    out
}

/// `ranges` cut into slices of at most `most` bytes and `count` ranges
/// each, in order.
fn slices(ranges: &[Range], most: u64, count: usize) -> Vec<Vec<Range>> {
    let mut out: Vec<Vec<Range>> = vec![vec![]];
    let mut room = most;
    for r in ranges {
        let mut at = 0;
        while at < r.len {
            if room == 0 || out.last().is_some_and(|c| c.len() >= count) {
                out.push(vec![]);
                room = most;
            }
            let n = (r.len - at).min(room);
            out.last_mut().expect("never empty").push(Range {
                src: r.src + at,
                len: n,
                dst: r.dst + at,
            });
            at += n;
            room -= n;
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

/// The helper method, on the AWS backend.
pub(crate) struct Helper<'a> {
    pub aws: &'a AwsBackend,
    pub options: HelperOptions,
}

impl Helper<'_> {
    /// The helper's part, which only moves bytes: the source and an empty
    /// target volume attached to the helper, the planned ranges copied by
    /// the script, the target snapshotted. The copy's snapshot id.
    async fn copy(
        &self,
        job: &Job<'_>,
        journal: &mut Journal,
        rec: &mut Recorder,
        snapshot: &str,
        (src_gib, dst_gib): (u64, u64),
        (vtype, target_type): (&VolumeType, &VolumeType),
    ) -> Result<String> {
        let aws = self.aws;
        let region = journal.region.clone();
        let plan = job.plan;
        let (instance, zone) = aws.helper(&region, &self.options, journal).await?;
        rec.done(
            crate::migrate::StepName::Helper,
            format!(
                "{instance} in {zone}{}",
                if journal.helper_launched {
                    " (launched)"
                } else {
                    ""
                }
            ),
        );
        if journal.source_volume.is_none() {
            journal.source_volume = Some(
                aws.volume(
                    &region,
                    &zone,
                    ("source", Some(snapshot)),
                    src_gib,
                    vtype,
                    journal,
                )
                .await?,
            );
            journal.save()?;
        }
        if journal.target_volume.is_none() {
            journal.target_volume = Some(
                aws.volume(
                    &region,
                    &zone,
                    ("target", None),
                    dst_gib,
                    target_type,
                    journal,
                )
                .await?,
            );
            journal.save()?;
        }
        let (Some(src_vol), Some(dst_vol)) =
            (journal.source_volume.clone(), journal.target_volume.clone())
        else {
            return Err(Error::refused(
                &journal.migration_id,
                format!(
                    "{}'s journal names no helper volumes after making them",
                    journal.migration_id
                ),
            ));
        };
        aws.attach(&region, &src_vol, &instance, "/dev/sdf").await?;
        aws.attach(&region, &dst_vol, &instance, "/dev/sdg").await?;
        rec.done(
            crate::migrate::StepName::Volumes,
            format!(
                "{src_vol} (source) on /dev/sdf, {dst_vol} (target, {dst_gib} GiB) on /dev/sdg"
            ),
        );

        let layout = &plan.layout;
        let mut params = Params {
            mode: Mode::Convert,
            migration_id: journal.migration_id.clone(),
            source: device("/dev/sdf", src_gib, &src_vol),
            target: device("/dev/sdg", dst_gib, &dst_vol),
            ranges: vec![],
            // Where each filesystem amitool writes into lies on the source.
            filesystems: plan
                .mounts
                .iter()
                .filter_map(|m| {
                    layout
                        .ranges
                        .iter()
                        .find(|r| m.offset >= r.dst && m.offset - r.dst < r.len)
                        .map(|r| r.src + (m.offset - r.dst))
                })
                .collect(),
        };
        // Only the bytes that hold data are copied (the snapshot's listed
        // blocks): the target is a new, empty volume, where every other
        // byte reads as zeros, so a 1 TiB volume costs its data, not its size.
        let data = job
            .source
            .disk
            .data_ranges()
            .unwrap_or_else(|| vec![(0, job.source.disk.len())]);
        let ranges = coalesce(&layout.restrict(&data), JOIN_GAP);
        // The copy runs as a few SSM commands, each a slice of the ranges,
        // so the progress line moves as the helper copies (SSM gives a
        // command's output only when it ends).
        let total: u64 = ranges.iter().map(|r| r.len).sum();
        let chunks = slices(&ranges, (total / 16).max(8 << 30), RANGES_PER_COMMAND);
        let progress = crate::progress::Transfer::new(
            &format!("copy on {instance}"),
            Some(total.div_ceil(BLOCK)),
        );
        let mut copied = 0;
        for chunk in &chunks {
            params.ranges = chunk.clone();
            let done = aws
                .run_script(
                    &region,
                    &instance,
                    &journal.migration_id,
                    &script::render(&params)?,
                )
                .await?;
            if !done.ok {
                return Err(refused(&done, "convert"));
            }
            let n = done.bytes_copied.unwrap_or(0);
            copied += n;
            progress.bar().inc(n.div_ceil(BLOCK));
        }
        drop(progress);
        rec.done(
            crate::migrate::StepName::Copy,
            format!(
                "{} range(s) that hold data copied onto {dst_vol} at their HVM offsets ({copied} bytes, {} SSM command(s))",
                ranges.len(),
                chunks.len()
            ),
        );

        for vol in [&src_vol, &dst_vol] {
            aws.detach(&region, vol, false).await?;
        }
        // create_snapshot_of finds the one an earlier run made of this volume.
        let snap = aws
            .create_snapshot_of(&region, &dst_vol, &journal.migration_id, None)
            .await?;
        journal.copy_snapshot = Some(snap.clone());
        journal.save()?;
        Ok(snap)
    }
}

#[async_trait]
impl Method for Helper<'_> {
    async fn check(&self, journal: &Journal) -> Result<()> {
        self.aws
            .check_helper(&journal.region, &self.options, journal)
            .await
    }

    async fn make_disk(
        &self,
        job: &Job<'_>,
        journal: &mut Journal,
        rec: &mut Recorder,
    ) -> Result<String> {
        let aws = self.aws;
        let region = journal.region.clone();
        let plan = job.plan;
        let snapshot = job.source.snapshot_id.clone().ok_or_else(|| {
            let id = &job.source.image.image_id;
            Error::refused(id, format!("{id} has no root snapshot"))
        })?;
        let (src_gib, dst_gib) = (job.source.disk.len().div_ceil(GIB), plan.volume_gib());
        let vtype = job
            .source
            .volume_type
            .as_deref()
            .map(VolumeType::from)
            .unwrap_or(VolumeType::Gp2);
        // The target (and the new image's root) keeps the source's type unless told.
        let target_type = journal
            .volume_type
            .as_deref()
            .map(VolumeType::from)
            .unwrap_or_else(|| vtype.clone());

        // A resume after the copy's snapshot goes straight on to the child.
        let copy = match journal.copy_snapshot.clone() {
            Some(s) => s,
            None => {
                self.copy(
                    job,
                    journal,
                    rec,
                    &snapshot,
                    (src_gib, dst_gib),
                    (&vtype, &target_type),
                )
                .await?
            }
        };
        aws.wait_snapshot(&region, &copy).await?;
        rec.done(crate::migrate::StepName::SnapshotCopy, copy.clone());

        // The rest is the shared Rust code's, as for the direct method: the
        // view over the source where it lies, its files written by
        // libext2fs; blocks 0-1 and the overlay's go into a child snapshot
        // of the helper's copy, which keeps every other block.
        let now = journal.edit_time()?;
        let (p, disk, work) = (
            plan.clone(),
            job.source.disk.clone(),
            job.work.to_path_buf(),
        );
        let view = crate::interrupt::blocking(move || p.view(&disk, &work, now)).await??;
        let mut blocks: Vec<u64> = vec![0, 1];
        blocks.extend(view.edited());
        blocks.sort_unstable();
        blocks.dedup();
        let (target_snapshot, stats) = aws
            .upload(&region, view, blocks, Some(&copy), job.tags, journal)
            .await?;
        rec.done(
            crate::migrate::StepName::SnapshotTarget,
            format!(
                "{target_snapshot}: a child of {copy} with blocks 0-1 (MBR, core.img) and the {} block(s) libext2fs changed",
                stats.blocks_written.saturating_sub(2)
            ),
        );
        Ok(target_snapshot)
    }

    async fn tidy(&self, journal: &mut Journal, _finished: bool, keep_temp: bool) -> Vec<String> {
        self.aws.helper_cleanup(journal, keep_temp).await
    }

    fn kept(&self, journal: &Journal) -> Vec<String> {
        let mut kept = vec![];
        if let (Some(h), true) = (&journal.helper_instance, journal.helper_launched) {
            kept.push(format!("the helper {h} (it could not be terminated)"));
        }
        for v in [&journal.source_volume, &journal.target_volume]
            .into_iter()
            .flatten()
        {
            kept.push(format!("the volume {v}"));
        }
        if let Some(s) = &journal.copy_snapshot {
            kept.push(format!("the snapshot of the helper's copy {s}"));
        }
        if let Some(u) = &journal.upload {
            kept.push(format!(
                "the upload snapshot {} of the converted disk",
                u.snapshot_id
            ));
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_keep_every_byte_in_order() {
        let r = [
            Range {
                src: 0,
                len: 10,
                dst: 100,
            },
            Range {
                src: 20,
                len: 5,
                dst: 200,
            },
        ];
        let s = slices(&r, 4, 100);
        let flat: Vec<Range> = s.iter().flatten().copied().collect();
        assert_eq!(flat.iter().map(|r| r.len).sum::<u64>(), 15);
        assert_eq!(s.len(), 4);
        assert_eq!(
            flat[0],
            Range {
                src: 0,
                len: 4,
                dst: 100
            }
        );
        assert_eq!(
            flat[2],
            Range {
                src: 8,
                len: 2,
                dst: 108
            }
        );
        assert_eq!(
            flat[3],
            Range {
                src: 20,
                len: 2,
                dst: 200
            }
        );
        assert_eq!(slices(&r, 1 << 30, 100).len(), 1);
        // At most `count` ranges per slice.
        assert_eq!(slices(&r, 1 << 30, 1).len(), 2);
    }

    #[test]
    fn coalesce_fills_only_small_gaps_that_keep_offsets() {
        let r = |src, len, dst| Range { src, len, dst };
        let a = [r(0, 10, 100), r(14, 2, 114), r(40, 5, 140), r(50, 5, 300)];
        assert_eq!(
            coalesce(&a, 4),
            vec![r(0, 16, 100), r(40, 5, 140), r(50, 5, 300)]
        );
        assert_eq!(coalesce(&a, 100), vec![r(0, 45, 100), r(50, 5, 300)]);
        assert!(coalesce(&[], 4).is_empty());
    }
}
