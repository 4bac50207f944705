//! Tidy checks: the project's invariants as ordinary tests, rust-analyzer style.
//!
//! Each test reads files under [`project_root`] and fails with one line per violation,
//! `path[:line]: rule`, so that the fix is obvious from the message alone.
//! Run them with `cargo xtask tidy` (or `cargo test -p xtask`).
//!
//! The needles this file searches for are built with `concat!` so that it does not find
//! itself.

use std::fs;
use std::path::{Path, PathBuf};

use crate::project_root;

// The README and docs/ show only commands and configuration that parse.
mod docs;
// Each crate's modules import only from the layers below them.
mod layers;

/// Crates deploy-core may depend on: pure computation, serde and futures (no async
/// runtime: deploy-engine runs it). No AWS, Kubernetes or HTTP crate.
const CORE_ALLOWED_DEPENDENCIES: &[&str] = &[
    "async-trait",
    "croner",
    "expr-lang",
    "futures",
    "humantime",
    "jiff",
    "regex",
    "semver",
    "serde",
    "serde_json",
    "sha2",
    "thiserror",
    "toml",
    "tracing",
];

/// Paths deploy-core must not use: they do file, network or process I/O.
const CORE_FORBIDDEN_PATHS: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "tokio::fs",
    "tokio::net",
    "tokio::process",
];

/// Crates (or crate-name prefixes, ending in `-`) that only their adapters may depend on.
const ADAPTER_DEPENDENCIES: &[(&str, &[&str])] = &[
    // deploy-metrics reads the checks' sources: it signs Amazon Managed Prometheus queries
    // (SigV4) and reads CloudWatch alarms, so that one crate implements the Metrics port.
    ("aws-", &["deploy-aws", "deploy-metrics"]),
    // deploy-notify posts notifications; it is HTTP only, and talks to no Argo CD.
    // deploy-metrics queries Prometheus.
    (
        "reqwest",
        &["deploy-argocd", "deploy-notify", "deploy-metrics"],
    ),
    ("kube", &["deploy-argocd"]),
    ("kube-", &["deploy-argocd"]),
    ("k8s-openapi", &["deploy-argocd"]),
];

/// Library crates, which report through return values and events and never print.
const SILENT_CRATES: &[&str] = &[
    "deploy-core",
    "deploy-aws",
    "deploy-argocd",
    "deploy-notify",
    "deploy-metrics",
];

/// Macros and calls that write to the terminal.
const PRINTING: &[&str] = &[
    concat!("print", "ln!"),
    concat!("eprint", "ln!"),
    concat!("print", "!"),
    concat!("eprint", "!"),
    concat!("dbg", "!"),
    concat!("io::std", "out()"),
    concat!("io::std", "err()"),
];

// ---------------------------------------------------------------------------------------
// The checks.

#[test]
fn every_module_has_docs() {
    let mut violations = Vec::new();
    for file in rust_files() {
        let text = read(&file);
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            violations.push(format!(
                "{}:1: every module starts with a `//!` line saying what it is for",
                rel(&file)
            ));
        }
    }
    report(violations);
}

#[test]
fn core_depends_only_on_the_allowlist() {
    let manifest = manifest("deploy-core");
    let violations: Vec<String> = dependencies(&manifest)
        .into_iter()
        .filter(|dep| !CORE_ALLOWED_DEPENDENCIES.contains(&dep.as_str()))
        .map(|dep| {
            format!(
                "deploy-core/Cargo.toml: [dependencies] has `{dep}`; deploy-core is the pure domain and \
                 may depend only on {CORE_ALLOWED_DEPENDENCIES:?} (extend the allowlist in xtask/src/tidy.rs \
                 only for a crate that does no I/O)"
            )
        })
        .collect();
    report(violations);
}

#[test]
fn core_does_no_io() {
    let mut violations = Vec::new();
    for file in rust_files_in("deploy-core", &["src"]) {
        let text = read(&file);
        for (line, code) in library_lines(&text) {
            for path in CORE_FORBIDDEN_PATHS {
                if code.contains(path) {
                    violations.push(format!(
                        "{}:{line}: deploy-core uses `{path}`; deploy-core does no file, network or process I/O \
                         (put it behind a port and implement it in an adapter)",
                        rel(&file)
                    ));
                }
            }
        }
        for (line, path) in grouped_imports(&text) {
            if CORE_FORBIDDEN_PATHS.contains(&path.as_str()) {
                violations.push(format!(
                    "{}:{line}: deploy-core imports `{path}`; deploy-core does no file, network or process I/O",
                    rel(&file)
                ));
            }
        }
    }
    report(violations);
}

