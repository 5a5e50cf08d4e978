//! The guest's own boot configuration, kept in charge on HVM.
//!
//! GRUB's embedded configuration ([`handover`]) only finds the guest's boot
//! filesystem by UUID and hands over to the file the guest maintains: its
//! menu.lst/grub.conf through GRUB 2's `legacy_configfile`, or its GRUB 2
//! grub.cfg through `configfile`. That file, and the inputs the guest's own
//! tools copy from when they write the next kernel's entry (grubby's
//! `--copy-default`, update-grub-legacy-ec2's `# kopt=`/`# groot=`/
//! `# defoptions=`, grub-mkconfig's /etc/default/grub and bootstrap-vz's
//! /etc/grub.d/40_custom, new-kernel-pkg's root from /etc/fstab), are
//! rewritten for HVM in the copy ([`plan`]): the partition instead of the
//! whole disk, a serial console, a device-independent root and AWS's NVMe
//! timeout. The source is never written.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::image::fs::GuestFiles;

mod rewrite;
pub use rewrite::{
    hvm_args, nvme_timeout, rewrite_40_custom, rewrite_default_grub, rewrite_fstab_root,
    rewrite_grub2, rewrite_legacy, xen_device,
};

/// Where PV-GRUB looks for its menu, in order.
pub use crate::image::menulst::SEARCH_ORDER;

/// The console an HVM guest writes to: the VGA console and the first serial port, last wins.
pub const HVM_CONSOLE: [&str; 2] = ["console=tty0", "console=ttyS0,115200"];

/// Which syntax the hand-over file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigKind {
    /// GRUB legacy's menu.lst syntax, read by GRUB 2's `legacy_configfile`.
    Legacy,
    /// GRUB 2's own syntax, read by `configfile`.
    Grub2,
}

/// The file GRUB reads at every boot, and why that one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootConfig {
    /// Its path in the guest, symlinks resolved.
    pub path: String,
    /// Its path in the boot filesystem GRUB finds by UUID (without `/boot`
    /// when /boot is a partition of its own).
    pub grub_path: String,
    pub kind: ConfigKind,
    pub rule: String,
}

/// One changed line of one file of the HVM copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Change {
    pub file: String,
    pub line: usize,
    pub before: String,
    pub after: String,
}

/// A file of the HVM copy rewritten whole (its mode and owner kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edit {
    pub path: String,
    pub content: String,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub changes: Vec<Change>,
}

/// What the guest's files say, for the rewrite.
#[derive(Debug, Clone)]
pub struct Context {
    /// The root filesystem's UUID, for `root=UUID=`.
    /// `None` when the root filesystem could not be read: `root=` is left as it is.
    pub root_uuid: Option<String>,
    /// A separate /boot filesystem's UUID, for its fstab line.
    pub boot_uuid: Option<String>,
    /// GRUB legacy's name for the boot partition on the HVM disk: `(hd0,0)`.
    pub grub_root: String,
    /// The version of the kernel the guest boots by default, for the NVMe timeout of future entries.
    pub default_version: Option<String>,
    /// The entry the HVM copy boots, when not the PV default (a PV-only default kernel).
    pub hvm_default: Option<usize>,
}

/// Whether `text` is GRUB 2 syntax: some images put legacy syntax in grub.cfg (bootstrap-vz).
pub fn is_grub2(text: &str) -> bool {
    let mut legacy = false;
    for l in text.lines().map(str::trim_start) {
        let word = l
            .split(|c: char| c.is_whitespace() || c == '=')
            .next()
            .unwrap_or("");
        match word {
            "menuentry" | "submenu" | "linux" | "linux16" | "set" | "insmod" | "search" => {
                return true
            }
            "title" | "kernel" => legacy = true,
            _ => {}
        }
    }
    !legacy && text.contains("menuentry")
}

/// Which file the guest maintains, by these rules in order: a GRUB 2
/// grub.cfg (in GRUB 2 syntax) where the guest has grub-mkconfig; grub.conf
/// where the guest has grubby (it writes grub.conf, and a hard-linked or
/// copied menu.lst keeps the old text); else the first menu PV-GRUB finds,
/// symlinks resolved.
pub fn choose(fs: &dyn GuestFiles) -> Option<BootConfig> {
    let grub_cfg = "/boot/grub/grub.cfg";
    let has_mkconfig = TOOLS[..3].iter().any(|p| fs.exists(p));
    if has_mkconfig {
        if let Some(real) = fs.canonical(grub_cfg) {
            if fs.read_text(&real).is_some_and(|t| is_grub2(&t)) {
                return Some(BootConfig {
                    grub_path: fs.grub_path(&real),
                    path: real,
                    kind: ConfigKind::Grub2,
                    rule: "grub.cfg is GRUB 2 syntax and the guest has grub-mkconfig, which maintains it".into(),
                });
            }
        }
    }
    let grubby = TOOLS[3..].iter().any(|p| fs.exists(p));
    if grubby && fs.is_file("/boot/grub/grub.conf") {
        if let Some(real) = fs.canonical("/boot/grub/grub.conf") {
            return Some(BootConfig {
                grub_path: fs.grub_path(&real),
                path: real,
                kind: ConfigKind::Legacy,
                rule: "the guest has grubby (new-kernel-pkg), which writes /boot/grub/grub.conf"
                    .into(),
            });
        }
    }
    let found = SEARCH_ORDER
        .iter()
        .map(|p| fs.guest_path(p))
        .find(|p| fs.is_file(p))?;
    let real = fs.canonical(&found)?;
    let via = if real == found {
        String::new()
    } else {
        format!(" (a link to {real})")
    };
    let kind = if fs.read_text(&real).is_some_and(|t| is_grub2(&t)) {
        ConfigKind::Grub2
    } else {
        ConfigKind::Legacy
    };
    Some(BootConfig {
        grub_path: fs.grub_path(&real),
        path: real,
        kind,
        rule: format!(
            "{found}{via} is the first menu PV-GRUB reads ({})",
            SEARCH_ORDER.join(", ")
        ),
    })
}

