//! Moving disk bytes in and out of EBS snapshots without any instance:
//! coldsnap for whole-snapshot transfer (import, export, the migration's
//! download), and one block loop of our own for the migration's upload, which
//! must record each block in the journal so a killed upload can resume.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAlgorithm, Tag as EbsTag};
use base64::Engine;
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::image::overlay::TransferStats;
use crate::image::source::{BlockSource, Disk};
use crate::image::sparse;
use crate::migrate::journal::{Journal, Upload};

/// EBS direct API block size (AWS reports 524288; so does our LocalStack hook).
pub const BLOCK: u64 = 512 * 1024;
/// Blocks in flight at once for one snapshot (EBS throttles per snapshot).
pub const UPLOAD_CONCURRENCY: usize = 16;
/// Blocks started per second at most. EBS direct allows about 1,000
/// GetSnapshotBlock and 1,000 PutSnapshotBlock requests a second per
/// snapshot (not adjustable); each block is one of each, on two snapshots.
const BLOCKS_PER_SECOND: f64 = 900.0;

/// When the `k`th block of a stream may start, from the stream's start.
fn pace(k: usize) -> Duration {
    Duration::from_secs_f64(k as f64 / BLOCKS_PER_SECOND)
}
const GIB: u64 = 1 << 30;

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
                crate::migrate::test_pause_in("download").await;
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

fn read_block(disk: &dyn BlockSource, index: i32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; BLOCK as usize];
    let off = index as u64 * BLOCK;
    let n = (disk.len() - off).min(BLOCK) as usize;
    disk.read_exact_at(&mut buf[..n], off)?;
    Ok(buf)
}

