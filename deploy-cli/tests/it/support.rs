//! The harness: a sandbox in a temporary directory, a way to run `deploy` in it with a
//! deadline, and readers for its JSON Lines output.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use wait_timeout::ChildExt;

/// The release every environment of a fresh sandbox runs.
pub const FIRST: &str = "0a1b2c3d4e5f";
/// The release CI has just pushed to staging (and debug) in a fresh sandbox.
pub const SECOND: &str = "1b2c3d4e5f60";

/// How long a command may run. A promotion in the sandbox takes about 20 s (two waves of
/// a 4 s sync and a 5 s soak); a rollback after a failure about as long again. A command
/// that outlives this is a hang, and the test fails instead of blocking the suite.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The example configuration shipped with the repository.
pub fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/deploy.toml")
}

/// What one finished command printed, and how it exited.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub args: String,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn expect_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(want),
            "`deploy {}` exited {:?}, want {want}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The JSON Lines of stdout, each checked to be a `{"type","data"}` envelope, the last
    /// of type `result`, and nothing else on stdout.
    #[track_caller]
    pub fn lines(&self) -> Vec<Value> {
        json_lines(&self.args, &self.stdout)
    }

    /// The `data` of the final `result` line.
    #[track_caller]
    pub fn result(&self) -> Value {
        let mut lines = self.lines();
        lines.pop().expect("at least the result line")["data"].take()
    }
}

/// Parses `stdout` as JSON Lines in the `{"type","data"}` envelope (docs/commands.md), failing on
/// any line that is not, and on a last line that is not the `result`.
#[track_caller]
pub fn json_lines(what: &str, stdout: &str) -> Vec<Value> {
    assert!(
        !stdout.trim().is_empty(),
        "`deploy {what}` printed nothing on stdout"
    );
    assert!(
        stdout.ends_with('\n'),
        "`deploy {what}`: stdout does not end with a newline"
    );
    let lines: Vec<Value> = stdout
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "`deploy {what}`: stdout line {} is not JSON ({e}): {line}",
                    i + 1
                )
            });
            let obj = v.as_object().unwrap_or_else(|| {
                panic!("`deploy {what}`: line {} is not an object: {line}", i + 1)
            });
            assert!(
                obj.get("type").is_some_and(Value::is_string) && obj.contains_key("data"),
                "`deploy {what}`: line {} lacks the {{\"type\",\"data\"}} envelope: {line}",
                i + 1
            );
            assert_eq!(
                obj.len(),
                2,
                "`deploy {what}`: line {} has keys beside type and data: {line}",
                i + 1
            );
            v
        })
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types.last(),
        Some(&"result"),
        "`deploy {what}`: the last line is not the result: {types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "result").count(),
        1,
        "`deploy {what}`: exactly one result line: {types:?}"
    );
    lines
}

/// One environment × cluster row of `deploy status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Cluster.
    pub cluster: String,
    /// The tag the Application asks for.
    pub desired: String,
    /// The tag its live images run.
    pub live: String,
    /// Sync status.
    pub sync: String,
    /// Health.
    pub health: String,
    /// The whole row, to compare before and after.
    pub raw: Value,
}

/// A sandbox of its own: a temporary directory the commands run in.
pub struct Sandbox {
    dir: TempDir,
    config: PathBuf,
}

impl Sandbox {
    /// A fresh sandbox (the world is seeded by the first command) over the example configuration.
    pub fn new() -> Self {
        Self::with_config(example_config())
    }

