//! Just enough of the inner IPv4/IPv6 header to route a packet and check
//! a received one: version, addresses, total length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The fields of an inner packet's IP header that routing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerHeader {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Length of the IP packet by its header (the rest of a buffer is padding).
    pub total_len: usize,
}

/// Parses the IP header at the start of `packet`. None if it is not a
/// complete IPv4 or IPv6 header or claims more bytes than `packet` holds.
#[inline]
pub fn inner_header(packet: &[u8]) -> Option<InnerHeader> {
    match packet.first()? >> 4 {
        4 => {
            let h = packet.get(..20)?;
            let total_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if total_len > packet.len() || total_len < ihl || ihl < 20 {
                return None;
            }
            Some(InnerHeader {
                src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                total_len,
            })
        }
        6 => {
            let h = packet.get(..40)?;
            let total_len = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
            if total_len > packet.len() {
                return None;
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&h[24..40]);
            Some(InnerHeader {
                src: IpAddr::V6(Ipv6Addr::from(s)),
                dst: IpAddr::V6(Ipv6Addr::from(d)),
                total_len,
            })
        }
        _ => None,
    }
}

/// The destination address of an outbound packet, for [`route`](super::Snapshot::route).
/// Only the fixed header is read; the length is not checked.
#[inline]
pub fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let d = packet.get(16..20)?;
            Some(IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])))
        }
        6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(packet.get(24..40)?);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // An ICMP echo request 10.0.0.1 -> 10.0.0.2, 28 bytes (header + 8 bytes ICMP).
    pub(crate) static IPV4_PING: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x66, 0xdd, 10, 0, 0, 1, 10, 0,
        0, 2, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn parses_ipv4_and_ignores_trailing_padding() {
        let mut padded = IPV4_PING.to_vec();
        padded.extend_from_slice(&[0; 4]);
        let h = inner_header(&padded).unwrap();
        assert_eq!(h.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(h.total_len, 28);
        assert_eq!(destination(&IPV4_PING), Some(h.dst));
        assert_eq!(
            inner_header(&IPV4_PING[..27]),
            None,
            "total length beyond the buffer"
        );
    }

    #[test]
    fn parses_ipv6() {
        let mut p = [0u8; 48];
        p[0] = 0x60;
        p[5] = 8;
        p[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        p[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        let h = inner_header(&p).unwrap();
        assert_eq!(h.total_len, 48);
        assert_eq!(h.dst, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(inner_header(&p[..47]), None);
    }

    #[test]
    fn rejects_other_versions_and_short_headers() {
        assert_eq!(inner_header(&[]), None);
        assert_eq!(inner_header(&[0x55; 40]), None);
        assert_eq!(inner_header(&IPV4_PING[..19]), None);
        let mut bad_ihl = IPV4_PING;
        bad_ihl[0] = 0x44;
        assert_eq!(inner_header(&bad_ihl), None);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;
        proptest! {
            #[test]
            fn any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..80)) {
                if let Some(h) = inner_header(&b) {
                    prop_assert!(h.total_len <= b.len());
                    prop_assert_eq!(destination(&b), Some(h.dst));
                }
            }
        }
    }
}
