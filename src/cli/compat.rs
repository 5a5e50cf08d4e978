//! `amitool compat`: which instance types accept which images, live or from
//! the built-in table, and the verdict for one image on one type.

use clap::Args;
use serde::Serialize;

use crate::catalog;
use crate::cli::context::Context;
use crate::cli::list::{ArchArg, VirtArg};
use crate::compat::{self, Placement, Verdict};
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::InstanceTypeQuery;
use crate::model::{ImageFilter, InstanceType, Virtualization};
use crate::output::{self, cell, Tabular};
use crate::regions;

#[derive(Debug, Clone, Args)]
pub struct CompatArgs {
    /// One or more instance types to describe (or one, with --ami).
    #[arg(long, num_args = 1.., value_name = "TYPE")]
    pub instance_type: Vec<String>,
    /// List the instance types that accept such an image, smallest first.
    #[arg(long, value_enum, ignore_case = true, conflicts_with_all = ["ami", "instance_type"])]
    pub virtualization: Option<VirtArg>,
    /// With --virtualization: only types of this architecture.
    #[arg(long, value_enum, ignore_case = true, requires = "virtualization")]
    pub arch: Option<ArchArg>,
    /// Check this image against --instance-type.
    #[arg(long, value_name = "AMI", requires = "instance_type")]
    pub ami: Option<String>,
    /// Instance-type facts from the built-in, cited table instead of DescribeInstanceTypes.
    #[arg(long)]
    pub offline: bool,
}

/// A row of `compat --virtualization`: a type offered in a region.
#[derive(Debug, Clone, Serialize)]
pub struct OfferedType {
    pub region: Option<String>,
    #[serde(flatten)]
    pub info: InstanceType,
    pub vcpus: i32,
    pub memory_mib: i64,
}

impl Tabular for InstanceType {
    fn headers() -> Vec<&'static str> {
        vec![
            "TYPE",
            "VIRT",
            "ARCH",
            "HYPERVISOR",
            "ENA",
            "NVME",
            "BOOT",
            "CURRENT",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.instance_type.clone(),
            self.supported_virtualization_types
                .iter()
                .map(|v| v.short())
                .collect::<Vec<_>>()
                .join(","),
            self.supported_architectures.join(","),
            cell(self.hypervisor.as_deref()),
            self.ena_support.clone(),
            self.nvme_support.clone(),
            self.boot_modes.join(","),
            if self.current_generation { "yes" } else { "no" }.into(),
        ]
    }
}

impl Tabular for OfferedType {
    fn headers() -> Vec<&'static str> {
        vec![
            "REGION",
            "TYPE",
            "VCPUS",
            "MEMORY",
            "HYPERVISOR",
            "ARCH",
            "ENA",
            "NVME",
        ]
    }

    fn row(&self) -> Vec<String> {
        vec![
            cell(self.region.as_deref()),
            self.info.instance_type.clone(),
            self.vcpus.to_string(),
            format!("{:.2} GiB", self.memory_mib as f64 / 1024.0),
            cell(self.info.hypervisor.as_deref()),
            self.info.supported_architectures.join(","),
            self.info.ena_support.clone(),
            self.info.nvme_support.clone(),
        ]
    }
}

impl Tabular for Verdict {
    fn headers() -> Vec<&'static str> {
        vec!["IMAGE", "TYPE", "REGION", "VERDICT", "REASONS"]
    }

    fn wrapping_column() -> Option<usize> {
        Some(4)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.image_id.clone(),
            self.instance_type.clone(),
            self.region.clone(),
            if self.compatible {
                "compatible"
            } else {
                "incompatible"
            }
            .into(),
            if self.reasons.is_empty() {
                "-".into()
            } else {
                self.reasons.join("\n")
            },
        ]
    }
}

fn offline_type(name: &str) -> Result<InstanceType> {
    catalog::compat()
        .instance_type(name)
        .cloned()
        .ok_or_else(|| Error::UnknownInstanceType {
            instance_type: name.to_string(),
            region: "the built-in table".into(),
        })
}

/// Instance types by name, live from the first region or from the table.
async fn describe(ctx: &Context, names: &[String], offline: bool) -> Result<Vec<InstanceType>> {
    if offline {
        return names.iter().map(|n| offline_type(n)).collect();
    }
    let region = ctx.regions().await?.remove(0);
    let q = InstanceTypeQuery {
        names: names.to_vec(),
        ..Default::default()
    };
    let found = ctx.backend.describe_instance_types(&region, &q).await?;
    // In the order asked.
    Ok(names
        .iter()
        .filter_map(|n| found.iter().find(|t| &t.instance_type == n).cloned())
        .collect())
}

/// The types of one region that accept `virt`, smallest first.
async fn accepting_live(
    ctx: &Context,
    region: String,
    virt: Virtualization,
    arch: Option<&str>,
) -> Result<Vec<OfferedType>> {
    let q = InstanceTypeQuery {
        names: vec![],
        virtualization: Some(virt),
        architecture: arch.map(String::from),
    };
    let (types, offerings) = futures::try_join!(
        ctx.backend.describe_instance_types(&region, &q),
        ctx.backend.offered_instance_types(&region)
    )?;
    let offered_types = types
        .iter()
        .filter(|t| offerings.contains(&t.instance_type));
    Ok(compat::accepting(offered_types, virt, arch)
        .into_iter()
        .map(|info| offered(Some(region.clone()), info))
        .collect())
}

fn offered(region: Option<String>, info: InstanceType) -> OfferedType {
    OfferedType {
        region,
        vcpus: info.vcpus,
        memory_mib: info.memory_mib,
        info,
    }
}

