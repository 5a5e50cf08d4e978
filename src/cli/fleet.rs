//! `amitool fleet start|status` and `amitool worker`: fleets on the
//! backend's engine (Step Functions on AWS). Parsing and rendering only;
//! `crate::fleet` does the work.

use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::context::Context;
use crate::error::{Error, Result};
use crate::fleet::worker::{WorkedItem, WorkerOptions};
use crate::fleet::{self, FleetEngine, ItemOptions, ItemStatus, Settings};
use crate::output::{self, cell, Format, Tabular};

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub action: FleetAction,
}

#[derive(Debug, Subcommand)]
pub enum FleetAction {
    /// Deploy (or update) the state machine and activity `amitool-fleet` in
    /// each region the items name, put the items in S3 and start the execution.
    Start(StartArgs),
    /// An execution's map run and every item: source, state, migration, image, error.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The items: an AMI or instance id a line, then optionally its region
    /// (default: the one --region); # starts a comment.
    #[arg(long, value_name = "FILE")]
    pub from_file: std::path::PathBuf,
    /// The S3 bucket for the items (made if missing); with items in several
    /// regions, one bucket NAME-REGION in each.
    #[arg(long, value_name = "NAME")]
    pub bucket: String,
    /// Items at once in each region (the Distributed Map's MaxConcurrency).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// A worker silent this long has lost its item: the engine tries it again.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(3..=86_400))]
    pub heartbeat_seconds: u32,
    /// Tries of an item that fails while running (a refused one is not tried again).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,
    /// The role Step Functions runs as (default: role/amitool-fleet of the account).
    #[arg(long, value_name = "ARN")]
    pub role_arn: Option<String>,
    /// Also fix each guest in its HVM copy: fstab by UUID, a getty on ttyS0.
    #[arg(long)]
    pub fix_guest: bool,
    /// Keep the intermediate snapshot of an instance's volume.
    #[arg(long)]
    pub keep_temp: bool,
    /// The new root volumes' EBS type (default: each source's).
    #[arg(long, value_name = "TYPE", value_parser = ["standard", "gp2", "gp3"])]
    pub volume_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The execution's ARN, as `fleet start` printed it.
    pub execution_arn: String,
    /// Wait until the execution ends, a line on stderr as the counts change.
    #[arg(long)]
    pub wait: bool,
    /// --wait: seconds between looks.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The activity to take items from (`fleet start` prints it per region).
    #[arg(long, value_name = "ARN")]
    pub activity_arn: String,
    /// Items at once in this process.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Stop after this many items (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    pub max_items: Option<usize>,
    /// The name the engine records for this worker (default: host name and pid).
    #[arg(long)]
    pub name: Option<String>,
}

fn engine(ctx: &Context) -> Result<&dyn FleetEngine> {
    ctx.backend.fleet_engine().ok_or_else(|| {
        Error::Unsupported(format!(
            "fleets on Step Functions run on the AWS backend; the {} backend runs a fleet in one process: migrate --from-file",
            ctx.backend.name()
        ))
    })
}

pub async fn run(ctx: &Context, a: FleetArgs) -> Result<u8> {
    let engine = engine(ctx)?;
    match a.action {
        FleetAction::Start(s) => {
            let text = std::fs::read_to_string(&s.from_file)
                .map_err(|e| Error::io("read", &s.from_file, e))?;
            let default_region = match ctx.regions().await {
                Ok(r) if r.len() == 1 => r.into_iter().next(),
                _ => None,
            };
            let items = fleet::parse_items(
                &text,
                &s.from_file.display().to_string(),
                default_region.as_deref(),
            )?;
            let options = ItemOptions {
                fix_guest: s.fix_guest,
                keep_temp: s.keep_temp,
                volume_type: s.volume_type.clone(),
                ..ItemOptions::default()
            };
            let settings = Settings {
                max_concurrency: s.concurrency,
                heartbeat_seconds: s.heartbeat_seconds,
                max_attempts: s.max_attempts,
                role_arn: s.role_arn.clone(),
            };
            let started = fleet::start(engine, &items, &s.bucket, &options, &settings).await?;
            match ctx.format() {
                Format::Json => output::emit(&output::json(&started)),
                _ => {
                    let mut lines = vec![format!(
                        "fleet {}: {} items, execution {}",
                        started.fleet, started.items, started.execution_arn
                    )];
                    for (region, activity) in &started.activities {
                        lines.push(format!(
                            "{region}: execution {}, items in s3://{}; run workers there: amitool worker --region {region} --activity-arn {activity}",
                            started.executions.get(region).map(String::as_str).unwrap_or("-"),
                            started.buckets.get(region).map(String::as_str).unwrap_or("-"),
                        ));
                    }
                    output::emit(&lines.join("\n"));
                }
            }
            Ok(0)
        }
        FleetAction::Status(s) => {
            let status = if s.wait {
                fleet::wait(engine, &s.execution_arn, Duration::from_secs(s.interval)).await?
            } else {
                fleet::status(engine, &s.execution_arn).await?
            };
            match ctx.format() {
                Format::Json => output::emit(&output::json(&status)),
                Format::Text => output::emit(&output::text(&status.items)),
                Format::Table => {
                    let mut text = fleet::summary_line(&status);
                    if let Some(e) = &status.error {
                        text.push_str(&format!("\nexecution error: {e}"));
                    }
                    text.push('\n');
                    text.push_str(&output::table(&status.items));
                    output::emit(&text);
                }
            }
            Ok(status.exit_code())
        }
    }
}

pub async fn worker(ctx: &Context, a: WorkerArgs) -> Result<u8> {
    let engine = engine(ctx)?;
    let name = a.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let o = WorkerOptions {
        activity_arn: a.activity_arn,
        name,
        concurrency: a.concurrency as usize,
        max_items: a.max_items,
    };
    let summary = fleet::worker::work(ctx.backend.as_ref(), engine, &o).await?;
    match ctx.format() {
        Format::Json => output::emit(&output::json(&summary)),
        f => output::emit(&output::rows(&summary.items, f)),
    }
    Ok(summary.exit_code())
}

impl Tabular for ItemStatus {
    fn headers() -> Vec<&'static str> {
        vec![
            "SOURCE",
            "REGION",
            "STATE",
            "MIGRATION",
            "IMAGE",
            "TRIES",
            "ERROR",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.source.clone(),
            self.region.clone(),
            format!("{:?}", self.state).to_lowercase(),
            self.migration_id.clone(),
            cell(self.image_id.as_ref()),
            self.attempts.to_string(),
            cell(self.error.as_ref()),
        ]
    }
}

/// A worker's item: the status columns, and its seconds here.
impl Tabular for WorkedItem {
    fn headers() -> Vec<&'static str> {
        let mut h = ItemStatus::headers();
        h.push("SECONDS");
        h
    }
    fn row(&self) -> Vec<String> {
        let mut r = self.item.row();
        r.push(format!("{:.1}", self.seconds));
        r
    }
}
