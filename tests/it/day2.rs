//! Day 2 of a migrated image: what each guest's own tools do on a kernel
//! upgrade, done to the HVM disk's filesystem with debugfs (no mount): a new
//! kernel and initramfs under a new version, the boot configuration written
//! the way that distribution's tool writes it from the inputs as they now
//! are, then the old kernel removed.
//!
//! - grubby (Amazon Linux, RHEL/CentOS 6, and SUSE's perl-Bootloader alike):
//!   `--add-kernel --copy-default --make-default --args=root=<fstab's />`,
//!   the new entry first, `default=0`, written as a new file over the one it
//!   edits (grub.conf when there is one).
//! - update-grub-legacy-ec2 (Ubuntu, Debian grub-legacy): the AUTOMAGIC list
//!   regenerated from `# kopt=`, `# groot=` (default `(hd0)`), `# defoptions=`
//!   (default `console=hvc0`) and `# altoptions=`.
//! - grub-mkconfig (GRUB 2 guests): 10_linux's entry from /etc/default/grub.
//! - bootstrap-vz's grub-mkconfig: its 40_custom's legacy entries from
//!   `GRUB_DEVICE=`, its `root` line and /etc/default/grub.

use std::path::Path;
use std::process::Command;

/// The ext filesystem of partition 1 of an HVM disk, for debugfs.
pub fn target(disk: &Path) -> String {
    format!("{}?offset=1048576", disk.display())
}

pub fn cat(disk: &Path, path: &str) -> Option<String> {
    cat_at(&target(disk), path)
}

/// A file of the ext filesystem `target` (`disk?offset=N`).
pub fn cat_at(target: &str, path: &str) -> Option<String> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}"), target])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let missing = String::from_utf8_lossy(&out.stderr).contains("not found");
    (!missing).then_some(text)
}

fn debugfs(t: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cmds = dir.path().join("cmds");
    std::fs::write(&cmds, script).unwrap();
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(t)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn split(path: &str) -> (&str, &str) {
    let (d, n) = path.rsplit_once('/').unwrap();
    (if d.is_empty() { "/" } else { d }, n)
}

/// Write `content` as a new file over `path` (as grubby and update-grub do:
/// new file, rename) in the filesystem `t` (`image` or `disk?offset=N`).
pub fn write(t: &str, path: &str, content: &str) {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f");
    std::fs::write(&local, content).unwrap();
    let (d, n) = split(path);
    debugfs(
        t,
        &format!(
            "cd {d}\nrm {n}\nwrite {} {n}\nsif {n} mode 0100644\n",
            local.display()
        ),
    );
    assert_eq!(cat_at(t, path).as_deref(), Some(content), "{path} written");
}

pub fn copy(t: &str, from: &str, to: &str) {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("f");
    debugfs(t, &format!("dump {from} {}\n", local.display()));
    let (d, n) = split(to);
    debugfs(t, &format!("cd {d}\nwrite {} {n}\n", local.display()));
}

pub fn remove(t: &str, path: &str) {
    let (d, n) = split(path);
    debugfs(t, &format!("cd {d}\nrm {n}\n"));
    assert!(cat_at(t, path).is_none(), "{path} removed");
}

/// `KEY="value"` of a shell-style defaults file.
pub fn default_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches(['"', '\'']).to_string())
        .unwrap_or_default()
}

fn entries(lines: &[&str]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("title"))
        .map(|(i, _)| i)
        .collect()
}

