//! The AWS backend against a real LocalStack (`localstack/start.sh`; tests/run.sh
//! starts it): every answer of the binary is compared with what EC2 returns
//! when asked directly through the SDK. Without LocalStack these tests fail.

use crate::common;

use std::collections::BTreeSet;

use aws_sdk_ec2::types::{Filter, Image, InstanceTypeInfo, LocationType};
use serde_json::{json, Value};

use common::{
    amitool, assert_one_line_error, ec2, key_order, localstack, run, HOME_REGION, PV_REGIONS,
};

/// The `list --output json` contract, in its order.
const IMAGE_KEYS: [&str; 15] = [
    "region",
    "image_id",
    "name",
    "virtualization_type",
    "architecture",
    "image_type",
    "kernel_id",
    "root_device_type",
    "root_device_name",
    "ena_support",
    "sriov_net_support",
    "boot_mode",
    "creation_date",
    "state",
    "owner_id",
];

/// The `compat --instance-type --output json` contract, in its order.
const INSTANCE_TYPE_KEYS: [&str; 8] = [
    "instance_type",
    "supported_virtualization_types",
    "supported_architectures",
    "hypervisor",
    "ena_support",
    "nvme_support",
    "boot_modes",
    "current_generation",
];

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// An SDK image as `list --output json` must print it.
fn image_json(region: &str, i: &Image) -> Value {
    json!({
        "region": region,
        "image_id": i.image_id(),
        "name": i.name(),
        "virtualization_type": i.virtualization_type().map(|v| v.as_str()),
        "architecture": i.architecture().map(|a| a.as_str()),
        "image_type": i.image_type().map(|t| t.as_str()),
        "kernel_id": i.kernel_id(),
        "root_device_type": i.root_device_type().map(|t| t.as_str()),
        "root_device_name": i.root_device_name(),
        "ena_support": i.ena_support(),
        "sriov_net_support": i.sriov_net_support(),
        "boot_mode": i.boot_mode().map(|m| m.as_str()),
        "creation_date": i.creation_date(),
        "state": i.state().map(|s| s.as_str()),
        "owner_id": i.owner_id(),
    })
}

