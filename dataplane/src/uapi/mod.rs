//! The WireGuard cross-platform configuration protocol ("UAPI"), the text
//! protocol `wg`, wgctrl-go and friends speak over
//! `/var/run/wireguard/IFACE.sock`, so that stock tools configure and read
//! ringtun as they do wireguard-go.
//!
//! [`protocol`] is the protocol itself, pure: bytes in, typed requests out,
//! typed answers in, bytes out; no sockets, no threads, no clock.

pub mod protocol;
