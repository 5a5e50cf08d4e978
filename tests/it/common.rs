//! Shared by the integration tests: the built binary in a LocalStack
//! environment, the check that LocalStack is there, and an EC2 client that
//! asks LocalStack directly, so the binary's answers can be compared with
//! EC2's own.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

/// The regions `--pv-regions` selects: the `aws`-partition regions that
/// offered PV instances (cn-north-1 and us-gov-west-1 are in other partitions).
pub const PV_REGIONS: [&str; 9] = [
    "ap-northeast-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "eu-central-1",
    "eu-west-1",
    "sa-east-1",
    "us-east-1",
    "us-west-1",
    "us-west-2",
];

/// debugfs stamps what it writes with the clock: migrations run with this
/// fixed one (as SOURCE_DATE_EPOCH does for builds) compare byte for byte.
pub const FAKE_TIME: &str = "1700000000";

/// The region the binary and [`ec2`] use unless told otherwise.
pub const HOME_REGION: &str = "us-east-1";

/// An endpoint where nothing listens: commands that must not touch the
/// network are pointed here, so they cannot lean on LocalStack by accident.
pub const NOWHERE: &str = "http://127.0.0.1:9";

/// LocalStack's URL: `AMITOOL_TEST_ENDPOINT`, by default http://127.0.0.1:4566.
pub fn endpoint() -> String {
    std::env::var("AMITOOL_TEST_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:4566".into())
        .trim_end_matches('/')
        .to_string()
}

/// The built binary with test credentials, `AWS_REGION=us-east-1`,
/// `AWS_ENDPOINT_URL` = [`endpoint`] and `--no-progress`. Every other `AWS_*`
/// variable of the caller's environment is removed, so a developer's profile
/// cannot change what the tests see.
pub fn amitool() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_amitool"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", HOME_REGION)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // The time amitool writes into the files it edits, fixed (amitool
        // honours e2fsprogs' E2FSPROGS_FAKE_TIME) so two migrations compare.
        .env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .env_remove("AMITOOL_STATE_DIR")
        .arg("--no-progress");
    cmd
}

/// What a run of the binary did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The stdout as JSON; panics with the run's stderr when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}); exit {:?}; stderr: {}\nstdout: {}",
                self.code, self.stderr, self.stdout
            )
        })
    }
}

/// Run `cmd` and keep its exit code and output.
pub fn run(cmd: &mut assert_cmd::Command) -> Run {
    let out = cmd.output().expect("the amitool binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `amitool ARGS` (with the [`amitool`] environment), which must exit 0.
pub fn ok(args: &[&str]) -> Run {
    let r = run(amitool().args(args));
    assert_eq!(r.code, Some(0), "amitool {args:?}: {}", r.stderr);
    r
}

/// `amitool ARGS --output json`, which must exit 0, parsed.
pub fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    ok(&a).json()
}

/// Panics unless LocalStack answers `GET /_localstack/health` with 200 and
/// EC2 available: the LocalStack tests must fail, never pass, without it.
pub fn localstack() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let url = endpoint();
    if let Err(why) = CHECKED.get_or_init(|| health(&url)) {
        panic!("LocalStack is not reachable at {url}: start it with `localstack/start.sh` ({why})");
    }
}

fn health(url: &str) -> Result<(), String> {
    let hostport = url
        .strip_prefix("http://")
        .ok_or("only http:// endpoints are checked")?
        .split('/')
        .next()
        .unwrap_or_default();
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /_localstack/health HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| e.to_string())?;
    let status = reply.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        return Err(format!("health answered {status:?}"));
    }
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    let services: Value = serde_json::from_str(body).map_err(|e| format!("health body: {e}"))?;
    match services["services"]["ec2"].as_str() {
        Some("running" | "available") => Ok(()),
        other => Err(format!("EC2 is {other:?}")),
    }
}

/// An EC2 client of `region` pointed at LocalStack with the test credentials.
pub async fn ec2(region: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config(region).await)
}

/// SDK configuration for LocalStack in `region`, with the test credentials.
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    localstack();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "amitool-tests",
        ))
        .load()
        .await
}

/// The keys of each top-level object of pretty-printed JSON (as amitool
/// prints it), in the order they appear: serde_json's `Value` sorts keys, so
/// the order of the contract is read from the text.
pub fn key_order(pretty: &str) -> Vec<Vec<String>> {
    let mut objects = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in pretty.lines() {
        if line == "  {" {
            current = Some(Vec::new());
        } else if line == "  }" || line == "  }," {
            objects.extend(current.take());
        } else if let (Some(keys), Some(rest)) = (current.as_mut(), line.strip_prefix("    \"")) {
            if let Some((key, _)) = rest.split_once("\":") {
                keys.push(key.to_string());
            }
        }
    }
    objects
}

