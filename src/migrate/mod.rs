//! The migration pipeline, written once: resolve the source, snapshot it,
//! inspect, plan, build the HVM disk, register the HVM image, verify. A
//! backend supplies the five cloud operations through [`MigrationHost`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::hvm::{self, Layout};
use crate::image::inspect::{self, Inspection};
use crate::image::menulst::{self, RootSpec};
use crate::kernels::Flavor;
use crate::model::Image;

/// What to migrate.
#[derive(Debug, Clone)]
pub enum Source {
    Image(String),
    Instance(String),
}

/// The source's root disk, readable as a local file.
#[derive(Debug, Clone)]
pub struct SourceDisk {
    pub image: Image,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub path: PathBuf,
    /// Where PV-GRUB looks, from the kernel's name; `None` to detect.
    pub flavor: Option<Flavor>,
    /// A snapshot this migration made (of an instance's volume), to clean up.
    pub temporary_snapshot: Option<String>,
}

/// What the pipeline registers.
#[derive(Debug, Clone)]
pub struct HvmRegistration {
    pub name: String,
    pub description: String,
    pub architecture: String,
    pub snapshot_id: String,
    pub ena_support: bool,
    pub tags: BTreeMap<String, String>,
    pub grub_cfg: String,
    pub drivers: crate::image::inspect::Drivers,
}

#[async_trait]
pub trait MigrationHost: Send + Sync {
    /// Resolve the source and give its root disk as a file (snapshotting an
    /// instance's volume first); the source itself is never written.
    async fn source_disk(
        &self,
        region: &str,
        source: &Source,
        migration_id: &str,
    ) -> Result<SourceDisk>;
    /// Store a built disk as a new snapshot.
    async fn store_disk(
        &self,
        region: &str,
        path: &Path,
        tags: &BTreeMap<String, String>,
    ) -> Result<String>;
    async fn register_hvm(&self, region: &str, reg: &HvmRegistration) -> Result<Image>;
    /// Why the registered image would not boot (empty when it would).
    async fn boot_problems(&self, region: &str, image_id: &str) -> Result<Vec<String>>;
    async fn delete_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()>;
    /// A directory for temporary files of this migration.
    fn work_dir(&self, migration_id: &str) -> PathBuf;
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub seconds: f64,
    pub detail: String,
}

/// The result, as `migrate --output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub migration_id: String,
    pub region: String,
    pub source_image_id: String,
    pub image_id: String,
    pub steps: Vec<Step>,
    pub findings: Vec<String>,
    #[serde(skip)]
    pub inspection: Option<Inspection>,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub name: Option<String>,
    pub keep_temp: bool,
    /// Rewrite fstab and add a serial getty in the HVM copy.
    pub fix_guest: bool,
}

/// A new migration id: `mig-` and 12 hex digits from the clock and pid.
pub fn new_migration_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "mig-{:012x}",
        (nanos ^ ((std::process::id() as u128) << 40)) & 0xffff_ffff_ffff
    )
}

struct Recorder {
    steps: Vec<Step>,
    started: Instant,
}

impl Recorder {
    fn done(&mut self, name: &'static str, detail: impl Into<String>) {
        let now = Instant::now();
        self.steps.push(Step {
            name,
            seconds: (now - self.started).as_secs_f64(),
            detail: detail.into(),
        });
        self.started = now;
    }
}

/// Check that the source is a PV image amitool can migrate.
fn check_source(image: &Image) -> Result<()> {
    if !image.is_paravirtual() {
        return Err(Error::InvalidInput(format!(
            "{} is already {}: only paravirtual images need migrating",
            image.image_id,
            image
                .virtualization_type
                .map(|v| v.as_str())
                .unwrap_or("not paravirtual")
        )));
    }
    if image.root_device_type.as_deref() == Some("instance-store") {
        return Err(Error::InvalidInput(format!(
            "{} is instance-store backed: amitool migrates EBS-backed images only",
            image.image_id
        )));
    }
    Ok(())
}

/// The GRUB 2 configuration for the HVM disk, from the inspected menu.
pub fn plan_config(insp: &Inspection) -> String {
    let menu = insp
        .menu
        .clone()
        .expect("an inspection without problems has a menu");
    let root = RootSpec {
        uuid: insp.uuid.clone(),
        label: insp.label.clone(),
    };
    menulst::to_grub2(&menu, &root)
}

