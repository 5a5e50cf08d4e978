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
use crate::image::menulst::{default_file_of, grub_set_default_text, MenuLst};

mod rewrite;
pub use rewrite::{
    hvm_args, nvme_timeout, resume_args, rewrite_40_custom, rewrite_default_grub,
    rewrite_fstab_root, rewrite_grub2, rewrite_legacy, rewrite_resume_conf, xen_device,
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
    /// A legacy menu's `default saved`: the `default` file beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_default: Option<SavedDefault>,
}

/// GRUB legacy's `default saved`, kept on HVM: the `default` file the
/// guest's grub-set-default writes, read at every boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavedDefault {
    /// The file as the guest sees it (`/boot/grub/default`).
    pub path: String,
    /// The file in the boot filesystem, as GRUB reads it.
    pub grub_path: String,
    /// The entry it selects as the HVM copy is made.
    pub entry: usize,
}

/// The entries a `default` file can select on HVM: GRUB 2 cannot read a
/// number out of a file, so each number's file, as grub-set-default writes
/// it, is compared with the guest's ([`handover`]).
pub const SAVED_ENTRIES: usize = 32;

/// `cfg` with its `default saved`, if its menu says so.
fn with_saved_default(fs: &dyn GuestFiles, mut cfg: BootConfig) -> BootConfig {
    if cfg.kind != ConfigKind::Legacy {
        return cfg;
    }
    let Some(mut menu) = fs.read_text(&cfg.path).map(|t| MenuLst::parse(&t)) else {
        return cfg;
    };
    if menu.saved {
        let path = default_file_of(&cfg.path);
        menu.apply_saved(fs.read_bytes(&path).as_deref());
        cfg.saved_default = Some(SavedDefault {
            grub_path: fs.grub_path(&path),
            path,
            entry: menu.default,
        });
    }
    cfg
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
    /// What the Xen device names of the root disk are in the image (for `resume=` and swap).
    pub devices: DeviceMap,
}

/// The root disk's device names as the PV guest knew them (`/dev/xvda2`,
/// `/dev/sda2`, EL6's `/dev/xvde2`), and what each is in the image: on
/// HVM those names are gone (`nvme0n1p2` on Nitro), so a reference to one
/// must become its UUID, or go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMap {
    /// Partition number to its filesystem's or swap's UUID (`None`: in the
    /// image, but without one amitool can read). A whole-disk ("hd0")
    /// filesystem is partition 1, as EC2 attaches it (`/dev/sda1`).
    pub partitions: BTreeMap<u8, Option<String>>,
}

/// What a device name on the kernel command line or in fstab is on HVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Not a Xen or SCSI name (a UUID, a label, /dev/mapper): it stays.
    Stays,
    /// A partition in the image: `UUID=...`.
    Uuid(String),
    /// A device that is not in the image (another volume, instance store),
    /// or a partition without a UUID: no name for it survives the move.
    Gone,
}

impl DeviceMap {
    pub fn resolve(&self, dev: &str) -> Resolved {
        if !xen_device(dev) {
            return Resolved::Stays;
        }
        let name = dev.trim_start_matches("/dev/");
        let rest = ["xvd", "sd", "hd"]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .unwrap_or(name);
        let letters: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase())
            .collect();
        let number = rest[letters.len()..].parse::<u8>().ok();
        // EC2 attaches the root volume as sda (xvda); EL6 kernels name it xvde.
        match (letters.as_str(), number) {
            ("a" | "e", Some(n)) => match self.partitions.get(&n) {
                Some(Some(uuid)) => Resolved::Uuid(uuid.clone()),
                _ => Resolved::Gone,
            },
            _ => Resolved::Gone,
        }
    }
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
/// symlinks resolved. A legacy menu's `default saved` comes with it.
pub fn choose(fs: &dyn GuestFiles) -> Option<BootConfig> {
    choose_file(fs).map(|c| with_saved_default(fs, c))
}

fn choose_file(fs: &dyn GuestFiles) -> Option<BootConfig> {
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
                    saved_default: None,
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
                saved_default: None,
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
        saved_default: None,
    })
}

/// The configuration embedded in core.img: the serial console, the boot
/// filesystem found by UUID, and the guest's own file read from there. For
/// a legacy menu's `default saved`, the entry its `default` file selects
/// (GRUB 2's translation of `default saved` reads `$saved_entry`): GRUB 2
/// cannot read a number out of a file, so the file is compared with each
/// number's file as grub-set-default writes it (in the memdisk, see
/// [`memdisk_files`]), the entry it held when the copy was made first; a
/// file that matches none (missing, or not as grub-set-default writes it)
/// leaves entry 0, as on PV-GRUB. Those comparisons print before the serial
/// console is on.
pub fn handover(boot_uuid: &str, cfg: &BootConfig) -> String {
    let load = match cfg.kind {
        ConfigKind::Legacy => "legacy_configfile",
        ConfigKind::Grub2 => "configfile",
    };
    let saved = cfg
        .saved_default
        .as_ref()
        .map(|s| {
            let dir = s.grub_path.rsplit_once('/').map_or("", |(d, _)| d);
            let order: Vec<String> = std::iter::once(s.entry)
                .chain((0..SAVED_ENTRIES).filter(|n| *n != s.entry))
                .filter(|n| *n < SAVED_ENTRIES)
                .map(|n| n.to_string())
                .collect();
            format!(
                "# GRUB legacy's `default saved`: the entry grub-set-default wrote into {file}.\n\
                 if [ -f {file} ]; then\n\
                 \tfor n in {order}; do\n\
                 \t\tif hashsum --hash sha256 --check (memdisk)/boot/grub/legacy-default/$n --prefix {dir}; then\n\
                 \t\t\tset saved_entry=$n\n\
                 \t\t\tbreak\n\
                 \t\tfi\n\
                 \tdone\n\
                 fi\n\
                 export saved_entry\n",
                file = s.grub_path,
                order = order.join(" "),
            )
        })
        .unwrap_or_default();
    let said = cfg
        .saved_default
        .as_ref()
        .map(|s| {
            format!(
                "echo \"amitool: {} selects entry $saved_entry\"\n",
                s.grub_path
            )
        })
        .unwrap_or_default();
    format!(
        "# Written by amitool: find the guest's boot filesystem, then read the file the guest maintains.\n\
         search --no-floppy --fs-uuid --set=root {boot_uuid}\n\
         export root\n\
         {saved}\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         {said}\
         {load} {path}\n\
         echo \"amitool: {path} on {boot_uuid} could not be read or booted nothing\"\n",
        path = cfg.grub_path
    )
}