/// The configuration embedded in core.img: the serial console, the boot
/// filesystem found by UUID, and the guest's own file read from there.
pub fn handover(boot_uuid: &str, cfg: &BootConfig) -> String {
    let load = match cfg.kind {
        ConfigKind::Legacy => "legacy_configfile",
        ConfigKind::Grub2 => "configfile",
    };
    format!(
        "# Written by amitool: find the guest's boot filesystem, then read the file the guest maintains.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         search --no-floppy --fs-uuid --set=root {boot_uuid}\n\
         export root\n\
         {load} {path}\n\
         echo \"amitool: {path} on {boot_uuid} could not be read or booted nothing\"\n",
        path = cfg.grub_path
    )
}

/// The file an embedded configuration hands over to, and its kind.
pub fn handover_target(embedded: &str) -> Option<(ConfigKind, String)> {
    embedded.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        let kind = match w.next()? {
            "legacy_configfile" => ConfigKind::Legacy,
            "configfile" => ConfigKind::Grub2,
            _ => return None,
        };
        Some((kind, w.next()?.to_string()))
    })
}

/// Guest programs whose presence decides which file the guest maintains.
pub const TOOLS: &[&str] = &[
    "/usr/sbin/grub-mkconfig",
    "/usr/sbin/update-grub",
    "/sbin/grub-mkconfig",
    "/sbin/grubby",
    "/usr/sbin/grubby",
    "/sbin/new-kernel-pkg",
];

/// The HVM boot plan of a guest: the file GRUB hands over to, and every edit.
#[derive(Debug, Clone, Serialize)]
pub struct BootPlan {
    pub config: BootConfig,
    #[serde(skip)]
    pub edits: Vec<Edit>,
}

impl BootPlan {
    pub fn changes(&self) -> Vec<Change> {
        self.edits.iter().flat_map(|e| e.changes.clone()).collect()
    }
}

type Rewrite = fn(&str, &str, &Context) -> (String, Vec<Change>);

/// Plan the HVM copy's boot configuration. `None` when the guest has no menu.
pub fn plan(fs: &dyn GuestFiles, ctx: &Context) -> Option<BootPlan> {
    let config = choose(fs)?;
    let mut files: BTreeMap<String, Rewrite> = BTreeMap::new();
    // Every legacy menu the guest has (a hard-linked or copied menu.lst too),
    // so whichever file a tool copies from is right.
    let menus = SEARCH_ORDER.iter().map(|p| fs.guest_path(p));
    for p in menus.chain(["/boot/grub/grub.cfg".to_string()]) {
        if let Some(real) = fs.canonical(&p).filter(|r| fs.is_file(r)) {
            let grub2 = fs.read_text(&real).is_some_and(|t| is_grub2(&t));
            files
                .entry(real)
                .or_insert(if grub2 { rewrite_grub2 } else { rewrite_legacy });
        }
    }
    for (p, f) in [
        ("/etc/default/grub", rewrite_default_grub as Rewrite),
        ("/etc/grub.d/40_custom", rewrite_40_custom),
        ("/etc/fstab", rewrite_fstab_root),
    ] {
        if let Some(real) = fs.canonical(p).filter(|r| fs.is_file(r)) {
            files.entry(real).or_insert(f);
        }
    }
    let mut edits = vec![];
    for (path, rewrite) in files {
        let Some(text) = fs.read_text(&path) else {
            continue;
        };
        let (content, changes) = rewrite(&path, &text, ctx);
        if changes.is_empty() {
            continue;
        }
        let (mode, uid, gid) = fs.owner(&path).unwrap_or((0o644, 0, 0));
        edits.push(Edit {
            path,
            content,
            mode,
            uid,
            gid,
            changes,
        });
    }
    Some(BootPlan { config, edits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handover_names_the_file() {
        let cfg = BootConfig {
            path: "/boot/grub/grub.conf".into(),
            grub_path: "/boot/grub/grub.conf".into(),
            kind: ConfigKind::Legacy,
            rule: "r".into(),
        };
        let h = handover("u-1", &cfg);
        assert!(h.contains("search --no-floppy --fs-uuid --set=root u-1\n"));
        assert_eq!(
            handover_target(&h),
            Some((ConfigKind::Legacy, "/boot/grub/grub.conf".into()))
        );
    }
}
