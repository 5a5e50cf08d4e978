//! One owner for every migration flow. The CLI turns its flags into one
//! [`Request`] and hands it to a [`Runner`]; the runner runs one migration,
//! a fleet (a few at a time, each with its own journal), a dry run, a
//! resume, a cleanup or a rollback, and gives back an [`Outcome`] for the
//! CLI to render. After a migration the host's capabilities finish it, in
//! one place for every flow: `--verify` boots the image
//! (`Backend::boot_check`), `--replace` cuts over (`Backend::cut_over`).

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::migrate::cutover::{ReplacePreview, Rollback};
use crate::migrate::dryrun::DryRun;
use crate::migrate::vocab::ReplaceSteps;
use crate::migrate::{
    self, ItemOutcome, Journal, JournalState, Method, Migration, MigrationHost, Options, Recorder,
    Source, Step, StepName, StepPlan,
};

mod fleet;
mod warm;

pub use fleet::{FleetItem, FLEET_CONCURRENCY};

/// `--verify`: the text the new image's console must print, and how long to wait.
#[derive(Debug, Clone)]
pub struct Verify {
    pub expect: String,
    pub timeout: Duration,
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Migrate these sources: one, or several as a fleet.
    Migrate(Vec<Source>),
    /// Finish a migration that stopped, from its journal.
    Resume(String),
    /// Remove what a migration made (but a registered image).
    Cleanup(String),
    /// Undo a migration's cut-over (`--replace`), or a warm migration's syncs.
    Rollback(String),
    /// `--sync`: catch a warm migration up with its running source.
    Sync(String),
    /// `--cut-over`: stop a warm migration's source, sync the last time, replace it.
    CutOver(String),
}

/// One `migrate` command, as the CLI understood it.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    /// Where new migrations and dry runs run (a resume, cleanup or
    /// rollback runs in its journal's region).
    pub region: String,
    pub options: Options,
    pub verify: Option<Verify>,
    /// Plan only: nothing is created, deleted or written.
    pub dry_run: bool,
    /// The id a new migration takes instead of a fresh one (a fleet
    /// worker's item): a second try, on this machine or another, resumes
    /// its journal or finds what the first made by this id's tags.
    pub migration_id: Option<String>,
}

/// What a request came to.
#[derive(Debug)]
pub enum Outcome {
    Migrated(Box<Migration>),
    Fleet {
        items: Vec<FleetItem>,
        /// Ctrl-C stopped it.
        interrupted: bool,
    },
    Planned(Vec<DryRun>),
    CleanedUp {
        migration_id: String,
        removed: Vec<String>,
    },
    RolledBack(Rollback),
}

impl Outcome {
    /// 0, or 1 when a fleet item failed or a dry run would be refused, or
    /// 130 after Ctrl-C.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Fleet {
                interrupted: true, ..
            } => 130,
            Outcome::Fleet { items, .. } => u8::from(items.iter().any(|i| i.error.is_some())),
            Outcome::Planned(plans) => u8::from(plans.iter().any(DryRun::refused)),
            _ => 0,
        }
    }
}

/// Runs requests against one backend.
pub struct Runner<'a> {
    backend: &'a dyn Backend,
}

impl<'a> Runner<'a> {
    pub fn new(backend: &'a dyn Backend) -> Self {
        Runner { backend }
    }

