//! Traffic between namespaces, for checking a tunnel: a TCP bulk transfer
//! with SHA-256 of the bytes at both ends, a UDP burst of mixed sizes with
//! per-datagram sequence numbers and checksums, a raw UDP sender to throw
//! hostile datagrams at a port, and a capture of real datagrams on a link
//! (AF_PACKET), to replay or corrupt them.
//!
//! Sockets are created inside a namespace on a helper thread
//! ([`netctl::netns::run_in`]) and keep acting there after that thread is
//! gone, so the transfer itself runs on ordinary threads. Every call has a
//! deadline and returns [`TrafficError::Timeout`] instead of hanging; no
//! library call panics on what the network does.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use sha2::{Digest, Sha256};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrafficError {
    /// A socket operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Entering a namespace failed.
    #[error("entering namespace {netns}: {source}")]
    Netns {
        /// Namespace name.
        netns: String,
        /// netctl's error.
        #[source]
        source: netctl::Error,
    },
    /// The deadline passed.
    #[error("{what}: timed out after {after:?} ({progress})")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The time allowed.
        after: Duration,
        /// How far it got.
        progress: String,
    },
    /// A helper thread panicked (a bug in this module).
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

impl TrafficError {
    fn io(action: impl Into<String>, source: io::Error) -> TrafficError {
        TrafficError::Io {
            action: action.into(),
            source,
        }
    }
}

/// Result with [`TrafficError`].
pub type Result<T, E = TrafficError> = std::result::Result<T, E>;

/// Runs `f` inside `netns` (a socket made there stays there).
fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    netctl::netns::run_in(netns, f).map_err(|source| TrafficError::Netns {
        netns: netns.to_string(),
        source,
    })
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Socket timeouts must be non-zero: at the deadline, a millisecond.
fn sock_timeout(deadline: Instant) -> Option<Duration> {
    Some(remaining(deadline).max(Duration::from_millis(1)))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ------------------------------------------------------- seeded bytes

/// SplitMix64: a tiny, fast, seedable generator; its stream is the bulk
/// payload and the UDP filler, reproducible from the seed alone.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` with the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }
}

/// The bulk transfer's byte stream: a 1 MiB block of [`SplitMix64`]
/// output, each following MiB of the stream a rotation of it by a seeded
/// offset. Filling costs two `memcpy`s per MiB instead of a generator step
/// per 8 bytes, so that even an unoptimised harness sends several Gbit/s;
/// no two MiB of a transfer are alike, so a lost, doubled or misplaced
/// segment still changes the hash.
#[derive(Clone, Debug)]
pub struct BulkPayload {
    block: Vec<u8>,
    seed: u64,
    offset: u64,
}

impl BulkPayload {
    /// Bytes in the base block.
    pub const BLOCK: usize = 1 << 20;

    /// The stream for `seed`, from its start.
    pub fn new(seed: u64) -> BulkPayload {
        BulkPayload {
            block: garbage(seed, Self::BLOCK),
            seed,
            offset: 0,
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let segment = self.offset / Self::BLOCK as u64;
            let within = (self.offset % Self::BLOCK as u64) as usize;
            let rotation =
                (SplitMix64::new(self.seed ^ segment.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .next_u64()
                    % Self::BLOCK as u64) as usize;
            let start = (within + rotation) % Self::BLOCK;
            // Up to the end of the block, and of this MiB of the stream.
            let run = (Self::BLOCK - start)
                .min(Self::BLOCK - within)
                .min(buf.len() - done);
            buf[done..done + run].copy_from_slice(&self.block[start..start + run]);
            done += run;
            self.offset += run as u64;
        }
    }
}

/// `len` seeded pseudo-random bytes (garbage to throw at a port).
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    SplitMix64::new(seed).fill(&mut v);
    v
}

/// A copy of `datagram` with one bit inverted (`bit` counts from the first
/// byte's lowest bit; wraps around the length). An empty input stays empty.
pub fn flip_bit(datagram: &[u8], bit: usize) -> Vec<u8> {
    let mut v = datagram.to_vec();
    if !v.is_empty() {
        let bit = bit % (v.len() * 8);
        v[bit / 8] ^= 1 << (bit % 8);
    }
    v
}

// ------------------------------------------------------------ TCP bulk

/// What to send in a TCP bulk transfer.
#[derive(Clone, Debug)]
pub struct BulkOptions {
    /// Bytes to send.
    pub bytes: u64,
    /// Seed of the payload stream ([`BulkPayload`]).
    pub seed: u64,
    /// Deadline for the whole transfer, connection included.
    pub timeout: Duration,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// Bytes a second the sender keeps to (`None`: as fast as it can):
    /// a transfer that must span a stretch of time, not load the machine.
    pub pace: Option<u64>,
}

