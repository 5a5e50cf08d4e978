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
        }
    }
}
