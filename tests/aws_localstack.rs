//! The AWS backend against a real LocalStack (tests/run.sh starts it): the
//! binary's answers compared with what the EC2 API returns directly.

use std::process::{Command, Output};

use serde_json::Value;

fn endpoint() -> String {
    std::env::var("AMITOOL_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

/// Fail loudly, never pass silently, when LocalStack is not there.
fn require_localstack() {
    let url = endpoint();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let ok = std::net::TcpStream::connect_timeout(
        &addr.parse().expect("endpoint host:port"),
        std::time::Duration::from_secs(2),
    )
    .is_ok();
    assert!(ok, "LocalStack is not reachable at {url}: start it with `localstack/start.sh` (tests/run.sh does)");
}

fn amitool(args: &[&str]) -> Output {
    require_localstack();
    Command::new(env!("CARGO_BIN_EXE_amitool"))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint())
        .arg("--no-progress")
        .args(args)
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let out = amitool(&a);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn ec2(region: &str) -> aws_sdk_ec2::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

/// Image ids EC2 itself returns for a filter, sorted.
async fn direct_ids(region: &str, filters: Vec<(&str, &str)>, owner: Option<&str>) -> Vec<String> {
    let mut req = ec2(region).await.describe_images().include_deprecated(true);
    for (n, v) in filters {
        req = req.filters(
            aws_sdk_ec2::types::Filter::builder()
                .name(n)
                .values(v)
                .build(),
        );
    }
    if let Some(o) = owner {
        req = req.owners(o);
    }
    let out = req.send().await.unwrap();
    let mut ids: Vec<String> = out
        .images()
        .iter()
        .map(|i| i.image_id().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

const PV_REGIONS: [&str; 9] = [
    "ap-northeast-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "eu-central-1",
    "eu-west-1",
    "sa-east-1",
    "us-east-1",
    "us-west-1",
    "us-west-2",
];

#[tokio::test]
async fn list_pv_returns_exactly_the_paravirtual_images() {
    for region in ["us-east-1", "eu-central-1"] {
        let got = json(&["list", "--virtualization", "pv", "--region", region]);
        assert!(got
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["virtualization_type"] == "paravirtual" && i["region"] == region));
        assert_eq!(
            ids(&got),
            direct_ids(region, vec![("virtualization-type", "paravirtual")], None).await,
            "{region}"
        );
    }
}

#[tokio::test]
async fn list_pv_regions_covers_nine_regions_sorted() {
    let got = json(&["list", "--virtualization", "pv", "--pv-regions"]);
    let rows = got.as_array().unwrap();
    let regions: std::collections::BTreeSet<&str> =
        rows.iter().map(|i| i["region"].as_str().unwrap()).collect();
    assert_eq!(regions.into_iter().collect::<Vec<_>>(), PV_REGIONS);
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|i| {
            (
                i["region"].as_str().unwrap().into(),
                i["creation_date"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let mut total = 0;
    for r in PV_REGIONS {
        total += direct_ids(r, vec![("virtualization-type", "paravirtual")], None)
            .await
            .len();
    }
    assert_eq!(rows.len(), total);
}

#[tokio::test]
async fn json_objects_have_exactly_the_contract_keys() {
    let got = json(&["list", "--region", "eu-west-1"]);
    let mut want = vec![
        "architecture",
        "boot_mode",
        "creation_date",
        "ena_support",
        "image_id",
        "image_type",
        "kernel_id",
        "name",
        "owner_id",
        "region",
        "root_device_name",
        "root_device_type",
        "sriov_net_support",
        "state",
        "virtualization_type",
    ];
    want.sort();
    for i in got.as_array().unwrap() {
        let mut keys: Vec<&str> = i.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, want);
    }
}

#[tokio::test]
async fn filters_agree_with_ec2() {
    let r = "us-west-2";
    let cases: Vec<(Vec<&str>, Vec<(&str, &str)>, Option<&str>)> = vec![
        (vec!["--owner", "self"], vec![], Some("self")),
        (vec!["--arch", "i386"], vec![("architecture", "i386")], None),
        (vec!["--name", "ubuntu*"], vec![("name", "ubuntu*")], None),
        (
            vec!["--image-type", "kernel"],
            vec![("image-type", "kernel")],
            None,
        ),
        (
            vec!["--kernel", "aki-fc8f11cc"],
            vec![("kernel-id", "aki-fc8f11cc")],
            None,
        ),
    ];
    for (flags, filters, owner) in cases {
        let mut args = vec!["list", "--region", r];
        args.extend(flags.iter());
        let got = json(&args);
        let want = direct_ids(r, filters, owner).await;
        assert!(!want.is_empty(), "{flags:?}: the seed has no such image");
        assert_eq!(ids(&got), want, "{flags:?}");
    }
}

#[tokio::test]
async fn seeding_is_per_region() {
    let us = json(&[
        "list",
        "--virtualization",
        "pv",
        "--region",
        "us-east-1",
        "--owner",
        "self",
    ]);
    let eu = ids(&json(&[
        "list",
        "--virtualization",
        "pv",
        "--region",
        "eu-central-1",
        "--owner",
        "self",
    ]));
    let us = ids(&us);
    assert!(!us.is_empty());
    assert!(us.iter().all(|i| !eu.contains(i)));
}

#[test]
fn compat_in_frankfurt() {
    let pv = json(&[
        "compat",
        "--virtualization",
        "pv",
        "--region",
        "eu-central-1",
    ]);
    assert_eq!(pv[0]["instance_type"], "m3.medium");
    let hvm = json(&[
        "compat",
        "--virtualization",
        "hvm",
        "--region",
        "eu-central-1",
    ]);
    assert!(
        hvm[0]["instance_type"].as_str().unwrap().starts_with("t2."),
        "{}",
        hvm[0]
    );
    assert!(hvm
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["supported_virtualization_types"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "hvm")));
}

#[test]
fn compat_instance_types_and_verdicts() {
    let t = json(&[
        "compat",
        "--instance-type",
        "m3.medium",
        "t2.micro",
        "m5.large",
    ]);
    assert_eq!(
        t[0]["supported_virtualization_types"],
        serde_json::json!(["hvm", "paravirtual"])
    );
    assert_eq!(
        t[1]["supported_virtualization_types"],
        serde_json::json!(["hvm"])
    );
    assert_eq!(t[2]["hypervisor"], "nitro");
    assert_eq!(t[2]["ena_support"], "required");
    assert_eq!(t[2]["nvme_support"], "required");

    let pv = json(&[
        "list",
        "--virtualization",
        "pv",
        "--region",
        "us-east-1",
        "--owner",
        "self",
        "--image-type",
        "machine",
    ]);
    let ami = pv
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["root_device_type"] == "ebs")
        .unwrap()["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ok = amitool(&[
        "compat",
        "--ami",
        &ami,
        "--instance-type",
        "m3.medium",
        "--output",
        "json",
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let no = amitool(&[
        "compat",
        "--ami",
        &ami,
        "--instance-type",
        "m5.large",
        "--output",
        "json",
    ]);
    assert_eq!(no.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&no.stdout).unwrap();
    let kinds: Vec<&str> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().split(':').next().unwrap())
        .collect();
    assert_eq!(kinds, ["virtualization", "ena", "nvme"]);
}

#[tokio::test]
async fn kernels_live_agree_with_ec2_and_offline() {
    let got = json(&["kernels", "--region", "eu-central-1"]);
    let want = direct_ids(
        "eu-central-1",
        vec![("image-type", "kernel")],
        Some("amazon"),
    )
    .await;
    let mut k: Vec<String> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kernel_id"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    assert_eq!(k, want);
    let table: Value = serde_json::from_str(include_str!("../data/kernels.json")).unwrap();
    for kernel in table["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["region"] == "us-east-1")
    {
        let id = kernel["kernel_id"].as_str().unwrap();
        let args = [
            "kernels",
            "match",
            id,
            "--from",
            "us-east-1",
            "--to",
            "eu-central-1",
        ];
        let live = amitool(&[&args[..], &["--output", "json"]].concat());
        let offline = amitool(&[&args[..], &["--offline", "--output", "json"]].concat());
        assert_eq!(live.status.code(), offline.status.code(), "{id}");
        if live.status.success() {
            let (l, o): (Value, Value) = (
                serde_json::from_slice(&live.stdout).unwrap(),
                serde_json::from_slice(&offline.stdout).unwrap(),
            );
            assert_eq!(l["match"], o["match"], "{id}");
            assert_eq!(
                (l["source"].as_str(), o["source"].as_str()),
                (Some("live"), Some("offline"))
            );
        }
    }
}

#[test]
fn bad_input_is_one_line_with_the_right_exit_code() {
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["list", "--region", "xx-fake-1"], 2),
        (vec!["list", "--region", "moon"], 2),
        (
            vec![
                "compat",
                "--ami",
                "ami-nothex",
                "--instance-type",
                "m3.medium",
            ],
            2,
        ),
        (
            vec![
                "kernels",
                "match",
                "aki-123",
                "--from",
                "us-east-1",
                "--to",
                "eu-west-1",
            ],
            2,
        ),
        (vec!["compat", "--instance-type", "m9.huge"], 2),
        (
            vec![
                "compat",
                "--ami",
                "ami-0123456789abcdef0",
                "--instance-type",
                "m3.medium",
            ],
            2,
        ),
        (vec!["list", "--endpoint-url", "http://127.0.0.1:9"], 1),
    ];
    for (args, code) in cases {
        let out = amitool(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn missing_credentials_is_one_line() {
    require_localstack();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_amitool"))
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "--no-progress",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &endpoint(),
            "list",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("credentials"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
