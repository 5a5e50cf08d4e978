//! Design (b) of the direct migration, measured as a prototype of its data
//! path: list the source snapshot's blocks, GetSnapshotBlock each and
//! PutSnapshotBlock it at index + 2 of a new snapshot, 16 in flight, without
//! touching the local disk. (The real design would also build blocks 0-1
//! from a remote read of the filesystem; two blocks do not change the
//! figures.) Run by bench/migrate-direct.sh beside design (a).
//!
//! Usage: ebs_stream_copy SNAPSHOT_ID (AWS_ENDPOINT_URL/AWS_REGION as usual)

use std::time::Instant;

use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::ChecksumAlgorithm;
use base64::Engine;
use futures::stream::{self, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = std::env::args()
        .nth(1)
        .ok_or("usage: ebs_stream_copy SNAPSHOT_ID")?;
    let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ebs = aws_sdk_ebs::Client::new(&conf);
    let start = Instant::now();
    let mut blocks = vec![];
    let mut volume_size = 1;
    let mut pages = ebs
        .list_snapshot_blocks()
        .snapshot_id(&source)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page?;
        volume_size = page.volume_size().unwrap_or(1);
        for b in page.blocks() {
            blocks.push((
                b.block_index().unwrap_or(0),
                b.block_token().unwrap_or_default().to_string(),
            ));
        }
    }
    let target = ebs
        .start_snapshot()
        .volume_size(volume_size + 1)
        .description("amitool design (b) prototype")
        .send()
        .await?
        .snapshot_id()
        .unwrap_or_default()
        .to_string();
    let sent: u64 = stream::iter(blocks.iter().cloned())
        .map(|(index, token)| {
            let (ebs, source, target) = (ebs.clone(), source.clone(), target.clone());
            async move {
                let got = ebs
                    .get_snapshot_block()
                    .snapshot_id(&source)
                    .block_index(index)
                    .block_token(token)
                    .send()
                    .await?;
                let data = got.block_data.collect().await?.into_bytes();
                let checksum =
                    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
                let len = data.len() as u64;
                ebs.put_snapshot_block()
                    .snapshot_id(&target)
                    .block_index(index + 2)
                    .data_length(len as i32)
                    .checksum(checksum)
                    .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                    .block_data(ByteStream::from(data))
                    .send()
                    .await?;
                Ok::<u64, Box<dyn std::error::Error>>(len)
            }
        })
        .buffer_unordered(16)
        .try_fold(0u64, |acc, n| async move { Ok(acc + n) })
        .await?;
    ebs.complete_snapshot()
        .snapshot_id(&target)
        .changed_blocks_count(blocks.len() as i32)
        .send()
        .await?;
    println!(
        "design (b) stream copy: wall {:.2} s  blocks read {}  written {}  bytes sent {}  (snapshot {target})",
        start.elapsed().as_secs_f64(),
        blocks.len(),
        blocks.len(),
        sent
    );
    Ok(())
}
