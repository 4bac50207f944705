//! End-to-end tests of the `deploy` binary over the sandbox: every test runs
//! the real binary in its own temporary directory, so each one starts from a fresh
//! in-memory world kept in that directory's `.deploy-sandbox/`.

mod bad_input;
mod checks;
mod cli;
mod docs;
mod e2e;
mod lock_s3;
mod manifests;
mod notify;
mod output;
mod prometheus;
mod promote;
mod release;
mod resume;
mod secrets;
mod stall;
mod support;
mod trail;
mod unlock;
mod watch;
mod zoned_windows;
