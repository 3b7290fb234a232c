//! IP prefixes as `ip` writes them (`10.1.1.2/24`, `fd00::1/64`, a bare
//! address meaning a host prefix), parsed with errors that name the input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The longest prefix of this family (32 or 128).
    pub fn max_len(self) -> u8 {
        match self {
            Family::Ipv4 => 32,
            Family::Ipv6 => 128,
        }
    }

    /// The unspecified address of this family (`0.0.0.0` or `::`).
    pub fn unspecified(self) -> IpAddr {
        match self {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// `inet` or `inet6`, as `ip` prints it.
    pub fn ip_word(self) -> &'static str {
        match self {
            Family::Ipv4 => "inet",
            Family::Ipv6 => "inet6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// An address with a prefix length, host bits kept (`10.1.1.2/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// A prefix, checking the length against the family.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, Error> {
        let family = Family::of(&addr);
        if len > family.max_len() {
            return Err(Error::BadPrefix {
                input: format!("{addr}/{len}"),
                family,
            });
        }
        Ok(IpPrefix { addr, len })
    }

    /// A host prefix (/32 or /128) for one address.
    pub fn host(addr: IpAddr) -> Self {
        IpPrefix {
            addr,
            len: Family::of(&addr).max_len(),
        }
    }

    /// The default route's destination of a family (`0.0.0.0/0`, `::/0`).
    pub fn default_route(family: Family) -> Self {
        IpPrefix {
            addr: family.unspecified(),
            len: 0,
        }
    }

    /// The address, host bits included.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length prefix (a default route's destination).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The family.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// The same prefix with the host bits cleared (`10.1.1.0/24`).
    pub fn network(&self) -> IpPrefix {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        IpPrefix {
            addr,
            len: self.len,
        }
    }

    /// True when `addr` lies inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        Family::of(&addr) == self.family()
            && IpPrefix {
                addr,
                len: self.len,
            }
            .network()
                == self.network()
    }

    /// Parses a route destination: like [`FromStr`], but host bits set
    /// beyond the length are an error (the kernel would refuse them).
    pub fn parse_network(input: &str) -> Result<Self, Error> {
        let prefix: IpPrefix = input.parse()?;
        let network = prefix.network();
        if network != prefix {
            return Err(Error::HostBitsSet {
                input: input.to_string(),
                network: network.to_string(),
            });
        }
        Ok(prefix)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        // The family is guessed from the text so that the error can say
        // which one the input failed to be.
        let family = if input.contains(':') {
            Family::Ipv6
        } else {
            Family::Ipv4
        };
        let bad = || Error::BadPrefix {
            input: input.to_string(),
            family,
        };
        let (addr, len) = match input.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (input, None),
        };
        let addr: IpAddr = match family {
            Family::Ipv4 => IpAddr::V4(addr.parse().map_err(|_| bad())?),
            Family::Ipv6 => IpAddr::V6(addr.parse().map_err(|_| bad())?),
        };
        let len = match len {
            None => family.max_len(),
            // u8::from_str accepts a leading '+'; `ip` does not.
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                len.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if len > family.max_len() {
            return Err(bad());
        }
        Ok(IpPrefix { addr, len })
    }
}

impl Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses an IP address, naming the input on failure.
pub fn parse_addr(input: &str) -> Result<IpAddr, Error> {
    input.parse().map_err(|_| Error::BadAddress {
        input: input.to_string(),
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn prefixes_parse_as_ip_writes_them() {
        let p: IpPrefix = "10.1.1.2/24".parse().unwrap();
        assert_eq!(p.addr(), "10.1.1.2".parse::<IpAddr>().unwrap());
        assert_eq!(p.len(), 24);
        assert_eq!(p.to_string(), "10.1.1.2/24");
        assert_eq!(p.network().to_string(), "10.1.1.0/24");
        let p: IpPrefix = "fd00:1::2/64".parse().unwrap();
        assert_eq!(p.family(), Family::Ipv6);
        assert_eq!(p.network().to_string(), "fd00:1::/64");
        assert_eq!("10.0.0.1".parse::<IpPrefix>().unwrap().len(), 32);
        assert_eq!("::1".parse::<IpPrefix>().unwrap().len(), 128);
        assert_eq!("0.0.0.0/0".parse::<IpPrefix>().unwrap().network().len(), 0);
    }

    #[test]
    fn a_bad_prefix_names_itself_and_its_family() {
        let err = "10.1.1.300/24".parse::<IpPrefix>().unwrap_err();
        assert_eq!(err.to_string(), "10.1.1.300/24 is not an IPv4 prefix");
        let err = "10.1.1.3/33".parse::<IpPrefix>().unwrap_err();
        assert_eq!(err.to_string(), "10.1.1.3/33 is not an IPv4 prefix");
        let err = "fd00::1/129".parse::<IpPrefix>().unwrap_err();
        assert_eq!(err.to_string(), "fd00::1/129 is not an IPv6 prefix");
        for bad in [
            "",
            "/",
            "10.1.1.1/",
            "10.1.1.1/+8",
            "10.1.1.1/ 8",
            "x/8",
            "10.1.1/24",
            "fd00::g/64",
        ] {
            assert!(bad.parse::<IpPrefix>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn route_destinations_refuse_host_bits() {
        let err = IpPrefix::parse_network("10.1.1.5/24").unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.1.1.5/24 has host bits set: did you mean 10.1.1.0/24?"
        );
        assert!(IpPrefix::parse_network("10.1.1.0/24").is_ok());
    }

    #[test]
    fn contains_respects_family_and_length() {
        let p: IpPrefix = "10.1.1.0/24".parse().unwrap();
        assert!(p.contains("10.1.1.200".parse().unwrap()));
        assert!(!p.contains("10.1.2.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        assert!(IpPrefix::default_route(Family::Ipv6).contains("fd00::1".parse().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<IpPrefix>();
            let _ = IpPrefix::parse_network(&s);
        }

        #[test]
        fn display_round_trips(a in proptest::prelude::any::<u32>(), len in 0u8..=32) {
            let p = IpPrefix::new(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap();
            proptest::prop_assert_eq!(p.to_string().parse::<IpPrefix>().unwrap(), p);
        }
    }
}
