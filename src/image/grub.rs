//! GRUB 2 for BIOS without grub-install: `grub-mkimage` builds core.img with
//! the translated configuration in a memdisk; boot.img goes into the MBR and
//! core.img into the gap after it, patched as grub-bios-setup would patch them
//! (GRUB's util/setup.c; offsets from boot/i386/pc/boot.S and diskboot.S).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules core.img needs: disk, MBR partitions, ext2/3/4, the Linux loader,
/// the menu, the memdisk holding the configuration, the serial console, the
/// search for the boot filesystem by UUID, the readers of the guest's own
/// configuration (GRUB legacy's through legacycfg, GRUB 2's through
/// configfile), and what they call. The guest's grub.cfg may insmod others: those are looked up
/// in the memdisk, fail, and the configuration goes on.
pub const MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "ext2",
    "linux",
    "normal",
    "memdisk",
    "tar",
    "serial",
    "terminal",
    "gzio",
    "echo",
    "test",
    "search",
    "configfile",
    "legacycfg",
    "linux16",
    "loadenv",
    // GRUB 2's translation of `hiddenmenu`/`timeout` calls sleep, and a
    // `default saved` menu's default file is matched by hashsum.
    "sleep",
    "hashsum",
    "gcry_sha256",
    // grub-mkconfig's menu entries (Debian's and Ubuntu's 10_linux) call
    // load_video, which insmods all_video: a PV guest never ran
    // grub-install, so /boot/grub/i386-pc/ holds no modules, and a module
    // not found is an error that makes GRUB wait 10 s ("Press any key to
    // continue...") before every boot.
    "all_video",
];

/// boot.img: GRUB_BOOT_MACHINE_KERNEL_SECTOR, the LBA of core.img's first sector (8 bytes).
pub const KERNEL_SECTOR_OFFSET: usize = 0x5C;
/// boot.img: GRUB_BOOT_MACHINE_BOOT_DRIVE; 0xff = the drive the BIOS booted from.
pub const BOOT_DRIVE_OFFSET: usize = 0x64;
/// boot.img: GRUB_BOOT_MACHINE_DRIVE_CHECK, a jmp that grub-bios-setup turns into two NOPs for hard disks.
pub const DRIVE_CHECK_OFFSET: usize = 0x66;
/// diskboot.img (core.img's first sector): the first blocklist entry
/// {u64 start, u16 len, u16 segment} at 0x200 - 12.
pub const BLOCKLIST_OFFSET: usize = 0x1F4;
/// Where diskboot loads the rest of core.img.
pub const BLOCKLIST_SEGMENT: u16 = 0x820;
/// The bytes of boot.img that are code; the partition table follows.
pub const BOOT_CODE_LEN: usize = 440;

#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    #[error("GRUB's i386-pc files are not in {} (install grub-pc-bin, or set AMITOOL_GRUB_DIR)", dir.display())]
    Missing { dir: PathBuf },
    #[error("cannot run grub-mkimage (install grub-common): {0}")]
    Spawn(std::io::Error),
    #[error("grub-mkimage failed: {0}")]
    Mkimage(String),
    #[error("core.img is {size} bytes and does not fit in the {room} bytes before the partition")]
    TooLarge { size: usize, room: usize },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where GRUB's i386-pc images and modules are.
pub fn grub_dir() -> PathBuf {
    std::env::var_os("AMITOOL_GRUB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/grub/i386-pc"))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GrubError {
    let what = what.into();
    move |source| GrubError::Io { what, source }
}

/// A memdisk tar holding `boot/grub/grub.cfg` and the files it reads
/// ([`crate::image::bootcfg::memdisk_files`]), with fixed owner and time so
/// the same configuration gives the same bytes.
pub fn memdisk_tar(cfg: &str) -> Result<Vec<u8>, GrubError> {
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["boot/", "boot/grub/", "boot/grub/legacy-default/"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, dir, std::io::empty())
            .map_err(io("memdisk tar"))?;
    }
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(cfg.len() as u64);
    h.set_cksum();
    b.append_data(&mut h, "boot/grub/grub.cfg", cfg.as_bytes())
        .map_err(io("memdisk tar"))?;
    for (path, data) in crate::image::bootcfg::memdisk_files() {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, &path, data.as_slice())
            .map_err(io("memdisk tar"))?;
    }
    b.into_inner().map_err(io("memdisk tar"))
}

