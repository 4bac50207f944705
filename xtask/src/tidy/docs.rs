//! The documentation shows only what works: every `deploy` command in a code block of the
//! README or a `docs/` page parses with the real command line, every command named in the
//! prose exists with the options it shows, every `deploy.toml` snippet parses with the real
//! configuration parser, and every relative link reaches a file (and a heading, when it
//! names one).
//!
//! A command in a code block is parsed by clap (`deploy_cli::cli::Cli`), so a renamed flag or
//! subcommand, a value clap refuses (a duration, a `--how`) or a missing required option
//! fails here, not in a reader's terminal. A code span in the prose (`deploy plan --env
//! prod`, a synopsis such as `deploy status [--env E]`) may leave out what the command needs,
//! so only its subcommands and options are checked. A ```` ```toml ```` block is a whole `deploy.toml`; a
//! ```` ```toml fragment ```` block is merged into `examples/deploy.toml` (tables key by key,
//! anything else replaced) and the result parsed, so a fragment's keys and values are checked
//! in a complete file.

use std::path::{Path, PathBuf};

use clap::Parser;
use clap::error::ErrorKind;

use super::{project_root, read, read_dir, rel, report};

/// The pages: the README, every page under `docs/`, and the README beside the manifests.
fn pages() -> Vec<PathBuf> {
    let root = project_root();
    let mut pages = vec![root.join("README.md"), root.join("deploy/README.md")];
    pages.extend(
        read_dir(&root.join("docs"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    pages
}

#[test]
fn docs_show_only_commands_and_configuration_that_parse() {
    let example = read(&project_root().join("examples/deploy.toml"));
    let mut violations = Vec::new();
    for page in pages() {
        let text = read(&page);
        violations.extend(check_page(&rel(&page), &text, &example));
    }
    report(violations);
}

#[test]
fn docs_name_every_command_and_option() {
    let text: String = pages().iter().map(|p| read(p)).collect();
    report(undocumented(&text));
}

/// Every subcommand (`deploy release check`) and every long option (`--window-wait`) of the
/// CLI that `text` never names in a code span: what a user can type is documented somewhere.
fn undocumented(text: &str) -> Vec<String> {
    use clap::CommandFactory;
    let mut root = deploy_cli::cli::Cli::command();
    root.build();
    let spans: Vec<String> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut missing = Vec::new();
    let mut stack = vec![(String::from("deploy"), &root)];
    while let Some((path, command)) = stack.pop() {
        if path != "deploy" && !spans.iter().any(|s| s.starts_with(&path)) {
            missing.push(format!("README.md, docs/: no code span names `{path}`"));
        }
        // A global option is the root's, named once.
        let own = |a: &&clap::Arg| !a.is_hide_set() && (path == "deploy" || !a.is_global_set());
        for arg in command.get_arguments().filter(own) {
            let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) else {
                continue;
            };
            let option = format!("--{long}");
            let short = arg.get_short().map(|s| format!("-{s}"));
            let named = |s: &String| {
                s.split([' ', '=', '[', ']', '/'])
                    .any(|w| w == option || Some(w) == short.as_deref())
            };
            if !spans.iter().any(named) {
                missing.push(format!(
                    "README.md, docs/: no code span names `{path} {option}`"
                ));
            }
        }
        stack.extend(
            command
                .get_subcommands()
                .filter(|c| !c.is_hide_set() && c.get_name() != "help")
                .map(|c| (format!("{path} {}", c.get_name()), c)),
        );
    }
    missing.sort();
    missing.dedup();
    missing
}

#[test]
fn docs_links_reach_their_files_and_headings() {
    let mut violations = Vec::new();
    for page in pages() {
        let text = read(&page);
        violations.extend(check_links(&page, &text));
    }
    report(violations);
}

/// One fenced code block: its info string, the line of its opening fence, and its lines
/// (with the fence's indentation removed), each with its line number.
#[derive(Debug)]
struct Block {
    info: String,
    line: usize,
    body: Vec<(usize, String)>,
}

impl Block {
    fn text(&self) -> String {
        self.body.iter().map(|(_, l)| format!("{l}\n")).collect()
    }
}

/// The fenced code blocks of a Markdown text, indented ones (in a list) included.
fn code_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    // The open block, with its fence and the fence's indentation.
    let mut open: Option<(&str, usize, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = ["```", "~~~"].into_iter().find(|f| trimmed.starts_with(f));
        match (&mut open, fence) {
            (None, Some(fence)) => {
                let block = Block {
                    info: trimmed[fence.len()..].trim().to_owned(),
                    line: i + 1,
                    body: Vec::new(),
                };
                open = Some((fence, line.len() - trimmed.len(), block));
            }
            (Some((f, _, _)), Some(fence)) if *f == fence && trimmed.trim_end() == fence => {
                blocks.extend(open.take().map(|(_, _, b)| b));
            }
            (Some((_, indent, block)), _) => {
                // The lines of a block in a list carry the list's indentation: remove what
                // the fence had, no more.
                let cut = line
                    .char_indices()
                    .take_while(|&(at, c)| at < *indent && c == ' ')
                    .count();
                block.body.push((i + 1, line[cut..].to_owned()));
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Every violation of one page: commands that do not parse, configuration that does not.
fn check_page(path: &str, text: &str, example: &str) -> Vec<String> {
    let mut violations = Vec::new();
    for block in code_blocks(text) {
        let mut words = block.info.split_whitespace();
        match words.next().unwrap_or_default() {
            "" | "sh" | "bash" | "shell" | "console" => {
                let prompt_only = block.info == "console";
                for (line, args) in deploy_commands(&block, prompt_only) {
                    if let Err(e) = parse_command(&args) {
                        violations.push(format!(
                            "{path}:{line}: `{}` does not parse with deploy's command line: {e}",
                            args.join(" ")
                        ));
                    }
                }
            }
            "toml" => {
                let whole = match words.next() {
                    None => Ok(block.text()),
                    Some("fragment") => merge_into(example, &block.text()),
                    Some(other) => Err(format!(
                        "unknown toml block kind `{other}`: a block is a whole deploy.toml, or \
                         ```toml fragment (merged into examples/deploy.toml)"
                    )),
                };
                let parsed = whole.and_then(|t| {
                    deploy_core::config::Config::parse(path, &t)
                        .map(drop)
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = parsed {
                    violations.push(format!(
                        "{path}:{}: this deploy.toml snippet does not parse with \
                         deploy_core::config::Config::parse: {e}",
                        block.line
                    ));
                }
            }
            _ => {}
        }
    }
    for (line, words) in inline_commands(text) {
        if let Err(e) = check_mention(&words) {
            violations.push(format!("{path}:{line}: `{}`: {e}", words.join(" ")));
        }
    }
    violations
}

/// The code spans of the prose that name a `deploy` command (`deploy plan --env prod`, or a
/// synopsis such as `deploy status [--env E]`), each with its line and its words, the
/// brackets of a synopsis removed.
fn inline_commands(text: &str) -> Vec<(usize, Vec<String>)> {
    let in_code = code_lines(text);
    let prose: Vec<&str> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if in_code.contains(&(i + 1)) { "" } else { l })
        .collect();
    let prose = prose.join("\n");
    let mut found = Vec::new();
    // Odd pieces between backticks are code spans (a span may run over a line break).
    let mut offset = 0;
    for (i, piece) in prose.split('`').enumerate() {
        if i % 2 == 1 && piece.starts_with("deploy ") {
            let line = prose[..offset].matches('\n').count() + 1;
            let words = piece
                .split_whitespace()
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_owned())
                .filter(|w| !w.is_empty())
                .collect();
            found.push((line, words));
        }
        offset += piece.len() + 1;
    }
    found
}

/// Whether a command named in prose exists: its subcommands are deploy's, and every option
/// it shows is one of that subcommand's (or a global one). Values and placeholders (`E`,
/// `prod`, `yaml|terraform`) are not checked: a span may name a command without all it needs.
fn check_mention(words: &[String]) -> Result<(), String> {
    use clap::CommandFactory;
    let mut root = deploy_cli::cli::Cli::command();
    // Built, the subcommands carry the global options and `--help`.
    root.build();
    let mut command = &root;
    let mut words = words.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.as_str();
        let options: Vec<&str> = if let Some(long) = word.strip_prefix("--") {
            vec![long.split('=').next().unwrap_or_default()]
        } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            shorts
                .char_indices()
                .map(|(at, c)| &shorts[at..at + c.len_utf8()])
                .collect()
        } else {
            if let Some(sub) = command.find_subcommand(word) {
                command = sub;
            } else if command.has_subcommands() {
                return Err(format!(
                    "`{}` has no subcommand `{word}`",
                    command.get_name()
                ));
            }
            continue;
        };
        for option in options {
            let arg = [command, &root]
                .into_iter()
                .flat_map(|c| c.get_arguments())
                .find(|a| {
                    a.get_long() == Some(option)
                        || a.get_short().is_some_and(|s| option == s.to_string())
                })
                .ok_or_else(|| format!("`{}` has no option `{option}`", command.get_name()))?;
            if arg.get_action().takes_values() && !word.contains('=') {
                words.next();
            }
        }
    }
    Ok(())
}

/// Parses `args` (the program name first) as the `deploy` binary would. Help and version
/// requests are commands that work.
fn parse_command(args: &[String]) -> Result<(), String> {
    match deploy_cli::cli::Cli::try_parse_from(args) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => Ok(()),
        Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_owned()),
    }
}

/// The `deploy` invocations of a shell block, each with its line and its words (`deploy`
/// first): `deploy …` itself, and `cargo run -p deploy-cli -- …`. An `alias deploy='…'`
/// is a prefix: its arguments go before those of every later `deploy` of the block.
/// With `prompt_only` (a console block), only the lines after a `$ ` prompt are commands.
fn deploy_commands(block: &Block, prompt_only: bool) -> Vec<(usize, Vec<String>)> {
    let mut commands = Vec::new();
    let mut alias: Vec<String> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (line, text) in &block.body {
        let text = match (prompt_only, &pending) {
            (true, None) => match text.trim_start().strip_prefix("$ ") {
                Some(command) => command,
                None => continue,
            },
            _ => text.as_str(),
        };
        let (start, mut joined) = pending.take().unwrap_or((*line, String::new()));
        joined.push_str(text);
        if let Some(head) = joined.strip_suffix('\\') {
            pending = Some((start, format!("{head} ")));
            continue;
        }
        for words in simple_commands(&joined) {
            if let [alias_word, definition] = words.as_slice()
                && alias_word == "alias"
            {
                let inner = definition.strip_prefix("deploy=").map(simple_commands);
                if let Some(args) = inner.and_then(|c| c.first().and_then(|w| deploy_args(w))) {
                    alias = args[1..].to_vec();
                }
                continue;
            }
            if let Some(mut args) = deploy_args(&words) {
                args.splice(1..1, alias.iter().cloned());
                commands.push((start, args));
            }
        }
    }
    commands
}

/// The arguments of `deploy` in one simple command's words, if it runs `deploy`.
fn deploy_args(words: &[String]) -> Option<Vec<String>> {
    let words: Vec<&str> = words
        .iter()
        .map(String::as_str)
        .skip_while(|w| is_assignment(w))
        .collect();
    match words.as_slice() {
        ["deploy", ..] => Some(words.iter().map(|w| (*w).to_owned()).collect()),
        ["cargo", "run", rest @ ..] => {
            let split = rest.iter().position(|w| *w == "--")?;
            let (options, args) = (&rest[..split], &rest[split + 1..]);
            options
                .windows(2)
                .any(|w| w == ["-p", "deploy-cli"])
                .then(|| {
                    std::iter::once("deploy")
                        .chain(args.iter().copied())
                        .map(str::to_owned)
                        .collect()
                })
        }
        _ => None,
    }
}

/// `NAME=value`, a variable set for the command that follows.
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Splits one shell line into simple commands, each as its words with quotes removed:
/// `&&`, `||`, `|`, `;` and `&` separate commands, a redirection drops its target, `#` at
/// the start of a word comments out the rest. Enough for documentation, not a shell.
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut words = Words::default();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                let w = words.word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    w.push(q);
                }
            }
            '#' if words.word.is_none() => break,
            ' ' | '\t' => words.end_word(),
            '&' | '|' | ';' => {
                words.end_word();
                chars.next_if_eq(&c);
                words.commands.push(Vec::new());
            }
            '>' | '<' => {
                // `2>`: the descriptor belongs to the redirection, not to the command.
                if words
                    .word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|d| d.is_ascii_digit()))
                {
                    words.word = None;
                }
                words.end_word();
                chars.next_if_eq(&c);
                words.skip_next = true;
            }
            _ => words.word.get_or_insert_with(String::new).push(c),
        }
    }
    words.end_word();
    words.commands.retain(|c| !c.is_empty());
    words.commands
}

