//! The hash of an encapsulated frame's or packet's inner flow, and how its
//! first packet opens it: by them [`SourcePorts`](super::SourcePorts)
//! gives each inner flow one of the flow sockets, each bound to a port of
//! its own, so that one inner flow always leaves from one port (its order
//! kept) and different flows spread over the receiver's `SO_REUSEPORT`
//! workers and over ECMP paths in between. RFC 7348 §5 asks
//! this of a VTEP; the kernel's VXLAN does it with `udp_flow_src_port`.
//! In wireguard mode it is done only toward a peer that is a ringtun and
//! says so (`SpreadFlows`): the outer source port is all that the
//! receiver's hash sees of a site, so without it one peer is one
//! receiving worker.
//!
//! The hash covers what the kernel's flow dissector would: for an IPv4 or
//! IPv6 packet its addresses, protocol and, for TCP, UDP, UDP-Lite and
//! SCTP, its ports (not for a fragment, whose later pieces carry none);
//! for anything else the Ethernet addresses and EtherType. Both
//! directions of one TCP connection may well leave from different ports:
//! each direction only has to keep to its own.

use crate::offload::layout::{
    ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_OFFSET, ETHERTYPE_QINQ,
    ETHERTYPE_VLAN, IPV4_MIN_HDR, IPV6_HDR, VLAN_TAG_LEN,
};

/// Flow sockets per address family, shared by every worker. What spreads
/// a peer's traffic over the receiver's workers is the number of distinct
/// source ports, whichever worker sends: each port lands on one receiving
/// worker by the receiver's hash, so with `P` ports a worker's share of
/// many flows is off by about `sqrt(1/P)/2` from an even half on a
/// two-worker receiver (0.07 at 32, against 0.14 at 8). Few flows are
/// spread no better than chance allows however many ports there are
/// (8 flows over 2 workers: 3 to 5 on each in 72% of draws with the
/// kernel's 28,000 ports, 65% with 32, 53% with 8). 32 sockets cost 32
/// descriptors per family, whatever the worker count.
pub const FLOW_PORTS: usize = 32;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Multiplier of the mixing step (the 64-bit golden ratio, as FxHash).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// Accumulates words of a flow key.
#[derive(Clone, Copy)]
struct Key(u64);

impl Key {
    #[inline]
    fn add(self, word: u64) -> Key {
        Key((self.0.rotate_left(5) ^ word).wrapping_mul(MIX))
    }

    #[inline]
    fn add_bytes(mut self, b: &[u8]) -> Key {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self = self.add(u64::from_ne_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self = self.add(u64::from_ne_bytes(w));
        }
        self
    }

    /// The murmur3 finaliser: the multiply-rotate steps leave the low
    /// bits weak, and [`pick`] reads the high ones after a multiply.
    #[inline]
    fn finish(self) -> u32 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        (h >> 32) as u32
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The hash of the inner flow of an Ethernet frame (see the module docs).
/// Any bytes are accepted: what cannot be parsed as IP is hashed as
/// Ethernet, and a frame too short even for that hashes what it has.
/// Cost: a look at the headers only, no allocation.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let (ethertype, l3) = match network_layer(frame) {
        Ok(at) => at,
        Err(Truncated::NoEtherType) => return Key(0).add_bytes(frame).finish(),
        Err(Truncated::InTag) => return ethernet(frame),
    };
    let ip = &frame[l3..];
    let key = match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip),
        ETHERTYPE_IPV6 => ipv6(ip),
        _ => None,
    };
    match key {
        Some(k) => k.finish(),
        None => ethernet(frame),
    }
}

/// The hash of the inner flow of an IP packet (a TUN's framing), as
/// [`flow_hash`] takes the IP packet in a frame. Anything that is not
/// IPv4 or IPv6 hashes its first bytes. Cost: a look at the headers only.
pub fn packet_flow_hash(pkt: &[u8]) -> u32 {
    let key = match pkt.first().map(|b| b >> 4) {
        Some(4) => ipv4(pkt),
        Some(6) => ipv6(pkt),
        _ => None,
    };
    match key {
        Some(k) => k.finish(),
        None => Key(2)
            .add_bytes(&pkt[..pkt.len().min(IPV4_MIN_HDR)])
            .finish(),
    }
}

/// How the first packet of a flow that a gateway sees opens it: the
/// class by which [`SourcePorts`](super::SourcePorts) gives out ports in
/// turn. The two directions of TCP connections carry different loads (a
/// request one way, a reply the other): with one turn for all, connections
/// opened alternately from each site would put every opening direction on
/// even ports and every answering one on odd ports, so on one receiving
/// worker each. A turn per class spreads each evenly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Opening {
    /// Anything else: UDP, ICMP, a TCP flow first seen mid-stream.
    #[default]
    Other,
    /// A TCP SYN: this direction opens the connection.
    Syn,
    /// A TCP SYN-ACK: this direction answers.
    SynAck,
}

