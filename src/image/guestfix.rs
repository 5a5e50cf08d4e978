//! Guest fixes, applied only with `--fix-guest` and only to the HVM copy:
//! fstab entries that name Xen device paths, and a login getty on the serial
//! console. Files are written with e2fsprogs' `debugfs -w` at the partition's
//! offset (no mount), then read back.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::image::fs::{GuestFiles, GuestFs};

/// One file the fix rewrites or creates, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestFix {
    pub path: String,
    pub content: String,
    pub description: String,
    /// Permission bits, uid and gid the file gets (an existing file's own).
    #[serde(skip)]
    pub mode: (u16, u32, u32),
}

impl GuestFix {
    /// A rewrite of the HVM copy's boot configuration, as a file to write.
    pub fn from_edit(e: &crate::image::bootcfg::Edit) -> Self {
        GuestFix {
            path: e.path.clone(),
            content: e.content.clone(),
            description: e
                .changes
                .iter()
                .map(|c| format!("{} line {}: {:?} → {:?}", c.file, c.line, c.before, c.after))
                .collect::<Vec<_>>()
                .join("; "),
            mode: (e.mode, e.uid, e.gid),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error("cannot run debugfs (install e2fsprogs): {0}")]
    Spawn(std::io::Error),
    #[error("debugfs failed writing {path}: {message}")]
    Debugfs { path: String, message: String },
    #[error("{path} is on no filesystem amitool can write")]
    Unmounted { path: String },
    #[error("{path} does not read back as written")]
    Verify { path: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn xen_device(dev: &str) -> bool {
    ["/dev/sd", "/dev/xvd", "/dev/hd"]
        .iter()
        .any(|p| dev.starts_with(p))
}

/// fstab with the root entry by UUID and other Xen-named devices `nofail`.
pub fn fix_fstab(text: &str, uuid: &str) -> Option<(String, Vec<String>)> {
    let mut changes = vec![];
    let mut out = String::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let fixed = match fields.as_slice() {
            [dev, "/", rest @ ..] if xen_device(dev) => {
                changes.push(format!("fstab line {}: / from {dev} → UUID={uuid}", n + 1));
                Some(format!("UUID={uuid}\t/\t{}", rest.join("\t")))
            }
            [dev, mp, fstype, opts, rest @ ..]
                if xen_device(dev)
                    && !dev.starts_with('#')
                    && !opts.split(',').any(|o| o == "nofail") =>
            {
                changes.push(format!(
                    "fstab line {}: {mp} on {dev} gets nofail (device names change on HVM)",
                    n + 1
                ));
                Some(
                    format!("{dev}\t{mp}\t{fstype}\t{opts},nofail\t{}", rest.join("\t"))
                        .trim_end()
                        .to_string(),
                )
            }
            _ => None,
        };
        out.push_str(fixed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    (!changes.is_empty()).then_some((out, changes))
}

/// The fixes this guest needs.
pub fn plan(fs: &dyn GuestFiles, uuid: &str) -> Vec<GuestFix> {
    let mut fixes = vec![];
    if let Some((content, changes)) = fs.read_text("/etc/fstab").and_then(|t| fix_fstab(&t, uuid)) {
        fixes.push(GuestFix {
            path: "/etc/fstab".into(),
            content,
            description: changes.join("; "),
            mode: fs.owner("/etc/fstab").unwrap_or((0o644, 0, 0)),
        });
    }
    if let Some(inittab) = fs.read_text("/etc/inittab") {
        let hvc = inittab
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("hvc0"));
        if hvc && !inittab.contains("ttyS0") {
            let mut content = inittab.clone();
            if !content.ends_with('\n') {
                content.push('\n');
            }
            content.push_str("T0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n");
            fixes.push(GuestFix {
                path: "/etc/inittab".into(),
                content,
                description: "inittab: a getty on ttyS0 beside the one on hvc0".into(),
                mode: fs.owner("/etc/inittab").unwrap_or((0o644, 0, 0)),
            });
        }
    }
    if let Some(conf) = fs.read_text("/etc/init/hvc0.conf") {
        if !fs.exists("/etc/init/ttyS0.conf") {
            fixes.push(GuestFix {
                path: "/etc/init/ttyS0.conf".into(),
                content: conf.replace("hvc0", "ttyS0"),
                description:
                    "upstart: /etc/init/ttyS0.conf, a copy of hvc0.conf for the serial console"
                        .into(),
                mode: (0o644, 0, 0),
            });
        }
    }
    // systemd starts serial-getty@ttyS0 by itself for console=ttyS0 (systemd-getty-generator).
    fixes
}

/// Write `fixes` into the ext filesystem at `offset` of `disk`, then check them.
pub fn apply(disk: &Path, offset: u64, fixes: &[GuestFix], workdir: &Path) -> Result<(), FixError> {
    for (i, fix) in fixes.iter().enumerate() {
        let local = workdir.join(format!("fix-{i}"));
        std::fs::write(&local, &fix.content).map_err(|source| FixError::Io {
            what: local.display().to_string(),
            source,
        })?;
        let (dir, name) = fix.path.rsplit_once('/').expect("absolute guest paths");
        let dir = if dir.is_empty() { "/" } else { dir };
        // debugfs reads its commands from a file; paths are ours, not the guest's.
        let (mode, uid, gid) = fix.mode;
        let script = format!(
            "cd {dir}\nrm {name}\nwrite {} {name}\nsif {name} mode 0{:o}\nsif {name} uid {uid}\nsif {name} gid {gid}\n",
            local.display(),
            0o100000 | u32::from(mode & 0o7777),
        );
        let cmds = workdir.join(format!("fix-{i}.debugfs"));
        std::fs::write(&cmds, script).map_err(|source| FixError::Io {
            what: cmds.display().to_string(),
            source,
        })?;
        let out = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(format!("{}?offset={offset}", disk.display()))
            .output()
            .map_err(FixError::Spawn)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let bad = stderr.lines().find(|l| {
            !l.starts_with("debugfs ")
                && !l.contains("File not found by ext2_lookup")
                && !l.trim().is_empty()
        });
        if !out.status.success() || bad.is_some() {
            return Err(FixError::Debugfs {
                path: fix.path.clone(),
                message: bad.unwrap_or("exit status").to_string(),
            });
        }
    }
    let fs = GuestFs::open(disk, offset).map_err(|e| FixError::Debugfs {
        path: "/".into(),
        message: e.to_string(),
    })?;
    for fix in fixes {
        if fs.read_text(&fix.path).as_deref() != Some(fix.content.as_str()) {
            return Err(FixError::Verify {
                path: fix.path.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_by_uuid_and_others_nofail() {
        let (out, changes) = fix_fstab("/dev/sda1\t/\t ext3\tdefaults\t0 0\n/dev/xvdb /mnt auto defaults,comment=cloudconfig 0 2\nproc /proc proc defaults 0 0\n", "u-1").unwrap();
        assert_eq!(out, "UUID=u-1\t/\text3\tdefaults\t0\t0\n/dev/xvdb\t/mnt\tauto\tdefaults,comment=cloudconfig,nofail\t0\t2\nproc /proc proc defaults 0 0\n");
        assert_eq!(changes.len(), 2);
    }

    #[test]
    fn nothing_to_fix() {
        assert_eq!(
            fix_fstab("LABEL=/ / ext4 defaults 1 1\n# /dev/sda1 / ext3\n", "u"),
            None
        );
    }
}
