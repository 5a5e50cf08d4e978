//! Migration on AWS without a helper instance, end to end on LocalStack with
//! real bytes: import a PV fixture, migrate it through the EBS direct APIs,
//! read the result back both through amitool and through the plain API, and
//! compare it byte for byte with the local backend's migration (which the
//! local tests boot).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use common::fixture;

/// One test's own journal and work directories.
type Env = common::Migrations;

async fn ec2() -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk().await)
}

async fn sdk() -> aws_config::SdkConfig {
    common::sdk_config("us-east-1").await
}

/// Snapshots tagged with the migration's id.
async fn tagged_snapshots(migration_id: &str) -> Vec<String> {
    common::snapshots_tagged("amitool:migration", migration_id).await
}

async fn root_snapshot(image_id: &str) -> String {
    let out = ec2()
        .await
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .unwrap();
    let img = &out.images()[0];
    img.block_device_mappings()[0]
        .ebs()
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string()
}

/// The blocks of a snapshot read with the plain EBS API, as a disk image.
async fn read_snapshot(snapshot_id: &str, len: usize) -> (Vec<u8>, usize) {
    let ebs = aws_sdk_ebs::Client::new(&sdk().await);
    let list = ebs
        .list_snapshot_blocks()
        .snapshot_id(snapshot_id)
        .send()
        .await
        .unwrap();
    let mut disk = vec![0u8; len];
    let blocks = list.blocks();
    for b in blocks {
        let idx = b.block_index().unwrap() as usize;
        let got = ebs
            .get_snapshot_block()
            .snapshot_id(snapshot_id)
            .block_index(idx as i32)
            .block_token(b.block_token().unwrap())
            .send()
            .await
            .unwrap();
        let data = got.block_data.collect().await.unwrap().into_bytes();
        let start = idx * 524288;
        if start < len {
            let end = (start + data.len()).min(len);
            disk[start..end].copy_from_slice(&data[..end - start]);
        }
    }
    (disk, blocks.len())
}

/// The local backend's migration of the same fixture, as bytes.
fn local_migration(env: &Env, name: &str) -> Vec<u8> {
    common::local_migration(&env.path("local-state"), name)
}

#[tokio::test]
async fn migrate_direct_end_to_end_with_real_bytes() {
    let env = Env::new();
    let name = "menulst-root-hd0";
    let ami = env.import(name);
    let src_snap = root_snapshot(&ami).await;
    let m = env.json(&["migrate", "--ami", &ami]);
    let mid = m["migration_id"].as_str().unwrap().to_string();
    let hvm = m["image_id"].as_str().unwrap().to_string();

    // The registered image is what AWS needs for HVM.
    let out = ec2()
        .await
        .describe_images()
        .image_ids(&hvm)
        .send()
        .await
        .unwrap();
    let img = &out.images()[0];
    assert_eq!(img.virtualization_type().unwrap().as_str(), "hvm");
    assert_eq!(img.architecture().unwrap().as_str(), "x86_64");
    assert_eq!(img.root_device_name(), Some("/dev/xvda"));
    assert_eq!(img.kernel_id(), None);
    assert_eq!(img.ena_support(), Some(true));
    assert_eq!(img.boot_mode().unwrap().as_str(), "legacy-bios");
    assert!(img
        .tags()
        .iter()
        .any(|t| t.key() == Some("amitool:migration") && t.value() == Some(mid.as_str())));
    let new_snap = root_snapshot(&hvm).await;

    // The source is unchanged: same snapshot, same bytes.
    assert_eq!(root_snapshot(&ami).await, src_snap);
    let src = env.path("src.raw");
    assert!(env
        .run(&["export", &ami, src.to_str().unwrap()])
        .status
        .success());
    let fx = std::fs::read(fixture(name)).unwrap();
    let src_bytes = std::fs::read(&src).unwrap();
    assert_eq!(&src_bytes[..fx.len()], &fx[..]);

    // Read independently of amitool: equal to the local backend's migration.
    let local = local_migration(&env, name);
    let (remote, blocks_written) = read_snapshot(&new_snap, local.len()).await;
    assert!(
        remote == local,
        "the EBS snapshot differs from the local migration"
    );
    let data_blocks = local
        .chunks(524288)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count();
    assert_eq!(blocks_written, data_blocks, "only data blocks are written");

    // Nothing tagged by the migration but the result's snapshot.
    assert_eq!(tagged_snapshots(&mid).await, vec![new_snap]);

    // It boots: it is the local migration's disk, which local_backend's
    // good fixtures boot.
}

