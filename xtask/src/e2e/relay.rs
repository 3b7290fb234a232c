//! A userspace UDP relay that impairs a WAN per datagram: loss, delay,
//! reordering and duplication, each direction on its own thread.
//!
//! This kernel has no `tc netem`, and an nftables `numgen random` rule on
//! a veth sees GSO super-packets, so one hit drops up to 64 datagrams at
//! once. A relay socket instead receives every datagram on its own (no
//! `UDP_GRO` on it), so each one meets the dice alone.
//!
//! ```text
//!  site A ──▶ relay.a_side ──(impair)──▶ relay.b_side ──▶ B's endpoint
//!  site A ◀── relay.a_side ◀──(impair)── relay.b_side ◀── site B
//! ```
//!
//! Site A's endpoint for B is `a_side`, site B's endpoint for A is
//! `b_side`; the relay sends each side's datagrams on from the other
//! side's socket. A's address is learned from what arrives at `a_side`
//! (so A may call from any port), as a WireGuard peer roams to it; or, for
//! VXLAN, whose source ports are per flow and whose replies go to the
//! configured port, A's is fixed too. B's is fixed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// What the relay does to each datagram, in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Probability (0..1) that a datagram is dropped.
    pub loss: f64,
    /// Probability that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_hold`, so that
    /// later ones overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back.
    pub reorder_hold: Duration,
    /// Delay added to every datagram.
    pub delay: Duration,
}

impl std::fmt::Display for Impairment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "loss {:.1}%, duplicate {:.1}%, reorder {:.1}% (+{} ms), delay {} ms",
            self.loss * 100.0,
            self.duplicate * 100.0,
            self.reorder * 100.0,
            self.reorder_hold.as_millis(),
            self.delay.as_millis()
        )
    }
}

/// Counters of one direction.
#[derive(Debug, Default)]
pub struct DirectionStats {
    /// Datagrams received.
    pub received: AtomicU64,
    /// Datagrams dropped on purpose.
    pub lost: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams held back to be overtaken.
    pub reordered: AtomicU64,
    /// Datagrams sent on.
    pub forwarded: AtomicU64,
    /// Sends the kernel refused.
    pub send_errors: AtomicU64,
}

/// A snapshot of [`DirectionStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounts {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped on purpose.
    pub lost: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams held back.
    pub reordered: u64,
    /// Datagrams sent on.
    pub forwarded: u64,
    /// Sends the kernel refused.
    pub send_errors: u64,
}

impl DirectionStats {
    fn snapshot(&self) -> DirectionCounts {
        DirectionCounts {
            received: self.received.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for DirectionCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = if self.received == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / self.received as f64
        };
        write!(
            f,
            "{} in, {} lost ({pct:.2}%), {} dup, {} reordered",
            self.received, self.lost, self.duplicated, self.reordered
        )
    }
}

/// Where the relay listens and sends.
#[derive(Clone, Debug)]
pub struct RelaySpec {
    /// The namespace its sockets live in (`None`: the caller's).
    pub netns: Option<String>,
    /// Where site A sends (A's endpoint for B).
    pub a_side: SocketAddr,
    /// Where site B sends (B's endpoint for A).
    pub b_side: SocketAddr,
    /// Site A's real endpoint, until a datagram from A says otherwise
    /// (with `learn_a`).
    pub a_peer: SocketAddr,
    /// Whether B's datagrams go to where A's last came from (WireGuard's
    /// roaming), or always to `a_peer` (VXLAN: a VTEP sends from a port
    /// per flow and listens on its configured one).
    pub learn_a: bool,
    /// Site B's real endpoint.
    pub b_peer: SocketAddr,
    /// What to do to each datagram.
    pub impairment: Impairment,
    /// Seed of the dice (printed, so that a run can be repeated).
    pub seed: u64,
}

/// A running relay; stops (and joins its threads) on drop.
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    a_to_b: Arc<DirectionStats>,
    b_to_a: Arc<DirectionStats>,
}

