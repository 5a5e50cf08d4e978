//! An EBS snapshot read where it lies, as a [`BlockSource`]: the block
//! tokens from ListSnapshotBlocks (only blocks that hold data; the others
//! read as zeros), each 512 KiB block fetched with GetSnapshotBlock on first
//! use, its SHA-256 checked, a bounded cache of recent blocks and a short
//! read-ahead over the next data blocks. Reads block the calling thread: use
//! it from a blocking thread (`spawn_blocking`), never on the runtime's own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::backend::aws::transfer::BLOCK;
use crate::error::{Error, Result};
use crate::image::source::{BlockSource, WriteBlock};

/// Blocks kept as they are (8 MiB), for the many small reads of one block.
const CACHE_BLOCKS: usize = 16;
/// Blocks pushed out of that, kept LZ4-compressed up to this many bytes:
/// metadata blocks (bitmaps, inode tables, directories) of a sparse
/// filesystem shrink to a few KiB, so a stream finds the blocks the
/// inspection and the overlay read and fetches none of them again.
const PACKED_BYTES: usize = 32 << 20;
/// Data blocks fetched together after a miss (sequential files: kernels, initramfs).
const READ_AHEAD: usize = 4;

/// LZ4-packed blocks, oldest first, and their bytes in all.
type Packed = (VecDeque<(i32, Vec<u8>)>, usize);

pub struct SnapshotSource {
    ebs: aws_sdk_ebs::Client,
    handle: tokio::runtime::Handle,
    region: String,
    snapshot_id: String,
    len: u64,
    tokens: HashMap<i32, String>,
    cache: Mutex<VecDeque<(i32, Arc<Vec<u8>>)>>,
    packed: Mutex<Packed>,
    /// Blocks being fetched now: a second reader waits for the first.
    in_flight: Mutex<HashSet<i32>>,
    landed: Condvar,
    fetched: AtomicU64,
}

