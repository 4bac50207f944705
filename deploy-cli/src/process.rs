//! Who this process is: the actor recorded in the audit trail and the lock holder identity
//! that makes a stale lock of a dead process decidable. Read by the commands that run or
//! watch, and by the backends (the Kubernetes client's user name).

use deploy_core::lock::Holder;
use deploy_core::trail::Actor;

/// This host's name.
fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The lock holder identity of this process. The boot id and PID namespace make "that
/// process is gone" decidable from this process only when both run in the same kernel boot
/// and PID namespace ([`Holder::may_take_over`]).
pub(crate) fn holder(actor: &Actor) -> Holder {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pidns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let pidns: String = pidns.chars().filter(char::is_ascii_digit).collect();
    Holder {
        user: actor.os_user.clone(),
        host: host(),
        pid: std::process::id(),
        boot: boot.trim().get(..8).unwrap_or("unknown").to_owned(),
        pidns: if pidns.is_empty() {
            "unknown".into()
        } else {
            pidns
        },
    }
}

/// Whether a process of this machine (and PID namespace) exists.
pub(crate) fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Who runs this: the OS user.
pub(crate) fn actor() -> Actor {
    let os_user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    Actor {
        os_user,
        argocd_user: None,
    }
}
