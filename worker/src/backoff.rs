//! Capped exponential backoff with jitter, for reconnecting to an absent coordinator.

use std::time::Duration;

use rand::Rng;

/// Delays grow as `base · 2^attempt`, capped at `max`; each delay is drawn uniformly from
/// `[cap/2, cap]` ("equal jitter"), so many workers restarting together spread out without ever
/// retrying in a tight loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        let base = base.max(Duration::from_millis(1));
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next delay to wait; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        let jitter =
            rand::thread_rng().gen_range(0..=half.as_micros().min(u64::MAX as u128) as u64);
        half + Duration::from_micros(jitter)
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// Number of delays handed out since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Forget past failures after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubling_capped_and_jittered() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
        assert_eq!(backoff.attempts(), 0);
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut delays = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
            delays.insert(backoff.next_delay());
        }
        assert!(delays.len() > 10, "delays were not jittered: {delays:?}");
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..200 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }
}
