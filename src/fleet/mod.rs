//! Fleets beyond one machine, on an engine that already schedules: AWS Step
//! Functions. `fleet start` writes the items to S3 and starts, in each
//! region they name, an execution of the state machine `amitool-fleet`,
//! whose Distributed Map hands every item to the activity `amitool-fleet`;
//! `worker` (on EC2 in that region, where snapshot reads cost no egress)
//! takes items from the activity and runs each as `migrate` would; `fleet
//! status` reads the execution, its map run and each item's record.
//!
//! Concurrency, retries, tolerated failures and history are the engine's:
//! amitool defines the machine, runs items, and keeps one record per item
//! (an S3 object the worker writes) so that status can name every item's
//! migration, image and error while the execution runs.
//!
//! A retried item runs under the same migration id (made from the fleet
//! and the item's index): on the worker that ran it before, the journal
//! goes on; on another, the pipeline finds what the first try made by that
//! id's tags (the registered image, the snapshots it sweeps).

mod deploy;
mod report;
pub mod worker;

pub use deploy::{definition, parse_items, start, Item, Started};
pub use report::{status, summary_line, wait, ItemStatus, Status};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::{Error, Result};
use crate::migrate::Method;

/// The activity's and the state machine's name in every region.
pub const NAME: &str = "amitool-fleet";
/// Where a fleet's objects live in its bucket: `amitool-fleet/<fleet id>/…`.
pub const PREFIX: &str = "amitool-fleet";

/// What a fleet engine does for amitool; the AWS backend's is Step
/// Functions and S3.
#[async_trait]
pub trait FleetEngine: Send + Sync {
    /// The activity `name` in `region` (made if missing), its ARN.
    async fn activity(&self, region: &str, name: &str) -> Result<String>;
    /// The state machine `name` in `region` with this definition and role,
    /// made or updated; its ARN.
    async fn state_machine(
        &self,
        region: &str,
        name: &str,
        definition: &str,
        role_arn: &str,
    ) -> Result<String>;
    /// The bucket, made in `region` if missing.
    async fn bucket(&self, region: &str, bucket: &str) -> Result<()>;
    async fn put_object(&self, region: &str, bucket: &str, key: &str, body: Vec<u8>) -> Result<()>;
    /// The object, or `None` when there is none.
    async fn get_object(&self, region: &str, bucket: &str, key: &str) -> Result<Option<Vec<u8>>>;
    async fn start_execution(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> Result<String>;
    async fn execution(&self, execution_arn: &str) -> Result<Execution>;
    /// The execution's map run, once the Map state started it.
    async fn map_run(&self, execution_arn: &str) -> Result<Option<MapRun>>;
    /// The next task of the activity (a long poll), or `None` when the poll ended empty.
    async fn next_task(&self, activity_arn: &str, worker: &str) -> Result<Option<Task>>;
    /// Tell the engine the task is alive; false when it no longer has the
    /// task (timed out, the execution stopped): another try may run it.
    async fn heartbeat(&self, activity_arn: &str, token: &str) -> Result<bool>;
    async fn succeed(&self, activity_arn: &str, token: &str, output: &str) -> Result<()>;
    async fn fail(&self, activity_arn: &str, token: &str, error: &str, cause: &str) -> Result<()>;
}

/// An execution, as the engine describes it.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    /// RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE.
    pub status: String,
    pub input: String,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// A map run's counts of item executions, as the engine keeps them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MapRun {
    pub arn: String,
    pub status: String,
    pub total: i64,
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub timed_out: i64,
    pub aborted: i64,
}

/// One task an activity handed out.
#[derive(Debug, Clone)]
pub struct Task {
    pub token: String,
    pub input: String,
}

/// How the engine runs a fleet's items.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Items at once per region (the Distributed Map's MaxConcurrency).
    pub max_concurrency: u32,
    /// A worker that says nothing for this long has lost its item.
    pub heartbeat_seconds: u32,
    /// Tries of an item that failed while running (not of a refused one).
    pub max_attempts: u32,
    /// The role Step Functions runs the state machine as; default
    /// `role/amitool-fleet` in the activity's account.
    pub role_arn: Option<String>,
}

