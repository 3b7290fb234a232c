//! What a [`Tunnel`](super::Tunnel) is built from: the interface's key and its peers.

use std::net::SocketAddr;
use std::time::Duration;

use super::allowed_ips::IpPrefix;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::random::RngSeed;

/// Packets staged per peer while a handshake is under way (wireguard-go's
/// QueueStagedSize).
pub const DEFAULT_MAX_STAGED: usize = 128;

/// One `[Peer]`.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// The peer's static public key: its identity.
    pub public_key: PublicKey,
    /// Mixed into the handshake when set (post-quantum hedge, §5.2).
    pub preshared_key: Option<PresharedKey>,
    /// Inner addresses routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpPrefix>,
    /// Where to send until the peer tells us otherwise.
    pub endpoint: Option<SocketAddr>,
    /// Send a keepalive after this much silence (`PersistentKeepalive`; None = off).
    pub persistent_keepalive: Option<Duration>,
    /// Keep `endpoint` even when authenticated packets arrive from elsewhere
    /// (static site-to-site links). A pinned peer without an endpoint still
    /// learns its first one.
    pub pin_endpoint: bool,
    /// The peer is a ringtun that spreads its inner flows over source
    /// ports too: send each inner flow from a port of its own (picked by
    /// its hash), and let data from the peer's other ports move only the
    /// endpoint's address, never its port (handshakes, which leave from
    /// the peer's listen port, set both).
    pub spread_flows: bool,
}

impl PeerConfig {
    /// A peer with only its key set.
    pub fn new(public_key: PublicKey) -> PeerConfig {
        PeerConfig {
            public_key,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
            pin_endpoint: false,
            spread_flows: false,
        }
    }
}

/// An interface: its private key and peers.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// The interface's static private key; `None` for an interface started
    /// bare, that handshakes only once one is set.
    pub private_key: Option<PrivateKey>,
    /// The peers; each gets a [`PeerId`](super::PeerId) in this order.
    pub peers: Vec<PeerConfig>,
    /// Inner MTU: padding never makes a packet longer than this (§5.4.6).
    pub mtu: Option<u16>,
    /// Bound of each peer's staging queue.
    pub max_staged: usize,
    /// Send an initiation to every peer with an endpoint on start, before
    /// any traffic. wg does not (a peer stays silent until it has
    /// something to send); a site-to-site gateway should: when it restarts,
    /// the other side's packets name a session it no longer has, and
    /// without this nothing would be restored until that side's 15 s
    /// "sent but heard nothing" timer (§6.2) fired.
    pub handshake_on_start: bool,
    /// Traffic counter lanes per peer: one per writing thread. The last
    /// is the control plane's own (staged packets, keepalives); the
    /// data plane's workers use the others, each its own.
    pub traffic_lanes: usize,
    /// Where random choices come from: `None` for the operating system, a
    /// seed for a run that replays exactly (simulations, tests).
    pub rng_seed: Option<RngSeed>,
}

impl TunnelConfig {
    /// An interface with no peers yet.
    pub fn new(private_key: PrivateKey) -> TunnelConfig {
        TunnelConfig {
            private_key: Some(private_key),
            peers: Vec::new(),
            mtu: None,
            max_staged: DEFAULT_MAX_STAGED,
            handshake_on_start: false,
            traffic_lanes: 1,
            rng_seed: None,
        }
    }
}
