//! The facts amitool reasons about, as both backends report them: images and
//! instance types. These are the shapes of the JSON output too, so their field
//! names are part of the command-line contract.

use serde::{Deserialize, Serialize};

/// EC2's two virtualization types, spelled as EC2 spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Virtualization {
    Paravirtual,
    Hvm,
}

impl Virtualization {
    pub fn as_str(self) -> &'static str {
        match self {
            Virtualization::Paravirtual => "paravirtual",
            Virtualization::Hvm => "hvm",
        }
    }

    /// `pv` or `hvm`, for narrow table cells.
    pub fn short(self) -> &'static str {
        match self {
            Virtualization::Paravirtual => "pv",
            Virtualization::Hvm => "hvm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "paravirtual" | "pv" => Some(Virtualization::Paravirtual),
            "hvm" => Some(Virtualization::Hvm),
            _ => None,
        }
    }
}

impl std::fmt::Display for Virtualization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One machine, kernel or ramdisk image. The field names and order are the
/// `list --output json` contract; `None` prints as null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Image {
    pub region: String,
    pub image_id: String,
    pub name: Option<String>,
    pub virtualization_type: Option<Virtualization>,
    pub architecture: Option<String>,
    pub image_type: Option<String>,
    pub kernel_id: Option<String>,
    pub root_device_type: Option<String>,
    pub root_device_name: Option<String>,
    pub ena_support: Option<bool>,
    pub sriov_net_support: Option<String>,
    pub boot_mode: Option<String>,
    pub creation_date: Option<String>,
    pub state: Option<String>,
    pub owner_id: Option<String>,
}

impl Image {
    pub fn is_paravirtual(&self) -> bool {
        self.virtualization_type == Some(Virtualization::Paravirtual)
    }
}

/// What a client asks of `list`; both backends apply it, AWS partly server-side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageFilter {
    pub image_ids: Vec<String>,
    pub virtualization: Option<Virtualization>,
    /// `self`, `amazon`, or an account id.
    pub owner: Option<String>,
    pub architecture: Option<String>,
    /// A glob with `*` and `?`, as EC2's `name` filter takes it.
    pub name: Option<String>,
    pub image_type: Option<String>,
    pub kernel_id: Option<String>,
}

impl ImageFilter {
    /// Client-side check of every criterion except the owner (which needs the
    /// caller's account to resolve `self` and is applied by each backend).
    pub fn matches(&self, image: &Image) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| have.as_deref() == Some(w.as_str()))
        };
        (self.image_ids.is_empty() || self.image_ids.contains(&image.image_id))
            && self
                .virtualization
                .is_none_or(|v| image.virtualization_type == Some(v))
            && eq(&self.architecture, &image.architecture)
            && eq(&self.image_type, &image.image_type)
            && eq(&self.kernel_id, &image.kernel_id)
            && self.name.as_ref().is_none_or(|glob| {
                image
                    .name
                    .as_deref()
                    .is_some_and(|n| wildmatch::WildMatch::new(glob).matches(n))
            })
    }
}

/// One EBS volume attached to an instance (`instances` JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceVolume {
    pub device: String,
    pub volume_id: String,
    pub size_gib: Option<i64>,
    pub volume_type: Option<String>,
    pub delete_on_termination: Option<bool>,
}

/// An instance as `amitool instances` reports it. The keys, in this order,
/// are the `--output json` contract; null where EC2 has none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceInfo {
    pub region: String,
    pub instance_id: String,
    /// The Name tag.
    pub name: Option<String>,
    pub instance_type: String,
    pub state: String,
    pub virtualization_type: Option<Virtualization>,
    pub image_id: Option<String>,
    pub kernel_id: Option<String>,
    pub root_device_type: Option<String>,
    pub root_device_name: Option<String>,
    pub volumes: Vec<InstanceVolume>,
    /// How many instance-store volumes the instance type has.
    pub instance_store: Option<u32>,
    pub public_ip: Option<String>,
    pub elastic_ip: Option<String>,
    pub subnet_id: Option<String>,
    /// Security group ids.
    pub security_groups: Vec<String>,
    /// Whether the type is of a family that ran PV (t1, m1, m2, m3, c1, c3, hs1).
    pub retired_family: bool,
    pub successor_type: Option<String>,
    pub successor_reasons: Vec<String>,
}

