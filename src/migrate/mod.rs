//! The migration pipeline, written once: resolve the source, snapshot it,
//! inspect, plan, build the HVM disk, register the HVM image, verify. A
//! backend supplies the five cloud operations through [`MigrationHost`].

use std::path::Path;

pub mod cutover;
pub mod dryrun;
#[cfg(test)]
pub(crate) mod fake;
mod flows;
pub mod hooks;
mod host;
pub mod journal;
#[cfg(test)]
mod matrix;
pub mod method;
mod preview;
mod run;
pub mod script;
mod steps;
pub mod verify;
pub mod vocab;
pub mod warm;

pub use steps::Recorder;
pub use steps::Step;

pub use flows::{Action, FleetItem, Outcome, Request, Runner, Verify, FLEET_CONCURRENCY};
pub use host::{HvmRegistration, MigrationHost, RequestBudget, Source, SourceDisk};
pub use journal::Journal;
pub use method::{HelperOptions, Plan};
pub use preview::{preview, Preview, TransferEstimate};
use serde::Serialize;
pub use vocab::{
    planned_steps, ItemOutcome, JournalState, Method, SourceKind, StepName, StepPlan, WarmStage,
};

use crate::error::{Error, Result};
use crate::image::bootcfg;
use crate::image::inspect::Inspection;
use crate::model::Image;

/// The result, as `migrate --output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub migration_id: String,
    pub region: String,
    pub source_image_id: String,
    /// The instance migrated, when the source was one (`--instance`).
    pub source_instance_id: Option<String>,
    /// The registered image (a warm sync registers none).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub image_id: String,
    pub steps: Vec<Step>,
    pub findings: Vec<String>,
    /// Each line of the HVM copy's boot configuration amitool changed.
    pub changes: Vec<bootcfg::Change>,
    /// What making the disk moved: `blocks_read`, `blocks_written`,
    /// `bytes_read`, `bytes_written` (512 KiB blocks).
    pub transfer: crate::image::overlay::TransferStats,
    /// `--replace`: the instance that replaced the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<cutover::Replacement>,
    /// `--warm`: the sync this run made (phase 1, `--sync`), and the command that goes on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<warm::SyncReport>,
    /// `--cut-over`: when the source stopped, when its replacement ran, and
    /// what the outage between moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_stopped_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement_running_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<warm::Outage>,
    /// The process's request budgets (AWS), shared with the other
    /// migrations of a fleet.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub request_budgets: Vec<RequestBudget>,
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
    /// How the disk's bytes are made.
    pub method: Method,
    /// Stop a running source instance for its root snapshot, and start it again after.
    pub stop_source: bool,
    pub helper: HelperOptions,
    /// `--replace`: cut over to a replacement instance after the image is registered.
    pub replace: Option<cutover::ReplaceOptions>,
    /// `--warm`: copy while the source runs; `--cut-over` finishes.
    pub warm: bool,
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
        Some(id) if asked.is_none() => Err(Error::refused(
            &source.image_id,
            format!(
                "{} was already migrated: {id} ({name}); pass --name for another copy",
                source.image_id
            ),
        )),
        Some(id) => Err(Error::refused(
            &name,
            format!(
                "image name {name:?} is already in use by {id} in {region}; pass another --name"
            ),
        )),
        None => Ok(()),
    }
}

/// `NAME-hvm`, or `AMI-hvm` for an image without a name.
pub(crate) fn default_name(image: &Image) -> String {
    format!(
        "{}-hvm",
        image.name.clone().unwrap_or_else(|| image.image_id.clone())
    )
}

/// Check that the source is a PV image amitool can migrate.
pub(crate) fn check_source(image: &Image) -> Result<()> {
    if !image.is_paravirtual() {
        return Err(Error::refused(
            &image.image_id,
            format!(
                "{} is already {}: only paravirtual images need migrating",
                image.image_id,
                image
                    .virtualization_type
                    .map(|v| v.as_str())
                    .unwrap_or("not paravirtual")
            ),
        ));
    }
    if image.root_device_type.as_deref() == Some("instance-store") {
        return Err(Error::refused(
            &image.image_id,
            format!(
                "{} is instance-store backed: amitool migrates EBS-backed images only",
                image.image_id
            ),
        ));
    }
    Ok(())
}

/// The GRUB 2 configuration embedded in the HVM disk: it hands over to the
/// file the guest maintains.
pub fn plan_config(insp: &Inspection) -> Result<String> {
    let boot = insp.boot.as_ref().ok_or_else(|| Error::Unconvertible {
        id: insp.uuid.clone(),
        reason: "no boot configuration for GRUB to hand over to".into(),
    })?;
    Ok(bootcfg::handover(&insp.uuid, &boot.config))
}

