//! The handshake responder (and initiator-side response/cookie handling) fed
//! arbitrary datagrams: no panic, nothing accepted. The first byte picks the
//! message type and the load flag so most inputs reach past the type check.
#![no_main]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use tunnel_proto::PrivateKey;
use tunnel_proto::wg::{IpPrefix, PeerConfig, PeerId, TRANSMIT_BUF_LEN, Tunnel, TunnelConfig};

fn tunnel() -> Tunnel {
    let mut cfg = TunnelConfig::new(PrivateKey::from_bytes([2; 32]));
    let mut p = PeerConfig::new(PrivateKey::from_bytes([1; 32]).public_key());
    p.allowed_ips = vec!["10.0.0.1/32".parse::<IpPrefix>().unwrap()];
    p.endpoint = Some("192.0.2.1:51820".parse().unwrap());
    cfg.peers.push(p);
    let now = Instant::now();
    let mut t = Tunnel::new(cfg, now, SystemTime::now()).unwrap();
    // An initiation of our own in flight, so responses and cookie replies
    // have a pending index to aim at.
    t.stage(PeerId::new(0, 0), &[0x45; 20], now, SystemTime::now())
        .unwrap();
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    while t.poll_transmit(now, &mut buf).is_some() {}
    t
}

static TUNNEL: Mutex<Option<Tunnel>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut msg = rest.to_vec();
    let (kind, len) = match sel % 3 {
        0 => (1u8, 148usize),
        1 => (2, 92),
        _ => (3, 64),
    };
    if sel & 0x80 == 0 {
        msg.resize(len, 0);
        msg[..4].copy_from_slice(&[kind, 0, 0, 0]);
    }
    let mut guard = TUNNEL.lock().unwrap_or_else(|e| e.into_inner());
    let t = guard.get_or_insert_with(tunnel);
    let src: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let r = t.handle_handshake(
        Instant::now(),
        SystemTime::now(),
        src.into(),
        &msg,
        sel & 0x40 != 0,
    );
    assert!(r.is_err(), "fuzzed bytes accepted: {r:?}");
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    while t.poll_transmit(Instant::now(), &mut buf).is_some() {}
});
