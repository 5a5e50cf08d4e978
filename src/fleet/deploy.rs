//! `fleet start`: the items of a fleet file, the state machine that runs
//! them, and its deployment and start in each region.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    item_migration_id, items_key, new_fleet_id, parse_arn, FleetEngine, ItemOptions, Settings,
    TaskInput, NAME,
};
use crate::error::{Error, Result};

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
        crate::migrate::Source::parse(id).map_err(|e| at(e.to_string()))?;
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
}
