//! The ringtun data plane: TUN/TAP queues, UDP sockets, one io_uring per
//! pinned worker, registered buffers, batching and offloads, plus the
//! control socket and configuration of the `ringtun` daemon.

pub mod bufring;
pub mod cmsg;
pub mod config;
pub mod control;
pub mod counters;
pub mod daemon;
pub mod handoff;
pub mod load;
pub mod metrics;
pub mod mode;
pub mod notify;
pub mod offload;
pub mod privilege;
pub mod routes;
pub mod slab;
pub mod status;
pub mod steering;
pub mod tap_mac;
pub mod tun;
pub mod uapi;
pub mod udp;
pub mod underlay;
pub mod vxlan_mode;
pub mod wg_control;
pub mod wg_mode;
pub mod worker;
