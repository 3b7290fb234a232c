//! The latency probe behind `rt-pingpong`: a UDP ping-pong of our own.
//! The client sends one probe at a time at a fixed pace, waits for its
//! echo, and records every round trip in an hdrhistogram; the server
//! echoes probes back unchanged. One probe in flight means no queueing of
//! our own making: what is measured is the path (the tunnel, both stacks,
//! the scheduler), idle or beside a bulk transfer.
//!
//! Wire format of a probe: `MAGIC` (4 bytes), sequence number (u64, little
//! endian), then padding up to the requested size. Anything else reaching
//! the server is dropped and counted.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// First bytes of every probe.
pub const MAGIC: [u8; 4] = *b"RTPP";
/// Magic plus the sequence number: the smallest probe.
pub const HEADER_LEN: usize = 12;
/// The largest probe (one UDP datagram over IPv4).
pub const MAX_SIZE: usize = 65_507;
/// Largest round trip the histogram holds exactly; longer ones are
/// recorded as this (and counted lost anyway past the timeout).
const HIGHEST_NS: u64 = 60_000_000_000;
/// How often a server blocked in `recv` looks at its stop flag.
const SERVER_POLL: Duration = Duration::from_millis(200);

/// Why the probe could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// A socket operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// An option is out of range.
    #[error("invalid probe option: {0}")]
    Options(String),
}

fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> ProbeError {
    move |source| ProbeError::Io {
        action: action.into(),
        source,
    }
}

/// What the client does.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The echo server.
    pub target: SocketAddr,
    /// How long to probe (after the warm-up).
    pub duration: Duration,
    /// One probe is sent every `interval` (later if the previous echo is
    /// late: never more than one in flight).
    pub interval: Duration,
    /// Bytes of UDP payload per probe.
    pub size: usize,
    /// A probe with no echo after this long is lost.
    pub timeout: Duration,
    /// Probes sent first and not recorded (ARP, handshakes, cold caches).
    pub warmup: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            target: SocketAddr::from(([127, 0, 0, 1], 7777)),
            duration: Duration::from_secs(5),
            interval: Duration::from_millis(1),
            size: 64,
            timeout: Duration::from_secs(1),
            warmup: 20,
        }
    }
}

