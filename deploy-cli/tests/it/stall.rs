//! Output that stops draining never stalls a run (issue 17 item 4, finding N1): the real
//! binary promotes prod in the sandbox with `--output json`, `-v` and eight webhook targets
//! answering 200, while its stdout and stderr are pipes that nobody reads and that are full,
//! so that every write to either would block: from the moment it says it holds the lock (the
//! engine's own writes: events, notification reports, log lines from tokio workers), or from
//! the start (the plan line, before the lock). The run must still reach its end: the end
//! record written, the lock released, the process gone, within its usual time (the promotion,
//! then at most `EXIT_STALL` waiting for output that cannot be written).

use std::io::{BufRead, BufReader, Write};

use wait_timeout::ChildExt;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::notify::config_with_notify;
use crate::support::{DEADLINE, SECOND, Sandbox};

const SECRET_VAR: &str = "DEPLOY_IT_STALL_SECRET";
/// Webhook targets: each delivery report is written from the channel's tokio task, so more
/// targets than the runtime has workers (one per core) could block all of them on old code.
const TARGETS: usize = 8;

/// Linux's pipe capacity (16 pages).
const PIPE: usize = 1 << 16;

/// Fills `pipe` until a write blocks (then stays blocked until the pipe's reader is gone).
fn fill(mut pipe: std::io::PipeWriter) {
    std::thread::spawn(move || {
        let block = vec![b'#'; PIPE];
        while pipe.write_all(&block).is_ok() {}
    });
}

/// When the pipes stop draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// Before the run writes anything: they are full from the start.
    AtStart,
    /// Once the run holds the lock.
    Locked,
}

#[test]
fn output_that_stops_draining_once_the_lock_is_held_never_stalls_the_run() {
    promote_with_stalled_output(When::Locked);
}

#[test]
fn output_full_from_the_start_never_stalls_the_run() {
    promote_with_stalled_output(When::AtStart);
}

fn promote_with_stalled_output(when: When) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        server
    });
    let targets: Vec<String> = (0..TARGETS)
        .map(|i| {
            format!(
                "{{ webhook = \"{}/hook{i}\", secret_env = \"{SECRET_VAR}\" }}",
                server.uri()
            )
        })
        .collect();
    let configs = tempfile::tempdir().unwrap();
    let s = Sandbox::with_config(config_with_notify(
        configs.path(),
        &format!("[{}]", targets.join(", ")),
    ));
    s.wait_staging_healthy(SECOND);

    let (out_reader, out_writer) = std::io::pipe().unwrap();
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    let (out_filler, err_filler) = (
        out_writer.try_clone().unwrap(),
        err_writer.try_clone().unwrap(),
    );
    let mut cmd = s.command(&[
        "--output", "json", "-v", "promote", "--env", "prod", "--yes",
    ]);
    cmd.env(SECRET_VAR, "stall-test-secret")
        .stdout(out_writer)
        .stderr(err_writer);
    if when == When::AtStart {
        // A pipe holds 64 KiB: written at once into the empty pipes, that fills them.
        for mut pipe in [&out_filler, &err_filler] {
            pipe.write_all(&vec![b'#'; PIPE]).unwrap();
        }
    }
    let mut child = cmd.spawn().expect("starting deploy");
    drop(cmd);

    let reader = match when {
        When::AtStart => BufReader::new(out_reader),
        When::Locked => {
            // Read stdout until the run holds the lock; from then on nobody reads either
            // stream. (On a thread: the fillers keep the pipe open, so a run that dies first
            // gives no EOF.)
            let (held_tx, held) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(out_reader);
                let mut line = String::new();
                while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line.contains("\"lock_acquired\"") {
                        let _ = held_tx.send(lines);
                        return;
                    }
                    line.clear();
                }
            });
            held.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("deploy did not say it took the lock within {DEADLINE:?}");
            })
        }
    };
    fill(out_filler);
    fill(err_filler);

    let status = child.wait_timeout(DEADLINE).expect("waiting for deploy");
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let state = s.state().expect("the sandbox state");
    let records = state["audit"].as_array().cloned().unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!(
            "deploy did not end within {DEADLINE:?} with its output stalled; audit trail: {records:#?}"
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "the promotion succeeded: {records:#?}"
    );
    assert_eq!(records.len(), 2, "a start and an end record: {records:#?}");
    assert_eq!(records[1]["outcome"], "succeeded", "{records:#?}");
    let leases = &state["leases"];
    assert!(
        leases.as_object().is_none_or(|l| l.is_empty()),
        "the lock is released: {leases:#}"
    );
    s.assert_runs("prod", SECOND);
    // The readers live until here: the stalled streams stay open (not closed) to the end.
    drop((reader, err_reader));
}
