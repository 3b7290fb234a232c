//! The receive counter's sliding window (whitepaper §5.4.6, RFC 6479).
//!
//! A ring of 64-bit blocks: advancing the window clears whole blocks instead
//! of shifting bits, so the cost of a jump is bounded by the ring size and an
//! in-order packet costs one load, one compare and one store. The window is
//! 8192 counters, like the kernel's, rather than boringtun's 1024: several
//! workers opening one peer's packets in parallel reorder them by far more
//! than a thousand.

/// Number of counters behind the highest one that are still accepted.
pub const REPLAY_WINDOW: u64 = 8192;

const BLOCK_BITS: u64 = 64;
/// One block more than the window needs, so the block holding the oldest
/// acceptable counter never shares a ring slot with the newest.
const RING_BLOCKS: usize = (REPLAY_WINDOW / BLOCK_BITS) as usize + 1;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The counter was accepted before.
    #[error("counter {0} was already received")]
    Duplicate(u64),
    /// The counter is older than the window.
    #[error("counter {0} is older than the replay window")]
    TooOld(u64),
}

/// An RFC 6479 anti-replay bitmap over the last [`REPLAY_WINDOW`] counters.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest accepted counter + 1 (0: nothing accepted yet).
    next: u64,
    ring: [u64; RING_BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            next: 0,
            ring: [0; RING_BLOCKS],
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest accepted counter + 1; 0 before the first.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether a counter this old is refused whatever the bitmap says: the
    /// cheap check before decryption, from `next` alone.
    #[inline]
    pub fn too_old(next: u64, counter: u64) -> bool {
        counter < next && next - 1 - counter >= REPLAY_WINDOW
    }

    #[inline]
    fn slot(counter: u64) -> (usize, u64) {
        let block = (counter / BLOCK_BITS) as usize % RING_BLOCKS;
        (block, 1u64 << (counter % BLOCK_BITS))
    }

    /// Checks without recording (for a packet not yet authenticated).
    #[inline]
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter >= self.next {
            return Ok(());
        }
        if Self::too_old(self.next, counter) {
            return Err(ReplayError::TooOld(counter));
        }
        let (block, bit) = Self::slot(counter);
        if self.ring[block] & bit != 0 {
            return Err(ReplayError::Duplicate(counter));
        }
        Ok(())
    }

    /// Checks and records an authenticated packet's counter.
    #[inline]
    pub fn update(&mut self, counter: u64) -> Result<(), ReplayError> {
        if counter >= self.next {
            // Clear the blocks the window slides over; a jump of more than the
            // ring clears it all.
            let top = if self.next == 0 {
                0
            } else {
                (self.next - 1) / BLOCK_BITS
            };
            let new_top = counter / BLOCK_BITS;
            let fresh = (new_top - top).min(RING_BLOCKS as u64) as usize;
            let first = (top as usize) % RING_BLOCKS;
            for i in 1..=fresh {
                self.ring[(first + i) % RING_BLOCKS] = 0;
            }
            self.next = counter + 1;
        } else if Self::too_old(self.next, counter) {
            return Err(ReplayError::TooOld(counter));
        }
        let (block, bit) = Self::slot(counter);
        if self.ring[block] & bit != 0 {
            return Err(ReplayError::Duplicate(counter));
        }
        self.ring[block] |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.update(0), Ok(()));
        assert_eq!(w.update(0), Err(ReplayError::Duplicate(0)));
        assert_eq!(w.update(2), Ok(()));
        assert_eq!(w.check(1), Ok(()));
        assert_eq!(w.update(1), Ok(()));
        assert_eq!(w.check(1), Err(ReplayError::Duplicate(1)));
        assert_eq!(w.next(), 3);
    }

    #[test]
    fn window_edge_is_exactly_8192() {
        let mut w = ReplayWindow::new();
        w.update(10_000).unwrap();
        // 10_000 - 8191 is the oldest acceptable counter.
        assert_eq!(w.update(10_000 - 8191), Ok(()));
        assert_eq!(
            w.update(10_000 - 8192),
            Err(ReplayError::TooOld(10_000 - 8192))
        );
        assert!(ReplayWindow::too_old(10_001, 10_000 - 8192));
        assert!(!ReplayWindow::too_old(10_001, 10_000 - 8191));
    }

    #[test]
    fn a_large_jump_forgets_old_bits() {
        let mut w = ReplayWindow::new();
        for c in 0..200 {
            w.update(c).unwrap();
        }
        // Jump so far that every ring slot is reused.
        let far = 200 + 64 * RING_BLOCKS as u64 * 3;
        w.update(far).unwrap();
        // Counters whose ring slots held old bits are still new.
        for c in (far - 100)..far {
            assert_eq!(w.update(c), Ok(()), "counter {c}");
        }
        assert_eq!(w.update(far - 100), Err(ReplayError::Duplicate(far - 100)));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        /// The obvious model: a set of everything accepted, and the window rule.
        #[derive(Default)]
        struct Model {
            seen: BTreeSet<u64>,
            highest: Option<u64>,
        }

        impl Model {
            fn update(&mut self, c: u64) -> bool {
                if let Some(h) = self.highest
                    && c < h
                    && h - c >= REPLAY_WINDOW
                {
                    return false;
                }
                if !self.seen.insert(c) {
                    return false;
                }
                self.highest = Some(self.highest.map_or(c, |h| h.max(c)));
                true
            }
        }

        fn counters() -> impl Strategy<Value = Vec<u64>> {
            // Walk forward with jitter: small steps, occasional big jumps and
            // reorders across the window's edge.
            proptest::collection::vec(
                prop_oneof![
                    8 => -20i64..40,
                    2 => -9000i64..-8000,
                    1 => 8000i64..20000,
                    1 => -100_000i64..100_000,
                ],
                1..400,
            )
            .prop_map(|steps| {
                let mut at: i64 = 50_000;
                steps
                    .into_iter()
                    .map(|s| {
                        at = (at + s).max(0);
                        at as u64
                    })
                    .collect()
            })
        }

        proptest! {
            #[test]
            fn matches_the_reference_model(cs in counters()) {
                let mut w = ReplayWindow::new();
                let mut m = Model::default();
                for c in cs {
                    let checked = w.check(c).is_ok();
                    let got = w.update(c).is_ok();
                    prop_assert_eq!(checked, got, "check and update disagree on {}", c);
                    prop_assert_eq!(got, m.update(c), "counter {}", c);
                }
            }
        }
    }
}
