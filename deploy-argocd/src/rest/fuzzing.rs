//! The REST backend's private decoders, reachable by the fuzz targets in `fuzz/` (the
//! `fuzzing` feature): each runs the code the backend runs on an answer, nothing more.

use deploy_core::{Error, port};
use reqwest::{StatusCode, Url};

use super::call::{Target, map_error};
use super::lines::Lines;
use crate::wire::{self, TagParameters};

/// A watch stream's body, arriving in chunks of `chunk` bytes (at least 1), split into lines
/// of at most `limit` bytes and decoded as `stream_once` does: each non-empty line a
/// [`wire::StreamLine`], the Application of each event in the port's view. Stops where
/// `stream_once` stops: at a line over the limit, a malformed line or a stream error.
pub fn stream(body: &[u8], chunk: usize, limit: usize) -> Vec<port::Application> {
    let tags = TagParameters(vec!["image.tag".into()]);
    let mut lines = Lines::new(limit);
    let mut out = Vec::new();
    for piece in body.chunks(chunk.max(1)) {
        lines.push(piece);
        while let Some(line) = lines.next_line() {
            let Ok(line) = line.map(<[u8]>::trim_ascii) else {
                return out;
            };
            if line.is_empty() {
                continue;
            }
            let Ok(parsed) = serde_json::from_slice::<wire::StreamLine>(line) else {
                return out;
            };
            if parsed.error.is_some() {
                return out;
            }
            if let Some(event) = parsed.result {
                out.push(event.application.to_port(&tags));
            }
        }
    }
    out
}

/// The error an answer with HTTP `status` and `body` becomes (`map_error`), for a named
/// Application.
pub fn error_body(status: u16, body: &[u8]) -> Error {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let server = Url::parse("https://argocd.example").expect("a valid URL");
    map_error(status, body, &Target::app("fuzz"), None, &server)
}
