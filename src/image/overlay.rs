//! The HVM disk as a view, never a file of its size: blocks 0-1 (the MBR
//! and core.img) from memory, the source's bytes where the layout puts them
//! (read where they lie: a file, an EBS snapshot), and a copy-on-write
//! overlay that holds every 512 KiB block amitool changes. Every method and
//! backend makes its disk from this view: the blocks it lists are the only
//! ones written, each read once from the source.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::image::hvm::{Layout, PART_OFFSET};
use crate::image::source::{BlockSource, Disk, WriteBlock};

/// The EBS block size, and the view's unit.
pub const BLOCK: u64 = crate::image::BLOCK;

pub struct HvmView {
    layout: Layout,
    head: Vec<u8>,
    source: Disk,
    overlay: Mutex<BTreeMap<u64, Vec<u8>>>,
}

fn eof() -> std::io::Error {
    std::io::ErrorKind::UnexpectedEof.into()
}

impl HvmView {
    /// The view of `layout` over `source`, `head` being its first bytes
    /// (`hvm::boot_area`: the MBR and core.img, up to the first partition).
    pub fn new(source: Disk, layout: Layout, head: Vec<u8>) -> Self {
        HvmView {
            layout,
            head,
            source,
            overlay: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn source(&self) -> &Disk {
        &self.source
    }

    /// Block `index` as the layout makes it from the head and the source.
    fn compose(&self, index: u64) -> std::io::Result<Vec<u8>> {
        let start = index.checked_mul(BLOCK).ok_or_else(eof)?;
        let end = start.saturating_add(BLOCK).min(self.layout.disk_size);
        let mut buf = vec![0u8; BLOCK as usize];
        if start < end {
            self.read_composed(&mut buf[..(end - start) as usize], start)?;
        }
        Ok(buf)
    }

    /// Block `index` as it will be written: the overlay's copy if amitool changed it.
    pub fn block(&self, index: u64) -> std::io::Result<Vec<u8>> {
        if let Some(b) = self.overlay.lock().expect("overlay lock").get(&index) {
            return Ok(b.clone());
        }
        self.compose(index)
    }

    /// Write `buf` at `offset` into the overlay (a changed block is copied
    /// there whole first); the source is never written.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.layout.disk_size)
            .ok_or_else(eof)?;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min((end - at) as usize);
            let from = (at - offset) as usize;
            let mut overlay = self.overlay.lock().expect("overlay lock");
            if !overlay.contains_key(&index) {
                drop(overlay);
                // Bytes written as they already are change nothing: no
                // block for the overlay (libext2fs writes back every bitmap
                // it read, changed or not).
                let mut now = vec![0u8; n];
                self.read_composed(&mut now, at)?;
                if now == buf[from..from + n] {
                    at += n as u64;
                    continue;
                }
                let b = self.compose(index)?;
                overlay = self.overlay.lock().expect("overlay lock");
                overlay.entry(index).or_insert(b);
            }
            let block = overlay.get_mut(&index).expect("inserted above");
            block[within..within + n].copy_from_slice(&buf[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }

    /// How many blocks the head (the MBR and core.img) fills.
    pub fn head_blocks(&self) -> u64 {
        (self.head.len() as u64).div_ceil(BLOCK)
    }

    /// The blocks amitool changed, in order.
    pub fn edited(&self) -> Vec<u64> {
        self.overlay
            .lock()
            .expect("overlay lock")
            .keys()
            .copied()
            .collect()
    }

    /// Every block that may hold data, in order: the head's, each block the
    /// source's data lands in, and the overlay's. (A block that composes to
    /// all zeros need not be written.)
    pub fn blocks(&self) -> std::io::Result<Vec<u64>> {
        let mut out: Vec<u64> = (0..self.head_blocks()).collect();
        let data = self
            .source
            .data_ranges()
            .unwrap_or_else(|| vec![(0, self.source.len())]);
        for r in self.layout.restrict(&data) {
            out.extend(r.dst / BLOCK..(r.dst + r.len).div_ceil(BLOCK));
        }
        out.extend(self.edited());
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

impl BlockSource for HvmView {
    fn len(&self) -> u64 {
        self.layout.disk_size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.layout.disk_size)
            .ok_or_else(eof)?;
        let mut at = offset;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min((end - at) as usize);
            let from = (at - offset) as usize;
            let overlay = self.overlay.lock().expect("overlay lock");
            if let Some(b) = overlay.get(&index) {
                buf[from..from + n].copy_from_slice(&b[within..within + n]);
            } else {
                drop(overlay);
                self.read_composed(&mut buf[from..from + n], at)?;
            }
            at += n as u64;
        }
        Ok(())
    }

    fn name(&self) -> PathBuf {
        PathBuf::from(format!("the HVM copy of {}", self.source.name().display()))
    }

    fn blocks_read(&self) -> Option<u64> {
        self.source.blocks_read()
    }

    /// A block the view passes through whole (not changed by amitool,
    /// outside the boot area, one aligned block of the source: the
    /// partition starts at 1 MiB, so a filesystem's blocks stay whole) comes
    /// from the source as it is, with the source's checksum.
    fn read_block_for_write(&self, index: u64) -> std::io::Result<WriteBlock> {
        match self.source_block(index) {
            Some(src) => self.source.read_block_for_write(src),
            None => Ok(WriteBlock::owned(self.block(index)?)),
        }
    }

    fn fetch_block_for_write(
        &self,
        index: u64,
    ) -> Option<futures::future::BoxFuture<'_, std::io::Result<WriteBlock>>> {
        self.source.fetch_block_for_write(self.source_block(index)?)
    }
}

impl HvmView {
    /// The source block that view block `index` is, whole and unchanged.
    fn source_block(&self, index: u64) -> Option<u64> {
        let (start, end) = (index * BLOCK, (index + 1) * BLOCK);
        if start < self.head.len() as u64
            || self
                .overlay
                .lock()
                .expect("overlay lock")
                .contains_key(&index)
        {
            return None;
        }
        let r = self
            .layout
            .ranges
            .iter()
            .find(|r| r.dst <= start && end <= r.dst.saturating_add(r.len))?;
        let src = r.src + (start - r.dst);
        (src % BLOCK == 0 && src + BLOCK <= self.source.len()).then_some(src / BLOCK)
    }
}

impl HvmView {
    /// Bytes of the composed disk without building whole blocks (small reads
    /// of the filesystem's metadata go straight to the source).
    fn read_composed(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        let head_end = (self.head.len() as u64).min(PART_OFFSET);
        if offset < head_end {
            let n = (head_end.min(end) - offset) as usize;
            buf[..n].copy_from_slice(&self.head[offset as usize..offset as usize + n]);
        }
        for r in &self.layout.ranges {
            let (a, b) = (offset.max(r.dst), end.min(r.dst.saturating_add(r.len)));
            if a >= b {
                continue;
            }
            self.source.read_exact_at(
                &mut buf[(a - offset) as usize..(b - offset) as usize],
                r.src + (a - r.dst),
            )?;
        }
        Ok(())
    }
}

/// What writing the view moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferStats {
    /// 512 KiB blocks fetched from where the source lies (a snapshot); for a
    /// local file, the blocks of it that were read.
    pub blocks_read: u64,
    pub blocks_written: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// This run: blocks streamed now, and blocks an earlier run had done.
    #[serde(skip)]
    pub streamed_now: u64,
    #[serde(skip)]
    pub done_before: u64,
}

/// Write the view into a new sparse file `out` (as `out.partial`, renamed
/// when whole): each listed block that holds data, nothing else.
pub fn write_file(view: &HvmView, out: &std::path::Path) -> std::io::Result<TransferStats> {
    use std::os::unix::fs::FileExt;
    let partial = out.with_extension("partial");
    let result = (|| {
        let f = std::fs::File::options()
            .create_new(true)
            .write(true)
            .open(&partial)?;
        f.set_len(view.len())?;
        let mut stats = TransferStats::default();
        for index in view.blocks()? {
            let block = view.block(index)?;
            stats.blocks_read += 1;
            stats.bytes_read += BLOCK;
            stats.streamed_now += 1;
            if crate::image::source::all_zero(&block) {
                continue;
            }
            let at = index * BLOCK;
            let n = (view.len() - at).min(BLOCK) as usize;
            f.write_all_at(&block[..n], at)?;
            stats.blocks_written += 1;
            stats.bytes_written += n as u64;
        }
        Ok(stats)
    })();
    match result {
        Ok(s) => {
            std::fs::rename(&partial, out)?;
            Ok(s)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::source::Bytes;
    use std::sync::Arc;

    fn view(src: Vec<u8>, fs_offset: u64, fs_len: u64) -> HvmView {
        let layout = Layout::new(fs_offset, fs_len, "0a1b2c3d-0000-0000-0000-000000000000");
        let mut head = vec![0u8; PART_OFFSET as usize];
        head[510] = 0x55;
        head[511] = 0xaa;
        HvmView::new(Arc::new(Bytes(src, "src")), layout, head)
    }

    #[test]
    fn source_block_i_is_target_block_i_plus_2() {
        let mut src = vec![0u8; 4 * BLOCK as usize];
        src[BLOCK as usize + 5] = 7;
        let v = view(src, 0, 4 * BLOCK);
        assert_eq!(v.block(3).unwrap()[5], 7);
        assert_eq!(v.block(0).unwrap()[510..512], [0x55, 0xaa]);
        let mut b = [0u8; 1];
        v.read_exact_at(&mut b, 3 * BLOCK + 5).unwrap();
        assert_eq!(b, [7]);
        // Bytes holds no sparseness facts: every source block is listed.
        assert_eq!(v.blocks().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    }

    /// A source that vouches for every block it has: "sum" and its index.
    struct Vouching(Bytes);

    impl BlockSource for Vouching {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.0.read_exact_at(buf, offset)
        }
        fn name(&self) -> std::path::PathBuf {
            "vouching".into()
        }
        fn read_block_for_write(&self, index: u64) -> std::io::Result<WriteBlock> {
            let mut buf = vec![0u8; BLOCK as usize];
            self.read_exact_at(&mut buf, index * BLOCK)?;
            Ok(WriteBlock::from_pieces(
                vec![buf.into()],
                Some(format!("sum{index}")),
            ))
        }
    }

    fn sum(v: &HvmView, index: u64) -> Option<String> {
        let block = v.read_block_for_write(index).unwrap();
        assert_eq!(block.to_vec(), v.block(index).unwrap(), "block {index}");
        block.checksum
    }

    #[test]
    fn a_block_passed_through_whole_keeps_its_sources_checksum() {
        let layout = Layout::new(0, 4 * BLOCK, "0a1b2c3d-0000-0000-0000-000000000000");
        let mut bytes = vec![1u8; 4 * BLOCK as usize];
        bytes[BLOCK as usize] = 2;
        let src = Vouching(Bytes(bytes.clone(), "src"));
        let v = HvmView::new(Arc::new(src), layout, vec![0u8; PART_OFFSET as usize]);
        // The boot area is amitool's: no source vouches for it.
        assert_eq!(sum(&v, 0), None);
        assert_eq!(sum(&v, 1), None);
        // Source block i is target block i + 2, untouched, with its checksum.
        assert_eq!(sum(&v, 2).as_deref(), Some("sum0"));
        assert_eq!(sum(&v, 3).as_deref(), Some("sum1"));
        assert_eq!(sum(&v, 5).as_deref(), Some("sum3"));
        // A block amitool changed is hashed by the writer.
        v.write_at(&[9], 4 * BLOCK + 1).unwrap();
        assert_eq!(sum(&v, 4), None);
        // A filesystem not on a block boundary of its source.
        let shifted = Layout::new(4096, 3 * BLOCK, "0a1b2c3d-0000-0000-0000-000000000000");
        let src = Vouching(Bytes(bytes, "src"));
        let v = HvmView::new(Arc::new(src), shifted, vec![0u8; PART_OFFSET as usize]);
        assert_eq!(sum(&v, 2), None);
    }

    #[test]
    fn writing_what_is_there_makes_no_overlay_block() {
        let src = vec![1u8; 2 * BLOCK as usize];
        let v = view(src, 0, 2 * BLOCK);
        v.write_at(&[1, 1, 1], 2 * BLOCK + 7).unwrap();
        assert!(v.edited().is_empty());
        v.write_at(&[1, 2], 2 * BLOCK + 7).unwrap();
        assert_eq!(v.edited(), vec![2]);
    }

    #[test]
    fn writes_land_in_the_overlay_and_never_in_the_source() {
        let src = vec![1u8; 2 * BLOCK as usize];
        let v = view(src, 0, 2 * BLOCK);
        v.write_at(&[9, 9], 3 * BLOCK - 1).unwrap();
        assert_eq!(v.edited(), vec![2, 3]);
        assert_eq!(v.block(2).unwrap()[BLOCK as usize - 1], 9);
        assert_eq!(v.block(2).unwrap()[0], 1);
        assert_eq!(v.block(3).unwrap()[0], 9);
        assert_eq!(v.compose(3).unwrap()[0], 1);
        let mut b = [0u8; 3];
        v.read_exact_at(&mut b, 3 * BLOCK - 2).unwrap();
        assert_eq!(b, [1, 9, 9]);
        assert!(v.write_at(&[0], v.len()).is_err());
    }

    #[test]
    fn an_unaligned_filesystem_moves_byte_for_byte() {
        // bootstrap-vz: the filesystem at sector 63.
        let mut src = vec![0u8; 63 * 512 + BLOCK as usize];
        src[63 * 512] = 0xee;
        src[63 * 512 + BLOCK as usize - 1] = 0xdd;
        let v = view(src, 63 * 512, BLOCK);
        assert_eq!(v.block(2).unwrap()[0], 0xee);
        assert_eq!(v.block(2).unwrap()[BLOCK as usize - 1], 0xdd);
    }
}
