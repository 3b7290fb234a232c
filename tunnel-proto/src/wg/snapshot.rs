//! The workers' view of the tunnel: an immutable [`Snapshot`] of peers,
//! sessions and AllowedIPs that seals and opens transport data in place.
//!
//! The control plane ([`Tunnel`](super::Tunnel)) builds a new snapshot
//! whenever a session starts or ends or the configuration changes, and
//! hands it out through [`Tunnel::poll_snapshot`](super::Tunnel::poll_snapshot);
//! workers hold it in an `Arc` swapped as a whole (arc-swap) and read one
//! per batch. Per-packet state that must be shared — send counters, replay
//! windows, paths, activity stamps, traffic counters — lives in atomics
//! behind `Arc`s that successive snapshots share, so a swap loses nothing.
//!
//! Hot-path costs: sealing takes one `fetch_add` on the session's counter,
//! reads the path and adds to the worker's own traffic lane; opening takes
//! one hash lookup and one uncontended mutex (the replay window) after
//! authentication, and one read of the path. Activity stamps are written
//! only when they move by 100 ms, flags only on state changes. Nothing
//! allocates.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::ops::{BitOr, BitOrAssign, Range};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use aws_lc_rs::aead::Aad;

use super::allowed_ips::AllowedIps;
use super::crypto::nonce;
use super::error::EncapError;
use super::ip::inner_header;
use super::keypair::Keypair;
use super::messages::{DATA_HEADER_LEN, DataHeader, TAG_LEN};
use super::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME, REKEY_TIMEOUT, TIMER_EVENT_INTERVAL, stamp, touch,
};
use crate::DropReason;
use crate::path::{AtomicPath, Path};
use crate::peer_table::PeerId;
use crate::traffic::PeerTraffic;

/// Bytes in front of the plaintext for the transport header.
pub const HEADROOM: usize = DATA_HEADER_LEN;
/// Bytes behind the plaintext for padding to 16 (at most 15) and the tag.
pub const TAILROOM: usize = 15 + TAG_LEN;

/// Things the control plane must learn from a sealed or opened packet. When
/// not empty, the worker forwards `(peer, events)` to
/// [`Tunnel::handle_events`](super::Tunnel::handle_events); it happens at most
/// a few times per session, not per packet.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Events(u8);

impl Events {
    /// Nothing to report.
    pub const NONE: Events = Events(0);
    /// A timer started (data sent without reply, or received without
    /// answer): the control plane's next deadline moved earlier.
    pub const TIMERS: Events = Events(1);
    /// The session wants replacing (age or message count): start a handshake.
    pub const REKEY: Events = Events(2);
    /// A responder's new session saw its first packet: make it current.
    pub const CONFIRMED: Events = Events(4);
    /// The peer roamed: its endpoint is now the packet's source.
    pub const ENDPOINT_CHANGED: Events = Events(8);

    /// Whether there is nothing to forward.
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every event in `other` is set.
    #[inline]
    pub const fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Events {
    type Output = Events;
    fn bitor(self, rhs: Events) -> Events {
        Events(self.0 | rhs.0)
    }
}

impl BitOrAssign for Events {
    fn bitor_assign(&mut self, rhs: Events) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Events::TIMERS, "TIMERS"),
            (Events::REKEY, "REKEY"),
            (Events::CONFIRMED, "CONFIRMED"),
            (Events::ENDPOINT_CHANGED, "ENDPOINT_CHANGED"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(e, _)| self.contains(*e))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Events({})", set.join("|"))
    }
}

/// A sealed transport message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Wire length, starting at `buf[0]`.
    pub len: usize,
    /// Where to send it.
    pub dst: SocketAddr,
    /// The local address to send it from (`None`: the kernel chooses).
    pub src: Option<IpAddr>,
    /// The peer takes each inner flow from a source port of its own
    /// ([`PeerConfig::spread_flows`](super::PeerConfig::spread_flows)).
    pub spread: bool,
    /// What to forward to the control plane.
    pub events: Events,
}

/// An opened transport message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The peer it came from.
    pub peer: PeerId,
    /// The inner IP packet within `buf`, trimmed to its IP length (empty for a keepalive).
    pub payload: Range<usize>,
    /// An authenticated keepalive: nothing to deliver.
    pub keepalive: bool,
    /// What to forward to the control plane.
    pub events: Events,
}

