//! The successor of a PV instance type: the smallest instance type offered
//! in the region that is current generation, runs HVM and the image
//! (architecture; ENA and NVMe readiness when the inspection knows them),
//! has at least the source's vCPUs and memory, and keeps the workload's
//! class: t1 → burstable (t3), m1/m3 → general purpose (an m family, or t3
//! for the small sizes), c1/c3 → compute (a c family), m2 → memory (an r
//! family), hs1 → memory (no current family has its dense HDD storage).
//! Every choice says why, in words an operator can check.

use crate::model::{InstanceType, Virtualization};

mod lookup;
pub use lookup::{
    add_successors, candidates, check_family, needs_of, replacement_type, source_type,
};

/// What the image needs of its next instance type.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    pub architecture: String,
    /// Whether the image's default kernel has an ena driver; `None`: unknown.
    pub ena: Option<bool>,
    /// Whether its initramfs can mount an NVMe root; `None`: unknown.
    pub nvme: Option<bool>,
}

/// The class of a family, and the families that keep it (newest first).
pub fn class_of(family: &str) -> Option<(&'static str, &'static [&'static str])> {
    const GENERAL: &[&str] = &["m7i", "m6i", "m5", "t3"];
    Some(match family {
        "t1" | "t2" | "t3" | "t3a" => ("burstable", &["t3"]),
        "m1" | "m3" | "m4" | "m5" | "m6i" | "m7i" => ("general purpose", GENERAL),
        "c1" | "c3" | "c4" | "c5" | "c6i" => ("compute optimized", &["c6i", "c5"]),
        "m2" | "r3" | "r4" | "r5" | "hs1" => ("memory optimized", &["r5"]),
        _ => return None,
    })
}

fn family(t: &str) -> &str {
    t.split('.').next().unwrap_or_default()
}

fn gib(mib: i64) -> String {
    let g = mib as f64 / 1024.0;
    if (g - g.round()).abs() < 0.05 {
        format!("{} GiB", g.round())
    } else {
        format!("{g:.2} GiB")
    }
}

/// Why `t` cannot take the image, or `None` when it can.
fn unfit(t: &InstanceType, needs: &Needs) -> Option<String> {
    if !t.current_generation {
        return Some("previous generation".into());
    }
    if !t.accepts(Virtualization::Hvm) {
        return Some("no HVM".into());
    }
    if !t.supported_architectures.contains(&needs.architecture) {
        return Some(format!("no {}", needs.architecture));
    }
    if t.ena_support == "required" && needs.ena == Some(false) {
        return Some("needs ENA, and the image's kernel has no ena driver".into());
    }
    if t.nvme_support == "required" && needs.nvme == Some(false) {
        return Some("EBS over NVMe, and the image's initramfs cannot mount an NVMe root".into());
    }
    None
}

/// The successor of `source` among `offered` (the region's types), or why
/// there is none. `family_override` replaces the class's families.
pub fn successor(
    source: &InstanceType,
    needs: &Needs,
    offered: &[InstanceType],
    family_override: Option<&str>,
) -> Result<(String, Vec<String>), String> {
    let src_family = family(&source.instance_type);
    let (class, families): (String, Vec<String>) = match family_override {
        Some(f) => (
            format!("the {f} family (--successor-family)"),
            vec![f.to_string()],
        ),
        None => {
            let (c, fams) = class_of(src_family).ok_or_else(|| {
                format!(
                    "{} is of no class amitool knows: give --successor-family",
                    source.instance_type
                )
            })?;
            (c.to_string(), fams.iter().map(|s| s.to_string()).collect())
        }
    };
    let mut reasons = vec![format!(
        "{} has {} vCPU and {}: at least that",
        source.instance_type,
        source.vcpus,
        gib(source.memory_mib)
    )];
    let mut fitting: Vec<&InstanceType> = offered
        .iter()
        .filter(|t| families.iter().any(|f| f == family(&t.instance_type)))
        .filter(|t| t.vcpus >= source.vcpus && t.memory_mib >= source.memory_mib)
        .filter(|t| unfit(t, needs).is_none())
        .collect();
    // Smallest first; at one size the class's first family (newest, and a
    // fixed-performance family before burstable t3 for general purpose).
    let rank = |t: &InstanceType| {
        families
            .iter()
            .position(|f| f == family(&t.instance_type))
            .unwrap_or(usize::MAX)
    };
    fitting.sort_by_key(|t| (t.vcpus, t.memory_mib, rank(t), t.instance_type.clone()));
    let Some(best) = fitting.first() else {
        let near: Vec<String> = offered
            .iter()
            .filter(|t| families.iter().any(|f| f == family(&t.instance_type)))
            .filter_map(|t| unfit(t, needs).map(|why| format!("{}: {why}", t.instance_type)))
            .take(3)
            .collect();
        return Err(format!(
            "no instance type of {class} ({}) offered here has {} vCPU and {} and runs the image{}",
            families.join(", "),
            source.vcpus,
            gib(source.memory_mib),
            if near.is_empty() {
                String::new()
            } else {
                format!(" ({})", near.join("; "))
            }
        ));
    };
    reasons.push(format!(
        "keeps the class: {} ({class}: {})",
        src_family,
        families.join(", ")
    ));
    reasons.push(format!(
        "{} is the smallest that fits: {} vCPU, {}, current generation, HVM, {}",
        best.instance_type,
        best.vcpus,
        gib(best.memory_mib),
        needs.architecture
    ));
    match (needs.ena, best.ena_support.as_str()) {
        (None, "required") => reasons.push(
            "it needs ENA: the image's driver is unknown here (amitool inspect the image)".into(),
        ),
        (Some(true), _) => reasons.push("the image's kernel has an ena driver".into()),
        _ => {}
    }
    match (needs.nvme, best.nvme_support.as_str()) {
        (None, "required") => reasons.push(
            "its EBS volumes are NVMe: the image's initramfs is unknown here (amitool inspect the image)".into(),
        ),
        (Some(true), "required") => {
            reasons.push("the image's initramfs can mount an NVMe root".into())
        }
        _ => {}
    }
    if source.instance_store > best.instance_store {
        reasons.push(format!(
            "{} had {} instance-store volume(s) and {} has {}: their data does not move",
            source.instance_type, source.instance_store, best.instance_type, best.instance_store
        ));
    }
    Ok((best.instance_type.clone(), reasons))
}

/// The fstab lines that mount instance-store volumes: one of the first
/// `count` of EC2's default ephemeral devices (/dev/sdb to /dev/sde, or the
/// same as /dev/xvd*), or cloud-init's ephemeral mount (`comment=cloudconfig`).
pub fn instance_store_mounts(fstab: &str, count: u32) -> Vec<String> {
    let devices: Vec<String> = ["b", "c", "d", "e"]
        .iter()
        .take(count as usize)
        .flat_map(|l| [format!("/dev/sd{l}"), format!("/dev/xvd{l}")])
        .collect();
    fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            let dev = l.split_whitespace().next().unwrap_or_default();
            devices.iter().any(|d| d == dev)
                || (count > 0
                    && l.split_whitespace()
                        .nth(3)
                        .is_some_and(|o| o.contains("comment=cloudconfig")))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::compat;

    fn offline() -> Vec<InstanceType> {
        compat()
            .instance_types
            .iter()
            .map(|t| t.info.clone())
            .collect()
    }

    fn pick(source: &str) -> String {
        let all = offline();
        let src = all.iter().find(|t| t.instance_type == source).unwrap();
        let needs = Needs {
            architecture: "x86_64".into(),
            ena: Some(true),
            nvme: Some(true),
        };
        successor(src, &needs, &all, None).unwrap().0
    }

    #[test]
    fn every_retired_family_nano_to_8xlarge() {
        for (src, want) in [
            ("t1.micro", "t3.micro"),
            ("m1.small", "t3.small"),
            ("m1.medium", "t3.medium"),
            ("m1.large", "m7i.large"),
            ("m1.xlarge", "m7i.xlarge"),
            ("m3.medium", "t3.medium"),
            ("m3.large", "m7i.large"),
            ("m3.xlarge", "m7i.xlarge"),
            ("m3.2xlarge", "m7i.2xlarge"),
            ("c1.medium", "c6i.large"),
            ("c1.xlarge", "c6i.2xlarge"),
            ("c3.large", "c6i.large"),
            ("c3.xlarge", "c6i.xlarge"),
            ("c3.2xlarge", "c6i.2xlarge"),
            ("c3.4xlarge", "c6i.4xlarge"),
            ("c3.8xlarge", "c6i.8xlarge"),
            ("m2.xlarge", "r5.xlarge"),
            ("m2.2xlarge", "r5.2xlarge"),
            ("m2.4xlarge", "r5.4xlarge"),
            ("hs1.8xlarge", "r5.4xlarge"),
        ] {
            assert_eq!(pick(src), want, "{src}");
        }
    }

    #[test]
    fn reasons_name_the_rule_and_lost_instance_store() {
        let all = offline();
        let src = all.iter().find(|t| t.instance_type == "m1.xlarge").unwrap();
        let (t, why) = successor(
            src,
            &Needs {
                architecture: "x86_64".into(),
                ..Default::default()
            },
            &all,
            None,
        )
        .unwrap();
        assert_eq!(t, "m7i.xlarge");
        let all_why = why.join("\n");
        assert!(
            all_why.contains("m1.xlarge has 4 vCPU and 15 GiB"),
            "{all_why}"
        );
        assert!(all_why.contains("general purpose"), "{all_why}");
        assert!(all_why.contains("4 instance-store volume(s)"), "{all_why}");
        assert!(
            all_why.contains("ena driver is unknown") || all_why.contains("driver is unknown"),
            "{all_why}"
        );
    }

    #[test]
    fn fstab_entries_on_instance_store_are_found() {
        let fstab = "LABEL=/ / ext4 defaults 1 1\n/dev/xvdb\t/mnt\tauto\tdefaults,nofail,comment=cloudconfig\t0\t2\n/dev/sdc /data ext3 defaults 0 0\n# /dev/sdb /old ext3\n/dev/xvdf /srv ext4 defaults 0 2\n";
        assert_eq!(
            instance_store_mounts(fstab, 1),
            ["/dev/xvdb /mnt auto defaults,nofail,comment=cloudconfig 0 2"]
        );
        assert_eq!(instance_store_mounts(fstab, 2).len(), 2);
        assert!(instance_store_mounts(fstab, 0).is_empty());
    }

    #[test]
    fn an_image_without_ena_or_nvme_keeps_off_nitro() {
        let all = offline();
        let src = all.iter().find(|t| t.instance_type == "m1.large").unwrap();
        let needs = Needs {
            architecture: "x86_64".into(),
            ena: Some(false),
            nvme: Some(false),
        };
        // Every current general-purpose type here needs ENA: none fits.
        let err = successor(src, &needs, &all, None).unwrap_err();
        assert!(err.contains("no ena driver"), "{err}");
        // t2 runs it (Xen, no ENA needed), when asked for.
        let (t, _) = successor(src, &needs, &all, Some("t2")).unwrap();
        assert_eq!(t, "t2.large");
    }

    #[test]
    fn the_family_override_and_unknown_classes() {
        let all = offline();
        let src = all.iter().find(|t| t.instance_type == "c3.large").unwrap();
        let needs = Needs {
            architecture: "x86_64".into(),
            ena: Some(true),
            nvme: Some(true),
        };
        assert_eq!(
            successor(src, &needs, &all, Some("m5")).unwrap().0,
            "m5.large"
        );
        let mut odd = src.clone();
        odd.instance_type = "x9.large".into();
        assert!(successor(&odd, &needs, &all, None)
            .unwrap_err()
            .contains("--successor-family"));
        // arm64-only families never take an x86_64 image.
        assert!(successor(src, &needs, &all, Some("m6g")).is_err());
    }
}
