//! The control plane: one sans-IO state machine per interface, owned by one
//! thread, that runs handshakes and timers and publishes [`DataPlane`]
//! snapshots for the workers.
//!
//! Inputs: [`Tunnel::handle_handshake`] (message types 1–3 with their source
//! address), [`Tunnel::handle_timeout`], [`Tunnel::handle_events`] (what the
//! workers' seal/open calls reported) and [`Tunnel::stage`] (a packet with no
//! usable session). Outputs: [`Tunnel::poll_transmit`] (datagrams to send),
//! [`Tunnel::poll_timeout`] (when to call `handle_timeout` next) and
//! [`Tunnel::poll_snapshot`] (a new snapshot to swap in). After any
//! `handle_*` or `stage` call, drain `poll_transmit`, then check
//! `poll_snapshot` and `poll_timeout`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::allowed_ips::{AllowedIps, IpPrefix};
use super::cookie::{CookieChecker, ReceivedCookie, mac1_ok, write_macs};
use super::dataplane::{
    DataPlane, Events, HEADROOM, IndexMap, PeerId, PeerShared, PeerSlot, TAILROOM,
};
use super::error::{ConfigError, EncapError, HandshakeError};
use super::handshake::{self, Identity, InitiatorHandshake, PeerKeys};
use super::keypair::Keypair;
use super::messages::{
    CookieReply, INITIATION_LEN, INITIATION_MAC1_OFFSET, Initiation, MessageType,
    RESPONSE_MAC1_OFFSET, Response, message_type,
};
use super::tai64n::Tai64N;
use super::timers::{
    INITIATIONS_MIN_INTERVAL, KEEPALIVE_TIMEOUT, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME,
    REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX, ZERO_KEYS_AFTER, instant_of,
    stamp,
};
use super::{PeerConfig, TunnelConfig};
use crate::keys::PublicKey;
use crate::{DropReason, random};

/// Largest packet [`Tunnel::stage`] accepts (the largest IP packet).
pub const MAX_PACKET_LEN: usize = 65535;
/// A buffer this long fits anything [`Tunnel::poll_transmit`] writes.
pub const TRANSMIT_BUF_LEN: usize = HEADROOM + MAX_PACKET_LEN + TAILROOM;

/// A datagram [`Tunnel::poll_transmit`] wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// Its length, from `buf[0]`.
    pub len: usize,
}

/// What `ringtun show` prints about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Its current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its AllowedIPs.
    pub allowed_ips: Vec<IpPrefix>,
    /// When the latest session with it was made (wall clock).
    pub latest_handshake: Option<SystemTime>,
    /// Age of the session currently used for sending.
    pub session_age: Option<Duration>,
    /// Persistent keepalive interval.
    pub persistent_keepalive: Option<Duration>,
    /// Whether an initiation of ours awaits its response.
    pub handshake_in_progress: bool,
    /// Packets waiting for a session.
    pub staged: usize,
}

/// What [`Tunnel::handle_handshake`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// An initiation from this peer was answered with a response.
    Responded(PeerId),
    /// A response completed our handshake: a new session with this peer.
    Established(PeerId),
    /// A cookie reply from this peer was stored for our next initiation.
    CookieStored(PeerId),
}

/// Our initiation in flight.
struct Pending {
    state: InitiatorHandshake,
    local_index: u32,
}

struct Peer {
    keys: PeerKeys,
    allowed_ips: Vec<IpPrefix>,
    persistent_keepalive: Option<Duration>,
    shared: Arc<PeerShared>,
    previous: Option<Arc<Keypair>>,
    current: Option<Arc<Keypair>>,
    next: Option<Arc<Keypair>>,
    pending: Option<Pending>,
    /// When this handshake attempt began (REKEY_ATTEMPT_TIME runs from here).
    attempt_started: Option<Instant>,
    /// When to retry the initiation if no response came.
    retransmit_at: Option<Instant>,
    last_initiation_sent: Option<Instant>,
    last_timestamp_sent: Option<Tai64N>,
    last_timestamp_received: Option<Tai64N>,
    last_initiation_consumed: Option<Instant>,
    cookie: Option<ReceivedCookie>,
    /// MAC1 of the last handshake message we sent: a cookie reply's associated data.
    last_mac1: Option<[u8; 16]>,
    last_handshake: Option<(Instant, SystemTime)>,
    staged: VecDeque<Vec<u8>>,
    flush_queued: bool,
    /// An initiation is due at the first timer call (`handshake_on_start`).
    contact_on_start: bool,
}

