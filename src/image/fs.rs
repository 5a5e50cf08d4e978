//! Reading a guest's ext2/3/4 filesystem in place, at any offset of a disk
//! image, with ext4-view (no mount, no loop device).

use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Read};

use crate::image::source::{self, Disk};

/// Why a filesystem could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot open {}: {source}", crate::ids::shown_path(path))]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no ext2/3/4 filesystem at byte {offset} of {}",
        crate::ids::shown_path(path)
    )]
    NotExt { path: PathBuf, offset: u64 },
    #[error("the filesystem at byte {offset} of {} is {kind}: amitool reads and edits ext2/3/4 filesystems only; convert this guest on a Linux machine that mounts {kind} (for example a helper instance, with the distribution's own tools), or copy its files onto an ext4 filesystem and migrate that", crate::ids::shown_path(path))]
    Unsupported {
        path: PathBuf,
        offset: u64,
        kind: &'static str,
    },
    #[error(
        "the filesystem at byte {offset} of {} is damaged or truncated: {message}",
        crate::ids::shown_path(path)
    )]
    Damaged {
        path: PathBuf,
        offset: u64,
        message: String,
    },
}

/// ext2, ext3 or ext4, as the superblock's feature flags say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
        }
    }
}

struct OffsetReader {
    disk: Disk,
    offset: u64,
}

impl Ext4Read for OffsetReader {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let at = self
            .offset
            .checked_add(start)
            .ok_or("a read past the end of the disk")?;
        self.disk.read_exact_at(dst, at)?;
        Ok(())
    }
}

/// The disk image at `path`, or why it cannot be opened.
pub fn open_disk(path: &Path) -> Result<Disk, FsError> {
    source::open_file(path).map_err(|source| FsError::Open {
        path: path.into(),
        source,
    })
}

/// The superblock facts ext4-view does not expose: type and block count.
#[derive(Debug, Clone, Copy)]
pub struct Superblock {
    pub fs_type: FsType,
    /// Bytes the filesystem spans (blocks × block size).
    pub size: u64,
}

pub fn read_superblock(path: &Path, offset: u64) -> Result<Superblock, FsError> {
    superblock_in(&*open_disk(path)?, offset)
}

/// Signatures of what a guest's filesystem may be instead of ext2/3/4, as
/// util-linux's libblkid finds them (libblkid/src/superblocks/*.c): the
/// name, the byte offset and the magic.
const FOREIGN: &[(&str, u64, &[u8])] = &[
    ("XFS", 0, b"XFSB"),
    ("Btrfs", 0x10040, b"_BHRfS_M"),
    ("ReiserFS", 0x10034, b"ReIsEr2Fs"),
    ("ReiserFS", 0x10034, b"ReIsEr3Fs"),
    ("ReiserFS", 0x10034, b"ReIsErFs"),
    ("ReiserFS", 0x2034, b"ReIsErFs"),
    ("Reiser4", 0x10000, b"ReIsEr4"),
    ("JFS", 0x8000, b"JFS1"),
    ("F2FS", 0x400, &[0x10, 0x20, 0xF5, 0xF2]),
    ("a LUKS-encrypted volume", 0, b"LUKS\xba\xbe"),
    ("squashfs", 0, b"hsqs"),
    ("swap space", 0xff6, b"SWAPSPACE2"),
    ("swap space", 0xff6, b"SWAP-SPACE"),
    ("an ISO 9660 filesystem", 0x8001, b"CD001"),
];

/// What the filesystem at `offset` of `disk` is when it is not ext2/3/4 but
/// one amitool knows by its signature (`XFS`, `Btrfs`, ...).
pub fn identify_foreign(disk: &dyn source::BlockSource, offset: u64) -> Option<&'static str> {
    FOREIGN.iter().find_map(|(name, at, magic)| {
        let mut buf = vec![0u8; magic.len()];
        let pos = offset.checked_add(*at)?;
        disk.read_exact_at(&mut buf, pos).ok()?;
        (buf == *magic).then_some(*name)
    })
}