impl Default for BulkOptions {
    fn default() -> Self {
        BulkOptions {
            bytes: 64 << 20,
            seed: 0x5EED,
            timeout: Duration::from_secs(120),
            port: 0,
            pace: None,
        }
    }
}

/// The outcome of a TCP bulk transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkReport {
    /// Bytes the sender wrote.
    pub bytes_sent: u64,
    /// Bytes the receiver read before EOF.
    pub bytes_received: u64,
    /// SHA-256 of the bytes sent.
    pub sent_sha256: [u8; 32],
    /// SHA-256 of the bytes received.
    pub received_sha256: [u8; 32],
    /// From the connection's start to the receiver's EOF.
    pub elapsed: Duration,
}

impl BulkReport {
    /// Every byte arrived, unchanged.
    pub fn intact(&self) -> bool {
        self.bytes_sent == self.bytes_received && self.sent_sha256 == self.received_sha256
    }

    /// Received payload rate in Gbit/s (information, never an assertion).
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes_received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }

    /// A one-line summary with both hashes.
    pub fn summary(&self) -> String {
        format!(
            "sent {} B sha256 {}, received {} B sha256 {}, {:.3} s ({:.2} Gbit/s)",
            self.bytes_sent,
            hex(&self.sent_sha256),
            self.bytes_received,
            hex(&self.received_sha256),
            self.elapsed.as_secs_f64(),
            self.gbit_per_s()
        )
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TCP bulk transfer under way: see [`start_tcp_bulk`].
#[derive(Debug)]
pub struct BulkTransfer {
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    sender: JoinHandle<Result<(u64, [u8; 32])>>,
    receiver: JoinHandle<Result<(u64, [u8; 32], Instant)>>,
    started: Instant,
}

impl BulkTransfer {
    /// Bytes the receiver has read so far.
    pub fn received_so_far(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Bytes the sender has written so far.
    pub fn sent_so_far(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Ends the transfer early: the sender stops after the chunk it is
    /// writing and closes, so the report is that of a shorter transfer
    /// (whole, and hashed, if nothing was lost).
    pub fn cut_short(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// True once both ends are done (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.sender.is_finished() && self.receiver.is_finished()
    }

    /// Waits for both ends (each bounded by the transfer's deadline).
    pub fn join(self) -> Result<BulkReport> {
        let sent = self
            .sender
            .join()
            .map_err(|_| TrafficError::Panicked("bulk sender"))?;
        let received = self
            .receiver
            .join()
            .map_err(|_| TrafficError::Panicked("bulk receiver"))?;
        let (bytes_sent, sent_sha256) = sent?;
        let (bytes_received, received_sha256, end) = received?;
        Ok(BulkReport {
            bytes_sent,
            bytes_received,
            sent_sha256,
            received_sha256,
            elapsed: end.saturating_duration_since(self.started),
        })
    }
}

/// Sends `opts.bytes` seeded bytes over TCP from `sender_ns` to a listener
/// on `receiver_addr` in `receiver_ns`, and returns both ends' byte counts
/// and SHA-256. Blocks until done or until the deadline.
pub fn tcp_bulk(
    sender_ns: &str,
    receiver_ns: &str,
    receiver_addr: IpAddr,
    opts: &BulkOptions,
) -> Result<BulkReport> {
    start_tcp_bulk(sender_ns, receiver_ns, receiver_addr, opts)?.join()
}

/// Starts a [`tcp_bulk`] and returns at once: the listener is bound and
/// the connection made (both bounded by the deadline) before this returns;
/// the bytes then flow on two threads.
pub fn start_tcp_bulk(
    sender_ns: &str,
    receiver_ns: &str,
    receiver_addr: IpAddr,
    opts: &BulkOptions,
) -> Result<BulkTransfer> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let bind = SocketAddr::new(receiver_addr, opts.port);
    let listener = in_netns(receiver_ns, || TcpListener::bind(bind))?
        .map_err(|e| TrafficError::io(format!("listening on {bind} in {receiver_ns}"), e))?;
    let target = listener
        .local_addr()
        .map_err(|e| TrafficError::io("reading the listener's address", e))?;
    // The first SYN may wait for a tunnel handshake; the kernel retries it.
    let connect_for = remaining(deadline).max(Duration::from_millis(1));
    let stream = in_netns(sender_ns, || {
        TcpStream::connect_timeout(&target, connect_for)
    })?
    .map_err(|e| {
        if is_timeout(&e) {
            TrafficError::Timeout {
                what: format!("connecting from {sender_ns} to {target}"),
                after: connect_for,
                progress: "no connection".to_string(),
            }
        } else {
            TrafficError::io(format!("connecting from {sender_ns} to {target}"), e)
        }
    })?;
    let peer = accept_by(&listener, deadline)?;

    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let timeout = opts.timeout;
    let receiver = {
        let received = received.clone();
        std::thread::spawn(move || receive_all(peer, deadline, timeout, &received))
    };
    let cut = Arc::new(AtomicBool::new(false));
    let sender = {
        let (sent, cut) = (sent.clone(), cut.clone());
        let (bytes, seed, pace) = (opts.bytes, opts.seed, opts.pace);
        let ends = Ends {
            deadline,
            timeout,
            cut,
        };
        std::thread::spawn(move || send_all(stream, bytes, seed, pace, &ends, &sent))
    };
    Ok(BulkTransfer {
        received,
        sent,
        cut,
        sender,
        receiver,
        started,
    })
}

fn accept_by(listener: &TcpListener, deadline: Instant) -> Result<TcpStream> {
    let wait = remaining(deadline);
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(wait.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, ms) {
        Ok(0) => Err(TrafficError::Timeout {
            what: "accepting the bulk connection".to_string(),
            after: wait,
            progress: "the sender connected, nothing to accept".to_string(),
        }),
        Ok(_) => listener
            .accept()
            .map(|(s, _)| s)
            .map_err(|e| TrafficError::io("accepting the bulk connection", e)),
        Err(e) => Err(TrafficError::io("polling the listener", io::Error::from(e))),
    }
}

/// Chunk size of bulk writes and reads.
const BULK_CHUNK: usize = 256 << 10;

/// When a sender gives up, and whether it was asked to stop early.
struct Ends {
    deadline: Instant,
    timeout: Duration,
    cut: Arc<AtomicBool>,
}

fn send_all(
    mut stream: TcpStream,
    bytes: u64,
    seed: u64,
    pace: Option<u64>,
    ends: &Ends,
    sent: &AtomicU64,
) -> Result<(u64, [u8; 32])> {
    let (deadline, timeout) = (ends.deadline, ends.timeout);
    let mut payload = BulkPayload::new(seed);
    let mut hash = Sha256::new();
    // Paced, in chunks of a fiftieth of a second's worth.
    let chunk = pace.map_or(BULK_CHUNK, |p| ((p / 50) as usize).clamp(1024, BULK_CHUNK));
    let mut buf = vec![0u8; chunk];
    let mut done = 0u64;
    let started = Instant::now();
    while done < bytes && !ends.cut.load(Ordering::Relaxed) {
        if let Some(p) = pace.filter(|&p| p > 0) {
            let due = started + Duration::from_secs_f64(done as f64 / p as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let n = (bytes - done).min(chunk as u64) as usize;
        payload.fill(&mut buf[..n]);
        hash.update(&buf[..n]);
        let mut off = 0;
        while off < n {
            stream
                .set_write_timeout(sock_timeout(deadline))
                .map_err(|e| TrafficError::io("setting the write timeout", e))?;
            match stream.write(&buf[off..n]) {
                Ok(0) => {
                    return Err(TrafficError::io(
                        "sending bulk data",
                        io::Error::new(io::ErrorKind::WriteZero, "the connection closed"),
                    ));
                }
                Ok(w) => {
                    off += w;
                    done += w as u64;
                    sent.store(done, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    return Err(TrafficError::Timeout {
                        what: "sending bulk data".to_string(),
                        after: timeout,
                        progress: format!("{done} of {bytes} bytes written"),
                    });
                }
                Err(e) => {
                    return Err(TrafficError::io(
                        format!("sending bulk data after {done} bytes"),
                        e,
                    ));
                }
            }
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| TrafficError::io("closing the sending side", e))?;
    // Keep the socket until the receiver has read everything: wait for its
    // close (EOF here), so that no data is cut off by an early RST.
    let mut sink = [0u8; 64];
    loop {
        stream
            .set_read_timeout(sock_timeout(deadline))
            .map_err(|e| TrafficError::io("setting the read timeout", e))?;
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(TrafficError::Timeout {
                    what: "waiting for the receiver to close".to_string(),
                    after: timeout,
                    progress: format!("all {done} bytes written"),
                });
            }
            // A reset after everything was written and shut down: the
            // receiver's own result says whether it got the bytes.
            Err(_) => break,
        }
    }
    Ok((done, hash.finalize().into()))
}

fn receive_all(
    mut stream: TcpStream,
    deadline: Instant,
    timeout: Duration,
    received: &AtomicU64,
) -> Result<(u64, [u8; 32], Instant)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut done = 0u64;
    loop {
        stream
            .set_read_timeout(sock_timeout(deadline))
            .map_err(|e| TrafficError::io("setting the read timeout", e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hash.update(&buf[..n]);
                done += n as u64;
                received.store(done, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(TrafficError::Timeout {
                    what: "receiving bulk data".to_string(),
                    after: timeout,
                    progress: format!("{done} bytes received"),
                });
            }
            Err(e) => {
                return Err(TrafficError::io(
                    format!("receiving bulk data after {done} bytes"),
                    e,
                ));
            }
        }
    }
    let end = Instant::now();
    let _ = stream.shutdown(Shutdown::Both);
    Ok((done, hash.finalize().into(), end))
}

// ------------------------------------------------------------ UDP burst

/// Magic at the start of every burst datagram.
const BURST_MAGIC: [u8; 4] = *b"RTUB";
/// magic (4) + sequence (4) + length (4) + checksum (8).
pub const BURST_HEADER: usize = 20;

/// A UDP burst to send.
#[derive(Clone, Debug)]
pub struct BurstOptions {
    /// Datagrams to send.
    pub count: u32,
    /// Payload sizes, used in turn (each at least [`BURST_HEADER`]).
    pub sizes: Vec<usize>,
    /// Seed of the filler bytes.
    pub seed: u64,
    /// Pause for `pause` after every `pause_every` datagrams (0: never), so
    /// that a burst measures the tunnel, not a socket buffer.
    pub pause_every: u32,
    /// See `pause_every`.
    pub pause: Duration,
    /// At most this many datagrams sent and not yet arrived (0: no limit):
    /// the burst goes as fast as the tunnel delivers, so that a tunnel
    /// starved of CPU on a busy machine sees its queues fill more slowly,
    /// not overflow. Losses still show: see `stall`.
    pub window: u32,
    /// With the window full and nothing arriving for this long, what is in
    /// flight is taken as lost and sending goes on.
    pub stall: Duration,
    /// After the last datagram, how long to wait for stragglers.
    pub settle: Duration,
    /// Deadline for the whole burst.
    pub timeout: Duration,
    /// Port to receive on (0: any free port).
    pub port: u16,
}

impl Default for BurstOptions {
    fn default() -> Self {
        BurstOptions {
            count: 2000,
            sizes: vec![20, 64, 200, 512, 1000, 1300],
            seed: 0xB0B5,
            pause_every: 32,
            pause: Duration::from_millis(1),
            window: 64,
            stall: Duration::from_secs(1),
            settle: Duration::from_millis(500),
            timeout: Duration::from_secs(60),
            port: 0,
        }
    }
}

/// The outcome of a UDP burst.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BurstReport {
    /// Datagrams sent.
    pub sent: u32,
    /// Distinct datagrams that arrived intact.
    pub received: u32,
    /// Sent but never arrived intact.
    pub lost: u32,
    /// Arrived with a wrong length, magic, sequence or checksum.
    pub corrupt: u32,
    /// Intact copies of a datagram that had already arrived.
    pub duplicated: u32,
    /// Intact datagrams that arrived after a higher sequence number.
    pub reordered: u32,
}

/// FNV-1a 64 over the datagram with its checksum field zeroed.
fn burst_checksum(dgram: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for (i, &b) in dgram.iter().enumerate() {
        let b = if (12..20).contains(&i) { 0 } else { b };
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// The burst datagram number `seq` of `len` bytes.
pub fn burst_datagram(seed: u64, seq: u32, len: usize) -> Vec<u8> {
    let len = len.max(BURST_HEADER);
    let mut d = vec![0u8; len];
    d[..4].copy_from_slice(&BURST_MAGIC);
    d[4..8].copy_from_slice(&seq.to_be_bytes());
    d[8..12].copy_from_slice(&(len as u32).to_be_bytes());
    SplitMix64::new(seed ^ u64::from(seq).wrapping_mul(0x9E37_79B9)).fill(&mut d[BURST_HEADER..]);
    let sum = burst_checksum(&d);
    d[12..20].copy_from_slice(&sum.to_be_bytes());
    d
}

/// The sequence number of an intact burst datagram, `None` if corrupt.
pub fn check_burst_datagram(d: &[u8], count: u32) -> Option<u32> {
    if d.len() < BURST_HEADER || d[..4] != BURST_MAGIC {
        return None;
    }
    let seq = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    let len = u32::from_be_bytes([d[8], d[9], d[10], d[11]]) as usize;
    let sum = u64::from_be_bytes([d[12], d[13], d[14], d[15], d[16], d[17], d[18], d[19]]);
    (len == d.len() && seq < count && sum == burst_checksum(d)).then_some(seq)
}

/// Sends `opts.count` datagrams of mixed sizes from `sender_ns` to a socket
/// on `receiver_addr` in `receiver_ns` and reports what arrived.
pub fn udp_burst(
    sender_ns: &str,
    receiver_ns: &str,
    receiver_addr: IpAddr,
    opts: &BurstOptions,
) -> Result<BurstReport> {
    let deadline = Instant::now() + opts.timeout;
    let bind = SocketAddr::new(receiver_addr, opts.port);
    let rx = in_netns(receiver_ns, || UdpSocket::bind(bind))?
        .map_err(|e| TrafficError::io(format!("binding {bind} in {receiver_ns}"), e))?;
    // Room for the whole burst: a receiver starved of CPU on a loaded
    // machine must not turn into losses blamed on the tunnel.
    let room = burst_bytes(opts).clamp(1 << 20, 64 << 20);
    nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::RcvBufForce, &room)
        .map_err(|e| TrafficError::io("sizing the receive buffer", io::Error::from(e)))?;
    let target = rx
        .local_addr()
        .map_err(|e| TrafficError::io("reading the receiver's address", e))?;
    let any = SocketAddr::new(unspecified(receiver_addr), 0);
    let tx = in_netns(sender_ns, || UdpSocket::bind(any))?
        .map_err(|e| TrafficError::io(format!("binding a sender in {sender_ns}"), e))?;

    let done = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU32::new(0));
    let receiver = {
        let (done, arrived) = (done.clone(), arrived.clone());
        let (count, settle) = (opts.count, opts.settle);
        std::thread::spawn(move || burst_receive(rx, count, settle, deadline, &done, &arrived))
    };
    let mut sent = 0u32;
    let mut given_up = 0u32;
    let mut send_error = None;
    for seq in 0..opts.count {
        if opts.window > 0 {
            given_up += wait_for_room(opts, sent, given_up, &arrived, deadline);
        }
        let len = opts
            .sizes
            .get(seq as usize % opts.sizes.len().max(1))
            .copied()
            .unwrap_or(BURST_HEADER);
        let d = burst_datagram(opts.seed, seq, len);
        match tx.send_to(&d, target) {
            Ok(_) => sent += 1,
            // A full queue or a transient ICMP error loses this datagram;
            // the report counts it as lost.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                send_error = Some(TrafficError::io(format!("sending burst datagram {seq}"), e));
                break;
            }
        }
        if opts.pause_every > 0 && (seq + 1) % opts.pause_every == 0 {
            std::thread::sleep(opts.pause);
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    done.store(true, Ordering::Release);
    let mut report = receiver
        .join()
        .map_err(|_| TrafficError::Panicked("burst receiver"))??;
    if let Some(e) = send_error {
        return Err(e);
    }
    report.sent = sent;
    report.lost = opts.count.saturating_sub(report.received);
    Ok(report)
}

/// Waits until fewer than `opts.window` of the `sent` datagrams are in
/// flight (neither arrived nor given up). Returns how many it gave up on:
/// those in flight when nothing had arrived for `opts.stall`.
fn wait_for_room(
    opts: &BurstOptions,
    sent: u32,
    given_up: u32,
    arrived: &AtomicU32,
    deadline: Instant,
) -> u32 {
    let in_flight = |arrived: u32| sent.saturating_sub(arrived.saturating_add(given_up));
    let mut last = arrived.load(Ordering::Acquire);
    let mut since = Instant::now();
    while in_flight(last) >= opts.window && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
        let now = arrived.load(Ordering::Acquire);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= opts.stall {
            return in_flight(now);
        }
    }
    0
}

/// The payload bytes a burst sends, with room for each datagram's kernel
/// bookkeeping (an skb costs far more than its payload for small ones).
fn burst_bytes(opts: &BurstOptions) -> usize {
    (0..opts.count as usize)
        .map(|i| {
            opts.sizes
                .get(i % opts.sizes.len().max(1))
                .copied()
                .unwrap_or(BURST_HEADER)
                .max(BURST_HEADER)
                + 1024
        })
        .sum()
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

fn burst_receive(
    rx: UdpSocket,
    count: u32,
    settle: Duration,
    deadline: Instant,
    sender_done: &AtomicBool,
    arrived: &AtomicU32,
) -> Result<BurstReport> {
    let mut seen = vec![false; count as usize];
    let mut report = BurstReport::default();
    let mut highest: Option<u32> = None;
    let mut buf = vec![0u8; 65536];
    let mut done_at: Option<Instant> = None;
    rx.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| TrafficError::io("setting the read timeout", e))?;
    while report.received < count && Instant::now() < deadline {
        if done_at.is_none() && sender_done.load(Ordering::Acquire) {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() >= settle) {
            break;
        }
        let n = match rx.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TrafficError::io("receiving the burst", e)),
        };
        match check_burst_datagram(&buf[..n], count) {
            None => report.corrupt += 1,
            Some(seq) if seen[seq as usize] => report.duplicated += 1,
            Some(seq) => {
                seen[seq as usize] = true;
                report.received += 1;
                arrived.store(report.received, Ordering::Release);
                if highest.is_some_and(|h| seq < h) {
                    report.reordered += 1;
                }
                highest = highest.max(Some(seq));
            }
        }
    }
    Ok(report)
}

// ------------------------------------------------------- raw datagrams

/// Sends each of `datagrams` as one UDP datagram from a socket bound to
/// `from` (port 0: any) inside `netns`, to `to`. Returns how many the
/// kernel accepted. For garbage, truncated, replayed or corrupted input at
/// a daemon's port.
pub fn send_datagrams(
    netns: &str,
    from: SocketAddr,
    to: SocketAddr,
    datagrams: &[Vec<u8>],
) -> Result<usize> {
    let sock = in_netns(netns, || UdpSocket::bind(from))?
        .map_err(|e| TrafficError::io(format!("binding {from} in {netns}"), e))?;
    let mut sent = 0;
    for d in datagrams {
        match sock.send_to(d, to) {
            Ok(_) => sent += 1,
            // ICMP port unreachable from an earlier datagram, reported on
            // this send: the datagram was not sent; carry on.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(TrafficError::io(format!("sending to {to} from {netns}"), e)),
        }
    }
    Ok(sent)
}

// --------------------------------------------------------------- capture

/// Which UDP datagrams a [`Capture`] keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    /// Keep only datagrams to this UDP port.
    pub dst_port: Option<u16>,
    /// Keep only datagrams from this UDP port.
    pub src_port: Option<u16>,
    /// Keep only datagrams to this address.
    pub dst_addr: Option<IpAddr>,
    /// Keep only datagrams with at least this many bytes of payload.
    pub min_len: usize,
}

