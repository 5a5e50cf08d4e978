//! The words of a migration, each one type: the method, the source's kind,
//! the journal's state, the steps, and a fleet item's outcome. The steps a
//! run records are listed here once; the real run and the dry run both
//! read [`planned_steps`].

use serde::{Deserialize, Deserializer, Serialize};

/// How the HVM disk's bytes are made; the pipeline around it is the same.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// EBS direct APIs: no instance, no volume (AWS); files (local).
    #[default]
    Direct,
    /// A helper instance in the account, driven by SSM (AWS only).
    Helper,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Direct => "direct",
            Method::Helper => "helper",
        }
    }

    /// The steps this method records between the plan and the registration.
    pub fn steps(self) -> &'static [StepName] {
        match self {
            Method::Direct => &[StepName::Build, StepName::Upload],
            Method::Helper => &[
                StepName::Helper,
                StepName::Volumes,
                StepName::Copy,
                StepName::SnapshotCopy,
                StepName::SnapshotTarget,
            ],
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A journal's method: journals before version 2 may say "" for direct.
pub(crate) fn method_or_direct<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
    match String::deserialize(d)?.as_str() {
        "" | "direct" => Ok(Method::Direct),
        "helper" => Ok(Method::Helper),
        other => Err(serde::de::Error::custom(format!(
            "unknown method {other:?} (direct or helper)"
        ))),
    }
}

/// What a migration's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    #[default]
    Image,
    Instance,
}

/// Where a migration is, as its journal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalState {
    /// Running, or killed while it ran: `--resume` goes on.
    #[default]
    Running,
    Done,
    Failed,
    /// Stopped by Ctrl-C.
    Interrupted,
    /// `--cleanup` removed what it made.
    Cleaned,
    /// `--warm`: a sync finished; `--sync` or `--cut-over` goes on.
    Synced,
}

impl JournalState {
    pub fn as_str(self) -> &'static str {
        match self {
            JournalState::Running => "running",
            JournalState::Done => "done",
            JournalState::Failed => "failed",
            JournalState::Interrupted => "interrupted",
            JournalState::Cleaned => "cleaned",
            JournalState::Synced => "synced",
        }
    }
}

impl std::fmt::Display for JournalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step of a migration, by the name its result and journal give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepName {
    #[serde(rename = "snapshot")]
    Snapshot,
    /// A source amitool stopped for its snapshot runs again.
    #[serde(rename = "restart source")]
    RestartSource,
    #[serde(rename = "inspect")]
    Inspect,
    #[serde(rename = "plan")]
    Plan,
    #[serde(rename = "boot-config")]
    BootConfig,
    #[serde(rename = "fix-guest")]
    FixGuest,
    #[serde(rename = "build")]
    Build,
    #[serde(rename = "upload")]
    Upload,
    #[serde(rename = "helper")]
    Helper,
    #[serde(rename = "volumes")]
    Volumes,
    #[serde(rename = "copy")]
    Copy,
    #[serde(rename = "snapshot copy")]
    SnapshotCopy,
    #[serde(rename = "snapshot target")]
    SnapshotTarget,
    #[serde(rename = "register")]
    Register,
    #[serde(rename = "verify")]
    Verify,
    #[serde(rename = "cleanup")]
    Cleanup,
    /// `--resume` of a migration that had finished: nothing made.
    #[serde(rename = "resume")]
    Resume,
    /// `--verify`: the new image booted.
    #[serde(rename = "verify-boot")]
    VerifyBoot,
    #[serde(rename = "stop source")]
    StopSource,
    #[serde(rename = "data volumes")]
    DataVolumes,
    /// `--warm`: the data volumes snapshotted while the source runs.
    #[serde(rename = "data sync")]
    DataSync,
    #[serde(rename = "launch replacement")]
    LaunchReplacement,
    #[serde(rename = "elastic ip")]
    ElasticIp,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Snapshot => "snapshot",
            StepName::RestartSource => "restart source",
            StepName::Inspect => "inspect",
            StepName::Plan => "plan",
            StepName::BootConfig => "boot-config",
            StepName::FixGuest => "fix-guest",
            StepName::Build => "build",
            StepName::Upload => "upload",
            StepName::Helper => "helper",
            StepName::Volumes => "volumes",
            StepName::Copy => "copy",
            StepName::SnapshotCopy => "snapshot copy",
            StepName::SnapshotTarget => "snapshot target",
            StepName::Register => "register",
            StepName::Verify => "verify",
            StepName::Cleanup => "cleanup",
            StepName::Resume => "resume",
            StepName::VerifyBoot => "verify-boot",
            StepName::StopSource => "stop source",
            StepName::DataVolumes => "data volumes",
            StepName::DataSync => "data sync",
            StepName::LaunchReplacement => "launch replacement",
            StepName::ElasticIp => "elastic ip",
        }
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What shapes a migration's steps, known before it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub method: Method,
    /// `--fix-guest`.
    pub fix_guest: bool,
    /// An instance that runs and is stopped for its snapshot (`--stop-source`).
    pub restarts_source: bool,
    /// `--verify`.
    pub verify_boot: bool,
    /// `--replace`: whether the source is stopped first, and whether it has
    /// an Elastic IP to move.
    pub replace: Option<ReplaceSteps>,
    /// `--warm`: a sync (phase 1, `--sync`) or the cut-over.
    pub warm: Option<WarmStage>,
}

