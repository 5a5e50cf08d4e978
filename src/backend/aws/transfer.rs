//! Moving disk bytes in and out of EBS snapshots without any instance:
//! coldsnap for whole-snapshot downloads (export), small snapshots written
//! at once, and the facts both need. The journaled block stream of imports
//! and migrations is `stream`.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAlgorithm, Tag as EbsTag};
use aws_smithy_types::body::SdkBody;

use crate::error::{Error, Result};
use crate::image::source::{Disk, WriteBlock};
use crate::image::sparse;

/// EBS direct API block size (AWS reports 524288; so does our LocalStack hook).
pub const BLOCK: u64 = crate::image::BLOCK;

pub fn transfer_err(
    action: &'static str,
    region: &str,
    e: impl std::error::Error + 'static,
) -> Error {
    Error::Transfer {
        action,
        region: region.to_string(),
        message: crate::error::chain(&e),
    }
}

/// Download a whole snapshot into a new sparse file with coldsnap
/// (checkpointed when `resumable`). coldsnap's future is not `Send`, so it
/// runs on a blocking thread of the same runtime.
pub async fn download(
    ebs: aws_sdk_ebs::Client,
    region: &str,
    snapshot_id: &str,
    path: &Path,
    resumable: bool,
) -> Result<()> {
    let handle = tokio::runtime::Handle::current();
    let (snap, dest) = (snapshot_id.to_string(), path.to_path_buf());
    let checkpoint = if resumable {
        coldsnap::CheckpointBehavior::Enable
    } else {
        coldsnap::CheckpointBehavior::Disable
    };
    // Counted before the thread starts, so a Ctrl-C cleanup waits for it to stop.
    let busy = crate::interrupt::Busy::start();
    let progress = crate::progress::Transfer::new(&format!("download {snapshot_id}"), None);
    let bar = progress.bar();
    let joined = tokio::task::spawn_blocking(move || {
        let _busy = busy;
        handle.block_on(async move {
            let work = async {
                crate::migrate::hooks::pause_in("download").await;
                coldsnap::SnapshotDownloader::new(ebs)
                    .download_to_file(&snap, &dest, Some(bar), Some(checkpoint), None)
                    .await
                    .map_err(|e| crate::error::chain(&e))
            };
            // Ctrl-C stops the transfer on this thread too, before the
            // runtime it borrows shuts down.
            tokio::select! {
                biased;
                () = crate::interrupt::interrupted() => Err(None),
                r = work => r.map_err(Some),
            }
        })
    })
    .await;
    let message = match joined {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(None)) => return Err(Error::Interrupted),
        Ok(Err(Some(m))) => m,
        Err(e) => e.to_string(),
    };
    Err(Error::Transfer {
        action: "download the snapshot",
        region: region.to_string(),
        message,
    })
}

/// How many blocks of a snapshot hold data (ListSnapshotBlocks, paginated).
pub async fn count_blocks(
    ebs: &aws_sdk_ebs::Client,
    region: &str,
    snapshot_id: &str,
) -> Result<usize> {
    let mut pages = ebs
        .list_snapshot_blocks()
        .snapshot_id(snapshot_id)
        .into_paginator()
        .send();
    let mut n = 0;
    while let Some(page) = pages.next().await {
        n += page
            .map_err(|e| super::error::convert("ListSnapshotBlocks", region, None, e))?
            .blocks()
            .len();
    }
    Ok(n)
}

/// Indexes of the 512 KiB blocks of `path` that hold data (holes skipped).
pub fn data_blocks(file: &File) -> std::io::Result<BTreeSet<i32>> {
    let mut out = BTreeSet::new();
    for (off, len) in sparse::data_segments(file)? {
        let first = off / BLOCK;
        let last = (off + len).div_ceil(BLOCK);
        out.extend((first..last).map(|b| b as i32));
    }
    Ok(out)
}

/// PutSnapshotBlock of one whole block, its SHA-256 sent for EBS to check:
/// the checksum its source vouched for the bytes with, else hashed here.
/// The block's pieces go out one after another as they are.
pub(super) async fn put_block(
    ebs: &aws_sdk_ebs::Client,
    region: &str,
    snapshot_id: &str,
    index: i32,
    block: WriteBlock,
) -> Result<()> {
    let checksum = block.checksum.clone().unwrap_or_else(|| block.sha256());
    let budget = super::budget::of(region, super::budget::Api::PutSnapshotBlock);
    budget.acquire().await;
    ebs.put_snapshot_block()
        .snapshot_id(snapshot_id)
        .block_index(index)
        .data_length(BLOCK as i32)
        .checksum(checksum)
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .block_data(pieces_body(block.into_pieces()))
        .send()
        .await
        .map_err(|e| super::error::convert("PutSnapshotBlock", region, None, e))?;
    budget.succeeded();
    Ok(())
}

