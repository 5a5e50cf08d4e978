//! `amitool kernels`: the PV kernels (AKIs) of a region, and the kernel of
//! another region that does the same job.

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::catalog;
use crate::cli::context::Context;
use crate::cli::list::ArchArg;
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::kernels::{match_kernel, Flavor, Kernel, MatchRule};
use crate::model::ImageFilter;
use crate::output::{self, cell, Tabular};
use crate::regions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlavorArg {
    Hd0,
    Hd00,
}

impl From<FlavorArg> for Flavor {
    fn from(f: FlavorArg) -> Self {
        match f {
            FlavorArg::Hd0 => Flavor::Hd0,
            FlavorArg::Hd00 => Flavor::Hd00,
        }
    }
}

#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KernelsArgs {
    #[command(subcommand)]
    pub action: Option<KernelsAction>,
    #[arg(long, value_enum, ignore_case = true)]
    pub arch: Option<ArchArg>,
    /// hd0: unpartitioned root filesystem; hd00: first partition.
    #[arg(long, value_enum)]
    pub flavor: Option<FlavorArg>,
    /// From the built-in table of AWS's published PV-GRUB kernels.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KernelsAction {
    /// The kernel of --to that does the same job as AKI in --from.
    Match(MatchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MatchArgs {
    /// The kernel to match (aki-...).
    pub kernel_id: String,
    #[arg(long, value_name = "REGION")]
    pub from: String,
    #[arg(long, value_name = "REGION")]
    pub to: String,
    /// From the built-in table of AWS's published PV-GRUB kernels.
    #[arg(long)]
    pub offline: bool,
}

impl Tabular for Kernel {
    fn headers() -> Vec<&'static str> {
        vec!["REGION", "KERNEL", "NAME", "FLAVOR", "VERSION", "ARCH"]
    }

    fn wrapping_column() -> Option<usize> {
        Some(2)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.region.clone(),
            self.kernel_id.clone(),
            cell(self.name.as_deref()),
            cell(self.flavor.map(Flavor::as_str)),
            cell(self.version.as_deref()),
            cell(self.architecture.as_deref()),
        ]
    }
}

/// The answer of `kernels match`.
#[derive(Debug, Clone, Serialize)]
pub struct KernelMatch {
    pub from_region: String,
    pub kernel_id: String,
    pub name: Option<String>,
    pub to_region: String,
    #[serde(rename = "match")]
    pub matched: MatchedKernel,
    pub rule: MatchRule,
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchedKernel {
    pub kernel_id: String,
    pub name: Option<String>,
    pub flavor: Option<Flavor>,
    pub version: Option<String>,
    pub architecture: Option<String>,
}

impl Tabular for KernelMatch {
    fn headers() -> Vec<&'static str> {
        vec!["FROM", "KERNEL", "TO", "MATCH", "NAME", "RULE", "SOURCE"]
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.from_region.clone(),
            self.kernel_id.clone(),
            self.to_region.clone(),
            self.matched.kernel_id.clone(),
            cell(self.matched.name.as_deref()),
            serde_json::to_value(self.rule)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            self.source.into(),
        ]
    }
}

/// The PV kernels of the table in `region`.
pub fn offline_kernels(region: &str) -> Vec<Kernel> {
    catalog::kernels()
        .in_region(region)
        .map(|k| Kernel::new(&k.region, &k.kernel_id, Some(&k.name), None))
        .collect()
}

/// The AKIs owned by Amazon in `region`, as the backend lists them.
async fn live_kernels(ctx: &Context, region: &str) -> Result<Vec<Kernel>> {
    let filter = ImageFilter {
        image_type: Some("kernel".into()),
        owner: Some("amazon".into()),
        ..Default::default()
    };
    let images = ctx.backend.describe_images(region, &filter).await?;
    Ok(images.iter().map(Kernel::from_image).collect())
}

