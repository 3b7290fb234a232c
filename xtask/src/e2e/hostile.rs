//! Hostile input for a tunnel's UDP port: random datagrams, damaged copies
//! of real ones, and a flood of forged WireGuard handshake initiations
//! whose MAC1 is valid (so the responder cannot discard them for free and
//! has to decide, under load, to answer with cookie replies instead of
//! doing the Diffie-Hellman work of a handshake).

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};

use super::relay::SplitMix64;

/// Handshake initiation (whitepaper §5.4.2): 148 bytes, MAC1 over the first 116.
pub const INITIATION_LEN: usize = 148;
/// Where MAC1 starts in an initiation.
pub const INITIATION_MAC1_OFFSET: usize = 116;
/// Message types (whitepaper §5.4).
pub const TYPE_INITIATION: u8 = 1;
/// Handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Transport data.
pub const TYPE_DATA: u8 = 4;
/// `LABEL-MAC1` (whitepaper §5.4.4).
const LABEL_MAC1: &[u8] = b"mac1----";

/// The key of MAC1 for messages to the owner of `responder_public`:
/// HASH(LABEL-MAC1 || S_pub), HASH being BLAKE2s-256.
pub fn mac1_key(responder_public: &[u8; 32]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(LABEL_MAC1);
    h.update(responder_public);
    h.finalize().into()
}

/// MAC(key, msg): keyed BLAKE2s with a 16-byte output set up front (a
/// truncated 32-byte MAC would be other bytes).
pub fn mac(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
    // A 32-byte key is always accepted by keyed BLAKE2s (at most 32).
    let mut m = match <Blake2sMac<U16> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("BLAKE2s takes keys of up to 32 bytes"),
    };
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// A handshake initiation with random contents (sender index, ephemeral
/// key, encrypted static and timestamp) and a correct MAC1 for
/// `mac1_key`; MAC2 is zero, as from a sender holding no cookie.
pub fn forged_initiation(rng: &mut SplitMix64, mac1_key: &[u8; 32]) -> [u8; INITIATION_LEN] {
    let mut m = [0u8; INITIATION_LEN];
    rng.fill(&mut m[4..INITIATION_MAC1_OFFSET]);
    m[0] = TYPE_INITIATION;
    m[1..4].fill(0);
    let mac1 = mac(mac1_key, &m[..INITIATION_MAC1_OFFSET]);
    m[INITIATION_MAC1_OFFSET..INITIATION_MAC1_OFFSET + 16].copy_from_slice(&mac1);
    m
}

/// What a flood of forged initiations brought back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodReport {
    /// Initiations sent.
    pub sent: u64,
    /// Cookie replies (type 3) received.
    pub cookie_replies: u64,
    /// Handshake responses (type 2) received: a full handshake's work each.
    pub responses: u64,
    /// Anything else received.
    pub other: u64,
    /// How long sending took.
    pub elapsed: Duration,
    /// When the first cookie reply came, from the first initiation.
    pub first_cookie_reply: Option<Duration>,
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} initiations in {:.2} s: {} cookie replies, {} handshake responses",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.cookie_replies,
            self.responses
        )?;
        if let Some(t) = self.first_cookie_reply {
            write!(f, " (the first after {:.0} ms)", t.as_secs_f64() * 1e3)?;
        }
        if self.other > 0 {
            write!(f, ", {} other", self.other)?;
        }
        Ok(())
    }
}

/// How fast a flood goes.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// `count` initiations as fast as the socket takes them.
    Fastest {
        /// How many.
        count: u64,
    },
    /// `per_second` initiations a second, for `lasting`.
    Steady {
        /// Rate.
        per_second: u64,
        /// Duration.
        lasting: Duration,
    },
}