pub async fn run(
    host: &dyn MigrationHost,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Migration> {
    let migration_id = new_migration_id();
    let mut rec = Recorder {
        steps: vec![],
        started: Instant::now(),
    };
    let disk = host.source_disk(region, source, &migration_id).await?;
    check_source(&disk.image)?;
    rec.done(
        "snapshot",
        format!(
            "root disk of {} ({})",
            disk.image.image_id,
            disk.path.display()
        ),
    );
    let result = build_and_register(host, region, &disk, &migration_id, opts, &mut rec).await;
    if let Some(snap) = disk.temporary_snapshot.as_ref().filter(|_| !opts.keep_temp) {
        host.delete_snapshot(region, snap).await?;
    }
    let (image, insp) = result?;
    let mut findings = insp.findings.clone();
    if !insp.drivers.ena {
        findings.push("EnaSupport not set: the kernel has no ena driver".into());
    }
    Ok(Migration {
        migration_id,
        region: region.to_string(),
        source_image_id: disk.image.image_id.clone(),
        image_id: image.image_id,
        steps: rec.steps,
        findings,
        inspection: Some(insp),
    })
}

async fn build_and_register(
    host: &dyn MigrationHost,
    region: &str,
    disk: &SourceDisk,
    migration_id: &str,
    opts: &Options,
    rec: &mut Recorder,
) -> Result<(Image, Inspection)> {
    let insp = inspect::inspect(&disk.path, disk.flavor)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", disk.image.image_id)))?;
    if !insp.boots() {
        return Err(Error::InvalidInput(format!(
            "{} cannot be migrated: {}",
            disk.image.image_id,
            insp.problems.join("; ")
        )));
    }
    rec.done(
        "inspect",
        format!(
            "{} {} label={} uuid={}, boots {}",
            insp.layout.as_str(),
            insp.fs_type.as_str(),
            insp.label.as_deref().unwrap_or("-"),
            insp.uuid,
            insp.kernel.as_deref().unwrap_or("-")
        ),
    );
    let layout = Layout::new(insp.fs_offset, insp.fs_size, &insp.uuid);
    let cfg = plan_config(&insp);
    rec.done(
        "plan",
        format!(
            "partition 1 at sector {} of {} bytes",
            hvm::PART_START_LBA,
            layout.disk_size
        ),
    );
    let work = host.work_dir(migration_id);
    std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
    let out = work.join("hvm.raw");
    let built = hvm::build(&disk.path, &layout, &cfg, &out)
        .map_err(|e| Error::InvalidInput(format!("build the HVM disk: {e}")));
    let report = match built {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&work);
            return Err(e);
        }
    };
    rec.done(
        "build",
        format!(
            "{} bytes copied, core.img {} bytes",
            report.bytes_copied, report.core_img_bytes
        ),
    );
    let mut applied = vec![];
    if opts.fix_guest {
        match fix_guest(&out, &work) {
            Ok(fixes) => applied = fixes,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(e);
            }
        }
        let detail = if applied.is_empty() {
            "nothing to change".to_string()
        } else {
            applied.join("; ")
        };
        rec.done("fix-guest", detail);
    }
    let mut tags = disk.tags.clone();
    tags.insert("amitool:migration".into(), migration_id.to_string());
    tags.insert("amitool:source-image".into(), disk.image.image_id.clone());
    let stored = host.store_disk(region, &out, &tags).await;
    let _ = std::fs::remove_dir_all(&work);
    let snapshot_id = stored?;
    let arch = disk
        .image
        .architecture
        .clone()
        .unwrap_or_else(|| "x86_64".into());
    let reg = HvmRegistration {
        name: opts.name.clone().unwrap_or_else(|| {
            format!(
                "{}-hvm",
                disk.image
                    .name
                    .clone()
                    .unwrap_or_else(|| disk.image.image_id.clone())
            )
        }),
        description: disk
            .description
            .clone()
            .unwrap_or_else(|| format!("HVM migration of {} by amitool", disk.image.image_id)),
        architecture: arch,
        snapshot_id: snapshot_id.clone(),
        ena_support: insp.drivers.ena,
        tags,
        grub_cfg: cfg,
        drivers: insp.drivers.clone(),
    };
    let image = match host.register_hvm(region, &reg).await {
        Ok(i) => i,
        Err(e) => {
            host.delete_snapshot(region, &snapshot_id).await?;
            return Err(e);
        }
    };
    rec.done(
        "register",
        format!(
            "{} (hvm, {}, snapshot {snapshot_id})",
            image.image_id, reg.architecture
        ),
    );
    let problems = host.boot_problems(region, &image.image_id).await?;
    if !problems.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the registered image {} would not boot: {}",
            image.image_id,
            problems.join("; ")
        )));
    }
    rec.done(
        "verify",
        "MBR, GRUB boot blocks, partition, configuration and kernel checked",
    );
    let mut insp = insp;
    if opts.fix_guest {
        insp.findings = applied.into_iter().map(|c| format!("fixed: {c}")).collect();
    }
    Ok((image, insp))
}

/// Plan and apply the guest fixes to the HVM disk's filesystem.
fn fix_guest(disk: &Path, work: &Path) -> Result<Vec<String>> {
    use crate::image::fs::GuestFs;
    use crate::image::guestfix;
    let fs = GuestFs::open(disk, hvm::PART_OFFSET)
        .map_err(|e| Error::InvalidInput(format!("fix-guest: {e}")))?;
    let fixes = guestfix::plan(&fs);
    drop(fs);
    guestfix::apply(disk, hvm::PART_OFFSET, &fixes, work)
        .map_err(|e| Error::InvalidInput(format!("fix-guest: {e}")))?;
    Ok(fixes.into_iter().map(|f| f.description).collect())
}
