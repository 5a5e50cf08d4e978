//! PV kernels (AKIs): what their names say, and which kernel of one region
//! does the same job as a kernel of another.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::Image;

/// Where PV-GRUB looks for the guest's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// `(hd0)`: the root device is an unpartitioned filesystem.
    Hd0,
    /// `(hd0,0)`: the filesystem is the first partition of the root device.
    Hd00,
}

impl Flavor {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Hd0 => "hd0",
            Flavor::Hd00 => "hd00",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hd0" => Some(Flavor::Hd0),
            "hd00" => Some(Flavor::Hd00),
            _ => None,
        }
    }
}

/// What a PV-GRUB kernel's name says: `pv-grub-hd0_1.05-x86_64.gz` is flavor
/// hd0, version 1.05, x86_64. Older names read `pv-grub-hd00-V1.01-i386.gz`.
/// Other AKIs (distribution kernels such as `vmlinuz-2.6.21.7-2.fc8xen`) have
/// no flavor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelName {
    pub flavor: Option<Flavor>,
    pub version: Option<String>,
    pub architecture: Option<String>,
}

impl KernelName {
    pub fn parse(name: &str) -> Option<Self> {
        let base = name.rsplit('/').next()?;
        let base = base.strip_suffix(".manifest.xml").unwrap_or(base);
        let base = base.strip_suffix(".gz").unwrap_or(base);
        let architecture = ["x86_64", "i386"]
            .into_iter()
            .find(|a| base.ends_with(a) || base.contains(&format!("{a}.")))
            .map(String::from);
        let Some(rest) = base.strip_prefix("pv-grub-") else {
            return Some(KernelName {
                flavor: None,
                version: None,
                architecture,
            });
        };
        // `hd0_1.05-x86_64`, `hd00-V1.01-i386`
        let (flavor, rest) = rest.split_once(['_', '-'])?;
        let flavor = Flavor::parse(flavor)?;
        let rest = rest.strip_prefix('V').unwrap_or(rest);
        let (version, arch) = rest.split_once('-')?;
        let version_ok = !version.is_empty()
            && version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !version_ok || !matches!(arch, "x86_64" | "i386") {
            return None;
        }
        Some(KernelName {
            flavor: Some(flavor),
            version: Some(version.to_string()),
            architecture: Some(arch.to_string()),
        })
    }
}

/// Numeric comparison of dotted versions: 1.10 is newer than 1.9.
pub fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// One AKI of one region, as `kernels` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kernel {
    pub region: String,
    pub kernel_id: String,
    pub name: Option<String>,
    pub flavor: Option<Flavor>,
    pub version: Option<String>,
    pub architecture: Option<String>,
}

impl Kernel {
    pub fn new(
        region: &str,
        kernel_id: &str,
        name: Option<&str>,
        image_arch: Option<&str>,
    ) -> Self {
        let parsed = name.and_then(KernelName::parse);
        Kernel {
            region: region.to_string(),
            kernel_id: kernel_id.to_string(),
            name: name.map(String::from),
            flavor: parsed.as_ref().and_then(|p| p.flavor),
            version: parsed.as_ref().and_then(|p| p.version.clone()),
            architecture: image_arch
                .map(String::from)
                .or_else(|| parsed.and_then(|p| p.architecture)),
        }
    }

    pub fn from_image(image: &Image) -> Self {
        Kernel::new(
            &image.region,
            &image.image_id,
            image.name.as_deref(),
            image.architecture.as_deref(),
        )
    }
}

/// Which rule picked the match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchRule {
    /// Same flavor, architecture and version.
    SameVersion,
    /// Same flavor and architecture; the version is not published there, so the newest.
    NewestVersion,
}

