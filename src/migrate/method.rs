//! How the HVM disk's bytes are made: the plan every method is given, and
//! the methods. The pipeline (`run.rs`) resolves, inspects and plans once;
//! a method only moves bytes and stores the result as a snapshot. `direct`
//! builds the disk as a local file (the local host's file in place, an EBS
//! snapshot downloaded) and stores it; the AWS backend adds `helper`
//! (`backend::aws::helper`), which copies on an instance in the source's
//! account.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::image::boot;
use crate::image::extwrite::{self, NewFile};
use crate::image::guest::{self, Guest, Mount};
use crate::image::guestfix::{self, GuestFix};
use crate::image::hvm;
use crate::image::inspect::Inspection;
use crate::image::overlay::HvmView;
use crate::image::source::Disk;
use crate::migrate::journal::Journal;
use crate::migrate::{plan_config, warm, MigrationHost, Recorder, SourceDisk};

/// `--method helper`'s choices (the AWS backend's helper instance).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HelperOptions {
    pub instance: Option<String>,
    pub subnet: Option<String>,
    pub profile: Option<String>,
    pub instance_type: String,
}

/// The HVM disk to make, planned once from the source read where it lies.
#[derive(Debug, Clone)]
pub struct Plan {
    pub layout: hvm::Layout,
    /// core.img's embedded configuration: the hand-over to the guest's own file.
    pub cfg: String,
    /// The guest's filesystems where they lie on the HVM disk.
    pub mounts: Vec<Mount>,
    /// Files written into the copy (guest paths): the boot configuration
    /// rewritten for HVM, and with --fix-guest its fixes (a fix of a file
    /// the boot rewrite also changes includes that rewrite and replaces it).
    pub files: Vec<GuestFix>,
    /// The --fix-guest fixes, as `fixed: …` findings.
    pub fixed: Vec<String>,
}

impl Plan {
    /// Plan the copy of an inspected source (blocking: reads the guest's files for --fix-guest).
    pub fn new(disk: &Disk, insp: &Inspection, fix_guest: bool) -> Result<Plan> {
        let layout = insp.hvm_layout();
        let cfg = plan_config(insp)?;
        let mut files: Vec<GuestFix> = insp
            .boot
            .as_ref()
            .map(|b| b.edits.iter().map(GuestFix::from_edit).collect())
            .unwrap_or_default();
        let mut fixed = vec![];
        if fix_guest {
            let extra = match &insp.root_uuid {
                Some(root) => {
                    let g = Guest::open_in(disk, &insp.mounts)
                        .map_err(|e| Error::build("fix-guest: open the guest's files", e))?;
                    guestfix::plan(&g, root)
                }
                None => {
                    fixed.push("nothing: the root filesystem could not be read".into());
                    vec![]
                }
            };
            for fix in extra {
                files.retain(|f| f.path != fix.path);
                fixed.push(fix.description.clone());
                files.push(fix);
            }
        }
        Ok(Plan {
            mounts: insp.hvm_mounts(&layout),
            layout,
            cfg,
            files,
            fixed,
        })
    }

