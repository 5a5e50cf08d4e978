//! The built-in, cited offline table: PV families and regions, instance types,
//! and AWS's published PV-GRUB kernel ids. The data files live in `data/` and
//! are embedded at build time; every fact names its source there.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::model::InstanceType;

const COMPAT_JSON: &str = include_str!("../data/compat.json");
const KERNELS_JSON: &str = include_str!("../data/kernels.json");

#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub title: String,
    pub url: String,
    #[serde(default)]
    pub retrieved_from: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PvFamilies {
    pub families: Vec<String>,
    #[serde(default)]
    pub older_text_also: Vec<String>,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Region {
    pub name: String,
    pub partition: String,
    pub pv: bool,
    pub source: String,
    /// The PV-capable families offered there (Frankfurt never had T1, M1, M2 or C1).
    #[serde(default)]
    pub pv_families: Option<Vec<String>>,
}

impl Region {
    /// Whether `instance_type` is offered here, as far as the table knows:
    /// `None` unless the type is of a PV family and the region lists its families.
    pub fn offers(&self, instance_type: &str) -> Option<bool> {
        let family = instance_type.split('.').next().unwrap_or_default();
        if !compat().is_pv_family(instance_type) {
            return None;
        }
        if !self.pv {
            return Some(false);
        }
        self.pv_families
            .as_ref()
            .map(|f| f.iter().any(|x| x == family))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogInstanceType {
    #[serde(flatten)]
    pub info: InstanceType,
    pub source: String,
}

/// AWS's list of previous generation families; every other family is current.
#[derive(Debug, Clone, Deserialize)]
pub struct Generations {
    pub families: Vec<String>,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompatTable {
    pub sources: BTreeMap<String, Source>,
    pub pv_families: PvFamilies,
    pub previous_generation: Generations,
    pub regions: Vec<Region>,
    pub instance_types: Vec<CatalogInstanceType>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogKernel {
    pub region: String,
    pub kernel_id: String,
    pub name: String,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KernelTable {
    pub sources: BTreeMap<String, Source>,
    pub kernels: Vec<CatalogKernel>,
}

/// The compatibility table (PV families, regions, instance types).
pub fn compat() -> &'static CompatTable {
    static TABLE: OnceLock<CompatTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: CompatTable = serde_json::from_str(COMPAT_JSON)
            .expect("data/compat.json is checked by the unit tests");
        for it in &mut t.instance_types {
            it.info.current_generation = !t.previous_generation.is_previous(&it.info.instance_type);
        }
        t
    })
}

/// AWS's published PV-GRUB AKIs.
pub fn kernels() -> &'static KernelTable {
    static TABLE: OnceLock<KernelTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(KERNELS_JSON).expect("data/kernels.json is checked by the unit tests")
    })
}

impl Generations {
    /// Whether the type's family is on AWS's previous generation list.
    pub fn is_previous(&self, instance_type: &str) -> bool {
        let family = instance_type.split('.').next().unwrap_or_default();
        self.families.iter().any(|f| f == family)
    }
}

impl CompatTable {
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Regions of the standard `aws` partition that offered PV instances.
    pub fn pv_regions(&self) -> Vec<String> {
        self.regions
            .iter()
            .filter(|r| r.pv && r.partition == "aws")
            .map(|r| r.name.clone())
            .collect()
    }

    pub fn instance_type(&self, name: &str) -> Option<&InstanceType> {
        self.instance_types
            .iter()
            .map(|t| &t.info)
            .find(|t| t.instance_type == name)
    }

    pub fn is_pv_family(&self, instance_type: &str) -> bool {
        let family = instance_type.split('.').next().unwrap_or_default();
        self.pv_families.families.iter().any(|f| f == family)
            || self.pv_families.older_text_also.iter().any(|f| f == family)
    }
}

impl KernelTable {
    pub fn in_region<'a>(
        &'a self,
        region: &'a str,
    ) -> impl Iterator<Item = &'a CatalogKernel> + 'a {
        self.kernels.iter().filter(move |k| k.region == region)
    }

    pub fn by_id(&self, kernel_id: &str) -> Vec<&CatalogKernel> {
        self.kernels
            .iter()
            .filter(|k| k.kernel_id == kernel_id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::KernelName;

    #[test]
    fn generations_follow_aws_previous_generation_list() {
        let t = compat();
        assert!(t.sources.contains_key(&t.previous_generation.source));
        let current = |n: &str| t.instance_type(n).unwrap().current_generation;
        for n in [
            "m5.large",
            "c5.large",
            "m6i.large",
            "r5.large",
            "t2.micro",
            "t3.micro",
            "m7i.large",
        ] {
            assert!(current(n), "{n} is current generation");
        }
        for n in [
            "t1.micro",
            "m1.small",
            "m2.xlarge",
            "m3.medium",
            "c1.medium",
            "c3.large",
            "m4.large",
            "c4.large",
        ] {
            assert!(!current(n), "{n} is previous generation");
        }
        // Every PV family is previous generation.
        for f in &t.pv_families.families {
            assert!(t.previous_generation.is_previous(&format!("{f}.x")), "{f}");
        }
    }

    #[test]
    fn compat_table_is_consistent() {
        let t = compat();
        assert!(t.pv_regions().len() >= 9, "{:?}", t.pv_regions());
        assert!(t.pv_regions().contains(&"eu-central-1".to_string()));
        for r in &t.regions {
            assert!(
                t.sources.contains_key(&r.source),
                "{} cites {}",
                r.name,
                r.source
            );
        }
        assert!(t.sources.contains_key(&t.pv_families.source));
        for it in &t.instance_types {
            assert!(
                t.sources.contains_key(&it.source),
                "{}",
                it.info.instance_type
            );
            assert!(
                it.info.vcpus > 0 && it.info.memory_mib > 0,
                "{}",
                it.info.instance_type
            );
        }
        for f in ["c1", "c3", "hs1", "m1", "m2", "m3", "t1"] {
            assert!(t.pv_families.families.iter().any(|x| x == f), "{f}");
        }
        let m3 = t.instance_type("m3.medium").unwrap();
        assert!(m3.accepts(crate::model::Virtualization::Paravirtual));
        let t2 = t.instance_type("t2.micro").unwrap();
        assert!(!t2.accepts(crate::model::Virtualization::Paravirtual));
    }

    #[test]
    fn kernel_table_is_consistent() {
        let t = kernels();
        let compat = compat();
        let mut seen = std::collections::HashSet::new();
        for k in &t.kernels {
            assert!(t.sources.contains_key(&k.source), "{}", k.kernel_id);
            crate::ids::check_id(crate::ids::IdKind::Kernel, &k.kernel_id).unwrap();
            let name = KernelName::parse(&k.name).unwrap_or_else(|| panic!("{}", k.name));
            assert!(name.flavor.is_some(), "{}", k.name);
            assert!(
                seen.insert((k.region.clone(), k.name.clone())),
                "duplicate {} {}",
                k.region,
                k.name
            );
            let region = compat
                .region(&k.region)
                .unwrap_or_else(|| panic!("{}", k.region));
            assert!(
                region.pv,
                "{} has PV-GRUB kernels but is not marked pv",
                k.region
            );
        }
        for region in compat.pv_regions() {
            assert!(
                t.in_region(&region).count() >= 4,
                "{region} has too few kernels"
            );
        }
    }
}
