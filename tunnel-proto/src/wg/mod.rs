//! WireGuard (whitepaper: <https://www.wireguard.com/papers/wireguard.pdf>):
//! messages, the Noise_IKpsk2 handshake, cookies, sessions, replay window,
//! timers, AllowedIPs, the control plane [`Tunnel`] and the workers'
//! [`DataPlane`] snapshot.

mod allowed_ips;
mod config;
mod cookie;
mod crypto;
mod dataplane;
mod endpoint;
mod error;
mod handshake;
mod ip;
mod keypair;
pub mod messages;
mod replay;
mod tai64n;
pub mod timers;
mod tunnel;

pub use allowed_ips::{AllowedIps, DuplicatePrefix, IpPrefix, PrefixError};
pub use config::{DEFAULT_MAX_STAGED, PeerConfig, TunnelConfig};
pub use dataplane::{DataPlane, Events, HEADROOM, Opened, PeerId, Sealed, TAILROOM};
pub use error::{ConfigError, EncapError, HandshakeError};
pub use ip::{InnerHeader, destination, inner_header};
pub use messages::{MessageError, MessageType, message_type};
pub use replay::{REPLAY_WINDOW, ReplayError, ReplayWindow};
pub use tai64n::Tai64N;
pub use tunnel::{Handled, MAX_PACKET_LEN, PeerStatus, TRANSMIT_BUF_LEN, Transmit, Tunnel};