#[test]
fn adapter_crates_stay_in_their_adapter() {
    let mut violations = Vec::new();
    for member in members() {
        let manifest = manifest(&member);
        for dep in dependencies(&manifest) {
            for (pattern, owners) in ADAPTER_DEPENDENCIES {
                let matches = if pattern.ends_with('-') {
                    dep.starts_with(pattern)
                } else {
                    dep == *pattern
                };
                if matches && !owners.contains(&member.as_str()) {
                    let owners = owners.join(" and ");
                    violations.push(format!(
                        "{member}/Cargo.toml: [dependencies] has `{dep}`; only {owners} may depend on `{pattern}{}` \
                         (use {owners} instead)",
                        if pattern.ends_with('-') { "*" } else { "" }
                    ));
                }
            }
        }
    }
    report(violations);
}

#[test]
fn only_binaries_print() {
    let mut violations = Vec::new();
    for krate in SILENT_CRATES {
        for file in rust_files_in(krate, &["src"]) {
            let text = read(&file);
            for (line, code) in library_lines(&text) {
                for needle in PRINTING {
                    if contains_token(code, needle) {
                        violations.push(format!(
                            "{}:{line}: `{needle}` in a library; only deploy-cli and xtask print \
                             (return a value, emit an event, or log with tracing)",
                            rel(&file)
                        ));
                    }
                }
            }
        }
    }
    report(violations);
}

#[test]
fn no_should_panic() {
    let needle = concat!("#[should", "_panic");
    let mut violations = Vec::new();
    for file in rust_files() {
        for (i, line) in read(&file).lines().enumerate() {
            if line.contains(needle) {
                violations.push(format!(
                    "{}:{}: `{needle}]`; return a Result or assert on the error value instead \
                     (a panic anywhere passes such a test)",
                    rel(&file),
                    i + 1
                ));
            }
        }
    }
    report(violations);
}

#[test]
fn no_ignore_without_a_reason() {
    let needle = concat!("#[ig", "nore]");
    let mut violations = Vec::new();
    for file in rust_files() {
        for (i, line) in read(&file).lines().enumerate() {
            let squeezed: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            if squeezed.contains(needle) {
                violations.push(format!(
                    "{}:{}: `{needle}` without a reason; write `#[ignore = \"why, and how to run it\"]`",
                    rel(&file),
                    i + 1
                ));
            }
        }
    }
    report(violations);
}

#[test]
fn one_integration_test_binary_per_crate() {
    let mut violations = Vec::new();
    for member in members() {
        let tests = project_root().join(&member).join("tests");
        for entry in read_dir(&tests) {
            let is_binary = if entry.is_dir() {
                entry.join("main.rs").is_file() && entry.file_name().is_some_and(|n| n != "it")
            } else {
                entry.extension().is_some_and(|e| e == "rs")
            };
            if is_binary {
                violations.push(format!(
                    "{}: a separate integration test binary; each crate has at most one, \
                     `tests/it/main.rs`, with modules beside it",
                    rel(&entry)
                ));
            }
        }
    }
    report(violations);
}

#[test]
fn readme_quick_start_names_the_ci_test_command() {
    let ci = read(&project_root().join(".ci/run"));
    let command = ci_test_command(&ci).unwrap_or_else(|| {
        panic!(".ci/run: runs no test command (`cargo xtask test` or `cargo test`)")
    });
    let readme_path = project_root().join("README.md");
    let Ok(readme) = fs::read_to_string(&readme_path) else {
        panic!(
            "README.md: missing; it needs a quick start naming `{command}`, the test command .ci/run runs"
        );
    };
    let Some(quick_start) = markdown_section(&readme, "quick start") else {
        panic!(
            "README.md: no \"Quick start\" section; it must name `{command}`, the test command .ci/run runs"
        );
    };
    let mut violations = Vec::new();
    if !quick_start.contains(&command) {
        violations.push(format!(
            "README.md: the quick start does not name `{command}`, the test command .ci/run runs; \
             they must be the same"
        ));
    }
    if !quick_start.contains("demo") {
        violations.push(
            "README.md: the quick start does not run `deploy demo`; it shows the demo and the tests".to_owned(),
        );
    }
    report(violations);
}

