//! The command line, as clap derive types; the doc comments are the help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Safe, observable Argo CD deployments: a release (a tag plus every service's digest) is
/// the unit, production is gated on the same digests in every region, and promotion is an
/// ordered, health-gated rollout over waves of clusters with soak, halt, rollback and resume.
#[derive(Debug, Parser)]
#[command(
    name = "deploy",
    version,
    before_help = "First time? `deploy demo` tells the whole story in seconds; then \
                   `deploy --sandbox --config examples/deploy.toml status`, and \
                   `deploy audit --env prod` against your own Argo CD.",
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Configuration file [default: $DEPLOY_CONFIG, else ./deploy.toml]
    #[arg(long, global = true, env = "DEPLOY_CONFIG", value_name = "PATH", value_parser = path_or_empty)]
    pub config: Option<PathBuf>,

    /// Output format: text for people, json for JSON Lines ({"type","data"} per line, the last of type "result")
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// More logs on stderr (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Quiet: no progress or notes on stderr, only warnings and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Argo CD server: host, host:port or URL (overrides [argocd].server)
    #[arg(long, global = true, env = "ARGOCD_SERVER", value_name = "SERVER")]
    pub argocd_server: Option<String>,

    /// Talk to Argo CD without TLS
    #[arg(long, global = true)]
    pub plaintext: bool,

    /// Skip TLS certificate verification (warned; for test servers only)
    #[arg(long, global = true)]
    pub insecure: bool,

    /// Run against in-memory backends seeded from the config, with state kept in .deploy-sandbox/
    #[arg(long, global = true, conflicts_with = "core")]
    pub sandbox: bool,

    /// Reach Argo CD through the Kubernetes API (kubeconfig) instead of its REST API, as `argocd --core` does
    #[arg(long, global = true)]
    pub core: bool,

    /// Audit trail file (JSON Lines, appended) [default: $XDG_STATE_HOME/deploy/audit.jsonl]
    #[arg(long, global = true, env = "DEPLOY_AUDIT_LOG", value_name = "PATH", value_parser = path_or_empty)]
    pub audit_log: Option<PathBuf>,
}

/// Text or JSON Lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables and progress for people.
    Text,
    /// JSON Lines on stdout.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Which release runs where: environment × cluster → application, desired and live tag, sync, health, operation
    Status {
        /// Only this environment
        #[arg(long)]
        env: Option<String>,
    },
    /// Releases in the registries
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// The gates and waves `promote` would run; changes nothing
    Plan(PlanArgs),
    /// Gated, wave-by-wave rollout of a release to an environment
    Promote(PromoteArgs),
    /// Re-promote the previous (or given) release, with the same gates and waits
    Rollback(RollbackArgs),
    /// Live policy findings: sync policies, ApplicationSet ignore rules, replication, tag mutability, clusters
    Audit {
        /// Only this environment
        #[arg(long)]
        env: Option<String>,
    },
    /// Promotions and rollbacks, newest first, from the environment's state store: when, who, release, clusters, outcome, duration
    History {
        /// Only this environment
        #[arg(long)]
        env: Option<String>,
        /// At most this many runs
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// The image-updater loop: write each new complete release into an automated environment
    Watch(WatchArgs),
    /// Show ENV's promotion lock; with --id, remove it when its run is gone (only the lock of that id, and a live one only with --force); recorded in the audit trail
    Unlock(UnlockArgs),
    /// Print manifests
    #[command(subcommand)]
    Render(RenderCommand),
    /// CI helpers
    #[command(subcommand)]
    Build(BuildCommand),
    /// The whole story, end to end, on in-memory backends, in seconds
    Demo {
        /// Slow the demo down by this factor (1 = as fast as it reads well)
        #[arg(long, default_value_t = 1.0)]
        pace: f64,
    },
    /// Manage the sandbox's simulated world (only with --sandbox)
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Shell completions
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// `deploy release ...`
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Is release TAG complete in every region registry of ENV: digests per service, what is missing
    Check {
        /// Environment
        #[arg(long)]
        env: String,
        /// The release tag
        #[arg(long)]
        tag: String,
        /// Keep checking until the release is complete or this much time has passed (for CI); exit 3 if it never is
        #[arg(long, value_name = "DURATION", value_parser = humantime_duration)]
        wait: Option<Duration>,
    },
    /// The newest complete release of ENV
    Latest {
        /// Environment
        #[arg(long)]
        env: String,
    },
}

