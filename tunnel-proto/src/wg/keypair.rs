//! One session's transport keys and counters (whitepaper §5.4.6), shared by
//! the control plane and every worker through an `Arc`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use aws_lc_rs::aead::LessSafeKey;

use super::PeerId;
use super::crypto::chacha_key;
use super::handshake::SessionKeys;
use super::replay::{ReplayError, ReplayWindow};
use super::timers::REJECT_AFTER_MESSAGES;

/// Keeps the send counter, which every sealing worker increments, off the
/// cache line of the read-mostly fields.
#[repr(align(64))]
#[derive(Default)]
struct Padded<T>(T);

/// How far the lock-free replay hint may trail the window.
const RX_HINT_STEP: u64 = 512;

const REKEY_REQUESTED: u8 = 1;
const AWAITING_CONFIRMATION: u8 = 2;

/// A session: keys, indices, send counter, replay window.
pub(crate) struct Keypair {
    pub(crate) peer: PeerId,
    /// Our index: the receiver index of the packets the peer sends us.
    pub(crate) local_index: u32,
    /// The peer's index: the receiver index of the packets we send.
    pub(crate) remote_index: u32,
    pub(crate) created: Instant,
    pub(crate) initiator: bool,
    send: LessSafeKey,
    recv: LessSafeKey,
    flags: AtomicU8,
    /// Highest received counter + 1, for the lock-free too-old check before decryption.
    rx_next: AtomicU64,
    replay: Mutex<ReplayWindow>,
    send_counter: Padded<AtomicU64>,
}

impl Keypair {
    pub(crate) fn new(
        peer: PeerId,
        keys: &SessionKeys,
        local_index: u32,
        remote_index: u32,
        created: Instant,
        initiator: bool,
    ) -> Keypair {
        Keypair {
            peer,
            local_index,
            remote_index,
            created,
            initiator,
            send: chacha_key(&keys.send),
            recv: chacha_key(&keys.recv),
            // A responder's session is used for sending only once the
            // initiator's first packet proves it has the keys (§5.4.6).
            flags: AtomicU8::new(if initiator { 0 } else { AWAITING_CONFIRMATION }),
            rx_next: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::new()),
            send_counter: Padded(AtomicU64::new(0)),
        }
    }

    #[inline]
    pub(crate) fn send_key(&self) -> &LessSafeKey {
        &self.send
    }

    #[inline]
    pub(crate) fn recv_key(&self) -> &LessSafeKey {
        &self.recv
    }

    /// Takes the next send counter; several workers may race, each gets its
    /// own. `None` once REJECT_AFTER_MESSAGES are used up: the counter stops
    /// there (a compare-and-swap, so it never wraps, however many workers
    /// keep asking).
    #[inline]
    pub(crate) fn next_send_counter(&self) -> Option<u64> {
        self.send_counter
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                (c < REJECT_AFTER_MESSAGES).then_some(c + 1)
            })
            .ok()
    }

    /// Counters handed out so far.
    pub(crate) fn sent(&self) -> u64 {
        self.send_counter.0.load(Ordering::Relaxed)
    }

    /// True exactly once per session: the caller reports the rekey.
    #[inline]
    pub(crate) fn request_rekey(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & REKEY_REQUESTED == 0
            && self.flags.fetch_or(REKEY_REQUESTED, Ordering::Relaxed) & REKEY_REQUESTED == 0
    }

    /// True exactly once for a responder's session, on its first authenticated packet.
    #[inline]
    pub(crate) fn confirm(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & AWAITING_CONFIRMATION != 0
            && self
                .flags
                .fetch_and(!AWAITING_CONFIRMATION, Ordering::Relaxed)
                & AWAITING_CONFIRMATION
                != 0
    }

    /// Whether a responder's session has seen its first packet (always true for an initiator's).
    pub(crate) fn is_confirmed(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & AWAITING_CONFIRMATION == 0
    }

    /// Before decryption: refuse counters older than the window without a lock.
    #[inline]
    pub(crate) fn precheck(&self, counter: u64) -> Result<(), ReplayError> {
        if ReplayWindow::too_old(self.rx_next.load(Ordering::Relaxed), counter) {
            return Err(ReplayError::TooOld(counter));
        }
        Ok(())
    }

    /// After authentication: record the counter (one uncontended lock per packet).
    #[inline]
    pub(crate) fn accept(&self, counter: u64) -> Result<(), ReplayError> {
        let mut w = self
            .replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.update(counter)?;
        let next = w.next();
        drop(w);
        // The hint may lag: the check under the lock is the exact one. Moving
        // it only every few hundred counters keeps this line mostly read-only.
        if next
            >= self
                .rx_next
                .load(Ordering::Relaxed)
                .saturating_add(RX_HINT_STEP)
        {
            self.rx_next.fetch_max(next, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn keypair() -> Keypair {
        let keys = SessionKeys {
            send: [1; 32],
            recv: [2; 32],
        };
        Keypair::new(PeerId::new(0, 0), &keys, 1, 2, Instant::now(), true)
    }

    #[test]
    fn the_send_counter_stops_at_reject_after_messages_and_never_wraps() {
        let k = keypair();
        assert_eq!(k.next_send_counter(), Some(0));
        k.send_counter
            .0
            .store(REJECT_AFTER_MESSAGES - 1, Ordering::Relaxed);
        assert_eq!(k.next_send_counter(), Some(REJECT_AFTER_MESSAGES - 1));
        for _ in 0..3 {
            assert_eq!(k.next_send_counter(), None, "exhausted");
        }
        assert_eq!(k.sent(), REJECT_AFTER_MESSAGES, "it stays at the cap");
    }
}

#[cfg(test)]
mod erasure {
    use super::*;

    /// A session's keys must not live inside the Rust values that hold
    /// them: nothing wipes a Rust value's old copies (every move leaves
    /// one). A key handle smaller than a key cannot hold one; the schedule
    /// is in aws-lc's own allocation, which its `OPENSSL_free` cleanses
    /// before freeing. (ring's `LessSafeKey` holds the schedule inline:
    /// over 500 bytes.)
    #[test]
    fn a_key_handle_is_too_small_to_hold_a_key() {
        let handle = std::mem::size_of::<LessSafeKey>();
        assert!(handle < 32, "LessSafeKey is {handle} bytes");
    }
}
