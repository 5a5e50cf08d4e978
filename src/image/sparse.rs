//! Copying disk images without filling their holes: only the data segments
//! (SEEK_DATA/SEEK_HOLE) are copied, with copy_file_range so that a
//! filesystem that can share extents (XFS, Btrfs) shares them.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// The data segments of `f` as (offset, length), holes skipped.
pub fn data_segments(f: &File) -> io::Result<Vec<(u64, u64)>> {
    let len = f.metadata()?.len();
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on a descriptor we own; no memory is touched.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            if e.raw_os_error() == Some(libc::EINVAL) {
                // The filesystem cannot say: treat the whole file as data.
                return Ok(vec![(0, len)]);
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        out.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    Ok(out)
}

/// Copy `len` bytes from `src` at `src_off` to `dst` at `dst_off`.
fn copy_range(
    src: &File,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    mut len: u64,
) -> io::Result<()> {
    while len > 0 {
        let mut so = src_off as i64;
        let mut d = dst_off as i64;
        let chunk = len.min(1 << 30) as usize;
        // SAFETY: both descriptors are open; the offsets are our own variables.
        let n = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, chunk, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.raw_os_error(),
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
            ) {
                return copy_range_rw(src, src_off, dst, dst_off, len);
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source ended early",
            ));
        }
        src_off += n as u64;
        dst_off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// The fallback: read and write through a 1 MiB buffer.
fn copy_range_rw(
    src: &File,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    mut len: u64,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while len > 0 {
        let n = len.min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], src_off)?;
        dst.write_all_at(&buf[..n], dst_off)?;
        src_off += n as u64;
        dst_off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Copy every data segment of `src` to `dst` at `dst_offset` (+ the
/// segment's own offset), leaving holes as holes; returns the bytes copied.
/// `dst` must already be long enough (set_len).
pub fn copy_sparse(src: &File, dst: &File, dst_offset: u64) -> io::Result<u64> {
    let len = src.metadata()?.len();
    copy_sparse_range(src, 0, len, dst, dst_offset)
}

/// The data of `src[start..start + len]` to `dst` at `dst_offset`, holes skipped.
pub fn copy_sparse_range(
    src: &File,
    start: u64,
    len: u64,
    dst: &File,
    dst_offset: u64,
) -> io::Result<u64> {
    let end = start + len;
    let mut copied = 0;
    for (off, seg) in data_segments(src)? {
        let (a, b) = (off.max(start), (off + seg).min(end));
        if a < b {
            copy_range(src, a, dst, dst_offset + (a - start), b - a)?;
            copied += b - a;
        }
    }
    Ok(copied)
}

/// The bytes a file created in `dir` could still take (statvfs); `None` when unknown.
pub fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs to fill.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (r == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let src = File::create_new(&src_path).unwrap();
        src.set_len(64 << 20).unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(&[7u8; 8192], 40 << 20).unwrap();
        let src = File::open(&src_path).unwrap();
        let dst_path = dir.path().join("dst");
        let dst = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&dst_path)
            .unwrap();
        dst.set_len((1 << 20) + (64 << 20)).unwrap();
        let copied = copy_sparse(&src, &dst, 1 << 20).unwrap();
        assert!(copied < 2 << 20, "copied {copied}");
        let mut b = [0u8; 4];
        dst.read_exact_at(&mut b, 1 << 20).unwrap();
        assert_eq!(&b, b"head");
        let mut b = [0u8; 8192];
        dst.read_exact_at(&mut b, (1 << 20) + (40 << 20)).unwrap();
        assert!(b.iter().all(|&x| x == 7));
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&dst_path).unwrap().blocks() * 512 < 4 << 20);
    }
}
