//! The data plane's decapsulate on arbitrary bytes against a live session:
//! no panic, nothing accepted. The first byte decides whether the receiver
//! index is forced to the live one, so the AEAD path is exercised.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use tunnel_proto::PrivateKey;
use tunnel_proto::wg::{
    Snapshot, IpPrefix, PeerConfig, PeerId, TRANSMIT_BUF_LEN, Tunnel, TunnelConfig,
};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 51820))
}

fn tunnel(me: u8, other: u8) -> Tunnel {
    let mut cfg = TunnelConfig::new(PrivateKey::from_bytes([me; 32]));
    let mut p = PeerConfig::new(PrivateKey::from_bytes([other; 32]).public_key());
    p.allowed_ips = vec![format!("10.0.0.{other}/32").parse::<IpPrefix>().unwrap()];
    p.endpoint = Some(addr(other));
    cfg.peers.push(p);
    Tunnel::new(cfg, Instant::now(), SystemTime::now()).unwrap()
}

/// B's snapshot with a session from A, and A's receiver index at B.
fn setup() -> (Arc<Snapshot>, [u8; 4], Instant) {
    let (t0, wall) = (Instant::now(), SystemTime::now());
    let (mut a, mut b) = (tunnel(1, 2), tunnel(2, 1));
    let peer = PeerId::new(0, 0);
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    let mut pkt = [0u8; 20];
    pkt[0] = 0x45;
    pkt[3] = 20;
    pkt[12..16].copy_from_slice(&[10, 0, 0, 1]);
    a.stage(peer, &pkt, t0, wall).unwrap();
    let n = a.poll_transmit(t0, &mut buf).unwrap().len;
    b.handle_handshake(t0, wall, addr(1).into(), &buf[..n], false)
        .unwrap();
    let n = b.poll_transmit(t0, &mut buf).unwrap().len;
    a.handle_handshake(t0, wall, addr(2).into(), &buf[..n], false)
        .unwrap();
    let n = a.poll_transmit(t0, &mut buf).unwrap().len;
    let mut index = [0u8; 4];
    index.copy_from_slice(&buf[4..8]);
    (b.snapshot(), index, t0)
}

static SESSION: OnceLock<(Arc<Snapshot>, [u8; 4], Instant)> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let (dp, index, t0) = SESSION.get_or_init(setup);
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut buf = rest.to_vec();
    if sel & 1 == 1 && buf.len() >= 32 {
        buf[..4].copy_from_slice(&[4, 0, 0, 0]);
        buf[4..8].copy_from_slice(index);
    }
    let r = dp.decapsulate(*t0, 0, addr(1).into(), &mut buf);
    assert!(r.is_err(), "fuzzed bytes opened: {r:?}");
});
