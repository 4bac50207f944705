//! Splits the watch stream's body (newline-delimited JSON, one event per line) into lines,
//! with a bound on the line length and work linear in the bytes received.
//!
//! A whole Application is one line and arrives in many chunks (a 5 MB Application in 8 KB
//! chunks is 640 of them). Scanning the buffer from its start on every chunk is quadratic
//! (about 1.6 G byte comparisons for that Application); [`Lines`] remembers how far it has
//! searched and only looks for the newline in bytes it has not seen. Consumed lines are not
//! drained one by one either (a memmove of the rest per line): the buffer is compacted once
//! per chunk.

use std::fmt;

/// A line longer than the limit: the stream is not what we expect (or an Application is
/// larger than the client allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineTooLong {
    /// The limit in bytes.
    pub(crate) limit: usize,
}

impl fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a line longer than {} bytes", self.limit)
    }
}

/// The line splitter of one stream connection.
#[derive(Debug)]
pub(crate) struct Lines {
    buffer: Vec<u8>,
    /// Start of the bytes not yet returned as a line.
    start: usize,
    /// Bytes from `start` on up to here hold no newline.
    scanned: usize,
    limit: usize,
    /// Bytes compared while looking for newlines (tests check the work is linear).
    #[cfg(test)]
    compared: usize,
}

impl Lines {
    /// A splitter that refuses lines longer than `limit` bytes (newline excluded).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
            #[cfg(test)]
            compared: 0,
        }
    }

    /// Appends a chunk of the body. Call [`Lines::next_line`] until it returns `None`
    /// before pushing the next chunk.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            // Everything before `start` was returned already: drop it once per chunk.
            self.buffer.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete line (without its newline), `None` when more bytes are needed, or
    /// an error when the unfinished line is already over the limit.
    pub(crate) fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        let unseen = &self.buffer[self.scanned..];
        match unseen.iter().position(|b| *b == b'\n') {
            Some(at) => {
                #[cfg(test)]
                {
                    self.compared += at + 1;
                }
                let end = self.scanned + at;
                let line_start = self.start;
                self.start = end + 1;
                self.scanned = self.start;
                if end - line_start > self.limit {
                    return Some(Err(LineTooLong { limit: self.limit }));
                }
                Some(Ok(&self.buffer[line_start..end]))
            }
            None => {
                #[cfg(test)]
                {
                    self.compared += unseen.len();
                }
                self.scanned = self.buffer.len();
                if self.buffer.len() - self.start > self.limit {
                    return Some(Err(LineTooLong { limit: self.limit }));
                }
                None
            }
        }
    }

    /// Bytes held for an unfinished line.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.buffer.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(lines: &mut Lines) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(line) = lines.next_line() {
            out.push(String::from_utf8(line.expect("within the limit").to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut lines = Lines::new(100);
        lines.push(b"ab");
        assert!(all(&mut lines).is_empty());
        lines.push(b"c\nde\n\nf");
        assert_eq!(all(&mut lines), ["abc", "de", ""]);
        lines.push(b"g\n");
        assert_eq!(all(&mut lines), ["fg"]);
        assert_eq!(lines.pending(), 0);
    }

    #[test]
    fn a_big_line_in_many_small_chunks_is_scanned_once() {
        // One 1 MB line in 1 KB chunks: before, every chunk rescanned the buffer from its start
        // (about 512 M comparisons); now each byte is looked at once.
        let line = vec![b'x'; 1 << 20];
        let mut lines = Lines::new(2 << 20);
        let mut got = Vec::new();
        for chunk in line.chunks(1024) {
            lines.push(chunk);
            got.extend(all(&mut lines));
        }
        lines.push(b"\n");
        got.extend(all(&mut lines));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 1 << 20);
        assert_eq!(lines.compared, (1 << 20) + 1);
    }

    #[test]
    fn a_line_over_the_limit_fails_before_its_newline_arrives() {
        let mut lines = Lines::new(8);
        lines.push(b"12345678");
        assert!(lines.next_line().is_none());
        lines.push(b"9");
        assert_eq!(lines.next_line(), Some(Err(LineTooLong { limit: 8 })));
    }

    #[test]
    fn a_complete_line_over_the_limit_fails() {
        let mut lines = Lines::new(3);
        lines.push(b"ok\ntoolong\n");
        assert_eq!(lines.next_line(), Some(Ok(&b"ok"[..])));
        assert_eq!(lines.next_line(), Some(Err(LineTooLong { limit: 3 })));
    }
}