/// The UUID of the Linux swap area at `offset` of `disk` (mkswap's header:
/// `SWAPSPACE2` at the end of the first 4 KiB page, the UUID at byte 1036).
pub fn swap_uuid(disk: &dyn source::BlockSource, offset: u64) -> Option<String> {
    let mut page = [0u8; 4096];
    disk.read_exact_at(&mut page, offset).ok()?;
    if &page[4086..] != b"SWAPSPACE2" {
        return None;
    }
    let u = &page[1036..1052];
    if u.iter().all(|b| *b == 0) {
        return None;
    }
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// The superblock of the filesystem at `offset` of `disk`.
pub fn superblock_in(disk: &dyn source::BlockSource, offset: u64) -> Result<Superblock, FsError> {
    let mut sb = [0u8; 1024];
    let not_ext = || match identify_foreign(disk, offset) {
        Some(kind) => FsError::Unsupported {
            path: disk.name(),
            offset,
            kind,
        },
        None => FsError::NotExt {
            path: disk.name(),
            offset,
        },
    };
    let at = offset.checked_add(1024).ok_or_else(not_ext)?;
    disk.read_exact_at(&mut sb, at).map_err(|_| not_ext())?;
    let le32 = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(not_ext());
    }
    let (compat, incompat) = (le32(0x5C), le32(0x60));
    let fs_type = if incompat & (0x40 | 0x80 | 0x200) != 0 {
        FsType::Ext4
    } else if compat & 0x4 != 0 {
        FsType::Ext3
    } else {
        FsType::Ext2
    };
    let blocks_lo = le32(0x04) as u64;
    let blocks_hi = if incompat & 0x80 != 0 {
        le32(0x150) as u64
    } else {
        0
    };
    // s_log_block_size above 6 (64 KiB blocks) is not a valid ext filesystem.
    let log = le32(0x18);
    if log > 6 {
        return Err(not_ext());
    }
    let block_size = 1024u64 << log;
    let size = ((blocks_hi << 32) | blocks_lo)
        .checked_mul(block_size)
        .ok_or_else(not_ext)?;
    Ok(Superblock { fs_type, size })
}

/// What the boot planners read of a guest: one filesystem opened in place
/// ([`GuestFs`]), or the guest's whole tree of them
/// ([`crate::image::guest::Guest`]), from a file or a snapshot where it lies.
pub trait GuestFiles {
    fn read_text(&self, path: &str) -> Option<String>;
    /// A regular file's bytes (after symlinks); `None` when absent.
    fn read_bytes(&self, path: &str) -> Option<Vec<u8>>;
    /// `path` with every symlink resolved inside the guest; `None` when absent.
    fn canonical(&self, path: &str) -> Option<String>;
    fn exists(&self, path: &str) -> bool;
    /// A non-empty regular file (after symlinks).
    fn is_file(&self, path: &str) -> bool;
    /// Permission bits, uid and gid (after symlinks).
    fn owner(&self, path: &str) -> Option<(u16, u32, u32)>;
    /// The path GRUB reads `path` at, in the boot filesystem (the same, unless /boot is separate).
    fn grub_path(&self, path: &str) -> String {
        path.to_string()
    }
    /// A path GRUB reads in the boot filesystem, as the guest sees it.
    fn guest_path(&self, path: &str) -> String {
        path.to_string()
    }
}

impl GuestFiles for GuestFs {
    fn read_text(&self, path: &str) -> Option<String> {
        GuestFs::read_text(self, path)
    }
    fn read_bytes(&self, path: &str) -> Option<Vec<u8>> {
        GuestFs::read_bytes(self, path)
    }
    fn canonical(&self, path: &str) -> Option<String> {
        GuestFs::canonical(self, path)
    }
    fn exists(&self, path: &str) -> bool {
        GuestFs::exists(self, path)
    }
    fn is_file(&self, path: &str) -> bool {
        GuestFs::is_file(self, path)
    }
    fn owner(&self, path: &str) -> Option<(u16, u32, u32)> {
        GuestFs::owner(self, path)
    }
}

/// A guest filesystem opened read-only.
pub struct GuestFs {
    fs: Ext4,
    pub superblock: Superblock,
}