    /// A fresh sandbox over `config`.
    pub fn with_config(config: PathBuf) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("deploy-it-")
            .tempdir()
            .expect("creating a temporary directory");
        std::fs::create_dir(dir.path().join("work")).expect("creating the work directory");
        Self { dir, config }
    }

    /// The working directory of the commands (where `.deploy-sandbox/` lives).
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A scratch path outside the working directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `deploy` without any global option, in this sandbox's directory, with stdin closed
    /// (not a terminal) and no environment variable that would change what it does.
    pub fn bare(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy"));
        cmd.args(args)
            .current_dir(self.work())
            .stdin(Stdio::null())
            .env_remove("DEPLOY_CONFIG")
            .env_remove("DEPLOY_AUDIT_LOG")
            .env_remove("GITHUB_REF_NAME")
            .env_remove("ARGOCD_SERVER")
            .env_remove("ARGOCD_AUTH_TOKEN")
            .env_remove("RUST_LOG")
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    /// `deploy --sandbox --config <config> ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare(&["--sandbox", "--config"]);
        cmd.arg(&self.config).args(args);
        cmd
    }

    /// Runs `deploy --sandbox ARGS` to the end (within [`DEADLINE`]).
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Run {
        let cmd = self.command(args);
        self.finish(cmd, args, DEADLINE)
    }

    /// Runs `deploy --sandbox --output json ARGS` to the end.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Run {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Runs `cmd` with stdout and stderr in files, killing it after `deadline`.
    #[track_caller]
    pub fn finish(&self, cmd: Command, args: &[&str], deadline: Duration) -> Run {
        let background = self.spawn(cmd, args);
        background.wait(deadline)
    }

    /// Starts `cmd` with its output going to files in the sandbox's scratch space.
    pub fn spawn(&self, mut cmd: Command, args: &[&str]) -> Background {
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = self.scratch(&format!("stdout-{n}"));
        let err = self.scratch(&format!("stderr-{n}"));
        cmd.stdout(File::create(&out).expect("creating the stdout file"))
            .stderr(File::create(&err).expect("creating the stderr file"));
        let child = cmd.spawn().expect("starting deploy");
        Background {
            child,
            args: args.join(" "),
            out,
            err,
        }
    }

    /// The rows of `deploy status --env ENV`.
    #[track_caller]
    pub fn status(&self, env: &str) -> Vec<Row> {
        let run = self.json(&["status", "--env", env]);
        run.expect_code(0);
        let apps = run.result()["applications"]
            .as_array()
            .expect("status result has applications")
            .clone();
        let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("-").to_owned();
        apps.into_iter()
            .map(|a| Row {
                cluster: s(&a, "cluster"),
                desired: s(&a, "desired"),
                live: s(&a, "live"),
                sync: s(&a, "sync"),
                health: s(&a, "health"),
                raw: a,
            })
            .collect()
    }

    /// Asserts every Application of `env` runs `tag`, Synced and Healthy.
    #[track_caller]
    pub fn assert_runs(&self, env: &str, tag: &str) {
        let rows = self.status(env);
        assert_eq!(
            rows.len(),
            3,
            "{env} has one Application per cluster: {rows:?}"
        );
        for r in &rows {
            assert_eq!(
                (
                    r.desired.as_str(),
                    r.live.as_str(),
                    r.sync.as_str(),
                    r.health.as_str()
                ),
                (tag, tag, "Synced", "Healthy"),
                "{env} in {}",
                r.cluster
            );
        }
    }

    /// Waits until staging runs `tag`, Synced and Healthy, on every cluster.
    ///
    /// The sandbox simulates Argo CD on the wall clock (a sync takes about 2 s, health 2 s
    /// more) and the binary has no way to fast-forward it, so this test has to poll real
    /// time: every 250 ms, for at most 30 s.
    #[track_caller]
    pub fn wait_staging_healthy(&self, tag: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.status("staging");
            let ready = rows.len() == 3
                && rows.iter().all(|r| {
                    r.live == tag && r.desired == tag && r.sync == "Synced" && r.health == "Healthy"
                });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "staging did not become Synced and Healthy at {tag} within 30 s: {rows:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The sandbox's saved state, as JSON.
    pub fn state(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.work().join(".deploy-sandbox/state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A `deploy` process started by [`Sandbox::spawn`]; killed if dropped while running.
pub struct Background {
    child: Child,
    args: String,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The `data` of every `event` line it has printed so far (with `--output json`; whole
    /// lines only).
    pub fn events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["type"] == "event")
            .map(|mut l| l["data"].take())
            .collect()
    }

    /// Waits until it has printed an event that `matches`: its own word for having reached
    /// a point, read from its output every 50 ms. Fails if it exits first or `deadline` passes.
    #[track_caller]
    pub fn wait_for_event(
        &mut self,
        what: &str,
        matches: impl Fn(&Value) -> bool,
        deadline: Duration,
    ) {
        let until = Instant::now() + deadline;
        while !self.events().iter().any(&matches) {
            assert!(
                self.running(),
                "`deploy {}` ended before {what}\n--- stdout\n{}",
                self.args,
                std::fs::read_to_string(&self.out).unwrap_or_default()
            );
            assert!(Instant::now() < until, "gave up waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the exit (at most `deadline`, then kills it and fails the test).
    #[track_caller]
    pub fn wait(mut self, deadline: Duration) -> Run {
        let status: Option<ExitStatus> = self
            .child
            .wait_timeout(deadline)
            .expect("waiting for deploy");
        let hung = status.is_none();
        if hung {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let run = Run {
            args: self.args.clone(),
            code: status.and_then(|s| s.code()),
            stdout: read(&self.out),
            stderr: read(&self.err),
        };
        assert!(
            !hung,
            "`deploy {}` did not exit within {deadline:?} (killed)\n--- stdout\n{}\n--- stderr\n{}",
            run.args, run.stdout, run.stderr
        );
        run
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The number of Applications a plan (JSON) would change.
pub fn changes(plan: &Value) -> usize {
    plan["waves"]
        .as_array()
        .expect("plan has waves")
        .iter()
        .flat_map(|w| w["apps"].as_array().expect("wave has apps"))
        .filter(|a| a["action"]["kind"] != "skip")
        .count()
}