/// The state of [`simple_commands`]: the commands so far, the word being read, and whether
/// that word is a redirection's target (dropped).
#[derive(Default)]
struct Words {
    commands: Vec<Vec<String>>,
    word: Option<String>,
    skip_next: bool,
}

impl Words {
    fn end_word(&mut self) {
        if let Some(w) = self.word.take() {
            if std::mem::take(&mut self.skip_next) {
                return;
            }
            match self.commands.last_mut() {
                Some(command) => command.push(w),
                None => self.commands.push(vec![w]),
            }
        }
    }
}

/// `fragment` merged into the TOML document `base`: its sections (`[argocd]`,
/// `[environments.NAME]`) key by key, each key's value replaced whole, as a reader adds the
/// fragment's lines to those sections of their file.
fn merge_into(base: &str, fragment: &str) -> Result<String, String> {
    let mut base: toml::Table = base
        .parse()
        .map_err(|e| format!("examples/deploy.toml: {e}"))?;
    let fragment: toml::Table = fragment.parse().map_err(|e| format!("not TOML: {e}"))?;
    merge(&mut base, fragment, SECTION_DEPTH);
    toml::to_string(&base).map_err(|e| e.to_string())
}

/// How deep sections nest in a `deploy.toml`: `[environments.NAME]` is two tables down.
const SECTION_DEPTH: usize = 2;

