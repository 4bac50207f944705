//! Time on tokio's clock, so that tests and the sandbox run on its paused clock.

use deploy_core::port::Clock;
use jiff::Timestamp;

/// A clock that starts at a fixed time and advances with tokio's clock (paused or not).
#[derive(Debug, Clone)]
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Starts at `base`.
    pub fn new(base: Timestamp) -> Self {
        Self {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = jiff::SignedDuration::try_from(self.start.elapsed())
            .unwrap_or(jiff::SignedDuration::MAX);
        self.base.checked_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}
