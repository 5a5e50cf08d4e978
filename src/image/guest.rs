//! The guest's files as the running guest sees them: its root filesystem at
//! `/` and, where the builder made one, a separate /boot partition mounted
//! over it (AMIgen6, EL6: partition 1 holds grub/ and the kernels, root is
//! on partition 2, as a filesystem or an LVM2 logical volume).
//!
//! Paths are the guest's (`/boot/grub/grub.conf`, `/etc/fstab`); GRUB's
//! paths are relative to the boot filesystem (`/grub/grub.conf`), and
//! [`Guest::guest_path`]/[`Guest::to_grub`] translate.

use std::path::Path;

use serde::Serialize;

use crate::image::fs::{open_disk, superblock_in, FsError, FsType, GuestFiles, GuestFs};
use crate::image::lvm;
use crate::image::parts::{self, Partition, TYPE_LVM};
use crate::image::source::Disk;
use crate::kernels::Flavor;

/// One filesystem of the guest and where it lies in the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// `/` or `/boot`.
    pub point: String,
    pub offset: u64,
    pub size: u64,
    /// The MBR partition it is in (`None` for a whole-disk "hd0" filesystem).
    pub partition: Option<u8>,
    /// `VG/LV` when it is an LVM2 logical volume.
    pub logical_volume: Option<String>,
    pub uuid: String,
    pub label: Option<String>,
    pub fs_type: FsType,
}

/// What the disk holds: PV-GRUB's layout, its partitions, the guest's
/// filesystems, and what could not be read.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub flavor: Flavor,
    pub partitions: Vec<Partition>,
    /// The filesystem GRUB reads first (PV-GRUB's `(hd0)` or `(hd0,0)`).
    pub mounts: Vec<Mount>,
    /// What could not be read (an LVM volume amitool cannot map, no root found).
    pub notes: Vec<String>,
}

impl Discovery {
    /// The filesystem GRUB reads: /boot when separate, else /.
    pub fn boot(&self) -> &Mount {
        self.mounts
            .iter()
            .find(|m| m.point == "/boot")
            .unwrap_or(&self.mounts[0])
    }
    pub fn root(&self) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.point == "/")
    }
}

fn mount_of(
    fs: &GuestFs,
    point: &str,
    offset: u64,
    partition: Option<u8>,
    lv: Option<String>,
) -> Mount {
    Mount {
        point: point.into(),
        offset,
        size: fs.superblock.size,
        partition,
        logical_volume: lv,
        uuid: fs.uuid(),
        label: fs.label(),
        fs_type: fs.superblock.fs_type,
    }
}

/// Where the guest's filesystems are, as PV-GRUB of `flavor` would look
/// (either, when `None`): the whole disk, or partition 1 and, when that is a
/// separate /boot, the partition or logical volume that holds /etc/fstab.
pub fn discover(path: &Path, flavor: Option<Flavor>) -> Result<Discovery, FsError> {
    discover_in(&open_disk(path)?, flavor)
}

/// [`discover`] on any disk.
pub fn discover_in(disk: &Disk, flavor: Option<Flavor>) -> Result<Discovery, FsError> {
    let whole = || -> Result<Discovery, FsError> {
        superblock_in(&**disk, 0)?;
        let fs = GuestFs::open_in(disk, 0)?;
        Ok(Discovery {
            flavor: Flavor::Hd0,
            partitions: vec![],
            mounts: vec![mount_of(&fs, "/", 0, None, None)],
            notes: vec![],
        })
    };
    match flavor {
        Some(Flavor::Hd0) => whole(),
        Some(Flavor::Hd00) => partitioned(disk),
        // A whole-disk superblock that fails to open (truncated, damaged) is
        // that filesystem's error, not a missing partition table.
        // A whole-disk filesystem of another kind (XFS) is named as such
        // when the disk has no partition table either.
        None => whole().or_else(|e| match superblock_in(&**disk, 0) {
            Ok(_) => Err(e),
            Err(_) => partitioned(disk).map_err(|p| match (&e, p) {
                (FsError::Unsupported { .. }, FsError::NotExt { .. }) => e,
                (_, p) => p,
            }),
        }),
    }
}

