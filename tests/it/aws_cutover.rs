//! The operator's whole job on LocalStack with real bytes: a PV instance
//! launched from a fixture PV AMI on m1.small, in a subnet with a security
//! group, a key pair, tags, user data, a data volume holding a filesystem
//! and an Elastic IP; `instances` lists it with its successor; `migrate
//! --instance --replace` gives an HVM replacement that keeps all of it, the
//! source stopped; `--rollback` brings the address and the source back; a
//! kill -9 after any cut-over step then `--resume` ends with one replacement.

use aws_sdk_ec2::types::{Filter, InstanceType, Tag};
use base64::Engine;
use serde_json::Value;

use crate::common;
use common::Migrations as Env;

pub(crate) async fn sdk() -> aws_config::SdkConfig {
    common::sdk_config("us-east-1").await
}

pub(crate) async fn ec2() -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk().await)
}

pub(crate) async fn ebs() -> aws_sdk_ebs::Client {
    aws_sdk_ebs::Client::new(&sdk().await)
}

pub(crate) fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// A 16 MiB ext4 filesystem holding a file, the data volume's bytes.
pub(crate) fn data_filesystem(dir: &std::path::Path) -> Vec<u8> {
    let root = dir.join("data-root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("orders.db"),
        b"amitool cut-over data\n".repeat(4096),
    )
    .unwrap();
    let img = dir.join("data.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(16 << 20).unwrap();
    let ok = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "data", "-d"])
        .arg(&root)
        .arg(&img)
        .env("E2FSPROGS_FAKE_TIME", common::FAKE_TIME)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read(&img).unwrap()
}

/// `bytes` as a new 1 GiB snapshot, through the EBS direct APIs.
pub(crate) async fn snapshot_of(bytes: &[u8]) -> String {
    common::snapshot_of(bytes, "amitool test data volume").await
}

/// A snapshot's non-zero blocks, by index.
pub(crate) async fn blocks_of(snapshot: &str) -> std::collections::BTreeMap<i32, Vec<u8>> {
    let ebs = ebs().await;
    let list = ebs
        .list_snapshot_blocks()
        .snapshot_id(snapshot)
        .send()
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for b in list.blocks() {
        let got = ebs
            .get_snapshot_block()
            .snapshot_id(snapshot)
            .block_index(b.block_index().unwrap())
            .block_token(b.block_token().unwrap())
            .send()
            .await
            .unwrap();
        let data = got
            .block_data
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec();
        if data.iter().any(|&x| x != 0) {
            out.insert(b.block_index().unwrap(), data);
        }
    }
    out
}

/// The bytes of a volume, as a snapshot of it gives them.
pub(crate) async fn volume_blocks(volume: &str) -> std::collections::BTreeMap<i32, Vec<u8>> {
    let ec2 = ec2().await;
    let snap = ec2
        .create_snapshot()
        .volume_id(volume)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    blocks_of(&snap).await
}

pub(crate) struct Fleet {
    pub instance: String,
    pub subnet: String,
    pub group: String,
    pub key: String,
    pub allocation: String,
    pub address: String,
    pub data_snapshot: String,
}

