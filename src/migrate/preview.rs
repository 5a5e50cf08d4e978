//! A migration's plan without making anything (`--dry-run`): the source
//! read where it lies, what would be refused or changed, and what the EBS
//! direct APIs would move, at their published prices.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::image::bootcfg;
use crate::image::hvm;
use crate::image::inspect;
use crate::migrate::{
    check_name, check_source, default_name, planned_steps, refusal, Method, MigrationHost, Options,
    Source, StepName, StepPlan,
};

/// What a migration would do, from the source read where it lies: nothing is made.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub source_image_id: String,
    pub region: String,
    /// Why it would be refused; `None` when it would migrate.
    pub refused: Option<String>,
    pub steps: Vec<StepName>,
    /// The new image's name.
    pub name: String,
    pub layout: Option<hvm::Layout>,
    pub boot: Option<bootcfg::BootConfig>,
    pub changes: Vec<bootcfg::Change>,
    pub findings: Vec<String>,
    /// Blocks the inspection fetched where the disk lies (an EBS snapshot).
    pub blocks_read: Option<u64>,
    /// What the migration would read and write with the EBS direct APIs, and its price.
    pub transfer: Option<TransferEstimate>,
}

/// EBS direct API prices, US East (N. Virginia), from the Amazon EBS pricing
/// page (https://aws.amazon.com/ebs/pricing/, "EBS direct APIs for
/// Snapshots"): GetSnapshotBlock $0.003 and PutSnapshotBlock $0.006 per
/// 1,000 requests (PutSnapshotBlock per 1,000 SnapshotAPIUnits, one per
/// 512 KiB block), ListSnapshotBlocks/ListChangedBlocks $0.0006 per 1,000.
/// Other regions differ a little; data transfer within a region is free.
pub const USD_PER_1000_GET: f64 = 0.003;
pub const USD_PER_1000_PUT: f64 = 0.006;
pub const USD_PER_1000_LIST: f64 = 0.0006;

/// What a migration would move through the EBS direct APIs.
#[derive(Debug, Clone, Serialize)]
pub struct TransferEstimate {
    /// The source's 512 KiB blocks that hold data (ListSnapshotBlocks).
    pub data_blocks: u64,
    /// GetSnapshotBlock calls: every data block once (direct); none with
    /// the helper (its volume is made from the snapshot).
    pub blocks_to_read: u64,
    /// PutSnapshotBlock calls: the data blocks and the boot area's 2
    /// (direct); the boot area only with the helper.
    pub blocks_to_write: u64,
    pub bytes_to_read: u64,
    pub bytes_to_write: u64,
    pub list_calls: u64,
    /// At the prices above, in US dollars.
    pub usd: f64,
}

impl TransferEstimate {
    pub fn new(data_blocks: u64, method: Method) -> Self {
        const BLOCK: u64 = crate::image::BLOCK;
        let helper = method == Method::Helper;
        let read = if helper { 0 } else { data_blocks };
        let write = if helper { 2 } else { data_blocks + 2 };
        // ListSnapshotBlocks pages hold up to 10,000 blocks: the inspection's and the transfer's.
        let list_calls = 2 * data_blocks.div_ceil(10_000).max(1);
        let usd = read as f64 / 1000.0 * USD_PER_1000_GET
            + write as f64 / 1000.0 * USD_PER_1000_PUT
            + list_calls as f64 / 1000.0 * USD_PER_1000_LIST;
        TransferEstimate {
            data_blocks,
            blocks_to_read: read,
            blocks_to_write: write,
            bytes_to_read: read * BLOCK,
            bytes_to_write: write * BLOCK,
            list_calls,
            usd,
        }
    }
}

/// The plan of a migration of `source`, when the host can read its disk in
/// place; `steps` says what shapes its steps.
pub async fn preview(
    host: &dyn MigrationHost,
    region: &str,
    source: &Source,
    opts: &Options,
    steps: &StepPlan,
) -> Result<Option<Preview>> {
    let Some(disk) = host.source_in_place(region, source).await? else {
        return Ok(None);
    };
    check_source(&disk.image)?;
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| default_name(&disk.image));
    let mut p = Preview {
        source_image_id: disk.image.image_id.clone(),
        region: region.to_string(),
        refused: None,
        steps: vec![],
        name,
        layout: None,
        boot: None,
        changes: vec![],
        findings: vec![],
        blocks_read: None,
        transfer: None,
    };
    let (d, flavor) = (disk.disk.clone(), disk.flavor);
    let inspected = tokio::task::spawn_blocking(move || inspect::inspect_in(&d, flavor))
        .await
        .map_err(|source| Error::Panicked { source })?;
    p.blocks_read = disk.disk.blocks_read();
    let insp = match inspected {
        Ok(i) => i,
        Err(e) => {
            p.refused = Some(format!("{}: {e}", disk.image.image_id));
            return Ok(Some(p));
        }
    };
    p.refused = refusal(&disk.image.image_id, &insp);
    if p.refused.is_none() {
        let named = check_name(host, region, &disk.image, opts.name.as_deref(), None).await;
        p.refused = named.err().map(|e| e.to_string());
    }
    p.findings = insp.findings.clone();
    if p.refused.is_none() {
        p.steps = planned_steps(steps);
        p.layout = Some(insp.hvm_layout());
        p.boot = insp.boot.as_ref().map(|b| b.config.clone());
        p.changes = insp.boot_changes.clone();
        p.transfer = disk
            .disk
            .data_blocks()
            .map(|n| TransferEstimate::new(n, opts.method));
    }
    Ok(Some(p))
}
