//! `amitool instances`: which instances are PV, what each should become.

use clap::{Args, ValueEnum};

use crate::cli::context::Context;
use crate::cli::list::VirtArg;
use crate::error::Result;
use crate::model::{InstanceInfo, Virtualization};
use crate::output::{cell, Tabular};
use crate::regions;
use crate::successor::{add_successors, check_family};

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
                ctx.backend.as_ref(),
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