/// From the table: every type that accepts `virt`; PV ones only in PV regions.
fn accepting_offline(
    region: Option<String>,
    virt: Virtualization,
    arch: Option<&str>,
) -> Vec<OfferedType> {
    if virt == Virtualization::Paravirtual
        && region
            .as_deref()
            .is_some_and(|r| compat::region_has_pv(r) == Some(false))
    {
        return vec![];
    }
    let table = catalog::compat();
    let known = region.as_deref().and_then(|r| table.region(r));
    let all = table
        .instance_types
        .iter()
        .map(|t| &t.info)
        .filter(|t| known.is_none_or(|r| r.offers(&t.instance_type) != Some(false)));
    compat::accepting(all, virt, arch)
        .into_iter()
        .map(|info| offered(region.clone(), info))
        .collect()
}

async fn list_accepting(ctx: &Context, args: &CompatArgs, virt: Virtualization) -> Result<u8> {
    let arch = args.arch.map(|a| a.as_str());
    let rows: Vec<OfferedType>;
    let mut failed = 0;
    let mut total = 0;
    if args.offline {
        let explicit =
            !ctx.global.regions.is_empty() || ctx.global.pv_regions || ctx.global.all_regions;
        rows = if explicit {
            ctx.regions()
                .await?
                .into_iter()
                .flat_map(|r| accepting_offline(Some(r), virt, arch))
                .collect()
        } else {
            accepting_offline(None, virt, arch)
        };
    } else {
        let regions = ctx.regions().await?;
        let bar = ctx
            .progress
            .bar(regions.len() as u64, "DescribeInstanceTypes");
        let results =
            regions::for_each(&regions, &bar, |r| accepting_live(ctx, r, virt, arch)).await;
        let (found, f) = regions::report_failures(results);
        failed = f;
        total = regions.len();
        rows = found.into_iter().flatten().collect();
    }
    let code = regions::emit_partial(&rows, ctx.format(), failed, total);
    if failed == 0 {
        let asked = ctx.regions().await.unwrap_or_default();
        let pv = virt == crate::model::Virtualization::Paravirtual;
        regions::say_why_empty(rows.is_empty(), &asked, pv, &|r| {
            format!("no instance type offered in {r} accepts {}", virt.as_str())
        });
    }
    Ok(code)
}

async fn check_image(ctx: &Context, args: &CompatArgs, ami: &str) -> Result<u8> {
    ids::check_id(IdKind::Image, ami)?;
    let [itype] = args.instance_type.as_slice() else {
        return Err(Error::InvalidInput(
            "compat --ami takes exactly one --instance-type".into(),
        ));
    };
    ids::check_instance_type(itype)?;
    let region = ctx.one_region("compat --ami").await?;
    let filter = ImageFilter {
        image_ids: vec![ami.to_string()],
        ..Default::default()
    };
    let image = ctx
        .backend
        .describe_images(&region, &filter)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::ImageNotFound {
            image_id: ami.to_string(),
            region: region.clone(),
        })?;
    let (info, offered_in_region) = if args.offline {
        let known = catalog::compat().region(&region);
        (offline_type(itype)?, known.and_then(|r| r.offers(itype)))
    } else {
        let q = InstanceTypeQuery {
            names: vec![itype.clone()],
            ..Default::default()
        };
        let (mut types, offered) = futures::try_join!(
            ctx.backend.describe_instance_types(&region, &q),
            ctx.backend.offered_instance_types(&region)
        )?;
        (types.remove(0), Some(offered.contains(itype)))
    };
    let placement = Placement {
        region_has_pv: compat::region_has_pv(&region),
        offered_in_region,
    };
    let mut v = compat::verdict(&image, &info, &placement);
    if image.virtualization_type == Some(crate::model::Virtualization::Hvm) {
        if let Some(d) = ctx.backend.boot_drivers(&region, ami).await? {
            v.reasons.extend(compat::driver_reasons(&info, &d));
            v.compatible = v.reasons.is_empty();
        }
    }
    output::emit(&output::render_one(&v, ctx.format()));
    Ok(u8::from(!v.compatible))
}

pub async fn run(ctx: &Context, args: CompatArgs) -> Result<u8> {
    for t in &args.instance_type {
        ids::check_instance_type(t)?;
    }
    if let Some(ami) = &args.ami {
        return check_image(ctx, &args, ami).await;
    }
    if let Some(v) = args.virtualization {
        return list_accepting(ctx, &args, v.into()).await;
    }
    if args.instance_type.is_empty() {
        return Err(Error::InvalidInput(
            "compat needs --instance-type T..., --virtualization pv|hvm, or --ami AMI --instance-type T".into(),
        ));
    }
    let types = describe(ctx, &args.instance_type, args.offline).await?;
    output::emit(&output::render(&types, ctx.format()));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_frankfurt_starts_at_m3_medium_and_has_no_t1() {
        let pv = accepting_offline(
            Some("eu-central-1".into()),
            Virtualization::Paravirtual,
            Some("x86_64"),
        );
        assert_eq!(pv[0].info.instance_type, "m3.medium");
        assert!(pv.iter().all(|t| !t.info.instance_type.starts_with("t1.")
            && !t.info.instance_type.starts_with("m1.")));
        let us = accepting_offline(
            Some("us-east-1".into()),
            Virtualization::Paravirtual,
            Some("x86_64"),
        );
        assert_eq!(us[0].info.instance_type, "t1.micro");
        assert!(
            accepting_offline(Some("eu-north-1".into()), Virtualization::Paravirtual, None)
                .is_empty()
        );
    }
}
