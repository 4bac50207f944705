//! The promotion lock's rules: one key per environment ([`key`]), the Application that carries
//! it where the lock is an annotation ([`carrier`]), who holds it ([`Holder`]) and when a stale
//! holder may be taken over, whether `deploy unlock` may remove a lock that is not ours, and
//! whether this machine's clock can be trusted to call it expired.
//!
//! Pure: the adapters read the lock ([`crate::port::Lock::inspect`]) and the store's clock,
//! these functions decide, and the adapters act (a conditional delete, a takeover).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::error::Error;
use crate::port::{LockState, lock_id};

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

/// The command that removes a lock left by a run that is gone.
pub fn command(environment: &str, holder: &str) -> String {
    format!("deploy unlock --env {environment} --id {}", lock_id(holder))
}

/// Why `deploy unlock` leaves a lock alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Nobody holds the lock.
    #[error("lock {key} is not held: nothing to remove")]
    NotHeld {
        /// The lock's name.
        key: String,
    },
    /// Someone else holds it now (taken since the id was printed, or a wrong id).
    #[error(
        "lock {key} is held by {holder} with id {actual}, not {wanted}: it was taken since, or the id is wrong; nothing was removed"
    )]
    OtherId {
        /// The lock's name.
        key: String,
        /// Who holds it now.
        holder: String,
        /// Its id.
        actual: String,
        /// The id asked for.
        wanted: String,
    },
    /// The lease has not expired: its holder renewed it within its time to live.
    #[error(
        "lock {key} is live: {holder} renewed it and it expires at {expires_at} (in {left}); if that run is gone (its machine lost, its process killed), pass --force"
    )]
    Live {
        /// The lock's name.
        key: String,
        /// Who holds it.
        holder: String,
        /// When it expires.
        expires_at: Timestamp,
        /// How long until then, for people.
        left: String,
    },
}

/// Whether `deploy unlock --id wanted` may remove `state` at `now`: only a lock whose id is
/// still `wanted`, and, unless `force`, only one whose lease has expired.
pub fn decide(
    key: &str,
    state: Option<&LockState>,
    wanted: &str,
    force: bool,
    now: Timestamp,
) -> Result<(), Refusal> {
    let Some(state) = state else {
        return Err(Refusal::NotHeld {
            key: key.to_owned(),
        });
    };
    let actual = state.id();
    if !actual.eq_ignore_ascii_case(wanted.trim()) {
        return Err(Refusal::OtherId {
            key: key.to_owned(),
            holder: state.lease.holder.clone(),
            actual,
            wanted: wanted.to_owned(),
        });
    }
    if state.lease.expires_at > now && !force {
        return Err(Refusal::Live {
            key: key.to_owned(),
            holder: state.lease.holder.clone(),
            expires_at: state.lease.expires_at,
            left: age(state.lease.expires_at.duration_since(now)),
        });
    }
    Ok(())
}

/// Why `deploy unlock` did not remove a lock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnlockError {
    /// [`decide`] refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The lock was renewed or taken between reading and removing it.
    #[error(
        "lock {key} changed while it was being removed (renewed or taken by another run); nothing was removed: look again"
    )]
    Changed {
        /// The lock's name.
        key: String,
    },
    /// The lock backend failed.
    #[error(transparent)]
    Port(#[from] Error),
}

/// `d` in whole seconds for people, e.g. `14m 3s`.
pub fn age(d: SignedDuration) -> String {
    let secs = Duration::from_secs(d.as_secs().unsigned_abs());
    humantime::format_duration(secs).to_string()
}

/// How far this machine's clock may be from the store's before an expiry it reads is
/// doubted. The store's `Date` has whole seconds, and the request takes some time.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(2);

/// A lease that looks expired by this machine's clock but not by the store's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "this machine's clock is off by {skew_secs} s from {store}'s (it reads {local}, {store} answered {store_now}): the lock it held expires at {expires_at}, which is not yet past by {store}'s clock, so it is not taken over; fix this machine's clock (NTP)"
)]
pub struct ClockSkew {
    /// What answered (e.g. `S3`).
    pub store: String,
    /// This machine's clock minus the store's, in whole seconds.
    pub skew_secs: i64,
    /// This machine's now.
    pub local: Timestamp,
    /// The store's now (its `Date` header).
    pub store_now: Timestamp,
    /// The lease's expiry.
    pub expires_at: Timestamp,
}

