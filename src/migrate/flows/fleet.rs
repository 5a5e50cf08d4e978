//! A fleet in one process (`migrate` with several sources): a few at a
//! time, each with its own journal, every item's outcome and a summary.

use futures::StreamExt;
use serde::Serialize;

use super::*;

/// How many migrations of a fleet run at once.
pub const FLEET_CONCURRENCY: usize = 4;

/// One item of a fleet's summary.
#[derive(Debug, Serialize)]
pub struct FleetItem {
    pub source: String,
    pub outcome: ItemOutcome,
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

impl Runner<'_> {
    /// Several migrations at once, each with its own journal; every item's
    /// outcome, one line each on stderr as it ends.
    pub(super) async fn fleet(&self, req: &Request, sources: &[Source]) -> Outcome {
        crate::progress::show_steps(crate::progress::ProgressPolicy { enabled: false });
        crate::progress::set_fleet();
        let total = sources.len();
        let finished = std::sync::atomic::AtomicUsize::new(0);
        let finished = &finished;
        let mut items: Vec<FleetItem> = futures::stream::iter(sources)
            .map(|source| async move {
                let label = source.id().to_string();
                // After Ctrl-C, the sources not started yet are not started.
                let (mid, result) = if crate::interrupt::is_interrupted() {
                    (None, Err(Error::Interrupted))
                } else {
                    crate::progress::for_item(label.clone(), self.item(req, source)).await
                };
                if crate::progress::notes_shown() {
                    let n = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    let what = match &result {
                        Ok(m) => format!("migrated to {} ({})", m.image_id, m.migration_id),
                        Err(e) => format!("failed: {}", crate::error::chain(e)),
                    };
                    eprintln!("amitool: [{n}/{total}] {label}: {what}");
                }
                self.fleet_item(label, mid, result)
            })
            .buffer_unordered(FLEET_CONCURRENCY)
            .collect()
            .await;
        items.sort_by(|x, y| x.source.cmp(&y.source));
        // The budget every item shared, and how EBS answered it.
        if crate::progress::notes_shown() {
            for b in self.host().map(|h| h.request_budgets()).unwrap_or_default() {
                eprintln!(
                    "amitool: {} budget in {}: {} requests, at most {:.0} a second (now {:.0}), throttled {} time(s)",
                    b.api, b.region, b.requests, b.max_per_second, b.per_second, b.throttled
                );
            }
        }
        Outcome::Fleet {
            items,
            interrupted: crate::interrupt::is_interrupted(),
        }
    }

    fn fleet_item(
        &self,
        source: String,
        mid: Option<String>,
        result: Result<Migration>,
    ) -> FleetItem {
        match result {
            Ok(m) => FleetItem {
                source,
                outcome: ItemOutcome::Migrated,
                migration_id: Some(m.migration_id),
                image_id: Some(m.image_id).filter(|i| !i.is_empty()),
                verified: m.steps.iter().any(|s| s.name == StepName::VerifyBoot),
                findings: m.findings,
                replacement: m.replacement.as_ref().map(|r| r.instance_id.clone()),
                instance_type: m.replacement.as_ref().map(|r| r.instance_type.clone()),
                elastic_ip: m.replacement.as_ref().and_then(|r| r.elastic_ip.clone()),
                source_state: m.replacement.as_ref().map(|r| r.source_state.clone()),
                error: None,
            },
            Err(e) => FleetItem {
                outcome: match &e {
                    Error::Interrupted
                    | Error::MigrationInterrupted {
                        interrupted: true, ..
                    } => ItemOutcome::Interrupted,
                    e if e.exit_code() == 2 => ItemOutcome::Refused,
                    _ => ItemOutcome::Failed,
                },
                // A failed item's journal says how far it got.
                image_id: mid.as_deref().and_then(|id| {
                    let dir = self.host().ok()?.journal_dir();
                    Journal::load(&dir, id).ok()?.image_id
                }),
                source,
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
    }
}
