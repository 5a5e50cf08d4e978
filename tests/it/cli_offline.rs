//! The offline answers (the built-in, cited tables) and the command line's
//! contract, with no LocalStack: every command here is pointed at an endpoint
//! where nothing listens, so none of them can lean on the network.

use crate::common;

use serde_json::Value;

use common::{assert_one_line_error, run, Run, NOWHERE};

/// `amitool ARGS` with the test environment and an unreachable endpoint.
fn offline(args: &[&str]) -> Run {
    run(common::amitool()
        .env("AWS_ENDPOINT_URL", NOWHERE)
        .args(args))
}

fn ok(args: &[&str]) -> Run {
    let r = offline(args);
    assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
    assert!(r.stderr.is_empty(), "{args:?}: {}", r.stderr);
    r
}

fn with_json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &["--output", "json"]].concat()
}

#[test]
fn compat_offline_instance_types() {
    let args = [
        "compat",
        "--offline",
        "--instance-type",
        "m3.medium",
        "t2.micro",
        "m5.large",
    ];
    insta::assert_snapshot!("compat_offline_table", ok(&args).stdout);
    insta::assert_snapshot!("compat_offline_json", ok(&with_json(&args)).stdout);
}

#[test]
fn kernels_offline() {
    let args = ["kernels", "--offline", "--region", "eu-central-1"];
    insta::assert_snapshot!("kernels_offline_table", ok(&args).stdout);
    insta::assert_snapshot!("kernels_offline_json", ok(&with_json(&args)).stdout);
}

#[test]
fn kernels_match_offline() {
    let args = [
        "kernels",
        "match",
        "aki-919dcaf8",
        "--from",
        "us-east-1",
        "--to",
        "eu-central-1",
        "--offline",
    ];
    insta::assert_snapshot!("kernels_match_offline_json", ok(&with_json(&args)).stdout);
    insta::assert_snapshot!("kernels_match_offline_table", ok(&args).stdout);
}

/// The PV families of the built-in table (data/compat.json).
fn pv_families() -> Vec<String> {
    let table: Value = serde_json::from_str(include_str!("../../data/compat.json")).unwrap();
    let f = &table["pv_families"];
    f["families"]
        .as_array()
        .unwrap()
        .iter()
        .chain(f["older_text_also"].as_array().unwrap())
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn type_names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["instance_type"].as_str().unwrap())
        .collect()
}

#[test]
fn offline_pv_lists_only_pv_families() {
    let families = pv_families();
    for region in [None, Some("eu-central-1"), Some("us-east-1")] {
        let mut args = vec![
            "compat",
            "--offline",
            "--virtualization",
            "pv",
            "--output",
            "json",
        ];
        args.extend(region.iter().flat_map(|r| ["--region", *r]));
        let v = ok(&args).json();
        let names = type_names(&v);
        assert!(names.contains(&"m3.medium"), "{region:?}: {names:?}");
        for t in v.as_array().unwrap() {
            let name = t["instance_type"].as_str().unwrap();
            let family = name.split('.').next().unwrap();
            assert!(
                families.iter().any(|f| f == family),
                "{region:?}: {name} is not a PV family"
            );
            assert!(
                t["supported_virtualization_types"]
                    .as_array()
                    .unwrap()
                    .contains(&"paravirtual".into()),
                "{name}"
            );
            assert_eq!(t["region"].as_str(), region, "{name}");
        }
    }
    // A region that never offered PV has none.
    // (It says why on stderr: an_empty_result_says_why.)
    let stockholm = offline(&[
        "compat",
        "--offline",
        "--virtualization",
        "pv",
        "--region",
        "eu-north-1",
        "--output",
        "json",
    ])
    .json();
    assert_eq!(stockholm, Value::Array(vec![]));
}

#[test]
fn global_flags_go_before_or_after_the_subcommand() {
    let pairs: [(&[&str], &[&str]); 3] = [
        (
            &[
                "--output",
                "json",
                "--region",
                "us-west-2",
                "kernels",
                "--offline",
            ],
            &[
                "kernels",
                "--offline",
                "--region",
                "us-west-2",
                "--output",
                "json",
            ],
        ),
        (
            &[
                "--output",
                "json",
                "compat",
                "--offline",
                "--instance-type",
                "m3.medium",
            ],
            &[
                "compat",
                "--offline",
                "--instance-type",
                "m3.medium",
                "--output",
                "json",
            ],
        ),
        (
            &[
                "--region",
                "eu-central-1",
                "compat",
                "--offline",
                "--virtualization",
                "pv",
            ],
            &[
                "compat",
                "--offline",
                "--virtualization",
                "pv",
                "--region",
                "eu-central-1",
            ],
        ),
    ];
    for (before, after) in pairs {
        let (a, b) = (ok(before), ok(after));
        assert!(!a.stdout.trim().is_empty(), "{before:?}");
        assert_eq!(a, b, "{before:?} / {after:?}");
    }
}

