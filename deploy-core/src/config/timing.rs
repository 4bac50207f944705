//! Durations and their bounds: an environment's `soak` and `timeout`, a check's `interval`,
//! `initial_delay` and `count`. Every bound is named in its error, so nothing a file asks for
//! can keep a promotion (or its lock) for more than a day.

use std::time::Duration;

use toml::Spanned;

use super::field::{Invalid, span_of};
use super::raw::{RawCheck, RawEnvironment};

/// The longest soak, wave timeout, check `initial_delay`, or time a check's measurements take.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The longest check `interval`: a wave is never unwatched by a check for longer, and a check
/// without `count` (which measures until the first tick at or after the soak's end) lengthens
/// the soak by less than this.
pub(super) const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// The most measurements a check's `count` asks for: one a second (the shortest `interval`)
/// for 24h (the longest a check may make a soak last). Any more could not fit in that time;
/// checking it first names `count` itself in the error, not the product.
pub(super) const MAX_CHECK_COUNT: u32 = 24 * 3600;

/// `s` parsed as a humantime duration, `default` when absent.
fn duration(
    s: &Option<Spanned<String>>,
    default: Duration,
    what: &str,
) -> Result<Duration, Invalid> {
    match s {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s.get_ref()).map_err(|e| {
            (
                s.span(),
                format!(
                    "{what} {:?} is not a duration ({e}); write e.g. \"90s\", \"5m\" or \"1h 30m\"",
                    s.get_ref()
                ),
            )
        }),
    }
}

/// An environment's `timeout` (per wave; 15 minutes unless given) and `soak` (none unless
/// given).
pub(super) fn timeout_and_soak(e: &RawEnvironment) -> Result<(Duration, Duration), Invalid> {
    let timeout = duration(&e.timeout, Duration::from_secs(15 * 60), "timeout")?;
    let timeout_span = span_of(&e.timeout);
    if timeout.is_zero() {
        return Err((timeout_span, "timeout must be more than zero".into()));
    }
    if timeout > MAX_DURATION {
        return Err((
            timeout_span,
            "timeout is at most 24h per wave; a longer wave is a stuck one".into(),
        ));
    }
    let soak = duration(&e.soak, Duration::ZERO, "soak")?;
    if soak > MAX_DURATION {
        return Err((span_of(&e.soak), "soak is at most 24h".into()));
    }
    Ok((timeout, soak))
}

/// A check's `interval` (30 s unless given) and `initial_delay` (none unless given), each
/// within its bound, and with `count` within the 24h a check may make a soak last.
pub(super) fn check_timing(name: &str, c: &RawCheck) -> Result<(Duration, Duration), Invalid> {
    let what = |key: &str| format!("check {name:?}: {key}");
    let interval = duration(&c.interval, Duration::from_secs(30), &what("interval"))?;
    if interval < Duration::from_secs(1) {
        return Err((
            span_of(&c.interval),
            format!("check {name:?}: interval is at least 1s"),
        ));
    }
    if interval > MAX_CHECK_INTERVAL {
        return Err((
            span_of(&c.interval),
            format!(
                "check {name:?}: interval is at most 1h, so that a wave is never unwatched for longer \
                 (and a check without count lengthens the soak by less than an interval); write e.g. \"30s\""
            ),
        ));
    }
    let initial_delay = duration(&c.initial_delay, Duration::ZERO, &what("initial_delay"))?;
    if initial_delay > MAX_DURATION {
        return Err((
            span_of(&c.initial_delay),
            format!("check {name:?}: initial_delay is at most 24h, as soak is"),
        ));
    }
    if let Some(count) = &c.count {
        check_count(name, count, interval, initial_delay)?;
    }
    Ok((interval, initial_delay))
}

