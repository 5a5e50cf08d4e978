//! Guest fixes, applied only with `--fix-guest` and only to the HVM copy:
//! fstab entries that name Xen device paths, and a login getty on the serial
//! console. The files are written like the boot configuration's rewrite:
//! by libext2fs into the HVM view's overlay (`migrate::Plan::view`), then
//! read back.

use serde::Serialize;

use crate::image::fs::GuestFiles;

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
    #[error("{path} is on no filesystem amitool can write")]
    Unmounted { path: String },
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