    /// The HVM disk over `source` as a view, every planned file written into
    /// its overlay by libext2fs and read back. Blocking: it reads the source.
    pub fn view(&self, source: &Disk, work: &Path, now: i64) -> Result<Arc<HvmView>> {
        let head = hvm::boot_area(&self.layout, &self.cfg, work)
            .map_err(|e| Error::build("build the boot blocks", e))?;
        let view = Arc::new(HvmView::new(source.clone(), self.layout.clone(), head));
        let placed = self
            .placed_files()
            .map_err(|e| Error::build("rewrite the boot configuration", e))?;
        let mut by_fs: BTreeMap<u64, Vec<&GuestFix>> = BTreeMap::new();
        for (offset, f) in &placed {
            by_fs.entry(*offset).or_default().push(f);
        }
        for (offset, files) in by_fs {
            let end = self
                .layout
                .ranges
                .iter()
                .find(|r| offset >= r.dst && offset - r.dst < r.len)
                .map_or(self.layout.disk_size, |r| r.dst + r.len);
            let new: Vec<NewFile> = files
                .iter()
                .map(|f| NewFile {
                    path: &f.path,
                    data: f.content.as_bytes(),
                    mode: (u32::from(f.mode.0 & 0o7777), f.mode.1, f.mode.2),
                })
                .collect();
            extwrite::write_files(&view, offset, end, &new, now).map_err(|e| {
                Error::build(
                    format!(
                        "write {} into the copy",
                        files
                            .iter()
                            .map(|f| f.path.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    e,
                )
            })?;
        }
        // Read back through the filesystem reader, as GRUB and the guest will.
        let disk: Disk = view.clone();
        let g = Guest::open_in(&disk, &self.mounts)
            .map_err(|e| Error::build("read the copy back", e))?;
        for f in &self.files {
            if g.read_text(&f.path).as_deref() != Some(f.content.as_str()) {
                return Err(Error::build(
                    "read the copy back",
                    format!("{} reads back different from what was written", f.path),
                ));
            }
        }
        Ok(view)
    }

    /// The new root volume's size in GiB.
    pub fn volume_gib(&self) -> u64 {
        self.layout.disk_size.div_ceil(1 << 30)
    }

    /// Each file with the HVM disk's byte offset of the filesystem it lies
    /// on and its path inside that filesystem.
    pub fn placed_files(&self) -> std::result::Result<Vec<(u64, GuestFix)>, guestfix::FixError> {
        self.files
            .iter()
            .map(|f| {
                let (i, inner) =
                    guest::route(self.mounts.iter().map(|m| m.point.as_str()), &f.path)
                        .ok_or_else(|| guestfix::FixError::Unmounted {
                            path: f.path.clone(),
                        })?;
                Ok((
                    self.mounts[i].offset,
                    GuestFix {
                        path: inner,
                        ..f.clone()
                    },
                ))
            })
            .collect()
    }
}

/// What a run of the pipeline gives a method.
pub struct Job<'a> {
    pub source: &'a SourceDisk,
    pub plan: &'a Plan,
    /// The new snapshot's tags.
    pub tags: &'a BTreeMap<String, String>,
    /// This migration's work directory.
    pub work: &'a Path,
}

/// A way of making the planned HVM disk: it only moves bytes.
#[async_trait]
pub trait Method: Send + Sync {
    /// What this method can check before anything is made or moved (the
    /// helper: that it exists or could be launched).
    async fn check(&self, _journal: &Journal) -> Result<()> {
        Ok(())
    }
    /// Make the disk and store it as a snapshot, recording the steps; the snapshot's id.
    async fn make_disk(
        &self,
        job: &Job<'_>,
        journal: &mut Journal,
        rec: &mut Recorder,
    ) -> Result<String>;
    /// Remove what this method made for the copy (never the new snapshot),
    /// all of it when `finished`; what was removed.
    async fn tidy(&self, journal: &mut Journal, finished: bool, keep_temp: bool) -> Vec<String>;
    /// What a stopped run of this method keeps, for --resume or --cleanup.
    fn kept(&self, journal: &Journal) -> Vec<String>;
}

/// The disk made from the view where the source lies: the overlay built
/// by libext2fs, then each block read once and written once by the host
/// (a snapshot streamed through the EBS direct APIs; the local host's file).
pub struct Direct<'a>(pub &'a dyn MigrationHost);