impl Peer {
    fn usable(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| {
            now.saturating_duration_since(k.created) < REJECT_AFTER_TIME
                && k.sent() < REJECT_AFTER_MESSAGES
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum IndexKind {
    Initiation,
    Session,
}

enum Outgoing {
    /// A handshake message or cookie reply, ready to send.
    Datagram {
        dst: SocketAddr,
        bytes: [u8; INITIATION_LEN],
        len: usize,
    },
    /// Seal the peer's staged packets.
    Flush(PeerId),
    /// Seal an empty packet for the peer.
    Keepalive(PeerId),
}

/// The WireGuard control plane of one interface. See the module docs for
/// the call protocol.
pub struct Tunnel {
    identity: Identity,
    checker: CookieChecker,
    peers: Vec<Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    indices: IndexMap<(PeerId, IndexKind)>,
    allowed: Arc<AllowedIps>,
    epoch: Instant,
    /// The latest (monotonic, wall) pair seen, to date messages built from
    /// calls that only carry `now`.
    clock: (Instant, SystemTime),
    mtu: Option<usize>,
    max_staged: usize,
    generation: u64,
    snapshot: Arc<DataPlane>,
    snapshot_dirty: bool,
    outgoing: VecDeque<Outgoing>,
    drops: [u64; DropReason::COUNT],
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("public_key", &self.identity.public)
            .field("peers", &self.peers.len())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn jitter() -> Duration {
    // A failed RNG only loses the jitter, never the retry.
    let r = random::u32().unwrap_or(0);
    Duration::from_millis(u64::from(r) % (REKEY_TIMEOUT_JITTER_MAX.as_millis() as u64 + 1))
}

fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Tunnel {
    /// Builds the tunnel. `now` and `wall` are the current times; no
    /// handshake starts until traffic is staged, a timer fires, a peer with
    /// a persistent keepalive and an endpoint is due, or (with
    /// `handshake_on_start`) the first timer call contacts every peer with
    /// an endpoint.
    pub fn new(
        config: TunnelConfig,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Tunnel, ConfigError> {
        let identity = Identity::new(config.private_key);
        if config.peers.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooManyPeers(config.peers.len()));
        }
        let mut by_key = HashMap::new();
        let mut peers = Vec::with_capacity(config.peers.len());
        let mut prefixes = Vec::new();
        for (i, pc) in config.peers.into_iter().enumerate() {
            let PeerConfig {
                public_key,
                preshared_key,
                allowed_ips,
                endpoint,
                persistent_keepalive,
                pin_endpoint,
            } = pc;
            let id = PeerId(i as u16);
            if public_key == identity.public {
                return Err(ConfigError::OwnKey(public_key));
            }
            if by_key.insert(public_key, id).is_some() {
                return Err(ConfigError::DuplicatePeer(public_key));
            }
            if let Some(ep) = endpoint
                && (ep.port() == 0 || ep.ip().is_unspecified())
            {
                return Err(ConfigError::BadEndpoint {
                    peer: public_key,
                    endpoint: ep,
                });
            }
            let keys = PeerKeys::new(&identity, public_key, preshared_key.as_ref())
                .map_err(|_| ConfigError::InvalidPeerKey(public_key))?;
            prefixes.extend(allowed_ips.iter().map(|p| (*p, id)));
            peers.push(Peer {
                keys,
                allowed_ips,
                persistent_keepalive: persistent_keepalive.filter(|d| !d.is_zero()),
                shared: Arc::new(PeerShared::new(endpoint, pin_endpoint)),
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
                contact_on_start: config.handshake_on_start && endpoint.is_some(),
            });
        }
        let allowed =
            Arc::new(
                AllowedIps::new(prefixes).map_err(|d| ConfigError::DuplicateAllowedIp {
                    prefix: d.prefix,
                    first: peers[d.first.index()].keys.public,
                    second: peers[d.second.index()].keys.public,
                })?,
            );
        let mtu = config.mtu.map(usize::from);
        let snapshot = Arc::new(
            DataPlane::new(now, 0, Vec::new(), [], allowed.clone(), mtu)
                .with_mac1_key(identity.mac1_key),
        );
        // Persistent keepalive: an activity stamp of 0 means "never", which is
        // due at once, so a configured peer is contacted on start-up as wg does.
        let mut t = Tunnel {
            identity,
            checker: CookieChecker::new(),
            peers,
            by_key,
            indices: IndexMap::default(),
            allowed,
            epoch: now,
            clock: (now, wall),
            mtu,
            max_staged: config.max_staged.max(1),
            generation: 0,
            snapshot,
            snapshot_dirty: false,
            outgoing: VecDeque::new(),
            drops: [0; DropReason::COUNT],
        };
        t.publish();
        t.snapshot_dirty = true;
        Ok(t)
    }

    /// Our public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public
    }

    /// The peer with this public key.
    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Number of peers; ids are `0..peer_count()`.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<DataPlane> {
        self.snapshot.clone()
    }

    /// A new snapshot, once per change: the caller swaps it in for the workers.
    pub fn poll_snapshot(&mut self) -> Option<Arc<DataPlane>> {
        std::mem::take(&mut self.snapshot_dirty).then(|| self.snapshot.clone())
    }

    /// Drops the control plane made, per [`DropReason::index`]: every error
    /// returned by `handle_handshake` and `stage` is counted here already,
    /// plus staged packets discarded and sends without an endpoint.
    pub fn drop_counts(&self) -> &[u64; DropReason::COUNT] {
        &self.drops
    }

    fn count(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    fn wall_at(&self, now: Instant) -> SystemTime {
        let (t, w) = self.clock;
        w + now.saturating_duration_since(t)
    }

    fn set_clock(&mut self, now: Instant, wall: SystemTime) {
        if now >= self.clock.0 {
            self.clock = (now, wall);
        }
    }

    /// Status of one peer for `ringtun show`.
    pub fn peer_status(&self, peer: PeerId, now: Instant) -> Option<PeerStatus> {
        let p = self.peers.get(peer.index())?;
        Some(PeerStatus {
            public_key: p.keys.public,
            endpoint: p.shared.endpoint.load(),
            allowed_ips: p.allowed_ips.clone(),
            latest_handshake: p.last_handshake.map(|(_, w)| w),
            session_age: p
                .current
                .as_ref()
                .map(|k| now.saturating_duration_since(k.created)),
            persistent_keepalive: p.persistent_keepalive,
            handshake_in_progress: p.pending.is_some(),
            staged: p.staged.len(),
        })
    }

    // ----- snapshot -----

    fn publish(&mut self) {
        self.generation += 1;
        let slots = self
            .peers
            .iter()
            .map(|p| PeerSlot {
                shared: p.shared.clone(),
                current: p.current.clone(),
            })
            .collect();
        let sessions: Vec<Arc<Keypair>> = self
            .peers
            .iter()
            .flat_map(|p| [&p.previous, &p.current, &p.next])
            .flatten()
            .cloned()
            .collect();
        self.snapshot = Arc::new(
            DataPlane::new(
                self.epoch,
                self.generation,
                slots,
                sessions,
                self.allowed.clone(),
                self.mtu,
            )
            .with_mac1_key(self.identity.mac1_key),
        );
        self.snapshot_dirty = true;
    }

    fn new_index(&mut self, owner: (PeerId, IndexKind)) -> Result<u32, HandshakeError> {
        loop {
            let i = random::u32()?;
            if let std::collections::hash_map::Entry::Vacant(e) = self.indices.entry(i) {
                e.insert(owner);
                return Ok(i);
            }
        }
    }

    fn forget(&mut self, kp: Option<Arc<Keypair>>) {
        if let Some(k) = kp {
            self.indices.remove(&k.local_index);
        }
    }

    // ----- handshake as initiator -----

    /// Sends an initiation to `peer`. A fresh attempt (`retry == false`) is
    /// skipped if one went out less than REKEY_TIMEOUT ago (§6.4).
    fn start_handshake(&mut self, id: PeerId, now: Instant, retry: bool) {
        let Some(p) = self.peers.get_mut(id.index()) else {
            return;
        };
        if !retry {
            if p.last_initiation_sent
                .is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT)
            {
                return;
            }
            if p.attempt_started.is_none() {
                p.attempt_started = Some(now);
            }
        }
        p.retransmit_at = Some(now + REKEY_TIMEOUT + jitter());
        p.last_initiation_sent = Some(now);
        if let Some(old) = p.pending.take() {
            self.indices.remove(&old.local_index);
        }
        let Some(dst) = self.peers[id.index()].shared.endpoint.load() else {
            self.count(DropReason::NoEndpoint);
            return;
        };
        let wall = self.wall_at(now);
        let local_index = match self.new_index((id, IndexKind::Initiation)) {
            Ok(i) => i,
            Err(e) => return self.count(e.reason()),
        };
        let p = &mut self.peers[id.index()];
        let mut ts = Tai64N::from_system_time(wall);
        if let Some(last) = p.last_timestamp_sent
            && ts <= last
        {
            ts = last.next();
        }
        let (msg, state) = match handshake::initiate(&self.identity, &p.keys, local_index, ts) {
            Ok(x) => x,
            Err(e) => {
                self.indices.remove(&local_index);
                return self.count(e.reason());
            }
        };
        p.last_timestamp_sent = Some(ts);
        let mut bytes = msg.emit();
        let cookie = p.cookie.as_ref().and_then(|c| c.fresh(now)).copied();
        p.last_mac1 = Some(write_macs(
            &mut bytes,
            INITIATION_MAC1_OFFSET,
            &p.keys.mac1_key,
            cookie.as_ref(),
        ));
        p.pending = Some(Pending { state, local_index });
        self.outgoing.push_back(Outgoing::Datagram {
            dst,
            bytes,
            len: INITIATION_LEN,
        });
    }

    // ----- inputs -----

    /// Handles a handshake message (type 1, 2 or 3) from `src`. Set
    /// `under_load` when the handshake queue is long: initiations and
    /// responses then need a valid MAC2, else a cookie reply goes out and
    /// [`HandshakeError::CookieRequired`] comes back. Errors are already
    /// counted in [`drop_counts`](Self::drop_counts). Follow with `poll_transmit`.
    pub fn handle_handshake(
        &mut self,
        now: Instant,
        wall: SystemTime,
        src: SocketAddr,
        datagram: &[u8],
        under_load: bool,
    ) -> Result<Handled, HandshakeError> {
        self.set_clock(now, wall);
        let res = match message_type(datagram) {
            Err(e) => Err(HandshakeError::Malformed(e)),
            Ok(MessageType::Initiation) => self.on_initiation(now, wall, src, datagram, under_load),
            Ok(MessageType::Response) => self.on_response(now, wall, src, datagram, under_load),
            Ok(MessageType::CookieReply) => self.on_cookie_reply(now, datagram),
            Ok(MessageType::Data) => Err(HandshakeError::NotHandshake),
        };
        if let Err(e) = &res {
            self.count(e.reason());
        }
        res
    }

    /// MAC1 always; under load MAC2 too, answering with a cookie reply if it is missing.
    fn check_macs(
        &mut self,
        datagram: &[u8],
        mac1_at: usize,
        sender_index: u32,
        src: SocketAddr,
        now: Instant,
        under_load: bool,
    ) -> Result<(), HandshakeError> {
        if !mac1_ok(datagram, mac1_at, &self.identity.mac1_key) {
            return Err(HandshakeError::Mac1);
        }
        let mac2_at = mac1_at + 16;
        if under_load && !self.checker.mac2_ok(datagram, mac2_at, src, now)? {
            let mut mac1 = [0u8; 16];
            mac1.copy_from_slice(&datagram[mac1_at..mac2_at]);
            let reply =
                self.checker
                    .reply(&self.identity.cookie_key, sender_index, &mac1, src, now)?;
            let mut bytes = [0u8; INITIATION_LEN];
            bytes[..64].copy_from_slice(&reply.emit());
            self.outgoing.push_back(Outgoing::Datagram {
                dst: src,
                bytes,
                len: 64,
            });
            return Err(HandshakeError::CookieRequired);
        }
        Ok(())
    }

    fn on_initiation(
        &mut self,
        now: Instant,
        wall: SystemTime,
        src: SocketAddr,
        datagram: &[u8],
        under_load: bool,
    ) -> Result<Handled, HandshakeError> {
        let msg = Initiation::parse(datagram)?;
        self.check_macs(
            datagram,
            INITIATION_MAC1_OFFSET,
            msg.sender_index,
            src,
            now,
            under_load,
        )?;
        let (consumed, _) = handshake::consume_initiation(&self.identity, &msg, |k| {
            self.by_key.get(k).map(|id| &self.peers[id.index()].keys)
        })?;
        let id = self
            .by_key
            .get(&consumed.initiator)
            .copied()
            .ok_or(HandshakeError::UnknownPeer(consumed.initiator))?;
        let p = &self.peers[id.index()];
        // §5.1: a replayed initiation must not reset the session.
        if p.last_timestamp_received
            .is_some_and(|last| consumed.timestamp <= last)
        {
            return Err(HandshakeError::StaleTimestamp);
        }
        if p.last_initiation_consumed
            .is_some_and(|t| now.saturating_duration_since(t) < INITIATIONS_MIN_INTERVAL)
        {
            return Err(HandshakeError::RateLimited);
        }
        let local_index = self.new_index((id, IndexKind::Session))?;
        let p = &mut self.peers[id.index()];
        let (resp, session) = match handshake::respond(&consumed, &p.keys, local_index) {
            Ok(x) => x,
            Err(e) => {
                self.indices.remove(&local_index);
                return Err(e);
            }
        };
        p.last_timestamp_received = Some(consumed.timestamp);
        p.last_initiation_consumed = Some(now);
        p.shared.roam(src);
        let dst = p.shared.endpoint.load().unwrap_or(src);
        let kp = Arc::new(Keypair::new(
            id,
            &session,
            local_index,
            consumed.sender_index,
            now,
            false,
        ));
        let old_next = p.next.replace(kp);
        let old_prev = p.previous.take();
        p.last_handshake = Some((now, wall));
        let mut bytes = [0u8; INITIATION_LEN];
        let mut r = resp.emit();
        let cookie = p.cookie.as_ref().and_then(|c| c.fresh(now)).copied();
        p.last_mac1 = Some(write_macs(
            &mut r,
            RESPONSE_MAC1_OFFSET,
            &p.keys.mac1_key,
            cookie.as_ref(),
        ));
        bytes[..r.len()].copy_from_slice(&r);
        self.forget(old_next);
        self.forget(old_prev);
        self.outgoing.push_back(Outgoing::Datagram {
            dst,
            bytes,
            len: r.len(),
        });
        self.publish();
        Ok(Handled::Responded(id))
    }

    fn on_response(
        &mut self,
        now: Instant,
        wall: SystemTime,
        src: SocketAddr,
        datagram: &[u8],
        under_load: bool,
    ) -> Result<Handled, HandshakeError> {
        let msg = Response::parse(datagram)?;
        self.check_macs(
            datagram,
            RESPONSE_MAC1_OFFSET,
            msg.sender_index,
            src,
            now,
            under_load,
        )?;
        let Some(&(id, IndexKind::Initiation)) = self.indices.get(&msg.receiver_index) else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let p = &mut self.peers[id.index()];
        let Some(pending) = p
            .pending
            .as_ref()
            .filter(|h| h.local_index == msg.receiver_index)
        else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let session = handshake::consume_response(&pending.state, &self.identity, &p.keys, &msg)?;
        let local_index = pending.local_index;
        p.pending = None;
        p.attempt_started = None;
        p.retransmit_at = None;
        p.shared.roam(src);
        let kp = Arc::new(Keypair::new(
            id,
            &session,
            local_index,
            msg.sender_index,
            now,
            true,
        ));
        // §5.4.6 / wireguard-go: an unconfirmed "next" becomes "previous".
        let displaced = match p.next.take() {
            Some(next) => p.previous.replace(next),
            None => {
                let cur = p.current.take();
                std::mem::replace(&mut p.previous, cur)
            }
        };
        p.current = Some(kp);
        p.last_handshake = Some((now, wall));
        self.indices.insert(local_index, (id, IndexKind::Session));
        self.forget(displaced);
        self.publish();
        // The responder uses the session only after hearing on it (§5.4.6):
        // send the staged packets, or a keepalive if there are none.
        self.queue_flush_or_keepalive(id);
        Ok(Handled::Established(id))
    }

    fn on_cookie_reply(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<Handled, HandshakeError> {
        let msg = CookieReply::parse(datagram)?;
        let Some(&(id, _)) = self.indices.get(&msg.receiver_index) else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let p = &mut self.peers[id.index()];
        let Some(mac1) = p.last_mac1 else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let cookie = ReceivedCookie::open(&p.keys.cookie_key, &msg, &mac1, now)
            .map_err(|_| HandshakeError::Decrypt("cookie"))?;
        p.cookie = Some(cookie);
        Ok(Handled::CookieStored(id))
    }

    fn queue_flush_or_keepalive(&mut self, id: PeerId) {
        let p = &mut self.peers[id.index()];
        if p.staged.is_empty() {
            self.outgoing.push_back(Outgoing::Keepalive(id));
        } else if !p.flush_queued {
            p.flush_queued = true;
            self.outgoing.push_back(Outgoing::Flush(id));
        }
    }

    fn rotate_confirmed(&mut self, id: PeerId) {
        let p = &mut self.peers[id.index()];
        if !p.next.as_ref().is_some_and(|k| k.is_confirmed()) {
            return;
        }
        let next = p.next.take();
        let cur = std::mem::replace(&mut p.current, next);
        let old = std::mem::replace(&mut p.previous, cur);
        if p.pending.is_none() {
            // A retry armed while waiting for this confirmation is moot now.
            p.retransmit_at = None;
            p.attempt_started = None;
        }
        let flush = !p.staged.is_empty() && !p.flush_queued;
        if flush {
            p.flush_queued = true;
        }
        self.forget(old);
        self.publish();
        if flush {
            self.outgoing.push_back(Outgoing::Flush(id));
        }
    }

    /// Handles what a worker's `encapsulate`/`decapsulate` reported for
    /// `peer`. Follow with `poll_transmit`, `poll_snapshot`, `poll_timeout`.
    pub fn handle_events(&mut self, peer: PeerId, events: Events, now: Instant, wall: SystemTime) {
        self.set_clock(now, wall);
        if peer.index() >= self.peers.len() {
            return;
        }
        if events.contains(Events::CONFIRMED) {
            self.rotate_confirmed(peer);
        }
        if events.contains(Events::REKEY) && self.peers[peer.index()].pending.is_none() {
            self.start_handshake(peer, now, false);
        }
        // TIMERS and ENDPOINT_CHANGED change only atomics that poll_timeout
        // and peer_status read; the call itself is the wake-up.
    }

    /// Queues a packet that found no usable session (`EncapError::NoSession`
    /// or `CounterExhausted`): it is copied (off the hot path) into the
    /// peer's bounded queue and sent sealed as soon as a session exists; a
    /// handshake starts if none is under way. Follow with `poll_transmit`.
    pub fn stage(
        &mut self,
        peer: PeerId,
        packet: &[u8],
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), DropReason> {
        self.set_clock(now, wall);
        let res = self.stage_inner(peer, packet, now);
        if let Err(r) = res {
            self.count(r);
        }
        res
    }

    fn stage_inner(&mut self, id: PeerId, packet: &[u8], now: Instant) -> Result<(), DropReason> {
        let max = self.max_staged;
        let p = self.peers.get_mut(id.index()).ok_or(DropReason::NoRoute)?;
        if packet.len() > MAX_PACKET_LEN {
            return Err(DropReason::Malformed);
        }
        if p.staged.len() >= max {
            return Err(DropReason::QueueFull);
        }
        p.staged.push_back(packet.to_vec());
        if p.usable(now) {
            if !p.flush_queued {
                p.flush_queued = true;
                self.outgoing.push_back(Outgoing::Flush(id));
            }
        } else if p.pending.is_none() {
            match p
                .next
                .as_ref()
                .map(|k| k.created + REKEY_TIMEOUT)
                .filter(|t| *t > now)
            {
                // We just answered the peer's initiation: its first packet will
                // confirm that session within moments. A competing initiation
                // would only replace it; retry only if the confirmation is late.
                Some(deadline) => {
                    p.attempt_started.get_or_insert(now);
                    p.retransmit_at = Some(p.retransmit_at.map_or(deadline, |t| t.min(deadline)));
                }
                None => self.start_handshake(id, now, false),
            }
        }
        Ok(())
    }

    /// Runs the timers that are due. Follow with `poll_transmit`,
    /// `poll_snapshot` and `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        use std::sync::atomic::Ordering::Relaxed;
        self.set_clock(now, wall);
        let mut changed = false;
        for i in 0..self.peers.len() {
            let id = PeerId(i as u16);
            if std::mem::take(&mut self.peers[i].contact_on_start)
                && self.peers[i].pending.is_none()
            {
                self.start_handshake(id, now, false);
            }
            // Handshake retransmission, or giving up (§6.4).
            if self.peers[i].retransmit_at.is_some_and(|t| t <= now) {
                let p = &mut self.peers[i];
                if p.attempt_started
                    .is_some_and(|s| now.saturating_duration_since(s) >= REKEY_ATTEMPT_TIME)
                {
                    p.retransmit_at = None;
                    p.attempt_started = None;
                    let dropped = p.staged.len() as u64;
                    p.staged.clear();
                    if let Some(old) = p.pending.take() {
                        self.indices.remove(&old.local_index);
                    }
                    self.drops[DropReason::Expired.index()] += dropped;
                } else {
                    self.start_handshake(id, now, true);
                }
            }
            let shared = self.peers[i].shared.clone();
            // Data sent, nothing heard for KEEPALIVE + REKEY_TIMEOUT: new handshake (§6.2).
            let t = shared.tx_unanswered.load(Relaxed);
            if t != 0
                && instant_of(self.epoch, t) + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT <= now
                && shared
                    .tx_unanswered
                    .compare_exchange(t, 0, Relaxed, Relaxed)
                    .is_ok()
                && self.peers[i].pending.is_none()
            {
                self.start_handshake(id, now, false);
            }
            // Data received, nothing sent for KEEPALIVE_TIMEOUT: keepalive (§6.5).
            let t = shared.rx_unanswered.load(Relaxed);
            if t != 0
                && instant_of(self.epoch, t) + KEEPALIVE_TIMEOUT <= now
                && shared
                    .rx_unanswered
                    .compare_exchange(t, 0, Relaxed, Relaxed)
                    .is_ok()
                && self.peers[i].usable(now)
            {
                self.outgoing.push_back(Outgoing::Keepalive(id));
            }
            // Persistent keepalive: after this much silence either way.
            if let Some(iv) = self.peers[i].persistent_keepalive
                && shared.endpoint.load().is_some()
            {
                let last = shared.last_activity.load(Relaxed);
                if last == 0 || instant_of(self.epoch, last) + iv <= now {
                    shared.last_activity.store(stamp(self.epoch, now), Relaxed);
                    if self.peers[i].usable(now) {
                        self.outgoing.push_back(Outgoing::Keepalive(id));
                    } else if self.peers[i].pending.is_none() {
                        self.start_handshake(id, now, false);
                    }
                }
            }
            // No new session for 3 × REJECT_AFTER_TIME: erase the keys (§6.3).
            let p = &mut self.peers[i];
            if p.last_handshake
                .is_some_and(|(t, _)| t + ZERO_KEYS_AFTER <= now)
                && (p.current.is_some() || p.previous.is_some() || p.next.is_some())
            {
                let olds = [p.previous.take(), p.current.take(), p.next.take()];
                for k in olds {
                    self.forget(k);
                }
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
    }

    /// When `handle_timeout` wants calling; None while there is nothing to
    /// wait for (no session, no handshake, no keepalive configured).
    pub fn poll_timeout(&self) -> Option<Instant> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut next = None;
        for p in &self.peers {
            if p.contact_on_start {
                next = min_deadline(next, Some(self.epoch));
            }
            next = min_deadline(next, p.retransmit_at);
            let t = p.shared.tx_unanswered.load(Relaxed);
            if t != 0 {
                next = min_deadline(
                    next,
                    Some(instant_of(self.epoch, t) + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT),
                );
            }
            let t = p.shared.rx_unanswered.load(Relaxed);
            if t != 0 {
                next = min_deadline(next, Some(instant_of(self.epoch, t) + KEEPALIVE_TIMEOUT));
            }
            if let Some(iv) = p.persistent_keepalive
                && p.shared.endpoint.load().is_some()
            {
                let last = p.shared.last_activity.load(Relaxed);
                let due = if last == 0 {
                    self.epoch
                } else {
                    instant_of(self.epoch, last) + iv
                };
                next = min_deadline(next, Some(due));
            }
            if p.current.is_some() || p.previous.is_some() || p.next.is_some() {
                next = min_deadline(next, p.last_handshake.map(|(t, _)| t + ZERO_KEYS_AFTER));
            }
        }
        next
    }

    /// The next datagram to send, written to `buf` (at least
    /// [`TRANSMIT_BUF_LEN`] bytes; a shorter buffer drops what does not fit,
    /// counted as malformed). Call until it returns None.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(out) = self.outgoing.pop_front() {
            match out {
                Outgoing::Datagram { dst, bytes, len } => {
                    let Some(slot) = buf.get_mut(..len) else {
                        self.count(DropReason::Malformed);
                        continue;
                    };
                    slot.copy_from_slice(&bytes[..len]);
                    return Some(Transmit { dst, len });
                }
                Outgoing::Keepalive(id) => {
                    if let Some(t) = self.seal(id, now, buf, None) {
                        return Some(t);
                    }
                }
                Outgoing::Flush(id) => {
                    let p = &mut self.peers[id.index()];
                    p.flush_queued = false;
                    let Some(packet) = p.staged.pop_front() else {
                        continue;
                    };
                    if !p.staged.is_empty() {
                        p.flush_queued = true;
                        self.outgoing.push_front(Outgoing::Flush(id));
                    }
                    if let Some(t) = self.seal(id, now, buf, Some(packet)) {
                        return Some(t);
                    }
                }
            }
        }
        None
    }

    /// Seals a staged packet (or a keepalive) with the current snapshot.
    fn seal(
        &mut self,
        id: PeerId,
        now: Instant,
        buf: &mut [u8],
        packet: Option<Vec<u8>>,
    ) -> Option<Transmit> {
        let len = packet.as_ref().map_or(0, Vec::len);
        if let Some(pk) = &packet {
            let Some(dst) = buf.get_mut(HEADROOM..HEADROOM + len) else {
                self.count(DropReason::Malformed);
                return None;
            };
            dst.copy_from_slice(pk);
        }
        match self.snapshot.encapsulate(id, now, buf, len) {
            Ok(sealed) => {
                if !sealed.events.is_empty() {
                    let wall = self.wall_at(now);
                    self.handle_events(id, sealed.events, now, wall);
                }
                Some(Transmit {
                    dst: sealed.dst,
                    len: sealed.len,
                })
            }
            Err(EncapError::NoSession | EncapError::CounterExhausted) => {
                // The session went away since this was queued: keep the packet
                // staged for the next one.
                if let Some(pk) = packet {
                    self.peers[id.index()].staged.push_front(pk);
                    if self.peers[id.index()].pending.is_none() {
                        self.start_handshake(id, now, false);
                    }
                }
                None
            }
            Err(e) => {
                self.count(e.into());
                None
            }
        }
    }
}
