//! The rendered preparation script, for real: as root, on loop devices made
//! from a PV fixture and an empty file, run exactly as SSM would run it
//! (bash, as root, its output's last line a JSON report), then the result
//! compared byte for byte with the direct method's disk (which the good
//! fixtures' tests boot). And its guard: a device that is not the one it was
//! given is refused before anything is written.

use std::path::{Path, PathBuf};
use std::process::Command;

use amitool::image::boot;
use amitool::migrate::script::{self, Device, Mode, Params, Report};

use crate::common;
use common::{fixture, sha256};

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, read_only: bool) -> Loop {
        let mut c = Command::new("losetup");
        c.args(["-f", "--show"]);
        if read_only {
            c.arg("-r");
        }
        let out = c.arg(file).output().expect("losetup (util-linux)");
        assert!(
            out.status.success(),
            "losetup failed (these tests need root and loop devices): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Run the script as SSM's AWS-RunShellScript would: bash, as root.
fn run(params: &Params, dir: &Path) -> (i32, Report) {
    let path = dir.join(format!("prepare-{:?}.sh", params.mode));
    std::fs::write(&path, script::render(params).unwrap()).unwrap();
    let out = Command::new("bash").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report = script::parse_report(&stdout).unwrap_or_else(|e| {
        panic!(
            "{e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

struct Setup {
    dir: tempfile::TempDir,
    src: PathBuf,
    dst: PathBuf,
}

fn setup(name: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.img");
    std::fs::copy(fixture(name), &src).unwrap();
    let dst = dir.path().join("target.img");
    let f = std::fs::File::create(&dst).unwrap();
    f.set_len(std::fs::metadata(&src).unwrap().len() + (2 << 20))
        .unwrap();
    Setup { dir, src, dst }
}

fn device(l: &Loop, file: &Path) -> Device {
    Device {
        device: l.0.clone(),
        size: std::fs::metadata(file).unwrap().len(),
        identity: file.canonicalize().unwrap().display().to_string(),
    }
}

fn params(mode: Mode, src: Device, dst: Device) -> Params {
    let len = src.size;
    Params {
        mode,
        migration_id: "mig-00000000abcd".into(),
        source: src,
        target: dst,
        ranges: vec![amitool::image::hvm::Range {
            src: 0,
            len,
            dst: 1 << 20,
        }],
        filesystems: vec![0],
    }
}

#[test]
fn planned_in_rust_converted_on_loop_devices_is_the_direct_methods_disk() {
    // One filesystem on the whole disk, and AMIgen6's separate /boot with an LVM2 root.
    for name in ["menulst-noroot", "amigen6-lvm"] {
        converted_on_loop_devices(name);
    }
}

fn converted_on_loop_devices(name: &str) {
    let s = setup(name);
    let before = sha256(&s.src);
    // amitool plans in Rust from the source read where it lies (on AWS the
    // snapshot through GetSnapshotBlock); the script only copies the ranges.
    let disk = amitool::image::source::open_file(&s.src).unwrap();
    let insp = amitool::image::inspect::inspect_in(&disk, None).unwrap();
    let boot_plan = insp.boot.clone().expect("a boot plan");
    assert!(!boot_plan.edits.is_empty(), "{name}: nothing to rewrite");
    let plan = amitool::migrate::Plan::new(&disk, &insp, false).unwrap();

    let (src_loop, dst_loop) = (Loop::attach(&s.src, true), Loop::attach(&s.dst, false));
    let (src, dst) = (device(&src_loop, &s.src), device(&dst_loop, &s.dst));
    let mut p = params(Mode::Check, src.clone(), dst.clone());
    p.filesystems = insp.mounts.iter().map(|m| m.offset).collect();
    let (code, check) = run(&p, s.dir.path());
    assert_eq!((code, check.ok), (0, true), "{name}: {check:?}");

    p.mode = Mode::Convert;
    p.ranges = plan.layout.ranges.clone();
    assert_eq!(p.ranges.len(), insp.partitions.len().max(1), "{name}");
    let (code, done) = run(&p, s.dir.path());
    assert_eq!((code, done.ok), (0, true), "{name}: {done:?}");
    let copied: u64 = plan.layout.ranges.iter().map(|r| r.len).sum();
    assert_eq!(done.bytes_copied, Some(copied), "{name}");
    drop((src_loop, dst_loop));
    assert_eq!(sha256(&s.src), before, "{name}: the source changed");
    write_child_blocks(&s, &disk, &plan);

    let problems = boot::hvm_problems(&s.dst, Some(&plan.cfg));
    assert!(problems.is_empty(), "{name}: {problems:?}");
    // The disk boots: it is byte for byte the direct method's, which the
    // good fixtures' tests boot (local_backend).

    // The direct method (the local backend's pipeline) builds the same disk, first MiB included.
    let direct = direct_disk(name);
    let helper = std::fs::read(&s.dst).unwrap();
    assert_eq!(&helper[..512], &direct[..512], "{name}: MBR");
    let first_diff = helper.iter().zip(&direct).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "{name}: the helper's disk differs from the direct method's"
    );
    assert!(
        helper[direct.len()..].iter().all(|&b| b == 0),
        "{name}: the helper wrote past the direct method's disk"
    );
}

/// What the child snapshot adds on AWS (ParentSnapshotId = the helper's
/// copy): blocks 0-1 and the overlay's, from the shared Rust view, written
/// over the script's copy.
fn write_child_blocks(
    s: &Setup,
    disk: &amitool::image::source::Disk,
    plan: &amitool::migrate::Plan,
) {
    use std::os::unix::fs::FileExt;
    let now: i64 = common::FAKE_TIME.parse().unwrap();
    let view = plan.view(disk, s.dir.path(), now).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&s.dst)
        .unwrap();
    let mut blocks = vec![0, 1];
    blocks.extend(view.edited());
    assert!(view.edited().len() < 64, "{:?}", view.edited());
    for b in blocks {
        f.write_all_at(&view.block(b).unwrap(), b * 512 * 1024)
            .unwrap();
    }
}

/// The fixture migrated by the local backend's pipeline, exported.
fn direct_disk(name: &str) -> Vec<u8> {
    let state = tempfile::tempdir().unwrap();
    common::local_migration(state.path(), name)
}

#[test]
fn the_guard_refuses_any_other_device_and_writes_nothing() {
    let s = setup("ext3-uuid");
    let (src_loop, dst_loop) = (Loop::attach(&s.src, true), Loop::attach(&s.dst, false));
    let (src, dst) = (device(&src_loop, &s.src), device(&dst_loop, &s.dst));
    let dst_before = sha256(&s.dst);
    let convert = |src: Device, dst: Device| params(Mode::Convert, src, dst);

    // The target's size is not what amitool attached.
    let mut wrong = dst.clone();
    wrong.size += 512;
    let (code, r) = run(&convert(src.clone(), wrong), s.dir.path());
    assert_eq!((code, r.ok), (3, false));
    assert!(r.reason.unwrap().contains("not the expected"));

    // The right size, but another backing file.
    let mut other = dst.clone();
    other.identity = s.src.canonicalize().unwrap().display().to_string();
    let (code, r) = run(&convert(src.clone(), other), s.dir.path());
    assert_eq!((code, r.ok), (3, false));

    // Source given as target.
    let (code, r) = run(&convert(src.clone(), src.clone()), s.dir.path());
    assert_eq!((code, r.ok), (3, false));

    // The right devices, but a range that would land on blocks 0-1, which
    // are amitool's (the child snapshot writes them).
    let mut p = convert(src.clone(), dst.clone());
    p.ranges[0].dst = 4096;
    let (code, r) = run(&p, s.dir.path());
    assert_eq!((code, r.ok), (3, false));
    assert!(r.reason.unwrap().contains("boot area"));

    // A device that is not there.
    let mut gone = dst.clone();
    gone.device = "/dev/loop250".into();
    let (code, r) = run(&convert(src.clone(), gone), s.dir.path());
    assert_eq!((code, r.ok), (3, false));

    drop((src_loop, dst_loop));
    assert_eq!(
        sha256(&s.dst),
        dst_before,
        "a refused script wrote to the target"
    );
}
