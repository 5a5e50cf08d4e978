//! The journaled block stream into a new EBS snapshot (a migration's HVM
//! view where the source lies, an import's file): each block read once and
//! written once, at most UPLOAD_CONCURRENCY in flight, each request started
//! within the region's shared request budget (`budget.rs`), the completed
//! blocks journaled so `--resume` goes on.

use aws_sdk_ebs::types::Tag as EbsTag;
use futures::stream::{self, StreamExt};

use crate::backend::aws::transfer::{put_block, BLOCK};
use crate::error::{Error, Result};
use crate::image::overlay::TransferStats;
use crate::image::source::Disk;
use crate::migrate::journal::{Journal, Upload};

const GIB: u64 = 1 << 30;

/// Blocks in flight at once for one snapshot (EBS throttles per snapshot).
/// How many start a second is the process's budget's (`budget.rs`): each
/// block is one GetSnapshotBlock and one PutSnapshotBlock, drawn from the
/// budgets every stream of the region shares.
pub const UPLOAD_CONCURRENCY: usize = 16;

/// Upload `blocks` of `disk` (each read once, in order; all-zero ones
/// skipped) into a new snapshot, or the one the journal started, journaling
/// each batch of completed blocks so a resume writes only the rest; complete
/// it and return its id. `disk` is the HVM view where the source lies (a
/// stream: no local copy) or a local file. Reads block their thread, so
/// each runs on a blocking thread; at most UPLOAD_CONCURRENCY blocks are in
/// flight, each request started within the region's shared budget (under
/// EBS's limit of about 1,000 requests a second per snapshot and account,
/// halved when EBS throttles); the SDK's standard retries back off too.
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
            .client_token(journal.upload_token())
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
                message: format!(
                    "EBS reports a block size of {block_size} bytes; amitool writes {}-byte blocks",
                    crate::image::BLOCK
                ),
            });
        }
        let snapshot_id = out
            .snapshot_id()
            .ok_or_else(|| Error::missing("StartSnapshot", region, "snapshot id"))?
            .to_string();
        journal.upload = Some(Upload {
            snapshot_id,
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
    crate::migrate::hooks::pause_in("stream").await;
    crate::migrate::hooks::blocks_journaled(done.len());
    // One pipeline: a block starts as soon as one of the UPLOAD_CONCURRENCY
    // in flight ends (no batch waits for its slowest block), no sooner than
    // its slot in the region's request budget, and the journal is saved every
    // UPLOAD_CONCURRENCY blocks done (a resume repeats at most those).
    let mut pipeline = stream::iter(todo)
        .map(|index| {
            let disk = disk.clone();
            let snapshot_id = &snapshot_id;
            async move {
                let name = disk.name();
                // A block passed through whole comes with its source's
                // checksum, which PutSnapshotBlock has EBS check.
                // Fetched on this runtime when the source fetches over the
                // network, else read on a blocking thread.
                let read = match disk.fetch_block_for_write(index as u64) {
                    Some(fetch) => fetch.await,
                    None => {
                        let disk = disk.clone();
                        crate::interrupt::blocking(move || disk.read_block_for_write(index as u64))
                            .await?
                    }
                };
                let block = read.map_err(|e| Error::io("read", name, e))?;
                // Over a parent, a zero block must still replace the parent's.
                if parent.is_none() && block.is_zero() {
                    return Ok((index, false));
                }
                put_block(ebs, region, snapshot_id, index, block).await?;
                Ok((index, true))
            }
        })
        .buffer_unordered(UPLOAD_CONCURRENCY);
    let mut unsaved = 0;
    loop {
        let (end, failed) = match pipeline.next().await {
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
                (false, None)
            }
            Some(Err(e)) => (false, Some(e)),
            None => (true, None),
        };
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
                crate::migrate::hooks::blocks_journaled(
                    journal.upload.as_ref().expect("set above").blocks.len(),
                );
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

#[cfg(test)]
mod throttling {
    //! Failures LocalStack cannot produce: throttling, then success; and
    //! throttling until the retries run out.
    use super::*;
    use crate::backend::aws::transfer::file_blocks;
    use aws_sdk_ebs::error::ErrorMetadata;
    use aws_sdk_ebs::operation::complete_snapshot::CompleteSnapshotOutput;
    use aws_sdk_ebs::operation::put_snapshot_block::{
        PutSnapshotBlockError, PutSnapshotBlockOutput,
    };
    use aws_sdk_ebs::types::error::RequestThrottledException;
    use aws_sdk_ebs::Client;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::Path;

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

    /// The one-block file streamed into a new snapshot in `region` (a test's
    /// own, for a budget of its own), journaled in `dir`.
    async fn stream_one_block(
        ebs: &Client,
        region: &str,
        dir: &Path,
    ) -> Result<(String, TransferStats)> {
        let mut j = journal(dir);
        let file = crate::image::source::open_file(&one_block_file(dir)).unwrap();
        let blocks = file_blocks(&file);
        upload_journaled(ebs, region, file, blocks, "d", &[], None, None, &mut j).await
    }

    fn journal(dir: &Path) -> Journal {
        let mut j = Journal::new(dir, "mig-00000000beef");
        j.upload = Some(Upload {
            snapshot_id: "snap-0123456789abcdef0".into(),
            ..Default::default()
        });
        j
    }

    /// A mock EBS client whose throttled attempts reach `region`'s budget, as amitool's do.
    fn client(rules: &[&aws_smithy_mocks::Rule], region: &str) -> Client {
        let region = region.to_string();
        mock_client!(aws_sdk_ebs, RuleMode::MatchAny, rules, |c| c
            .retry_config(aws_sdk_ebs::config::retry::RetryConfig::standard().with_max_attempts(4))
            .interceptor(crate::backend::aws::client::Throttles::new(&region)))
    }

    fn budget(region: &str) -> crate::backend::aws::budget::BudgetReport {
        crate::backend::aws::budget::of(region, crate::backend::aws::budget::Api::PutSnapshotBlock)
            .report()
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
        let ebs = client(&[&put, &complete], "throttle-test-1");
        let (snap, stats) = stream_one_block(&ebs, "throttle-test-1", dir.path())
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
        // The throttled attempt halved the region's budget; the block's success gave a little back.
        let b = budget("throttle-test-1");
        assert_eq!(b.throttled, 1, "{b:?}");
        assert!(b.per_second < b.max_per_second / 2.0 + 1.0, "{b:?}");
        assert_eq!(b.requests, 1, "{b:?}");
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
        let ebs = client(&[&put, &complete], "throttle-test-2");
        let err = stream_one_block(&ebs, "throttle-test-2", dir.path())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PutSnapshotBlock in throttle-test-2: RequestThrottledException: Rate exceeded"
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
        let b = budget("throttle-test-2");
        assert_eq!(b.throttled, 4, "every attempt counted: {b:?}");
        assert!(b.per_second <= b.max_per_second / 2.0, "{b:?}");
        let saved = Journal::load(dir.path(), "mig-00000000beef").unwrap();
        assert!(
            !saved.upload.unwrap().completed,
            "the journal keeps the upload for --resume"
        );
    }
}