impl CaptureFilter {
    fn keeps(&self, c: &Captured) -> bool {
        self.dst_port.is_none_or(|p| c.dst.port() == p)
            && self.src_port.is_none_or(|p| c.src.port() == p)
            && self.dst_addr.is_none_or(|a| c.dst.ip() == a)
            && c.payload.len() >= self.min_len
    }
}

/// One UDP datagram seen on a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// A packet socket (AF_PACKET, raw, with virtio-net headers) on one link,
/// seeing its UDP datagrams in both directions. A GSO super-packet
/// (one UDP header, many segments) is split into its datagrams.
#[derive(Debug)]
pub struct Capture {
    fd: OwnedFd,
    filter: CaptureFilter,
    queue: VecDeque<Captured>,
}

/// `ETH_P_ALL`, in network byte order as AF_PACKET wants it.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// The virtio-net header AF_PACKET prepends with PACKET_VNET_HDR.
const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (virtio spec 5.1.6.2; the kernel's USO).
const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO).
const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
const IPPROTO_UDP: u8 = 17;

impl Capture {
    /// Opens the capture on `link` inside `netns`. Only datagrams that the
    /// link carries after this returns are seen.
    pub fn start(netns: &str, link: &str, filter: CaptureFilter) -> Result<Capture> {
        let ifindex = netctl::Netlink::in_netns(netns)
            .and_then(|nl| nl.link_index(link))
            .map_err(|source| TrafficError::Netns {
                netns: netns.to_string(),
                source,
            })?;
        let fd = in_netns(netns, || -> io::Result<OwnedFd> {
            // SAFETY: plain socket(2); the result is checked before use.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    // PACKET_VNET_HDR takes SOCK_RAW only (EINVAL on DGRAM).
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(ETH_P_ALL_BE),
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let on: libc::c_int = 1;
            // SAFETY: setsockopt reads one c_int from a live local.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_VNET_HDR,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that
            // matter are set below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL_BE;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: bind reads a sockaddr_ll of the size given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(fd)
        })?
        .map_err(|e| {
            TrafficError::io(format!("opening a packet socket on {link} in {netns}"), e)
        })?;
        Ok(Capture {
            fd,
            filter,
            queue: VecDeque::new(),
        })
    }

