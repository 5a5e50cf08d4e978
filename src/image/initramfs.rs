//! What an initramfs holds, read as the kernel reads it: newc cpio archives
//! one after another, uncompressed (dracut's early-microcode archive in
//! front) or compressed with gzip, xz, lzma, zstd or lz4 (legacy frames, as
//! the kernel's `lz4 -l`). Only the names are kept: they say whether the
//! driver that mounts the root disk is there (nitro_check_script's
//! lsinitrd/lsinitramfs check). Every length read from the archive is
//! checked; output is bounded.

use std::io::Read;

/// The most bytes a decompressed initramfs may have here.
pub const MAX_UNPACKED: u64 = 1 << 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitramfsError {
    #[error("not a cpio archive or a compression amitool reads (starts with {0})")]
    Unknown(String),
    #[error("{0} data is damaged: {1}")]
    Damaged(&'static str, String),
    #[error("the cpio archive is truncated at byte {0}")]
    Truncated(usize),
    #[error("unpacks to more than {MAX_UNPACKED} bytes")]
    TooLarge,
}

fn hex(field: &[u8]) -> Option<usize> {
    usize::from_str_radix(std::str::from_utf8(field).ok()?, 16).ok()
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// Parse newc archives from `data[at..]` until the data ends or something
/// that is not cpio starts; returns where that is.
fn parse_cpio(
    data: &[u8],
    mut at: usize,
    names: &mut Vec<String>,
) -> Result<usize, InitramfsError> {
    loop {
        // Zero padding between archives.
        while at < data.len() && data[at] == 0 {
            at += 1;
        }
        let Some(head) = data.get(at..at.saturating_add(110)) else {
            return Ok(at);
        };
        if &head[..6] != b"070701" && &head[..6] != b"070702" {
            return Ok(at);
        }
        let size = hex(&head[54..62]).ok_or(InitramfsError::Truncated(at))?;
        let namesize = hex(&head[94..102]).ok_or(InitramfsError::Truncated(at))?;
        let name_start = at + 110;
        let name_end = name_start
            .checked_add(namesize)
            .ok_or(InitramfsError::Truncated(at))?;
        let name = data
            .get(name_start..name_end)
            .ok_or(InitramfsError::Truncated(at))?;
        let name = String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(name)).into_owned();
        let data_start = align4(name_end).ok_or(InitramfsError::Truncated(at))?;
        let next = data_start
            .checked_add(size)
            .and_then(align4)
            .ok_or(InitramfsError::Truncated(at))?;
        if next > data.len() && name != "TRAILER!!!" {
            return Err(InitramfsError::Truncated(at));
        }
        at = next.min(data.len());
        if name != "TRAILER!!!" {
            names.push(name.trim_start_matches("./").to_string());
        }
    }
}

fn read_bounded(mut r: impl Read, what: &'static str) -> Result<Vec<u8>, InitramfsError> {
    let mut out = vec![];
    (&mut r)
        .take(MAX_UNPACKED + 1)
        .read_to_end(&mut out)
        .map_err(|e| InitramfsError::Damaged(what, e.to_string()))?;
    if out.len() as u64 > MAX_UNPACKED {
        return Err(InitramfsError::TooLarge);
    }
    Ok(out)
}

/// The kernel's lz4 legacy format: a magic, then blocks of a u32 length and
/// an lz4 block of at most 8 MiB.
fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>, InitramfsError> {
    let mut out = vec![];
    let mut at = 4;
    while let Some(len) = data.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len == 0x184C2102 {
            at += 4;
            continue;
        }
        let Some(block) = at
            .checked_add(4)
            .and_then(|s| data.get(s..s.checked_add(len)?))
        else {
            break;
        };
        let b = lz4_flex::block::decompress(block, 8 << 20)
            .map_err(|e| InitramfsError::Damaged("lz4", e.to_string()))?;
        out.extend_from_slice(&b);
        if out.len() as u64 > MAX_UNPACKED {
            return Err(InitramfsError::TooLarge);
        }
        at += 4 + len;
    }
    Ok(out)
}

/// A buffer that refuses to grow past [`MAX_UNPACKED`].
struct Bounded(Vec<u8>);