/// Build core.img with `cfg` in its memdisk, and its first-sector blocklist
/// patched to load the rest from LBA 2.
pub fn core_image(cfg: &str, workdir: &Path, room: usize) -> Result<Vec<u8>, GrubError> {
    let dir = grub_dir();
    if !dir.join("boot.img").is_file() || !dir.join("kernel.img").is_file() {
        return Err(GrubError::Missing { dir });
    }
    let tar_path = workdir.join("memdisk.tar");
    std::fs::write(&tar_path, memdisk_tar(cfg)?).map_err(io(tar_path.display().to_string()))?;
    let core_path = workdir.join("core.img");
    let out = Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-d"])
        .arg(&dir)
        .arg("-o")
        .arg(&core_path)
        .args(["-p", "(memdisk)/boot/grub", "-m"])
        .arg(&tar_path)
        .args(MODULES)
        .output()
        .map_err(GrubError::Spawn)?;
    if !out.status.success() {
        return Err(GrubError::Mkimage(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let mut core = std::fs::read(&core_path).map_err(io(core_path.display().to_string()))?;
    if core.len() > room {
        return Err(GrubError::TooLarge {
            size: core.len(),
            room,
        });
    }
    core.resize(core.len().div_ceil(512) * 512, 0);
    patch_blocklist(&mut core);
    Ok(core)
}

/// The rest of core.img: sectors 2.., loaded at 0x820:0.
pub fn patch_blocklist(core: &mut [u8]) {
    let sectors = (core.len() / 512) as u16;
    core[BLOCKLIST_OFFSET..BLOCKLIST_OFFSET + 8].copy_from_slice(&2u64.to_le_bytes());
    core[BLOCKLIST_OFFSET + 8..BLOCKLIST_OFFSET + 10].copy_from_slice(&(sectors - 1).to_le_bytes());
    core[BLOCKLIST_OFFSET + 10..BLOCKLIST_OFFSET + 12]
        .copy_from_slice(&BLOCKLIST_SEGMENT.to_le_bytes());
}

/// boot.img's code, patched to load core.img from LBA 1 off the boot drive.
pub fn boot_code() -> Result<[u8; BOOT_CODE_LEN], GrubError> {
    let path = grub_dir().join("boot.img");
    let img = std::fs::read(&path).map_err(|_| GrubError::Missing { dir: grub_dir() })?;
    let mut code = [0u8; BOOT_CODE_LEN];
    code.copy_from_slice(&img[..BOOT_CODE_LEN]);
    code[KERNEL_SECTOR_OFFSET..KERNEL_SECTOR_OFFSET + 8].copy_from_slice(&1u64.to_le_bytes());
    code[BOOT_DRIVE_OFFSET] = 0xff;
    code[DRIVE_CHECK_OFFSET] = 0x90;
    code[DRIVE_CHECK_OFFSET + 1] = 0x90;
    Ok(code)
}

/// What the MBR and gap of a disk say about a GRUB BIOS install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSectorFacts {
    pub has_code: bool,
    pub kernel_sector: u64,
    pub core_start: u64,
    pub core_sectors: u16,
    pub core_segment: u16,
}

pub fn read_boot_facts(sector0: &[u8], sector1: &[u8]) -> BootSectorFacts {
    let le64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let le16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    BootSectorFacts {
        has_code: sector0[..BOOT_CODE_LEN].iter().any(|&b| b != 0),
        kernel_sector: le64(sector0, KERNEL_SECTOR_OFFSET),
        core_start: le64(sector1, BLOCKLIST_OFFSET),
        core_sectors: le16(sector1, BLOCKLIST_OFFSET + 8),
        core_segment: le16(sector1, BLOCKLIST_OFFSET + 10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a grub-mkconfig menu entry on a BIOS PC insmods without a guard
    /// (Debian's and Ubuntu's 10_linux: load_video, which is `insmod
    /// all_video` since GRUB 2.00, then gzio and the access to the root
    /// filesystem) is built in: a guest's /boot/grub/i386-pc/ is empty, and
    /// each module not found there costs a 10 s "Press any key" at boot.
    #[test]
    fn a_grub_mkconfig_entry_finds_every_module_it_loads() {
        for m in ["all_video", "gzio", "part_msdos", "ext2"] {
            assert!(MODULES.contains(&m), "{m}");
        }
    }

    #[test]
    fn blocklist_is_what_grub_bios_setup_writes() {
        let mut core = vec![0u8; 320 * 512];
        patch_blocklist(&mut core);
        let f = read_boot_facts(&[1u8; 512], &core[..512]);
        assert_eq!(
            (f.core_start, f.core_sectors, f.core_segment),
            (2, 319, 0x820)
        );
    }

    #[test]
    fn memdisk_tar_is_deterministic() {
        let a = memdisk_tar("set default=0\n").unwrap();
        assert_eq!(a, memdisk_tar("set default=0\n").unwrap());
        let mut ar = tar::Archive::new(a.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names[..4],
            [
                "boot/",
                "boot/grub/",
                "boot/grub/legacy-default/",
                "boot/grub/grub.cfg"
            ]
        );
        assert!(names.contains(&"boot/grub/grubenv".to_string()));
        assert!(names.contains(&"boot/grub/legacy-default/31".to_string()));
    }

    #[test]
    fn boot_code_points_at_sector_one() {
        if !grub_dir().join("boot.img").is_file() {
            panic!("GRUB's i386-pc files are missing: install grub-pc-bin (the CI does)");
        }
        let code = boot_code().unwrap();
        let mut s0 = [0u8; 512];
        s0[..BOOT_CODE_LEN].copy_from_slice(&code);
        let f = read_boot_facts(&s0, &[0u8; 512]);
        assert!(f.has_code);
        assert_eq!(f.kernel_sector, 1);
        assert_eq!(
            &code[DRIVE_CHECK_OFFSET..DRIVE_CHECK_OFFSET + 2],
            &[0x90, 0x90]
        );
    }
}
