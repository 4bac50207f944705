//! The module layers of each crate, as a tidy test in the manner of rust-analyzer's: every
//! module lists the modules of its crate it may import (`crate::…`, `super::…`), and an
//! import of any other is a violation, named with its file and line. The tables are the
//! layer picture of ARCHITECTURE.md; a table that admits a cycle is itself a violation.
//!
//! Only library code counts: `#[cfg(test)]` items (their tests) may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One crate's layering: per module, the modules it may import. A module missing from the
/// table is a violation too (a new module takes a place in the layers on purpose).
pub(crate) struct Layers {
    /// The crate's directory (`deploy-core`).
    pub krate: &'static str,
    /// Folders whose files are modules of their own in the table (`commands` in the CLI:
    /// `commands::promote`), instead of one module for the whole folder.
    pub split: &'static [&'static str],
    /// `(module, modules it may import)`, lowest layer first.
    pub allowed: &'static [(&'static str, &'static [&'static str])],
}

/// deploy-core: model → config and ports → the rules → plan → rollout → notify.
pub(crate) const CORE: Layers = Layers {
    krate: "deploy-core",
    split: &[],
    allowed: &[
        ("error", &[]),
        ("model", &["error"]),
        ("config", &["error", "model"]),
        ("hcl", &[]),
        ("window", &[]),
        ("check", &["error", "model", "config"]),
        ("trail", &["error", "model", "check"]),
        (
            "port",
            &["error", "model", "config", "window", "trail", "check"],
        ),
        ("lock", &["error", "config", "port"]),
        ("image_override", &["error", "model", "config", "port"]),
        // The Argo CD simulation the fakes and the in-memory backend are skins of.
        (
            "sim",
            &[
                "error",
                "model",
                "config",
                "window",
                "port",
                "image_override",
            ],
        ),
        (
            "plan",
            &[
                "error",
                "model",
                "config",
                "hcl",
                "window",
                "check",
                "trail",
                "port",
                "lock",
                "image_override",
            ],
        ),
        (
            "rollout",
            &[
                "error", "model", "config", "window", "check", "trail", "port", "lock", "plan",
            ],
        ),
        ("notify", &["model", "trail", "plan", "rollout"]),
        ("lib", &["error"]),
    ],
};

/// deploy-engine: the clock and the observe helpers → the engine → watch; memory and
/// conformance (test support) on top.
pub(crate) const ENGINE: Layers = Layers {
    krate: "deploy-engine",
    split: &[],
    allowed: &[
        ("clock", &[]),
        ("observe", &[]),
        ("unlock", &[]),
        ("engine", &[]),
        ("watch", &["observe"]),
        ("conformance", &[]),
        // The in-memory world lends its backends as the engine's `Ports`, and observes through them.
        ("memory", &["conformance", "engine", "observe"]),
        ("lib", &[]),
    ],
};

/// The binary: the commands over the shared modules, which never reach back into a command.
pub(crate) const CLI: Layers = Layers {
    krate: "deploy-cli",
    split: &["commands"],
    allowed: &[
        ("cli", &["exit"]),
        ("signals", &[]),
        ("exit", &[]),
        ("output", &["cli"]),
        ("process", &[]),
        ("audit_log", &[]),
        ("metrics", &["output"]),
        ("notify", &["output", "cli", "exit"]),
        ("progress", &["output", "cli"]),
        (
            "backends",
            &["cli", "exit", "process", "audit_log", "metrics"],
        ),
        ("commands", &[]),
        ("commands::build", &["backends", "cli", "exit", "output"]),
        ("commands::render", &["backends", "cli", "exit", "output"]),
        ("commands::windows", &["backends", "cli", "exit", "output"]),
        ("commands::checks", &["backends", "cli", "exit", "output"]),
        ("commands::audit", &["backends", "cli", "exit", "output"]),
        ("commands::history", &["backends", "cli", "exit", "output"]),
        (
            "commands::unlock",
            &["backends", "cli", "exit", "output", "process"],
        ),
        ("commands::status", &["backends", "cli", "exit", "output"]),
        (
            "commands::release",
            &["backends", "cli", "exit", "output", "progress", "signals"],
        ),
        (
            "commands::promote",
            &[
                "backends",
                "cli",
                "exit",
                "output",
                "progress",
                "notify",
                "signals",
                "process",
                "commands::release",
                "commands::windows",
                "commands::checks",
            ],
        ),
        (
            "commands::watch",
            &[
                "backends",
                "cli",
                "exit",
                "output",
                "metrics",
                "notify",
                "signals",
                "process",
                "commands::release",
            ],
        ),
        (
            "commands::sandbox",
            &[
                "backends",
                "cli",
                "exit",
                "output",
                "commands::promote",
                "commands::status",
            ],
        ),
        (
            "commands::demo",
            &[
                "backends",
                "cli",
                "exit",
                "output",
                "progress",
                "commands::promote",
                "commands::release",
                "commands::status",
            ],
        ),
        (
            "lib",
            &[
                "cli", "exit", "output", "backends", "commands", "signals", "notify",
            ],
        ),
        ("main", &[]),
    ],
};

