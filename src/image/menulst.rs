//! GRUB legacy's menu.lst as PV-GRUB reads it, and its translation into a
//! GRUB 2 configuration for an HVM disk: every entry, the default and the
//! timeout kept; root on `(hd0,msdos1)`; the kernel's `root=` made
//! device-independent; the Xen console replaced by a serial one.

use serde::Serialize;

/// Where PV-GRUB looks for its menu, in order.
pub const SEARCH_ORDER: &[&str] = &[
    "/boot/grub/menu.lst",
    "/grub/menu.lst",
    "/boot/grub/grub.conf",
    "/grub/grub.conf",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub title: String,
    /// `(hd0)`, `(hd0,0)` or none.
    pub root: Option<String>,
    /// The kernel's path within the filesystem.
    pub kernel: Option<String>,
    pub args: Vec<String>,
    pub initrd: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MenuLst {
    /// Index of the default entry (`default saved` reads as 0).
    pub default: usize,
    pub timeout: Option<u32>,
    pub hiddenmenu: bool,
    pub entries: Vec<Entry>,
}

/// Strip a GRUB device prefix: `(hd0,0)/boot/vmlinuz` → `/boot/vmlinuz`.
fn strip_device(path: &str) -> (Option<&str>, &str) {
    if let Some(rest) = path.strip_prefix('(') {
        if let Some(end) = rest.find(')') {
            return (Some(&path[..end + 2]), &rest[end + 1..]);
        }
    }
    (None, path)
}

/// `key value` or `key=value`, as GRUB legacy accepts both.
fn split_command(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.find(|c: char| c.is_whitespace() || c == '=') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    }
}

impl MenuLst {
    pub fn parse(text: &str) -> Self {
        let mut m = MenuLst {
            default: 0,
            timeout: None,
            hiddenmenu: false,
            entries: vec![],
        };
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (cmd, rest) = split_command(line);
            let current = m.entries.last_mut();
            match (cmd, current) {
                ("title", _) => m.entries.push(Entry {
                    title: rest.to_string(),
                    root: None,
                    kernel: None,
                    args: vec![],
                    initrd: None,
                }),
                ("default", None) => m.default = rest.parse().unwrap_or(0),
                ("timeout", None) => m.timeout = rest.parse().ok(),
                ("hiddenmenu", None) => m.hiddenmenu = true,
                ("root" | "rootnoverify", Some(e)) => e.root = Some(rest.to_string()),
                ("kernel", Some(e)) => {
                    let mut words = rest.split_whitespace();
                    // GRUB legacy allows flags such as --no-mem-option before the path.
                    let mut path = words.next();
                    while path.is_some_and(|p| p.starts_with("--")) {
                        path = words.next();
                    }
                    if let Some(p) = path {
                        let (dev, p) = strip_device(p);
                        if e.root.is_none() {
                            e.root = dev.map(String::from);
                        }
                        e.kernel = Some(p.to_string());
                    }
                    e.args = words.map(String::from).collect();
                }
                ("initrd", Some(e)) => {
                    e.initrd = rest
                        .split_whitespace()
                        .next()
                        .map(|p| strip_device(p).1.to_string())
                }
                _ => {}
            }
        }
        m
    }

    /// The entry PV-GRUB boots.
    pub fn default_entry(&self) -> Option<&Entry> {
        self.entries.get(self.default)
    }
}

/// How the translated configuration names the root filesystem.
#[derive(Debug, Clone)]
pub struct RootSpec {
    pub uuid: String,
    pub label: Option<String>,
}

/// The kernel arguments for an HVM boot: a device-independent `root=` and a
/// serial console instead of Xen's.
pub fn hvm_args(args: &[String], root: &RootSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut had_root = false;
    for a in args {
        if let Some(v) = a.strip_prefix("root=") {
            had_root = true;
            if v.starts_with("LABEL=") || v.starts_with("UUID=") || v.starts_with("PARTUUID=") {
                out.push(a.clone());
            } else {
                out.push(format!("root=UUID={}", root.uuid));
            }
        } else {
            // The Xen console goes; a serial console the entry already names
            // is added once, below, with the others.
            let dropped = matches!(a.as_str(), "console=hvc0" | "console=xvc0" | "console=tty0")
                || a.starts_with("xencons=")
                || a.starts_with("console=ttyS");
            if !dropped {
                out.push(a.clone());
            }
        }
    }
    if !had_root {
        out.insert(0, format!("root=UUID={}", root.uuid));
    }
    out.push("console=tty0".into());
    out.push("console=ttyS0,115200n8".into());
    out
}

