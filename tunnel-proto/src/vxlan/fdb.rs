//! The forwarding database: which remote VTEP a MAC address sits behind.
//!
//! Workers learn source MACs from received frames and look up destination
//! MACs for frames to send, concurrently and without locks. The table is an
//! open-addressed array of slots fixed at construction: each slot is one
//! `AtomicU64` packing MAC (48 bits) and VTEP index (16 bits) plus an
//! `AtomicU64` "last seen" stamp. Entries are never removed, only aged out and
//! then reclaimed, so a probe can stop at the first empty slot.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far a key may sit from its home slot. A full probe run means the
/// neighbourhood is full: learning fails and the frame is flooded instead.
const MAX_PROBE: usize = 16;

/// "Last seen" is rewritten at most this often per entry, so a steady flow
/// from one MAC does not write a shared cache line on every frame.
const REFRESH_STEP_MS: u64 = 1000;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The destination MAC of an Ethernet frame, if it is long enough.
    pub fn dst_of(frame: &[u8]) -> Option<MacAddr> {
        frame.get(0..6).and_then(|b| b.try_into().ok()).map(MacAddr)
    }

    /// The source MAC of an Ethernet frame, if it is long enough.
    pub fn src_of(frame: &[u8]) -> Option<MacAddr> {
        frame
            .get(6..12)
            .and_then(|b| b.try_into().ok())
            .map(MacAddr)
    }

    /// Group address (multicast or broadcast): the I/G bit is set. Frames to
    /// such an address are replicated to every VTEP.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What [`Fdb::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new entry.
    New,
    /// The MAC was known behind this VTEP already.
    Known,
    /// The MAC was known behind another VTEP and moved.
    Moved,
    /// Group or all-zero source address: never learned.
    Ignored,
    /// No free or expired slot near the MAC's home: not learned (frames to it flood).
    Full,
}

#[derive(Default)]
struct Slot {
    /// MAC << 16 | VTEP index; 0 = never used.
    entry: AtomicU64,
    /// Milliseconds since the table's epoch when the entry was last seen.
    seen_ms: AtomicU64,
}

/// A fixed-capacity, lock-free MAC → VTEP-index table with ageing.
pub struct Fdb {
    slots: Box<[Slot]>,
    mask: usize,
    seed: u64,
    epoch: Instant,
    ageing_ms: u64,
}

impl fmt::Debug for Fdb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fdb")
            .field("capacity", &self.slots.len())
            .field("ageing_ms", &self.ageing_ms)
            .finish_non_exhaustive()
    }
}

