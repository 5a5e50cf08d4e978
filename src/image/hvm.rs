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
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists; amitool does not overwrite", .0.display())]
    Exists(PathBuf),
}

/// Bytes of the source copied to the HVM disk, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    pub src: u64,
    pub len: u64,
    pub dst: u64,
}

/// One partition of the HVM disk's MBR: the same facts as a source's.
pub use crate::image::parts::Partition as PartEntry;

/// Where the source's bytes go on the HVM disk, and how large it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    pub ranges: Vec<Range>,
    pub partitions: Vec<PartEntry>,
    pub disk_size: u64,
    pub disk_signature: u32,
}

fn signature(fs_uuid: &str) -> u32 {
    let hex: String = fs_uuid
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    u32::from_str_radix(&hex, 16).unwrap_or(0x414d4954)
}

impl Layout {
    /// One filesystem (a whole-disk "hd0" one, or the only partition of an
    /// "hd00" disk): partition 1 at 1 MiB spans it rounded up to whole MiB.
    pub fn new(fs_offset: u64, fs_size: u64, fs_uuid: &str) -> Self {
        let part_bytes = fs_size.div_ceil(MIB) * MIB;
        Layout {
            ranges: vec![Range {
                src: fs_offset,
                len: fs_size,
                dst: PART_OFFSET,
            }],
            partitions: vec![PartEntry {
                number: 1,
                start_lba: PART_START_LBA,
                sectors: part_bytes / SECTOR,
                kind: 0x83,
                bootable: true,
            }],
            disk_size: PART_OFFSET + part_bytes,
            disk_signature: signature(fs_uuid),
        }
    }

    /// Several partitions (a separate /boot, an LVM2 root, swap): each copied
    /// whole, in its slot and order, all moved by the same amount so the
    /// first starts at 1 MiB at least (never moved down), partition 1 active.
    pub fn partitioned(parts: &[crate::image::parts::Partition], fs_uuid: &str) -> Self {
        let first = parts
            .iter()
            .map(|p| p.start_lba)
            .min()
            .unwrap_or(PART_START_LBA);
        let shift = PART_START_LBA.saturating_sub(first);
        let partitions: Vec<PartEntry> = parts
            .iter()
            .map(|p| PartEntry {
                number: p.number,
                start_lba: p.start_lba + shift,
                sectors: p.sectors,
                kind: p.kind,
                bootable: p.number == parts[0].number,
            })
            .collect();
        let end = partitions
            .iter()
            .map(|p| (p.start_lba + p.sectors) * SECTOR)
            .max()
            .unwrap_or(PART_OFFSET);
        Layout {
            ranges: parts
                .iter()
                .map(|p| Range {
                    src: p.offset(),
                    len: p.len(),
                    dst: p.offset() + shift * SECTOR,
                })
                .collect(),
            partitions,
            disk_size: end.div_ceil(MIB) * MIB,
            disk_signature: signature(fs_uuid),
        }
    }

    /// The layout's ranges cut to the source's bytes that may hold data
    /// (`data`: (offset, length) pairs in order, as `BlockSource::data_ranges`
    /// gives them), in the ranges' order. A copy of only these onto an empty
    /// disk equals a copy of every range: the rest reads as zeros.
    pub fn restrict(&self, data: &[(u64, u64)]) -> Vec<Range> {
        let mut out: Vec<Range> = vec![];
        for r in &self.ranges {
            let end = r.src.saturating_add(r.len);
            for &(s, len) in data {
                let (a, b) = (s.max(r.src), s.saturating_add(len).min(end));
                if a >= b {
                    continue;
                }
                let piece = Range {
                    src: a,
                    len: b - a,
                    dst: r.dst + (a - r.src),
                };
                match out.last_mut() {
                    Some(l) if l.src + l.len == piece.src && l.dst + l.len == piece.dst => {
                        l.len += piece.len
                    }
                    _ => out.push(piece),
                }
            }
        }
        out
    }

    /// Where the byte at `src` of the source lies on the HVM disk.
    pub fn target(&self, src: u64) -> Option<u64> {
        self.ranges
            .iter()
            .find(|r| src >= r.src && src - r.src < r.len)
            .map(|r| r.dst + (src - r.src))
    }

    /// The first partition's first sector: where core.img's room ends.
    pub fn first_lba(&self) -> u64 {
        self.partitions
            .iter()
            .map(|p| p.start_lba)
            .min()
            .unwrap_or(PART_START_LBA)
    }

