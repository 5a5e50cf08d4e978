//! Every result is a `Serialize` type rendered as a table or as JSON.

use comfy_table::{presets, ColumnConstraint, ContentArrangement, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    /// Columns for people (fitted to the terminal; never wrapped in a pipe).
    #[default]
    Table,
    /// JSON, stable for scripts.
    Json,
    /// Tab-separated, one record a line, no header (for grep, cut, awk).
    Text,
}

/// A result that can be shown as rows of a table.
pub trait Tabular {
    fn headers() -> Vec<&'static str>;
    fn row(&self) -> Vec<String>;
    /// The one column that may wrap (free text); the others keep their width.
    fn wrapping_column() -> Option<usize> {
        None
    }
    /// Columns that may be cut short with `…` on a narrow terminal (names:
    /// their head and tail stay), never ids or paths.
    fn elided_columns() -> Vec<usize> {
        vec![]
    }
    /// Columns a narrow terminal may leave out, the first named first (as
    /// kubectl's wide columns); `--output json|text` keep them.
    fn optional_columns() -> Vec<usize> {
        vec![]
    }
}

/// The least room a wrapping column (free text) gets before the table turns
/// into one block per record.
const MIN_WRAP: usize = 24;

/// The least room an elided column (a name) keeps.
const MIN_ELIDED: usize = 20;

/// The terminal's width when stdout is one; `None` for a pipe or a file.
fn terminal_width() -> Option<usize> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return None;
    }
    // A pty without a size says nothing: keep to 80 columns.
    Some(Table::new().width().map_or(80, usize::from).max(20))
}

/// A table of `items`. On a terminal it fits the width, one row per record
/// as docker and kubectl print them: a column that says the same for every
/// row (one region) is left out, names are cut short with `…`, then the
/// optional columns go; ids and paths are never split and only a free-text
/// column wraps. When even that does not fit, each record becomes a block
/// of `HEADER: value` lines. A pipe or a file gets the whole table, one
/// record a line, never cut.
pub fn table<T: Tabular>(items: &[T]) -> String {
    table_for(items, terminal_width())
}

