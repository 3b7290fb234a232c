//! Interop with a real WireGuard implementation: the `boringtun` library, in
//! memory. A ringtun initiator completes a handshake with a boringtun
//! responder and the reverse, with and without a PSK; data passes both ways;
//! a flipped bit is rejected by each side; a replayed packet is rejected by
//! each side.

// Test helpers outside #[test] functions: panicking on a broken fixture is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use tunnel_proto::wg::{
    EncapError, Events, HEADROOM, Handled, IpPrefix, PeerConfig, PeerId, Snapshot, TAILROOM,
    TRANSMIT_BUF_LEN, Transmit, Tunnel, TunnelConfig,
};
use tunnel_proto::{DropReason, PresharedKey, PrivateKey};

const OUR_SECRET: [u8; 32] = [0x11; 32];
const THEIR_SECRET: [u8; 32] = [0x22; 32];
const OUR_INNER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const THEIR_INNER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn their_addr() -> SocketAddr {
    "192.0.2.2:51820".parse().unwrap()
}

fn our_addr() -> SocketAddr {
    "192.0.2.1:51820".parse().unwrap()
}

/// A UDP-in-IPv4 packet with a recognisable payload and a valid header checksum.
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for i in (0..20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([p[i], p[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&1234u16.to_be_bytes());
    p[22..24].copy_from_slice(&5678u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

struct Pair {
    ours: Tunnel,
    theirs: Tunn,
    peer: PeerId,
}

fn pair(psk: Option<[u8; 32]>) -> Pair {
    let now = Instant::now();
    let our_key = PrivateKey::from_bytes(OUR_SECRET);
    let their_secret = x25519::StaticSecret::from(THEIR_SECRET);
    let their_public = x25519::PublicKey::from(&their_secret);
    let mut cfg = TunnelConfig::new(our_key.clone());
    let mut peer = PeerConfig::new(tunnel_proto::PublicKey::from_bytes(their_public.to_bytes()));
    peer.preshared_key = psk.map(PresharedKey::from_bytes);
    peer.allowed_ips = vec![IpPrefix::new(IpAddr::V4(THEIR_INNER), 32).unwrap()];
    peer.endpoint = Some(their_addr());
    cfg.peers.push(peer);
    let ours = Tunnel::new(cfg, now, SystemTime::now()).unwrap();
    let our_public = x25519::PublicKey::from(our_key.public_key().as_bytes().to_owned());
    let theirs = Tunn::new(their_secret, our_public, psk, None, 7, None);
    Pair {
        ours,
        theirs,
        peer: PeerId::new(0, 0),
    }
}

fn transmit(t: &mut Tunnel) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    let Transmit { dst, len, .. } = t.poll_transmit(Instant::now(), &mut buf)?;
    assert_eq!(dst, their_addr(), "ringtun sent to the wrong address");
    Some(buf[..len].to_vec())
}

/// What boringtun sent to the network and what it delivered to its device.
type Outputs = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Feeds a datagram to boringtun and collects everything it wants to send
/// and everything it delivers to its tunnel device.
fn bt_receive(theirs: &mut Tunn, datagram: &[u8]) -> Result<Outputs, WireGuardError> {
    let mut to_net = Vec::new();
    let mut to_tun = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut input = datagram.to_vec();
    loop {
        match theirs.decapsulate(Some(our_addr().ip()), &input, &mut buf) {
            TunnResult::Done => break,
            TunnResult::Err(e) => return Err(e),
            TunnResult::WriteToNetwork(p) => {
                to_net.push(p.to_vec());
                // boringtun hands out queued packets on repeated empty calls.
                input.clear();
            }
            TunnResult::WriteToTunnelV4(p, _) => {
                to_tun.push(p.to_vec());
                break;
            }
            TunnResult::WriteToTunnelV6(p, _) => {
                to_tun.push(p.to_vec());
                break;
            }
        }
    }
    Ok((to_net, to_tun))
}

fn bt_send(theirs: &mut Tunn, packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    match theirs.encapsulate(packet, &mut buf) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!(
            "boringtun did not seal: {:?}",
            matches!(other, TunnResult::Done)
        ),
    }
}

fn open(dp: &Snapshot, datagram: &[u8]) -> Result<(Vec<u8>, Events, bool), DropReason> {
    let mut buf = datagram.to_vec();
    let o = dp.decapsulate(Instant::now(), 0, their_addr().into(), &mut buf)?;
    Ok((buf[o.payload.clone()].to_vec(), o.events, o.keepalive))
}

fn seal(dp: &Snapshot, peer: PeerId, packet: &[u8]) -> Result<Vec<u8>, EncapError> {
    let mut buf = vec![0u8; HEADROOM + packet.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + packet.len()].copy_from_slice(packet);
    let s = dp.encapsulate(peer, 0, Instant::now(), &mut buf, packet.len())?;
    assert_eq!(s.dst, their_addr());
    Ok(buf[..s.len].to_vec())
}

fn flip(datagram: &[u8], at: usize) -> Vec<u8> {
    let mut d = datagram.to_vec();
    d[at] ^= 0x10;
    d
}

/// Data both ways over an established session, then tamper and replay checks.
fn exchange_data(p: &mut Pair) {
    let dp = p.ours.snapshot();
    // ringtun -> boringtun
    let out = ipv4_packet(OUR_INNER, THEIR_INNER, b"from ringtun to boringtun");
    let sealed = seal(&dp, p.peer, &out).unwrap();
    let (net, tun) = bt_receive(&mut p.theirs, &sealed).unwrap();
    assert!(net.is_empty());
    assert_eq!(tun, vec![out.clone()], "boringtun delivered something else");
    // Replay: boringtun refuses the same packet again.
    assert!(
        matches!(
            bt_receive(&mut p.theirs, &sealed),
            Err(WireGuardError::DuplicateCounter)
        ),
        "boringtun accepted a replayed ringtun packet"
    );
    // Tamper: a flipped ciphertext bit is refused.
    let sealed2 = seal(&dp, p.peer, &out).unwrap();
    assert!(
        matches!(
            bt_receive(&mut p.theirs, &flip(&sealed2, 20)),
            Err(WireGuardError::InvalidAeadTag)
        ),
        "boringtun accepted a tampered ringtun packet"
    );
    // A large packet, padded by ringtun to 16; boringtun trims by IP length.
    let big = ipv4_packet(OUR_INNER, THEIR_INNER, &[0xab; 1371]);
    let (_, tun) = bt_receive(&mut p.theirs, &seal(&dp, p.peer, &big).unwrap()).unwrap();
    assert_eq!(tun, vec![big]);

    // boringtun -> ringtun
    let back = ipv4_packet(THEIR_INNER, OUR_INNER, b"from boringtun to ringtun");
    let wire = bt_send(&mut p.theirs, &back);
    let (got, _, keepalive) = open(&dp, &wire).unwrap();
    assert!(!keepalive);
    assert_eq!(got, back, "ringtun delivered something else");
    assert_eq!(
        open(&dp, &wire).map(|_| ()),
        Err(DropReason::Replay),
        "ringtun accepted a replay"
    );
    let wire2 = bt_send(&mut p.theirs, &back);
    for at in [0usize, 4, 8, 16, wire2.len() - 1] {
        let r = open(&dp, &flip(&wire2, at)).map(|_| ());
        assert!(
            r.is_err(),
            "ringtun accepted a packet with byte {at} flipped"
        );
    }
    assert_eq!(
        open(&dp, &flip(&wire2, 20)).map(|_| ()),
        Err(DropReason::AuthFailed)
    );
    // The untampered original still opens: failed attempts did not burn its counter.
    assert_eq!(open(&dp, &wire2).unwrap().0, back);
    // A packet whose inner source is not the peer's AllowedIPs is refused.
    let spoof = bt_send(
        &mut p.theirs,
        &ipv4_packet(Ipv4Addr::new(10, 9, 9, 9), OUR_INNER, b"spoof"),
    );
    assert_eq!(
        open(&dp, &spoof).map(|_| ()),
        Err(DropReason::DisallowedSource)
    );
}

#[test]
fn ringtun_initiates_boringtun_responds() {
    for psk in [None, Some([0x33; 32])] {
        let mut p = pair(psk);
        let first = ipv4_packet(OUR_INNER, THEIR_INNER, b"staged before the handshake");
        // No session yet: the data plane says so, the packet is staged and a handshake starts.
        let dp = p.ours.snapshot();
        assert_eq!(seal(&dp, p.peer, &first), Err(EncapError::NoSession));
        p.ours
            .stage(p.peer, &first, Instant::now(), SystemTime::now())
            .unwrap();
        let init = transmit(&mut p.ours).expect("an initiation");
        assert_eq!(init.len(), 148);
        assert_eq!(init[0], 1);
        assert!(transmit(&mut p.ours).is_none());

        let (net, tun) =
            bt_receive(&mut p.theirs, &init).expect("boringtun accepts our initiation");
        assert!(tun.is_empty());
        assert_eq!(net.len(), 1, "boringtun answers with one response");
        assert_eq!(net[0].len(), 92);
        let handled = p.ours.handle_handshake(
            Instant::now(),
            SystemTime::now(),
            their_addr().into(),
            &net[0],
            false,
        );
        assert_eq!(handled, Ok(Handled::Established(p.peer)), "psk {psk:?}");
        assert!(
            p.ours.poll_snapshot().is_some(),
            "a new snapshot with the session"
        );

        // The staged packet goes out sealed and boringtun delivers it.
        let staged = transmit(&mut p.ours).expect("the staged packet");
        assert!(transmit(&mut p.ours).is_none());
        let (_, tun) = bt_receive(&mut p.theirs, &staged).unwrap();
        assert_eq!(tun, vec![first]);
        exchange_data(&mut p);
    }
}

#[test]
fn boringtun_initiates_ringtun_responds() {
    for psk in [None, Some([0x44; 32])] {
        let mut p = pair(psk);
        let mut buf = vec![0u8; 256];
        let init = match p.theirs.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(b) => b.to_vec(),
            _ => panic!("boringtun made no initiation"),
        };
        let handled = p.ours.handle_handshake(
            Instant::now(),
            SystemTime::now(),
            their_addr().into(),
            &init,
            false,
        );
        assert_eq!(handled, Ok(Handled::Responded(p.peer)), "psk {psk:?}");
        let resp = transmit(&mut p.ours).expect("a response");
        assert_eq!(resp.len(), 92);
        // Replaying the initiation is refused (stale TAI64N).
        let again = p.ours.handle_handshake(
            Instant::now(),
            SystemTime::now(),
            their_addr().into(),
            &init,
            false,
        );
        assert_eq!(again.map_err(DropReason::from), Err(DropReason::Replay));
        assert!(transmit(&mut p.ours).is_none());

        // Until the initiator is heard on the new session, ringtun does not send on it.
        let dp = p.ours.snapshot();
        let probe = ipv4_packet(OUR_INNER, THEIR_INNER, b"too early");
        assert_eq!(seal(&dp, p.peer, &probe), Err(EncapError::NoSession));
        p.ours
            .stage(p.peer, &probe, Instant::now(), SystemTime::now())
            .unwrap();

        let (net, _) = bt_receive(&mut p.theirs, &resp).expect("boringtun accepts our response");
        assert_eq!(net.len(), 1, "boringtun confirms with a keepalive");
        let (payload, events, keepalive) =
            open(&dp, &net[0]).expect("ringtun opens boringtun's keepalive");
        assert!(keepalive && payload.is_empty());
        assert!(
            events.contains(Events::CONFIRMED),
            "first packet confirms the session: {events:?}"
        );
        p.ours
            .handle_events(p.peer, events, Instant::now(), SystemTime::now());
        assert!(p.ours.poll_snapshot().is_some());
        // The staged packet now goes out on the confirmed session.
        let staged = transmit(&mut p.ours).expect("the staged packet");
        let (_, tun) = bt_receive(&mut p.theirs, &staged).unwrap();
        assert_eq!(tun, vec![probe]);
        exchange_data(&mut p);
    }
}

#[test]
fn boringtun_refuses_an_initiation_for_someone_else() {
    let mut p = pair(None);
    p.ours
        .stage(
            p.peer,
            &ipv4_packet(OUR_INNER, THEIR_INNER, b"x"),
            Instant::now(),
            SystemTime::now(),
        )
        .unwrap();
    let init = transmit(&mut p.ours).unwrap();
    // Flip a bit covered by MAC1: boringtun must refuse it.
    assert!(bt_receive(&mut p.theirs, &flip(&init, 50)).is_err());
    // And ringtun refuses a tampered boringtun response.
    let (net, _) = bt_receive(&mut p.theirs, &init).unwrap();
    let bad = p.ours.handle_handshake(
        Instant::now(),
        SystemTime::now(),
        their_addr().into(),
        &flip(&net[0], 20),
        false,
    );
    assert_eq!(bad.map_err(DropReason::from), Err(DropReason::AuthFailed));
}
