//! The ringtun data plane: TUN/TAP queues, UDP sockets, one io_uring per
//! pinned worker, registered buffers, batching and offloads, plus the
//! control socket and configuration of the `ringtun` daemon.

pub mod config;
pub mod offload;
