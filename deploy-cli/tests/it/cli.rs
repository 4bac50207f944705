//! The command line outside promotion: configuration errors, `demo`, `completions` and
//! `build plan`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{Sandbox, example_config};

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
