//! Sans-IO WireGuard (L3) and VXLAN (L2) for ringtun.
//!
//! This crate holds everything about the bytes on the wire and the protocol's
//! state, and nothing that touches a socket, a clock or a thread: time comes
//! in as arguments (`now: Instant` for timers, `wall: SystemTime` for TAI64N),
//! datagrams come in as `&[u8]`, and what to send comes out of `poll_*` calls.

mod drop_reason;
mod keys;
mod random;
pub mod vxlan;

pub use drop_reason::DropReason;
pub use keys::{KEY_BASE64_LEN, KEY_LEN, KeyError, PresharedKey, PrivateKey, PublicKey};
pub use random::RandomError;
