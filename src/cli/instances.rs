//! `amitool instances`: which instances are PV, what each should become.

use clap::{Args, ValueEnum};

use crate::backend::InstanceTypeQuery;
use crate::catalog;
use crate::cli::list::VirtArg;
use crate::cli::Context;
use crate::error::{Error, Result};
use crate::model::{ImageFilter, InstanceInfo, InstanceType, Virtualization};
use crate::output::{cell, Tabular};
use crate::regions;
use crate::successor::{self, Needs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
    Stopping,
    Stopped,
}

impl StateArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StateArg::Pending => "pending",
            StateArg::Running => "running",
            StateArg::ShuttingDown => "shutting-down",
            StateArg::Terminated => "terminated",
            StateArg::Stopping => "stopping",
            StateArg::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct InstancesArgs {
    /// Only paravirtual (pv) or hvm instances.
    #[arg(long, value_enum, ignore_case = true)]
    pub virtualization: Option<VirtArg>,
    /// Only instances in this state.
    #[arg(long, value_enum, ignore_case = true)]
    pub state: Option<StateArg>,
    /// Choose successors in this family (m5, c6i, r5, t3, ...) instead of the source's class.
    #[arg(long, value_name = "FAMILY")]
    pub successor_family: Option<String>,
    /// Choose successors from the built-in table, not DescribeInstanceTypes.
    #[arg(long)]
    pub offline: bool,
}

impl Tabular for InstanceInfo {
    fn headers() -> Vec<&'static str> {
        vec![
            "REGION",
            "INSTANCE",
            "NAME",
            "TYPE",
            "STATE",
            "VIRT",
            "EIP",
            "SUCCESSOR",
        ]
    }

    fn wrapping_column() -> Option<usize> {
        Some(2)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.region.clone(),
            self.instance_id.clone(),
            cell(self.name.as_deref()),
            self.instance_type.clone(),
            self.state.clone(),
            cell(self.virtualization_type.map(Virtualization::short)),
            cell(self.elastic_ip.as_deref()),
            cell(self.successor_type.as_deref()),
        ]
    }
}

/// A family name as EC2 writes them: letters, digits, and `-` (u-6tb1).
pub fn check_family(f: &str) -> Result<()> {
    let ok = !f.is_empty()
        && f.len() <= 16
        && f.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "--successor-family {:?}: expected an instance family such as m5 or c6i",
            f.chars().take(40).collect::<String>()
        )))
    }
}

/// The types a region offers, as candidates for a successor.
pub async fn candidates(ctx: &Context, region: &str, offline: bool) -> Result<Vec<InstanceType>> {
    if offline {
        let t = catalog::compat();
        let known = t.region(region);
        return Ok(t
            .instance_types
            .iter()
            .map(|c| c.info.clone())
            .filter(|i| known.is_none_or(|r| r.offers(&i.instance_type) != Some(false)))
            .collect());
    }
    let offered = ctx.backend.offered_instance_types(region).await?;
    let all = ctx
        .backend
        .describe_instance_types(region, &InstanceTypeQuery::default())
        .await?;
    Ok(all
        .into_iter()
        .filter(|t| offered.contains(&t.instance_type))
        .collect())
}

/// The source type's facts: EC2's, else the built-in table's (hs1 is no longer described).
pub async fn source_type(
    ctx: &Context,
    region: &str,
    name: &str,
    offline: bool,
) -> Option<InstanceType> {
    if !offline {
        let q = InstanceTypeQuery {
            names: vec![name.to_string()],
            ..Default::default()
        };
        if let Ok(Some(t)) = ctx
            .backend
            .describe_instance_types(region, &q)
            .await
            .map(|v| v.into_iter().next())
        {
            return Some(t);
        }
    }
    catalog::compat().instance_type(name).cloned()
}

/// What the instance's image needs of a successor: its architecture, and
/// the drivers amitool recorded when it migrated that image (else unknown).
pub async fn needs_of(ctx: &Context, region: &str, image_id: Option<&str>) -> Needs {
    let mut needs = Needs {
        architecture: "x86_64".into(),
        ..Default::default()
    };
    let Some(id) = image_id else { return needs };
    let filter = ImageFilter {
        image_ids: vec![id.to_string()],
        ..Default::default()
    };
    if let Ok(Some(img)) = ctx
        .backend
        .describe_images(region, &filter)
        .await
        .map(|v| v.into_iter().next())
    {
        if let Some(a) = img.architecture {
            needs.architecture = a;
        }
    }
    if let Ok(Some(d)) = ctx.backend.boot_drivers(region, id).await {
        needs.ena = Some(d.ena);
        needs.nvme = Some(d.nvme);
    }
    needs
}

/// Fill in each instance's successor (and why) from the region's types.
pub async fn add_successors(
    ctx: &Context,
    region: &str,
    found: &mut [InstanceInfo],
    family: Option<&str>,
    offline: bool,
) -> Result<()> {
    if found.is_empty() {
        return Ok(());
    }
    let offered = candidates(ctx, region, offline).await?;
    for i in found.iter_mut() {
        let Some(src) = source_type(ctx, region, &i.instance_type, offline).await else {
            i.successor_reasons = vec![format!("{} is not described here", i.instance_type)];
            continue;
        };
        let needs = needs_of(ctx, region, i.image_id.as_deref()).await;
        match successor::successor(&src, &needs, &offered, family) {
            Ok((t, why)) => {
                i.successor_type = Some(t);
                i.successor_reasons = why;
            }
            Err(why) => i.successor_reasons = vec![why],
        }
    }
    Ok(())
}

pub async fn run(ctx: &Context, args: InstancesArgs) -> Result<u8> {
    if let Some(f) = &args.successor_family {
        check_family(f)?;
    }
    let regions = ctx.regions().await?;
    let bar = ctx.progress.bar(regions.len() as u64, "DescribeInstances");
    let virt: Option<Virtualization> = args.virtualization.map(Into::into);
    let state = args.state.map(StateArg::as_str);
    let results = regions::for_each(&regions, &bar, |r| {
        let args = args.clone();
        async move {
            let mut found = ctx.backend.describe_instances(&r, state, virt).await?;
            add_successors(
                ctx,
                &r,
                &mut found,
                args.successor_family.as_deref(),
                args.offline,
            )
            .await?;
            Ok(found)
        }
    })
    .await;
    let (found, failed) = regions::report_failures(results);
    let mut all: Vec<InstanceInfo> = found.into_iter().flatten().collect();
    all.sort_by(|a, b| (&a.region, &a.instance_id).cmp(&(&b.region, &b.instance_id)));
    let code = regions::emit_partial(&all, ctx.format(), failed, regions.len());
    if failed == 0 {
        let pv = virt == Some(Virtualization::Paravirtual);
        regions::say_why_empty(all.is_empty(), &regions, pv, &|r| {
            format!("no instance in {r} matches the filters")
        });
    }
    Ok(code)
}
