//! WireGuard (whitepaper: <https://www.wireguard.com/papers/wireguard.pdf>):
//! messages, the Noise_IKpsk2 handshake, cookies, sessions, replay window,
//! timers, AllowedIPs, the control plane [`Tunnel`] and the workers'
//! [`Snapshot`].
//!
//! # How a data plane drives it
//!
//! ```text
//! control thread (owns the Tunnel)             worker k (holds Arc<Snapshot>, swapped by arc-swap)
//! ---------------------------------            ----------------------------------------------------
//! Tunnel::new(config, now, wall)               TUN read:  peer = dp.route(destination(pkt))
//! snapshot = poll_snapshot() -> swap                      dp.encapsulate(peer, lane, now, buf, len)
//! loop:                                                     Ok(s)  -> send buf[..s.len] to s.dst from s.src
//!   handshake datagram from a worker ->                     Err(NoSession | CounterExhausted)
//!     handle_handshake(now, wall, from, d, load)               -> copy to control: stage(peer, pkt)
//!   staged packet -> stage(peer, pkt, ...)        UDP read: message_type(d)
//!   events -> handle_events(peer, ev, ...)          Data -> dp.decapsulate(now, lane, from, buf)
//!   add_peer / set_* / remove_peer                          Ok(o) -> deliver buf[o.payload] unless keepalive
//!   deadline -> handle_timeout(now, wall)                   Err(reason) -> count reason
//!   then: while poll_transmit(now, buf) send      1..=3 -> screen_handshake, copy to control
//!         poll_snapshot() -> swap for workers   any non-empty `events` -> forward (peer, events)
//!         sleep until poll_timeout()
//! ```
//!
//! `from` is a [`Path`](crate::Path): the sender and the local address the
//! datagram arrived on. `lane` is the worker's traffic lane in every peer's
//! counters.
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
mod ratelimit;
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
