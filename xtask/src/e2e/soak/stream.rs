//! The delivery probe: a UDP stream of one datagram a millisecond from one
//! LAN host to the other, each carrying its sequence number and the time
//! it was sent, and a receiver that finds the longest time the tunnel
//! delivered nothing, and what it lost.
//!
//! A gap in arrivals is not all the tunnel's doing: on a busy machine the
//! sender is descheduled too, and then sends nothing to deliver. So a
//! stall is the receive gap beyond the send gap: for consecutive received
//! datagrams i, j (j the next one to advance the sequence),
//! `(recv_j - recv_i) - (send_j - send_i)`. Datagrams skipped in between
//! do not make a stall by this measure (the sender went on sending, the
//! receiver went on receiving what came): they are losses, counted in all
//! and within any window by their send times. Send times are
//! CLOCK_MONOTONIC (one clock for every namespace); receive times are the
//! kernel's own stamps (`SO_TIMESTAMPNS`, taken when the datagram reached
//! the receiving namespace's stack), so that the receiver's own
//! descheduling is not counted either. The two clocks are never compared
//! with each other, only each with itself. Datagrams the receiving socket
//! dropped for want of buffer space are counted apart (`SO_RXQ_OVFL`):
//! that is the harness's loss, not the tunnel's.

use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, sockopt};
use nix::sys::time::TimeSpec;

/// One datagram a millisecond.
pub const INTERVAL: Duration = Duration::from_millis(1);
/// Stalls shorter than this are not kept one by one (a busy machine makes
/// many of a few hundred microseconds), only counted in the longest.
pub const NOTABLE: Duration = Duration::from_millis(1);
/// `RTSK`, a stream tag (so that nothing else counts), sequence number,
/// send time in ns.
const MAGIC: [u8; 4] = *b"RTSK";
const DATAGRAM: usize = 4 + 4 + 8 + 8;
/// The receiving socket's buffer: a few seconds of the stream, so that a
/// receiver descheduled for a while loses nothing.
const RCVBUF: usize = 4 << 20;
/// Sequence numbers beyond this are not ours (ten days of the stream).
const MAX_SEQ: u64 = 1 << 30;

/// CLOCK_MONOTONIC in ns: the send times, and the timeline the soak
/// relates stalls and rekeys on.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into memory we own; the
    // clocks used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A time the tunnel delivered nothing it had been given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// When it started: the send time of the last datagram delivered
    /// before it (CLOCK_MONOTONIC ns).
    pub from_ns: u64,
    /// When it ended, on the same clock: `from_ns` plus the receive gap.
    pub to_ns: u64,
    /// The receive gap beyond the send gap, ns.
    pub extra_ns: u64,
    /// Sequence numbers passed over (lost, or arriving later).
    pub skipped: u64,
}

impl Stall {
    /// Its length beyond the send gap.
    pub fn extra(&self) -> Duration {
        Duration::from_nanos(self.extra_ns)
    }

    /// Whether it overlaps `[from_ns, to_ns]`.
    pub fn overlaps(&self, from_ns: u64, to_ns: u64) -> bool {
        self.from_ns <= to_ns && self.to_ns >= from_ns
    }
}

#[derive(Clone, Copy, Debug)]
struct Arrival {
    seq: u64,
    sent_ns: u64,
    recv_ns: u64,
}

/// What arrived, as it arrived: stalls between datagrams that advanced
/// the sequence, duplicates, late (reordered) ones, and which sequence
/// numbers were seen, to count losses.
#[derive(Clone, Debug, Default)]
pub struct Deliveries {
    frontier: Option<Arrival>,
    notable: Vec<Stall>,
    longest: Option<Stall>,
    seen: Vec<u64>,
    received: u64,
    duplicates: u64,
    late: u64,
}

