//! Property tests over the public API: the responder and the data plane fed
//! any bytes never panic and never accept forgeries; sealing then opening
//! gives back the packet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use proptest::prelude::*;
use tunnel_proto::wg::{
    HEADROOM, Handled, IpPrefix, PeerConfig, PeerId, Snapshot, TAILROOM, TRANSMIT_BUF_LEN, Tunnel,
    TunnelConfig,
};
use tunnel_proto::{DropReason, PrivateKey};

struct Established {
    dp_a: Arc<Snapshot>,
    dp_b: Arc<Snapshot>,
    t0: Instant,
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), 51820)
}

fn tunnel(me: u8, other: u8) -> Tunnel {
    let mut cfg = TunnelConfig::new(PrivateKey::from_bytes([me; 32]));
    let mut p = PeerConfig::new(PrivateKey::from_bytes([other; 32]).public_key());
    p.allowed_ips = vec![IpPrefix::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, other)), 32).unwrap()];
    p.endpoint = Some(addr(other));
    cfg.peers.push(p);
    Tunnel::new(cfg, Instant::now(), SystemTime::now()).unwrap()
}

fn ip_packet(src: u8, dst: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20 + body.len()];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[12..16].copy_from_slice(&[10, 0, 0, src]);
    p[16..20].copy_from_slice(&[10, 0, 0, dst]);
    p[20..].copy_from_slice(body);
    p
}

/// A (key 1) and B (key 2) with a confirmed session both ways.
fn established() -> Established {
    let t0 = Instant::now();
    let wall = SystemTime::now();
    let mut a = tunnel(1, 2);
    let mut b = tunnel(2, 1);
    let peer = PeerId::new(0, 0);
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    a.stage(peer, &ip_packet(1, 2, b"x"), t0, wall).unwrap();
    let t = a.poll_transmit(t0, &mut buf).unwrap();
    let initiation = buf[..t.len].to_vec();
    assert_eq!(
        b.handle_handshake(t0, wall, addr(1).into(), &initiation, false),
        Ok(Handled::Responded(peer))
    );
    let t = b.poll_transmit(t0, &mut buf).unwrap();
    let response = buf[..t.len].to_vec();
    assert_eq!(
        a.handle_handshake(t0, wall, addr(2).into(), &response, false),
        Ok(Handled::Established(peer))
    );
    let t = a.poll_transmit(t0, &mut buf).unwrap();
    let dp_b = b.snapshot();
    let mut first = buf[..t.len].to_vec();
    let o = dp_b.decapsulate(t0, 0, addr(1).into(), &mut first).unwrap();
    b.handle_events(o.peer, o.events, t0, wall);
    Established {
        dp_a: a.snapshot(),
        dp_b: b.snapshot(),
        t0,
    }
}

fn handshake_like() -> impl Strategy<Value = Vec<u8>> {
    (
        1u8..=4,
        prop_oneof![Just(148usize), Just(92), Just(64), Just(32), 0usize..300],
    )
        .prop_flat_map(|(t, n)| {
            proptest::collection::vec(any::<u8>(), n).prop_map(move |mut v| {
                if !v.is_empty() {
                    v[0] = t;
                }
                for b in v.iter_mut().skip(1).take(3) {
                    *b = 0;
                }
                v
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn responder_survives_any_bytes(bytes in handshake_like(), under_load: bool) {
        let mut t = tunnel(2, 1);
        let r = t.handle_handshake(Instant::now(), SystemTime::now(), addr(1).into(), &bytes, under_load);
        prop_assert!(r.is_err(), "random bytes were accepted as a handshake: {:?}", r);
        let total: u64 = t.drop_counts().iter().sum();
        prop_assert_eq!(total, 1, "each rejection is counted once");
    }

    #[test]
    fn tampered_handshakes_are_refused(flip_at in 0usize..148, bit in 0u8..8, response: bool) {
        // A fresh exchange each time: the initiation goes to a responder that
        // has not seen it, the response to an initiator still waiting for it.
        let (t0, wall) = (Instant::now(), SystemTime::now());
        let mut a = tunnel(1, 2);
        let mut b = tunnel(2, 1);
        let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
        a.stage(PeerId::new(0, 0), &ip_packet(1, 2, b"x"), t0, wall).unwrap();
        let t = a.poll_transmit(t0, &mut buf).unwrap();
        let init = buf[..t.len].to_vec();
        let flip = |msg: &[u8]| {
            let mut bad = msg.to_vec();
            let at = flip_at % bad.len();
            bad[at] ^= 1 << bit;
            (bad, at)
        };
        let (at, len, r) = if response {
            b.handle_handshake(t0, wall, addr(1).into(), &init, false).unwrap();
            let t = b.poll_transmit(t0, &mut buf).unwrap();
            let resp = buf[..t.len].to_vec();
            let (bad, at) = flip(&resp);
            let r = a.handle_handshake(t0, wall, addr(2).into(), &bad, false);
            (at, resp.len(), r)
        } else {
            let (bad, at) = flip(&init);
            let r = b.handle_handshake(t0, wall, addr(1).into(), &bad, false);
            (at, init.len(), r)
        };
        // MAC2 (the last 16 bytes) is only checked under load; every other bit is covered.
        if at < len - 16 {
            prop_assert!(r.is_err(), "flipping byte {} bit {} was accepted", at, bit);
        } else {
            prop_assert!(r.is_ok(), "a flipped MAC2 bit outside load was refused: {:?}", r);
        }
    }

    #[test]
    fn data_plane_survives_any_bytes(mut bytes in handshake_like(), index_from_session: bool) {
        let e = established();
        if index_from_session && bytes.len() >= 32 {
            // Aim at a live receiver index, so the AEAD itself is exercised.
            let mut probe = vec![0u8; 64];
            let s = e.dp_a.encapsulate(PeerId::new(0, 0), 0, e.t0, &mut probe, 0).unwrap();
            bytes[0] = 4;
            bytes[4..8].copy_from_slice(&probe[4..8]);
            prop_assert_eq!(s.len, 32);
        }
        let r = e.dp_b.decapsulate(e.t0, 0, addr(1).into(), &mut bytes);
        prop_assert!(r.is_err());
        if index_from_session && bytes.len() >= 32 {
            prop_assert!(matches!(r, Err(DropReason::AuthFailed | DropReason::Replay)), "{:?}", r);
        }
    }

    #[test]
    fn seal_open_round_trips(body in proptest::collection::vec(any::<u8>(), 0..3000), keepalive: bool) {
        let e = established();
        let pkt = if keepalive { Vec::new() } else { ip_packet(1, 2, &body) };
        let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
        let s = e.dp_a.encapsulate(PeerId::new(0, 0), 0, e.t0, &mut buf, pkt.len()).unwrap();
        prop_assert_eq!(s.len % 16, 0, "padded to 16");
        prop_assert_eq!(s.dst, addr(2));
        let o = e.dp_b.decapsulate(e.t0, 0, addr(1).into(), &mut buf[..s.len]).unwrap();
        prop_assert_eq!(o.keepalive, keepalive);
        prop_assert_eq!(&buf[o.payload.clone()], &pkt[..]);
    }
}