/// `deploy plan`
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Environment
    #[arg(long)]
    pub env: String,
    /// Release tag [default: the release live in the environment's promote_from]
    #[arg(long)]
    pub tag: Option<String>,
}

/// `deploy promote`
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Environment and tag.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Confirmation and dry run.
    #[command(flatten)]
    pub run: RunArgs,
    /// Leave failed clusters as they are instead of returning them to the previous release
    #[arg(long)]
    pub no_rollback: bool,
}

/// Confirmation and dry run.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Do not ask for confirmation (for CI)
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Show the plan and exit
    #[arg(long)]
    pub dry_run: bool,
    /// How long a wave may wait for its Applications' sync windows to allow it (e.g. 30m);
    /// 0: do not wait (exit 3 before the first write, or halt before a later wave)
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime_duration)]
    pub window_wait: std::time::Duration,
}

/// `deploy rollback`
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Environment
    #[arg(long)]
    pub env: String,
    /// Release tag to return to [default: the previous release, from the audit trail or Argo CD history]
    #[arg(long)]
    pub to: Option<String>,
    /// Only this cluster
    #[arg(long)]
    pub cluster: Option<String>,
    /// Confirmation and dry run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `deploy watch`
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Environment (a manual one is only reported to, never changed)
    #[arg(long)]
    pub env: String,
    /// Check once and exit (for cron)
    #[arg(long)]
    pub once: bool,
    /// Time between polls of the sentinel repository
    #[arg(long, default_value = "30s", value_parser = humantime_duration)]
    pub interval: Duration,
    /// Most requests per second to each registry (one account in one region), whatever the interval
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub registry_rps: u32,
    /// Serve Prometheus metrics on /metrics and a liveness check on /healthz at this address (e.g. 0.0.0.0:9090)
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Run as one of several replicas: only the holder of the lease `deploy-watch-APP-ENV` polls and writes
    /// (a Lease with --core, else where the promotion lock is: state.lock's backend or an annotation on the environment's first Application)
    #[arg(long)]
    pub leader_elect: bool,
    /// This replica's name in the lease, with --leader-elect [default: $POD_NAME, else USER@HOST pid N]
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub leader_id: Option<String>,
}

/// `deploy unlock`
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Environment
    #[arg(long)]
    pub env: String,
    /// The lock's id, as `deploy unlock --env ENV` and the "another promotion holds the lock" error print it;
    /// without it the lock is only shown
    #[arg(long)]
    pub id: Option<String>,
    /// Remove the lock even though its holder renewed it within its time to live (its run must be gone)
    #[arg(long, requires = "id")]
    pub force: bool,
}

/// `deploy render ...`
#[derive(Debug, Subcommand)]
pub enum RenderCommand {
    /// The ApplicationSet of ENV, valid against the upstream CRD schema: YAML, or a Terraform kubernetes_manifest
    Applicationset {
        /// Environment
        #[arg(long)]
        env: String,
        /// yaml, or terraform (a kubernetes_manifest resource)
        #[arg(long, value_enum, default_value_t = ManifestFormat::Yaml)]
        format: ManifestFormat,
    },
    /// The replication configuration of ENV's source registry (promote_from) covering every region of ENV
    Replication {
        /// Environment
        #[arg(long)]
        env: String,
        /// terraform (an aws_ecr_replication_configuration resource), or json (for aws ecr put-replication-configuration)
        #[arg(long, value_enum, default_value_t = ReplicationFormat::Terraform)]
        format: ReplicationFormat,
    },
}

