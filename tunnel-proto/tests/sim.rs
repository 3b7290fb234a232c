//! Two ringtun endpoints over a simulated network in virtual time: the
//! control plane and the data-plane snapshot driven exactly as the workers
//! and the control thread will drive them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tunnel_proto::wg::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
    ZERO_KEYS_AFTER,
};
use tunnel_proto::wg::{
    EncapError, HEADROOM, Handled, HandshakeError, IpPrefix, MessageType, PeerConfig, PeerId,
    Snapshot, TAILROOM, TRANSMIT_BUF_LEN, Tunnel, TunnelConfig, destination, message_type,
};
use tunnel_proto::{DropReason, PresharedKey, PrivateKey, RngSeed};

const A: usize = 0;
const B: usize = 1;

fn inner(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + i as u8)
}

fn packet(src: Ipv4Addr, dst: Ipv4Addr, body: &[u8]) -> Vec<u8> {
    let total = 20 + body.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 253; // experimental protocol: nobody parses the body
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(body);
    p
}

struct Node {
    tunnel: Tunnel,
    dp: Arc<Snapshot>,
    addr: SocketAddr,
    delivered: Vec<Vec<u8>>,
    keepalives: usize,
    drops: Vec<DropReason>,
    under_load: bool,
}

struct Datagram {
    src: SocketAddr,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

struct Sim {
    t0: Instant,
    now: Instant,
    nodes: Vec<Node>,
    wire: Vec<Datagram>,
    /// Every datagram that crossed the wire, for replay and inspection.
    log: Vec<Datagram>,
    /// Drop datagrams to this node instead of delivering them.
    blackhole: Option<usize>,
    /// Drop every datagram.
    partition: bool,
}

fn wall_of(sim_t0: Instant, now: Instant) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + now.duration_since(sim_t0)
}

const KEYS: [[u8; 32]; 2] = [[0xa1; 32], [0xb2; 32]];

fn key_of(i: usize) -> tunnel_proto::PublicKey {
    PrivateKey::from_bytes(KEYS[i]).public_key()
}

fn addr_of(i: usize) -> SocketAddr {
    ["192.0.2.1:51820", "198.51.100.2:51820"][i]
        .parse()
        .unwrap()
}

/// Node `i`'s configuration: the other node as its one peer.
fn config_of(i: usize, tweak: &impl Fn(usize, &mut PeerConfig)) -> TunnelConfig {
    let other = 1 - i;
    let mut cfg = TunnelConfig::new(PrivateKey::from_bytes(KEYS[i]));
    let mut peer = PeerConfig::new(PrivateKey::from_bytes(KEYS[other]).public_key());
    peer.preshared_key = Some(PresharedKey::from_bytes([0x5a; 32]));
    peer.allowed_ips = vec![IpPrefix::new(IpAddr::V4(inner(other)), 32).unwrap()];
    peer.endpoint = Some(addr_of(other));
    tweak(i, &mut peer);
    cfg.peers.push(peer);
    cfg
}

impl Node {
    fn new(i: usize, cfg: TunnelConfig, now: Instant, wall: SystemTime) -> Node {
        let mut tunnel = Tunnel::new(cfg, now, wall).unwrap();
        let dp = tunnel.poll_snapshot().unwrap();
        Node {
            tunnel,
            dp,
            addr: addr_of(i),
            delivered: Vec::new(),
            keepalives: 0,
            drops: Vec::new(),
            under_load: false,
        }
    }
}

impl Sim {
    fn new(tweak: impl Fn(usize, &mut PeerConfig)) -> Sim {
        Sim::with(tweak, |_, _| {})
    }

    /// Both nodes draw their random choices from `seed` (and their index).
    fn seeded(seed: u8) -> Sim {
        Sim::with(
            |_, _| {},
            |i, cfg| cfg.rng_seed = Some(RngSeed([seed.wrapping_add(i as u8); 32])),
        )
    }

    fn with(
        tweak: impl Fn(usize, &mut PeerConfig),
        tweak_tunnel: impl Fn(usize, &mut TunnelConfig),
    ) -> Sim {
        let t0 = Instant::now();
        let nodes = (0..2)
            .map(|i| {
                let mut cfg = config_of(i, &tweak);
                tweak_tunnel(i, &mut cfg);
                Node::new(i, cfg, t0, wall_of(t0, t0))
            })
            .collect();
        Sim {
            t0,
            now: t0,
            nodes,
            wire: Vec::new(),
            log: Vec::new(),
            blackhole: None,
            partition: false,
        }
    }

    /// Node `i` starts again from nothing (a daemon restart): same keys
    /// and peer, no sessions.
    fn restart(&mut self, i: usize, handshake_on_start: bool) {
        let mut cfg = config_of(i, &|_, _| {});
        cfg.handshake_on_start = handshake_on_start;
        self.nodes[i] = Node::new(i, cfg, self.now, self.wall());
    }

    fn wall(&self) -> SystemTime {
        wall_of(self.t0, self.now)
    }

    /// What the control thread does after every input.
    fn drain(&mut self, i: usize) {
        let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
        let node = &mut self.nodes[i];
        while let Some(t) = node.tunnel.poll_transmit(self.now, &mut buf) {
            self.wire.push(Datagram {
                src: node.addr,
                dst: t.dst,
                bytes: buf[..t.len].to_vec(),
            });
        }
        if let Some(dp) = node.tunnel.poll_snapshot() {
            node.dp = dp;
        }
    }