impl Opening {
    /// Every class, in the order of [`index`](Self::index).
    pub const COUNT: usize = Opening::SynAck as usize + 1;

    /// The class's place in a table of [`COUNT`](Self::COUNT).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How the IP packet `pkt` (IPv4 or IPv6) would open a flow. Cost: a
/// look at the headers; an IPv6 packet with extension headers is `Other`.
pub fn packet_opening(pkt: &[u8]) -> Opening {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let l4 = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= IPV4_MIN_HDR => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0;
            (pkt[9] == IPPROTO_TCP && !fragment && ihl >= IPV4_MIN_HDR)
                .then(|| pkt.get(ihl..))
                .flatten()
        }
        Some(6) if pkt.len() >= IPV6_HDR => (pkt[6] == IPPROTO_TCP)
            .then(|| pkt.get(IPV6_HDR..))
            .flatten(),
        _ => None,
    };
    match l4.and_then(|t| t.get(13)).map(|f| f & (SYN | ACK)) {
        Some(SYN) => Opening::Syn,
        Some(f) if f == SYN | ACK => Opening::SynAck,
        _ => Opening::Other,
    }
}

/// How the Ethernet frame `frame` would open a flow, as
/// [`packet_opening`] for the IP packet it carries.
pub fn frame_opening(frame: &[u8]) -> Opening {
    match network_layer(frame) {
        Ok((ETHERTYPE_IPV4 | ETHERTYPE_IPV6, l3)) => packet_opening(&frame[l3..]),
        _ => Opening::Other,
    }
}

/// Where a frame ends before its network layer.
enum Truncated {
    /// Before its EtherType.
    NoEtherType,
    /// Inside its VLAN tag.
    InTag,
}

/// A frame's EtherType and where its network header starts, past one
/// VLAN tag.
fn network_layer(frame: &[u8]) -> Result<(u16, usize), Truncated> {
    let ethertype = be16(frame, ETHERTYPE_OFFSET).ok_or(Truncated::NoEtherType)?;
    if ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        let inner = be16(frame, ETHERTYPE_OFFSET + VLAN_TAG_LEN).ok_or(Truncated::InTag)?;
        return Ok((inner, ETHERNET_HEADER_LEN + VLAN_TAG_LEN));
    }
    Ok((ethertype, ETHERNET_HEADER_LEN))
}

/// The link-layer key: destination and source MAC, EtherType.
fn ethernet(frame: &[u8]) -> u32 {
    let n = frame.len().min(ETHERNET_HEADER_LEN);
    Key(1).add_bytes(&frame[..n]).finish()
}

/// Ports of a transport that has them, at the start of `l4`.
fn ports(proto: u8, l4: &[u8]) -> u64 {
    match proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_UDPLITE => l4.get(..4).map_or(0, |p| {
            u64::from(u32::from_ne_bytes([p[0], p[1], p[2], p[3]]))
        }),
        _ => 0,
    }
}

fn ipv4(ip: &[u8]) -> Option<Key> {
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IPV4_MIN_HDR || ip.len() < IPV4_MIN_HDR {
        return None;
    }
    let proto = ip[9];
    // More fragments, or an offset: only the first piece has the ports.
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    let ports = if fragment {
        0
    } else {
        ip.get(ihl..).map_or(0, |l4| ports(proto, l4))
    };
    Some(
        Key(4)
            .add_bytes(&ip[12..20])
            .add(u64::from(proto))
            .add(ports),
    )
}

fn ipv6(ip: &[u8]) -> Option<Key> {
    if ip.len() < IPV6_HDR || ip[0] >> 4 != 6 {
        return None;
    }
    // Extension headers are not walked: such a packet hashes without its
    // ports, which keeps its flow on one port all the same.
    let next = ip[6];
    Some(
        Key(6)
            .add_bytes(&ip[8..IPV6_HDR])
            .add(u64::from(next))
            .add(ports(next, &ip[IPV6_HDR..])),
    )
}

/// The hash of the outer flow a receive came in on: the sender's address
/// and port, all that a sealed datagram shows of its inner flow (a peer
/// that spreads its flows sends each from a port of its own).
pub fn sender_hash(from: &std::net::SocketAddr) -> u32 {
    let key = match from.ip() {
        std::net::IpAddr::V4(a) => Key(8).add_bytes(&a.octets()),
        std::net::IpAddr::V6(a) => Key(10).add_bytes(&a.octets()),
    };
    key.add(u64::from(from.port())).finish()
}

