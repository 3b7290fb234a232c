//! Test fixtures: packets built from a small spec, shaped as the kernel hands
//! them over (super-packets) or as the wire delivers them (whole segments),
//! and an independent verifier (etherparse) for what split produces.

use super::layout::Framing;
use super::vnet::{GsoType, VnetHeader};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// What a test packet looks like.
#[derive(Clone, Debug)]
pub struct Spec {
    pub v6: bool,
    pub tcp: bool,
    /// IPv4 options (a multiple of 4 bytes); ignored for IPv6.
    pub ip_options: Vec<u8>,
    /// TCP options (a multiple of 4 bytes).
    pub tcp_options: Vec<u8>,
    pub payload: usize,
    /// Seed of the payload pattern.
    pub fill: u8,
    pub gso_size: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub ip_id: u16,
    pub tos: u8,
    pub ttl: u8,
    pub sport: u16,
    pub dport: u16,
    pub src4: [u8; 4],
    pub dst4: [u8; 4],
    pub src6: [u8; 16],
    pub dst6: [u8; 16],
    /// One 802.1Q tag in the Ethernet framing.
    pub vlan: bool,
}

impl Spec {
    pub fn tcp4() -> Spec {
        Spec {
            v6: false,
            tcp: true,
            ip_options: Vec::new(),
            tcp_options: Vec::new(),
            payload: 3000,
            fill: 7,
            gso_size: 1380,
            flags: ACK,
            seq: 0xfffff000,
            ack: 0x01020304,
            window: 512,
            ip_id: 0xfffe,
            tos: 0,
            ttl: 64,
            sport: 40000,
            dport: 5201,
            src4: [10, 0, 0, 1],
            dst4: [10, 0, 0, 2],
            src6: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            dst6: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            vlan: false,
        }
    }
    pub fn tcp6() -> Spec {
        Spec {
            v6: true,
            ..Spec::tcp4()
        }
    }
    pub fn udp4() -> Spec {
        Spec {
            tcp: false,
            flags: 0,
            ..Spec::tcp4()
        }
    }
    pub fn udp6() -> Spec {
        Spec {
            v6: true,
            ..Spec::udp4()
        }
    }

    pub fn ip_header_len(&self) -> usize {
        if self.v6 {
            40
        } else {
            20 + self.ip_options.len()
        }
    }
    pub fn l4_header_len(&self) -> usize {
        if self.tcp {
            20 + self.tcp_options.len()
        } else {
            8
        }
    }
    /// IP and L4 headers (no link header).
    pub fn headers_len(&self) -> usize {
        self.ip_header_len() + self.l4_header_len()
    }
    pub fn payload_bytes(&self) -> Vec<u8> {
        (0..self.payload)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(self.fill))
            .collect()
    }
    /// The same flow, `bytes` further on in sequence and payload pattern.
    pub fn advanced(&self, bytes: usize) -> Spec {
        let mut s = self.clone();
        s.seq = s.seq.wrapping_add(bytes as u32);
        s.fill = s.fill.wrapping_add(bytes as u8);
        s
    }
}

/// The raw packet with every length field set for its full size and the L4
/// checksum field zero.
fn raw_packet(spec: &Spec) -> Vec<u8> {
    let ihl = spec.ip_header_len();
    let l4_len = spec.l4_header_len() + spec.payload;
    let mut p = Vec::with_capacity(ihl + l4_len);
    if spec.v6 {
        p.push(0x60 | (spec.tos >> 4));
        p.extend_from_slice(&[spec.tos << 4, 0x12, 0x34]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.push(if spec.tcp { 6 } else { 17 });
        p.push(spec.ttl);
        p.extend_from_slice(&spec.src6);
        p.extend_from_slice(&spec.dst6);
    } else {
        p.push(0x40 | (ihl / 4) as u8);
        p.push(spec.tos);
        p.extend_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
        p.extend_from_slice(&spec.ip_id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0]); // DF
        p.push(spec.ttl);
        p.push(if spec.tcp { 6 } else { 17 });
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&spec.src4);
        p.extend_from_slice(&spec.dst4);
        p.extend_from_slice(&spec.ip_options);
        let c = crate::offload::checksum::checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p.extend_from_slice(&spec.sport.to_be_bytes());
    p.extend_from_slice(&spec.dport.to_be_bytes());
    if spec.tcp {
        p.extend_from_slice(&spec.seq.to_be_bytes());
        p.extend_from_slice(&spec.ack.to_be_bytes());
        p.push((((20 + spec.tcp_options.len()) / 4) << 4) as u8);
        p.push(spec.flags);
        p.extend_from_slice(&spec.window.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&spec.tcp_options);
    } else {
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    }
    p.extend_from_slice(&spec.payload_bytes());
    p
}

