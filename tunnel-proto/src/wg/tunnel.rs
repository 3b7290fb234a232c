//! The control plane: one sans-IO state machine per interface, owned by one
//! thread, that runs handshakes and timers, holds the peer table, and
//! publishes [`Snapshot`]s for the workers.
//!
//! Inputs: [`Tunnel::handle_handshake`] (message types 1–3 with the path
//! they came by), [`Tunnel::handle_timeout`], [`Tunnel::handle_events`]
//! (what the workers' seal/open calls reported), [`Tunnel::stage`] (a
//! packet with no usable session) and the configuration calls
//! ([`Tunnel::add_peer`], [`Tunnel::remove_peer`], `set_*`). Outputs:
//! [`Tunnel::poll_transmit`] (datagrams to send), [`Tunnel::poll_timeout`]
//! (when to call `handle_timeout` next) and [`Tunnel::poll_snapshot`] (a
//! new snapshot to swap in). After any `handle_*`, `stage` or
//! configuration call, drain `poll_transmit`, then check `poll_snapshot`
//! and `poll_timeout`.
//!
//! Deterministic: it reads no clock (time comes in as arguments) and every
//! random choice comes from the [`Rng`] its configuration names, so a run
//! with a seed replays exactly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use super::allowed_ips::{AllowedIps, IpPrefix};
use super::cookie::{CookieChecker, ReceivedCookie, mac1_ok, write_macs};
use super::error::{ConfigError, EncapError, HandshakeError};
use super::handshake::{self, Identity, PeerKeys};
use super::keypair::Keypair;
use super::messages::{
    CookieReply, INITIATION_LEN, INITIATION_MAC1_OFFSET, Initiation, MessageType,
    RESPONSE_MAC1_OFFSET, Response, message_type,
};
use super::peer::{Peer, Pending, Timer};
use super::ratelimit::RateLimiter;
use super::snapshot::{
    Events, HEADROOM, IndexMap, PeerShared, PeerSlot, Snapshot, SnapshotParts, TAILROOM,
};
use super::tai64n::Tai64N;
use super::timers::{
    INITIATIONS_MIN_INTERVAL, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
    TIMER_RECHECK, stamp,
};
use super::{PeerConfig, TunnelConfig};
use crate::DropReason;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::path::Path;
use crate::peer_table::{PeerId, PeerTable};
use crate::random::Rng;
use crate::traffic::Traffic;

/// Largest packet [`Tunnel::stage`] accepts (the largest IP packet).
pub const MAX_PACKET_LEN: usize = 65535;
/// A buffer this long fits anything [`Tunnel::poll_transmit`] writes.
pub const TRANSMIT_BUF_LEN: usize = HEADROOM + MAX_PACKET_LEN + TAILROOM;
/// Most peers one interface holds.
pub const MAX_PEERS: usize = u16::MAX as usize;

/// A datagram [`Tunnel::poll_transmit`] wrote into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// The local address to send it from (`None`: the kernel chooses).
    pub src: Option<IpAddr>,
    /// Its length, from `buf[0]`.
    pub len: usize,
}

/// What `ringtun show` and the UAPI report about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's id.
    pub id: PeerId,
    /// The peer's public key.
    pub public_key: PublicKey,
    /// Whether a preshared key is configured.
    pub has_preshared_key: bool,
    /// Its current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// The local address its datagrams leave from, once learned.
    pub local_address: Option<IpAddr>,
    /// Whether its endpoint is pinned (no roaming).
    pub pinned: bool,
    /// Whether each inner flow to it leaves from a source port of its own.
    pub spread_flows: bool,
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
    /// Handshakes completed with it (as initiator, or confirmed as responder).
    pub handshakes: u64,
    /// Traffic, summed over every lane.
    pub traffic: Traffic,
    /// Traffic of each worker's lane, in worker order (the control
    /// thread's own lane left out).
    pub traffic_by_worker: Vec<Traffic>,
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum IndexKind {
    Initiation,
    Session,
}

