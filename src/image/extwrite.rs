//! Files written into a guest's ext2/3/4 filesystem where it lies, by
//! e2fsprogs' libext2fs (csrc/extwrite.c): its allocator, extents,
//! directories and checksums, never amitool's own. libext2fs reads and
//! writes through an io_manager whose calls land here: reads come from the
//! HVM view (the source where it lies), writes go to its copy-on-write
//! overlay. The same code writes a local file's copy and a snapshot's.

use std::ffi::{c_char, c_int, c_longlong, c_uint, c_void, CString};
use std::panic::AssertUnwindSafe;

use crate::image::overlay::HvmView;
use crate::image::source::BlockSource;

type IoFn = unsafe extern "C" fn(*mut c_void, u64, usize, *mut c_void) -> c_int;

#[repr(C)]
struct AmitoolIo {
    ctx: *mut c_void,
    read: IoFn,
    write: IoFn,
}

#[repr(C)]
struct AmitoolFile {
    path: *const c_char,
    data: *const u8,
    len: usize,
    mode: c_uint,
    uid: c_uint,
    gid: c_uint,
}

extern "C" {
    fn amitool_ext_write(
        io: *mut AmitoolIo,
        now: c_longlong,
        files: *const AmitoolFile,
        n: usize,
        msg: *mut c_char,
        msglen: usize,
    ) -> c_int;
}

/// One file to write: its path inside the filesystem, bytes and mode.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
    /// Permission bits, owner and group.
    pub mode: (u32, u32, u32),
}

struct Ctx<'a> {
    view: &'a HvmView,
    /// Where the filesystem starts on the HVM disk, and where its room ends.
    base: u64,
    end: u64,
    error: Option<String>,
}

fn within(ctx: &Ctx, offset: u64, len: usize) -> Option<u64> {
    let at = ctx.base.checked_add(offset)?;
    (at.checked_add(len as u64)? <= ctx.end).then_some(at)
}

unsafe extern "C" fn read_cb(ctx: *mut c_void, offset: u64, len: usize, buf: *mut c_void) -> c_int {
    let ctx = &mut *(ctx as *mut Ctx);
    let out = std::slice::from_raw_parts_mut(buf as *mut u8, len);
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| match within(ctx, offset, len) {
        Some(at) => ctx.view.read_exact_at(out, at).map_err(|e| e.to_string()),
        None => Err(format!("a read at byte {offset} lies past the filesystem")),
    }));
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            ctx.error.get_or_insert(e);
            -1
        }
        Err(_) => {
            ctx.error.get_or_insert("a read panicked".into());
            -1
        }
    }
}

unsafe extern "C" fn write_cb(
    ctx: *mut c_void,
    offset: u64,
    len: usize,
    buf: *mut c_void,
) -> c_int {
    let ctx = &mut *(ctx as *mut Ctx);
    let data = std::slice::from_raw_parts(buf as *const u8, len);
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| match within(ctx, offset, len) {
        Some(at) => ctx.view.write_at(data, at).map_err(|e| e.to_string()),
        None => Err(format!("a write at byte {offset} lies past the filesystem")),
    }));
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            ctx.error.get_or_insert(e);
            -1
        }
        Err(_) => {
            ctx.error.get_or_insert("a write panicked".into());
            -1
        }
    }
}

/// Write `files` into the ext filesystem at byte `offset` of `view` (its
/// room ending at `end`), with `now` as their times and the superblock's
/// write time. Existing files are rewritten in place (same inode); missing
/// ones are created in their existing directory.
pub fn write_files(
    view: &HvmView,
    offset: u64,
    end: u64,
    files: &[NewFile],
    now: i64,
) -> Result<(), String> {
    let paths: Vec<CString> = files
        .iter()
        .map(|f| CString::new(f.path).map_err(|_| format!("{:?}: a NUL byte in the path", f.path)))
        .collect::<Result<_, _>>()?;
    let specs: Vec<AmitoolFile> = files
        .iter()
        .zip(&paths)
        .map(|(f, p)| AmitoolFile {
            path: p.as_ptr(),
            data: f.data.as_ptr(),
            len: f.data.len(),
            mode: f.mode.0,
            uid: f.mode.1,
            gid: f.mode.2,
        })
        .collect();
    let mut ctx = Ctx {
        view,
        base: offset,
        end: end.min(view.len()),
        error: None,
    };
    let mut io = AmitoolIo {
        ctx: &mut ctx as *mut Ctx as *mut c_void,
        read: read_cb,
        write: write_cb,
    };
    let mut msg = vec![0u8; 512];
    // SAFETY: every pointer outlives the call; the callbacks only touch `ctx`.
    let rc = unsafe {
        amitool_ext_write(
            &mut io,
            now,
            specs.as_ptr(),
            specs.len(),
            msg.as_mut_ptr() as *mut c_char,
            msg.len(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&msg[..msg.iter().position(|&b| b == 0).unwrap_or(0)]).to_string();
    Err(match ctx.error {
        Some(e) => format!("{text} ({e})"),
        None => text,
    })
}
