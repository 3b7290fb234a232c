//! A peer's path: the remote address its datagrams go to and the local
//! address they leave from, readable by every worker without a lock.
//!
//! The two belong together (wireguard-go's endpoint carries both): when a
//! peer roams, the local address it reached us on changes with it, and a
//! gateway with several addresses must answer from the one the peer used.
//! A `SocketAddr` plus an `IpAddr` do not fit one atomic, so they live in
//! six `AtomicU64` words behind a sequence counter (a seqlock). Readers —
//! every sealed packet — never write shared memory; writers — roaming, a
//! new local address, configuration — are rare: they take the counter
//! odd, write, and make it even again.

use std::hint::spin_loop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering, fence};

const NONE: u64 = 0;
const V4: u64 = 4;
const V6: u64 = 6;

/// Where a peer's datagrams go, and from which local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    /// The peer's address (its endpoint).
    pub remote: SocketAddr,
    /// The local address to send from; `None` lets the kernel choose.
    pub local: Option<IpAddr>,
}

impl From<SocketAddr> for Path {
    /// A path to `remote` from whatever local address the kernel picks.
    fn from(remote: SocketAddr) -> Path {
        Path {
            remote,
            local: None,
        }
    }
}

/// A [`Path`] slot shared between threads; empty until a remote is known.
#[derive(Default)]
pub struct AtomicPath {
    seq: AtomicU64,
    /// remote family | remote port << 8 | local family << 24
    head: AtomicU64,
    remote_hi: AtomicU64,
    remote_lo: AtomicU64,
    /// flowinfo << 32 | scope_id (IPv6 remote only)
    extra: AtomicU64,
    local_hi: AtomicU64,
    local_lo: AtomicU64,
}

impl std::fmt::Debug for AtomicPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AtomicPath({:?})", self.load())
    }
}

fn encode_ip(ip: Option<IpAddr>) -> (u64, u64, u64) {
    match ip {
        None => (NONE, 0, 0),
        Some(IpAddr::V4(a)) => (V4, 0, u64::from(u32::from(a))),
        Some(IpAddr::V6(a)) => {
            let v = u128::from(a);
            (V6, (v >> 64) as u64, v as u64)
        }
    }
}

fn decode_ip(family: u64, hi: u64, lo: u64) -> Option<IpAddr> {
    match family {
        V4 => Some(IpAddr::V4(Ipv4Addr::from(lo as u32))),
        V6 => Some(IpAddr::V6(Ipv6Addr::from(
            u128::from(hi) << 64 | u128::from(lo),
        ))),
        _ => None,
    }
}

fn encode(path: Option<Path>) -> [u64; 6] {
    let Some(p) = path else {
        return [NONE, 0, 0, 0, 0, 0];
    };
    let (rf, rhi, rlo) = encode_ip(Some(p.remote.ip()));
    let (lf, lhi, llo) = encode_ip(p.local);
    let extra = match p.remote {
        SocketAddr::V6(a) => u64::from(a.flowinfo()) << 32 | u64::from(a.scope_id()),
        SocketAddr::V4(_) => 0,
    };
    [
        rf | u64::from(p.remote.port()) << 8 | lf << 24,
        rhi,
        rlo,
        extra,
        lhi,
        llo,
    ]
}

fn decode(w: [u64; 6]) -> Option<Path> {
    let port = (w[0] >> 8) as u16;
    let remote = match decode_ip(w[0] & 0xff, w[1], w[2])? {
        IpAddr::V4(a) => SocketAddr::new(IpAddr::V4(a), port),
        IpAddr::V6(a) => {
            SocketAddr::V6(SocketAddrV6::new(a, port, (w[3] >> 32) as u32, w[3] as u32))
        }
    };
    Some(Path {
        remote,
        local: decode_ip((w[0] >> 24) & 0xff, w[4], w[5]),
    })
}

impl AtomicPath {
    /// A slot holding `path`.
    pub fn new(path: Option<Path>) -> AtomicPath {
        let p = AtomicPath::default();
        p.store(path);
        p
    }