/// Blocks the journal records as written: its ranges `[first, last]` summed.
fn journaled_blocks(j: &Value) -> u64 {
    j["upload"]["blocks"].as_array().map_or(0, |rs| {
        rs.iter()
            .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap() + 1)
            .sum()
    })
}

#[tokio::test]
async fn kill_mid_upload_then_resume_finishes_and_cleans() {
    let env = Env::new();
    let ami = env.import("ext3-uuid");
    let mut child = env
        .hooked(&["migrate", "--ami", &ami, "--output", "json"])
        .env("AMITOOL_TEST_PAUSE_AFTER_BLOCKS", "10")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the journal to record the paused upload.
    let journal_dir = env.path("journal");
    let start = Instant::now();
    let journal = loop {
        let found = common::saved_journals(&journal_dir)
            .into_iter()
            .find(|j| journaled_blocks(j) >= 10);
        if let Some(j) = found {
            break j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the upload never reached 10 blocks"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mid = journal["migration_id"].as_str().unwrap().to_string();
    assert_eq!(journal["upload"]["completed"], false);

    let done = journaled_blocks(&journal)
        + journal["upload"]["zero"].as_array().map_or(0, |z| {
            z.iter()
                .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap() + 1)
                .sum()
        });
    let m = env.json(&["migrate", "--resume", &mid]);
    assert_eq!(m["migration_id"], mid.as_str());
    // The resume streamed only what was not done: no completed range again.
    let upload = m["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "upload")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        upload.contains(&format!(", {done} done before (resumed)")),
        "{upload}"
    );
    let streamed: u64 = upload
        .split(": ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let written = m["transfer"]["blocks_written"].as_u64().unwrap();
    assert!(
        streamed > 0 && streamed + done >= written,
        "{upload}: {written} written in all"
    );
    let hvm = m["image_id"].as_str().unwrap().to_string();
    let new_snap = root_snapshot(&hvm).await;
    assert_eq!(
        new_snap,
        journal["upload"]["snapshot_id"].as_str().unwrap(),
        "resume continued the same snapshot"
    );
    assert_eq!(tagged_snapshots(&mid).await, vec![new_snap.clone()]);
    let local = local_migration(&env, "ext3-uuid");
    let (remote, _) = read_snapshot(&new_snap, local.len()).await;
    assert!(
        remote == local,
        "the resumed snapshot differs from the local migration in blocks {:?} (journaled before the kill: {})",
        differing_blocks(&remote, &local),
        journal["upload"]
    );

    // A second resume is harmless: the same image.
    let again = env.json(&["migrate", "--resume", &mid]);
    assert_eq!(again["image_id"], hvm.as_str());
}

#[tokio::test]
async fn cleanup_removes_an_abandoned_upload() {
    let env = Env::new();
    let ami = env.import("no-ena");
    let mut child = env
        .hooked(&["migrate", "--ami", &ami])
        .env("AMITOOL_TEST_PAUSE_AFTER_BLOCKS", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mid = loop {
        let found = common::saved_journals(&env.path("journal"))
            .into_iter()
            .find(|j| journaled_blocks(j) >= 4)
            .map(|j| j["migration_id"].as_str().unwrap().to_string());
        if let Some(m) = found {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let out = env.json(&["migrate", "--cleanup", &mid]);
    assert_eq!(out["removed"].as_array().unwrap().len(), 1, "{out}");
    assert!(tagged_snapshots(&mid).await.is_empty());
    let resumed = env.run(&["migrate", "--resume", &mid]);
    assert_eq!(resumed.status.code(), Some(2));
}

#[test]
fn bad_sources_are_one_line_errors_and_leave_nothing() {
    let env = Env::new();
    let not_disk = env.path("random.img");
    std::fs::write(&not_disk, vec![7u8; 4 << 20]).unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        // Seeded by the LocalStack hook: instance-store and HVM images of us-east-1.
        (
            vec![
                "migrate".into(),
                "--ami".into(),
                "ami-487d6534000000204".into(),
            ],
            2,
            "instance-store",
        ),
        (
            vec![
                "migrate".into(),
                "--ami".into(),
                "ami-487d6534000000401".into(),
            ],
            2,
            "hvm",
        ),
        (
            vec![
                "migrate".into(),
                "--ami".into(),
                "ami-0123456789abcdef0".into(),
            ],
            2,
            "no such image",
        ),
        (
            vec![
                "migrate".into(),
                "--ami".into(),
                "ami-487d6534000000101".into(),
                "--region".into(),
                "eu-west-1".into(),
            ],
            2,
            "no such image",
        ),
        // A seeded PV image whose snapshot the EBS API has no blocks for.
        (
            vec![
                "migrate".into(),
                "--ami".into(),
                "ami-487d6534000000101".into(),
            ],
            1,
            "snapshot",
        ),
        (
            vec![
                "import".into(),
                not_disk.display().to_string(),
                "--virtualization".into(),
                "pv".into(),
                "--kernel".into(),
                "aki-5c21674b".into(),
            ],
            2,
            "not a disk image",
        ),
        (
            vec![
                "export".into(),
                "ami-487d6534000000204".into(),
                env.path("x.raw").display().to_string(),
            ],
            2,
            "instance-store",
        ),
    ];
    let before = std::fs::read_dir(env.path("journal"))
        .map(|d| d.count())
        .unwrap_or(0);
    for (args, code, word) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.run(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{a:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{a:?}: {err}");
        assert!(err.contains(word), "{a:?}: {err}");
    }
    assert!(!env.path("x.raw").exists());
    // Every failed migration left a journal saying so, and no work directory.
    let journals: Vec<Value> = std::fs::read_dir(env.path("journal"))
        .map(|d| {
            d.filter_map(|e| {
                serde_json::from_str(&std::fs::read_to_string(e.ok()?.path()).ok()?).ok()
            })
            .collect()
        })
        .unwrap_or_default();
    assert!(journals.len() >= before);
    for j in &journals {
        assert_eq!(j["state"], "failed", "{j}");
        assert!(j["upload"].is_null(), "{j}");
    }
    let work = env.path("work");
    assert!(!work.exists() || std::fs::read_dir(&work).unwrap().count() == 0);
}

/// A PV image whose root is XFS (one amitool's import would refuse, so it
/// is registered here from the plain EBS API) is refused from its snapshot
/// where it lies, on one line that names XFS, before anything is made.
#[tokio::test]
async fn a_non_ext_root_is_refused_before_anything_is_made() {
    let env = Env::new();
    let bytes = std::fs::read(fixture("xfs-root-hd0")).unwrap();
    let snap = common::snapshot_of(&bytes, "an XFS PV root").await;
    let name = format!("xfs-pv-{}", env.unique());
    let ami = ec2()
        .await
        .register_image()
        .name(&name)
        .virtualization_type("paravirtual")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .kernel_id("aki-5c21674b")
        .root_device_name("/dev/sda1")
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/sda1")
                .ebs(
                    aws_sdk_ec2::types::EbsBlockDevice::builder()
                        .snapshot_id(&snap)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .image_id()
        .unwrap()
        .to_string();
    let out = env.run(&["migrate", "--ami", &ami]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("is XFS: amitool reads and edits ext2/3/4 filesystems only; convert"),
        "{err}"
    );
    let failed = env.journals("source_id", &ami);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["state"], "failed");
    let mid = failed[0]["migration_id"].as_str().unwrap();
    assert!(
        failed[0]["upload"].is_null(),
        "no block moved: {}",
        failed[0]
    );
    assert!(tagged_snapshots(mid).await.is_empty(), "no snapshot made");
    let images = ec2()
        .await
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:amitool:migration")
                .values(mid)
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(images.images().is_empty(), "no image made");
}

#[tokio::test]
async fn killed_after_the_upload_or_the_registration_resume_finds_them_by_tag() {
    let env = Env::new();
    let ami = env.import("multi-default1");
    let unique = env
        .dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    // The fake host's matrix (src/migrate/matrix.rs) kills the pipeline
    // after every step; here, the two after which the resume finds what
    // AWS made by its tags alone (the upload's snapshot, the image).
    for step in ["upload", "register"] {
        let name = format!("crash-{step}-{unique}");
        let mid = env.kill_after_step(&["migrate", "--ami", &ami], &name, step);
        let m = env.json(&["migrate", "--resume", &mid]);
        let hvm = m["image_id"].as_str().unwrap().to_string();
        let snap = root_snapshot(&hvm).await;
        assert_eq!(
            tagged_snapshots(&mid).await,
            vec![snap],
            "step {step}: only the result's snapshot is left"
        );
        let images = ec2()
            .await
            .describe_images()
            .owners("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("tag:amitool:migration")
                    .values(&mid)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            images.images().len(),
            1,
            "step {step}: exactly one image registered"
        );
        assert!(
            !env.path("work").join(&mid).exists(),
            "step {step}: work directory left"
        );
    }
}

#[tokio::test]
async fn register_failing_after_the_upload_keeps_the_journal_for_resume() {
    let env = Env::new();
    let ami = env.import("ext3-uuid");
    let unique = format!(
        "taken-{}",
        env.dir.path().file_name().unwrap().to_string_lossy()
    );
    // A name already in use is refused before any data moves.
    let other = env.import("menulst-noroot");
    let first = env.json(&["migrate", "--ami", &other, "--name", &unique]);
    let out = env.run(&["migrate", "--ami", &ami, "--name", &unique]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("already in use by ami-"), "{err}");
    let ec2 = ec2().await;
    ec2.deregister_image()
        .image_id(first["image_id"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    // The name is taken while the migration uploads: RegisterImage fails after the upload.
    let go = env.path("go");
    let child = env
        .hooked(&["migrate", "--ami", &ami, "--name", &unique])
        .env("AMITOOL_TEST_PAUSE_IN", "register")
        .env("AMITOOL_TEST_CONTINUE_FILE", &go)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.take().unwrap()));
    loop {
        let line = lines.next().expect("stderr ended before register").unwrap();
        if line.contains("paused in register") {
            break;
        }
    }
    let taken = env.json(&["migrate", "--ami", &other, "--name", &unique]);
    std::fs::write(&go, b"").unwrap();
    let err = lines.map_while(|l| l.ok()).collect::<Vec<_>>().join("\n");
    let status = child.wait().unwrap();
    // Stopped with its upload kept: resumable (exit 3).
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(
        err.contains("RegisterImage") && err.contains("--resume mig-"),
        "{err}"
    );
    let mid = err
        .split("--resume ")
        .nth(1)
        .unwrap()
        .split(['`', ' '])
        .next()
        .unwrap()
        .to_string();
    // The uploaded snapshot is kept for the resume; nothing else was made.
    assert_eq!(tagged_snapshots(&mid).await.len(), 1);
    // Resume refuses the taken name before registering; --name fixes it and
    // the same snapshot is registered.
    let again = env.run(&["migrate", "--resume", &mid]);
    let said = String::from_utf8_lossy(&again.stderr);
    // Stopped again, its upload kept: resumable (exit 3).
    assert_eq!(again.status.code(), Some(3), "{said}");
    assert!(said.contains("already in use by ami-"), "{said}");
    assert_eq!(tagged_snapshots(&mid).await.len(), 1, "the upload is kept");
    assert_ne!(taken["image_id"], Value::Null);
    let m = env.json(&[
        "migrate",
        "--resume",
        &mid,
        "--name",
        &format!("{unique}-2"),
    ]);
    let snap = root_snapshot(m["image_id"].as_str().unwrap()).await;
    assert_eq!(tagged_snapshots(&mid).await, vec![snap]);
}

#[tokio::test]
async fn verify_launches_reads_the_console_and_terminates() {
    let env = Env::new();
    let ami = env.import("no-ena");
    let name = format!(
        "verify-{}",
        env.dir.path().file_name().unwrap().to_string_lossy()
    );
    // LocalStack's console output is a canned kernel log without userspace:
    // the verification must say so, and leave no instance running.
    let out = env.run(&[
        "migrate",
        "--ami",
        &ami,
        "--name",
        &name,
        "--verify",
        "--verify-timeout",
        "3",
        "--output",
        "json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not print \"login:\" on t2.micro's console")
            && err.contains("stays registered"),
        "{err}"
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mid = m["migration_id"].as_str().unwrap();
    let inst = ec2()
        .await
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:amitool:migration")
                .values(mid)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let states: Vec<String> = inst
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| i.state().unwrap().name().unwrap().as_str().to_string())
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(
        matches!(states[0].as_str(), "terminated" | "shutting-down"),
        "{states:?}"
    );
}

#[tokio::test]
async fn ctrl_c_after_the_upload_keeps_it_for_resume() {
    let env = Env::new();
    let ami = env.import("menulst-root-hd0");
    let name = format!("ctrl-c-{}", env.unique());
    let (code, said) =
        env.ctrl_c_after_step(&["migrate", "--ami", &ami, "--name", &name], "upload");
    assert_eq!(code, Some(130), "{said:?}");
    let last = said.last().unwrap();
    assert!(
        last.contains(
            "stopped: interrupted (Ctrl-C); removed nothing; kept the upload snapshot snap-"
        ) && last.contains("--resume mig-"),
        "{last}"
    );
    let mid = last
        .split("--resume ")
        .nth(1)
        .unwrap()
        .split(['`', ' '])
        .next()
        .unwrap()
        .to_string();
    // The uploaded snapshot is kept, and --resume registers it.
    let kept = tagged_snapshots(&mid).await;
    assert_eq!(kept.len(), 1);
    let m = env.json(&["migrate", "--resume", &mid]);
    assert_eq!(
        root_snapshot(m["image_id"].as_str().unwrap()).await,
        kept[0]
    );
    assert_eq!(tagged_snapshots(&mid).await, kept);
}

/// Ctrl-C in the stream (its reads on blocking threads) is no panic: the
/// migration id, what was removed and what is kept, exit 130, the journal
/// says `interrupted`, and `--resume` then finishes it.
#[test]
fn ctrl_c_during_the_stream_is_a_clean_stop() {
    use std::io::{BufRead, BufReader};
    let env = Env::new();
    let ami = env.import("ext3-uuid");
    let mut child = env
        .hooked(&["migrate", "--ami", &ami])
        .env("AMITOOL_TEST_PAUSE_IN", "stream")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let start = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("stderr ended before the stream")
            .unwrap();
        if line.contains("paused in stream") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no stream");
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let status = child.wait().unwrap();
    let err = rest.join("\n");
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("interrupted (Ctrl-C)"), "{err}");
    assert!(
        err.contains("kept the upload snapshot snap-") && err.contains("its journal"),
        "{err}"
    );
    let mid = err
        .split_whitespace()
        .find(|w| w.starts_with("mig-"))
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .expect("the migration id is printed")
        .to_string();
    let journal: Value = serde_json::from_str(
        &std::fs::read_to_string(env.path("journal").join(format!("{mid}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(journal["state"], "interrupted");
    let m = env.json(&["migrate", "--resume", &mid]);
    assert_eq!(m["migration_id"], mid.as_str());
    assert!(m["image_id"].as_str().unwrap().starts_with("ami-"));
}

/// `inspect` on AWS reads the snapshot where it lies (GetSnapshotBlock, no
/// download): the same inspection as the local backend's of the same file,
/// a few blocks read of the many the snapshot holds.
#[test]
fn inspect_reads_the_snapshot_in_place_like_the_local_backend() {
    let env = Env::new();
    let name = "no-nvme-initramfs";
    let ami = env.import(name);
    let remote = env.json(&["inspect", &ami]);
    let state = tempfile::tempdir().unwrap();
    let local = |args: &[&str]| common::local_json(state.path(), args);
    let file = fixture(name);
    let img = local(&[
        "import",
        file.to_str().unwrap(),
        "--virtualization",
        "pv",
        "--kernel",
        "aki-5c21674b",
    ]);
    let here = local(&["inspect", img["image_id"].as_str().unwrap()]);
    for key in [
        "layout",
        "uuid",
        "mounts",
        "boot",
        "boot_changes",
        "kernels",
        "drivers",
        "findings",
        "problems",
        "boots_on",
    ] {
        assert_eq!(remote[key], here[key], "{key}");
    }
    assert_eq!(
        remote["drivers"]["nvme"], false,
        "read from the initramfs: {remote}"
    );
    let read = remote["blocks_read"].as_u64().unwrap();
    // The fixture's data: kernel and initramfs are most of it; the
    // inspection reads metadata, menus, fstab and the initramfs.
    let data = std::fs::metadata(&file).unwrap().len() / (512 * 1024);
    assert!(read > 0 && read < data, "{read} blocks read of {data}");
    assert_eq!(here["blocks_read"], Value::Null);
}

/// Without a terminal (cron, CI) the download and the upload say how far they
/// got in plain lines (every 5 s; the test hook makes it every few ms): bytes,
/// blocks, rate; nothing of it with --no-progress.
#[test]
fn transfers_print_plain_progress_lines_when_not_on_a_terminal() {
    let env = Env::new();
    let ami = env.import("multi-default1");
    let out = env
        .hooked_with_progress(&[
            "migrate",
            "--ami",
            &ami,
            "--name",
            &format!("progress-{}", env.unique()),
        ])
        .env("AMITOOL_TEST_PROGRESS_EVERY_MS", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("amitool: upload snap-"))
        .unwrap_or_else(|| panic!("no upload progress line in\n{err}"));
    assert!(
        line.contains(" blocks), ") && line.contains("/s") && line.contains(" of "),
        "{line}"
    );
    let quiet = env
        .hooked(&[
            "migrate",
            "--ami",
            &ami,
            "--name",
            &format!("quiet-{}", env.unique()),
        ])
        .env("AMITOOL_TEST_PROGRESS_EVERY_MS", "1")
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
}

/// `--dry-run` on AWS inspects the image's root snapshot where it lies and
/// says what would change and what would move: the data blocks EC2 lists,
/// the blocks to read and write and their price; it reads only a few of
/// them and makes nothing.
#[tokio::test]
async fn dry_run_inspects_the_snapshot_in_place_and_prices_the_transfer() {
    let env = Env::new();
    let ami = env.import("menulst-noroot");
    let snap = root_snapshot(&ami).await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(common::endpoint())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    let ebs = aws_sdk_ebs::Client::new(&sdk);
    let listed = ebs
        .list_snapshot_blocks()
        .snapshot_id(&snap)
        .send()
        .await
        .unwrap()
        .blocks()
        .len() as u64;
    let dry_name = format!("dry-{}", env.unique());
    let plan = env.json(&["migrate", "--dry-run", "--ami", &ami, "--name", &dry_name]);
    let insp = &plan["inspection"];
    assert!(insp["refused"].is_null(), "{plan}");
    assert!(
        insp["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["file"] == "/boot/grub/menu.lst"),
        "{plan}"
    );
    let t = &insp["transfer"];
    assert_eq!(t["data_blocks"].as_u64(), Some(listed), "{plan}");
    assert_eq!(t["blocks_to_read"].as_u64(), Some(listed));
    assert_eq!(t["blocks_to_write"].as_u64(), Some(listed + 2));
    assert!(t["usd"].as_f64().unwrap() > 0.0);
    let read = insp["blocks_read"].as_u64().unwrap();
    assert!(read > 0 && read < listed, "read {read} of {listed} blocks");
    // Nothing made: no snapshot of this source, no image of that name (other
    // tests run beside this one, so these are looked up by tag and name).
    let tagged = ec2()
        .await
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:amitool:source-image")
                .values(&ami)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .snapshots()
        .len();
    assert_eq!(tagged, 0, "a dry run made a snapshot");
    let named = ec2()
        .await
        .describe_images()
        .owners("self")
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("name")
                .values(&dry_name)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .images()
        .len();
    assert_eq!(named, 0, "a dry run registered an image");
    assert!(
        std::fs::read_dir(env.path("journal")).map_or(true, |mut d| d.next().is_none()),
        "a dry run wrote a journal"
    );
}

/// `--max-requests-per-second`: the stream starts its block requests no
/// faster, and the migration says what its budgets allowed and counted.
#[test]
fn the_request_budget_paces_the_stream_and_is_reported() {
    let env = Env::new();
    let ami = env.import("menulst-root-hd0");
    let started = std::time::Instant::now();
    let m = env.json(&["migrate", "--ami", &ami, "--max-requests-per-second", "20"]);
    let took = started.elapsed().as_secs_f64();
    let budgets = m["request_budgets"].as_array().unwrap();
    let of = |api: &str| {
        budgets
            .iter()
            .find(|b| b["api"] == api && b["region"] == "us-east-1")
            .unwrap_or_else(|| panic!("{api}: {m}"))
            .clone()
    };
    let (get, put) = (of("GetSnapshotBlock"), of("PutSnapshotBlock"));
    let written = m["transfer"]["blocks_written"].as_u64().unwrap();
    assert_eq!(put["max_per_second"], 20.0, "{m}");
    assert_eq!(put["requests"], written, "{m}");
    assert_eq!(put["throttled"], 0, "{m}");
    assert!(
        get["requests"].as_u64().unwrap() >= m["transfer"]["blocks_read"].as_u64().unwrap() - 2,
        "{m}"
    );
    // 20 a second: the writes alone take (n - 1) / 20 s.
    assert!(
        took >= (written - 1) as f64 / 20.0,
        "{took} s for {written} blocks"
    );
}

/// The 512 KiB blocks in which `a` and `b` differ.
fn differing_blocks(a: &[u8], b: &[u8]) -> Vec<usize> {
    const BLOCK: usize = 512 * 1024;
    (0..a.len().max(b.len()).div_ceil(BLOCK))
        .filter(|i| {
            let r = |x: &[u8]| {
                x.get(i * BLOCK..((i + 1) * BLOCK).min(x.len()))
                    .map(<[u8]>::to_vec)
            };
            r(a) != r(b)
        })
        .collect()
}