/// A check's `count`: at least 1, and its measurements done within 24h.
fn check_count(
    name: &str,
    c: &Spanned<u32>,
    interval: Duration,
    initial_delay: Duration,
) -> Result<(), Invalid> {
    let n = *c.get_ref();
    if n == 0 {
        return Err((
            c.span(),
            format!(
                "check {name:?}: count must be at least 1 (omit it to measure until the soak ends)"
            ),
        ));
    }
    if n > MAX_CHECK_COUNT {
        return Err((
            c.span(),
            format!(
                "check {name:?}: count {n} is more than {MAX_CHECK_COUNT}, one measurement a second \
                 for 24h, the longest a check may make a soak last; omit count to measure until \
                 the soak ends"
            ),
        ));
    }
    // As the engine measures (`check::least_soak`): the first after `initial_delay`,
    // then `count - 1` more, `interval` apart. The soak lasts at least that long.
    let lasts = initial_delay + interval * (n - 1);
    if lasts > MAX_DURATION {
        return Err((
            c.span(),
            format!(
                "check {name:?}: initial_delay + (count - 1) × interval = {} + {} × {} is {}, \
                 and a check may make a soak last at most 24h, as soak is; lower count or interval",
                humantime::format_duration(initial_delay),
                n - 1,
                humantime::format_duration(interval),
                humantime::format_duration(lasts),
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::check;
    use crate::config::{Config, EXAMPLE};

    #[test]
    fn soak_and_timeout_bounds() {
        check("soak = \"5m\"", "soak = \"5 parsecs\"", "is not a duration");
        check("timeout = \"15m\"", "timeout = \"0s\"", "more than zero");
        check("timeout = \"15m\"", "timeout = \"2days\"", "at most 24h");
        check("soak = \"5m\"", "soak = \"1000years\"", "at most 24h");
    }

    /// A check's timing bounds: `interval = "30s"` of the example's check replaced by `timing`,
    /// then `None` (accepted) or the error it must contain.
    #[test]
    fn check_timing_bounds() {
        #[track_caller]
        fn bound(timing: &str, expect: Option<&str>) {
            let at = EXAMPLE.find("[[environments.prod.checks]]").unwrap();
            let (head, tail) = EXAMPLE.split_at(at);
            let text = format!("{head}{}", tail.replacen("interval = \"30s\"", timing, 1));
            match (Config::parse("deploy.toml", &text), expect) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => assert!(e.message.contains(want), "{timing}: {e}"),
                (got, want) => panic!("{timing}: got {got:?}, want {want:?}"),
            }
        }
        // The reliability review's plan of 195,982 years (N8).
        bound(
            "count = 4294967295\ninterval = \"24h\"",
            Some("interval is at most 1h"),
        );
        bound(
            "count = 4294967295\ninterval = \"1h\"",
            Some("count 4294967295 is more than 86400, one measurement a second for 24h"),
        );
        bound("count = 86400\ninterval = \"1s\"", None);
        bound("count = 86401\ninterval = \"1s\"", Some("more than 86400"));
        bound(
            "count = 26\ninterval = \"1h\"",
            Some("initial_delay + (count - 1) × interval = 0s + 25 × 1h is 1day 1h"),
        );
        bound("count = 24\ninterval = \"1h\"", None);
        bound("count = 25\ninterval = \"1h\"", None);
        bound(
            "count = 24\ninterval = \"1h\"\ninitial_delay = \"1h 1s\"",
            Some("= 1h 1s + 23 × 1h is 1day 1s"),
        );
        bound(
            "count = 24\ninterval = \"1h\"\ninitial_delay = \"1h\"",
            None,
        );
        bound("count = 1\ninitial_delay = \"24h\"", None);
        bound(
            "initial_delay = \"24h 1s\"",
            Some("initial_delay is at most 24h"),
        );
        bound("interval = \"1h\"", None);
        bound("interval = \"1h 1s\"", Some("interval is at most 1h"));
        bound("interval = \"24h\"", Some("interval is at most 1h"));
        bound(
            "interval = \"999999999999999999999h\"",
            Some("is not a duration"),
        );
        bound("count = 0", Some("count must be at least 1"));
        bound("count = -1", Some("invalid value"));
        bound("count = 1", None);
    }
}