impl GuestFs {
    pub fn open(path: &Path, offset: u64) -> Result<Self, FsError> {
        Self::open_in(&open_disk(path)?, offset)
    }

    /// The filesystem at `offset` of `disk`.
    pub fn open_in(disk: &Disk, offset: u64) -> Result<Self, FsError> {
        let path = disk.name();
        let superblock = superblock_in(&**disk, offset)?;
        let file_len = disk.len();
        if offset
            .checked_add(superblock.size)
            .is_none_or(|end| end > file_len)
        {
            return Err(FsError::Damaged {
                path,
                offset,
                message: format!(
                    "it spans {} bytes but the image holds only {} from there",
                    superblock.size,
                    file_len.saturating_sub(offset)
                ),
            });
        }
        let fs = Ext4::load(Box::new(OffsetReader {
            disk: disk.clone(),
            offset,
        }))
        .map_err(|e| FsError::Damaged {
            path: path.clone(),
            offset,
            message: e.to_string(),
        })?;
        Ok(GuestFs { fs, superblock })
    }

    pub fn label(&self) -> Option<String> {
        self.fs
            .label()
            .to_str()
            .ok()
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    pub fn uuid(&self) -> String {
        self.fs.uuid().to_string()
    }

    /// A regular file's text; `None` when absent (symlinks are followed).
    pub fn read_text(&self, path: &str) -> Option<String> {
        self.fs
            .read(path)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// A regular file's bytes; `None` when absent.
    pub fn read_bytes(&self, path: &str) -> Option<Vec<u8>> {
        self.fs.read(path).ok()
    }

    /// Whether `path` names a regular file (after symlinks).
    pub fn is_file(&self, path: &str) -> bool {
        self.fs
            .metadata(path)
            .is_ok_and(|m| !m.is_dir() && m.len() > 0)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.fs.exists(path).unwrap_or(false)
    }

    /// `path` with every symlink resolved inside this filesystem; `None` when absent.
    pub fn canonical(&self, path: &str) -> Option<String> {
        self.fs
            .canonicalize(path)
            .ok()
            .map(|p| p.display().to_string())
    }

    /// Permission bits, uid and gid of a file (after symlinks).
    pub fn owner(&self, path: &str) -> Option<(u16, u32, u32)> {
        self.fs
            .metadata(path)
            .ok()
            .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
    }

    /// Where a symlink points, if `path` is one.
    pub fn link_target(&self, path: &str) -> Option<String> {
        self.fs
            .read_link(path)
            .ok()
            .map(|p| p.display().to_string())
    }

    /// Names in a directory; empty when it is absent.
    pub fn list(&self, dir: &str) -> Vec<String> {
        let Ok(entries) = self.fs.read_dir(dir) else {
            return vec![];
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().as_str().unwrap_or_default().to_string())
            .filter(|n| n != "." && n != ".." && !n.is_empty())
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod superblock_tests {
    use super::*;

    /// A superblock whose block count times block size overflows u64, or whose
    /// block size is absurd, is not a filesystem (no overflow, no panic).
    #[test]
    fn hostile_superblocks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb");
        let mut img = vec![0u8; 4096];
        let sb = 1024;
        img[sb + 0x38..sb + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[sb + 0x60..sb + 0x64].copy_from_slice(&0x80u32.to_le_bytes()); // 64bit
        img[sb + 0x04..sb + 0x08].copy_from_slice(&u32::MAX.to_le_bytes());
        img[sb + 0x150..sb + 0x154].copy_from_slice(&u32::MAX.to_le_bytes());
        img[sb + 0x18..sb + 0x1c].copy_from_slice(&6u32.to_le_bytes());
        std::fs::write(&path, &img).unwrap();
        assert!(matches!(
            read_superblock(&path, 0),
            Err(FsError::NotExt { .. })
        ));
        img[sb + 0x18..sb + 0x1c].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &img).unwrap();
        assert!(matches!(
            read_superblock(&path, 0),
            Err(FsError::NotExt { .. })
        ));
        assert!(GuestFs::open(&path, u64::MAX - 10).is_err());
    }
}