impl Deliveries {
    /// Records datagram `seq`, sent at `sent_ns` (sender's clock),
    /// received at `recv_ns` (receiver's clock).
    pub fn arrive(&mut self, seq: u64, sent_ns: u64, recv_ns: u64) {
        if seq >= MAX_SEQ {
            return;
        }
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        let this = Arrival {
            seq,
            sent_ns,
            recv_ns,
        };
        let Some(prev) = self.frontier else {
            self.frontier = Some(this);
            return;
        };
        if seq < prev.seq {
            // Overtaken on the way: it does not move delivery forward, and
            // its send time, before the frontier's, would count the
            // reordering as time without delivery.
            self.late += 1;
            return;
        }
        let recv_gap = recv_ns.saturating_sub(prev.recv_ns);
        let send_gap = sent_ns.saturating_sub(prev.sent_ns);
        let extra_ns = recv_gap.saturating_sub(send_gap);
        if extra_ns > 0 {
            let stall = Stall {
                from_ns: prev.sent_ns,
                // Saturating: the times come off the wire.
                to_ns: prev.sent_ns.saturating_add(recv_gap),
                extra_ns,
                skipped: seq - prev.seq - 1,
            };
            if stall.extra() >= NOTABLE {
                self.notable.push(stall);
            }
            if self.longest.is_none_or(|l| extra_ns > l.extra_ns) {
                self.longest = Some(stall);
            }
        }
        self.frontier = Some(this);
    }

    /// The longest stall of all.
    pub fn longest(&self) -> Option<Stall> {
        self.longest
    }

    /// Every stall of at least [`NOTABLE`], in order.
    pub fn notable(&self) -> &[Stall] {
        &self.notable
    }

    /// The longest stall of at least [`NOTABLE`] that overlaps
    /// `[from_ns, to_ns]` (CLOCK_MONOTONIC).
    pub fn longest_within(&self, from_ns: u64, to_ns: u64) -> Option<Stall> {
        self.notable
            .iter()
            .filter(|s| s.overlaps(from_ns, to_ns))
            .max_by_key(|s| s.extra_ns)
            .copied()
    }

    /// Distinct datagrams received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Copies received beyond the first.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Datagrams that arrived after a later one.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Of the `sent` datagrams (numbered from 0), those never received.
    pub fn lost(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.received)
    }

    /// Of the datagrams sent at `sent_ns` (indexed by sequence number, in
    /// time order), those sent within `[from_ns, to_ns]` and never
    /// received.
    pub fn lost_within(&self, sent_ns: &[u64], from_ns: u64, to_ns: u64) -> u64 {
        let first = sent_ns.partition_point(|&t| t < from_ns);
        let end = sent_ns.partition_point(|&t| t <= to_ns);
        (first..end)
            .filter(|&seq| !self.was_seen(seq as u64))
            .count() as u64
    }

    fn was_seen(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }
}

/// Encodes datagram `seq` of stream `tag`, sent at `sent_ns`.
fn encode(tag: u32, seq: u64, sent_ns: u64) -> [u8; DATAGRAM] {
    let mut d = [0u8; DATAGRAM];
    d[..4].copy_from_slice(&MAGIC);
    d[4..8].copy_from_slice(&tag.to_le_bytes());
    d[8..16].copy_from_slice(&seq.to_le_bytes());
    d[16..24].copy_from_slice(&sent_ns.to_le_bytes());
    d
}

/// (sequence number, send time) of a datagram of stream `tag`.
fn decode(tag: u32, d: &[u8]) -> Option<(u64, u64)> {
    if d.len() != DATAGRAM || d[..4] != MAGIC || d[4..8] != tag.to_le_bytes() {
        return None;
    }
    let seq = u64::from_le_bytes(d[8..16].try_into().ok()?);
    let sent = u64::from_le_bytes(d[16..24].try_into().ok()?);
    Some((seq, sent))
}

/// What the sender did.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    /// The send time of each datagram sent, by sequence number
    /// (CLOCK_MONOTONIC ns): losses are placed in time by them. 8 bytes a
    /// datagram, under 5 MiB for 10 minutes.
    pub times_ns: Vec<u64>,
    /// Sends that failed (the datagram was not numbered).
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Ticks passed over because the sender was late by more than one.
    pub ticks_missed: u64,
}

impl Sent {
    /// Datagrams sent (numbered `0..count`).
    pub fn count(&self) -> u64 {
        self.times_ns.len() as u64
    }
}

/// A stream's outcome.
#[derive(Clone, Debug)]
pub struct StreamReport {
    /// The sender's side.
    pub sent: Sent,
    /// The receiver's side.
    pub deliveries: Deliveries,
    /// Datagrams the receiving socket dropped for want of buffer space.
    pub socket_drops: u64,
    /// Datagrams received without a kernel timestamp (stamped on reading).
    pub unstamped: u64,
}

impl StreamReport {
    /// Datagrams the tunnel lost (sent, neither received nor dropped by
    /// the receiving socket).
    pub fn lost(&self) -> u64 {
        self.deliveries
            .lost(self.sent.count())
            .saturating_sub(self.socket_drops)
    }