#[test]
fn usage_errors_exit_2() {
    // amitool's own checks: one line.
    for args in [
        &["compat"][..],
        &["compat", "--offline", "--instance-type", "m9"],
        &["compat", "--offline", "--instance-type", "M3.medium"],
        &["compat", "--offline", "--instance-type", "m9.huge"],
        &[
            "compat",
            "--offline",
            "--ami",
            "ami-nothex",
            "--instance-type",
            "m3.medium",
        ],
        &[
            "kernels",
            "match",
            "aki-zz",
            "--from",
            "us-east-1",
            "--to",
            "eu-west-1",
            "--offline",
        ],
        &[
            "kernels",
            "match",
            "aki-00000000",
            "--from",
            "us-east-1",
            "--to",
            "eu-west-1",
            "--offline",
        ],
        &["kernels", "--offline", "--region", "moon"],
        &["list", "--owner", "me", "--region", "us-east-1"],
        &["list", "--kernel", "aki-nothex!", "--region", "us-east-1"],
    ] {
        assert_one_line_error(&offline(args), 2, &format!("{args:?}"));
    }
    // What clap refuses: one line too, and the flags that make no sense
    // together (amitool's own checks).
    for args in [
        &[
            "migrate",
            "--ami",
            "ami-12345678",
            "--helper-subnet",
            "subnet-1",
        ][..],
        &["migrate", "--ami", "ami-12345678", "--state-dir", "/tmp/x"],
        &[
            "compat",
            "--virtualization",
            "pv",
            "--instance-type",
            "m3.medium",
        ],
        &[
            "migrate",
            "--resume",
            "mig-000000000000",
            "--cleanup",
            "mig-000000000000",
        ],
        &["compat", "--instance-type"],
    ] {
        assert_one_line_error(&offline(args), 2, &format!("{args:?}"));
    }
    for args in [
        &["frobnicate"][..],
        &["list", "--virtualization", "xen"],
        &["list", "--output", "yaml"],
        &[
            "compat",
            "--virtualization",
            "pv",
            "--ami",
            "ami-12345678",
            "--instance-type",
            "m3.medium",
        ],
        &["kernels", "match", "aki-919dcaf8"],
    ] {
        let r = offline(args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert_eq!(
            r.stderr.trim_end().lines().count(),
            1,
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stderr.starts_with("amitool: "), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
}

#[test]
fn help_of_every_subcommand() {
    for sub in [
        &[][..],
        &["list"],
        &["compat"],
        &["kernels"],
        &["kernels", "match"],
        &["import"],
        &["export"],
        &["inspect"],
        &["launch"],
        &["migrate"],
    ] {
        let r = ok(&[sub, &["--help"]].concat());
        let usage = [
            "Usage: amitool",
            &sub.iter().map(|s| format!(" {s}")).collect::<String>(),
        ]
        .concat();
        assert!(r.stdout.contains(&usage), "{sub:?}: {}", r.stdout);
        assert!(
            r.stdout.contains("--output"),
            "{sub:?}: global flags missing from help"
        );
    }
    assert!(ok(&["--version"]).stdout.starts_with("amitool "));
}

/// A failed write to stdout (`> /dev/full`) is an error, not a silent success.
#[test]
fn a_failed_write_to_stdout_is_exit_1() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amitool"))
        .env("AWS_ENDPOINT_URL", NOWHERE)
        .args(["kernels", "--offline", "--region", "eu-central-1"])
        .stdout(full)
        .output()
        .unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_one_line_error(&r, 1, "kernels > /dev/full");
    assert!(
        r.stderr
            .contains("cannot write the output to stdout: No space left on device"),
        "{}",
        r.stderr
    );
}

/// EC2's own words are taken: `paravirtual`, any case, and `amd64` for x86_64.
#[test]
fn ec2_words_for_virtualization_and_architecture() {
    let pv = ok(&with_json(&[
        "compat",
        "--offline",
        "--virtualization",
        "pv",
    ]))
    .stdout;
    for v in ["paravirtual", "PV", "Paravirtual"] {
        let same = ok(&with_json(&["compat", "--offline", "--virtualization", v])).stdout;
        assert_eq!(same, pv, "{v}");
    }
    let x86 = ok(&with_json(&[
        "compat",
        "--offline",
        "--virtualization",
        "hvm",
        "--arch",
        "x86_64",
    ]))
    .stdout;
    let amd64 = ok(&with_json(&[
        "compat",
        "--offline",
        "--virtualization",
        "HVM",
        "--arch",
        "amd64",
    ]))
    .stdout;
    assert_eq!(amd64, x86);
}

/// Shell completions and a manual page, from the command line's own
/// definition; global flags under their own heading in every --help.
#[test]
fn completions_man_and_global_options() {
    for shell in ["bash", "zsh", "fish"] {
        let r = ok(&["completions", shell]);
        assert!(r.stdout.contains("migrate"), "{shell}: {}", r.stdout);
        assert!(r.stdout.contains("dry-run"), "{shell}");
    }
    let man = ok(&["man"]).stdout;
    assert!(
        man.starts_with(".ie") || man.contains(".TH amitool 1"),
        "{man}"
    );
    assert!(man.contains("migrations"), "{man}");
    for sub in ["list", "migrate", "inspect", "migrations"] {
        let help = ok(&[sub, "--help"]).stdout;
        assert!(help.contains("Global options:"), "{sub}: {help}");
    }
    let bad = offline(&["completions", "tcsh"]);
    assert_eq!(bad.code, Some(2));
}

/// A --profile that does not exist is named, even with credentials in the
/// environment; a 100,000-character argument is not echoed back whole.
#[test]
fn a_missing_profile_and_a_huge_argument() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "[profile other]\nregion = us-east-1\n").unwrap();
    let r = run(common::amitool()
        .env("AWS_ENDPOINT_URL", NOWHERE)
        .env("AWS_CONFIG_FILE", &config)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("credentials"),
        )
        .args(["--profile", "nosuch", "list", "--region", "us-east-1"]));
    assert_one_line_error(&r, 2, "--profile nosuch");
    assert!(
        r.stderr.contains("profile nosuch not found in"),
        "{}",
        r.stderr
    );
    let huge = format!("ami-{}", "f".repeat(100_000));
    for args in [
        vec![
            "compat",
            "--offline",
            "--ami",
            huge.as_str(),
            "--instance-type",
            "m3.medium",
        ],
        vec!["list", "--output", huge.as_str()],
    ] {
        let r = offline(&args);
        assert_eq!(r.code, Some(2), "{}", &r.stderr[..200.min(r.stderr.len())]);
        assert!(r.stderr.len() < 3000, "{} bytes echoed", r.stderr.len());
    }
}

