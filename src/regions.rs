//! Which regions a command runs in, and running work across them concurrently.

use std::future::Future;

use futures::stream::{self, StreamExt};
use indicatif::ProgressBar;

use crate::backend::Backend;
use crate::catalog;
use crate::error::{Error, Result};
use crate::ids;

/// How many regions are asked at once.
pub const REGION_CONCURRENCY: usize = 8;

/// What the command line said about regions.
#[derive(Debug, Clone, Default)]
pub struct RegionSelection {
    pub regions: Vec<String>,
    pub all_regions: bool,
    pub pv_regions: bool,
}

/// A usage error unless `region` exists: the built-in table knows every
/// region it lists; anything else is asked of the backend.
pub async fn check(region: &str, backend: &dyn Backend) -> Result<()> {
    let unknown = |hint: &str| Error::UnknownRegion {
        region: ids::shown(region),
        hint: hint.to_string(),
    };
    if !ids::region_is_well_formed(region) {
        return Err(unknown("a region looks like eu-central-1"));
    }
    if catalog::compat().region(region).is_some() || backend.region_exists(region).await? {
        return Ok(());
    }
    Err(unknown(&format!(
        "the {} backend does not know it",
        backend.name()
    )))
}

/// The regions to run in, sorted and without duplicates.
pub async fn resolve(sel: &RegionSelection, backend: &dyn Backend) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for r in &sel.regions {
        check(r, backend).await?;
        out.push(r.clone());
    }
    if sel.pv_regions {
        out.extend(catalog::compat().pv_regions());
    }
    if sel.all_regions {
        out.extend(backend.enabled_regions().await?);
    }
    if out.is_empty() {
        let r = backend.default_region().ok_or(Error::NoRegion)?;
        check(&r, backend).await?;
        out.push(r);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Run `f` for every region, at most [`REGION_CONCURRENCY`] at once, keeping
/// each region's own result so one failure does not hide the others.
pub async fn for_each<T, F, Fut>(
    regions: &[String],
    progress: &ProgressBar,
    f: F,
) -> Vec<(String, Result<T>)>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut out: Vec<(String, Result<T>)> = stream::iter(regions.iter().cloned())
        .map(|r| {
            let fut = f(r.clone());
            async move { (r, fut.await) }
        })
        .buffer_unordered(REGION_CONCURRENCY)
        .inspect(|_| progress.inc(1))
        .collect()
        .await;
    progress.finish_and_clear();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Split per-region results: the successes, and each failure reported on stderr.
pub fn report_failures<T>(results: Vec<(String, Result<T>)>) -> (Vec<T>, usize) {
    let mut ok = Vec::new();
    let mut failed = 0;
    for (_, r) in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => {
                failed += 1;
                eprintln!("amitool: {}", crate::error::chain(&e));
            }
        }
    }
    (ok, failed)
}

/// Print what the regions that answered found, unless none answered (the
/// errors are already on stderr); the exit status: 1 when any region failed.
pub fn emit_partial<T: serde::Serialize + crate::output::Tabular>(
    items: &[T],
    format: crate::output::Format,
    failed: usize,
    total: usize,
) -> u8 {
    if failed == 0 || failed < total {
        crate::output::emit(&crate::output::render(items, format));
    }
    u8::from(failed > 0)
}

/// Why a region shows nothing PV: it never offered PV (the built-in table).
fn never_pv(region: &str) -> Option<String> {
    let table = crate::catalog::compat();
    match table.region(region) {
        Some(r) if !r.pv => Some(format!("{region} never offered PV")),
        None => Some(format!("{region} is not in amitool's region table")),
        Some(_) => None,
    }
}

/// Say on stderr why a result is empty, one line (the output itself stays
/// what it is: an empty table, `[]`): for each region the reason amitool
/// knows, else `what` found nothing there.
pub fn say_why_empty(
    empty: bool,
    regions: &[String],
    pv_only: bool,
    what: &dyn Fn(&str) -> String,
) {
    if !empty {
        return;
    }
    let reasons: Vec<String> = regions
        .iter()
        .map(|r| {
            pv_only
                .then(|| never_pv(r))
                .flatten()
                .unwrap_or_else(|| what(r))
        })
        .collect();
    if !reasons.is_empty() {
        eprintln!("amitool: nothing found: {}", reasons.join("; "));
    }
}
