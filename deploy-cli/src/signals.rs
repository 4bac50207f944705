//! The signals that stop a command gracefully: Ctrl-C (SIGINT), SIGTERM and SIGHUP.
//!
//! SIGHUP is a dropped SSH session or terminal (and some CI runners send it on cancel): it
//! gets the same graceful stop as SIGTERM, not the default of dying at once with the lock held.

/// Resolves at the first SIGINT, SIGTERM or SIGHUP (Ctrl-C elsewhere).
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut hup = signal(SignalKind::hangup()).expect("installing the SIGHUP handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
