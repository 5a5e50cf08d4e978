//! Property tests of the image readers against hostile input: random and
//! half-valid superblocks (and the filesystem behind them), MBRs, menu.lst
//! and GRUB 2 texts, initramfs archives and LVM2 labels. 25,000 generated
//! inputs each (over 100,000 in all) in the suite's normal run: no reader
//! panics, overflows or loops, and every error is one line.

use std::sync::Arc;

use amitool::image::source::{BlockSource, Bytes, Disk};
use proptest::prelude::*;

const CASES: u32 = 25_000;

fn one_line(e: &dyn std::fmt::Display) -> Result<(), TestCaseError> {
    let s = e.to_string();
    prop_assert!(!s.contains('\n'), "a multi-line error: {s:?}");
    prop_assert!(!s.is_empty());
    Ok(())
}

/// `len` bytes of noise from `seed` (xorshift: generating 8 KiB byte by
/// byte through proptest would take most of the suite's time).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 8 KiB of noise, with the ext magic and plausible sizes patched in often
/// enough that the reader gets past its first checks.
fn superblock_image() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u64>().prop_map(|seed| noise(seed, 8192)),
        any::<bool>(),
        0u32..8,
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(mut img, magic, log_block, blocks, per_group)| {
            if magic {
                img[1080..1082].copy_from_slice(&[0x53, 0xef]);
                img[1048..1052].copy_from_slice(&log_block.to_le_bytes()); // s_log_block_size
                img[1028..1032].copy_from_slice(&(blocks % 64).to_le_bytes()); // s_blocks_count_lo
                img[1056..1060].copy_from_slice(&(per_group % 9000).to_le_bytes());
                // s_inodes_per_group
            }
            img
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn superblock_and_filesystem(img in superblock_image(), offset in prop_oneof![Just(0u64), 0u64..9000]) {
        let disk: Disk = Arc::new(Bytes(img, "fuzz"));
        match amitool::image::fs::superblock_in(&*disk, offset) {
            Ok(_) => {}
            Err(e) => one_line(&e)?,
        }
        match amitool::image::fs::GuestFs::open_in(&disk, offset) {
            Ok(fs) => {
                let _ = fs.read_text("/etc/fstab");
                let _ = fs.read_text("/boot/grub/menu.lst");
            }
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn mbr(mut mbr in proptest::collection::vec(any::<u8>(), 512), signed in any::<bool>(), len in any::<u64>()) {
        if signed {
            mbr[510] = 0x55;
            mbr[511] = 0xaa;
        }
        let mbr: [u8; 512] = mbr.try_into().expect("512 bytes");
        match amitool::image::parts::parse(&mbr, len) {
            Ok(parts) => {
                for p in parts {
                    // Whatever is accepted lies inside the disk.
                    prop_assert!(p.offset().checked_add(p.len()).is_some_and(|end| end <= len));
                }
            }
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn menus(text in menu_text()) {
        let menu = amitool::image::menulst::MenuLst::parse(&text);
        let _ = menu.default_entry();
        let _ = amitool::image::menulst::grub2_default_paths(&text);
        let _ = amitool::image::bootcfg::is_grub2(&text);
    }

    #[test]
    fn initramfs(data in initramfs_bytes()) {
        match amitool::image::initramfs::list(&data) {
            Ok(names) => { let _ = amitool::image::initramfs::has_module(&names, "nvme"); }
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn lvm_labels(mut img in any::<u64>().prop_map(|seed| noise(seed, 8192)), labelled in any::<bool>(), len in 0u64..16384) {
        if labelled {
            img[512..520].copy_from_slice(b"LABELONE");
            img[536..544].copy_from_slice(b"LVM2 001");
        }
        let disk = Bytes(img, "fuzz");
        if amitool::image::lvm::is_pv(&disk, 0) {
            if let Err(e) = amitool::image::lvm::logical_volumes(&disk, 0, len.min(disk.len())) {
                one_line(&e)?;
            }
        }
    }
}

/// Lines in the shapes menu.lst and grub.cfg take (keywords, devices,
/// numbers, braces, quotes, tabs) mixed with noise, non-ASCII spaces and
/// multi-byte characters included; built from a seed, as `noise` is.
fn menu_text() -> impl Strategy<Value = String> {
    const WORDS: &[&str] = &[
        "title",
        "default",
        "root",
        "kernel",
        "initrd",
        "menuentry",
        "linux",
        "set",
        "savedefault",
        "fallback",
        "timeout",
        "(hd0,0)",
        "(hd0)",
        "(hd0,",
        "{",
        "}",
        "\"",
        "'",
        "#",
        "=",
        "\t",
        "--no-mem-option",
        "/boot/vmlinuz-2.6.32",
        "root=/dev/xvda1",
        "console=hvc0",
        "# kopt=",
        "# groot=",
        "# defoptions=",
        "\u{2004}",
        "é",
        "𑌶",
        "é\u{2004}é",
        "kernel\u{3000}/boot/x",
        "\0",
        "4294967296",
        "-1",
        "99999999999999999999",
        "${saved_entry}",
    ];
    (any::<u64>(), 0usize..12).prop_map(|(seed, lines)| {
        let r = noise(seed, lines * 9 + 1);
        (0..lines)
            .map(|l| {
                let n = r[l * 9] as usize % 9;
                (0..n)
                    .map(|w| WORDS[r[l * 9 + 1 + w.min(7)] as usize % WORDS.len()])
                    .collect::<Vec<_>>()
                    .join(if r[l * 9 + 1].is_multiple_of(3) {
                        "\t"
                    } else {
                        " "
                    })
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// cpio newc headers with random fields, gzip/xz/zstd magic in front of
/// noise, and plain noise.
fn initramfs_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..600);
    prop_oneof![
        noise.clone(),
        (noise.clone(), "[0-9a-fA-F]{104}").prop_map(|(tail, fields)| {
            let mut v = b"070701".to_vec();
            v.extend_from_slice(fields.as_bytes());
            v.extend_from_slice(&tail);
            v
        }),
        (
            prop_oneof![
                Just(vec![0x1fu8, 0x8b]),
                Just(vec![0xfd, b'7', b'z', b'X', b'Z', 0]),
                Just(vec![0x28, 0xb5, 0x2f, 0xfd]),
                Just(vec![0x02, 0x21, 0x4c, 0x18]),
                Just(vec![0x5d, 0, 0])
            ],
            noise
        )
            .prop_map(|(mut magic, tail)| {
                magic.extend(tail);
                magic
            }),
    ]
}
