//! What a migration moves and what it runs on: the source, and the host
//! (a backend) that supplies the pipeline's cloud operations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Serialize;

use super::{journal, method, HelperOptions, Journal, Method, SourceKind};
use crate::error::{Error, Result};
use crate::image::source::Disk;
use crate::kernels::Flavor;
use crate::model::Image;

/// What to migrate.
#[derive(Debug, Clone)]
pub enum Source {
    Image(String),
    Instance(String),
}

/// The source, resolved: its image and its root disk, read where it lies.
#[derive(Clone)]
pub struct SourceDisk {
    pub image: Image,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The root disk where it lies: the local host's file, an EBS snapshot block by block.
    pub disk: Disk,
    /// The EBS snapshot that holds it (AWS).
    pub snapshot_id: Option<String>,
    /// Where PV-GRUB looks, from the kernel's name; `None` to detect.
    pub flavor: Option<Flavor>,
    /// The source root volume's EBS type (AWS).
    pub volume_type: Option<String>,
}

/// What the pipeline registers.
#[derive(Debug, Clone)]
pub struct HvmRegistration {
    pub name: String,
    /// The root volume's size: the HVM disk rounded up to whole GiB.
    pub volume_size_gib: u64,
    pub description: String,
    pub architecture: String,
    pub snapshot_id: String,
    pub ena_support: bool,
    pub tags: BTreeMap<String, String>,
    pub grub_cfg: String,
    pub drivers: crate::image::inspect::Drivers,
    /// The root volume's EBS type (gp2 when nothing says otherwise).
    pub volume_type: Option<String>,
}