#[test]
fn example_config_parses() {
    let path = project_root().join("examples/deploy.toml");
    let text = read(&path);
    if let Err(e) = deploy_core::config::Config::parse("examples/deploy.toml", &text) {
        panic!("examples/deploy.toml: does not parse with deploy_core::config::Config::parse: {e}");
    }
}

#[test]
fn makefile_deploy_prod_calls_the_xtask() {
    let makefile = read(&project_root().join("Makefile"));
    let recipe = makefile_recipe(&makefile, "deploy-prod")
        .unwrap_or_else(|| panic!("Makefile: no `deploy-prod` target"));
    assert!(
        recipe.contains("cargo xtask deploy prod"),
        "Makefile: `deploy-prod` must run `cargo xtask deploy prod` (the same code as `deploy promote`), runs:\n{recipe}"
    );
}

/// Events a workflow of this repository may run on: the workflows are for the teams that
/// adopt deploy (they need their AWS account), so none may run on this repository's pushes.
/// The one exception is [`CI_WORKFLOW`], the repository's own CI.
const WORKFLOW_TRIGGERS: &[&str] = &["workflow_call", "workflow_dispatch"];

/// The repository's own CI: it runs `.ci/run` on pushes and pull requests.
const CI_WORKFLOW: &str = "ci.yml";

#[test]
fn workflows_run_only_when_called() {
    let mut violations = Vec::new();
    for path in read_dir(&project_root().join(".github/workflows")) {
        if path.file_name().is_some_and(|n| n == CI_WORKFLOW) {
            continue;
        }
        match workflow_triggers(&read(&path)) {
            Some(triggers) => {
                for t in triggers
                    .iter()
                    .filter(|t| !WORKFLOW_TRIGGERS.contains(&t.as_str()))
                {
                    violations.push(format!(
                        "{}: runs on `{t}`; workflows here run only when called ({})",
                        rel(&path),
                        WORKFLOW_TRIGGERS.join(", ")
                    ));
                }
            }
            None => violations.push(format!(
                "{}: no block `on:` with one trigger a line; write the triggers that way",
                rel(&path)
            )),
        }
    }
    report(violations);
}

#[test]
fn the_repository_ci_runs_ci_run_on_pushes_and_pull_requests() {
    let path = project_root().join(".github/workflows").join(CI_WORKFLOW);
    let yaml = read(&path);
    let triggers = workflow_triggers(&yaml).unwrap_or_default();
    let mut violations = Vec::new();
    for want in ["push", "pull_request"] {
        if !triggers.iter().any(|t| t == want) {
            violations.push(format!("{}: does not run on `{want}`", rel(&path)));
        }
    }
    if !yaml.lines().any(|l| l.trim() == "run: .ci/run") {
        violations.push(format!(
            "{}: has no step `run: .ci/run` (CI is what a clean machine runs)",
            rel(&path)
        ));
    }
    report(violations);
}

// ---------------------------------------------------------------------------------------
// Reading the workspace.

/// Fails the calling test with every violation, one a line.
fn report(mut violations: Vec<String>) {
    violations.sort();
    assert!(
        violations.is_empty(),
        "\n{} tidy violation(s):\n{}\n",
        violations.len(),
        violations.join("\n")
    );
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: cannot read: {e}", rel(path)))
}

/// `path` relative to the project root, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Sorted entries of `dir`; none when it does not exist.
fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.expect("directory entry").path()).collect(),
        Err(_) => Vec::new(),
    };
    entries.sort();
    entries
}

/// The workspace members, from the root manifest.
fn members() -> Vec<String> {
    let root = parse_toml(&project_root().join("Cargo.toml"));
    root.get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .expect("Cargo.toml: [workspace] members")
        .iter()
        .map(|m| m.as_str().expect("member is a string").to_owned())
        .collect()
}

fn manifest(member: &str) -> toml::Table {
    parse_toml(&project_root().join(member).join("Cargo.toml"))
}

fn parse_toml(path: &Path) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{}: not valid TOML: {e}", rel(path)))
}

