//! Interface addresses with their prefix length (`Address = 10.0.0.1/24, fd00::1/64`).
//!
//! Unlike an AllowedIPs prefix ([`IpPrefix`](tunnel_proto::wg::IpPrefix), host bits cleared),
//! an interface address keeps its host bits: `10.0.0.1/24` is "10.0.0.1 on a /24".

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 address with a prefix length, host bits kept; [`InterfaceAddr::network`]
/// clears them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceAddr {
    addr: IpAddr,
    len: u8,
}

/// Why a string is not an interface address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("not an IPv4 or IPv6 address")]
    BadAddress,
    /// The part after `/` is not a number.
    #[error("the prefix length is not a number")]
    BadLength,
    /// The prefix length exceeds the address's bit count.
    #[error("prefix length {len} is longer than {max}")]
    TooLong {
        /// The length given.
        len: u32,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl InterfaceAddr {
    /// A prefix of `len` bits over `addr`; `len` must not exceed 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, AddressError> {
        let max = max_len(addr);
        if len > max {
            return Err(AddressError::TooLong {
                len: u32::from(len),
                max,
            });
        }
        Ok(Self { addr, len })
    }

    /// A host prefix: /32 for IPv4, /128 for IPv6.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: max_len(addr),
        }
    }

    /// The address as written, host bits included.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The same prefix with the host bits cleared (`10.0.0.1/24` → `10.0.0.0/24`): the
    /// on-link subnet.
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask32(self.len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask128(self.len))),
        };
        Self {
            addr,
            len: self.len,
        }
    }

    /// Whether `ip` lies inside this prefix (always false across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (n.to_bits() ^ a.to_bits()) & mask32(self.len) == 0,
            (IpAddr::V6(n), IpAddr::V6(a)) => (n.to_bits() ^ a.to_bits()) & mask128(self.len) == 0,
            _ => false,
        }
    }
}

fn max_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FromStr for InterfaceAddr {
    type Err = AddressError;

    /// `ADDR/LEN` or a bare `ADDR`, which means a host prefix (/32 or /128) as in wg-quick.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| AddressError::BadAddress)?;
        let Some(len) = len else {
            return Ok(Self::host(addr));
        };
        // Digits only: `u32::from_str` would accept a leading `+`.
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AddressError::BadLength);
        }
        let max = max_len(addr);
        match len.parse::<u32>() {
            Ok(n) if n <= u32::from(max) => Self::new(addr, n as u8),
            Ok(n) => Err(AddressError::TooLong { len: n, max }),
            // All digits but beyond u32: certainly too long.
            Err(_) => Err(AddressError::TooLong { len: u32::MAX, max }),
        }
    }
}

impl fmt::Display for InterfaceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> InterfaceAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_v4_and_v6_with_and_without_length() {
        assert_eq!(net("10.0.0.1/24").to_string(), "10.0.0.1/24");
        assert_eq!(net("10.0.0.1").to_string(), "10.0.0.1/32");
        assert_eq!(net("fd00::1/64").to_string(), "fd00::1/64");
        assert_eq!(net("fd00::1").to_string(), "fd00::1/128");
        assert_eq!(net("0.0.0.0/0").prefix_len(), 0);
        assert_eq!(net("::/0").to_string(), "::/0");
    }

    #[test]
    fn rejects_bad_prefixes_with_the_reason() {
        assert_eq!(
            "10.0.0.1/33".parse::<InterfaceAddr>(),
            Err(AddressError::TooLong { len: 33, max: 32 })
        );
        assert_eq!(
            "fd00::/129".parse::<InterfaceAddr>(),
            Err(AddressError::TooLong { len: 129, max: 128 })
        );
        assert_eq!(
            "10.0.0.1/99999999999".parse::<InterfaceAddr>(),
            Err(AddressError::TooLong {
                len: u32::MAX,
                max: 32
            })
        );
        assert_eq!(
            "10.0.0.256/8".parse::<InterfaceAddr>(),
            Err(AddressError::BadAddress)
        );
        assert_eq!(
            "host/8".parse::<InterfaceAddr>(),
            Err(AddressError::BadAddress)
        );
        assert_eq!("".parse::<InterfaceAddr>(), Err(AddressError::BadAddress));
        assert_eq!(
            "10.0.0.1/".parse::<InterfaceAddr>(),
            Err(AddressError::BadLength)
        );
        assert_eq!(
            "10.0.0.1/+8".parse::<InterfaceAddr>(),
            Err(AddressError::BadLength)
        );
        assert_eq!(
            "10.0.0.1/8/8".parse::<InterfaceAddr>(),
            Err(AddressError::BadLength)
        );
        assert_eq!(
            "10.0.0.1/33"
                .parse::<InterfaceAddr>()
                .map_err(|e| e.to_string()),
            Err("prefix length 33 is longer than 32".to_owned())
        );
    }

    #[test]
    fn network_clears_host_bits() {
        assert_eq!(net("10.1.2.3/24").network(), net("10.1.2.0/24"));
        assert_eq!(net("10.1.2.3/0").network(), net("0.0.0.0/0"));
        assert_eq!(net("10.1.2.3/32").network(), net("10.1.2.3/32"));
        assert_eq!(net("fd00:1:2:3::9/48").network(), net("fd00:1:2::/48"));
        assert_eq!(net("fd00::9/0").network(), net("::/0"));
    }

    #[test]
    fn contains_respects_length_and_family() {
        assert!(
            net("10.1.0.0/16").contains(
                "10.1.255.1"
                    .parse()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            )
        );
        assert!(!net("10.1.0.0/16").contains(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))));
        assert!(net("0.0.0.0/0").contains(IpAddr::V4(Ipv4Addr::BROADCAST)));
        assert!(!net("0.0.0.0/0").contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(net("::/0").contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    fn any_net() -> impl Strategy<Value = InterfaceAddr> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| InterfaceAddr {
                addr: IpAddr::V4(Ipv4Addr::from_bits(a)),
                len: l
            }),
            (any::<u128>(), 0u8..=128).prop_map(|(a, l)| InterfaceAddr {
                addr: IpAddr::V6(Ipv6Addr::from_bits(a)),
                len: l
            }),
        ]
    }

    proptest! {
        #[test]
        fn display_then_parse_gives_the_same_prefix(n in any_net()) {
            prop_assert_eq!(n.to_string().parse::<InterfaceAddr>(), Ok(n));
        }

        #[test]
        fn network_is_contained_and_idempotent(n in any_net()) {
            prop_assert!(n.contains(n.addr()));
            prop_assert!(n.contains(n.network().addr()));
            prop_assert_eq!(n.network().network(), n.network());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,60}") {
            let _ = s.parse::<InterfaceAddr>();
        }
    }
}