/// grubby --add-kernel NEW --initrd NEWI --copy-default --make-default --args=root=ROOT.
pub fn grubby_add(
    menu: &str,
    new_kernel: &str,
    new_initrd: &str,
    version: &str,
    root: &str,
) -> String {
    let lines: Vec<&str> = menu.lines().collect();
    let starts = entries(&lines);
    let default: usize = lines
        .iter()
        .find_map(|l| {
            let t = l.trim_start();
            t.strip_prefix("default")
                .map(|v| v.trim_start_matches([' ', '\t', '=']).trim())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let s = starts[default];
    let e = starts.get(default + 1).copied().unwrap_or(lines.len());
    let mut entry = vec![];
    for l in &lines[s..e] {
        let ind = &l[..l.len() - l.trim_start().len()];
        let t = l.trim_start();
        let word = t
            .split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap();
        let sep_rest = &t[word.len()..];
        let rest = sep_rest.trim_start_matches([' ', '\t', '=']);
        let sep = &sep_rest[..sep_rest.len() - rest.len()];
        let new = match word {
            "title" => format!("{ind}title{sep}Day 2 ({version})"),
            "kernel" => {
                let mut w = rest.split_whitespace();
                let _old = w.next();
                let args: Vec<String> = w
                    .map(|a| {
                        if a.starts_with("root=") {
                            format!("root={root}")
                        } else {
                            a.to_string()
                        }
                    })
                    .collect();
                format!("{ind}kernel{sep}{new_kernel} {}", args.join(" "))
            }
            "initrd" => format!("{ind}initrd{sep}{new_initrd}"),
            _ => l.to_string(),
        };
        if !new.trim().is_empty() {
            entry.push(new);
        }
    }
    let mut out: Vec<String> = vec![];
    for (i, l) in lines.iter().enumerate() {
        if i == starts[0] {
            out.extend(entry.iter().cloned());
        }
        let t = l.trim_start();
        if t.starts_with("default") && i < starts[0] {
            let sep = if t.starts_with("default=") { "=" } else { " " };
            out.push(format!("default{sep}0"));
        } else {
            out.push(l.to_string());
        }
    }
    out.join("\n") + "\n"
}

/// update-grub-legacy-ec2: the AUTOMAGIC list for `versions`, from the options as they now are.
pub fn update_grub_legacy_ec2(
    menu: &str,
    versions: &[&str],
    initrd: impl Fn(&str) -> String,
) -> String {
    let opt = |name: &str| {
        menu.lines()
            .find_map(|l| l.strip_prefix(&format!("# {name}=")))
            .map(str::to_string)
    };
    let kopt = opt("kopt").expect("a kopt line");
    // `default saved` makes savedefault=true, which `# savedefault=` overrides:
    // a `savedefault` line in each normal entry.
    let saved = menu
        .lines()
        .any(|l| l.starts_with("default") && l.contains("saved"));
    let savedefault = opt("savedefault").map_or(saved, |v| v.trim() == "true");
    let groot = opt("groot").unwrap_or_else(|| "(hd0)".into());
    let defoptions = opt("defoptions").unwrap_or_else(|| "console=hvc0".into());
    let alt = opt("altoptions").and_then(|a| {
        let (desc, rest) = a.strip_prefix('(')?.split_once(')')?;
        Some((desc.to_string(), rest.trim().to_string()))
    });
    let end_opts = "## ## End Default Options ##";
    let head_end = menu.find(end_opts).expect("default options") + end_opts.len();
    let tail = menu
        .find("### END DEBIAN AUTOMAGIC KERNELS LIST")
        .expect("automagic end");
    let mut out = menu[..head_end].to_string();
    out.push_str("\n\n");
    for v in versions {
        out.push_str(&format!(
            "title\t\tUbuntu, kernel {v}\nroot\t\t{groot}\nkernel\t\t/boot/vmlinuz-{v} {kopt} {defoptions}\ninitrd\t\t{}\n{}\n",
            initrd(v),
            if savedefault { "savedefault\n" } else { "" }
        ));
        if let Some((desc, opts)) = &alt {
            out.push_str(&format!(
                "title\t\tUbuntu, kernel {v} ({desc})\nroot\t\t{groot}\nkernel\t\t/boot/vmlinuz-{v} {kopt} {opts}\ninitrd\t\t{}\n\n",
                initrd(v)
            ));
        }
    }
    out.push_str(&menu[tail..]);
    out
}

/// grub-mkconfig's 10_linux entry for `version`, from /etc/default/grub.
pub fn grub_mkconfig_10_linux(default_grub: &str, uuid: &str, version: &str) -> String {
    let cmdline = default_value(default_grub, "GRUB_CMDLINE_LINUX");
    let default = default_value(default_grub, "GRUB_CMDLINE_LINUX_DEFAULT");
    format!(
        "### BEGIN /etc/grub.d/00_header ###\nset default=\"0\"\nset timeout=0\n### END /etc/grub.d/00_header ###\n\
         ### BEGIN /etc/grub.d/10_linux ###\n\
         menuentry 'Ubuntu' --class ubuntu --class gnu-linux --class gnu --class os {{\n\
         \tinsmod gzio\n\tinsmod part_msdos\n\tinsmod ext2\n\
         \tsearch --no-floppy --fs-uuid --set=root {uuid}\n\
         \tlinux\t/boot/vmlinuz-{version} root=UUID={uuid} ro {cmdline} {default}\n\
         \tinitrd\t/boot/initrd.img-{version}\n}}\n### END /etc/grub.d/10_linux ###\n"
    )
}

/// grub-mkconfig running bootstrap-vz's 40_custom (the only executable script) for `version`.
pub fn grub_mkconfig_40_custom(custom: &str, default_grub: &str, version: &str) -> String {
    let device = custom
        .lines()
        .find_map(|l| l.strip_prefix("GRUB_DEVICE="))
        .expect("GRUB_DEVICE in 40_custom");
    let root = custom
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("root "))
        .expect("a root line in 40_custom");
    let v = |k| default_value(default_grub, k);
    let hidden = if v("GRUB_HIDDEN_TIMEOUT") == "true" {
        "hiddenmenu\n"
    } else {
        ""
    };
    format!(
        "### BEGIN /etc/grub.d/40_custom ###\ndefault {}\ntimeout {}\n{hidden}title {version}\n\t{root}\n\tkernel /boot/vmlinuz-{version} root={device} ro {} {}\n\tinitrd /boot/initrd.img-{version}\n### END /etc/grub.d/40_custom ###\n",
        v("GRUB_DEFAULT"),
        v("GRUB_TIMEOUT"),
        v("GRUB_CMDLINE_LINUX"),
        v("GRUB_CMDLINE_LINUX_DEFAULT"),
    )
}

/// The initramfs name a distribution's style gives `version`.
/// Where the guest's kernels are as GRUB reads them: `/boot`, or the top of a separate /boot.
pub fn boot_dir(style: &str) -> &'static str {
    match style {
        "centos-6-separate-boot" | "amigen6-lvm" => "",
        _ => "/boot",
    }
}