/// The memdisk's files beside the embedded configuration: an empty
/// environment block for the `load_env` of GRUB 2's `default saved`
/// translation (so that it reads nothing over `$saved_entry` and prints no
/// error), and for each entry number the sha256 list that `hashsum --check`
/// matches a grub-set-default file against. The same for every guest.
pub fn memdisk_files() -> Vec<(String, Vec<u8>)> {
    use sha2::{Digest, Sha256};
    let head = b"# GRUB Environment Block\n";
    let mut env = head.to_vec();
    env.resize(1024, b'#');
    let mut out = vec![("boot/grub/grubenv".to_string(), env)];
    for n in 0..SAVED_ENTRIES {
        let digest = Sha256::digest(grub_set_default_text(n).as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        out.push((
            format!("boot/grub/legacy-default/{n}"),
            format!("{hex}  default\n").into_bytes(),
        ));
    }
    out
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
    let mut config = choose(fs)?;
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
        ("/etc/initramfs-tools/conf.d/resume", rewrite_resume_conf),
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
    if let Some(saved) = config.saved_default.as_mut() {
        edits.extend(saved_default_edit(fs, saved, ctx.hvm_default));
    }
    Some(BootPlan { config, edits })
}

/// The `default` file of a `default saved` menu as grub-set-default writes
/// it, when it is not already: GRUB 2 matches only that form (stage2's
/// `savedefault` leaves `N\0\n...`, grub-reboot `P:N`, and neither runs on
/// HVM), and with the entry the HVM copy boots when that is not PV-GRUB's
/// (a PV-only default kernel).
fn saved_default_edit(
    fs: &dyn GuestFiles,
    saved: &mut SavedDefault,
    hvm_default: Option<usize>,
) -> Option<Edit> {
    let entry = hvm_default.unwrap_or(saved.entry);
    saved.entry = entry;
    let content = grub_set_default_text(entry);
    let old = fs.read_bytes(&saved.path);
    match &old {
        Some(b) if b == content.as_bytes() => return None,
        None if entry == 0 => return None,
        _ => {}
    }
    let first = old
        .as_deref()
        .map(|b| {
            let line = b.split(|c| *c == b'\n').next().unwrap_or_default();
            line.escape_ascii().to_string()
        })
        .unwrap_or_default();
    let (mode, uid, gid) = fs.owner(&saved.path).unwrap_or((0o644, 0, 0));
    Some(Edit {
        path: saved.path.clone(),
        changes: vec![Change {
            file: saved.path.clone(),
            line: 1,
            before: first,
            after: entry.to_string(),
        }],
        content,
        mode,
        uid,
        gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handover_reads_a_saved_default_before_the_menu() {
        let cfg = BootConfig {
            path: "/boot/grub/menu.lst".into(),
            grub_path: "/boot/grub/menu.lst".into(),
            kind: ConfigKind::Legacy,
            rule: "r".into(),
            saved_default: Some(SavedDefault {
                path: "/boot/grub/default".into(),
                grub_path: "/boot/grub/default".into(),
                entry: 3,
            }),
        };
        let h = handover("u-1", &cfg);
        assert!(h.contains("\tfor n in 3 0 1 2 4 5 "), "{h}");
        assert!(
            h.contains("--check (memdisk)/boot/grub/legacy-default/$n --prefix /boot/grub;"),
            "{h}"
        );
        let (at_saved, at_menu) = (
            h.find("export saved_entry").unwrap(),
            h.find("legacy_configfile").unwrap(),
        );
        assert!(
            at_saved < at_menu && h.find("search ").unwrap() < at_saved,
            "{h}"
        );
        assert_eq!(
            handover_target(&h),
            Some((ConfigKind::Legacy, "/boot/grub/menu.lst".into()))
        );
        let files = memdisk_files();
        assert_eq!(files.len(), 1 + SAVED_ENTRIES);
        assert_eq!(files[0].1.len(), 1024);
        let three = &files.iter().find(|(p, _)| p.ends_with("/3")).unwrap().1;
        assert!(
            three.ends_with(b"  default\n") && three.len() == 64 + 10,
            "{three:?}"
        );
    }

    #[test]
    fn handover_names_the_file() {
        let cfg = BootConfig {
            path: "/boot/grub/grub.conf".into(),
            grub_path: "/boot/grub/grub.conf".into(),
            kind: ConfigKind::Legacy,
            rule: "r".into(),
            saved_default: None,
        };
        let h = handover("u-1", &cfg);
        assert!(h.contains("search --no-floppy --fs-uuid --set=root u-1\n"));
        assert_eq!(
            handover_target(&h),
            Some((ConfigKind::Legacy, "/boot/grub/grub.conf".into()))
        );
    }
}
