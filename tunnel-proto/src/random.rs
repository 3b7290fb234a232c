//! The operating system's random number generator, with a typed error.

/// The operating system refused to provide random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(getrandom::Error);

/// Fills `buf` from the OS CSPRNG (`getrandom(2)`: one syscall per call).
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

/// A random `u32` (receiver indices, jitter).
pub(crate) fn u32() -> Result<u32, RandomError> {
    getrandom::u32().map_err(RandomError)
}
