//! `migrate --method helper` against LocalStack, end to end with real bytes.
//! LocalStack's SSM runs nothing, so its stand-in agent
//! (localstack/hooks/30_amitool_ssm.py) runs the rendered preparation script
//! itself, unchanged, on the instance's attached volumes given as files
//! (localstack/hooks/25_amitool_volumes.py gives EBS volumes and snapshots
//! their data). What this proves: the orchestration (helper from the SSM
//! parameter, volumes in its zone, attachments, SendCommand and polling
//! through InvocationDoesNotExist, detach, snapshot, RegisterImage), that the
//! script's output boots, crash safety and that everything is removed again
//! with the source untouched. What only the loop-device tests
//! (tests/it/prepare_script.rs) prove: the script's guard on real block devices.

use aws_sdk_ec2::types::Filter;
use serde_json::Value;

use crate::common;

/// The instance profile LocalStack's stand-in agent hook seeds
/// (localstack/hooks/30_amitool_ssm.py): amitool launches no helper without one.
const HELPER_PROFILE: &str = "amitool-helper-ssm";

/// `migrate --method helper --helper-profile PROFILE ARGS`.
fn helper_migrate<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [
        &[
            "migrate",
            "--method",
            "helper",
            "--helper-profile",
            HELPER_PROFILE,
        ][..],
        args,
    ]
    .concat()
}

