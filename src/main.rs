use std::process::ExitCode;

use clap::Parser;

use amitool::cli::{self, Cli};

fn init_logging(verbose: u8) {
    if verbose == 0 {
        return;
    }
    let filter = match verbose {
        1 => "amitool=debug",
        _ => "amitool=trace,aws_config=debug,aws_smithy_runtime=debug,aws_sdk_ec2=debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
            eprintln!("amitool: {}", amitool::error::chain(&e));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
