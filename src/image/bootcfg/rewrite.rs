//! The rewrites of the HVM copy's boot files, line by line, each changed
//! line recorded: the forms the guest's own tools copy from (menu entries,
//! `# kopt=`/`# groot=`/`# defoptions=`, /etc/default/grub, bootstrap-vz's
//! 40_custom, fstab's root).

use super::{Change, Context, DeviceMap, Resolved, HVM_CONSOLE};

/// A Xen or SCSI device name: it changes on HVM (xvda1 on Xen, nvme0n1p1 on Nitro).
pub fn xen_device(dev: &str) -> bool {
    ["/dev/sd", "/dev/xvd", "/dev/hd"]
        .iter()
        .any(|p| dev.starts_with(p))
}

/// `major.minor` of a kernel version such as `2.6.32-431.el6.x86_64`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut it = version.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// AWS's NVMe timeout for this kernel: `nvme_core.io_timeout` from Linux 4.6, `nvme.io_timeout` (at most 255) before.
pub fn nvme_timeout(version: Option<&str>) -> &'static str {
    match version.and_then(major_minor) {
        Some(v) if v < (4, 6) => "nvme.io_timeout=255",
        _ => "nvme_core.io_timeout=4294967295",
    }
}

/// Kernel arguments for HVM: a device-independent `root=` (when `root_uuid`
/// is given), the serial console in place of Xen's, the NVMe timeout.
pub fn hvm_args(args: &[&str], root_uuid: Option<&str>, version: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    let mut console_at = None;
    for a in args {
        if let (Some(dev), Some(uuid)) = (a.strip_prefix("root="), root_uuid) {
            if xen_device(dev) {
                out.push(format!("root=UUID={uuid}"));
                continue;
            }
        }
        let console = a.starts_with("console=hvc")
            || a.starts_with("console=xvc")
            || a.starts_with("console=tty0")
            || a.starts_with("console=ttyS0")
            || a.starts_with("xencons=");
        if console {
            console_at.get_or_insert(out.len());
            continue;
        }
        out.push(a.to_string());
    }
    let at = console_at.unwrap_or(out.len());
    for (i, c) in HVM_CONSOLE.iter().enumerate() {
        out.insert(at + i, c.to_string());
    }
    if !args
        .iter()
        .any(|a| a.starts_with("nvme_core.io_timeout=") || a.starts_with("nvme.io_timeout="))
    {
        out.push(nvme_timeout(version).to_string());
    }
    out
}

/// Kernel arguments with a `resume=` that names the root disk's Xen device
/// by its UUID, or without it (and its `resume_offset=`) when that device is
/// not in the image: a dracut or systemd initramfs waits for a missing
/// resume device for ever (dracut 004 of EL6 and systemd from v245), and
/// initramfs-tools for 30 s.
pub fn resume_args<'a>(args: &[&'a str], devices: &DeviceMap) -> Vec<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    let gone = args.iter().any(|a| {
        a.strip_prefix("resume=")
            .is_some_and(|d| devices.resolve(d) == Resolved::Gone)
    });
    args.iter()
        .filter(|a| !(gone && (a.starts_with("resume=") || a.starts_with("resume_offset="))))
        .map(
            |a| match a.strip_prefix("resume=").map(|d| devices.resolve(d)) {
                Some(Resolved::Uuid(u)) => Cow::Owned(format!("resume=UUID={u}")),
                _ => Cow::Borrowed(*a),
            },
        )
        .collect()
}

/// [`hvm_args`] after [`resume_args`], for the words of one command line.
fn args_for(
    words: &[&str],
    root_uuid: Option<&str>,
    version: Option<&str>,
    ctx: &Context,
) -> Vec<String> {
    let resumed = resume_args(words, &ctx.devices);
    let refs: Vec<&str> = resumed.iter().map(|c| c.as_ref()).collect();
    hvm_args(&refs, root_uuid, version)
}

