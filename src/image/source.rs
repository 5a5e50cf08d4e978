//! Where a guest disk's bytes come from: a local file, or an EBS snapshot
//! read block by block where it lies (`backend::aws::blocks`). Every reader
//! of disk images (MBR, LVM2, ext superblock and files) reads through this.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A disk image readable at any offset.
use crate::image::BLOCK;

pub trait BlockSource: Send + Sync {
    /// Its size in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fill `buf` from `offset`; an error past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// A name for messages: the file's path, the snapshot's id.
    fn name(&self) -> PathBuf;
    /// How many blocks were fetched from where the disk lies (a remote source).
    fn blocks_read(&self) -> Option<u64> {
        None
    }
    /// How many of its 512 KiB blocks hold data, when the source knows
    /// without reading them (an EBS snapshot: ListSnapshotBlocks).
    fn data_blocks(&self) -> Option<u64> {
        None
    }
    /// The byte ranges (offset, length) that may hold data, in order, when
    /// the source knows (a sparse file's extents, a snapshot's listed
    /// blocks); `None`: all of it.
    fn data_ranges(&self) -> Option<Vec<(u64, u64)>> {
        None
    }
    /// Whole 512 KiB block `index` (zeros past the end) for a writer, and
    /// the SHA-256 (base64) the place it lies sent with it, when it sent one
    /// (an EBS snapshot's GetSnapshotBlock): the writer hands it on to a
    /// store that checks it against the bytes (PutSnapshotBlock), so the
    /// block is hashed once, where it lands, not again here. Without one the
    /// writer hashes the block.
    fn read_block_for_write(&self, index: u64) -> std::io::Result<(Vec<u8>, Option<String>)> {
        let mut buf = vec![0u8; BLOCK as usize];
        let off = index * BLOCK;
        let n = self.len().saturating_sub(off).min(BLOCK) as usize;
        self.read_exact_at(&mut buf[..n], off)?;
        Ok((buf, None))
    }
}

/// Whether every byte of `buf` is zero. A byte-by-byte loop costs
/// milliseconds a 512 KiB block in an unoptimised build; a shifted compare
/// is one memcmp.
pub fn all_zero(buf: &[u8]) -> bool {
    match buf.split_first() {
        None => true,
        Some((&first, rest)) => first == 0 && buf[..rest.len()] == *rest,
    }
}

/// A shared handle to a disk.
pub type Disk = Arc<dyn BlockSource>;

/// A local disk image file.
pub struct FileSource {
    file: File,
    len: u64,
    path: PathBuf,
}

impl BlockSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn name(&self) -> PathBuf {
        self.path.clone()
    }
    fn data_ranges(&self) -> Option<Vec<(u64, u64)>> {
        crate::image::sparse::data_segments(&self.file).ok()
    }
}

/// The disk image at `path`.
pub fn open_file(path: &Path) -> std::io::Result<Disk> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    Ok(Arc::new(FileSource {
        file,
        len,
        path: path.to_path_buf(),
    }))
}

/// Bytes in memory, for tests and small images.
pub struct Bytes(pub Vec<u8>, pub &'static str);

impl BlockSource for Bytes {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.checked_add(buf.len()).filter(|e| *e <= self.0.len());
        let Some(end) = end else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        buf.copy_from_slice(&self.0[start..end]);
        Ok(())
    }
    fn name(&self) -> PathBuf {
        PathBuf::from(self.1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_zero_finds_any_set_byte() {
        assert!(super::all_zero(&[]));
        assert!(super::all_zero(&[0; 4096]));
        for at in [0, 1, 2047, 4095] {
            let mut b = vec![0u8; 4096];
            b[at] = 1;
            assert!(!super::all_zero(&b), "{at}");
        }
        assert!(!super::all_zero(&[7; 16]));
    }
}
