//! Measurement for ringtun: criterion micro-benchmarks (`cargo bench -p bench`)
//! and the latency probe used by `cargo xtask bench`. Issues 3 and 6 fill it.
