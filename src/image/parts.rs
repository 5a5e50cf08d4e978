//! The partitions of an "hd00" PV disk, from its MBR: where each lies, its
//! type and boot flag, checked against the disk's size.

use std::path::Path;

use serde::Serialize;

use crate::image::source::{self, BlockSource};

pub const SECTOR: u64 = 512;
/// The MBR type LVM2 physical volumes carry.
pub const TYPE_LVM: u8 = 0x8e;

/// One used primary partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1 to 4: its slot in the MBR, GRUB legacy's `(hd0,N-1)`.
    pub number: u8,
    pub start_lba: u64,
    pub sectors: u64,
    #[serde(rename = "type")]
    pub kind: u8,
    pub bootable: bool,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.start_lba * SECTOR
    }
    pub fn len(&self) -> u64 {
        self.sectors * SECTOR
    }
    pub fn is_empty(&self) -> bool {
        self.sectors == 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartError {
    #[error("no MBR: sector 0 lacks the 55AA signature")]
    NoMbr,
    #[error("a GPT disk: PV-GRUB reads MBR partitions only")]
    Gpt,
    #[error("partition {0} is an extended partition: amitool migrates primary partitions only")]
    Extended(u8),
    #[error("partition {number} ends at byte {end}, past the disk's end at {disk}")]
    PastEnd { number: u8, end: u64, disk: u64 },
    #[error("partitions {0} and {1} overlap")]
    Overlap(u8, u8),
    #[error("partition {0} starts in the MBR's sector")]
    AtZero(u8),
    #[error("the partition table is empty")]
    Empty,
    #[error("cannot read the MBR: {0}")]
    Read(String),
}

/// The used primary partitions of the disk at `path`, in slot order.
pub fn read(path: &Path) -> Result<Vec<Partition>, PartError> {
    let disk = source::open_file(path).map_err(|e| PartError::Read(e.to_string()))?;
    read_in(&*disk)
}

/// The used primary partitions of `disk`, in slot order.
pub fn read_in(disk: &dyn BlockSource) -> Result<Vec<Partition>, PartError> {
    let mut mbr = [0u8; 512];
    disk.read_exact_at(&mut mbr, 0)
        .map_err(|_| PartError::NoMbr)?;
    parse(&mbr, disk.len())
}

/// The partitions sector 0 describes on a disk of `disk_len` bytes.
pub fn parse(mbr: &[u8; 512], disk_len: u64) -> Result<Vec<Partition>, PartError> {
    if mbr[510..] != [0x55, 0xAA] {
        return Err(PartError::NoMbr);
    }
    let mut out: Vec<Partition> = vec![];
    for slot in 0..4u8 {
        let e = &mbr[446 + 16 * slot as usize..462 + 16 * slot as usize];
        let kind = e[4];
        let start = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes")) as u64;
        let sectors = u32::from_le_bytes(e[12..16].try_into().expect("4 bytes")) as u64;
        if kind == 0 || sectors == 0 {
            continue;
        }
        let number = slot + 1;
        match kind {
            0xee => return Err(PartError::Gpt),
            0x05 | 0x0f | 0x85 => return Err(PartError::Extended(number)),
            _ => {}
        }
        if start == 0 {
            return Err(PartError::AtZero(number));
        }
        // u32 sectors times 512 cannot overflow u64.
        let end = (start + sectors) * SECTOR;
        if end > disk_len {
            return Err(PartError::PastEnd {
                number,
                end,
                disk: disk_len,
            });
        }
        if let Some(o) = out
            .iter()
            .find(|p| start < p.start_lba + p.sectors && p.start_lba < start + sectors)
        {
            return Err(PartError::Overlap(o.number, number));
        }
        out.push(Partition {
            number,
            start_lba: start,
            sectors,
            kind,
            bootable: e[0] == 0x80,
        });
    }
    if out.is_empty() {
        return Err(PartError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr(entries: &[(u8, u32, u32)]) -> [u8; 512] {
        let mut m = [0u8; 512];
        for (i, (kind, start, n)) in entries.iter().enumerate() {
            let e = &mut m[446 + 16 * i..462 + 16 * i];
            e[4] = *kind;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&n.to_le_bytes());
        }
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    #[test]
    fn reads_primary_partitions() {
        let p = parse(&mbr(&[(0x83, 2048, 1024), (0x8e, 3072, 4096)]), 8 << 20).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[1].number, p[1].offset(), p[1].kind),
            (2, 3072 * 512, 0x8e)
        );
    }

    #[test]
    fn refuses_what_it_cannot_copy() {
        let disk = 8 << 20;
        assert_eq!(parse(&[0u8; 512], disk), Err(PartError::NoMbr));
        assert_eq!(parse(&mbr(&[(0xee, 1, 100)]), disk), Err(PartError::Gpt));
        assert_eq!(
            parse(&mbr(&[(0x83, 2048, 100), (0x05, 4096, 100)]), disk),
            Err(PartError::Extended(2))
        );
        assert_eq!(
            parse(&mbr(&[(0x83, 2048, 100), (0x83, 2100, 100)]), disk),
            Err(PartError::Overlap(1, 2))
        );
        assert!(matches!(
            parse(&mbr(&[(0x83, 2048, u32::MAX)]), disk),
            Err(PartError::PastEnd { .. })
        ));
        assert_eq!(
            parse(&mbr(&[(0x83, 0, 100)]), disk),
            Err(PartError::AtZero(1))
        );
        assert_eq!(parse(&mbr(&[]), disk), Err(PartError::Empty));
    }
}
