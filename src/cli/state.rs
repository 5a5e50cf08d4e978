//! `amitool migrations` (the journals: what ran, where it stands, what it
//! made), `amitool completions SHELL` and `amitool man`.

use std::path::Path;

use clap::{Args, CommandFactory, Subcommand};
use serde::Serialize;

use crate::cli::{Cli, Context};
use crate::error::{Error, Result};
use crate::migrate::Journal;
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

/// One journal, as `migrations` lists it.
#[derive(Debug, Serialize)]
pub struct MigrationRow {
    pub migration_id: String,
    pub backend: String,
    pub method: String,
    pub region: String,
    pub source: String,
    pub state: String,
    pub image_id: Option<String>,
    /// Seconds since the journal was last written.
    pub age_seconds: u64,
    pub journal: String,
}

impl Tabular for MigrationRow {
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
            self.state.clone(),
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

fn rows(dir: &Path) -> Result<Vec<MigrationRow>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        // A journal that does not load (another tool's file, a damaged one) is skipped, not fatal.
        let Ok(j) = Journal::load(dir, id) else {
            continue;
        };
        let age_seconds = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .map_or(0, |d| d.as_secs());
        out.push(MigrationRow {
            source: j.source_id.clone(),
            migration_id: j.migration_id.clone(),
            backend: j.backend.clone(),
            method: j.method.clone(),
            region: j.region.clone(),
            state: j.state.clone(),
            image_id: j.image_id.clone(),
            age_seconds,
            journal: j.path().display().to_string(),
        });
    }
    out.sort_by_key(|r| r.age_seconds);
    Ok(out)
}

pub async fn migrations(ctx: &Context, a: MigrationsArgs) -> Result<u8> {
    let host = ctx.backend.migration_host().ok_or_else(|| {
        Error::InvalidInput(format!(
            "the {} backend keeps no migrations",
            ctx.backend.name()
        ))
    })?;
    let dir = host.journal_dir();
    match a.action {
        None => {
            output::emit(&output::render(&rows(&dir)?, ctx.format()));
            Ok(0)
        }
        Some(MigrationsAction::Rm { migration_id }) => {
            let j = Journal::load(&dir, &migration_id)?;
            if !matches!(j.state.as_str(), "done" | "cleaned") {
                return Err(Error::InvalidInput(format!(
                    "{migration_id} is {}: finish it with --resume or remove what it made with --cleanup first",
                    j.state
                )));
            }
            std::fs::remove_file(j.path()).map_err(|e| Error::io("remove", j.path(), e))?;
            match ctx.format() {
                Format::Json => output::emit(&output::json(
                    &serde_json::json!({"removed": j.path().display().to_string()}),
                )),
                Format::Table | Format::Text => {
                    output::emit(&format!("removed {}", j.path().display()))
                }
            }
            Ok(0)
        }
    }
}

/// `amitool completions SHELL`: the shell's completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut buf = vec![];
    clap_complete::generate(shell, &mut Cli::command(), "amitool", &mut buf);
    output::emit(String::from_utf8_lossy(&buf).trim_end());
    Ok(0)
}

/// `amitool man`: the manual page (roff) on stdout.
pub fn man() -> Result<u8> {
    let mut buf = vec![];
    clap_mangen::Man::new(Cli::command())
        .render(&mut buf)
        .map_err(|e| Error::io("render", "the manual page", e))?;
    output::emit(String::from_utf8_lossy(&buf).trim_end());
    Ok(0)
}
