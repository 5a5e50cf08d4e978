use std::process::ExitCode;

use clap::Parser;

use amitool::cli::{self, Cli};

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

#[tokio::main]
async fn main() -> ExitCode {
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
    match cli::run(cli).await {
        Ok(code) => match amitool::output::write_failure() {
            Some(why) => {
                eprintln!("amitool: cannot write the output to stdout: {why}");
                ExitCode::from(1)
            }
            None => ExitCode::from(code),
        },
        Err(e) => {
            // A message echoes what it was given: never 100,000 characters of it.
            let mut said = amitool::error::chain(&e);
            if said.chars().count() > 2000 {
                said = said.chars().take(2000).collect::<String>() + "…";
            }
            eprintln!("amitool: {said}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