/// Leading whitespace of a line, kept on rewrite.
fn indent(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

/// `cmd SEP rest` with GRUB legacy's separators (blanks or `=`).
fn split_cmd(line: &str) -> (&str, &str, &str) {
    let t = line.trim_start();
    let end = t
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(t.len());
    let after = &t[end..];
    let rest = after.trim_start_matches(|c: char| c.is_whitespace() || c == '=');
    (&t[..end], &after[..after.len() - rest.len()], rest)
}

/// The whole-disk GRUB device `(hd0)` becomes the boot partition.
fn partition_device(path: &str, grub_root: &str) -> String {
    match path.strip_prefix("(hd0)") {
        Some(rest) => format!("{grub_root}{rest}"),
        None => path.to_string(),
    }
}

/// A kernel line's words rewritten for HVM: `(hd0)` prefix, then the arguments.
fn kernel_words(rest: &str, ctx: &Context) -> String {
    let words: Vec<&str> = rest.split_whitespace().collect();
    // GRUB legacy allows flags such as --no-mem-option before the path.
    let path_at = words.iter().position(|w| !w.starts_with("--"));
    let Some(p) = path_at else {
        return rest.to_string();
    };
    let path = partition_device(words[p], &ctx.grub_root);
    // A symlink such as Debian's /vmlinuz names no version: the default kernel's.
    let version = crate::image::inspect::version_of(&path).or_else(|| ctx.default_version.clone());
    let args = args_for(
        &words[p + 1..],
        ctx.root_uuid.as_deref(),
        version.as_deref(),
        ctx,
    );
    let mut out: Vec<String> = words[..p].iter().map(|s| s.to_string()).collect();
    out.push(path);
    out.extend(args);
    out.join(" ")
}

/// `text` with each line replaced by `f(line)`, and the lines that changed.
fn map_lines(file: &str, text: &str, mut f: impl FnMut(&str) -> String) -> (String, Vec<Change>) {
    let mut changes = vec![];
    let out: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let new = f(line);
            record(&mut changes, file, n, line, &new);
            new
        })
        .collect();
    (join_lines(out, text), changes)
}