    /// Datagrams sent within `[from_ns, to_ns]` (CLOCK_MONOTONIC) and not
    /// received, the receiving socket's drops included (they cannot be
    /// placed in time; [`StreamReport::socket_drops`] says how many there
    /// were in all).
    pub fn lost_within(&self, from_ns: u64, to_ns: u64) -> u64 {
        self.deliveries
            .lost_within(&self.sent.times_ns, from_ns, to_ns)
    }
}

struct Received {
    deliveries: Deliveries,
    socket_drops: u64,
    unstamped: u64,
}

/// A stream under way from one namespace to another.
pub struct Stream {
    stop_sending: Arc<AtomicBool>,
    stop_receiving: Arc<AtomicBool>,
    sender: Option<JoinHandle<Sent>>,
    receiver: Option<JoinHandle<Result<Received>>>,
}

impl Stream {
    /// Binds the receiver in `to_ns` on `to` (any port) and starts
    /// sending to it from `from_ns`, one datagram a [`INTERVAL`].
    pub fn start(from_ns: &str, to_ns: &str, to: IpAddr, tag: u32) -> Result<Stream> {
        let rx = netctl::netns::run_in(to_ns, || UdpSocket::bind(SocketAddr::new(to, 0)))?
            .with_context(|| format!("binding the stream's receiver on {to} in {to_ns}"))?;
        prepare_receiver(&rx).context("setting up the stream's receiving socket")?;
        let target = rx.local_addr()?;
        let unspecified = match to {
            IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let tx = netctl::netns::run_in(from_ns, || {
            let s = UdpSocket::bind(unspecified)?;
            s.connect(target)?;
            Ok::<_, std::io::Error>(s)
        })?
        .with_context(|| format!("a socket in {from_ns} sending to {target}"))?;
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_receiving = Arc::new(AtomicBool::new(false));
        let receiver = {
            let stop = stop_receiving.clone();
            std::thread::Builder::new()
                .name(format!("stream rx {to_ns}"))
                .spawn(move || receive(&rx, tag, &stop))?
        };
        let sender = {
            let stop = stop_sending.clone();
            std::thread::Builder::new()
                .name(format!("stream tx {from_ns}"))
                .spawn(move || send(&tx, tag, &stop))?
        };
        Ok(Stream {
            stop_sending,
            stop_receiving,
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// Stops sending, gives what is in flight `grace` to arrive, stops
    /// receiving, and reports.
    pub fn finish(mut self, grace: Duration) -> Result<StreamReport> {
        self.stop_sending.store(true, Ordering::Relaxed);
        let sent = self
            .sender
            .take()
            .context("the stream was finished twice")?
            .join()
            .map_err(|_| anyhow!("the stream's sender panicked"))?;
        std::thread::sleep(grace);
        self.stop_receiving.store(true, Ordering::Relaxed);
        let received = self
            .receiver
            .take()
            .context("the stream was finished twice")?
            .join()
            .map_err(|_| anyhow!("the stream's receiver panicked"))??;
        Ok(StreamReport {
            sent,
            deliveries: received.deliveries,
            socket_drops: received.socket_drops,
            unstamped: received.unstamped,
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop_sending.store(true, Ordering::Relaxed);
        self.stop_receiving.store(true, Ordering::Relaxed);
        if let Some(s) = self.sender.take() {
            let _ = s.join();
        }
        if let Some(r) = self.receiver.take() {
            let _ = r.join();
        }
    }
}

/// Kernel receive stamps, drop counts, a large buffer (as root, past
/// `rmem_max`), and a read timeout so that the receiver sees its stop flag.
fn prepare_receiver(rx: &UdpSocket) -> Result<()> {
    socket::setsockopt(rx, sockopt::ReceiveTimestampns, &true).context("SO_TIMESTAMPNS")?;
    socket::setsockopt(rx, sockopt::RxqOvfl, &1).context("SO_RXQ_OVFL")?;
    let size = RCVBUF as libc::c_int;
    // SAFETY: setsockopt reads one c_int from the pointer given, which
    // lives across the call; the fd is the socket's own.
    let r = unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVBUFFORCE");
    }
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(())
}

/// One datagram per [`INTERVAL`] tick until `stop`. A sender more than a
/// tick late passes over the ticks it missed rather than bursting: the
/// send times say when each datagram really left.
fn send(tx: &UdpSocket, tag: u32, stop: &AtomicBool) -> Sent {
    let mut out = Sent::default();
    let started = Instant::now();
    let mut tick: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = started + INTERVAL * tick;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > INTERVAL {
            let current = ((now - started).as_nanos() / INTERVAL.as_nanos()) as u32;
            out.ticks_missed += u64::from(current - tick);
            tick = current;
        }
        tick += 1;
        let now_ns = monotonic_ns();
        match tx.send(&encode(tag, out.count(), now_ns)) {
            Ok(_) => out.times_ns.push(now_ns),
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    out
}

/// Reads the stream until `stop`.
fn receive(rx: &UdpSocket, tag: u32, stop: &AtomicBool) -> Result<Received> {
    let mut out = Received {
        deliveries: Deliveries::default(),
        socket_drops: 0,
        unstamped: 0,
    };
    let mut buf = [0u8; 256];
    let mut cmsg = nix::cmsg_space!(TimeSpec, u32);
    while !stop.load(Ordering::Relaxed) {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (len, stamp, drops) = match socket::recvmsg::<()>(
            rx.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Ok(msg) => {
                let mut stamp = None;
                let mut drops = None;
                for c in msg.cmsgs()? {
                    match c {
                        ControlMessageOwned::ScmTimestampns(ts) => {
                            stamp = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
                        }
                        ControlMessageOwned::RxqOvfl(n) => drops = Some(n),
                        _ => {}
                    }
                }
                (msg.bytes, stamp, drops)
            }
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(e) => return Err(e).context("receiving the stream"),
        };
        if let Some(n) = drops {
            // A running count since the socket was made.
            out.socket_drops = u64::from(n);
        }
        let recv_ns = stamp.unwrap_or_else(|| {
            out.unstamped += 1;
            // The kernel stamps with CLOCK_REALTIME: the same clock.
            clock_ns(libc::CLOCK_REALTIME)
        });
        if let Some((seq, sent_ns)) = decode(tag, &buf[..len]) {
            out.deliveries.arrive(seq, sent_ns, recv_ns);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Deliveries of `(sequence, send time, receive time)`, in order of
    /// arrival.
    fn deliver(pairs: &[(u64, u64, u64)]) -> Deliveries {
        let mut d = Deliveries::default();
        for &(seq, sent, recv) in pairs {
            d.arrive(seq, sent, recv);
        }
        d
    }

    #[test]
    fn a_steady_stream_has_no_stall_and_no_loss() {
        let pairs: Vec<_> = (0..100).map(|i| (i, i * MS, 5_000 + i * MS)).collect();
        let d = deliver(&pairs);
        assert_eq!(d.longest(), None);
        assert_eq!(d.received(), 100);
        assert_eq!(d.lost(100), 0);
    }

    #[test]
    fn a_pause_of_the_sender_is_not_a_stall() {
        // The sender was descheduled for 80 ms between 9 and 10: the gap
        // in arrivals is its own, and the send times say so.
        let mut pairs: Vec<_> = (0..10).map(|i| (i, i * MS, i * MS + 100)).collect();
        pairs.extend((10..20).map(|i| (i, (i + 80) * MS, (i + 80) * MS + 100)));
        let d = deliver(&pairs);
        assert_eq!(d.longest(), None, "{:?}", d.longest());
    }

    #[test]
    fn datagrams_held_back_then_delivered_make_a_stall_of_the_extra_time() {
        // 0..10 on time; 10..60 held in the tunnel until 150 ms, then all
        // delivered at once; 60.. on time again.
        let mut pairs: Vec<_> = (0..10).map(|i| (i, i * MS, i * MS)).collect();
        pairs.extend((10..60).map(|i| (i, i * MS, 150 * MS + i)));
        pairs.extend((60..100).map(|i| (i, i * MS, 150 * MS + i * MS)));
        let d = deliver(&pairs);
        let s = d.longest().unwrap();
        // From 9 (sent and received at 9 ms) to 10 (sent at 10 ms,
        // received at 150 ms + 10 ns): 141 ms of receive gap, 1 ms of it
        // the sender's spacing.
        assert_eq!(s.extra_ns, 140 * MS + 10);
        assert_eq!(s.from_ns, 9 * MS);
        assert_eq!(s.to_ns, 9 * MS + 141 * MS + 10);
        assert_eq!(s.skipped, 0);
        assert_eq!(d.lost(100), 0);
    }

    #[test]
    fn datagrams_lost_while_the_sender_kept_sending_are_losses_not_a_stall() {
        // 20..70 lost, the rest on time: what came, came when it was due.
        let pairs: Vec<_> = (0..100)
            .filter(|i| !(20..70).contains(i))
            .map(|i| (i, i * MS, 2 * MS + i * MS))
            .collect();
        let d = deliver(&pairs);
        assert_eq!(d.longest(), None, "{:?}", d.longest());
        assert_eq!(d.lost(100), 50);
    }

    #[test]
    fn loss_while_the_tunnel_also_holds_back_counts_both() {
        // 20..70 lost, and 70 onwards 30 ms late: the receive gap from 19
        // to 70 is 81 ms, the send gap 51 ms.
        let mut pairs: Vec<_> = (0..20).map(|i| (i, i * MS, i * MS)).collect();
        pairs.extend((70..100).map(|i| (i, i * MS, i * MS + 30 * MS)));
        let d = deliver(&pairs);
        let s = d.longest().unwrap();
        assert_eq!(s.extra_ns, 30 * MS);
        assert_eq!(s.skipped, 50);
        assert_eq!(d.lost(100), 50);
    }

    #[test]
    fn losses_are_placed_in_time_by_their_send_times() {
        // Sent one a millisecond; 20..70 lost.
        let sent: Vec<u64> = (0..100).map(|i| i * MS).collect();
        let pairs: Vec<_> = (0..100)
            .filter(|i| !(20..70).contains(i))
            .map(|i| (i, i * MS, i * MS))
            .collect();
        let d = deliver(&pairs);
        assert_eq!(d.lost_within(&sent, 0, 99 * MS), 50);
        assert_eq!(d.lost_within(&sent, 60 * MS, 80 * MS), 10, "60..70");
        assert_eq!(d.lost_within(&sent, 0, 19 * MS), 0);
        assert_eq!(d.lost_within(&sent, 70 * MS, 200 * MS), 0);
        assert_eq!(d.lost_within(&sent, 20 * MS, 20 * MS), 1, "both ends in");
    }

    #[test]
    fn late_and_duplicate_datagrams_neither_stall_nor_count_twice() {
        let pairs = [
            (0, 0, 0),
            (2, 2 * MS, 2 * MS),
            (1, MS, 2 * MS + 10),
            (2, 2 * MS, 2 * MS + 20),
            (3, 3 * MS, 3 * MS + 500),
        ];
        let d = deliver(&pairs);
        assert_eq!(d.received(), 4);
        assert_eq!(d.duplicates(), 1);
        assert_eq!(d.late(), 1);
        assert_eq!(d.lost(4), 0);
        // Only 3 came later than its send gap from 2 says; 1's late
        // arrival is not held against the frontier.
        assert_eq!(d.longest().unwrap().extra_ns, 500);
    }

    #[test]
    fn stalls_are_found_by_the_window_they_overlap() {
        let mut pairs: Vec<_> = (0..100).map(|i| (i, i * MS, i * MS)).collect();
        // 5 ms extra after 30, 20 ms extra after 80 (later datagrams shifted).
        for p in pairs.iter_mut().skip(31) {
            p.2 += 5 * MS;
        }
        for p in pairs.iter_mut().skip(81) {
            p.2 += 20 * MS;
        }
        let d = deliver(&pairs);
        assert_eq!(d.longest().unwrap().extra_ns, 20 * MS);
        assert_eq!(d.longest_within(0, 50 * MS).unwrap().extra_ns, 5 * MS);
        assert_eq!(
            d.longest_within(75 * MS, 200 * MS).unwrap().extra_ns,
            20 * MS
        );
        assert_eq!(d.longest_within(40 * MS, 70 * MS), None);
        // A stall that began before the window and ended inside it counts.
        assert_eq!(d.longest_within(33 * MS, 40 * MS).unwrap().extra_ns, 5 * MS);
    }

    #[test]
    fn datagrams_round_trip_and_strangers_are_refused() {
        let d = encode(7, 42, 123_456_789);
        assert_eq!(decode(7, &d), Some((42, 123_456_789)));
        assert_eq!(decode(8, &d), None, "another stream's");
        assert_eq!(decode(7, &d[..20]), None, "truncated");
        let mut bad = d;
        bad[0] = b'X';
        assert_eq!(decode(7, &bad), None);
    }
}
