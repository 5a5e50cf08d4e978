//! Every result is a `Serialize` type rendered as a table or as JSON.

use comfy_table::{presets, ColumnConstraint, ContentArrangement, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
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

/// The width tables are laid out for when stdout is not a terminal.
pub const TABLE_WIDTH: u16 = 100;

pub fn table<T: Tabular>(items: &[T]) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(T::headers());
    // A pipe, or a terminal too narrow to say (a pty without a size): 100 columns.
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) || t.width().is_none_or(|w| w < 40) {
        t.set_width(TABLE_WIDTH);
    }
    for item in items {
        t.add_row(item.row());
    }
    if let Some(wrap) = T::wrapping_column() {
        for (i, col) in t.column_iter_mut().enumerate() {
            if i != wrap {
                col.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
    }
    t.to_string()
}

pub fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("amitool's output types serialize")
}

/// Render a list in the chosen format.
pub fn render<T: Serialize + Tabular>(items: &[T], format: Format) -> String {
    match format {
        Format::Json => json(items),
        Format::Table => table(items),
    }
}

/// Render one result (a verdict, a match) in the chosen format.
pub fn render_one<T: Serialize + Tabular>(item: &T, format: Format) -> String {
    match format {
        Format::Json => json(item),
        Format::Table => table(std::slice::from_ref(item)),
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
