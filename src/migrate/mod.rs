//! The migration pipeline, written once: resolve the source, snapshot it,
//! inspect, plan, build the HVM disk, register the HVM image, verify. A
//! backend supplies the five cloud operations through [`MigrationHost`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub mod journal;
pub mod script;
mod steps;

pub(crate) use steps::Recorder;
pub use steps::{test_pause_in, Step};

pub use journal::Journal;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::boot;
use crate::image::bootcfg;
use crate::image::guest::{self, Guest, Mount};
use crate::image::guestfix::{self, GuestFix};
use crate::image::hvm;
use crate::image::inspect::{self, Inspection};
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
    /// Resolve the source and give its root disk as a local file (for an
    /// instance, snapshotting its root volume first and recording that
    /// snapshot in the journal); the source itself is never written.
    async fn source_disk(
        &self,
        region: &str,
        source: &Source,
        journal: &mut Journal,
        work: &Path,
    ) -> Result<SourceDisk>;
    /// The source's root disk where it lies, read-only, when this host can
    /// read it without copying (the local backend's files); `None` otherwise.
    async fn source_in_place(&self, _region: &str, _source: &Source) -> Result<Option<SourceDisk>> {
        Ok(None)
    }
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
    /// Remove everything tagged with the migration's id but its registered image; say what.
    async fn cleanup(&self, journal: &Journal) -> Result<Vec<String>>;
    /// A directory for temporary files of this migration.
    fn work_dir(&self, migration_id: &str) -> PathBuf;
    /// `aws` or `local`, recorded in the journal.
    fn host_name(&self) -> &'static str;
    /// Where this host's migration journals live.
    fn journal_dir(&self) -> PathBuf {
        journal::journal_dir()
    }
}

/// The result, as `migrate --output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub migration_id: String,
    pub region: String,
    pub source_image_id: String,
    /// The instance migrated, when the source was one (`--instance`).
    pub source_instance_id: Option<String>,
    pub image_id: String,
    pub steps: Vec<Step>,
    pub findings: Vec<String>,
    /// Each line of the HVM copy's boot configuration amitool changed.
    pub changes: Vec<bootcfg::Change>,
    #[serde(skip)]
    pub inspection: Option<Inspection>,
}

/// The tag every resource a migration creates carries.
pub const MIGRATION_TAG: &str = "amitool:migration";

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub name: Option<String>,
    pub keep_temp: bool,
    /// Rewrite fstab and add a serial getty in the HVM copy.
    pub fix_guest: bool,
    /// The new root volume's type; `None` keeps the source's.
    pub volume_type: Option<String>,
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

/// `migration mig-… started (journal: PATH)` on stderr, before the first step.
pub fn started(journal: &Journal) {
    if !crate::progress::notes_shown() {
        return;
    }
    eprintln!(
        "amitool: migration {} of {} started (journal: {})",
        journal.migration_id,
        journal.source_id,
        journal.path().display()
    );
}

/// Why the inspected source cannot be migrated; `None` when it can.
pub fn refusal(image_id: &str, insp: &Inspection) -> Option<String> {
    if insp.boots() && insp.hvm_problems.is_empty() {
        return None;
    }
    let all: Vec<&str> = insp
        .problems
        .iter()
        .chain(&insp.hvm_problems)
        .map(String::as_str)
        .collect();
    Some(format!("{image_id} cannot be migrated: {}", all.join("; ")))
}

/// What a migration would do, from the source read where it lies: nothing is made.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub source_image_id: String,
    pub region: String,
    /// Why it would be refused; `None` when it would migrate.
    pub refused: Option<String>,
    pub steps: Vec<&'static str>,
    /// The new image's name.
    pub name: String,
    pub layout: Option<hvm::Layout>,
    pub boot: Option<bootcfg::BootConfig>,
    pub changes: Vec<bootcfg::Change>,
    pub findings: Vec<String>,
}

