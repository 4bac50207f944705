//! The sync windows section of `deploy plan`: each wave's windows and whether it could sync now.

use deploy_core::window::Verdict;
use deploy_engine::engine::window::WaveWindows;

use crate::output::Output;

/// Prints one line per wave, and one per Application that has windows.
pub(crate) fn print_windows(out: Output, waves: &[WaveWindows]) {
    if waves.iter().all(|w| {
        w.apps
            .iter()
            .all(|a| a.windows.is_empty() && a.error.is_none())
    }) {
        out.text("  sync windows: none assigned; every wave could sync now");
        return;
    }
    out.text("  sync windows:");
    for w in waves {
        out.text(format!(
            "    wave {}: {}",
            w.wave,
            if w.can_sync_now {
                "could sync now"
            } else {
                "could NOT sync now"
            }
        ));
        for a in &w.apps {
            if let Some(e) = &a.error {
                out.text(format!("      {}: windows cannot be read: {e}", a.cluster));
                continue;
            }
            if a.windows.is_empty() {
                continue;
            }
            let now = match &a.verdict {
                None => "no sync needed".to_owned(),
                Some(Verdict::Open) => "open now".to_owned(),
                Some(Verdict::Blocked { window, until }) => match until {
                    Some(u) => format!(
                        "blocked by {window} until {}",
                        u.strftime("%Y-%m-%d %H:%M:%S UTC")
                    ),
                    None => format!("blocked by {window}, no opening in the next 8 days"),
                },
                Some(Verdict::Unsaid { window }) => {
                    format!("blocked by a sync window ({window}); Argo CD does not say until when")
                }
            };
            out.text(format!(
                "      {} ({}): {}; {now}",
                a.cluster,
                a.application,
                a.windows.join("; ")
            ));
        }
    }
}