async fn list(ctx: &Context, args: &KernelsArgs) -> Result<u8> {
    let regions = ctx.regions().await?;
    let bar = ctx
        .progress
        .bar(regions.len() as u64, "DescribeImages (kernels)");
    let results = regions::for_each(&regions, &bar, |r| async move {
        if args.offline {
            Ok(offline_kernels(&r))
        } else {
            live_kernels(ctx, &r).await
        }
    })
    .await;
    let (found, failed) = regions::report_failures(results);
    let flavor = args.flavor.map(Flavor::from);
    let arch = args.arch.map(|a| a.as_str());
    let mut kernels: Vec<Kernel> = found
        .into_iter()
        .flatten()
        .filter(|k| flavor.is_none_or(|f| k.flavor == Some(f)))
        .filter(|k| arch.is_none_or(|a| k.architecture.as_deref() == Some(a)))
        .collect();
    kernels.sort_by(|a, b| {
        (&a.region, &a.name, &a.kernel_id).cmp(&(&b.region, &b.name, &b.kernel_id))
    });
    let code = regions::emit_partial(&kernels, ctx.format(), failed, regions.len());
    if failed == 0 {
        regions::say_why_empty(kernels.is_empty(), &regions, true, &|r| {
            format!(
                "no {}{}kernels are published for {r}",
                flavor
                    .map(|f| format!("{} ", f.as_str()))
                    .unwrap_or_default(),
                arch.map(|a| format!("{a} ")).unwrap_or_default()
            )
        });
    }
    Ok(code)
}

async fn find_match(ctx: &Context, m: &MatchArgs) -> Result<u8> {
    ids::check_id(IdKind::Kernel, &m.kernel_id)?;
    regions::check(&m.from, ctx.backend.as_ref()).await?;
    regions::check(&m.to, ctx.backend.as_ref()).await?;
    let (source, candidates) = if m.offline {
        let source = offline_kernels(&m.from)
            .into_iter()
            .find(|k| k.kernel_id == m.kernel_id)
            .ok_or_else(|| {
                Error::refused(
                    &m.kernel_id,
                    format!(
                        "{} is not one of AWS's published PV-GRUB kernels in {} (the built-in table); try without --offline",
                        m.kernel_id, m.from
                    ),
                )
            })?;
        (source, offline_kernels(&m.to))
    } else {
        let filter = ImageFilter {
            image_ids: vec![m.kernel_id.clone()],
            ..Default::default()
        };
        let image = ctx
            .backend
            .describe_images(&m.from, &filter)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::ImageNotFound {
                image_id: m.kernel_id.clone(),
                region: m.from.clone(),
            })?;
        if image.image_type.as_deref() != Some("kernel") {
            return Err(Error::refused(
                &m.kernel_id,
                format!(
                    "{} in {} is a {} image, not a kernel",
                    m.kernel_id,
                    m.from,
                    image.image_type.as_deref().unwrap_or("unknown")
                ),
            ));
        }
        (Kernel::from_image(&image), live_kernels(ctx, &m.to).await?)
    };
    let (found, rule) = match_kernel(&source, &candidates)?;
    let answer = KernelMatch {
        from_region: m.from.clone(),
        kernel_id: source.kernel_id.clone(),
        name: source.name.clone(),
        to_region: m.to.clone(),
        matched: MatchedKernel {
            kernel_id: found.kernel_id.clone(),
            name: found.name.clone(),
            flavor: found.flavor,
            version: found.version.clone(),
            architecture: found.architecture.clone(),
        },
        rule,
        source: if m.offline { "offline" } else { "live" },
    };
    output::emit(&output::render_one(&answer, ctx.format()));
    Ok(0)
}

pub async fn run(ctx: &Context, args: KernelsArgs) -> Result<u8> {
    match &args.action {
        Some(KernelsAction::Match(m)) => find_match(ctx, m).await,
        None => list(ctx, &args).await,
    }
}
