//! Packets and tunnel states the criterion benches start from: built from
//! constants, so a failure here is a bug in the bench, and it panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use dataplane::offload::checksum;
use dataplane::offload::{ETHERNET_HEADER_LEN, GsoType, VnetHeader};
use tunnel_proto::wg::{
    Events, IpPrefix, PeerConfig, PeerId, Snapshot, TRANSMIT_BUF_LEN, Tunnel, TunnelConfig,
};
use tunnel_proto::{PresharedKey, PrivateKey};

/// The one peer of a two-site tunnel.
pub const PEER: PeerId = PeerId::new(0, 0);

/// The WAN endpoint of site `i`.
pub fn wan_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 51820))
}

/// A private key made from a 16-bit number (distinct numbers, distinct
/// keys: the number sits clear of the bits X25519 clamps).
pub fn key(n: u16) -> PrivateKey {
    let mut k = [0x5au8; 32];
    k[1..3].copy_from_slice(&n.to_le_bytes());
    PrivateKey::from_bytes(k)
}

/// Site `me`'s tunnel with one peer, site `other`, which owns
/// `10.0.0.OTHER/32` and sits at [`wan_addr`]`(other)`; with a PSK.
pub fn tunnel(me: u8, other: u8) -> Tunnel {
    let mut cfg = TunnelConfig::new(key(u16::from(me)));
    let mut p = PeerConfig::new(key(u16::from(other)).public_key());
    p.preshared_key = Some(PresharedKey::from_bytes([9; 32]));
    p.allowed_ips = vec![IpPrefix::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, other)), 32).unwrap()];
    p.endpoint = Some(wan_addr(other));
    cfg.peers.push(p);
    Tunnel::new(cfg, Instant::now(), SystemTime::now()).unwrap()
}

/// A tunnel with `peers` peers, peer `i` owning `10.(i/256).(i%256).0/24`
/// (and nothing has a session): the classify step's table.
pub fn tunnel_with_peers(peers: u16) -> Tunnel {
    let mut cfg = TunnelConfig::new(key(u16::MAX));
    for i in 0..peers {
        let mut p = PeerConfig::new(key(i).public_key());
        let [hi, lo] = i.to_be_bytes();
        p.allowed_ips = vec![IpPrefix::new(IpAddr::V4(Ipv4Addr::new(10, hi, lo, 0)), 24).unwrap()];
        p.endpoint = Some(SocketAddr::from(([198, 51, hi, lo], 51820)));
        cfg.peers.push(p);
    }
    Tunnel::new(cfg, Instant::now(), SystemTime::now()).unwrap()
}

/// Runs one handshake from `a` to `b` at `now`, confirms it at `b` with a
/// keepalive, and returns both data-plane snapshots.
pub fn handshake(
    a: &mut Tunnel,
    b: &mut Tunnel,
    now: Instant,
    buf: &mut [u8],
) -> (Arc<Snapshot>, Arc<Snapshot>) {
    let wall = SystemTime::now();
    a.handle_events(PEER, Events::REKEY, now, wall);
    let n = a.poll_transmit(now, buf).expect("initiation").len;
    b.handle_handshake(now, wall, wan_addr(1).into(), &buf[..n], false)
        .unwrap();
    let n = b.poll_transmit(now, buf).expect("response").len;
    a.handle_handshake(now, wall, wan_addr(2).into(), &buf[..n], false)
        .unwrap();
    let n = a.poll_transmit(now, buf).expect("keepalive").len;
    let dp_b = b.snapshot();
    let o = dp_b
        .decapsulate(now, 0, wan_addr(1).into(), &mut buf[..n])
        .unwrap();
    b.handle_events(o.peer, o.events, now, wall);
    (a.snapshot(), b.snapshot())
}

/// Two sites with an established session: site 1's and site 2's
/// snapshots, and the instant they were made at.
pub fn established() -> (Arc<Snapshot>, Arc<Snapshot>, Instant) {
    let (mut a, mut b) = (tunnel(1, 2), tunnel(2, 1));
    let now = Instant::now();
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    let (dp_a, dp_b) = handshake(&mut a, &mut b, now, &mut buf);
    (dp_a, dp_b, now)
}

/// A plain IPv4 packet of `len` bytes from 10.0.0.1 to `dst`.
pub fn ip_packet(len: usize, dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x5au8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[9] = checksum::IPPROTO_UDP;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&dst);
    p
}

/// A TCP/IPv4 super-packet from 10.0.0.1 to 10.0.0.2 as TUN hands it
/// over: `payload` bytes, NEEDS_CSUM with the pseudo-header sum in the
/// checksum field, ACK|PSH, segments of `gso_size`.
pub fn tcp4_super_packet(payload: usize, gso_size: usize) -> (VnetHeader, Vec<u8>) {
    let total = 40 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = checksum::IPPROTO_TCP;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    p[28..32].copy_from_slice(&0x2000_0000u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x18; // ACK|PSH
    p[34..36].copy_from_slice(&64240u16.to_be_bytes());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    let partial = checksum::pseudo_header_v4(
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        checksum::IPPROTO_TCP,
        (total - 20) as u16,
    )
    .fold();
    p[36..38].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHeader {
        needs_csum: true,
        data_valid: false,
        gso_type: GsoType::TcpV4,
        ecn: false,
        hdr_len: 40,
        gso_size: gso_size as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    (hdr, p)
}

/// The same super-packet as a TAP hands it over: behind an Ethernet
/// header from `src` to `dst` (checksum start moved along).
pub fn tcp4_super_frame(
    payload: usize,
    gso_size: usize,
    src: [u8; 6],
    dst: [u8; 6],
) -> (VnetHeader, Vec<u8>) {
    let (mut hdr, pkt) = tcp4_super_packet(payload, gso_size);
    let mut f = Vec::with_capacity(ETHERNET_HEADER_LEN + pkt.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&pkt);
    hdr.csum_start += ETHERNET_HEADER_LEN as u16;
    hdr.hdr_len += ETHERNET_HEADER_LEN as u16;
    (hdr, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_sites_can_seal_and_open_a_packet() {
        let (a, b, now) = established();
        let pkt = ip_packet(100, [10, 0, 0, 2]);
        let mut buf = vec![0u8; tunnel_proto::wg::HEADROOM + 100 + tunnel_proto::wg::TAILROOM];
        buf[tunnel_proto::wg::HEADROOM..][..100].copy_from_slice(&pkt);
        let sealed = a.encapsulate(PEER, 0, now, &mut buf, 100).unwrap();
        let opened = b
            .decapsulate(now, 0, wan_addr(1).into(), &mut buf[..sealed.len])
            .unwrap();
        assert_eq!(&buf[opened.payload], &pkt[..]);
    }

    #[test]
    fn every_peer_of_a_big_table_routes_its_own_prefix() {
        let t = tunnel_with_peers(300);
        let dp = t.snapshot();
        for i in [0u16, 1, 255, 256, 299] {
            let [hi, lo] = i.to_be_bytes();
            let got = dp.route(IpAddr::V4(Ipv4Addr::new(10, hi, lo, 7)));
            assert_eq!(got, Some(PeerId::new(u32::from(i), 0)), "peer {i}");
        }
        assert_eq!(dp.route(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))), None);
    }
}
