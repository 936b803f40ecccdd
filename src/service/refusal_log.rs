//! Rate-limited logging of refused requests and connections. One client can cause
//! thousands of refusals a second; each is worth knowing about, but not as one
//! syslog line each. Per process (a Cyrus service child), a token bucket lets
//! [`BURST`] lines through at once and then [`PER_SECOND`] a second; what it holds
//! back is counted, and the session's end says how many were not logged.
#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::time::Instant;

/// Lines logged at once before the rate applies.
pub const BURST: f64 = 20.0;
/// Lines a second after the burst.
pub const PER_SECOND: f64 = 2.0;

struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

static BUCKET: Mutex<Bucket> = Mutex::new(Bucket {
    tokens: BURST,
    at: None,
});

/// Whether one more refusal line may be logged now (and take a token if so).
pub fn allow() -> bool {
    let Ok(mut b) = BUCKET.lock() else {
        return true;
    };
    let now = Instant::now();
    if let Some(at) = b.at {
        let refill = now.duration_since(at).as_secs_f64() * PER_SECOND;
        b.tokens = (b.tokens + refill).min(BURST);
    }
    b.at = Some(now);
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// A printable cut of a refusal text: at most 200 bytes, control characters as `?`.
pub fn printable(text: &[u8]) -> String {
    String::from_utf8_lossy(&text[..text.len().min(200)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        // drain whatever other tests left, then count what a flood gets through
        let mut passed = 0;
        let t = Instant::now();
        for _ in 0..10_000 {
            if allow() {
                passed += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        assert!(
            passed as f64 <= BURST + PER_SECOND * (secs + 1.0),
            "{passed} lines in {secs:.3} s"
        );
        assert_eq!(printable(b"a\x01b"), "a?b");
        assert_eq!(printable(&[b'x'; 300]).len(), 200);
    }
}
