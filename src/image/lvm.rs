//! LVM2 physical volumes, read without device-mapper: the label, the
//! metadata area's current text, and where each logical volume's extents
//! lie in the partition. Only what the inspection needs: a logical volume
//! whose extents are one contiguous run on this physical volume can be read
//! (and edited) at a byte offset; any other is named as unreadable.
//!
//! On-disk format as LVM2 writes it (lib/label/label.h,
//! lib/format_text/layout.h): a `LABELONE` label in one of the first four
//! sectors, a pv_header with the data and metadata areas, an mda_header
//! (magic ` LVM2 x[5A%r0N*>`) whose first raw location points at the current
//! metadata text, in LVM's configuration syntax.

use crate::image::source::BlockSource;

const SECTOR: u64 = 512;
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const MDA_HEADER_SIZE: u64 = 512;
/// More metadata text than any real volume group writes.
const MAX_TEXT: u64 = 4 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LvmError {
    #[error("no LVM2 label in the first four sectors")]
    NoLabel,
    #[error("damaged LVM2 metadata: {0}")]
    Damaged(String),
    #[error("cannot read the partition: {0}")]
    Read(String),
}

/// A logical volume of the volume group on this physical volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogicalVolume {
    pub vg: String,
    pub name: String,
    /// Its bytes as one range of the partition, when its extents are contiguous on this PV.
    pub range: Option<(u64, u64)>,
    /// Why it cannot be read at an offset, when `range` is `None`.
    pub unreadable: Option<String>,
}

impl LogicalVolume {
    /// The name device-mapper gives it: `/dev/mapper/VG-LV`, dashes doubled.
    pub fn mapper_name(&self) -> String {
        format!(
            "/dev/mapper/{}-{}",
            self.vg.replace('-', "--"),
            self.name.replace('-', "--")
        )
    }
}

fn read_at(f: &dyn BlockSource, off: u64, len: u64) -> Result<Vec<u8>, LvmError> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, off)
        .map_err(|e| LvmError::Read(format!("{len} bytes at {off}: {e}")))?;
    Ok(buf)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether the partition at `offset` of `disk` starts with an LVM2 label.
pub fn is_pv(disk: &dyn BlockSource, offset: u64) -> bool {
    label(disk, offset).is_ok()
}

/// The label: the pv_header's offset (bytes from the partition's start).
fn label(f: &dyn BlockSource, part: u64) -> Result<u64, LvmError> {
    let head = read_at(f, part, 4 * SECTOR).map_err(|_| LvmError::NoLabel)?;
    for s in 0..4usize {
        let l = &head[s * 512..(s + 1) * 512];
        if &l[..8] == b"LABELONE" && &l[24..32] == b"LVM2 001" {
            let offset = u32_at(l, 20) as u64;
            if offset >= 512 - 40 {
                return Err(LvmError::Damaged(format!(
                    "pv_header offset {offset} past its sector"
                )));
            }
            return Ok(s as u64 * SECTOR + offset);
        }
    }
    Err(LvmError::NoLabel)
}

