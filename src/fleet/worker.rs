//! `amitool worker --activity-arn ARN`: takes a fleet's items from the
//! activity, runs each as `migrate` would (the same [`Runner`]), tells the
//! engine it is alive while it runs, and reports the migration's result or
//! its error. Run it on EC2 in the activity's region: snapshot blocks then
//! never leave the region.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    parse_arn, put_record, record, FleetEngine, ItemRecord, ItemState, ItemStatus, Task, TaskInput,
};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::migrate::{Action, Options, Outcome, Request, Runner, Source};

/// Polls that may fail in a row before the worker gives up, and the pause after each.
const POLL_RETRIES: u32 = 5;
const POLL_PAUSE: Duration = Duration::from_secs(5);

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub activity_arn: String,
    /// The name the engine records for the tasks this worker takes.
    pub name: String,
    /// Items at once in this process (they share its request budget).
    pub concurrency: usize,
    /// Stop after this many items (default: run until Ctrl-C).
    pub max_items: Option<usize>,
}

/// One item a worker ran: the item as `fleet status` shows it, and how long it took here.
#[derive(Debug, Clone, Serialize)]
pub struct WorkedItem {
    #[serde(flatten)]
    pub item: ItemStatus,
    pub seconds: f64,
}

/// What a worker did before it stopped.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSummary {
    pub worker: String,
    pub activity_arn: String,
    pub items: Vec<WorkedItem>,
    pub interrupted: bool,
}

impl WorkerSummary {
    /// 130 after Ctrl-C, else 0: an item's failure is the engine's to retry
    /// and the fleet's status to show, not the worker's exit.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            130
        } else {
            0
        }
    }
}

/// A failure of the endpoint or the network, not of the request.
fn passing(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } | Error::Sdk { .. } => true,
        Error::Aws { code, .. } => matches!(
            code.as_str(),
            "ThrottlingException"
                | "Throttling"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "InternalError"
                | "RequestTimeout"
        ),
        _ => false,
    }
}

/// The error name Step Functions records (and its Retry matches).
fn error_name(e: &Error) -> &'static str {
    match e.exit_code() {
        2 => "amitool.Refused",
        130 => "amitool.Interrupted",
        _ => "amitool.Failed",
    }
}

/// Step Functions keeps at most 32,768 characters of a cause.
fn cause(text: &str) -> String {
    text.chars().take(32_000).collect()
}

pub async fn work(
    backend: &dyn Backend,
    engine: &dyn FleetEngine,
    o: &WorkerOptions,
) -> Result<WorkerSummary> {
    parse_arn(&o.activity_arn)?;
    crate::interrupt::install();
    crate::progress::show_steps(crate::progress::ProgressPolicy { enabled: false });
    crate::progress::set_fleet();
    let taken = AtomicUsize::new(0);
    let slots = (0..o.concurrency.max(1)).map(|_| slot(backend, engine, o, &taken));
    let mut items = vec![];
    for r in futures::future::join_all(slots).await {
        items.extend(r?);
    }
    Ok(WorkerSummary {
        worker: o.name.clone(),
        activity_arn: o.activity_arn.clone(),
        items,
        interrupted: crate::interrupt::is_interrupted(),
    })
}

