//! GRUB legacy's menu.lst as PV-GRUB reads it, and the default entry of a
//! GRUB 2 configuration. (On HVM GRUB reads the guest's own file; its
//! rewrite is in `bootcfg`.)

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
    /// Index of the default entry: for `default saved`, what the `default`
    /// file beside the menu says ([`MenuLst::apply_saved`]; 0 until then).
    pub default: usize,
    /// The menu says `default saved`: GRUB legacy (and PV-GRUB) read the
    /// entry from the `default` file grub-set-default and `savedefault` write.
    pub saved: bool,
    /// `fallback N`: the entry GRUB boots when the default does not exist.
    pub fallback: Option<usize>,
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

/// `key value` or `key=value`, as GRUB legacy accepts both (its separators
/// are ASCII: a space, a tab or `=`; other Unicode spaces are part of a word).
fn split_command(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.find(|c: char| c.is_ascii_whitespace() || c == '=') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    }
}

impl MenuLst {
    pub fn parse(text: &str) -> Self {
        let mut m = MenuLst {
            default: 0,
            saved: false,
            fallback: None,
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
                ("default", None) if rest.split_whitespace().next() == Some("saved") => {
                    m.saved = true;
                    m.default = 0;
                }
                ("default", None) => m.default = rest.parse().unwrap_or(0),
                ("fallback", None) => {
                    m.fallback = rest.split_whitespace().next().and_then(|n| n.parse().ok())
                }
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

    /// For `default saved`: the entry the `default` file (`None` when there
    /// is none) selects, as GRUB 0.97 and PV-GRUB read it: a missing or
    /// unreadable file is entry 0, and a number past the last entry is the
    /// `fallback` entry, else 0.
    pub fn apply_saved(&mut self, file: Option<&[u8]>) {
        if !self.saved {
            return;
        }
        let n = file.and_then(saved_number).unwrap_or(0);
        self.default = if n < self.entries.len() {
            n
        } else {
            self.fallback
                .filter(|f| *f < self.entries.len())
                .unwrap_or(0)
        };
    }
}

/// The `default` file GRUB legacy reads for `default saved`: the one beside
/// the menu it read (`/boot/grub/menu.lst` -> `/boot/grub/default`).
pub fn default_file_of(menu: &str) -> String {
    match menu.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/default"),
        None => "default".into(),
    }
}

/// The entry number in a `default` file, read as GRUB 0.97's stage2 reads
/// it (stage2.c, with Debian's and Xen's `savedefault --once` patch): its
/// first 9 bytes, the number after a `:` when there is one (`P:N`, written
/// by grub-reboot), leading decimal digits (or `0x` hex). `None` when there
/// is no number.
pub fn saved_number(file: &[u8]) -> Option<usize> {
    let head = &file[..file.len().min(9)];
    let head = match head.iter().position(|&b| b == 0) {
        Some(nul) => &head[..nul],
        None => head,
    };
    let head = match head.iter().position(|&b| b == b':') {
        Some(colon) => &head[colon + 1..],
        None => head,
    };
    if let Some(hex) = head.strip_prefix(b"0x") {
        let digits: String = hex
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .map(|&b| b as char)
            .collect();
        return usize::from_str_radix(&digits, 16).ok();
    }
    let digits: String = head
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    digits.parse().ok()
}

/// What grub-set-default writes for entry `n`, byte for byte (GRUB 0.97's
/// util/grub-set-default.in, Debian's and grub-legacy-ec2's copies: its
/// here-document keeps the backslash of `\'`): the number, then padding that
/// keeps the file longer than the 10 bytes stage2's `savedefault`
/// overwrites in place.
pub fn grub_set_default_text(n: usize) -> String {
    format!(
        "{n}\n{}# WARNING: If you want to edit this file directly, do not remove any line\n# from this file, including this warning. Using `grub-set-default\\' is\n# strongly recommended.\n",
        "#\n".repeat(10)
    )
}

/// Lines of a menu GRUB cannot read as written, each as "line N: why": a
/// NUL byte (GRUB reads lines as C strings and stops there), or a device
/// name in a `root`, `kernel` or `initrd` line that is opened and never
/// closed (`(hd0,0/boot/vmlinuz`), which GRUB cannot resolve.
pub fn unreadable_lines(text: &str) -> Vec<String> {
    let mut out = vec![];
    for (n, raw) in text.lines().enumerate() {
        if raw.contains('\0') {
            out.push(format!(
                "line {}: a NUL byte, where GRUB stops reading the menu",
                n + 1
            ));
            continue;
        }
        let (cmd, rest) = split_command(raw);
        if !matches!(cmd, "root" | "rootnoverify" | "kernel" | "initrd") {
            continue;
        }
        if let Some(word) = rest
            .split_whitespace()
            .find(|w| w.starts_with('(') && !w.contains(')'))
        {
            let shown: String = word.chars().take(40).collect();
            out.push(format!(
                "line {}: `{cmd} {shown}` opens a device name it never closes",
                n + 1
            ));
        }
    }
    out
}

/// The `linux` and `initrd` paths of a GRUB 2 configuration's default entry,
/// for checking an HVM image's grub.cfg.
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
    fn grub2_default_entry_paths() {
        let cfg = "set default=1\nmenuentry 'a' {\n\tlinux /boot/vmlinuz-a root=UUID=u\n}\nmenuentry 'b' {\n\tlinux\t(hd0,msdos1)/boot/vmlinuz-b ro\n\tinitrd /boot/initrd.img-b\n}\n";
        assert_eq!(
            grub2_default_paths(cfg),
            Some(("/boot/vmlinuz-b".into(), Some("/boot/initrd.img-b".into())))
        );
        assert_eq!(
            grub2_default_paths("set default=3\nmenuentry 'a' {\n}\n"),
            None
        );
    }

