//! Fleets on Step Functions, on LocalStack's own engine: `fleet start`
//! deploys the state machine (a Distributed Map over the items in S3) and
//! the activity, workers run as local processes, one is killed mid-item,
//! and the engine gives that item to another worker, which finishes it once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;

type Env = common::Migrations;

/// An image id nobody has: refused, never tried again.
const MISSING: &str = "ami-00000000000000bad";

/// Images whose `amitool:source-image` tag is `ami`.
async fn images_from(ami: &str) -> Vec<String> {
    common::images_tagged("amitool:source-image", ami).await
}

/// Snapshots tagged with the migration's id.
async fn snapshots_of(migration_id: &str) -> Vec<String> {
    common::snapshots_tagged("amitool:migration", migration_id).await
}

/// A worker with its own journal and work directories (another machine).
fn worker(env: &Env, cmd: std::process::Command, name: &str) -> std::process::Command {
    let mut c = cmd;
    c.env("AMITOOL_JOURNAL_DIR", env.path(&format!("{name}-journal")))
        .env("AMITOOL_WORK_DIR", env.path(&format!("{name}-work")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn stop(child: Child) -> String {
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_fleet_runs_on_step_functions_and_a_killed_workers_item_is_retried_once() {
    let env = Env::new();
    let amis: Vec<String> = ["ext3-uuid", "menulst-root-hd0", "multi-default1"]
        .iter()
        .map(|f| env.import(f))
        .collect();
    let file = env.path("fleet.txt");
    std::fs::write(
        &file,
        format!(
            "# three PV images and one that does not exist\n{} us-east-1\n{}\n{}  # default region\n{MISSING}\n",
            amis[0], amis[1], amis[2]
        ),
    )
    .unwrap();
    let bucket = format!(
        "amitool-fleet-{}",
        env.unique()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    let started = env.json(&[
        "fleet",
        "start",
        "--region",
        "us-east-1",
        "--from-file",
        file.to_str().unwrap(),
        "--bucket",
        &bucket,
        "--concurrency",
        "2",
        "--heartbeat-seconds",
        "5",
    ]);
    let arn = started["execution_arn"].as_str().unwrap().to_string();
    let activity = started["activities"]["us-east-1"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(arn.contains(":execution:amitool-fleet:"), "{started}");
    assert!(activity.ends_with(":activity:amitool-fleet"), "{started}");
    assert_eq!(started["items"], 4);

    // The first worker takes an item and is killed in the middle of its stream.
    let mut w1 = worker(
        &env,
        env.hooked_with_progress(&["worker", "--activity-arn", &activity, "--name", "w1"]),
        "w1",
    )
    .env("AMITOOL_TEST_PAUSE_AFTER_BLOCKS", "4")
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(w1.stderr.take().unwrap()).lines();
    let mut taken = None;
    let mut said = vec![];
    let start = Instant::now();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push(line.clone());
        if let Some(rest) = line.strip_prefix("amitool: worker w1: ") {
            taken = rest.split(' ').next().map(String::from);
        }
        if line.contains("test hook: paused after") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "w1 never paused"
        );
    }
    let killed = taken.unwrap_or_else(|| panic!("w1 took no item: {}", said.join("\n")));
    w1.kill().unwrap(); // SIGKILL: no heartbeat, no failure reported
    w1.wait().unwrap();

    // Two more workers; the engine gives them the other items and, once the
    // killed item's heartbeat is missed, that item again.
    let w2 = worker(
        &env,
        env.with_progress(&["worker", "--activity-arn", &activity, "--name", "w2"]),
        "w2",
    )
    .spawn()
    .unwrap();
    let w3 = worker(
        &env,
        env.with_progress(&["worker", "--activity-arn", &activity, "--name", "w3"]),
        "w3",
    )
    .spawn()
    .unwrap();
    let waited = env
        .cmd(&[
            "fleet",
            "status",
            &arn,
            "--wait",
            "--interval",
            "1",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let (e2, e3) = (stop(w2), stop(w3));
    // Exit 1: an item failed (the missing image), the rest succeeded.
    assert_eq!(
        waited.status.code(),
        Some(1),
        "status --wait: {}\nw2: {e2}\nw3: {e3}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let status: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(
        status["status"], "SUCCEEDED",
        "{status}\nw2: {e2}\nw3: {e3}"
    );
    let items = status["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{status}");
    let refused = &items[3];
    assert_eq!(refused["source"], MISSING);
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(
        refused["attempts"], 1,
        "a refusal is not tried again: {refused}"
    );
    assert!(refused["image_id"].is_null(), "{refused}");
    let why = refused["error"].as_str().unwrap();
    assert!(why.contains(MISSING) && why.lines().count() == 1, "{why}");
    for (item, ami) in items.iter().zip(&amis) {
        assert_eq!(item["source"], ami.as_str());
        assert_eq!(item["state"], "succeeded", "{item}");
        assert!(item["error"].is_null(), "{item}");
        let image = item["image_id"].as_str().unwrap();
        // Finished once: one image from each source, the one status names.
        assert_eq!(images_from(ami).await, vec![image.to_string()], "{item}");
        let mid = item["migration_id"].as_str().unwrap();
        let tries = item["attempts"].as_u64().unwrap();
        if *ami == killed {
            assert!(tries >= 2, "the killed item ran again: {item}");
            assert!(["w2", "w3"].contains(&item["worker"].as_str().unwrap()));
        } else {
            assert_eq!(tries, 1, "{item}");
        }
        // Nothing of a try is left: the image's own snapshot only (the
        // killed try's half-written one was found by its tag and removed).
        let snaps = snapshots_of(mid).await;
        assert_eq!(snaps.len(), 1, "{mid}: {snaps:?}");
    }
    // The workers said what they did; the killed item's second try ran in
    // one of them.
    assert!(
        e2.contains(&killed) || e3.contains(&killed),
        "w2: {e2}\nw3: {e3}"
    );
    // The engine's own counts agree.
    let run = &status["map_run"];
    assert_eq!(
        (
            run["total"].as_i64(),
            run["succeeded"].as_i64(),
            run["failed"].as_i64()
        ),
        (Some(4), Some(3), Some(1)),
        "{status}"
    );

    // The local backend has no engine: one line, exit 2.
    let r = env
        .cmd(&[
            "--backend",
            "local",
            "--state-dir",
            env.path("state").to_str().unwrap(),
            "fleet",
            "status",
            &arn,
        ])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("Step Functions") && err.lines().count() == 1,
        "{err}"
    );
}