/// Per-peer state that outlives snapshots: the path, activity stamps and
/// traffic counters. One per peer, made when the peer is added and shared
/// by every snapshot until it is removed.
pub(crate) struct PeerShared {
    pub(crate) path: AtomicPath,
    /// Keep the remote even when authenticated packets arrive from elsewhere.
    pub(crate) pinned: AtomicBool,
    /// The peer spreads its flows over source ports, and takes ours.
    pub(crate) spread: AtomicBool,
    /// Last authenticated packet sent or received (coarse), for persistent keepalive.
    pub(crate) last_activity: AtomicU64,
    /// When data was first sent after the last authenticated receive (0: not
    /// waiting); a handshake starts if nothing arrives for
    /// KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (§6.2).
    pub(crate) tx_unanswered: AtomicU64,
    /// When data was first received after our last send (0: none); a
    /// keepalive goes out after KEEPALIVE_TIMEOUT of silence (§6.5).
    pub(crate) rx_unanswered: AtomicU64,
    /// When a timer-only event was last reported for this peer, by any
    /// worker: they fire on every turnaround of a busy flow, so at most
    /// one per [`TIMER_EVENT_INTERVAL`] goes to the control thread, which
    /// looks at the timers again shortly after each.
    pub(crate) timers_reported: AtomicU64,
    pub(crate) traffic: PeerTraffic,
}

impl PeerShared {
    pub(crate) fn new(
        endpoint: Option<SocketAddr>,
        pinned: bool,
        spread: bool,
        lanes: usize,
    ) -> PeerShared {
        PeerShared {
            path: AtomicPath::new(endpoint.map(|remote| Path {
                remote,
                local: None,
            })),
            pinned: AtomicBool::new(pinned),
            spread: AtomicBool::new(spread),
            last_activity: AtomicU64::new(0),
            tx_unanswered: AtomicU64::new(0),
            rx_unanswered: AtomicU64::new(0),
            timers_reported: AtomicU64::new(0),
            traffic: PeerTraffic::new(lanes),
        }
    }

    /// Records an authenticated packet from `from`: roams unless pinned (a
    /// pinned peer without endpoint still learns one). True if the remote
    /// changed.
    #[inline]
    pub(crate) fn roam(&self, from: Path) -> bool {
        self.path
            .roam(from.remote, from.local, self.pinned.load(Ordering::Relaxed))
    }

    /// Records an authenticated data packet from `from`: as [`roam`](Self::roam),
    /// except that a peer that spreads its flows moves only the address
    /// (its data leaves from flow ports, which receive nothing).
    #[inline]
    pub(crate) fn roam_data(&self, from: Path) -> bool {
        let pinned = self.pinned.load(Ordering::Relaxed);
        if self.spread.load(Ordering::Relaxed) {
            self.path.roam_address(from.remote, from.local, pinned)
        } else {
            self.path.roam(from.remote, from.local, pinned)
        }
    }

