//! Warm migration (`migrate --instance I --replace --warm`): the root and
//! data volumes are copied while the source runs (phase 1, repeatable with
//! `--sync`), and the cut-over (`--cut-over MID`) stops the source and
//! moves only what changed since the last sync. Each sync builds the HVM
//! disk of the source as it now is, over the previous one: a child snapshot
//! (EBS ParentSnapshotId) written with the blocks that can differ (the
//! head, the source's changed blocks at their HVM offsets, and the blocks
//! this build and the previous one edited), so every other block is the
//! parent's, which is already what the new build would write there.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::hvm::Layout;
use crate::image::BLOCK;
use crate::migrate::{Journal, JournalState, MigrationHost};

/// Where a warm migration is, in its journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Warm {
    /// The sync being made (0 for phase 1), so a kill finds its own snapshots again.
    pub generation: u32,
    /// `--cut-over` began: this generation is the final one, registered.
    #[serde(default)]
    pub cutting_over: bool,
    /// The last sync that finished: what the next one builds on.
    #[serde(default)]
    pub synced: Option<Synced>,
    /// The blocks this generation's build edited and its layout, saved
    /// before its disk is stored (a resume that finds the disk stored
    /// needs them for the next sync).
    #[serde(default)]
    pub building: Option<Built>,
    /// The root's blocks this generation found changed since the last sync.
    #[serde(default)]
    pub changed_now: Option<u64>,
    /// The data volumes' snapshots of the last sync.
    #[serde(default)]
    pub data: Vec<DataSnapshot>,
    /// When the cut-over stopped the source, and when the replacement ran
    /// (seconds since the epoch).
    #[serde(default)]
    pub stopped_at: Option<f64>,
    #[serde(default)]
    pub running_at: Option<f64>,
    /// The cut-over's transfer, once its disk is stored.
    #[serde(default)]
    pub outage: Option<Outage>,
}

/// One finished sync: the root snapshot it read and the HVM disk it made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Synced {
    pub generation: u32,
    pub source_snapshot: String,
    pub disk_snapshot: String,
    #[serde(flatten)]
    pub built: Built,
    /// The source's blocks that changed since the sync before (none for phase 1).
    #[serde(default)]
    pub changed_blocks: Option<u64>,
    pub blocks_written: u64,
}

/// What a build of the HVM disk wrote besides the source's bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Built {
    /// The HVM blocks its overlay holds (the boot edits).
    pub edited: Vec<u64>,
    /// The layout it was built with: a sync over another layout is made whole.
    pub layout: String,
}

/// The cut-over's cost: from the source's stop to the replacement running,
/// and the blocks its final sync read and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    pub seconds: f64,
    /// Blocks read from the final root snapshot (the inspection's included).
    pub blocks_read: u64,
    pub blocks_written: u64,
    pub bytes_written: u64,
    /// The root's blocks that changed since the last sync (ListChangedBlocks).
    pub changed_blocks: u64,
    /// The blocks the boot edits of the final build and of the last sync
    /// touch (written again whether or not the guest changed them).
    pub edited_blocks: u64,
}

impl Warm {
    /// The blocks this build and the last sync edited, once each.
    pub fn edited_blocks(&self) -> u64 {
        let mut all: BTreeSet<u64> = BTreeSet::new();
        for b in [
            self.building.as_ref(),
            self.synced.as_ref().map(|s| &s.built),
        ]
        .into_iter()
        .flatten()
        {
            all.extend(&b.edited);
        }
        all.len() as u64
    }
}

/// A layout as the journal keeps it, to tell whether two builds place the
/// source's bytes alike.
pub fn layout_key(layout: &Layout) -> String {
    let ranges: Vec<String> = layout
        .ranges
        .iter()
        .map(|r| format!("{}+{}@{}", r.src, r.len, r.dst))
        .collect();
    format!("{} {}", layout.disk_size, ranges.join(","))
}