/// Asserts the one-line error contract: exit `code`, one stderr line that
/// starts `amitool: `, no panic, nothing of the SDK's debug output.
pub fn assert_one_line_error(r: &Run, code: i32, what: &str) {
    let err = r.stderr.trim_end();
    assert_eq!(
        r.code,
        Some(code),
        "{what}: exit {:?}, stderr: {err}",
        r.code
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert_eq!(err.lines().count(), 1, "{what}: not one line: {err}");
    assert!(err.starts_with("amitool: "), "{what}: {err}");
    for debug in [
        "ServiceError",
        "DispatchFailure",
        "ConnectorError",
        "SdkError",
        "source:",
        "Some(",
        "backtrace",
        "RUST_BACKTRACE",
    ] {
        assert!(
            !err.contains(debug),
            "{what}: SDK debug ({debug}) in: {err}"
        );
    }
}

/// Where the PV fixtures are: `AMITOOL_FIXTURES`, else the cache that
/// tests/fixtures/build-images.sh fills for tests/run.sh.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::env::var_os("AMITOOL_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/amitool/fixture-images")
        })
}

/// One fixture image; panics with how to build them when it is missing.
pub fn fixture(name: &str) -> std::path::PathBuf {
    let dir = fixtures_dir();
    let p = dir.join(format!("{name}.img"));
    assert!(
        p.is_file(),
        "{} is missing: run tests/fixtures/build-images.sh {}",
        p.display(),
        dir.display()
    );
    p
}