    #[test]
    fn lines_grub_cannot_read_are_named() {
        assert!(unreadable_lines(AMAZON).is_empty());
        assert!(unreadable_lines(CENTOS).is_empty());
        assert!(unreadable_lines(UBUNTU).is_empty());
        let bad = "def\0ault 0\ntitle a\n\troot (hd0,0\n\tkernel (hd0,0/boot/vmlinuz ro\n\tinitrd /boot/initrd\n";
        assert_eq!(
            unreadable_lines(bad),
            [
                "line 1: a NUL byte, where GRUB stops reading the menu",
                "line 3: `root (hd0,0` opens a device name it never closes",
                "line 4: `kernel (hd0,0/boot/vmlinuz` opens a device name it never closes",
            ]
        );
    }

    #[test]
    fn default_saved_reads_the_default_file_as_pv_grub_does() {
        let menu = "default saved\nfallback 2\ntitle a\nkernel /a\nsavedefault\ntitle b\nkernel /b\ntitle c\nkernel /c\n";
        let mut m = MenuLst::parse(menu);
        assert!(m.saved);
        assert_eq!(m.fallback, Some(2));
        m.apply_saved(Some(grub_set_default_text(1).as_bytes()));
        assert_eq!(m.default_entry().unwrap().title, "b");
        // stage2's savedefault leaves the number, a NUL and newlines
        m.apply_saved(Some(b"1\0\n\n\n\n\n\n\n\n# WARNING"));
        assert_eq!(m.default, 1);
        // grub-reboot's once: boot the number after the colon
        m.apply_saved(Some(b"0:2"));
        assert_eq!(m.default, 2);
        // no file, no number: entry 0; past the end: the fallback
        m.apply_saved(None);
        assert_eq!(m.default, 0);
        m.apply_saved(Some(b"garbage\n"));
        assert_eq!(m.default, 0);
        m.apply_saved(Some(b"7\n"));
        assert_eq!(m.default, 2);
        assert_eq!(saved_number(b"0x1\n"), Some(1));
        assert_eq!(saved_number(b"1234567890"), Some(123456789));
        assert_eq!(default_file_of("/boot/grub/menu.lst"), "/boot/grub/default");
        // a numbered default is not saved, and the file is not read
        let mut n = MenuLst::parse("default 1\ntitle a\ntitle b\n");
        n.apply_saved(Some(b"0\n"));
        assert_eq!(n.default, 1);
    }

    #[test]
    fn grub_set_default_writes_a_padded_file() {
        let t = grub_set_default_text(3);
        assert!(t.starts_with("3\n#\n#\n"));
        assert!(t.len() > 10);
        assert_eq!(saved_number(t.as_bytes()), Some(3));
        assert_eq!(t.lines().count(), 14);
    }

    #[test]
    fn empty_or_garbage_menu_has_no_default_entry() {
        assert!(MenuLst::parse("").default_entry().is_none());
        assert!(MenuLst::parse("default 3\ntitle a\nkernel /k\n")
            .default_entry()
            .is_none());
    }
}