/// The pseudo-header sum (folded, not complemented) for the packet's L4 length,
/// as the kernel leaves it in a CHECKSUM_PARTIAL packet (computed bytewise).
fn partial_pseudo(spec: &Spec, l4_len: usize) -> u16 {
    let mut words: Vec<u8> = Vec::new();
    if spec.v6 {
        words.extend_from_slice(&spec.src6);
        words.extend_from_slice(&spec.dst6);
        words.extend_from_slice(&(l4_len as u32).to_be_bytes());
    } else {
        words.extend_from_slice(&spec.src4);
        words.extend_from_slice(&spec.dst4);
        words.extend_from_slice(&(l4_len as u16).to_be_bytes());
    }
    words.extend_from_slice(&[0, if spec.tcp { 6 } else { 17 }]);
    let mut s: u32 = 0;
    for w in words.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A super-packet as TUN hands it over: NEEDS_CSUM with the pseudo-header
/// sum in the L4 checksum field, GSO type by spec, `hdr_len` = headers.
pub fn super_packet(spec: &Spec) -> (VnetHeader, Vec<u8>) {
    let mut p = raw_packet(spec);
    let l4 = spec.ip_header_len();
    let csum_offset = if spec.tcp { 16 } else { 6 };
    let partial = partial_pseudo(spec, p.len() - l4);
    p[l4 + csum_offset..l4 + csum_offset + 2].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHeader {
        needs_csum: true,
        data_valid: false,
        gso_type: match (spec.tcp, spec.v6) {
            (true, false) => GsoType::TcpV4,
            (true, true) => GsoType::TcpV6,
            (false, _) => GsoType::UdpL4,
        },
        ecn: spec.tcp && spec.flags & CWR != 0,
        hdr_len: spec.headers_len() as u16,
        gso_size: spec.gso_size,
        csum_start: l4 as u16,
        csum_offset: csum_offset as u16,
    };
    (hdr, p)
}

fn eth_header(spec: &Spec) -> Vec<u8> {
    let mut e = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    if spec.vlan {
        e.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
    }
    e.extend_from_slice(if spec.v6 {
        &[0x86, 0xdd]
    } else {
        &[0x08, 0x00]
    });
    e
}

/// A TAP super-frame: Ethernet header (and tag) in front, `csum_start` shifted.
pub fn super_packet_eth(spec: &Spec) -> (VnetHeader, Vec<u8>) {
    let (mut hdr, p) = super_packet(spec);
    let mut f = eth_header(spec);
    hdr.csum_start += f.len() as u16;
    hdr.hdr_len += f.len() as u16;
    f.extend_from_slice(&p);
    (hdr, f)
}

/// A packet as it arrives from the wire: complete checksums (computed by
/// etherparse, independently of ours).
pub fn wire_packet(spec: &Spec) -> Vec<u8> {
    let mut p = raw_packet(spec);
    let l4 = spec.ip_header_len();
    let c = l4_checksum_etherparse(&p, 0);
    let at = l4 + if spec.tcp { 16 } else { 6 };
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// A wire packet in an Ethernet frame.
pub fn wire_frame(spec: &Spec) -> Vec<u8> {
    let mut f = eth_header(spec);
    f.extend_from_slice(&wire_packet(spec));
    f
}

/// The L4 checksum etherparse computes for the IP packet at `link` in `pkt`.
fn l4_checksum_etherparse(pkt: &[u8], link: usize) -> u16 {
    let sliced = SlicedPacket::from_ip(&pkt[link..]).expect("etherparse parses the fixture");
    let (v4, v6) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            Some((ip.header().source(), ip.header().destination())),
            None,
        ),
        Some(NetSlice::Ipv6(ip)) => (
            None,
            Some((ip.header().source(), ip.header().destination())),
        ),
        _ => panic!("fixture is not IP"),
    };
    match (&sliced.transport, v4, v6) {
        (Some(TransportSlice::Tcp(t)), Some((s, d)), _) => t.calc_checksum_ipv4(s, d).unwrap(),
        (Some(TransportSlice::Tcp(t)), _, Some((s, d))) => t.calc_checksum_ipv6(s, d).unwrap(),
        (Some(TransportSlice::Udp(u)), Some((s, d)), _) => u
            .to_header()
            .calc_checksum_ipv4_raw(s, d, u.payload())
            .unwrap(),
        (Some(TransportSlice::Udp(u)), _, Some((s, d))) => u
            .to_header()
            .calc_checksum_ipv6_raw(s, d, u.payload())
            .unwrap(),
        _ => panic!("fixture is not TCP or UDP"),
    }
}

