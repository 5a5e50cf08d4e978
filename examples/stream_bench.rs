//! The direct method's block stream against an EBS stand-in that answers at
//! no cost (bench/stream-quota.sh runs it). `stream_bench serve PORT BLOCKS`
//! is the stand-in: a plain HTTP/1.1 server on 127.0.0.1 with the EBS direct
//! API's five calls the stream makes, a source snapshot of BLOCKS data blocks
//! (one 512 KiB block and its SHA-256, computed once, for every index) and a
//! sink that reads each PutSnapshotBlock's body and throws it away.
//! `stream_bench run ENDPOINT` streams that source into a new snapshot with
//! amitool's own code (the snapshot read where it lies, each block's
//! checksum checked, then written with its checksum, signed, journaled) and
//! prints one JSON line: blocks, seconds, blocks a second, this process's
//! CPU milliseconds per block, and its peak RSS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use sha2::Digest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const BLOCK: usize = 512 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let port: u16 = args[2].parse().expect("PORT");
            let blocks: usize = args[3].parse().expect("BLOCKS");
            rt.block_on(serve(port, blocks));
        }
        Some("run") => rt.block_on(run(&args[2])),
        _ => {
            eprintln!("usage: stream_bench serve PORT BLOCKS | run ENDPOINT");
            std::process::exit(2);
        }
    }
}

struct Stand {
    block: Vec<u8>,
    checksum: String,
    blocks: usize,
}

async fn serve(port: u16, blocks: usize) {
    let mut block = vec![0u8; BLOCK];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let checksum = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&block));
    let stand = Arc::new(Stand {
        block,
        checksum,
        blocks,
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    println!("listening");
    loop {
        let (sock, _) = listener.accept().await.expect("accept");
        let stand = stand.clone();
        tokio::spawn(async move {
            let _ = connection(sock, &stand).await;
        });
    }
}

/// One keep-alive connection: requests answered in order.
async fn connection(sock: tokio::net::TcpStream, s: &Stand) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut body = Vec::with_capacity(BLOCK);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
        let path = target.split('?').next().unwrap_or_default();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (status, extra, payload): (&str, String, &[u8]) =
            match (method.as_str(), segs.as_slice()) {
                ("POST", ["snapshots"]) => (
                    "201 Created",
                    "Content-Type: application/json\r\n".into(),
                    br#"{"SnapshotId":"snap-0bench00000000000","BlockSize":524288,"Status":"pending","VolumeSize":1024}"#,
                ),
                ("PUT", ["snapshots", _, "blocks", _]) => (
                    "201 Created",
                    format!(
                        "x-amz-Checksum: {}\r\nx-amz-Checksum-Algorithm: SHA256\r\n",
                        headers.get("x-amz-checksum").cloned().unwrap_or_default()
                    ),
                    b"",
                ),
                ("POST", ["snapshots", "completion", _]) => (
                    "202 Accepted",
                    "Content-Type: application/json\r\n".into(),
                    br#"{"Status":"completed"}"#,
                ),
                ("GET", ["snapshots", _, "blocks"]) => {
                    let list: Vec<String> = (0..s.blocks)
                        .map(|i| format!(r#"{{"BlockIndex":{i},"BlockToken":"t{i}"}}"#))
                        .collect();
                    let json = format!(
                        r#"{{"Blocks":[{}],"BlockSize":524288,"VolumeSize":{},"ExpiryTime":4102444800}}"#,
                        list.join(","),
                        (s.blocks * BLOCK).div_ceil(1 << 30).max(1)
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        json.len()
                    );
                    w.write_all(head.as_bytes()).await?;
                    w.write_all(json.as_bytes()).await?;
                    continue;
                }
                ("GET", ["snapshots", _, "blocks", _]) => (
                    "200 OK",
                    format!(
                        "Content-Type: application/octet-stream\r\nx-amz-Data-Length: {BLOCK}\r\nx-amz-Checksum: {}\r\nx-amz-Checksum-Algorithm: SHA256\r\n",
                        s.checksum
                    ),
                    &s.block,
                ),
                _ => ("404 Not Found", String::new(), b""),
            };
        let head = format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n",
            payload.len()
        );
        w.write_all(head.as_bytes()).await?;
        w.write_all(payload).await?;
    }
}

fn cpu_and_rss() -> (f64, u64) {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        secs(u.ru_utime) + secs(u.ru_stime),
        u.ru_maxrss as u64 * 1024,
    )
}

async fn run(endpoint: &str) {
    std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
    let sdk = amitool::backend::aws::client::load_sdk_config(
        &amitool::backend::aws::client::ClientOptions {
            profile: None,
            endpoint_url: Some(endpoint.to_string()),
        },
    )
    .await;
    let region = "us-east-1";
    let ebs = amitool::backend::aws::client::ebs_client(&sdk, region);
    if let Ok(n) = std::env::var("BENCH_MAX_REQUESTS_PER_SECOND") {
        amitool::backend::aws::budget::set_max(n.parse().expect("a number"));
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut journal = amitool::migrate::Journal::new(dir.path(), "mig-00000000bec0");
    let (cpu0, _) = cpu_and_rss();
    let started = Instant::now();
    let source = amitool::backend::aws::blocks::SnapshotSource::open(
        ebs.clone(),
        region,
        "snap-0source0000000000",
    )
    .await
    .expect("ListSnapshotBlocks");
    let blocks: Vec<u64> = (0..source.data_blocks() as u64).collect();
    let disk: amitool::image::source::Disk = Arc::new(source);
    let (snapshot, stats) = amitool::backend::aws::stream::upload_journaled(
        &ebs,
        region,
        disk,
        blocks,
        "stream bench",
        &[],
        None,
        None,
        &mut journal,
    )
    .await
    .expect("the stream");
    let seconds = started.elapsed().as_secs_f64();
    let (cpu1, rss) = cpu_and_rss();
    let n = stats.blocks_written;
    println!(
        "{}",
        serde_json::json!({
            "snapshot": snapshot,
            "blocks": n,
            "seconds": seconds,
            "blocks_per_second": n as f64 / seconds,
            "cpu_ms_per_block": (cpu1 - cpu0) * 1000.0 / n as f64,
            "cpu_seconds": cpu1 - cpu0,
            "peak_rss_mib": rss as f64 / (1 << 20) as f64,
        })
    );
}