/// amitool's order: region, then creation date, then id.
fn sort_images(images: &mut [Value]) {
    images.sort_by(|a, b| {
        let key = |v: &Value| {
            (
                v["region"].as_str().map(String::from),
                v["creation_date"].as_str().map(String::from),
                v["image_id"].as_str().map(String::from),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// DescribeImages asked directly (IncludeDeprecated, every page), as amitool
/// must print the answer, in amitool's order.
async fn direct_images(region: &str, filters: &[(&str, &str)], owner: Option<&str>) -> Vec<Value> {
    let mut req = ec2(region)
        .await
        .describe_images()
        .include_deprecated(true)
        .set_owners(owner.map(|o| vec![o.to_string()]));
    for (name, value) in filters {
        req = req.filters(filter(name, value));
    }
    let mut pages = req.into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(image) = pages.next().await {
        out.push(image_json(region, &image.expect("DescribeImages")));
    }
    sort_images(&mut out);
    out
}

fn ids(images: &Value) -> Vec<&str> {
    images
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|i| i["image_id"].as_str().expect("image_id"))
        .collect()
}

fn list(args: &[&str]) -> Value {
    let mut a = vec!["list"];
    a.extend(args);
    common::json(&a)
}

/// DescribeInstanceTypes asked directly, every page.
async fn direct_instance_types(
    region: &str,
    names: &[&str],
    filters: &[(&str, &str)],
) -> Vec<InstanceTypeInfo> {
    let mut req = ec2(region)
        .await
        .describe_instance_types()
        .set_instance_types(
            (!names.is_empty()).then(|| names.iter().map(|n| (*n).into()).collect()),
        );
    for (name, value) in filters {
        req = req.filters(filter(name, value));
    }
    let mut pages = req.into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(t) = pages.next().await {
        out.push(t.expect("DescribeInstanceTypes"));
    }
    out
}

/// The types DescribeInstanceTypeOfferings says `region` offers.
async fn direct_offerings(region: &str) -> BTreeSet<String> {
    let mut pages = ec2(region)
        .await
        .describe_instance_type_offerings()
        .location_type(LocationType::Region)
        .filters(filter("location", region))
        .into_paginator()
        .items()
        .send();
    let mut out = BTreeSet::new();
    while let Some(o) = pages.next().await {
        let o = o.expect("DescribeInstanceTypeOfferings");
        out.insert(
            o.instance_type()
                .expect("offering type")
                .as_str()
                .to_string(),
        );
    }
    out
}

/// An SDK instance type as `compat --instance-type --output json` must print it.
fn instance_type_json(t: &InstanceTypeInfo) -> Value {
    json!({
        "instance_type": t.instance_type().map(|t| t.as_str()),
        "supported_virtualization_types": t.supported_virtualization_types().iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        "supported_architectures": t.processor_info().map(|p| p.supported_architectures().iter().map(|a| a.as_str()).collect::<Vec<_>>()).unwrap_or_default(),
        "hypervisor": t.hypervisor().map(|h| h.as_str()),
        "ena_support": t.network_info().and_then(|n| n.ena_support()).map_or("unsupported", |e| e.as_str()),
        "nvme_support": t.ebs_info().and_then(|e| e.nvme_support()).map_or("unsupported", |n| n.as_str()),
        "boot_modes": t.supported_boot_modes().iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "current_generation": t.current_generation().unwrap_or(false),
    })
}

fn vcpus(t: &InstanceTypeInfo) -> i32 {
    t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap_or(0)
}

fn memory_mib(t: &InstanceTypeInfo) -> i64 {
    t.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0)
}

/// A seeded PV machine image on EBS of `region`, found by its seed name.
async fn seeded_pv_ami(region: &str) -> String {
    let found = direct_images(
        region,
        &[
            ("name", "debian-wheezy-amd64-pvm-2015-01-28-ebs"),
            ("virtualization-type", "paravirtual"),
        ],
        Some("self"),
    )
    .await;
    assert_eq!(
        found.len(),
        1,
        "the seeded Debian PV image of {region}: {found:?}"
    );
    let image = &found[0];
    assert_eq!(image["root_device_type"], "ebs");
    assert!(image["kernel_id"].is_string(), "{image}");
    image["image_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn list_pv_is_exactly_the_paravirtual_images_of_each_region() {
    localstack();
    // Seeded PV regions (both partitions the hooks serve as themselves), and
    // eu-north-1, which has only moto's two default PV images.
    for region in [
        "us-east-1",
        "eu-central-1",
        "ap-southeast-2",
        "cn-north-1",
        "us-gov-west-1",
        "eu-north-1",
    ] {
        let got = list(&["--virtualization", "pv", "--region", region]);
        let want = direct_images(region, &[("virtualization-type", "paravirtual")], None).await;
        assert!(!want.is_empty(), "{region}: EC2 has no PV image");
        assert!(want
            .iter()
            .all(|i| i["virtualization_type"] == "paravirtual"));
        assert_eq!(got, Value::Array(want), "{region}");
    }
}

#[tokio::test]
async fn list_pv_regions_is_every_pv_region_sorted_by_region_then_date() {
    localstack();
    let got = list(&["--virtualization", "pv", "--pv-regions"]);
    let mut want = Vec::new();
    for region in PV_REGIONS {
        let images = direct_images(region, &[("virtualization-type", "paravirtual")], None).await;
        assert!(
            images.iter().any(|i| i["image_type"] == "kernel"),
            "{region}: no AKI seeded"
        );
        assert!(
            images.iter().any(|i| i["kernel_id"].is_string()),
            "{region}: no PV image with a kernel"
        );
        want.extend(images);
    }
    let regions: Vec<&str> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["region"].as_str().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(regions, PV_REGIONS);
    // direct_images sorts each region; regions follow in PV_REGIONS order.
    assert_eq!(got, Value::Array(want));
}

#[test]
fn json_objects_have_exactly_the_fifteen_keys_in_order() {
    localstack();
    for args in [
        &[
            "list",
            "--virtualization",
            "pv",
            "--pv-regions",
            "--output",
            "json",
        ][..],
        // Everything of one region: moto's defaults, seeded HVM and PV images, AKIs.
        &["list", "--region", "eu-west-1", "--output", "json"][..],
    ] {
        let r = common::ok(args);
        let count = r.json().as_array().unwrap().len();
        assert!(count > 10, "{args:?}: {count} images");
        let objects = key_order(&r.stdout);
        assert_eq!(objects.len(), count, "{args:?}");
        for keys in objects {
            assert_eq!(keys, IMAGE_KEYS, "{args:?}");
        }
    }
}

/// amitool's flags, the EC2 filters that mean the same, and the owner.
type FilterCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Option<&'a str>);

#[tokio::test]
async fn list_filters_agree_with_ec2() {
    localstack();
    for region in ["us-west-2", "eu-central-1"] {
        let pv = [("virtualization-type", "paravirtual")];
        let machines =
            direct_images(region, &[pv[0], ("image-type", "machine")], Some("self")).await;
        let aki = machines
            .iter()
            .find_map(|i| i["kernel_id"].as_str())
            .expect("a seeded PV image with a kernel")
            .to_string();
        let cases: Vec<FilterCase> = vec![
            (vec!["--owner", "self"], vec![], Some("self")),
            (vec!["--owner", "amazon"], vec![], Some("amazon")),
            (vec!["--arch", "i386"], vec![("architecture", "i386")], None),
            (vec!["--name", "ubuntu*"], vec![("name", "ubuntu*")], None),
            (
                vec!["--image-type", "kernel"],
                vec![("image-type", "kernel")],
                None,
            ),
            (vec!["--kernel", &aki], vec![("kernel-id", &aki)], None),
            (
                vec![
                    "--virtualization",
                    "pv",
                    "--owner",
                    "self",
                    "--arch",
                    "i386",
                ],
                vec![pv[0], ("architecture", "i386")],
                Some("self"),
            ),
            (
                vec!["--virtualization", "hvm", "--owner", "self"],
                vec![("virtualization-type", "hvm")],
                Some("self"),
            ),
        ];
        for (flags, filters, owner) in cases {
            let mut args = vec!["--region", region];
            args.extend(flags.iter());
            let want = direct_images(region, &filters, owner).await;
            assert!(
                !want.is_empty(),
                "{region} {flags:?}: EC2 has no such image, the case proves nothing"
            );
            assert_eq!(list(&args), Value::Array(want), "{region} {flags:?}");
        }
    }
}

#[tokio::test]
async fn seeding_is_per_region() {
    localstack();
    let us = seeded_pv_ami("us-east-1").await;
    let eu = seeded_pv_ami("eu-central-1").await;
    assert_ne!(us, eu);
    // Not in eu-central-1's listing, and EC2 itself does not know it there.
    let frankfurt = list(&["--region", "eu-central-1"]);
    assert!(ids(&frankfurt).contains(&eu.as_str()));
    assert!(
        !ids(&frankfurt).contains(&us.as_str()),
        "{us} leaked into eu-central-1"
    );
    let err = ec2("eu-central-1")
        .await
        .describe_images()
        .image_ids(&us)
        .send()
        .await
        .expect_err("us-east-1's image in eu-central-1");
    let code = aws_sdk_ec2::error::ProvideErrorMetadata::code(&err);
    assert_eq!(code, Some("InvalidAMIID.NotFound"), "{err:?}");
    let r = run(amitool().args([
        "--region",
        "eu-central-1",
        "compat",
        "--ami",
        &us,
        "--instance-type",
        "m3.medium",
    ]));
    assert_one_line_error(&r, 2, "us-east-1's AMI in eu-central-1");
    assert!(
        r.stderr
            .contains(&format!("no such image {us} in eu-central-1")),
        "{}",
        r.stderr
    );
    // The AKIs are per region too.
    let us_akis = list(&["--region", "us-east-1", "--image-type", "kernel"]);
    let eu_akis = list(&["--region", "eu-central-1", "--image-type", "kernel"]);
    let (us_akis, eu_akis) = (ids(&us_akis), ids(&eu_akis));
    assert!(!us_akis.is_empty() && !eu_akis.is_empty());
    assert!(
        us_akis.iter().all(|k| !eu_akis.contains(k)),
        "{us_akis:?} / {eu_akis:?}"
    );
}

/// `compat --virtualization V --region R` against EC2: the offered types that
/// support V, smallest first, with their facts.
async fn check_accepting(region: &str, virt: &str, ec2_virt: &str) -> Vec<String> {
    let got = common::json(&["compat", "--virtualization", virt, "--region", region]);
    let offered = direct_offerings(region).await;
    let mut want: Vec<InstanceTypeInfo> =
        direct_instance_types(region, &[], &[("supported-virtualization-type", ec2_virt)])
            .await
            .into_iter()
            .filter(|t| offered.contains(t.instance_type().unwrap().as_str()))
            .collect();
    want.sort_by_key(|t| {
        (
            vcpus(t),
            memory_mib(t),
            t.instance_type().unwrap().as_str().to_string(),
        )
    });
    assert!(!want.is_empty(), "{region}: EC2 offers no {ec2_virt} type");
    let want: Vec<Value> = want
        .iter()
        .map(|t| {
            let mut v = instance_type_json(t);
            let o = v.as_object_mut().unwrap();
            o.insert("region".into(), region.into());
            o.insert("vcpus".into(), vcpus(t).into());
            o.insert("memory_mib".into(), memory_mib(t).into());
            v
        })
        .collect();
    assert_eq!(
        got,
        Value::Array(want),
        "compat --virtualization {virt} --region {region}"
    );
    let names: Vec<String> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["instance_type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().all(|n| offered.contains(n)),
        "a type not offered in {region}"
    );
    assert!(
        got.as_array()
            .unwrap()
            .iter()
            .all(|t| t["supported_virtualization_types"]
                .as_array()
                .unwrap()
                .contains(&ec2_virt.into())),
        "a type without {ec2_virt}"
    );
    names
}

#[tokio::test]
async fn compat_lists_the_offered_types_smallest_first() {
    localstack();
    let pv = check_accepting("eu-central-1", "pv", "paravirtual").await;
    assert_eq!(pv[0], "m3.medium", "{pv:?}");
    for gone in ["t1.micro", "m1.small"] {
        assert!(
            !pv.iter().any(|t| t == gone),
            "{gone} is not offered in eu-central-1"
        );
    }
    let hvm = check_accepting("eu-central-1", "hvm", "hvm").await;
    assert!(
        ["t2.nano", "t2.micro"].contains(&hvm[0].as_str()),
        "{:?}",
        &hvm[..5]
    );
}

#[tokio::test]
async fn compat_instance_types_are_ec2s_facts() {
    localstack();
    let names = ["m3.medium", "t2.micro", "m5.large"];
    let r = common::ok(&[
        "compat",
        "--instance-type",
        "m3.medium",
        "t2.micro",
        "m5.large",
        "--output",
        "json",
    ]);
    for keys in key_order(&r.stdout) {
        assert_eq!(keys, INSTANCE_TYPE_KEYS);
    }
    let mut direct = direct_instance_types(HOME_REGION, &names, &[]).await;
    // In the order asked.
    direct.sort_by_key(|t| {
        names
            .iter()
            .position(|n| *n == t.instance_type().unwrap().as_str())
    });
    let want: Vec<Value> = direct.iter().map(instance_type_json).collect();
    let got = r.json();
    assert_eq!(got, Value::Array(want));
    // What the facts are, so that a wrong SDK mapping cannot agree with itself.
    assert_eq!(
        got[0]["supported_virtualization_types"],
        json!(["hvm", "paravirtual"])
    );
    assert_eq!(got[1]["supported_virtualization_types"], json!(["hvm"]));
    assert_eq!(
        (
            &got[2]["hypervisor"],
            &got[2]["ena_support"],
            &got[2]["nvme_support"]
        ),
        (&json!("nitro"), &json!("required"), &json!("required"))
    );
}

#[tokio::test]
async fn compat_ami_verdicts() {
    localstack();
    let ami = seeded_pv_ami(HOME_REGION).await;
    let verdict = |itype: &str| {
        let r = run(amitool().args([
            "compat",
            "--ami",
            &ami,
            "--instance-type",
            itype,
            "--output",
            "json",
        ]));
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
        let v = r.json();
        let keys: BTreeSet<&str> = v
            .as_object()
            .expect("one object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "compatible",
                "image_id",
                "instance_type",
                "reasons",
                "region"
            ])
        );
        assert_eq!(v["image_id"], ami.as_str());
        assert_eq!(v["instance_type"], itype);
        assert_eq!(v["region"], HOME_REGION);
        let reasons: Vec<String> = v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        (r.code, v["compatible"].as_bool().unwrap(), reasons)
    };
    let kinds = |reasons: &[String]| -> Vec<String> {
        reasons
            .iter()
            .map(|r| r.split(':').next().unwrap().to_string())
            .collect()
    };

    let (code, compatible, reasons) = verdict("m3.medium");
    assert_eq!((code, compatible), (Some(0), true), "{reasons:?}");
    assert!(reasons.is_empty(), "{reasons:?}");

    let (code, compatible, reasons) = verdict("t2.micro");
    assert_eq!((code, compatible), (Some(1), false));
    assert_eq!(kinds(&reasons), ["virtualization"], "{reasons:?}");
    assert!(
        reasons[0].contains("paravirtual") && reasons[0].contains("t2.micro"),
        "{reasons:?}"
    );

    let (code, compatible, reasons) = verdict("m5.large");
    assert_eq!((code, compatible), (Some(1), false));
    assert_eq!(
        kinds(&reasons),
        ["virtualization", "ena", "nvme"],
        "{reasons:?}"
    );

    // The table says the same, with the same exit code.
    let r = run(amitool().args(["compat", "--ami", &ami, "--instance-type", "m5.large"]));
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    // Seeded ids are fixed (sha256 of the region), so no redaction is needed.
    insta::assert_snapshot!("compat_ami_m5_large_table", r.stdout);
}

#[tokio::test]
async fn kernels_of_a_region_are_its_akis() {
    localstack();
    let region = "eu-central-1";
    let got = common::json(&["kernels", "--region", region]);
    let want = direct_images(region, &[("image-type", "kernel")], Some("amazon")).await;
    assert!(!want.is_empty());
    let pairs = |v: &[Value], id: &str| -> BTreeSet<(String, String)> {
        v.iter()
            .map(|k| {
                (
                    k[id].as_str().unwrap().to_string(),
                    k["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        pairs(got.as_array().unwrap(), "kernel_id"),
        pairs(&want, "image_id")
    );
    assert!(got
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["region"] == region));
    // The seed is the built-in table: live and offline list the same kernels.
    let offline = common::json(&["kernels", "--offline", "--region", region]);
    assert_eq!(
        pairs(got.as_array().unwrap(), "kernel_id"),
        pairs(offline.as_array().unwrap(), "kernel_id")
    );
    let table = common::ok(&["kernels", "--region", region]).stdout;
    insta::assert_snapshot!("kernels_live_eu_central_1_table", table);
}

/// `pv-grub-hd0_1.05-x86_64.gz` -> ("hd0", "x86_64").
fn flavor_arch(name: &str) -> (String, String) {
    let rest = name
        .strip_prefix("pv-grub-")
        .expect(name)
        .trim_end_matches(".gz");
    let (flavor, rest) = rest.split_once('_').expect(name);
    let (_, arch) = rest.split_once('-').expect(name);
    (flavor.to_string(), arch.to_string())
}

#[test]
fn kernels_match_live_agrees_with_offline() {
    localstack();
    let table: Value = serde_json::from_str(include_str!("../../data/kernels.json")).unwrap();
    let kernels = table["kernels"].as_array().unwrap();
    let in_region =
        |r: &str| -> Vec<&Value> { kernels.iter().filter(|k| k["region"] == r).collect() };
    let targets: BTreeSet<(String, String)> = in_region("eu-central-1")
        .iter()
        .map(|k| flavor_arch(k["name"].as_str().unwrap()))
        .collect();
    let (mut matched, mut unmatched) = (0, 0);
    for kernel in in_region("us-east-1") {
        let id = kernel["kernel_id"].as_str().unwrap();
        let args = [
            "kernels",
            "match",
            id,
            "--from",
            "us-east-1",
            "--to",
            "eu-central-1",
            "--output",
            "json",
        ];
        let live = run(amitool().args(args));
        let offline = run(amitool()
            .args(args)
            .arg("--offline")
            .env("AWS_ENDPOINT_URL", common::NOWHERE));
        if targets.contains(&flavor_arch(kernel["name"].as_str().unwrap())) {
            matched += 1;
            let (l, o) = (live.json(), offline.json());
            assert_eq!(
                (live.code, offline.code),
                (Some(0), Some(0)),
                "{id}: {} / {}",
                live.stderr,
                offline.stderr
            );
            assert_eq!(l["match"]["kernel_id"], o["match"]["kernel_id"], "{id}");
            assert_eq!(l["match"], o["match"], "{id}");
            assert_eq!(l["rule"], o["rule"], "{id}");
            assert_eq!(
                (l["source"].as_str(), o["source"].as_str()),
                (Some("live"), Some("offline")),
                "{id}"
            );
            assert_eq!(l["kernel_id"], id);
        } else {
            // No kernel of that flavor and architecture in eu-central-1 (hd00).
            unmatched += 1;
            assert_one_line_error(&live, 1, &format!("{id} live"));
            assert_one_line_error(&offline, 1, &format!("{id} offline"));
        }
    }
    assert!(
        matched >= 4 && unmatched >= 1,
        "{matched} matched, {unmatched} without a counterpart"
    );
}

#[test]
fn bad_input_is_one_line_with_the_right_exit_code() {
    localstack();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["list", "--region", "xx-fake-1"],
            2,
            "unknown region \"xx-fake-1\"",
        ),
        (&["list", "--region", "moon"], 2, "unknown region \"moon\""),
        (
            &[
                "compat",
                "--ami",
                "ami-nothex",
                "--instance-type",
                "m3.medium",
            ],
            2,
            "ami-nothex",
        ),
        (&["list", "--kernel", "aki-zz"], 2, "aki-zz"),
        (
            &[
                "kernels",
                "match",
                "aki-123",
                "--from",
                "us-east-1",
                "--to",
                "eu-west-1",
            ],
            2,
            "aki-123",
        ),
        (&["compat", "--instance-type", "m9.huge"], 2, "m9.huge"),
        (
            &["compat", "--instance-type", "m3.medium", "m9.huge"],
            2,
            "m9.huge",
        ),
        (
            &[
                "compat",
                "--ami",
                "ami-0123456789abcdef0",
                "--instance-type",
                "m3.medium",
            ],
            2,
            "no such image ami-0123456789abcdef0 in us-east-1",
        ),
        (
            &[
                "kernels",
                "match",
                "aki-0123456789abcdef0",
                "--from",
                "us-east-1",
                "--to",
                "eu-west-1",
            ],
            2,
            "aki-0123456789abcdef0",
        ),
        (
            &["list", "--endpoint-url", common::NOWHERE],
            1,
            "127.0.0.1:9",
        ),
        (
            &[
                "compat",
                "--virtualization",
                "pv",
                "--endpoint-url",
                common::NOWHERE,
            ],
            1,
            "127.0.0.1:9",
        ),
    ];
    for (args, code, says) in cases {
        let r = run(amitool().args(*args));
        assert_one_line_error(&r, *code, &format!("{args:?}"));
        assert!(
            r.stderr.contains(says),
            "{args:?} should say {says:?}: {}",
            r.stderr
        );
        assert!(
            r.stdout.trim().is_empty(),
            "{args:?} printed a result: {}",
            r.stdout
        );
    }
}

#[test]
fn missing_credentials_is_one_line() {
    localstack();
    let home = tempfile::tempdir().unwrap();
    let r = run(assert_cmd::Command::new(env!("CARGO_BIN_EXE_amitool"))
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args([
            "--no-progress",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &common::endpoint(),
            "list",
        ]));
    assert_one_line_error(&r, 1, "no credentials");
    assert!(r.stderr.contains("credentials"), "{}", r.stderr);
}

#[test]
fn snapshots_of_seeded_selections() {
    localstack();
    // Seeded images only: their dates and ids are fixed (moto's defaults are dated today).
    let args = [
        "list",
        "--virtualization",
        "pv",
        "--region",
        "eu-central-1",
        "--name",
        "debian*",
    ];
    insta::assert_snapshot!(
        "list_pv_debian_eu_central_1_table",
        common::ok(&args).stdout
    );
    let json = common::ok(&[&args[..], &["--output", "json"]].concat()).stdout;
    insta::assert_snapshot!("list_pv_debian_eu_central_1_json", json);
    let args = ["list", "--pv-regions", "--name", "legacy-webapp-pv-*"];
    insta::assert_snapshot!(
        "list_legacy_webapp_pv_regions_table",
        common::ok(&args).stdout
    );
}

/// `-v` shows each AWS call as it ends (service, operation, region, outcome,
/// duration), in plain text when stderr is not a terminal; `-vv` the SDK's
/// own logs, also without colour codes; none of it without -v.
#[test]
fn verbose_shows_each_aws_call_without_colour_codes_in_a_log() {
    localstack();
    let r = run(amitool().args(["-v", "list", "--region", "eu-west-1", "--owner", "self"]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let call = r
        .stderr
        .lines()
        .find(|l| l.contains("EC2 DescribeImages in eu-west-1: ok in "))
        .unwrap_or_else(|| panic!("no call line in\n{}", r.stderr));
    assert!(call.trim_end().ends_with(" ms"), "{call}");
    let vv = run(amitool().args(["-vv", "list", "--region", "eu-west-1", "--owner", "self"]));
    assert_eq!(vv.code, Some(0));
    assert!(
        vv.stderr.contains("aws_smithy_runtime"),
        "the SDK's own logs"
    );
    assert!(!vv.stderr.contains('\u{1b}'), "colour codes in a log");
    let quiet = run(amitool().args(["list", "--region", "eu-west-1", "--owner", "self"]));
    assert!(quiet.stderr.is_empty(), "{}", quiet.stderr);
}
