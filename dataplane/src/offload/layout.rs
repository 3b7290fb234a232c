//! Where the headers of a TCP or UDP packet sit: the checked parse that split
//! and coalesce share. Every offset it returns has been bounds-checked against
//! the buffer, so the code that uses a [`Layout`] indexes without failing.

use super::OffloadError;
use super::checksum::{IPPROTO_TCP, IPPROTO_UDP};

/// How packets are framed on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Framing {
    /// A TUN device: each packet starts with its IP header.
    #[default]
    Ip,
    /// A TAP device: each frame starts with an Ethernet header (at most one
    /// 802.1Q/802.1ad tag), which every segment repeats verbatim.
    Ethernet,
}

/// Length of an untagged Ethernet header: destination and source MAC, EtherType
/// (IEEE 802.3). What a TAP frame carries in front of its IP packet.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// Length of one 802.1Q/802.1ad tag: TPID and TCI (IEEE 802.1Q).
pub(crate) const VLAN_TAG_LEN: usize = 4;
/// Length of an Ethernet header with one VLAN tag, the longest link header
/// [`Framing::Ethernet`] accepts.
pub const ETHERNET_VLAN_HEADER_LEN: usize = ETHERNET_HEADER_LEN + VLAN_TAG_LEN;
/// Offset of the EtherType (or the TPID of a tag) in an Ethernet header.
pub(crate) const ETHERTYPE_OFFSET: usize = 12;
/// EtherType of IPv4.
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
/// TPID of an 802.1Q tag.
pub(crate) const ETHERTYPE_VLAN: u16 = 0x8100;
/// TPID of an 802.1ad (QinQ) tag.
pub(crate) const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Minimum IPv4 header (RFC 791).
pub(crate) const IPV4_MIN_HDR: usize = 20;
/// Fixed IPv6 header (RFC 8200).
pub(crate) const IPV6_HDR: usize = 40;
/// Minimum TCP header (RFC 9293).
pub(crate) const TCP_MIN_HDR: usize = 20;
/// UDP header (RFC 768).
pub(crate) const UDP_HDR: usize = 8;
/// Offset of the checksum in a TCP header.
pub(crate) const TCP_CSUM_OFFSET: usize = 16;
/// Offset of the checksum in a UDP header.
pub(crate) const UDP_CSUM_OFFSET: usize = 6;
/// The largest IP packet the 16-bit length fields (and the 64 KiB buffers) allow.
pub(crate) const MAX_IP_PACKET: usize = 65535;

/// The transport protocols that segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    pub(crate) fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => IPPROTO_TCP,
            L4Proto::Udp => IPPROTO_UDP,
        }
    }

    pub(crate) fn csum_offset(self) -> usize {
        match self {
            L4Proto::Tcp => TCP_CSUM_OFFSET,
            L4Proto::Udp => UDP_CSUM_OFFSET,
        }
    }
}

/// Offsets into one packet, all within its buffer: `l3 <= l4 < payload <= end <= len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Start of the IP header (0 on TUN, [`ETHERNET_HEADER_LEN`] or
    /// [`ETHERNET_VLAN_HEADER_LEN`] on TAP).
    pub l3: usize,
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// Start of the TCP/UDP header.
    pub l4: usize,
    /// Start of the L4 payload: the length of all headers.
    pub payload: usize,
    /// End of the IP packet by its own length field; bytes after it are padding.
    pub end: usize,
    /// TCP or UDP.
    pub proto: L4Proto,
}

impl Layout {
    /// Byte range of the source and destination addresses.
    pub(crate) fn addrs(&self) -> core::ops::Range<usize> {
        if self.v6 {
            self.l3 + 8..self.l3 + 40
        } else {
            self.l3 + 12..self.l3 + 20
        }
    }

