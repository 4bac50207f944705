//! Where results go: text tables on stdout, or JSON Lines (`{"type","data"}`, the last of
//! type `result`). Progress and logs go to stderr.
//!
//! Nothing here blocks its caller (issue 17, N1): every line, log lines included, is queued
//! for a writer thread of its own per stream, so a pipe that stops draining stalls only that
//! thread, never a tokio worker or the engine (which then still watches, renews, rolls back
//! and records). The queues are bounded: past [`QUEUE`] lines waiting on one stream, lines
//! are dropped and counted, and the end of the command says how many. [`finish`] waits for
//! what is queued, with a bound for the commands that hold a lock ([`EXIT_STALL`]).
//!
//! A write that fails is dropped, never a panic (`deploy status | head -1`, a dead
//! terminal). Every line passes [`without_userinfo`] on its way out, so no URL the tool
//! prints carries a user name or password, whoever formatted it.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use crate::cli::OutputFormat;

/// How many lines may wait for one stream before new ones are dropped: what a reader that
/// went away costs in memory, even over days of `deploy watch`.
pub(crate) const QUEUE: usize = 16_384;

/// How long the end of a command that holds a lock or a lease (`promote`, `rollback`,
/// `watch`) waits for its output once nothing more can be written: a reader that stopped
/// reading (a paused `| jq`, a stuck CI log pipe) never keeps the exit code from CI. A slow
/// reader that still takes some output keeps it waiting. Other commands wait for their
/// reader as any Unix filter does (a pager may pause for as long as it likes).
pub(crate) const EXIT_STALL: Duration = Duration::from_secs(10);

/// How long a line waits for the lines queued before it on the other stream, so that a
/// terminal shows stdout and stderr in the order they were made. A stream that did not move
/// for this long is not waited for again until it moves.
const ORDER_WAIT: Duration = Duration::from_millis(200);

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
            send(Stream::Out, format!("{line}\n"));
        }
    }

    /// The final `result` line (JSON) — call exactly once per command.
    pub fn result(&self, data: &impl Serialize) {
        self.record("result", data);
    }

    /// Text on stdout (text mode only).
    pub fn text(&self, s: impl std::fmt::Display) {
        if !self.json() {
            send(Stream::Out, format!("{s}\n"));
        }
    }

    /// A note on stderr for people (text mode, not quiet).
    pub fn note(&self, s: impl std::fmt::Display) {
        if !self.json() && !self.quiet {
            stderr_line(s);
        }
    }
}

/// One line on stderr, whatever the output mode.
pub(crate) fn stderr_line(s: impl std::fmt::Display) {
    send(Stream::Err, format!("{s}\n"));
}

/// Bytes on stdout as they are (`deploy completions`).
pub(crate) fn stdout_bytes(bytes: &[u8]) {
    send(Stream::Out, String::from_utf8_lossy(bytes).into_owned());
}

/// A question on stderr, shown after everything queued before it: blocks until then (the
/// caller is about to read the answer from a terminal anyway).
pub(crate) fn prompt(s: impl std::fmt::Display) {
    send(Stream::Err, s.to_string());
    drain(None);
}

/// The writer of log lines (`tracing_subscriber`'s `with_writer(|| LogWriter)`): each
/// formatted event is queued for stderr's thread, and dropped when that queue is full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        send(Stream::Err, String::from_utf8_lossy(buf).into_owned());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until everything queued so far is written, then says on stderr how many lines were
/// dropped, if any. With `stall`, gives up once nothing could be written for that long.
pub(crate) fn finish(stall: Option<Duration>) {
    let dropped = lock().dropped;
    if dropped[Stream::Out as usize] > 0 {
        stderr_line(format_args!(
            "{} line(s) of output were dropped: stdout was not read",
            dropped[Stream::Out as usize]
        ));
    }
    if dropped[Stream::Err as usize] > 0 {
        stderr_line(format_args!(
            "{} line(s) of logs were dropped: stderr was not read",
            dropped[Stream::Err as usize]
        ));
    }
    drain(stall);
}