/// One item at a time until Ctrl-C or `--max-items`.
async fn slot(
    backend: &dyn Backend,
    engine: &dyn FleetEngine,
    o: &WorkerOptions,
    taken: &AtomicUsize,
) -> Result<Vec<WorkedItem>> {
    let mut done = vec![];
    let mut failed_polls = 0;
    loop {
        if crate::interrupt::is_interrupted()
            || o.max_items
                .is_some_and(|m| taken.load(Ordering::SeqCst) >= m)
        {
            return Ok(done);
        }
        let task = match crate::interrupt::or_interrupted(
            engine.next_task(&o.activity_arn, &o.name),
        )
        .await
        {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(Error::Interrupted) => return Ok(done),
            // A worker outlives a blip of the network or the endpoint; a
            // poll that keeps failing (no such activity, no permission) ends it.
            Err(e) if failed_polls < POLL_RETRIES && passing(&e) => {
                failed_polls += 1;
                eprintln!(
                    "amitool: worker {}: {e}; polling again in {} s",
                    o.name,
                    POLL_PAUSE.as_secs()
                );
                if crate::interrupt::sleep(POLL_PAUSE).await.is_err() {
                    return Ok(done);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        failed_polls = 0;
        taken.fetch_add(1, Ordering::SeqCst);
        // An item the worker could not even report on (its record, the
        // engine's answer) ends with the engine: no heartbeat, then another try.
        match run_task(backend, engine, o, task).await {
            Ok(item) => done.push(item),
            Err(e) => eprintln!("amitool: worker {}: {}", o.name, crate::error::chain(&e)),
        }
    }
}

/// The item as `migrate` runs it, under its own migration id.
fn request(t: &TaskInput, source: Source) -> Request {
    Request {
        action: Action::Migrate(vec![source]),
        region: t.region.clone(),
        options: Options {
            method: t.options.method,
            fix_guest: t.options.fix_guest,
            keep_temp: t.options.keep_temp,
            volume_type: t.options.volume_type.clone(),
            ..Options::default()
        },
        verify: None,
        dry_run: false,
        migration_id: Some(t.migration_id.clone()),
    }
}

async fn run_task(
    backend: &dyn Backend,
    engine: &dyn FleetEngine,
    o: &WorkerOptions,
    task: Task,
) -> Result<WorkedItem> {
    let arn = &o.activity_arn;
    let t: TaskInput = match serde_json::from_str(&task.input) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("not an amitool fleet item: {e}");
            engine
                .fail(arn, &task.token, "amitool.Refused", &cause(&why))
                .await?;
            return Err(Error::Json {
                what: format!("a task of {arn} is not an amitool fleet item"),
                source: e,
            });
        }
    };
    let started = Instant::now();
    let attempts = record(engine, &t)
        .await
        .ok()
        .flatten()
        .map_or(0, |r| r.attempts)
        + 1;
    let mut record = ItemRecord {
        state: ItemState::Running,
        migration_id: t.migration_id.clone(),
        image_id: None,
        error: None,
        worker: o.name.clone(),
        attempts,
        updated: crate::migrate::warm::rfc3339(crate::migrate::warm::now()),
    };
    put_record(engine, &t, &record).await?;
    if crate::progress::notes_shown() {
        eprintln!(
            "amitool: worker {}: {} in {} as {} (try {attempts})",
            o.name, t.source, t.region, t.migration_id
        );
    }
    // Heartbeats while the migration runs; the engine no longer having the
    // task (timed out, execution stopped) ends this try where it is: its
    // journal and tags let the next one go on.
    let every = Duration::from_secs(u64::from((t.heartbeat_seconds / 3).max(1)));
    let lost = async {
        loop {
            tokio::time::sleep(every).await;
            match engine.heartbeat(arn, &task.token).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => eprintln!("amitool: worker {}: heartbeat: {e}", o.name),
            }
        }
    };
    let result = match Source::parse(&t.source) {
        Err(e) => Some(Err(e)),
        Ok(source) => {
            let req = request(&t, source);
            let runner = Runner::new(backend);
            let run = crate::progress::for_item(t.source.clone(), runner.run(&req));
            tokio::select! {
                r = run => Some(r),
                () = lost => None,
            }
        }
    };
    let mut item = ItemStatus {
        source: t.source.clone(),
        region: t.region.clone(),
        state: ItemState::Failed,
        migration_id: t.migration_id.clone(),
        image_id: None,
        error: None,
        worker: Some(o.name.clone()),
        attempts,
    };
    let seconds = started.elapsed().as_secs_f64();
    record.updated = crate::migrate::warm::rfc3339(crate::migrate::warm::now());
    match result {
        None => {
            item.error = Some(
                "the engine gave the item up (no heartbeat in time, or the execution stopped)"
                    .into(),
            );
        }
        Some(Ok(Outcome::Migrated(m))) => {
            item.state = ItemState::Succeeded;
            item.image_id = Some(m.image_id.clone());
            record.state = ItemState::Succeeded;
            record.image_id = Some(m.image_id.clone());
            put_record(engine, &t, &record).await?;
            let output = serde_json::json!({
                "source": t.source,
                "region": t.region,
                "migration_id": m.migration_id,
                "image_id": m.image_id,
                "findings": m.findings,
                "worker": o.name,
            });
            engine
                .succeed(arn, &task.token, &output.to_string())
                .await?;
        }
        Some(other) => {
            let e = match other {
                Err(e) => e,
                Ok(_) => Error::Unsupported("a fleet item migrates one source".into()),
            };
            let text = crate::error::chain(&e);
            item.error = Some(text.clone());
            record.state = ItemState::Failed;
            record.error = Some(text.clone());
            put_record(engine, &t, &record).await?;
            engine
                .fail(arn, &task.token, error_name(&e), &cause(&text))
                .await?;
        }
    }
    if crate::progress::notes_shown() {
        let what = match (&item.image_id, &item.error) {
            (Some(i), _) => format!("migrated to {i}"),
            (None, Some(e)) => format!("failed: {e}"),
            (None, None) => "stopped".into(),
        };
        eprintln!(
            "amitool: worker {}: {} ({}) {what} in {:.1} s",
            o.name, t.source, t.migration_id, seconds
        );
    }
    Ok(WorkedItem { item, seconds })
}
