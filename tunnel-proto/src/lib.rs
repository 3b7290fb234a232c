//! Sans-IO WireGuard (L3) and VXLAN (L2) for ringtun.
//!
//! This crate will hold everything about the bytes on the wire and the
//! protocol's state, and nothing that touches a socket, a clock or a thread:
//! message formats, the Noise_IKpsk2 handshake, sessions and their timers, the
//! replay window, the AllowedIPs table and the VXLAN header. Issue 3 fills it.
