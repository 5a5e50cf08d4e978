//! `amitool migrate`: a PV image or instance to a registered HVM image.

use clap::Args;

use crate::cli::images::local;
use crate::cli::Context;
use crate::error::Result;
use crate::ids::{self, IdKind};
use crate::migrate::{self, Migration, Options, Source};
use crate::output::{self, Format, Tabular};

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ami", "instance"])))]
pub struct MigrateArgs {
    /// The PV image to migrate (never modified).
    #[arg(long, value_name = "AMI")]
    pub ami: Option<String>,
    /// The PV instance whose root volume to migrate (never modified).
    #[arg(long, value_name = "INSTANCE")]
    pub instance: Option<String>,
    /// The new image's name (default: the source's name + "-hvm").
    #[arg(long)]
    pub name: Option<String>,
    /// Keep the intermediate snapshot of an instance's volume.
    #[arg(long)]
    pub keep_temp: bool,
    /// Also fix the guest in the HVM copy: fstab by UUID, a getty on ttyS0.
    #[arg(long)]
    pub fix_guest: bool,
}

impl Tabular for migrate::Step {
    fn headers() -> Vec<&'static str> {
        vec!["STEP", "SECONDS", "DETAIL"]
    }

    fn wrapping_column() -> Option<usize> {
        Some(2)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.into(),
            format!("{:.2}", self.seconds),
            self.detail.clone(),
        ]
    }
}

pub async fn run(ctx: &Context, a: MigrateArgs) -> Result<u8> {
    let source = match (&a.ami, &a.instance) {
        (Some(ami), _) => {
            ids::check_id(IdKind::Image, ami)?;
            Source::Image(ami.clone())
        }
        (None, Some(i)) => {
            ids::check_id(IdKind::Instance, i)?;
            Source::Instance(i.clone())
        }
        (None, None) => unreachable!("clap requires one of --ami and --instance"),
    };
    let host = local(ctx, "migrate")?;
    let region = ctx.one_region("migrate").await?;
    let opts = Options {
        name: a.name,
        keep_temp: a.keep_temp,
        fix_guest: a.fix_guest,
    };
    let m: Migration = migrate::run(host, &region, &source, &opts).await?;
    match ctx.format() {
        Format::Json => output::emit(&output::json(&m)),
        Format::Table => {
            output::emit(&output::table(&m.steps));
            for f in &m.findings {
                output::emit(&format!("finding: {f}"));
            }
            output::emit(&format!(
                "{} → {} ({}, {})",
                m.source_image_id, m.image_id, m.region, m.migration_id
            ));
        }
    }
    Ok(0)
}