/// What the verifier read from one segment.
#[derive(Debug)]
pub struct SegInfo {
    pub seq: u32,
    pub ip_id: Option<u16>,
    pub fin: bool,
    pub psh: bool,
    pub cwr: bool,
    pub payload_len: usize,
    pub udp_len: Option<u16>,
}

/// Checks one segment with etherparse: IPv4 header checksum, IP length
/// fields, TCP/UDP checksum and UDP length. Panics with what differed.
pub fn verify_segment(seg: &[u8], framing: Framing) -> SegInfo {
    let sliced = match framing {
        Framing::Ip => SlicedPacket::from_ip(seg),
        Framing::Ethernet => SlicedPacket::from_ethernet(seg),
    }
    .unwrap_or_else(|e| panic!("etherparse rejects the segment: {e:?}"));
    let link = seg.len() - ip_len(&sliced);
    let mut info = SegInfo {
        seq: 0,
        ip_id: None,
        fin: false,
        psh: false,
        cwr: false,
        payload_len: 0,
        udp_len: None,
    };
    match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "IPv4 header checksum"
            );
            assert_eq!(
                usize::from(h.total_len()),
                seg.len() - link,
                "IPv4 total length"
            );
            info.ip_id = Some(h.identification());
        }
        Some(NetSlice::Ipv6(ip)) => {
            assert_eq!(
                usize::from(ip.header().payload_length()),
                seg.len() - link - 40,
                "IPv6 payload length"
            );
        }
        other => panic!("not IP: {other:?}"),
    }
    let want = l4_checksum_etherparse(seg, link);
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            let got = t.checksum();
            assert!(
                got == want || (want == 0 && got == 0xffff),
                "TCP checksum: etherparse computes {want:#06x}, segment has {got:#06x}"
            );
            info.seq = t.sequence_number();
            info.fin = t.fin();
            info.psh = t.psh();
            info.cwr = t.cwr();
            info.payload_len = t.payload().len();
        }
        Some(TransportSlice::Udp(u)) => {
            assert_eq!(u.checksum(), want, "UDP checksum");
            assert_eq!(usize::from(u.length()), u.slice().len(), "UDP length");
            info.udp_len = Some(u.length());
            info.payload_len = u.payload().len();
        }
        other => panic!("not TCP/UDP: {other:?}"),
    }
    info
}

fn ip_len(sliced: &SlicedPacket<'_>) -> usize {
    match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => usize::from(ip.header().total_len()),
        Some(NetSlice::Ipv6(ip)) => 40 + usize::from(ip.header().payload_length()),
        _ => 0,
    }
}

/// Specs of super-packets split can take: IPv4/IPv6 × TCP/UDP, options,
/// flags, payload up to what 64 segments and 64 KiB allow.
pub fn any_spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        0usize..=10,
        0usize..=10,
        1u16..=1500,
        any::<u32>(),
        any::<u16>(),
        prop::sample::select(vec![
            ACK,
            ACK | PSH,
            ACK | FIN,
            ACK | PSH | FIN,
            ACK | CWR,
            ACK | ECE,
        ]),
        any::<u8>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(v6, tcp, ipo, tcpo, gso, seq, id, flags, fill, size)| {
            let base = Spec {
                v6,
                tcp,
                ip_options: vec![1; ipo * 4],
                tcp_options: if tcp { vec![1; tcpo * 4] } else { Vec::new() },
                gso_size: gso,
                seq,
                ip_id: id,
                flags: if tcp { flags } else { 0 },
                fill,
                ..Spec::tcp4()
            };
            let max = (usize::from(gso) * super::MAX_SEGMENTS).min(65535 - base.headers_len());
            Spec {
                payload: size.index(max + 1),
                ..base
            }
        })
}
