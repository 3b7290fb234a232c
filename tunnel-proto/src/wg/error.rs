//! Typed errors of the WireGuard side, each convertible to a [`DropReason`].

use std::net::SocketAddr;

use super::messages::MessageError;
use crate::keys::PublicKey;
use crate::{DropReason, RandomError};

/// Why a handshake message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Not a well-formed handshake message.
    #[error("malformed handshake message: {0}")]
    Malformed(#[from] MessageError),
    /// A transport data message was handed to the handshake path.
    #[error("transport data is not a handshake message")]
    NotHandshake,
    /// The interface has no private key yet: nobody can handshake with it.
    #[error("this interface has no private key yet")]
    NoPrivateKey,
    /// MAC1 does not match our public key: not meant for us, or forged.
    #[error("MAC1 check failed")]
    Mac1,
    /// Under load and without a valid MAC2: a cookie reply was queued instead.
    #[error("under load: MAC2 missing or stale, cookie reply sent")]
    CookieRequired,
    /// An AEAD field did not authenticate.
    #[error("handshake {0} failed to authenticate")]
    Decrypt(&'static str),
    /// The initiation named a static key that is not one of our peers.
    #[error("handshake from unknown peer {0}")]
    UnknownPeer(PublicKey),
    /// A key is a low-order point: the Diffie-Hellman result would be zero.
    #[error("Diffie-Hellman with a low-order point")]
    LowOrderPoint,
    /// The initiation's TAI64N timestamp is not newer than the last accepted one.
    #[error("initiation timestamp is not newer than the last one (replayed)")]
    StaleTimestamp,
    /// The peer sent initiations faster than the per-peer limit.
    #[error("handshake initiations from this peer above the rate limit")]
    RateLimited,
    /// A response or cookie reply for an index we do not have pending.
    #[error("no pending handshake with index {0:#010x}")]
    UnknownIndex(u32),
    /// The OS random number generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl HandshakeError {
    /// The counter this rejection increments.
    pub fn reason(&self) -> DropReason {
        match self {
            HandshakeError::Malformed(_) | HandshakeError::NotHandshake => DropReason::Malformed,
            HandshakeError::NoPrivateKey
            | HandshakeError::Mac1
            | HandshakeError::Decrypt(_)
            | HandshakeError::UnknownPeer(_)
            | HandshakeError::LowOrderPoint => DropReason::AuthFailed,
            HandshakeError::CookieRequired => DropReason::CookieRequired,
            HandshakeError::StaleTimestamp => DropReason::Replay,
            // A failed RNG means we cannot afford to answer now, as under a flood.
            HandshakeError::RateLimited | HandshakeError::Random(_) => DropReason::RateLimited,
            HandshakeError::UnknownIndex(_) => DropReason::UnknownIndex,
        }
    }
}

impl From<HandshakeError> for DropReason {
    fn from(e: HandshakeError) -> DropReason {
        e.reason()
    }
}

/// Why [`Snapshot::encapsulate`](super::Snapshot::encapsulate) did not seal a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncapError {
    /// No current session, or it expired: hand the packet to
    /// [`Tunnel::stage`](super::Tunnel::stage), which starts a handshake.
    #[error("no usable session with this peer: stage the packet")]
    NoSession,
    /// The peer has no endpoint yet (it never sent us anything and none is configured).
    #[error("peer has no known endpoint")]
    NoEndpoint,
    /// The session's send counter reached REJECT_AFTER_MESSAGES: stage the
    /// packet; a rekey is already under way.
    #[error("session send counter exhausted")]
    CounterExhausted,
    /// `buf` cannot hold header, padded payload and tag.
    #[error("buffer of {have} bytes cannot hold {need} (headroom, padded payload, tag)")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
    /// Not a peer of this snapshot.
    #[error("peer id out of range for this snapshot")]
    UnknownPeer,
}

impl From<EncapError> for DropReason {
    fn from(e: EncapError) -> DropReason {
        match e {
            // Only a drop if the caller discards the packet instead of staging it.
            EncapError::NoSession | EncapError::CounterExhausted => DropReason::Expired,
            EncapError::NoEndpoint => DropReason::NoEndpoint,
            EncapError::BufferTooSmall { .. } => DropReason::Malformed,
            EncapError::UnknownPeer => DropReason::NoRoute,
        }
    }
}

/// Why [`Tunnel::new`](super::Tunnel::new) or a change to a running
/// tunnel (`add_peer`, `set_*`, `remove_peer`) was refused. A refused
/// change changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two peers with the same public key.
    #[error("peer {0} is configured twice")]
    DuplicatePeer(PublicKey),
    /// A peer with the interface's own public key.
    #[error("peer {0} is this interface's own public key")]
    OwnKey(PublicKey),
    /// A peer key that is a low-order point.
    #[error("peer {0} has an invalid (low-order) public key")]
    InvalidPeerKey(PublicKey),
    /// The same AllowedIPs prefix on two peers.
    #[error("allowed IP {prefix} is given to both peer {first} and peer {second}")]
    DuplicateAllowedIp {
        /// The prefix.
        prefix: super::IpPrefix,
        /// The first peer's key.
        first: PublicKey,
        /// The second peer's key.
        second: PublicKey,
    },
    /// More peers than a [`PeerId`](super::PeerId) can name.
    #[error("{0} peers is more than the supported {max}", max = u16::MAX)]
    TooManyPeers(usize),
    /// The peer id names no peer (it was removed, or never existed).
    #[error("{0} is not a peer of this interface (removed?)")]
    UnknownPeer(super::PeerId),
    /// An endpoint that cannot be sent to.
    #[error("peer {peer} has an unusable endpoint {endpoint}")]
    BadEndpoint {
        /// The peer's key.
        peer: PublicKey,
        /// The endpoint.
        endpoint: SocketAddr,
    },
}
