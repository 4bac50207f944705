//! Renders engine events: one live line per cluster on a terminal, plain lines on stderr
//! otherwise, or JSON Lines (`{"type":"event","data":...}`) on stdout.
//!
//! The renderer runs on a thread of its own and writes through [`crate::output`]'s queues
//! (the live view draws on the terminal itself), so neither a slow terminal nor a pipe that
//! stops draining ever holds up the engine that sends the events.

use std::collections::BTreeMap;
use std::time::Duration;

use deploy_core::rollout::event::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::output::Output;

/// A renderer on a thread of its own.
pub(crate) struct Renderer {
    done: std::sync::mpsc::Receiver<()>,
}

impl Renderer {
    /// Waits (a little) for the renderer to hand on what is left once every sender is gone:
    /// only the live view writes itself, and a terminal that does not take it within that
    /// time is given up. Plain and JSON lines are queued, and written by `output::finish`.
    pub(crate) fn finish(self) {
        let _ = self.done.recv_timeout(Duration::from_secs(5));
    }
}

/// Renders events from `rx` on a new thread until every sender is dropped, so that a
/// terminal or pipe that blocks never stalls whoever sends them.
pub(crate) fn spawn(out: Output, rx: mpsc::UnboundedReceiver<Event>) -> Renderer {
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        render(out, rx);
        let _ = done_tx.send(());
    });
    Renderer { done }
}

/// Consumes events until the sender is dropped (blocking: run it on its own thread).
pub(crate) fn render(out: Output, mut rx: mpsc::UnboundedReceiver<Event>) {
    let live = out.live();
    if live {
        // The plan, queued before the run, goes above the live lines, not through them.
        crate::output::drain(Some(Duration::from_secs(1)));
    }
    let mut view = Live::new();
    while let Some(event) = rx.blocking_recv() {
        if out.json() {
            out.record("event", &event);
            continue;
        }
        if out.quiet {
            continue;
        }
        let line = describe(&event);
        if !live {
            if let Some(l) = line {
                crate::output::stderr_line(l);
            }
            continue;
        }
        view.show(&event, line);
    }
    view.finish();
}

/// The live view: one line per cluster, updated in place, with other lines above them.
struct Live {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
    style: ProgressStyle,
}

