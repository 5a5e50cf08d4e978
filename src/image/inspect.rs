//! The preflight: what a PV disk holds and what its HVM future needs. It reads
//! the disk the way PV-GRUB does (hd0: the whole disk is the filesystem;
//! hd00: its first partition) and never writes.

use std::path::Path;

use serde::Serialize;

use crate::image::bootcfg::{self, BootPlan, Change};
use crate::image::fs::{FsError, FsType};
use crate::image::guest::{self, Guest, Mount};
use crate::image::menulst::{self, MenuLst};
use crate::image::parts::Partition;
use crate::image::source::Disk;
use crate::kernels::Flavor;

use crate::image::kernel::{all_kernels, real_path};
pub use crate::image::kernel::{version_of, BootsOn, Drivers, KernelFacts, DRIVERS_TAG};

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub layout: Flavor,
    pub fs_offset: u64,
    pub fs_size: u64,
    pub fs_type: FsType,
    pub label: Option<String>,
    /// The UUID of the filesystem GRUB reads (a separate /boot, else root).
    pub uuid: String,
    /// The root filesystem's UUID; `None` when it could not be read.
    pub root_uuid: Option<String>,
    /// The MBR's partitions ("hd00" disks), all copied in their order.
    pub partitions: Vec<Partition>,
    /// The guest's filesystems: `/` and a separate `/boot`.
    pub mounts: Vec<Mount>,
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

    /// Where the HVM copy puts the source's bytes: one partition at 1 MiB
    /// for one filesystem, every partition in its slot for several.
    pub fn hvm_layout(&self) -> crate::image::hvm::Layout {
        use crate::image::hvm::Layout;
        if self.partitions.len() > 1 {
            Layout::partitioned(&self.partitions, &self.uuid)
        } else {
            Layout::new(self.fs_offset, self.fs_size, &self.uuid)
        }
    }

    /// The guest's filesystems where they lie on the HVM copy.
    pub fn hvm_mounts(&self, layout: &crate::image::hvm::Layout) -> Vec<Mount> {
        self.mounts
            .iter()
            .filter_map(|m| {
                Some(Mount {
                    offset: layout.target(m.offset)?,
                    ..m.clone()
                })
            })
            .collect()
    }
}

/// Where the filesystem GRUB reads first is, as PV-GRUB of `flavor` would look (either, when `None`).
pub fn locate(path: &Path, flavor: Option<Flavor>) -> Result<(Flavor, u64), FsError> {
    let d = guest::discover(path, flavor)?;
    Ok((d.flavor, d.boot().offset))
}

