//! The `deploy` command line as a library: parse, wire backends, run a command, render.
//!
//! `deploy-cli` is glue: deciding lives in deploy-core, talking to ECR and Argo CD in the
//! adapters. [`run`] is what the binary and `cargo xtask deploy` call.
//!
//! Nothing in this crate but `commands::promote` uses `println!`/`eprintln!` (they panic
//! on a closed stream; the print lints keep it so): text goes through [`output`].

// The doc comments of `cli.rs` are clap's help text, where `[default: …]` and
// `[argocd].server` are literal brackets, not links.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod audit_log;
pub mod backends;
pub mod cli;
pub mod commands;
pub mod exit;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod progress;
pub mod signals;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::backends::{Backends, load_config};
use crate::cli::{BuildCommand, Cli, Command, ReleaseCommand, SandboxCommand};
use crate::exit::Exit;
use crate::output::Output;

/// Parses `args` (the first is the program name), runs the command and returns the exit code.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args: Vec<String> = args.into_iter().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::SUCCESS;
            }
            // JSON Lines promise a final `result` line, even for a usage error.
            let json = args
                .windows(2)
                .any(|w| w[0] == "--output" && w[1] == "json")
                || args.iter().any(|a| a == "--output=json");
            if json {
                let out = Output {
                    format: cli::OutputFormat::Json,
                    quiet: true,
                };
                let text = e.to_string();
                let what = text
                    .split("\n\nUsage")
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
                out.result(&serde_json::json!({ "error": what, "exit_code": Exit::Usage.code() }));
            }
            return ExitCode::from(Exit::Usage.code());
        }
    };
    init_logging(&cli);
    let out = Output {
        format: cli.global.output,
        quiet: cli.global.quiet,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            output::stderr_line(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(Exit::Failed.code());
        }
    };
    let exit = match runtime.block_on(run(&cli, out)) {
        Ok(exit) => exit,
        Err(e) => {
            let exit = Exit::of_error(&e);
            if out.json() {
                out.result(
                    &serde_json::json!({ "error": format!("{e:#}"), "exit_code": exit.code() }),
                );
            }
            output::stderr_line(format_args!("error: {e:#}"));
            exit
        }
    };
    ExitCode::from(exit.code())
}

/// The log filter for `-q` and `-v` (unless `RUST_LOG` says otherwise).
///
/// `-q` hides progress and notes, never warnings: a warning such as "TLS verification is
/// off" is exactly what a quiet CI log must still show.
fn log_filter(quiet: bool, verbose: u8) -> String {
    // The AWS SDK logs its own retries and credential probing at WARN; our errors already
    // say what failed and what to do, so it speaks only at -vv.
    const OURS: &str =
        "deploy_cli={0},deploy_core={0},deploy_aws={0},deploy_argocd={0},deploy_notify={0}";
    match (quiet, verbose) {
        (true, _) | (false, 0) => format!("error,{}", OURS.replace("{0}", "warn")),
        (false, 1) => format!("warn,{}", OURS.replace("{0}", "debug")),
        (false, _) => "trace".to_owned(),
    }
}

fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(log_filter(cli.global.quiet, cli.global.verbose))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written is dropped: by default tracing-subscriber reports
        // it with `eprintln!`, which panics when stderr is closed.
        .log_internal_errors(false)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Runs one parsed command.
pub async fn run(cli: &Cli, out: Output) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Demo { pace } => return commands::demo::run(out, *pace).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "deploy", &mut script);
            // A closed pipe (`| head`) is not an error worth a backtrace.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return Ok(Exit::Success);
        }
        _ => {}
    }
    let (_path, mut config) = load_config(&cli.global)?;
    if let Command::Build(BuildCommand::Plan { env, sha, branch }) = &cli.command {
        return commands::build::plan(&config, out, env, sha, branch.as_deref());
    }
    if let Command::Sandbox(SandboxCommand::Reset) = &cli.command {
        return commands::sandbox::run(&config, None, out, &SandboxCommand::Reset);
    }
    if let Command::Render(render) = &cli.command {
        return commands::render::run(&config, out, render);
    }
    let mut ecr = deploy_aws::EcrOptions::default();
    if let Command::Watch(args) = &cli.command {
        ecr.requests_per_second = std::num::NonZeroU32::new(args.registry_rps);
    }
    let backends = Backends::open(&cli.global, &mut config, ecr).await?;
    if backends.sandbox.is_some() {
        out.note("sandbox: in-memory backends, state in .deploy-sandbox/, soak and timeouts compressed 60×");
    }
    if needs_argocd(&cli.command) {
        backends.require_argocd()?;
    }
    let exit = match &cli.command {
        Command::Status { env } => {
            commands::status::run(&config, &backends, out, env.as_deref()).await
        }
        Command::Release(ReleaseCommand::Check { env, tag, wait }) => {
            commands::release::check(&config, &backends, out, env, tag, *wait).await
        }
        Command::Release(ReleaseCommand::Latest { env }) => {
            commands::release::latest(&config, &backends, out, env).await
        }
        Command::Plan(args) => commands::promote::plan_cmd(&config, &backends, out, args).await,
        Command::Promote(args) => commands::promote::promote(&config, &backends, out, args).await,
        Command::Rollback(args) => commands::promote::rollback(&config, &backends, out, args).await,
        Command::Audit { env } => {
            commands::audit::run(&config, &backends, out, env.as_deref()).await
        }
        Command::Watch(args) => commands::watch::run(&config, &backends, out, args).await,
        Command::Unlock(args) => commands::unlock::run(&config, &backends, out, args).await,
        Command::History { env, limit } => {
            commands::history::run(&config, &backends, out, env.as_deref(), *limit).await
        }
        Command::Sandbox(cmd) => commands::sandbox::run(&config, Some(&backends), out, cmd),
        Command::Render(_)
        | Command::Build(_)
        | Command::Demo { .. }
        | Command::Completions { .. } => unreachable!("handled above"),
    }?;
    // Commands that change the sandbox save it themselves; reading commands leave it alone.
    Ok(exit)
}

/// Whether `command` reads or writes Argo CD (`release` and `build` only read registries).
fn needs_argocd(command: &Command) -> bool {
    matches!(
        command,
        Command::Status { .. }
            | Command::Plan(_)
            | Command::Promote(_)
            | Command::Rollback(_)
            | Command::Audit { .. }
            | Command::Watch(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_still_shows_warnings() {
        #[track_caller]
        fn check(quiet: bool, verbose: u8, expect: &str) {
            assert_eq!(
                log_filter(quiet, verbose),
                expect,
                "-q {quiet}, -v {verbose}"
            );
        }
        let warn = "error,deploy_cli=warn,deploy_core=warn,deploy_aws=warn,deploy_argocd=warn,\
                    deploy_notify=warn";
        check(true, 0, warn);
        check(false, 0, warn);
        check(
            false,
            1,
            "warn,deploy_cli=debug,deploy_core=debug,deploy_aws=debug,deploy_argocd=debug,\
             deploy_notify=debug",
        );
        check(false, 2, "trace");
    }
}
