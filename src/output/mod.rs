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
    /// The one column that may wrap (a name); the others keep their width.
    fn wrapping_column() -> Option<usize> {
        None
    }
}

/// The least room a wrapping column (free text) gets before the table turns
/// into one block per record.
const MIN_WRAP: usize = 24;

/// The terminal's width when stdout is one; `None` for a pipe or a file.
fn terminal_width() -> Option<usize> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return None;
    }
    // A pty without a size says nothing: keep to 80 columns.
    Some(Table::new().width().map_or(80, usize::from).max(20))
}

/// A table of `items`. On a terminal it fits the width: ids, names and paths
/// are never split; only the one free-text column wraps, and when even that
/// leaves it too little room, each record becomes a block of `HEADER: value`
/// lines. A pipe or a file gets the table unwrapped, one record a line.
pub fn table<T: Tabular>(items: &[T]) -> String {
    table_for(items, terminal_width())
}

fn table_for<T: Tabular>(items: &[T], width: Option<usize>) -> String {
    let headers = T::headers();
    let rows: Vec<Vec<String>> = items.iter().map(|i| i.row()).collect();
    let natural: Vec<usize> = (0..headers.len())
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .flat_map(|cell| cell.lines())
                .map(|l| l.chars().count())
                .chain([headers[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // comfy-table's NOTHING preset: one space each side of every cell.
    let total = |widths: &mut dyn Iterator<Item = usize>| widths.map(|w| w + 2).sum::<usize>();
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_header(headers.clone());
    for r in &rows {
        t.add_row(r.clone());
    }
    let Some(width) = width else {
        t.set_content_arrangement(ContentArrangement::Disabled);
        return t.to_string();
    };
    if total(&mut natural.iter().copied()) <= width {
        t.set_content_arrangement(ContentArrangement::Disabled);
        return t.to_string();
    }
    if let Some(wrap) = T::wrapping_column() {
        let fixed = total(
            &mut natural
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != wrap)
                .map(|(_, w)| *w),
        );
        if fixed + MIN_WRAP + 2 <= width {
            t.set_content_arrangement(ContentArrangement::Dynamic)
                .set_width(width as u16);
            for (i, col) in t.column_iter_mut().enumerate() {
                if i != wrap {
                    col.set_constraint(ColumnConstraint::ContentWidth);
                }
            }
            return t.to_string();
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

    #[test]
    fn too_narrow_becomes_blocks() {
        let name = "a-very-long-image-name-that-takes-most-of-the-line-by-itself-0001";
        let out = table_for(&[Row("ami-0123456789abcdef0", name, LONG)], Some(80));
        assert!(out.contains(&format!("    NAME: {name}")), "{out}");
        assert!(out.contains("   IMAGE: ami-0123456789abcdef0"), "{out}");
    }
}