/// The plan of a migration of `source`, when the host can read its disk in place.
pub async fn preview(
    host: &dyn MigrationHost,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Option<Preview>> {
    let Some(disk) = host.source_in_place(region, source).await? else {
        return Ok(None);
    };
    check_source(&disk.image)?;
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| default_name(&disk.image));
    let mut p = Preview {
        source_image_id: disk.image.image_id.clone(),
        region: region.to_string(),
        refused: None,
        steps: vec![],
        name,
        layout: None,
        boot: None,
        changes: vec![],
        findings: vec![],
    };
    let insp = match inspect::inspect(&disk.path, disk.flavor) {
        Ok(i) => i,
        Err(e) => {
            p.refused = Some(format!("{}: {e}", disk.image.image_id));
            return Ok(Some(p));
        }
    };
    p.refused = refusal(&disk.image.image_id, &insp);
    if p.refused.is_none() {
        let named = check_name(host, region, &disk.image, opts.name.as_deref(), None).await;
        p.refused = named.err().map(|e| e.to_string());
    }
    p.findings = insp.findings.clone();
    if p.refused.is_none() {
        p.steps = vec![
            "snapshot",
            "inspect",
            "plan",
            "build",
            "boot-config",
            "upload",
            "register",
            "verify",
        ];
        if opts.fix_guest {
            p.steps.insert(5, "fix-guest");
        }
        p.layout = Some(insp.hvm_layout());
        p.boot = insp.boot.as_ref().map(|b| b.config.clone());
        p.changes = insp.boot_changes.clone();
    }
    Ok(Some(p))
}

/// Refuse a name EC2 would refuse, or one in use: an image migrated before
/// under the default name is named as the earlier result. A resumed
/// migration whose own image has the name is not refused.
pub(crate) async fn check_name(
    host: &dyn MigrationHost,
    region: &str,
    source: &Image,
    asked: Option<&str>,
    own_image: Option<&str>,
) -> Result<()> {
    let name = asked
        .map(String::from)
        .unwrap_or_else(|| default_name(source));
    crate::ids::check_image_name(Some(&name))?;
    match host.image_named(region, &name).await? {
        Some(id) if Some(id.as_str()) == own_image => Ok(()),
        Some(id) if asked.is_none() => Err(Error::InvalidInput(format!(
            "{} was already migrated: {id} ({name}); pass --name for another copy",
            source.image_id
        ))),
        Some(id) => Err(Error::InvalidInput(format!(
            "image name {name:?} is already in use by {id} in {region}; pass another --name"
        ))),
        None => Ok(()),
    }
}

/// `NAME-hvm`, or `AMI-hvm` for an image without a name.
fn default_name(image: &Image) -> String {
    format!(
        "{}-hvm",
        image.name.clone().unwrap_or_else(|| image.image_id.clone())
    )
}

