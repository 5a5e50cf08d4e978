//! The preflight: what a PV disk holds and what its HVM future needs. It reads
//! the disk the way PV-GRUB does (hd0: the whole disk is the filesystem;
//! hd00: its first partition) and never writes.

use std::path::Path;

use serde::Serialize;

use crate::image::bootcfg::{self, BootPlan, Change};
use crate::image::fs::{FsError, FsType, GuestFs};
use crate::image::menulst::{self, MenuLst};
use crate::kernels::Flavor;

/// The tag amitool puts on every image it registers: the drivers its default
/// kernel has at boot, space-separated (`xen-blkfront nvme ena`).
pub const DRIVERS_TAG: &str = "amitool:boot-drivers";

impl Drivers {
    pub fn to_tag(&self) -> String {
        let mut v = vec![];
        if self.xen_blkfront {
            v.push("xen-blkfront");
        }
        if self.nvme {
            v.push("nvme");
        }
        if self.ena {
            v.push("ena");
        }
        if v.is_empty() {
            "none".into()
        } else {
            v.join(" ")
        }
    }

    pub fn from_tag(tag: &str) -> Self {
        let has = |m: &str| tag.split_whitespace().any(|w| w == m);
        Drivers {
            xen_blkfront: has("xen-blkfront"),
            nvme: has("nvme"),
            ena: has("ena"),
        }
    }
}

/// Drivers an HVM guest needs, by where it runs.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Drivers {
    /// Xen HVM's disk driver (t2, m4, ...).
    pub xen_blkfront: bool,
    /// The Elastic Network Adapter (Nitro).
    pub ena: bool,
    /// EBS over NVMe (Nitro).
    pub nvme: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub layout: Flavor,
    pub fs_offset: u64,
    pub fs_size: u64,
    pub fs_type: FsType,
    pub label: Option<String>,
    pub uuid: String,
    pub menu_lst: Option<String>,
    #[serde(skip)]
    pub menu: Option<MenuLst>,
    /// The file GRUB will read at every boot of the HVM copy, by which rule
    /// (`boot.config`), and the edits the copy gets for HVM.
    pub boot: Option<BootPlan>,
    /// Each line the HVM copy's boot configuration changes.
    pub boot_changes: Vec<Change>,
    pub default_title: Option<String>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub kernel_version: Option<String>,
    /// Every kernel in /boot, with the drivers its modules include.
    pub kernels: Vec<KernelFacts>,
    pub drivers: Drivers,
    /// Facts that stop a boot (PV-GRUB would fail, or the HVM disk would).
    pub problems: Vec<String>,
    /// Facts that stop the HVM copy from booting (a PV-only kernel with no other to boot).
    pub hvm_problems: Vec<String>,
    /// The kernel the HVM copy boots by default, when it is not the PV default.
    pub hvm_kernel: Option<String>,
    /// Where the HVM copy's default kernel boots.
    pub boots_on: Option<BootsOn>,
    /// Facts worth a change in the guest (`--fix-guest`), which do not stop a boot.
    pub findings: Vec<String>,
}