/// The PV instance an operator has: m1.small from a fixture PV AMI, in the
/// default VPC's first subnet with its own security group, key pair, tags,
/// user data, a data volume (/dev/sdf) and an Elastic IP.
pub(crate) async fn pv_instance(env: &Env, ami: &str, data: &[u8]) -> Fleet {
    let ec2 = ec2().await;
    let vpcs = ec2
        .describe_vpcs()
        .filters(filter("is-default", "true"))
        .send()
        .await
        .unwrap();
    let vpc = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
    let subnets = ec2
        .describe_subnets()
        .filters(filter("vpc-id", &vpc))
        .send()
        .await
        .unwrap();
    let subnet = subnets.subnets()[0].subnet_id().unwrap().to_string();
    let unique = format!(
        "{}-{}",
        env.unique(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let group = ec2
        .create_security_group()
        .group_name(format!("web-{unique}"))
        .description("the PV fleet's web tier")
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    let key = format!("ops-{unique}");
    ec2.create_key_pair().key_name(&key).send().await.unwrap();
    let data_snapshot = snapshot_of(data).await;
    let run = ec2
        .run_instances()
        .image_id(ami)
        .instance_type(InstanceType::M1Small)
        .min_count(1)
        .max_count(1)
        .subnet_id(&subnet)
        .security_group_ids(&group)
        .key_name(&key)
        .user_data(base64::engine::general_purpose::STANDARD.encode("#!/bin/sh\necho web\n"))
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(
                    Tag::builder()
                        .key("Name")
                        .value(format!("web-{}", env.unique()))
                        .build(),
                )
                .tags(Tag::builder().key("Team").value("ops").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    // The data volume, made from the snapshot in the instance's zone and attached.
    let zone = run.instances()[0]
        .placement()
        .and_then(|p| p.availability_zone())
        .unwrap()
        .to_string();
    let volume = ec2
        .create_volume()
        .availability_zone(&zone)
        .snapshot_id(&data_snapshot)
        .size(1)
        .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
        .send()
        .await
        .unwrap()
        .volume_id()
        .unwrap()
        .to_string();
    ec2.attach_volume()
        .volume_id(&volume)
        .instance_id(&instance)
        .device("/dev/sdf")
        .send()
        .await
        .unwrap();
    let eip = ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap();
    let allocation = eip.allocation_id().unwrap().to_string();
    ec2.associate_address()
        .allocation_id(&allocation)
        .instance_id(&instance)
        .send()
        .await
        .unwrap();
    Fleet {
        instance,
        subnet,
        group,
        key,
        allocation,
        address: eip.public_ip().unwrap().to_string(),
        data_snapshot,
    }
}

pub(crate) async fn describe(id: &str) -> aws_sdk_ec2::types::Instance {
    ec2()
        .await
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .clone()
}

pub(crate) async fn state(id: &str) -> String {
    describe(id)
        .await
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string())
        .unwrap_or_default()
}

pub(crate) async fn address_on(allocation: &str) -> Option<String> {
    ec2()
        .await
        .describe_addresses()
        .allocation_ids(allocation)
        .send()
        .await
        .unwrap()
        .addresses()[0]
        .instance_id()
        .map(String::from)
}

/// Live replacements of a migration (tagged, not terminated).
pub(crate) async fn replacements(mid: &str) -> Vec<String> {
    let out = ec2()
        .await
        .describe_instances()
        .filters(filter("tag:amitool:migration", mid))
        .filters(filter("tag:amitool:role", "replacement"))
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .filter_map(|i| i.instance_id().map(String::from))
        .collect()
}

const KEYS: [&str; 19] = [
    "region",
    "instance_id",
    "name",
    "instance_type",
    "state",
    "virtualization_type",
    "image_id",
    "kernel_id",
    "root_device_type",
    "root_device_name",
    "volumes",
    "instance_store",
    "public_ip",
    "elastic_ip",
    "subnet_id",
    "security_groups",
    "retired_family",
    "successor_type",
    "successor_reasons",
];

#[tokio::test]
async fn instances_list_replace_and_roll_back() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let data = data_filesystem(dir.path());
    let ami = env.import("ext3-uuid");
    let f = pv_instance(&env, &ami, &data).await;

    // instances: the PV one, every key, its successor and why.
    let listed = env.json(&["instances", "--virtualization", "pv"]);
    let me = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == f.instance.as_str())
        .unwrap_or_else(|| panic!("{} not listed: {listed}", f.instance))
        .clone();
    let keys: Vec<&str> = me.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, KEYS, "{me}");
    assert_eq!(me["instance_type"], "m1.small");
    assert_eq!(me["virtualization_type"], "paravirtual");
    assert_eq!(me["retired_family"], true);
    assert_eq!(me["elastic_ip"], f.address.as_str());
    assert_eq!(me["subnet_id"], f.subnet.as_str());
    assert_eq!(me["security_groups"][0], f.group.as_str());
    assert_eq!(
        me["instance_store"], 1,
        "m1.small has one instance-store volume"
    );
    let vols = me["volumes"].as_array().unwrap();
    assert!(vols.iter().any(|v| v["device"] == "/dev/sdf"), "{me}");
    let successor = me["successor_type"]
        .as_str()
        .unwrap_or_else(|| panic!("{me}"))
        .to_string();
    assert!(
        successor.starts_with("t3.") || successor.starts_with("m"),
        "{me}"
    );
    let reasons = me["successor_reasons"].to_string();
    assert!(reasons.contains("m1.small has 1 vCPU"), "{reasons}");
    assert!(reasons.contains("general purpose"), "{reasons}");
    let hvm_only = env.json(&["instances", "--virtualization", "hvm"]);
    assert!(!hvm_only.to_string().contains(&f.instance));

    // The cut-over.
    let m = env.json(&["migrate", "--instance", &f.instance, "--replace"]);
    let mid = m["migration_id"].as_str().unwrap().to_string();
    let r = &m["replacement"];
    let new = r["instance_id"].as_str().unwrap().to_string();
    assert_eq!(r["instance_type"], successor.as_str(), "{m}");
    let inst = describe(&new).await;
    assert_eq!(inst.instance_type().unwrap().as_str(), successor);
    assert_eq!(inst.image_id(), m["image_id"].as_str());
    assert_eq!(inst.subnet_id(), Some(f.subnet.as_str()));
    assert_eq!(inst.key_name(), Some(f.key.as_str()));
    assert_eq!(
        inst.security_groups()
            .iter()
            .filter_map(|g| g.group_id())
            .collect::<Vec<_>>(),
        vec![f.group.as_str()]
    );
    let tags: std::collections::BTreeMap<&str, &str> = inst
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    assert_eq!(tags.get("Team"), Some(&"ops"), "{tags:?}");
    assert_eq!(
        tags.get("Name"),
        Some(&format!("web-{}", env.unique()).as_str())
    );
    assert_eq!(
        tags.get("amitool:source-instance"),
        Some(&f.instance.as_str())
    );
    assert_eq!(
        address_on(&f.allocation).await.as_deref(),
        Some(new.as_str())
    );
    assert_eq!(state(&f.instance).await, "stopped");
    assert_eq!(r["source_state"], "stopped");
    let src = describe(&f.instance).await;
    assert!(
        src.tags()
            .iter()
            .any(|t| t.key() == Some("amitool:replacement") && t.value() == Some(new.as_str())),
        "{:?}",
        src.tags()
    );
    // The data volume's bytes are the source's.
    let sdf = inst
        .block_device_mappings()
        .iter()
        .find(|b| b.device_name() == Some("/dev/sdf"))
        .and_then(|b| b.ebs()?.volume_id())
        .expect("the replacement has /dev/sdf")
        .to_string();
    let want = blocks_of(&f.data_snapshot).await;
    assert!(!want.is_empty());
    assert_eq!(volume_blocks(&sdf).await, want, "the data volume's bytes");

    // Roll back, twice: the address and the source come back, the replacement stays stopped.
    for _ in 0..2 {
        let back = env.json(&["migrate", "--rollback", &mid]);
        assert_eq!(back["source_state"], "running", "{back}");
        assert_eq!(back["replacement_state"], "stopped", "{back}");
        assert_eq!(
            address_on(&f.allocation).await.as_deref(),
            Some(f.instance.as_str())
        );
        assert_eq!(state(&new).await, "stopped");
    }
    assert_eq!(replacements(&mid).await, vec![new.clone()]);
}