fn fstab_findings(fs: &Guest, uuid: &str, boot_uuid: Option<&str>) -> Vec<String> {
    let Some(text) = fs.read_text("/etc/fstab") else {
        return vec!["no /etc/fstab".into()];
    };
    let mut out = vec![];
    for (n, line) in text.lines().enumerate() {
        let mut w = line.split_whitespace();
        let (Some(dev), Some(mp)) = (w.next(), w.next()) else {
            continue;
        };
        // Swap is [`resume_findings`]'s.
        if dev.starts_with('#') || w.next() == Some("swap") {
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
        } else if let Some(b) = boot_uuid.filter(|_| mp == "/boot") {
            out.push(format!(
                "fstab line {}: /boot is mounted from {dev}, a name that changes on HVM: the HVM copy mounts it by UUID={b}",
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

/// The root disk's partitions by number and the UUID each is known by (a
/// filesystem's, a swap area's); a whole-disk filesystem is partition 1,
/// the name EC2 attaches it under (`/dev/sda1`).
fn device_map(src: &Disk, disk: &guest::Discovery) -> bootcfg::DeviceMap {
    let mut partitions = std::collections::BTreeMap::new();
    if disk.partitions.is_empty() {
        partitions.insert(1, disk.root().map(|m| m.uuid.clone()));
    }
    for p in &disk.partitions {
        let fs = disk
            .mounts
            .iter()
            .find(|m| m.partition == Some(p.number) && m.logical_volume.is_none())
            .map(|m| m.uuid.clone());
        let uuid = fs.or_else(|| crate::image::fs::swap_uuid(&**src, p.offset()));
        partitions.insert(p.number, uuid);
    }
    bootcfg::DeviceMap { partitions }
}

/// What becomes of a `resume=` and of fstab's swap lines that name the
/// root disk's Xen devices.
fn resume_findings(fs: &Guest, args: &[String], devices: &bootcfg::DeviceMap) -> Vec<String> {
    use bootcfg::Resolved;
    let mut out = vec![];
    for dev in args.iter().filter_map(|a| a.strip_prefix("resume=")) {
        match devices.resolve(dev) {
            Resolved::Uuid(u) => out.push(format!(
                "the kernel resumes from {dev}, a name that changes on HVM: the HVM copy's entries say resume=UUID={u}"
            )),
            Resolved::Gone => out.push(format!(
                "the kernel resumes from {dev}, which is not in the image (another volume or instance store): the HVM copy's entries drop resume= and resume_offset=, as a dracut or systemd initramfs would wait for that device for ever"
            )),
            Resolved::Stays => {}
        }
    }
    for (n, line) in fs
        .read_text("/etc/fstab")
        .unwrap_or_default()
        .lines()
        .enumerate()
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [dev, _, "swap", ..] = f.as_slice() {
            match devices.resolve(dev) {
                Resolved::Uuid(u) => out.push(format!(
                    "fstab line {}: swap on {dev}, a name that changes on HVM: the HVM copy uses UUID={u}",
                    n + 1
                )),
                Resolved::Gone => out.push(format!(
                    "fstab line {}: swap on {dev}, which is not in the image: the HVM copy comments the line out (systemd would wait for the device at every boot)",
                    n + 1
                )),
                Resolved::Stays => {}
            }
        }
    }
    if let Some(conf) = fs.read_text("/etc/initramfs-tools/conf.d/resume") {
        if let Some(dev) = conf.lines().find_map(|l| l.trim().strip_prefix("RESUME=")) {
            let dev = dev.trim_matches(['"', '\'']);
            if devices.resolve(dev) != Resolved::Stays {
                out.push(format!(
                    "/etc/initramfs-tools/conf.d/resume names {dev}: the HVM copy's file names it by UUID or none, for the next update-initramfs; the current initramfs still holds the old name unless the kernel line says resume= (it waits 30 s for it)"
                ));
            }
        }
    }
    out
}

fn console_findings(fs: &Guest) -> Vec<String> {
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
    let src = crate::image::fs::open_disk(path)?;
    inspect_in(&src, flavor)
}

/// [`inspect`] on any disk: a file, or a snapshot read where it lies.
pub fn inspect_in(src: &Disk, flavor: Option<Flavor>) -> Result<Inspection, FsError> {
    let disk = guest::discover_in(src, flavor)?;
    let fs = Guest::open_in(src, &disk.mounts)?;
    let boot_fs = disk.boot().clone();
    let uuid = boot_fs.uuid.clone();
    let root_uuid = disk.root().map(|m| m.uuid.clone());
    let separate_boot = disk.mounts.iter().any(|m| m.point == "/boot");
    let mut problems = vec![];
    // PV-GRUB's paths are the boot filesystem's; `found` is the guest's path.
    let found = menulst::SEARCH_ORDER
        .iter()
        .map(|p| fs.guest_path(p))
        .find(|p| fs.is_file(p));
    let menu_text = found.as_ref().and_then(|p| fs.read_text(p));
    // A line GRUB cannot read (a NUL byte, an unclosed device name) would
    // leave the copy at `grub>`.
    if let (Some(p), Some(t)) = (&found, &menu_text) {
        if let Some(why) = menulst::unreadable_lines(t).first() {
            problems.push(format!("{p} {why}"));
        }
    }
    let mut menu = menu_text.as_deref().map(MenuLst::parse);
    // `default saved`: PV-GRUB reads the entry from the `default` file beside the menu.
    let saved_file = found.as_deref().map(menulst::default_file_of);
    if let (Some(m), Some(f)) = (menu.as_mut(), &saved_file) {
        m.apply_saved(fs.read_bytes(f).as_deref());
    }
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
            Some(k) if !fs.is_file(&fs.guest_path(k)) => problems.push(format!(
                "the default entry {:?} boots {k}, which is not in the filesystem",
                e.title
            )),
            _ => {}
        }
        if let Some(i) = e.initrd.as_ref().filter(|i| !fs.is_file(&fs.guest_path(i))) {
            problems.push(format!(
                "the default entry {:?} loads initrd {i}, which is not in the filesystem",
                e.title
            ));
        }
    }
    // A kernel named by a symlink (Debian's /vmlinuz) is the file it points at.
    let kernel_version = entry
        .as_ref()
        .and_then(|e| e.kernel.as_deref())
        .and_then(|k| version_of(&real_path(&fs, k)));
    let kernels = all_kernels(&fs, menu.as_ref());
    let facts_of = |k: &str| kernels.iter().find(|f| f.path == real_path(&fs, k));
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
    let devices = device_map(src, &disk);
    let boot = bootcfg::plan(
        &fs,
        &bootcfg::Context {
            root_uuid: root_uuid.clone(),
            boot_uuid: separate_boot.then(|| uuid.clone()),
            grub_root: "(hd0,0)".into(),
            default_version: hvm_version.clone(),
            hvm_default,
            devices: devices.clone(),
        },
    );
    // The file GRUB reads on HVM, when it is another legacy file than PV-GRUB's.
    if let Some(cfg) = boot.as_ref().map(|b| &b.config).filter(|c| {
        c.kind == bootcfg::ConfigKind::Legacy && found.as_deref() != Some(c.path.as_str())
    }) {
        if let Some(why) = fs
            .read_text(&cfg.path)
            .and_then(|t| menulst::unreadable_lines(&t).into_iter().next())
        {
            problems.push(format!("{} {why}", cfg.path));
        }
    }
    let mut findings = disk.notes.clone();
    if let Some(r) = &root_uuid {
        findings.extend(fstab_findings(
            &fs,
            r,
            separate_boot.then_some(uuid.as_str()),
        ));
    }
    findings.extend(console_findings(&fs));
    findings.extend(resume_findings(
        &fs,
        entry
            .as_ref()
            .map(|e| e.args.as_slice())
            .unwrap_or_default(),
        &devices,
    ));
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
    if let (Some(m), Some(f)) = (menu.as_ref().filter(|m| m.saved), &saved_file) {
        let title = entry.as_ref().map(|e| e.title.as_str()).unwrap_or("none");
        findings.push(if fs.is_file(f) {
            format!("the menu says `default saved`: {f} selects entry {} ({title}); the HVM copy reads that file at every boot, so grub-set-default keeps working", m.default)
        } else {
            format!("the menu says `default saved` and there is no {f}: PV-GRUB boots entry 0 ({title}), and so does the HVM copy until grub-set-default writes it")
        });
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
        layout: disk.flavor,
        fs_offset: boot_fs.offset,
        fs_size: boot_fs.size,
        fs_type: boot_fs.fs_type,
        label: boot_fs.label.clone(),
        uuid,
        root_uuid,
        partitions: disk.partitions.clone(),
        mounts: disk.mounts.clone(),
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
