//! Notifications, decided: which engine events make a message, and what each says — a
//! Slack payload for people, and a JSON body of the engine's own events for machines.
//!
//! [`Announcer`] is fed every [`Event`] of a run (and its [`RunReport`] at the end) and
//! returns the [`Notice`]s to send: one when the run starts, one when each wave is done, one
//! when it ends. Sending, signing and retrying are an adapter's (`deploy-notify`).

use serde::Serialize;
use serde_json::{Value, json};

use crate::rollout::event::{Event, RunReport};
use crate::trail::AppState;
use crate::trail::{Actor, Outcome, RunKind};

/// The moment a notice announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Moment {
    /// The run took the lock and starts its first wave.
    Started,
    /// A wave is deployed, Healthy, and soaked.
    WaveDone,
    /// The run ended, whatever its outcome.
    Finished,
}

/// One message, in every form a target needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// What it announces.
    pub moment: Moment,
    /// The run.
    pub run_id: String,
    /// One line for people (also Slack's fallback `text`).
    pub summary: String,
    /// The body posted to a Slack incoming webhook: `text` and `blocks`.
    pub slack: Value,
    /// The body posted to a generic webhook: the notice's envelope and the engine's events
    /// since the previous notice (so the bodies of a run, concatenated, are its whole stream).
    pub webhook: Value,
}

/// Turns a run's events into notices.
#[derive(Debug)]
pub struct Announcer {
    kind: RunKind,
    actor: Actor,
    run_id: String,
    environment: String,
    tag: String,
    waves: Vec<Vec<String>>,
    started_at: Option<jiff::Timestamp>,
    /// Waves announced as done.
    done: usize,
    /// The wave under way (1-based; 0 before the first).
    wave: usize,
    /// Events not yet in a webhook body.
    pending: Vec<Event>,
}

impl Announcer {
    /// An announcer of a `kind` run started by `actor`.
    pub fn new(kind: RunKind, actor: Actor) -> Self {
        Self {
            kind,
            actor,
            run_id: String::new(),
            environment: String::new(),
            tag: String::new(),
            waves: Vec::new(),
            started_at: None,
            done: 0,
            wave: 0,
            pending: Vec::new(),
        }
    }

    /// The notices `event`, seen at `at`, makes: the start, and each wave done (when its
    /// soak finished, or — with no soak — when the next wave starts).
    pub fn observe(&mut self, event: &Event, at: jiff::Timestamp) -> Vec<Notice> {
        self.pending.push(event.clone());
        let mut out = Vec::new();
        match event {
            Event::Started {
                run_id,
                environment,
                release,
                waves,
            } => {
                self.run_id.clone_from(run_id);
                self.environment.clone_from(environment);
                self.tag = release.tag.to_string();
                self.waves.clone_from(waves);
                self.started_at = Some(at);
                let digests: Vec<String> = release
                    .digests
                    .iter()
                    .map(|(s, d)| format!("{s} {}", d.short()))
                    .collect();
                let order: Vec<String> = waves.iter().map(|w| w.join(", ")).collect();
                let summary = format!(
                    "{}: {} {} in {} wave(s), by {}",
                    self.environment,
                    self.verb(),
                    self.tag,
                    waves.len(),
                    self.actor
                );
                let detail = format!(
                    "*{}*: {} `{}` by {}\nwaves: {}\nimages: {}\nrun `{}`",
                    self.environment,
                    self.verb(),
                    self.tag,
                    self.actor,
                    order.join(" → "),
                    digests.join(", "),
                    self.run_id
                );
                out.push(self.notice(Moment::Started, summary, &detail, json!({})));
            }
            Event::SoakFinished { wave } => out.extend(self.wave_done(*wave)),
            Event::WaveStarted { wave, .. } => {
                // No soak: the previous wave was done when this one began. The event that
                // starts this wave belongs to the next body, not to the previous wave's.
                let next = self.pending.pop();
                if *wave > 1 {
                    out.extend(self.wave_done(*wave - 1));
                }
                self.pending.extend(next);
                self.wave = *wave;
            }
            _ => {}
        }
        out
    }

