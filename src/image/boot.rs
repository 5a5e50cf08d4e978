//! Would this disk boot? The checks a Xen host makes before starting a guest,
//! and a real boot under QEMU for HVM disks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::bootcfg::{self, ConfigKind};
use crate::image::fs::GuestFs;
use crate::image::grub;
use crate::image::hvm::{PART_START_LBA, SECTOR};
use crate::image::inspect;
use crate::image::menulst;
use crate::kernels::Flavor;

/// Why a PV disk would not boot under PV-GRUB of `flavor`; empty when it would.
pub fn pv_problems(disk: &Path, flavor: Flavor) -> Vec<String> {
    match inspect::inspect(disk, Some(flavor)) {
        Ok(i) => i.problems,
        Err(e) => vec![format!(
            "PV-GRUB ({}) finds no filesystem: {e}",
            flavor.as_str()
        )],
    }
}

/// Why an HVM disk would not boot from the BIOS; empty when it would.
/// `grub_cfg` is the configuration amitool embedded, when known; otherwise
/// the guest's /boot/grub/grub.cfg is read.
pub fn hvm_problems(disk: &Path, grub_cfg: Option<&str>) -> Vec<String> {
    match crate::image::source::open_file(disk) {
        Ok(d) => hvm_problems_in(&d, grub_cfg),
        Err(e) => vec![format!("cannot read the first sectors of the disk: {e}")],
    }
}

/// [`hvm_problems`] of any disk: a file, or the HVM view before it is written.
pub fn hvm_problems_in(disk: &crate::image::source::Disk, grub_cfg: Option<&str>) -> Vec<String> {
    let mut head = vec![0u8; 1024];
    if let Err(e) = disk.read_exact_at(&mut head, 0) {
        return vec![format!("cannot read the first sectors of the disk: {e}")];
    }
    if head[510..512] != [0x55, 0xAA] {
        return vec![
            "no MBR: sector 0 lacks the 55AA signature, so the BIOS will not boot it".into(),
        ];
    }
    let mut out = vec![];
    let facts = grub::read_boot_facts(&head[..512], &head[512..]);
    if !facts.has_code {
        out.push("the MBR holds no boot code".into());
    } else if facts.kernel_sector != 1
        || facts.core_start != 2
        || facts.core_segment != grub::BLOCKLIST_SEGMENT
    {
        out.push(format!(
            "GRUB's boot blocks do not chain: boot.img loads sector {}, core.img continues at sector {} (segment {:#x})",
            facts.kernel_sector, facts.core_start, facts.core_segment
        ));
    } else {
        let mut mbr = [0u8; 512];
        mbr.copy_from_slice(&head[..512]);
        let first = crate::image::parts::parse(&mbr, u64::MAX)
            .ok()
            .and_then(|p| p.iter().map(|p| p.start_lba).min())
            .unwrap_or(PART_START_LBA);
        if 2 + facts.core_sectors as u64 > first {
            out.push("core.img runs into the partition".into());
        }
    }
    let mbr = match mbrman::MBR::read_from(&mut std::io::Cursor::new(head[..512].to_vec()), 512) {
        Ok(m) => m,
        Err(e) => return vec![format!("unreadable partition table: {e}")],
    };
    let Some((_, part)) = mbr.iter().find(|(_, p)| p.is_used()) else {
        out.push("the partition table is empty".into());
        return out;
    };
    let fs = match GuestFs::open_in(disk, part.starting_lba as u64 * SECTOR) {
        Ok(fs) => fs,
        Err(e) => {
            out.push(format!("partition 1 holds no readable filesystem: {e}"));
            return out;
        }
    };
    let cfg = grub_cfg
        .map(String::from)
        .or_else(|| fs.read_text("/boot/grub/grub.cfg"));
    let Some(cfg) = cfg else {
        // A configuration embedded in a compressed core.img cannot be read
        // here; at least a kernel must be there for it to name.
        if !fs
            .list("/boot")
            .iter()
            .any(|n| n.starts_with("vmlinuz") || n.starts_with("vmlinux"))
        {
            out.push("no GRUB configuration to read and no kernel in /boot".into());
        }
        return out;
    };
    // amitool's embedded configuration hands over to the guest's own file.
    let (kind, cfg, from) = match bootcfg::handover_target(&cfg) {
        Some((kind, path)) => match fs.read_text(&path) {
            Some(text) => (kind, text, path),
            None => {
                out.push(format!(
                    "GRUB hands over to {path}, which is not in the boot filesystem"
                ));
                return out;
            }
        },
        None => {
            let kind = if bootcfg::is_grub2(&cfg) {
                ConfigKind::Grub2
            } else {
                ConfigKind::Legacy
            };
            (kind, cfg, "the GRUB configuration".to_string())
        }
    };
    let default = match kind {
        ConfigKind::Grub2 => menulst::grub2_default_paths(&cfg),
        ConfigKind::Legacy => {
            let mut menu = menulst::MenuLst::parse(&cfg);
            menu.apply_saved(fs.read_bytes(&menulst::default_file_of(&from)).as_deref());
            if let Some(e) = menu.default_entry() {
                if e.root.as_deref() == Some("(hd0)") {
                    out.push(format!(
                        "{from}: the default entry's root is (hd0), the whole disk, where GRUB finds no filesystem on HVM"
                    ));
                }
            }
            menu.default_entry()
                .and_then(|e| Some((e.kernel.clone()?, e.initrd.clone())))
        }
    };
    match default {
        None => out.push(format!("{from} has no default entry with a kernel")),
        Some((k, i)) => {
            if !fs.is_file(&k) {
                out.push(format!(
                    "the default entry of {from} boots {k}, which is not in the filesystem"
                ));
            }
            if let Some(i) = i.filter(|i| !fs.is_file(i)) {
                out.push(format!(
                    "the default entry of {from} loads initrd {i}, which is not in the filesystem"
                ));
            }
        }
    }
    out
}