impl Fdb {
    /// A table with room for at least `capacity` entries (rounded up to a power
    /// of two; keep it about twice the expected MAC count), whose entries
    /// expire `ageing` after they were last seen. `epoch` is any instant not
    /// later than the `now` values that will be passed in.
    ///
    /// All memory is allocated here; learning and lookup never allocate.
    pub fn new(capacity: usize, ageing: Duration, epoch: Instant) -> Fdb {
        let n = capacity.clamp(MAX_PROBE, 1 << 24).next_power_of_two();
        let slots: Box<[Slot]> = (0..n).map(|_| Slot::default()).collect();
        Fdb {
            slots,
            mask: n - 1,
            // A per-table key makes collision floods harder to precompute.
            seed: RandomState::new().hash_one(0x7678_6c61_6e5f_6664u64) | 1,
            epoch,
            ageing_ms: u64::try_from(ageing.as_millis()).unwrap_or(u64::MAX).max(1),
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn home(&self, mac: u64) -> usize {
        // Multiplicative hashing keyed by the seed; the high bits are the well-mixed ones.
        let h = (mac ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & self.mask
    }

    fn alive(&self, seen_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(seen_ms) < self.ageing_ms
    }

    /// The VTEP behind `mac`, if it was learned and has not aged out. Group
    /// addresses are never in the table: the caller replicates those.
    pub fn lookup(&self, mac: MacAddr, now: Instant) -> Option<u16> {
        let key = mac.to_u64();
        let home = self.home(key);
        let now_ms = self.now_ms(now);
        for i in 0..MAX_PROBE {
            let slot = &self.slots[(home + i) & self.mask];
            let e = slot.entry.load(Ordering::Acquire);
            if e == 0 {
                return None;
            }
            if e >> 16 == key {
                return self
                    .alive(slot.seen_ms.load(Ordering::Relaxed), now_ms)
                    .then_some(e as u16);
            }
        }
        None
    }

    /// Records that `mac` was seen behind `vtep` (a received frame's source).
    pub fn learn(&self, mac: MacAddr, vtep: u16, now: Instant) -> Learned {
        if mac.is_multicast() || mac == MacAddr::default() {
            return Learned::Ignored;
        }
        let key = mac.to_u64();
        let wanted = key << 16 | u64::from(vtep);
        let home = self.home(key);
        let now_ms = self.now_ms(now);
        // Two passes: a lost race for a free slot re-reads the neighbourhood,
        // where the winner may have inserted this very MAC.
        for _ in 0..2 {
            let mut reclaim: Option<(usize, u64)> = None;
            let mut free: Option<usize> = None;
            for i in 0..MAX_PROBE {
                let idx = (home + i) & self.mask;
                let slot = &self.slots[idx];
                let e = slot.entry.load(Ordering::Acquire);
                if e == 0 {
                    free = Some(idx);
                    break;
                }
                if e >> 16 == key {
                    let seen = slot.seen_ms.load(Ordering::Relaxed);
                    if e == wanted {
                        if now_ms.saturating_sub(seen) >= REFRESH_STEP_MS {
                            slot.seen_ms.store(now_ms, Ordering::Relaxed);
                        }
                        return if self.alive(seen, now_ms) {
                            Learned::Known
                        } else {
                            Learned::New
                        };
                    }
                    // Losing this race to another worker moving the same MAC is fine:
                    // one of the two frames' VTEPs wins, the next frame corrects it.
                    let _ =
                        slot.entry
                            .compare_exchange(e, wanted, Ordering::AcqRel, Ordering::Acquire);
                    slot.seen_ms.store(now_ms, Ordering::Relaxed);
                    return Learned::Moved;
                }
                if reclaim.is_none() && !self.alive(slot.seen_ms.load(Ordering::Relaxed), now_ms) {
                    reclaim = Some((idx, e));
                }
            }
            // Prefer an expired slot nearer home over the free one: chains stay short.
            let (idx, old) = match (reclaim, free) {
                (Some(r), _) => r,
                (None, Some(idx)) => (idx, 0),
                (None, None) => return Learned::Full,
            };
            let slot = &self.slots[idx];
            if slot
                .entry
                .compare_exchange(old, wanted, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.seen_ms.store(now_ms, Ordering::Relaxed);
                return Learned::New;
            }
        }
        Learned::Full
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::sync::Arc;

    const AGE: Duration = Duration::from_secs(300);

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learns_looks_up_and_moves() {
        let t0 = Instant::now();
        let fdb = Fdb::new(64, AGE, t0);
        assert_eq!(fdb.lookup(mac(1), t0), None);
        assert_eq!(fdb.learn(mac(1), 3, t0), Learned::New);
        assert_eq!(fdb.lookup(mac(1), t0), Some(3));
        assert_eq!(fdb.learn(mac(1), 3, t0), Learned::Known);
        assert_eq!(fdb.learn(mac(1), 5, t0), Learned::Moved);
        assert_eq!(fdb.lookup(mac(1), t0), Some(5));
        assert_eq!(fdb.lookup(mac(2), t0), None);
    }

    #[test]
    fn group_and_zero_sources_are_not_learned() {
        let t0 = Instant::now();
        let fdb = Fdb::new(64, AGE, t0);
        assert_eq!(fdb.learn(MacAddr::BROADCAST, 1, t0), Learned::Ignored);
        assert_eq!(
            fdb.learn(MacAddr([0x01, 0, 0x5e, 0, 0, 1]), 1, t0),
            Learned::Ignored
        );
        assert_eq!(fdb.learn(MacAddr::default(), 1, t0), Learned::Ignored);
        assert_eq!(fdb.lookup(MacAddr::BROADCAST, t0), None);
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!mac(1).is_multicast());
    }

    #[test]
    fn entries_age_out_and_refresh_keeps_them() {
        let t0 = Instant::now();
        let fdb = Fdb::new(64, AGE, t0);
        fdb.learn(mac(1), 1, t0);
        fdb.learn(mac(2), 2, t0);
        // mac(2) is seen again at 200 s, so it outlives mac(1).
        assert_eq!(
            fdb.learn(mac(2), 2, t0 + Duration::from_secs(200)),
            Learned::Known
        );
        let t1 = t0 + AGE + Duration::from_secs(1);
        assert_eq!(fdb.lookup(mac(1), t1), None, "mac(1) should have aged out");
        assert_eq!(fdb.lookup(mac(2), t1), Some(2));
        assert_eq!(
            fdb.learn(mac(1), 1, t1),
            Learned::New,
            "an aged-out MAC is learned anew"
        );
    }

    #[test]
    fn full_neighbourhood_refuses_then_reclaims_after_ageing() {
        let t0 = Instant::now();
        let fdb = Fdb::new(16, AGE, t0);
        assert_eq!(fdb.capacity(), 16);
        for n in 0..16 {
            assert_eq!(fdb.learn(mac(n), n as u16, t0), Learned::New, "mac {n}");
        }
        assert_eq!(fdb.learn(mac(100), 9, t0), Learned::Full);
        for n in 0..16 {
            assert_eq!(fdb.lookup(mac(n), t0), Some(n as u16));
        }
        let later = t0 + AGE;
        assert_eq!(fdb.learn(mac(100), 9, later), Learned::New);
        assert_eq!(fdb.lookup(mac(100), later), Some(9));
    }

    #[test]
    fn concurrent_learners_agree() {
        let t0 = Instant::now();
        let fdb = Arc::new(Fdb::new(4096, AGE, t0));
        let threads: Vec<_> = (0..4u16)
            .map(|w| {
                let fdb = fdb.clone();
                std::thread::spawn(move || {
                    for n in 0..1000u32 {
                        // Every worker learns every MAC behind the same VTEP.
                        fdb.learn(mac(n), (n % 7) as u16, t0);
                        let _ = fdb.lookup(mac(n + u32::from(w)), t0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        for n in 0..1000u32 {
            assert_eq!(fdb.lookup(mac(n), t0), Some((n % 7) as u16), "mac {n}");
        }
    }

    #[test]
    fn frame_accessors() {
        let frame = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x00];
        assert_eq!(MacAddr::dst_of(&frame), Some(MacAddr([1, 2, 3, 4, 5, 6])));
        assert_eq!(
            MacAddr::src_of(&frame),
            Some(MacAddr([7, 8, 9, 10, 11, 12]))
        );
        assert_eq!(MacAddr::src_of(&frame[..11]), None);
        assert_eq!(mac(1).to_string(), "02:00:00:00:00:01");
    }
}
