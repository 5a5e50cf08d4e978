//! The command line: global flags, subcommands, and the context they run in.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::aws::{AwsBackend, ClientOptions};
use crate::backend::Backend;
use crate::error::Result;
use crate::output::Format;
use crate::progress::ProgressPolicy;
use crate::regions::{self, RegionSelection};

pub mod compat;
mod dryrun;
mod fleet;
pub mod images;
pub mod instances;
pub mod kernels;
pub mod list;
pub mod migrate;
mod replace;
pub mod state;

#[derive(Debug, Parser)]
#[command(
    name = "amitool",
    version,
    about = "See, check and migrate Xen paravirtual (PV) AMIs to HVM",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

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
    /// More detail on stderr (-vv for the SDK's own).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// AMIs by virtualization type, region, owner, architecture, name.
    List(list::ListArgs),
    /// Which instance types accept which images, and why not.
    Compat(compat::CompatArgs),
    /// The PV kernels (AKIs) of a region, and their equals in another.
    Kernels(kernels::KernelsArgs),
    /// Register a raw disk image as an AMI (AWS: uploaded with the EBS direct API).
    Import(images::ImportArgs),
    /// Write an image's root disk to a raw file (AWS: read with the EBS direct API).
    Export(images::ExportArgs),
    /// The preflight: filesystem, boot menu, kernel drivers, findings (the disk read where it lies).
    Inspect(images::InspectArgs),
    /// Start an instance the way Xen would and say whether it boots (local backend).
    Launch(images::LaunchArgs),
    /// Instances by virtualization and state, each with its successor type and why.
    Instances(instances::InstancesArgs),
    /// A PV image or instance to a registered HVM image.
    Migrate(Box<migrate::MigrateArgs>),
    /// End instances (the local host removes their root volumes).
    Terminate(images::TerminateArgs),
    /// The migrations' journals (id, state, source, image, age); `rm ID` removes a finished one.
    Migrations(state::MigrationsArgs),
    /// A shell completion script on stdout.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout.
    Man,
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

async fn build_backend(global: &GlobalArgs) -> Result<Box<dyn Backend>> {
    match global.backend {
        BackendKind::Aws => {
            // --state-dir on the command line (not the environment) is the local host's.
            let from_env = std::env::var_os("AMITOOL_STATE_DIR").map(std::path::PathBuf::from);
            if global.state_dir.is_some() && global.state_dir != from_env {
                return Err(crate::error::Error::InvalidInput(
                    "--state-dir is the local backend's: add --backend local".into(),
                ));
            }
            // A named profile that does not exist is an error, even with
            // credentials in the environment (the SDK would quietly use those).
            if let Some(p) = &global.profile {
                crate::backend::aws::client::check_profile(p)
                    .map_err(crate::error::Error::InvalidInput)?;
            }
            let opts = ClientOptions {
                profile: global.profile.clone(),
                endpoint_url: global.endpoint_url.clone(),
            };
            Ok(Box::new(AwsBackend::new(&opts).await))
        }
        BackendKind::Local => {
            let dir = global
                .state_dir
                .clone()
                .unwrap_or_else(crate::backend::local::default_state_dir);
            Ok(Box::new(crate::backend::local::LocalBackend::new(dir)))
        }
    }
}

/// Run a parsed command line; the exit status on success (a command such as
/// `compat --ami` exits 1 for a negative verdict).
pub async fn run(cli: Cli) -> Result<u8> {
    // What needs no backend.
    match cli.command {
        Command::Completions { shell } => return state::completions(shell),
        Command::Man => return state::man(),
        _ => {}
    }
    let progress = ProgressPolicy::new(cli.global.no_progress, cli.global.output == Format::Json);
    crate::progress::show_steps(progress);
    crate::progress::show_notes(!cli.global.no_progress);
    let backend = build_backend(&cli.global).await?;
    let ctx = Context {
        global: cli.global,
        backend,
        progress,
    };
    match cli.command {
        Command::List(a) => list::run(&ctx, a).await,
        Command::Compat(a) => compat::run(&ctx, a).await,
        Command::Kernels(a) => kernels::run(&ctx, a).await,
        Command::Import(a) => images::import(&ctx, a).await,
        Command::Export(a) => images::export(&ctx, a).await,
        Command::Inspect(a) => images::inspect_image(&ctx, a).await,
        Command::Launch(a) => images::launch(&ctx, a).await,
        Command::Instances(a) => instances::run(&ctx, a).await,
        Command::Migrate(a) => migrate::run(&ctx, *a).await,
        Command::Terminate(a) => images::terminate(&ctx, a).await,
        Command::Migrations(a) => state::migrations(&ctx, a).await,
        Command::Completions { .. } | Command::Man => unreachable!("answered above"),
    }
}
