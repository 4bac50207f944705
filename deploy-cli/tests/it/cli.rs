//! The command line outside promotion: configuration errors, `demo`, `completions` and
//! `build plan`.

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

use crate::support::{DEADLINE, Sandbox, example_config};

/// Writes the example configuration with `line` inserted after the first line equal to
/// `after`; returns the path and the 1-based number of the inserted line.
fn config_with(s: &Sandbox, after: &str, line: &str) -> (std::path::PathBuf, usize) {
    let example = std::fs::read_to_string(example_config()).expect("reading the example");
    let mut lines: Vec<&str> = example.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == after)
        .unwrap_or_else(|| panic!("the example has no line {after:?}"))
        + 1;
    lines.insert(at, line);
    let path = s.scratch("deploy.toml");
    std::fs::write(&path, lines.join("\n") + "\n").expect("writing the configuration");
    (path, at + 1)
}

#[test]
fn an_unknown_key_is_a_usage_error_naming_file_line_and_column() {
    // (insert after, the unknown key line, its column)
    let cases = [
        ("app = \"myapp\"", "colour = \"blue\"", 1),
        ("namespace = \"argocd\"", "timeout_secs = 3", 1),
        ("repository = \"api\"", "  replicas = 3", 3),
    ];
    for (after, line, column) in cases {
        let s = Sandbox::new();
        let (path, number) = config_with(&s, after, line);
        let run = s.finish(
            s.bare(&["--sandbox", "--config", path.to_str().unwrap(), "status"]),
            &["status (bad config)"],
            crate::support::DEADLINE,
        );
        run.expect_code(2);
        let key = line.split('=').next().unwrap().trim();
        let at = format!("{}:{number}:{column}", path.display());
        assert!(
            run.stderr.contains(&at) && run.stderr.contains(key),
            "{line:?}: stderr names {at} and `{key}`:\n{}",
            run.stderr
        );
        assert!(
            !Path::new(&s.work()).join(".deploy-sandbox").exists(),
            "a bad configuration seeds no sandbox"
        );
    }
}

#[test]
fn a_missing_configuration_is_a_usage_error_with_a_hint() {
    let s = Sandbox::new();
    let missing = s.scratch("nope.toml");
    let run = s.finish(
        s.bare(&["--config", missing.to_str().unwrap(), "status"]),
        &["--config nope.toml status"],
        crate::support::DEADLINE,
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("nope.toml") && run.stderr.contains("--config"),
        "names the file and how to give one: {}",
        run.stderr
    );
    // Without --config nor DEPLOY_CONFIG, ./deploy.toml is looked for (and named).
    let run = s.finish(
        s.bare(&["status"]),
        &["status (no config)"],
        crate::support::DEADLINE,
    );
    run.expect_code(2);
    assert!(
        run.stderr.contains("deploy.toml") && run.stderr.contains("DEPLOY_CONFIG"),
        "{}",
        run.stderr
    );
}

