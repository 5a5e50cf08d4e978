//! The state directory of the local Xen host: one directory per region, with
//! images, snapshots, volumes and instances as JSON records beside raw files.
//! Records are written atomically (temporary file + rename).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::image::inspect::Drivers;
use crate::image::sparse;
use crate::model::Image;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    #[serde(flatten)]
    pub image: Image,
    pub root_snapshot_id: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The GRUB 2 configuration amitool embedded in an HVM disk it built.
    #[serde(default)]
    pub grub_cfg: Option<String>,
    #[serde(default)]
    pub drivers: Option<Drivers>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub snapshot_id: String,
    pub size: u64,
    pub state: String,
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub volume_id: String,
    pub size: u64,
    pub snapshot_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance_id: String,
    pub image_id: String,
    pub instance_type: String,
    pub root_volume_id: String,
    pub state: String,
}

/// Kinds of things kept, with their id prefix and directory.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Image,
    Snapshot,
    Volume,
    Instance,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Image => "images",
            Kind::Snapshot => "snapshots",
            Kind::Volume => "volumes",
            Kind::Instance => "instances",
        }
    }

    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Image => "ami",
            Kind::Snapshot => "snap",
            Kind::Volume => "vol",
            Kind::Instance => "i",
        }
    }
}

pub struct Store {
    pub root: PathBuf,
}

/// 17 random hex digits, as current AWS ids have.
fn random_hex17() -> Result<String> {
    let mut b = [0u8; 9];
    let path = Path::new("/dev/urandom");
    std::io::Read::read_exact(
        &mut File::open(path).map_err(|e| Error::io("open", path, e))?,
        &mut b,
    )
    .map_err(|e| Error::io("read", path, e))?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(hex[..17].to_string())
}

impl Store {
    pub fn new(root: PathBuf) -> Self {
        Store { root }
    }

    /// A region's directory of `kind`. The region becomes a path component, so
    /// it is checked first, wherever it came from (a journal, a record).
    pub fn dir(&self, region: &str, kind: Kind) -> Result<PathBuf> {
        let ok = !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !region.starts_with('-');
        if !ok {
            return Err(Error::InvalidInput(format!(
                "{region:?} is not a region name; refusing to use it as a path"
            )));
        }
        Ok(self.root.join(region).join(kind.dir()))
    }