/// Package names in `[dependencies]` and `[target.'cfg(…)'.dependencies]`; a renamed
/// dependency counts by its `package`.
fn dependencies(manifest: &toml::Table) -> Vec<String> {
    let mut tables: Vec<&toml::Table> = manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .into_iter()
        .collect();
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        tables.extend(
            targets
                .values()
                .filter_map(|t| t.get("dependencies").and_then(|d| d.as_table())),
        );
    }
    let mut names: Vec<String> = tables
        .into_iter()
        .flatten()
        .map(|(key, spec)| {
            spec.get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(key)
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every `.rs` file of every member, in `src`, `tests`, `benches` and `examples`.
fn rust_files() -> Vec<PathBuf> {
    members()
        .iter()
        .flat_map(|m| rust_files_in(m, &["src", "tests", "benches", "examples"]))
        .collect()
}

fn rust_files_in(member: &str, dirs: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = dirs
        .iter()
        .map(|d| project_root().join(member).join(d))
        .collect();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(read_dir(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------
// Reading Rust, Markdown, shell and make, just enough.

/// `(line number, code)` of the library code in `text`: comments removed, and the
/// `#[cfg(test)] mod … { … }` blocks (rustfmt puts their braces at column 0) left out.
fn library_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        if line == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|(_, next)| next.starts_with("mod ") && next.ends_with('{'))
        {
            for (_, l) in lines.by_ref() {
                if l == "}" {
                    break;
                }
            }
            continue;
        }
        let code = line.find("//").map_or(line, |at| &line[..at]);
        if !code.trim().is_empty() {
            out.push((i + 1, code));
        }
    }
    out
}

/// Whether `needle` occurs in `code` and is not the tail of a longer identifier
/// (so `eprint!` does not count as `print!`).
fn contains_token(code: &str, needle: &str) -> bool {
    code.match_indices(needle).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// `(line, "std::fs")` for each top-level item of every `use std::{…}` / `tokio::{…}`.
fn grouped_imports(text: &str) -> Vec<(usize, String)> {
    let code: String = library_lines(text)
        .iter()
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for krate in ["std", "tokio"] {
        let opener = format!("{krate}::{{");
        for (at, _) in code.match_indices(&opener) {
            let items = group_items(&code[at + opener.len()..]);
            for item in items {
                let head = item
                    .trim()
                    .split([':', ' '])
                    .next()
                    .unwrap_or("")
                    .to_owned();
                if !head.is_empty() {
                    // Good enough: the line of the `use`, found by what precedes it.
                    let line = code[..at].matches('\n').count();
                    let source_line = library_lines(text).get(line).map_or(0, |(n, _)| *n);
                    out.push((source_line, format!("{krate}::{head}")));
                }
            }
        }
    }
    out
}

/// The items of a `{a::b, c, d::{e, f}}` group, from just after its `{`: `a::b`, `c`, `d::`
/// (a nested group keeps only its head).
fn group_items(body: &str) -> Vec<String> {
    let mut depth = 0;
    let mut item = String::new();
    let mut items = Vec::new();
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => items.push(std::mem::take(&mut item)),
            _ if depth == 0 => item.push(c),
            _ => {}
        }
    }
    items.push(item);
    items
}

/// The test command `.ci/run` runs: the first non-comment line with `cargo xtask test`
/// or `cargo test`, from `cargo` on.
fn ci_test_command(script: &str) -> Option<String> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            ["cargo xtask test", "cargo test"]
                .iter()
                .find(|c| contains_token(l, c))
                .map(|c| (*c).to_owned())
        })
}

/// The triggers of a workflow whose `on:` is a block mapping (`on:` alone on its line, one
/// trigger a line below it, indented); `None` for any other form.
fn workflow_triggers(yaml: &str) -> Option<Vec<String>> {
    let mut lines = yaml.lines().skip_while(|l| l.trim_end() != "on:").skip(1);
    let mut triggers = Vec::new();
    let mut indent = None;
    for line in lines.by_ref() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let depth = line.len() - content.len();
        if depth == 0 {
            break;
        }
        if *indent.get_or_insert(depth) == depth {
            triggers.push(content.split(':').next()?.trim().to_owned());
        }
    }
    (!triggers.is_empty()).then_some(triggers)
}

/// The body of the first Markdown section whose heading contains `title`
/// (case-insensitive), up to the next heading of the same or a higher level.
/// Lines inside code fences are never headings.
fn markdown_section(text: &str, title: &str) -> Option<String> {
    let mut in_fence = false;
    let mut section: Option<(usize, Vec<&str>)> = None;
    for line in text.lines() {
        let fence = line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~");
        if fence {
            in_fence = !in_fence;
        }
        let level = (!in_fence && !fence && line.starts_with('#'))
            .then(|| line.chars().take_while(|&c| c == '#').count());
        match (section.as_mut(), level) {
            (None, Some(level)) if line.to_lowercase().contains(title) => {
                section = Some((level, Vec::new()));
            }
            (Some((open, _)), Some(level)) if level <= *open => break,
            (Some((_, body)), _) => body.push(line),
            (None, _) => {}
        }
    }
    section.map(|(_, body)| body.join("\n"))
}

