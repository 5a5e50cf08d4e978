//! The migration journal: what a migration has made and how far it got,
//! written before and after each step, so that `--resume` finishes a
//! migration that was killed and `--cleanup` removes what it made.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::migrate::{JournalState, Method, SourceKind, StepName};

fn version_one() -> u32 {
    1
}

/// The upload of the HVM disk into a new snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Upload {
    pub snapshot_id: String,
    /// Block indexes already written (512 KiB blocks on EBS), kept as
    /// ranges `[first, last]`: a resume reads and writes none of them again.
    #[serde(with = "block_ranges")]
    pub blocks: BTreeSet<i32>,
    /// Blocks read and found all zeros: nothing to write, nothing to read again.
    #[serde(default, with = "block_ranges")]
    pub zero: BTreeSet<i32>,
    pub completed: bool,
}

/// The journal's format: 2 made the method, source kind and state typed
/// and dropped fields nothing read (`boot_snapshot`, `source_blocks`,
/// `downloaded`); a version 1 journal reads as it is (they are ignored).
pub const JOURNAL_VERSION: u32 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    /// [`JOURNAL_VERSION`] when written; 1 for journals before it.
    #[serde(default = "version_one")]
    pub version: u32,
    pub migration_id: String,
    pub backend: String,
    pub region: String,
    /// `image` or `instance`, and its id.
    pub source_kind: SourceKind,
    pub source_id: String,
    /// `direct` or `helper`.
    #[serde(default, deserialize_with = "crate::migrate::vocab::method_or_direct")]
    pub method: Method,
    /// The helper instance, and whether this migration launched it.
    #[serde(default)]
    pub helper_instance: Option<String>,
    #[serde(default)]
    pub helper_launched: bool,
    /// The helper choices of the first run (--helper-instance, -subnet,
    /// -profile, -type): a resume goes on with them.
    #[serde(default)]
    pub helper_options: Option<crate::migrate::HelperOptions>,
    /// Volumes this migration created in the helper's zone.
    #[serde(default)]
    pub source_volume: Option<String>,
    #[serde(default)]
    pub target_volume: Option<String>,
    pub name: Option<String>,
    pub fix_guest: bool,
    /// --stop-source: a running source instance is stopped for its snapshot.
    #[serde(default)]
    pub stop_source: bool,
    /// The source instance amitool stopped and has not started again yet.
    #[serde(default)]
    pub stopped_source: bool,
    /// The new root volume's type when told (`--volume-type`), else the source's.
    #[serde(default)]
    pub volume_type: Option<String>,
    /// The snapshot this migration made of an instance's root volume.
    pub temporary_snapshot: Option<String>,
    /// The helper's target volume as it copied it (the ranges only): the
    /// parent of the result, which adds blocks 0-1 and the overlay's.
    #[serde(default)]
    pub copy_snapshot: Option<String>,
    /// The KMS key of an encrypted source; the result is encrypted with it.
    #[serde(default)]
    pub kms_key: Option<String>,
    pub upload: Option<Upload>,
    /// The snapshot that holds the HVM disk once the method stored it: a
    /// resume registers it instead of making the disk again.
    #[serde(default)]
    pub disk_snapshot: Option<String>,
    /// The time written into the files amitool edits (seconds since the
    /// epoch), fixed at the first build so a resumed copy is the same copy.
    #[serde(default)]
    pub edit_time: Option<i64>,
    /// What making the disk read and wrote.
    #[serde(default)]
    pub transfer: Option<crate::image::overlay::TransferStats>,
    /// `--replace`: the cut-over to a replacement instance, step by step.
    #[serde(default)]
    pub replace: Option<crate::migrate::cutover::Replace>,
    /// `--warm`: its syncs and cut-over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<crate::migrate::warm::Warm>,
    pub image_id: Option<String>,
    pub state: JournalState,
    /// The steps the last run recorded, in order.
    #[serde(default)]
    pub steps: Vec<StepName>,
    #[serde(skip)]
    path: PathBuf,
}

