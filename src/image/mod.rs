//! Reading and writing disk images: filesystems, menu.lst, MBR and GRUB.

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
