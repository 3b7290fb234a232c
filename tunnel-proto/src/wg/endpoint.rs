//! A peer's UDP endpoint, readable by every worker without a lock.
//!
//! A `SocketAddr` does not fit one atomic, so it is kept in four `AtomicU64`
//! words behind a sequence counter (a seqlock). Readers — every sealed
//! packet — never write shared memory; writers — roaming, which is rare —
//! take the counter odd, write, and make it even again.

use std::hint::spin_loop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering, fence};

const NONE: u64 = 0;
const V4: u64 = 4;
const V6: u64 = 6;

/// A `SocketAddr` slot shared between threads.
#[derive(Default)]
pub(crate) struct AtomicEndpoint {
    seq: AtomicU64,
    /// family | port << 8
    head: AtomicU64,
    ip_hi: AtomicU64,
    ip_lo: AtomicU64,
    /// flowinfo << 32 | scope_id (IPv6 only)
    extra: AtomicU64,
}

fn encode(addr: Option<SocketAddr>) -> [u64; 4] {
    match addr {
        None => [NONE, 0, 0, 0],
        Some(SocketAddr::V4(a)) => [
            V4 | u64::from(a.port()) << 8,
            0,
            u64::from(u32::from(*a.ip())),
            0,
        ],
        Some(SocketAddr::V6(a)) => {
            let ip = u128::from(*a.ip());
            [
                V6 | u64::from(a.port()) << 8,
                (ip >> 64) as u64,
                ip as u64,
                u64::from(a.flowinfo()) << 32 | u64::from(a.scope_id()),
            ]
        }
    }
}

fn decode(w: [u64; 4]) -> Option<SocketAddr> {
    let port = (w[0] >> 8) as u16;
    match w[0] & 0xff {
        V4 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(w[2] as u32)),
            port,
        )),
        V6 => {
            let ip = Ipv6Addr::from(u128::from(w[1]) << 64 | u128::from(w[2]));
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                (w[3] >> 32) as u32,
                w[3] as u32,
            )))
        }
        _ => None,
    }
}

impl AtomicEndpoint {
    pub(crate) fn new(addr: Option<SocketAddr>) -> Self {
        let e = AtomicEndpoint::default();
        e.store(addr);
        e
    }

    /// The current endpoint. Retries while a writer is mid-update (nanoseconds).
    #[inline]
    pub(crate) fn load(&self) -> Option<SocketAddr> {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                spin_loop();
                continue;
            }
            let w = [
                self.head.load(Ordering::Relaxed),
                self.ip_hi.load(Ordering::Relaxed),
                self.ip_lo.load(Ordering::Relaxed),
                self.extra.load(Ordering::Relaxed),
            ];
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return decode(w);
            }
        }
    }

    /// Replaces the endpoint.
    pub(crate) fn store(&self, addr: Option<SocketAddr>) {
        let w = encode(addr);
        let mut s = self.seq.load(Ordering::Relaxed);
        loop {
            if s & 1 == 1 {
                spin_loop();
                s = self.seq.load(Ordering::Relaxed);
                continue;
            }
            match self
                .seq
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        fence(Ordering::Release);
        self.head.store(w[0], Ordering::Relaxed);
        self.ip_hi.store(w[1], Ordering::Relaxed);
        self.ip_lo.store(w[2], Ordering::Relaxed);
        self.extra.store(w[3], Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::net::SocketAddrV4;
    use std::sync::Arc;

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
    }

    #[test]
    fn stores_and_loads_every_shape() {
        let e = AtomicEndpoint::new(None);
        assert_eq!(e.load(), None);
        for a in [
            v4([192, 0, 2, 1], 51820),
            "[fd00::1]:1".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 65535, 7, 3)),
        ] {
            e.store(Some(a));
            assert_eq!(e.load(), Some(a));
        }
        e.store(None);
        assert_eq!(e.load(), None);
    }

    #[test]
    fn readers_never_see_a_torn_address() {
        let e = Arc::new(AtomicEndpoint::new(Some(v4([1, 1, 1, 1], 1))));
        let a: SocketAddr = "[1111:1111:1111:1111:1111:1111:1111:1111]:1111"
            .parse()
            .unwrap();
        let b: SocketAddr = "[2222:2222:2222:2222:2222:2222:2222:2222]:2222"
            .parse()
            .unwrap();
        let writer = {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    e.store(Some(if i % 2 == 0 { a } else { b }));
                }
            })
        };
        for _ in 0..20_000 {
            let got = e.load().unwrap();
            assert!(
                got == a || got == b || got == v4([1, 1, 1, 1], 1),
                "torn read {got}"
            );
        }
        writer.join().unwrap();
    }
}
