//! The migration journal: what a migration has made and how far it got,
//! written before and after each step, so that `--resume` finishes a
//! migration that was killed and `--cleanup` removes what it made.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    pub migration_id: String,
    pub backend: String,
    pub region: String,
    /// `image` or `instance`, and its id.
    pub source_kind: String,
    pub source_id: String,
    /// `direct` or `helper`.
    #[serde(default)]
    pub method: String,
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
    /// The helper's staging snapshot: the HVM disk's first MiB (MBR, boot.img,
    /// core.img) as amitool built it; the target volume is made from it.
    #[serde(default)]
    pub boot_snapshot: Option<String>,
    /// The helper's target volume as it copied it (the ranges only): the
    /// parent of the result, which adds blocks 0-1 and the overlay's.
    #[serde(default)]
    pub copy_snapshot: Option<String>,
    /// The KMS key of an encrypted source; the result is encrypted with it.
    #[serde(default)]
    pub kms_key: Option<String>,
    /// How many blocks of the source snapshot hold data (read by the download).
    #[serde(default)]
    pub source_blocks: Option<usize>,
    /// The snapshot whose blocks are already in the work directory.
    #[serde(default)]
    pub downloaded: Option<String>,
    pub upload: Option<Upload>,
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
    pub image_id: Option<String>,
    /// `running`, `failed`, `done` or `cleaned`.
    pub state: String,
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
        Err(Error::InvalidInput(format!(
            "malformed migration id {id:?}: expected mig- and 12 hex digits"
        )))
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
            migration_id: migration_id.to_string(),
            state: "running".into(),
            path: dir.join(format!("{migration_id}.json")),
            ..Default::default()
        }
    }

    pub fn load(dir: &Path, migration_id: &str) -> Result<Self> {
        check_migration_id(migration_id)?;
        let path = dir.join(format!("{migration_id}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::InvalidInput(format!(
                    "no journal for {migration_id} in {}",
                    dir.display()
                ))
            } else {
                Error::io("read", &path, e)
            }
        })?;
        let mut j: Journal = serde_json::from_str(&text).map_err(|source| Error::Json {
            what: format!("read {}", path.display()),
            source,
        })?;
        j.path = path;
        Ok(j)
    }

    /// Write the journal atomically (temporary file, fsync, rename).
    pub fn save(&self) -> Result<()> {
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

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
