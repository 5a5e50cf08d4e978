//! What every command runs with: the global flags and the backend they chose.

use clap::{Args, ValueEnum};

use crate::backend::Backend;
use crate::error::Result;
use crate::output::Format;
use crate::progress::ProgressPolicy;
use crate::regions::{self, RegionSelection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// EC2 through the AWS SDK (or LocalStack with --endpoint-url).
    Aws,
    /// The local model of a Xen host, kept in --state-dir.
    Local,
}

/// Flags every subcommand takes, before or after its name.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Where images live: AWS, or the local Xen host model.
    #[arg(long, global = true, value_enum, default_value_t = BackendKind::Aws)]
    pub backend: BackendKind,
    /// A region to work in (repeatable); default: the AWS chain's region.
    #[arg(long = "region", global = true, value_name = "REGION")]
    pub regions: Vec<String>,
    /// Every region enabled for the account (DescribeRegions).
    #[arg(long, global = true)]
    pub all_regions: bool,
    /// Every region that ever offered PV instances (built-in table).
    #[arg(long, global = true)]
    pub pv_regions: bool,
    /// A named profile of the AWS config and credentials files.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Send AWS requests here (LocalStack: http://127.0.0.1:4566). AWS_ENDPOINT_URL works too.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// table (for people), json (for scripts), text (tab-separated, no header).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// No progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// The local host's state directory (--backend local).
    #[arg(long, global = true, value_name = "DIR", env = "AMITOOL_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// AWS: at most this many GetSnapshotBlock, and as many PutSnapshotBlock,
    /// requests a second in a region, shared by every migration of the run
    /// (halved while EBS throttles, then climbing back). Default 900, under
    /// EBS's default quota of about 1,000 per snapshot and per account.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_requests_per_second: Option<u32>,
    /// More detail on stderr (-vv for the SDK's own).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// What a command runs with.
pub struct Context {
    pub global: GlobalArgs,
    pub backend: Box<dyn Backend>,
    pub progress: ProgressPolicy,
}

impl Context {
    pub fn format(&self) -> Format {
        self.global.output
    }

    /// The regions selected by the global flags.
    pub async fn regions(&self) -> Result<Vec<String>> {
        let sel = RegionSelection {
            regions: self.global.regions.clone(),
            all_regions: self.global.all_regions,
            pv_regions: self.global.pv_regions,
        };
        regions::resolve(&sel, self.backend.as_ref()).await
    }

    /// Exactly one region, for commands about one image.
    pub async fn one_region(&self, what: &str) -> Result<String> {
        let regions = self.regions().await?;
        match regions.as_slice() {
            [r] => Ok(r.clone()),
            _ => Err(crate::error::Error::InvalidInput(format!(
                "{what} works in one region; {} were selected ({})",
                regions.len(),
                regions.join(", ")
            ))),
        }
    }
}