/// Pause forever once `n` blocks are journaled: a test hook for kill -9.
fn test_pause(journaled: usize) {
    let Some(n) = std::env::var("AMITOOL_TEST_PAUSE_AFTER_BLOCKS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if journaled >= n {
        eprintln!("amitool: test hook: paused after {journaled} blocks");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// PutSnapshotBlock of one whole block, its SHA-256 sent for EBS to check.
async fn put_block(
    ebs: &aws_sdk_ebs::Client,
    region: &str,
    snapshot_id: &str,
    index: i32,
    data: Vec<u8>,
) -> Result<()> {
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
    ebs.put_snapshot_block()
        .snapshot_id(snapshot_id)
        .block_index(index)
        .data_length(BLOCK as i32)
        .checksum(checksum)
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .block_data(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| super::error::convert("PutSnapshotBlock", region, None, e))?;
    Ok(())
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
        put_block(ebs, region, &snapshot_id, index as i32, block).await?;
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

/// Upload `blocks` of `disk` (each read once, in order; all-zero ones
/// skipped) into a new snapshot, or the one the journal started, journaling
/// each batch of completed blocks so a resume writes only the rest; complete
/// it and return its id. `disk` is the HVM view where the source lies (a
/// stream: no local copy) or a local file. Reads block their thread, so
/// each runs on a blocking thread; at most UPLOAD_CONCURRENCY blocks are in
/// flight and BLOCKS_PER_SECOND start a second, under EBS's per-snapshot
/// limit of about 1,000 requests a second; the SDK's standard retries back
/// off on throttling.
#[allow(clippy::too_many_arguments)]
pub async fn upload_journaled(
    ebs: &aws_sdk_ebs::Client,
    region: &str,
    disk: Disk,
    blocks: Vec<u64>,
    description: &str,
    tags: &[(String, String)],
    kms_key_arn: Option<&str>,
    parent: Option<&str>,
    journal: &mut Journal,
) -> Result<(String, TransferStats)> {
    let len = disk.len();
    if journal.upload.as_ref().is_some_and(|u| u.completed) {
        let u = journal.upload.clone().expect("checked");
        return Ok((u.snapshot_id, journal.transfer.unwrap_or_default()));
    }
    if journal.upload.is_none() {
        let mut req = ebs
            .start_snapshot()
            .volume_size(len.div_ceil(GIB) as i64)
            .description(description)
            .client_token(format!("{}-upload", journal.migration_id))
            .timeout(24 * 60);
        for (k, v) in tags {
            req = req.tags(EbsTag::builder().key(k).value(v).build());
        }
        match (parent, kms_key_arn) {
            // A child inherits every block of its parent, and an encrypted
            // parent's key: Encrypted must then be omitted.
            (Some(p), _) => req = req.parent_snapshot_id(p),
            (None, Some(k)) => req = req.encrypted(true).kms_key_arn(k),
            (None, None) => {}
        }
        let out = req
            .send()
            .await
            .map_err(|e| super::error::convert("StartSnapshot", region, None, e))?;
        let block_size = out.block_size().unwrap_or(BLOCK as i32) as u64;
        if block_size != BLOCK {
            return Err(Error::Transfer {
                action: "StartSnapshot",
                region: region.into(),
                message: format!("EBS reports a block size of {block_size} bytes; amitool writes 524288-byte blocks"),
            });
        }
        journal.upload = Some(Upload {
            snapshot_id: out.snapshot_id().unwrap_or_default().to_string(),
            ..Default::default()
        });
        journal.save()?;
    }
    let snapshot_id = journal
        .upload
        .as_ref()
        .expect("set above")
        .snapshot_id
        .clone();
    let done = journal.upload.as_ref().expect("set above").blocks.clone();
    let skipped = journal.upload.as_ref().expect("set above").zero.clone();
    let todo: Vec<i32> = blocks
        .into_iter()
        .filter(|b| *b * BLOCK < len)
        .map(|b| b as i32)
        .filter(|b| !done.contains(b) && !skipped.contains(b))
        .collect();
    let mut stats = journal.transfer.unwrap_or_default();
    // Blocks earlier runs fetched; this run's count is the source's own
    // (the inspection's and the overlay's metadata reads included).
    let earlier = stats.blocks_read;
    stats.done_before = (done.len() + skipped.len()) as u64;
    let progress = crate::progress::Transfer::new(
        &format!("upload {snapshot_id}"),
        Some((done.len() + skipped.len() + todo.len()) as u64),
    );
    progress
        .bar()
        .set_position((done.len() + skipped.len()) as u64);
    crate::migrate::test_pause_in("stream").await;
    test_pause(done.len());
    // One pipeline: a block starts as soon as one of the UPLOAD_CONCURRENCY
    // in flight ends (no batch waits for its slowest block), no sooner than
    // its slot at BLOCKS_PER_SECOND, and the journal is saved every
    // UPLOAD_CONCURRENCY blocks done (a resume repeats at most those).
    let start = tokio::time::Instant::now();
    let mut pipeline = stream::iter(todo.into_iter().enumerate())
        .map(|(k, index)| {
            let disk = disk.clone();
            let snapshot_id = &snapshot_id;
            async move {
                tokio::time::sleep_until(start + pace(k)).await;
                let name = disk.name();
                let data = crate::interrupt::blocking(move || read_block(&*disk, index))
                    .await?
                    .map_err(|e| Error::io("read", name, e))?;
                // Over a parent, a zero block must still replace the parent's.
                if parent.is_none() && crate::image::source::all_zero(&data) {
                    return Ok((index, false));
                }
                put_block(ebs, region, snapshot_id, index, data).await?;
                Ok((index, true))
            }
        })
        .buffer_unordered(UPLOAD_CONCURRENCY);
    let mut unsaved = 0;
    let mut failed = None;
    loop {
        let next = pipeline.next().await;
        let end = next.is_none();
        match next {
            Some(Ok((i, written))) => {
                let upload = journal.upload.as_mut().expect("set above");
                progress.bar().inc(1);
                stats.streamed_now += 1;
                stats.blocks_read += 1;
                stats.bytes_read += BLOCK;
                if written {
                    upload.blocks.insert(i);
                    stats.blocks_written += 1;
                    stats.bytes_written += BLOCK;
                } else {
                    upload.zero.insert(i);
                }
                unsaved += 1;
            }
            Some(Err(e)) => failed = Some(e),
            None => {}
        }
        // A failure saves what is done, for --resume.
        if failed.is_some() || (unsaved > 0 && (unsaved >= UPLOAD_CONCURRENCY || end)) {
            // A remote source counts what it fetched (metadata included).
            if let Some(n) = disk.blocks_read() {
                stats.blocks_read = earlier + n;
                stats.bytes_read = stats.blocks_read * BLOCK;
            }
            journal.transfer = Some(stats);
            journal.save()?;
            unsaved = 0;
            if failed.is_none() {
                test_pause(journal.upload.as_ref().expect("set above").blocks.len());
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if end {
            break;
        }
    }
    drop(pipeline);
    let count = journal.upload.as_ref().expect("set above").blocks.len();
    ebs.complete_snapshot()
        .snapshot_id(&snapshot_id)
        .changed_blocks_count(count as i32)
        .send()
        .await
        .map_err(|e| super::error::convert("CompleteSnapshot", region, None, e))?;
    journal.upload.as_mut().expect("set above").completed = true;
    journal.save()?;
    Ok((snapshot_id, stats))
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

#[cfg(test)]
mod throttling {
    //! Failures LocalStack cannot produce: throttling, then success; and
    //! throttling until the retries run out.
    use super::*;
    use aws_sdk_ebs::error::ErrorMetadata;
    use aws_sdk_ebs::operation::complete_snapshot::CompleteSnapshotOutput;
    use aws_sdk_ebs::operation::put_snapshot_block::{
        PutSnapshotBlockError, PutSnapshotBlockOutput,
    };
    use aws_sdk_ebs::types::error::RequestThrottledException;
    use aws_sdk_ebs::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use std::os::unix::fs::FileExt;

    fn throttled() -> PutSnapshotBlockError {
        PutSnapshotBlockError::RequestThrottledException(
            RequestThrottledException::builder()
                .message("Rate exceeded")
                .meta(
                    ErrorMetadata::builder()
                        .code("RequestThrottledException")
                        .message("Rate exceeded")
                        .build(),
                )
                .build(),
        )
    }

    fn one_block_file(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("disk");
        let f = File::create(&p).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all_at(b"data", 3 * BLOCK).unwrap();
        p
    }

    fn journal(dir: &Path) -> Journal {
        let mut j = Journal::new(dir, "mig-00000000beef");
        j.upload = Some(Upload {
            snapshot_id: "snap-0123456789abcdef0".into(),
            ..Default::default()
        });
        j
    }

    fn client(rules: &[&aws_smithy_mocks::Rule]) -> Client {
        mock_client!(aws_sdk_ebs, RuleMode::MatchAny, rules, |c| c.retry_config(
            aws_sdk_ebs::config::retry::RetryConfig::standard().with_max_attempts(4)
        ))
    }

    #[tokio::test]
    async fn throttling_then_success() {
        let dir = tempfile::tempdir().unwrap();
        let put = mock!(Client::put_snapshot_block)
            .sequence()
            .http_status(503, None)
            .error(throttled)
            .output(|| PutSnapshotBlockOutput::builder().build())
            .build();
        let complete = mock!(Client::complete_snapshot)
            .then_output(|| CompleteSnapshotOutput::builder().build());
        let ebs = client(&[&put, &complete]);
        let mut j = journal(dir.path());
        let file = crate::image::source::open_file(&one_block_file(dir.path())).unwrap();
        let blocks = file_blocks(&file);
        let (snap, stats) = upload_journaled(
            &ebs,
            "us-east-1",
            file,
            blocks,
            "d",
            &[],
            None,
            None,
            &mut j,
        )
        .await
        .unwrap();
        assert_eq!(snap, "snap-0123456789abcdef0");
        assert_eq!(stats.blocks_written, 1);
        assert_eq!(
            put.num_calls(),
            3,
            "two failures retried, then the block went through"
        );
        assert_eq!(complete.num_calls(), 1);
        let saved = Journal::load(dir.path(), "mig-00000000beef").unwrap();
        assert!(saved.upload.unwrap().completed);
    }

    #[tokio::test]
    async fn throttled_until_retries_run_out_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let put = mock!(Client::put_snapshot_block)
            .sequence()
            .error(throttled)
            .repeatedly()
            .build();
        let complete = mock!(Client::complete_snapshot)
            .then_output(|| CompleteSnapshotOutput::builder().build());
        let ebs = client(&[&put, &complete]);
        let mut j = journal(dir.path());
        let file = crate::image::source::open_file(&one_block_file(dir.path())).unwrap();
        let blocks = file_blocks(&file);
        let err = upload_journaled(
            &ebs,
            "us-east-1",
            file,
            blocks,
            "d",
            &[],
            None,
            None,
            &mut j,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PutSnapshotBlock in us-east-1: RequestThrottledException: Rate exceeded"
        );
        assert_eq!(
            put.num_calls(),
            4,
            "the SDK's standard retries, then the error"
        );
        assert_eq!(
            complete.num_calls(),
            0,
            "an unfinished upload is never completed"
        );
        let saved = Journal::load(dir.path(), "mig-00000000beef").unwrap();
        assert!(
            !saved.upload.unwrap().completed,
            "the journal keeps the upload for --resume"
        );
    }
}