    /// Sector 0: boot code, signature, the partitions, 0x55AA.
    pub fn mbr(&self, boot_code: &[u8; grub::BOOT_CODE_LEN]) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[..grub::BOOT_CODE_LEN].copy_from_slice(boot_code);
        s[440..444].copy_from_slice(&self.disk_signature.to_le_bytes());
        for p in &self.partitions {
            let at = 446 + 16 * (p.number as usize - 1);
            let e = &mut s[at..at + 16];
            e[0] = if p.bootable { 0x80 } else { 0 };
            e[1..4].copy_from_slice(&chs(p.start_lba));
            e[4] = p.kind;
            e[5..8].copy_from_slice(&chs(p.start_lba + p.sectors - 1));
            e[8..12].copy_from_slice(&(p.start_lba as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(p.sectors as u32).to_le_bytes());
        }
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
    let room = ((layout.first_lba() - 1) * SECTOR) as usize;
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
        let mut copied = 0;
        for r in &layout.ranges {
            copied += sparse::copy_sparse_range(&src_file, r.src, r.len, &dst, r.dst)
                .map_err(io("copy the filesystem into", &partial))?;
        }
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
        assert_eq!(l.partitions[0].sectors, 65 * MIB / SECTOR);
        assert_eq!(l.disk_size, 66 * MIB);
        assert_eq!(l.disk_signature, 0x0a1b2c3d);
        let mbr = l.mbr(&[0u8; 440]);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        let parsed = mbrman::MBR::read_from(&mut std::io::Cursor::new(mbr.to_vec()), 512).unwrap();
        assert_eq!(parsed[1].starting_lba, 2048);
        assert_eq!(parsed[1].sectors as u64, l.partitions[0].sectors);
        assert_eq!(parsed[1].sys, 0x83);
        assert_eq!(parsed[1].boot, 0x80);
    }

    #[test]
    fn restrict_keeps_only_data_at_its_hvm_offsets() {
        // A whole-disk filesystem of 8 MiB: data in [0,1M), [2M,3M) and
        // [3M,4M) (adjacent: merged) and past the end (dropped).
        let l = Layout::new(0, 8 * MIB, "u");
        let data = [(0, MIB), (2 * MIB, MIB), (3 * MIB, MIB), (9 * MIB, MIB)];
        assert_eq!(
            l.restrict(&data),
            vec![
                Range {
                    src: 0,
                    len: MIB,
                    dst: PART_OFFSET
                },
                Range {
                    src: 2 * MIB,
                    len: 2 * MIB,
                    dst: PART_OFFSET + 2 * MIB
                },
            ]
        );
        // Two partitions: a data run across their boundary is cut at it.
        let l = Layout {
            ranges: vec![
                Range {
                    src: MIB,
                    len: MIB,
                    dst: MIB,
                },
                Range {
                    src: 2 * MIB,
                    len: MIB,
                    dst: 4 * MIB,
                },
            ],
            ..Layout::new(0, MIB, "u")
        };
        assert_eq!(
            l.restrict(&[(MIB + 4096, MIB)]),
            vec![
                Range {
                    src: MIB + 4096,
                    len: MIB - 4096,
                    dst: MIB + 4096
                },
                Range {
                    src: 2 * MIB,
                    len: 4096,
                    dst: 4 * MIB
                },
            ]
        );
        assert!(l.restrict(&[]).is_empty());
    }

    #[test]
    fn partitions_keep_their_slots_and_move_together() {
        use crate::image::parts::Partition;
        let p = |number, start_lba, sectors, kind| Partition {
            number,
            start_lba,
            sectors,
            kind,
            bootable: false,
        };
        // AMIgen6: /boot at 2048, LVM after it: nothing moves.
        let l = Layout::partitioned(&[p(1, 2048, 1024, 0x83), p(2, 3072, 4096, 0x8e)], "u");
        assert_eq!(l.target(2048 * 512), Some(2048 * 512));
        assert_eq!(l.target(3072 * 512 + 7), Some(3072 * 512 + 7));
        assert_eq!(l.disk_size, 4 * MIB);
        let mbr = l.mbr(&[0u8; 440]);
        assert_eq!(mbr[446], 0x80);
        assert_eq!(mbr[446 + 16 + 4], 0x8e);
        // Sector 63: every partition moves by 1985 sectors, gaps kept.
        let l = Layout::partitioned(&[p(1, 63, 1000, 0x83), p(3, 2000, 100, 0x82)], "u");
        assert_eq!(l.partitions[1].start_lba, 2000 + 1985);
        assert_eq!(l.partitions[1].number, 3);
        assert_eq!(l.target(63 * 512), Some(PART_OFFSET));
        assert_eq!(l.target(1063 * 512), None);
        assert_eq!(l.disk_size % MIB, 0);
    }

    #[test]
    fn chs_saturates() {
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u32::MAX as u64), [254, 255, 255]);
    }
}
