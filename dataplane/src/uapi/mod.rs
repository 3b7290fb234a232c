//! The WireGuard cross-platform configuration protocol ("UAPI"), the text
//! protocol `wg`, `wg-quick`, wgctrl-go and friends speak over
//! `/var/run/wireguard/IFACE.sock`, so that stock tools configure and read
//! ringtun as they do wireguard-go.
//!
//! - [`protocol`]: the protocol itself, pure: bytes in, typed requests out,
//!   typed answers in, bytes out; no sockets, no threads, no clock.
//! - [`socket`]: where the socket lives and who may use it.
//! - [`server`]: the socket's own thread, which hands whole requests to the
//!   control thread.
//! - [`client`]: what `ringtun show`, `down` and `reload` use.

pub mod client;
pub mod protocol;
pub mod server;
pub mod socket;
