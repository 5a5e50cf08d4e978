//! Reading and writing disk images: filesystems, menu.lst, MBR and GRUB.

/// The EBS direct APIs' block: 512 KiB (524,288 bytes), the unit amitool
/// reads, writes, journals and prices.
pub const BLOCK: u64 = 512 * 1024;

pub mod boot;
pub mod bootcfg;
pub mod extwrite;
pub mod fs;
pub mod grub;
pub mod guest;
pub mod guestfix;
pub mod hvm;
pub mod initramfs;
pub mod inspect;
pub mod kernel;
pub mod lvm;
pub mod menulst;
pub mod overlay;
pub mod parts;
pub mod source;
pub mod sparse;
