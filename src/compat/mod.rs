//! Which instance types accept which images, and why not.

use serde::Serialize;

use crate::catalog;
use crate::model::{Image, InstanceType, Virtualization};

/// The verdict of `compat --ami AMI --instance-type T`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub image_id: String,
    pub instance_type: String,
    pub region: String,
    pub compatible: bool,
    pub reasons: Vec<String>,
}

/// Facts about the target a rule needs beyond the image and the type.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Whether the region ever offered paravirtual instances (from the built-in table).
    pub region_has_pv: Option<bool>,
    /// Whether the type is offered in the region; `None` when unknown (offline).
    pub offered_in_region: Option<bool>,
}

/// What AWS assumes when an image has no BootMode: legacy BIOS on x86, UEFI on Arm.
fn effective_boot_mode(image: &Image) -> &str {
    match image.boot_mode.as_deref() {
        Some(m) => m,
        None if image.architecture.as_deref() == Some("arm64") => "uefi",
        None => "legacy-bios",
    }
}

/// Every reason `image` cannot run on `itype` in its region; empty when it can.
pub fn reasons(image: &Image, itype: &InstanceType, placement: &Placement) -> Vec<String> {
    let t = &itype.instance_type;
    let mut out = Vec::new();
    let virt = image.virtualization_type;
    if let Some(v) = virt {
        if !itype.accepts(v) {
            out.push(format!(
                "virtualization: the image is {v}; {t} supports only {}",
                join(
                    itype
                        .supported_virtualization_types
                        .iter()
                        .map(|v| v.as_str())
                )
            ));
        }
    }
    if let Some(arch) = image.architecture.as_deref() {
        if !itype.supported_architectures.iter().any(|a| a == arch) {
            out.push(format!(
                "architecture: the image is {arch}; {t} supports {}",
                join(itype.supported_architectures.iter().map(String::as_str))
            ));
        }
    }
    let ena = image.ena_support == Some(true);
    if itype.ena_support == "required" && !ena {
        out.push(format!(
            "ena: {t} requires the Elastic Network Adapter and the image does not have EnaSupport set"
        ));
    }
    if itype.nvme_support == "required" {
        let why = if virt == Some(Virtualization::Paravirtual) {
            Some("a paravirtual image boots from Xen block devices (xvd*), never from NVMe")
        } else if !ena {
            Some("the image is not marked for Nitro (no EnaSupport), so its kernel may lack the nvme driver")
        } else {
            None
        };
        if let Some(why) = why {
            out.push(format!(
                "nvme: {t} attaches EBS volumes only as NVMe; {why}"
            ));
        }
    }
    let mode = effective_boot_mode(image);
    let mode_ok = match mode {
        "uefi-preferred" => !itype.boot_modes.is_empty(),
        m => itype.boot_modes.iter().any(|b| b == m),
    };
    if !mode_ok && !itype.boot_modes.is_empty() {
        out.push(format!(
            "boot mode: the image boots with {mode}; {t} supports {}",
            join(itype.boot_modes.iter().map(String::as_str))
        ));
    }
    if virt == Some(Virtualization::Paravirtual) && placement.region_has_pv == Some(false) {
        out.push(format!(
            "region: {} never offered paravirtual instances",
            image.region
        ));
    }
    if placement.offered_in_region == Some(false) {
        out.push(format!("offering: {t} is not offered in {}", image.region));
    }
    out
}

/// Why an HVM image whose default kernel has `d` at boot cannot mount its
/// root on `itype`: Nitro types give it an NVMe disk, Xen types a xen-blkfront one.
pub fn driver_reasons(itype: &InstanceType, d: &crate::image::inspect::Drivers) -> Vec<String> {
    let t = &itype.instance_type;
    let mut out = vec![];
    if itype.nvme_support == "required" && !d.nvme {
        out.push(format!(
            "nvme: {t} gives the root disk as NVMe and the image's initramfs cannot mount it (no nvme in the initramfs, not built in): add it with dracut -f --add-drivers nvme or update-initramfs -u, then migrate again"
        ));
    }
    if itype.hypervisor.as_deref() == Some("xen") && !d.xen_blkfront {
        out.push(format!(
            "xen-blkfront: {t} is a Xen HVM type and the image's initramfs has no xen-blkfront (nor built in) to mount its root"
        ));
    }
    out
}

pub fn verdict(image: &Image, itype: &InstanceType, placement: &Placement) -> Verdict {
    let reasons = reasons(image, itype, placement);
    Verdict {
        image_id: image.image_id.clone(),
        instance_type: itype.instance_type.clone(),
        region: image.region.clone(),
        compatible: reasons.is_empty(),
        reasons,
    }
}