/// Width of a cell: its longest line, in characters.
fn cell_width(cell: &str) -> usize {
    cell.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// `text` cut to `width` characters: its first `head` characters, `…`, and
/// as many of its last as fit.
fn elide_at(text: &str, width: usize, head: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width || width < 3 {
        return text.to_string();
    }
    let head = head.min(width - 1);
    let tail = width - 1 - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// A column's cells cut to `width`: at the one place that keeps the most of
/// them apart (the middle when several do as well), and a cell that would
/// still look like another's cut where it does not (names that differ only
/// in a date in the middle stay different).
fn elide_column(cells: &[&str], width: usize) -> Vec<String> {
    if width < 3 || cells.iter().all(|c| c.chars().count() <= width) {
        return cells.iter().map(|c| c.to_string()).collect();
    }
    let keep = width - 1;
    let middle = keep.div_ceil(2);
    let cut_all =
        |head: usize| -> Vec<String> { cells.iter().map(|c| elide_at(c, width, head)).collect() };
    let distinct = |v: &[String]| v.iter().collect::<std::collections::HashSet<_>>().len();
    let best = (0..=keep)
        .map(|h| {
            (
                distinct(&cut_all(h)),
                std::cmp::Reverse(h.abs_diff(middle)),
                h,
            )
        })
        .max()
        .map_or(middle, |(_, _, h)| h);
    let mut out = cut_all(best);
    for i in 0..cells.len() {
        let clashes = |v: &str, out: &[String]| {
            out.iter()
                .zip(cells)
                .enumerate()
                .any(|(j, (o, c))| j != i && o == v && *c != cells[i])
        };
        if !clashes(&out[i], &out) {
            continue;
        }
        let mut heads: Vec<usize> = (0..=keep).collect();
        heads.sort_by_key(|h| h.abs_diff(best));
        if let Some(v) = heads
            .into_iter()
            .map(|h| elide_at(cells[i], width, h))
            .find(|v| !clashes(v, &out))
        {
            out[i] = v;
        }
    }
    out
}

fn plain(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_header(headers.to_vec())
        .set_content_arrangement(ContentArrangement::Disabled);
    for r in rows {
        t.add_row(r.clone());
    }
    t.to_string()
}

fn table_for<T: Tabular>(items: &[T], width: Option<usize>) -> String {
    let headers = T::headers();
    let rows: Vec<Vec<String>> = items.iter().map(|i| i.row()).collect();
    let Some(width) = width else {
        return plain(&headers, &rows);
    };
    let natural: Vec<usize> = (0..headers.len())
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell_width(cell))
                .chain([headers[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // comfy-table's NOTHING preset: one space each side of every cell.
    let total =
        |cols: &[usize], w: &dyn Fn(usize) -> usize| cols.iter().map(|&c| w(c) + 2).sum::<usize>();
    let mut cols: Vec<usize> = (0..headers.len()).collect();
    if total(&cols, &|c| natural[c]) <= width {
        return plain(&headers, &rows);
    }
    let pick = |cols: &[usize], rows: &[Vec<String>]| -> (Vec<&str>, Vec<Vec<String>>) {
        (
            cols.iter().map(|&c| headers[c]).collect(),
            rows.iter()
                .map(|r| {
                    cols.iter()
                        .map(|&c| r.get(c).cloned().unwrap_or_default())
                        .collect()
                })
                .collect(),
        )
    };
    // 1. A column that says the same on every row says nothing.
    if rows.len() >= 2 {
        let varies = |c: usize| rows.iter().any(|r| r.get(c) != rows[0].get(c));
        let kept: Vec<usize> = cols.iter().copied().filter(|&c| varies(c)).collect();
        if !kept.is_empty() {
            cols = kept;
        }
    }
    let wrap = T::wrapping_column().filter(|w| cols.contains(w));
    let elided: Vec<usize> = T::elided_columns()
        .into_iter()
        .filter(|c| cols.contains(c))
        .collect();
    let mut optional = T::optional_columns().into_iter();
    loop {
        // 2. Names share what the other columns leave, down to MIN_ELIDED.
        let fixed: Vec<usize> = cols
            .iter()
            .copied()
            .filter(|c| !elided.contains(c) && Some(*c) != wrap)
            .collect();
        let wrap_room = if wrap.is_some() { MIN_WRAP + 2 } else { 0 };
        let left = width
            .saturating_sub(total(&fixed, &|c| natural[c]) + wrap_room)
            .saturating_sub(elided.iter().filter(|c| cols.contains(c)).count() * 2);
        let names: Vec<usize> = elided
            .iter()
            .copied()
            .filter(|c| cols.contains(c))
            .collect();
        let need: usize = names.iter().map(|&c| natural[c]).sum();
        let per = if names.is_empty() {
            0
        } else {
            left / names.len()
        };
        if names.is_empty() || need <= left || per >= MIN_ELIDED {
            let mut cut: Vec<Vec<String>> = rows.clone();
            for &c in &names {
                if natural[c] > per {
                    let cells: Vec<&str> = rows
                        .iter()
                        .map(|r| r.get(c).map_or("", String::as_str))
                        .collect();
                    for (r, v) in cut
                        .iter_mut()
                        .zip(elide_column(&cells, per.max(MIN_ELIDED)))
                    {
                        if let Some(cell) = r.get_mut(c) {
                            *cell = v;
                        }
                    }
                }
            }
            let name_width = |c: usize| {
                if names.contains(&c) {
                    natural[c].min(per.max(MIN_ELIDED)).max(headers[c].len())
                } else {
                    natural[c]
                }
            };
            let (h, r) = pick(&cols, &cut);
            if total(&cols, &name_width) <= width {
                return plain(&h, &r);
            }
            if let Some(w) = wrap {
                let others: Vec<usize> = cols.iter().copied().filter(|c| *c != w).collect();
                if total(&others, &name_width) + MIN_WRAP + 2 <= width {
                    let mut t = Table::new();
                    t.load_preset(presets::NOTHING).set_header(h.clone());
                    for row in &r {
                        t.add_row(row.clone());
                    }
                    t.set_content_arrangement(ContentArrangement::Dynamic)
                        .set_width(width as u16);
                    let wi = cols.iter().position(|c| *c == w);
                    for (i, col) in t.column_iter_mut().enumerate() {
                        if Some(i) != wi {
                            col.set_constraint(ColumnConstraint::ContentWidth);
                        }
                    }
                    return t.to_string();
                }
            }
        }
        // 3. Leave out the next optional column, if any is left.
        match optional
            .by_ref()
            .find(|c| cols.contains(c) && Some(*c) != wrap)
        {
            Some(c) => cols.retain(|x| *x != c),
            None => break,
        }
    }
    blocks(&headers, &rows, T::wrapping_column(), width)
}

/// `text` in lines of at most `width` characters, broken at spaces only (a
/// word longer than the line, an id or a path, stays whole).
fn word_wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = vec![];
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split(' ') {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push(line);
    }
    out
}

/// One block of `HEADER: value` lines per record, a blank line between; the
/// free-text column word-wrapped to the width.
fn blocks(headers: &[&str], rows: &[Vec<String>], wrap: Option<usize>, width: usize) -> String {
    let pad = headers.iter().map(|h| h.len()).max().unwrap_or(0);
    let room = width.saturating_sub(pad + 2).max(MIN_WRAP);
    let mut out = vec![];
    for r in rows {
        let mut block = vec![];
        for (i, (h, v)) in headers.iter().zip(r).enumerate() {
            let lines = if Some(i) == wrap {
                word_wrap(v, room)
            } else {
                v.lines().map(String::from).collect()
            };
            let mut lines = lines.into_iter();
            block.push(format!("{h:>pad$}: {}", lines.next().unwrap_or_default()));
            for l in lines {
                block.push(format!("{:>pad$}  {l}", ""));
            }
        }
        out.push(block.join("\n"));
    }
    out.join("\n\n")
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("amitool's output types serialize")
}

/// One record a line, its cells separated by tabs, no header, as the AWS
/// CLI's text output: a tab or a line break inside a cell becomes a space,
/// and an empty cell a dash, so every line has every column.
pub fn text<T: Tabular>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| {
            i.row()
                .iter()
                .map(|c| {
                    let c: String = c
                        .chars()
                        .map(|ch| {
                            if ch == '\t' || ch == '\n' || ch == '\r' {
                                ' '
                            } else {
                                ch
                            }
                        })
                        .collect();
                    if c.trim().is_empty() {
                        "-".to_string()
                    } else {
                        c
                    }
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One labelled line beside a table: `label: value`, or `label<TAB>value` as text.
pub fn labelled(format: Format, label: &str, value: &str) -> String {
    match format {
        Format::Text => format!("{label}\t{}", value.replace(['\t', '\n'], " ")),
        _ => format!("{label}: {value}"),
    }
}

/// Rows for people (a table) or for scripts (text); JSON is rendered whole elsewhere.
pub fn rows<T: Tabular>(items: &[T], format: Format) -> String {
    match format {
        Format::Text => text(items),
        _ => table(items),
    }
}

/// Render a list in the chosen format.
pub fn render<T: Serialize + Tabular>(items: &[T], format: Format) -> String {
    match format {
        Format::Json => json(items),
        Format::Table | Format::Text => rows(items, format),
    }
}

/// Render one result (a verdict, a match) in the chosen format.
pub fn render_one<T: Serialize + Tabular>(item: &T, format: Format) -> String {
    match format {
        Format::Json => json(item),
        Format::Table | Format::Text => rows(std::slice::from_ref(item), format),
    }
}

/// `None` as a dash, for table cells.
pub fn cell<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Print a rendered result on stdout. A closed pipe (`amitool list | head`)
/// ends the output quietly instead of panicking.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|_| out.flush()) {
        let _ = WRITE_FAILED.set(e.to_string());
    }
}

static WRITE_FAILED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why writing the output failed (a full disk behind `>`, a closed pipe), if it did:
/// the command then fails (exit 1) instead of succeeding silently.
pub fn write_failure() -> Option<&'static str> {
    WRITE_FAILED.get().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Row(&'static str, &'static str, &'static str);
    impl Tabular for Row {
        fn headers() -> Vec<&'static str> {
            vec!["IMAGE", "NAME", "PROBLEMS"]
        }
        fn row(&self) -> Vec<String> {
            vec![self.0.into(), self.1.into(), self.2.into()]
        }
        fn wrapping_column() -> Option<usize> {
            Some(2)
        }
    }

    const LONG: &str =
        "the default entry boots /boot/vmlinuz-6.1.0-99-amd64, which is not in the filesystem";

    #[test]
    fn text_is_one_tab_separated_line_per_record() {
        let out = text(&[
            Row("ami-0123456789abcdef0", "a name", "two\nlines\tand a tab"),
            Row("ami-0fedcba9876543210", "", LONG),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(
            lines[0],
            "ami-0123456789abcdef0\ta name\ttwo lines and a tab"
        );
        assert_eq!(lines[1].split('\t').collect::<Vec<_>>()[1], "-");
        assert!(!out.contains("IMAGE"), "no header: {out}");
    }

    #[test]
    fn a_pipe_never_wraps() {
        let out = table_for(&[Row("ami-0123456789abcdef0", "a-name", LONG)], None);
        assert_eq!(out.lines().count(), 2, "{out}");
    }

    #[test]
    fn only_the_free_text_wraps_and_ids_stay_whole() {
        let out = table_for(&[Row("ami-0123456789abcdef0", "a-name", LONG)], Some(80));
        assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
        assert!(out.contains("ami-0123456789abcdef0"), "{out}");
        assert!(out.lines().count() > 2, "{out}");
    }

    struct Img(&'static str, String, String, &'static str);
    impl Tabular for Img {
        fn headers() -> Vec<&'static str> {
            vec!["REGION", "IMAGE", "NAME", "KERNEL", "CREATED"]
        }
        fn row(&self) -> Vec<String> {
            vec![
                self.0.into(),
                self.1.clone(),
                self.2.clone(),
                self.3.into(),
                "2017-07-14".into(),
            ]
        }
        fn elided_columns() -> Vec<usize> {
            vec![2]
        }
        fn optional_columns() -> Vec<usize> {
            vec![4]
        }
    }

    fn images(regions: &[&'static str]) -> Vec<Img> {
        (0..8)
            .map(|i| {
                Img(
                    regions[i % regions.len()],
                    format!("ami-0123456789abcdef{i}"),
                    format!("amzn-ami-pv-2018.03.0.2019061{i}-x86_64-ebs-with-a-long-tail"),
                    "aki-919dcaf8",
                )
            })
            .collect()
    }

    #[test]
    fn eighty_columns_give_one_line_per_record() {
        let out = table_for(&images(&["eu-central-1"]), Some(80));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 9, "a header and 8 rows:\n{out}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{out}");
        // one region says nothing on every row; the same kernel neither
        assert!(
            !out.contains("REGION") && !out.contains("eu-central-1"),
            "{out}"
        );
        assert!(out.contains("ami-0123456789abcdef7"), "ids whole: {out}");
        assert!(
            out.contains("amzn-ami-pv") && out.contains('…'),
            "names cut: {out}"
        );
        // names that differ only in the middle stay apart
        let names: std::collections::HashSet<&str> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(names.len(), 8, "{out}");
    }

    #[test]
    fn two_regions_keep_the_region_and_drop_an_optional_column() {
        let out = table_for(&images(&["eu-central-1", "ap-southeast-2"]), Some(80));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 9, "{out}");
        assert!(lines.iter().all(|l| l.chars().count() <= 80), "{out}");
        assert!(out.contains("ap-southeast-2") && out.contains('…'), "{out}");
        let names: std::collections::HashSet<&str> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().nth(2).unwrap())
            .collect();
        assert_eq!(names.len(), 8, "{out}");
    }

    #[test]
    fn a_pipe_keeps_every_value_whole() {
        let imgs = images(&["eu-central-1"]);
        let out = table_for(&imgs, None);
        assert!(
            out.contains(&imgs[3].2) && out.contains("eu-central-1"),
            "{out}"
        );
        assert!(!out.contains('…'), "{out}");
    }

    #[test]
    fn elision_keeps_head_and_tail() {
        assert_eq!(elide_column(&["abcdefghij", "abc"], 5), ["ab…ij", "abc"]);
        assert_eq!(elide_column(&["short"], 12), ["short"]);
        assert_eq!(elide_column(&["αβγδεζηθ"], 4), ["αβ…θ"]);
        // one cut that would make two names alike moves for one of them
        let v = elide_column(&["name-2019-01-tail", "name-2019-02-tail"], 9);
        assert_ne!(v[0], v[1], "{v:?}");
    }

    #[test]
    fn too_narrow_becomes_blocks() {
        let name = "a-very-long-image-name-that-takes-most-of-the-line-by-itself-0001";
        let out = table_for(&[Row("ami-0123456789abcdef0", name, LONG)], Some(80));
        assert!(out.contains(&format!("    NAME: {name}")), "{out}");
        assert!(out.contains("   IMAGE: ami-0123456789abcdef0"), "{out}");
    }
}