    fn host(&self) -> Result<&'a dyn MigrationHost> {
        self.backend.migration_host().ok_or_else(|| {
            Error::Unsupported(format!(
                "the {} backend cannot migrate",
                self.backend.name()
            ))
        })
    }

    fn cut_over(&self) -> Result<&'a dyn migrate::cutover::CutOver> {
        self.backend.cut_over().ok_or_else(|| {
            Error::Unsupported(format!(
                "--replace and --rollback run on the AWS backend: the {} backend has no network identity to move",
                self.backend.name()
            ))
        })
    }

    /// What the backend must be able to do for `req`, checked before anything is asked.
    fn check(&self, req: &Request) -> Result<()> {
        let host = self.host()?;
        if req.options.method != Method::Direct {
            host.method(req.options.method, &req.options.helper)?;
        }
        if req.options.replace.is_some()
            || matches!(req.action, Action::Sync(_) | Action::CutOver(_))
        {
            self.cut_over()?;
        }
        if req.options.warm && req.options.method != Method::Direct {
            return Err(Error::Unsupported(format!(
                "--warm runs with --method direct: the {} method cannot write a disk over an earlier one",
                req.options.method
            )));
        }
        if req.verify.is_some() && self.backend.boot_check().is_none() {
            return Err(Error::Unsupported(format!(
                "--verify: the {} backend cannot boot an image",
                self.backend.name()
            )));
        }
        Ok(())
    }

    pub async fn run(&self, req: &Request) -> Result<Outcome> {
        if let Action::Rollback(id) = &req.action {
            return Ok(Outcome::RolledBack(self.rollback(id).await?));
        }
        self.check(req)?;
        let host = self.host()?;
        if !req.dry_run {
            // Ctrl-C stops the migrations, which clean up and keep their journals.
            crate::interrupt::install();
        }
        match &req.action {
            Action::Rollback(_) => unreachable!("answered above"),
            Action::Cleanup(id) => {
                let removed = migrate::cleanup(host, id).await?;
                Ok(Outcome::CleanedUp {
                    migration_id: id.clone(),
                    removed,
                })
            }
            Action::Resume(id) => {
                let mut m = migrate::resume(host, id, &req.options).await?;
                self.after(req, &mut m).await?;
                Ok(Outcome::Migrated(Box::new(m)))
            }
            Action::Sync(id) | Action::CutOver(id) if req.dry_run => {
                Ok(Outcome::Planned(vec![self.warm_plan(req, id).await?]))
            }
            Action::Sync(id) => Ok(Outcome::Migrated(Box::new(
                self.sync(req, id, false).await?,
            ))),
            Action::CutOver(id) => Ok(Outcome::Migrated(Box::new(self.sync(req, id, true).await?))),
            Action::Migrate(sources) if req.dry_run => {
                let mut plans = vec![];
                for s in sources {
                    plans.push(self.dry_run(req, s).await?);
                }
                Ok(Outcome::Planned(plans))
            }
            Action::Migrate(sources) if sources.len() > 1 => Ok(self.fleet(req, sources).await),
            Action::Migrate(sources) => {
                let source = sources
                    .first()
                    .ok_or_else(|| Error::InvalidInput("migrate needs a source".into()))?;
                let (_, m) = self.item(req, source).await;
                Ok(Outcome::Migrated(Box::new(m?)))
            }
        }
    }

    /// One migration and its id (known once its journal exists, also when it fails).
    async fn item(&self, req: &Request, source: &Source) -> (Option<String>, Result<Migration>) {
        let host = match self.host() {
            Ok(h) => h,
            Err(e) => return (None, Err(e)),
        };
        // The same --warm command again catches its migration up.
        if let (true, Source::Instance(id)) = (req.options.warm, source) {
            if let Some(mid) = self.warm_journal_of(id) {
                let result = self.sync(req, &mid, false).await;
                return (Some(mid), result);
            }
        }
        let journal = match &req.migration_id {
            Some(id) => match Journal::load(&host.journal_dir(), id) {
                // This machine tried before: go on from its journal.
                Ok(_) => {
                    let result = async {
                        let mut m = migrate::resume(host, id, &req.options).await?;
                        self.after(req, &mut m).await?;
                        Ok(m)
                    }
                    .await;
                    return (Some(id.clone()), result);
                }
                Err(_) => migrate::begin_as(host, id, &req.region, source, &req.options),
            },
            None => migrate::begin(host, &req.region, source, &req.options),
        };
        let journal = match journal {
            Ok(j) => j,
            Err(e) => return (None, Err(e)),
        };
        let mid = journal.migration_id.clone();
        let result = async {
            let mut m = migrate::go_on(host, journal, &req.options).await?;
            self.after(req, &mut m).await?;
            Ok(m)
        }
        .await;
        (Some(mid), result)
    }

    /// After a run: a warm sync snapshots the data volumes; a registered
    /// image is verified and cut over, and a warm cut-over's outage told.
    async fn after(&self, req: &Request, m: &mut Migration) -> Result<()> {
        if m.sync.is_some() {
            return self.sync_data(m).await;
        }
        self.finish(req, m).await?;
        self.outage(m).await
    }

    /// After the image is registered, for every flow: `--verify` boots it,
    /// then `--replace`'s cut-over (also when a resume finds the image
    /// registered and the cut-over unfinished); the journal keeps the steps.
    async fn finish(&self, req: &Request, m: &mut Migration) -> Result<()> {
        if let Some(v) = &req.verify {
            self.verify(v, m).await?;
        }
        self.cut_over_of(m).await?;
        let host = self.host()?;
        let mut journal = Journal::load(&host.journal_dir(), &m.migration_id)?;
        journal.steps = m.steps.iter().map(|s| s.name).collect();
        journal.save()
    }

    async fn verify(&self, v: &Verify, m: &mut Migration) -> Result<()> {
        let bc = self.backend.boot_check().ok_or_else(|| {
            Error::Unsupported(format!(
                "--verify: the {} backend cannot boot an image",
                self.backend.name()
            ))
        })?;
        let started = Instant::now();
        let booted = bc
            .boot(
                &m.region,
                &m.image_id,
                &v.expect,
                v.timeout,
                &m.migration_id,
            )
            .await?;
        if !booted.reached {
            return Err(Error::NotBooted {
                migration: Box::new(m.clone()),
                message: booted.detail,
            });
        }
        m.steps.push(Step {
            name: StepName::VerifyBoot,
            seconds: started.elapsed().as_secs_f64(),
            detail: booted.detail,
        });
        Ok(())
    }

    /// The cut-over of a migration begun with `--replace`; nothing otherwise.
    async fn cut_over_of(&self, m: &mut Migration) -> Result<()> {
        let Some(co) = self.backend.cut_over() else {
            return Ok(());
        };
        let host = self.host()?;
        let mut journal = Journal::load(&host.journal_dir(), &m.migration_id)?;
        let Some(mut r) = journal.replace.clone() else {
            return Ok(());
        };
        if r.instance_type.is_none() {
            let drivers = m
                .inspection
                .as_ref()
                .map(|i| (i.drivers.ena, i.drivers.nvme));
            let (t, why) = crate::successor::replacement_type(
                self.backend,
                co,
                &journal.region,
                &journal.source_id,
                (Some(&m.image_id), drivers),
                &r.options,
            )
            .await?;
            r.instance_type = Some(t);
            r.reasons = why;
            journal.replace = Some(r);
            journal.save()?;
        }
        let mut rec = Recorder::new();
        let done = co.cut_over(&mut journal, &m.image_id, &mut rec).await;
        m.steps.extend(std::mem::take(&mut rec.steps));
        m.replacement = Some(done?);
        Ok(())
    }

    async fn rollback(&self, id: &str) -> Result<Rollback> {
        migrate::journal::check_migration_id(id)?;
        let co = self.cut_over()?;
        let host = self.host()?;
        let mut journal = Journal::load(&host.journal_dir(), id)?;
        let launched = journal
            .replace
            .as_ref()
            .is_some_and(|r| r.replacement.is_some());
        if journal.warm.is_none() || launched {
            return co.roll_back(&mut journal).await;
        }
        self.roll_back_syncs(journal).await
    }

    /// What shapes `source`'s steps, as far as a plan can know it.
    async fn step_plan(
        &self,
        req: &Request,
        source: &Source,
        replacement: Option<&ReplacePreview>,
    ) -> StepPlan {
        let restarts_source = match (source, req.options.stop_source, self.host()) {
            (Source::Instance(id), true, Ok(host)) => host
                .instance_state(&req.region, id)
                .await
                .is_ok_and(|s| s == "running"),
            _ => false,
        };
        let warm = req.options.warm;
        StepPlan {
            method: req.options.method,
            fix_guest: req.options.fix_guest,
            restarts_source: restarts_source && !warm,
            verify_boot: req.verify.is_some() && !warm,
            replace: replacement.filter(|_| !warm).map(|r| ReplaceSteps {
                stops_source: r.stops_source,
                elastic_ip: r.elastic_ip.is_some(),
                moves_data: req
                    .options
                    .replace
                    .as_ref()
                    .is_some_and(|o| o.move_data_volumes),
            }),
            warm: warm.then_some(migrate::WarmStage::Sync),
        }
    }

    /// One source's plan: nothing is created, deleted or written.
    async fn dry_run(&self, req: &Request, source: &Source) -> Result<DryRun> {
        let host = self.host()?;
        let replacement = match (&req.options.replace, source) {
            (Some(o), Source::Instance(id)) => Some(self.replace_preview(req, id, o).await?),
            _ => None,
        };
        let steps = self.step_plan(req, source, replacement.as_ref()).await;
        // The source read where it lies, when the host can without making
        // anything (a local file; an AWS image's root snapshot).
        let preview = migrate::preview(host, &req.region, source, &req.options, &steps).await;
        match (self.backend.dry_run(), preview) {
            (Some(provider), inspection) => {
                let helper = (req.options.method == Method::Helper).then_some(&req.options.helper);
                let mut plan = provider.plan(&req.region, source, helper, &steps).await?;
                match inspection {
                    Ok(p) => plan.inspection = p,
                    Err(e) => plan.inspection_error = Some(crate::error::chain(&e)),
                }
                plan.replacement = replacement;
                Ok(DryRun::Provider(Box::new(plan)))
            }
            (None, Err(e)) => Err(e),
            (None, Ok(Some(p))) => Ok(DryRun::Preview(Box::new(p))),
            (None, Ok(None)) => Err(Error::Unsupported(format!(
                "the {} backend cannot plan this migration",
                self.backend.name()
            ))),
        }
    }

    /// The replacement `--replace` would launch for `instance`, and the
    /// provider's DryRun answers (asked with the source's image: the new one
    /// does not exist yet).
    async fn replace_preview(
        &self,
        req: &Request,
        instance: &str,
        o: &migrate::cutover::ReplaceOptions,
    ) -> Result<ReplacePreview> {
        let co = self.cut_over()?;
        let (_, image) = co.instance_of(&req.region, instance).await?;
        let (instance_type, reasons) = crate::successor::replacement_type(
            self.backend,
            co,
            &req.region,
            instance,
            (image.as_deref(), None),
            o,
        )
        .await?;
        co.preview(
            &req.region,
            instance,
            &instance_type,
            reasons,
            !o.keep_source_running,
        )
        .await
    }
}
