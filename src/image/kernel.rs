//! What each installed kernel of a guest can do on HVM: the drivers it has
//! at boot (in its initramfs or built in; ena among its modules), whether it
//! is a xenlinux (PV-only) kernel, and where it therefore boots.

use serde::Serialize;

use crate::image::guest::Guest;
use crate::image::menulst::MenuLst;

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
fn pv_only(fs: &Guest, version: &str) -> bool {
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
fn initramfs_of(fs: &Guest, version: &str, menu_initrd: Option<&str>) -> Option<String> {
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

fn kernel_facts(fs: &Guest, path: &str, version: &str, menu_initrd: Option<&str>) -> KernelFacts {
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
    let initramfs = initramfs_of(
        fs,
        version,
        menu_initrd.map(|i| fs.guest_path(i)).as_deref(),
    );
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
    // A 32-bit kernel never runs on Nitro: every Nitro type is 64-bit only.
    let bits32 = config.lines().any(|l| l == "CONFIG_X86_32=y");
    let boots_on = if pv_only {
        BootsOn::Neither
    } else if drivers.nvme && drivers.ena && !bits32 {
        BootsOn::Nitro
    } else if drivers.xen_blkfront {
        BootsOn::XenHvmOnly
    } else {
        BootsOn::Neither
    };
    let fix = if pv_only {
        Some(format!("{version} is a xenlinux (PV-only) kernel: install the distribution's default (pvops) kernel"))
    } else if bits32 {
        Some(format!("{version} is a 32-bit kernel: Nitro types run 64-bit (x86_64) guests only; it runs as HVM on the Xen types that still run i386 (t2 up to t2.medium, m1, m3, c1, c3)"))
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

pub(crate) fn all_kernels(fs: &Guest, menu: Option<&MenuLst>) -> Vec<KernelFacts> {
    fs.list("/boot")
        .into_iter()
        .map(|n| format!("/boot/{n}"))
        .filter(|p| fs.is_file(p))
        .filter_map(|path| {
            let version = version_of(&path)?;
            let initrd = menu.and_then(|m| {
                m.entries
                    .iter()
                    .find(|e| {
                        e.kernel.as_deref().map(|k| real_path(fs, k)).as_deref()
                            == Some(path.as_str())
                    })
                    .and_then(|e| e.initrd.clone())
            });
            Some(kernel_facts(fs, &path, &version, initrd.as_deref()))
        })
        .collect()
}

/// A path GRUB reads (a menu's kernel or initrd) as the guest's file it is,
/// symlinks resolved: Debian's `/vmlinuz` is `/boot/vmlinuz-VERSION`.
pub(crate) fn real_path(fs: &Guest, grub_path: &str) -> String {
    let p = fs.guest_path(grub_path);
    fs.canonical(&p).unwrap_or(p)
}

/// The version in a kernel's file name: `/boot/vmlinuz-6.1.0-56-amd64` → `6.1.0-56-amd64`.
pub fn version_of(kernel: &str) -> Option<String> {
    let name = kernel.rsplit('/').next()?;
    name.strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("vmlinux-"))
        .map(String::from)
}

fn drivers(fs: &Guest, version: &str) -> Drivers {
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