/// GRUB 2 quoting: single quotes, with `'` written as `'\''`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The GRUB 2 configuration for the HVM disk.
pub fn to_grub2(menu: &MenuLst, root: &RootSpec) -> String {
    let mut cfg = String::new();
    cfg.push_str("# Written by amitool from the guest's menu.lst\n");
    cfg.push_str("serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n");
    cfg.push_str(&format!(
        "set default={}\n",
        menu.default.min(menu.entries.len().saturating_sub(1))
    ));
    cfg.push_str(&format!("set timeout={}\n", menu.timeout.unwrap_or(5)));
    if menu.hiddenmenu {
        cfg.push_str("set timeout_style=hidden\n");
    }
    cfg.push_str("set root=(hd0,msdos1)\n");
    for e in &menu.entries {
        cfg.push_str(&format!("menuentry {} {{\n", quote(&e.title)));
        if let Some(k) = &e.kernel {
            let args: Vec<String> = hvm_args(&e.args, root)
                .iter()
                .map(|a| {
                    if a.contains([' ', '\'', '"', '$', ';']) {
                        quote(a)
                    } else {
                        a.clone()
                    }
                })
                .collect();
            cfg.push_str(&format!("    linux {} {}\n", k, args.join(" ")));
        }
        if let Some(i) = &e.initrd {
            cfg.push_str(&format!("    initrd {i}\n"));
        }
        cfg.push_str("}\n");
    }
    cfg
}