    /// The notice of the run's end, from its report (the authoritative per-cluster result).
    pub fn finished(&mut self, report: &RunReport, at: jiff::Timestamp) -> Notice {
        let duration = self
            .started_at
            .and_then(|s| at.duration_since(s).try_into().ok())
            .unwrap_or(std::time::Duration::ZERO);
        let duration = std::time::Duration::from_secs(duration.as_secs());
        let icon = match report.outcome {
            Outcome::Succeeded | Outcome::UpToDate => "✅",
            Outcome::RolledBack => "↩️",
            Outcome::Interrupted | Outcome::Halted => "⏸️",
            Outcome::Inconclusive => "✋",
            Outcome::Failed | Outcome::Started => "❌",
            Outcome::Unlocked => "🔓",
        };
        let summary = format!(
            "{}: {} {} {} in {}: {}",
            report.environment,
            self.verb(),
            report.release.tag,
            report.outcome,
            humantime::format_duration(duration),
            report.message
        );
        let clusters: Vec<String> = report
            .apps
            .iter()
            .map(|a| {
                let state = crate::plan::history::left(a, true);
                format!("• {} (wave {}): {state}", a.cluster, a.wave)
            })
            .collect();
        let rolled_back: Vec<&str> = report
            .apps
            .iter()
            .filter(|a| matches!(a.state, AppState::RolledBack | AppState::RollbackFailed(_)))
            .map(|a| a.cluster.as_str())
            .collect();
        let rollback = if rolled_back.is_empty() {
            String::new()
        } else {
            format!("\nrollback: {}", rolled_back.join(", "))
        };
        let detail = format!(
            "{icon} *{}*: {} `{}` *{}* in {} — {}\n{}{rollback}\nrun `{}`",
            report.environment,
            self.verb(),
            report.release.tag,
            report.outcome,
            humantime::format_duration(duration),
            report.message,
            clusters.join("\n"),
            report.run_id
        );
        self.run_id.clone_from(&report.run_id);
        self.environment.clone_from(&report.environment);
        self.notice(
            Moment::Finished,
            summary,
            &detail,
            json!({
                "outcome": report.outcome,
                "duration_ms": duration.as_millis() as u64,
                "apps": report.apps,
            }),
        )
    }

    fn wave_done(&mut self, wave: usize) -> Option<Notice> {
        if wave <= self.done {
            return None;
        }
        self.done = wave;
        let clusters = self
            .waves
            .get(wave - 1)
            .map(|w| w.join(", "))
            .unwrap_or_default();
        let summary = format!(
            "{}: wave {wave} of {} done ({clusters}) at {}",
            self.environment,
            self.waves.len(),
            self.tag
        );
        let detail = format!(
            "*{}*: wave {wave} of {} done: {clusters} run `{}`, Healthy",
            self.environment,
            self.waves.len(),
            self.tag
        );
        Some(self.notice(
            Moment::WaveDone,
            summary,
            &detail,
            json!({ "wave": wave, "clusters": self.waves.get(wave - 1) }),
        ))
    }

    fn verb(&self) -> &'static str {
        match self.kind {
            RunKind::Promote => "promote",
            RunKind::Rollback => "rollback",
            RunKind::Unlock => "unlock",
        }
    }

    fn notice(&mut self, moment: Moment, summary: String, detail: &str, extra: Value) -> Notice {
        let events = std::mem::take(&mut self.pending);
        let mut webhook = json!({
            "notice": moment,
            "kind": self.kind,
            "run_id": self.run_id,
            "environment": self.environment,
            "actor": self.actor,
        });
        if let (Value::Object(body), Value::Object(extra)) = (&mut webhook, extra) {
            body.extend(extra);
            body.insert("events".into(), json!(events));
        }
        Notice {
            moment,
            run_id: self.run_id.clone(),
            slack: json!({
                "text": mrkdwn_escape(&summary),
                "blocks": [{
                    "type": "section",
                    "text": { "type": "mrkdwn", "text": mrkdwn_escape(detail) },
                }],
            }),
            summary,
            webhook,
        }
    }
}