/// The tests of this file count and create EC2 resources: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One test's own directories, and the turn of the tests of this file.
struct Env {
    m: common::Migrations,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Env {
    type Target = common::Migrations;
    fn deref(&self) -> &common::Migrations {
        &self.m
    }
}

impl Env {
    fn new() -> Self {
        let m = common::Migrations::new();
        Env {
            m,
            _serial: SERIAL.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The journal of this test's only migration.
    fn journal(&self) -> Value {
        let mut saved = common::saved_journals(&self.path("journal"));
        assert_eq!(saved.len(), 1, "one journal: {saved:?}");
        saved.remove(0)
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

async fn ec2() -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk().await)
}

/// The image's root snapshot.
async fn root_snapshot(ami: &str) -> String {
    let out = ec2()
        .await
        .describe_images()
        .image_ids(ami)
        .send()
        .await
        .unwrap();
    out.images()[0].block_device_mappings()[0]
        .ebs()
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string()
}

/// Images registered by the migration.
async fn registered(mid: &str) -> Vec<String> {
    common::images_tagged("amitool:migration", mid).await
}

/// After a finished migration: no live helper, no volume, and only the
/// result's snapshot carries the migration's tag.
async fn only_the_result_is_left(mid: &str, hvm: &str, what: &str) {
    let (live, vols, snaps, _) = leftovers(mid).await;
    assert!(live.is_empty(), "{what}: helper still running: {live:?}");
    assert!(vols.is_empty(), "{what}: volumes left: {vols:?}");
    assert_eq!(snaps, vec![root_snapshot(hvm).await], "{what}: snapshots");
    assert_eq!(
        registered(mid).await,
        vec![hvm.to_string()],
        "{what}: images"
    );
}

/// The registered image's disk, read back through the EBS direct API.
fn export(env: &Env, ami: &str, file: &str) -> std::path::PathBuf {
    let path = env.dir.path().join(file);
    let out = env.run(&["export", ami, path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The fixture's filesystem at 1 MiB of the HVM disk: every file the same
/// but those the migration lists as changed, which hold their new lines,
/// and the filesystem clean.
fn holds_the_fixture_filesystem_at_1_mib(
    disk: &std::path::Path,
    name: &str,
    changes: &serde_json::Value,
) {
    let cat = |target: &str, path: &str| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", &format!("cat {path}"), target])
            .output()
            .unwrap();
        out.stdout
    };
    let hvm = format!("{}?offset=1048576", disk.display());
    let src = common::fixture(name).display().to_string();
    let changes = changes.as_array().expect("changes");
    assert!(
        !changes.is_empty(),
        "a PV guest's boot configuration needs changes for HVM"
    );
    let changed: std::collections::BTreeSet<&str> = changes
        .iter()
        .map(|c| c["file"].as_str().unwrap())
        .collect();
    for c in changes {
        let text = String::from_utf8(cat(&hvm, c["file"].as_str().unwrap())).unwrap();
        assert!(
            text.lines().any(|l| l == c["after"].as_str().unwrap()),
            "{c}"
        );
    }
    for path in [
        "/amitool-marker",
        "/etc/hostname",
        "/boot/grub/menu.lst",
        "/etc/fstab",
    ] {
        if !changed.contains(path) {
            assert_eq!(cat(&hvm, path), cat(&src, path), "{path} changed");
        }
    }
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn", &hvm])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let head = std::fs::read(disk).unwrap();
    assert_eq!(&head[510..512], &[0x55, 0xaa], "no MBR");
}

#[tokio::test]
async fn helper_migrates_a_pv_ami_that_then_boots() {
    let env = Env::new();
    let ami = env.import("multi-default1");
    ec2()
        .await
        .create_tags()
        .resources(&ami)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("Team")
                .value("ops")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let before = describe(&ami).await;
    let m = env.json(&helper_migrate(&["--ami", &ami]));
    let hvm = m["image_id"].as_str().unwrap().to_string();
    let mid = m["migration_id"].as_str().unwrap().to_string();
    let steps: Vec<&str> = m["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "snapshot",
            "inspect",
            "plan",
            "boot-config",
            "helper",
            "volumes",
            "copy",
            "snapshot copy",
            "snapshot target",
            "register",
            "verify",
            "cleanup"
        ]
    );

    let out = ec2()
        .await
        .describe_images()
        .image_ids(&hvm)
        .send()
        .await
        .unwrap();
    let img = &out.images()[0];
    use aws_sdk_ec2::types::{ArchitectureValues, BootModeValues, VirtualizationType};
    assert_eq!(img.virtualization_type(), Some(&VirtualizationType::Hvm));
    assert_eq!(img.architecture(), Some(&ArchitectureValues::X8664));
    assert_eq!(img.root_device_name(), Some("/dev/xvda"));
    assert_eq!(img.kernel_id(), None);
    assert_eq!(img.boot_mode(), Some(&BootModeValues::LegacyBios));
    // The fixture's kernel has the ena module.
    assert_eq!(img.ena_support(), Some(true));
    let bdm = img.block_device_mappings();
    assert_eq!(bdm.len(), 1);
    assert_eq!(bdm[0].device_name(), Some("/dev/xvda"));
    assert_eq!(
        bdm[0].ebs().unwrap().volume_size(),
        Some(1),
        "the 64 MiB filesystem at 1 MiB fits in 1 GiB, as the direct method sizes it"
    );
    assert_eq!(
        bdm[0].ebs().unwrap().volume_type().map(|t| t.as_str()),
        Some("gp2"),
        "the source's volume type"
    );
    let tags: std::collections::BTreeMap<_, _> = img
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(tags.get("Team"), Some(&"ops"), "source tags copied");
    assert_eq!(tags.get("amitool:migration"), Some(&mid.as_str()));
    assert_eq!(tags.get("amitool:source-image"), Some(&ami.as_str()));
    assert!(img
        .description()
        .unwrap()
        .starts_with("imported by amitool"));

    assert_eq!(describe(&ami).await, before, "the source image changed");
    only_the_result_is_left(&mid, &hvm, "after the migration").await;
    let j = env.journal();
    assert_eq!(
        (j["state"].as_str(), j["helper_launched"].as_bool()),
        (Some("done"), Some(true))
    );

    // The agent ran the script for real: one convert, no inspect (amitool
    // read the source snapshot where it lies before launching the helper).
    let helper = leftovers(&mid).await.3;
    let outputs = ssm_outputs(&helper[0]).await;
    assert!(
        outputs
            .iter()
            .any(|o| o.contains("\"mode\":\"convert\",\"ok\":true")),
        "{outputs:?}"
    );
    assert!(
        !outputs.iter().any(|o| o.contains("\"mode\":\"inspect\"")),
        "{outputs:?}"
    );

    let disk = export(&env, &hvm, "helper.img");
    holds_the_fixture_filesystem_at_1_mib(&disk, "multi-default1", &m["changes"]);
    common::boots_under_qemu(
        &env.dir.path().join("boot-state"),
        &disk,
        "AMITOOL-ROOT-OK multi-default1",
    );
}

#[tokio::test]
async fn helper_migrates_a_pv_instance_and_removes_its_root_snapshot() {
    let env = Env::new();
    let ami = env.import("menulst-noroot");
    let ec2 = ec2().await;
    let run = ec2
        .run_instances()
        .image_id(&ami)
        .instance_type(aws_sdk_ec2::types::InstanceType::M3Medium)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let source = run.instances()[0].instance_id().unwrap().to_string();
    let before = format!(
        "{:?}",
        ec2.describe_instances()
            .instance_ids(&source)
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .block_device_mappings()
    );
    let m = env.json(&helper_migrate(&[
        "--instance",
        &source,
        "--volume-type",
        "gp3",
    ]));
    let hvm = m["image_id"].as_str().unwrap().to_string();
    let mid = m["migration_id"].as_str().unwrap().to_string();
    assert_eq!(m["source_image_id"], ami);
    only_the_result_is_left(&mid, &hvm, "from an instance").await;
    let state = ec2
        .describe_instances()
        .instance_ids(&source)
        .send()
        .await
        .unwrap();
    let inst = &state.reservations()[0].instances()[0];
    assert_eq!(
        inst.state().unwrap().name().unwrap().as_str(),
        "running",
        "the source instance was touched"
    );
    assert_eq!(format!("{:?}", inst.block_device_mappings()), before);
    // --volume-type: the target volume and the new image's root are gp3.
    let out = ec2.describe_images().image_ids(&hvm).send().await.unwrap();
    let ebs = out.images()[0].block_device_mappings()[0].ebs().unwrap();
    assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
    // The instance's root volume was made from the image's snapshot: its
    // snapshot carried the fixture's filesystem into the new image.
    let disk = export(&env, &hvm, "from-instance.img");
    holds_the_fixture_filesystem_at_1_mib(&disk, "menulst-noroot", &m["changes"]);
    ec2.terminate_instances()
        .instance_ids(&source)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_source_no_method_can_migrate_is_refused_before_the_helper_starts() {
    let env = Env::new();
    // Seeded by the LocalStack hook: a PV AMI whose snapshot holds no bytes.
    let ami = "ami-487d6534000000101";
    let before = describe(ami).await;
    let out = env.run(&helper_migrate(&["--ami", ami]));
    let err = String::from_utf8_lossy(&out.stderr);
    // Read where it lies before anything is launched: LocalStack's EBS does
    // not know this seeded snapshot (EC2 alone holds it), so the read fails
    // (exit 1); a readable snapshot without a filesystem is refused (exit 2).
    assert!(matches!(out.status.code(), Some(1 | 2)), "{err}");
    assert!(
        err.contains("no ext2/3/4 filesystem") || err.contains("ListSnapshotBlocks"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let j = env.journal();
    assert_eq!(j["method"], "helper");
    assert_eq!(j["state"], "failed");
    let mid = j["migration_id"].as_str().unwrap();
    let (live, vols, snaps, helpers) = leftovers(mid).await;
    assert!(helpers.is_empty(), "a helper was launched: {helpers:?}");
    assert!(live.is_empty(), "helper still running: {live:?}");
    assert!(vols.is_empty(), "volumes left: {vols:?}");
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
    assert!(registered(mid).await.is_empty());
    assert_eq!(describe(ami).await, before, "the source image changed");
}

#[tokio::test]
async fn killed_after_any_step_resume_finishes_and_nothing_is_orphaned() {
    let env = Env::new();
    let ami = env.import("menulst-root-hd0");
    // The steps of the helper's own resources (the fake host's matrix in
    // src/migrate/matrix.rs kills the pipeline's common steps).
    for step in [
        "helper",
        "volumes",
        "copy",
        "snapshot copy",
        "snapshot target",
        "register",
    ] {
        let name = format!("crash-{}-{}", step.replace(' ', "-"), env.unique());
        let mid = env.kill_after_step(&helper_migrate(&["--ami", &ami]), &name, step);
        let m = env.json(&["migrate", "--method", "helper", "--resume", &mid]);
        let hvm = m["image_id"].as_str().unwrap().to_string();
        only_the_result_is_left(&mid, &hvm, &format!("killed after {step}")).await;
        assert_eq!(
            leftovers(&mid).await.3.len(),
            1,
            "killed after {step}: one helper in all"
        );
    }
    // And --cleanup instead of --resume removes everything.
    let name = format!("crash-cleanup-{}", env.unique());
    let mid = env.kill_after_step(&helper_migrate(&["--ami", &ami]), &name, "copy");
    let out = env.run(&["migrate", "--cleanup", &mid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (live, vols, snaps, _) = leftovers(&mid).await;
    assert!(
        live.is_empty() && vols.is_empty() && snaps.is_empty(),
        "{live:?} {vols:?} {snaps:?}"
    );
    assert!(registered(&mid).await.is_empty());
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
        "--helper-profile",
        HELPER_PROFILE,
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
        "--helper-profile",
        HELPER_PROFILE,
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

#[tokio::test]
async fn ctrl_c_cleans_up_what_the_run_made_and_resume_finishes() {
    let env = Env::new();
    let ami = env.import("ext3-uuid");
    let name = format!("ctrl-c-{}", env.unique());
    let (code, said) =
        env.ctrl_c_after_step(&helper_migrate(&["--ami", &ami, "--name", &name]), "copy");
    assert_eq!(code, Some(130), "{said:?}");
    let last = said.last().unwrap();
    assert!(said[0].contains("interrupted: cleaning up"), "{said:?}");
    let j = env.journal();
    let mid = j["migration_id"].as_str().unwrap().to_string();
    assert!(
        last.contains(&format!(
            "migration {mid} stopped: interrupted (Ctrl-C); removed i-"
        )) && last.contains(&format!("--resume {mid}")),
        "{last}"
    );
    assert_eq!(j["state"], "interrupted");
    let (live, vols, snaps, _) = leftovers(&mid).await;
    assert!(live.is_empty(), "helper still running: {live:?}");
    assert!(vols.is_empty(), "volumes left: {vols:?}");
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
    let m = env.json(&["migrate", "--resume", &mid]);
    let hvm = m["image_id"].as_str().unwrap().to_string();
    only_the_result_is_left(&mid, &hvm, "resumed after Ctrl-C").await;
}

#[tokio::test]
async fn register_failing_keeps_the_converted_snapshot_for_resume() {
    let env = Env::new();
    let ami = env.import("menulst-noroot");
    let taken = format!("taken-{}", env.unique());
    // The name is taken while the helper converts (a name already in use is
    // refused before anything is launched): RegisterImage fails after the
    // target was converted and snapshotted.
    let other = env.import("ext3-uuid");
    let go = env.path("go");
    let mut child = env
        .hooked(&helper_migrate(&["--ami", &ami, "--name", &taken]))
        .env("AMITOOL_TEST_PAUSE_IN", "register")
        .env("AMITOOL_TEST_CONTINUE_FILE", &go)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    loop {
        let line = lines.next().expect("stderr ended before register").unwrap();
        if line.contains("paused in register") {
            break;
        }
    }
    let first = env.json(&["migrate", "--ami", &other, "--name", &taken]);
    std::fs::write(&go, b"").unwrap();
    let said: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let status = child.wait().unwrap();
    let out = std::process::Output {
        status,
        stdout: vec![],
        stderr: said.join("\n").into_bytes(),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    // Stopped with the converted snapshot kept: resumable (exit 3).
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let j = env.journals("source_id", &ami);
    let mid = j[0]["migration_id"].as_str().unwrap().to_string();
    let kept = j[0]["upload"]["snapshot_id"].as_str().unwrap().to_string();
    assert!(
        err.contains("RegisterImage")
            && err.contains("removed i-")
            && err.contains(&format!(
                "kept the upload snapshot {kept} of the converted disk"
            ))
            && err.contains(&format!("--resume {mid}")),
        "{err}"
    );
    // Cleanup ran: no helper, no volume; the converted snapshot is kept.
    let (live, vols, snaps, _) = leftovers(&mid).await;
    assert!(live.is_empty() && vols.is_empty(), "{live:?} {vols:?}");
    assert_eq!(snaps, vec![kept.clone()]);
    ec2()
        .await
        .deregister_image()
        .image_id(first["image_id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let m = env.json(&["migrate", "--resume", &mid]);
    let hvm = m["image_id"].as_str().unwrap().to_string();
    assert_eq!(
        root_snapshot(&hvm).await,
        kept,
        "the kept snapshot was registered"
    );
    only_the_result_is_left(&mid, &hvm, "resumed after RegisterImage failed").await;
}

/// AMIgen6's layout (a separate /boot, the root on an LVM2 volume) by both
/// methods on LocalStack: the helper copies every partition in its slot, and
/// the two results, read back through the EBS direct API, are byte for byte
/// the local backend's migration of the same image.
#[tokio::test]
async fn both_methods_migrate_a_separate_boot_and_lvm_root_to_the_local_bytes() {
    let env = Env::new();
    let name = "amigen6-lvm";
    let file = common::fixture(name);
    // PV-GRUB hd00 in us-east-1 (data/kernels.json): a partitioned disk.
    let img = env.json(&[
        "import",
        file.to_str().unwrap(),
        "--virtualization",
        "pv",
        "--kernel",
        "aki-499ccb20",
        "--name",
        &format!("{name}-{}", env.unique()),
    ]);
    let ami = img["image_id"].as_str().unwrap().to_string();
    let local = {
        let state = tempfile::tempdir().unwrap();
        common::local_migration(state.path(), name)
    };
    for method in ["helper", "direct"] {
        let profile: &[&str] = if method == "helper" {
            &["--helper-profile", HELPER_PROFILE]
        } else {
            &[]
        };
        let named = format!("{name}-{method}-{}", env.unique());
        let m = env.json(
            &[
                &[
                    "migrate", "--method", method, "--ami", &ami, "--name", &named,
                ][..],
                profile,
            ]
            .concat(),
        );
        let hvm = m["image_id"].as_str().unwrap().to_string();
        let exported = export(&env, &hvm, &format!("{method}.img"));
        let disk = std::fs::read(&exported).unwrap();
        assert!(disk.len() >= local.len(), "{method}: {} bytes", disk.len());
        assert_eq!(
            disk[..local.len()]
                .iter()
                .zip(&local)
                .position(|(a, b)| a != b),
            None,
            "{method}: differs from the local backend's disk"
        );
        assert!(
            disk[local.len()..].iter().all(|&b| b == 0),
            "{method}: bytes past the local disk's end"
        );
        // Read back with the plain EBS API, it is the local backend's disk,
        // which local_backend's good fixtures boot.
    }
}

/// A helper to launch needs an instance profile (its SSM agent cannot
/// register without one), and EC2 must accept the launch as asked: both are
/// refused before anything is made, on one line, the profile or subnet named.
#[tokio::test]
async fn a_helper_that_could_not_register_is_refused_before_anything_is_made() {
    let env = Env::new();
    let ami = env.import("menulst-noroot");
    for (extra, says) in [
        (vec![], "needs --helper-profile"),
        (
            vec!["--helper-profile", "no-such-profile"],
            "EC2 would not launch the helper",
        ),
        (
            vec![
                "--helper-profile",
                HELPER_PROFILE,
                "--helper-subnet",
                "subnet-0123456789abcdef0",
            ],
            "no such subnet subnet-0123456789abcdef0",
        ),
    ] {
        let args = [
            &["migrate", "--method", "helper", "--ami", &ami][..],
            &extra,
        ]
        .concat();
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(says), "{extra:?}: {err}");
    }
    let journals = env.journals("source_id", &ami);
    assert_eq!(journals.len(), 3);
    for j in journals {
        let mid = j["migration_id"].as_str().unwrap().to_string();
        let (live, vols, snaps, helpers) = leftovers(&mid).await;
        assert!(
            live.is_empty() && vols.is_empty() && snaps.is_empty() && helpers.is_empty(),
            "{mid}: {live:?} {vols:?} {snaps:?} {helpers:?}"
        );
    }
}
