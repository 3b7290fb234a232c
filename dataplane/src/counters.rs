//! Per-worker counters. Each worker owns one cache-padded block and is its
//! only writer (relaxed increments on a line no other core writes); readers
//! sum the blocks when `ringtun show` asks.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use serde::Serialize;
use tunnel_proto::DropReason;

/// One counter, written by one worker, read by anyone.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Every counter has exactly one writing thread (a worker's
    /// counters are its own, the control thread's its own), so a relaxed
    /// load and store suffice: a plain `add`, where `fetch_add` would be a
    /// locked read-modify-write several times per packet.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Replaces the value (by its one writer, mirroring a count kept
    /// elsewhere as a plain number).
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct WorkerCounters {
    /// Reads completed on the device queue.
    pub dev_reads: Counter,
    /// Bytes read from the device (packets, without virtio-net headers).
    pub dev_read_bytes: Counter,
    /// Super-packets (GSO) among the reads.
    pub dev_read_gso: Counter,
    /// Segments split out of those super-packets, each sealed and sent as
    /// one datagram: over `dev_read_gso`, how much TSO/USO saved in reads.
    pub dev_read_gso_segments: Counter,
    /// Writes completed to the device queue.
    pub dev_writes: Counter,
    /// Packets delivered to the device (a coalesced write counts its segments).
    pub dev_write_packets: Counter,
    /// Writes of a coalesced super-packet that the device accepted
    /// (counted on completion, as `dev_write_coalesced_segments`, so that
    /// one over the other is a true average).
    pub dev_write_coalesced: Counter,
    /// Segments delivered in those writes (included in
    /// `dev_write_packets`): over `dev_write_coalesced`, how many packets
    /// one coalesced write saved.
    pub dev_write_coalesced_segments: Counter,
    /// Device writes the kernel refused.
    pub dev_write_errors: Counter,
    /// Datagrams sent on the underlay.
    pub udp_tx_datagrams: Counter,
    /// Bytes sent on the underlay (UDP payload).
    pub udp_tx_bytes: Counter,
    /// `sendmsg` operations (one may carry up to 64 datagrams with GSO).
    pub udp_tx_sends: Counter,
    /// Sends the kernel refused (unreachable, no buffer, ...).
    pub udp_tx_errors: Counter,
    /// Datagrams received on the underlay.
    pub udp_rx_datagrams: Counter,
    /// Bytes received on the underlay.
    pub udp_rx_bytes: Counter,
    /// Receive completions (one may carry many datagrams with GRO).
    pub udp_rx_receives: Counter,
    /// Receive completions that carried more than one datagram: the ones
    /// UDP GRO coalesced.
    pub udp_rx_gro_receives: Counter,
    /// Datagrams carried by those receives (included in `udp_rx_datagrams`).
    pub udp_rx_gro_datagrams: Counter,
    /// Times a multishot receive ran out of provided buffers and was re-armed.
    pub rx_buffer_exhausted: Counter,
    /// Handshake messages passed to the control thread.
    pub handshakes_to_control: Counter,
    /// Completion batches (one `io_uring_enter` each).
    pub batches: Counter,
    /// Completions reaped.
    pub completions: Counter,
    /// `sched_yield` calls after 200 µs of running without sleeping, each
    /// an offer of the CPU to threads waiting for it.
    pub yields: Counter,
    /// GSO sends refused by the kernel and retried one datagram at a time.
    pub gso_fallbacks: Counter,
    /// Sends refused because the chosen local address went away, resent
    /// with the kernel choosing the source.
    pub src_addr_resets: Counter,
    /// Drops by reason.
    pub drops: [Counter; DropReason::COUNT],
}

impl WorkerCounters {
    /// A worker's counters, all zero. (Per-peer traffic is the peer's
    /// own: each peer keeps one lane per worker.)
    pub fn new() -> CachePadded<WorkerCounters> {
        CachePadded::new(WorkerCounters {
            dev_reads: Counter::default(),
            dev_read_bytes: Counter::default(),
            dev_read_gso: Counter::default(),
            dev_read_gso_segments: Counter::default(),
            dev_writes: Counter::default(),
            dev_write_packets: Counter::default(),
            dev_write_coalesced: Counter::default(),
            dev_write_coalesced_segments: Counter::default(),
            dev_write_errors: Counter::default(),
            udp_tx_datagrams: Counter::default(),
            udp_tx_bytes: Counter::default(),
            udp_tx_sends: Counter::default(),
            udp_tx_errors: Counter::default(),
            udp_rx_datagrams: Counter::default(),
            udp_rx_bytes: Counter::default(),
            udp_rx_receives: Counter::default(),
            udp_rx_gro_receives: Counter::default(),
            udp_rx_gro_datagrams: Counter::default(),
            rx_buffer_exhausted: Counter::default(),
            handshakes_to_control: Counter::default(),
            batches: Counter::default(),
            completions: Counter::default(),
            yields: Counter::default(),
            gso_fallbacks: Counter::default(),
            src_addr_resets: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
        })
    }

    /// Counts one drop.
    #[inline]
    pub fn drop_packet(&self, reason: DropReason) {
        self.drops[reason.index()].inc();
    }