impl Inspection {
    pub fn boots(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Where a kernel can boot as HVM, judged from what its initramfs holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootsOn {
    /// nvme can mount the root (initramfs or built in) and ENA is there.
    Nitro,
    /// xen-blkfront can mount the root; Nitro types cannot.
    XenHvmOnly,
    /// Neither driver can mount the root at boot, or the kernel is PV-only.
    Neither,
}

impl BootsOn {
    pub fn as_str(self) -> &'static str {
        match self {
            BootsOn::Nitro => "boots on Nitro",
            BootsOn::XenHvmOnly => "boots on Xen HVM only",
            BootsOn::Neither => "boots on neither Nitro nor Xen HVM",
        }
    }
}

/// One kernel found in /boot.
#[derive(Debug, Clone, Serialize)]
pub struct KernelFacts {
    pub path: String,
    pub version: String,
    /// What the kernel has where it matters at boot: xen-blkfront and nvme
    /// in its initramfs or built in, ena installed or built in.
    pub drivers: Drivers,
    /// The drivers installed in /lib/modules/VERSION.
    pub modules: Drivers,
    /// The initramfs read, and the error when it could not be read.
    pub initramfs: Option<String>,
    pub initramfs_error: Option<String>,
    /// A xenlinux kernel (SUSE -xen, Ubuntu 10.04 -ec2): it runs only as a PV guest.
    pub pv_only: bool,
    pub boots_on: BootsOn,
    /// How to make it boot on Nitro, when it does not.
    pub fix: Option<String>,
}

/// Whether `/boot/config-VERSION` (or, without one, the name) says xenlinux.
fn pv_only(fs: &GuestFs, version: &str) -> bool {
    match fs.read_text(&format!("/boot/config-{version}")) {
        Some(cfg) => cfg.lines().any(|l| {
            l == "CONFIG_X86_64_XEN=y"
                || l == "CONFIG_X86_XEN=y"
                || l == "CONFIG_XEN_COMPAT_030002_AND_LATER=y"
        }),
        None => version.ends_with("-xen") || version.ends_with("-ec2"),
    }
}

/// The initramfs of `version`: the one a menu entry loads with it, else by the distributions' names.
fn initramfs_of(fs: &GuestFs, version: &str, menu_initrd: Option<&str>) -> Option<String> {
    menu_initrd
        .map(String::from)
        .into_iter()
        .chain([
            format!("/boot/initramfs-{version}.img"),
            format!("/boot/initrd.img-{version}"),
            format!("/boot/initrd-{version}"),
            format!("/boot/initrd-{version}.img"),
        ])
        .find(|p| fs.is_file(p))
}

fn kernel_facts(fs: &GuestFs, path: &str, version: &str, menu_initrd: Option<&str>) -> KernelFacts {
    let modules = drivers(fs, version);
    let config = fs
        .read_text(&format!("/boot/config-{version}"))
        .unwrap_or_default();
    let builtin_text = fs
        .read_text(&format!("/lib/modules/{version}/modules.builtin"))
        .unwrap_or_default();
    let builtin = |module: &str, option: &str| {
        config.lines().any(|l| l == format!("{option}=y"))
            || builtin_text
                .lines()
                .any(|l| l.ends_with(&format!("/{module}.ko")))
    };
    let initramfs = initramfs_of(fs, version, menu_initrd);
    let (names, initramfs_error) = match &initramfs {
        None => (vec![], Some("no initramfs for this kernel".to_string())),
        Some(p) => match fs.read_bytes(p).map(|b| crate::image::initramfs::list(&b)) {
            Some(Ok(n)) => (n, None),
            Some(Err(e)) => (vec![], Some(format!("{p}: {e}"))),
            None => (vec![], Some(format!("{p} cannot be read"))),
        },
    };
    let inside = |m: &str| crate::image::initramfs::has_module(&names, m);
    let drivers = Drivers {
        xen_blkfront: inside("xen-blkfront")
            || builtin("xen-blkfront", "CONFIG_XEN_BLKDEV_FRONTEND"),
        nvme: inside("nvme") || builtin("nvme", "CONFIG_BLK_DEV_NVME"),
        ena: modules.ena || builtin("ena", "CONFIG_ENA_ETHERNET"),
    };
    let pv_only = pv_only(fs, version);
    let boots_on = if pv_only {
        BootsOn::Neither
    } else if drivers.nvme && drivers.ena {
        BootsOn::Nitro
    } else if drivers.xen_blkfront {
        BootsOn::XenHvmOnly
    } else {
        BootsOn::Neither
    };
    let fix = if pv_only {
        Some(format!("{version} is a xenlinux (PV-only) kernel: install the distribution's default (pvops) kernel"))
    } else if !drivers.nvme && modules.nvme {
        let img = initramfs
            .clone()
            .unwrap_or_else(|| format!("/boot/initramfs-{version}.img"));
        Some(format!(
            "put nvme into the initramfs: dracut -f --add-drivers nvme {img} {version} (Amazon Linux, RHEL, CentOS), or add nvme to /etc/initramfs-tools/modules and run update-initramfs -u -k {version} (Debian, Ubuntu)"
        ))
    } else if !drivers.nvme {
        Some(format!(
            "{version} has no nvme driver: install a kernel that has one"
        ))
    } else if !drivers.ena {
        Some(format!("{version} has no ena driver: install the ena module (or a kernel with it) for Nitro networking"))
    } else {
        None
    };
    KernelFacts {
        path: path.to_string(),
        version: version.to_string(),
        drivers,
        modules,
        initramfs,
        initramfs_error,
        pv_only,
        boots_on,
        fix,
    }
}

fn all_kernels(fs: &GuestFs, menu: Option<&MenuLst>) -> Vec<KernelFacts> {
    fs.list("/boot")
        .into_iter()
        .map(|n| format!("/boot/{n}"))
        .filter(|p| fs.is_file(p))
        .filter_map(|path| {
            let version = version_of(&path)?;
            let initrd = menu.and_then(|m| {
                m.entries
                    .iter()
                    .find(|e| e.kernel.as_deref() == Some(path.as_str()))
                    .and_then(|e| e.initrd.clone())
            });
            Some(kernel_facts(fs, &path, &version, initrd.as_deref()))
        })
        .collect()
}

/// Where the filesystem is, as PV-GRUB of `flavor` would look (either, when `None`).
pub fn locate(path: &Path, flavor: Option<Flavor>) -> Result<(Flavor, u64), FsError> {
    let whole = || crate::image::fs::read_superblock(path, 0).map(|_| (Flavor::Hd0, 0));
    let part = || -> Result<(Flavor, u64), FsError> {
        let not_ext = FsError::NotExt {
            path: path.into(),
            offset: 0,
        };
        let mut f = std::fs::File::open(path).map_err(|source| FsError::Open {
            path: path.into(),
            source,
        })?;
        let mbr = mbrman::MBR::read_from(&mut f, 512).map_err(|_| not_ext)?;
        let p = mbr
            .iter()
            .find(|(_, p)| p.is_used())
            .map(|(_, p)| p.starting_lba as u64 * 512);
        let offset = p.ok_or(FsError::NotExt {
            path: path.into(),
            offset: 0,
        })?;
        crate::image::fs::read_superblock(path, offset).map(|_| (Flavor::Hd00, offset))
    };
    match flavor {
        Some(Flavor::Hd0) => whole(),
        Some(Flavor::Hd00) => part(),
        None => whole().or_else(|_| part()),
    }
}

/// The version in a kernel's file name: `/boot/vmlinuz-6.1.0-56-amd64` → `6.1.0-56-amd64`.
pub fn version_of(kernel: &str) -> Option<String> {
    let name = kernel.rsplit('/').next()?;
    name.strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("vmlinux-"))
        .map(String::from)
}

