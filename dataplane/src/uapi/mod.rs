//! The WireGuard cross-platform configuration protocol ("UAPI"), as `wg`,
//! `wg-quick` and wgctrl-based tools speak it to userspace
//! implementations: [`protocol`] (the bytes, pure), [`socket`] (where the
//! socket lives and who may use it), [`server`] (the socket's own thread)
//! and [`client`] (what `ringtun show` and `ringtun down` use).

pub mod client;
pub mod protocol;
pub mod server;
pub mod socket;