/// Before an expired-looking lease is taken over: it must have expired by the store's clock
/// too (`store_now`, its `Date` header, read with the lease). When it has not, and this
/// machine's clock is ahead by more than [`CLOCK_TOLERANCE`], the expiry is doubtful and the
/// takeover is refused. `None` (no `Date`) trusts the local clock, as before.
pub fn trust_expiry(
    store: &str,
    expires_at: Timestamp,
    local: Timestamp,
    store_now: Option<Timestamp>,
) -> Result<(), ClockSkew> {
    let Some(store_now) = store_now else {
        return Ok(());
    };
    let tolerance = SignedDuration::try_from(CLOCK_TOLERANCE).unwrap_or_default();
    let skew = local.duration_since(store_now);
    // Past by the store's clock (give or take its whole-second Date), or clocks that agree.
    if expires_at <= store_now.checked_add(tolerance).unwrap_or(Timestamp::MAX) || skew <= tolerance
    {
        return Ok(());
    }
    Err(ClockSkew {
        store: store.to_owned(),
        skew_secs: skew.as_secs(),
        local,
        store_now,
        expires_at,
    })
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
    use crate::port::Lease;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn state(holder: &str, expires_at: &str) -> LockState {
        LockState {
            lease: Lease {
                key: "deploy-app-prod".into(),
                holder: holder.into(),
                expires_at: at(expires_at),
            },
            acquired_at: None,
            renewed_at: None,
            version: "v".into(),
        }
    }

    #[test]
    fn the_id_is_short_stable_and_per_holder() {
        let a = lock_id("alice@ci pid 7 boot 0123abcd pidns 1");
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, lock_id("alice@ci pid 7 boot 0123abcd pidns 1"));
        assert_ne!(a, lock_id("alice@ci pid 8 boot 0123abcd pidns 1"));
        assert_eq!(
            command("prod", "alice@ci pid 7 boot 0123abcd pidns 1"),
            format!("deploy unlock --env prod --id {a}")
        );
    }

    #[test]
    fn unlock_removes_only_the_same_expired_lock_unless_forced() {
        let now = at("2026-05-01T12:00:00Z");
        let stale = state("alice", "2026-05-01T11:00:00Z");
        let live = state("alice", "2026-05-01T12:10:00Z");
        let id = lock_id("alice");
        assert_eq!(decide("k", Some(&stale), &id, false, now), Ok(()));
        assert_eq!(
            decide("k", Some(&stale), &id.to_uppercase(), false, now),
            Ok(())
        );
        assert!(matches!(
            decide("k", Some(&stale), "0badc0de", true, now),
            Err(Refusal::OtherId { .. })
        ));
        let refused = decide("k", Some(&live), &id, false, now).unwrap_err();
        assert!(matches!(refused, Refusal::Live { .. }));
        assert!(refused.to_string().contains("in 10m"), "{refused}");
        assert!(refused.to_string().contains("--force"), "{refused}");
        assert_eq!(decide("k", Some(&live), &id, true, now), Ok(()));
        assert_eq!(
            decide("k", None, &id, true, now),
            Err(Refusal::NotHeld { key: "k".into() })
        );
    }

    #[test]
    fn an_expiry_is_doubted_when_only_a_fast_local_clock_says_it_passed() {
        let expires = at("2026-05-01T12:00:00Z");
        // Expired by both clocks: taken over.
        let ok = trust_expiry(
            "S3",
            expires,
            at("2026-05-01T12:05:00Z"),
            Some(at("2026-05-01T12:04:59Z")),
        );
        assert_eq!(ok, Ok(()));
        // No Date: the local clock, as before.
        assert_eq!(
            trust_expiry("S3", expires, at("2026-05-01T12:05:00Z"), None),
            Ok(())
        );
        // Clocks within the Date's rounding, expiry a moment ago: taken over.
        assert_eq!(
            trust_expiry(
                "S3",
                expires,
                at("2026-05-01T12:00:00.5Z"),
                Some(at("2026-05-01T11:59:59Z"))
            ),
            Ok(())
        );
        // This machine is an hour fast: the store says the lease has ten minutes left.
        let skew = trust_expiry(
            "S3",
            expires,
            at("2026-05-01T12:50:00Z"),
            Some(at("2026-05-01T11:50:00Z")),
        )
        .unwrap_err();
        assert_eq!(skew.skew_secs, 3600);
        assert!(
            skew.to_string().contains("clock is off by 3600 s"),
            "{skew}"
        );
    }
}

#[cfg(test)]
mod holders {
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
}

#[cfg(test)]
mod placement {
    use super::*;

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