pub fn initrd_name(style: &str, version: &str) -> String {
    match style {
        "centos-6-separate-boot" | "amigen6-lvm" => format!("/initramfs-{version}.img"),
        s if s.starts_with("amazon") || s == "centos-6" => format!("/boot/initramfs-{version}.img"),
        "suse-11" => format!("/boot/initrd-{version}"),
        _ => format!("/boot/initrd.img-{version}"),
    }
}

/// Upgrade the kernel of the guest on `disk` the way its `style`'s tools do;
/// returns the new kernel's path as GRUB reads it. The boot filesystem is
/// partition 1; `root_offset` is where the root filesystem is when /boot is
/// separate.
pub fn kernel_upgrade(
    disk: &Path,
    style: &str,
    uuid: &str,
    old_kernel: &str,
    old_initrd: &str,
    root_offset: Option<u64>,
) -> String {
    let root = root_offset.map(|o| format!("{}?offset={o}", disk.display()));
    kernel_upgrade_in(
        &target(disk),
        style,
        uuid,
        old_kernel,
        old_initrd,
        root.as_deref(),
    )
}

/// [`kernel_upgrade`] of the guest whose boot filesystem is `t` (`image`
/// or `disk?offset=N`) and root filesystem `root` (when /boot is separate).
pub fn kernel_upgrade_in(
    t: &str,
    style: &str,
    uuid: &str,
    old_kernel: &str,
    old_initrd: &str,
    root: Option<&str>,
) -> String {
    let old_version = old_kernel.rsplit_once("vmlinuz-").unwrap().1;
    let version = format!("{old_version}.day2");
    let boot = boot_dir(style);
    let new_kernel = format!("{boot}/vmlinuz-{version}");
    let new_initrd = initrd_name(style, &version);
    copy(t, old_kernel, &new_kernel);
    copy(t, old_initrd, &new_initrd);
    // The package's module tree: its indexes, where the kernel's drivers are listed.
    let fs = root.unwrap_or(t);
    for index in ["modules.dep", "modules.builtin"] {
        let from = format!("/lib/modules/{old_version}/{index}");
        if cat_at(fs, &from).is_some() {
            if index == "modules.dep" {
                debugfs(fs, &format!("mkdir /lib/modules/{version}\n"));
            }
            copy(fs, &from, &format!("/lib/modules/{version}/{index}"));
        }
    }
    match style {
        "amazon-linux-1"
        | "amazon-linux-1-multi"
        | "centos-6"
        | "suse-11"
        | "centos-6-separate-boot"
        | "amigen6-lvm" => {
            let conf = format!("{boot}/grub/grub.conf");
            let file = if cat_at(t, &conf).is_some() {
                conf
            } else {
                format!("{boot}/grub/menu.lst")
            };
            let file = file.as_str();
            // new-kernel-pkg passes fstab's / to grubby as root=.
            let fstab = cat_at(root.unwrap_or(t), "/etc/fstab").unwrap();
            let root = fstab
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    (f.len() > 1 && f[1] == "/" && !f[0].starts_with('#')).then(|| f[0].to_string())
                })
                .expect("fstab has /");
            let menu = cat_at(t, file).unwrap();
            write(
                t,
                file,
                &grubby_add(&menu, &new_kernel, &new_initrd, &version, &root),
            );
        }
        "ubuntu-grub-legacy-ec2" | "debian-grub-legacy" | "ubuntu-grub2-hybrid" => {
            let menu = cat_at(t, "/boot/grub/menu.lst").unwrap();
            let menu = update_grub_legacy_ec2(&menu, &[&version], |v| initrd_name(style, v));
            write(t, "/boot/grub/menu.lst", &menu);
            if style == "ubuntu-grub2-hybrid" {
                let d = cat_at(t, "/etc/default/grub").unwrap();
                write(
                    t,
                    "/boot/grub/grub.cfg",
                    &grub_mkconfig_10_linux(&d, uuid, &version),
                );
            }
        }
        "debian-bootstrap-vz" => {
            let custom = cat_at(t, "/etc/grub.d/40_custom").unwrap();
            let d = cat_at(t, "/etc/default/grub").unwrap();
            write(
                t,
                "/boot/grub/grub.cfg",
                &grub_mkconfig_40_custom(&custom, &d, &version),
            );
        }
        other => panic!("no day-2 tool for style {other}"),
    }
    remove(t, old_kernel);
    remove(t, old_initrd);
    new_kernel
}