/// The `linux` and `initrd` paths of a GRUB 2 configuration's default entry,
/// for checking an HVM image (our own output, or a guest's grub.cfg).
pub fn grub2_default_paths(cfg: &str) -> Option<(String, Option<String>)> {
    let default: usize = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("set default="))
        .and_then(|v| v.trim_matches(['"', '\'']).parse().ok())
        .unwrap_or(0);
    let mut entries: Vec<(Option<String>, Option<String>)> = vec![];
    for l in cfg.lines().map(str::trim) {
        if l.starts_with("menuentry ") {
            entries.push((None, None));
        } else if let Some(e) = entries.last_mut() {
            let mut words = l.split_whitespace();
            match words.next() {
                Some("linux" | "linux16" | "legacy_kernel") => {
                    e.0 = words.next().map(|p| strip_device(p).1.to_string())
                }
                Some("initrd" | "initrd16" | "legacy_initrd") => {
                    e.1 = words.next().map(|p| strip_device(p).1.to_string())
                }
                _ => {}
            }
        }
    }
    let (k, i) = entries.into_iter().nth(default)?;
    Some((k?, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMAZON: &str = "# created by imagebuilder\ndefault=0\ntimeout=1\nhiddenmenu\n\ntitle Amazon Linux 2013.09 (3.4.62-53.42.amzn1.x86_64)\nroot (hd0)\nkernel /boot/vmlinuz-3.4.62-53.42.amzn1.x86_64 root=LABEL=/ console=hvc0 LANG=en_US.UTF-8 KEYTABLE=us\ninitrd /boot/initramfs-3.4.62-53.42.amzn1.x86_64.img\n";

    const UBUNTU: &str = "default\t\t0\ntimeout\t\t0\nhiddenmenu\n\n## ## End Default Options ##\n# kopt=root=LABEL=cloudimg-rootfs ro console=hvc0\n\ntitle\t\tUbuntu 12.04.4 LTS, kernel 3.2.0-58-virtual\nroot\t\t(hd0)\nkernel\t\t/boot/vmlinuz-3.2.0-58-virtual root=LABEL=cloudimg-rootfs ro console=hvc0\ninitrd\t\t/boot/initrd.img-3.2.0-58-virtual\n\ntitle\t\tUbuntu 12.04.4 LTS, kernel 3.2.0-58-virtual (recovery mode)\nroot\t\t(hd0)\nkernel\t\t/boot/vmlinuz-3.2.0-58-virtual root=LABEL=cloudimg-rootfs ro  single\ninitrd\t\t/boot/initrd.img-3.2.0-58-virtual\n";

    const CENTOS: &str = "default=1\ntimeout=5\ntitle CentOS (2.6.32-431.el6.x86_64)\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-2.6.32-431.el6.x86_64 ro root=/dev/xvde1 console=hvc0\n\tinitrd /boot/initramfs-2.6.32-431.el6.x86_64.img\ntitle Old\n\tkernel (hd0,0)/boot/vmlinuz-old ro root=/dev/sda1\n";

    fn root() -> RootSpec {
        RootSpec {
            uuid: "0a1b2c3d-0000-4000-8000-000000000001".into(),
            label: Some("/".into()),
        }
    }

    #[test]
    fn parses_amazon_linux() {
        let m = MenuLst::parse(AMAZON);
        assert_eq!(m.default, 0);
        assert_eq!(m.timeout, Some(1));
        assert!(m.hiddenmenu);
        let e = m.default_entry().unwrap();
        assert_eq!(e.root.as_deref(), Some("(hd0)"));
        assert_eq!(
            e.kernel.as_deref(),
            Some("/boot/vmlinuz-3.4.62-53.42.amzn1.x86_64")
        );
        assert_eq!(
            e.initrd.as_deref(),
            Some("/boot/initramfs-3.4.62-53.42.amzn1.x86_64.img")
        );
        assert_eq!(e.args[0], "root=LABEL=/");
    }

    #[test]
    fn parses_ubuntu_tabs_and_ignores_kopt_comments() {
        let m = MenuLst::parse(UBUNTU);
        assert_eq!(m.entries.len(), 2);
        assert_eq!(
            m.entries[1].title,
            "Ubuntu 12.04.4 LTS, kernel 3.2.0-58-virtual (recovery mode)"
        );
        assert_eq!(
            m.entries[1].args,
            ["root=LABEL=cloudimg-rootfs", "ro", "single"]
        );
    }

    #[test]
    fn parses_centos_default_and_device_prefix() {
        let m = MenuLst::parse(CENTOS);
        assert_eq!(m.default, 1);
        let e = m.default_entry().unwrap();
        assert_eq!(e.kernel.as_deref(), Some("/boot/vmlinuz-old"));
        assert_eq!(e.root.as_deref(), Some("(hd0,0)"));
    }

    #[test]
    fn args_become_device_independent_with_serial_console() {
        let args: Vec<String> = ["ro", "root=/dev/xvde1", "console=hvc0", "xencons=tty"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            hvm_args(&args, &root()),
            [
                "ro",
                "root=UUID=0a1b2c3d-0000-4000-8000-000000000001",
                "console=tty0",
                "console=ttyS0,115200n8"
            ]
        );
        let args: Vec<String> = ["root=LABEL=/", "console=hvc0"].map(String::from).to_vec();
        assert_eq!(
            hvm_args(&args, &root()),
            ["root=LABEL=/", "console=tty0", "console=ttyS0,115200n8"]
        );
        assert_eq!(
            hvm_args(&[], &root())[0],
            "root=UUID=0a1b2c3d-0000-4000-8000-000000000001"
        );
    }

    #[test]
    fn grub2_keeps_entries_default_and_timeout() {
        let cfg = to_grub2(&MenuLst::parse(UBUNTU), &root());
        assert!(cfg.contains("set default=0\n"));
        assert!(cfg.contains("set timeout=0\n"));
        assert!(cfg.contains("set timeout_style=hidden\n"));
        assert!(cfg.contains("set root=(hd0,msdos1)\n"));
        assert_eq!(cfg.matches("menuentry ").count(), 2);
        assert!(cfg
            .contains("menuentry 'Ubuntu 12.04.4 LTS, kernel 3.2.0-58-virtual (recovery mode)' {"));
        assert!(!cfg.contains("hvc0"));
        assert_eq!(
            grub2_default_paths(&cfg),
            Some((
                "/boot/vmlinuz-3.2.0-58-virtual".into(),
                Some("/boot/initrd.img-3.2.0-58-virtual".into())
            ))
        );
        let cfg = to_grub2(&MenuLst::parse(CENTOS), &root());
        assert_eq!(grub2_default_paths(&cfg).unwrap().0, "/boot/vmlinuz-old");
    }

    #[test]
    fn titles_with_quotes_are_quoted() {
        let m = MenuLst::parse("title it's mine\nkernel /vmlinuz root=/dev/sda1\n");
        assert!(to_grub2(&m, &root()).contains(r"menuentry 'it'\''s mine' {"));
    }

    #[test]
    fn empty_or_garbage_menu_has_no_default_entry() {
        assert!(MenuLst::parse("").default_entry().is_none());
        assert!(MenuLst::parse("default 3\ntitle a\nkernel /k\n")
            .default_entry()
            .is_none());
    }
}