    /// An id of `kind` as amitool makes them (`snap-` and hex digits), before it becomes a file name.
    fn checked_id(kind: Kind, id: &str) -> Result<&str> {
        let ok = id
            .strip_prefix(kind.prefix())
            .and_then(|r| r.strip_prefix('-'))
            .is_some_and(|h| {
                (8..=17).contains(&h.len())
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
        if ok {
            Ok(id)
        } else {
            Err(Error::InvalidInput(format!(
                "{id:?} is not a {} id; refusing to use it as a path",
                kind.prefix()
            )))
        }
    }

    pub fn record_path(&self, region: &str, kind: Kind, id: &str) -> Result<PathBuf> {
        let id = Self::checked_id(kind, id)?;
        Ok(self.dir(region, kind)?.join(format!("{id}.json")))
    }

    /// The raw disk of a snapshot or volume.
    pub fn data_path(&self, region: &str, kind: Kind, id: &str) -> Result<PathBuf> {
        let id = Self::checked_id(kind, id)?;
        Ok(self.dir(region, kind)?.join(format!("{id}.raw")))
    }

    /// A fresh id not used in this region.
    pub fn new_id(&self, region: &str, kind: Kind) -> Result<String> {
        loop {
            let id = format!("{}-{}", kind.prefix(), random_hex17()?);
            if !self.record_path(region, kind, &id)?.exists() {
                return Ok(id);
            }
        }
    }

    pub fn write<T: Serialize>(
        &self,
        region: &str,
        kind: Kind,
        id: &str,
        record: &T,
    ) -> Result<()> {
        let dir = self.dir(region, kind)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = self.record_path(region, kind, id)?;
        let tmp = in_progress(&path, "tmp");
        let text = serde_json::to_string_pretty(record).expect("records serialize");
        if let Err(e) = std::fs::write(&tmp, text) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::write(&tmp, e));
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &path, e))
    }

    /// Mark `id` as being made by this process until [`Pending::finish`]:
    /// `ID.PID.pending` beside its files. Dropped unfinished (an error, a
    /// panic) it removes what was made under it; left by a killed process,
    /// the next sweep does.
    pub fn begin(&self, region: &str, kind: Kind, id: &str) -> Result<Pending> {
        let dir = self.dir(region, kind)?;
        let id = Self::checked_id(kind, id)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let marker = in_progress(&dir.join(id), "pending");
        File::options()
            .create_new(true)
            .write(true)
            .open(&marker)
            .map_err(|e| Error::write(&marker, e))?;
        Ok(Pending {
            region_dir: self.root.join(region),
            kind,
            id: id.to_string(),
            marker,
            finished: false,
        })
    }

    /// Remove what a process killed mid-write left (kill -9, a power loss):
    /// its `.PID.tmp` and `.PID.partial` files once PID is gone, whatever it
    /// was making under a `.PID.pending` marker, and a disk (`.raw`) with
    /// neither record nor marker (a removal cut short). What a running
    /// amitool is writing is left alone. The paths removed.
    pub fn sweep(&self) -> Vec<PathBuf> {
        let mut removed = vec![];
        let Ok(regions) = std::fs::read_dir(&self.root) else {
            return removed;
        };
        for region in regions.filter_map(|e| e.ok()).map(|e| e.path()) {
            for kind in [Kind::Image, Kind::Snapshot, Kind::Volume, Kind::Instance] {
                let Ok(files) = std::fs::read_dir(region.join(kind.dir())) else {
                    continue;
                };
                let mut files: Vec<PathBuf> =
                    files.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                // Markers first: what they name goes with them.
                files.sort_by_key(|p| !p.to_string_lossy().ends_with(".pending"));
                for path in files {
                    if let Some(id) = dead_marker(&path) {
                        removed.extend(undo(&region, kind, &id));
                        if std::fs::remove_file(&path).is_ok() {
                            removed.push(path);
                        }
                    } else if path.exists() && abandoned(&path) {
                        let _ = make_writable(&path);
                        if std::fs::remove_file(&path).is_ok() {
                            removed.push(path);
                        }
                    }
                }
            }
        }
        removed
    }

    pub fn read<T: DeserializeOwned>(
        &self,
        region: &str,
        kind: Kind,
        id: &str,
    ) -> Result<Option<T>> {
        let path = self.record_path(region, kind, id)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| Error::Json {
                    what: format!("read {}", path.display()),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    pub fn all<T: DeserializeOwned>(&self, region: &str, kind: Kind) -> Result<Vec<T>> {
        let dir = self.dir(region, kind)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(String::from)
            })
            .collect();
        // Only files named as amitool names them; anything else in the directory is not a record.
        ids.retain(|id| Self::checked_id(kind, id).is_ok());
        ids.sort();
        let mut out = vec![];
        for id in ids {
            if let Some(r) = self.read(region, kind, &id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn remove(&self, region: &str, kind: Kind, id: &str) -> Result<()> {
        for path in [
            self.record_path(region, kind, id)?,
            self.data_path(region, kind, id)?,
        ] {
            if path.exists() {
                let _ = make_writable(&path);
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
        }
        Ok(())
    }

    /// Copy `src` into the store as a new snapshot's or volume's data,
    /// sparse (and shared where the filesystem can); returns bytes copied.
    pub fn copy_in(&self, src: &Path, region: &str, kind: Kind, id: &str) -> Result<u64> {
        let dir = self.dir(region, kind)?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        copy_file_sparse(src, &self.data_path(region, kind, id)?)
    }
}

/// `PATH.PID.what`: a file this process is writing, renamed to PATH when whole.
fn in_progress(path: &Path, what: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.{what}", std::process::id()));
    PathBuf::from(name)
}

/// A snapshot or volume this process is making; see [`Store::begin`].
pub struct Pending {
    region_dir: PathBuf,
    kind: Kind,
    id: String,
    marker: PathBuf,
    finished: bool,
}

impl Pending {
    /// What was made under the marker is whole: keep it.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        std::fs::remove_file(&self.marker).map_err(|e| Error::io("remove", &self.marker, e))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.finished {
            undo(&self.region_dir, self.kind, &self.id);
            let _ = std::fs::remove_file(&self.marker);
        }
    }
}

/// `NAME` of a `NAME.PID.pending` marker whose process no longer runs.
fn dead_marker(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?.strip_suffix(".pending")?;
    let (id, pid) = name.rsplit_once('.')?;
    let pid: u32 = pid.parse().ok()?;
    (!Path::new(&format!("/proc/{pid}")).exists()).then(|| id.to_string())
}

/// Remove `id`'s record and disk, and what was made over it in the same
/// making: an image registered over a snapshot, an instance over a volume.
fn undo(region_dir: &Path, kind: Kind, id: &str) -> Vec<PathBuf> {
    let mut removed = vec![];
    let mut remove = |path: PathBuf| {
        let _ = make_writable(&path);
        if std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    };
    let over = match kind {
        Kind::Snapshot => Some((Kind::Image, "root_snapshot_id")),
        Kind::Volume => Some((Kind::Instance, "root_volume_id")),
        Kind::Image | Kind::Instance => None,
    };
    if let Some((upper, field)) = over {
        if let Ok(files) = std::fs::read_dir(region_dir.join(upper.dir())) {
            for path in files.filter_map(|e| e.ok()).map(|e| e.path()) {
                let on_it = path.extension().is_some_and(|x| x == "json")
                    && std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                        .is_some_and(|v| v[field].as_str() == Some(id));
                if on_it {
                    remove(path);
                }
            }
        }
    }
    let dir = region_dir.join(kind.dir());
    remove(dir.join(format!("{id}.json")));
    remove(dir.join(format!("{id}.raw")));
    removed
}

/// Whether `path` is what a dead writer left: `NAME.PID.tmp|partial` of a
/// process that no longer runs, or a `.raw` with neither its `.json` record
/// nor a maker's `.pending` marker.
fn abandoned(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    for what in [".tmp", ".partial"] {
        if let Some(rest) = name.strip_suffix(what) {
            return rest
                .rsplit_once('.')
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        }
    }
    if let Some(id) = name.strip_suffix(".raw") {
        if path.with_extension("json").exists() {
            return false;
        }
        let marked = path
            .parent()
            .and_then(|d| std::fs::read_dir(d).ok())
            .is_some_and(|files| {
                files.filter_map(|e| e.ok()).any(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".pending"))
                        .and_then(|n| n.rsplit_once('.'))
                        .is_some_and(|(marked, _)| marked == id)
                })
            });
        return !marked;
    }
    false
}

