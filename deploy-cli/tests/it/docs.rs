//! The sandbox accepts what the guides show: the tours of the README's core commands and of
//! `docs/sandbox.md` run line by line, in order, each in a sandbox of its own, and every
//! command ends as its comment says (`exit N`), else with 0. That every command of every page
//! parses is `xtask/src/tidy/docs.rs`'s check; this one runs the two tours end to end, so a
//! comment that promises a halt in wave 2 is one the sandbox keeps.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::Sandbox;

/// The alias both tours start with: the example configuration, in the sandbox. The test's
/// [`Sandbox`] runs every command with the same global options.
const ALIAS: &str =
    "alias deploy='cargo run -q -p deploy-cli -- --config examples/deploy.toml --sandbox'";

/// One command of a tour: its line in the page, its arguments after `deploy`, and the exit
/// code its comment promises.
#[derive(Debug)]
struct Step {
    line: usize,
    args: Vec<String>,
    exit: i32,
}

/// The steps of the code block of `page` that starts with [`ALIAS`].
fn tour(page: &str) -> Vec<Step> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(page);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == ALIAS)
        .unwrap_or_else(|| panic!("{page}: no code block starting with {ALIAS}"));
    let mut steps = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if line.trim_start().starts_with("```") {
            break;
        }
        let (command, comment) = line.split_once(" #").unwrap_or((line, ""));
        let exit = comment
            .split("exit ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .map_or(0, |code| code.parse().expect("an exit code"));
        let parts: Vec<&str> = command.split("&&").collect();
        for (k, part) in parts.iter().enumerate() {
            let words: Vec<&str> = part.split_whitespace().collect();
            let Some((&"deploy", args)) = words.split_first() else {
                panic!("{page}:{}: not a deploy command: {part:?}", i + 1);
            };
            steps.push(Step {
                line: i + 1,
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                // `a && b`: a must succeed for b to run; the comment is about the last.
                exit: if k + 1 == parts.len() { exit } else { 0 },
            });
        }
    }
    assert!(!steps.is_empty(), "{page}: the tour has no command");
    steps
}

/// Waits until staging runs what it asks for, Synced and Healthy: what a person finds by the
/// time they have read one command's output and typed the next (the sandbox's Argo CD runs on
/// the wall clock, a sync taking about 4 s), so that `plan` and `promote`, which promote the
/// release live in staging, see the one the tour just pushed, not one still syncing.
fn settle(s: &Sandbox) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = s.status("staging");
        let settled = rows
            .iter()
            .all(|r| r.live == r.desired && r.sync == "Synced" && r.health == "Healthy");
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "staging did not settle within 30 s: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run_tour(page: &str) {
    let s = Sandbox::new();
    for (i, step) in tour(page).into_iter().enumerate() {
        // The first command shows the fresh world as it is: staging syncing what CI pushed.
        if i > 0 {
            settle(&s);
        }
        let args: Vec<&str> = step.args.iter().map(String::as_str).collect();
        let run = s.run(&args);
        assert_eq!(
            run.code,
            Some(step.exit),
            "{page}:{}: `deploy {}` exited {:?}, the page says {}\n--- stdout\n{}\n--- stderr\n{}",
            step.line,
            run.args,
            run.code,
            step.exit,
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn the_readme_tour_runs_in_the_sandbox() {
    run_tour("README.md");
}

#[test]
fn the_sandbox_guide_tour_runs_in_the_sandbox() {
    run_tour("docs/sandbox.md");
}

#[test]
fn a_tour_reads_commands_chains_and_promised_exit_codes() {
    let steps = tour("docs/sandbox.md");
    let exits: Vec<i32> = steps.iter().map(|s| s.exit).collect();
    assert!(
        exits.contains(&1),
        "the guide's tour shows failures: {steps:#?}"
    );
    let chained: Vec<&Step> = steps.iter().filter(|s| s.args[0] == "watch").collect();
    assert_eq!(chained.len(), 1, "{steps:#?}");
}