/// Waits until every line queued before the call is written; with `stall`, gives up once
/// neither stream could write anything for that long.
pub(crate) fn drain(stall: Option<Duration>) {
    let mut p = lock();
    let target = p.queued;
    let (mut seen, mut since) = (p.written, Instant::now());
    while p.written[0] < target[0] || p.written[1] < target[1] {
        p = match stall {
            None => MOVED.wait(p).unwrap_or_else(PoisonError::into_inner),
            Some(stall) => {
                let left = stall.saturating_sub(since.elapsed());
                if left.is_zero() {
                    return;
                }
                let p = MOVED
                    .wait_timeout(p, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                if p.written != seen {
                    (seen, since) = (p.written, Instant::now());
                }
                p
            }
        };
    }
}

/// `text` with the user name and password of every URL in it replaced by `***`
/// (`https://user:pw@host/x` → `https://***@host/x`).
pub(crate) fn without_userinfo(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(ends_authority).unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether `c` ends a URL's authority (or the URL, in text or JSON around it).
fn ends_authority(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '\\' | '`') || c.is_whitespace()
}

/// How a URL is named in output: its scheme, host (and port) and first path segment, never
/// its user name, password, later path segments or query, any of which may hold a token
/// (`https://hooks.example.com/deploy/T0/secret?k=1` → `https://hooks.example.com/deploy/…`).
pub(crate) fn url_label(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = rest[..end].rsplit('@').next().unwrap_or_default();
    let path = rest[end..].split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.split('/').skip(1);
    let first = segments.next().unwrap_or_default();
    let more = if segments.next().is_some() {
        "/…"
    } else {
        ""
    };
    let slash = if path.is_empty() { "" } else { "/" };
    let scheme = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    format!("{scheme}{host}{slash}{first}{more}")
}

/// A table in the house style.
pub(crate) fn table(header: &[&str]) -> Table {
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

/// stdout or stderr (the index of its counters).
#[derive(Debug, Clone, Copy)]
enum Stream {
    Out = 0,
    Err = 1,
}

impl Stream {
    fn other(self) -> usize {
        1 - self as usize
    }
}

/// One queued line, and how many lines of the other stream were queued before it.
struct Line {
    text: String,
    after: u64,
}

/// Lines per stream: queued, written (or failed), dropped; and the written count at which
/// a stream was last found stalled.
struct Progress {
    queued: [u64; 2],
    written: [u64; 2],
    dropped: [u64; 2],
    stalled_at: [Option<u64>; 2],
}

static PROGRESS: Mutex<Progress> = Mutex::new(Progress {
    queued: [0; 2],
    written: [0; 2],
    dropped: [0; 2],
    stalled_at: [None; 2],
});
/// Signalled whenever a line is written.
static MOVED: Condvar = Condvar::new();
/// The queues of the two writer threads, started on first use.
static QUEUES: LazyLock<[SyncSender<Line>; 2]> =
    LazyLock::new(|| [start(Stream::Out), start(Stream::Err)]);

fn lock() -> MutexGuard<'static, Progress> {
    PROGRESS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Queues `text` for `stream`'s thread; never blocks (drops the line when the queue is full).
fn send(stream: Stream, text: String) {
    let text = match without_userinfo(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(t) => t,
    };
    let queue = &QUEUES[stream as usize];
    let mut p = lock();
    let after = p.queued[stream.other()];
    match queue.try_send(Line { text, after }) {
        Ok(()) => p.queued[stream as usize] += 1,
        Err(_) => p.dropped[stream as usize] += 1,
    }
}

/// Starts `stream`'s writer thread.
fn start(stream: Stream) -> SyncSender<Line> {
    let (tx, rx) = sync_channel(QUEUE);
    let name = match stream {
        Stream::Out => "deploy-stdout",
        Stream::Err => "deploy-stderr",
    };
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || match stream {
            Stream::Out => write_all(stream, &rx, std::io::stdout()),
            Stream::Err => write_all(stream, &rx, std::io::stderr()),
        });
    if spawned.is_err() {
        // No thread, no output: every line is dropped (and counted), nothing blocks.
        let (tx, _) = sync_channel(0);
        return tx;
    }
    tx
}

/// Writes the lines of `rx` to `to`, each after the lines queued before it on the other
/// stream (within [`ORDER_WAIT`]).
fn write_all(stream: Stream, rx: &Receiver<Line>, mut to: impl Write) {
    for line in rx {
        wait_for_other(stream, line.after);
        let _ = to.write_all(line.text.as_bytes()).and_then(|()| to.flush());
        lock().written[stream as usize] += 1;
        MOVED.notify_all();
    }
}

/// Waits until the other stream has written `n` lines, unless it is stalled.
fn wait_for_other(stream: Stream, n: u64) {
    let other = stream.other();
    let mut p = lock();
    let deadline = Instant::now() + ORDER_WAIT;
    while p.written[other] < n && p.stalled_at[other] != Some(p.written[other]) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            p.stalled_at[other] = Some(p.written[other]);
            return;
        }
        p = MOVED
            .wait_timeout(p, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Says which records of a trail could not be read (each was skipped, the command goes on).
pub(crate) fn warn_skipped(warnings: &[String]) {
    for w in warnings {
        tracing::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_redacted_wherever_a_url_is() {
        #[track_caller]
        fn check(text: &str, expect: &str) {
            assert_eq!(without_userinfo(text), expect);
        }
        check(
            "POST http://user:pa55word@h:8080/deploy?x=1 failed",
            "POST http://***@h:8080/deploy?x=1 failed",
        );
        check(
            r#"{"server":"https://tok@argocd.example.com","n":"a@b"}"#,
            r#"{"server":"https://***@argocd.example.com","n":"a@b"}"#,
        );
        check(
            "two: s3://k:s@b/p and https://x/y@z",
            "two: s3://***@b/p and https://x/y@z",
        );
        check("mail ops@example.com", "mail ops@example.com");
        check("no url here", "no url here");
        check("trailing https://", "trailing https://");
    }

    #[test]
    fn a_url_label_keeps_the_host_and_first_segment_only() {
        #[track_caller]
        fn check(url: &str, expect: &str) {
            assert_eq!(url_label(url), expect);
        }
        check(
            "http://user:pa55word@host:8080/deploy?token=abc",
            "http://host:8080/deploy",
        );
        check(
            "https://hooks.example.com/hook/PATHSECRET/x#f",
            "https://hooks.example.com/hook/…",
        );
        check("https://h.example.com/", "https://h.example.com/");
        check("https://h.example.com", "https://h.example.com");
        check("https://h.example.com?k=1", "https://h.example.com");
    }
}