#[tokio::test]
async fn killed_after_any_cut_over_step_resume_ends_with_one_replacement() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let data = data_filesystem(dir.path());
    let ami = env.import("ext3-uuid");
    for step in [
        "register",
        "stop source",
        "data volumes",
        "launch replacement",
        "elastic ip",
    ] {
        let f = pv_instance(&env, &ami, &data).await;
        let name = format!("cut-{}-{}", step.replace(' ', "-"), env.unique());
        let mid = env.kill_after_step(
            &["migrate", "--instance", &f.instance, "--replace"],
            &name,
            step,
        );
        let m = env.json(&["migrate", "--resume", &mid]);
        let new = m["replacement"]["instance_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{step}: {m}"))
            .to_string();
        assert_eq!(
            replacements(&mid).await,
            vec![new.clone()],
            "killed after {step}"
        );
        assert_eq!(
            address_on(&f.allocation).await.as_deref(),
            Some(new.as_str()),
            "{step}"
        );
        assert_eq!(state(&f.instance).await, "stopped", "{step}");
    }
}

#[test]
fn replace_needs_instances_and_the_aws_backend() {
    let env = Env::new();
    let out = env.run(&["migrate", "--ami", "ami-0123456789abcdef0", "--replace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not --ami"));
    let out = env.run(&[
        "migrate",
        "--instance",
        "i-0123456789abcdef0",
        "--instance-type",
        "t3.micro",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--instance-type needs --replace"
    );
    let state = tempfile::tempdir().unwrap();
    let out = env.run(&[
        "--backend",
        "local",
        "--state-dir",
        state.path().to_str().unwrap(),
        "migrate",
        "--instance",
        "i-0123456789abcdef0",
        "--replace",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS backend"));
    let out = env.run(&["migrate", "--rollback", "mig-00000000dead"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn a_dry_run_names_the_replacement_and_asks_ec2() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let data = data_filesystem(dir.path());
    let ami = env.import("ext3-uuid");
    let f = pv_instance(&env, &ami, &data).await;
    let plan: Value = env.json(&[
        "migrate",
        "--instance",
        &f.instance,
        "--replace",
        "--dry-run",
    ]);
    let r = &plan["replacement"];
    assert_eq!(r["subnet_id"], f.subnet.as_str(), "{plan}");
    assert_eq!(r["security_groups"][0], f.group.as_str());
    assert_eq!(r["key_name"], f.key.as_str());
    assert_eq!(r["elastic_ip"], f.address.as_str());
    assert_eq!(r["volumes"][0]["device"], "/dev/sdf");
    assert!(r["instance_type"].as_str().is_some());
    let checks = r["checks"].to_string();
    for op in ["RunInstances", "CreateVolume", "AssociateAddress"] {
        assert!(checks.contains(op), "{checks}");
    }
    // Nothing was made or moved.
    assert_eq!(state(&f.instance).await, "running");
    assert_eq!(
        address_on(&f.allocation).await.as_deref(),
        Some(f.instance.as_str())
    );
}
