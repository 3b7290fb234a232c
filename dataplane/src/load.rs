//! WireGuard's "under load": when the control thread answers handshake
//! messages with cookie replies instead of doing Diffie-Hellman for each.
//!
//! The reference implementations judge it by the backlog alone (an eighth
//! of the handshake queue). That misses a flood the control thread keeps
//! up with: 5,000 initiations a second with a valid MAC1 never build a
//! backlog, yet each costs an X25519 — half a core. So the rate counts
//! too: more than [`WINDOW_LIMIT`] handshake messages in one [`WINDOW`]
//! (500 a second, far above what real peers send: each rekeys every two
//! minutes) is load as well. Either signal holds it for [`HOLD`] after it
//! was last seen, as wireguard-go does. Only handshake messages count:
//! packets staged for a peer without a session have their own channel.
//!
//! Sans-IO: the caller passes the time and the backlog.

use std::time::{Duration, Instant};

use crate::handoff::CHANNEL_CAPACITY;

/// The window the rate is counted over.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Handshake messages one window may hold before that is load.
pub const WINDOW_LIMIT: u32 = 50;
/// A backlog this long is load (wireguard-go's and the kernel's eighth).
pub const BACKLOG_LIMIT: usize = CHANNEL_CAPACITY / 8;
/// How long load lasts after it was last seen.
pub const HOLD: Duration = Duration::from_secs(1);
/// Under load, the control thread's shortest turn: the messages of a
/// millisecond are answered together.
pub const LOADED_TURN: Duration = Duration::from_millis(1);

/// See the module docs.
#[derive(Debug, Default)]
pub struct HandshakeLoad {
    window_start: Option<Instant>,
    in_window: u32,
    until: Option<Instant>,
}

impl HandshakeLoad {
    /// Counts one handshake message taken at `now` with `backlog` still
    /// waiting behind it; whether it is to be treated as under load.
    pub fn on_handshake(&mut self, now: Instant, backlog: usize) -> bool {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < WINDOW => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        self.in_window = self.in_window.saturating_add(1);
        if self.in_window > WINDOW_LIMIT || backlog >= BACKLOG_LIMIT {
            self.until = Some(now + HOLD);
        }
        self.is_loaded(now)
    }

    /// Whether `now` is within [`HOLD`] of the last load seen.
    pub fn is_loaded(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now < t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `per_second` messages a second for `for_ms`, from `t0`; the
    /// time of the first one treated as under load.
    fn feed(
        load: &mut HandshakeLoad,
        t0: Instant,
        per_second: u64,
        for_ms: u64,
    ) -> Option<Duration> {
        let gap = Duration::from_nanos(1_000_000_000 / per_second);
        let mut first = None;
        let mut t = t0;
        while t < t0 + Duration::from_millis(for_ms) {
            if load.on_handshake(t, 0) && first.is_none() {
                first = Some(t - t0);
            }
            t += gap;
        }
        first
    }

    #[test]
    fn real_peers_rates_are_not_load() {
        let mut load = HandshakeLoad::default();
        // A hundred peers all rekeying within a second, then a steady 400/s.
        let t0 = Instant::now();
        assert_eq!(feed(&mut load, t0, 100, 10_000), None);
        assert_eq!(
            feed(&mut load, t0 + Duration::from_secs(10), 400, 3_000),
            None
        );
    }

    #[test]
    fn a_flood_the_thread_keeps_up_with_is_load_within_its_first_window() {
        let mut load = HandshakeLoad::default();
        let t0 = Instant::now();
        let first = feed(&mut load, t0, 5_000, 2_000).expect("a 5,000/s flood is load");
        assert!(first <= WINDOW, "load seen after {first:?}");
        // Held for a second after the flood stops, then over.
        let end = t0 + Duration::from_millis(2_000);
        assert!(load.is_loaded(end + HOLD - Duration::from_millis(10)));
        assert!(!load.is_loaded(end + HOLD + Duration::from_millis(10)));
    }

    #[test]
    fn a_backlog_is_load_at_any_rate() {
        let mut load = HandshakeLoad::default();
        let t0 = Instant::now();
        assert!(!load.on_handshake(t0, BACKLOG_LIMIT - 1));
        assert!(load.on_handshake(t0, BACKLOG_LIMIT));
        assert!(load.is_loaded(t0 + HOLD / 2));
    }
}
