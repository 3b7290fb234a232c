//! Where the protocol's random choices come from: the operating system's
//! generator in production, or a ChaCha20 stream from a seed the caller
//! gives, so that a simulation in virtual time replays exactly (quinn-proto's
//! `rng_seed`). Every random choice of a [`Tunnel`](crate::wg::Tunnel) —
//! receiver indices, ephemeral keys, cookie secrets and nonces, retry
//! jitter — goes through one [`Rng`].

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::Zeroize;

/// The operating system refused to provide random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(getrandom::Error);

/// Fills `buf` from the OS CSPRNG (`getrandom(2)`: one syscall per call).
/// For key generation outside a tunnel (`ringtun genkey`).
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(RandomError)
}

/// A seed for a deterministic [`Rng`]. `Debug` does not show it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RngSeed(pub [u8; 32]);

impl std::fmt::Debug for RngSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RngSeed(..)")
    }
}

/// A source of random bytes: the OS, or a seeded ChaCha20 keystream.
pub struct Rng(Source);

enum Source {
    Os,
    Seeded(Box<ChaCha20>),
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Source::Os => "Rng(os)",
            Source::Seeded(_) => "Rng(seeded)",
        })
    }
}

impl Rng {
    /// The operating system's generator.
    pub fn os() -> Rng {
        Rng(Source::Os)
    }

    /// A deterministic stream: the same seed gives the same bytes, in the
    /// same order, on every run. For tests and simulations only.
    pub fn from_seed(seed: RngSeed) -> Rng {
        let mut key = seed.0;
        let cipher = ChaCha20::new(&key.into(), &[0u8; 12].into());
        key.zeroize();
        Rng(Source::Seeded(Box::new(cipher)))
    }

    /// From an optional seed: seeded if given, else the OS.
    pub fn new(seed: Option<RngSeed>) -> Rng {
        seed.map_or_else(Rng::os, Rng::from_seed)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        match &mut self.0 {
            Source::Os => fill(buf),
            Source::Seeded(c) => {
                buf.fill(0);
                c.apply_keystream(buf);
                Ok(())
            }
        }
    }

    /// A random `u32`.
    pub fn u32(&mut self) -> Result<u32, RandomError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_seed_replays_and_another_seed_differs() {
        let draw = |seed: u8| {
            let mut r = Rng::from_seed(RngSeed([seed; 32]));
            let mut a = [0u8; 40];
            r.fill(&mut a).unwrap();
            (a, r.u32().unwrap())
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let (bytes, _) = draw(1);
        assert!(bytes.iter().any(|&b| b != 0), "a keystream, not zeros");
    }

    #[test]
    fn the_os_source_gives_different_draws() {
        let mut r = Rng::os();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        r.fill(&mut a).unwrap();
        r.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
