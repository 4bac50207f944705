//! The promotion lock's decisions: one key per environment, the Application that carries it
//! where the lock is an annotation, who holds it ([`Holder`]), when a stale holder may be taken
//! over, why a lease can no longer be trusted ([`LeaseLost`]), how long a run's lease lasts, and
//! where the lock lives ([`placement`]: an annotation, a Lease, an S3 object).
//! Pure; `deploy_engine`'s lease keeper acts on them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::plan::promotion::PromotionPlan;

/// The lock key of an environment: the same for every machine and every transport, whatever
/// the order of `waves` or `[[clusters]]` in a local configuration.
pub fn key(app: &str, environment: &str) -> String {
    format!("deploy-{app}-{environment}")
}

/// The Application that carries an environment's lock where the lock is an annotation: the
/// first of its Applications by name, so that two configurations listing clusters or waves in
/// another order still contend for the same object.
pub fn carrier(config: &crate::config::Config, env: &crate::config::Environment) -> Option<String> {
    config
        .clusters
        .iter()
        .map(|c| config.application_name(env, c))
        .min()
}

/// Who holds a lock: `user@host pid N boot B pidns P`. The boot id and PID namespace make
/// "that process is gone" decidable only by a process of the same kernel boot and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// OS user.
    pub user: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// First 8 characters of the kernel boot id, `unknown` when it cannot be read.
    pub boot: String,
    /// PID namespace inode, `unknown` when it cannot be read.
    pub pidns: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{} pid {} boot {} pidns {}",
            self.user, self.host, self.pid, self.boot, self.pidns
        )
    }
}

/// A holder string that is not of the [`Holder`] form (another tool, an older version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lock holder {0:?} is not of the form `user@host pid N boot B pidns P`")]
pub struct UnknownHolder(pub String);

impl FromStr for Holder {
    type Err = UnknownHolder;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownHolder(s.to_owned());
        let words: Vec<&str> = s.split(' ').collect();
        let [who, "pid", pid, "boot", boot, "pidns", pidns] = words.as_slice() else {
            return Err(bad());
        };
        let (user, host) = who.split_once('@').ok_or_else(bad)?;
        Ok(Self {
            user: user.to_owned(),
            host: host.to_owned(),
            pid: pid.parse().map_err(|_| bad())?,
            boot: (*boot).to_owned(),
            pidns: (*pidns).to_owned(),
        })
    }
}

impl Holder {
    /// Whether `self` (this process) may take over a lock `theirs` holds: only a process of
    /// the same user, on the same host, in the same boot and PID namespace, that no longer
    /// exists (`exists` answers for a pid). Anything else (another user, whose processes
    /// `hidepid` may hide; another machine; an unknown scope) is never judged gone. Pure.
    pub fn may_take_over(&self, theirs: &Holder, exists: impl Fn(u32) -> bool) -> bool {
        let known = |h: &Holder| h.boot != "unknown" && h.pidns != "unknown";
        known(self)
            && self.user == theirs.user
            && self.host == theirs.host
            && self.boot == theirs.boot
            && self.pidns == theirs.pidns
            && self.pid != theirs.pid
            && !exists(theirs.pid)
    }
}

/// Why the lease can no longer be trusted for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseLost {
    /// Another run provably holds the lock now.
    Taken {
        /// Who.
        holder: String,
    },
    /// The lease could be neither renewed nor taken again before it ran out (the backend
    /// was unreachable or refused us, or this machine slept past the expiry). The run stops
    /// starting new work and rolls nothing back: a lock it cannot hold says nothing about
    /// the health of what it deployed.
    Expired {
        /// The lock: its key and, when known, its backend.
        lock: String,
        /// The last error, if any.
        reason: String,
    },
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Taken { holder } => write!(f, "lost the promotion lock: {holder} holds it now"),
            Self::Expired { lock, reason } => write!(
                f,
                "the promotion lock {lock} could be neither renewed nor taken again before it ran out: {reason}"
            ),
        }
    }
}

/// How long the lease lasts unless renewed: long enough for a wave (its timeout), its
/// longest soak as the checks make it ([`crate::check::least_soak`]), a soak extended by
/// lapses up to the timeout again, and a margin. It is renewed at every wave, before writes
/// close to its expiry, and every third of it during a soak.
pub fn lease_ttl(plan: &PromotionPlan) -> Duration {
    let longest_soak = plan
        .waves
        .iter()
        .flat_map(|w| &w.apps)
        .map(|a| crate::check::least_soak(plan.soak, &a.checks))
        .fold(plan.soak, Duration::max);
    plan.timeout
        .saturating_mul(2)
        .saturating_add(longest_soak)
        .saturating_add(Duration::from_secs(600))
}

/// How this process reaches Argo CD, as far as the promotion lock cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// In-memory backends (the sandbox, the demo): one lock for every environment.
    InMemory,
    /// Argo CD's REST API.
    Rest,
    /// The Kubernetes API (`--core`).
    Kubernetes,
    /// Argo CD is not configured (no server or no token): only commands that read
    /// registries run.
    Unconfigured,
}

/// Where an environment's promotion lock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The in-memory backends' lock.
    InMemory,
    /// The `deploy/lock` annotation on the carrier Application ([`carrier`]), over whichever
    /// API reaches Argo CD: a run over REST and one with `--core` exclude each other (F5).
    Annotation,
    /// A `coordination.k8s.io` Lease in the Argo CD namespace.
    Lease,
    /// An object in the environment's S3 state store, named by [`key`].
    S3,
    /// Nowhere: Argo CD is not configured and `state` names no lock backend.
    Unavailable,
}

