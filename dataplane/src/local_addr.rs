//! The local address each peer's packets arrived on, so that replies leave
//! from it (a gateway with several addresses must answer from the one the
//! peer used). Written by whichever worker received from the peer, read by
//! every worker on each send: a per-entry sequence lock, so reads take no
//! lock and writes, which happen only when the address changes, are rare.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crossbeam_utils::CachePadded;

/// One peer's cell: a version (odd while being written) and the address
/// packed as family + 128 bits.
#[derive(Debug, Default)]
struct Cell {
    version: AtomicU64,
    family: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
}

const NONE: u64 = 0;
const V4: u64 = 4;
const V6: u64 = 6;

/// Local addresses by peer index.
#[derive(Debug)]
pub struct LocalAddrTable {
    cells: Box<[CachePadded<Cell>]>,
}

impl LocalAddrTable {
    /// A table for `peers` peers, all unknown.
    pub fn new(peers: usize) -> LocalAddrTable {
        LocalAddrTable {
            cells: (0..peers)
                .map(|_| CachePadded::new(Cell::default()))
                .collect(),
        }
    }

    fn encode(addr: Option<IpAddr>) -> (u64, u64, u64) {
        match addr {
            None => (NONE, 0, 0),
            Some(IpAddr::V4(a)) => (V4, 0, u64::from(u32::from(a))),
            Some(IpAddr::V6(a)) => {
                let v = u128::from(a);
                (V6, (v >> 64) as u64, v as u64)
            }
        }
    }

    /// The address last seen for `peer`.
    #[inline]
    pub fn get(&self, peer: usize) -> Option<IpAddr> {
        let cell = self.cells.get(peer)?;
        loop {
            let v1 = cell.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let family = cell.family.load(Ordering::Relaxed);
            let hi = cell.hi.load(Ordering::Relaxed);
            let lo = cell.lo.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if cell.version.load(Ordering::Relaxed) != v1 {
                continue;
            }
            return match family {
                V4 => Some(IpAddr::V4(Ipv4Addr::from(lo as u32))),
                V6 => Some(IpAddr::V6(Ipv6Addr::from(
                    (u128::from(hi) << 64) | u128::from(lo),
                ))),
                _ => None,
            };
        }
    }

    /// Records `addr` for `peer` if it differs from what is stored.
    #[inline]
    pub fn set(&self, peer: usize, addr: Option<IpAddr>) {
        if self.get(peer) == addr {
            return;
        }
        let Some(cell) = self.cells.get(peer) else {
            return;
        };
        let (family, hi, lo) = Self::encode(addr);
        // Two workers may race to write; a compare-exchange on the version
        // makes one of them the writer, and the other's value is the same
        // kind of fact (an address the peer used a moment ago).
        let v = cell.version.load(Ordering::Relaxed);
        if v & 1 == 1
            || cell
                .version
                .compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // The odd version must be visible before any of the new fields: a
        // reader that sees a new field then sees the odd (or a newer)
        // version and retries. The Acquire of the exchange does not order
        // the later stores; this fence does.
        fence(Ordering::Release);
        cell.family.store(family, Ordering::Relaxed);
        cell.hi.store(hi, Ordering::Relaxed);
        cell.lo.store(lo, Ordering::Relaxed);
        cell.version.store(v + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_reads_both_families() {
        let t = LocalAddrTable::new(3);
        assert_eq!(t.get(0), None);
        t.set(0, Some("10.0.0.1".parse().unwrap()));
        t.set(1, Some("fd00::1:2".parse().unwrap()));
        assert_eq!(t.get(0), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(t.get(1), Some("fd00::1:2".parse().unwrap()));
        t.set(0, None);
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(7), None, "out of range reads nothing");
    }

    #[test]
    fn concurrent_writers_never_produce_torn_reads() {
        let t = std::sync::Arc::new(LocalAddrTable::new(1));
        let a: IpAddr = "fd00::aaaa:aaaa".parse().unwrap();
        let b: IpAddr = "10.9.8.7".parse().unwrap();
        let writers: Vec<_> = [a, b]
            .into_iter()
            .map(|addr| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        t.set(0, Some(addr));
                    }
                })
            })
            .collect();
        for _ in 0..20_000 {
            let got = t.get(0);
            assert!(
                got.is_none() || got == Some(a) || got == Some(b),
                "torn read {got:?}"
            );
        }
        for w in writers {
            w.join().unwrap();
        }
    }
}
