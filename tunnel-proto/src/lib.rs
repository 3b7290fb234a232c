//! Sans-IO WireGuard (L3) and VXLAN (L2) for ringtun.
//!
//! This crate holds everything about the bytes on the wire and the protocol's
//! state, and nothing that touches a socket, a clock or a thread: time comes
//! in as arguments (`now: Instant` for timers, `wall: SystemTime` for TAI64N),
//! datagrams come in as `&[u8]`, and what to send comes out of `poll_*` calls.
//!
//! - [`wg`]: WireGuard. The control plane [`wg::Tunnel`] (one per interface,
//!   one thread) holds the peer table, runs handshakes and timers and
//!   publishes immutable [`wg::Snapshot`]s that any number of workers use
//!   to seal and open packets in place, without locks on the send path.
//!   Deterministic: time comes in as arguments, randomness from an [`Rng`]
//!   its configuration names (a seed replays a run exactly).
//! - [`PeerTable`] and [`PeerId`]: peers by stable id (slot and generation).
//! - [`Path`] (a peer's endpoint and the local address replies leave from,
//!   shared lock-free as an [`AtomicPath`]) and [`PeerTraffic`] (a peer's
//!   traffic counters, one lane per writing thread): what workers share
//!   about a peer in both modes.
//! - [`vxlan`]: the VXLAN header and the lock-free MAC learning table.
//! - [`DropReason`]: why a packet was dropped, shared with the data plane's counters.
//! - Keys in `wg`'s base64 format: [`PrivateKey`], [`PublicKey`], [`PresharedKey`].
//!
//! # Why the handshake does not use snow
//!
//! The handshake is written directly over x25519-dalek, BLAKE2s and
//! ChaCha20-Poly1305 rather than through `snow`. WireGuard fixes one pattern
//! and two messages, so the construction is a page of code that mirrors the
//! whitepaper line by line. Done by hand, the static-static Diffie-Hellman
//! and the initial hashes are precomputed per peer (one X25519 fewer per
//! handshake), every intermediate lives in zeroized fixed-size arrays (no
//! heap state per handshake, which also keeps the fuzzed responder simple),
//! the initiator's identity is decrypted before that peer's PSK is chosen
//! without snow's build-then-`set_psk` dance or its "risky" raw-split API, and
//! each failure gets a precise error. The in-memory interop test against
//! boringtun proves the bytes. ChaCha20-Poly1305 comes from aws-lc-rs
//! (`LessSafeKey`, in place): as fast as ring's (the same assembly), and
//! its key schedule lives in one C allocation that aws-lc wipes when it
//! is freed, so a session's keys are really gone when the session is
//! (ring keeps them inline in a Rust value that nothing wipes, and every
//! move of it leaves a copy behind). The cookie reply's
//! XChaCha20-Poly1305 comes from the `chacha20poly1305` crate.

mod drop_reason;
mod keys;
mod path;
mod peer_table;
mod random;
mod traffic;
pub mod vxlan;
pub mod wg;

pub use drop_reason::DropReason;
pub use keys::{KEY_BASE64_LEN, KEY_LEN, KeyError, PresharedKey, PrivateKey, PublicKey};
pub use path::{AtomicPath, Path};
pub use peer_table::{PeerId, PeerTable};
pub use random::{RandomError, Rng, RngSeed};
pub use traffic::{PeerTraffic, Traffic, TrafficLane};