/// Check that the source is a PV image amitool can migrate.
pub(crate) fn check_source(image: &Image) -> Result<()> {
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

/// The GRUB 2 configuration embedded in the HVM disk: it hands over to the
/// file the guest maintains.
pub fn plan_config(insp: &Inspection) -> Result<String> {
    let boot = insp.boot.as_ref().ok_or_else(|| {
        Error::InvalidInput("no boot configuration for GRUB to hand over to".into())
    })?;
    Ok(bootcfg::handover(&insp.uuid, &boot.config))
}

/// A new journal for a migration of `source` in `region`, saved.
pub fn new_journal(
    dir: &Path,
    backend: &str,
    method: &str,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Journal> {
    let mut journal = Journal::new(dir, &new_migration_id());
    journal.backend = backend.into();
    journal.method = method.into();
    journal.region = region.to_string();
    (journal.source_kind, journal.source_id) = match source {
        Source::Image(id) => ("image".into(), id.clone()),
        Source::Instance(id) => ("instance".into(), id.clone()),
    };
    journal.name = opts.name.clone();
    journal.fix_guest = opts.fix_guest;
    journal.volume_type = opts.volume_type.clone();
    journal.save()?;
    Ok(journal)
}

/// Start a migration.
pub async fn run(
    host: &dyn MigrationHost,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Migration> {
    let journal = new_journal(
        &host.journal_dir(),
        host.host_name(),
        "direct",
        region,
        source,
        opts,
    )?;
    execute(host, journal, opts.keep_temp).await
}

/// Finish a migration from its journal.
pub async fn resume(
    host: &dyn MigrationHost,
    migration_id: &str,
    keep_temp: bool,
    name: Option<&str>,
) -> Result<Migration> {
    let mut journal = Journal::load(&host.journal_dir(), migration_id)?;
    if let Some(done) = finished(&journal) {
        return Ok(done);
    }
    rename(&mut journal, name)?;
    if journal.backend != host.host_name() {
        return Err(Error::InvalidInput(format!(
            "{migration_id} ran on the {} backend; resume it there",
            journal.backend
        )));
    }
    if journal.state == "cleaned" {
        return Err(Error::InvalidInput(format!(
            "{migration_id} was cleaned up; start a new migration"
        )));
    }
    execute(host, journal, keep_temp).await
}

/// A migration that already finished, as `--resume` reports it: nothing is made.
pub fn finished(journal: &Journal) -> Option<Migration> {
    let image = journal
        .image_id
        .clone()
        .filter(|_| journal.state == "done")?;
    let said = format!("already finished: {image}");
    Some(Migration {
        migration_id: journal.migration_id.clone(),
        region: journal.region.clone(),
        source_image_id: journal.source_id.clone(),
        source_instance_id: (journal.source_kind == "instance").then(|| journal.source_id.clone()),
        image_id: image,
        steps: vec![Step {
            name: "resume",
            seconds: 0.0,
            detail: said.clone(),
        }],
        findings: vec![format!("{said}; nothing was made")],
        changes: vec![],
        inspection: None,
    })
}

/// `--resume --name N`: the new image's name, when the first one was refused.
pub fn rename(journal: &mut Journal, name: Option<&str>) -> Result<()> {
    if let Some(n) = name {
        crate::ids::check_image_name(Some(n))?;
        if journal.image_id.is_some() {
            return Err(Error::InvalidInput(format!(
                "{} already registered its image; --name cannot rename it",
                journal.migration_id
            )));
        }
        journal.name = Some(n.to_string());
        journal.save()?;
    }
    Ok(())
}

/// Remove what a migration made (but a registered image), from its journal.
pub async fn cleanup(host: &dyn MigrationHost, migration_id: &str) -> Result<Vec<String>> {
    let mut journal = Journal::load(&host.journal_dir(), migration_id)?;
    let removed = host.cleanup(&journal).await?;
    let _ = std::fs::remove_dir_all(host.work_dir(migration_id));
    // A finished migration stays finished: --resume still reports its image.
    if journal.state != "done" {
        journal.state = "cleaned".into();
    }
    journal.save()?;
    Ok(removed)
}

pub(crate) fn source_of(journal: &Journal) -> Source {
    if journal.source_kind == "instance" {
        Source::Instance(journal.source_id.clone())
    } else {
        Source::Image(journal.source_id.clone())
    }
}

async fn execute(
    host: &dyn MigrationHost,
    mut journal: Journal,
    keep_temp: bool,
) -> Result<Migration> {
    let region = journal.region.clone();
    let work = host.work_dir(&journal.migration_id);
    std::fs::create_dir_all(&work).map_err(|e| Error::io("create", &work, e))?;
    started(&journal);
    let mut rec = Recorder::new();
    let result =
        crate::interrupt::or_interrupted(pipeline(host, &mut journal, &work, &mut rec)).await;
    let interrupted = result.is_err() && crate::interrupt::is_interrupted();
    if interrupted {
        // A transfer on a blocking thread stops too before its files go.
        crate::interrupt::settled().await;
    }
    let upload_started = journal.upload.is_some();
    journal.state = match (&result, interrupted) {
        (Ok(_), _) => "done",
        (Err(_), true) => "interrupted",
        (Err(_), false) => "failed",
    }
    .into();
    // A finished migration, or one that stopped before uploading anything,
    // leaves nothing behind; a started upload stays for --resume or --cleanup.
    let mut removed = vec![];
    if result.is_ok() || !upload_started {
        if let Some(snap) = journal.temporary_snapshot.clone().filter(|_| !keep_temp) {
            host.delete_snapshot(&region, &snap).await?;
            journal.temporary_snapshot = None;
            removed.push(format!("the temporary snapshot {snap}"));
        }
        if std::fs::remove_dir_all(&work).is_ok() {
            removed.push(format!("the work directory {}", work.display()));
        }
    }
    journal.save()?;
    let (disk, image, insp) = match result {
        Ok(r) => r,
        Err(e) if interrupted || upload_started => {
            let mut kept = vec![];
            if let Some(u) = &journal.upload {
                kept.push(format!(
                    "the upload snapshot {} ({} blocks written)",
                    u.snapshot_id,
                    u.blocks.len()
                ));
            }
            if let Some(s) = &journal.temporary_snapshot {
                kept.push(format!("the temporary snapshot {s}"));
            }
            kept.push(format!("its journal {}", journal.path().display()));
            let cause = if interrupted {
                "interrupted (Ctrl-C)".to_string()
            } else {
                format!("{} after its upload began", crate::error::chain(&e))
            };
            return Err(Error::MigrationInterrupted {
                migration_id: journal.migration_id.clone(),
                message: format!(
                    "{cause}; removed {}; kept {}",
                    if removed.is_empty() {
                        "nothing".to_string()
                    } else {
                        removed.join(", ")
                    },
                    kept.join(", ")
                ),
                interrupted,
            });
        }
        Err(e) => return Err(e),
    };
    let mut findings = insp.findings.clone();
    if !insp.drivers.ena {
        findings.push("EnaSupport not set: the kernel has no ena driver".into());
    }
    Ok(Migration {
        migration_id: journal.migration_id.clone(),
        region,
        source_image_id: disk.image.image_id.clone(),
        source_instance_id: (journal.source_kind == "instance").then(|| journal.source_id.clone()),
        image_id: image.image_id,
        steps: std::mem::take(&mut rec.steps),
        findings,
        changes: insp.boot_changes.clone(),
        inspection: Some(insp),
    })
}

async fn pipeline(
    host: &dyn MigrationHost,
    journal: &mut Journal,
    work: &Path,
    rec: &mut Recorder,
) -> Result<(SourceDisk, Image, Inspection)> {
    let region = journal.region.clone();
    let disk = host
        .source_disk(&region, &source_of(journal), journal, work)
        .await?;
    check_source(&disk.image)?;
    rec.done(
        "snapshot",
        match journal.source_blocks {
            Some(n) => format!(
                "root disk of {}: {n} blocks read into {}",
                disk.image.image_id,
                disk.path.display()
            ),
            None => format!(
                "root disk of {} ({})",
                disk.image.image_id,
                disk.path.display()
            ),
        },
    );
    let insp = inspect::inspect(&disk.path, disk.flavor)
        .map_err(|e| Error::InvalidInput(format!("{}: {e}", disk.image.image_id)))?;
    if let Some(why) = refusal(&disk.image.image_id, &insp) {
        return Err(Error::InvalidInput(why));
    }
    // The new image's name, checked before any data moves.
    check_name(
        host,
        &region,
        &disk.image,
        journal.name.as_deref(),
        journal.image_id.as_deref(),
    )
    .await?;
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
    let layout = insp.hvm_layout();
    let cfg = plan_config(&insp)?;
    rec.done(
        "plan",
        format!(
            "{} of a {}-byte disk",
            layout
                .partitions
                .iter()
                .map(|p| format!(
                    "partition {} at sector {} ({:#04x}, {} sectors)",
                    p.number, p.start_lba, p.kind, p.sectors
                ))
                .collect::<Vec<_>>()
                .join(", "),
            layout.disk_size
        ),
    );
    let out = work.join("hvm.raw");
    let _ = std::fs::remove_file(&out);
    let report = hvm::build(&disk.path, &layout, &cfg, &out)
        .map_err(|e| Error::InvalidInput(format!("build the HVM disk: {e}")))?;
    rec.done(
        "build",
        format!(
            "{} bytes copied, core.img {} bytes",
            report.bytes_copied, report.core_img_bytes
        ),
    );
    let mut insp = insp;
    // The boot configuration the guest maintains, rewritten for HVM in the copy.
    let edits: Vec<GuestFix> = insp
        .boot
        .as_ref()
        .map(|b| b.edits.iter().map(GuestFix::from_edit).collect())
        .unwrap_or_default();
    let mounts = insp.hvm_mounts(&layout);
    write_files(&out, &mounts, &edits, work)
        .map_err(|e| Error::InvalidInput(format!("rewrite the boot configuration: {e}")))?;
    let boot = insp.boot.as_ref().map(|b| &b.config);
    rec.done(
        "boot-config",
        format!(
            "GRUB reads {} ({}: {}); {} line(s) changed in {} file(s)",
            boot.map_or("-", |b| b.path.as_str()),
            boot.map_or("-", |b| match b.kind {
                bootcfg::ConfigKind::Legacy => "legacy_configfile",
                bootcfg::ConfigKind::Grub2 => "configfile",
            }),
            boot.map_or("-", |b| b.rule.as_str()),
            insp.boot_changes.len(),
            edits.len()
        ),
    );
    if journal.fix_guest {
        let applied = fix_guest(&out, &mounts, work)?;
        let detail = if applied.is_empty() {
            "nothing to change".to_string()
        } else {
            applied.join("; ")
        };
        rec.done("fix-guest", detail);
        insp.findings = applied.into_iter().map(|c| format!("fixed: {c}")).collect();
    }
    let problems = boot::hvm_problems(&out, Some(&cfg));
    if !problems.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the HVM disk would not boot: {}",
            problems.join("; ")
        )));
    }
    let mut tags = disk.tags.clone();
    tags.insert(MIGRATION_TAG.into(), journal.migration_id.clone());
    tags.insert("amitool:source-image".into(), disk.image.image_id.clone());
    if journal.source_kind == "instance" {
        tags.insert("amitool:source-instance".into(), journal.source_id.clone());
    }
    tags.insert(inspect::DRIVERS_TAG.into(), insp.drivers.to_tag());
    let snapshot_id = host.store_disk(&region, &out, &tags, journal).await?;
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
    let reg = HvmRegistration {
        name: journal
            .name
            .clone()
            .unwrap_or_else(|| default_name(&disk.image)),
        description: disk
            .description
            .clone()
            .unwrap_or_else(|| format!("HVM migration of {} by amitool", disk.image.image_id)),
        architecture: disk
            .image
            .architecture
            .clone()
            .unwrap_or_else(|| "x86_64".into()),
        snapshot_id: snapshot_id.clone(),
        volume_size_gib: layout.disk_size.div_ceil(1 << 30),
        ena_support: insp.drivers.ena,
        tags,
        grub_cfg: cfg,
        drivers: insp.drivers.clone(),
        volume_type: journal
            .volume_type
            .clone()
            .or_else(|| disk.volume_type.clone()),
    };
    test_pause_in("register").await;
    let image = host
        .register_hvm(&region, &reg, &journal.migration_id)
        .await?;
    journal.image_id = Some(image.image_id.clone());
    journal.save()?;
    rec.done(
        "register",
        format!(
            "{} (hvm, {}, snapshot {snapshot_id})",
            image.image_id, reg.architecture
        ),
    );
    let problems = host
        .verify_registered(&region, &image.image_id, &reg)
        .await?;
    if !problems.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the registered image {} is not what was asked: {}",
            image.image_id,
            problems.join("; ")
        )));
    }
    rec.done("verify", "boot blocks, partition, configuration and kernel checked before upload; image attributes after");
    Ok((disk, image, insp))
}

