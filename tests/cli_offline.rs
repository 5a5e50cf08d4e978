//! The offline answers (built-in table), as snapshots of table and JSON output.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amitool"))
        .env_remove("AWS_REGION")
        .env("AWS_REGION", "us-east-1")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn compat_offline_instance_types() {
    let (code, table, _) = run(&[
        "compat",
        "--offline",
        "--instance-type",
        "m3.medium",
        "t2.micro",
        "m5.large",
    ]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("compat_offline_table", table);
    let (_, json, _) = run(&[
        "--output",
        "json",
        "compat",
        "--offline",
        "--instance-type",
        "m3.medium",
        "t2.micro",
        "m5.large",
    ]);
    insta::assert_snapshot!("compat_offline_json", json);
}

#[test]
fn kernels_offline() {
    let (code, table, _) = run(&["kernels", "--offline", "--region", "eu-central-1"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!("kernels_offline_table", table);
    let (_, json, _) = run(&[
        "kernels",
        "match",
        "aki-919dcaf8",
        "--from",
        "us-east-1",
        "--to",
        "eu-central-1",
        "--offline",
        "--output",
        "json",
    ]);
    insta::assert_snapshot!("kernels_match_offline_json", json);
}

#[test]
fn offline_pv_types_are_pv_families_only() {
    let (_, json, _) = run(&[
        "compat",
        "--offline",
        "--virtualization",
        "pv",
        "--region",
        "eu-central-1",
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["instance_type"].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| ["c1", "c3", "hs1", "m1", "m2", "m3", "t1", "hi1"]
                .contains(&n.split('.').next().unwrap())),
        "{names:?}"
    );
}

#[test]
fn global_flags_go_before_or_after_the_subcommand() {
    let a = run(&[
        "--output",
        "json",
        "kernels",
        "--offline",
        "--region",
        "us-west-2",
    ]);
    let b = run(&[
        "kernels",
        "--offline",
        "--region",
        "us-west-2",
        "--output",
        "json",
    ]);
    assert_eq!(a, b);
    assert_eq!(a.0, 0);
}

#[test]
fn usage_errors_exit_2_on_one_line() {
    for args in [
        vec!["compat"],
        vec!["compat", "--offline", "--instance-type", "m9"],
        vec!["compat", "--offline", "--instance-type", "m9.huge"],
        vec![
            "kernels",
            "match",
            "aki-zz",
            "--from",
            "us-east-1",
            "--to",
            "eu-west-1",
            "--offline",
        ],
        vec!["list", "--owner", "me", "--region", "us-east-1"],
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    for sub in [
        "list", "compat", "kernels", "import", "export", "inspect", "launch", "migrate",
    ] {
        assert_eq!(run(&[sub, "--help"]).0, 0, "{sub} --help");
    }
}
