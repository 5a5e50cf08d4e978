//! `fleet status`: an execution, its map run and every item, from the
//! items file and the workers' records.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{parse_arn, record, FleetEngine, ItemState, MapRun, TaskInput};
use crate::error::{Error, Result};

/// One item of `fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct ItemStatus {
    pub source: String,
    pub region: String,
    pub state: ItemState,
    pub migration_id: String,
    pub image_id: Option<String>,
    pub error: Option<String>,
    pub worker: Option<String>,
    pub attempts: u32,
}

/// `fleet status ARN`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub execution_arn: String,
    pub fleet: String,
    pub status: String,
    pub error: Option<String>,
    pub map_run: Option<MapRun>,
    pub items: Vec<ItemStatus>,
}

impl Status {
    pub fn running(&self) -> bool {
        self.status == "RUNNING"
    }

    /// 0 when the execution succeeded with every item, 1 when it or an item
    /// failed; still running is 0.
    pub fn exit_code(&self) -> u8 {
        let failed = self.items.iter().any(|i| i.state == ItemState::Failed);
        u8::from(failed || !(self.running() || self.status == "SUCCEEDED"))
    }
}

#[derive(Deserialize)]
struct ExecutionInput {
    bucket: String,
    key: String,
    fleet: String,
}

/// `fleet status ARN`: the execution, its map run, and every item.
pub async fn status(engine: &dyn FleetEngine, execution_arn: &str) -> Result<Status> {
    let arn = parse_arn(execution_arn)?;
    let region = arn.region.to_string();
    let ex = engine.execution(execution_arn).await?;
    let input: ExecutionInput = serde_json::from_str(&ex.input).map_err(|e| Error::Json {
        what: format!("{execution_arn} is not an execution `amitool fleet start` started"),
        source: e,
    })?;
    let tasks: Vec<TaskInput> = match engine
        .get_object(&region, &input.bucket, &input.key)
        .await?
    {
        Some(body) => serde_json::from_slice(&body).map_err(|e| Error::Json {
            what: format!("s3://{}/{}: not a fleet's items", input.bucket, input.key),
            source: e,
        })?,
        None => {
            return Err(Error::not_found(
                "fleet items",
                format!("s3://{}/{}", input.bucket, input.key),
                region,
            ))
        }
    };
    let map_run = engine.map_run(execution_arn).await?;
    let ended = ex.status != "RUNNING";
    let mut items = vec![];
    for t in tasks {
        let record = record(engine, &t).await?;
        let mut item = ItemStatus {
            source: t.source,
            region: t.region,
            state: ItemState::Pending,
            migration_id: t.migration_id,
            image_id: None,
            error: None,
            worker: None,
            attempts: 0,
        };
        if let Some(r) = record {
            item.state = r.state;
            item.image_id = r.image_id;
            item.error = r.error;
            item.worker = Some(r.worker);
            item.attempts = r.attempts;
        }
        // The engine ended the execution with the item unfinished: its
        // worker went silent for good, or the execution was stopped.
        if ended && matches!(item.state, ItemState::Pending | ItemState::Running) {
            item.state = ItemState::Failed;
            item.error = Some(format!(
                "the execution ended {} before the item finished{}",
                ex.status,
                ex.error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
        items.push(item);
    }
    Ok(Status {
        execution_arn: execution_arn.to_string(),
        fleet: input.fleet,
        status: ex.status,
        error: match (ex.error, ex.cause) {
            (Some(e), Some(c)) => Some(format!("{e}: {c}")),
            (e, c) => e.or(c),
        },
        map_run,
        items,
    })
}

/// `fleet status ARN --wait`: status until the execution ends, a line on
/// stderr each time the counts change.
pub async fn wait(
    engine: &dyn FleetEngine,
    execution_arn: &str,
    every: Duration,
) -> Result<Status> {
    let mut said = String::new();
    loop {
        let s = status(engine, execution_arn).await?;
        let line = summary_line(&s);
        if line != said && crate::progress::notes_shown() {
            eprintln!("amitool: {line}");
            said = line;
        }
        if !s.running() {
            return Ok(s);
        }
        crate::interrupt::sleep(every).await?;
    }
}

/// `fleet-…: RUNNING, 3 of 20 succeeded, 1 failed, 4 running, 12 pending`.
pub fn summary_line(s: &Status) -> String {
    let count = |st: ItemState| s.items.iter().filter(|i| i.state == st).count();
    format!(
        "{}: {}, {} of {} succeeded, {} failed, {} running, {} pending",
        s.fleet,
        s.status,
        count(ItemState::Succeeded),
        s.items.len(),
        count(ItemState::Failed),
        count(ItemState::Running),
        count(ItemState::Pending)
    )
}
