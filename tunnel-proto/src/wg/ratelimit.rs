//! Handshake messages per source address, under load: a token bucket per
//! address (wireguard-go's and the kernel's limiter: 20 a second, a burst
//! of 5). The tunnel keeps two: one for messages with a valid cookie, so
//! that one address holding a cookie cannot keep the control thread doing
//! Diffie-Hellman; one for the cookie replies themselves, so that one
//! address (or a victim whose address a flood forges) gets only so many.
//!
//! The table has a fixed number of entries, chosen by a keyed hash of the
//! address (the key from the tunnel's random source, so an attacker cannot
//! aim at an entry). A flood from any number of addresses never grows it:
//! an address whose entry belongs to another, still-limited address shares
//! that address's bucket; an entry idle long enough to be full again is
//! taken over.

use std::hash::Hasher;
use std::net::IpAddr;
use std::time::Instant;

/// Messages a second one address may send under load.
pub const PER_SECOND: u32 = 20;
/// How many it may send at once.
pub const BURST: u32 = 5;
/// Entries in the table.
pub const ENTRIES: usize = 4096;

/// One bucket, in nanoseconds of credit (wireguard-go's representation):
/// a message costs `1 s / PER_SECOND`, credit grows with time up to
/// `BURST` messages' worth.
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: IpAddr,
    credit_ns: u64,
    last: Instant,
}

const COST_NS: u64 = 1_000_000_000 / PER_SECOND as u64;
const MAX_CREDIT_NS: u64 = COST_NS * BURST as u64;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    entries: Box<[Option<Entry>]>,
    key: [u64; 2],
}

impl RateLimiter {
    /// An empty table whose hash is keyed by `key`.
    pub(crate) fn new(key: [u64; 2]) -> RateLimiter {
        RateLimiter {
            entries: vec![None; ENTRIES].into_boxed_slice(),
            key,
        }
    }

    fn slot(&self, addr: IpAddr) -> usize {
        // SipHash with a secret key: where an address lands is not
        // something a sender can choose. (std's keyed SipHasher is
        // deprecated only in favour of hash maps, which pick their own keys.)
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.key[0], self.key[1]);
        match addr {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        (h.finish() % ENTRIES as u64) as usize
    }

    /// Whether a message from `addr` may go on now; takes its cost if so.
    pub(crate) fn allow(&mut self, addr: IpAddr, now: Instant) -> bool {
        let i = self.slot(addr);
        let e = match &mut self.entries[i] {
            Some(e) if e.addr == addr => e,
            // Another address's entry, idle until full again: ours now.
            Some(e) if e.credit_ns + elapsed_ns(e.last, now) >= MAX_CREDIT_NS => {
                *e = Entry {
                    addr,
                    credit_ns: MAX_CREDIT_NS,
                    last: now,
                };
                e
            }
            // Another address's, still limited: shared (no new entry).
            Some(e) => e,
            slot @ None => slot.insert(Entry {
                addr,
                credit_ns: MAX_CREDIT_NS,
                last: now,
            }),
        };
        e.credit_ns = (e.credit_ns + elapsed_ns(e.last, now)).min(MAX_CREDIT_NS);
        e.last = now;
        if e.credit_ns >= COST_NS {
            e.credit_ns -= COST_NS;
            true
        } else {
            false
        }
    }

    /// Entries in use (for tests: it never exceeds [`ENTRIES`]).
    #[cfg(test)]
    fn used(&self) -> usize {
        self.entries.iter().flatten().count()
    }
}

fn elapsed_ns(then: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod test {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn a_burst_then_twenty_a_second() {
        let mut r = RateLimiter::new([1, 2]);
        let t0 = Instant::now();
        let a = ip(0x0a00_0001);
        let allowed = (0..100).filter(|_| r.allow(a, t0)).count();
        assert_eq!(allowed, BURST as usize, "the burst at once");
        // Over the next second, at 1,000 tries a second: 20 more.
        let allowed = (1..=1000)
            .filter(|ms| r.allow(a, t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(allowed, PER_SECOND as usize);
        // Another address is not held back by the first.
        assert!(r.allow(ip(0x0a00_0002), t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn a_hundred_thousand_sources_never_grow_the_table() {
        let mut r = RateLimiter::new([3, 4]);
        let t0 = Instant::now();
        for n in 0..100_000u32 {
            r.allow(
                ip(0xc000_0000 + n),
                t0 + Duration::from_micros(u64::from(n)),
            );
        }
        assert!(r.used() <= ENTRIES, "{} entries", r.used());
        // After the flood, a quiet source gets its burst.
        let later = t0 + Duration::from_secs(5);
        assert!(r.allow(ip(0x0a09_0909), later));
    }
}