/// The HVM blocks a sync over the previous disk writes: the head (the MBR
/// and core.img), each block a changed source block lands in, and the
/// blocks this build and the previous one edited (an edit the guest's
/// bytes now replace goes back to them). Every other block is unchanged:
/// the layout is the same, and its source bytes are.
pub fn blocks_to_write(
    layout: &Layout,
    head_blocks: u64,
    changed_source_blocks: &[u64],
    edited_now: &[u64],
    edited_before: &[u64],
) -> Vec<u64> {
    let mut out: BTreeSet<u64> = (0..head_blocks).collect();
    let ranges: Vec<(u64, u64)> = changed_source_blocks
        .iter()
        .map(|b| (b * BLOCK, BLOCK))
        .collect();
    for r in layout.restrict(&ranges) {
        out.extend(r.dst / BLOCK..(r.dst + r.len).div_ceil(BLOCK));
    }
    out.extend(edited_now);
    out.extend(edited_before);
    let last = layout.disk_size.div_ceil(BLOCK);
    out.into_iter().filter(|b| *b < last).collect()
}

/// Start the next sync (or, `cutting_over`, the final one) of a warm
/// migration whose last sync finished: its own snapshots, upload and steps.
pub fn next_generation(journal: &mut Journal, cutting_over: bool) -> Result<()> {
    let mid = journal.migration_id.clone();
    let w = journal
        .warm
        .as_mut()
        .ok_or_else(|| Error::refused(&mid, format!("{mid} is not a warm migration (--warm)")))?;
    w.generation += 1;
    w.cutting_over = cutting_over;
    w.building = None;
    w.changed_now = None;
    journal.temporary_snapshot = None;
    journal.disk_snapshot = None;
    journal.upload = None;
    journal.transfer = None;
    journal.image_id = None;
    journal.steps.clear();
    journal.state = JournalState::Running;
    journal.save()
}

/// A sync finished: its root snapshot and disk become what the next one
/// builds on (journaled first), then the sync before's go. What was removed.
pub async fn synced(host: &dyn MigrationHost, journal: &mut Journal) -> Result<Vec<String>> {
    let mid = journal.migration_id.clone();
    let (Some(source_snapshot), Some(disk_snapshot)) = (
        journal.temporary_snapshot.clone(),
        journal.disk_snapshot.clone(),
    ) else {
        return Err(Error::refused(
            &mid,
            format!("{mid}: a warm sync needs an instance's root snapshot"),
        ));
    };
    let blocks_written = journal.transfer.map_or(0, |t| t.blocks_written);
    let w = journal.warm.as_mut().expect("a warm migration");
    let new = Synced {
        generation: w.generation,
        source_snapshot,
        disk_snapshot,
        built: w.building.take().unwrap_or_default(),
        changed_blocks: w.changed_now.take(),
        blocks_written,
    };
    let old = w.synced.replace(new.clone());
    journal.temporary_snapshot = None;
    journal.disk_snapshot = None;
    journal.upload = None;
    journal.save()?;
    Ok(forget(host, journal, old, Some(&new)).await)
}

/// Delete a sync's snapshots that `keep` does not name; what was removed.
pub async fn forget(
    host: &dyn MigrationHost,
    journal: &Journal,
    old: Option<Synced>,
    keep: Option<&Synced>,
) -> Vec<String> {
    let mut removed = vec![];
    let Some(old) = old else { return removed };
    let kept = |s: &String| {
        keep.is_some_and(|k| &k.source_snapshot == s || &k.disk_snapshot == s)
            || journal.disk_snapshot.as_ref() == Some(s)
    };
    for (what, snap) in [
        ("root snapshot", &old.source_snapshot),
        ("HVM disk", &old.disk_snapshot),
    ] {
        if !kept(snap) && host.delete_snapshot(&journal.region, snap).await.is_ok() {
            removed.push(format!("sync {}'s {what} {snap}", old.generation));
        }
    }
    removed
}

