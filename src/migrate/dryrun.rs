//! `migrate --dry-run`: what one migration would do, made of what the host
//! reads in place (the [`Preview`]) and what the provider says to the calls
//! that would create something without acting ([`ProviderPlan`]: AWS's
//! DryRun=true). Nothing is created, deleted or written.

use async_trait::async_trait;
use serde::Serialize;

use crate::error::Result;
use crate::migrate::cutover::ReplacePreview;
use crate::migrate::{HelperOptions, Preview, Source, StepName, StepPlan};

/// One call asked of the provider with DryRun=true, and its answer.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub api: &'static str,
    /// `allowed`, `denied: ...`, or what else the provider said.
    pub result: String,
}

impl crate::output::Tabular for Check {
    fn headers() -> Vec<&'static str> {
        vec!["DRY-RUN CALL", "RESULT"]
    }

    fn row(&self) -> Vec<String> {
        vec![self.api.into(), self.result.clone()]
    }
}

/// What the provider says a migration would make, and its answers.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderPlan {
    pub method: crate::migrate::Method,
    pub region: String,
    pub source_image_id: String,
    pub root_snapshot: Option<String>,
    pub steps: Vec<StepName>,
    pub resources: Vec<String>,
    pub checks: Vec<Check>,
    /// The helper's device check (the script in check mode); the convert script is rendered from the plan.
    pub script: Option<String>,
    /// The source read where it lies (an image's root snapshot, GetSnapshotBlock):
    /// what would change, be refused, and be read and written.
    pub inspection: Option<Preview>,
    /// Why the source could not be read in place, when it could not.
    pub inspection_error: Option<String>,
    /// `--replace`: the replacement that would be launched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<ReplacePreview>,
}

/// A provider that answers calls without acting (AWS's DryRun=true): a
/// capability of the backend (`Backend::dry_run`).
#[async_trait]
pub trait ProviderDryRun: Send + Sync {
    /// Resolve the source with read-only calls, say what would be made, and
    /// ask whether each call that creates something would be allowed.
    async fn plan(
        &self,
        region: &str,
        source: &Source,
        helper: Option<&HelperOptions>,
        steps: &StepPlan,
    ) -> Result<ProviderPlan>;
}

/// One source's dry run: the plan read in place (local), or the provider's
/// answers with it (AWS).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum DryRun {
    Preview(Box<Preview>),
    Provider(Box<ProviderPlan>),
    Warm(Box<WarmPlan>),
}

/// `--sync` or `--cut-over` with `--dry-run`: the steps, and what the last
/// sync moved as the estimate of what this one would. The blocks changed
/// since are known only from a new snapshot, which a dry run does not take.
#[derive(Debug, Clone, Serialize)]
pub struct WarmPlan {
    pub migration_id: String,
    pub region: String,
    pub source_instance_id: String,
    /// `sync` or `cut-over`.
    pub action: &'static str,
    pub steps: Vec<StepName>,
    /// The last finished sync, what it read and what it wrote.
    pub last_sync: Option<u32>,
    pub last_changed_blocks: Option<u64>,
    pub last_blocks_written: Option<u64>,
    /// The blocks this run would move, estimated by the last sync's
    /// changed blocks, plus the head and the blocks the boot edits touch.
    pub estimated_blocks: u64,
    pub estimated_bytes: u64,
    /// At the EBS direct API prices (`preview::USD_PER_1000_*`), in US dollars.
    pub estimated_usd: f64,
    pub note: String,
    /// `--cut-over`: the replacement it would launch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<ReplacePreview>,
}

impl WarmPlan {
    pub fn new(
        journal: &crate::migrate::Journal,
        w: &crate::migrate::warm::Warm,
        steps: &StepPlan,
        cutting_over: bool,
    ) -> Self {
        use crate::migrate::preview::{USD_PER_1000_GET, USD_PER_1000_LIST, USD_PER_1000_PUT};
        let last = w.synced.as_ref();
        let changed = last.and_then(|s| s.changed_blocks);
        let edited = last.map_or(0, |s| s.built.edited.len() as u64);
        // Read and write each changed block once, the head's two, and the
        // edited blocks of both builds.
        let blocks = changed.unwrap_or(0) + 2 + 2 * edited;
        let list_calls = 2 + changed.unwrap_or(0).div_ceil(10_000);
        let usd = blocks as f64 / 1000.0 * (USD_PER_1000_GET + USD_PER_1000_PUT)
            + list_calls as f64 / 1000.0 * USD_PER_1000_LIST;
        WarmPlan {
            migration_id: journal.migration_id.clone(),
            region: journal.region.clone(),
            source_instance_id: journal.source_id.clone(),
            action: if cutting_over { "cut-over" } else { "sync" },
            steps: crate::migrate::planned_steps(steps),
            last_sync: last.map(|s| s.generation),
            last_changed_blocks: changed,
            last_blocks_written: last.map(|s| s.blocks_written),
            estimated_blocks: blocks,
            estimated_bytes: blocks * crate::image::BLOCK,
            estimated_usd: usd,
            note: match (last, changed) {
                (None, _) => "no sync finished yet: --resume the first one".into(),
                (Some(s), None) => format!(
                    "estimated from sync {} (the first: it copied the whole disk, so the blocks changed since are not known yet); the real count comes from ListChangedBlocks against the snapshot this run takes",
                    s.generation
                ),
                (Some(s), Some(_)) => format!(
                    "estimated from the blocks changed before sync {}; the real count comes from ListChangedBlocks against the snapshot this run takes",
                    s.generation
                ),
            },
            replacement: None,
        }
    }
}

impl DryRun {
    /// Whether the source would be refused.
    pub fn refused(&self) -> bool {
        match self {
            DryRun::Preview(p) => p.refused.is_some(),
            DryRun::Provider(plan) => plan
                .inspection
                .as_ref()
                .is_some_and(|p| p.refused.is_some()),
            DryRun::Warm(_) => false,
        }
    }
}