fn drivers(fs: &GuestFs, version: &str) -> Drivers {
    let dir = format!("/lib/modules/{version}");
    // modules.order lists every module the kernel build made, installed or not.
    let text = ["modules.builtin", "modules.dep"]
        .iter()
        .filter_map(|f| fs.read_text(&format!("{dir}/{f}")))
        .collect::<Vec<_>>()
        .join("\n");
    let has = |m: &str| {
        text.lines().any(|l| {
            let path = l.split(':').next().unwrap_or_default();
            path.ends_with(&format!("/{m}.ko"))
                || path.ends_with(&format!("/{m}.ko.xz"))
                || path.ends_with(&format!("/{m}.ko.gz"))
                || path.ends_with(&format!("/{m}.ko.zst"))
        })
    };
    Drivers {
        xen_blkfront: has("xen-blkfront"),
        ena: has("ena"),
        nvme: has("nvme"),
    }
}

fn fstab_findings(fs: &GuestFs, uuid: &str) -> Vec<String> {
    let Some(text) = fs.read_text("/etc/fstab") else {
        return vec!["no /etc/fstab".into()];
    };
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let mut w = line.split_whitespace();
        let (Some(dev), Some(mp)) = (w.next(), w.next()) else {
            continue;
        };
        if dev.starts_with('#') {
            continue;
        }
        let xen_name = ["/dev/sd", "/dev/xvd", "/dev/hd"]
            .iter()
            .any(|p| dev.starts_with(p));
        if !xen_name {
            continue;
        }
        if mp == "/" {
            out.push(format!(
                "fstab line {}: / is mounted from {dev}, a name that changes on HVM (xvda1 on Xen, nvme0n1p1 on Nitro): the HVM copy mounts it by UUID={uuid}",
                n + 1
            ));
        } else {
            out.push(format!(
                "fstab line {}: {mp} is mounted from {dev}, a device name that changes on HVM; use nofail or a UUID",
                n + 1
            ));
        }
    }
    out
}