/// The recipe lines of `target` in a Makefile.
fn makefile_recipe(makefile: &str, target: &str) -> Option<String> {
    let is_rule = |l: &str| {
        !l.starts_with(['#', '\t', '.'])
            && l.split_once(':')
                .is_some_and(|(targets, _)| targets.split_whitespace().any(|t| t == target))
    };
    let mut lines = makefile.lines().skip_while(|l| !is_rule(l));
    lines.next()?;
    Some(
        lines
            .take_while(|l| l.starts_with('\t'))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

// ---------------------------------------------------------------------------------------
// The readers themselves.

mod readers {
    use super::*;

    #[test]
    fn library_lines_skip_comments_and_test_modules() {
        let text = "//! Docs.\nuse a; // std::fs\n\n#[cfg(test)]\nmod tests {\n    use std::fs;\n}\nfn after() {}\n";
        assert_eq!(library_lines(text), [(2, "use a; "), (8, "fn after() {}")]);
    }

    #[test]
    fn tokens_are_not_tails_of_longer_names() {
        let print = concat!("print", "!");
        assert!(contains_token(concat!("    print", "!(\"x\");"), print));
        assert!(!contains_token(concat!("    eprint", "!(\"x\");"), print));
        assert!(!contains_token("my_print!()", print));
    }

    #[test]
    fn grouped_imports_are_split() {
        let text = "use std::{\n    collections::BTreeMap,\n    fs::{self, File},\n};\nuse tokio::{net as n, sync};\n";
        let found: Vec<String> = grouped_imports(text).into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            found,
            ["std::collections", "std::fs", "tokio::net", "tokio::sync"]
        );
    }

    #[test]
    fn ci_test_command_is_found() {
        let script = "#!/bin/bash\n# cargo test is not this\ncargo fmt --all -- --check\nCI=true cargo xtask test\n";
        assert_eq!(ci_test_command(script).as_deref(), Some("cargo xtask test"));
    }

    #[test]
    fn workflow_triggers_are_read_from_the_on_block() {
        let yaml = "name: x\non:\n  workflow_call:\n    inputs:\n      env:\n        type: string\n  # by hand\n  workflow_dispatch:\n\npermissions: {}\njobs:\n  push:\n";
        assert_eq!(
            workflow_triggers(yaml).unwrap(),
            ["workflow_call", "workflow_dispatch"]
        );
        assert_eq!(
            workflow_triggers("on:\n  push:\n    branches: [main]\n").unwrap(),
            ["push"]
        );
        assert_eq!(workflow_triggers("on: [push]\n"), None);
        assert_eq!(workflow_triggers("\"on\": push\n"), None);
    }

    #[test]
    fn markdown_sections_end_at_the_next_heading() {
        let text = "# deploy\n## Quick start\n```sh\n# not a heading\ncargo xtask test\n```\n### Detail\nmore\n## Next\nafter\n";
        let section = markdown_section(text, "quick start").unwrap();
        assert!(section.contains("cargo xtask test") && section.contains("more"));
        assert!(!section.contains("after"), "{section}");
        assert_eq!(markdown_section(text, "missing"), None);
    }

    #[test]
    fn makefile_recipes_are_found() {
        let makefile = "# make deploy-prod ARGS=--yes\n.PHONY: test deploy-prod\n\ntest:\n\tcargo xtask test\n\ndeploy-prod:\n\tcargo xtask deploy prod $(ARGS)\n\nci:\n\tx\n";
        assert_eq!(
            makefile_recipe(makefile, "deploy-prod").as_deref(),
            Some("\tcargo xtask deploy prod $(ARGS)")
        );
        assert_eq!(makefile_recipe(makefile, "nope"), None);
    }

    #[test]
    fn dependencies_count_renamed_packages_by_their_name() {
        let manifest: toml::Table = "[dependencies]\na = \"1\"\nb = { package = \"aws-x\", version = \"1\" }\n[target.'cfg(unix)'.dependencies]\nc = \"1\"\n[dev-dependencies]\nd = \"1\"\n"
            .parse()
            .unwrap();
        assert_eq!(dependencies(&manifest), ["a", "aws-x", "c"]);
    }
}