/// The violations of `layers` in `files` (`(path relative to the crate, text)`), one line
/// each: `deploy-core/src/plan.rs:12: plan imports crate::engine, …`.
pub(crate) fn violations(layers: &Layers, files: &[(String, String)]) -> Vec<String> {
    let table: BTreeMap<&str, &[&str]> = layers.allowed.iter().copied().collect();
    let mut out = cycles(layers);
    for (path, text) in files {
        let Some(from) = module_of(path, layers.split) else {
            continue;
        };
        let Some(may) = table.get(from.as_str()) else {
            out.push(format!(
                "{}/{path}: module `{from}` has no place in the layers of xtask/src/layers.rs; add it to `{}`",
                layers.krate,
                name_of(layers)
            ));
            continue;
        };
        for (line, to) in imports(path, text, layers.split) {
            let known = table.contains_key(to.as_str());
            if to == from || !known || may.contains(&to.as_str()) {
                continue;
            }
            out.push(format!(
                "{}/{path}:{line}: `{from}` imports `{to}`, which it may not (it may import {may:?}); \
                 move the item down a layer or change the layers in xtask/src/layers.rs on purpose",
                layers.krate
            ));
        }
    }
    out
}

fn name_of(layers: &Layers) -> &'static str {
    match layers.krate {
        "deploy-core" => "CORE",
        "deploy-engine" => "ENGINE",
        _ => "CLI",
    }
}

