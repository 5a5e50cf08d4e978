//! The process: logging, the allocator's arenas, the async runtime, the one
//! line an error becomes and the exit status. `src/main.rs` is this alone.

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{run as run_cli, Cli};

fn init_logging(verbose: u8) {
    if verbose == 0 {
        return;
    }
    let filter = match verbose {
        1 => "amitool=debug",
        _ => "amitool=trace,aws_config=debug,aws_smithy_runtime=debug,aws_sdk_ec2=debug,aws_sdk_ebs=debug,aws_sdk_ssm=debug",
    };
    // Colour codes only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// glibc gives each thread that allocates at once an arena of its own (up
/// to 8 a core), and every arena keeps the 512 KiB block buffers freed in
/// it: a 1 TiB stream's 16 readers grew the process to 140 MiB, with two
/// arenas to 100 MiB at the same speed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn few_malloc_arenas() {
    extern "C" {
        fn mallopt(param: std::os::raw::c_int, value: std::os::raw::c_int) -> std::os::raw::c_int;
    }
    const M_ARENA_MAX: std::os::raw::c_int = -8;
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // other thread exists.
    unsafe {
        mallopt(M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn few_malloc_arenas() {}

/// The whole of `amitool`: parse the command line, run it, print an error
/// on one line and give the exit status.
pub fn main() -> ExitCode {
    few_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("amitool: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run() -> ExitCode {
    // Usage errors in one line (clap's own say more over several); help and
    // --version as clap prints them.
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // The message is the first paragraph (a list of missing
            // arguments after its colon included), on one line.
            let text = e.render().to_string();
            let first = text
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let first = first.trim_start_matches("error: ");
            let hint = match e.kind() {
                clap::error::ErrorKind::InvalidSubcommand
                | clap::error::ErrorKind::UnknownArgument => " (see --help)",
                _ => "",
            };
            let first: String = if first.chars().count() > 500 {
                first.chars().take(500).collect::<String>() + "…"
            } else {
                first.to_string()
            };
            eprintln!("amitool: {first}{hint}");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.global.verbose);
    match run_cli(cli).await {
        Ok(code) => match crate::output::write_failure() {
            Some(why) => {
                eprintln!("amitool: cannot write the output to stdout: {why}");
                ExitCode::from(1)
            }
            None => ExitCode::from(code),
        },
        Err(e) => {
            // A message echoes what it was given: never 100,000 characters of it.
            let mut said = crate::error::chain(&e);
            if said.chars().count() > 2000 {
                said = said.chars().take(2000).collect::<String>() + "…";
            }
            eprintln!("amitool: {said}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