impl Live {
    fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: BTreeMap::new(),
            style: ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:<12} {elapsed:>4} {wide_msg}",
            )
            .expect("valid template"),
        }
    }

    /// Shows `event`, whose plain line is `line`.
    fn show(&mut self, event: &Event, line: Option<String>) {
        match event {
            Event::Started { waves, .. } => {
                for (i, wave) in waves.iter().enumerate() {
                    for c in wave {
                        let bar = self.multi.add(ProgressBar::new_spinner());
                        bar.set_style(self.style.clone());
                        bar.set_prefix(c.clone());
                        bar.set_message(format!("waits for wave {}", i + 1));
                        self.bars.insert(c.clone(), bar);
                    }
                }
                self.println(line);
            }
            Event::AppSyncing { cluster, .. }
            | Event::AppWaiting { cluster, .. }
            | Event::AppProgress { cluster, .. }
            | Event::AppHealthy { cluster, .. }
            | Event::AppSkipped { cluster, .. }
            | Event::AppSoakingAgain { cluster, .. }
            | Event::AppFailed { cluster, .. } => {
                if let Some(b) = self.bars.get(cluster) {
                    update(b, event);
                }
            }
            Event::AppRolledBack {
                cluster,
                to,
                ok,
                reason,
                ..
            } => {
                let msg = if *ok {
                    format!("↩ rolled back to {to}, Healthy")
                } else {
                    format!("✗ rollback failed: {}", reason.as_deref().unwrap_or(""))
                };
                self.println(Some(format!("  {cluster}: {msg}")));
            }
            _ => self.println(line),
        }
    }

    /// A line above the clusters' lines.
    fn println(&self, line: Option<String>) {
        if let Some(l) = line {
            let _ = self.multi.println(l);
        }
    }

    /// Leaves the lines of clusters that never finished as they are.
    fn finish(self) {
        for b in self.bars.values() {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}

/// A cluster's line, after `event` about it.
fn update(b: &ProgressBar, event: &Event) {
    match event {
        Event::AppSyncing { from, to, .. } => {
            b.reset_elapsed();
            b.enable_steady_tick(Duration::from_millis(120));
            b.set_message(format!("syncing {from} → {to}"));
        }
        Event::AppWaiting { operation_by, .. } => {
            b.enable_steady_tick(Duration::from_millis(120));
            b.set_message(format!("waiting for an operation by {operation_by}"));
        }
        Event::AppProgress {
            phase,
            sync,
            health,
            ..
        } => {
            let phase = phase.map_or("-".to_owned(), |p| p.to_string());
            b.set_message(format!("operation {phase}, {sync}, {health}"));
        }
        Event::AppHealthy { elapsed_ms, .. } => {
            b.finish_with_message(format!(
                "✓ Synced and Healthy in {:.1}s",
                *elapsed_ms as f64 / 1000.0
            ));
        }
        Event::AppSkipped { .. } => b.finish_with_message("= already runs the release, Healthy"),
        Event::AppSoakingAgain { .. } => {
            b.finish_with_message("~ at the release but never soaked there: soaking again");
        }
        Event::AppFailed { reason, .. } => b.abandon_with_message(format!("✗ {reason}")),
        _ => {}
    }
}

/// One human line per event (None for events the live view shows in place).
pub(crate) fn describe(event: &Event) -> Option<String> {
    Some(match event {
        Event::Started { run_id, environment, release, waves } => {
            format!("promoting {} to {environment} in {} wave(s) (run {run_id})", release.tag, waves.len())
        }
        // The plan, printed before the run, already shows every gate.
        Event::Gate(_) => return None,
        Event::LockAcquired { key, expires_at } => {
            let until = expires_at.strftime("%Y-%m-%dT%H:%M:%SZ");
            format!("  lock {key} taken (until {until} unless renewed)")
        }
        Event::WaveStarted { wave, clusters } => format!("wave {wave}: {}", clusters.join(", ")),
        Event::WaveBlocked { wave, application, window, until } => match until {
            Some(u) => format!("wave {wave}: waiting until {} for sync window {window} of {application}", u.strftime("%H:%M:%S UTC")),
            None => format!("wave {wave}: blocked by sync window {window} of {application}"),
        },
        Event::AppSkipped { cluster, .. } => format!("  {cluster}: already runs the release, Healthy; skipped"),
        Event::AppSoakingAgain { cluster, .. } => format!("  {cluster}: at the release but no finished soak observed it there (an interrupted run); soaking it again"),
        Event::AppWaiting { cluster, operation_by, .. } => format!("  {cluster}: waiting for an operation started by {operation_by}"),
        Event::AppSyncing { cluster, from, to, .. } => format!("  {cluster}: syncing {from} → {to}"),
        Event::AppProgress { .. } => return None,
        Event::AppHealthy { cluster, elapsed_ms, .. } => format!("  {cluster}: Synced and Healthy in {:.1}s", *elapsed_ms as f64 / 1000.0),
        Event::AppFailed { cluster, reason, .. } => format!("  {cluster}: FAILED: {reason}"),
        Event::SoakStarted { wave, duration_ms } => format!("  soak after wave {wave}: watching health for {:.0}s", *duration_ms as f64 / 1000.0),
        Event::LockTakenOver { holder } => format!("  took over the lock of {holder}, which is no longer running"),
        Event::ObservationLost { cluster, error, .. } => format!("  {cluster}: cannot observe it ({error}); the soak does not count this time"),
        Event::ObservationRestored { cluster, gap_ms, soak_restarted } => {
            let gap = *gap_ms as f64 / 1000.0;
            if *soak_restarted { format!("  {cluster}: observed again after {gap:.0}s; the soak starts over") } else { format!("  {cluster}: observed again after {gap:.0}s") }
        }
        Event::CheckMeasured { check, cluster, values, phase, verdict, error } => {
            let values = deploy_core::check::show_values(values);
            let why = error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
            format!("  {cluster}: check {check} = {values}: {phase:?}{why}; check {verdict:?}")
        }
        Event::SoakFinished { wave } => format!("  wave {wave} soaked: observed Healthy throughout"),
        Event::Halted { reason } => format!("halted: {reason}"),
        Event::RollingBack { clusters } => format!("rolling back {}", clusters.join(", ")),
        Event::AppRolledBack { cluster, to, ok, reason } => {
            if *ok { format!("  {cluster}: rolled back to {to}, Healthy") } else { format!("  {cluster}: rollback FAILED: {}", reason.as_deref().unwrap_or("")) }
        }
        Event::Interrupting => "interrupt received: no new sync starts; waiting for running ones (Ctrl-C again to stop waiting for them)".into(),
        Event::Finished { outcome, message } => format!("finished: {outcome}: {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploy_core::trail::Outcome;

    #[test]
    fn the_outcome_is_spelled_as_in_json() {
        #[track_caller]
        fn check(outcome: Outcome, expect: &str) {
            let event = Event::Finished {
                outcome,
                message: "why".into(),
            };
            assert_eq!(describe(&event).as_deref(), Some(expect));
        }
        check(Outcome::Succeeded, "finished: succeeded: why");
        check(Outcome::UpToDate, "finished: up_to_date: why");
        check(Outcome::RolledBack, "finished: rolled_back: why");
        check(Outcome::Failed, "finished: failed: why");
        check(Outcome::Interrupted, "finished: interrupted: why");
    }
}