fn merge(base: &mut toml::Table, fragment: toml::Table, depth: usize) {
    for (key, value) in fragment {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from)) if depth > 0 => {
                merge(into, from, depth - 1);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Every relative link of a page that reaches no file, or no heading of its target.
fn check_links(page: &Path, text: &str) -> Vec<String> {
    let dir = page.parent().expect("a page is in a directory");
    let in_code = code_lines(text);
    let mut violations = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if in_code.contains(&(i + 1)) {
            continue;
        }
        for target in link_targets(line) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() {
                page.to_path_buf()
            } else {
                dir.join(file)
            };
            if !path.exists() {
                violations.push(format!("{}:{}: `{target}`: no such file", rel(page), i + 1));
                continue;
            }
            let is_markdown = path.extension().is_some_and(|e| e == "md");
            if !anchor.is_empty()
                && is_markdown
                && !headings(&read(&path)).contains(&anchor.to_owned())
            {
                violations.push(format!(
                    "{}:{}: `{target}`: {} has no heading with the anchor #{anchor}",
                    rel(page),
                    i + 1,
                    rel(&path)
                ));
            }
        }
    }
    violations
}

/// The (1-based) numbers of the lines inside fenced code blocks, fences included.
fn code_lines(text: &str) -> Vec<usize> {
    code_blocks(text)
        .iter()
        .flat_map(|b| std::iter::once(b.line).chain(b.body.iter().map(|(l, _)| *l)))
        .collect()
}