/// The migration options every item of a fleet runs with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ItemOptions {
    pub method: Method,
    pub fix_guest: bool,
    pub keep_temp: bool,
    pub volume_type: Option<String>,
}

/// One item of a fleet: what the Distributed Map reads from S3 and the
/// activity hands to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskInput {
    pub fleet: String,
    pub bucket: String,
    pub index: usize,
    /// An AMI or instance id.
    pub source: String,
    pub region: String,
    pub migration_id: String,
    pub heartbeat_seconds: u32,
    pub options: ItemOptions,
}

/// An item's state, as `fleet status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// No worker has taken it yet.
    Pending,
    Running,
    Succeeded,
    /// Its last try failed (the engine may try again: see the execution).
    Failed,
}

/// What a worker writes about an item, at its start and its end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemRecord {
    pub state: ItemState,
    pub migration_id: String,
    pub image_id: Option<String>,
    pub error: Option<String>,
    pub worker: String,
    /// Tries that reached a worker (this one included).
    pub attempts: u32,
    pub updated: String,
}

/// A fleet's id: `fleet-` and 12 hex digits, also its executions' name.
pub fn new_fleet_id() -> String {
    let mid = crate::migrate::new_migration_id();
    format!("fleet-{}", &mid["mig-".len()..])
}

/// The migration id of a fleet's item: the same on every try, anywhere.
pub fn item_migration_id(fleet: &str, index: usize) -> String {
    let digest = sha2::Sha256::digest(format!("{fleet}/{index}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("mig-{hex}")
}

pub(crate) fn items_key(fleet: &str) -> String {
    format!("{PREFIX}/{fleet}/items.json")
}

pub(crate) fn record_key(fleet: &str, index: usize) -> String {
    format!("{PREFIX}/{fleet}/items/{index}.json")
}

/// `arn:PARTITION:SERVICE:REGION:ACCOUNT:…`, split.
#[derive(Debug)]
pub(crate) struct Arn<'a> {
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
}

pub(crate) fn parse_arn(arn: &str) -> Result<Arn<'_>> {
    let service = "states";
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, s, region, account, rest]
            if *s == service && !region.is_empty() && !account.is_empty() && !rest.is_empty() =>
        {
            Ok(Arn {
                partition,
                region,
                account,
            })
        }
        _ => Err(Error::MalformedId {
            kind: "Step Functions ARN",
            id: crate::ids::shown(arn),
            expected: "arn:PARTITION:states:REGION:ACCOUNT:TYPE:NAME",
        }),
    }
}

/// Write an item's record (best effort is not enough: status reads it).
pub(crate) async fn put_record(
    engine: &dyn FleetEngine,
    t: &TaskInput,
    record: &ItemRecord,
) -> Result<()> {
    let body = serde_json::to_vec_pretty(record).expect("a record serializes");
    engine
        .put_object(&t.region, &t.bucket, &record_key(&t.fleet, t.index), body)
        .await
}

/// An item's record, when a worker wrote one (an unreadable one counts as none).
pub(crate) async fn record(engine: &dyn FleetEngine, t: &TaskInput) -> Result<Option<ItemRecord>> {
    Ok(engine
        .get_object(&t.region, &t.bucket, &record_key(&t.fleet, t.index))
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_keeps_its_migration_id_on_every_try() {
        let a = item_migration_id("fleet-0123456789ab", 3);
        assert_eq!(a, item_migration_id("fleet-0123456789ab", 3));
        assert_ne!(a, item_migration_id("fleet-0123456789ab", 4));
        assert_ne!(a, item_migration_id("fleet-0123456789ac", 3));
        crate::migrate::journal::check_migration_id(&a).unwrap();
    }

    #[test]
    fn arns_are_split_or_refused() {
        let a = parse_arn("arn:aws-cn:states:cn-north-1:123456789012:execution:amitool-fleet:x")
            .unwrap();
        assert_eq!(
            (a.partition, a.region, a.account),
            ("aws-cn", "cn-north-1", "123456789012")
        );
        assert_eq!(parse_arn("arn:aws:s3:::bucket").unwrap_err().exit_code(), 2);
        assert!(parse_arn("nonsense").is_err());
    }
}