/// Lines joined again, with the original's final newline.
fn join_lines(lines: Vec<String>, original: &str) -> String {
    let mut s = lines.join("\n");
    if original.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn record(changes: &mut Vec<Change>, file: &str, n: usize, before: &str, after: &str) {
    if before != after {
        changes.push(Change {
            file: file.into(),
            line: n + 1,
            before: before.into(),
            after: after.into(),
        });
    }
}

/// A GRUB legacy menu rewritten for HVM: `root (hd0)` and `# groot=` name the
/// partition, every `kernel` line and `# kopt=` get the HVM arguments, and
/// `# defoptions=` the serial console; in an update-grub-legacy-ec2 menu the
/// `# groot=` and `# defoptions=` it would default to ((hd0), console=hvc0)
/// are written out.
pub fn rewrite_legacy(file: &str, text: &str, ctx: &Context) -> (String, Vec<Change>) {
    let mut out = vec![];
    let mut changes = vec![];
    let automagic = text.lines().any(|l| l.starts_with("# kopt="));
    let (mut has_groot, mut has_defoptions) = (false, false);
    for (n, line) in text.lines().enumerate() {
        let ind = indent(line);
        let (cmd, sep, rest) = split_cmd(line);
        let new = if let Some(v) = line.strip_prefix("# kopt=") {
            let words: Vec<&str> = v.split_whitespace().collect();
            let version = ctx.default_version.as_deref();
            format!(
                "# kopt={}",
                args_for(&words, ctx.root_uuid.as_deref(), version, ctx).join(" ")
            )
        } else if let Some(v) = line.strip_prefix("# groot=") {
            has_groot = true;
            format!("# groot={}", partition_device(v.trim(), &ctx.grub_root))
        } else if let Some(v) = line.strip_prefix("# defoptions=") {
            has_defoptions = true;
            let words: Vec<&str> = v.split_whitespace().collect();
            let kept: Vec<String> = args_for(&words, None, None, ctx)
                .into_iter()
                .filter(|a| !a.starts_with("nvme"))
                .filter(|a| {
                    words
                        .iter()
                        .any(|w| w.starts_with("console=") || w.starts_with("xencons="))
                        || !a.starts_with("console=")
                })
                .collect();
            format!("# defoptions={}", kept.join(" "))
        } else if automagic && line.starts_with("## ## End Default Options ##") {
            if !has_groot {
                out.push(format!("# groot={}", ctx.grub_root));
                changes.push(Change {
                    file: file.into(),
                    line: n + 1,
                    before: String::new(),
                    after: format!("# groot={}", ctx.grub_root),
                });
            }
            if !has_defoptions {
                // update-grub-legacy-ec2 defaults to console=hvc0 without this line.
                let d = format!("# defoptions={}", HVM_CONSOLE.join(" "));
                changes.push(Change {
                    file: file.into(),
                    line: n + 1,
                    before: String::new(),
                    after: d.clone(),
                });
                out.push(d);
            }
            line.to_string()
        } else {
            match cmd {
                // `default saved` stays: the HVM default goes into the default file.
                "default" if ctx.hvm_default.is_some() && rest.trim() != "saved" => {
                    format!("{ind}{cmd}{sep}{}", ctx.hvm_default.unwrap_or(0))
                }
                "root" | "rootnoverify" => {
                    format!(
                        "{ind}{cmd}{sep}{}",
                        partition_device(rest.trim(), &ctx.grub_root)
                    )
                }
                "kernel" => format!("{ind}{cmd}{sep}{}", kernel_words(rest, ctx)),
                "initrd" => format!(
                    "{ind}{cmd}{sep}{}",
                    partition_device(rest.trim(), &ctx.grub_root)
                ),
                _ => line.to_string(),
            }
        };
        record(&mut changes, file, n, line, &new);
        out.push(new);
    }
    (join_lines(out, text), changes)
}

/// A GRUB 2 grub.cfg rewritten for HVM: every `linux` line gets the HVM arguments.
pub fn rewrite_grub2(file: &str, text: &str, ctx: &Context) -> (String, Vec<Change>) {
    map_lines(file, text, |line| {
        let (cmd, sep, rest) = split_cmd(line);
        if !matches!(cmd, "linux" | "linux16") || !sep.chars().all(char::is_whitespace) {
            return line.to_string();
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.split_first() {
            Some((path, args)) => {
                let version = crate::image::inspect::version_of(path);
                let args = args_for(args, ctx.root_uuid.as_deref(), version.as_deref(), ctx);
                format!("{}{cmd}{sep}{path} {}", indent(line), args.join(" "))
            }
            None => line.to_string(),
        }
    })
}

/// One of /etc/default/grub's command lines for HVM.
fn default_grub_cmdline(key: &str, value: &str, text: &str, ctx: &Context) -> Option<String> {
    let q = value.chars().next().filter(|c| *c == '"' || *c == '\'');
    let inner = match q {
        Some(q) => value.strip_prefix(q)?.strip_suffix(q)?,
        None => value,
    };
    let words: Vec<&str> = inner.split_whitespace().collect();
    let had_console = words
        .iter()
        .any(|w| w.starts_with("console=") || w.starts_with("xencons="));
    let mut args: Vec<String> = args_for(&words, None, ctx.default_version.as_deref(), ctx)
        .into_iter()
        .filter(|a| had_console || !a.starts_with("console="))
        .collect();
    let linux = key == "GRUB_CMDLINE_LINUX=";
    let wants_timeout = linux && !text.contains("io_timeout=");
    if !wants_timeout {
        args.retain(|a| !a.starts_with("nvme") || words.contains(&a.as_str()));
    }
    // A command line without a console gets the serial one in GRUB_CMDLINE_LINUX.
    if linux && !text.contains("console=") {
        let at = args.len().saturating_sub(usize::from(wants_timeout));
        for (i, c) in HVM_CONSOLE.iter().enumerate() {
            args.insert(at + i, c.to_string());
        }
    }
    let q = q.unwrap_or('"');
    Some(format!("{key}{q}{}{q}", args.join(" ")))
}

/// /etc/default/grub for grub-mkconfig on HVM: the console in both command
/// lines, the NVMe timeout in GRUB_CMDLINE_LINUX.
pub fn rewrite_default_grub(file: &str, text: &str, ctx: &Context) -> (String, Vec<Change>) {
    map_lines(file, text, |line| {
        ["GRUB_CMDLINE_LINUX_DEFAULT=", "GRUB_CMDLINE_LINUX="]
            .iter()
            .find_map(|key| default_grub_cmdline(key, line.strip_prefix(key)?, text, ctx))
            .unwrap_or_else(|| line.to_string())
    })
}

/// bootstrap-vz's /etc/grub.d/40_custom writes legacy entries with a fixed
/// `root (hd0)` and `root=${GRUB_DEVICE}` set to a Xen device: both made HVM's.
pub fn rewrite_40_custom(file: &str, text: &str, ctx: &Context) -> (String, Vec<Change>) {
    map_lines(file, text, |line| {
        let (cmd, sep, rest) = split_cmd(line);
        let uuid = ctx.root_uuid.as_deref().filter(|_| xen_device(rest.trim()));
        if let (Some(uuid), "GRUB_DEVICE", "=") = (uuid, cmd, sep) {
            format!("{}GRUB_DEVICE=UUID={uuid}", indent(line))
        } else if matches!(cmd, "root" | "rootnoverify") && rest.trim() == "(hd0)" {
            format!("{}{cmd}{sep}{}", indent(line), ctx.grub_root)
        } else {
            line.to_string()
        }
    })
}

/// /etc/fstab's `/` line by UUID when it names a Xen device: new-kernel-pkg
/// passes fstab's root to grubby as the next entry's `root=`. A swap line
/// that names the root disk's Xen device gets its UUID, or is commented out
/// when that device is not in the image (systemd would wait for it).
pub fn rewrite_fstab_root(file: &str, text: &str, ctx: &Context) -> (String, Vec<Change>) {
    map_lines(file, text, |line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let uuid = match f.as_slice() {
            [dev, "/", ..] if xen_device(dev) => ctx.root_uuid.clone(),
            [dev, "/boot", ..] if xen_device(dev) => ctx.boot_uuid.clone(),
            [dev, _, "swap", ..] if xen_device(dev) => match ctx.devices.resolve(dev) {
                Resolved::Uuid(u) => Some(u),
                Resolved::Gone => return format!("# {line}"),
                Resolved::Stays => None,
            },
            _ => None,
        };
        match (uuid, f.as_slice()) {
            (Some(uuid), [_, mp, rest @ ..]) => format!("UUID={uuid}\t{mp}\t{}", rest.join("\t")),
            _ => line.to_string(),
        }
    })
}

/// initramfs-tools' /etc/initramfs-tools/conf.d/resume (`RESUME=/dev/xvda2`),
/// which the next `update-initramfs` bakes in: by UUID, or `none`.
pub fn rewrite_resume_conf(file: &str, text: &str, ctx: &Context) -> (String, Vec<Change>) {
    map_lines(file, text, |line| {
        let Some(dev) = line.trim().strip_prefix("RESUME=") else {
            return line.to_string();
        };
        match ctx.devices.resolve(dev.trim_matches(['"', '\''])) {
            Resolved::Uuid(u) => format!("RESUME=UUID={u}"),
            Resolved::Gone => "RESUME=none".into(),
            Resolved::Stays => line.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::bootcfg::is_grub2;

    fn ctx() -> Context {
        Context {
            root_uuid: Some("u-1".into()),
            boot_uuid: None,
            grub_root: "(hd0,0)".into(),
            default_version: Some("6.1.0-57-amd64".into()),
            hvm_default: None,
            devices: DeviceMap {
                partitions: [(1, Some("u-1".into())), (2, Some("s-2".into()))].into(),
            },
        }
    }

    #[test]
    fn resume_by_uuid_or_gone() {
        let c = ctx();
        let line =
            |args: &[&str]| args_for(args, c.root_uuid.as_deref(), Some("4.14.1"), &c).join(" ");
        // hibinit-agent: the swap file on the root filesystem, by device name
        assert_eq!(
            line(&["root=LABEL=/", "resume=/dev/xvda1", "resume_offset=34816"]),
            "root=LABEL=/ resume=UUID=u-1 resume_offset=34816 console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295"
        );
        // a swap partition (EL6 names the disk xvde)
        assert!(line(&["resume=/dev/xvde2"]).starts_with("resume=UUID=s-2 "));
        // instance-store swap, another volume: gone, with its offset
        assert_eq!(
            line(&["ro", "resume=/dev/xvda3", "resume_offset=8", "quiet"]),
            "ro quiet console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295"
        );
        assert!(!line(&["resume=/dev/xvdb"]).contains("resume"));
        assert!(line(&["resume=UUID=x"]).starts_with("resume=UUID=x "));
        let (out, ch) = rewrite_fstab_root(
            "f",
            "/dev/xvde2 swap swap defaults 0 0\n/dev/xvda3 none swap sw 0 0\nUUID=s swap swap defaults 0 0\n",
            &c,
        );
        assert_eq!(
            out,
            "UUID=s-2\tswap\tswap\tdefaults\t0\t0\n# /dev/xvda3 none swap sw 0 0\nUUID=s swap swap defaults 0 0\n"
        );
        assert_eq!(ch.len(), 2);
        let (out, _) = rewrite_resume_conf("r", "RESUME=/dev/xvda3\n", &c);
        assert_eq!(out, "RESUME=none\n");
        let (out, _) = rewrite_resume_conf("r", "RESUME=/dev/sda2\n", &c);
        assert_eq!(out, "RESUME=UUID=s-2\n");
    }

    #[test]
    fn args_for_hvm() {
        assert_eq!(
            hvm_args(
                &[
                    "ro",
                    "root=/dev/xvde1",
                    "console=hvc0",
                    "xencons=tty",
                    "quiet"
                ],
                Some("u-1"),
                Some("2.6.32-431.el6.x86_64")
            ),
            [
                "ro",
                "root=UUID=u-1",
                "console=tty0",
                "console=ttyS0,115200",
                "quiet",
                "nvme.io_timeout=255"
            ]
        );
        assert_eq!(
            hvm_args(&["root=LABEL=/"], Some("u-1"), Some("4.14.1")),
            [
                "root=LABEL=/",
                "console=tty0",
                "console=ttyS0,115200",
                "nvme_core.io_timeout=4294967295"
            ]
        );
        // Idempotent: a second pass changes nothing.
        let once = hvm_args(&["root=/dev/sda1", "console=hvc0"], Some("u-1"), None);
        let words: Vec<&str> = once.iter().map(String::as_str).collect();
        assert_eq!(hvm_args(&words, Some("u-1"), None), once);
    }

    #[test]
    fn ubuntu_menu_keeps_its_generator_right() {
        let menu = "default\t\t0\n### BEGIN AUTOMAGIC KERNELS LIST\n## ## Start Default Options ##\n# kopt=root=/dev/sda1 ro console=hvc0\n## ## End Default Options ##\n\ntitle\t\tUbuntu, kernel 3.2.0-58-virtual\nroot\t\t(hd0)\nkernel\t\t/boot/vmlinuz-3.2.0-58-virtual root=/dev/sda1 ro console=hvc0\ninitrd\t\t/boot/initrd.img-3.2.0-58-virtual\n";
        let (out, changes) = rewrite_legacy("/boot/grub/menu.lst", menu, &ctx());
        assert!(out.contains("# kopt=root=UUID=u-1 ro console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295\n"), "{out}");
        assert!(out.contains("# groot=(hd0,0)\n# defoptions=console=tty0 console=ttyS0,115200\n## ## End Default Options ##"), "{out}");
        assert!(out.contains("root\t\t(hd0,0)\n"));
        assert!(out.contains("kernel\t\t/boot/vmlinuz-3.2.0-58-virtual root=UUID=u-1 ro console=tty0 console=ttyS0,115200 nvme.io_timeout=255\n"), "{out}");
        assert_eq!(changes.len(), 5);
        // Rewriting the result again changes nothing.
        assert!(rewrite_legacy("m", &out, &ctx()).1.is_empty());
    }

    #[test]
    fn grubby_style_entries_and_equals_syntax() {
        let menu = "default=0\ntimeout=1\ntitle CentOS\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-2.6.32-431.el6.x86_64 ro root=UUID=u-1 console=hvc0\n\tinitrd /boot/initramfs-2.6.32-431.el6.x86_64.img\n";
        let (out, _) = rewrite_legacy("g", menu, &ctx());
        assert!(out.contains("\tkernel /boot/vmlinuz-2.6.32-431.el6.x86_64 ro root=UUID=u-1 console=tty0 console=ttyS0,115200 nvme.io_timeout=255\n"), "{out}");
        assert!(out.contains("\troot (hd0,0)\n"));
    }

    #[test]
    fn grub2_detection_and_rewrite() {
        assert!(!is_grub2(
            "default 0\ntitle x\n\troot (hd0)\n\tkernel /boot/vmlinuz\n"
        ));
        assert!(is_grub2("set default=0\nmenuentry 'x' {\n\tlinux /boot/vmlinuz-6.1 root=/dev/xvda1 ro console=hvc0\n}\n"));
        let (out, c) = rewrite_grub2(
            "c",
            "menuentry 'x' {\n\tlinux\t/boot/vmlinuz-6.1.0 root=/dev/xvda1 ro console=hvc0\n}\n",
            &ctx(),
        );
        assert_eq!(c.len(), 1);
        assert!(out.contains("\tlinux\t/boot/vmlinuz-6.1.0 root=UUID=u-1 ro console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295\n"), "{out}");
    }

    #[test]
    fn default_grub_and_40_custom() {
        let (out, _) = rewrite_default_grub("d", "GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=hvc0\"\nGRUB_CMDLINE_LINUX=\"\"\n", &ctx());
        assert_eq!(out, "GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"console=tty0 console=ttyS0,115200\"\nGRUB_CMDLINE_LINUX=\"nvme_core.io_timeout=4294967295\"\n");
        let (out, _) = rewrite_default_grub("d", "GRUB_CMDLINE_LINUX=\"quiet\"\n", &ctx());
        assert_eq!(out, "GRUB_CMDLINE_LINUX=\"quiet console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295\"\n");
        let (out, c) = rewrite_40_custom(
            "c",
            "GRUB_DEVICE=/dev/xvda1\ntitle ${version}\n\troot (hd0,0)\n\troot (hd0)\n",
            &ctx(),
        );
        assert_eq!(
            out,
            "GRUB_DEVICE=UUID=u-1\ntitle ${version}\n\troot (hd0,0)\n\troot (hd0,0)\n"
        );
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn fstab_root_by_uuid_only() {
        let (out, c) = rewrite_fstab_root(
            "f",
            "/dev/xvda1 / ext4 defaults 0 1\n/dev/xvdb /mnt auto defaults 0 2\n",
            &ctx(),
        );
        assert_eq!(
            out,
            "UUID=u-1\t/\text4\tdefaults\t0\t1\n/dev/xvdb /mnt auto defaults 0 2\n"
        );
        assert_eq!(c.len(), 1);
    }
}
