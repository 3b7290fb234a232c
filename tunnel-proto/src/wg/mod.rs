//! WireGuard (whitepaper: <https://www.wireguard.com/papers/wireguard.pdf>):
//! messages, the Noise_IKpsk2 handshake, cookies, sessions, replay window,
//! timers, AllowedIPs, the control plane [`Tunnel`] and the workers'
//! [`DataPlane`] snapshot.
//!
//! # How a data plane drives it
//!
//! ```text
//! control thread (owns the Tunnel)          worker k (holds Arc<DataPlane>, swapped by arc-swap)
//! ---------------------------------          ----------------------------------------------------
//! Tunnel::new(config, now, wall)             TUN read:  peer = dp.route(destination(pkt))
//! snapshot = poll_snapshot() -> swap                    dp.encapsulate(peer, now, buf, len)
//! loop:                                                   Ok(sealed)  -> send buf[..len] to sealed.dst
//!   handshake datagram from a worker ->                   Err(NoSession | CounterExhausted)
//!     handle_handshake(now, wall, src, d, load)              -> copy to control: stage(peer, pkt)
//!   staged packet -> stage(peer, pkt, ...)      UDP read: message_type(d)
//!   events -> handle_events(peer, ev, ...)        Data -> dp.decapsulate(now, src, buf)
//!   deadline -> handle_timeout(now, wall)                   Ok(o) -> deliver buf[o.payload] unless keepalive
//!   then: while poll_transmit(now, buf) send               Err(reason) -> count reason
//!         poll_snapshot() -> swap for workers     1..=3 -> copy to control (handle_handshake)
//!         sleep until poll_timeout()            any non-empty `events` -> forward (peer, events)
//! ```

mod allowed_ips;
mod config;
mod cookie;
mod crypto;
mod error;
mod handshake;
mod ip;
mod keypair;
pub mod messages;
mod peer;
mod replay;
mod snapshot;
mod tai64n;
pub mod timers;
mod tunnel;

pub use crate::peer_table::PeerId;
pub use allowed_ips::{AllowedIps, DuplicatePrefix, IpPrefix, PrefixError};
pub use config::{DEFAULT_MAX_STAGED, PeerConfig, TunnelConfig};
pub use error::{ConfigError, EncapError, HandshakeError};
pub use ip::{InnerHeader, destination, inner_header};
pub use messages::{MessageError, MessageType, message_type};
pub use replay::{REPLAY_WINDOW, ReplayError, ReplayWindow};
pub use snapshot::{Events, HEADROOM, Opened, Sealed, Snapshot, TAILROOM};
pub use tai64n::Tai64N;
pub use tunnel::{
    Handled, MAX_PACKET_LEN, MAX_PEERS, PeerStatus, TRANSMIT_BUF_LEN, Transmit, Tunnel,
};