#[test]
#[allow(clippy::print_stderr)]
fn demo_finishes() {
    let s = Sandbox::new();
    let started = Instant::now();
    let run = s.finish(s.bare(&["demo"]), &["demo"], Duration::from_secs(90));
    let took = started.elapsed();
    eprintln!("deploy demo took {:.1}s of wall time", took.as_secs_f64());
    run.expect_code(0);
    assert!(!run.stdout.trim().is_empty(), "the demo narrates on stdout");
    let out = &run.stdout;
    let (first, second) = out
        .split_once("── Release 2 ")
        .unwrap_or_else(|| panic!("the demo tells two releases:\n{out}"));
    // Release 1: every wave promoted, prod's 5xx-ratio measured on each cluster.
    for line in [
        "us-west-2: check 5xx-ratio = 0.002: Successful; check Passed",
        "us-east-1: check 5xx-ratio = 0.003: Successful; check Passed",
        "eu-west-1: check 5xx-ratio = 0.001: Successful; check Passed",
        "finished: succeeded: 7f3a9c1e2b4d runs on 3 cluster(s)",
    ] {
        assert!(first.contains(line), "release 1 lacks {line:?}:\n{first}");
    }
    // Release 2: Healthy everywhere, halted in wave 2 by the metric on eu-west-1 alone
    // (its own value while it runs the new release), and rolled back.
    let wave2 = second
        .split_once("wave 2: us-east-1, eu-west-1")
        .map_or("", |(_, w)| w);
    for line in [
        "eu-west-1: Synced and Healthy",
        "eu-west-1: check 5xx-ratio = 0.12: Failed; check Failed",
        "halted: eu-west-1: check 5xx-ratio failed at 0.12",
        "eu-west-1: rolled back to 7f3a9c1e2b4d, Healthy",
        "us-west-2: rolled back to 7f3a9c1e2b4d, Healthy",
        "finished: rolled_back: eu-west-1: check 5xx-ratio failed at 0.12",
    ] {
        assert!(
            wave2.contains(line),
            "release 2's wave 2 lacks {line:?}:\n{second}"
        );
    }
    assert!(
        !second.contains("Degraded") && !second.contains("us-east-1: check 5xx-ratio = 0.12"),
        "the halt is the metric's, on eu-west-1 only:\n{second}"
    );
}

#[test]
fn help_says_what_to_run_first() {
    let s = Sandbox::new();
    let run = s.finish(s.bare(&["--help"]), &["--help"], crate::support::DEADLINE);
    run.expect_code(0);
    let first = run.stdout.lines().next().unwrap_or_default();
    assert!(first.contains("`deploy demo`"), "{first}");
}

#[test]
fn completions_for_bash_complete_deploy() {
    let s = Sandbox::new();
    let run = s.finish(
        s.bare(&["completions", "bash"]),
        &["completions bash"],
        crate::support::DEADLINE,
    );
    run.expect_code(0);
    assert!(run.stdout.contains("deploy"), "{}", run.stdout);
    assert!(
        run.stdout.contains("promote"),
        "the subcommands are completed"
    );
}

#[test]
fn build_plan_prints_the_tag_and_pushes_the_sentinel_last() {
    let s = Sandbox::new();
    let args = [
        "build",
        "plan",
        "--env",
        "staging",
        "--sha",
        "0123456789abcdef0123",
    ];
    let run = s.run(&args);
    run.expect_code(0);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"TAG=0123456789ab"), "{}", run.stdout);
    let pushes = &lines[1..];
    assert_eq!(pushes.len(), 3, "one push per service: {pushes:?}");
    let last = pushes.last().unwrap();
    assert_eq!(
        *last, "111111111111.dkr.ecr.us-west-2.amazonaws.com/staging/logserver:0123456789ab",
        "the sentinel goes last"
    );
    assert!(
        pushes[..2]
            .iter()
            .all(|p| !p.contains("logserver") && p.ends_with(":0123456789ab")),
        "{pushes:?}"
    );

    // The JSON plan is what workflows read: the registry to log in to, then per push the
    // service (to find what to build) and the image to tag and push, in order.
    let json = s.json(&args);
    json.expect_code(0);
    let plan = json.result();
    assert_eq!(plan["tag"], "0123456789ab", "{plan:#}");
    assert_eq!(
        plan["registry"], "111111111111.dkr.ecr.us-west-2.amazonaws.com",
        "{plan:#}"
    );
    assert_eq!(plan["account"], "111111111111", "{plan:#}");
    assert_eq!(plan["region"], "us-west-2", "{plan:#}");
    let pushes: Vec<(&str, &str)> = plan["pushes"]
        .as_array()
        .expect("pushes")
        .iter()
        .map(|p| {
            (
                p["service"].as_str().expect("service"),
                p["image"].as_str().expect("image"),
            )
        })
        .collect();
    let text: Vec<(&str, &str)> = ["api", "worker", "logserver"]
        .into_iter()
        .zip(lines[1..].iter().copied())
        .collect();
    assert_eq!(pushes, text, "the JSON and the text list the same pushes");
}

