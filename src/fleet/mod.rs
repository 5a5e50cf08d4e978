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

pub mod worker;

use std::collections::BTreeMap;
use std::time::Duration;

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

/// `fleet start`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    pub fleet: String,
    /// The execution of the first region (of the only one, mostly).
    pub execution_arn: String,
    /// Every region's execution.
    pub executions: BTreeMap<String, String>,
    /// Every region's activity, for its workers' `--activity-arn`.
    pub activities: BTreeMap<String, String>,
    /// Every region's bucket.
    pub buckets: BTreeMap<String, String>,
    pub items: usize,
}

/// One line of a fleet file: a source and the region it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub source: String,
    pub region: String,
}

/// The items of a fleet file: `ID [REGION]` a line, `#` starts a comment;
/// a line without a region takes `default_region`.
pub fn parse_items(text: &str, file: &str, default_region: Option<&str>) -> Result<Vec<Item>> {
    let mut out: Vec<Item> = vec![];
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(id) = words.next() else { continue };
        let at = |what: String| Error::InvalidInput(format!("{file} line {}: {what}", n + 1));
        let kind = if id.starts_with("ami-") {
            crate::ids::IdKind::Image
        } else {
            crate::ids::IdKind::Instance
        };
        crate::ids::check_id(kind, id).map_err(|e| at(e.to_string()))?;
        let region = match (words.next(), default_region) {
            (Some(r), _) if crate::ids::region_is_well_formed(r) => r.to_string(),
            (Some(r), _) => {
                return Err(at(format!("{} is not a region name", crate::ids::shown(r))))
            }
            (None, Some(r)) => r.to_string(),
            (None, None) => {
                return Err(at(format!(
                    "{} names no region: write `{} REGION`, or give one --region",
                    crate::ids::shown(id),
                    crate::ids::shown(id)
                )))
            }
        };
        if let Some(extra) = words.next() {
            return Err(at(format!(
                "expected `ID [REGION]`, found more: {}",
                crate::ids::shown(extra)
            )));
        }
        let item = Item {
            source: id.to_string(),
            region,
        };
        if out.contains(&item) {
            return Err(at(format!(
                "{} {} is listed twice",
                item.source, item.region
            )));
        }
        out.push(item);
    }
    if out.is_empty() {
        return Err(Error::InvalidInput(format!("{file} lists no items")));
    }
    Ok(out)
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

fn items_key(fleet: &str) -> String {
    format!("{PREFIX}/{fleet}/items.json")
}

fn record_key(fleet: &str, index: usize) -> String {
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

/// The state machine: a Distributed Map over the items file, each item one
/// task of the activity, retried when it failed while running (a worker
/// that went silent, an AWS error, a Ctrl-C), never when it was refused.
pub fn definition(partition: &str, activity_arn: &str, s: &Settings) -> String {
    let def = serde_json::json!({
        "Comment": "amitool fleet: each item of the S3 file is one migration, run by `amitool worker --activity-arn` on this activity",
        "StartAt": "Migrations",
        "States": {
            "Migrations": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": format!("arn:{partition}:states:::s3:getObject"),
                    "ReaderConfig": {"InputType": "JSON"},
                    "Parameters": {"Bucket.$": "$.bucket", "Key.$": "$.key"}
                },
                "MaxConcurrency": s.max_concurrency,
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Migrate",
                    "States": {
                        "Migrate": {
                            "Type": "Task",
                            "Resource": activity_arn,
                            "HeartbeatSeconds": s.heartbeat_seconds,
                            "TimeoutSeconds": 7 * 24 * 3600,
                            "Retry": [{
                                "ErrorEquals": ["States.Timeout", "amitool.Failed", "amitool.Interrupted"],
                                "IntervalSeconds": 2,
                                "MaxAttempts": s.max_attempts.saturating_sub(1),
                                "BackoffRate": 2.0
                            }],
                            "End": true
                        }
                    }
                },
                // Every item is tried to its end; the summary says which failed.
                // (A float: LocalStack's parser takes 100 for another token.)
                "ToleratedFailurePercentage": 100.0,
                "End": true
            }
        }
    });
    serde_json::to_string_pretty(&def).expect("a JSON value serializes")
}