/// From the built-in table: did `region` ever offer PV? `None` for a region the table does not know.
pub fn region_has_pv(region: &str) -> Option<bool> {
    catalog::compat().region(region).map(|r| r.pv)
}

/// The types of `types` that accept `virt` (and `arch` when given), smallest first.
pub fn accepting<'a>(
    types: impl IntoIterator<Item = &'a InstanceType>,
    virt: Virtualization,
    arch: Option<&str>,
) -> Vec<InstanceType> {
    let mut out: Vec<InstanceType> = types
        .into_iter()
        .filter(|t| t.accepts(virt))
        .filter(|t| arch.is_none_or(|a| t.supported_architectures.iter().any(|x| x == a)))
        .cloned()
        .collect();
    out.sort_by_key(InstanceType::size_key);
    out
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        "nothing".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv_image() -> Image {
        Image {
            region: "eu-central-1".into(),
            image_id: "ami-12345678".into(),
            virtualization_type: Some(Virtualization::Paravirtual),
            architecture: Some("x86_64".into()),
            ..Default::default()
        }
    }

    fn itype(name: &str) -> InstanceType {
        catalog::compat().instance_type(name).unwrap().clone()
    }

    #[test]
    fn pv_on_m3_medium_is_fine() {
        let v = verdict(
            &pv_image(),
            &itype("m3.medium"),
            &Placement {
                region_has_pv: Some(true),
                offered_in_region: Some(true),
            },
        );
        assert!(v.compatible, "{:?}", v.reasons);
    }

    #[test]
    fn pv_on_t2_micro_fails_on_virtualization_only() {
        let r = reasons(&pv_image(), &itype("t2.micro"), &Placement::default());
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].starts_with(
                "virtualization: the image is paravirtual; t2.micro supports only hvm"
            ),
            "{r:?}"
        );
    }

    #[test]
    fn pv_on_nitro_fails_for_every_reason() {
        let r = reasons(
            &pv_image(),
            &itype("m5.large"),
            &Placement {
                region_has_pv: Some(true),
                offered_in_region: Some(true),
            },
        );
        let kinds: Vec<&str> = r.iter().map(|s| s.split(':').next().unwrap()).collect();
        assert_eq!(kinds, ["virtualization", "ena", "nvme"], "{r:?}");
    }

    #[test]
    fn hvm_without_ena_on_nitro() {
        let img = Image {
            virtualization_type: Some(Virtualization::Hvm),
            ..pv_image()
        };
        let r = reasons(&img, &itype("m5.large"), &Placement::default());
        assert_eq!(r.len(), 2, "{r:?}");
        let img = Image {
            ena_support: Some(true),
            ..img
        };
        assert!(reasons(&img, &itype("m5.large"), &Placement::default()).is_empty());
    }

    #[test]
    fn architecture_boot_mode_region_and_offering() {
        let img = Image {
            virtualization_type: Some(Virtualization::Hvm),
            architecture: Some("arm64".into()),
            ..pv_image()
        };
        let r = reasons(&img, &itype("t2.micro"), &Placement::default());
        assert!(
            r.iter()
                .any(|s| s.starts_with("architecture: the image is arm64")),
            "{r:?}"
        );
        assert!(
            r.iter()
                .any(|s| s.starts_with("boot mode: the image boots with uefi")),
            "{r:?}"
        );

        let img = Image {
            region: "eu-north-1".into(),
            ..pv_image()
        };
        let r = reasons(
            &img,
            &itype("m3.medium"),
            &Placement {
                region_has_pv: region_has_pv("eu-north-1"),
                offered_in_region: Some(false),
            },
        );
        assert!(
            r.iter()
                .any(|s| s == "region: eu-north-1 never offered paravirtual instances"),
            "{r:?}"
        );
        assert!(
            r.iter()
                .any(|s| s == "offering: m3.medium is not offered in eu-north-1"),
            "{r:?}"
        );
    }

    #[test]
    fn cheapest_pv_and_hvm_choices() {
        let all: Vec<InstanceType> = catalog::compat()
            .instance_types
            .iter()
            .map(|t| t.info.clone())
            .collect();
        let pv = accepting(&all, Virtualization::Paravirtual, Some("x86_64"));
        assert!(pv
            .iter()
            .all(|t| catalog::compat().is_pv_family(&t.instance_type)));
        assert!(!pv.is_empty());
        let hvm = accepting(&all, Virtualization::Hvm, Some("x86_64"));
        assert!(hvm.windows(2).all(|w| w[0].size_key() <= w[1].size_key()));
    }
}