impl SnapshotSource {
    /// The snapshot's size and data blocks (ListSnapshotBlocks, paginated).
    pub async fn open(ebs: aws_sdk_ebs::Client, region: &str, snapshot_id: &str) -> Result<Self> {
        let mut pages = ebs
            .list_snapshot_blocks()
            .snapshot_id(snapshot_id)
            .into_paginator()
            .send();
        let mut tokens = HashMap::new();
        let mut len = 0u64;
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| super::error::convert("ListSnapshotBlocks", region, None, e))?;
            if let Some(size) = page.block_size().filter(|s| *s as u64 != BLOCK) {
                return Err(Error::Transfer {
                    action: "read the snapshot",
                    region: region.into(),
                    message: format!("{snapshot_id} has {size}-byte blocks, not {BLOCK}"),
                });
            }
            if let Some(gib) = page.volume_size() {
                len = (gib.max(0) as u64).saturating_mul(1 << 30);
            }
            for b in page.blocks() {
                if let (Some(i), Some(t)) = (b.block_index(), b.block_token()) {
                    tokens.insert(i, t.to_string());
                }
            }
        }
        Ok(SnapshotSource {
            ebs,
            handle: tokio::runtime::Handle::current(),
            region: region.into(),
            snapshot_id: snapshot_id.into(),
            len,
            tokens,
            cache: Mutex::new(VecDeque::new()),
            packed: Mutex::new((VecDeque::new(), 0)),
            in_flight: Mutex::new(HashSet::new()),
            landed: Condvar::new(),
            fetched: AtomicU64::new(0),
        })
    }

    /// The blocks that hold data.
    pub fn data_blocks(&self) -> usize {
        self.tokens.len()
    }

    fn cached(&self, index: i32) -> Option<Arc<Vec<u8>>> {
        let hot = {
            let cache = self.cache.lock().expect("cache lock");
            cache
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, b)| b.clone())
        };
        if hot.is_some() {
            return hot;
        }
        let packed = self.packed.lock().expect("cache lock");
        let (_, bytes) = packed.0.iter().find(|(i, _)| *i == index)?;
        let block = lz4_flex::block::decompress_size_prepended(bytes).ok()?;
        drop(packed);
        let block = Arc::new(block);
        self.keep(index, block.clone());
        Some(block)
    }

    fn keep(&self, index: i32, block: Arc<Vec<u8>>) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.iter().any(|(i, _)| *i == index) {
            return;
        }
        let out = (cache.len() >= CACHE_BLOCKS)
            .then(|| cache.pop_front())
            .flatten();
        cache.push_back((index, block));
        drop(cache);
        if let Some((i, b)) = out {
            let bytes = lz4_flex::block::compress_prepend_size(&b);
            let mut packed = self.packed.lock().expect("cache lock");
            if !packed.0.iter().any(|(j, _)| *j == i) {
                packed.1 += bytes.len();
                packed.0.push_back((i, bytes));
                while packed.1 > PACKED_BYTES {
                    match packed.0.pop_front() {
                        Some((_, b)) => packed.1 -= b.len(),
                        None => break,
                    }
                }
            }
        }
    }

    /// Block `index` from EBS, in the pieces its body arrived in, with the
    /// SHA-256 EBS sent with it, checked here when `check` (else the caller
    /// hands it on to a store that checks).
    async fn fetch(&self, index: i32, check: bool) -> std::io::Result<WriteBlock> {
        let io = |m: String| std::io::Error::other(m);
        let token = &self.tokens[&index];
        let budget = super::budget::of(&self.region, super::budget::Api::GetSnapshotBlock);
        budget.acquire().await;
        let out = self
            .ebs
            .get_snapshot_block()
            .snapshot_id(&self.snapshot_id)
            .block_index(index)
            .block_token(token)
            .send()
            .await
            .map_err(|e| {
                io(format!(
                    "GetSnapshotBlock {} block {index} in {}: {}",
                    self.snapshot_id,
                    self.region,
                    crate::error::chain(&e)
                ))
            })?;
        budget.succeeded();
        let want = out.checksum().map(String::from);
        let body = out
            .block_data
            .collect()
            .await
            .map_err(|e| io(format!("block {index} of {}: {e}", self.snapshot_id)))?;
        // The body's chunks as they are: no copy (AggregatedBytes::to_vec
        // collects byte by byte, into_bytes copies twice).
        let block = WriteBlock::from_pieces(body.into_segments().collect(), want);
        if let (true, Some(want)) = (check, &block.checksum) {
            if block.sha256() != *want {
                return Err(io(format!(
                    "block {index} of {} does not match its SHA-256",
                    self.snapshot_id
                )));
            }
        }
        if block.len() as u64 != BLOCK {
            return Err(io(format!(
                "block {index} of {} holds {} bytes, not {BLOCK}",
                self.snapshot_id,
                block.len()
            )));
        }
        self.fetched.fetch_add(1, Ordering::Relaxed);
        Ok(block)
    }

    /// Block `index`, from the cache or EBS. A small read fetches the next
    /// data blocks with it (files are read in small pieces, in order); a
    /// whole-block read (a stream) fetches only its block. Each block is
    /// fetched once however many threads ask for it at the same time.
    fn block(&self, index: i32, read_ahead: bool) -> std::io::Result<Option<Arc<Vec<u8>>>> {
        if !self.tokens.contains_key(&index) {
            return Ok(None);
        }
        let run: Vec<i32> = {
            let mut flying = self.in_flight.lock().expect("in-flight lock");
            loop {
                if let Some(b) = self.cached(index) {
                    return Ok(Some(b));
                }
                if !flying.contains(&index) {
                    break;
                }
                flying = self.landed.wait(flying).expect("in-flight lock");
            }
            let ahead = if read_ahead { READ_AHEAD } else { 1 };
            let run: Vec<i32> = (index..index.saturating_add(ahead as i32))
                .take_while(|i| {
                    self.tokens.contains_key(i)
                        && (*i == index || (self.cached(*i).is_none() && !flying.contains(i)))
                })
                .collect();
            flying.extend(&run);
            run
        };
        let fetched = self.handle.block_on(futures::future::join_all(
            run.iter().map(|i| self.fetch(*i, true)),
        ));
        let mut first = None;
        let mut err = None;
        for (i, b) in run.iter().zip(fetched) {
            match b {
                Ok(b) => {
                    let b = Arc::new(b.to_vec());
                    if *i == index {
                        first = Some(b.clone());
                    }
                    // A stream reads each block once: only small reads are kept.
                    if read_ahead || *i != index {
                        self.keep(*i, b);
                    }
                }
                Err(e) => err = err.or(Some(e)),
            }
        }
        let mut flying = self.in_flight.lock().expect("in-flight lock");
        for i in &run {
            flying.remove(i);
        }
        self.landed.notify_all();
        drop(flying);
        match (first, err) {
            (Some(b), _) => Ok(Some(b)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }
}

impl BlockSource for SnapshotSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let mut at = offset;
        while at < end {
            let index = (at / BLOCK) as i32;
            let within = (at % BLOCK) as usize;
            let n = ((BLOCK as usize) - within).min((end - at) as usize);
            let dst = &mut buf[(at - offset) as usize..(at - offset) as usize + n];
            match self.block(index, n < BLOCK as usize)? {
                Some(b) => dst.copy_from_slice(&b[within..within + n]),
                None => dst.fill(0),
            }
            at += n as u64;
        }
        Ok(())
    }

    fn data_blocks(&self) -> Option<u64> {
        Some(self.tokens.len() as u64)
    }
    fn data_ranges(&self) -> Option<Vec<(u64, u64)>> {
        let mut blocks: Vec<i32> = self.tokens.keys().copied().collect();
        blocks.sort_unstable();
        Some(
            blocks
                .into_iter()
                .map(|i| (i.max(0) as u64 * BLOCK, BLOCK))
                .collect(),
        )
    }
    fn name(&self) -> PathBuf {
        PathBuf::from(&self.snapshot_id)
    }

    fn blocks_read(&self) -> Option<u64> {
        Some(self.fetched.load(Ordering::Relaxed))
    }

    /// A stream's read: fetched on its own (never cached, each block is
    /// streamed once), its checksum handed on unchecked for PutSnapshotBlock,
    /// where EBS checks it against the bytes. A block already in the cache
    /// (the inspection read it) is given without one.
    fn read_block_for_write(&self, index: u64) -> std::io::Result<WriteBlock> {
        let Some(i) = i32::try_from(index)
            .ok()
            .filter(|i| self.tokens.contains_key(i))
        else {
            return Ok(WriteBlock::owned(vec![0u8; BLOCK as usize]));
        };
        if let Some(b) = self.cached(i) {
            return Ok(WriteBlock::owned(b.to_vec()));
        }
        self.handle.block_on(self.fetch(i, false))
    }

    /// A listed block not in the cache, fetched on the caller's runtime.
    fn fetch_block_for_write(
        &self,
        index: u64,
    ) -> Option<futures::future::BoxFuture<'_, std::io::Result<WriteBlock>>> {
        let i = i32::try_from(index)
            .ok()
            .filter(|i| self.tokens.contains_key(i) && self.cached(*i).is_none())?;
        Some(Box::pin(self.fetch(i, false)))
    }
}
