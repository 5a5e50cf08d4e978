//! `migrate --method helper` against LocalStack. LocalStack's SSM runs
//! nothing, so its stand-in agent (localstack/hooks/30_amitool_ssm.py) runs
//! the preparation script in check-only mode: what this proves is the
//! orchestration (helper from the SSM parameter, volumes in its zone,
//! attachments, SendCommand with a script that validates, polling through
//! InvocationDoesNotExist) and that everything is removed again with the
//! source untouched. The script itself is proven on loop devices
//! (tests/prepare_script.rs).

use std::process::Output;

use aws_sdk_ec2::types::Filter;
use serde_json::Value;

mod common;
use common::{endpoint, localstack};

struct Env {
    dir: tempfile::TempDir,
    _serial: std::sync::MutexGuard<'static, ()>,
}

/// The tests of this file count and create EC2 resources: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Env {
    fn new() -> Self {
        localstack();
        Env {
            dir: tempfile::tempdir().unwrap(),
            _serial: SERIAL.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_amitool"))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", endpoint())
            .env("AMITOOL_JOURNAL_DIR", self.dir.path().join("journal"))
            .env("AMITOOL_WORK_DIR", self.dir.path().join("work"))
            .arg("--no-progress")
            .args(args)
            .output()
            .unwrap()
    }

    fn journal(&self) -> Value {
        let entry = std::fs::read_dir(self.dir.path().join("journal"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap()
    }
}

async fn sdk() -> aws_config::SdkConfig {
    common::sdk_config("us-east-1").await
}

fn tag(mid: &str) -> Filter {
    Filter::builder()
        .name("tag:amitool:migration")
        .values(mid)
        .build()
}

/// What the migration left: live instances, volumes and snapshots with its tag.
async fn leftovers(mid: &str) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let ec2 = aws_sdk_ec2::Client::new(&sdk().await);
    let inst = ec2
        .describe_instances()
        .filters(tag(mid))
        .send()
        .await
        .unwrap();
    let all: Vec<_> = inst
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .collect();
    let live = all
        .iter()
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated" | "shutting-down")
            )
        })
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    let helpers = all
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect();
    let vols = ec2
        .describe_volumes()
        .filters(tag(mid))
        .send()
        .await
        .unwrap();
    let snaps = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(tag(mid))
        .send()
        .await
        .unwrap();
    (
        live,
        vols.volumes()
            .iter()
            .map(|v| v.volume_id().unwrap().to_string())
            .collect(),
        snaps
            .snapshots()
            .iter()
            .map(|s| s.snapshot_id().unwrap().to_string())
            .collect(),
        helpers,
    )
}

/// The output of the last command SSM ran on `instance`.
async fn ssm_outputs(instance: &str) -> Vec<String> {
    let ssm = aws_sdk_ssm::Client::new(&sdk().await);
    let cmds = ssm
        .list_commands()
        .instance_id(instance)
        .send()
        .await
        .unwrap();
    let mut out = vec![];
    for c in cmds.commands() {
        let inv = ssm
            .get_command_invocation()
            .command_id(c.command_id().unwrap())
            .instance_id(instance)
            .send()
            .await
            .unwrap();
        out.push(
            inv.standard_output_content()
                .unwrap_or_default()
                .to_string(),
        );
    }
    out
}

async fn describe(ami: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&sdk().await);
    format!(
        "{:?}",
        ec2.describe_images()
            .image_ids(ami)
            .send()
            .await
            .unwrap()
            .images()
    )
}

#[tokio::test]
async fn helper_orchestration_runs_and_cleans_up() {
    let env = Env::new();
    let ami = "ami-487d6534000000101"; // seeded PV AMI of us-east-1
    let before = describe(ami).await;
    let out = env.run(&["migrate", "--method", "helper", "--ami", ami]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("check-only mode"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let j = env.journal();
    assert_eq!(j["method"], "helper");
    assert_eq!(j["state"], "failed");
    assert_eq!(j["helper_launched"], true);
    let mid = j["migration_id"].as_str().unwrap();
    let (live, vols, snaps, helpers) = leftovers(mid).await;
    assert_eq!(helpers.len(), 1, "one helper was launched");
    assert!(live.is_empty(), "helper still running: {live:?}");
    assert!(vols.is_empty(), "volumes left: {vols:?}");
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
    // The agent really ran the rendered script, which validated its input.
    let outputs = ssm_outputs(&helpers[0]).await;
    assert!(
        outputs
            .iter()
            .any(|o| o.contains("\"mode\":\"inspect\",\"ok\":true,\"check_only\":true")),
        "{outputs:?}"
    );
    assert_eq!(describe(ami).await, before, "the source image changed");
}

#[tokio::test]
async fn helper_from_an_instance_removes_its_root_snapshot() {
    let env = Env::new();
    let ec2 = aws_sdk_ec2::Client::new(&sdk().await);
    let run = ec2
        .run_instances()
        .image_id("ami-487d6534000000101")
        .instance_type(aws_sdk_ec2::types::InstanceType::M3Medium)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let source = run.instances()[0].instance_id().unwrap().to_string();
    let out = env.run(&["migrate", "--method", "helper", "--instance", &source]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = env.journal();
    let mid = j["migration_id"].as_str().unwrap();
    let (live, vols, snaps, _) = leftovers(mid).await;
    assert!(
        live.is_empty() && vols.is_empty() && snaps.is_empty(),
        "{live:?} {vols:?} {snaps:?}"
    );
    let state = ec2
        .describe_instances()
        .instance_ids(&source)
        .send()
        .await
        .unwrap();
    let s = state.reservations()[0].instances()[0]
        .state()
        .unwrap()
        .name()
        .unwrap()
        .as_str()
        .to_string();
    assert_eq!(s, "running", "the source instance was touched");
    ec2.terminate_instances()
        .instance_ids(&source)
        .send()
        .await
        .unwrap();
}

#[test]
fn helper_needs_the_aws_backend() {
    let env = Env::new();
    let out = env.run(&[
        "--backend",
        "local",
        "--state-dir",
        env.dir.path().to_str().unwrap(),
        "migrate",
        "--method",
        "helper",
        "--ami",
        "ami-0123456789abcdef0",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn dry_run_plans_asks_ec2_and_creates_nothing() {
    let env = Env::new();
    let ec2 = aws_sdk_ec2::Client::new(&sdk().await);
    let count = || async {
        let i = ec2
            .describe_instances()
            .send()
            .await
            .unwrap()
            .reservations()
            .len();
        let v = ec2.describe_volumes().send().await.unwrap().volumes().len();
        let s = ec2
            .describe_snapshots()
            .owner_ids("self")
            .send()
            .await
            .unwrap()
            .snapshots()
            .len();
        (i, v, s)
    };
    let before = count().await;
    let out = env.run(&[
        "migrate",
        "--dry-run",
        "--method",
        "helper",
        "--ami",
        "ami-487d6534000000101",
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["method"], "helper");
    let checks: Vec<(&str, &str)> = plan["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["api"].as_str().unwrap(), c["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [("RunInstances", "allowed"), ("CreateVolume", "allowed")]
    );
    assert!(plan["script"]
        .as_str()
        .unwrap()
        .starts_with("#!/bin/bash\n# amitool's preparation script"));
    assert_eq!(count().await, before, "a dry run created something");
    assert!(
        !env.dir.path().join("journal").exists(),
        "a dry run wrote a journal"
    );
}
