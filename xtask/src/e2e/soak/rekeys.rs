//! Rekeys as the soak sees them: each gateway's count of completed
//! handshakes with its peer (`ringtun show`), polled every second; a poll
//! at which either count rose is a rekey, unless one was seen within the
//! last few seconds (both gateways count the same handshake, maybe a poll
//! apart, and two initiations that cross make two handshakes at once).

use std::time::Duration;

/// Rises of the counts this close together are one rekey.
pub const SAME_REKEY: Duration = Duration::from_secs(3);

/// One rekey.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rekey {
    /// The poll before the one that saw it (since the run started): it
    /// happened after this...
    pub after: Duration,
    /// ...and by this poll.
    pub by: Duration,
    /// Each gateway's handshake count once it was seen (A, B).
    pub handshakes: [u64; 2],
}

/// The rekeys seen so far.
#[derive(Clone, Debug)]
pub struct RekeyLog {
    counts: [u64; 2],
    last_poll: Duration,
    rekeys: Vec<Rekey>,
}

impl RekeyLog {
    /// Starts from each gateway's count before the run (A, B).
    pub fn new(counts: [u64; 2]) -> RekeyLog {
        RekeyLog {
            counts,
            last_poll: Duration::ZERO,
            rekeys: Vec::new(),
        }
    }

    /// A poll at `at`: each gateway's count, `None` for one that did not
    /// answer (its count is taken as unchanged).
    pub fn observe(&mut self, at: Duration, counts: [Option<u64>; 2]) {
        let mut rose = false;
        for (known, seen) in self.counts.iter_mut().zip(counts) {
            if let Some(c) = seen {
                rose |= c > *known;
                *known = c;
            }
        }
        if rose {
            match self.rekeys.last_mut() {
                Some(r) if at.saturating_sub(r.by) <= SAME_REKEY => {
                    r.by = at;
                    r.handshakes = self.counts;
                }
                _ => self.rekeys.push(Rekey {
                    after: self.last_poll,
                    by: at,
                    handshakes: self.counts,
                }),
            }
        }
        self.last_poll = at;
    }

    /// The rekeys, in order.
    pub fn rekeys(&self) -> &[Rekey] {
        &self.rekeys
    }

    /// The latest counts (A, B).
    pub fn counts(&self) -> [u64; 2] {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn both_gateways_counting_one_handshake_a_poll_apart_is_one_rekey() {
        let mut log = RekeyLog::new([1, 1]);
        log.observe(s(1), [Some(1), Some(1)]);
        log.observe(s(2), [Some(2), Some(1)]);
        log.observe(s(3), [Some(2), Some(2)]);
        log.observe(s(4), [Some(2), Some(2)]);
        assert_eq!(
            log.rekeys(),
            [Rekey {
                after: s(1),
                by: s(3),
                handshakes: [2, 2]
            }]
        );
    }

    #[test]
    fn rekeys_minutes_apart_are_each_counted() {
        let mut log = RekeyLog::new([2, 2]);
        for t in 1..=300 {
            let n = 2 + t / 121;
            log.observe(s(t), [Some(n), Some(n)]);
        }
        let at: Vec<_> = log.rekeys().iter().map(|r| r.by).collect();
        assert_eq!(at, [s(121), s(242)]);
        assert_eq!(log.counts(), [4, 4]);
    }

    #[test]
    fn a_gateway_that_did_not_answer_keeps_its_count() {
        let mut log = RekeyLog::new([1, 1]);
        log.observe(s(1), [None, Some(1)]);
        log.observe(s(2), [Some(1), None]);
        assert!(log.rekeys().is_empty());
        log.observe(s(10), [None, Some(2)]);
        assert_eq!(log.rekeys().len(), 1);
        assert_eq!(log.counts(), [1, 2]);
    }
}