/// A set of block indexes as inclusive ranges `[[0, 9], [12, 12]]`; plain
/// indexes (journals before ranges) are read too.
mod block_ranges {
    use std::collections::BTreeSet;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(set: &BTreeSet<i32>, s: S) -> Result<S::Ok, S::Error> {
        let mut ranges: Vec<[i32; 2]> = vec![];
        for &i in set {
            match ranges.last_mut() {
                Some(r) if r[1].checked_add(1) == Some(i) => r[1] = i,
                _ => ranges.push([i, i]),
            }
        }
        ranges.serialize(s)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        One(i32),
        Range([i32; 2]),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<i32>, D::Error> {
        let mut out = BTreeSet::new();
        for item in Vec::<Item>::deserialize(d)? {
            match item {
                Item::One(i) => {
                    out.insert(i);
                }
                Item::Range([a, b]) if a <= b && b - a < (1 << 24) => out.extend(a..=b),
                Item::Range([a, b]) => {
                    return Err(serde::de::Error::custom(format!(
                        "block range [{a}, {b}] is not a range of at most 16M blocks"
                    )))
                }
            }
        }
        Ok(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn ranges_round_trip_and_old_journals_read() {
            #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
            struct W(#[serde(with = "super")] std::collections::BTreeSet<i32>);
            let w = W([0, 1, 2, 5, 7, 8].into_iter().collect());
            let text = serde_json::to_string(&w).unwrap();
            assert_eq!(text, "[[0,2],[5,5],[7,8]]");
            assert_eq!(serde_json::from_str::<W>(&text).unwrap(), w);
            assert_eq!(serde_json::from_str::<W>("[0,1,2,5,7,8]").unwrap(), w);
            assert!(serde_json::from_str::<W>("[[5,1]]").is_err());
        }
    }
}

/// One journal, as `migrations` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub migration_id: String,
    pub backend: String,
    pub method: Method,
    pub region: String,
    pub source: String,
    pub state: JournalState,
    pub image_id: Option<String>,
    /// Seconds since the journal was last written.
    pub age_seconds: u64,
    pub journal: String,
}

/// Every journal in `dir`, newest first (a file that does not load is skipped).
pub fn list(dir: &Path) -> Vec<Summary> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
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
        out.push(Summary {
            source: j.source_id.clone(),
            migration_id: j.migration_id.clone(),
            backend: j.backend.clone(),
            method: j.method,
            region: j.region.clone(),
            state: j.state,
            image_id: j.image_id.clone(),
            age_seconds,
            journal: j.path().display().to_string(),
        });
    }
    out.sort_by_key(|r| r.age_seconds);
    out
}

/// Remove a finished (or cleaned-up) migration's journal; its path.
pub fn remove_finished(dir: &Path, migration_id: &str) -> Result<PathBuf> {
    let j = Journal::load(dir, migration_id)?;
    if !matches!(j.state, JournalState::Done | JournalState::Cleaned) {
        return Err(Error::refused(
            migration_id,
            format!(
                "{migration_id} is {}: finish it with --resume or remove what it made with --cleanup first",
                j.state
            ),
        ));
    }
    std::fs::remove_file(j.path()).map_err(|e| Error::io("remove", j.path(), e))?;
    Ok(j.path().to_path_buf())
}

/// Where journals live: `AMITOOL_JOURNAL_DIR`, else the user's data directory.
pub fn journal_dir() -> PathBuf {
    std::env::var_os("AMITOOL_JOURNAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            dirs::data_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("amitool")
                .join("migrations")
        })
}

/// `mig-` and 12 hex digits.
pub fn check_migration_id(id: &str) -> Result<()> {
    let ok = id
        .strip_prefix("mig-")
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Error::MalformedId {
            kind: "migration",
            id: crate::ids::shown(id),
            expected: "mig- and 12 hex digits",
        })
    }
}