impl ClientOptions {
    fn check(&self) -> Result<(), ProbeError> {
        if !(HEADER_LEN..=MAX_SIZE).contains(&self.size) {
            return Err(ProbeError::Options(format!(
                "size {} is outside {HEADER_LEN}..={MAX_SIZE} bytes",
                self.size
            )));
        }
        if self.timeout.is_zero() {
            return Err(ProbeError::Options("the timeout must be above zero".into()));
        }
        if self.duration.is_zero() {
            return Err(ProbeError::Options(
                "the duration must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// One point of the round-trip distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CdfPoint {
    /// Fraction of round trips at or below `ns` (0..=1).
    pub quantile: f64,
    /// Round trip, nanoseconds.
    pub ns: u64,
}

/// What one client run measured. Quantiles are over recorded round trips
/// (warm-up excluded); all zero when none came back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Probes sent after the warm-up.
    pub sent: u64,
    /// Echoes received in time (recorded).
    pub received: u64,
    /// Probes with no echo within the timeout.
    pub lost: u64,
    /// Echoes that came after their probe's timeout (already counted lost).
    pub late: u64,
    /// Fastest round trip, ns.
    pub min_ns: u64,
    /// Mean round trip, ns.
    pub mean_ns: f64,
    /// Median round trip, ns.
    pub p50_ns: u64,
    /// 90th percentile, ns.
    pub p90_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Slowest round trip, ns.
    pub max_ns: u64,
    /// The distribution, for plotting: dense in the tail.
    pub cdf: Vec<CdfPoint>,
    /// Probe size, bytes.
    pub size: usize,
    /// Pace, ns.
    pub interval_ns: u64,
    /// Wall time of the recorded part, seconds.
    pub elapsed_s: f64,
}

impl ProbeReport {
    fn from_histogram(h: &Histogram<u64>, opts: &ClientOptions, elapsed: Duration) -> Self {
        let empty = h.is_empty();
        let q = |q: f64| if empty { 0 } else { h.value_at_quantile(q) };
        ProbeReport {
            sent: 0,
            received: h.len(),
            lost: 0,
            late: 0,
            min_ns: if empty { 0 } else { h.min() },
            mean_ns: if empty { 0.0 } else { h.mean() },
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: if empty { 0 } else { h.max() },
            cdf: if empty { Vec::new() } else { cdf(h) },
            size: opts.size,
            interval_ns: u64::try_from(opts.interval.as_nanos()).unwrap_or(u64::MAX),
            elapsed_s: elapsed.as_secs_f64(),
        }
    }
}

/// Quantiles 0, 0.01, … 0.9 then ever closer to 1 (1 − 10^−x, x up to 5),
/// then the maximum: a CDF whose tail is as legible as its body.
fn cdf(h: &Histogram<u64>) -> Vec<CdfPoint> {
    let mut qs: Vec<f64> = (0..90).map(|i| f64::from(i) / 100.0).collect();
    let mut x = 1.0f64;
    while x <= 5.0 {
        qs.push(1.0 - 10f64.powf(-x));
        x += 0.05;
    }
    qs.push(1.0);
    qs.into_iter()
        .map(|q| CdfPoint {
            quantile: q,
            ns: if q >= 1.0 {
                h.max()
            } else {
                h.value_at_quantile(q)
            },
        })
        .collect()
}

/// A probe: magic, sequence number, padding.
pub fn encode(buf: &mut [u8], seq: u64) {
    buf[..4].copy_from_slice(&MAGIC);
    buf[4..HEADER_LEN].copy_from_slice(&seq.to_le_bytes());
}

/// The sequence number of a probe, if `buf` is one.
pub fn decode(buf: &[u8]) -> Option<u64> {
    if buf.len() < HEADER_LEN || buf[..4] != MAGIC {
        return None;
    }
    let seq: [u8; 8] = buf[4..HEADER_LEN].try_into().ok()?;
    Some(u64::from_le_bytes(seq))
}

/// Runs the client: `warmup` probes unrecorded, then probes for
/// `duration`, one in flight, and returns the distribution.
pub fn run_client(opts: &ClientOptions) -> Result<ProbeReport, ProbeError> {
    opts.check()?;
    let bind: SocketAddr = if opts.target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(bind).map_err(io_err(format!("binding {bind}")))?;
    sock.connect(opts.target)
        .map_err(io_err(format!("connecting to {}", opts.target)))?;
    // Set once: a per-probe setsockopt would sit inside the measured window.
    sock.set_read_timeout(Some(opts.timeout))
        .map_err(io_err("setting the receive timeout"))?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, HIGHEST_NS, 3)
        .map_err(|e| ProbeError::Options(format!("histogram: {e}")))?;
    let mut out = vec![0u8; opts.size];
    let mut back = vec![0u8; MAX_SIZE];
    let mut report_counts = (0u64, 0u64, 0u64); // sent, lost, late
    let mut seq = 0u64;
    for _ in 0..opts.warmup {
        let _ = ping(&sock, &mut out, &mut back, seq, opts.timeout)?;
        seq += 1;
    }
    let start = Instant::now();
    let mut next = start;
    while next.duration_since(start) < opts.duration {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += opts.interval;
        let outcome = ping(&sock, &mut out, &mut back, seq, opts.timeout)?;
        seq += 1;
        report_counts.0 += 1;
        report_counts.2 += outcome.late;
        match outcome.rtt {
            Some(rtt) => {
                hist.saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1))
            }
            None => report_counts.1 += 1,
        }
        // Behind schedule (a slow echo): start again from now rather than
        // sending a burst to catch up.
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
    let mut report = ProbeReport::from_histogram(&hist, opts, start.elapsed());
    report.sent = report_counts.0;
    report.lost = report_counts.1;
    report.late = report_counts.2;
    Ok(report)
}

/// The outcome of one probe.
struct Outcome {
    rtt: Option<Duration>,
    late: u64,
}

fn ping(
    sock: &UdpSocket,
    out: &mut [u8],
    back: &mut [u8],
    seq: u64,
    timeout: Duration,
) -> Result<Outcome, ProbeError> {
    encode(out, seq);
    let sent = Instant::now();
    match sock.send(out) {
        Ok(_) => {}
        // ECONNREFUSED from an earlier ICMP port unreachable, ENOBUFS from
        // a full queue: this probe is lost, the run goes on.
        Err(e) if is_transient(&e) => {
            return Ok(Outcome { rtt: None, late: 0 });
        }
        Err(e) => return Err(io_err("sending a probe")(e)),
    }
    let mut late = 0;
    loop {
        match sock.recv(back) {
            Ok(n) => {
                let got = Instant::now();
                match decode(&back[..n]) {
                    Some(s) if s == seq => {
                        return Ok(Outcome {
                            rtt: Some(got - sent),
                            late,
                        });
                    }
                    Some(s) if s < seq => late += 1,
                    // Not ours, or from the future: ignore.
                    _ => {}
                }
                if got - sent >= timeout {
                    return Ok(Outcome { rtt: None, late });
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Outcome { rtt: None, late });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_transient(&e) => return Ok(Outcome { rtt: None, late }),
            Err(e) => return Err(io_err("receiving an echo")(e)),
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::ENOBUFS | libc::EHOSTUNREACH)
    )
}

/// What an echo server did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EchoStats {
    /// Probes echoed.
    pub echoed: u64,
    /// Datagrams that were not probes (dropped).
    pub foreign: u64,
}

/// Echoes probes on `sock` until `stop` is set (looked at every
/// [`SERVER_POLL`]).
pub fn serve(sock: &UdpSocket, stop: &AtomicBool) -> Result<EchoStats, ProbeError> {
    sock.set_read_timeout(Some(SERVER_POLL))
        .map_err(io_err("setting the receive timeout"))?;
    let mut buf = vec![0u8; MAX_SIZE];
    let mut stats = EchoStats::default();
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                if decode(&buf[..n]).is_none() {
                    stats.foreign += 1;
                    continue;
                }
                match sock.send_to(&buf[..n], from) {
                    Ok(_) => stats.echoed += 1,
                    Err(e) if is_transient(&e) => {}
                    Err(e) => return Err(io_err(format!("echoing to {from}"))(e)),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if is_transient(&e) => {}
            Err(e) => return Err(io_err("receiving a probe")(e)),
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn server() -> (
        SocketAddr,
        Arc<AtomicBool>,
        std::thread::JoinHandle<EchoStats>,
    ) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || serve(&sock, &s).unwrap());
        (addr, stop, h)
    }