/// A request body of `pieces`, sent in turn with its exact length (so
/// Content-Length, not chunked) and sent again whole on a retry (the
/// pieces are shared, not copied).
fn pieces_body(pieces: Vec<bytes::Bytes>) -> ByteStream {
    if let [one] = pieces.as_slice() {
        return ByteStream::from(one.clone());
    }
    ByteStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(Pieces(pieces.iter().cloned().collect()))
    }))
}

/// Pieces of bytes as an HTTP body.
struct Pieces(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Pieces {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<Self::Data>, Self::Error>>>
    {
        std::task::Poll::Ready(self.0.pop_front().map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|p| p.len() as u64).sum())
    }
}

/// A new snapshot of `volume_size_gib` GiB holding `data` from byte 0 (its
/// all-zero blocks omitted), completed; idempotent on `client_token`.
pub async fn upload_bytes(
    ebs: &aws_sdk_ebs::Client,
    region: &str,
    volume_size_gib: u64,
    data: &[u8],
    description: &str,
    tags: &[(String, String)],
    client_token: &str,
) -> Result<String> {
    let mut req = ebs
        .start_snapshot()
        .volume_size(volume_size_gib as i64)
        .description(description)
        .client_token(client_token)
        .timeout(60);
    for (k, v) in tags {
        req = req.tags(EbsTag::builder().key(k).value(v).build());
    }
    let out = req
        .send()
        .await
        .map_err(|e| super::error::convert("StartSnapshot", region, None, e))?;
    let snapshot_id = out
        .snapshot_id()
        .ok_or_else(|| Error::Transfer {
            action: "StartSnapshot",
            region: region.into(),
            message: "no snapshot id in the answer".into(),
        })?
        .to_string();
    let mut written = 0;
    for (index, chunk) in data.chunks(BLOCK as usize).enumerate() {
        if crate::image::source::all_zero(chunk) {
            continue;
        }
        let mut block = chunk.to_vec();
        block.resize(BLOCK as usize, 0);
        put_block(
            ebs,
            region,
            &snapshot_id,
            index as i32,
            WriteBlock::owned(block),
        )
        .await?;
        written += 1;
    }
    ebs.complete_snapshot()
        .snapshot_id(&snapshot_id)
        .changed_blocks_count(written)
        .send()
        .await
        .map_err(|e| super::error::convert("CompleteSnapshot", region, None, e))?;
    Ok(snapshot_id)
}

/// Every 512 KiB block of a local file that holds data.
pub fn file_blocks(disk: &Disk) -> Vec<u64> {
    let ranges = disk.data_ranges().unwrap_or_else(|| vec![(0, disk.len())]);
    let mut out: Vec<u64> = ranges
        .into_iter()
        .flat_map(|(off, len)| off / BLOCK..(off + len).div_ceil(BLOCK))
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A block in pieces goes out as one body of its exact length (so
    /// Content-Length), and whole again on a retry.
    #[tokio::test]
    async fn a_block_in_pieces_is_one_body_of_its_length_and_is_sent_again_whole() {
        let pieces: Vec<bytes::Bytes> = vec![
            bytes::Bytes::from_static(b"abc"),
            bytes::Bytes::from_static(b"de"),
            bytes::Bytes::from_static(b"f"),
        ];
        let body = pieces_body(pieces).into_inner();
        assert_eq!(body.content_length(), Some(6));
        let again = body.try_clone().expect("a retry can send it again");
        for b in [body, again] {
            let got = ByteStream::new(b).collect().await.unwrap().into_bytes();
            assert_eq!(&got[..], b"abcdef");
        }
        let one = pieces_body(vec![bytes::Bytes::from_static(b"xyz")]).into_inner();
        assert_eq!(one.bytes(), Some(&b"xyz"[..]));
    }

    #[test]
    fn data_blocks_skip_holes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.write_all_at(b"y", (3 << 20) + 5).unwrap();
        let f = File::open(&p).unwrap();
        let blocks = data_blocks(&f).unwrap();
        assert!(blocks.contains(&0) && blocks.contains(&6), "{blocks:?}");
        assert!(blocks.len() <= 16, "{blocks:?}");
    }
}
