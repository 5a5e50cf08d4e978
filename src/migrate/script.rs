//! The preparation script a helper instance runs (through SSM's
//! AWS-RunShellScript, or on loop devices in tests), rendered from
//! `templates/prepare.sh.j2` with minijinja. Every value that reaches the
//! script is validated here and single-quoted by the template's `sh` filter:
//! nothing from a tag, a name or a guest file can inject shell.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const TEMPLATE: &str = include_str!("../../templates/prepare.sh.j2");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Validate the devices; write nothing.
    Check,
    /// Write the HVM disk onto the target.
    Convert,
}

/// A device and what proves it is the one amitool attached.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    /// `/dev/xvdf`, `/dev/sdf`, `/dev/nvme1n1`, `/dev/loop3`.
    pub device: String,
    /// Its exact size in bytes.
    pub size: u64,
    /// An EBS volume id (matched against the NVMe serial), or a loop device's backing file.
    pub identity: String,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub mode: Mode,
    pub migration_id: String,
    pub source: Device,
    pub target: Device,
    /// Source bytes copied to the target as they are.
    pub ranges: Vec<crate::image::hvm::Range>,
    /// Where the source's ext2/3/4 filesystems start (checked before anything is written).
    pub filesystems: Vec<u64>,
}

/// What the script's last line says.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Report {
    pub migration_id: String,
    pub mode: String,
    pub ok: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// convert: the bytes the script copied.
    #[serde(default)]
    pub bytes_copied: Option<u64>,
}

fn bad(what: &str, value: &str) -> Error {
    Error::Script {
        action: "render the preparation script",
        message: format!("refusing to put {what} {value:?} into it"),
    }
}

/// `/dev/xvdf`, `/dev/sdf`, `/dev/nvme1n1`, `/dev/loop12`: nothing else.
pub fn check_device_path(dev: &str) -> Result<()> {
    let ok = dev.strip_prefix("/dev/").is_some_and(|n| {
        let alpha = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_lowercase())
        };
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
        n.strip_prefix("xvd").is_some_and(|r| alpha(r, 2))
            || n.strip_prefix("sd").is_some_and(|r| alpha(r, 2))
            || n.strip_prefix("loop").is_some_and(digits)
            || n.strip_prefix("nvme")
                .and_then(|r| r.strip_suffix("n1"))
                .is_some_and(digits)
    });
    if ok {
        Ok(())
    } else {
        Err(bad("device", dev))
    }
}

/// A volume id, or an absolute path of plain characters (a loop backing file).
fn check_identity(id: &str) -> Result<()> {
    let vol = crate::ids::check_id(crate::ids::IdKind::Volume, id).is_ok();
    let path = id.starts_with('/')
        && id.len() < 512
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
        && !id.contains("..");
    if vol || path {
        Ok(())
    } else {
        Err(bad("device identity", id))
    }
}

/// Single quotes, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn render(p: &Params) -> Result<String> {
    crate::migrate::journal::check_migration_id(&p.migration_id)?;
    for d in [&p.source, &p.target] {
        check_device_path(&d.device)?;
        check_identity(&d.identity)?;
    }
    let mut env = minijinja::Environment::new();
    env.add_filter("sh", |v: String| shell_quote(&v));
    env.add_template("prepare.sh", TEMPLATE)
        .expect("the template parses (unit-tested)");
    let ctx = minijinja::context! {
        mode => p.mode,
        migration_id => p.migration_id,
        source => p.source,
        target => p.target,
        ranges => p.ranges,
        filesystems => p.filesystems,
    };
    env.get_template("prepare.sh")
        .and_then(|t| t.render(ctx))
        .map_err(|e| Error::Script {
            action: "render the preparation script",
            message: e.to_string(),
        })
}

