//! Where results go: text tables on stdout, or JSON Lines (`{"type","data"}`, the last of
//! type `result`). Progress and logs go to stderr.
//!
//! Nothing here panics on a closed stream (`deploy status | head -1`, a dead terminal): a
//! write that fails is dropped, so a promotion never dies halfway because nobody reads it.

use std::io::{IsTerminal, Write};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::cli::OutputFormat;

/// The output channel of one command.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Text or JSON.
    pub format: OutputFormat,
    /// `-q`.
    pub quiet: bool,
}

impl Output {
    /// JSON Lines?
    pub fn json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    /// Whether to draw live progress (text mode, stderr a terminal, not quiet).
    pub fn live(&self) -> bool {
        !self.json() && !self.quiet && std::io::stderr().is_terminal()
    }

    /// One JSON line `{"type": kind, "data": data}` on stdout (JSON mode only).
    pub fn record(&self, kind: &str, data: &impl Serialize) {
        if self.json() {
            let line = serde_json::json!({ "type": kind, "data": data });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// The final `result` line (JSON) — call exactly once per command.
    pub fn result(&self, data: &impl Serialize) {
        self.record("result", data);
    }

    /// Text on stdout (text mode only).
    pub fn text(&self, s: impl std::fmt::Display) {
        if !self.json() {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{s}");
        }
    }

    /// A note on stderr for people (text mode, not quiet).
    pub fn note(&self, s: impl std::fmt::Display) {
        if !self.json() && !self.quiet {
            stderr_line(s);
        }
    }
}

/// One line on stderr, whatever the output mode; a failed write is dropped, never a panic
/// (`eprintln!` panics when stderr is closed).
pub fn stderr_line(s: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

/// A table in the house style.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    // Wrap to the terminal only when its width is known and usable: a pseudo-terminal
    // without a size reports 0 columns, which would wrap every cell to one character.
    let arrangement = match t.width() {
        Some(w) if w >= 60 => comfy_table::ContentArrangement::Dynamic,
        _ => comfy_table::ContentArrangement::Disabled,
    };
    t.set_content_arrangement(arrangement);
    t.set_header(header.to_vec());
    t
}