/// `text` with Slack's control characters escaped, as Slack asks of any text it did not write
/// ("Escaping text", api.slack.com/reference/surfaces/formatting#escaping: `&` → `&amp;`,
/// `<` → `&lt;`, `>` → `&gt;`, nothing else). Both the fallback `text` and a `mrkdwn` block
/// are parsed: unescaped, an Argo CD operation message, a tag or a user name carrying
/// `<!channel>` or `<https://…|…>` would mention people or add a link. The messages' own
/// formatting uses none of the three.
pub fn mrkdwn_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The events of a run in the bodies of its `notices`, in order.
pub fn events_of(notices: &[Notice]) -> Vec<Event> {
    notices
        .iter()
        .flat_map(|n| n.webhook["events"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| serde_json::from_value(e).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Digest, Release, Tag};
    use crate::trail::AppReport;

    /// How many notices of each moment, for tests and summaries.
    fn count_by_moment(notices: &[Notice]) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for n in notices {
            let k = match n.moment {
                Moment::Started => "started",
                Moment::WaveDone => "wave_done",
                Moment::Finished => "finished",
            };
            *m.entry(k).or_insert(0) += 1;
        }
        m
    }

    fn release() -> Release {
        Release {
            tag: Tag::new("1b2c3d4e5f60").unwrap(),
            digests: BTreeMap::from([(
                "api".to_owned(),
                Digest::new(format!("sha256:{}", "ab".repeat(32))).unwrap(),
            )]),
        }
    }

    fn actor() -> Actor {
        Actor {
            os_user: "alice".into(),
            argocd_user: Some("ci-bot".into()),
        }
    }

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn started() -> Event {
        Event::Started {
            run_id: "r1".into(),
            environment: "prod".into(),
            release: release(),
            waves: vec![
                vec!["us-west-2".into()],
                vec!["us-east-1".into(), "eu-west-1".into()],
            ],
        }
    }

    fn wave(n: usize) -> Event {
        Event::WaveStarted {
            wave: n,
            clusters: vec![],
        }
    }

    fn report(outcome: Outcome, states: &[(&str, AppState)]) -> RunReport {
        RunReport {
            run_id: "r1".into(),
            environment: "prod".into(),
            release: release(),
            outcome,
            message: "the message".into(),
            apps: states
                .iter()
                .enumerate()
                .map(|(i, (c, s))| AppReport {
                    wave: i.min(1) + 1,
                    cluster: (*c).into(),
                    application: format!("myapp-prod-{c}"),
                    from: "0a1b2c3d4e5f".into(),
                    to: "1b2c3d4e5f60".into(),
                    state: s.clone(),
                    elapsed_ms: 1,
                })
                .collect(),
            record_error: None,
            end: None,
        }
    }

    /// Feeds `events` (one second apart) and returns every notice, the end's last.
    fn run(events: &[Event], end: &RunReport) -> Vec<Notice> {
        let mut a = Announcer::new(RunKind::Promote, actor());
        let mut out = Vec::new();
        for (i, e) in events.iter().enumerate() {
            out.extend(a.observe(e, t(i as i64)));
        }
        out.push(a.finished(end, t(252)));
        out
    }

    #[test]
    fn start_names_the_release_the_waves_and_who() {
        let n = run(&[started()], &report(Outcome::Succeeded, &[]));
        assert_eq!(n[0].moment, Moment::Started);
        assert_eq!(
            n[0].summary,
            "prod: promote 1b2c3d4e5f60 in 2 wave(s), by alice (ci-bot)"
        );
        let detail = n[0].slack["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            detail.contains("waves: us-west-2 → us-east-1, eu-west-1"),
            "{detail}"
        );
        assert!(detail.contains("api abababababab"), "{detail}");
        assert_eq!(n[0].slack["text"], n[0].summary);
        assert_eq!(n[0].webhook["notice"], "started");
        assert_eq!(n[0].webhook["actor"]["os_user"], "alice");
        assert_eq!(n[0].webhook["events"][0]["event"], "started");
    }

    #[test]
    fn each_wave_is_announced_once_with_or_without_soak() {
        // With soak: the soak's end is the wave's end.
        let soaked = [
            started(),
            wave(1),
            Event::SoakFinished { wave: 1 },
            wave(2),
            Event::SoakFinished { wave: 2 },
        ];
        let n = run(&soaked, &report(Outcome::Succeeded, &[]));
        assert_eq!(
            count_by_moment(&n),
            BTreeMap::from([("started", 1), ("wave_done", 2), ("finished", 1)])
        );
        assert_eq!(
            n[1].summary,
            "prod: wave 1 of 2 done (us-west-2) at 1b2c3d4e5f60"
        );
        assert_eq!(n[2].webhook["wave"], 2);
        // Without: the next wave's start is the previous wave's end; the last wave's end is
        // the run's end.
        let n = run(
            &[started(), wave(1), wave(2)],
            &report(Outcome::Succeeded, &[]),
        );
        assert_eq!(
            count_by_moment(&n),
            BTreeMap::from([("started", 1), ("wave_done", 1), ("finished", 1)])
        );
        // Every event is in exactly one body, in order.
        assert_eq!(events_of(&n), [started(), wave(1), wave(2)]);
        assert_eq!(n[1].webhook["events"], json!([wave(1)]));
    }

    #[test]
    fn slack_text_is_escaped() {
        #[track_caller]
        fn check(text: &str, expect: &str) {
            assert_eq!(mrkdwn_escape(text), expect);
        }
        check("plain text", "plain text");
        check("<!channel>", "&lt;!channel&gt;");
        check(
            "<https://evil.example|click>",
            "&lt;https://evil.example|click&gt;",
        );
        check("a & b", "a &amp; b");
        check("&amp; stays visible", "&amp;amp; stays visible");
        check("<@U123> → ok", "&lt;@U123&gt; → ok");
        check("*bold* `code`", "*bold* `code`");
    }

    #[test]
    fn untrusted_text_reaches_slack_escaped_and_the_rest_as_is() {
        let mut end = report(
            Outcome::Failed,
            &[(
                "us-west-2",
                AppState::Failed("hook failed: <!channel> see <https://evil.example|logs>".into()),
            )],
        );
        end.message = "a & b <!here>".into();
        let n = run(&[started()], &end);
        let last = n.last().unwrap();
        let detail = last.slack["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(
            detail.contains(
                "FAILED: hook failed: &lt;!channel&gt; see &lt;https://evil.example|logs&gt;"
            ),
            "{detail}"
        );
        assert!(detail.contains("a &amp; b &lt;!here&gt;"), "{detail}");
        assert!(!detail.contains('<') && !detail.contains('>'), "{detail}");
        let text = last.slack["text"].as_str().unwrap();
        assert!(text.ends_with(": a &amp; b &lt;!here&gt;"), "{text}");
        // People and machines read the text as it is.
        assert!(
            last.summary.ends_with(": a & b <!here>"),
            "{}",
            last.summary
        );
        assert_eq!(
            last.webhook["apps"][0]["state"]["reason"],
            "hook failed: <!channel> see <https://evil.example|logs>"
        );
    }

    #[test]
    fn a_failed_wave_is_not_done_and_the_end_says_what_rolled_back() {
        let events = [
            started(),
            wave(1),
            Event::Halted {
                reason: "us-west-2 went Degraded".into(),
            },
            Event::RollingBack {
                clusters: vec!["us-west-2".into()],
            },
        ];
        let end = report(
            Outcome::RolledBack,
            &[
                ("us-west-2", AppState::RolledBack),
                ("us-east-1", AppState::NotStarted),
            ],
        );
        let n = run(&events, &end);
        assert_eq!(
            count_by_moment(&n),
            BTreeMap::from([("started", 1), ("finished", 1)])
        );
        let last = n.last().unwrap();
        assert_eq!(
            last.summary,
            "prod: promote 1b2c3d4e5f60 rolled_back in 4m 12s: the message"
        );
        let detail = last.slack["blocks"][0]["text"]["text"].as_str().unwrap();
        for want in [
            "• us-west-2 (wave 1): rolled back to 0a1b2c3d4e5f",
            "• us-east-1 (wave 2): not started",
            "rollback: us-west-2",
        ] {
            assert!(detail.contains(want), "{want:?} in {detail}");
        }
        assert_eq!(last.webhook["outcome"], "rolled_back");
        assert_eq!(last.webhook["duration_ms"], 252_000);
        assert_eq!(last.webhook["apps"][0]["state"]["state"], "rolled_back");
        assert_eq!(last.webhook["events"][1]["event"], "halted");
        assert_eq!(events_of(&n), events);
    }
}