/// Write `files` (guest paths) into the HVM copy's filesystems, each into the mount it lies on.
fn write_files(
    disk: &Path,
    mounts: &[Mount],
    files: &[GuestFix],
    work: &Path,
) -> std::result::Result<(), guestfix::FixError> {
    for f in files {
        let Some((i, inner)) = guest::route(mounts.iter().map(|m| m.point.as_str()), &f.path)
        else {
            return Err(guestfix::FixError::Unmounted {
                path: f.path.clone(),
            });
        };
        let inside = GuestFix {
            path: inner,
            ..f.clone()
        };
        guestfix::apply(disk, mounts[i].offset, &[inside], work)?;
    }
    Ok(())
}

/// Plan and apply the guest fixes to the HVM copy's filesystems.
fn fix_guest(disk: &Path, mounts: &[Mount], work: &Path) -> Result<Vec<String>> {
    let Some(root) = mounts.iter().find(|m| m.point == "/") else {
        return Ok(vec!["nothing: the root filesystem could not be read".into()]);
    };
    let fs =
        Guest::open(disk, mounts).map_err(|e| Error::InvalidInput(format!("fix-guest: {e}")))?;
    let fixes = guestfix::plan(&fs, &root.uuid);
    drop(fs);
    write_files(disk, mounts, &fixes, work)
        .map_err(|e| Error::InvalidInput(format!("fix-guest: {e}")))?;
    Ok(fixes.into_iter().map(|f| f.description).collect())
}