/// Pick the kernel among `candidates` (the AKIs of the target region) that
/// does the same job as `source`: same flavor, same architecture, the same
/// version when it exists, else the newest.
pub fn match_kernel<'a>(
    source: &Kernel,
    candidates: &'a [Kernel],
) -> Result<(&'a Kernel, MatchRule)> {
    let problem = |p: String| Error::KernelMatch {
        kernel_id: source.kernel_id.clone(),
        name: source.name.clone().unwrap_or_else(|| "no name".into()),
        problem: p,
    };
    let Some(flavor) = source.flavor else {
        return Err(problem(
            "not a PV-GRUB kernel (its name does not say hd0 or hd00), so no other region has its equal".into(),
        ));
    };
    let arch = source.architecture.as_deref();
    let mut same: Vec<&Kernel> = candidates
        .iter()
        .filter(|k| k.flavor == Some(flavor) && k.architecture.as_deref() == arch)
        .collect();
    if same.is_empty() {
        return Err(problem(format!(
            "no {} {} PV-GRUB kernel among the {} kernels of the target region",
            flavor.as_str(),
            arch.unwrap_or("unknown-architecture"),
            candidates.len()
        )));
    }
    // Newest first; ties broken by id so the answer is stable.
    same.sort_by(|a, b| {
        let va = a.version.as_deref().map(version_key);
        let vb = b.version.as_deref().map(version_key);
        vb.cmp(&va).then_with(|| a.kernel_id.cmp(&b.kernel_id))
    });
    if let Some(k) = same
        .iter()
        .find(|k| k.version.is_some() && k.version == source.version)
    {
        return Ok((k, MatchRule::SameVersion));
    }
    Ok((same[0], MatchRule::NewestVersion))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_current_names() {
        let k = KernelName::parse("pv-grub-hd0_1.05-x86_64.gz").unwrap();
        assert_eq!(k.flavor, Some(Flavor::Hd0));
        assert_eq!(k.version.as_deref(), Some("1.05"));
        assert_eq!(k.architecture.as_deref(), Some("x86_64"));
        let k = KernelName::parse("pv-grub-hd00_1.04-i386.gz").unwrap();
        assert_eq!(k.flavor, Some(Flavor::Hd00));
        assert_eq!(k.version.as_deref(), Some("1.04"));
        assert_eq!(k.architecture.as_deref(), Some("i386"));
    }

    #[test]
    fn parses_old_and_located_names() {
        let k = KernelName::parse("ec2-public-images/pv-grub-hd00-V1.01-x86_64.gz.manifest.xml")
            .unwrap();
        assert_eq!(k.flavor, Some(Flavor::Hd00));
        assert_eq!(k.version.as_deref(), Some("1.01"));
        assert_eq!(k.architecture.as_deref(), Some("x86_64"));
    }

    #[test]
    fn other_kernels_have_no_flavor() {
        let k = KernelName::parse("vmlinuz-2.6.21.7-2.fc8xen.x86_64").unwrap();
        assert_eq!(k.flavor, None);
        assert_eq!(k.architecture.as_deref(), Some("x86_64"));
        assert_eq!(KernelName::parse("pv-grub-hd1_1.05-x86_64.gz"), None);
        assert_eq!(KernelName::parse("pv-grub-hd0_1.x-x86_64.gz"), None);
        assert_eq!(KernelName::parse("pv-grub-hd0_1.05-arm64.gz"), None);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("1.10") > version_key("1.9"));
        assert!(version_key("1.05") > version_key("1.04"));
    }

    fn k(id: &str, name: &str) -> Kernel {
        Kernel::new("r", id, Some(name), None)
    }

    #[test]
    fn matches_same_version() {
        let src = k("aki-00000001", "pv-grub-hd0_1.04-x86_64.gz");
        let cands = vec![
            k("aki-00000002", "pv-grub-hd0_1.05-x86_64.gz"),
            k("aki-00000003", "pv-grub-hd0_1.04-x86_64.gz"),
            k("aki-00000004", "pv-grub-hd00_1.04-x86_64.gz"),
            k("aki-00000005", "pv-grub-hd0_1.04-i386.gz"),
        ];
        let (m, rule) = match_kernel(&src, &cands).unwrap();
        assert_eq!(m.kernel_id, "aki-00000003");
        assert_eq!(rule, MatchRule::SameVersion);
    }

    #[test]
    fn falls_back_to_newest() {
        let src = k("aki-00000001", "pv-grub-hd00_1.03-i386.gz");
        let cands = vec![
            k("aki-00000002", "pv-grub-hd00_1.04-i386.gz"),
            k("aki-00000003", "pv-grub-hd00_1.05-i386.gz"),
            k("aki-00000004", "pv-grub-hd0_1.05-i386.gz"),
        ];
        let (m, rule) = match_kernel(&src, &cands).unwrap();
        assert_eq!(m.kernel_id, "aki-00000003");
        assert_eq!(rule, MatchRule::NewestVersion);
    }

    #[test]
    fn refuses_without_flavor_or_candidate() {
        let src = k("aki-00000001", "vmlinuz-2.6.21.7-2.fc8xen");
        assert!(match_kernel(&src, &[]).is_err());
        let src = k("aki-00000001", "pv-grub-hd00_1.05-i386.gz");
        let err = match_kernel(&src, &[k("aki-00000002", "pv-grub-hd0_1.05-i386.gz")]).unwrap_err();
        assert!(err.to_string().contains("hd00 i386"), "{err}");
    }
}