#[test]
fn watch_refuses_what_it_cannot_do_well() {
    let s = Sandbox::new();
    for (args, says) in [
        (
            &["watch", "--env", "prod", "--leader-elect"][..],
            "--leader-elect is for automated environments",
        ),
        (
            &["watch", "--env", "staging", "--interval", "10ms"],
            "at least 100ms",
        ),
        (
            &["watch", "--env", "staging", "--interval", "2days"],
            "at most 1day",
        ),
    ] {
        let run = s.run(args);
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn promoting_without_a_source_or_a_tag_is_a_usage_error() {
    let s = Sandbox::new();
    for args in [
        &["promote", "--env", "debug", "--yes"][..],
        &["plan", "--env", "debug"],
    ] {
        let run = s.run(args);
        run.expect_code(2);
        assert!(
            run.stderr
                .contains("has no promote_from: give the release with --tag"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_second_watch_once_says_there_is_nothing_new() {
    let s = Sandbox::new();
    s.run(&["watch", "--env", "staging", "--once"])
        .expect_code(0);
    let again = s.run(&["watch", "--env", "staging", "--once"]);
    again.expect_code(0);
    assert!(
        again.stderr.contains("nothing new; the newest tag"),
        "{}",
        again.stderr
    );
}

/// `deploy ARGS` outside the sandbox, with no Argo CD token and the audit trail in scratch space.
pub(crate) fn real(s: &Sandbox, config: &Path, args: &[&str]) -> Command {
    let mut cmd = s.bare(&["--config", config.to_str().unwrap()]);
    cmd.args(args)
        .env("XDG_STATE_HOME", s.scratch("state"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

#[test]
fn a_command_that_needs_argo_cd_without_its_settings_is_a_configuration_error() {
    let s = Sandbox::new();
    let example = std::fs::read_to_string(example_config()).expect("reading the example");
    let no_server = s.scratch("no-server.toml");
    let without = example.replacen("server = \"argocd.example.com\"\n", "", 1);
    assert_ne!(without, example);
    std::fs::write(&no_server, without).expect("writing the configuration");
    let no_token = "ARGOCD_AUTH_TOKEN is not set";
    let no_host =
        "no Argo CD server: set [argocd].server in deploy.toml, ARGOCD_SERVER or --argocd-server";
    // (configuration, ARGOCD_AUTH_TOKEN, command, what stderr says)
    let cases: [(&Path, Option<&str>, &[&str], &str); 8] = [
        (&example_config(), None, &["status"], no_token),
        (&example_config(), Some(" "), &["status"], no_token),
        (&no_server, Some("t0ken"), &["status"], no_host),
        (
            &no_server,
            Some("t0ken"),
            &["plan", "--env", "prod"],
            no_host,
        ),
        (
            &example_config(),
            None,
            &["promote", "--env", "prod", "--yes"],
            no_token,
        ),
        (
            &example_config(),
            None,
            &["rollback", "--env", "prod", "--yes"],
            no_token,
        ),
        (&no_server, None, &["audit"], no_host),
        (
            &example_config(),
            None,
            &["watch", "--env", "staging", "--once"],
            no_token,
        ),
    ];
    for (config, token, args, says) in cases {
        for json in [false, true] {
            let mut all: Vec<&str> = if json {
                vec!["--output", "json"]
            } else {
                vec![]
            };
            all.extend_from_slice(args);
            let mut cmd = real(&s, config, &all);
            if let Some(t) = token {
                cmd.env("ARGOCD_AUTH_TOKEN", t);
            }
            let run = s.finish(cmd, &all, DEADLINE);
            run.expect_code(2);
            assert!(
                run.stderr.contains("Argo CD is not configured") && run.stderr.contains(says),
                "{all:?} ({}): {}",
                config.display(),
                run.stderr
            );
            if json {
                assert_eq!(run.result()["exit_code"], 2, "{}", run.stdout);
            }
        }
    }
}

#[test]
fn quiet_hides_notes_but_not_warnings() {
    let s = Sandbox::new();
    // Setting up the Argo CD client warns about --insecure; the bad interval then ends the
    // command before anything is reached over the network.
    let args = [
        "--insecure",
        "--argocd-server",
        "https://127.0.0.1:9",
        "watch",
        "--env",
        "staging",
        "--interval",
        "10ms",
    ];
    for quiet in [false, true] {
        let mut all: Vec<&str> = if quiet { vec!["-q"] } else { vec![] };
        all.extend_from_slice(&args);
        let mut cmd = real(&s, &example_config(), &all);
        cmd.env("ARGOCD_AUTH_TOKEN", "t0ken");
        let run = s.finish(cmd, &all, DEADLINE);
        run.expect_code(2);
        assert!(
            run.stderr
                .contains("TLS certificate verification of the Argo CD server is off"),
            "-q {quiet}: {}",
            run.stderr
        );
    }
    // Notes are what -q hides.
    let loud = s.run(&["watch", "--env", "staging", "--once"]);
    loud.expect_code(0);
    assert!(loud.stderr.contains("sandbox:"), "{}", loud.stderr);
    let quiet = s.run(&["-q", "watch", "--env", "staging", "--once"]);
    quiet.expect_code(0);
    assert!(!quiet.stderr.contains("sandbox:"), "{}", quiet.stderr);
}

#[test]
fn a_closed_stdout_and_stderr_never_panic() {
    let s = Sandbox::new();
    let config = example_config();
    let sandbox = ["--sandbox", "--config", config.to_str().unwrap()];
    let missing = s.scratch("nope.toml");
    // (arguments, exit code)
    let cases: [(&[&str], i32); 9] = [
        (&["status"], 0),
        (&["--output", "json", "status"], 0),
        (&["-v", "status"], 0),
        (&["audit"], 0),
        (&["watch", "--env", "staging", "--once"], 0),
        (&["promote", "--env", "nowhere", "--yes"], 2),
        (
            &[
                "promote",
                "--env",
                "debug",
                "--tag",
                crate::support::SECOND,
                "--yes",
            ],
            0,
        ),
        (&["--config", missing.to_str().unwrap(), "status"], 2),
        (&["completions", "bash"], 0),
    ];
    for (args, code) in cases {
        let mut all: Vec<&str> = if args.contains(&"--config") || args[0] == "completions" {
            vec![]
        } else {
            sandbox.to_vec()
        };
        all.extend_from_slice(args);
        // A pipe whose reader is gone: every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let mut child = s
            .bare(&all)
            .stdout(writer.try_clone().expect("cloning the pipe"))
            .stderr(writer)
            .spawn()
            .expect("starting deploy");
        let status = child.wait_timeout(DEADLINE).expect("waiting for deploy");
        let Some(status) = status else {
            let _ = child.kill();
            panic!("`deploy {all:?}` did not exit within {DEADLINE:?}");
        };
        assert_ne!(status.code(), Some(101), "`deploy {all:?}` panicked");
        assert_eq!(status.code(), Some(code), "`deploy {all:?}`");
    }
}

#[test]
fn watch_stops_gracefully_on_sighup() {
    let s = Sandbox::new();
    let mut child = s
        .command(&[
            "--output",
            "json",
            "watch",
            "--env",
            "staging",
            "--interval",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting deploy watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first poll says the watcher is in its loop, its signal handlers installed.
    loop {
        let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no poll line within {DEADLINE:?}")
        });
        if line.contains("\"type\":\"poll\"") {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(kill.success());
    let status = child.wait_timeout(DEADLINE).expect("waiting for deploy");
    let Some(status) = status else {
        let _ = child.kill();
        panic!("deploy watch did not stop within {DEADLINE:?} of SIGHUP");
    };
    assert_eq!(
        status.code(),
        Some(0),
        "a graceful stop, not death by SIGHUP: {status:?}"
    );
    let last = std::iter::from_fn(|| rx.recv_timeout(DEADLINE).ok())
        .last()
        .expect("a result line");
    let last: serde_json::Value = serde_json::from_str(&last).expect("JSON");
    assert_eq!(last["type"], "result", "{last}");
    assert_eq!(last["data"]["stopped"], true, "{last}");
}