fn partitioned(disk: &Disk) -> Result<Discovery, FsError> {
    let path = disk.name();
    let path = path.as_path();
    let parts = parts::read_in(&**disk).map_err(|e| match e {
        parts::PartError::NoMbr | parts::PartError::Empty => FsError::NotExt {
            path: path.into(),
            offset: 0,
        },
        e => FsError::Damaged {
            path: path.into(),
            offset: 0,
            message: e.to_string(),
        },
    })?;
    let first = parts[0];
    superblock_in(&**disk, first.offset())?;
    let boot = GuestFs::open_in(disk, first.offset())?;
    let boot_mount = |point: &str| mount_of(&boot, point, first.offset(), Some(first.number), None);
    let mut d = Discovery {
        flavor: Flavor::Hd00,
        partitions: parts.clone(),
        mounts: vec![],
        notes: vec![],
    };
    if boot.is_file("/etc/fstab") || parts.len() == 1 {
        d.mounts.push(boot_mount("/"));
        return Ok(d);
    }
    // Partition 1 is a separate /boot: root is the first other filesystem
    // with /etc/fstab; one of a kind amitool cannot read (XFS) is named
    // when no root is found.
    let mut root = None;
    let mut foreign = None;
    let mut open = |at: u64| match GuestFs::open_in(disk, at) {
        Err(e @ FsError::Unsupported { kind, .. }) if kind != "swap space" => {
            foreign.get_or_insert(e);
            None
        }
        other => other.ok(),
    };
    for p in &parts[1..] {
        if p.kind == TYPE_LVM || lvm::is_pv(&**disk, p.offset()) {
            match lvm::logical_volumes(&**disk, p.offset(), p.len()) {
                Ok(lvs) => {
                    for lv in lvs {
                        let name = format!("{}/{}", lv.vg, lv.name);
                        let Some((off, _)) = lv.range else {
                            d.notes.push(format!(
                                "logical volume {name} (partition {}) has {}: not read",
                                p.number,
                                lv.unreadable.as_deref().unwrap_or("an unknown layout")
                            ));
                            continue;
                        };
                        let at = p.offset() + off;
                        if root.is_none() {
                            if let Some(fs) = open(at) {
                                if fs.is_file("/etc/fstab") {
                                    root = Some(mount_of(&fs, "/", at, Some(p.number), Some(name)));
                                }
                            }
                        }
                    }
                }
                Err(e) => d.notes.push(format!(
                    "partition {} is an LVM2 physical volume amitool cannot read ({e})",
                    p.number
                )),
            }
        } else if root.is_none() {
            if let Some(fs) = open(p.offset()) {
                if fs.is_file("/etc/fstab") {
                    root = Some(mount_of(&fs, "/", p.offset(), Some(p.number), None));
                }
            }
        }
    }
    match (root, foreign) {
        (Some(r), _) => d.mounts.push(r),
        (None, Some(e)) => return Err(e),
        (None, None) => d.notes.push(
            "partition 1 is a separate /boot and no other partition holds a root filesystem amitool can read: /etc/fstab, the guest's tools and its modules were not checked".into(),
        ),
    }
    d.mounts.push(boot_mount("/boot"));
    Ok(d)
}

/// The mount `path` lies on (longest mount point first) and the path inside it.
pub fn route<'a>(points: impl Iterator<Item = &'a str>, path: &str) -> Option<(usize, String)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, p) in points.enumerate() {
        let under =
            p == "/" || path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
        if under && best.is_none_or(|(_, len)| p.len() > len) {
            best = Some((i, p.len()));
        }
    }
    let (i, len) = best?;
    let inner = if len == 1 {
        path.to_string()
    } else {
        path[len..].to_string()
    };
    Some((i, if inner.is_empty() { "/".into() } else { inner }))
}

/// The guest's filesystems opened read-only, as one tree.
pub struct Guest {
    mounts: Vec<(Mount, GuestFs)>,
}

impl Guest {
    /// Open each of `mounts` in the disk at `path`.
    pub fn open(path: &Path, mounts: &[Mount]) -> Result<Self, FsError> {
        Self::open_in(&open_disk(path)?, mounts)
    }

    /// Open each of `mounts` in `disk`.
    pub fn open_in(disk: &Disk, mounts: &[Mount]) -> Result<Self, FsError> {
        let mut out = vec![];
        for m in mounts {
            let fs = GuestFs::open_in(disk, m.offset)?;
            out.push((m.clone(), fs));
        }
        Ok(Guest { mounts: out })
    }

    fn route(&self, path: &str) -> Option<(&GuestFs, String)> {
        let (i, inner) = route(self.mounts.iter().map(|(m, _)| m.point.as_str()), path)?;
        Some((&self.mounts[i].1, inner))
    }

    fn separate_boot(&self) -> bool {
        self.mounts.iter().any(|(m, _)| m.point == "/boot")
    }

    /// A path GRUB reads (relative to the boot filesystem) as the guest sees it.
    pub fn guest_path(&self, p: &str) -> String {
        if self.separate_boot() && p.starts_with('/') {
            format!("/boot{p}")
        } else {
            p.to_string()
        }
    }