/// What a run of a warm migration does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmStage {
    /// Copy the running source; register nothing.
    Sync,
    /// Stop the source (when `stops_source`: it runs), sync the last time, register, replace.
    CutOver { stops_source: bool },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaceSteps {
    pub stops_source: bool,
    pub elastic_ip: bool,
    /// `--move-data-volumes`: they move once the replacement runs.
    pub moves_data: bool,
}

/// The steps a migration records, in order: the one list the run follows
/// and the dry run shows.
pub fn planned_steps(p: &StepPlan) -> Vec<StepName> {
    use StepName::*;
    let mut out = vec![];
    if p.restarts_source {
        out.push(RestartSource);
    }
    if let Some(WarmStage::CutOver { stops_source: true }) = p.warm {
        out.push(StopSource);
    }
    out.extend([Snapshot, Inspect, Plan, BootConfig]);
    if p.fix_guest {
        out.push(FixGuest);
    }
    out.extend(p.method.steps());
    if p.warm == Some(WarmStage::Sync) {
        out.extend([Cleanup, DataSync]);
        return out;
    }
    out.extend([Register, Verify, Cleanup]);
    if p.verify_boot {
        out.push(VerifyBoot);
    }
    if let Some(r) = p.replace {
        if r.stops_source && p.warm.is_none() {
            out.push(StopSource);
        }
        if r.moves_data {
            out.extend([LaunchReplacement, DataVolumes]);
        } else {
            out.extend([DataVolumes, LaunchReplacement]);
        }
        if r.elastic_ip {
            out.push(ElasticIp);
        }
    }
    out
}

/// How one item of a fleet ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemOutcome {
    Migrated,
    /// Refused before anything was made (the source cannot be migrated).
    Refused,
    Failed,
    /// Stopped by Ctrl-C, or never started after it.
    Interrupted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_results_and_journals_words() {
        for s in [
            StepName::RestartSource,
            StepName::BootConfig,
            StepName::SnapshotTarget,
            StepName::VerifyBoot,
            StepName::ElasticIp,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(
            serde_json::to_string(&JournalState::Cleaned).unwrap(),
            "\"cleaned\""
        );
        #[derive(Deserialize)]
        struct J {
            #[serde(deserialize_with = "method_or_direct")]
            m: Method,
        }
        let old: J = serde_json::from_str(r#"{"m": ""}"#).unwrap();
        assert_eq!(old.m, Method::Direct);
        assert!(serde_json::from_str::<J>(r#"{"m": "scp"}"#).is_err());
    }

    #[test]
    fn every_method_and_option_gives_its_steps_once() {
        let p = StepPlan {
            method: Method::Helper,
            fix_guest: true,
            restarts_source: true,
            verify_boot: true,
            replace: Some(ReplaceSteps {
                stops_source: true,
                elastic_ip: false,
                moves_data: false,
            }),
            warm: None,
        };
        let names: Vec<&str> = planned_steps(&p).iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "restart source",
                "snapshot",
                "inspect",
                "plan",
                "boot-config",
                "fix-guest",
                "helper",
                "volumes",
                "copy",
                "snapshot copy",
                "snapshot target",
                "register",
                "verify",
                "cleanup",
                "verify-boot",
                "stop source",
                "data volumes",
                "launch replacement"
            ]
        );
    }
}