/// Where the promotion lock of `env` lives: the backend `state.lock` names, whatever the
/// transport; without `state`, the annotation on the carrier Application. In-memory backends
/// have one lock whatever the configuration says.
pub fn placement(env: &crate::config::Environment, transport: Transport) -> Placement {
    use crate::config::LockBackend;
    match (transport, env.state.as_ref().map(|s| s.lock)) {
        (Transport::InMemory, _) => Placement::InMemory,
        (_, Some(LockBackend::S3)) => Placement::S3,
        (_, Some(LockBackend::Kubernetes)) => Placement::Lease,
        (_, Some(LockBackend::Argocd)) => Placement::Annotation,
        (Transport::Unconfigured, None) => Placement::Unavailable,
        (Transport::Rest | Transport::Kubernetes, None) => Placement::Annotation,
    }
}

/// Where `deploy watch --leader-elect` replicas of `env` elect their leader: with `--core` and
/// no `state`, a Lease (what deploy/rbac.yaml grants by name; the replicas of one Deployment
/// all use one transport, so the REST/`--core` split of F5 does not arise); otherwise where
/// the promotion lock is ([`placement`]).
pub fn leader_placement(env: &crate::config::Environment, transport: Transport) -> Placement {
    match (transport, &env.state) {
        (Transport::Kubernetes, None) => Placement::Lease,
        _ => placement(env, transport),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Holder {
        "alice@laptop pid 42 boot 0123abcd pidns 4026531836"
            .parse()
            .unwrap()
    }

    #[test]
    fn holder_round_trips() {
        let h = me();
        assert_eq!(h.to_string().parse::<Holder>().unwrap(), h);
        assert_eq!(h.pid, 42);
        for bad in [
            "garbage",
            "alice@laptop pid x boot a pidns b",
            "alice pid 1 boot a pidns b",
            "",
        ] {
            assert!(bad.parse::<Holder>().is_err(), "{bad}");
        }
    }

    #[track_caller]
    fn check(theirs: &str, exists: bool, want: bool) {
        let theirs: Holder = theirs.parse().unwrap();
        assert_eq!(me().may_take_over(&theirs, |_| exists), want, "{theirs}");
    }

    #[test]
    fn takeover_only_of_a_gone_process_in_our_scope() {
        check(
            "alice@laptop pid 7 boot 0123abcd pidns 4026531836",
            false,
            true,
        );
        check(
            "alice@laptop pid 7 boot 0123abcd pidns 4026531836",
            true,
            false,
        );
        check(
            "bob@laptop pid 7 boot 0123abcd pidns 4026531836",
            false,
            false,
        );
        check(
            "alice@ci pid 7 boot 0123abcd pidns 4026531836",
            false,
            false,
        );
        check(
            "alice@laptop pid 7 boot ffffffff pidns 4026531836",
            false,
            false,
        );
        check("alice@laptop pid 7 boot 0123abcd pidns 1", false, false);
        check(
            "alice@laptop pid 42 boot 0123abcd pidns 4026531836",
            false,
            false,
        );
        check(
            "alice@laptop pid 7 boot unknown pidns unknown",
            false,
            false,
        );
    }

    #[test]
    fn the_key_and_the_carrier_ignore_local_order() {
        assert_eq!(key("myapp", "prod"), "deploy-myapp-prod");
        let config = crate::config::Config::parse("deploy.toml", crate::config::EXAMPLE).unwrap();
        let prod = config.environment("prod").unwrap();
        let mut reordered = config.clone();
        reordered.clusters.reverse();
        assert_eq!(carrier(&config, prod), carrier(&reordered, prod));
        assert_eq!(
            carrier(&config, prod).as_deref(),
            Some("myapp-prod-eu-west-1")
        );
    }

    #[test]
    fn placement_follows_state_then_the_transport() {
        use crate::config::{LockBackend, StateConfig};
        use Placement::{Annotation, InMemory, Lease, S3, Unavailable};
        use Transport::{Kubernetes, Rest, Unconfigured};
        let config = crate::config::Config::parse("deploy.toml", crate::config::EXAMPLE).unwrap();
        let with = |lock: Option<LockBackend>| {
            let mut env = config.environment("prod").unwrap().clone();
            env.state = lock.map(|lock| StateConfig {
                s3: None,
                region: None,
                aws_profile: None,
                lock,
            });
            env
        };
        #[rustfmt::skip]
        let table = [
            (None,                         Rest,         Annotation, Annotation),
            (None,                         Kubernetes,   Annotation, Lease),
            (None,                         Unconfigured, Unavailable,  Unavailable),
            (None,                         Transport::InMemory, InMemory, InMemory),
            (Some(LockBackend::Argocd),    Rest,         Annotation, Annotation),
            (Some(LockBackend::Argocd),    Kubernetes,   Annotation, Annotation),
            (Some(LockBackend::Argocd),    Unconfigured, Annotation, Annotation),
            (Some(LockBackend::Kubernetes), Rest,        Lease,        Lease),
            (Some(LockBackend::Kubernetes), Kubernetes,  Lease,        Lease),
            (Some(LockBackend::S3),        Rest,         S3,         S3),
            (Some(LockBackend::S3),        Kubernetes,   S3,         S3),
            (Some(LockBackend::S3),        Unconfigured, S3,         S3),
            (Some(LockBackend::S3),        Transport::InMemory, InMemory, InMemory),
        ];
        for (lock, transport, run, leader) in table {
            let env = with(lock);
            let why = format!("state.lock {lock:?} over {transport:?}");
            assert_eq!(placement(&env, transport), run, "{why}");
            assert_eq!(leader_placement(&env, transport), leader, "{why}: leader");
        }
    }
}