/// The targets of the inline links `[text](target)` of one line, outside code spans.
fn link_targets(line: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut in_span = false;
    let bytes = line.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'`' => in_span = !in_span,
            b']' if !in_span && bytes.get(at + 1) == Some(&b'(') => {
                if let Some(len) = line[at + 2..].find(')') {
                    targets.push(&line[at + 2..at + 2 + len]);
                }
            }
            _ => {}
        }
        at += 1;
    }
    targets
}

/// The anchors GitHub gives a page's headings: lowercase, punctuation removed, spaces as `-`.
fn headings(text: &str) -> Vec<String> {
    let in_code = code_lines(text);
    text.lines()
        .enumerate()
        .filter(|(i, l)| l.starts_with('#') && !in_code.contains(&(i + 1)))
        .map(|(_, l)| slug(l.trim_start_matches('#').trim()))
        .collect()
}

fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/deploy.toml");

    #[test]
    fn a_command_that_does_not_parse_is_a_violation() {
        let page = "```sh\ndeploy promote --env prod --yes\ndeploy promote --env prod --yse   # a typo\n```\n";
        let violations = check_page("page.md", page, EXAMPLE);
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert!(
            violations[0].starts_with("page.md:3: `deploy promote --env prod --yse`"),
            "{violations:#?}"
        );
    }

    #[test]
    fn a_command_named_in_prose_must_exist_with_its_options() {
        let page = concat!(
            "Run `deploy plan --env prod`, or `deploy status [--env E]`, `deploy --sandbox`,\n",
            "`deploy render applicationset --env E [--format yaml\\|terraform]`; not\n",
            "`deploy plan --environment prod`, `deploy histroy` nor `deploy release\n",
            "check --env E --wiat D`.\n",
        );
        let violations = check_page("page.md", page, EXAMPLE);
        assert_eq!(
            violations,
            [
                "page.md:3: `deploy plan --environment prod`: `plan` has no option `environment`",
                "page.md:3: `deploy histroy`: `deploy` has no subcommand `histroy`",
                "page.md:3: `deploy release check --env E --wiat D`: `check` has no option `wiat`",
            ]
        );
    }

    #[test]
    fn a_command_or_option_no_page_names_is_a_violation() {
        let missing = undocumented("`deploy status [--env E]`, `deploy demo --pace F`, `-v/-q`");
        for want in [
            "`deploy plan`",
            "`deploy promote --window-wait`",
            "`deploy release check`",
            "`deploy --config`",
        ] {
            assert!(
                missing
                    .iter()
                    .any(|m| m.ends_with(&format!("names {want}"))),
                "{want}: {missing:#?}"
            );
        }
        for named in [
            "`deploy status",
            "`deploy demo",
            "`deploy --verbose`",
            "`deploy --quiet`",
        ] {
            assert!(
                !missing.iter().any(|m| m.contains(named)),
                "{named}: {missing:#?}"
            );
        }
    }

    #[test]
    fn a_value_clap_refuses_is_a_violation() {
        let page = "```console\n$ deploy sandbox break --env prod --cluster c --how sideways\nerror: …\n```\n";
        assert_eq!(check_page("page.md", page, EXAMPLE).len(), 1);
    }

    #[test]
    fn commands_are_found_in_aliases_cargo_runs_chains_and_continuations() {
        let block = &code_blocks(concat!(
            "```sh\n",
            "cargo run -p deploy-cli -- demo     # the demo\n",
            "alias deploy='cargo run -q -p deploy-cli -- --sandbox'\n",
            "cargo xtask test\n",
            "deploy sandbox push --env staging --tag abc && deploy watch --env staging --once\n",
            "deploy completions zsh > \"${fpath[1]}/_deploy\"\n",
            "X=1 deploy release check --env staging \\\n",
            "  --tag 0123456789ab --wait 15m\n",
            "```\n",
        ))[0];
        let found: Vec<(usize, String)> = deploy_commands(block, false)
            .into_iter()
            .map(|(line, args)| (line, args.join(" ")))
            .collect();
        let expected = [
            (2, "deploy demo"),
            (5, "deploy --sandbox sandbox push --env staging --tag abc"),
            (5, "deploy --sandbox watch --env staging --once"),
            (6, "deploy --sandbox completions zsh"),
            (
                7,
                "deploy --sandbox release check --env staging --tag 0123456789ab --wait 15m",
            ),
        ];
        let expected: Vec<(usize, String)> = expected
            .iter()
            .map(|(l, c)| (*l, (*c).to_owned()))
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn console_blocks_check_only_prompted_lines() {
        let block =
            &code_blocks("```console\n$ deploy status\ndeploy is not a command here\n```\n")[0];
        let found: Vec<usize> = deploy_commands(block, true)
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        assert_eq!(found, [2]);
    }

    #[test]
    fn toml_blocks_parse_whole_or_as_fragments_of_the_example() {
        let good = "```toml fragment\n[environments.prod]\nsoak = \"10m\"\n```\n";
        assert_eq!(check_page("p.md", good, EXAMPLE), Vec::<String>::new());
        // A value is replaced whole: the example's helm `parameter` does not stay behind.
        let kustomize = "```toml fragment\n[environments.prod]\nimage_override = { kind = \"kustomize\" }\n```\n";
        assert_eq!(check_page("p.md", kustomize, EXAMPLE), Vec::<String>::new());
        let bad_key = "```toml fragment\n[environments.prod]\nsoak_time = \"10m\"\n```\n";
        assert_eq!(check_page("p.md", bad_key, EXAMPLE).len(), 1);
        let not_whole = "```toml\n[environments.prod]\nsoak = \"10m\"\n```\n";
        assert_eq!(check_page("p.md", not_whole, EXAMPLE).len(), 1);
        let unknown = "```toml snippet\napp = \"x\"\n```\n";
        assert!(check_page("p.md", unknown, EXAMPLE)[0].contains("unknown toml block kind"));
    }

    #[test]
    fn indented_blocks_lose_only_their_fence_indentation() {
        let blocks = code_blocks("1. list\n   ```sh\n   deploy status\n     deploy plan\n   ```\n");
        let body: Vec<&str> = blocks[0].body.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(body, ["deploy status", "  deploy plan"]);
    }

    #[test]
    fn anchors_are_github_slugs() {
        assert_eq!(
            slug("Configuration: `deploy.toml`"),
            "configuration-deploytoml"
        );
        assert_eq!(
            slug("The image updater: `deploy watch`"),
            "the-image-updater-deploy-watch"
        );
        assert_eq!(
            slug("A shared state store in S3"),
            "a-shared-state-store-in-s3"
        );
    }

    #[test]
    fn links_outside_code_spans_are_found() {
        assert_eq!(
            link_targets("see [a](a.md#x) and `[b](b.md)` and [c](../c)"),
            ["a.md#x", "../c"]
        );
    }
}