    /// A plain-number copy for reports.
    pub fn snapshot(&self) -> WorkerSnapshot {
        WorkerSnapshot {
            dev_reads: self.dev_reads.get(),
            dev_read_bytes: self.dev_read_bytes.get(),
            dev_read_gso: self.dev_read_gso.get(),
            dev_read_gso_segments: self.dev_read_gso_segments.get(),
            dev_writes: self.dev_writes.get(),
            dev_write_packets: self.dev_write_packets.get(),
            dev_write_coalesced: self.dev_write_coalesced.get(),
            dev_write_coalesced_segments: self.dev_write_coalesced_segments.get(),
            dev_write_errors: self.dev_write_errors.get(),
            udp_tx_datagrams: self.udp_tx_datagrams.get(),
            udp_tx_bytes: self.udp_tx_bytes.get(),
            udp_tx_sends: self.udp_tx_sends.get(),
            udp_tx_errors: self.udp_tx_errors.get(),
            udp_rx_datagrams: self.udp_rx_datagrams.get(),
            udp_rx_bytes: self.udp_rx_bytes.get(),
            udp_rx_receives: self.udp_rx_receives.get(),
            udp_rx_gro_receives: self.udp_rx_gro_receives.get(),
            udp_rx_gro_datagrams: self.udp_rx_gro_datagrams.get(),
            rx_buffer_exhausted: self.rx_buffer_exhausted.get(),
            handshakes_to_control: self.handshakes_to_control.get(),
            batches: self.batches.get(),
            completions: self.completions.get(),
            yields: self.yields.get(),
            gso_fallbacks: self.gso_fallbacks.get(),
            src_addr_resets: self.src_addr_resets.get(),
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_string(), self.drops[r.index()].get()))
                .collect(),
        }
    }
}

/// Plain numbers copied out of a worker's counters.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// See [`WorkerCounters::dev_reads`].
    pub dev_reads: u64,
    /// See [`WorkerCounters::dev_read_bytes`].
    pub dev_read_bytes: u64,
    /// See [`WorkerCounters::dev_read_gso`].
    pub dev_read_gso: u64,
    /// See [`WorkerCounters::dev_read_gso_segments`].
    pub dev_read_gso_segments: u64,
    /// See [`WorkerCounters::dev_writes`].
    pub dev_writes: u64,
    /// See [`WorkerCounters::dev_write_packets`].
    pub dev_write_packets: u64,
    /// See [`WorkerCounters::dev_write_coalesced`].
    pub dev_write_coalesced: u64,
    /// See [`WorkerCounters::dev_write_coalesced_segments`].
    pub dev_write_coalesced_segments: u64,
    /// See [`WorkerCounters::dev_write_errors`].
    pub dev_write_errors: u64,
    /// See [`WorkerCounters::udp_tx_datagrams`].
    pub udp_tx_datagrams: u64,
    /// See [`WorkerCounters::udp_tx_bytes`].
    pub udp_tx_bytes: u64,
    /// See [`WorkerCounters::udp_tx_sends`].
    pub udp_tx_sends: u64,
    /// See [`WorkerCounters::udp_tx_errors`].
    pub udp_tx_errors: u64,
    /// See [`WorkerCounters::udp_rx_datagrams`].
    pub udp_rx_datagrams: u64,
    /// See [`WorkerCounters::udp_rx_bytes`].
    pub udp_rx_bytes: u64,
    /// See [`WorkerCounters::udp_rx_receives`].
    pub udp_rx_receives: u64,
    /// See [`WorkerCounters::udp_rx_gro_receives`].
    pub udp_rx_gro_receives: u64,
    /// See [`WorkerCounters::udp_rx_gro_datagrams`].
    pub udp_rx_gro_datagrams: u64,
    /// See [`WorkerCounters::rx_buffer_exhausted`].
    pub rx_buffer_exhausted: u64,
    /// See [`WorkerCounters::handshakes_to_control`].
    pub handshakes_to_control: u64,
    /// See [`WorkerCounters::batches`].
    pub batches: u64,
    /// See [`WorkerCounters::completions`].
    pub completions: u64,
    /// See [`WorkerCounters::yields`].
    pub yields: u64,
    /// See [`WorkerCounters::gso_fallbacks`].
    pub gso_fallbacks: u64,
    /// See [`WorkerCounters::src_addr_resets`].
    pub src_addr_resets: u64,
    /// Drops by reason name, in DESIGN.md's order.
    pub drops: Vec<(String, u64)>,
}

/// What the control thread counts that a metrics scrape reads from
/// another thread: handshake outcomes and the drops the protocol counted
/// itself. The control thread is the only writer.
#[derive(Debug, Default)]
pub struct ControlCounters {
    /// Handshake initiations sent (first tries and retries).
    pub handshakes_initiated: Counter,
    /// Sessions made: as initiator on a response, as responder when the
    /// initiator's first data packet confirmed it.
    pub handshakes_completed: Counter,
    /// Cookie replies sent to handshake messages that came under load
    /// without a valid MAC2.
    pub cookie_replies_sent: Counter,
    /// The control thread's own drops by reason, mirrored after every turn.
    pub drops: [Counter; DropReason::COUNT],
}

impl ControlCounters {
    /// Mirrors the control thread's drop counts.
    pub fn mirror_drops(&self, drops: &[u64; DropReason::COUNT]) {
        for (c, &n) in self.drops.iter().zip(drops) {
            c.set(n);
        }
    }
}