/// How long a relay thread blocks in `recv` before it looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Largest datagram relayed (an IPv4 UDP payload's maximum).
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked for each socket: a burst of a few thousand
/// datagrams while the thread is descheduled must not overflow it.
const RCVBUF: usize = 8 << 20;

impl Relay {
    /// Binds both sockets inside `spec.netns` and starts the two threads.
    pub fn start(spec: &RelaySpec) -> Result<Relay> {
        let (a_sock, b_sock) =
            netctl::netns::run_in_opt(spec.netns.as_deref(), || -> io::Result<_> {
                let a = UdpSocket::bind(spec.a_side)?;
                let b = UdpSocket::bind(spec.b_side)?;
                for s in [&a, &b] {
                    // SO_RCVBUFFORCE: root may exceed net.core.rmem_max.
                    nix::sys::socket::setsockopt(
                        &s.as_fd(),
                        nix::sys::socket::sockopt::RcvBufForce,
                        &RCVBUF,
                    )
                    .map_err(io::Error::from)?;
                    s.set_read_timeout(Some(POLL_INTERVAL))?;
                }
                Ok((a, b))
            })?
            .with_context(|| {
                format!(
                    "binding the relay's sockets {} and {} in {}",
                    spec.a_side,
                    spec.b_side,
                    spec.netns.as_deref().unwrap_or("this namespace")
                )
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let a_to_b = Arc::new(DirectionStats::default());
        let b_to_a = Arc::new(DirectionStats::default());
        // A's address is learned from what A sends; B→A uses the latest.
        let a_peer = Arc::new(Mutex::new(spec.a_peer));
        let mut threads = Vec::new();
        {
            let (rx, tx) = (a_sock.try_clone()?, b_sock.try_clone()?);
            let learned = a_peer.clone();
            let learn = spec.learn_a;
            let b_peer = spec.b_peer;
            let dir = Direction {
                rx,
                tx,
                stats: a_to_b.clone(),
                impairment: spec.impairment,
                rng: SplitMix64(spec.seed),
                stop: stop.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name("relay a->b".into())
                    .spawn(move || {
                        dir.run(
                            |from| {
                                if learn && let Ok(mut a) = learned.lock() {
                                    *a = from;
                                }
                            },
                            || b_peer,
                        )
                    })?,
            );
        }
        {
            let (rx, tx) = (b_sock, a_sock);
            let dir = Direction {
                rx,
                tx,
                stats: b_to_a.clone(),
                impairment: spec.impairment,
                rng: SplitMix64(spec.seed ^ 0x9e37_79b9_7f4a_7c15),
                stop: stop.clone(),
            };
            let fallback = spec.a_peer;
            threads.push(
                std::thread::Builder::new()
                    .name("relay b->a".into())
                    .spawn(move || {
                        dir.run(|_| {}, || a_peer.lock().map(|a| *a).unwrap_or(fallback))
                    })?,
            );
        }
        Ok(Relay {
            stop,
            threads,
            a_to_b,
            b_to_a,
        })
    }

    /// Counters of the A→B direction.
    pub fn a_to_b(&self) -> DirectionCounts {
        self.a_to_b.snapshot()
    }

    /// Counters of the B→A direction.
    pub fn b_to_a(&self) -> DirectionCounts {
        self.b_to_a.snapshot()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One direction: receive on `rx`, impair, send on `tx`.
struct Direction {
    rx: UdpSocket,
    tx: UdpSocket,
    stats: Arc<DirectionStats>,
    impairment: Impairment,
    rng: SplitMix64,
    stop: Arc<AtomicBool>,
}

/// A datagram waiting for its release time (ordered by time, then by arrival).
struct Held {
    at: Instant,
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Direction {
    fn run(mut self, mut on_source: impl FnMut(SocketAddr), dst: impl Fn() -> SocketAddr) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
        let mut seq = 0u64;
        let mut timeout = POLL_INTERVAL;
        let imp = self.impairment;
        while !self.stop.load(Ordering::Relaxed) {
            // Wake for the next release; otherwise only to look at `stop`.
            let want = held
                .peek()
                .map(|Reverse(h)| {
                    h.at.saturating_duration_since(Instant::now())
                        .clamp(Duration::from_micros(100), POLL_INTERVAL)
                })
                .unwrap_or(POLL_INTERVAL);
            if want != timeout {
                // A syscall, only when the deadline changes.
                if self.rx.set_read_timeout(Some(want)).is_ok() {
                    timeout = want;
                }
            }
            match self.rx.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.stats.received.fetch_add(1, Ordering::Relaxed);
                    on_source(from);
                    if self.rng.chance(imp.loss) {
                        self.stats.lost.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let copies = if self.rng.chance(imp.duplicate) {
                            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
                            2
                        } else {
                            1
                        };
                        let mut hold = imp.delay;
                        if self.rng.chance(imp.reorder) {
                            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
                            hold += imp.reorder_hold;
                        }
                        let to = dst();
                        for _ in 0..copies {
                            if hold.is_zero() && held.is_empty() {
                                // The common case: straight through, no copy.
                                self.send(&buf[..n], to);
                            } else {
                                seq += 1;
                                held.push(Reverse(Held {
                                    at: Instant::now() + hold,
                                    seq,
                                    bytes: buf[..n].to_vec(),
                                }));
                            }
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // ECONNREFUSED from an earlier send's ICMP error: not ours to act on.
                Err(_) => {}
            }
            let now = Instant::now();
            let to = dst();
            while held.peek().is_some_and(|Reverse(h)| h.at <= now) {
                if let Some(Reverse(h)) = held.pop() {
                    self.send(&h.bytes, to);
                }
            }
        }
    }

    fn send(&self, bytes: &[u8], to: SocketAddr) {
        match self.tx.send_to(bytes, to) {
            Ok(_) => self.stats.forwarded.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator;
/// enough for dice, and reproducible from its seed.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let r = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_land_near_their_probability() {
        let mut rng = SplitMix64(7);
        let hits = (0..100_000).filter(|_| rng.chance(0.01)).count();
        assert!(
            (700..1300).contains(&hits),
            "1% of 100000 should be about 1000, got {hits}"
        );
        assert!(!(0..1000).any(|_| rng.chance(0.0)), "p = 0 never hits");
    }

    /// Two sockets on loopback talk through a relay: everything arrives
    /// in both directions when nothing is impaired, twice each with
    /// duplication on, and roughly half with 50% loss.
    #[test]
    fn relay_forwards_duplicates_and_loses_as_told() {
        let count = |imp: Impairment| -> (usize, usize, DirectionCounts) {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            // Ports for the relay: bind and release (the test is alone on them).
            let free = || {
                UdpSocket::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
            };
            let (a_side, b_side) = (free(), free());
            let relay = Relay::start(&RelaySpec {
                netns: None,
                a_side,
                b_side,
                a_peer: a.local_addr().unwrap(),
                learn_a: true,
                b_peer: b.local_addr().unwrap(),
                impairment: imp,
                seed: 42,
            })
            .unwrap();
            // 100 each way: two copies of each still fit a loopback socket's
            // default receive buffer (about 256 small datagrams).
            for i in 0..100u32 {
                a.send_to(&i.to_be_bytes(), a_side).unwrap();
                b.send_to(&i.to_be_bytes(), b_side).unwrap();
            }
            let drain = |s: &UdpSocket| {
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut n = 0;
                let mut buf = [0u8; 16];
                while s.recv(&mut buf).is_ok() {
                    n += 1;
                }
                n
            };
            (drain(&b), drain(&a), relay.a_to_b())
        };
        let (to_b, to_a, st) = count(Impairment::default());
        assert_eq!((to_b, to_a), (100, 100), "{st}");
        let (to_b, to_a, _) = count(Impairment {
            duplicate: 1.0,
            ..Impairment::default()
        });
        assert_eq!((to_b, to_a), (200, 200));
        let (to_b, _, st) = count(Impairment {
            loss: 0.5,
            ..Impairment::default()
        });
        assert!(
            (25..75).contains(&to_b),
            "half of 100 expected, got {to_b} ({st})"
        );
        assert_eq!(st.lost + st.forwarded, 100, "{st}");
    }
}
