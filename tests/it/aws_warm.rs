//! Warm migration on LocalStack with real bytes: phase 1 copies a running
//! PV instance's root and data volume; its guest then writes, changes and
//! deletes files (and installs a kernel it makes default) in the volumes'
//! files, as it would on EBS; a second sync and the cut-over move only
//! what changed. The result is the cold migration of the final state, byte
//! for byte, and boots on NVMe with the final files.

use aws_sdk_ec2::client::Waiters;
use serde_json::Value;

use crate::aws_cutover::{
    address_on, blocks_of, data_filesystem, describe, ec2, pv_instance, replacements, state,
    volume_blocks,
};
use crate::common::{self, Migrations as Env};
use crate::day2;

const FIXTURE: &str = "menulst-root-hd0";

/// The instance's volume at `device` (its root when `None`).
async fn volume_of(instance: &str, device: Option<&str>) -> String {
    let i = describe(instance).await;
    let dev = device
        .map(String::from)
        .or_else(|| i.root_device_name().map(String::from))
        .unwrap();
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(dev.as_str()))
        .and_then(|m| m.ebs()?.volume_id())
        .unwrap()
        .to_string()
}

/// What a guest writes into its data volume: `text` at `offset`.
fn write_bytes(file: &std::path::Path, offset: u64, text: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.write_all_at(text, offset).unwrap();
    f.sync_all().unwrap();
}

/// An image's root device mapping.
async fn root_ebs(image: &str) -> aws_sdk_ec2::types::EbsBlockDevice {
    let out = ec2()
        .await
        .describe_images()
        .image_ids(image)
        .send()
        .await
        .unwrap();
    let img = &out.images()[0];
    img.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == img.root_device_name())
        .and_then(|m| m.ebs().cloned())
        .unwrap()
}

/// The root snapshot of an image.
async fn image_snapshot(image: &str) -> String {
    root_ebs(image).await.snapshot_id().unwrap().to_string()
}

/// The root volume size of an image, in bytes.
async fn image_size(image: &str) -> u64 {
    (root_ebs(image).await.volume_size().unwrap() as u64) << 30
}

/// The cold migration of the stopped source as it is now (its root
/// snapshotted and migrated directly, nothing replaced).
fn cold_migration(env: &Env, instance: &str) -> String {
    let m = env.json(&[
        "migrate",
        "--instance",
        instance,
        "--name",
        &format!("cold-{}-hvm", env.unique()),
    ]);
    m["image_id"].as_str().unwrap().to_string()
}