/// sha256sum of a file.
pub fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Import a fixture as a PV AMI of us-east-1 with its hd0 1.05 kernel, named
/// `<name>-<unique>`, with `base` (the binary with its environment and
/// `--output json`); the new image's id.
pub fn import_pv(mut base: std::process::Command, name: &str, unique: &str) -> String {
    let file = fixture(name);
    let out = base
        .args(["import", file.to_str().unwrap(), "--virtualization", "pv"])
        .args([
            "--kernel",
            "aki-5c21674b",
            "--name",
            &format!("{name}-{unique}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img: Value = serde_json::from_slice(&out.stdout).unwrap();
    img["image_id"].as_str().unwrap().to_string()
}

/// `amitool --backend local ... --output json ARGS` on the state in
/// `state` (the edit clock fixed), its output; the command must succeed.
pub fn local_json(state: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amitool"))
        .env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .args([
            "--backend",
            "local",
            "--no-progress",
            "--region",
            "us-east-1",
        ])
        .args(["--output", "json", "--state-dir"])
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
}

/// A fixture imported into the local backend (state in `state`) as a PV
/// AMI, migrated by its pipeline and exported: the bytes of the HVM disk,
/// with the edit clock fixed ([`FAKE_TIME`]) so two runs compare.
pub fn local_migration(state: &std::path::Path, name: &str) -> Vec<u8> {
    let local = |args: &[&str]| local_json(state, args);
    // The PV-GRUB flavor the fixture was built for (hd00: a partitioned disk).
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir().join("manifest.json")).expect("the fixtures' manifest"),
    )
    .unwrap();
    let flavor = manifest["images"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["name"] == name))
        .and_then(|f| f["layout"].as_str())
        .unwrap_or("hd0")
        .to_string();
    let aki = local(&["kernels", "--flavor", &flavor, "--arch", "x86_64"])[0]["kernel_id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = fixture(name);
    let ami = local(&[
        "import",
        file.to_str().unwrap(),
        "--virtualization",
        "pv",
        "--kernel",
        &aki,
    ]);
    let m = local(&["migrate", "--ami", ami["image_id"].as_str().unwrap()]);
    let out = state.join("local-hvm.raw");
    local(&[
        "export",
        m["image_id"].as_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

/// Boot a raw HVM disk under QEMU through the local backend (state in
/// `state`) until `marker` and the initramfs marker are on its console.
pub fn boots_under_qemu(state: &std::path::Path, disk: &std::path::Path, marker: &str) {
    boots_under_qemu_on(state, disk, marker, "t2.micro");
}

/// [`boots_under_qemu`] on `instance_type` (m5.large: the root disk on
/// NVMe, as Nitro attaches it); its console log.
pub fn boots_under_qemu_on(
    state: &std::path::Path,
    disk: &std::path::Path,
    marker: &str,
    instance_type: &str,
) -> String {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_amitool"))
            .args([
                "--backend",
                "local",
                "--region",
                "us-east-1",
                "--output",
                "json",
                "--state-dir",
            ])
            .arg(state)
            .args(args)
            .output()
            .unwrap()
    };
    // A Nitro type runs an image marked EnaSupport (the migrated image is).
    let mut import = vec!["import", disk.to_str().unwrap(), "--virtualization", "hvm"];
    if instance_type != "t2.micro" {
        import.push("--ena-support");
    }
    let imp = run(&import);
    assert!(
        imp.status.success(),
        "{}",
        String::from_utf8_lossy(&imp.stderr)
    );
    let id = serde_json::from_slice::<Value>(&imp.stdout).unwrap()["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    let boot = run(&[
        "launch",
        &id,
        "--instance-type",
        instance_type,
        "--qemu",
        "--expect",
        marker,
        "--timeout",
        "240",
    ]);
    let report: Value = serde_json::from_slice(&boot.stdout).unwrap();
    let log = std::fs::read_to_string(
        report["qemu"]["serial_log"]
            .as_str()
            .unwrap_or("/nonexistent"),
    )
    .unwrap_or_default();
    assert_eq!(report["boots"], true, "{report}\n{log}");
    assert!(log.contains("AMITOOL-INITRAMFS-OK"), "{log}");
    log
}

/// The file that holds a LocalStack volume's bytes (localstack/hooks/
/// 25_amitool_volumes.py), under `AMITOOL_LOCALSTACK_ROOT` as
/// localstack/start.sh uses it: what the guest of a running instance
/// writes, a test writes there.
pub fn volume_file(volume_id: &str) -> std::path::PathBuf {
    let root = std::env::var("AMITOOL_LOCALSTACK_ROOT")
        .ok()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "/tmp/amitool-localstack".into());
    let path = std::path::Path::new(&root)
        .join("amitool-volumes")
        .join(volume_id);
    assert!(
        path.exists(),
        "{} does not exist: is LocalStack running from {root} (AMITOOL_LOCALSTACK_ROOT)?",
        path.display()
    );
    path
}

fn tag_filter(key: &str, value: &str) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// Our snapshots in us-east-1 whose tag `key` is `value`.
pub async fn snapshots_tagged(key: &str, value: &str) -> Vec<String> {
    let out = ec2(HOME_REGION)
        .await
        .describe_snapshots()
        .owner_ids("self")
        .filters(tag_filter(key, value))
        .send()
        .await
        .unwrap();
    out.snapshots()
        .iter()
        .map(|s| s.snapshot_id().unwrap().to_string())
        .collect()
}

/// Our images in us-east-1 whose tag `key` is `value`.
pub async fn images_tagged(key: &str, value: &str) -> Vec<String> {
    let out = ec2(HOME_REGION)
        .await
        .describe_images()
        .owners("self")
        .filters(tag_filter(key, value))
        .send()
        .await
        .unwrap();
    out.images()
        .iter()
        .map(|i| i.image_id().unwrap().to_string())
        .collect()
}

/// The journals saved in `dir`: `mig-….json` only. A save writes
/// `mig-….json.tmp` and renames it; a test that read the temporary file and
/// killed the run before the rename would resume from an older journal.
pub fn saved_journals(dir: &std::path::Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    entries
        .filter_map(|e| {
            let p = e.ok()?.path();
            if p.extension()? != "json" {
                return None;
            }
            serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
        })
        .collect()
}

/// examples/amitool_hooked, which `cargo test` builds beside the binary.
pub fn hooked_bin() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_amitool"))
        .with_file_name("examples")
        .join("amitool_hooked")
}

/// The binary against LocalStack with one test's own journal and work
/// directories (migration tests).
pub struct Migrations {
    pub dir: tempfile::TempDir,
}