/// Which of `n` flow sockets a flow of hash `hash` leaves from: the hash
/// scaled onto `0..n` (a multiply, not a division; the kernel's
/// `reciprocal_scale`).
#[inline]
pub fn pick(hash: u32, n: usize) -> usize {
    ((u64::from(hash) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod test {
    use super::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    /// A frame from A to B: Ethernet, then IPv4 with `proto`, then the
    /// ports (and some payload).
    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        ip4(src, dst, IPPROTO_TCP, sport, dport, 0)
    }

    fn ip4(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0x5a; 36]);
        f
    }

    fn tcp6(src_last: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC_B);
        f.extend_from_slice(&MAC_A);
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let mut ip = [0u8; 40];
        ip[0] = 0x60;
        ip[6] = IPPROTO_TCP;
        ip[8] = 0xfd;
        ip[23] = src_last;
        ip[24] = 0xfd;
        ip[39] = 2;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    /// A small deterministic generator (xorshift64*) for the samples.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn one_flow_always_leaves_from_one_port_whatever_it_carries() {
        let a = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 5201);
        let mut b = a.clone();
        b[40..].fill(0xee);
        b.truncate(50);
        assert_eq!(
            flow_hash(&a),
            flow_hash(&b),
            "payload and length are not part of the flow"
        );
        let mut ttl = a.clone();
        ttl[14 + 8] = 3;
        assert_eq!(flow_hash(&a), flow_hash(&ttl), "nor the TTL");
        assert_eq!(pick(flow_hash(&a), 32), pick(flow_hash(&b), 32));
    }

    #[test]
    fn a_packet_hashes_as_the_same_packet_in_a_frame() {
        for frame in [
            tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 5201),
            tcp6(7, 40000, 5201),
        ] {
            let pkt = &frame[ETHERNET_HEADER_LEN..];
            assert_eq!(packet_flow_hash(pkt), flow_hash(&frame));
        }
        let a = packet_flow_hash(&tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 5201)[14..]);
        let b = packet_flow_hash(&tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40001, 5201)[14..]);
        assert_ne!(a, b, "another port, another flow");
        // Not IP, or nothing at all: still a hash, and no panic.
        assert_eq!(packet_flow_hash(&[0x10; 30]), packet_flow_hash(&[0x10; 30]));
        let _ = packet_flow_hash(&[]);
        let _ = packet_flow_hash(&[0x45]);
        let _ = packet_flow_hash(&[0x60, 0]);
    }

    #[test]
    fn every_part_of_the_five_tuple_counts() {
        let base = flow_hash(&tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 5201));
        for (what, other) in [
            (
                "source address",
                tcp4([10, 0, 0, 3], [10, 0, 0, 2], 40000, 5201),
            ),
            (
                "destination",
                tcp4([10, 0, 0, 1], [10, 0, 0, 4], 40000, 5201),
            ),
            (
                "source port",
                tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40001, 5201),
            ),
            (
                "destination port",
                tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 5202),
            ),
            (
                "protocol",
                ip4([10, 0, 0, 1], [10, 0, 0, 2], IPPROTO_UDP, 40000, 5201, 0),
            ),
        ] {
            assert_ne!(flow_hash(&other), base, "a different {what}, the same hash");
        }
        assert_ne!(
            flow_hash(&tcp6(1, 40000, 5201)),
            flow_hash(&tcp6(1, 40001, 5201))
        );
        assert_ne!(
            flow_hash(&tcp6(1, 40000, 5201)),
            flow_hash(&tcp6(3, 40000, 5201))
        );
    }

    #[test]
    fn a_tagged_frame_hashes_its_ip_flow() {
        let plain = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 5201);
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        tagged.extend_from_slice(&plain[12..]);
        let mut other = tagged.clone();
        other[14 + 4 + 20] ^= 1; // the source port
        assert_ne!(
            flow_hash(&tagged),
            flow_hash(&other),
            "the ports behind the tag count"
        );
    }

    #[test]
    fn fragments_of_one_datagram_share_a_port() {
        let (s, d) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let first = ip4(s, d, IPPROTO_UDP, 40000, 5201, 0x2000);
        // A later piece: an offset, and payload where the ports were.
        let later = ip4(s, d, IPPROTO_UDP, 0x1234, 0x5678, 185);
        assert_eq!(flow_hash(&first), flow_hash(&later));
        let whole = ip4(s, d, IPPROTO_UDP, 40000, 5201, 0x4000); // DF only
        assert_ne!(
            flow_hash(&whole),
            flow_hash(&ip4(s, d, IPPROTO_UDP, 40001, 5201, 0x4000)),
            "an unfragmented datagram keeps its ports"
        );
    }

    #[test]
    fn frames_that_are_not_ip_hash_their_ethernet_header() {
        let mut arp = vec![0u8; 42];
        arp[..6].fill(0xff);
        arp[6..12].copy_from_slice(&MAC_A);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        let mut other_body = arp.clone();
        other_body[20..].fill(7);
        assert_eq!(
            flow_hash(&arp),
            flow_hash(&other_body),
            "only the Ethernet header counts"
        );
        let mut from_b = arp.clone();
        from_b[6..12].copy_from_slice(&MAC_B);
        assert_ne!(flow_hash(&arp), flow_hash(&from_b));
        // An IPv4 EtherType over bytes that are not IPv4 falls back too.
        let mut bogus = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 1, 2);
        bogus[14] = 0x99;
        let mut bogus2 = bogus.clone();
        bogus2[14 + 12] ^= 1;
        assert_eq!(flow_hash(&bogus), flow_hash(&bogus2));
        // Any length is accepted.
        for n in 0..70 {
            let _ = flow_hash(&tcp4([1, 2, 3, 4], [5, 6, 7, 8], 9, 10)[..n]);
            let _ = flow_hash(&tcp6(1, 2, 3)[..n.min(74)]);
        }
    }

    #[test]
    fn a_thousand_random_flows_spread_evenly_over_eight_sockets() {
        let mut rng = Rng(0x5eed);
        let mut per = [0usize; 8];
        for _ in 0..1000 {
            let r = rng.next();
            let f = tcp4(
                [10, 0, (r >> 8) as u8, r as u8],
                [10, 1, (r >> 24) as u8, (r >> 16) as u8],
                (r >> 32) as u16,
                (r >> 48) as u16,
            );
            per[pick(flow_hash(&f), 8)] += 1;
        }
        // 125 expected each; a binomial's standard deviation is about 10.5.
        assert!(
            per.iter().all(|&n| (85..=165).contains(&n)),
            "expected about 125 flows on each of 8 sockets, got {per:?}"
        );
    }

    #[test]
    fn flows_of_one_host_pair_differ_by_port_alone_and_still_spread() {
        // iperf3 -P 8 between two hosts: only the client port changes.
        let mut seen = std::collections::HashSet::new();
        for sport in 50000..50064u16 {
            let f = tcp4([10, 30, 0, 11], [10, 30, 0, 12], sport, 5201);
            seen.insert(pick(flow_hash(&f), 32));
        }
        assert!(
            seen.len() >= 24,
            "64 consecutive source ports reached only {} of 32 sockets",
            seen.len()
        );
    }

    #[test]
    fn pick_scales_the_hash_onto_the_sockets() {
        assert_eq!(pick(u32::MAX, 32), 31);
        assert_eq!(pick(0, 32), 0);
        assert_eq!(pick(u32::MAX, 1), 0);
    }

    #[test]
    fn the_opening_packets_of_tcp_are_told_apart() {
        let mut syn = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 5201);
        let flags = ETHERNET_HEADER_LEN + IPV4_MIN_HDR + 13;
        syn[flags] = 0x02;
        assert_eq!(frame_opening(&syn), Opening::Syn);
        assert_eq!(packet_opening(&syn[ETHERNET_HEADER_LEN..]), Opening::Syn);
        let mut syn_ack = syn.clone();
        syn_ack[flags] = 0x12;
        assert_eq!(frame_opening(&syn_ack), Opening::SynAck);
        let mut ack = syn.clone();
        ack[flags] = 0x10;
        assert_eq!(frame_opening(&ack), Opening::Other);
        let udp = ip4([10, 0, 0, 1], [10, 0, 0, 2], IPPROTO_UDP, 1, 2, 0);
        let mut udp_flags = udp.clone();
        udp_flags[flags] = 0x02;
        assert_eq!(frame_opening(&udp_flags), Opening::Other, "UDP has no SYN");
        let mut frag = ip4([10, 0, 0, 1], [10, 0, 0, 2], IPPROTO_TCP, 1, 2, 0x2000);
        frag[flags] = 0x02;
        assert_eq!(
            frame_opening(&frag),
            Opening::Other,
            "a fragment's bytes are not TCP's"
        );
        let mut v6 = tcp6(1, 40000, 5201);
        v6[ETHERNET_HEADER_LEN + IPV6_HDR + 13] = 0x12;
        assert_eq!(frame_opening(&v6), Opening::SynAck);
        for short in [&syn[..10], &syn[..ETHERNET_HEADER_LEN + 20], &[][..]] {
            assert_eq!(frame_opening(short), Opening::Other);
        }
    }
}