fn steps(v: &Value) -> Vec<String> {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn journal(env: &Env, mid: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(env.path("journal").join(format!("{mid}.json"))).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn warm_syncs_and_a_cut_over_of_the_changed_blocks_give_the_cold_migration_of_the_final_state(
) {
    let env = Env::new();
    let ami = env.import(FIXTURE);
    let data = data_filesystem(env.dir.path());
    let fleet = pv_instance(&env, &ami, &data).await;
    let root = volume_of(&fleet.instance, None).await;
    let data_volume = volume_of(&fleet.instance, Some("/dev/sdf")).await;
    let root_file = common::volume_file(&root);
    let data_file = common::volume_file(&data_volume);
    // The root filesystem is the whole volume (hd0): debugfs edits it as the guest would.
    let fs = root_file.display().to_string();
    day2::write(&fs, "/etc/app.conf", "version=1\n");
    day2::write(&fs, "/etc/old.conf", "removed before the cut-over\n");

    // Phase 1, while the source runs.
    let warm = [
        "migrate",
        "--instance",
        fleet.instance.as_str(),
        "--replace",
        "--warm",
    ];
    let p1 = env.json(&warm);
    let mid = p1["migration_id"].as_str().unwrap().to_string();
    assert!(p1.get("image_id").is_none(), "{p1}");
    assert_eq!(p1["sync"]["generation"], 0, "{p1}");
    assert_eq!(
        p1["sync"]["cut_over"],
        format!("amitool migrate --cut-over {mid}")
    );
    assert_eq!(
        steps(&p1),
        [
            "snapshot",
            "inspect",
            "plan",
            "boot-config",
            "build",
            "upload",
            "cleanup",
            "data sync"
        ]
    );
    assert_eq!(
        p1["sync"]["data_snapshots"].as_array().unwrap().len(),
        1,
        "{p1}"
    );
    assert_eq!(state(&fleet.instance).await, "running");
    assert_eq!(journal(&env, &mid)["state"], "synced");

    // The guest writes, changes and deletes files, and writes its data volume.
    day2::write(&fs, "/etc/app.conf", "version=2\n");
    day2::remove(&fs, "/etc/old.conf");
    day2::write(&fs, "/etc/new.conf", "made after phase 1\n");
    write_bytes(&data_file, 8 << 20, &b"sync one ".repeat(1000));

    // The same command again catches up: only what changed moves.
    let s1 = env.json(&warm);
    assert_eq!(s1["migration_id"], mid.as_str(), "{s1}");
    assert_eq!(s1["sync"]["generation"], 1, "{s1}");
    let changed1 = s1["sync"]["changed_blocks"].as_u64().unwrap();
    assert!(changed1 > 0 && changed1 < 16, "{s1}");
    assert!(
        s1["sync"]["blocks_written"].as_u64().unwrap()
            < p1["sync"]["blocks_written"].as_u64().unwrap(),
        "a sync writes less than phase 1: {s1} {p1}"
    );
    // Phase 1's snapshots gave way to sync 1's.
    let first = p1["sync"]["disk_snapshot"].as_str().unwrap();
    assert!(
        ec2()
            .await
            .describe_snapshots()
            .snapshot_ids(first)
            .send()
            .await
            .is_err(),
        "{first} is gone"
    );

    // More writes, and a kernel installed and made default by the guest's own tool (grubby).
    let fx: Value = {
        let m: Value = serde_json::from_str(
            &std::fs::read_to_string(common::fixtures_dir().join("manifest.json")).unwrap(),
        )
        .unwrap();
        m["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == FIXTURE)
            .unwrap()
            .clone()
    };
    let new_kernel = day2::kernel_upgrade_in(
        &fs,
        fx["style"].as_str().unwrap(),
        fx["uuid"].as_str().unwrap(),
        fx["kernel"].as_str().unwrap(),
        fx["initrd"].as_str().unwrap(),
        None,
    );
    day2::write(&fs, "/etc/app.conf", "version=3\n");
    write_bytes(&data_file, 9 << 20, &b"final words ".repeat(1000));

    // The cut-over's dry run acts on nothing.
    let plan = env.json(&["migrate", "--cut-over", &mid, "--dry-run"]);
    assert_eq!(plan["action"], "cut-over", "{plan}");
    assert_eq!(plan["last_sync"], 1, "{plan}");
    assert_eq!(plan["last_changed_blocks"], changed1, "{plan}");
    assert!(plan["estimated_usd"].as_f64().unwrap() > 0.0, "{plan}");
    assert_eq!(plan["steps"][0], "stop source", "{plan}");
    assert_eq!(state(&fleet.instance).await, "running");

    // Phase 2: stop, the changed blocks, register, replace.
    let co = env.json(&["migrate", "--cut-over", &mid]);
    let image = co["image_id"].as_str().unwrap().to_string();
    let replacement = co["replacement"]["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        steps(&co),
        [
            "stop source",
            "snapshot",
            "inspect",
            "plan",
            "boot-config",
            "build",
            "upload",
            "register",
            "verify",
            "cleanup",
            "data volumes",
            "launch replacement",
            "elastic ip"
        ],
        "{co}"
    );
    assert_eq!(state(&fleet.instance).await, "stopped");
    assert_eq!(state(&replacement).await, "running");
    assert_eq!(replacements(&mid).await, std::slice::from_ref(&replacement));
    assert_eq!(
        address_on(&fleet.allocation).await.as_deref(),
        Some(replacement.as_str())
    );
    // The outage moved the changed blocks, both builds' edits and blocks 0-1, no more.
    let o = &co["outage"];
    let (changed, edited, written, read) = (
        o["changed_blocks"].as_u64().unwrap(),
        o["edited_blocks"].as_u64().unwrap(),
        o["blocks_written"].as_u64().unwrap(),
        o["blocks_read"].as_u64().unwrap(),
    );
    assert!(changed > 0, "{co}");
    assert!(
        written >= changed && written <= changed + edited + 2,
        "{co}"
    );
    assert_eq!(
        o["bytes_written"].as_u64().unwrap(),
        written * 524288,
        "{co}"
    );
    // Reads: the blocks written that come from the source, and the inspection's metadata.
    let inspected: u64 = co["steps"][2]["detail"]
        .as_str()
        .unwrap()
        .rsplit_once("read in place: ")
        .map(|(_, n)| n.trim_end_matches(" blocks").parse().unwrap())
        .unwrap();
    assert!(read <= written + inspected, "{co}");
    assert!(o["seconds"].as_f64().unwrap() > 0.0, "{co}");
    assert!(
        co["source_stopped_at"].as_str().unwrap() < co["replacement_running_at"].as_str().unwrap(),
        "{co}"
    );

    // Byte for byte the cold migration of the final root.
    let cold = cold_migration(&env, &fleet.instance);
    let warm_blocks = blocks_of(&image_snapshot(&image).await).await;
    let cold_blocks = blocks_of(&image_snapshot(&cold).await).await;
    assert_eq!(
        warm_blocks.keys().collect::<Vec<_>>(),
        cold_blocks.keys().collect::<Vec<_>>()
    );
    assert!(
        warm_blocks == cold_blocks,
        "the warm disk differs from the cold one"
    );

    // The replacement's data volume holds the final bytes.
    let new_data = volume_of(&replacement, Some("/dev/sdf")).await;
    assert_eq!(
        volume_blocks(&new_data).await,
        volume_blocks(&data_volume).await
    );
    let finals = std::fs::read(&data_file).unwrap();
    assert!(finals[(9 << 20)..].starts_with(b"final words "));

    // It boots on NVMe, the guest's new kernel with its final files.
    let disk = env.path("warm-hvm.raw");
    {
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(image_size(&image).await).unwrap();
        use std::os::unix::fs::FileExt;
        for (i, b) in &warm_blocks {
            f.write_all_at(b, *i as u64 * 524288).unwrap();
        }
    }
    let hvm = day2::target(&disk);
    assert_eq!(
        day2::cat_at(&hvm, "/etc/app.conf").as_deref(),
        Some("version=3\n")
    );
    assert_eq!(
        day2::cat_at(&hvm, "/etc/new.conf").as_deref(),
        Some("made after phase 1\n")
    );
    assert_eq!(day2::cat_at(&hvm, "/etc/old.conf"), None);
    let log = common::boots_under_qemu_on(
        &env.path("local-state"),
        &disk,
        &format!("AMITOOL-ROOT-OK {FIXTURE}"),
        "m5.large",
    );
    assert!(log.contains(&format!("BOOT_IMAGE={new_kernel}")), "{log}");

    // And it rolls back: the source runs again with its address.
    let rb = env.json(&["migrate", "--rollback", &mid]);
    assert_eq!(rb["source_state"], "running", "{rb}");
    assert_eq!(
        address_on(&fleet.allocation).await.as_deref(),
        Some(fleet.instance.as_str())
    );
}

#[tokio::test]
async fn rollback_after_phase_one_leaves_the_running_source_and_nothing_else() {
    let env = Env::new();
    let ami = env.import(FIXTURE);
    let data = data_filesystem(env.dir.path());
    let fleet = pv_instance(&env, &ami, &data).await;
    let p1 = env.json(&[
        "migrate",
        "--instance",
        &fleet.instance,
        "--replace",
        "--warm",
    ]);
    let mid = p1["migration_id"].as_str().unwrap().to_string();
    let rb = env.json(&["migrate", "--rollback", &mid]);
    assert_eq!(rb["source_state"], "running", "{rb}");
    assert_eq!(state(&fleet.instance).await, "running");
    let tagged = ec2()
        .await
        .describe_snapshots()
        .owner_ids("self")
        .filters(crate::aws_cutover::filter("tag:amitool:migration", &mid))
        .send()
        .await
        .unwrap();
    assert!(tagged.snapshots().is_empty(), "{:?}", tagged.snapshots());
    // A rolled-back warm migration cannot be cut over.
    let out = env.run(&["migrate", "--cut-over", &mid]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `migrate ARGS` (the hooked binary) until it pauses after `step`, then kill -9 it.
fn kill_after(env: &Env, args: &[&str], step: &str) {
    let (mut child, _) = env.paused(args, step);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// The snapshots tagged with the migration, and its images.
async fn made_by(mid: &str) -> (Vec<String>, Vec<String>) {
    let ec2 = ec2().await;
    let f = crate::aws_cutover::filter("tag:amitool:migration", mid);
    let snaps = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(f.clone())
        .send()
        .await
        .unwrap();
    let images = ec2
        .describe_images()
        .owners("self")
        .filters(f)
        .send()
        .await
        .unwrap();
    (
        snaps
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(String::from))
            .collect(),
        images
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(String::from))
            .collect(),
    )
}

#[tokio::test]
async fn a_sync_and_a_cut_over_killed_at_their_steps_resume_to_one_image_and_one_replacement() {
    let env = Env::new();
    let ami = env.import(FIXTURE);
    let data = data_filesystem(env.dir.path());
    let fleet = pv_instance(&env, &ami, &data).await;
    let root_file = common::volume_file(&volume_of(&fleet.instance, None).await);
    let fs = root_file.display().to_string();
    let warm = [
        "migrate",
        "--instance",
        fleet.instance.as_str(),
        "--replace",
        "--warm",
    ];
    // Phase 1, killed after its snapshot, then after its upload.
    kill_after(&env, &warm, "snapshot");
    let journals = env.journals("source_id", &fleet.instance);
    assert_eq!(journals.len(), 1, "{journals:?}");
    let mid = journals[0]["migration_id"].as_str().unwrap().to_string();
    let resume = ["migrate", "--resume", mid.as_str()];
    kill_after(&env, &resume, "upload");
    let p1 = env.json(&resume);
    assert_eq!(p1["sync"]["generation"], 0, "{p1}");
    // A sync, killed after its upload, resumed.
    day2::write(&fs, "/etc/app.conf", "after phase 1\n");
    kill_after(&env, &["migrate", "--sync", &mid], "upload");
    let s1 = env.json(&resume);
    assert_eq!(s1["sync"]["generation"], 1, "{s1}");
    assert!(s1["sync"]["changed_blocks"].as_u64().unwrap() > 0, "{s1}");
    // The cut-over, killed after each of its steps in turn, each resume
    // going on where the last stopped.
    day2::write(&fs, "/etc/app.conf", "at the cut-over\n");
    kill_after(&env, &["migrate", "--cut-over", &mid], "stop source");
    assert_eq!(state(&fleet.instance).await, "stopped");
    for step in [
        "upload",
        "register",
        "cleanup",
        "data volumes",
        "launch replacement",
    ] {
        kill_after(&env, &resume, step);
    }
    let co = env.json(&resume);
    let image = co["image_id"].as_str().unwrap().to_string();
    let replacement = co["replacement"]["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(replacements(&mid).await, std::slice::from_ref(&replacement));
    assert_eq!(state(&fleet.instance).await, "stopped");
    assert!(co["outage"]["blocks_written"].as_u64().unwrap() > 0, "{co}");
    // One image; its snapshot and the data volume's final one, nothing else.
    let (snaps, images) = made_by(&mid).await;
    assert_eq!(images, std::slice::from_ref(&image));
    let image_snap = image_snapshot(&image).await;
    assert!(snaps.contains(&image_snap), "{snaps:?}");
    assert_eq!(
        snaps.len(),
        2,
        "the image's and the data volume's: {snaps:?}"
    );
    let hvm = env.path("killed-hvm.raw");
    {
        let f = std::fs::File::create(&hvm).unwrap();
        f.set_len(image_size(&image).await).unwrap();
        use std::os::unix::fs::FileExt;
        for (i, b) in blocks_of(&image_snap).await {
            f.write_all_at(&b, i as u64 * 524288).unwrap();
        }
    }
    assert_eq!(
        day2::cat_at(&day2::target(&hvm), "/etc/app.conf").as_deref(),
        Some("at the cut-over\n")
    );
}

#[tokio::test]
async fn the_stand_in_ebs_lists_changed_blocks_as_ebs_does() {
    common::localstack();
    let ebs = crate::aws_cutover::ebs().await;
    // 150 blocks; a child that changes 120 of them, writes one as it was and adds one.
    let mut bytes = vec![0u8; 150 * 524288];
    for (i, b) in bytes.chunks_mut(524288).enumerate() {
        b[0] = 1 + (i % 200) as u8;
    }
    let first = common::snapshot_of(&bytes, "changed blocks: first").await;
    let child = ebs
        .start_snapshot()
        .volume_size(1)
        .parent_snapshot_id(&first)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    let put = |index: i32, block: Vec<u8>| common::put_block(&ebs, &child, index, block);
    let mut changed: Vec<i32> = (10..130).collect();
    for &i in &changed {
        put(i, vec![0xee; 524288]).await;
    }
    // The same bytes again: not a change.
    let mut same = vec![0u8; 524288];
    same[0] = 1 + 140;
    put(140, same).await;
    // A block only in the child.
    put(1000, vec![0xdd; 524288]).await;
    changed.push(1000);
    ebs.complete_snapshot()
        .snapshot_id(&child)
        .changed_blocks_count(122)
        .send()
        .await
        .unwrap();
    ec2()
        .await
        .wait_until_snapshot_completed()
        .snapshot_ids(&child)
        .wait(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let mut got = vec![];
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = ebs
            .list_changed_blocks()
            .first_snapshot_id(&first)
            .second_snapshot_id(&child)
            .max_results(100)
            .set_next_token(token.take())
            .send()
            .await
            .unwrap();
        pages += 1;
        for b in page.changed_blocks() {
            let i = b.block_index().unwrap();
            assert_eq!(b.first_block_token().is_some(), i < 150, "block {i}");
            assert!(b.second_block_token().is_some(), "block {i}");
            got.push(i);
        }
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(got, changed);
    // Snapshots of two lineages are not compared.
    let other = common::snapshot_of(&bytes, "changed blocks: another lineage").await;
    let refused = ebs
        .list_changed_blocks()
        .first_snapshot_id(&first)
        .second_snapshot_id(&other)
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn moved_data_volumes_go_to_the_replacement_and_back_with_the_rollback() {
    let env = Env::new();
    let ami = env.import(FIXTURE);
    let data = data_filesystem(env.dir.path());
    let fleet = pv_instance(&env, &ami, &data).await;
    let volume = volume_of(&fleet.instance, Some("/dev/sdf")).await;
    let args = [
        "migrate",
        "--instance",
        fleet.instance.as_str(),
        "--replace",
        "--move-data-volumes",
    ];
    let m = env.json(&args);
    let mid = m["migration_id"].as_str().unwrap().to_string();
    let replacement = m["replacement"]["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    let names: Vec<String> = steps(&m);
    let (launch, moved) = (
        names
            .iter()
            .position(|s| s == "launch replacement")
            .unwrap(),
        names.iter().position(|s| s == "data volumes").unwrap(),
    );
    assert!(launch < moved, "moved once the replacement runs: {names:?}");
    // The same volume, no copy: on the replacement at its device, gone from the source.
    assert_eq!(volume_of(&replacement, Some("/dev/sdf")).await, volume);
    assert!(describe(&fleet.instance)
        .await
        .block_device_mappings()
        .iter()
        .all(|b| b.device_name() != Some("/dev/sdf")));
    let (snaps, _) = made_by(&mid).await;
    assert_eq!(
        snaps.len(),
        1,
        "the image's snapshot only, no data copy: {snaps:?}"
    );
    // The rollback moves it back.
    let rb = env.json(&["migrate", "--rollback", &mid]);
    assert_eq!(rb["source_state"], "running", "{rb}");
    assert_eq!(volume_of(&fleet.instance, Some("/dev/sdf")).await, volume);
    assert!(describe(&replacement)
        .await
        .block_device_mappings()
        .iter()
        .all(|b| b.device_name() != Some("/dev/sdf")));
    // With the source left running, nothing can move.
    let out = env.run(&[&args[..], &["--keep-source-running"]].concat());
    assert_eq!(out.status.code(), Some(2));
}