enum Outgoing {
    /// A handshake message or cookie reply, ready to send.
    Datagram {
        path: Path,
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
    /// Our key and what derives from it; `None` until one is set (an
    /// interface started bare, waiting for its configuration).
    identity: Option<Identity>,
    checker: CookieChecker,
    /// Handshake messages with a valid cookie per source address, under load.
    limiter: RateLimiter,
    /// Cookie replies per destination address.
    reply_limiter: RateLimiter,
    rng: Rng,
    peers: PeerTable<Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    indices: IndexMap<(PeerId, IndexKind)>,
    /// Every AllowedIPs prefix and its peer: the source of the lookup
    /// table the snapshot carries, rebuilt when this changes.
    prefixes: BTreeMap<IpPrefix, PeerId>,
    allowed: Arc<AllowedIps>,
    allowed_dirty: bool,
    /// The configuration changed since the last snapshot.
    stale: bool,
    epoch: Instant,
    /// The latest (monotonic, wall) pair seen, to date messages built from
    /// calls that only carry `now`.
    clock: (Instant, SystemTime),
    mtu: Option<usize>,
    max_staged: usize,
    lanes: usize,
    handshake_on_start: bool,
    /// Look at the timers again then: workers held back timer events.
    recheck_at: Option<Instant>,
    generation: u64,
    snapshot: Arc<Snapshot>,
    snapshot_dirty: bool,
    outgoing: VecDeque<Outgoing>,
    drops: [u64; DropReason::COUNT],
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("public_key", &self.public_key())
            .field("peers", &self.peers.len())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

fn check_endpoint(key: PublicKey, ep: Option<SocketAddr>) -> Result<(), ConfigError> {
    match ep {
        Some(ep) if ep.port() == 0 || ep.ip().is_unspecified() => Err(ConfigError::BadEndpoint {
            peer: key,
            endpoint: ep,
        }),
        _ => Ok(()),
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
        if config.peers.len() > MAX_PEERS {
            return Err(ConfigError::TooManyPeers(config.peers.len()));
        }
        let identity = config.private_key.map(Identity::new);
        let mut rng = Rng::new(config.rng_seed);
        // A failed RNG leaves a known key: the limiters still limit, an
        // attacker could only aim at one entry's neighbours.
        let mut limiter_key = || {
            let mut key = [0u8; 16];
            let _ = rng.fill(&mut key);
            [
                u64::from_le_bytes(key[..8].try_into().unwrap_or_default()),
                u64::from_le_bytes(key[8..].try_into().unwrap_or_default()),
            ]
        };
        let limiter = RateLimiter::new(limiter_key());
        let reply_limiter = RateLimiter::new(limiter_key());
        let mut t = Tunnel {
            snapshot: Arc::new(Snapshot::new(SnapshotParts {
                epoch: now,
                generation: 0,
                peers: Vec::new(),
                sessions: Vec::new(),
                allowed: Arc::new(AllowedIps::empty()),
                mtu: None,
                mac1_key: identity.as_ref().map(|i| i.mac1_key),
            })),
            identity,
            checker: CookieChecker::new(),
            limiter,
            reply_limiter,
            rng,
            peers: PeerTable::new(),
            by_key: HashMap::new(),
            indices: IndexMap::default(),
            prefixes: BTreeMap::new(),
            allowed: Arc::new(AllowedIps::empty()),
            allowed_dirty: false,
            stale: false,
            epoch: now,
            clock: (now, wall),
            mtu: config.mtu.map(usize::from),
            max_staged: config.max_staged.max(1),
            lanes: config.traffic_lanes.max(1),
            handshake_on_start: config.handshake_on_start,
            recheck_at: None,
            generation: 0,
            snapshot_dirty: false,
            outgoing: VecDeque::new(),
            drops: [0; DropReason::COUNT],
        };
        for pc in config.peers {
            t.add_peer(pc)?;
        }
        t.publish();
        Ok(t)
    }

    /// Our public key, once a private key is set.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity.as_ref().map(|i| i.public)
    }

    /// Our private key, for a configuration dump (the UAPI's `get`).
    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.identity.as_ref().map(|i| &i.private)
    }

