//! AllowedIPs (whitepaper §2, cryptokey routing): a longest-prefix table
//! that answers "which peer" for a destination and "is this source allowed"
//! for a received packet.
//!
//! The table is built once and then only read, so instead of a trie it is
//! flattened into sorted, disjoint address ranges, each owned by the peer of
//! the longest prefix covering it: a lookup is one binary search over a
//! contiguous array (14 steps for 10,000 prefixes), no pointer chasing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::PeerId;

/// An IPv4 or IPv6 prefix such as `10.0.0.0/24` or `fd00::/64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// A string or value that is not a valid prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrefixError {
    /// The address part does not parse.
    #[error("invalid IP address {0:?}")]
    Address(String),
    /// The length after `/` does not parse.
    #[error("invalid prefix length {0:?}")]
    Length(String),
    /// The length is longer than the address.
    #[error("prefix length {len} is longer than {max} for {addr}")]
    TooLong {
        /// The address.
        addr: IpAddr,
        /// The given length.
        len: u8,
        /// 32 or 128.
        max: u8,
    },
}

impl IpPrefix {
    /// A prefix; host bits beyond `len` are cleared, as `wg` does.
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::TooLong { addr, len, max });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(len))),
        };
        Ok(IpPrefix { addr, len })
    }

    /// The network address (host bits clear).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is `0.0.0.0/0` or `::/0`.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.len) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.len) == u128::from(n),
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;
    /// `ADDR/LEN`, or a bare `ADDR` meaning a host prefix (/32 or /128).
    fn from_str(s: &str) -> Result<IpPrefix, PrefixError> {
        let s = s.trim();
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| PrefixError::Address(a.to_string()))?;
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .map_err(|_| PrefixError::Length(l.to_string()))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpPrefix::new(addr, len)
    }
}

/// Sorted disjoint ranges: `starts[i]..starts[i+1]` belongs to `owners[i]`.
#[derive(Clone, Debug)]
struct Ranges<T> {
    starts: Box<[T]>,
    owners: Box<[Option<PeerId>]>,
}

trait Addr: Copy + Ord + Default + fmt::Debug {
    const MAX: Self;
    fn succ(self) -> Self;
}

impl Addr for u32 {
    const MAX: Self = u32::MAX;
    fn succ(self) -> Self {
        self + 1
    }
}

impl Addr for u128 {
    const MAX: Self = u128::MAX;
    fn succ(self) -> Self {
        self + 1
    }
}

impl<T: Addr> Ranges<T> {
    /// Flattens nested prefixes given as inclusive `(first, last, owner)`.
    /// Prefixes nest or are disjoint, so sorting by first address, widest
    /// first, and sweeping with a stack of the enclosing prefixes yields each
    /// point where the owner changes.
    fn build(mut prefixes: Vec<(T, T, PeerId)>) -> Ranges<T> {
        prefixes.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut starts: Vec<T> = vec![T::default()];
        let mut owners: Vec<Option<PeerId>> = vec![None];
        let mut emit = |at: T, owner: Option<PeerId>| {
            if starts.last() == Some(&at) {
                let n = owners.len();
                owners[n - 1] = owner;
                // Overwriting may make this range equal to the one before it.
                if n >= 2 && owners[n - 2] == owner {
                    starts.pop();
                    owners.pop();
                }
            } else if owners.last() != Some(&owner) {
                starts.push(at);
                owners.push(owner);
            }
        };
        let mut stack: Vec<(T, PeerId)> = Vec::new();
        for (first, last, owner) in prefixes {
            while let Some(&(end, _)) = stack.last() {
                if end >= first {
                    break;
                }
                stack.pop();
                emit(end.succ(), stack.last().map(|s| s.1));
            }
            emit(first, Some(owner));
            stack.push((last, owner));
        }
        while let Some((end, _)) = stack.pop() {
            if end != T::MAX {
                emit(end.succ(), stack.last().map(|s| s.1));
            }
        }
        Ranges {
            starts: starts.into(),
            owners: owners.into(),
        }
    }

    #[inline]
    fn lookup(&self, a: T) -> Option<PeerId> {
        // starts[0] is the zero address, so the partition point is at least 1.
        let i = self.starts.partition_point(|s| *s <= a);
        self.owners.get(i.wrapping_sub(1)).copied().flatten()
    }
}