#[test]
fn grubby_copies_the_default_entry_to_the_top() {
    let menu = "default=1\ntimeout=0\ntitle A\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-a root=/dev/x ro console=ttyS0\n\tinitrd /boot/a.img\ntitle B\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-b root=UUID=u ro console=tty0 console=ttyS0,115200\n\tinitrd /boot/b.img\n";
    let out = grubby_add(menu, "/boot/vmlinuz-c", "/boot/c.img", "c", "UUID=u");
    assert_eq!(
        out,
        "default=0\ntimeout=0\ntitle Day 2 (c)\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-c root=UUID=u ro console=tty0 console=ttyS0,115200\n\tinitrd /boot/c.img\ntitle A\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-a root=/dev/x ro console=ttyS0\n\tinitrd /boot/a.img\ntitle B\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-b root=UUID=u ro console=tty0 console=ttyS0,115200\n\tinitrd /boot/b.img\n"
    );
}

#[test]
fn update_grub_legacy_ec2_uses_the_options_lines() {
    let menu = "default 0\n### BEGIN AUTOMAGIC KERNELS LIST\n## ## Start Default Options ##\n# kopt=root=UUID=u ro\n## ## End Default Options ##\n\ntitle old\nroot (hd0)\nkernel /boot/vmlinuz-1\n\n### END DEBIAN AUTOMAGIC KERNELS LIST\n";
    let out = update_grub_legacy_ec2(menu, &["2"], |v| format!("/boot/initrd.img-{v}"));
    // Without groot and defoptions lines the script falls back to (hd0) and console=hvc0.
    assert!(
        out.contains("root\t\t(hd0)\nkernel\t\t/boot/vmlinuz-2 root=UUID=u ro console=hvc0\n"),
        "{out}"
    );
    assert!(!out.contains("title old"));
}