/// `--output text`: one record a line, tab-separated, no header, the same
/// records as JSON, every line with every column (for grep, cut, awk).
#[test]
fn text_output_is_tab_separated_records_without_a_header() {
    let args = [
        "compat",
        "--offline",
        "--virtualization",
        "pv",
        "--region",
        "us-east-1",
    ];
    let records = ok(&[&args[..], &["--output", "json"]].concat()).json();
    let text = ok(&[&args[..], &["--output", "text"]].concat()).stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), records.as_array().unwrap().len(), "{text}");
    let columns = lines[0].split('\t').count();
    assert!(columns > 2, "{text}");
    for l in &lines {
        assert_eq!(l.split('\t').count(), columns, "{l:?}");
        assert!(!l.contains("  "), "no padding: {l:?}");
    }
    let first = records[0]["instance_type"].as_str().unwrap();
    assert!(
        lines.iter().any(|l| l.split('\t').any(|c| c == first)),
        "{first} in\n{text}"
    );
    assert!(!text.contains("INSTANCE"), "no header: {text}");
}

/// An empty result says why, on one stderr line (the output stays an empty
/// table or `[]`, exit 0): a region that never offered PV, a flavor or an
/// architecture no kernel of the region has.
#[test]
fn an_empty_result_says_why() {
    for (args, why) in [
        (
            vec!["kernels", "--offline", "--region", "ap-east-1"],
            "ap-east-1 never offered PV",
        ),
        (
            vec![
                "kernels",
                "--offline",
                "--region",
                "eu-central-1",
                "--flavor",
                "hd00",
            ],
            "no hd00 kernels are published for eu-central-1",
        ),
        (
            vec![
                "kernels",
                "--offline",
                "--region",
                "eu-central-1",
                "--arch",
                "arm64",
            ],
            "no arm64 kernels are published for eu-central-1",
        ),
        (
            vec![
                "compat",
                "--offline",
                "--virtualization",
                "pv",
                "--region",
                "eu-north-1",
            ],
            "eu-north-1 never offered PV",
        ),
    ] {
        let r = offline(&[&args[..], &["--output", "json"]].concat());
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert_eq!(r.json(), Value::Array(vec![]), "{args:?}");
        assert_eq!(
            r.stderr.trim_end(),
            format!("amitool: nothing found: {why}"),
            "{args:?}"
        );
    }
    // A result that is not empty says nothing more.
    let r = ok(&["kernels", "--offline", "--region", "eu-central-1"]);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}