/// The physical volume's uuid and the current metadata text.
fn metadata(f: &dyn BlockSource, part: u64, part_len: u64) -> Result<(String, String), LvmError> {
    let hdr_at = label(f, part)?;
    let hdr = read_at(f, part + hdr_at, 512 - (hdr_at % 512))?;
    let uuid = String::from_utf8_lossy(&hdr[..32]).into_owned();
    // disk_locn lists after the uuid and device size: data areas, a zero
    // entry, metadata areas, a zero entry.
    let mut at = 40usize;
    let mut lists = 0;
    let mut mdas = vec![];
    while at + 16 <= hdr.len() && lists < 2 {
        let (off, size) = (u64_at(&hdr, at), u64_at(&hdr, at + 8));
        at += 16;
        if off == 0 && size == 0 {
            lists += 1;
        } else if lists == 1 {
            mdas.push((off, size));
        }
    }
    let (mda_off, mda_size) = *mdas
        .first()
        .ok_or_else(|| LvmError::Damaged("no metadata area".into()))?;
    if mda_off.checked_add(mda_size).is_none_or(|e| e > part_len) || mda_size < MDA_HEADER_SIZE {
        return Err(LvmError::Damaged(format!(
            "metadata area {mda_off}+{mda_size} outside the partition"
        )));
    }
    let mh = read_at(f, part + mda_off, MDA_HEADER_SIZE)?;
    if &mh[4..20] != MDA_MAGIC {
        return Err(LvmError::Damaged("metadata area without its magic".into()));
    }
    let (rel, size) = (u64_at(&mh, 40), u64_at(&mh, 48));
    if size == 0 || size > MAX_TEXT || rel < MDA_HEADER_SIZE || rel >= mda_size {
        return Err(LvmError::Damaged(format!(
            "metadata text {rel}+{size} does not fit its area of {mda_size}"
        )));
    }
    // The text area is circular after the header.
    let first = size.min(mda_size - rel);
    let mut text = read_at(f, part + mda_off + rel, first)?;
    if first < size {
        let rest = size - first;
        if MDA_HEADER_SIZE + rest > rel {
            return Err(LvmError::Damaged("metadata text wraps onto itself".into()));
        }
        text.extend(read_at(f, part + mda_off + MDA_HEADER_SIZE, rest)?);
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok((uuid, String::from_utf8_lossy(&text).into_owned()))
}

/// The logical volumes of the volume group on the partition at `offset`.
pub fn logical_volumes(
    disk: &dyn BlockSource,
    offset: u64,
    len: u64,
) -> Result<Vec<LogicalVolume>, LvmError> {
    let (pv_uuid, text) = metadata(disk, offset, len)?;
    let root = parse(&text)?;
    let (vg, body) = root
        .iter()
        .find_map(|(k, v)| match v {
            Node::Section(s) if s.iter().any(|(k, _)| k == "physical_volumes") => {
                Some((k.clone(), s))
            }
            _ => None,
        })
        .ok_or_else(|| LvmError::Damaged("no volume group in the metadata".into()))?;
    let num = |s: &[(String, Node)], k: &str| -> Result<u64, LvmError> {
        match get(s, k) {
            Some(Node::Num(n)) if *n >= 0 => Ok(*n as u64),
            _ => Err(LvmError::Damaged(format!("{vg}: no {k}"))),
        }
    };
    let extent = num(body, "extent_size")?.checked_mul(SECTOR);
    let extent = extent.ok_or_else(|| LvmError::Damaged("extent size overflows".into()))?;
    let pvs = match get(body, "physical_volumes") {
        Some(Node::Section(s)) => s,
        _ => return Err(LvmError::Damaged(format!("{vg}: no physical_volumes"))),
    };
    let plain = |s: &str| s.chars().filter(|c| *c != '-').collect::<String>();
    let (this_pv, pe_start) = pvs
        .iter()
        .find_map(|(name, n)| match n {
            Node::Section(s) => match get(s, "id") {
                Some(Node::Str(id)) if plain(id) == pv_uuid => {
                    Some((name.clone(), num(s, "pe_start").ok()?))
                }
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(|| LvmError::Damaged(format!("{vg}: this physical volume is not in it")))?;
    let pe_start = pe_start
        .checked_mul(SECTOR)
        .ok_or_else(|| LvmError::Damaged("pe_start overflows".into()))?;
    let lvs = match get(body, "logical_volumes") {
        Some(Node::Section(s)) => s.as_slice(),
        _ => &[],
    };
    let mut out = vec![];
    for (name, n) in lvs {
        let Node::Section(lv) = n else { continue };
        let (range, unreadable) = match lv_range(lv, &this_pv, extent, pe_start, len) {
            Ok(r) => (Some(r), None),
            Err(why) => (None, Some(why)),
        };
        out.push(LogicalVolume {
            vg: vg.clone(),
            name: name.clone(),
            range,
            unreadable,
        });
    }
    Ok(out)
}

/// One contiguous run of extents on `pv`, as (offset, length) in the partition.
fn lv_range(
    lv: &[(String, Node)],
    pv: &str,
    extent: u64,
    pe_start: u64,
    part_len: u64,
) -> Result<(u64, u64), String> {
    let mut segs: Vec<(u64, u64, u64)> = vec![];
    for (k, n) in lv {
        let Node::Section(s) = n else { continue };
        if !k.starts_with("segment") {
            continue;
        }
        let field = |f: &str| match get(s, f) {
            Some(Node::Num(v)) if *v >= 0 => Some(*v as u64),
            _ => None,
        };
        let kind = match get(s, "type") {
            Some(Node::Str(t)) => t.as_str(),
            _ => "",
        };
        if kind != "striped" || field("stripe_count") != Some(1) {
            return Err(format!("a {kind} segment (only linear volumes are read)"));
        }
        let (Some(start), Some(count)) = (field("start_extent"), field("extent_count")) else {
            return Err("a segment without its extents".into());
        };
        let (on, pe) = match get(s, "stripes") {
            Some(Node::List(l)) => match l.as_slice() {
                [Node::Str(p), Node::Num(pe)] if *pe >= 0 => (p.as_str(), *pe as u64),
                _ => return Err("a segment with an unreadable stripe list".into()),
            },
            _ => return Err("a segment without stripes".into()),
        };
        if on != pv {
            return Err(format!("extents on another physical volume ({on})"));
        }
        segs.push((start, count, pe));
    }
    segs.sort();
    let Some(&(first_le, _, first_pe)) = segs.first() else {
        return Err("no segments".into());
    };
    let mut next = (first_le, first_pe);
    let mut total = 0u64;
    for (le, count, pe) in &segs {
        if (*le, *pe) != next {
            return Err("extents that are not one contiguous run".into());
        }
        total = total.checked_add(*count).ok_or("extent count overflows")?;
        next = (le + count, pe + count);
    }
    if first_le != 0 {
        return Err("no first extent".into());
    }
    let off = first_pe
        .checked_mul(extent)
        .and_then(|o| o.checked_add(pe_start))
        .ok_or("offset overflows")?;
    let len = total.checked_mul(extent).ok_or("size overflows")?;
    if off.checked_add(len).is_none_or(|e| e > part_len) {
        return Err(format!("extents past the partition's end ({off}+{len})"));
    }
    Ok((off, len))
}

/// A value of LVM's configuration syntax.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Section(Vec<(String, Node)>),
    Str(String),
    Num(i64),
    List(Vec<Node>),
}

fn get<'a>(s: &'a [(String, Node)], key: &str) -> Option<&'a Node> {
    s.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Punct(char),
}

fn tokens(text: &str) -> Result<Vec<Tok>, LvmError> {
    let mut out = vec![];
    let mut it = text.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '#' => while it.next().is_some_and(|c| c != '\n') {},
            '{' | '}' | '[' | ']' | '=' | ',' => {
                out.push(Tok::Punct(c));
                it.next();
            }
            '"' => {
                it.next();
                let mut s = String::new();
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => s.extend(it.next()),
                        Some(c) => s.push(c),
                        None => return Err(LvmError::Damaged("an unterminated string".into())),
                    }
                }
                out.push(Tok::Str(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = it.peek() {
                    if c.is_whitespace() || "{}[]=,\"#".contains(c) {
                        break;
                    }
                    w.push(c);
                    it.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

/// The metadata text as a tree of sections.
fn parse(text: &str) -> Result<Vec<(String, Node)>, LvmError> {
    let toks = tokens(text)?;
    let mut at = 0;
    let items = section_items(&toks, &mut at, 0)?;
    if at != toks.len() {
        return Err(LvmError::Damaged("an unmatched }".into()));
    }
    Ok(items)
}

fn section_items(t: &[Tok], at: &mut usize, depth: usize) -> Result<Vec<(String, Node)>, LvmError> {
    if depth > 16 {
        return Err(LvmError::Damaged("sections nested too deep".into()));
    }
    let bad = |what: &str| LvmError::Damaged(what.to_string());
    let mut items = vec![];
    while let Some(tok) = t.get(*at) {
        let key = match tok {
            Tok::Punct('}') => break,
            Tok::Word(w) => w.clone(),
            _ => return Err(bad("a value where a name belongs")),
        };
        *at += 1;
        match t.get(*at) {
            Some(Tok::Punct('{')) => {
                *at += 1;
                let inner = section_items(t, at, depth + 1)?;
                if t.get(*at) != Some(&Tok::Punct('}')) {
                    return Err(bad("a section without its }"));
                }
                *at += 1;
                items.push((key, Node::Section(inner)));
            }
            Some(Tok::Punct('=')) => {
                *at += 1;
                let v = value(t, at)?;
                items.push((key, v));
            }
            _ => return Err(bad("a name without = or {")),
        }
    }
    Ok(items)
}

fn value(t: &[Tok], at: &mut usize) -> Result<Node, LvmError> {
    let bad = |what: &str| LvmError::Damaged(what.to_string());
    let tok = t.get(*at).ok_or_else(|| bad("a name without its value"))?;
    *at += 1;
    Ok(match tok {
        Tok::Str(s) => Node::Str(s.clone()),
        Tok::Word(w) => match w.parse::<i64>() {
            Ok(n) => Node::Num(n),
            Err(_) => Node::Str(w.clone()),
        },
        Tok::Punct('[') => {
            let mut list = vec![];
            loop {
                match t.get(*at) {
                    Some(Tok::Punct(']')) => {
                        *at += 1;
                        break;
                    }
                    Some(Tok::Punct(',')) => *at += 1,
                    Some(_) => list.push(value(t, at)?),
                    None => return Err(bad("a list without its ]")),
                }
            }
            Node::List(list)
        }
        _ => return Err(bad("a value that is not one")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VG: &str = r#"VolGroup00 {
	id = "ANQN5f-7tFz-9F0Y-731E-gYed-Ro6t-bFeVN9"
	seqno = 2
	status = ["RESIZEABLE", "READ", "WRITE"]
	extent_size = 8192		# 4 Megabytes
	physical_volumes {
		pv0 {
			id = "WOKJRA-lPDl-Q2bT-CAYI-zija-dx3m-mJ02wU"
			device = "/dev/loop0"	# Hint only
			pe_start = 2048
			pe_count = 15	# 60 Megabytes
		}
	}
	logical_volumes {
		rootVol {
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 8
				type = "striped"
				stripe_count = 1	# linear
				stripes = [
					"pv0", 2
				]
			}
		}
		swap-Vol {
			segment_count = 2
			segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 10] }
			segment2 { start_extent = 1 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 12] }
		}
	}
}
contents = "Text Format Volume Group"
version = 1
"#;

    #[test]
    fn parses_the_text_format() {
        let root = parse(VG).unwrap();
        let Some(Node::Section(vg)) = get(&root, "VolGroup00") else {
            panic!()
        };
        assert_eq!(get(vg, "extent_size"), Some(&Node::Num(8192)));
        assert_eq!(
            get(&root, "contents"),
            Some(&Node::Str("Text Format Volume Group".into()))
        );
        let Some(Node::Section(lvs)) = get(vg, "logical_volumes") else {
            panic!()
        };
        let Node::Section(root_lv) = &lvs[0].1 else {
            panic!()
        };
        assert_eq!(
            lv_range(root_lv, "pv0", 8192 * 512, 2048 * 512, 64 << 20),
            Ok(((1 << 20) + 2 * (4 << 20), 8 * (4 << 20)))
        );
        let Node::Section(swap) = &lvs[1].1 else {
            panic!()
        };
        assert!(lv_range(swap, "pv0", 8192 * 512, 2048 * 512, 64 << 20).is_err());
        assert!(lv_range(root_lv, "pv1", 8192 * 512, 2048 * 512, 64 << 20).is_err());
        assert!(lv_range(root_lv, "pv0", 8192 * 512, 2048 * 512, 8 << 20).is_err());
    }

    #[test]
    fn mapper_names_double_dashes() {
        let lv = LogicalVolume {
            vg: "vg-sys".into(),
            name: "root".into(),
            range: None,
            unreadable: None,
        };
        assert_eq!(lv.mapper_name(), "/dev/mapper/vg--sys-root");
    }

    #[test]
    fn hostile_text_is_an_error() {
        for t in [
            "a {",
            "a = ",
            "a = [1, 2",
            "\"x\" = 1",
            "a { b = \"x }",
            "}",
            &"a {".repeat(40),
        ] {
            assert!(parse(t).is_err(), "{t:?}");
        }
    }
}
