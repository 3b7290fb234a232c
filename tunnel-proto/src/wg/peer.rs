//! One WireGuard peer as the control plane holds it: configuration, keys,
//! sessions, handshake state, staged packets, and its timer table.
//!
//! The timer table is one function, [`Peer::deadline`]: the control plane
//! fires a timer when its deadline has passed and reports the earliest
//! deadline as its next wake-up, both from this one computation, so the
//! two cannot drift apart (quinn-proto's `TimerTable`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use super::allowed_ips::IpPrefix;
use super::cookie::ReceivedCookie;
use super::handshake::{InitiatorHandshake, PeerKeys};
use super::keypair::Keypair;
use super::snapshot::PeerShared;
use super::tai64n::Tai64N;
use super::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_TIMEOUT, ZERO_KEYS_AFTER,
    instant_of,
};
use crate::keys::PresharedKey;

/// Our initiation in flight.
pub(crate) struct Pending {
    pub(crate) state: InitiatorHandshake,
    pub(crate) local_index: u32,
}

/// A peer's timers (whitepaper §6). Each has one deadline, computed in
/// [`Peer::deadline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// `handshake_on_start`: contact the peer at the first timer call.
    ContactOnStart,
    /// Retry our unanswered initiation, or give up (§6.4).
    Retransmit,
    /// Data sent, nothing heard for KEEPALIVE + REKEY_TIMEOUT: new handshake (§6.2).
    NewHandshake,
    /// Data received, nothing sent for KEEPALIVE_TIMEOUT: keepalive (§6.5).
    Keepalive,
    /// Persistent keepalive: after this much silence either way.
    PersistentKeepalive,
    /// No new session for 3 × REJECT_AFTER_TIME: erase the keys (§6.3).
    ZeroKeys,
}

impl Timer {
    /// Every timer, in the order they fire when several are due.
    pub(crate) const ALL: [Timer; 6] = [
        Timer::ContactOnStart,
        Timer::Retransmit,
        Timer::NewHandshake,
        Timer::Keepalive,
        Timer::PersistentKeepalive,
        Timer::ZeroKeys,
    ];
}

/// Everything the control plane knows about one peer.
pub(crate) struct Peer {
    pub(crate) keys: PeerKeys,
    pub(crate) preshared_key: Option<PresharedKey>,
    pub(crate) allowed_ips: Vec<IpPrefix>,
    pub(crate) persistent_keepalive: Option<Duration>,
    /// Path, activity stamps and traffic counters, shared with every snapshot.
    pub(crate) shared: Arc<PeerShared>,
    pub(crate) previous: Option<Arc<Keypair>>,
    pub(crate) current: Option<Arc<Keypair>>,
    pub(crate) next: Option<Arc<Keypair>>,
    pub(crate) pending: Option<Pending>,
    /// When this handshake attempt began (REKEY_ATTEMPT_TIME runs from here).
    pub(crate) attempt_started: Option<Instant>,
    /// When to retry the initiation if no response came.
    pub(crate) retransmit_at: Option<Instant>,
    pub(crate) last_initiation_sent: Option<Instant>,
    pub(crate) last_timestamp_sent: Option<Tai64N>,
    pub(crate) last_timestamp_received: Option<Tai64N>,
    pub(crate) last_initiation_consumed: Option<Instant>,
    pub(crate) cookie: Option<ReceivedCookie>,
    /// MAC1 of the last handshake message we sent: a cookie reply's associated data.
    pub(crate) last_mac1: Option<[u8; 16]>,
    pub(crate) last_handshake: Option<(Instant, SystemTime)>,
    pub(crate) staged: VecDeque<Vec<u8>>,
    pub(crate) flush_queued: bool,
    /// An initiation is due at the first timer call (`handshake_on_start`).
    pub(crate) contact_on_start: bool,
    /// Handshakes completed (as initiator, or confirmed as responder).
    pub(crate) handshakes: u64,
}

impl Peer {
    pub(crate) fn new(keys: PeerKeys, shared: Arc<PeerShared>) -> Peer {
        Peer {
            keys,
            preshared_key: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
            shared,
            previous: None,
            current: None,
            next: None,
            pending: None,
            attempt_started: None,
            retransmit_at: None,
            last_initiation_sent: None,
            last_timestamp_sent: None,
            last_timestamp_received: None,
            last_initiation_consumed: None,
            cookie: None,
            last_mac1: None,
            last_handshake: None,
            staged: VecDeque::new(),
            flush_queued: false,
            contact_on_start: false,
            handshakes: 0,
        }
    }

    /// Whether the current session can still send.
    pub(crate) fn usable(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| {
            now.saturating_duration_since(k.created) < REJECT_AFTER_TIME
                && k.sent() < REJECT_AFTER_MESSAGES
        })
    }

    /// Whether any session (previous, current or next) exists.
    pub(crate) fn has_sessions(&self) -> bool {
        self.previous.is_some() || self.current.is_some() || self.next.is_some()
    }

    /// Takes every session, to be forgotten by the caller.
    pub(crate) fn take_sessions(&mut self) -> [Option<Arc<Keypair>>; 3] {
        [self.previous.take(), self.current.take(), self.next.take()]
    }

    /// When `timer` is due, if it is armed. `epoch` is the tunnel's
    /// origin of the coarse stamps the workers write.
    pub(crate) fn deadline(&self, timer: Timer, epoch: Instant) -> Option<Instant> {
        let stamped = |t: u64| (t != 0).then(|| instant_of(epoch, t));
        match timer {
            Timer::ContactOnStart => self.contact_on_start.then_some(epoch),
            Timer::Retransmit => self.retransmit_at,
            Timer::NewHandshake => stamped(self.shared.tx_unanswered.load(Relaxed))
                .map(|t| t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT),
            Timer::Keepalive => {
                stamped(self.shared.rx_unanswered.load(Relaxed)).map(|t| t + KEEPALIVE_TIMEOUT)
            }
            Timer::PersistentKeepalive => {
                let iv = self.persistent_keepalive?;
                self.shared.path.load()?;
                // A stamp of 0 means "never": due at once, so a configured
                // peer is contacted on start-up as wg does.
                Some(stamped(self.shared.last_activity.load(Relaxed)).map_or(epoch, |t| t + iv))
            }
            Timer::ZeroKeys => {
                if !self.has_sessions() {
                    return None;
                }
                self.last_handshake.map(|(t, _)| t + ZERO_KEYS_AFTER)
            }
        }
    }

    /// The earliest deadline of any timer.
    pub(crate) fn next_deadline(&self, epoch: Instant) -> Option<Instant> {
        Timer::ALL
            .iter()
            .filter_map(|&t| self.deadline(t, epoch))
            .min()
    }
}
