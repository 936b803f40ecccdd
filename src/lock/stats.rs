//! Hold-time statistics of the locks a `Locker` hands out: counts, maximum and a
//! log2 histogram for the 99th percentile, cheap enough to update on every release.

use std::sync::Mutex;
use std::time::Duration;

/// Hold-time statistics for every lock a [`Locker`] hands out.
#[derive(Debug, Default)]
pub struct LockStats {
    inner: Mutex<StatsInner>,
}

/// Log2 buckets of microseconds: bucket i holds durations < 2^i µs (the last one
/// holds everything longer, ~36 minutes).
const BUCKETS: usize = 32;

#[derive(Debug, Default)]
struct StatsInner {
    count: u64,
    total: Duration,
    max: Duration,
    max_waited: Duration,
    waits: u64,
    total_waited: Duration,
    timeouts: u64,
    buckets: [u64; BUCKETS],
}

/// A copy of the statistics, for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LockStatsSnapshot {
    /// Locks released so far.
    pub count: u64,
    /// Sum of their hold times.
    pub total_held: Duration,
    /// Longest hold.
    pub max_held: Duration,
    /// 99th percentile of hold times (upper edge of its power-of-two bucket).
    pub p99_held: Duration,
    /// Longest wait for a lock that was granted.
    pub max_waited: Duration,
    /// Locks granted only after a wait (somebody held a conflicting lock).
    pub waits: u64,
    /// Time spent in those waits.
    pub total_waited: Duration,
    /// Lock requests that timed out.
    pub timeouts: u64,
}

impl LockStats {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatsInner> {
        // A poisoned mutex only means a panic elsewhere; the counters stay usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn record_hold(&self, d: Duration) {
        let mut s = self.lock();
        s.count += 1;
        s.total += d;
        s.max = s.max.max(d);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        s.buckets[i] += 1;
    }

    /// A lock was granted after `d`; `contended`: not at the first attempt.
    pub(super) fn record_wait(&self, d: Duration, contended: bool) {
        let mut s = self.lock();
        s.max_waited = s.max_waited.max(d);
        if contended {
            s.waits += 1;
            s.total_waited += d;
        }
    }

    pub(super) fn record_timeout(&self) {
        self.lock().timeouts += 1;
    }

    /// The current numbers.
    pub fn snapshot(&self) -> LockStatsSnapshot {
        let s = self.lock();
        let mut p99 = Duration::ZERO;
        if s.count > 0 {
            let want = s.count - s.count / 100;
            let mut seen = 0;
            for (i, n) in s.buckets.iter().enumerate() {
                seen += n;
                if seen >= want {
                    p99 = Duration::from_micros(1u64 << i).min(s.max);
                    break;
                }
            }
        }
        LockStatsSnapshot {
            count: s.count,
            total_held: s.total,
            max_held: s.max,
            p99_held: p99,
            max_waited: s.max_waited,
            waits: s.waits,
            total_waited: s.total_waited,
            timeouts: s.timeouts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_percentile() {
        let s = LockStats::default();
        for _ in 0..99 {
            s.record_hold(Duration::from_micros(10));
        }
        s.record_hold(Duration::from_secs(2));
        let snap = s.snapshot();
        assert_eq!(snap.count, 100);
        assert_eq!(snap.max_held, Duration::from_secs(2));
        assert!(
            snap.p99_held <= Duration::from_micros(16),
            "{:?}",
            snap.p99_held
        );
    }
}
