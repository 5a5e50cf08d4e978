//! `amitool migrations`: the journals (what ran, where it stands, what it
//! made), and `migrations rm` of a finished one.

use clap::{Args, Subcommand};

use crate::cli::context::Context;
use crate::error::{Error, Result};
use crate::migrate::journal::{self, Summary};
use crate::output::{self, cell, Format, Tabular};

#[derive(Debug, Args)]
pub struct MigrationsArgs {
    #[command(subcommand)]
    pub action: Option<MigrationsAction>,
}

#[derive(Debug, Subcommand)]
pub enum MigrationsAction {
    /// Remove the journal of a finished (or cleaned-up) migration.
    Rm {
        /// The migration's id (mig-...).
        migration_id: String,
    },
}

impl Tabular for Summary {
    fn headers() -> Vec<&'static str> {
        vec![
            "MIGRATION",
            "STATE",
            "SOURCE",
            "IMAGE",
            "REGION",
            "METHOD",
            "AGE",
        ]
    }
    fn row(&self) -> Vec<String> {
        vec![
            self.migration_id.clone(),
            self.state.to_string(),
            self.source.clone(),
            cell(self.image_id.as_deref()),
            self.region.clone(),
            format!("{}/{}", self.backend, self.method),
            age(self.age_seconds),
        ]
    }
}

fn age(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub async fn migrations(ctx: &Context, a: MigrationsArgs) -> Result<u8> {
    let host = ctx.backend.migration_host().ok_or_else(|| {
        Error::Unsupported(format!(
            "the {} backend keeps no migrations",
            ctx.backend.name()
        ))
    })?;
    let dir = host.journal_dir();
    match a.action {
        None => {
            output::emit(&output::render(&journal::list(&dir), ctx.format()));
            Ok(0)
        }
        Some(MigrationsAction::Rm { migration_id }) => {
            let path = journal::remove_finished(&dir, &migration_id)?;
            match ctx.format() {
                Format::Json => output::emit(&output::json(
                    &serde_json::json!({"removed": path.display().to_string()}),
                )),
                Format::Table | Format::Text => {
                    output::emit(&format!("removed {}", path.display()))
                }
            }
            Ok(0)
        }
    }
}