    /// The current path. Retries while a writer is mid-update (nanoseconds).
    #[inline]
    pub fn load(&self) -> Option<Path> {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                spin_loop();
                continue;
            }
            let w = [
                self.head.load(Ordering::Relaxed),
                self.remote_hi.load(Ordering::Relaxed),
                self.remote_lo.load(Ordering::Relaxed),
                self.extra.load(Ordering::Relaxed),
                self.local_hi.load(Ordering::Relaxed),
                self.local_lo.load(Ordering::Relaxed),
            ];
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return decode(w);
            }
        }
    }

    /// The remote address alone.
    #[inline]
    pub fn remote(&self) -> Option<SocketAddr> {
        self.load().map(|p| p.remote)
    }

    /// Replaces the path.
    pub fn store(&self, path: Option<Path>) {
        let w = encode(path);
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
        // The odd sequence must be visible before any new word: the
        // Acquire of the exchange does not order the later stores.
        fence(Ordering::Release);
        self.head.store(w[0], Ordering::Relaxed);
        self.remote_hi.store(w[1], Ordering::Relaxed);
        self.remote_lo.store(w[2], Ordering::Relaxed);
        self.extra.store(w[3], Ordering::Relaxed);
        self.local_hi.store(w[4], Ordering::Relaxed);
        self.local_lo.store(w[5], Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
    }

    /// Records an authenticated datagram from `remote` that arrived on
    /// `local`. Unpinned, the path follows the peer (roaming, whitepaper
    /// §2.1); pinned, the remote stays and only the local address of
    /// datagrams from that remote is learned. A path without a remote
    /// learns its first one either way. True if the remote changed.
    /// One read when nothing changed: this runs for every datagram.
    #[inline]
    pub fn roam(&self, remote: SocketAddr, local: Option<IpAddr>, pinned: bool) -> bool {
        let current = self.load();
        let next = match current {
            Some(p) if p.remote == remote && p.local == local => return false,
            Some(p) if pinned && p.remote != remote => return false,
            _ => Path { remote, local },
        };
        self.store(Some(next));
        current.is_none_or(|p| p.remote != remote)
    }

    /// [`roam`](Self::roam) for a datagram that may have left from any of
    /// a peer's flow ports: the address follows it, the port stays the
    /// one last learned from the peer's listen port (a path without a
    /// remote takes the datagram's own). A flow port receives nothing, so
    /// an answer sent to one would be lost.
    #[inline]
    pub fn roam_address(&self, remote: SocketAddr, local: Option<IpAddr>, pinned: bool) -> bool {
        let mut remote = remote;
        if let Some(p) = self.load() {
            // set_port keeps an IPv6 address's scope (a link-local
            // endpoint needs it), which SocketAddr::new would drop.
            remote.set_port(p.remote.port());
        }
        self.roam(remote, local, pinned)
    }

    /// Forgets the local address (it went away); the kernel chooses the
    /// source until a datagram from the peer names one again.
    pub fn forget_local(&self) {
        if let Some(p) = self.load().filter(|p| p.local.is_some()) {
            self.store(Some(Path { local: None, ..p }));
        }
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

    fn path(remote: SocketAddr, local: Option<&str>) -> Path {
        Path {
            remote,
            local: local.map(|l| l.parse().unwrap()),
        }
    }

    #[test]
    fn stores_and_loads_every_shape() {
        let e = AtomicPath::new(None);
        assert_eq!(e.load(), None);
        for p in [
            path(v4([192, 0, 2, 1], 51820), None),
            path(v4([192, 0, 2, 1], 51820), Some("10.0.0.1")),
            path("[fd00::1]:1".parse().unwrap(), Some("fd00::2")),
            path(
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 65535, 7, 3)),
                Some("fe80::9"),
            ),
            path(v4([10, 1, 1, 1], 1), Some("fd00::5")),
        ] {
            e.store(Some(p));
            assert_eq!(e.load(), Some(p));
        }
        e.store(None);
        assert_eq!(e.load(), None);
    }

    #[test]
    fn address_roaming_keeps_the_port() {
        let e = AtomicPath::new(None);
        let first = v4([192, 0, 2, 1], 51820);
        assert!(
            e.roam_address(first, None, false),
            "learns its first remote whole"
        );
        assert_eq!(e.load(), Some(path(first, None)));
        assert!(!e.roam_address(v4([192, 0, 2, 1], 40001), None, false));
        assert_eq!(
            e.load(),
            Some(path(first, None)),
            "another port of the same address"
        );
        assert!(e.roam_address(v4([192, 0, 2, 9], 40002), None, false));
        assert_eq!(
            e.load(),
            Some(path(v4([192, 0, 2, 9], 51820), None)),
            "a new address, the listen port kept"
        );
        assert!(!e.roam_address(v4([192, 0, 2, 7], 51820), None, true));
        assert_eq!(
            e.load(),
            Some(path(v4([192, 0, 2, 9], 51820), None)),
            "pinned"
        );
        assert!(e.roam(v4([192, 0, 2, 9], 6000), None, false));
        assert_eq!(
            e.load(),
            Some(path(v4([192, 0, 2, 9], 6000), None)),
            "a handshake's source sets the port"
        );
        // A link-local endpoint keeps its zone.
        let scoped: SocketAddr = "[fe80::1%2]:51820".parse().unwrap();
        let e = AtomicPath::new(Some(path(scoped, None)));
        assert!(!e.roam_address("[fe80::1%2]:40001".parse().unwrap(), None, false));
        assert_eq!(e.load(), Some(path(scoped, None)));
    }

    #[test]
    fn roaming_follows_the_peer_unless_pinned() {
        let a = v4([192, 0, 2, 1], 1);
        let b = v4([192, 0, 2, 2], 2);
        let e = AtomicPath::new(None);
        assert!(
            e.roam(a, None, true),
            "a pinned peer learns its first remote"
        );
        assert!(!e.roam(b, Some("10.0.0.1".parse().unwrap()), true));
        assert_eq!(e.load(), Some(path(a, None)), "pinned: nothing from b");
        assert!(!e.roam(a, Some("10.0.0.1".parse().unwrap()), true));
        assert_eq!(
            e.load(),
            Some(path(a, Some("10.0.0.1"))),
            "pinned: the local address of the pinned remote is learned"
        );
        assert!(e.roam(b, Some("10.0.0.2".parse().unwrap()), false));
        assert_eq!(e.load(), Some(path(b, Some("10.0.0.2"))));
        assert!(!e.roam(b, Some("10.0.0.3".parse().unwrap()), false));
        assert_eq!(e.load(), Some(path(b, Some("10.0.0.3"))));
        e.forget_local();
        assert_eq!(e.load(), Some(path(b, None)));
    }

    #[test]
    fn readers_never_see_a_torn_path() {
        let first = path(v4([1, 1, 1, 1], 1), Some("10.1.1.1"));
        let e = Arc::new(AtomicPath::new(Some(first)));
        let a = path(
            "[1111:1111:1111:1111:1111:1111:1111:1111]:1111"
                .parse()
                .unwrap(),
            Some("1111::1"),
        );
        let b = path(
            "[2222:2222:2222:2222:2222:2222:2222:2222]:2222"
                .parse()
                .unwrap(),
            Some("2222::2"),
        );
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
            assert!(got == a || got == b || got == first, "torn read {got:?}");
        }
        writer.join().unwrap();
    }
}
