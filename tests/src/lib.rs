//! Shared helpers for ringtun's cross-crate integration tests: unique
//! namespace names, cleanup guards, and the root/CI skip rule. The tests
//! themselves live in `tests/tests/`.
