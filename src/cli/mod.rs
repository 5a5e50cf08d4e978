//! The command line: global flags, subcommands, and the context they run in.

use clap::{CommandFactory, Parser, Subcommand};

use crate::backend::aws::{AwsBackend, ClientOptions};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::output::{self, Format};
use crate::progress::ProgressPolicy;

pub mod compat;
mod context;
pub mod fleet;
pub mod images;
pub mod instances;
pub mod kernels;
pub mod list;
pub mod migrate;
mod migrate_output;
pub mod process;
pub mod state;

pub use context::{BackendKind, Context, GlobalArgs};

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
    /// Fleets beyond this machine, on Step Functions: `fleet start`, `fleet status`.
    Fleet(fleet::FleetArgs),
    /// Take a fleet's items from its activity and migrate them (run on EC2 in its region).
    Worker(fleet::WorkerArgs),
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

async fn build_backend(global: &GlobalArgs) -> Result<Box<dyn Backend>> {
    match global.backend {
        BackendKind::Aws => {
            // --state-dir on the command line (not the environment) is the local host's.
            let from_env = std::env::var_os("AMITOOL_STATE_DIR").map(std::path::PathBuf::from);
            if global.state_dir.is_some() && global.state_dir != from_env {
                return Err(Error::InvalidInput(
                    "--state-dir is the local backend's: add --backend local".into(),
                ));
            }
            // A named profile that does not exist is an error, even with
            // credentials in the environment (the SDK would quietly use those).
            if let Some(p) = &global.profile {
                crate::backend::aws::client::check_profile(p).map_err(Error::InvalidInput)?;
            }
            let opts = ClientOptions {
                profile: global.profile.clone(),
                endpoint_url: global.endpoint_url.clone(),
            };
            if let Some(n) = global.max_requests_per_second {
                crate::backend::aws::budget::set_max(f64::from(n));
            }
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
        Command::Completions { shell } => return completions(shell),
        Command::Man => return man(),
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
        Command::Fleet(a) => fleet::run(&ctx, a).await,
        Command::Worker(a) => fleet::worker(&ctx, a).await,
        Command::Migrations(a) => state::migrations(&ctx, a).await,
        Command::Completions { .. } | Command::Man => unreachable!("answered above"),
    }
}

/// `amitool completions SHELL`: the shell's completion script on stdout.
fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut buf = vec![];
    clap_complete::generate(shell, &mut Cli::command(), "amitool", &mut buf);
    output::emit(String::from_utf8_lossy(&buf).trim_end());
    Ok(0)
}

/// `amitool man`: the manual page (roff) on stdout.
fn man() -> Result<u8> {
    let mut buf = vec![];
    clap_mangen::Man::new(Cli::command())
        .render(&mut buf)
        .map_err(|e| Error::io("render", "the manual page", e))?;
    output::emit(String::from_utf8_lossy(&buf).trim_end());
    Ok(0)
}