    #[test]
    fn a_probe_round_trips_its_sequence_number() {
        let mut b = [0u8; 64];
        encode(&mut b, 0x0102_0304_0506_0708);
        assert_eq!(decode(&b), Some(0x0102_0304_0506_0708));
        assert_eq!(decode(&b[..HEADER_LEN - 1]), None, "too short");
        b[0] ^= 1;
        assert_eq!(decode(&b), None, "wrong magic");
    }

    #[test]
    fn every_probe_to_a_live_server_comes_back_and_is_recorded() {
        let (addr, stop, h) = server();
        let opts = ClientOptions {
            target: addr,
            duration: Duration::from_millis(300),
            interval: Duration::from_micros(500),
            warmup: 5,
            ..ClientOptions::default()
        };
        let r = run_client(&opts).unwrap();
        stop.store(true, Ordering::Relaxed);
        let stats = h.join().unwrap();
        assert!(r.sent > 50, "only {} probes in 300 ms at 500 µs", r.sent);
        assert_eq!(r.lost, 0, "{r:?}");
        assert_eq!(r.received, r.sent);
        assert_eq!(stats.echoed, r.sent + 5, "the warm-up is echoed too");
        assert!(r.min_ns > 0 && r.min_ns <= r.p50_ns && r.p50_ns <= r.p99_ns);
        assert!(r.p99_ns <= r.p999_ns && r.p999_ns <= r.max_ns);
        let last = r.cdf.last().unwrap();
        assert_eq!((last.quantile, last.ns), (1.0, r.max_ns));
        assert!(
            r.cdf.windows(2).all(|w| w[0].ns <= w[1].ns),
            "a CDF never decreases"
        );
    }

    #[test]
    fn probes_to_a_silent_port_are_counted_lost_not_hung() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let opts = ClientOptions {
            target: silent.local_addr().unwrap(),
            duration: Duration::from_millis(100),
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(20),
            warmup: 0,
            ..ClientOptions::default()
        };
        let r = run_client(&opts).unwrap();
        assert!(r.sent >= 2, "{r:?}");
        assert_eq!(r.lost, r.sent);
        assert_eq!(r.received, 0);
        assert_eq!((r.p50_ns, r.max_ns), (0, 0));
        assert!(r.cdf.is_empty());
    }

    #[test]
    fn the_server_drops_what_is_not_a_probe() {
        let (addr, stop, h) = server();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"hello", addr).unwrap();
        let mut p = [0u8; 16];
        encode(&mut p, 7);
        c.send_to(&p, addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut back = [0u8; 64];
        let n = c.recv(&mut back).unwrap();
        assert_eq!(decode(&back[..n]), Some(7));
        stop.store(true, Ordering::Relaxed);
        let stats = h.join().unwrap();
        assert_eq!(
            stats,
            EchoStats {
                echoed: 1,
                foreign: 1
            }
        );
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        let opts = ClientOptions {
            size: 4,
            ..ClientOptions::default()
        };
        let e = run_client(&opts).unwrap_err().to_string();
        assert!(e.contains("size 4"), "{e}");
    }
}