    /// The next datagram that passes the filter, waiting up to `timeout`;
    /// `None` if none came.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Captured>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; VNET_HDR_LEN + 65536];
        loop {
            if let Some(c) = self.queue.pop_front() {
                return Ok(Some(c));
            }
            let wait = remaining(deadline);
            if wait.is_zero() {
                return Ok(None);
            }
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::try_from(wait.as_millis().clamp(1, i32::MAX as u128) as i32)
                .unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(TrafficError::io("polling the capture", io::Error::from(e))),
            }
            // SAFETY: an all-zero sockaddr_ll is valid; recvfrom fills it.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: recvfrom writes at most buf.len() bytes into buf and at
            // most from_len bytes into from.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(TrafficError::io("reading the capture", e));
            }
            let ethernet = from.sll_hatype == libc::ARPHRD_ETHER;
            for c in parse_captured(&buf[..n as usize], ethernet) {
                if self.filter.keeps(&c) {
                    self.queue.push_back(c);
                }
            }
        }
    }

    /// Up to `n` datagrams, waiting up to `timeout` in all.
    pub fn collect(&mut self, n: usize, timeout: Duration) -> Result<Vec<Captured>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next(remaining(deadline))? {
                Some(c) => out.push(c),
                None => break,
            }
        }
        Ok(out)
    }
}

