//! Fuzzes the Prometheus answer decoder (`/api/v1/query`): any status and body are values or
//! an error, never a panic. The first two bytes are the HTTP status.

#![no_main]

use deploy_metrics::prometheus::read_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, body @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*a, *b]) % 600;
    let _ = read_answer("http://prometheus.fuzz", status, None, body);
});