/// A sparse copy of `src` to a new file `dst`, written beside it and renamed
/// when whole; nothing of it is left on failure (a full disk included).
pub fn copy_file_sparse(src: &Path, dst: &Path) -> Result<u64> {
    let s = File::open(src).map_err(|e| Error::io("open", src, e))?;
    let len = s.metadata().map_err(|e| Error::io("stat", src, e))?.len();
    if dst.exists() {
        return Err(Error::io(
            "create",
            dst,
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    let partial = in_progress(dst, "partial");
    let d = File::options()
        .create_new(true)
        .write(true)
        .read(true)
        .open(&partial)
        .map_err(|e| Error::write(&partial, e))?;
    let result = d
        .set_len(len)
        .and_then(|_| sparse::copy_sparse(&s, &d, 0))
        .and_then(|n| d.sync_all().map(|_| n))
        .and_then(|n| std::fs::rename(&partial, dst).map(|_| n));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        Error::write(dst, e)
    })
}

pub fn make_read_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| Error::io("protect", path, e))
}

fn make_writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn ids_and_regions_from_metadata_never_leave_the_state_dir() {
        let s = Store::new(PathBuf::from("/state"));
        assert_eq!(
            s.record_path("us-east-1", Kind::Snapshot, "snap-0123456789abcdef0")
                .unwrap(),
            PathBuf::from("/state/us-east-1/snapshots/snap-0123456789abcdef0.json")
        );
        for id in [
            "../../etc/passwd",
            "snap-../../x",
            "snap-0123/../../a",
            "vol-0123456789abcdef0",
            "snap-",
        ] {
            assert!(
                s.record_path("us-east-1", Kind::Snapshot, id).is_err(),
                "{id}"
            );
            assert!(
                s.data_path("us-east-1", Kind::Snapshot, id).is_err(),
                "{id}"
            );
        }
        for region in ["..", "../etc", "/etc", "", "us east", "-x"] {
            assert!(s.dir(region, Kind::Image).is_err(), "{region}");
        }
    }
}