/// `fleet start`: per region, the activity, the state machine (made or
/// updated) and the bucket; the items in S3; one execution each.
pub async fn start(
    engine: &dyn FleetEngine,
    items: &[Item],
    bucket: &str,
    options: &ItemOptions,
    settings: &Settings,
) -> Result<Started> {
    crate::ids::check_bucket_name(bucket)?;
    let fleet = new_fleet_id();
    let mut by_region: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
    for i in items {
        by_region.entry(&i.region).or_default().push(i);
    }
    let several = by_region.len() > 1;
    let mut started = Started {
        fleet: fleet.clone(),
        execution_arn: String::new(),
        executions: BTreeMap::new(),
        activities: BTreeMap::new(),
        buckets: BTreeMap::new(),
        items: items.len(),
    };
    // Every region's machine first: a region that cannot be deployed stops
    // the start before any execution runs.
    let mut machines = vec![];
    for region in by_region.keys() {
        let activity = engine.activity(region, NAME).await?;
        let arn = parse_arn(&activity)?;
        let role = settings
            .role_arn
            .clone()
            .unwrap_or_else(|| format!("arn:{}:iam::{}:role/{NAME}", arn.partition, arn.account));
        let def = definition(arn.partition, &activity, settings);
        let machine = engine.state_machine(region, NAME, &def, &role).await?;
        // A bucket in each region the items are in: the map reads its
        // items where it runs.
        let b = if several {
            format!("{bucket}-{region}")
        } else {
            bucket.to_string()
        };
        crate::ids::check_bucket_name(&b)?;
        engine.bucket(region, &b).await?;
        started.activities.insert(region.to_string(), activity);
        started.buckets.insert(region.to_string(), b.clone());
        machines.push((region.to_string(), machine, b));
    }
    let mut index = 0;
    for (region, machine, b) in machines {
        let tasks: Vec<TaskInput> = by_region[region.as_str()]
            .iter()
            .map(|i| {
                let t = TaskInput {
                    fleet: fleet.clone(),
                    bucket: b.clone(),
                    index,
                    source: i.source.clone(),
                    region: i.region.clone(),
                    migration_id: item_migration_id(&fleet, index),
                    heartbeat_seconds: settings.heartbeat_seconds,
                    options: options.clone(),
                };
                index += 1;
                t
            })
            .collect();
        let key = items_key(&fleet);
        let body = serde_json::to_vec_pretty(&tasks).expect("items serialize");
        engine.put_object(&region, &b, &key, body).await?;
        let input = serde_json::json!({"bucket": b, "key": key, "fleet": fleet}).to_string();
        let execution = engine.start_execution(&machine, &fleet, &input).await?;
        started.executions.insert(region, execution);
    }
    started.execution_arn = started
        .executions
        .values()
        .next()
        .cloned()
        .unwrap_or_default();
    Ok(started)
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
        let record: Option<ItemRecord> = engine
            .get_object(&region, &input.bucket, &record_key(&input.fleet, t.index))
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok());
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
        crate::interrupt::or_interrupted(async {
            tokio::time::sleep(every).await;
            Ok(())
        })
        .await?;
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

pub(crate) async fn get_record(engine: &dyn FleetEngine, t: &TaskInput) -> Option<ItemRecord> {
    engine
        .get_object(&t.region, &t.bucket, &record_key(&t.fleet, t.index))
        .await
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_name_their_region_or_take_the_default() {
        let text = "ami-0123456789abcdef0 eu-west-1\n# a comment\n\ni-0123456789abcdef0  # the web server\n";
        let items = parse_items(text, "f", Some("us-east-1")).unwrap();
        assert_eq!(
            items,
            vec![
                Item {
                    source: "ami-0123456789abcdef0".into(),
                    region: "eu-west-1".into()
                },
                Item {
                    source: "i-0123456789abcdef0".into(),
                    region: "us-east-1".into()
                },
            ]
        );
        let e = parse_items("ami-0123456789abcdef0\n", "f", None).unwrap_err();
        assert!(e.to_string().contains("f line 1"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = parse_items("ami-0123456789abcdef0 us-east-1 x\n", "f", None).unwrap_err();
        assert!(e.to_string().contains("found more"), "{e}");
        let e = parse_items(
            "ami-0123456789abcdef0\nami-0123456789abcdef0\n",
            "f",
            Some("us-east-1"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("line 2") && e.to_string().contains("twice"),
            "{e}"
        );
        assert!(parse_items("# nothing\n", "f", None).is_err());
        assert!(parse_items("ami-zz us-east-1\n", "f", None).is_err());
    }

    #[test]
    fn an_item_keeps_its_migration_id_on_every_try() {
        let a = item_migration_id("fleet-0123456789ab", 3);
        assert_eq!(a, item_migration_id("fleet-0123456789ab", 3));
        assert_ne!(a, item_migration_id("fleet-0123456789ab", 4));
        assert_ne!(a, item_migration_id("fleet-0123456789ac", 3));
        crate::migrate::journal::check_migration_id(&a).unwrap();
    }

    #[test]
    fn the_definition_retries_what_failed_while_running_but_not_a_refusal() {
        let s = Settings {
            max_concurrency: 4,
            heartbeat_seconds: 60,
            max_attempts: 3,
            role_arn: None,
        };
        let act = "arn:aws:states:us-east-1:000000000000:activity:amitool-fleet";
        let def: serde_json::Value = serde_json::from_str(&definition("aws", act, &s)).unwrap();
        let map = &def["States"]["Migrations"];
        assert_eq!(map["MaxConcurrency"], 4);
        assert_eq!(
            map["ItemProcessor"]["ProcessorConfig"]["Mode"],
            "DISTRIBUTED"
        );
        let task = &map["ItemProcessor"]["States"]["Migrate"];
        assert_eq!(task["Resource"], act);
        assert_eq!(task["HeartbeatSeconds"], 60);
        let retry = &task["Retry"][0];
        assert_eq!(retry["MaxAttempts"], 2);
        let errors: Vec<&str> = retry["ErrorEquals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(errors.contains(&"States.Timeout") && !errors.contains(&"amitool.Refused"));
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