/// `deploy render applicationset --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestFormat {
    /// The manifest as YAML (kubectl apply -f).
    Yaml,
    /// A Terraform `kubernetes_manifest` resource.
    Terraform,
}

/// `deploy render replication --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplicationFormat {
    /// A Terraform `aws_ecr_replication_configuration` resource.
    Terraform,
    /// The JSON of `aws ecr put-replication-configuration --replication-configuration`.
    Json,
}

/// `deploy build ...`
#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// The release tag and the ordered push list for CI, sentinel last
    Plan {
        /// Environment
        #[arg(long)]
        env: String,
        /// The commit being built
        #[arg(long)]
        sha: String,
        /// The branch being built (checked against the environment's branch)
        #[arg(long, env = "GITHUB_REF_NAME")]
        branch: Option<String>,
    },
}

/// `deploy sandbox ...`
#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Forget the sandbox's state; the next command seeds a fresh world
    Reset,
    /// Act as CI: push every service image of TAG to ENV's registry, sentinel last
    Push {
        /// Environment
        #[arg(long)]
        env: String,
        /// Tag
        #[arg(long)]
        tag: String,
        /// Leave this service out (an incomplete release)
        #[arg(long)]
        skip: Vec<String>,
    },
    /// Make the next operation of one Application end badly
    Break {
        /// Environment
        #[arg(long)]
        env: String,
        /// Cluster
        #[arg(long)]
        cluster: String,
        /// How it ends
        #[arg(long, value_enum, default_value_t = Breakage::Degraded)]
        how: Breakage,
    },
    /// Make a check measure VALUE on one cluster while it runs RELEASE (other releases keep
    /// what they measure)
    Metric {
        /// Environment
        #[arg(long)]
        env: String,
        /// Cluster
        #[arg(long)]
        cluster: String,
        /// The check (default: the environment's only check)
        #[arg(long)]
        check: Option<String>,
        /// The release (tag) the values go with
        #[arg(long)]
        release: String,
        /// What a measurement gives, one per series (none: no data)
        #[arg(long, allow_negative_numbers = true)]
        value: Vec<f64>,
    },
}

/// How a sandbox operation ends badly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Breakage {
    /// The sync succeeds, then the app goes Degraded.
    Degraded,
    /// The sync fails.
    Failed,
    /// The sync never finishes.
    Hang,
}

/// A path; an empty one (e.g. `DEPLOY_CONFIG=` in a CI template) is read as "not given".
fn path_or_empty(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write e.g. 30s or 5m"))
}

/// Parses a tag given on the command line.
pub(crate) fn parse_tag(s: &str) -> anyhow::Result<deploy_core::model::Tag> {
    deploy_core::model::Tag::new(s).map_err(|e| {
        crate::exit::UsageError(format!(
            "{e}; a tag matches [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}"
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_every_command() {
        let ok = |args: &str| {
            let argv = std::iter::once("deploy").chain(args.split_whitespace());
            Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args}: {e}"))
        };
        ok("status");
        ok("--sandbox status --env prod");
        ok("release check --env prod --tag abc1234");
        ok("release check --env staging --tag abc1234 --wait 10m");
        ok("release latest --env staging --output json");
        ok("plan --env prod --tag abc1234");
        ok("promote --env prod --yes --no-rollback");
        ok("promote --env prod --dry-run");
        ok("rollback --env prod --to abc1234 --cluster us-east-1 --yes");
        ok("audit --env prod");
        ok("history --env prod --limit 5 --output json");
        ok("watch --env staging --once --interval 1m");
        ok("render applicationset --env prod");
        ok("render applicationset --env prod --format terraform");
        ok("render replication --env prod --format json");
        ok("build plan --env staging --sha 0123456789abcdef");
        ok("demo");
        ok("sandbox push --env staging --tag abc1234 --skip api");
        ok("completions bash");
        assert!(
            Cli::try_parse_from(["deploy", "promote"]).is_err(),
            "--env is required"
        );
        assert!(
            Cli::try_parse_from(["deploy", "watch", "--env", "s", "--interval", "soon"]).is_err()
        );
    }
}