    /// The peer with this public key.
    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Every peer's id, in slot order.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.ids()
    }

    /// Number of peers.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Receiver indices in use (sessions and our pending initiations): at
    /// most four per peer, whatever the peer does. For status and tests.
    pub fn receiver_indices(&self) -> usize {
        self.indices.len()
    }

    /// The traffic lane the control thread's own sends (staged packets,
    /// keepalives) are counted in: the last one. Workers use the others.
    pub fn control_lane(&self) -> usize {
        self.lanes - 1
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.clone()
    }

    /// A new snapshot, once per change: the caller swaps it in for the workers.
    pub fn poll_snapshot(&mut self) -> Option<Arc<Snapshot>> {
        if self.stale || self.allowed_dirty {
            self.publish();
        }
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

    /// Status of one peer.
    pub fn peer_status(&self, id: PeerId, now: Instant) -> Option<PeerStatus> {
        let p = self.peers.get(id)?;
        let path = p.shared.path.load();
        Some(PeerStatus {
            id,
            public_key: p.keys.public,
            has_preshared_key: p.preshared_key.is_some(),
            endpoint: path.map(|p| p.remote),
            local_address: path.and_then(|p| p.local),
            pinned: p.shared.pinned.load(Relaxed),
            spread_flows: p.shared.spread.load(Relaxed),
            allowed_ips: p.allowed_ips.clone(),
            latest_handshake: p.last_handshake.map(|(_, w)| w),
            session_age: p
                .current
                .as_ref()
                .map(|k| now.saturating_duration_since(k.created)),
            persistent_keepalive: p.persistent_keepalive,
            handshake_in_progress: p.pending.is_some(),
            staged: p.staged.len(),
            handshakes: p.handshakes,
            traffic: p.shared.traffic.total(),
            traffic_by_worker: {
                let mut lanes = p.shared.traffic.by_lane();
                lanes.truncate(self.control_lane());
                lanes
            },
        })
    }

    /// The peer's preshared key, for a configuration dump (the UAPI's
    /// `get`), which must give back what was set.
    pub fn preshared_key(&self, id: PeerId) -> Option<&PresharedKey> {
        self.peers.get(id)?.preshared_key.as_ref()
    }

    // ----- configuration -----

    /// Whether `key` can be a peer's: a low-order point cannot (every
    /// Diffie-Hellman with it is zero). Lets a caller check a whole batch
    /// of changes before applying any.
    pub fn check_peer_key(key: &PublicKey) -> Result<(), ConfigError> {
        PeerKeys::new(None, *key, None)
            .map(drop)
            .map_err(|_| ConfigError::InvalidPeerKey(*key))
    }

    /// Whether `endpoint` can be sent to (not port 0, not the unspecified
    /// address).
    pub fn check_endpoint(key: &PublicKey, endpoint: SocketAddr) -> Result<(), ConfigError> {
        check_endpoint(*key, Some(endpoint))
    }

    /// Adds a peer; returns its id. A prefix of its AllowedIPs that
    /// another peer holds is refused, as in a configuration file (use
    /// [`set_allowed_ips`](Self::set_allowed_ips) to move one). With
    /// `handshake_on_start` a peer with an endpoint is contacted at the
    /// next timer call. Refused, nothing changes.
    pub fn add_peer(&mut self, config: PeerConfig) -> Result<PeerId, ConfigError> {
        let PeerConfig {
            public_key,
            preshared_key,
            allowed_ips,
            endpoint,
            persistent_keepalive,
            pin_endpoint,
            spread_flows,
        } = config;
        if self.public_key() == Some(public_key) {
            return Err(ConfigError::OwnKey(public_key));
        }
        if self.by_key.contains_key(&public_key) {
            return Err(ConfigError::DuplicatePeer(public_key));
        }
        if self.peers.len() >= MAX_PEERS {
            return Err(ConfigError::TooManyPeers(self.peers.len() + 1));
        }
        check_endpoint(public_key, endpoint)?;
        for prefix in &allowed_ips {
            if let Some(other) = self.prefixes.get(prefix).and_then(|id| self.peers.get(*id)) {
                return Err(ConfigError::DuplicateAllowedIp {
                    prefix: *prefix,
                    first: other.keys.public,
                    second: public_key,
                });
            }
        }
        let keys = PeerKeys::new(self.identity.as_ref(), public_key, preshared_key.as_ref())
            .map_err(|_| ConfigError::InvalidPeerKey(public_key))?;
        let shared = Arc::new(PeerShared::new(
            endpoint,
            pin_endpoint,
            spread_flows,
            self.lanes,
        ));
        let mut peer = Peer::new(keys, shared);
        peer.preshared_key = preshared_key;
        peer.persistent_keepalive = persistent_keepalive.filter(|d| !d.is_zero());
        peer.contact_on_start = self.handshake_on_start && endpoint.is_some();
        let id = self.peers.insert(peer);
        self.by_key.insert(public_key, id);
        self.set_allowed_ips(id, allowed_ips)?;
        self.stale = true;
        Ok(id)
    }

    /// Removes a peer: its sessions are forgotten (a packet naming one of
    /// their indices is then dropped as `unknown_index`), its pending
    /// handshake and staged packets dropped, its keys erased, its
    /// AllowedIPs released. The id never names anything again.
    pub fn remove_peer(&mut self, id: PeerId) -> Result<(), ConfigError> {
        let mut p = self.peers.remove(id).ok_or(ConfigError::UnknownPeer(id))?;
        self.by_key.remove(&p.keys.public);
        for k in p.take_sessions() {
            self.forget(k);
        }
        if let Some(old) = p.pending.take() {
            self.indices.remove(&old.local_index);
        }
        for prefix in &p.allowed_ips {
            self.prefixes.remove(prefix);
        }
        self.outgoing.retain(|o| match o {
            Outgoing::Flush(x) | Outgoing::Keepalive(x) => *x != id,
            Outgoing::Datagram { .. } => true,
        });
        // Dropping `p` zeroizes its static-static secret, PSK and any
        // ephemeral (ZeroizeOnDrop).
        drop(p);
        self.allowed_dirty = true;
        self.stale = true;
        Ok(())
    }

    /// Replaces a peer's AllowedIPs, keeping its sessions. A prefix held by
    /// another peer moves to this one, as `wg set` does.
    pub fn set_allowed_ips(
        &mut self,
        id: PeerId,
        prefixes: Vec<IpPrefix>,
    ) -> Result<(), ConfigError> {
        if !self.peers.contains(id) {
            return Err(ConfigError::UnknownPeer(id));
        }
        let mut unique = prefixes;
        unique.sort();
        unique.dedup();
        if let Some(p) = self.peers.get_mut(id) {
            for old in std::mem::take(&mut p.allowed_ips) {
                self.prefixes.remove(&old);
            }
        }
        for prefix in &unique {
            if let Some(prev) = self.prefixes.insert(*prefix, id)
                && prev != id
                && let Some(other) = self.peers.get_mut(prev)
            {
                other.allowed_ips.retain(|x| x != prefix);
            }
        }
        if let Some(p) = self.peers.get_mut(id) {
            p.allowed_ips = unique;
        }
        self.allowed_dirty = true;
        Ok(())
    }

    /// Sets (or clears) a peer's endpoint, keeping its sessions; the local
    /// address is learned again from the peer's next datagram.
    pub fn set_endpoint(
        &mut self,
        id: PeerId,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), ConfigError> {
        let p = self.peers.get(id).ok_or(ConfigError::UnknownPeer(id))?;
        check_endpoint(p.keys.public, endpoint)?;
        if p.shared.path.remote() != endpoint {
            p.shared.path.store(endpoint.map(|remote| Path {
                remote,
                local: None,
            }));
        }
        Ok(())
    }

    /// Sets a peer's persistent keepalive (`None` or zero: off), keeping
    /// its sessions. Turned on, the peer is contacted at once, as wg does.
    pub fn set_persistent_keepalive(
        &mut self,
        id: PeerId,
        interval: Option<Duration>,
    ) -> Result<(), ConfigError> {
        let p = self.peers.get_mut(id).ok_or(ConfigError::UnknownPeer(id))?;
        let interval = interval.filter(|d| !d.is_zero());
        if p.persistent_keepalive.is_none() && interval.is_some() {
            p.shared.last_activity.store(0, Relaxed);
        }
        p.persistent_keepalive = interval;
        Ok(())
    }

    /// Pins (or unpins) a peer's endpoint, keeping its sessions.
    pub fn set_pinned(&mut self, id: PeerId, pinned: bool) -> Result<(), ConfigError> {
        let p = self.peers.get(id).ok_or(ConfigError::UnknownPeer(id))?;
        p.shared.pinned.store(pinned, Relaxed);
        Ok(())
    }

    /// Turns the spreading of a peer's flows over source ports on or off,
    /// keeping its sessions. A change also starts a handshake (if the peer
    /// has an endpoint): while one end spread and the other did not, the
    /// endpoint may have roamed to a flow port, which receives nothing,
    /// and a handshake leaves from and answers to the listen ports.
    pub fn set_spread_flows(&mut self, id: PeerId, spread: bool) -> Result<(), ConfigError> {
        let p = self.peers.get(id).ok_or(ConfigError::UnknownPeer(id))?;
        if p.shared.spread.swap(spread, Relaxed) != spread {
            self.contact_soon(id);
        }
        Ok(())
    }

    /// Starts a handshake with every peer that spreads its flows: our
    /// listen port moved, and such a peer learns ports only from
    /// handshakes (its data from us leaves from flow ports).
    pub fn contact_spreading_peers(&mut self) {
        let ids: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.shared.spread.load(Relaxed))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            self.contact_soon(id);
        }
    }

    /// Arms a handshake with the peer at the next timeout, as at start, if
    /// it has an endpoint.
    fn contact_soon(&mut self, id: PeerId) {
        if let Some(p) = self.peers.get_mut(id)
            && p.shared.path.remote().is_some()
        {
            p.contact_on_start = true;
        }
    }

    /// Sets a peer's preshared key. The same key again changes nothing
    /// (`wg syncconf` sends every peer's key every time); a different one
    /// changes the handshake's keys, so the peer's sessions and pending
    /// handshake are dropped and the next packet starts a new one.
    pub fn set_preshared_key(
        &mut self,
        id: PeerId,
        psk: Option<PresharedKey>,
    ) -> Result<(), ConfigError> {
        let p = self.peers.get(id).ok_or(ConfigError::UnknownPeer(id))?;
        if p.preshared_key == psk {
            return Ok(());
        }
        let keys = PeerKeys::new(self.identity.as_ref(), p.keys.public, psk.as_ref())
            .map_err(|_| ConfigError::InvalidPeerKey(p.keys.public))?;
        let p = self.peers.get_mut(id).ok_or(ConfigError::UnknownPeer(id))?;
        p.keys = keys;
        p.preshared_key = psk;
        self.reset_handshakes(id);
        self.stale = true;
        Ok(())
    }

    /// Replaces the interface's private key (`None`: no key, as the UAPI's
    /// all-zero key asks). The same key again changes nothing; a different
    /// one drops every session and pending handshake (they were made with
    /// the old identity), and a peer whose public key is the new one is
    /// removed, as wg does. Refused (a peer key that is a low-order point),
    /// nothing changes.
    pub fn set_private_key(&mut self, key: Option<PrivateKey>) -> Result<(), ConfigError> {
        if key.as_ref().map(PrivateKey::public_key) == self.public_key() {
            return Ok(());
        }
        let identity = key.map(Identity::new);
        let mut keys = Vec::with_capacity(self.peers.len());
        for (id, p) in self.peers.iter() {
            if identity.as_ref().is_some_and(|i| i.public == p.keys.public) {
                continue;
            }
            let k = PeerKeys::new(identity.as_ref(), p.keys.public, p.preshared_key.as_ref())
                .map_err(|_| ConfigError::InvalidPeerKey(p.keys.public))?;
            keys.push((id, k));
        }
        if let Some(own) = identity
            .as_ref()
            .and_then(|i| self.by_key.get(&i.public).copied())
        {
            self.remove_peer(own)?;
        }
        self.identity = identity;
        for (id, k) in keys {
            if let Some(p) = self.peers.get_mut(id) {
                p.keys = k;
            }
            self.reset_handshakes(id);
        }
        self.stale = true;
        Ok(())
    }

    /// Forgets a peer's sessions and handshake state (its keys changed).
    fn reset_handshakes(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let sessions = p.take_sessions();
        let pending = p.pending.take();
        p.retransmit_at = None;
        p.attempt_started = None;
        p.last_initiation_sent = None;
        p.cookie = None;
        for k in sessions {
            self.forget(k);
        }
        if let Some(old) = pending {
            self.indices.remove(&old.local_index);
        }
    }

    // ----- snapshot -----

    fn publish(&mut self) {
        if std::mem::take(&mut self.allowed_dirty) {
            // The prefix map has no duplicates: this cannot fail.
            self.allowed = Arc::new(
                AllowedIps::new(self.prefixes.iter().map(|(p, id)| (*p, *id)))
                    .unwrap_or_else(|_| AllowedIps::empty()),
            );
        }
        self.stale = false;
        self.generation += 1;
        let mut slots: Vec<Option<PeerSlot>> = (0..self.peers.slots()).map(|_| None).collect();
        let mut sessions = Vec::new();
        for (id, p) in self.peers.iter() {
            slots[id.slot()] = Some(PeerSlot {
                id,
                shared: p.shared.clone(),
                current: p.current.clone(),
                next: p.next.clone(),
            });
            sessions.extend(
                [&p.previous, &p.current, &p.next]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        self.snapshot = Arc::new(Snapshot::new(SnapshotParts {
            epoch: self.epoch,
            generation: self.generation,
            peers: slots,
            sessions,
            allowed: self.allowed.clone(),
            mtu: self.mtu,
            mac1_key: self.identity.as_ref().map(|i| i.mac1_key),
        }));
        self.snapshot_dirty = true;
    }

    fn new_index(&mut self, owner: (PeerId, IndexKind)) -> Result<u32, HandshakeError> {
        loop {
            let i = self.rng.u32()?;
            if let std::collections::hash_map::Entry::Vacant(e) = self.indices.entry(i) {
                e.insert(owner);
                return Ok(i);
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        // A failed RNG only loses the jitter, never the retry.
        let r = self.rng.u32().unwrap_or(0);
        Duration::from_millis(u64::from(r) % (REKEY_TIMEOUT_JITTER_MAX.as_millis() as u64 + 1))
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
        let jitter = self.jitter();
        let Some(p) = self.peers.get_mut(id) else {
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
        p.retransmit_at = Some(now + REKEY_TIMEOUT + jitter);
        p.last_initiation_sent = Some(now);
        let old = p.pending.take();
        let path = p.shared.path.load();
        if let Some(old) = old {
            self.indices.remove(&old.local_index);
        }
        let Some(path) = path else {
            self.count(DropReason::NoEndpoint);
            return;
        };
        let wall = self.wall_at(now);
        let local_index = match self.new_index((id, IndexKind::Initiation)) {
            Ok(i) => i,
            Err(e) => return self.count(e.reason()),
        };
        let mut ephemeral = [0u8; 32];
        if let Err(e) = self.rng.fill(&mut ephemeral) {
            self.indices.remove(&local_index);
            return self.count(HandshakeError::Random(e).reason());
        }
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        let mut ts = Tai64N::from_system_time(wall);
        if let Some(last) = p.last_timestamp_sent
            && ts <= last
        {
            ts = last.next();
        }
        let Some(identity) = &self.identity else {
            self.indices.remove(&local_index);
            return;
        };
        let (msg, state) = match handshake::initiate(identity, &p.keys, local_index, ts, ephemeral)
        {
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
            path,
            bytes,
            len: INITIATION_LEN,
        });
    }

    // ----- inputs -----

    /// Handles a handshake message (type 1, 2 or 3) that came `from` (the
    /// sender's address and the local address it arrived on). Set
    /// `under_load` when the handshake queue is long: initiations and
    /// responses then need a valid MAC2, else a cookie reply goes out and
    /// [`HandshakeError::CookieRequired`] comes back. Errors are already
    /// counted in [`drop_counts`](Self::drop_counts). Follow with `poll_transmit`.
    pub fn handle_handshake(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: Path,
        datagram: &[u8],
        under_load: bool,
    ) -> Result<Handled, HandshakeError> {
        self.set_clock(now, wall);
        let res = match message_type(datagram) {
            Err(e) => Err(HandshakeError::Malformed(e)),
            Ok(MessageType::Initiation) => {
                self.on_initiation(now, wall, from, datagram, under_load)
            }
            Ok(MessageType::Response) => self.on_response(now, wall, from, datagram, under_load),
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
        from: Path,
        now: Instant,
        under_load: bool,
    ) -> Result<(), HandshakeError> {
        let Some(identity) = &self.identity else {
            return Err(HandshakeError::NoPrivateKey);
        };
        if !mac1_ok(datagram, mac1_at, &identity.mac1_key) {
            return Err(HandshakeError::Mac1);
        }
        let mac2_at = mac1_at + 16;
        if under_load
            && !self
                .checker
                .mac2_ok(datagram, mac2_at, from.remote, now, &mut self.rng)?
        {
            // One address gets only so many cookie replies too: it needs
            // one per two minutes, and whoever forges the address of a
            // victim reflects at most this rate at it.
            if !self.reply_limiter.allow(from.remote.ip(), now) {
                return Err(HandshakeError::RateLimited);
            }
            let mut mac1 = [0u8; 16];
            mac1.copy_from_slice(&datagram[mac1_at..mac2_at]);
            let reply = self.checker.reply(
                &identity.cookie_key,
                sender_index,
                &mac1,
                from.remote,
                now,
                &mut self.rng,
            )?;
            let mut bytes = [0u8; INITIATION_LEN];
            bytes[..64].copy_from_slice(&reply.emit());
            self.outgoing.push_back(Outgoing::Datagram {
                path: from,
                bytes,
                len: 64,
            });
            return Err(HandshakeError::CookieRequired);
        }
        // A valid cookie proves the address, not good faith: one address
        // still gets only so much Diffie-Hellman (wireguard-go, the kernel).
        if under_load && !self.limiter.allow(from.remote.ip(), now) {
            return Err(HandshakeError::RateLimited);
        }
        Ok(())
    }

    fn on_initiation(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: Path,
        datagram: &[u8],
        under_load: bool,
    ) -> Result<Handled, HandshakeError> {
        let msg = Initiation::parse(datagram)?;
        self.check_macs(
            datagram,
            INITIATION_MAC1_OFFSET,
            msg.sender_index,
            from,
            now,
            under_load,
        )?;
        let Some(identity) = &self.identity else {
            return Err(HandshakeError::NoPrivateKey);
        };
        let (consumed, _) = handshake::consume_initiation(identity, &msg, |k| {
            self.by_key
                .get(k)
                .and_then(|id| self.peers.get(*id))
                .map(|p| &p.keys)
        })?;
        let id = self
            .by_key
            .get(&consumed.initiator)
            .copied()
            .ok_or(HandshakeError::UnknownPeer(consumed.initiator))?;
        let p = self
            .peers
            .get(id)
            .ok_or(HandshakeError::UnknownPeer(consumed.initiator))?;
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
        let mut ephemeral = [0u8; 32];
        if let Err(e) = self.rng.fill(&mut ephemeral) {
            self.indices.remove(&local_index);
            return Err(HandshakeError::Random(e));
        }
        let Some(p) = self.peers.get_mut(id) else {
            self.indices.remove(&local_index);
            return Err(HandshakeError::UnknownPeer(consumed.initiator));
        };
        let (resp, session) = match handshake::respond(&consumed, &p.keys, local_index, ephemeral) {
            Ok(x) => x,
            Err(e) => {
                self.indices.remove(&local_index);
                return Err(e);
            }
        };
        p.last_timestamp_received = Some(consumed.timestamp);
        p.last_initiation_consumed = Some(now);
        p.shared.roam(from);
        let path = p.shared.path.load().unwrap_or(from);
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
            path,
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
        from: Path,
        datagram: &[u8],
        under_load: bool,
    ) -> Result<Handled, HandshakeError> {
        let msg = Response::parse(datagram)?;
        self.check_macs(
            datagram,
            RESPONSE_MAC1_OFFSET,
            msg.sender_index,
            from,
            now,
            under_load,
        )?;
        let Some(&(id, IndexKind::Initiation)) = self.indices.get(&msg.receiver_index) else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let Some(p) = self.peers.get_mut(id) else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let Some(pending) = p
            .pending
            .as_ref()
            .filter(|h| h.local_index == msg.receiver_index)
        else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let Some(identity) = &self.identity else {
            return Err(HandshakeError::NoPrivateKey);
        };
        let session = handshake::consume_response(&pending.state, identity, &p.keys, &msg)?;
        let local_index = pending.local_index;
        p.pending = None;
        p.attempt_started = None;
        p.retransmit_at = None;
        p.shared.roam(from);
        let kp = Arc::new(Keypair::new(
            id,
            &session,
            local_index,
            msg.sender_index,
            now,
            true,
        ));
        // §5.4.6 / wireguard-go: an unconfirmed "next" becomes "previous",
        // and the sessions it and the new one displace are forgotten.
        let displaced = match p.next.take() {
            Some(next) => [p.previous.replace(next), p.current.take()],
            None => {
                let cur = p.current.take();
                [std::mem::replace(&mut p.previous, cur), None]
            }
        };
        p.current = Some(kp);
        p.last_handshake = Some((now, wall));
        p.handshakes += 1;
        self.indices.insert(local_index, (id, IndexKind::Session));
        for k in displaced {
            self.forget(k);
        }
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
        let Some(p) = self.peers.get_mut(id) else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let Some(mac1) = p.last_mac1 else {
            return Err(HandshakeError::UnknownIndex(msg.receiver_index));
        };
        let cookie = ReceivedCookie::open(&p.keys.cookie_key, &msg, &mac1, now)
            .map_err(|_| HandshakeError::Decrypt("cookie"))?;
        p.cookie = Some(cookie);
        Ok(Handled::CookieStored(id))
    }

    fn queue_flush_or_keepalive(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        if p.staged.is_empty() {
            self.outgoing.push_back(Outgoing::Keepalive(id));
        } else if !p.flush_queued {
            p.flush_queued = true;
            self.outgoing.push_back(Outgoing::Flush(id));
        }
    }

    fn rotate_confirmed(&mut self, id: PeerId) {
        let Some(p) = self.peers.get_mut(id) else {
            return;
        };
        if !p.next.as_ref().is_some_and(|k| k.is_confirmed()) {
            return;
        }
        let next = p.next.take();
        let cur = std::mem::replace(&mut p.current, next);
        let old = std::mem::replace(&mut p.previous, cur);
        p.handshakes += 1;
        // The peer proved a session of its own making: an initiation of
        // ours still unanswered is moot, and retrying it would only make
        // one handshake more (the kernel's one handshake state per peer is
        // replaced the same way). Likewise a retry armed while waiting.
        let moot = p.pending.take();
        p.retransmit_at = None;
        p.attempt_started = None;
        let flush = !p.staged.is_empty() && !p.flush_queued;
        if flush {
            p.flush_queued = true;
        }
        self.forget(old);
        if let Some(m) = moot {
            self.indices.remove(&m.local_index);
        }
        self.publish();
        if flush {
            self.outgoing.push_back(Outgoing::Flush(id));
        }
    }

    /// Handles what a worker's `encapsulate`/`decapsulate` reported for
    /// `peer`. Follow with `poll_transmit`, `poll_snapshot`, `poll_timeout`.
    pub fn handle_events(&mut self, peer: PeerId, events: Events, now: Instant, wall: SystemTime) {
        self.set_clock(now, wall);
        if !self.peers.contains(peer) {
            return;
        }
        if events.contains(Events::TIMERS) {
            // A worker moved a deadline; it holds back further ones for a
            // while, so look again after that.
            self.recheck_at = Some(now + TIMER_RECHECK);
        }
        if events.contains(Events::CONFIRMED) {
            self.rotate_confirmed(peer);
        }
        if events.contains(Events::REKEY)
            && self.peers.get(peer).is_some_and(|p| p.pending.is_none())
        {
            self.start_handshake(peer, now, false);
        }
        // ENDPOINT_CHANGED changes only the path, which every reader loads;
        // the call itself is the wake-up.
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
        let p = self.peers.get_mut(id).ok_or(DropReason::NoRoute)?;
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

    // ----- timers -----

    /// Runs the timers that are due, each peer's in [`Timer::ALL`] order.
    /// Follow with `poll_transmit`, `poll_snapshot` and `poll_timeout`.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        self.set_clock(now, wall);
        if self.recheck_at.is_some_and(|t| t <= now) {
            self.recheck_at = None;
        }
        let mut changed = false;
        for slot in 0..self.peers.slots() {
            let Some(id) = self.peers.id_at(slot) else {
                continue;
            };
            for timer in Timer::ALL {
                let due = self
                    .peers
                    .get(id)
                    .and_then(|p| p.deadline(timer, self.epoch))
                    .is_some_and(|d| d <= now);
                if due {
                    changed |= self.fire(id, timer, now);
                }
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Fires one due timer; true if sessions changed (publish).
    fn fire(&mut self, id: PeerId, timer: Timer, now: Instant) -> bool {
        /// What a timer asks for, decided while the peer is borrowed.
        enum Then {
            Nothing,
            Handshake {
                retry: bool,
            },
            Keepalive,
            Forget([Option<Arc<Keypair>>; 3]),
            GiveUp {
                pending: Option<Pending>,
                staged: u64,
            },
        }
        let Some(p) = self.peers.get_mut(id) else {
            return false;
        };
        let then = match timer {
            Timer::ContactOnStart => {
                p.contact_on_start = false;
                if p.pending.is_none() {
                    Then::Handshake { retry: false }
                } else {
                    Then::Nothing
                }
            }
            Timer::Retransmit => {
                if p.attempt_started
                    .is_some_and(|s| now.saturating_duration_since(s) >= REKEY_ATTEMPT_TIME)
                {
                    // §6.4: give up, and the packets that waited for it.
                    p.retransmit_at = None;
                    p.attempt_started = None;
                    let staged = p.staged.len() as u64;
                    p.staged.clear();
                    Then::GiveUp {
                        pending: p.pending.take(),
                        staged,
                    }
                } else {
                    Then::Handshake { retry: true }
                }
            }
            Timer::NewHandshake => {
                // Taken by whoever clears it first: a worker hearing from
                // the peer meanwhile cancels the handshake.
                let t = p.shared.tx_unanswered.load(Relaxed);
                let taken = t != 0
                    && p.shared
                        .tx_unanswered
                        .compare_exchange(t, 0, Relaxed, Relaxed)
                        .is_ok();
                if taken && p.pending.is_none() {
                    Then::Handshake { retry: false }
                } else {
                    Then::Nothing
                }
            }
            Timer::Keepalive => {
                let t = p.shared.rx_unanswered.load(Relaxed);
                let taken = t != 0
                    && p.shared
                        .rx_unanswered
                        .compare_exchange(t, 0, Relaxed, Relaxed)
                        .is_ok();
                if taken && p.usable(now) {
                    Then::Keepalive
                } else {
                    Then::Nothing
                }
            }
            Timer::PersistentKeepalive => {
                p.shared
                    .last_activity
                    .store(stamp(self.epoch, now), Relaxed);
                if p.usable(now) {
                    Then::Keepalive
                } else if p.pending.is_none() {
                    Then::Handshake { retry: false }
                } else {
                    Then::Nothing
                }
            }
            Timer::ZeroKeys => Then::Forget(p.take_sessions()),
        };
        match then {
            Then::Nothing => false,
            Then::Handshake { retry } => {
                self.start_handshake(id, now, retry);
                false
            }
            Then::Keepalive => {
                self.outgoing.push_back(Outgoing::Keepalive(id));
                false
            }
            Then::Forget(sessions) => {
                for k in sessions {
                    self.forget(k);
                }
                true
            }
            Then::GiveUp { pending, staged } => {
                if let Some(old) = pending {
                    self.indices.remove(&old.local_index);
                }
                self.drops[DropReason::Expired.index()] += staged;
                false
            }
        }
    }

    /// When `handle_timeout` wants calling: the earliest deadline of any
    /// peer's timers ([`Peer::deadline`], the same computation that
    /// decides what fires), or a recheck after a timer event. None while
    /// there is nothing to wait for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|(_, p)| p.next_deadline(self.epoch))
            .chain(self.recheck_at)
            .min()
    }

    // ----- outputs -----

    /// The next datagram to send, written to `buf` (at least
    /// [`TRANSMIT_BUF_LEN`] bytes; a shorter buffer drops what does not fit,
    /// counted as malformed). Call until it returns None.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(out) = self.outgoing.pop_front() {
            match out {
                Outgoing::Datagram { path, bytes, len } => {
                    let Some(slot) = buf.get_mut(..len) else {
                        self.count(DropReason::Malformed);
                        continue;
                    };
                    slot.copy_from_slice(&bytes[..len]);
                    return Some(Transmit {
                        dst: path.remote,
                        src: path.local,
                        len,
                    });
                }
                Outgoing::Keepalive(id) => {
                    if let Some(t) = self.seal(id, now, buf, None) {
                        return Some(t);
                    }
                }
                Outgoing::Flush(id) => {
                    let Some(p) = self.peers.get_mut(id) else {
                        continue;
                    };
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

    /// Seals a staged packet (or a keepalive) with the current snapshot,
    /// counted in the control thread's traffic lane.
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
        if self.stale || self.allowed_dirty {
            self.publish();
        }
        match self
            .snapshot
            .encapsulate(id, self.control_lane(), now, buf, len)
        {
            Ok(sealed) => {
                if !sealed.events.is_empty() {
                    let wall = self.wall_at(now);
                    self.handle_events(id, sealed.events, now, wall);
                }
                Some(Transmit {
                    dst: sealed.dst,
                    src: sealed.src,
                    len: sealed.len,
                })
            }
            Err(EncapError::NoSession | EncapError::CounterExhausted) => {
                // The session went away since this was queued: keep the packet
                // staged for the next one.
                if let Some(pk) = packet
                    && let Some(p) = self.peers.get_mut(id)
                {
                    p.staged.push_front(pk);
                    if p.pending.is_none() {
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
