//! The cut-over of `migrate --instance I --replace`, as the journal keeps
//! it: the replacement's type and why, each step's result, so a killed
//! run goes on where it stopped and `--rollback` knows what to undo.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::migrate::{Journal, Recorder};

/// What a backend whose instances have a network identity to move can do
/// for `--replace` and `--rollback` (a capability: `Backend::cut_over`).
#[async_trait]
pub trait CutOver: Send + Sync {
    /// The instance's type and the image it was launched from.
    async fn instance_of(
        &self,
        region: &str,
        instance_id: &str,
    ) -> Result<(String, Option<String>)>;
    /// The cut-over to a replacement of `instance_type` launched from
    /// `image_id`, after the image is registered; every step journaled.
    async fn cut_over(
        &self,
        journal: &mut Journal,
        image_id: &str,
        rec: &mut Recorder,
    ) -> Result<Replacement>;
    /// `--warm`: snapshot every data volume of the running source for this
    /// sync (crash-consistent, tagged, found again after a kill), so the
    /// cut-over's final snapshots hold only what changed since; the sync
    /// before's go. Recorded in the journal's `warm.data`.
    async fn sync_data_volumes(&self, journal: &mut Journal, rec: &mut Recorder) -> Result<()>;
    /// Undo a cut-over; a second run changes nothing.
    async fn roll_back(&self, journal: &mut Journal) -> Result<Rollback>;
    /// What the cut-over of `instance_id` to `instance_type` would launch
    /// and copy, and what the provider says to it without acting.
    async fn preview(
        &self,
        region: &str,
        instance_id: &str,
        instance_type: &str,
        reasons: Vec<String>,
        stops_source: bool,
    ) -> Result<ReplacePreview>;
}

/// `--replace`'s choices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplaceOptions {
    /// `--instance-type`: the replacement's type instead of the successor.
    pub instance_type: Option<String>,
    /// `--successor-family`.
    pub successor_family: Option<String>,
    /// `--keep-source-running`: the source is not stopped (its data volumes
    /// are then copied crash-consistent).
    pub keep_source_running: bool,
    /// `--move-data-volumes`: detach the data volumes from the stopped
    /// source and attach them to the replacement (no copy; same zone).
    #[serde(default)]
    pub move_data_volumes: bool,
}

/// A non-root EBS volume of the source, and its copy for the replacement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataVolume {
    pub device: String,
    pub volume_id: String,
    pub size_gib: i32,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub delete_on_termination: bool,
    /// The snapshot it was copied through, once taken.
    pub snapshot_id: Option<String>,
    /// `--move-data-volumes`: it is attached to the replacement now.
    #[serde(default)]
    pub moved: bool,
}

/// The cut-over's state, in the journal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Replace {
    pub options: ReplaceOptions,
    /// The replacement's type and why (the successor rule, or --instance-type).
    pub instance_type: Option<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Whether amitool stopped the source for the cut-over.
    #[serde(default)]
    pub stopped_source: bool,
    #[serde(default)]
    pub volumes: Vec<DataVolume>,
    /// Whether every data volume was snapshotted (after the stop).
    #[serde(default)]
    pub volumes_copied: bool,
    pub replacement: Option<String>,
    /// The source's Elastic IP: its allocation id and address.
    pub allocation_id: Option<String>,
    pub elastic_ip: Option<String>,
    #[serde(default)]
    pub eip_moved: bool,
    #[serde(default)]
    pub source_tagged: bool,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub rolled_back: bool,
}

impl Replace {
    pub fn new(options: ReplaceOptions) -> Self {
        Replace {
            options,
            ..Default::default()
        }
    }
}

/// What `--replace` reports (the `replacement` object of `migrate --output json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Replacement {
    pub instance_id: String,
    pub instance_type: String,
    pub reasons: Vec<String>,
    pub subnet_id: Option<String>,
    pub security_groups: Vec<String>,
    /// The replacement's data volumes: device and volume id.
    pub volumes: Vec<(String, String)>,
    pub elastic_ip: Option<String>,
    /// The source's state after the cut-over (`stopped`, or `running` with --keep-source-running).
    pub source_state: String,
}

/// What `--rollback` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rollback {
    pub migration_id: String,
    pub source_instance_id: String,
    pub source_state: String,
    pub replacement_instance_id: String,
    pub replacement_state: String,
    pub elastic_ip: Option<String>,
    /// Where the Elastic IP is now.
    pub elastic_ip_on: Option<String>,
    pub steps: Vec<String>,
}

/// What `--replace --dry-run` would launch, and what EC2 said to DryRun=true.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplacePreview {
    pub source_instance_id: String,
    pub instance_type: String,
    pub reasons: Vec<String>,
    pub subnet_id: Option<String>,
    pub security_groups: Vec<String>,
    pub key_name: Option<String>,
    pub volumes: Vec<DataVolume>,
    pub elastic_ip: Option<String>,
    /// Whether the source would be stopped first.
    pub stops_source: bool,
    /// EC2's answers to RunInstances, CreateVolume and AssociateAddress with DryRun=true.
    pub checks: Vec<String>,
}
