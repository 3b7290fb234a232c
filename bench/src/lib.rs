//! Measurement for ringtun: criterion micro-benchmarks (`cargo bench -p
//! bench`), the fixtures they share, and the UDP ping-pong latency probe
//! (`rt-pingpong`) that `cargo xtask bench` runs between two sites.

pub mod fixtures;
pub mod probe;