    /// Whether a timer-only event at stamp `t` should reach the control
    /// thread (see `timers_reported`). Claimed by one worker at a time.
    #[inline]
    fn report_timers(&self, t: u64) -> bool {
        let last = self.timers_reported.load(Ordering::Relaxed);
        if last != 0 && t.saturating_sub(last) < TIMER_EVENT_INTERVAL.as_nanos() as u64 {
            return false;
        }
        self.timers_reported
            .compare_exchange(last, t, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// A peer as a snapshot sees it.
pub(crate) struct PeerSlot {
    pub(crate) id: PeerId,
    pub(crate) shared: Arc<PeerShared>,
    pub(crate) current: Option<Arc<Keypair>>,
    /// A responder's new session, waiting for the initiator's first packet.
    /// Once a worker has opened that packet (which confirms it), replies
    /// leave on it at once, before the control thread makes it current: the
    /// initiator may have no other session (it restarted), and the reply to
    /// its first packet must not go out on one it cannot open.
    pub(crate) next: Option<Arc<Keypair>>,
}

/// Receiver indices are random, but hashbrown wants well-spread high bits too.
#[derive(Default)]
pub(crate) struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IndexMap<V> = HashMap<u32, V, BuildHasherDefault<IndexHasher>>;

/// An immutable snapshot of the tunnel for the workers. `Send + Sync`.
pub struct Snapshot {
    epoch: Instant,
    generation: u64,
    /// By [`PeerId`] slot; a slot's occupant is checked against the id's
    /// generation, so an id from before a removal finds nothing.
    peers: Box<[Option<PeerSlot>]>,
    by_index: IndexMap<Arc<Keypair>>,
    allowed: Arc<AllowedIps>,
    mtu: Option<usize>,
    /// HASH("mac1----" || our public key), to screen handshake messages
    /// in the workers before they reach the control thread; `None` while
    /// the interface has no private key (no message can be for it).
    mac1_key: Option<[u8; 32]>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("peers", &self.peers.iter().flatten().count())
            .field("sessions", &self.by_index.len())
            .field("allowed_ips", &self.allowed.len())
            .finish()
    }
}

fn round16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// What a snapshot is made of.
pub(crate) struct SnapshotParts {
    pub(crate) epoch: Instant,
    pub(crate) generation: u64,
    pub(crate) peers: Vec<Option<PeerSlot>>,
    pub(crate) sessions: Vec<Arc<Keypair>>,
    pub(crate) allowed: Arc<AllowedIps>,
    pub(crate) mtu: Option<usize>,
    pub(crate) mac1_key: Option<[u8; 32]>,
}

impl Snapshot {
    pub(crate) fn new(parts: SnapshotParts) -> Snapshot {
        let by_index = parts
            .sessions
            .into_iter()
            .map(|k| (k.local_index, k))
            .collect();
        Snapshot {
            epoch: parts.epoch,
            generation: parts.generation,
            peers: parts.peers.into(),
            by_index,
            allowed: parts.allowed,
            mtu: parts.mtu,
            mac1_key: parts.mac1_key,
        }
    }

    #[inline]
    fn slot(&self, peer: PeerId) -> Option<&PeerSlot> {
        self.peers
            .get(peer.slot())?
            .as_ref()
            .filter(|s| s.id == peer)
    }

    /// Whether a handshake-class datagram deserves the control thread's
    /// time: an initiation or a response of the exact length with a valid
    /// MAC1 for our key, or a cookie reply of the exact length (those carry
    /// no MAC1; the control thread authenticates them). One keyed BLAKE2s
    /// over at most 116 bytes: cheap enough for a worker, and it keeps a
    /// flood of junk out of the bounded channel, where it would crowd out
    /// real handshakes (wireguard-go checks only the length before its
    /// queue and MAC1 after; checking both first keeps the queue for
    /// messages that can matter). The error is the reason to count.
    pub fn screen_handshake(&self, datagram: &[u8]) -> Result<(), DropReason> {
        use super::messages::{
            COOKIE_REPLY_LEN, INITIATION_LEN, INITIATION_MAC1_OFFSET, MessageType, RESPONSE_LEN,
            RESPONSE_MAC1_OFFSET, message_type,
        };
        let (mac1_offset, len) = match message_type(datagram) {
            Ok(MessageType::Initiation) => (Some(INITIATION_MAC1_OFFSET), INITIATION_LEN),
            Ok(MessageType::Response) => (Some(RESPONSE_MAC1_OFFSET), RESPONSE_LEN),
            Ok(MessageType::CookieReply) => (None, COOKIE_REPLY_LEN),
            Ok(MessageType::Data) | Err(_) => return Err(DropReason::Malformed),
        };
        if datagram.len() != len {
            return Err(DropReason::Malformed);
        }
        match (mac1_offset, &self.mac1_key) {
            (_, None) => Err(DropReason::AuthFailed),
            (Some(off), Some(key)) if !super::cookie::mac1_ok(datagram, off, key) => {
                Err(DropReason::AuthFailed)
            }
            _ => Ok(()),
        }
    }

    /// The peer's traffic, summed over every lane at this moment (a
    /// metrics scrape reads it here, off the control thread).
    pub fn traffic(&self, peer: PeerId) -> Option<crate::traffic::Traffic> {
        Some(self.slot(peer)?.shared.traffic.total())
    }

    /// Age at `now` of the session the peer's data is sent on (`None`:
    /// no session).
    pub fn session_age(&self, peer: PeerId, now: Instant) -> Option<std::time::Duration> {
        let k = self.slot(peer)?.current.as_ref()?;
        Some(now.saturating_duration_since(k.created))
    }

    /// Increases with every snapshot a tunnel publishes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.peers.iter().flatten().count()
    }

    /// The peer's current endpoint.
    pub fn endpoint(&self, peer: PeerId) -> Option<SocketAddr> {
        self.slot(peer)?.shared.path.remote()
    }

    /// The peer's current path (endpoint and local address).
    pub fn path(&self, peer: PeerId) -> Option<Path> {
        self.slot(peer)?.shared.path.load()
    }

    /// Forgets the local address the peer's datagrams leave from: the
    /// kernel refused it (it is no longer ours); the next datagram from
    /// the peer names one again.
    pub fn forget_local(&self, peer: PeerId) {
        if let Some(s) = self.slot(peer) {
            s.shared.path.forget_local();
        }
    }

    /// The peer whose AllowedIPs hold `dst` (longest prefix).
    #[inline]
    pub fn route(&self, dst: IpAddr) -> Option<PeerId> {
        self.allowed.lookup(dst)
    }

    /// The wire length of a sealed payload of `payload_len` bytes: padded to
    /// 16 (but not beyond the MTU, §5.4.6), plus header and tag.
    #[inline]
    pub fn sealed_len(&self, payload_len: usize) -> usize {
        let padded = match self.mtu {
            Some(mtu) => round16(payload_len).min(mtu.max(payload_len)),
            None => round16(payload_len),
        };
        HEADROOM + padded + TAG_LEN
    }

    /// Seals the plaintext at `buf[HEADROOM..HEADROOM + payload_len]` for
    /// `peer` in place: pads it, encrypts it, writes the transport header in
    /// front and the tag behind. `payload_len == 0` is a keepalive. A data
    /// packet is counted in the peer's traffic `lane` (the caller's own).
    ///
    /// On [`EncapError::NoSession`] or [`EncapError::CounterExhausted`] hand
    /// the packet to [`Tunnel::stage`](super::Tunnel::stage).
    #[inline]
    pub fn encapsulate(
        &self,
        peer: PeerId,
        lane: usize,
        now: Instant,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<Sealed, EncapError> {
        let slot = self.slot(peer).ok_or(EncapError::UnknownPeer)?;
        // One relaxed load, only while a responder's session is pending.
        let kp = match &slot.next {
            Some(next) if next.is_confirmed() => next,
            _ => slot.current.as_ref().ok_or(EncapError::NoSession)?,
        };
        if now.saturating_duration_since(kp.created) >= REJECT_AFTER_TIME {
            return Err(EncapError::NoSession);
        }
        let path = slot.shared.path.load().ok_or(EncapError::NoEndpoint)?;
        let len = self.sealed_len(payload_len);
        if buf.len() < len {
            return Err(EncapError::BufferTooSmall {
                need: len,
                have: buf.len(),
            });
        }
        let counter = kp.next_send_counter().ok_or(EncapError::CounterExhausted)?;
        let body_end = len - TAG_LEN;
        buf[HEADROOM + payload_len..body_end].fill(0);
        let Ok(tag) = kp.send_key().seal_in_place_separate_tag(
            nonce(counter),
            Aad::empty(),
            &mut buf[HEADROOM..body_end],
        ) else {
            // aws-lc refuses only inputs beyond 256 GiB.
            return Err(EncapError::BufferTooSmall {
                need: len,
                have: buf.len(),
            });
        };
        buf[body_end..len].copy_from_slice(tag.as_ref());
        buf[..HEADROOM].copy_from_slice(
            &DataHeader {
                receiver_index: kp.remote_index,
                counter,
            }
            .emit(),
        );

        let mut events = Events::NONE;
        let shared = &slot.shared;
        let t = stamp(self.epoch, now);
        touch(&shared.last_activity, t);
        if shared.rx_unanswered.load(Ordering::Relaxed) != 0 {
            shared.rx_unanswered.store(0, Ordering::Relaxed);
        }
        if payload_len > 0 {
            shared.traffic.lane(lane).sent(1, payload_len as u64);
            if shared.tx_unanswered.load(Ordering::Relaxed) == 0
                && shared
                    .tx_unanswered
                    .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                && shared.report_timers(t)
            {
                events |= Events::TIMERS;
            }
        }
        // §6.2: rekey after REKEY_AFTER_MESSAGES, or REKEY_AFTER_TIME for the initiator.
        let stale = counter >= REKEY_AFTER_MESSAGES
            || (kp.initiator && now.saturating_duration_since(kp.created) >= REKEY_AFTER_TIME);
        if stale && kp.request_rekey() {
            events |= Events::REKEY;
        }
        Ok(Sealed {
            len,
            dst: path.remote,
            src: path.local,
            spread: shared.spread.load(Ordering::Relaxed),
            events,
        })
    }

    /// Opens a transport message (type 4) in place, received `from` (the
    /// peer's address, and the local address it arrived on). On success
    /// the inner packet is `buf[opened.payload]`, authenticated, fresh,
    /// from a source the peer may use, and counted in the peer's traffic
    /// `lane` (the caller's own).
    #[inline]
    pub fn decapsulate(
        &self,
        now: Instant,
        lane: usize,
        from: Path,
        buf: &mut [u8],
    ) -> Result<Opened, DropReason> {
        let header = DataHeader::parse(buf)?;
        let kp = self
            .by_index
            .get(&header.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
        let age = now.saturating_duration_since(kp.created);
        if age >= REJECT_AFTER_TIME || header.counter >= REJECT_AFTER_MESSAGES {
            return Err(DropReason::Expired);
        }
        kp.precheck(header.counter)
            .map_err(|_| DropReason::Replay)?;
        let plain_len = kp
            .recv_key()
            .open_in_place(nonce(header.counter), Aad::empty(), &mut buf[HEADROOM..])
            .map_err(|_| DropReason::AuthFailed)?
            .len();
        kp.accept(header.counter).map_err(|_| DropReason::Replay)?;

        // Authenticated and fresh: this counts as hearing from the peer,
        // whatever the inner packet turns out to be.
        let Some(slot) = self.slot(kp.peer) else {
            return Err(DropReason::UnknownIndex);
        };
        let shared = &slot.shared;
        let t = stamp(self.epoch, now);
        touch(&shared.last_activity, t);
        if shared.tx_unanswered.load(Ordering::Relaxed) != 0 {
            shared.tx_unanswered.store(0, Ordering::Relaxed);
        }
        let mut events = Events::NONE;
        if shared.roam_data(from) {
            events |= Events::ENDPOINT_CHANGED;
        }

        let payload = if plain_len == 0 {
            HEADROOM..HEADROOM
        } else {
            let inner =
                inner_header(&buf[HEADROOM..HEADROOM + plain_len]).ok_or(DropReason::Malformed)?;
            if self.allowed.lookup(inner.src) != Some(kp.peer) {
                return Err(DropReason::DisallowedSource);
            }
            shared
                .traffic
                .lane(lane)
                .received(1, inner.total_len as u64);
            if shared.rx_unanswered.load(Ordering::Relaxed) == 0
                && shared
                    .rx_unanswered
                    .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                && shared.report_timers(t)
            {
                events |= Events::TIMERS;
            }
            HEADROOM..HEADROOM + inner.total_len
        };
        // One-shot flags are taken only for packets that are delivered, so a
        // rejected inner packet cannot swallow them.
        if kp.confirm() {
            events |= Events::CONFIRMED;
        }
        // §6.2: an initiator that only receives rekeys before the session dies.
        if kp.initiator
            && age >= REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT
            && kp.request_rekey()
        {
            events |= Events::REKEY;
        }
        Ok(Opened {
            peer: kp.peer,
            keepalive: payload.is_empty(),
            payload,
            events,
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn empty(mtu: Option<usize>) -> Snapshot {
        Snapshot::new(SnapshotParts {
            epoch: Instant::now(),
            generation: 0,
            peers: Vec::new(),
            sessions: Vec::new(),
            allowed: Arc::new(AllowedIps::empty()),
            mtu,
            mac1_key: None,
        })
    }

    #[test]
    fn snapshot_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Snapshot>();
        assert_send_sync::<Arc<Snapshot>>();
    }

    #[test]
    fn events_combine_and_print() {
        let e = Events::TIMERS | Events::REKEY;
        assert!(e.contains(Events::REKEY));
        assert!(!e.contains(Events::CONFIRMED));
        assert!(Events::NONE.is_empty());
        assert_eq!(format!("{e:?}"), "Events(TIMERS|REKEY)");
    }

    #[test]
    fn padding_is_to_16_but_not_beyond_the_mtu() {
        let dp = empty(Some(1420));
        assert_eq!(dp.sealed_len(0), 32);
        assert_eq!(dp.sealed_len(1), 48);
        assert_eq!(dp.sealed_len(16), 48);
        assert_eq!(dp.sealed_len(1419), 32 + 1420);
        assert_eq!(dp.sealed_len(1420), 32 + 1420);
        assert_eq!(dp.sealed_len(1500), 32 + 1500);
        let dp = empty(None);
        assert_eq!(dp.sealed_len(1420), 32 + 1424);
        assert!(dp.sealed_len(8192) <= HEADROOM + 8192 + TAILROOM);
    }

    #[test]
    fn timer_events_are_reported_once_a_second_per_peer() {
        let s = PeerShared::new(None, false, false, 1);
        let sec = 1_000_000_000;
        assert!(s.report_timers(5));
        assert!(
            !s.report_timers(5 + sec / 2),
            "held back within the interval"
        );
        assert!(s.report_timers(5 + sec));
    }
}