/// Sends forged initiations with a valid MAC1 for `responder_public` from
/// `socket` to `dst` at `pace`, counting what comes back on the same
/// socket until `linger` after the last one.
pub fn initiation_flood(
    socket: &UdpSocket,
    dst: SocketAddr,
    responder_public: &[u8; 32],
    pace: Pace,
    linger: Duration,
    rng: &mut SplitMix64,
) -> io::Result<FloodReport> {
    let key = mac1_key(responder_public);
    let rx = socket.try_clone()?;
    rx.set_read_timeout(Some(Duration::from_millis(20)))?;
    let done = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    // Nanoseconds after `start` of the first cookie reply, plus one (0: none yet).
    let first_cookie = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let receiver = {
        let done = done.clone();
        let counts = counts.clone();
        let first_cookie = first_cookie.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut buf) {
                    let slot = match (buf[0], n) {
                        (TYPE_COOKIE_REPLY, 64) => 0,
                        (TYPE_RESPONSE, 92) => 1,
                        _ => 2,
                    };
                    if slot == 0 {
                        let at = start.elapsed().as_nanos() as u64 + 1;
                        let _ = first_cookie.compare_exchange(
                            0,
                            at,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut sent = 0;
    let mut result = Ok(());
    loop {
        let due = match pace {
            Pace::Fastest { count } => count,
            Pace::Steady {
                per_second,
                lasting,
            } => {
                let elapsed = start.elapsed();
                if elapsed >= lasting {
                    break;
                }
                let due = (elapsed.as_secs_f64() * per_second as f64) as u64 + 1;
                if sent >= due {
                    // A millisecond's worth at a time: a steady stream,
                    // not bursts a second apart.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                due
            }
        };
        if sent >= due {
            break;
        }
        let m = forged_initiation(rng, &key);
        match socket.send_to(&m, dst) {
            Ok(_) => sent += 1,
            // The socket's send buffer is full: the flood outruns the
            // veth; yield and go on.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOBUFS)
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                std::thread::yield_now();
            }
            // An ICMP error from an earlier send, reported on this one.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    std::thread::sleep(linger);
    done.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    result?;
    let first = first_cookie.load(Ordering::Relaxed);
    Ok(FloodReport {
        sent,
        cookie_replies: counts[0].load(Ordering::Relaxed),
        responses: counts[1].load(Ordering::Relaxed),
        other: counts[2].load(Ordering::Relaxed),
        elapsed,
        first_cookie_reply: (first > 0).then(|| Duration::from_nanos(first - 1)),
    })
}

/// Sends UDP datagrams from any IPv4 source address: a raw socket that
/// writes its own IPv4 header, as a sender forging its source does.
pub struct SpoofingSender {
    socket: socket2::Socket,
}

impl SpoofingSender {
    /// A raw IPv4 socket with `IP_HDRINCL` (needs CAP_NET_RAW), made in
    /// the caller's network namespace.
    pub fn new() -> io::Result<SpoofingSender> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?;
        socket.set_header_included_v4(true)?;
        Ok(SpoofingSender { socket })
    }

    /// Sends `payload` in one UDP datagram from `src` to `dst`.
    pub fn send(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> io::Result<()> {
        let packet = udp4_packet(src, dst, payload);
        self.socket
            .send_to(&packet, &SocketAddr::V4(dst).into())
            .map(|_| ())
    }
}

/// An IPv4 header (with its checksum) and a UDP header (checksum 0: none,
/// which IPv4 allows) before `payload`.
pub fn udp4_packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = libc::IPPROTO_UDP as u8;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let sum = p[..20]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&src.port().to_be_bytes());
    p[22..24].copy_from_slice(&dst.port().to_be_bytes());
    p[24..26].copy_from_slice(&(udp_len as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// Random datagrams of random lengths (1..=1400 bytes); a quarter of
/// them start with a valid message type and zero reserved bytes, so that
/// they get past the first look and into the parsers.
pub fn random_datagrams(rng: &mut SplitMix64, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            let len = 1 + rng.below(1400) as usize;
            let mut d = vec![0u8; len];
            rng.fill(&mut d);
            if rng.below(4) == 0 && len >= 4 {
                d[0] = 1 + rng.below(4) as u8;
                d[1..4].fill(0);
            }
            d
        })
        .collect()
}

/// Copies of real datagrams cut short at a random length (at least one byte).
pub fn truncated(rng: &mut SplitMix64, real: &[Vec<u8>]) -> Vec<Vec<u8>> {
    real.iter()
        .filter(|d| d.len() > 1)
        .map(|d| d[..1 + rng.below(d.len() as u64 - 1) as usize].to_vec())
        .collect()
}

/// Copies of real datagrams with one bit flipped past the first 16 bytes
/// (the type, receiver index and counter stay intact, so the damage
/// reaches the authentication or the payload rather than the lookups).
pub fn bit_flipped(rng: &mut SplitMix64, real: &[Vec<u8>]) -> Vec<Vec<u8>> {
    real.iter()
        .filter(|d| d.len() > 16)
        .map(|d| {
            let mut c = d.clone();
            let at = 16 + rng.below(d.len() as u64 - 16) as usize;
            c[at] ^= 1 << rng.below(8);
            c
        })
        .collect()
}

/// Copies of real WireGuard data messages with the counter moved far
/// ahead (bit 40 set) and one bit of the payload flipped. Ahead of any
/// replay window, they reach the authentication whenever they arrive,
/// however far the real traffic has moved the window meanwhile (a copy
/// that keeps its counter counts as a replay once the window has passed
/// it, which a busy machine makes likely), and fail it: the counter is the
/// nonce, so a changed one alone breaks the tag.
pub fn forged_ahead(rng: &mut SplitMix64, real: &[Vec<u8>]) -> Vec<Vec<u8>> {
    const COUNTER: std::ops::Range<usize> = 8..16;
    real.iter()
        .filter(|d| d.first() == Some(&TYPE_DATA) && d.len() > COUNTER.end)
        .map(|d| {
            let mut c = d.clone();
            let mut counter = [0u8; 8];
            counter.copy_from_slice(&c[COUNTER]);
            let ahead = u64::from_le_bytes(counter) | 1 << 40;
            c[COUNTER].copy_from_slice(&ahead.to_le_bytes());
            let at = COUNTER.end + rng.below((d.len() - COUNTER.end) as u64) as usize;
            c[at] ^= 1 << rng.below(8);
            c
        })
        .collect()
}

/// Sends every datagram once from `socket` to `dst`; returns how many the
/// kernel took.
pub fn send_all(socket: &UdpSocket, dst: SocketAddr, datagrams: &[Vec<u8>]) -> usize {
    datagrams
        .iter()
        .filter(|d| socket.send_to(d, dst).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;
    use tunnel_proto::PrivateKey;
    use tunnel_proto::wg::{
        HandshakeError, PeerConfig, PeerId, TRANSMIT_BUF_LEN, Tunnel, TunnelConfig,
    };

    /// The header checksum is the one the kernel would compute: summed
    /// again with it in place, the header adds up to all ones.
    #[test]
    fn forged_ahead_moves_only_data_counters_far_ahead_and_damages_the_payload() {
        let mut data = vec![TYPE_DATA, 0, 0, 0, 7, 0, 0, 0];
        data.extend_from_slice(&5u64.to_le_bytes());
        data.extend_from_slice(&[0xaa; 32]);
        let handshake = vec![1u8; 148];
        let mut rng = SplitMix64(3);
        let out = forged_ahead(&mut rng, &[data.clone(), handshake]);
        assert_eq!(out.len(), 1, "only the data message is copied");
        let c = &out[0];
        assert_eq!(c[..8], data[..8], "type and receiver index kept");
        let counter = u64::from_le_bytes(c[8..16].try_into().unwrap());
        assert_eq!(counter, 5 | 1 << 40);
        let flipped: u32 = c[16..]
            .iter()
            .zip(&data[16..])
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert_eq!(flipped, 1, "one payload bit flipped");
    }

    #[test]
    fn spoofed_packets_have_a_valid_ipv4_header() {
        let src: SocketAddrV4 = "198.18.1.7:4000".parse().unwrap();
        let dst: SocketAddrV4 = "192.0.2.2:51820".parse().unwrap();
        let p = udp4_packet(src, dst, &[0xab; 148]);
        assert_eq!(p.len(), 20 + 8 + 148);
        let sum: u32 = p[..20]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff);
        assert_eq!(&p[12..16], &[198, 18, 1, 7]);
        assert_eq!(u16::from_be_bytes([p[24], p[25]]), 8 + 148);
    }

    /// tunnel-proto's own initiation to a responder carries the MAC1 this
    /// module computes, and a forged one passes the responder's MAC1 check
    /// (its error is about the contents, not the MAC).
    #[test]
    fn forged_mac1_matches_the_protocol_implementation() {
        let responder = PrivateKey::generate().unwrap();
        let initiator = PrivateKey::generate().unwrap();
        let mut cfg = TunnelConfig::new(initiator.clone());
        let mut peer = PeerConfig::new(responder.public_key());
        peer.endpoint = Some("192.0.2.2:51820".parse().unwrap());
        peer.allowed_ips = vec!["10.0.0.0/8".parse().unwrap()];
        cfg.peers.push(peer);
        let now = Instant::now();
        let mut t = Tunnel::new(cfg, now, SystemTime::now()).unwrap();
        // An IPv4 packet to 10.0.0.1 makes the tunnel initiate.
        let mut pkt = [0u8; 20];
        pkt[0] = 0x45;
        pkt[3] = 20;
        pkt[16..20].copy_from_slice(&[10, 0, 0, 1]);
        t.stage(PeerId::new(0, 0), &pkt, now, SystemTime::now())
            .unwrap();
        let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
        let tx = t.poll_transmit(now, &mut buf).expect("an initiation");
        assert_eq!(tx.len, INITIATION_LEN);
        let key = mac1_key(responder.public_key().as_bytes());
        assert_eq!(
            mac(&key, &buf[..INITIATION_MAC1_OFFSET]),
            buf[INITIATION_MAC1_OFFSET..INITIATION_MAC1_OFFSET + 16],
            "MAC1 as tunnel-proto computes it"
        );

        // A responder under load answers a forged initiation with a cookie
        // reply, which it does only once MAC1 has passed.
        let mut rcfg = TunnelConfig::new(responder.clone());
        rcfg.peers.push(PeerConfig::new(initiator.public_key()));
        let mut r = Tunnel::new(rcfg, now, SystemTime::now()).unwrap();
        let forged = forged_initiation(&mut SplitMix64(1), &key);
        let src: std::net::SocketAddr = "192.0.2.66:4000".parse().unwrap();
        let err = r
            .handle_handshake(now, SystemTime::now(), src.into(), &forged, true)
            .unwrap_err();
        assert!(
            matches!(err, HandshakeError::CookieRequired),
            "expected a cookie reply for a valid MAC1 under load, got {err}"
        );
        let reply = r.poll_transmit(now, &mut buf).expect("a cookie reply");
        assert_eq!((reply.dst, reply.len, buf[0]), (src, 64, TYPE_COOKIE_REPLY));

        // The same bytes with MAC1 broken are refused before any of that.
        let mut bad = forged;
        bad[INITIATION_MAC1_OFFSET] ^= 1;
        let err = r
            .handle_handshake(now, SystemTime::now(), src.into(), &bad, true)
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Mac1), "got {err}");
    }
}
