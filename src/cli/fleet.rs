//! `migrate` with several sources (`--ami A --ami B`, `--from-file`): a
//! fleet, migrated a few at a time, each with its own journal, and a
//! summary of every item at the end.

use futures::StreamExt;
use serde::Serialize;

use crate::cli::migrate::{host, migrate_item, MigrateArgs};
use crate::cli::Context;
use crate::error::{Error, Result};
use crate::migrate::{Journal, Source};
use crate::output::{self, cell, Tabular};

/// How many migrations of a fleet run at once.
pub const FLEET_CONCURRENCY: usize = 4;

/// One row of a fleet's summary.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub source: String,
    pub migration_id: Option<String>,
    /// The registered image, also of a failed item that got that far.
    pub image_id: Option<String>,
    /// Whether --verify booted the result.
    pub verified: bool,
    pub findings: Vec<String>,
    /// `--replace`: the replacement, its type, the Elastic IP, the source's state.
    pub replacement: Option<String>,
    pub instance_type: Option<String>,
    pub elastic_ip: Option<String>,
    pub source_state: Option<String>,
    pub error: Option<String>,
}

impl Tabular for Outcome {
    fn headers() -> Vec<&'static str> {
        vec![
            "SOURCE",
            "MIGRATION",
            "IMAGE",
            "VERIFIED",
            "REPLACEMENT",
            "TYPE",
            "EIP",
            "SOURCE STATE",
            "OUTCOME",
        ]
    }

    fn wrapping_column() -> Option<usize> {
        Some(8)
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.source.clone(),
            cell(self.migration_id.as_deref()),
            cell(self.image_id.as_deref()),
            if self.verified { "yes" } else { "no" }.into(),
            cell(self.replacement.as_deref()),
            cell(self.instance_type.as_deref()),
            cell(self.elastic_ip.as_deref()),
            cell(self.source_state.as_deref()),
            match (&self.error, self.findings.len()) {
                (Some(e), _) => e.clone(),
                (None, 0) => "migrated".into(),
                (None, n) => format!("migrated; {n} finding(s): {}", self.findings.join("; ")),
            },
        ]
    }
}

/// Several migrations at once, each with its own journal; a summary at the end.
pub(super) async fn fleet(ctx: &Context, a: &MigrateArgs, sources: Vec<Source>) -> Result<u8> {
    if a.name.is_some() {
        return Err(Error::InvalidInput(
            "--name names one image; a fleet keeps each source's name + \"-hvm\"".into(),
        ));
    }
    crate::progress::show_steps(crate::progress::ProgressPolicy { enabled: false });
    crate::progress::set_fleet();
    let total = sources.len();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let finished = &finished;
    let mut outcomes: Vec<Outcome> = futures::stream::iter(sources)
        .map(|source| async move {
            let label = match &source {
                Source::Image(id) | Source::Instance(id) => id.clone(),
            };
            // After Ctrl-C, the sources not started yet are not started.
            let (mid, result) = if crate::interrupt::is_interrupted() {
                (None, Err(Error::Interrupted))
            } else {
                migrate_item(ctx, a, source).await
            };
            // One line per item as it ends (each says it started with its journal).
            if crate::progress::notes_shown() {
                let n = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let what = match &result {
                    Ok(m) => format!("migrated to {} ({})", m.image_id, m.migration_id),
                    Err(e) => format!("failed: {}", crate::error::chain(e)),
                };
                eprintln!("amitool: [{n}/{total}] {label}: {what}");
            }
            match result {
                Ok(m) => Outcome {
                    source: label,
                    migration_id: Some(m.migration_id),
                    image_id: Some(m.image_id),
                    verified: m.steps.iter().any(|s| s.name == "verify-boot"),
                    findings: m.findings,
                    replacement: m.replacement.as_ref().map(|r| r.instance_id.clone()),
                    instance_type: m.replacement.as_ref().map(|r| r.instance_type.clone()),
                    elastic_ip: m.replacement.as_ref().and_then(|r| r.elastic_ip.clone()),
                    source_state: m.replacement.as_ref().map(|r| r.source_state.clone()),
                    error: None,
                },
                Err(e) => Outcome {
                    // A failed item's journal says how far it got.
                    image_id: mid.as_deref().and_then(|id| {
                        let dir = host(ctx).ok()?.journal_dir();
                        Journal::load(&dir, id).ok()?.image_id
                    }),
                    source: label,
                    migration_id: mid,
                    verified: false,
                    findings: vec![],
                    replacement: None,
                    instance_type: None,
                    elastic_ip: None,
                    source_state: None,
                    error: Some(crate::error::chain(&e)),
                },
            }
        })
        .buffer_unordered(FLEET_CONCURRENCY)
        .collect()
        .await;
    outcomes.sort_by(|x, y| x.source.cmp(&y.source));
    output::emit(&output::render(&outcomes, ctx.format()));
    if crate::interrupt::is_interrupted() {
        return Ok(130);
    }
    Ok(u8::from(outcomes.iter().any(|o| o.error.is_some())))
}