/// The report on the last line of the script's output.
pub fn parse_report(output: &str) -> Result<Report> {
    let last = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    serde_json::from_str(last).map_err(|_| Error::Script {
        action: "the preparation script",
        message: format!("printed no report; its last line: {last:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: Mode) -> Params {
        Params {
            mode,
            migration_id: "mig-0123456789ab".into(),
            source: Device {
                device: "/dev/nvme1n1".into(),
                size: 8 << 30,
                identity: "vol-0123456789abcdef0".into(),
            },
            target: Device {
                device: "/dev/xvdg".into(),
                size: 9 << 30,
                identity: "vol-0fedcba9876543210".into(),
            },
            ranges: vec![crate::image::hvm::Range {
                src: 0,
                len: 8 << 30,
                dst: 1 << 20,
            }],
            filesystems: vec![0],
        }
    }

    #[test]
    fn renders_quoted_values() {
        let s = render(&params(Mode::Convert)).unwrap();
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("MODE='convert'\n"));
        assert!(s.contains("SRC_DEV='/dev/nvme1n1'\n"));
        assert!(s.contains("SRC_SIZE=8589934592\n"));
        assert!(s.contains("DST_ID='vol-0fedcba9876543210'\n"));
        assert!(
            s.contains("RANGE_0='0 8589934592 1048576'\nRANGE_COUNT=1\n"),
            "{s}"
        );
        assert!(s.contains("FILESYSTEMS='0'\n"), "{s}");
        // It only moves bytes: no MBR, no core.img, no file writes.
        assert!(
            !s.contains("mkimage") && !s.contains("/usr/lib/grub") && !s.contains("debugfs"),
            "{s}"
        );
    }

    #[test]
    fn refuses_anything_that_could_inject() {
        let mut p = params(Mode::Check);
        p.source.device = "/dev/xvdf; rm -rf /".into();
        assert!(render(&p).is_err());
        let mut p = params(Mode::Check);
        p.target.identity = "/tmp/x'$(reboot)'".into();
        assert!(render(&p).is_err());
        let mut p = params(Mode::Check);
        p.migration_id = "mig-1; reboot".into();
        assert!(render(&p).is_err());
        for ok in ["/dev/xvdf", "/dev/sdf", "/dev/nvme1n1", "/dev/loop12"] {
            check_device_path(ok).unwrap();
        }
        for no in [
            "/dev/sda1",
            "/dev/nvme0n1p1",
            "/dev/../sda",
            "xvdf",
            "/dev/mapper/x",
        ] {
            assert!(check_device_path(no).is_err(), "{no}");
        }
    }

    /// Run the rendered script with its devices as files in `dir` (the
    /// stand-in agent's AMITOOL_VOLUME_DIR); exit code and report.
    fn run_on_files(p: &Params, dir: &std::path::Path) -> (i32, Report) {
        let path = dir.join("s.sh");
        std::fs::write(&path, render(p).unwrap()).unwrap();
        let out = std::process::Command::new("bash")
            .arg(&path)
            .env("AMITOOL_VOLUME_DIR", dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            parse_report(&String::from_utf8_lossy(&out.stdout)).unwrap(),
        )
    }

    #[test]
    fn volume_files_are_guarded_like_devices() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = params(Mode::Check);
        p.source.size = 1 << 20;
        p.target.size = 2 << 20;
        let volume = |name: &str, size: u64, id: &str| {
            let f = std::fs::File::create(dir.path().join(name)).unwrap();
            f.set_len(size).unwrap();
            std::fs::write(dir.path().join(format!("{name}.volume-id")), id).unwrap();
        };
        volume("nvme1n1", 1 << 20, "vol-0123456789abcdef0");
        volume("xvdg", 2 << 20, "vol-0fedcba9876543210");
        // No filesystem on the source yet: refused after the guard.
        let (code, r) = run_on_files(&p, dir.path());
        assert_eq!(code, 3);
        assert!(r.reason.unwrap().contains("no ext2/3/4 filesystem"));
        let mut src = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("nvme1n1"))
            .unwrap();
        use std::io::{Seek, Write};
        src.seek(std::io::SeekFrom::Start(1080)).unwrap();
        src.write_all(&[0x53, 0xef]).unwrap();
        let (code, r) = run_on_files(&p, dir.path());
        assert_eq!((code, r.ok), (0, true), "{r:?}");
        // A volume of another size, another id, or none at that device.
        p.target.size = 3 << 20;
        let (_, r) = run_on_files(&p, dir.path());
        assert!(r.reason.unwrap().contains("not the expected"));
        p.target.size = 2 << 20;
        p.target.identity = "vol-0aaaaaaaaaaaaaaaa".into();
        let (_, r) = run_on_files(&p, dir.path());
        assert!(r
            .reason
            .unwrap()
            .contains("is vol-0fedcba9876543210, not vol-0aaaaaaaaaaaaaaaa"));
        p.target.identity = "vol-0fedcba9876543210".into();
        p.target.device = "/dev/xvdh".into();
        let (code, r) = run_on_files(&p, dir.path());
        assert_eq!(code, 3);
        assert!(r.reason.unwrap().contains("is not attached"));
        // Nothing was written: the target is still all zeros.
        let t = std::fs::read(dir.path().join("xvdg")).unwrap();
        assert!(t.iter().all(|&b| b == 0));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn report_is_the_last_line() {
        let r = parse_report(
            "noise\n{\"migration_id\":\"mig-0123456789ab\",\"mode\":\"check\",\"ok\":true}\n\n",
        )
        .unwrap();
        assert!(r.ok);
        assert!(parse_report("nothing\n").is_err());
    }
}
