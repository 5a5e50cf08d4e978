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
    /// Whole 512 KiB block `index` (zeros past the end) for a writer, with
    /// the SHA-256 the place it lies sent with it, when it sent one (an EBS
    /// snapshot's GetSnapshotBlock): the writer hands it on to a store that
    /// checks it against the bytes (PutSnapshotBlock), so the block is
    /// hashed once, where it lands, not again here. Without one the writer
    /// hashes the block.
    fn read_block_for_write(&self, index: u64) -> std::io::Result<WriteBlock> {
        let mut buf = vec![0u8; BLOCK as usize];
        let off = index * BLOCK;
        let n = self.len().saturating_sub(off).min(BLOCK) as usize;
        self.read_exact_at(&mut buf[..n], off)?;
        Ok(WriteBlock::owned(buf))
    }
    /// [`Self::read_block_for_write`] as a future, from a source that
    /// fetches over the network (an EBS snapshot) and so needs no blocking
    /// thread for each block in flight; `None` when this block is read
    /// synchronously.
    fn fetch_block_for_write(
        &self,
        index: u64,
    ) -> Option<futures::future::BoxFuture<'_, std::io::Result<WriteBlock>>> {
        let _ = index;
        None
    }
}

/// A whole block on its way to a writer: its bytes in the pieces they
/// arrived in (a GetSnapshotBlock body's chunks are handed on to
/// PutSnapshotBlock as they are, never copied into one buffer), and the
/// SHA-256 (base64) its source vouched for them with, if any.
#[derive(Debug, Clone)]
pub struct WriteBlock {
    pieces: Vec<bytes::Bytes>,
    pub checksum: Option<String>,
}

impl WriteBlock {
    /// A block in one buffer, vouched for by nobody.
    pub fn owned(data: Vec<u8>) -> Self {
        WriteBlock {
            pieces: vec![data.into()],
            checksum: None,
        }
    }

    /// A block in `pieces`, with the checksum its source sent.
    pub fn from_pieces(pieces: Vec<bytes::Bytes>, checksum: Option<String>) -> Self {
        WriteBlock { pieces, checksum }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every byte is zero.
    pub fn is_zero(&self) -> bool {
        self.pieces.iter().all(|p| all_zero(p))
    }

    /// The SHA-256 of its bytes, base64, as EBS takes it.
    pub fn sha256(&self) -> String {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for p in &self.pieces {
            h.update(p);
        }
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    }

    /// Its pieces, for a writer that sends them one after another.
    pub fn into_pieces(self) -> Vec<bytes::Bytes> {
        self.pieces
    }

    /// Its bytes in one buffer (a copy).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for p in &self.pieces {
            out.extend_from_slice(p);
        }
        out
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
    use super::WriteBlock;

    /// A block's pieces are its bytes in order: one hash, one zero test.
    #[test]
    fn a_write_block_in_pieces_is_its_bytes_in_order() {
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let whole: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let pieces = vec![
            bytes::Bytes::copy_from_slice(&whole[..1]),
            bytes::Bytes::copy_from_slice(&whole[1..600]),
            bytes::Bytes::copy_from_slice(&whole[600..]),
        ];
        let b = WriteBlock::from_pieces(pieces, None);
        assert_eq!(b.len(), 1000);
        assert_eq!(b.to_vec(), whole);
        assert_eq!(
            b.sha256(),
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&whole))
        );
        assert!(!b.is_zero());
        let zero = WriteBlock::from_pieces(vec![vec![0u8; 3].into(), vec![0u8; 5].into()], None);
        assert!(zero.is_zero());
        let late = WriteBlock::from_pieces(vec![vec![0u8; 3].into(), vec![0, 0, 1].into()], None);
        assert!(!late.is_zero());
    }

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
