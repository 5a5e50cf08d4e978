//! How the HVM disk's bytes are made: the plan every method is given, and
//! the methods. The pipeline (`run.rs`) resolves, inspects and plans once;
//! a method only moves bytes and stores the result as a snapshot. `direct`
//! builds the disk as a local file (the local host's file in place, an EBS
//! snapshot downloaded) and stores it; the AWS backend adds `helper`
//! (`backend::aws::helper`), which copies on an instance in the source's
//! account.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::image::boot;
use crate::image::guest::{self, Guest, Mount};
use crate::image::guestfix::{self, GuestFix};
use crate::image::hvm;
use crate::image::inspect::Inspection;
use crate::image::source::Disk;
use crate::migrate::journal::Journal;
use crate::migrate::{plan_config, MigrationHost, Recorder, SourceDisk};

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
                        .map_err(|e| Error::InvalidInput(format!("fix-guest: {e}")))?;
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

/// The disk built as a local file from the source's (the local host's file
/// where it lies; an EBS snapshot downloaded first) and stored by the host.
pub struct Direct<'a>(pub &'a dyn MigrationHost);

#[async_trait]
impl Method for Direct<'_> {
    async fn make_disk(
        &self,
        job: &Job<'_>,
        journal: &mut Journal,
        rec: &mut Recorder,
    ) -> Result<String> {
        let region = journal.region.clone();
        let src = self
            .0
            .source_file(&region, job.source, journal, job.work)
            .await?;
        if let Some(n) = journal.source_blocks.filter(|_| src.downloaded) {
            rec.done(
                "download",
                format!("{n} blocks read into {}", src.path.display()),
            );
        }
        let plan = job.plan;
        let out = job.work.join("hvm.raw");
        let _ = std::fs::remove_file(&out);
        let report = hvm::build(&src.path, &plan.layout, &plan.cfg, &out).map_err(|e| match e {
            // A full disk is named as such (the partial file is gone already).
            hvm::BuildError::Io { source, .. } if source.raw_os_error() == Some(28) => {
                Error::write(&out, source)
            }
            e => Error::InvalidInput(format!("build the HVM disk: {e}")),
        })?;
        let placed = plan
            .placed_files()
            .map_err(|e| Error::InvalidInput(format!("rewrite the boot configuration: {e}")))?;
        for (offset, file) in &placed {
            guestfix::apply(&out, *offset, std::slice::from_ref(file), job.work)
                .map_err(|e| Error::InvalidInput(format!("write {}: {e}", file.path)))?;
        }
        rec.done(
            "build",
            format!(
                "{} bytes copied, core.img {} bytes, {} file(s) written",
                report.bytes_copied,
                report.core_img_bytes,
                placed.len()
            ),
        );
        let problems = boot::hvm_problems(&out, Some(&plan.cfg));
        if !problems.is_empty() {
            return Err(Error::InvalidInput(format!(
                "the HVM disk would not boot: {}",
                problems.join("; ")
            )));
        }
        let snapshot_id = self.0.store_disk(&region, &out, job.tags, journal).await?;
        let _ = std::fs::remove_file(&out);
        let written = journal.upload.as_ref().map(|u| u.blocks.len());
        rec.done(
            "upload",
            match written {
                Some(n) => format!(
                    "snapshot {snapshot_id}: {n} blocks written ({} bytes)",
                    n as u64 * 524_288
                ),
                None => format!("snapshot {snapshot_id}"),
            },
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