/// The AllowedIPs of every peer of an interface, immutable once built.
#[derive(Clone, Debug)]
pub struct AllowedIps {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    entries: usize,
}

/// The same prefix was given to two peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("allowed IP {prefix} is given to two peers ({first:?} and {second:?})")]
pub struct DuplicatePrefix {
    /// The prefix.
    pub prefix: IpPrefix,
    /// The first peer.
    pub first: PeerId,
    /// The second peer.
    pub second: PeerId,
}

impl AllowedIps {
    /// Builds the table. The same prefix twice for one peer is harmless; for
    /// two peers it is an error (`wg` would silently move it to the last one,
    /// which hides configuration mistakes).
    pub fn new(
        prefixes: impl IntoIterator<Item = (IpPrefix, PeerId)>,
    ) -> Result<AllowedIps, DuplicatePrefix> {
        let mut unique: BTreeMap<IpPrefix, PeerId> = BTreeMap::new();
        for (prefix, peer) in prefixes {
            if let Some(&first) = unique.get(&prefix)
                && first != peer
            {
                return Err(DuplicatePrefix {
                    prefix,
                    first,
                    second: peer,
                });
            }
            unique.insert(prefix, peer);
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (p, peer) in &unique {
            match p.addr {
                IpAddr::V4(a) => {
                    let first = u32::from(a);
                    v4.push((first, first | !mask32(p.len), *peer));
                }
                IpAddr::V6(a) => {
                    let first = u128::from(a);
                    v6.push((first, first | !mask128(p.len), *peer));
                }
            }
        }
        Ok(AllowedIps {
            v4: Ranges::build(v4),
            v6: Ranges::build(v6),
            entries: unique.len(),
        })
    }

    /// An empty table.
    pub fn empty() -> AllowedIps {
        AllowedIps {
            v4: Ranges::build(Vec::new()),
            v6: Ranges::build(Vec::new()),
            entries: 0,
        }
    }

    /// The peer whose longest matching prefix covers `ip`.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<PeerId> {
        match ip {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        }
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether the table has no prefix.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn p(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_parsing_masks_and_errors() {
        assert_eq!(p("10.1.2.3/24").to_string(), "10.1.2.0/24");
        assert_eq!(p("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(p("fd00::1/64").to_string(), "fd00::/64");
        assert_eq!(p("::/0").prefix_len(), 0);
        assert!(matches!(
            "10.0.0.0/33".parse::<IpPrefix>(),
            Err(PrefixError::TooLong { .. })
        ));
        assert!(matches!(
            "10.0.0/8".parse::<IpPrefix>(),
            Err(PrefixError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<IpPrefix>(),
            Err(PrefixError::Length(_))
        ));
        assert!(p("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!p("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(!p("10.0.0.0/8").contains(ip("::1")));
    }

    #[test]
    fn longest_prefix_wins() {
        let a = PeerId::new(0, 0);
        let b = PeerId::new(1, 0);
        let c = PeerId::new(2, 0);
        let t = AllowedIps::new([
            (p("0.0.0.0/0"), a),
            (p("10.0.0.0/8"), b),
            (p("10.1.0.0/16"), c),
            (p("10.1.2.3/32"), a),
            (p("fd00::/8"), b),
            (p("fd00:1::/32"), c),
        ])
        .unwrap();
        assert_eq!(t.lookup(ip("1.2.3.4")), Some(a));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(b));
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(c));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(a));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(c));
        assert_eq!(t.lookup(ip("10.255.255.255")), Some(b));
        assert_eq!(t.lookup(ip("11.0.0.0")), Some(a));
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(a));
        assert_eq!(t.lookup(ip("fd00:1::5")), Some(c));
        assert_eq!(t.lookup(ip("fd00:2::5")), Some(b));
        assert_eq!(t.lookup(ip("fe80::1")), None);
        assert_eq!(t.lookup(ip("::")), None);
        assert_eq!(t.len(), 6);
    }

    #[test]
    fn same_prefix_on_two_peers_is_an_error() {
        let err = AllowedIps::new([
            (p("10.0.0.0/8"), PeerId::new(0, 0)),
            (p("10.0.0.0/8"), PeerId::new(1, 0)),
        ])
        .unwrap_err();
        assert_eq!(err.prefix, p("10.0.0.0/8"));
        assert!(
            AllowedIps::new([
                (p("10.0.0.0/8"), PeerId::new(0, 0)),
                (p("10.0.0.0/8"), PeerId::new(0, 0))
            ])
            .is_ok()
        );
    }

    #[test]
    fn edges_of_the_address_space() {
        let t = AllowedIps::new([
            (p("255.255.255.255/32"), PeerId::new(1, 0)),
            (p("0.0.0.0/32"), PeerId::new(2, 0)),
        ])
        .unwrap();
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(PeerId::new(1, 0)));
        assert_eq!(t.lookup(ip("255.255.255.254")), None);
        assert_eq!(t.lookup(ip("0.0.0.0")), Some(PeerId::new(2, 0)));
        assert_eq!(t.lookup(ip("0.0.0.1")), None);
        assert_eq!(AllowedIps::empty().lookup(ip("1.1.1.1")), None);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn prefix4() -> impl Strategy<Value = IpPrefix> {
            // Few distinct top bits so prefixes overlap often.
            (0u32..16, 0u8..=32, any::<u32>()).prop_map(|(hi, len, lo)| {
                IpPrefix::new(IpAddr::V4(Ipv4Addr::from((hi << 28) | (lo >> 4))), len).unwrap()
            })
        }

        fn prefix6() -> impl Strategy<Value = IpPrefix> {
            (0u128..16, 0u8..=128, any::<u128>()).prop_map(|(hi, len, lo)| {
                IpPrefix::new(IpAddr::V6(Ipv6Addr::from((hi << 124) | (lo >> 4))), len).unwrap()
            })
        }

        /// The reference: scan every prefix, keep the longest that contains the address.
        fn naive(prefixes: &BTreeMap<IpPrefix, PeerId>, a: IpAddr) -> Option<PeerId> {
            prefixes
                .iter()
                .filter(|(p, _)| p.contains(a))
                .max_by_key(|(p, _)| p.prefix_len())
                .map(|(_, id)| *id)
        }

        proptest! {
            #[test]
            fn matches_a_linear_scan(
                ps in proptest::collection::vec((prop_oneof![prefix4(), prefix6()], 0u16..5), 0..60),
                probes4 in proptest::collection::vec(any::<u32>(), 50),
                probes6 in proptest::collection::vec(any::<u128>(), 50),
            ) {
                let unique: BTreeMap<IpPrefix, PeerId> = ps.into_iter().map(|(p, id)| (p, PeerId::new(u32::from(id), 0))).collect();
                let t = AllowedIps::new(unique.iter().map(|(p, id)| (*p, *id))).unwrap();
                // Probe random addresses and every prefix's first and last address and neighbours.
                let mut probes: Vec<IpAddr> = probes4.iter().map(|a| IpAddr::V4(Ipv4Addr::from(*a & 0xf000_0000 | (a >> 4)))).collect();
                probes.extend(probes6.iter().map(|a| IpAddr::V6(Ipv6Addr::from(*a))));
                for p in unique.keys() {
                    match p.addr() {
                        IpAddr::V4(a) => {
                            let first = u32::from(a);
                            let last = first | !mask32(p.prefix_len());
                            for x in [first.wrapping_sub(1), first, last, last.wrapping_add(1)] {
                                probes.push(IpAddr::V4(Ipv4Addr::from(x)));
                            }
                        }
                        IpAddr::V6(a) => {
                            let first = u128::from(a);
                            let last = first | !mask128(p.prefix_len());
                            for x in [first.wrapping_sub(1), first, last, last.wrapping_add(1)] {
                                probes.push(IpAddr::V6(Ipv6Addr::from(x)));
                            }
                        }
                    }
                }
                for a in probes {
                    prop_assert_eq!(t.lookup(a), naive(&unique, a), "address {}", a);
                }
            }

            #[test]
            fn prefix_display_parse_round_trips(p in prop_oneof![prefix4(), prefix6()]) {
                prop_assert_eq!(p.to_string().parse::<IpPrefix>(), Ok(p));
            }

            #[test]
            fn prefix_parse_never_panics(s in "\\PC{0,50}") {
                let _ = s.parse::<IpPrefix>();
            }
        }
    }
}