    /// A guest path as GRUB reads it from the boot filesystem.
    pub fn to_grub(&self, p: &str) -> String {
        match p.strip_prefix("/boot").filter(|_| self.separate_boot()) {
            Some(r) if r.starts_with('/') => r.to_string(),
            Some(_) => "/".into(),
            None => p.to_string(),
        }
    }

    /// `path` with every symlink resolved, across mount points; `None` when absent.
    pub fn canonical(&self, path: &str) -> Option<String> {
        let mut todo: std::collections::VecDeque<String> =
            path.split('/').map(String::from).collect();
        let mut cur: Vec<String> = vec![];
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            let next = format!(
                "/{}",
                cur.iter()
                    .chain([&c])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let (fs, inner) = self.route(&next)?;
            if inner != "/" {
                if let Some(t) = fs.link_target(&inner) {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    if t.starts_with('/') {
                        cur.clear();
                    }
                    for (i, part) in t.split('/').enumerate() {
                        todo.insert(i, part.to_string());
                    }
                    continue;
                }
                if !fs.exists(&inner) {
                    return None;
                }
            }
            cur.push(c);
        }
        Some(format!("/{}", cur.join("/")))
    }

    fn at(&self, path: &str) -> Option<(&GuestFs, String)> {
        self.route(&self.canonical(path)?)
    }

    pub fn read_text(&self, path: &str) -> Option<String> {
        let (fs, p) = self.at(path)?;
        fs.read_text(&p)
    }
    pub fn read_bytes(&self, path: &str) -> Option<Vec<u8>> {
        let (fs, p) = self.at(path)?;
        fs.read_bytes(&p)
    }
    pub fn is_file(&self, path: &str) -> bool {
        self.at(path).is_some_and(|(fs, p)| fs.is_file(&p))
    }
    pub fn exists(&self, path: &str) -> bool {
        self.canonical(path).is_some()
    }
    pub fn owner(&self, path: &str) -> Option<(u16, u32, u32)> {
        let (fs, p) = self.at(path)?;
        fs.owner(&p)
    }
    pub fn list(&self, dir: &str) -> Vec<String> {
        self.at(dir).map(|(fs, p)| fs.list(&p)).unwrap_or_default()
    }
}

impl GuestFiles for Guest {
    fn read_text(&self, path: &str) -> Option<String> {
        Guest::read_text(self, path)
    }
    fn read_bytes(&self, path: &str) -> Option<Vec<u8>> {
        Guest::read_bytes(self, path)
    }
    fn canonical(&self, path: &str) -> Option<String> {
        Guest::canonical(self, path)
    }
    fn exists(&self, path: &str) -> bool {
        Guest::exists(self, path)
    }
    fn is_file(&self, path: &str) -> bool {
        Guest::is_file(self, path)
    }
    fn owner(&self, path: &str) -> Option<(u16, u32, u32)> {
        Guest::owner(self, path)
    }
    fn grub_path(&self, path: &str) -> String {
        self.to_grub(path)
    }
    fn guest_path(&self, path: &str) -> String {
        Guest::guest_path(self, path)
    }
}

/// Why the disk at `path` cannot be imported as `virt` (EC2 would register
/// it, and nothing would boot it): empty or tiny files, a PV disk without a
/// whole filesystem where PV-GRUB looks (a truncated one included), an HVM
/// disk without an MBR or with partitions past its end.
pub fn check_importable(path: &Path, virt: crate::model::Virtualization) -> Result<(), String> {
    let shown = crate::ids::shown_path(path);
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a file"));
    }
    if meta.len() < 4096 {
        return Err(format!(
            "{shown} is {} bytes: too small to hold a disk image",
            meta.len()
        ));
    }
    let reason = match virt {
        crate::model::Virtualization::Paravirtual => match discover(path, None) {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        },
        crate::model::Virtualization::Hvm => match parts::read(path) {
            Ok(_) => return Ok(()),
            Err(parts::PartError::NoMbr) => {
                "no MBR: sector 0 lacks the 55AA signature, so the BIOS would not boot it".into()
            }
            Err(e) => e.to_string(),
        },
    };
    Err(format!(
        "{shown} is not a disk image amitool can import as {virt}: {reason}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_the_longest_mount_point() {
        let pts = ["/", "/boot"];
        assert_eq!(
            route(pts.into_iter(), "/etc/fstab"),
            Some((0, "/etc/fstab".into()))
        );
        assert_eq!(
            route(pts.into_iter(), "/boot/grub/grub.conf"),
            Some((1, "/grub/grub.conf".into()))
        );
        assert_eq!(route(pts.into_iter(), "/boot"), Some((1, "/".into())));
        assert_eq!(route(pts.into_iter(), "/bootx"), Some((0, "/bootx".into())));
        assert_eq!(route(["/boot"].into_iter(), "/etc/fstab"), None);
    }
}
