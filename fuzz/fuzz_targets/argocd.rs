//! Fuzzes the Argo CD decoders, the first byte choosing which (so that one 10-minute run
//! covers them all): an Application (decoded, seen through the port, the override patches built
//! from it and its history read back), an ApplicationSet, the watch stream's body, the
//! `syncwindows` answer, and an error body. Any answer is a value or an error, never a panic.

#![no_main]

use deploy_argocd::rest::fuzzing;
use deploy_argocd::windows;
use deploy_argocd::wire::{self, TagParameters};
use deploy_core::port::OverrideValue;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => application(rest),
        1 => {
            if let Ok(set) = serde_json::from_slice::<wire::ApplicationSet>(rest) {
                let _ = set.to_port();
            }
        }
        2 => {
            // The next byte is the chunk size; a small line limit reaches the "too long" path.
            let Some((&chunk, body)) = rest.split_first() else {
                return;
            };
            let _ = fuzzing::stream(body, usize::from(chunk), 4096);
        }
        3 => {
            if let Ok(answer) = serde_json::from_slice::<Value>(rest) {
                if let Ok(windows) = windows::response(&answer) {
                    // What the engine asks of them: is any active now, and until when.
                    let now = jiff::Timestamp::from_second(1_780_000_000).expect("a valid time");
                    let hour = std::time::Duration::from_secs(3600);
                    let _ = deploy_core::window::verdict(&windows.assigned, now, true, hour);
                }
            }
        }
        _ => {
            let Some((&status, body)) = rest.split_first() else {
                return;
            };
            let _ = fuzzing::error_body(300 + u16::from(status), body);
        }
    }
});

fn application(bytes: &[u8]) {
    let Ok(app) = serde_json::from_slice::<wire::Application>(bytes) else {
        return;
    };
    let tags = TagParameters(vec!["image.tag".into()]);
    let _ = app.to_port(&tags);
    let values = [
        OverrideValue::Helm {
            parameter: "image.tag".into(),
            value: "v2".into(),
            digests: [("image.digest".to_owned(), "sha256:00".to_owned())].into(),
        },
        OverrideValue::Kustomize {
            images: vec!["r/api:v2".into(), "r/worker:v2@sha256:00".into()],
        },
    ];
    for value in &values {
        let _ = app.override_patch(value);
        if let Ok(raw) = serde_json::from_slice::<Value>(bytes) {
            let _ = wire::guarded_override_patch(&raw["spec"], value);
        }
    }
    if let Some(status) = &app.status {
        for entry in &status.history {
            let _ = entry.override_value(&tags);
        }
    }
}
