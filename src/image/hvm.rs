//! The HVM disk: an MBR with one bootable Linux partition at 1 MiB holding
//! the PV filesystem's bytes unchanged, GRUB's boot.img in the MBR and its
//! core.img (with the translated configuration) in the gap.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::image::grub::{self, GrubError};
use crate::image::sparse;

pub const SECTOR: u64 = 512;
/// The partition starts at sector 2048: 1 MiB, two 512 KiB EBS blocks.
pub const PART_START_LBA: u64 = 2048;
pub const PART_OFFSET: u64 = PART_START_LBA * SECTOR;
const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Grub(#[from] GrubError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already exists; amitool does not overwrite", .0.display())]
    Exists(PathBuf),
}

/// Where the filesystem is in the source and how large the result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    pub fs_offset: u64,
    pub fs_size: u64,
    pub part_sectors: u64,
    pub disk_size: u64,
    pub disk_signature: u32,
}

impl Layout {
    /// The partition spans the filesystem rounded up to whole MiB.
    pub fn new(fs_offset: u64, fs_size: u64, fs_uuid: &str) -> Self {
        let part_bytes = fs_size.div_ceil(MIB) * MIB;
        let hex: String = fs_uuid
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(8)
            .collect();
        Layout {
            fs_offset,
            fs_size,
            part_sectors: part_bytes / SECTOR,
            disk_size: PART_OFFSET + part_bytes,
            disk_signature: u32::from_str_radix(&hex, 16).unwrap_or(0x414d4954),
        }
    }

    /// Sector 0: boot code, signature, one active Linux partition, 0x55AA.
    pub fn mbr(&self, boot_code: &[u8; grub::BOOT_CODE_LEN]) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[..grub::BOOT_CODE_LEN].copy_from_slice(boot_code);
        s[440..444].copy_from_slice(&self.disk_signature.to_le_bytes());
        let e = &mut s[446..462];
        e[0] = 0x80;
        e[1..4].copy_from_slice(&chs(PART_START_LBA));
        e[4] = 0x83;
        e[5..8].copy_from_slice(&chs(PART_START_LBA + self.part_sectors - 1));
        e[8..12].copy_from_slice(&(PART_START_LBA as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(self.part_sectors as u32).to_le_bytes());
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }
}

/// LBA to CHS with 255 heads and 63 sectors a track; 1023/254/63 past its reach.
fn chs(lba: u64) -> [u8; 3] {
    let (mut c, mut h, mut s) = (lba / (255 * 63), (lba / 63) % 255, lba % 63 + 1);
    if c > 1023 {
        (c, h, s) = (1023, 254, 63);
    }
    [
        h as u8,
        (s as u8) | (((c >> 2) & 0xc0) as u8),
        (c & 0xff) as u8,
    ]
}

/// What building the disk did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    pub bytes_copied: u64,
    pub core_img_bytes: u64,
    pub disk_size: u64,
}

/// Sectors 0..2048 of the HVM disk: MBR and core.img (the "boot blocks").
pub fn boot_area(layout: &Layout, grub_cfg: &str, workdir: &Path) -> Result<Vec<u8>, BuildError> {
    let room = ((PART_START_LBA - 1) * SECTOR) as usize;
    let core = grub::core_image(grub_cfg, workdir, room)?;
    let mut area = vec![0u8; PART_OFFSET as usize];
    area[..512].copy_from_slice(&layout.mbr(&grub::boot_code()?));
    area[512..512 + core.len()].copy_from_slice(&core);
    Ok(area)
}

/// Write the HVM disk to `out` (created new; written as `out.partial` and
/// renamed, so a failure never leaves a half-written result).
pub fn build(
    src: &Path,
    layout: &Layout,
    grub_cfg: &str,
    out: &Path,
) -> Result<BuildReport, BuildError> {
    if out.exists() {
        return Err(BuildError::Exists(out.to_path_buf()));
    }
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Io { what, path, source }
    };
    let work =
        tempfile::tempdir().map_err(io("create a work directory in", &std::env::temp_dir()))?;
    let area = boot_area(layout, grub_cfg, work.path())?;
    let partial = out.with_extension("partial");
    let result = (|| {
        let src_file = File::open(src).map_err(io("open", src))?;
        let dst = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(io("create", &partial))?;
        dst.set_len(layout.disk_size)
            .map_err(io("size", &partial))?;
        dst.write_all_at(&area, 0)
            .map_err(io("write boot blocks to", &partial))?;
        let copied = sparse::copy_sparse_range(
            &src_file,
            layout.fs_offset,
            layout.fs_size,
            &dst,
            PART_OFFSET,
        )
        .map_err(io("copy the filesystem into", &partial))?;
        // No fsync: like cp and qemu-img, the data is left to the page cache;
        // the rename below makes the result appear whole or not at all.
        drop(dst);
        Ok(BuildReport {
            bytes_copied: copied,
            core_img_bytes: area[512..]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |p| p as u64 + 1),
            disk_size: layout.disk_size,
        })
    })();
    match result {
        Ok(r) => {
            std::fs::rename(&partial, out).map_err(io("rename into", out))?;
            Ok(r)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_rounds_to_mib_and_keeps_fs_at_one_mib() {
        let l = Layout::new(0, 64 * MIB + 1, "0a1b2c3d-aaaa-bbbb-cccc-000000000000");
        assert_eq!(l.part_sectors, 65 * MIB / SECTOR);
        assert_eq!(l.disk_size, 66 * MIB);
        assert_eq!(l.disk_signature, 0x0a1b2c3d);
        let mbr = l.mbr(&[0u8; 440]);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        let parsed = mbrman::MBR::read_from(&mut std::io::Cursor::new(mbr.to_vec()), 512).unwrap();
        assert_eq!(parsed[1].starting_lba, 2048);
        assert_eq!(parsed[1].sectors as u64, l.part_sectors);
        assert_eq!(parsed[1].sys, 0x83);
        assert_eq!(parsed[1].boot, 0x80);
    }

    #[test]
    fn chs_saturates() {
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u32::MAX as u64), [254, 255, 255]);
    }
}