#[async_trait]
pub trait MigrationHost: Send + Sync {
    /// Resolve the source and give its root disk where it lies (for an
    /// instance, snapshotting its root volume first and recording that
    /// snapshot in the journal); the source itself is never written.
    async fn source_disk(
        &self,
        region: &str,
        source: &Source,
        journal: &mut Journal,
    ) -> Result<SourceDisk>;
    /// The source's root disk where it lies, read-only, when this host can
    /// read it without making anything (the local backend's files); `None` otherwise.
    async fn source_in_place(&self, _region: &str, _source: &Source) -> Result<Option<SourceDisk>> {
        Ok(None)
    }
    /// A method this host offers beyond `direct` (AWS: `helper`).
    fn method<'a>(
        &'a self,
        name: Method,
        _helper: &HelperOptions,
    ) -> Result<Box<dyn method::Method + 'a>> {
        Err(Error::Unsupported(format!(
            "the {} backend has no {name} method",
            self.host_name()
        )))
    }
    /// An instance's state (`running`, `stopped`, ...).
    async fn instance_state(&self, region: &str, instance_id: &str) -> Result<String>;
    /// Stop an instance (never terminate it) and wait until it is stopped.
    async fn stop_instance(&self, region: &str, instance_id: &str) -> Result<()>;
    /// Start a stopped instance again and wait until it runs.
    async fn start_instance(&self, region: &str, instance_id: &str) -> Result<()>;
    /// The image of this account named `name` in `region`, if one is.
    async fn image_named(&self, region: &str, name: &str) -> Result<Option<String>>;
    /// Store a built disk as a new snapshot, recording progress in the journal.
    async fn store_disk(
        &self,
        region: &str,
        path: &Path,
        tags: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> Result<String>;
    /// Store the HVM view as a new snapshot, each of its blocks read once and
    /// written once; the journal keeps what was moved. By default the view
    /// is written into a sparse file in the work directory and stored with
    /// [`MigrationHost::store_disk`] (the local host renames it into place).
    async fn store_view(
        &self,
        region: &str,
        view: std::sync::Arc<crate::image::overlay::HvmView>,
        tags: &BTreeMap<String, String>,
        journal: &mut Journal,
    ) -> Result<(String, crate::image::overlay::TransferStats)> {
        let work = self.work_dir(&journal.migration_id);
        std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
        let out = work.join("hvm.raw");
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(out.with_extension("partial"));
        let path = out.clone();
        let stats =
            crate::interrupt::blocking(move || crate::image::overlay::write_file(&view, &path))
                .await?
                .map_err(|e| Error::write(&out, e))?;
        let id = self.store_disk(region, &out, tags, journal).await?;
        let _ = std::fs::remove_file(&out);
        journal.transfer = Some(stats);
        journal.save()?;
        Ok((id, stats))
    }
    /// `--warm`: the source disk's blocks (512 KiB) that differ between two
    /// snapshots of one volume, `first` taken before `second`.
    async fn changed_blocks(&self, _region: &str, _first: &str, _second: &str) -> Result<Vec<u64>> {
        Err(Error::Unsupported(format!(
            "--warm: the {} backend cannot list the blocks changed between two snapshots",
            self.host_name()
        )))
    }
    /// `--warm`: store `blocks` of the view as a new snapshot that is a
    /// child of `parent` (every other block is the parent's): each listed
    /// block is written, all-zero ones too.
    async fn store_view_over(
        &self,
        _region: &str,
        _view: std::sync::Arc<crate::image::overlay::HvmView>,
        _parent: &str,
        _blocks: Vec<u64>,
        _tags: &BTreeMap<String, String>,
        _journal: &mut Journal,
    ) -> Result<(String, crate::image::overlay::TransferStats)> {
        Err(Error::Unsupported(format!(
            "--warm: the {} backend cannot store a disk over an earlier one",
            self.host_name()
        )))
    }
    /// The image this migration registered, found by its tag (a run killed
    /// after RegisterImage, before its journal said so).
    async fn registered_by(&self, region: &str, migration_id: &str) -> Result<Option<String>>;
    /// RegisterImage, or the image this migration already registered.
    async fn register_hvm(
        &self,
        region: &str,
        reg: &HvmRegistration,
        migration_id: &str,
    ) -> Result<Image>;
    /// Why the registered image differs from what was asked (empty when it does not).
    async fn verify_registered(
        &self,
        region: &str,
        image_id: &str,
        reg: &HvmRegistration,
    ) -> Result<Vec<String>>;
    async fn delete_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()>;
    /// The snapshots tagged with the migration's id; a host that cannot list
    /// them says none (a finished migration's sweep then removes nothing).
    async fn tagged_snapshots(&self, _region: &str, _migration_id: &str) -> Result<Vec<String>> {
        Ok(vec![])
    }
    /// Remove everything tagged with the migration's id but its registered image; say what.
    async fn cleanup(&self, journal: &Journal) -> Result<Vec<String>>;
    /// A directory for temporary files of this migration.
    fn work_dir(&self, migration_id: &str) -> PathBuf;
    /// The request budgets this process drew from (AWS: EBS direct's
    /// block requests, shared by every migration of the run).
    fn request_budgets(&self) -> Vec<RequestBudget> {
        vec![]
    }
    /// `aws` or `local`, recorded in the journal.
    fn host_name(&self) -> &'static str;
    /// Where this host's migration journals live.
    fn journal_dir(&self) -> PathBuf {
        journal::journal_dir()
    }
}

/// One rate budget of the process: what it allowed and how EBS answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestBudget {
    pub region: String,
    pub api: String,
    /// `--max-requests-per-second`.
    pub max_per_second: f64,
    /// The rate it allowed at the end (lower after throttling).
    pub per_second: f64,
    pub requests: u64,
    /// Attempts EBS throttled (each halves the rate, once a second at most).
    pub throttled: u64,
}

impl Source {
    /// An AMI id (`ami-…`) or else an instance id, checked: what a line of
    /// a fleet file or a worker's item names.
    pub fn parse(id: &str) -> Result<Source> {
        if id.starts_with("ami-") {
            crate::ids::check_id(crate::ids::IdKind::Image, id)?;
            Ok(Source::Image(id.to_string()))
        } else {
            crate::ids::check_id(crate::ids::IdKind::Instance, id)?;
            Ok(Source::Instance(id.to_string()))
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        match self {
            Source::Image(id) | Source::Instance(id) => id,
        }
    }

    /// Its kind, as the journal records it.
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Image(_) => SourceKind::Image,
            Source::Instance(_) => SourceKind::Instance,
        }
    }
}