fn console_findings(fs: &GuestFs) -> Vec<String> {
    let mut out = vec![];
    let inittab = fs.read_text("/etc/inittab").unwrap_or_default();
    let hvc_inittab = inittab
        .lines()
        .any(|l| !l.trim_start().starts_with('#') && l.contains("hvc0"));
    let upstart = fs.exists("/etc/init/hvc0.conf");
    let systemd = fs.exists("/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service");
    if hvc_inittab || upstart || systemd {
        let serial = inittab.contains("ttyS0")
            || fs.exists("/etc/init/ttyS0.conf")
            || fs.exists("/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service");
        if !serial {
            out.push("a login getty runs on hvc0 only: on HVM the serial console is ttyS0".into());
        }
    }
    out
}

/// Read the PV disk at `path` as PV-GRUB of `flavor` would (either, when `None`).
pub fn inspect(path: &Path, flavor: Option<Flavor>) -> Result<Inspection, FsError> {
    let (layout, fs_offset) = locate(path, flavor)?;
    let fs = GuestFs::open(path, fs_offset)?;
    let uuid = fs.uuid();
    let mut problems = vec![];
    let found = menulst::SEARCH_ORDER
        .iter()
        .find(|p| fs.is_file(p))
        .map(|p| p.to_string());
    let menu = found
        .as_ref()
        .and_then(|p| fs.read_text(p))
        .map(|t| MenuLst::parse(&t));
    let entry = menu.as_ref().and_then(|m| m.default_entry()).cloned();
    match (&found, &menu, &entry) {
        (None, _, _) => problems.push(format!(
            "no boot menu: PV-GRUB looks for {} and none is there",
            menulst::SEARCH_ORDER.join(", ")
        )),
        (Some(p), Some(m), None) => problems.push(format!(
            "{p}: the default entry {} does not exist ({} entries)",
            m.default,
            m.entries.len()
        )),
        _ => {}
    }
    if let Some(e) = &entry {
        match &e.kernel {
            None => problems.push(format!("menu entry {:?} names no kernel", e.title)),
            Some(k) if !fs.is_file(k) => problems.push(format!(
                "the default entry {:?} boots {k}, which is not in the filesystem",
                e.title
            )),
            _ => {}
        }
        if let Some(i) = e.initrd.as_ref().filter(|i| !fs.is_file(i)) {
            problems.push(format!(
                "the default entry {:?} loads initrd {i}, which is not in the filesystem",
                e.title
            ));
        }
    }
    let kernel_version = entry
        .as_ref()
        .and_then(|e| e.kernel.as_deref())
        .and_then(version_of);
    let kernels = all_kernels(&fs, menu.as_ref());
    let facts_of = |k: &str| kernels.iter().find(|f| f.path == k);
    // The HVM copy boots the PV default unless it is PV-only; then the first
    // entry whose kernel is there and can boot HVM.
    let mut hvm_problems = vec![];
    let mut hvm_default = None;
    let mut hvm_kernel = None;
    let default_facts = entry
        .as_ref()
        .and_then(|e| e.kernel.as_deref())
        .and_then(facts_of);
    if let (Some(m), Some(f)) = (&menu, default_facts) {
        if f.pv_only {
            let alt = m.entries.iter().position(|e| {
                e.kernel
                    .as_deref()
                    .and_then(facts_of)
                    .is_some_and(|k| !k.pv_only)
            });
            match alt {
                Some(i) => {
                    hvm_default = Some(i);
                    hvm_kernel = m.entries[i].kernel.clone();
                }
                None => hvm_problems.push(format!(
                    "the default kernel {} is a xenlinux (PV-only) kernel, which cannot boot on HVM, and no other installed kernel in the menu can: install the distribution's default kernel first",
                    f.path
                )),
            }
        }
    }
    let hvm_facts = hvm_kernel.as_deref().and_then(facts_of).or(default_facts);
    let hvm_version = hvm_facts
        .map(|f| f.version.clone())
        .or(kernel_version.clone());
    let drivers = hvm_facts.map(|f| f.drivers.clone()).unwrap_or_default();
    let boot = bootcfg::plan(
        &fs,
        &bootcfg::Context {
            root_uuid: uuid.clone(),
            grub_root: "(hd0,0)".into(),
            default_version: hvm_version.clone(),
            hvm_default,
        },
    );
    let mut findings = fstab_findings(&fs, &uuid);
    findings.extend(console_findings(&fs));
    if let Some(e) = &entry {
        if let Some(c) = e
            .args
            .iter()
            .find(|a| *a == "console=hvc0" || *a == "console=xvc0")
        {
            findings.push(format!(
                "the kernel writes to the Xen console ({c}); the HVM copy's entries use console=tty0 console=ttyS0,115200 instead"
            ));
        }
    }
    if let Some(k) = &hvm_kernel {
        findings.push(format!(
            "the default kernel is PV-only (xenlinux): the HVM copy boots {k} by default instead"
        ));
    }
    if let Some(f) = hvm_facts {
        if let Some(e) = &f.initramfs_error {
            findings.push(format!(
                "the initramfs of {} could not be read ({e}): its drivers at boot are unknown",
                f.version
            ));
        }
        findings.push(format!("{}: {}", f.version, f.boots_on.as_str()));
    }
    if hvm_version.is_some() && !drivers.xen_blkfront {
        findings.push("no xen-blkfront in the default kernel's initramfs (nor built in): it cannot mount its root on Xen HVM types (t2, m4)".into());
    }
    if hvm_version.is_some() && !drivers.nvme {
        findings.push(format!(
            "no nvme in the default kernel's initramfs (nor built in): it cannot mount an NVMe root on Nitro types (t3, m5 and newer){}",
            hvm_facts.and_then(|f| f.fix.as_deref()).map(|f| format!("; {f}")).unwrap_or_default()
        ));
    }
    if hvm_version.is_some() && !drivers.ena {
        findings.push(
            "no ena driver for the default kernel: the image will not be marked EnaSupport".into(),
        );
    }
    Ok(Inspection {
        layout,
        fs_offset,
        fs_size: fs.superblock.size,
        fs_type: fs.superblock.fs_type,
        label: fs.label(),
        uuid,
        menu_lst: found,
        default_title: entry.as_ref().map(|e| e.title.clone()),
        kernel: entry.as_ref().and_then(|e| e.kernel.clone()),
        initrd: entry.as_ref().and_then(|e| e.initrd.clone()),
        menu,
        boot_changes: boot.as_ref().map(|b| b.changes()).unwrap_or_default(),
        boot,
        boots_on: hvm_facts.map(|f| f.boots_on),
        kernels,
        kernel_version,
        drivers,
        problems,
        hvm_problems,
        hvm_kernel,
        findings,
    })
}
