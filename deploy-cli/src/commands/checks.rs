//! The checks section of `deploy plan` (and of `promote` and the demo, which print the plan):
//! per wave, each check with its source, conditions and timing, the query or alarm names it
//! resolves to on each cluster that deploys, and how long the wave's soak lasts with them.

use std::time::Duration;

use deploy_core::config::NoData;

use deploy_core::check::{ResolvedCheck, least_soak};
use deploy_core::config::MetricSource;
use deploy_core::plan::promotion::{Action, PromotionPlan, WavePlan};

use crate::output::Output;

/// Prints the checks of every wave; nothing when the plan has no waves.
pub(crate) fn print_checks(out: Output, p: &PromotionPlan) {
    if p.waves.is_empty() {
        return;
    }
    if p.waves
        .iter()
        .all(|w| w.apps.iter().all(|a| a.checks.is_empty()))
    {
        out.text("  checks: none; each wave's soak watches Argo CD health only");
        return;
    }
    out.text(
        "  checks during each wave's soak, per cluster (failed: halt and roll back; inconclusive: halt for a decision):",
    );
    for w in &p.waves {
        print_wave(out, p.soak, w);
    }
}

/// The checks of wave `w`, whose soak is `soak_of_plan` without checks.
fn print_wave(out: Output, soak_of_plan: Duration, w: &WavePlan) {
    let deployed: Vec<_> = w.apps.iter().filter(|a| a.action != Action::Skip).collect();
    if deployed.is_empty() {
        out.text(format!(
            "    wave {}: nothing to deploy, nothing measured",
            w.number
        ));
        return;
    }
    let longest = deployed
        .iter()
        .map(|a| least_soak(soak_of_plan, &a.checks))
        .max()
        .unwrap_or(soak_of_plan);
    let soak = if longest > soak_of_plan {
        format!(
            "soak {}, at least {} with its checks",
            show(soak_of_plan),
            show(longest)
        )
    } else {
        format!("soak {}", show(soak_of_plan))
    };
    out.text(format!("    wave {} ({soak}):", w.number));
    // Each check once, in the configuration's order, with its resolved form on each
    // cluster (sources can differ by cluster through `{region}` or `{cluster}`).
    let mut names: Vec<&str> = Vec::new();
    for a in &deployed {
        for c in &a.checks {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
    }
    for name in names {
        let on: Vec<(&str, &ResolvedCheck)> = deployed
            .iter()
            .filter_map(|a| {
                a.checks
                    .iter()
                    .find(|c| c.name == name)
                    .map(|c| (a.cluster.as_str(), c))
            })
            .collect();
        let Some((_, first)) = on.first() else {
            continue;
        };
        let same_source = on.iter().all(|(_, c)| c.source == first.source);
        let common = if same_source {
            format!("{}; ", source(&first.source))
        } else {
            String::new()
        };
        out.text(format!("      {name}: {common}{}", rule(first)));
        for (cluster, c) in &on {
            let what = match &c.source {
                MetricSource::Prometheus { .. } => c.query.clone(),
                MetricSource::CloudWatchAlarms { names, .. } => names.join(", "),
            };
            let at = if same_source {
                String::new()
            } else {
                format!("[{}] ", source(&c.source))
            };
            out.text(format!("        {cluster}: {at}{what}"));
        }
    }
}

/// Where a check measures, in a few words.
fn source(s: &MetricSource) -> String {
    let profile = |p: &Option<String>| {
        p.as_deref()
            .map(|p| format!(", profile {p}"))
            .unwrap_or_default()
    };
    match s {
        MetricSource::Prometheus {
            url, sigv4: false, ..
        } => format!("Prometheus {}", crate::output::url_label(url)),
        MetricSource::Prometheus {
            url,
            sigv4: true,
            region,
            aws_profile,
        } => format!(
            "Amazon Managed Prometheus {} (SigV4{}{})",
            crate::output::url_label(url),
            region
                .as_deref()
                .map(|r| format!(", region {r}"))
                .unwrap_or_default(),
            profile(aws_profile)
        ),
        MetricSource::CloudWatchAlarms {
            region,
            aws_profile,
            ..
        } => format!("CloudWatch alarms in {region}{}", profile(aws_profile)),
    }
}

/// The conditions, timing and limits of a check.
fn rule(c: &ResolvedCheck) -> String {
    let failure = c
        .failure
        .as_ref()
        .map(|f| format!(", failure {f}"))
        .unwrap_or_default();
    let count = match c.count {
        Some(n) => format!("{n} measurement(s)"),
        None => "until the soak ends".to_owned(),
    };
    format!(
        "success {}{failure}; first after {}, then every {}, {count}; tolerates {} failed, {} inconclusive, {} error(s) in a row; no data: {}",
        c.success,
        show(c.initial_delay),
        show(c.interval),
        c.failure_limit,
        c.inconclusive_limit,
        c.consecutive_error_limit,
        match c.no_data {
            NoData::Fail => "fail",
            NoData::Pass => "pass",
            NoData::Inconclusive => "inconclusive",
        }
    )
}

fn show(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}