impl Direct<'_> {
    /// Store the view: whole, or (a warm sync over an earlier one of the
    /// same layout) only the blocks that can differ from that earlier disk,
    /// as its child. The snapshot, what moved, and what it was stored over.
    async fn store(
        &self,
        job: &Job<'_>,
        view: Arc<HvmView>,
        journal: &mut Journal,
    ) -> Result<(String, crate::image::overlay::TransferStats, String)> {
        let region = journal.region.clone();
        let built = warm::Built {
            edited: view.edited(),
            layout: warm::layout_key(&job.plan.layout),
        };
        let base = match journal.warm.as_mut() {
            None => None,
            Some(w) => {
                w.building = Some(built.clone());
                w.synced.clone().filter(|s| s.built.layout == built.layout)
            }
        };
        journal.save()?;
        let (Some(base), Some(now)) = (base, job.source.snapshot_id.as_deref()) else {
            let (id, stats) = self.0.store_view(&region, view, job.tags, journal).await?;
            return Ok((id, stats, String::new()));
        };
        let changed = self
            .0
            .changed_blocks(&region, &base.source_snapshot, now)
            .await?;
        let blocks = warm::blocks_to_write(
            &job.plan.layout,
            view.head_blocks(),
            &changed,
            &built.edited,
            &base.built.edited,
        );
        if let Some(w) = journal.warm.as_mut() {
            w.changed_now = Some(changed.len() as u64);
        }
        let (id, stats) = self
            .0
            .store_view_over(
                &region,
                view,
                &base.disk_snapshot,
                blocks,
                job.tags,
                journal,
            )
            .await?;
        Ok((
            id,
            stats,
            format!(
                " over {} ({} of the root's blocks changed since sync {})",
                base.disk_snapshot,
                changed.len(),
                base.generation
            ),
        ))
    }
}

#[async_trait]
impl Method for Direct<'_> {
    async fn make_disk(
        &self,
        job: &Job<'_>,
        journal: &mut Journal,
        rec: &mut Recorder,
    ) -> Result<String> {
        let now = journal.edit_time()?;
        let source_id = job.source.image.image_id.clone();
        let (plan, disk, work) = (
            job.plan.clone(),
            job.source.disk.clone(),
            job.work.to_path_buf(),
        );
        let view = crate::interrupt::blocking(move || {
            let view = plan.view(&disk, &work, now)?;
            let problems = boot::hvm_problems_in(&(view.clone() as Disk), Some(&plan.cfg));
            if !problems.is_empty() {
                return Err(Error::Unconvertible {
                    reason: format!(
                        "{source_id} cannot be migrated: the HVM disk would not boot: {}",
                        problems.join("; ")
                    ),
                    id: source_id,
                });
            }
            Ok(view)
        })
        .await??;
        rec.done(
            crate::migrate::StepName::Build,
            format!(
                "{} file(s) written by libext2fs into {} overlay block(s); MBR and core.img in blocks 0-1",
                job.plan.files.len(),
                view.edited().len(),
            ),
        );
        let (snapshot_id, stats, over) = self.store(job, view, journal).await?;
        rec.done(
            crate::migrate::StepName::Upload,
            format!(
                "snapshot {snapshot_id}{over}: {} blocks streamed{}; in all {} blocks read, {} written ({} bytes)",
                stats.streamed_now,
                if stats.done_before > 0 {
                    format!(", {} done before (resumed)", stats.done_before)
                } else {
                    String::new()
                },
                stats.blocks_read,
                stats.blocks_written,
                stats.bytes_written
            ),
        );
        Ok(snapshot_id)
    }

    async fn tidy(&self, journal: &mut Journal, finished: bool, _keep_temp: bool) -> Vec<String> {
        // The downloaded disk stays for a resume once the upload began.
        let work = self.0.work_dir(&journal.migration_id);
        if (finished || journal.upload.is_none()) && std::fs::remove_dir_all(&work).is_ok() {
            return vec![format!("the work directory {}", work.display())];
        }
        vec![]
    }

    fn kept(&self, journal: &Journal) -> Vec<String> {
        journal
            .upload
            .iter()
            .map(|u| {
                format!(
                    "the upload snapshot {} ({} blocks written)",
                    u.snapshot_id,
                    u.blocks.len()
                )
            })
            .collect()
    }
}
