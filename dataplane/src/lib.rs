//! The ringtun data plane: TUN/TAP queues, UDP sockets, one io_uring per
//! pinned worker, registered buffers, batching and offloads, plus the
//! control socket and configuration of the `ringtun` daemon. Issue 4 fills it.