impl Bounded {
    fn error(&self, what: &'static str, message: String) -> InitramfsError {
        if self.0.len() as u64 >= MAX_UNPACKED {
            InitramfsError::TooLarge
        } else {
            InitramfsError::Damaged(what, message)
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() as u64 + buf.len() as u64 > MAX_UNPACKED {
            return Err(std::io::Error::other("initramfs too large"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decompress(data: &[u8]) -> Result<Vec<u8>, InitramfsError> {
    let starts = |m: &[u8]| data.starts_with(m);
    if starts(&[0x1f, 0x8b]) {
        read_bounded(flate2::read::MultiGzDecoder::new(data), "gzip")
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let mut out = Bounded(vec![]);
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out)
            .map_err(|e| out.error("xz", e.to_string()))?;
        Ok(out.0)
    } else if starts(&[0x5d, 0, 0]) {
        let mut out = Bounded(vec![]);
        lzma_rs::lzma_decompress(&mut std::io::BufReader::new(data), &mut out)
            .map_err(|e| out.error("lzma", e.to_string()))?;
        Ok(out.0)
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = ruzstd::decoding::StreamingDecoder::new(data)
            .map_err(|e| InitramfsError::Damaged("zstd", e.to_string()))?;
        read_bounded(d, "zstd")
    } else if starts(&[0x02, 0x21, 0x4c, 0x18]) {
        lz4_legacy(data)
    } else {
        let head: String = data.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Err(InitramfsError::Unknown(head))
    }
}

/// Every path in the initramfs, in archive order, without a leading `./`.
pub fn list(data: &[u8]) -> Result<Vec<String>, InitramfsError> {
    let mut names = vec![];
    let mut at = parse_cpio(data, 0, &mut names)?;
    // The compressed part follows the uncompressed archives (early microcode).
    let mut rest_owned;
    let mut rest = &data[at..];
    for _ in 0..4 {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        rest_owned = decompress(rest)?;
        at = parse_cpio(&rest_owned, 0, &mut names)?;
        if at >= rest_owned.len() {
            break;
        }
        // A second compressed archive after the first, as the kernel allows.
        let tail = rest_owned.split_off(at);
        rest_owned = tail;
        rest = &rest_owned;
    }
    Ok(names)
}

/// Whether a module `name` (`nvme`, `xen-blkfront`) is among `names`.
pub fn has_module(names: &[String], name: &str) -> bool {
    let alt = name.replace('-', "_");
    names.iter().any(|p| {
        let file = p.rsplit('/').next().unwrap_or(p);
        let stem = file.split(".ko").next().unwrap_or("");
        file.contains(".ko") && (stem == name || stem == alt)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![];
        let mut push = |name: &str, data: &[u8]| {
            let namesize = name.len() + 1;
            out.extend_from_slice(
                format!(
                    "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                    1, 0o100644, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, namesize, 0
                )
                .as_bytes(),
            );
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (n, d) in entries {
            push(n, d);
        }
        push("TRAILER!!!", b"");
        out
    }

    #[test]
    fn early_microcode_then_gzip() {
        let mut img = newc(&[("kernel/x86/microcode/GenuineIntel.bin", b"ucode")]);
        img.resize(img.len().div_ceil(512) * 512, 0);
        let main = newc(&[
            ("init", b"#!/bin/sh\n"),
            (
                "usr/lib/modules/6.1.0/kernel/drivers/nvme/host/nvme.ko.xz",
                b"x",
            ),
        ]);
        let mut gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
        gz.write_all(&main).unwrap();
        img.extend(gz.finish().unwrap());
        let names = list(&img).unwrap();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(has_module(&names, "nvme"));
        assert!(!has_module(&names, "xen-blkfront"));
    }

    #[test]
    fn plain_and_hostile_archives() {
        let names = list(&newc(&[("lib/modules/k/xen_blkfront.ko", b"")])).unwrap();
        assert!(has_module(&names, "xen-blkfront"));
        let mut bad = newc(&[("a", b"0123456789")]);
        // A file size larger than the archive.
        bad[54..62].copy_from_slice(b"ffffffff");
        assert!(matches!(list(&bad), Err(InitramfsError::Truncated(0))));
        bad[54..62].copy_from_slice(b"zzzzzzzz");
        assert!(list(&bad).is_err());
        assert!(matches!(
            list(b"BZh91AY&SY"),
            Err(InitramfsError::Unknown(_))
        ));
        assert!(list(&[]).unwrap().is_empty());
    }
}