impl Journal {
    /// [`Journal::edit_time`], set now on first use: e2fsprogs'
    /// `E2FSPROGS_FAKE_TIME` when set (reproducible builds, tests), else the clock.
    pub fn edit_time(&mut self) -> Result<i64> {
        if let Some(t) = self.edit_time {
            return Ok(t);
        }
        let t = std::env::var("E2FSPROGS_FAKE_TIME")
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
            });
        self.edit_time = Some(t);
        self.save()?;
        Ok(t)
    }

    pub fn new(dir: &Path, migration_id: &str) -> Self {
        Journal {
            version: JOURNAL_VERSION,
            migration_id: migration_id.to_string(),
            state: JournalState::Running,
            path: dir.join(format!("{migration_id}.json")),
            ..Default::default()
        }
    }

    pub fn load(dir: &Path, migration_id: &str) -> Result<Self> {
        check_migration_id(migration_id)?;
        let path = dir.join(format!("{migration_id}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::not_found("journal of", migration_id, dir.display().to_string())
            } else {
                Error::io("read", &path, e)
            }
        })?;
        let mut j: Journal = serde_json::from_str(&text).map_err(|source| Error::Json {
            what: format!("read {}", path.display()),
            source,
        })?;
        j.path = path;
        // Saved again in this version's form.
        j.version = JOURNAL_VERSION;
        Ok(j)
    }

    /// Write the journal atomically (temporary file, fsync, rename).
    pub fn save(&self) -> Result<()> {
        crate::migrate::hooks::before_journal_write(self);
        let dir = self.path.parent().expect("journal paths have a directory");
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("journals serialize");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| Error::io("write", &self.path, e))
    }

    /// The client token of this migration's upload: a warm migration's
    /// syncs each start their own snapshot.
    pub fn upload_token(&self) -> String {
        match &self.warm {
            Some(w) if w.generation > 0 => format!("{}-upload-{}", self.migration_id, w.generation),
            _ => format!("{}-upload", self.migration_id),
        }
    }

    /// The warm sync being made: its snapshots carry it as a tag.
    pub fn sync_generation(&self) -> Option<u32> {
        self.warm.as_ref().map(|w| w.generation)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_one_journal_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mig-00000000000a.json"),
            r#"{"migration_id": "mig-00000000000a", "backend": "aws", "region": "us-east-1",
                "source_kind": "instance", "source_id": "i-0123456789abcdef0", "method": "",
                "name": null, "fix_guest": false, "temporary_snapshot": "snap-1",
                "boot_snapshot": "snap-2", "source_blocks": 12, "downloaded": "snap-1",
                "upload": null, "image_id": null, "state": "failed"}"#,
        )
        .unwrap();
        let j = Journal::load(dir.path(), "mig-00000000000a").unwrap();
        assert_eq!(
            (j.method, j.source_kind, j.state, j.version),
            (
                Method::Direct,
                SourceKind::Instance,
                JournalState::Failed,
                JOURNAL_VERSION
            )
        );
        j.save().unwrap();
        let text = std::fs::read_to_string(j.path()).unwrap();
        assert!(
            !text.contains("boot_snapshot") && text.contains("\"version\": 2"),
            "{text}"
        );
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::new(dir.path(), "mig-0123456789ab");
        j.upload = Some(Upload {
            snapshot_id: "snap-1".into(),
            blocks: [2, 0, 1, 7].into(),
            zero: [3].into(),
            completed: false,
        });
        j.save().unwrap();
        let back = Journal::load(dir.path(), "mig-0123456789ab").unwrap();
        assert_eq!(back, j);
        assert!(Journal::load(dir.path(), "mig-nothere").is_err());
        assert_eq!(
            Journal::load(dir.path(), "mig-000000000000")
                .unwrap_err()
                .exit_code(),
            2
        );
    }
}