    /// What a worker does with a packet read from the TUN device.
    fn send(&mut self, i: usize, body: &[u8]) -> Result<(), EncapError> {
        let pkt = packet(inner(i), inner(1 - i), body);
        let wall = self.wall();
        let node = &mut self.nodes[i];
        let peer = node
            .dp
            .route(destination(&pkt).unwrap())
            .expect("route to the other site");
        let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
        match node.dp.encapsulate(peer, 0, self.now, &mut buf, pkt.len()) {
            Ok(s) => {
                if !s.events.is_empty() {
                    node.tunnel.handle_events(peer, s.events, self.now, wall);
                }
                self.wire.push(Datagram {
                    src: node.addr,
                    dst: s.dst,
                    bytes: buf[..s.len].to_vec(),
                });
                self.drain(i);
                Ok(())
            }
            Err(e @ (EncapError::NoSession | EncapError::CounterExhausted)) => {
                node.tunnel.stage(peer, &pkt, self.now, wall).unwrap();
                self.drain(i);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// What a worker does with a datagram read from the UDP socket.
    fn receive(&mut self, i: usize, src: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        let wall = self.wall();
        let node = &mut self.nodes[i];
        match message_type(bytes) {
            Ok(MessageType::Data) => {
                let mut buf = bytes.to_vec();
                match node.dp.decapsulate(now, 0, src.into(), &mut buf) {
                    Ok(o) => {
                        if o.keepalive {
                            node.keepalives += 1;
                        } else {
                            node.delivered.push(buf[o.payload.clone()].to_vec());
                        }
                        if !o.events.is_empty() {
                            node.tunnel.handle_events(o.peer, o.events, now, wall);
                        }
                    }
                    Err(r) => node.drops.push(r),
                }
            }
            // The worker screens handshake messages by MAC1 before the
            // control thread sees them.
            Ok(_) => match node.dp.screen_handshake(bytes) {
                Err(r) => node.drops.push(r),
                Ok(()) => {
                    let under_load = node.under_load;
                    if let Err(e) =
                        node.tunnel
                            .handle_handshake(now, wall, src.into(), bytes, under_load)
                    {
                        node.drops.push(e.reason());
                    }
                }
            },
            Err(e) => node.drops.push(e.into()),
        }
        self.drain(i);
    }

    fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Delivers everything in flight (zero latency), repeatedly.
    fn deliver(&mut self) {
        while !self.wire.is_empty() {
            let batch: Vec<Datagram> = std::mem::take(&mut self.wire);
            for d in batch {
                let to = self.node_at(d.dst);
                self.log.push(Datagram {
                    src: d.src,
                    dst: d.dst,
                    bytes: d.bytes.clone(),
                });
                match to {
                    Some(i) if self.blackhole != Some(i) && !self.partition => {
                        self.receive(i, d.src, &d.bytes)
                    }
                    _ => {}
                }
            }
        }
    }

    /// Advances virtual time to `t0 + at`, firing every timer on the way.
    fn run_until(&mut self, at: Duration) {
        let end = self.t0 + at;
        loop {
            self.deliver();
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.tunnel.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let wall = self.wall();
                    for i in 0..self.nodes.len() {
                        if self.nodes[i]
                            .tunnel
                            .poll_timeout()
                            .is_some_and(|d| d <= self.now)
                        {
                            self.nodes[i].tunnel.handle_timeout(self.now, wall);
                            self.drain(i);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(end);
    }

    fn handshakes_sent(&self, from: usize) -> usize {
        let addr = self.nodes[from].addr;
        self.log
            .iter()
            .filter(|d| d.src == addr && d.bytes[0] == 1)
            .count()
    }

    fn session_age(&self, i: usize) -> Option<Duration> {
        self.nodes[i]
            .tunnel
            .peer_status(PeerId::new(0, 0), self.now)
            .unwrap()
            .session_age
    }
}

fn established() -> Sim {
    let mut sim = Sim::new(|_, _| {});
    assert_eq!(sim.send(A, b"hello"), Err(EncapError::NoSession));
    sim.run_until(Duration::from_millis(1));
    assert_eq!(
        sim.nodes[B].delivered,
        vec![packet(inner(A), inner(B), b"hello")]
    );
    sim
}

#[test]
fn handshake_then_data_both_ways() {
    let mut sim = established();
    assert_eq!(sim.handshakes_sent(A), 1);
    assert_eq!(sim.handshakes_sent(B), 0);
    // B confirmed its session on A's first packet and can send at once.
    sim.send(B, b"world").unwrap();
    sim.send(A, b"again").unwrap();
    sim.deliver();
    assert_eq!(
        sim.nodes[A].delivered,
        vec![packet(inner(B), inner(A), b"world")]
    );
    assert_eq!(sim.nodes[B].delivered.len(), 2);
    assert!(
        sim.nodes[A].drops.is_empty() && sim.nodes[B].drops.is_empty(),
        "no drops expected"
    );
    let st = sim.nodes[A]
        .tunnel
        .peer_status(PeerId::new(0, 0), sim.now)
        .unwrap();
    assert_eq!(st.endpoint, Some(sim.nodes[B].addr));
    assert_eq!(st.latest_handshake, Some(wall_of(sim.t0, sim.t0)));
    assert!(!st.handshake_in_progress);
}

#[test]
fn tunnel_can_move_to_the_control_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Tunnel>();
}

#[test]
fn fresh_tunnel_is_idle() {
    let sim = Sim::new(|_, _| {});
    for n in &sim.nodes {
        assert_eq!(
            n.tunnel.poll_timeout(),
            None,
            "no traffic, no keepalive: nothing to wait for"
        );
    }
}

#[test]
fn data_without_answer_sends_a_keepalive_after_10_seconds() {
    let mut sim = established();
    let ka = sim.nodes[A].keepalives;
    // A sent "hello"; B, with nothing to say, answers with a keepalive after KEEPALIVE_TIMEOUT.
    sim.run_until(KEEPALIVE_TIMEOUT - Duration::from_millis(500));
    assert_eq!(sim.nodes[A].keepalives, ka, "keepalive came too early");
    sim.run_until(KEEPALIVE_TIMEOUT + Duration::from_millis(500));
    assert_eq!(
        sim.nodes[A].keepalives,
        ka + 1,
        "B should have sent one keepalive"
    );
    // A keepalive is not data: A does not answer it, nothing more happens.
    sim.run_until(Duration::from_secs(60));
    assert_eq!(sim.nodes[A].keepalives, ka + 1);
    // A had a staged packet to send after the handshake, so it sent no keepalive.
    assert_eq!(sim.nodes[B].keepalives, 0);
}

#[test]
fn rekey_after_120_seconds_of_sending() {
    let mut sim = established();
    let first = sim.session_age(A).unwrap();
    assert!(
        first <= Duration::from_millis(1),
        "session made at start, age {first:?}"
    );
    // Traffic both ways every second.
    let end = REKEY_AFTER_TIME.as_secs() + 5;
    for s in 1..=end {
        sim.run_until(Duration::from_secs(s));
        sim.send(A, format!("a{s}").as_bytes()).unwrap();
        sim.send(B, format!("b{s}").as_bytes()).unwrap();
        sim.deliver();
    }
    // The initiator (A) rekeyed once REKEY_AFTER_TIME passed, exactly once.
    assert_eq!(sim.handshakes_sent(A), 2, "one rekey initiation");
    assert_eq!(
        sim.handshakes_sent(B),
        0,
        "the responder does not rekey on time"
    );
    let age = sim.session_age(A).unwrap();
    assert!(
        age < Duration::from_secs(6),
        "A uses the new session, age {age:?}"
    );
    assert!(sim.session_age(B).unwrap() < Duration::from_secs(6));
    assert_eq!(
        sim.nodes[B].delivered.len(),
        126,
        "every packet arrived across the rekey"
    );
    assert_eq!(sim.nodes[A].delivered.len(), 125);
    assert!(sim.nodes[A].drops.is_empty() && sim.nodes[B].drops.is_empty());
}

#[test]
fn session_is_rejected_after_180_seconds() {
    let mut sim = established();
    // Seal a packet now but deliver it after REJECT_AFTER_TIME.
    sim.send(A, b"late").unwrap();
    let late = sim.wire.pop().unwrap();
    sim.blackhole = Some(B);
    sim.run_until(REJECT_AFTER_TIME + Duration::from_secs(1));
    sim.blackhole = None;
    sim.wire.clear();
    let now = sim.now;
    let mut buf = late.bytes.clone();
    assert_eq!(
        sim.nodes[B]
            .dp
            .decapsulate(now, 0, late.src.into(), &mut buf)
            .map(|_| ()),
        Err(DropReason::Expired)
    );
    // And the sender refuses the old session: it stages and handshakes again.
    let before = sim.handshakes_sent(A);
    assert_eq!(sim.send(A, b"after"), Err(EncapError::NoSession));
    sim.deliver();
    assert_eq!(sim.handshakes_sent(A), before + 1);
    assert_eq!(
        sim.nodes[B].delivered.last(),
        Some(&packet(inner(A), inner(B), b"after"))
    );
}

#[test]
fn unanswered_data_triggers_a_new_handshake_after_15_seconds() {
    let mut sim = established();
    sim.partition = true;
    sim.send(A, b"into the void").unwrap();
    // A has sent data since t0 ("hello") and heard nothing back since.
    let t = Duration::ZERO;
    sim.run_until(t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - Duration::from_millis(100));
    assert_eq!(sim.handshakes_sent(A), 1);
    sim.run_until(t + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + Duration::from_millis(100));
    assert_eq!(
        sim.handshakes_sent(A),
        2,
        "A starts a handshake when B goes silent"
    );
}

#[test]
fn initiations_retry_every_5_seconds_then_give_up_after_90() {
    let mut sim = Sim::new(|_, _| {});
    sim.blackhole = Some(B);
    assert_eq!(sim.send(A, b"staged"), Err(EncapError::NoSession));
    sim.run_until(Duration::from_secs(30));
    let at_30 = sim.handshakes_sent(A);
    // First at 0, then every REKEY_TIMEOUT + up to 333 ms jitter.
    assert!((6..=7).contains(&at_30), "{at_30} initiations in 30 s");
    sim.run_until(REKEY_ATTEMPT_TIME + Duration::from_secs(10));
    let total = sim.handshakes_sent(A);
    assert!(
        (17..=19).contains(&total),
        "{total} initiations before giving up"
    );
    let st = sim.nodes[A]
        .tunnel
        .peer_status(PeerId::new(0, 0), sim.now)
        .unwrap();
    assert_eq!(
        st.staged, 0,
        "staged packets are dropped when the handshake gives up"
    );
    assert_eq!(
        sim.nodes[A].tunnel.drop_counts()[DropReason::Expired.index()],
        1
    );
    assert_eq!(
        sim.nodes[A].tunnel.poll_timeout(),
        None,
        "idle again after giving up"
    );
    sim.run_until(Duration::from_secs(300));
    assert_eq!(sim.handshakes_sent(A), total);
}

#[test]
fn cookie_reply_under_load_then_mac2_accepted() {
    let mut sim = Sim::new(|_, _| {});
    sim.nodes[B].under_load = true;
    assert_eq!(sim.send(A, b"under load"), Err(EncapError::NoSession));
    sim.deliver();
    assert_eq!(sim.nodes[B].drops, vec![DropReason::CookieRequired]);
    let cookie_replies = sim.log.iter().filter(|d| d.bytes[0] == 3).count();
    assert_eq!(cookie_replies, 1, "B answered with a cookie reply");
    assert!(sim.nodes[B].delivered.is_empty());
    // A's retry carries MAC2 with the cookie; B, still under load, accepts it.
    sim.run_until(REKEY_TIMEOUT + Duration::from_secs(1));
    assert_eq!(sim.handshakes_sent(A), 2);
    assert_eq!(
        sim.nodes[B].drops,
        vec![DropReason::CookieRequired],
        "no second cookie needed"
    );
    assert_eq!(
        sim.nodes[B].delivered,
        vec![packet(inner(A), inner(B), b"under load")]
    );
}

#[test]
fn cookie_reply_does_not_move_the_endpoint_and_forged_ones_are_refused() {
    let mut sim = Sim::new(|_, _| {});
    sim.nodes[B].under_load = true;
    sim.send(A, b"x").unwrap_err();
    sim.deliver();
    let reply = sim
        .log
        .iter()
        .find(|d| d.bytes[0] == 3)
        .unwrap()
        .bytes
        .clone();
    let now = sim.now;
    let wall = sim.wall();
    let elsewhere: SocketAddr = "203.0.113.9:9999".parse().unwrap();
    // The same cookie reply again from elsewhere: it authenticates, but must not roam.
    let r = sim.nodes[A]
        .tunnel
        .handle_handshake(now, wall, elsewhere.into(), &reply, false);
    assert_eq!(r, Ok(Handled::CookieStored(PeerId::new(0, 0))));
    assert_eq!(
        sim.nodes[A].dp.endpoint(PeerId::new(0, 0)),
        Some(sim.nodes[B].addr)
    );
    let mut forged = reply.clone();
    forged[40] ^= 1;
    let r = sim.nodes[A]
        .tunnel
        .handle_handshake(now, wall, elsewhere.into(), &forged, false);
    assert_eq!(r, Err(HandshakeError::Decrypt("cookie")));
}

#[test]
fn roaming_follows_authenticated_packets_unless_pinned() {
    for pinned in [false, true] {
        let mut sim = Sim::new(|i, p| p.pin_endpoint = pinned && i == B);
        sim.send(A, b"hello").unwrap_err();
        sim.deliver();
        // A moves to a new address (NAT rebinding).
        let new_addr: SocketAddr = "192.0.2.99:40000".parse().unwrap();
        sim.nodes[A].addr = new_addr;
        sim.send(A, b"from the new address").unwrap();
        sim.deliver();
        let seen = sim.nodes[B].dp.endpoint(PeerId::new(0, 0));
        if pinned {
            assert_eq!(
                seen,
                Some("192.0.2.1:51820".parse().unwrap()),
                "pinned endpoint must not move"
            );
        } else {
            assert_eq!(seen, Some(new_addr), "B should follow A to its new address");
        }
        // An unauthenticated packet from a third address never moves it.
        let junk_src: SocketAddr = "203.0.113.1:1".parse().unwrap();
        let mut junk = sim.log.last().unwrap().bytes.clone();
        junk[30] ^= 1;
        sim.receive(B, junk_src, &junk);
        assert_eq!(sim.nodes[B].dp.endpoint(PeerId::new(0, 0)), seen);
        assert_eq!(sim.nodes[B].drops.last(), Some(&DropReason::AuthFailed));
    }
}

#[test]
fn a_peer_that_spreads_flows_keeps_its_listen_port() {
    let mut sim = Sim::new(|_, p| p.spread_flows = true);
    sim.send(A, b"hello").unwrap_err();
    sim.deliver();
    let listen = sim.nodes[A].addr;
    assert_eq!(sim.nodes[B].dp.endpoint(PeerId::new(0, 0)), Some(listen));
    let st = sim.nodes[B]
        .tunnel
        .peer_status(PeerId::new(0, 0), sim.now)
        .unwrap();
    assert!(st.spread_flows);
    // Data from A's flow ports: delivered, but the port B answers to stays
    // A's listen port (a flow port receives nothing).
    for port in [40001u16, 40002, 40003] {
        sim.send(A, b"from a flow port").unwrap();
        let mut d = sim.wire.pop().unwrap();
        d.src.set_port(port);
        sim.receive(B, d.src, &d.bytes);
        assert_eq!(sim.nodes[B].dp.endpoint(PeerId::new(0, 0)), Some(listen));
    }
    assert_eq!(sim.nodes[B].drops, vec![]);
    assert_eq!(
        sim.nodes[B]
            .delivered
            .iter()
            .filter(|p| p.ends_with(b"from a flow port"))
            .count(),
        3
    );
    // A moves to a new address: the address follows its data, the port
    // stays until a handshake (which leaves from the listen port) says.
    sim.send(A, b"moved").unwrap();
    let mut d = sim.wire.pop().unwrap();
    d.src = "192.0.2.77:40009".parse().unwrap();
    sim.receive(B, d.src, &d.bytes);
    assert_eq!(
        sim.nodes[B].dp.endpoint(PeerId::new(0, 0)),
        Some(SocketAddr::new(
            "192.0.2.77".parse().unwrap(),
            listen.port()
        ))
    );
    // And what B seals says that the flow's own port may carry it.
    let peer = PeerId::new(0, 0);
    let mut buf = vec![0u8; HEADROOM + 64 + TAILROOM];
    let sealed = sim.nodes[B]
        .dp
        .encapsulate(peer, 0, sim.now, &mut buf, 0)
        .unwrap();
    assert!(sealed.spread);
}

#[test]
fn a_peer_without_spread_flows_roams_whole_and_gets_the_listen_port() {
    let mut sim = established();
    let st = sim.nodes[B]
        .tunnel
        .peer_status(PeerId::new(0, 0), sim.now)
        .unwrap();
    assert!(!st.spread_flows);
    let mut buf = vec![0u8; HEADROOM + 64 + TAILROOM];
    let sealed = sim.nodes[A]
        .dp
        .encapsulate(PeerId::new(0, 0), 0, sim.now, &mut buf, 0)
        .unwrap();
    assert!(!sealed.spread);
    // Its data from another port moves the whole endpoint (roaming).
    sim.send(A, b"x").unwrap();
    let mut d = sim.wire.pop().unwrap();
    d.src.set_port(40001);
    sim.receive(B, d.src, &d.bytes);
    assert_eq!(sim.nodes[B].dp.endpoint(PeerId::new(0, 0)), Some(d.src));
    // B's endpoint for A is now a port A only sends from. A reload puts
    // the file's Endpoint back and turns the switch on, which starts a
    // handshake: A hears B's listen port from it, whatever it had.
    let a_listen = sim.nodes[A].addr;
    sim.nodes[B]
        .tunnel
        .set_endpoint(PeerId::new(0, 0), Some(a_listen))
        .unwrap();
    let completed = |sim: &Sim| {
        sim.nodes[B]
            .tunnel
            .peer_status(PeerId::new(0, 0), sim.now)
            .unwrap()
            .handshakes
    };
    let done_before = completed(&sim);
    let before = sim.handshakes_sent(B);
    for _ in 0..2 {
        sim.nodes[B]
            .tunnel
            .set_spread_flows(PeerId::new(0, 0), true)
            .unwrap();
    }
    let sealed = sim.nodes[B]
        .dp
        .encapsulate(PeerId::new(0, 0), 0, sim.now, &mut buf, 0)
        .unwrap();
    assert!(sealed.spread, "turned on while it runs, the session kept");
    let (now, wall) = (sim.now, sim.wall());
    sim.nodes[B].tunnel.handle_timeout(now, wall);
    sim.drain(B);
    sim.deliver();
    assert_eq!(sim.handshakes_sent(B), before + 1, "one handshake, once");
    assert_eq!(completed(&sim), done_before + 1, "and it completed");
    assert_eq!(
        sim.nodes[A].dp.endpoint(PeerId::new(0, 0)),
        Some(sim.nodes[B].addr),
        "A answers to B's listen port"
    );
    // Our listen port moved: every spreading peer hears of it (once the
    // 5 s between two initiations has passed).
    sim.now += Duration::from_secs(6);
    let (now, wall) = (sim.now, sim.wall());
    sim.nodes[B].tunnel.contact_spreading_peers();
    sim.nodes[B].tunnel.handle_timeout(now, wall);
    sim.drain(B);
    sim.deliver();
    assert_eq!(sim.handshakes_sent(B), before + 2);
}

#[test]
fn replayed_and_tampered_data_are_dropped() {
    let mut sim = established();
    sim.send(A, b"once").unwrap();
    let d = sim.wire.pop().unwrap();
    sim.receive(B, d.src, &d.bytes);
    sim.receive(B, d.src, &d.bytes);
    let mut t = d.bytes.clone();
    t[17] ^= 0x80;
    sim.receive(B, d.src, &t);
    let mut t = d.bytes.clone();
    t[4] ^= 1; // receiver index
    sim.receive(B, d.src, &t);
    sim.receive(B, d.src, &d.bytes[..31]);
    assert_eq!(
        sim.nodes[B].drops,
        vec![
            DropReason::Replay,
            DropReason::AuthFailed,
            DropReason::UnknownIndex,
            DropReason::Malformed
        ]
    );
    assert_eq!(
        sim.nodes[B]
            .delivered
            .iter()
            .filter(|p| p.ends_with(b"once"))
            .count(),
        1
    );
}

#[test]
fn replayed_initiation_is_refused_and_initiations_are_rate_limited() {
    let mut sim = established();
    let init = sim
        .log
        .iter()
        .find(|d| d.bytes[0] == 1)
        .unwrap()
        .bytes
        .clone();
    let src = sim.nodes[A].addr;
    sim.run_until(REKEY_TIMEOUT + Duration::from_secs(1));
    let (now, wall) = (sim.now, sim.wall());
    let r = sim.nodes[B]
        .tunnel
        .handle_handshake(now, wall, src.into(), &init, false);
    assert_eq!(r.map_err(DropReason::from), Err(DropReason::Replay));
    // Two fresh initiations from A within 20 ms: the second is rate limited.
    sim.nodes[A].tunnel.handle_events(
        PeerId::new(0, 0),
        tunnel_proto::wg::Events::REKEY,
        now,
        wall,
    );
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    let t = sim.nodes[A].tunnel.poll_transmit(now, &mut buf).unwrap();
    let first = buf[..t.len].to_vec();
    assert_eq!(
        sim.nodes[B]
            .tunnel
            .handle_handshake(now, wall, src.into(), &first, false),
        Ok(Handled::Responded(PeerId::new(0, 0)))
    );
    // A retransmits after REKEY_TIMEOUT + jitter (B's response never reached
    // it); present that second initiation to B only 10 ms after the first.
    let later = now + REKEY_TIMEOUT + Duration::from_millis(334);
    sim.nodes[A]
        .tunnel
        .handle_timeout(later, wall + REKEY_TIMEOUT + Duration::from_millis(334));
    let t = sim.nodes[A].tunnel.poll_transmit(later, &mut buf).unwrap();
    let second = buf[..t.len].to_vec();
    assert_eq!(second[0], 1, "a retransmitted initiation");
    let r = sim.nodes[B].tunnel.handle_handshake(
        now + Duration::from_millis(10),
        wall,
        src.into(),
        &second,
        false,
    );
    assert_eq!(r, Err(HandshakeError::RateLimited));
    let r = sim.nodes[B].tunnel.handle_handshake(
        now + Duration::from_millis(30),
        wall,
        src.into(),
        &second,
        false,
    );
    assert_eq!(r, Ok(Handled::Responded(PeerId::new(0, 0))));
}

#[test]
fn persistent_keepalive_keeps_the_path_warm() {
    let mut sim = Sim::new(|i, p| {
        if i == A {
            p.persistent_keepalive = Some(Duration::from_secs(25));
        }
    });
    // A contacts B at start-up without any traffic.
    assert_eq!(sim.nodes[A].tunnel.poll_timeout(), Some(sim.t0));
    sim.run_until(Duration::from_millis(10));
    assert_eq!(sim.handshakes_sent(A), 1);
    let ka = sim.nodes[B].keepalives;
    assert!(ka >= 1, "the handshake is confirmed with a keepalive");
    sim.run_until(Duration::from_secs(101));
    let got = sim.nodes[B].keepalives - ka;
    assert_eq!(got, 4, "a keepalive every 25 s for 100 s, got {got}");
}

#[test]
fn a_restarted_node_with_handshake_on_start_is_reached_again_at_once() {
    for on in [false, true] {
        let mut sim = established();
        sim.run_until(Duration::from_secs(1));
        sim.restart(B, on);
        // The first timer call, then what A sends on its old session.
        sim.run_until(Duration::from_secs(1) + Duration::from_millis(10));
        let _ = sim.send(A, b"after the restart");
        sim.run_until(Duration::from_secs(2));
        let got = sim.nodes[B].delivered.clone();
        if on {
            assert_eq!(sim.handshakes_sent(B), 1, "B contacts A on start");
            assert_eq!(
                got,
                vec![packet(inner(A), inner(B), b"after the restart")],
                "A sends on the session B started"
            );
        } else {
            assert_eq!(sim.handshakes_sent(B), 0, "B stays silent, as wg does");
            assert!(got.is_empty(), "A's old session reaches nobody: {got:?}");
            assert_eq!(sim.nodes[B].drops, vec![DropReason::UnknownIndex]);
        }
    }
}

#[test]
fn keys_are_erased_after_540_seconds_and_the_tunnel_goes_idle() {
    let mut sim = established();
    sim.run_until(ZERO_KEYS_AFTER + Duration::from_secs(1));
    assert_eq!(sim.session_age(A), None);
    assert_eq!(sim.session_age(B), None);
    for n in &sim.nodes {
        assert_eq!(n.tunnel.poll_timeout(), None, "nothing left to time");
    }
    // Traffic starts a fresh handshake.
    assert_eq!(sim.send(A, b"back"), Err(EncapError::NoSession));
    sim.deliver();
    assert_eq!(
        sim.nodes[B].delivered.last(),
        Some(&packet(inner(A), inner(B), b"back"))
    );
}

#[test]
fn a_full_staging_queue_drops_with_queue_full() {
    let mut sim = Sim::new(|_, _| {});
    sim.blackhole = Some(B);
    let now = sim.now;
    let wall = sim.wall();
    let pkt = packet(inner(A), inner(B), b"q");
    let peer = PeerId::new(0, 0);
    for _ in 0..tunnel_proto::wg::DEFAULT_MAX_STAGED {
        sim.nodes[A].tunnel.stage(peer, &pkt, now, wall).unwrap();
    }
    assert_eq!(
        sim.nodes[A].tunnel.stage(peer, &pkt, now, wall),
        Err(DropReason::QueueFull)
    );
    assert_eq!(
        sim.nodes[A].tunnel.drop_counts()[DropReason::QueueFull.index()],
        1
    );
    sim.blackhole = None;
    sim.drain(A);
    sim.run_until(Duration::from_secs(6));
    assert_eq!(
        sim.nodes[B].delivered.len(),
        tunnel_proto::wg::DEFAULT_MAX_STAGED,
        "all staged packets arrive"
    );
}

#[test]
fn a_receive_only_initiator_rekeys_before_the_session_dies() {
    let mut sim = established();
    // Only the responder has data; the initiator answers with keepalives.
    for s in 1..=200u64 {
        sim.run_until(Duration::from_secs(s));
        sim.send(B, format!("b{s}").as_bytes()).unwrap();
        sim.deliver();
    }
    assert_eq!(
        sim.handshakes_sent(B),
        0,
        "the responder never needed to initiate"
    );
    assert_eq!(
        sim.handshakes_sent(A),
        2,
        "the initiator rekeyed exactly once"
    );
    assert_eq!(
        sim.nodes[A].delivered.len(),
        200,
        "no packet was lost to an expired session"
    );
    assert!(
        sim.nodes[A].drops.is_empty(),
        "drops at A: {:?}",
        sim.nodes[A].drops
    );
    assert!(sim.session_age(A).unwrap() < REJECT_AFTER_TIME - Duration::from_secs(60));
}

#[test]
fn workers_screen_handshake_messages_by_mac1() {
    let mut sim = Sim::new(|_, _| {});
    let _ = sim.send(A, b"hello");
    let init = sim
        .wire
        .iter()
        .find(|d| message_type(&d.bytes) == Ok(MessageType::Initiation))
        .expect("staging a packet sends an initiation")
        .bytes
        .clone();
    let b = sim.nodes[B].dp.clone();
    assert_eq!(
        b.screen_handshake(&init),
        Ok(()),
        "a real initiation passes"
    );
    for bit in 0..init.len() * 8 {
        let mut m = init.clone();
        m[bit / 8] ^= 1 << (bit % 8);
        // Only MAC2 (bytes 132..148) is outside what the screen checks.
        if bit / 8 >= 132 {
            continue;
        }
        let want = if bit / 8 < 4 {
            DropReason::Malformed
        } else {
            DropReason::AuthFailed
        };
        assert_eq!(
            b.screen_handshake(&m),
            Err(want),
            "flipping bit {bit} must fail the screen"
        );
    }
    assert_eq!(
        b.screen_handshake(&init[..147]),
        Err(DropReason::Malformed),
        "short"
    );
    assert_eq!(
        sim.nodes[A].dp.screen_handshake(&init),
        Err(DropReason::AuthFailed),
        "MAC1 is keyed by the receiver's public key"
    );
    let mut cookie = [0u8; 64];
    cookie[0] = 3;
    assert_eq!(
        b.screen_handshake(&cookie),
        Ok(()),
        "cookie replies carry no MAC1: the control thread authenticates them"
    );
    assert_eq!(
        b.screen_handshake(&cookie[..63]),
        Err(DropReason::Malformed)
    );
}

/// Every byte that crossed the wire in a run of a fixed script: a
/// handshake, data both ways, a rekey, a keepalive.
fn scripted_run(sim: &mut Sim) -> Vec<Vec<u8>> {
    sim.send(A, b"hello").unwrap_err();
    sim.run_until(Duration::from_millis(1));
    for s in 1..=130 {
        sim.run_until(Duration::from_secs(s));
        sim.send(A, b"a").unwrap();
        if s % 7 == 0 {
            sim.send(B, b"b").unwrap();
        }
        sim.deliver();
    }
    sim.run_until(Duration::from_secs(150));
    sim.log.iter().map(|d| d.bytes.clone()).collect()
}

#[test]
fn a_seeded_run_replays_exactly() {
    let first = scripted_run(&mut Sim::seeded(7));
    let again = scripted_run(&mut Sim::seeded(7));
    assert!(
        first.len() > 130,
        "the script ran: {} datagrams",
        first.len()
    );
    assert!(
        first.iter().filter(|d| d[0] == 1).count() >= 2,
        "it covered a rekey"
    );
    assert_eq!(first, again, "same seed, same bytes on the wire");
    let other = scripted_run(&mut Sim::seeded(8));
    assert_eq!(other.len(), first.len(), "the same exchange");
    assert_ne!(other, first, "another seed, other ephemerals and indices");
}

#[test]
fn handle_timeout_fires_exactly_what_poll_timeout_announced() {
    let mut sim = Sim::new(|_, _| {});
    sim.blackhole = Some(B);
    sim.send(A, b"x").unwrap_err();
    sim.deliver();
    assert_eq!(sim.handshakes_sent(A), 1);
    let due = sim.nodes[A].tunnel.poll_timeout().unwrap();
    let retry = due - sim.t0;
    assert!(
        retry >= REKEY_TIMEOUT && retry <= REKEY_TIMEOUT + Duration::from_millis(333),
        "the retry deadline is REKEY_TIMEOUT plus jitter: {retry:?}"
    );
    let wall = sim.wall();
    let early = due - Duration::from_nanos(1);
    sim.nodes[A].tunnel.handle_timeout(early, wall);
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    assert_eq!(
        sim.nodes[A].tunnel.poll_transmit(early, &mut buf),
        None,
        "nothing fires before the announced deadline"
    );
    assert_eq!(sim.nodes[A].tunnel.poll_timeout(), Some(due));
    sim.nodes[A].tunnel.handle_timeout(due, wall);
    let t = sim.nodes[A].tunnel.poll_transmit(due, &mut buf).unwrap();
    assert_eq!(buf[0], 1, "the retry is an initiation");
    assert_eq!(t.dst, addr_of(B));
    assert!(sim.nodes[A].tunnel.poll_timeout().unwrap() > due);
}

#[test]
fn allowed_ips_endpoint_keepalive_and_pin_change_without_a_new_handshake() {
    let mut sim = established();
    let id = sim.nodes[A].tunnel.peer_id(&key_of(B)).unwrap();
    let age = sim.session_age(A).unwrap();
    let extra = IpPrefix::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 0)), 16).unwrap();
    let t = &mut sim.nodes[A].tunnel;
    t.set_allowed_ips(
        id,
        vec![IpPrefix::new(IpAddr::V4(inner(B)), 32).unwrap(), extra],
    )
    .unwrap();
    t.set_endpoint(id, Some(addr_of(B))).unwrap();
    t.set_persistent_keepalive(id, Some(Duration::from_secs(25)))
        .unwrap();
    t.set_pinned(id, true).unwrap();
    sim.drain(A);
    assert_eq!(
        sim.nodes[A]
            .dp
            .route(IpAddr::V4(Ipv4Addr::new(10, 9, 3, 4))),
        Some(id),
        "the new prefix routes to the peer"
    );
    sim.send(A, b"after").unwrap();
    sim.send(B, b"back").unwrap();
    sim.deliver();
    assert_eq!(
        sim.handshakes_sent(A) + sim.handshakes_sent(B),
        1,
        "no new handshake"
    );
    assert_eq!(sim.session_age(A), Some(age), "the same session");
    assert_eq!(sim.nodes[B].delivered.len(), 2);
    assert_eq!(sim.nodes[A].delivered.len(), 1);
    let st = sim.nodes[A].tunnel.peer_status(id, sim.now).unwrap();
    assert!(st.pinned);
    assert_eq!(st.persistent_keepalive, Some(Duration::from_secs(25)));
    assert_eq!(st.allowed_ips.len(), 2);
    assert_eq!(st.traffic.tx_packets, 2, "hello (staged) and after");
    assert_eq!(st.traffic.rx_packets, 1);
}

#[test]
fn a_removed_peer_is_forgotten_and_its_id_never_names_the_next_one() {
    let mut sim = established();
    let old = sim.nodes[B].tunnel.peer_id(&key_of(A)).unwrap();
    let before = sim.nodes[B].tunnel.receiver_indices();
    assert!(before >= 1);
    sim.nodes[B].tunnel.remove_peer(old).unwrap();
    sim.drain(B);
    assert_eq!(
        sim.nodes[B].tunnel.receiver_indices(),
        0,
        "indices released"
    );
    assert_eq!(sim.nodes[B].tunnel.peer_count(), 0);
    assert_eq!(sim.nodes[B].dp.endpoint(old), None);
    // A still holds the session B forgot: its data names an unknown index.
    sim.send(A, b"lost").unwrap();
    sim.deliver();
    assert_eq!(sim.nodes[B].drops, vec![DropReason::UnknownIndex]);
    // The old id is refused everywhere.
    let (now, wall) = (sim.now, sim.wall());
    let t = &mut sim.nodes[B].tunnel;
    assert!(t.peer_status(old, now).is_none());
    assert!(t.set_endpoint(old, None).is_err());
    assert!(t.remove_peer(old).is_err());
    assert_eq!(
        t.stage(old, &[0x45; 20], now, wall),
        Err(DropReason::NoRoute)
    );

    // Added back, the peer gets the slot with a new generation.
    let cfg = config_of(B, &|_, _| {}).peers.remove(0);
    let new = sim.nodes[B].tunnel.add_peer(cfg).unwrap();
    assert_eq!(new.slot(), old.slot());
    assert_ne!(new, old);
    assert!(sim.nodes[B].tunnel.peer_status(old, sim.now).is_none());
    sim.drain(B);
    // A hears nothing back and starts over after KEEPALIVE + REKEY_TIMEOUT.
    sim.run_until(Duration::from_secs(20));
    assert_eq!(sim.handshakes_sent(A), 2);
    sim.send(A, b"again").unwrap();
    sim.deliver();
    assert_eq!(
        sim.nodes[B].delivered.last(),
        Some(&packet(inner(A), inner(B), b"again"))
    );
}

#[test]
fn a_new_preshared_key_needs_a_new_handshake_and_the_same_one_changes_nothing() {
    let mut sim = established();
    let age = sim.session_age(A).unwrap();
    let same = PresharedKey::from_bytes([0x5a; 32]);
    for i in [A, B] {
        let id = sim.nodes[i].tunnel.peer_id(&key_of(1 - i)).unwrap();
        sim.nodes[i]
            .tunnel
            .set_preshared_key(id, Some(same.clone()))
            .unwrap();
        sim.drain(i);
    }
    assert_eq!(
        sim.session_age(A),
        Some(age),
        "the same key: nothing changed"
    );
    let new = PresharedKey::from_bytes([0x77; 32]);
    for i in [A, B] {
        let id = sim.nodes[i].tunnel.peer_id(&key_of(1 - i)).unwrap();
        sim.nodes[i]
            .tunnel
            .set_preshared_key(id, Some(new.clone()))
            .unwrap();
        sim.drain(i);
        assert_eq!(sim.session_age(i), None, "sessions dropped");
        assert_eq!(sim.nodes[i].tunnel.receiver_indices(), 0);
    }
    // Past the responder's initiation rate limit.
    sim.run_until(Duration::from_secs(1));
    assert_eq!(sim.send(A, b"rekeyed"), Err(EncapError::NoSession));
    sim.deliver();
    assert_eq!(
        sim.nodes[B].delivered.last(),
        Some(&packet(inner(A), inner(B), b"rekeyed"))
    );
    assert_eq!(sim.handshakes_sent(A), 2);
}

#[test]
fn simultaneous_rekeys_leak_no_receiver_index() {
    let mut sim = established();
    sim.send(B, b"confirm").unwrap();
    sim.deliver();
    for round in 1..=1000u64 {
        // Both sides start a handshake at the same instant: each answers
        // the other's initiation, then gets the response to its own while
        // the session it just answered is still unconfirmed.
        sim.run_until(Duration::from_secs(6 * round));
        let wall = sim.wall();
        for i in [A, B] {
            let id = sim.nodes[i].tunnel.peer_id(&key_of(1 - i)).unwrap();
            sim.nodes[i]
                .tunnel
                .handle_events(id, tunnel_proto::wg::Events::REKEY, sim.now, wall);
            sim.drain(i);
        }
        sim.deliver();
        for i in [A, B] {
            let n = sim.nodes[i].tunnel.receiver_indices();
            assert!(n <= 4, "round {round}: node {i} holds {n} receiver indices");
        }
    }
    sim.send(A, b"still").unwrap();
    sim.deliver();
    assert_eq!(
        sim.nodes[B].delivered.last(),
        Some(&packet(inner(A), inner(B), b"still"))
    );
    for i in [A, B] {
        let n = sim.nodes[i].tunnel.receiver_indices();
        assert!(
            n <= 3,
            "after 1,000 rounds node {i} holds {n} receiver indices"
        );
    }
}

#[test]
fn a_bare_tunnel_handshakes_once_it_has_a_private_key() {
    let mut sim = Sim::with(
        |_, _| {},
        |i, cfg| {
            if i == B {
                cfg.private_key = None;
            }
        },
    );
    assert_eq!(sim.nodes[B].tunnel.public_key(), None);
    assert!(sim.nodes[B].tunnel.private_key().is_none());
    assert_eq!(sim.send(A, b"early"), Err(EncapError::NoSession));
    sim.deliver();
    assert_eq!(
        sim.nodes[B].drops,
        vec![DropReason::AuthFailed],
        "no key: no initiation can be for us"
    );
    let key = PrivateKey::from_bytes(KEYS[B]);
    sim.nodes[B]
        .tunnel
        .set_private_key(Some(key.clone()))
        .unwrap();
    sim.drain(B);
    assert_eq!(sim.nodes[B].tunnel.public_key(), Some(key.public_key()));
    // A retries after REKEY_TIMEOUT; B answers now.
    sim.run_until(REKEY_TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        sim.nodes[B].delivered,
        vec![packet(inner(A), inner(B), b"early")],
        "the staged packet arrived once B had its key"
    );
    // Setting the same key again changes nothing.
    let age = sim.session_age(B);
    sim.nodes[B].tunnel.set_private_key(Some(key)).unwrap();
    sim.drain(B);
    assert_eq!(sim.session_age(B), age);
    // Removing it drops every session.
    sim.nodes[B].tunnel.set_private_key(None).unwrap();
    sim.drain(B);
    assert_eq!(sim.session_age(B), None);
    assert_eq!(sim.nodes[B].tunnel.receiver_indices(), 0);
}

#[test]
fn the_reply_to_a_restarted_initiators_first_packet_leaves_on_the_new_session() {
    let mut sim = established();
    sim.send(B, b"confirm").unwrap();
    sim.deliver();
    sim.run_until(Duration::from_secs(1));
    // A restarts: it has no session; B still holds the old one as current.
    sim.restart(A, false);
    assert_eq!(sim.send(A, b"first"), Err(EncapError::NoSession));
    // Run the handshake, but hold A's first data packet to B.
    let data = loop {
        assert!(!sim.wire.is_empty(), "the handshake stalled");
        let d = sim.wire.remove(0);
        if d.dst == addr_of(B) && d.bytes[0] == 4 {
            break d;
        }
        let to = sim.node_at(d.dst).unwrap();
        sim.receive(to, d.src, &d.bytes);
    };
    // B's worker opens it with the snapshot it holds, which still names
    // the old session as current: the control thread has not yet heard
    // of the confirmation when the reply is sealed.
    let dp = sim.nodes[B].dp.clone();
    let mut buf = data.bytes.clone();
    let o = dp
        .decapsulate(sim.now, 0, addr_of(A).into(), &mut buf)
        .unwrap();
    assert!(o.events.contains(tunnel_proto::wg::Events::CONFIRMED));
    let reply = packet(inner(B), inner(A), b"reply");
    let mut out = vec![0u8; HEADROOM + reply.len() + TAILROOM];
    out[HEADROOM..HEADROOM + reply.len()].copy_from_slice(&reply);
    let s = dp
        .encapsulate(o.peer, 0, sim.now, &mut out, reply.len())
        .unwrap();
    // A has only the new session: it must be able to open the reply.
    let mut got = out[..s.len].to_vec();
    let opened = sim.nodes[A]
        .dp
        .decapsulate(sim.now, 0, addr_of(B).into(), &mut got)
        .expect("the reply left on the session A has");
    assert_eq!(&got[opened.payload], &reply[..]);
}

#[test]
fn under_load_one_source_with_a_cookie_is_limited_while_a_peer_still_gets_through() {
    let mut sim = Sim::new(|_, _| {});
    sim.nodes[B].under_load = true;
    // The attacker knows B's public key (so its MAC1 is valid) and owns
    // one address (so it can fetch a cookie); B does not know its key.
    let attacker: SocketAddr = "203.0.113.66:4444".parse().unwrap();
    let mut cfg = TunnelConfig::new(PrivateKey::from_bytes([0xee; 32]));
    let mut peer = PeerConfig::new(key_of(B));
    peer.endpoint = Some(addr_of(B));
    cfg.peers.push(peer);
    cfg.handshake_on_start = true;
    let (now, wall) = (sim.now, sim.wall());
    let mut evil = Tunnel::new(cfg, now, wall).unwrap();
    evil.handle_timeout(now, wall);
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    let t = evil.poll_transmit(now, &mut buf).unwrap();
    let first = buf[..t.len].to_vec();
    let b = &mut sim.nodes[B].tunnel;
    assert_eq!(
        b.handle_handshake(now, wall, attacker.into(), &first, true),
        Err(HandshakeError::CookieRequired)
    );
    let t = b.poll_transmit(now, &mut buf).unwrap();
    assert_eq!(
        (t.dst, buf[0]),
        (attacker, 3),
        "a cookie reply to the attacker"
    );
    let reply = buf[..t.len].to_vec();
    assert!(matches!(
        evil.handle_handshake(now, wall, addr_of(B).into(), &reply, false),
        Ok(Handled::CookieStored(_))
    ));
    // Its retry carries a valid MAC2; it sends that a thousand times in
    // a second.
    let later = evil.poll_timeout().unwrap();
    evil.handle_timeout(later, wall);
    let t = evil.poll_transmit(later, &mut buf).unwrap();
    let flood = buf[..t.len].to_vec();
    assert_eq!(flood[0], 1);
    let mut limited = 0;
    let mut reached_dh = 0;
    for n in 0..1000u64 {
        let at = now + Duration::from_millis(n);
        match b.handle_handshake(at, wall, attacker.into(), &flood, true) {
            Err(HandshakeError::RateLimited) => limited += 1,
            Err(HandshakeError::CookieRequired) => panic!("the MAC2 is valid"),
            _ => reached_dh += 1,
        }
    }
    // A burst of 5, then 20 a second.
    assert!(
        reached_dh <= 5 + 20 + 1,
        "{reached_dh} reached Diffie-Hellman"
    );
    assert_eq!(limited + reached_dh, 1000);
    // Meanwhile A, a real peer at its own address, gets through by the
    // cookie round trip.
    assert_eq!(sim.send(A, b"still here"), Err(EncapError::NoSession));
    sim.run_until(REKEY_TIMEOUT + Duration::from_secs(1));
    assert_eq!(
        sim.nodes[B].delivered,
        vec![packet(inner(A), inner(B), b"still here")]
    );
}

#[test]
fn a_session_the_peer_made_cancels_our_unanswered_initiation() {
    let mut sim = Sim::new(|_, _| {});
    // B tries first, while A is not listening.
    sim.blackhole = Some(A);
    assert_eq!(sim.send(B, b"from b"), Err(EncapError::NoSession));
    sim.deliver();
    assert_eq!(sim.handshakes_sent(B), 1);
    // A comes up and initiates; its first packet confirms B's session.
    sim.blackhole = None;
    sim.run_until(Duration::from_secs(1));
    assert_eq!(sim.send(A, b"from a"), Err(EncapError::NoSession));
    sim.run_until(Duration::from_secs(2));
    assert_eq!(
        sim.nodes[B].delivered,
        vec![packet(inner(A), inner(B), b"from a")]
    );
    assert_eq!(
        sim.nodes[A].delivered,
        vec![packet(inner(B), inner(A), b"from b")],
        "B's staged packet left on A's session"
    );
    // B's own initiation was never answered; it must not be retried now.
    sim.run_until(REKEY_TIMEOUT * 4);
    assert_eq!(sim.handshakes_sent(B), 1, "no second handshake from B");
    assert_eq!(sim.handshakes_sent(A), 1);
}

#[test]
fn under_load_one_address_gets_only_so_many_cookie_replies() {
    let mut sim = Sim::new(|_, _| {});
    sim.nodes[B].under_load = true;
    sim.send(A, b"x").unwrap_err();
    let init = sim.wire.pop().unwrap().bytes;
    assert_eq!(init[0], 1);
    let (now, wall) = (sim.now, sim.wall());
    let flooder: SocketAddr = "203.0.113.7:999".parse().unwrap();
    let b = &mut sim.nodes[B].tunnel;
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    let mut replies = 0;
    for n in 0..1000u64 {
        let at = now + Duration::from_millis(n);
        let _ = b.handle_handshake(at, wall, flooder.into(), &init, true);
        while let Some(t) = b.poll_transmit(at, &mut buf) {
            assert_eq!((t.dst, buf[0]), (flooder, 3));
            replies += 1;
        }
    }
    // A burst of 5, then 20 a second.
    assert!((5..=26).contains(&replies), "{replies} cookie replies");
    // Another address still gets its reply at once.
    let later = now + Duration::from_millis(1000);
    let other: SocketAddr = "203.0.113.8:999".parse().unwrap();
    assert_eq!(
        b.handle_handshake(later, wall, other.into(), &init, true),
        Err(HandshakeError::CookieRequired)
    );
    assert_eq!(b.poll_transmit(later, &mut buf).map(|t| t.dst), Some(other));
}

#[test]
fn a_snapshot_reports_traffic_and_session_age_as_peer_status_does() {
    let mut sim = established();
    sim.send(B, b"world").unwrap();
    sim.deliver();
    sim.run_until(Duration::from_secs(2));
    let id = PeerId::new(0, 0);
    for i in [A, B] {
        let now = sim.now;
        let t = &mut sim.nodes[i].tunnel;
        let _ = t.poll_snapshot();
        let snap = t.snapshot();
        let st = t.peer_status(id, now).unwrap();
        assert_eq!(snap.traffic(id), Some(st.traffic), "node {i}");
        assert!(st.traffic.rx_packets > 0, "node {i} received nothing");
        assert_eq!(snap.session_age(id, now), st.session_age, "node {i}");
        assert!(st.session_age.is_some(), "node {i} has no session");
        assert_eq!(snap.traffic(PeerId::new(7, 0)), None);
    }
}