/// A table whose allowed imports form a cycle is a violation: the layers must be a DAG.
fn cycles(layers: &Layers) -> Vec<String> {
    let table: BTreeMap<&str, &[&str]> = layers.allowed.iter().copied().collect();
    let mut out = Vec::new();
    // Depth-first search for a back edge.
    fn visit<'a>(
        m: &'a str,
        table: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        out: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| *p == m) {
            out.push(format!("import cycle in the layers: {}", {
                let mut cycle = path[at..].to_vec();
                cycle.push(m);
                cycle.join(" → ")
            }));
            return;
        }
        if !done.insert(m) {
            return;
        }
        path.push(m);
        for next in table.get(m).copied().unwrap_or(&[]) {
            visit(next, table, path, done, out);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in table.keys() {
        visit(m, &table, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

/// The module a file belongs to: `src/plan/live.rs` → `plan`; with `commands` split,
/// `src/commands/promote.rs` → `commands::promote` (and `commands/mod.rs` → `commands`).
fn module_of(path: &str, split: &[&str]) -> Option<String> {
    let rel = path.strip_prefix("src/")?;
    let rel = rel.strip_suffix(".rs")?;
    let parts: Vec<&str> = rel.split('/').filter(|p| *p != "mod").collect();
    Some(match parts.as_slice() {
        [] => return None,
        [top, sub, ..] if split.contains(top) => format!("{top}::{sub}"),
        [top, ..] => (*top).to_owned(),
    })
}

/// `(line, module)` for each `crate::m…` or `super::…` path in the library code of `text`,
/// `use crate::{a::…, b}` groups included (over several lines too).
fn imports(path: &str, text: &str, split: &[&str]) -> Vec<(usize, String)> {
    // The file's own module path, for `super::`.
    let rel = path.trim_start_matches("src/").trim_end_matches(".rs");
    let mut own: Vec<&str> = rel.split('/').collect();
    if own.last() == Some(&"mod") || own == ["lib"] || own == ["main"] {
        own.pop();
    }
    let lines = super::library_lines(text);
    let code = lines.iter().map(|(_, l)| *l).collect::<Vec<_>>().join("\n");
    let line_of = |at: usize| lines[code[..at].matches('\n').count()].0;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if ident_before(&code, at) {
            continue;
        }
        for p in paths_at(&code[at + "crate::".len()..]) {
            out.push((line_of(at), target(&p, split)));
        }
    }
    for (at, _) in code.match_indices("super::") {
        if ident_before(&code, at) || code[..at].ends_with("super::") {
            continue;
        }
        let mut rest = &code[at..];
        let mut base = own.clone();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        for p in paths_at(rest) {
            let full: Vec<&str> = base.iter().copied().chain(p.split("::")).collect();
            out.push((line_of(at), target(&full.join("::"), split)));
        }
    }
    out
}

fn ident_before(code: &str, at: usize) -> bool {
    code[..at]
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
}

/// The paths that start at `rest`: `a::b` or each item of `{a::b, c}`.
fn paths_at(rest: &str) -> Vec<String> {
    let Some(body) = rest.strip_prefix('{') else {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        return vec![rest[..end].trim_end_matches(':').to_owned()];
    };
    super::group_items(body)
        .into_iter()
        .map(|i| i.trim().trim_end_matches(':').to_owned())
        .filter(|i| !i.is_empty() && i != "self")
        .collect()
}

/// The module a path names: its first segment, or two for a split folder.
fn target(path: &str, split: &[&str]) -> String {
    let mut parts = path.split("::");
    let top = parts.next().unwrap_or("");
    match parts.next() {
        Some(sub) if split.contains(&top) && !sub.is_empty() => format!("{top}::{sub}"),
        _ => top.to_owned(),
    }
}

/// The crate's library files, `(path relative to the crate, text)`.
pub(crate) fn read(layers: &Layers) -> Vec<(String, String)> {
    let root = super::project_root().join(layers.krate);
    super::rust_files_in(layers.krate, &["src"])
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap_or(Path::new(""))
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            (rel, text)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
            .collect()
    }

    const FIXTURE: Layers = Layers {
        krate: "fixture",
        split: &["commands"],
        allowed: &[
            ("model", &[]),
            ("plan", &["model"]),
            ("engine", &["model", "plan"]),
            ("commands", &[]),
            ("commands::a", &["engine"]),
            ("commands::b", &["engine", "commands::a"]),
        ],
    };

    /// The fixture's back edge (a planner reaching into the engine, the `plan → engine` of
    /// the third structure review) is found with its line; the allowed edges, test code,
    /// comments and `super::` within a module are not.
    #[test]
    fn a_back_edge_is_named_with_its_line() {
        let v = violations(
            &FIXTURE,
            &files(&[
                ("src/model.rs", "pub struct Tag;\n"),
                (
                    "src/plan/mod.rs",
                    "use crate::model::Tag;\n// crate::engine in a comment\nuse crate::{model, engine::lock::carrier};\n",
                ),
                ("src/plan/live.rs", "use super::other;\n"),
                (
                    "src/engine/mod.rs",
                    "use crate::plan::x;\n#[cfg(test)]\nmod tests {\n    use crate::commands::a;\n}\n",
                ),
                ("src/commands/a.rs", "use crate::engine::Engine;\n"),
                (
                    "src/commands/b.rs",
                    "use super::a::run;\nuse super::c::x;\n",
                ),
                (
                    "src/model/tag.rs",
                    "use crate::{\n    error::Error,\n    plan::Plan,\n};\n",
                ),
            ]),
        );
        assert_eq!(v.len(), 2, "{v:#?}");
        assert!(
            v[0].starts_with("fixture/src/plan/mod.rs:3: `plan` imports `engine`"),
            "{v:#?}"
        );
        assert!(
            v[1].starts_with("fixture/src/model/tag.rs:1: `model` imports `plan`"),
            "a group over several lines: {v:#?}"
        );
    }

    #[test]
    fn a_module_without_a_place_and_a_cyclic_table_are_violations() {
        let v = violations(&FIXTURE, &files(&[("src/extra.rs", "")]));
        assert!(v[0].contains("module `extra` has no place"), "{v:#?}");
        const CYCLIC: Layers = Layers {
            krate: "fixture",
            split: &[],
            allowed: &[("a", &["b"]), ("b", &["a"])],
        };
        assert!(
            violations(&CYCLIC, &[])
                .iter()
                .any(|l| l.contains("import cycle in the layers: a → b → a")),
            "the table must be a DAG"
        );
    }

    /// The real crates keep their layers.
    #[test]
    fn each_crate_keeps_its_layers() {
        let mut all = Vec::new();
        for layers in [&CORE, &ENGINE, &CLI] {
            all.extend(violations(layers, &read(layers)));
        }
        super::super::report(all);
    }
}