    /// Payload bytes of the packet.
    pub(crate) fn payload_len(&self) -> usize {
        self.end - self.payload
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn need(what: &'static str, needed: usize, got: usize) -> Result<(), OffloadError> {
    if got < needed {
        Err(OffloadError::Truncated { what, needed, got })
    } else {
        Ok(())
    }
}

/// Parses the link, IP and TCP/UDP headers of `pkt`.
///
/// Accepts IPv4 with options (not fragments) and IPv6 without extension
/// headers, carrying TCP or UDP; anything else is a typed error.
pub(crate) fn parse(pkt: &[u8], framing: Framing) -> Result<Layout, OffloadError> {
    let (l3, ethertype) = match framing {
        Framing::Ip => (0, None),
        Framing::Ethernet => {
            need("Ethernet header", ETHERNET_HEADER_LEN, pkt.len())?;
            match be16(pkt, ETHERTYPE_OFFSET) {
                ETHERTYPE_VLAN | ETHERTYPE_QINQ => {
                    need("VLAN tag", ETHERNET_VLAN_HEADER_LEN, pkt.len())?;
                    let inner = be16(pkt, ETHERTYPE_OFFSET + VLAN_TAG_LEN);
                    (ETHERNET_VLAN_HEADER_LEN, Some(inner))
                }
                t => (ETHERNET_HEADER_LEN, Some(t)),
            }
        }
    };
    need("IP header", l3 + 1, pkt.len())?;
    let version = pkt[l3] >> 4;
    match (ethertype, version) {
        (None | Some(ETHERTYPE_IPV4), 4) => parse_v4(pkt, l3),
        (None | Some(ETHERTYPE_IPV6), 6) => parse_v6(pkt, l3),
        (None, v) => Err(OffloadError::BadIpVersion(v)),
        (Some(t @ (ETHERTYPE_IPV4 | ETHERTYPE_IPV6)), v) => Err(OffloadError::EtherTypeMismatch {
            ethertype: t,
            version: v,
        }),
        (Some(t), _) => Err(OffloadError::UnsupportedEtherType(t)),
    }
}

fn parse_v4(pkt: &[u8], l3: usize) -> Result<Layout, OffloadError> {
    need("IPv4 header", l3 + IPV4_MIN_HDR, pkt.len())?;
    let ihl = usize::from(pkt[l3] & 0x0f) * 4;
    if ihl < IPV4_MIN_HDR {
        return Err(OffloadError::BadIpv4HeaderLength(ihl));
    }
    need("IPv4 options", l3 + ihl, pkt.len())?;
    let total = usize::from(be16(pkt, l3 + 2));
    if total < ihl {
        return Err(OffloadError::BadIpv4TotalLength { total, header: ihl });
    }
    need("IPv4 packet", l3 + total, pkt.len())?;
    let frag = be16(pkt, l3 + 6);
    // MF set or a non-zero offset: a fragment has no (or a partial) L4 header.
    if frag & 0x3fff != 0 {
        return Err(OffloadError::Ipv4Fragment);
    }
    let proto = match pkt[l3 + 9] {
        IPPROTO_TCP => L4Proto::Tcp,
        IPPROTO_UDP => L4Proto::Udp,
        p => return Err(OffloadError::UnsupportedProtocol(p)),
    };
    parse_l4(pkt, l3, false, l3 + ihl, l3 + total, proto)
}

fn parse_v6(pkt: &[u8], l3: usize) -> Result<Layout, OffloadError> {
    need("IPv6 header", l3 + IPV6_HDR, pkt.len())?;
    let payload_len = usize::from(be16(pkt, l3 + 4));
    need("IPv6 packet", l3 + IPV6_HDR + payload_len, pkt.len())?;
    let proto = match pkt[l3 + 6] {
        IPPROTO_TCP => L4Proto::Tcp,
        IPPROTO_UDP => L4Proto::Udp,
        nh => return Err(OffloadError::UnsupportedIpv6NextHeader(nh)),
    };
    parse_l4(
        pkt,
        l3,
        true,
        l3 + IPV6_HDR,
        l3 + IPV6_HDR + payload_len,
        proto,
    )
}

fn parse_l4(
    pkt: &[u8],
    l3: usize,
    v6: bool,
    l4: usize,
    end: usize,
    proto: L4Proto,
) -> Result<Layout, OffloadError> {
    let payload = match proto {
        L4Proto::Tcp => {
            need("TCP header", l4 + TCP_MIN_HDR, end)?;
            let doff = usize::from(pkt[l4 + 12] >> 4) * 4;
            if doff < TCP_MIN_HDR {
                return Err(OffloadError::BadTcpHeaderLength(doff));
            }
            need("TCP options", l4 + doff, end)?;
            l4 + doff
        }
        L4Proto::Udp => {
            need("UDP header", l4 + UDP_HDR, end)?;
            l4 + UDP_HDR
        }
    };
    Ok(Layout {
        l3,
        v6,
        l4,
        payload,
        end,
        proto,
    })
}

#[cfg(test)]
mod test {
    use super::*;

    /// IPv4/TCP, 20-byte IP header, 20-byte TCP header, 4 bytes of payload.
    static TCP4: [u8; 44] = [
        0x45, 0x00, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 0, 1, 10, 0,
        0, 2, 0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
        b'd', b'a', b't', b'a',
    ];

    #[test]
    fn parses_tcp4_offsets() {
        let l = parse(&TCP4, Framing::Ip).unwrap();
        assert_eq!(
            l,
            Layout {
                l3: 0,
                v6: false,
                l4: 20,
                payload: 40,
                end: 44,
                proto: L4Proto::Tcp
            }
        );
        assert_eq!(l.addrs(), 12..20);
    }

    #[test]
    fn trailing_padding_is_outside_the_packet() {
        let mut padded = TCP4.to_vec();
        padded.extend_from_slice(&[0; 12]);
        assert_eq!(parse(&padded, Framing::Ip).unwrap().end, 44);
    }

    #[test]
    fn ethernet_and_vlan_framing_shift_l3() {
        let mut frame = vec![0xaa; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&TCP4);
        assert_eq!(parse(&frame, Framing::Ethernet).unwrap().l4, 34);
        let mut tagged = vec![0xaa; 12];
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        tagged.extend_from_slice(&TCP4);
        let l = parse(&tagged, Framing::Ethernet).unwrap();
        assert_eq!((l.l3, l.l4, l.end), (18, 38, 62));
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            parse(&arp, Framing::Ethernet),
            Err(OffloadError::UnsupportedEtherType(0x0806))
        );
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let mut p = TCP4;
        p[0] = 0x44;
        assert_eq!(
            parse(&p, Framing::Ip),
            Err(OffloadError::BadIpv4HeaderLength(16))
        );
        let mut p = TCP4;
        p[0] = 0x55;
        assert_eq!(parse(&p, Framing::Ip), Err(OffloadError::BadIpVersion(5)));
        let mut p = TCP4;
        p[6] = 0x20; // MF
        assert_eq!(parse(&p, Framing::Ip), Err(OffloadError::Ipv4Fragment));
        let mut p = TCP4;
        p[9] = 1;
        assert_eq!(
            parse(&p, Framing::Ip),
            Err(OffloadError::UnsupportedProtocol(1))
        );
        let mut p = TCP4;
        p[32] = 0x40;
        assert_eq!(
            parse(&p, Framing::Ip),
            Err(OffloadError::BadTcpHeaderLength(16))
        );
        let mut p = TCP4;
        p[32] = 0x70; // 28-byte TCP header does not fit in 24 bytes
        assert_eq!(
            parse(&p, Framing::Ip),
            Err(OffloadError::Truncated {
                what: "TCP options",
                needed: 48,
                got: 44
            })
        );
        assert_eq!(
            parse(&TCP4[..43], Framing::Ip),
            Err(OffloadError::Truncated {
                what: "IPv4 packet",
                needed: 44,
                got: 43
            })
        );
    }
}