/// A new journal for a migration of `source` in `region`, saved.
pub fn new_journal(
    dir: &Path,
    migration_id: &str,
    backend: &str,
    method: Method,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Journal> {
    let mut journal = Journal::new(dir, migration_id);
    journal.backend = backend.into();
    journal.method = method;
    journal.region = region.to_string();
    (journal.source_kind, journal.source_id) = match source {
        Source::Image(id) => (SourceKind::Image, id.clone()),
        Source::Instance(id) => (SourceKind::Instance, id.clone()),
    };
    journal.name = opts.name.clone();
    journal.fix_guest = opts.fix_guest;
    journal.stop_source = opts.stop_source;
    journal.volume_type = opts.volume_type.clone();
    journal.replace = opts.replace.clone().map(cutover::Replace::new);
    journal.warm = opts.warm.then(warm::Warm::default);
    journal.save()?;
    Ok(journal)
}

/// A new migration's journal (its id known before anything runs), for [`go_on`].
pub fn begin(
    host: &dyn MigrationHost,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Journal> {
    begin_as(host, &new_migration_id(), region, source, opts)
}

/// [`begin`] under a given id (a fleet item's, the same on every try).
pub fn begin_as(
    host: &dyn MigrationHost,
    migration_id: &str,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Journal> {
    journal::check_migration_id(migration_id)?;
    new_journal(
        &host.journal_dir(),
        migration_id,
        host.host_name(),
        opts.method,
        region,
        source,
        opts,
    )
}

/// Run a migration begun with [`begin`].
pub async fn go_on(
    host: &dyn MigrationHost,
    journal: Journal,
    opts: &Options,
) -> Result<Migration> {
    run::execute(host, journal, opts).await
}

/// Start a migration.
pub async fn run(
    host: &dyn MigrationHost,
    region: &str,
    source: &Source,
    opts: &Options,
) -> Result<Migration> {
    go_on(host, begin(host, region, source, opts)?, opts).await
}

/// Finish a migration from its journal.
pub async fn resume(
    host: &dyn MigrationHost,
    migration_id: &str,
    opts: &Options,
) -> Result<Migration> {
    let mut journal = Journal::load(&host.journal_dir(), migration_id)?;
    if let Some(done) = finished(&journal) {
        return Ok(done);
    }
    rename(&mut journal, opts.name.as_deref())?;
    if journal.backend != host.host_name() {
        return Err(Error::refused(
            migration_id,
            format!(
                "{migration_id} ran on the {} backend; resume it there",
                journal.backend
            ),
        ));
    }
    if journal.state == JournalState::Cleaned {
        return Err(Error::refused(
            migration_id,
            format!("{migration_id} was cleaned up; start a new migration"),
        ));
    }
    if journal.state == JournalState::Synced {
        return Err(Error::refused(
            migration_id,
            format!(
                "{migration_id}'s last sync finished: catch up with --sync {migration_id}, or finish with --cut-over {migration_id}"
            ),
        ));
    }
    let opts = &Options {
        warm: journal.warm.is_some(),
        ..opts.clone()
    };
    run::execute(host, journal, opts).await
}

/// A migration that already finished, as `--resume` reports it: nothing is made.
pub fn finished(journal: &Journal) -> Option<Migration> {
    let image = journal
        .image_id
        .clone()
        .filter(|_| journal.state == JournalState::Done)?;
    let said = format!("already finished: {image}");
    Some(Migration {
        migration_id: journal.migration_id.clone(),
        region: journal.region.clone(),
        source_image_id: journal.source_id.clone(),
        source_instance_id: (journal.source_kind == SourceKind::Instance)
            .then(|| journal.source_id.clone()),
        image_id: image,
        steps: vec![Step {
            name: StepName::Resume,
            seconds: 0.0,
            detail: said.clone(),
        }],
        findings: vec![format!("{said}; nothing was made")],
        changes: vec![],
        transfer: Default::default(),
        replacement: None,
        sync: None,
        source_stopped_at: None,
        replacement_running_at: None,
        outage: journal.warm.as_ref().and_then(|w| w.outage),
        request_budgets: vec![],
        inspection: None,
    })
}

/// `--resume --name N`: the new image's name, when the first one was refused.
pub fn rename(journal: &mut Journal, name: Option<&str>) -> Result<()> {
    if let Some(n) = name {
        crate::ids::check_image_name(Some(n))?;
        if journal.image_id.is_some() {
            return Err(Error::refused(
                &journal.migration_id,
                format!(
                    "{} already registered its image; --name cannot rename it",
                    journal.migration_id
                ),
            ));
        }
        journal.name = Some(n.to_string());
        journal.save()?;
    }
    Ok(())
}

/// Remove what a migration made (but a registered image), from its journal.
pub async fn cleanup(host: &dyn MigrationHost, migration_id: &str) -> Result<Vec<String>> {
    let mut journal = Journal::load(&host.journal_dir(), migration_id)?;
    let mut removed = host.cleanup(&journal).await?;
    // A source a killed run stopped for its snapshot runs again.
    if journal.stopped_source {
        host.start_instance(&journal.region, &journal.source_id)
            .await?;
        journal.stopped_source = false;
        removed.push(format!("the stop of {} (started again)", journal.source_id));
    }
    let _ = std::fs::remove_dir_all(host.work_dir(migration_id));
    // A finished migration stays finished: --resume still reports its image.
    if journal.state != JournalState::Done {
        journal.state = JournalState::Cleaned;
    }
    journal.save()?;
    Ok(removed)
}

pub(crate) fn source_of(journal: &Journal) -> Source {
    if journal.source_kind == SourceKind::Instance {
        Source::Instance(journal.source_id.clone())
    } else {
        Source::Image(journal.source_id.clone())
    }
}