impl Migrations {
    pub fn new() -> Self {
        localstack();
        Migrations {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.with_progress(&["--no-progress"]);
        c.args(args);
        c
    }

    /// The command as a person would run it, progress notes included.
    pub fn with_progress(&self, args: &[&str]) -> std::process::Command {
        self.command(env!("CARGO_BIN_EXE_amitool").as_ref(), args)
    }

    /// `amitool_hooked` (examples/): amitool with the test hooks the
    /// AMITOOL_TEST_* variables set (pause after a step, in a point, after
    /// blocks; a shorter progress interval); `--no-progress`.
    pub fn hooked(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.command(&hooked_bin(), &["--no-progress"]);
        c.args(args);
        c
    }

    /// `amitool_hooked` as a person would run it, progress notes included.
    pub fn hooked_with_progress(&self, args: &[&str]) -> std::process::Command {
        self.command(&hooked_bin(), args)
    }

    fn command(&self, bin: &std::path::Path, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(bin);
        c.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", HOME_REGION)
            .env("AWS_ENDPOINT_URL", endpoint())
            .env("AMITOOL_JOURNAL_DIR", self.path("journal"))
            .env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
            .env("AMITOOL_WORK_DIR", self.path("work"))
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }

    /// The command's JSON output; panics with its stderr when it fails.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(&[args, &["--output", "json"]].concat());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// A name no other test uses.
    pub fn unique(&self) -> String {
        self.dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into()
    }

    /// A fixture imported as a PV AMI of us-east-1 with its hd0 1.05 kernel.
    pub fn import(&self, name: &str) -> String {
        import_pv(self.cmd(&["--output", "json"]), name, &self.unique())
    }

    /// The journals whose `key` is `value`.
    pub fn journals(&self, key: &str, value: &str) -> Vec<Value> {
        saved_journals(&self.path("journal"))
            .into_iter()
            .filter(|j| j[key] == value)
            .collect()
    }

    /// Start `migrate ARGS` with the test hook that pauses after `step`, and
    /// wait until it says so; the child and the rest of its stderr.
    pub fn paused(
        &self,
        args: &[&str],
        step: &str,
    ) -> (
        std::process::Child,
        std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    ) {
        use std::io::BufRead;
        let mut child = self
            .hooked(args)
            .env("AMITOOL_TEST_PAUSE_AFTER_STEP", step)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            said.push_str(&line);
            said.push('\n');
            if line.contains("paused after step") {
                break;
            }
        }
        assert!(
            said.contains(&format!("paused after step {step}")),
            "step {step}: {said}"
        );
        (child, lines)
    }

    /// Run `migrate ARGS --name NAME` until it pauses after `step`, kill -9
    /// it, and give its migration id.
    pub fn kill_after_step(&self, args: &[&str], name: &str, step: &str) -> String {
        let (mut child, _) = self.paused(&[args, &["--name", name]].concat(), step);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let journals = self.journals("name", name);
        assert_eq!(journals.len(), 1, "{journals:?}");
        journals[0]["migration_id"].as_str().unwrap().to_string()
    }

    /// Run `migrate ARGS` until it pauses after `step`, then send SIGINT, as
    /// Ctrl-C in a terminal does; its exit code and what it said after.
    pub fn ctrl_c_after_step(&self, args: &[&str], step: &str) -> (Option<i32>, Vec<String>) {
        let (mut child, lines) = self.paused(args, step);
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let said: Vec<String> = lines.map(|l| l.unwrap()).collect();
        (child.wait().unwrap().code(), said)
    }
}

/// Write one 512 KiB block into a pending snapshot, with its checksum.
pub async fn put_block(ebs: &aws_sdk_ebs::Client, snapshot: &str, index: i32, block: Vec<u8>) {
    use base64::Engine;
    use sha2::Digest;
    let sum = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&block));
    ebs.put_snapshot_block()
        .snapshot_id(snapshot)
        .block_index(index)
        .data_length(512 * 1024)
        .checksum(sum)
        .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .block_data(aws_sdk_ebs::primitives::ByteStream::from(block))
        .send()
        .await
        .unwrap();
}

/// `bytes` as a new snapshot through the EBS direct APIs (all-zero blocks
/// left out), of the whole GiBs they need: bytes that did not come through
/// amitool's import (a data volume, a filesystem amitool refuses).
pub async fn snapshot_of(bytes: &[u8], description: &str) -> String {
    let ebs = aws_sdk_ebs::Client::new(&sdk_config("us-east-1").await);
    let gib = (bytes.len() as u64).div_ceil(1 << 30).max(1) as i64;
    let snap = ebs
        .start_snapshot()
        .volume_size(gib)
        .description(description)
        .send()
        .await
        .unwrap()
        .snapshot_id()
        .unwrap()
        .to_string();
    let mut n = 0;
    for (i, chunk) in bytes.chunks(512 * 1024).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        let mut block = chunk.to_vec();
        block.resize(512 * 1024, 0);
        put_block(&ebs, &snap, i as i32, block).await;
        n += 1;
    }
    ebs.complete_snapshot()
        .snapshot_id(&snap)
        .changed_blocks_count(n)
        .send()
        .await
        .unwrap();
    snap
}