/// What GRUB 2's menu prints while it counts down to its default entry.
const GRUB_COUNTDOWN: &str = "executed automatically in";

/// The result of a QEMU boot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QemuBoot {
    pub reached: bool,
    pub expect: String,
    pub seconds: f64,
    pub serial_log: PathBuf,
    pub bus: DiskBus,
}

/// How the root disk is attached, as the instance type would attach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// IDE, as a Xen HVM guest's emulated disk before xen-blkfront takes it over.
    Ide,
    /// An NVMe controller, as Nitro gives EBS volumes (SeaBIOS boots from it).
    Nvme,
}

impl DiskBus {
    /// The bus `itype` gives its root volume on.
    pub fn for_type(itype: &crate::model::InstanceType) -> Self {
        if itype.nvme_support == "required" {
            DiskBus::Nvme
        } else {
            DiskBus::Ide
        }
    }
}

/// Boot `disk` under qemu-system-x86_64 (TCG, serial console on a log file,
/// the disk opened with snapshot=on so it is never written, on `bus`) until
/// the serial log shows `expect` or `timeout` passes. A GRUB menu counting
/// down (the guest's own `timeout`) is answered with Enter on the serial
/// console, as an operator at the EC2 serial console would: that boots the
/// highlighted entry, the one the countdown would boot, without the wait.
pub fn qemu_boot(
    disk: &Path,
    serial_log: &Path,
    expect: &str,
    timeout: Duration,
    bus: DiskBus,
) -> std::io::Result<QemuBoot> {
    let _ = std::fs::remove_file(serial_log);
    let start = Instant::now();
    let drive = match bus {
        DiskBus::Ide => vec![
            "-drive".to_string(),
            format!("file={},format=raw,snapshot=on", disk.display()),
        ],
        DiskBus::Nvme => vec![
            "-drive".to_string(),
            format!(
                "if=none,id=root,file={},format=raw,snapshot=on",
                disk.display()
            ),
            "-device".to_string(),
            "nvme,drive=root,serial=amitoolroot,bootindex=0".to_string(),
        ],
    };
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "pc",
            "-m",
            "512",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-chardev",
        ])
        .arg(format!(
            "stdio,id=serial0,signal=off,logfile={}",
            serial_log.display().to_string().replace(',', ",,")
        ))
        .args(["-serial", "chardev:serial0"])
        .args(&drive)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // The console's input, held open for the whole boot.
    let mut console = child.stdin.take();
    let mut pressed = false;
    let log = |p: &Path| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let reached = loop {
        let text = log(serial_log);
        if text.contains(expect) {
            break true;
        }
        if !pressed && text.contains(GRUB_COUNTDOWN) {
            if let Some(c) = console.as_mut() {
                use std::io::Write;
                let _ = c.write_all(b"\r").and_then(|_| c.flush());
            }
            pressed = true;
        }
        if child.try_wait()?.is_some() {
            break log(serial_log).contains(expect);
        }
        if start.elapsed() > timeout {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(QemuBoot {
        reached,
        expect: expect.to_string(),
        seconds: start.elapsed().as_secs_f64(),
        serial_log: serial_log.to_path_buf(),
        bus,
    })
}