/// The snapshots a warm migration still needs (the sweep keeps them).
pub fn needed(journal: &Journal) -> Vec<String> {
    let Some(w) = &journal.warm else {
        return vec![];
    };
    let mut out: Vec<String> = w.data.iter().map(|d| d.snapshot_id.clone()).collect();
    if let Some(s) = &w.synced {
        out.push(s.source_snapshot.clone());
        out.push(s.disk_snapshot.clone());
    }
    out
}

/// A warm sync, as `migrate --output json` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncReport {
    pub generation: u32,
    /// The root snapshot it read and the HVM disk it made.
    pub root_snapshot: String,
    pub disk_snapshot: String,
    /// The root's blocks changed since the sync before (none for the first).
    pub changed_blocks: Option<u64>,
    pub blocks_written: u64,
    /// The data volumes' snapshots of this sync.
    pub data_snapshots: Vec<DataSnapshot>,
    /// What finishes the migration, and what catches up again.
    pub cut_over: String,
    pub sync: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSnapshot {
    pub volume_id: String,
    pub snapshot_id: String,
}

/// The sync a finished phase 1 or `--sync` made, or `None`.
pub fn report(journal: &Journal) -> Option<SyncReport> {
    let w = journal.warm.as_ref()?;
    let s = w
        .synced
        .as_ref()
        .filter(|_| journal.state == JournalState::Synced)?;
    let mid = &journal.migration_id;
    Some(SyncReport {
        generation: s.generation,
        root_snapshot: s.source_snapshot.clone(),
        disk_snapshot: s.disk_snapshot.clone(),
        changed_blocks: s.changed_blocks,
        blocks_written: s.blocks_written,
        data_snapshots: w.data.clone(),
        cut_over: format!("amitool migrate --cut-over {mid}"),
        sync: format!("amitool migrate --sync {mid}"),
    })
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A time as RFC 3339 (UTC).
pub fn rfc3339(t: f64) -> String {
    aws_sdk_ec2::primitives::DateTime::from_secs_f64(t)
        .fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
        .unwrap_or_else(|_| format!("{t:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_writes_the_head_the_changed_blocks_where_they_land_and_both_builds_edits() {
        // A filesystem at byte 0 of the source lands at 1 MiB: source block
        // i is HVM block i + 2.
        let layout = Layout::new(0, 64 * BLOCK, "0a3f1f32-5f2b-4c6e-9a54-1d0c0a000001");
        let w = blocks_to_write(&layout, 2, &[0, 7, 63], &[5, 9], &[9, 40]);
        assert_eq!(w, [0, 1, 2, 5, 9, 40, 65]);
        // Nothing changed and nothing edited: the head alone.
        assert_eq!(blocks_to_write(&layout, 2, &[], &[], &[]), [0, 1]);
        // A changed block past the filesystem lands nowhere.
        assert_eq!(blocks_to_write(&layout, 2, &[500], &[], &[]), [0, 1]);
    }

    #[test]
    fn an_unaligned_filesystem_changes_two_hvm_blocks_per_source_block() {
        // At sector 63 of the source, source block 1 straddles two HVM blocks.
        let layout = Layout::new(63 * 512, 32 * BLOCK, "0a3f1f32-5f2b-4c6e-9a54-1d0c0a000002");
        let w = blocks_to_write(&layout, 2, &[1], &[], &[]);
        let r = layout.restrict(&[(BLOCK, BLOCK)]);
        let first = r[0].dst / BLOCK;
        let last = (r.last().unwrap().dst + r.last().unwrap().len - 1) / BLOCK;
        assert_eq!(
            w,
            [vec![0, 1], (first..=last).collect::<Vec<u64>>()].concat()
        );
        assert_eq!(last - first, 1);
    }

    #[test]
    fn layouts_are_told_apart() {
        let a = Layout::new(0, 64 * BLOCK, "0a3f1f32-5f2b-4c6e-9a54-1d0c0a000001");
        let b = Layout::new(0, 128 * BLOCK, "0a3f1f32-5f2b-4c6e-9a54-1d0c0a000001");
        assert_eq!(layout_key(&a), layout_key(&a.clone()));
        assert_ne!(layout_key(&a), layout_key(&b));
    }
}