/// What EC2 says an instance type accepts. The first eight fields are the
/// `compat --instance-type` JSON contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceType {
    pub instance_type: String,
    pub supported_virtualization_types: Vec<Virtualization>,
    pub supported_architectures: Vec<String>,
    pub hypervisor: Option<String>,
    /// `unsupported`, `supported` or `required`.
    pub ena_support: String,
    /// `unsupported`, `supported` or `required` (EBS over NVMe).
    pub nvme_support: String,
    pub boot_modes: Vec<String>,
    /// Live: EC2's own answer. Offline: from AWS's published list of
    /// previous generation families (`catalog`), not from a data dump.
    #[serde(default)]
    pub current_generation: bool,
    #[serde(skip_serializing)]
    pub vcpus: i32,
    #[serde(skip_serializing)]
    pub memory_mib: i64,
    /// How many instance-store volumes the type has (0 for EBS-only types).
    #[serde(skip_serializing, default)]
    pub instance_store: u32,
}

impl InstanceType {
    pub fn accepts(&self, v: Virtualization) -> bool {
        self.supported_virtualization_types.contains(&v)
    }

    /// Smallest first: vCPUs, then memory, then name.
    pub fn size_key(&self) -> (i32, i64, String) {
        (self.vcpus, self.memory_mib, self.instance_type.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        Image {
            region: "eu-central-1".into(),
            image_id: "ami-12345678".into(),
            name: Some("debian-wheezy-amd64-pvm-2015".into()),
            virtualization_type: Some(Virtualization::Paravirtual),
            architecture: Some("x86_64".into()),
            image_type: Some("machine".into()),
            kernel_id: Some("aki-184c7a05".into()),
            ..Default::default()
        }
    }

    #[test]
    fn empty_filter_matches_everything() {
        assert!(ImageFilter::default().matches(&image()));
    }

    #[test]
    fn each_criterion_filters() {
        let img = image();
        let f = |f: ImageFilter| f.matches(&img);
        assert!(f(ImageFilter {
            virtualization: Some(Virtualization::Paravirtual),
            ..Default::default()
        }));
        assert!(!f(ImageFilter {
            virtualization: Some(Virtualization::Hvm),
            ..Default::default()
        }));
        assert!(f(ImageFilter {
            architecture: Some("x86_64".into()),
            ..Default::default()
        }));
        assert!(!f(ImageFilter {
            architecture: Some("i386".into()),
            ..Default::default()
        }));
        assert!(f(ImageFilter {
            name: Some("debian-*-pvm-*".into()),
            ..Default::default()
        }));
        assert!(f(ImageFilter {
            name: Some("debian-wheezy-amd64-pvm-201?".into()),
            ..Default::default()
        }));
        assert!(!f(ImageFilter {
            name: Some("ubuntu*".into()),
            ..Default::default()
        }));
        assert!(f(ImageFilter {
            kernel_id: Some("aki-184c7a05".into()),
            ..Default::default()
        }));
        assert!(!f(ImageFilter {
            kernel_id: Some("aki-00000000".into()),
            ..Default::default()
        }));
        assert!(!f(ImageFilter {
            image_type: Some("kernel".into()),
            ..Default::default()
        }));
        assert!(!f(ImageFilter {
            image_ids: vec!["ami-87654321".into()],
            ..Default::default()
        }));
    }

    #[test]
    fn a_nameless_image_fails_a_name_filter() {
        let img = Image {
            name: None,
            ..image()
        };
        assert!(!ImageFilter {
            name: Some("*".into()),
            ..Default::default()
        }
        .matches(&img));
    }

    #[test]
    fn json_keys_are_the_contract() {
        let v = serde_json::to_value(image()).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        let mut want = vec![
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
        want.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want);
        assert_eq!(v["virtualization_type"], "paravirtual");
        assert!(v["boot_mode"].is_null());
    }
}

/// What `import` registers.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub file: std::path::PathBuf,
    pub virtualization: Virtualization,
    pub kernel_id: Option<String>,
    pub architecture: String,
    pub name: Option<String>,
    /// `--ena-support`: an HVM image whose kernel has the ENA driver (and
    /// NVMe in its initramfs), as RegisterImage's EnaSupport marks it.
    pub ena_support: bool,
}

/// Which instance types `describe_instance_types` returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceTypeQuery {
    /// Exactly these (an unknown name is an error); empty for all.
    pub names: Vec<String>,
    pub virtualization: Option<Virtualization>,
    pub architecture: Option<String>,
}

/// What `launch` starts: an image on an instance type, and with `qemu` a
/// real boot of an HVM disk until the text, for at most the time.
#[derive(Debug, Clone)]
pub struct LaunchRequest {
    pub image_id: String,
    pub instance_type: String,
    pub qemu: Option<(String, std::time::Duration)>,
}

/// What `launch` found: whether the image boots on the type, and why not.
#[derive(Debug, serde::Serialize)]
pub struct LaunchReport {
    pub instance_id: Option<String>,
    pub image_id: String,
    pub instance_type: String,
    pub region: String,
    pub boots: bool,
    pub reasons: Vec<String>,
    pub qemu: Option<crate::image::boot::QemuBoot>,
}