/// Parses what a raw packet socket with PACKET_VNET_HDR reads: a
/// virtio-net header, an Ethernet header if `ethernet` (VLAN tags
/// skipped), then an IPv4 or IPv6 packet. Returns its UDP datagrams
/// (several for a UDP GSO super-packet), nothing for anything else or
/// anything malformed.
pub fn parse_captured(frame: &[u8], ethernet: bool) -> Vec<Captured> {
    let Some((vnet, mut pkt)) = frame.split_at_checked(VNET_HDR_LEN) else {
        return Vec::new();
    };
    if ethernet {
        // dst, src, then ethertypes: 802.1Q / 802.1ad tags are 4 bytes each.
        let mut at = 12;
        loop {
            let Some(t) = pkt.get(at..at + 2) else {
                return Vec::new();
            };
            match u16::from_be_bytes([t[0], t[1]]) {
                0x8100 | 0x88a8 => at += 4,
                0x0800 | 0x86dd => break,
                _ => return Vec::new(),
            }
        }
        pkt = &pkt[at + 2..];
    }
    let gso_type = vnet[1] & 0x7f;
    let gso_size = usize::from(u16::from_le_bytes([vnet[4], vnet[5]]));
    let Some(&first) = pkt.first() else {
        return Vec::new();
    };
    let (src_ip, dst_ip, udp): (IpAddr, IpAddr, &[u8]) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if pkt.len() < 20 || ihl < 20 || pkt.len() < ihl || pkt[9] != IPPROTO_UDP {
                return Vec::new();
            }
            // A fragment other than the first has no UDP header.
            let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
            if frag & 0x1fff != 0 {
                return Vec::new();
            }
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            (src.into(), dst.into(), &pkt[ihl..])
        }
        6 => {
            if pkt.len() < 40 || pkt[6] != IPPROTO_UDP {
                return Vec::new();
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&pkt[8..24]);
            d.copy_from_slice(&pkt[24..40]);
            (
                Ipv6Addr::from(s).into(),
                Ipv6Addr::from(d).into(),
                &pkt[40..],
            )
        }
        _ => return Vec::new(),
    };
    if udp.len() < 8 {
        return Vec::new();
    }
    let src = SocketAddr::new(src_ip, u16::from_be_bytes([udp[0], udp[1]]));
    let dst = SocketAddr::new(dst_ip, u16::from_be_bytes([udp[2], udp[3]]));
    let payload = &udp[8..];
    let segmented =
        matches!(gso_type, VIRTIO_NET_HDR_GSO_UDP_L4 | VIRTIO_NET_HDR_GSO_UDP) && gso_size > 0;
    if segmented {
        payload
            .chunks(gso_size)
            .map(|seg| Captured {
                src,
                dst,
                payload: seg.to_vec(),
            })
            .collect()
    } else {
        // The UDP length says where the payload ends (trailing padding of
        // short frames is not payload).
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let end = udp_len.saturating_sub(8).min(payload.len());
        vec![Captured {
            src,
            dst,
            payload: payload[..end].to_vec(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_reproducible_and_fills_odd_lengths() {
        let a = garbage(7, 1001);
        let b = garbage(7, 1001);
        assert_eq!(a, b);
        assert_ne!(a, garbage(8, 1001));
        assert_eq!(&garbage(7, 16)[..], &a[..16], "a prefix of the same stream");
        assert!(a.iter().any(|&x| x != 0));
    }

    #[test]
    fn the_bulk_payload_is_the_same_however_it_is_cut_and_never_repeats_a_mib() {
        let len = 3 * BulkPayload::BLOCK + 12345;
        let mut whole = vec![0u8; len];
        BulkPayload::new(9).fill(&mut whole);
        let mut pieces = vec![0u8; len];
        let mut p = BulkPayload::new(9);
        let mut at = 0;
        for (i, step) in [1usize, 7, 65536, 999_999, 1 << 20]
            .iter()
            .cycle()
            .enumerate()
        {
            if at >= len || i > 10_000 {
                break;
            }
            let n = (*step).min(len - at);
            p.fill(&mut pieces[at..at + n]);
            at += n;
        }
        assert_eq!(at, len);
        assert!(whole == pieces, "cutting the stream differently changed it");
        let mib: Vec<&[u8]> = whole.chunks(BulkPayload::BLOCK).take(3).collect();
        assert_ne!(mib[0], mib[1]);
        assert_ne!(mib[1], mib[2]);
        let mut other = vec![0u8; 4096];
        BulkPayload::new(10).fill(&mut other);
        assert_ne!(&whole[..4096], &other[..], "another seed, another stream");
    }

    #[test]
    fn the_burst_window_waits_for_arrivals_and_gives_up_on_a_stall() {
        // A stall no busy machine outlasts, but for the stuck case below.
        let mut opts = BurstOptions {
            window: 4,
            stall: Duration::from_secs(60),
            ..BurstOptions::default()
        };
        let far = Instant::now() + Duration::from_secs(120);
        let arrived = AtomicU32::new(0);
        // Room: nothing to wait for, nothing given up.
        assert_eq!(wait_for_room(&opts, 3, 0, &arrived, far), 0);
        // A full window that drains: no loss is assumed.
        let arrived = Arc::new(AtomicU32::new(0));
        let feeder = {
            let arrived = arrived.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                arrived.store(1, Ordering::Release);
            })
        };
        assert_eq!(wait_for_room(&opts, 4, 0, &arrived, far), 0);
        assert_eq!(
            arrived.load(Ordering::Acquire),
            1,
            "a full window returned before anything arrived"
        );
        feeder.join().expect("the feeder");
        // A full window where nothing arrives: what is in flight is lost,
        // so the loss shows in the report instead of stopping the burst.
        opts.stall = Duration::from_millis(50);
        let stuck = AtomicU32::new(1);
        assert_eq!(wait_for_room(&opts, 9, 1, &stuck, far), 7);
        // Given up earlier and arrived late: never a negative window.
        let late = AtomicU32::new(9);
        assert_eq!(wait_for_room(&opts, 9, 7, &late, far), 0);
    }

    #[test]
    fn burst_datagrams_check_and_any_bit_flip_is_caught() {
        let d = burst_datagram(1, 42, 300);
        assert_eq!(d.len(), 300);
        assert_eq!(check_burst_datagram(&d, 100), Some(42));
        assert_eq!(check_burst_datagram(&d, 42), None, "seq beyond count");
        for bit in 0..d.len() * 8 {
            assert_eq!(
                check_burst_datagram(&flip_bit(&d, bit), 100),
                None,
                "flipping bit {bit} went unnoticed"
            );
        }
        assert_eq!(check_burst_datagram(&d[..299], 100), None, "truncated");
        assert_eq!(
            burst_datagram(1, 0, 3).len(),
            BURST_HEADER,
            "at least a header"
        );
    }

    #[test]
    fn flip_bit_inverts_exactly_one_bit() {
        let d = vec![0u8; 4];
        assert_eq!(flip_bit(&d, 9), vec![0, 2, 0, 0]);
        assert_eq!(flip_bit(&d, 32), vec![1, 0, 0, 0], "wraps");
        assert!(flip_bit(&[], 3).is_empty());
    }

    fn ipv4_udp(payload: &[u8], gso: Option<u16>) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        if let Some(size) = gso {
            f[1] = VIRTIO_NET_HDR_GSO_UDP_L4;
            f[4..6].copy_from_slice(&size.to_le_bytes());
        }
        let total = 20 + 8 + payload.len();
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IPPROTO_UDP, 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&51820u16.to_be_bytes());
        f.extend_from_slice(&4789u16.to_be_bytes());
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_captured_datagram_is_parsed_and_a_gso_one_split() {
        let one = parse_captured(&ipv4_udp(b"hello", None), false);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].src, "192.0.2.1:51820".parse().unwrap());
        assert_eq!(one[0].dst, "192.0.2.2:4789".parse().unwrap());
        assert_eq!(one[0].payload, b"hello");
        let payload: Vec<u8> = (0..250u8).collect();
        let segs = parse_captured(&ipv4_udp(&payload, Some(100)), false);
        let lens: Vec<usize> = segs.iter().map(|c| c.payload.len()).collect();
        assert_eq!(lens, [100, 100, 50]);
        assert_eq!(segs[2].payload, &payload[200..]);
        assert!(parse_captured(&[0u8; 12], false).is_empty(), "too short");
        assert!(parse_captured(&[], true).is_empty());
        // The same behind an Ethernet header with one VLAN tag.
        let mut tagged = ipv4_udp(b"hello", None);
        let mut l2 = vec![0xff; 12];
        l2.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        tagged.splice(VNET_HDR_LEN..VNET_HDR_LEN, l2);
        assert_eq!(parse_captured(&tagged, true), one);
        assert!(parse_captured(&tagged[..VNET_HDR_LEN + 13], true).is_empty());
    }
}
