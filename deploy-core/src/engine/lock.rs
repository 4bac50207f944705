//! The promotion lock as the engine holds it: one key per environment, who holds it
//! ([`Holder`]), when a stale holder may be taken over, and a `LeaseKeeper` that renews
//! through failures while the lease still has time, takes a vanished lock again, renews
//! during soaks, and refuses a write once the lease has run out by the wall clock.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;

use crate::error::Error;
use crate::port::{Clock, Lease, Lock};

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

/// Keeps a lease alive for a run.
#[derive(Debug)]
pub(crate) struct LeaseKeeper<'a> {
    lock: &'a dyn Lock,
    clock: &'a dyn Clock,
    ttl: Duration,
    /// The lock as messages name it: its key and backend.
    name: String,
    lease: Mutex<Lease>,
    /// Set once another run provably holds the lock: from then on no write is ours to make,
    /// whatever the local copy of the lease says.
    taken: Mutex<Option<LeaseLost>>,
}

/// A write is refused when the lease has less than this left; a renewal is tried first.
const MARGIN: Duration = Duration::from_secs(30);
/// Renew before a write when less than this is left.
const RENEW_BELOW: Duration = Duration::from_secs(120);

impl<'a> LeaseKeeper<'a> {
    pub(crate) fn new(
        lock: &'a dyn Lock,
        clock: &'a dyn Clock,
        ttl: Duration,
        lease: Lease,
        backend: &str,
    ) -> Self {
        let name = if backend.is_empty() {
            lease.key.clone()
        } else {
            format!("{} ({backend})", lease.key)
        };
        Self {
            lock,
            clock,
            ttl,
            name,
            lease: Mutex::new(lease),
            taken: Mutex::new(None),
        }
    }

    pub(crate) fn lease(&self) -> Lease {
        self.lease.lock().expect("poisoned").clone()
    }

    fn left(&self, lease: &Lease) -> Duration {
        let left = lease.expires_at.duration_since(self.clock.now());
        Duration::try_from(left).unwrap_or(Duration::ZERO)
    }

    fn keep(&self, lease: Lease) {
        *self.lease.lock().expect("poisoned") = lease;
    }

    /// Renews the lease. A lock the backend says is gone or held by nobody (a lock object
    /// removed by hand, an erased annotation) is taken again by `acquire`, which is atomic
    /// (`If-None-Match` on S3): only a lock another run provably holds is
    /// [`LeaseLost::Taken`]. Any other failure (unreachable, refused credentials, a
    /// conflicting write) is retried, with a growing pause, while the lease still has more
    /// than [`MARGIN`] left by the wall clock; then it is [`LeaseLost::Expired`].
    pub(crate) async fn renew(&self) -> Result<(), LeaseLost> {
        let mut pause = Duration::from_secs(1);
        let mut warned = false;
        loop {
            let lease = self.lease();
            let error = match self.lock.renew(&lease, self.ttl).await {
                Ok(l) => {
                    self.keep(l);
                    return Ok(());
                }
                Err(Error::LockHeld { .. } | Error::NotFound { .. }) => {
                    match self.lock.acquire(&lease.key, &lease.holder, self.ttl).await {
                        Ok(l) => {
                            tracing::warn!(
                                "the promotion lock {} was gone; took it again",
                                self.name
                            );
                            self.keep(l);
                            return Ok(());
                        }
                        // A backend that names us as the holder has not lost it to anyone:
                        // try again (below) rather than stop.
                        Err(Error::LockHeld {
                            key,
                            holder,
                            expires_at,
                        }) if holder == lease.holder => Error::LockHeld {
                            key,
                            holder,
                            expires_at,
                        },
                        Err(Error::LockHeld { holder, .. }) => {
                            let lost = LeaseLost::Taken { holder };
                            *self.taken.lock().expect("poisoned") = Some(lost.clone());
                            return Err(lost);
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if self.left(&lease) <= MARGIN + pause {
                return Err(LeaseLost::Expired {
                    lock: self.name.clone(),
                    reason: error.to_string(),
                });
            }
            if warned {
                tracing::debug!("renewing the promotion lock {} failed: {error}", self.name);
            } else {
                warned = true;
                tracing::warn!(
                    "renewing the promotion lock {} failed: {error}; trying again while it has time",
                    self.name
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(15));
        }
    }

    /// Renews the lease every third of its ttl for as long as it is polled (alongside a
    /// soak, which checks may make longer than a wave); resolves only when it is lost.
    pub(crate) async fn keep_renewed(&self) -> LeaseLost {
        loop {
            tokio::time::sleep(self.ttl / 3).await;
            if let Err(lost) = self.renew().await {
                return lost;
            }
        }
    }

    /// Before a write: the lease must still be ours by the wall clock. Close to its expiry
    /// (or past it, after a suspend that tokio's clock does not see) it is renewed first.
    /// Once another run was seen holding the lock, every write is refused.
    pub(crate) async fn before_write(&self) -> Result<(), LeaseLost> {
        if let Some(lost) = self.taken.lock().expect("poisoned").clone() {
            return Err(lost);
        }
        let lease = self.lease();
        if self.left(&lease) > RENEW_BELOW {
            return Ok(());
        }
        self.renew().await
    }

    pub(crate) async fn release(&self) {
        let lease = self.lease();
        let _ = self.lock.release(&lease).await;
    }

    /// When the lease runs out unless renewed.
    pub(crate) fn expires_at(&self) -> Timestamp {
        self.lease().expires_at
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
}
