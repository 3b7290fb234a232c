//! WireGuard's protocol constants (whitepaper §6.1–6.4) and the coarse
//! timestamps the data plane shares with the control plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Send a new handshake after this many messages on a session (§6.1).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Never send or accept a counter at or beyond this: 2^64 − 2^13 − 1 (§6.1),
/// leaving the replay window room below the 64-bit nonce limit.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// The initiator of a session starts a new handshake when it sends on a
/// session this old (§6.1).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A session this old is neither used nor accepted (§6.1).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Give up retrying a handshake after this long (§6.4).
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retry an unanswered initiation after this long, plus jitter (§6.4).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to REKEY_TIMEOUT (§6.1: "up to 333 ms").
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(333);
/// Send a keepalive when data was received and nothing sent for this long (§6.5).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The cookie secret changes this often; a received cookie is used for as long (§5.4.7).
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// A received cookie is no longer used this long before the sender's secret
/// would have rotated (the kernel's COOKIE_SECRET_LATENCY).
pub const COOKIE_SECRET_LATENCY: Duration = Duration::from_secs(5);
/// Minimum spacing of initiations accepted from one peer (wireguard-go's
/// HandshakeInitationRate: 50 per second).
pub const INITIATIONS_MIN_INTERVAL: Duration = Duration::from_millis(20);
/// Keys are erased when no new session was made for this long (§6.3: 3 × REJECT_AFTER_TIME).
pub const ZERO_KEYS_AFTER: Duration = Duration::from_secs(3 * 180);

/// Least time between two timer-only events for one peer (they fire on
/// every turnaround of a busy flow; see [`TIMER_RECHECK`]).
pub const TIMER_EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// How soon after a timer event the control plane looks at the timers
/// again: events held back within [`TIMER_EVENT_INTERVAL`] moved
/// deadlines it has not heard of.
pub const TIMER_RECHECK: Duration = Duration::from_millis(1500);

/// Coarse "last activity" stamps are rewritten at most this often, so a
/// busy peer does not write a shared cache line on every packet.
pub(crate) const COARSE_STEP_NS: u64 = 100_000_000;

/// Nanoseconds since `epoch`, plus one: 0 stays free to mean "unset".
#[inline]
pub(crate) fn stamp(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX - 1) + 1
}

/// The instant a non-zero stamp stands for.
pub(crate) fn instant_of(epoch: Instant, stamp: u64) -> Instant {
    epoch + Duration::from_nanos(stamp.saturating_sub(1))
}

/// Stores `t` if it moved by at least [`COARSE_STEP_NS`]: one load per
/// packet, one store per step.
#[inline]
pub(crate) fn touch(slot: &AtomicU64, t: u64) {
    if t.saturating_sub(slot.load(Ordering::Relaxed)) >= COARSE_STEP_NS {
        slot.store(t, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn constants_match_the_whitepaper() {
        assert_eq!(
            u128::from(REJECT_AFTER_MESSAGES),
            (1u128 << 64) - (1 << 13) - 1
        );
        assert_eq!(ZERO_KEYS_AFTER, REJECT_AFTER_TIME * 3);
    }

    #[test]
    fn stamps_round_trip_and_touch_is_coarse() {
        let e = Instant::now();
        let t = e + Duration::from_millis(1500);
        assert_eq!(instant_of(e, stamp(e, t)), t);
        assert_ne!(stamp(e, e), 0);
        let slot = AtomicU64::new(0);
        touch(&slot, stamp(e, t));
        assert_eq!(slot.load(Ordering::Relaxed), stamp(e, t));
        touch(&slot, stamp(e, t + Duration::from_millis(50)));
        assert_eq!(
            slot.load(Ordering::Relaxed),
            stamp(e, t),
            "moved less than a step"
        );
        touch(&slot, stamp(e, t + Duration::from_millis(150)));
        assert_eq!(
            slot.load(Ordering::Relaxed),
            stamp(e, t + Duration::from_millis(150))
        );
    }
}
