//! The `deploy` command line as a library: parse, wire backends, run a command, render.
//!
//! `deploy-cli` is glue: deciding lives in deploy-core, talking to ECR and Argo CD in the
//! adapters. [`main_with_args`] is what the binary and `cargo xtask deploy` call.
//!
//! Nothing in this crate writes to stdout or stderr itself (`println!` panics on a closed
//! stream and blocks on a full pipe; the print lints keep it so): every line, log lines
//! included, is queued through [`output`] for a writer thread of its own, so no tokio
//! thread ever waits for a reader. Only the live progress view draws on the terminal itself,
//! from the renderer's thread ([`progress`]).

// The doc comments of `cli.rs` are clap's help text, where `[default: …]` and
// `[argocd].server` are literal brackets, not links.
#![allow(rustdoc::broken_intra_doc_links)]
// A binary crate: only `main_with_args`, `cli` (the manifests test) and `notify::FLUSH` (the
// notify test) are used outside; everything else is `pub(crate)`, and this lint keeps it so.
#![warn(unreachable_pub)]
// Its documentation is for the people who work on it (`cargo doc --document-private-items`),
// where links to its private modules resolve.
#![allow(rustdoc::private_intra_doc_links)]

mod audit_log;
mod backends;
pub mod cli;
mod commands;
// `exit.rs` is rewritten for the run's outcome in this round; its items become `pub(crate)`
// when that lands.
#[allow(unreachable_pub)]
mod exit;
mod metrics;
pub mod notify;
mod output;
mod process;
mod progress;
mod signals;

use std::io::IsTerminal;
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
                output::finish(None);
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
            output::finish(None);
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
    output::finish(exit_wait(&cli.command));
    ExitCode::from(exit.code())
}

/// deploy's own crates: the only ones `-v` and `-vv` raise, and the only ones that may log
/// at trace level.
const OUR_CRATES: [&str; 6] = [
    "deploy",
    "deploy_cli",
    "deploy_core",
    "deploy_aws",
    "deploy_argocd",
    "deploy_notify",
];

/// The log filter for `-q` and `-v` (unless `RUST_LOG` says otherwise).
///
/// `-q` hides progress and notes, never warnings: a warning such as "TLS verification is
/// off" is exactly what a quiet CI log must still show.
fn log_filter(quiet: bool, verbose: u8) -> String {
    // The AWS SDK logs its own retries and credential probing at WARN; our errors already
    // say what failed and what to do, so it speaks only at -v and -vv.
    let (others, ours) = match (quiet, verbose) {
        (true, _) | (false, 0) => ("error", "warn"),
        (false, 1) => ("warn", "debug"),
        (false, _) => ("warn", "trace"),
    };
    let ours: Vec<String> = OUR_CRATES[1..]
        .iter()
        .map(|c| format!("{c}={ours}"))
        .collect();
    format!("{others},{}", ours.join(","))
}

/// Whether a log event of `target` at `level` may be written at all, whatever `RUST_LOG`
/// says: other crates speak at debug at most. At trace, aws-sigv4 logs each canonical
/// request with its `x-amz-security-token` header, aws-smithy-runtime each request with its
/// headers, and aws-config the credential process it ran (issue 17, N5).
fn loggable(target: &str, level: tracing::Level) -> bool {
    level <= tracing::Level::DEBUG
        || OUR_CRATES.iter().any(|c| {
            target
                .strip_prefix(c)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, filter};

    // An empty RUST_LOG (`RUST_LOG= deploy -vv`) is no RUST_LOG: -q and -v decide.
    let wanted = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| filter::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            filter::EnvFilter::new(log_filter(cli.global.quiet, cli.global.verbose))
        });
    let cap = filter::filter_fn(|meta| loggable(meta.target(), *meta.level()));
    // Colour only for a terminal that wants it: a CI log or a file gets plain text.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let layer = tracing_subscriber::fmt::layer()
        // Queued for stderr's own thread, and dropped when that queue is full: a log line
        // never blocks the runtime thread that logs it (issue 17, N1).
        .with_writer(|| output::LogWriter)
        .with_ansi(ansi)
        // A log line that cannot be written is dropped: by default tracing-subscriber reports
        // it with `eprintln!`, which panics when stderr is closed.
        .log_internal_errors(false)
        .with_target(false)
        .without_time()
        .with_filter(filter::FilterExt::and(wanted, cap));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// How long the end of `command` waits for its output once the reader stops taking it:
/// [`output::EXIT_STALL`] for the commands that hold a lock or a lease, so that a reader
/// that went away never keeps their exit code from CI; as long as it takes for the others.
fn exit_wait(command: &Command) -> Option<std::time::Duration> {
    matches!(
        command,
        Command::Promote(_) | Command::Rollback(_) | Command::Watch(_) | Command::Demo { .. }
    )
    .then_some(output::EXIT_STALL)
}

/// Runs one parsed command.
pub(crate) async fn run(cli: &Cli, out: Output) -> anyhow::Result<Exit> {
    match &cli.command {
        Command::Demo { pace } => return commands::demo::run(out, *pace).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "deploy", &mut script);
            // A closed pipe (`| head`) is not an error worth a backtrace.
            output::stdout_bytes(&script);
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
        // -vv raises deploy's crates only: the SDK's trace logs carry credentials.
        check(
            false,
            2,
            "warn,deploy_cli=trace,deploy_core=trace,deploy_aws=trace,deploy_argocd=trace,\
             deploy_notify=trace",
        );
    }

    #[test]
    fn other_crates_never_log_at_trace() {
        use tracing::Level;
        assert!(!loggable("aws_sigv4::http_request::sign", Level::TRACE));
        assert!(!loggable(
            "aws_smithy_runtime::client::orchestrator",
            Level::TRACE
        ));
        assert!(!loggable("deployer", Level::TRACE));
        assert!(loggable("aws_sigv4::http_request::sign", Level::DEBUG));
        assert!(loggable("deploy_argocd::rest", Level::TRACE));
        assert!(loggable("deploy_cli", Level::TRACE));
        assert!(loggable("hyper", Level::WARN));
    }
}
