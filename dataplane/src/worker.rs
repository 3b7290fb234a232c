//! One worker: a thread pinned to a core that owns one device queue, its
//! UDP sockets, one io_uring and one slab of registered memory, and moves
//! packets both ways in batches.
//!
//! ```text
//!  queue ──ReadFixed──▶ route ─▶ seal in place ─▶ SendMsg (UDP_SEGMENT) ──▶ wire
//!  wire ──RecvMsgMulti (provided buffers, UDP_GRO)──▶ open in place ─▶ WriteFixed ──▶ queue
//! ```
//!
//! A batch is every completion the ring holds; the follow-ups it produces
//! go to the kernel with the next wait, one `io_uring_enter` per batch. A
//! batch ends when the ring is empty, never on a timer, so a lone ping is
//! not held back and an idle tunnel sleeps in the kernel.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tunnel_proto::DropReason;

use crate::bufring::BufRing;
use crate::cmsg::{self, RECV_CONTROL_LEN, RawAddr, SEND_CONTROL_LEN};
use crate::counters::WorkerCounters;
use crate::handoff::{ControlLink, EventFd, MAX_HANDSHAKE_LEN, ToControl};
use crate::local_addr::LocalAddrTable;
use crate::mode::{ControlEvent, Inbound, Mode, Route, SealError};
use crate::offload::{
    CoalesceConfig, Coalescer, Framing, GsoSplit, GsoType, VnetHeader, Write, finish_checksum,
};
use crate::slab::{Layout, Region, Slab};
use crate::tun::{DeviceKind, Offloads, VNET_HDR_LEN};
use crate::udp::WorkerSockets;

/// Reads kept in flight on the device queue. Every POLLIN wakes all
/// pending reads and one wins, so more than a few only burn CPU.
pub const READS_IN_FLIGHT: usize = 3;
/// Transmit slots: each holds one read and what is sent from it.
pub const TX_SLOTS: usize = 16;
/// Provided receive buffers (a power of two).
pub const RX_BUFFERS: u16 = 64;
/// Largest read from the device: a 64 KiB super-packet plus its header.
/// A TAP frame adds its Ethernet header (with a VLAN tag, 18 bytes) to
/// the 64 KiB packet. The device reports a packet's full length even when
/// it did not fit, so a read above this is a truncated packet.
pub const MAX_READ: usize = VNET_HDR_LEN + 18 + 65_535;
/// Where the inner packet starts in a transmit slot: room for the largest
/// encapsulation header (16) and, just before the packet, the virtio-net
/// header (10).
pub const SLOT_PACKET_OFFSET: usize = 16;
/// Send operations one slot may have in flight (GSO fallback and VXLAN
/// flooding multiply them).
pub const OPS_PER_SLOT: usize = 128;
/// Most datagrams one GRO receive can carry.
pub const MAX_GRO_SEGMENTS: usize = 64;
/// Largest UDP payload one GSO send may carry (the stack's 64 KiB datagram
/// limit less headers, with margin).
pub const GSO_MAX_BYTES: usize = 65_507;
/// Least time between two timer-only events for one peer from one worker.
pub const TIMER_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Failed device reads in a row after which a worker gives up.
const MAX_READ_ERRORS: u32 = 16;
/// Gathered sends in flight at once.
const GATHER_OPS: usize = 16;
/// Most datagrams one gathered send carries (the `UDP_SEGMENT` limit).
const MAX_GATHER: usize = 64;
/// `a` of the multishot read's user data (slot indexes are below it).
const MULTISHOT_READ: usize = 0xffff;
/// Write slots for coalesced super-packets.
pub const WRITE_SLOTS: usize = 64;
/// Write slots one receive may fill.
const MAX_WSLOTS_PER_BATCH: usize = 8;
/// Whether a send from a chosen local address (`IP_PKTINFO`) failed in a
/// way that a vanished address explains: IPv4's route lookup for a source
/// that is no longer local fails with ENETUNREACH, IPv6's control-message
/// check with EINVAL, a bind-time check with EADDRNOTAVAIL. Resending once
/// without a source costs little when the cause was something else.
fn source_refused(res: i32) -> bool {
    res == -libc::EINVAL || res == -libc::EADDRNOTAVAIL || res == -libc::ENETUNREACH
}

/// How long a GSO refusal lowers the limits before they are probed again.
pub const GSO_REPROBE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// A write slot: virtio-net header, link header, 64 KiB IP packet.
const WSLOT_SIZE: usize = VNET_HDR_LEN + 14 + 65_535;
/// Bytes of receive metadata before the payload in a provided buffer.
const RX_META: usize = 16 + std::mem::size_of::<RawAddr>() + RECV_CONTROL_LEN;
/// A provided receive buffer: metadata plus the largest UDP payload.
pub const RX_BUFFER_SIZE: usize = RX_META + 65_535 + 64;

// Fixed-file slots.
const FD_TUN: types::Fixed = types::Fixed(0);
const FD_V4: types::Fixed = types::Fixed(1);
const FD_V6: types::Fixed = types::Fixed(2);
const FD_WAKE: types::Fixed = types::Fixed(3);

// user_data: kind in the top byte, then up to 48 bits of operation data.
const K_READ: u64 = 1;
const K_SEND: u64 = 2;
const K_RECV: u64 = 3;
const K_WRITE: u64 = 4;
const K_WAKE: u64 = 5;
const K_GATHER: u64 = 6;

fn ud(kind: u64, a: u64, b: u64) -> u64 {
    (kind << 56) | ((a & 0xffff) << 16) | (b & 0xffff)
}

fn ud_parts(u: u64) -> (u64, usize, usize) {
    (
        u >> 56,
        ((u >> 16) & 0xffff) as usize,
        (u & 0xffff) as usize,
    )
}

/// Write operations from receive buffers: bit 15 of `b` set for a
/// coalesce slot rather than a receive buffer.
const WRITE_FROM_SLOT: usize = 0x8000;

/// How a worker reads its device queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// A few `ReadFixed` operations in flight, each into a slot the worker
    /// picked. Every POLLIN wakes all of them; those that then find the
    /// queue empty have been polled once already, and the kernel punts
    /// such a read to an io-wq (`iou-wrk`) thread.
    Fixed,
    /// One multishot `ReadMulti` picking transmit slots from a
    /// provided-buffer ring: one request, no thundering herd, no punting,
    /// and every packet that is ready is read in the same pass. The
    /// default.
    #[default]
    Multishot,
}

/// Everything a worker needs, handed over by the daemon.
pub struct WorkerSetup<M: Mode> {
    /// Worker number, for logs and counters.
    pub id: usize,
    /// Core to pin to (`None`: let the scheduler place the thread).
    pub core: Option<core_affinity::CoreId>,
    /// This worker's device queue.
    pub queue: OwnedFd,
    /// This worker's sockets.
    pub sockets: WorkerSockets,
    /// Whether device I/O carries a virtio-net header.
    pub vnet_hdr: bool,
    /// Whether to send runs of equal datagrams with `UDP_SEGMENT`.
    pub gso: bool,
    /// Device MTU (sizes the segment area).
    pub mtu: usize,
    /// TUN (IP packets) or TAP (Ethernet frames).
    pub kind: DeviceKind,
    /// Offloads the device accepted.
    pub offloads: Offloads,
    /// How to read the device queue.
    pub read_mode: ReadMode,
    /// The tunnel mode.
    pub mode: Arc<M>,
    /// This worker's counters.
    pub counters: Arc<CachePadded<WorkerCounters>>,
    /// Local address per peer.
    pub local_addrs: Arc<LocalAddrTable>,
    /// Link to the control thread.
    pub control: ControlLink,
    /// Set to stop; then `wake` is notified.
    pub stop: Arc<AtomicBool>,
    /// Notified to make the worker look at `stop`.
    pub wake: Arc<EventFd>,
    /// Told once the worker's ring and memory are set up, or why not.
    pub started: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Storage for one `sendmsg`: it must not move while the kernel may read it.
#[repr(C)]
struct SendOp {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: RawAddr,
    control: Control,
    /// Where the payload starts in the slot, its length, the GSO segment
    /// size (0: none) and the peer, kept for counting and GSO fallback.
    offset: u32,
    len: u32,
    segment: u16,
    peer: u16,
    dst: Option<SocketAddr>,
    src: Option<IpAddr>,
}

#[repr(C, align(8))]
struct Control([u8; SEND_CONTROL_LEN]);

/// A sealed packet held until the end of the batch, so that packets of one
/// size to one peer leave together.
#[derive(Clone, Copy, Debug)]
struct Queued {
    slot: u16,
    offset: u32,
    len: u32,
    dst: SocketAddr,
    peer: u16,
}

/// One `sendmsg` gathering equal-sized datagrams from several transmit
/// slots (one iovec each) into a `UDP_SEGMENT` send: small packets read
/// one by one leave as one send, and reach the peer as one GRO receive.
#[repr(C)]
struct GatherOp {
    hdr: libc::msghdr,
    iov: [libc::iovec; MAX_GATHER],
    name: RawAddr,
    control: Control,
    items: [Queued; MAX_GATHER],
    n: usize,
    segment: u16,
    /// Sent from a chosen local address (`IP_PKTINFO`).
    had_src: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct TxSlot {
    /// Send operations started from this slot (indexes into its ops).
    next_op: u16,
    /// Of those, still in flight.
    pending: u16,
}

/// Writes from one receive buffer: two iovecs each for a vectored write
/// when the virtio-net header cannot be placed in front of the packet.
#[repr(C)]
struct WriteVec {
    iov: [libc::iovec; 2],
}

static ZERO_VNET_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// The running worker.
struct Worker<M: Mode> {
    // Field order matters: the ring must be dropped (unregistering the
    // slab and the buffer ring) before the memory it points at.
    ring: IoUring,
    rx_ring: BufRing,
    /// With `ReadMode::Multishot`: the transmit slots offered to the device reads.
    read_ring: Option<BufRing>,
    read_armed: bool,
    read_starved: bool,
    /// Transmit slots the multishot read handed us and we have not returned.
    read_held: usize,
    slab: Slab,
    tx_region: Region,
    rx_region: Region,
    w_region: Region,
    /// Offset of the segment area within a transmit slot, and its size.
    seg_area_offset: usize,
    seg_area_len: usize,
    framing: Framing,
    coalescer: Option<Coalescer>,
    /// Opened packets of the current receive: (slab offset, length).
    pending: [(u32, u32); MAX_GRO_SEGMENTS],
    pending_len: usize,
    /// In-place writes started from the current receive buffer.
    nth_write: usize,
    free_wslots: Vec<u16>,
    wslot_segments: Vec<u16>,
    /// When a timer-only event last went out, per peer.
    timer_gate: Vec<Option<Instant>>,
    id: usize,
    vnet: usize,
    /// Each socket's `SO_RXQ_OVFL` running total as last seen.
    rxq_dropped_seen: [u32; 2],
    gso: bool,
    /// Whether the socket offered GSO at start: what a re-probe restores.
    gso_offered: bool,
    /// When the kernel last refused a GSO send; the path (route MTU,
    /// egress device) can change, so the limits are retried after
    /// [`GSO_REPROBE_AFTER`].
    gso_refused_at: Option<Instant>,
    /// The EIO refusal has been logged.
    gso_eio_warned: bool,
    /// Largest datagram a GSO send may carry on this path: lowered when
    /// the kernel refuses a segment size (`EMSGSIZE`/`EINVAL`: segment plus
    /// headers above the route's MTU, e.g. VXLAN over IPv6 at MTU 1450;
    /// an EINVAL for a send with a chosen source is first retried without
    /// it, since a vanished source gives the same error).
    /// Bigger datagrams go one per send and the kernel fragments them.
    gso_seg_limit: usize,
    has_v6: bool,
    mode: Arc<M>,
    counters: Arc<CachePadded<WorkerCounters>>,
    local_addrs: Arc<LocalAddrTable>,
    control: ControlLink,
    stop: Arc<AtomicBool>,
    /// The worker's wake-up eventfd (the ring reads a duplicate of it).
    _wake: Arc<EventFd>,
    wake_buf: Box<u64>,
    tx: Vec<TxSlot>,
    ops: Box<[SendOp]>,
    /// Single packets waiting for the end of the batch.
    queued: Vec<Queued>,
    gather: Box<[GatherOp]>,
    free_gather: Vec<u16>,
    free_tx: Vec<u16>,
    reads_in_flight: usize,
    rx_refs: Vec<u16>,
    rx_writes: Box<[WriteVec]>,
    recv_msg: Box<[libc::msghdr; 2]>,
    recv_armed: [bool; 2],
    /// A multishot receive ended for lack of buffers: re-arm only once a
    /// buffer came back, or the ring would spin on `ENOBUFS`.
    rx_starved: bool,
    /// Receive buffers the kernel handed us and we have not returned.
    rx_held: usize,
    /// Device reads that failed in a row (the device went away).
    read_errors: u32,
    /// Completions still owed by the kernel (for a clean drain at stop).
    inflight: usize,
    /// Keeps the fds open while registered.
    _fds: Vec<OwnedFd>,
}

/// Starts a worker thread.
pub fn spawn<M: Mode>(
    setup: WorkerSetup<M>,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    std::thread::Builder::new()
        .name(format!("rt-worker{}", setup.id))
        .spawn(move || {
            if let Some(core) = setup.core
                && !core_affinity::set_for_current(core)
            {
                tracing::warn!(worker = setup.id, ?core, "could not pin worker to its core");
            }
            let id = setup.id;
            let link = setup.control.clone();
            let stop = setup.stop.clone();
            let started = setup.started.clone();
            let r = match Worker::new(setup) {
                Ok(mut w) => {
                    let _ = started.send(Ok(()));
                    w.run()
                }
                Err(e) => {
                    let why = match e.raw_os_error() {
                        Some(libc::ENOSYS) | Some(libc::EPERM) => format!(
                            "{e}: io_uring is unavailable (kernel too old, or disabled by the sysctl kernel.io_uring_disabled)"
                        ),
                        Some(libc::ENOMEM) => format!(
                            "{e}: not enough locked memory for the ring's buffers (raise RLIMIT_MEMLOCK or run as root)"
                        ),
                        _ => e.to_string(),
                    };
                    let _ = started.send(Err(why));
                    Err(e)
                }
            };
            if let Err(e) = &r {
                tracing::error!(worker = id, error = %e, "worker stopped");
            }
            // Whatever the reason, the daemon stops with it: set the flag
            // before waking the control thread, which may look before this
            // thread has finished returning.
            stop.store(true, Ordering::Release);
            link.notify();
            r
        })
}

impl<M: Mode> Worker<M> {
    fn new(s: WorkerSetup<M>) -> io::Result<Worker<M>> {
        // The ring is built here, on the worker's own thread: a
        // single-issuer ring accepts submissions only from its creator.
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(8192)
            .setup_submit_all()
            .build(512)?;

        let mut layout = Layout::default();
        let seg_area_offset = (SLOT_PACKET_OFFSET + MAX_READ + 64).div_ceil(64) * 64;
        let seg_area_len = if s.vnet_hdr {
            MAX_GRO_SEGMENTS * (SLOT_PACKET_OFFSET + s.mtu + 14 + 64)
        } else {
            0
        };
        let tx_region = layout.region(seg_area_offset + seg_area_len, TX_SLOTS);
        let rx_region = layout.region(RX_BUFFER_SIZE, usize::from(RX_BUFFERS));
        let w_region = layout.region(WSLOT_SIZE, if s.vnet_hdr { WRITE_SLOTS } else { 0 });
        let framing = match s.kind {
            DeviceKind::Tun => Framing::Ip,
            DeviceKind::Tap => Framing::Ethernet,
        };
        let coalescer = (s.vnet_hdr && s.offloads.tso()).then(|| {
            Coalescer::new(CoalesceConfig {
                framing,
                tcp: true,
                udp: s.offloads.uso(),
                verify_checksums: !M::AUTHENTICATED,
            })
        });
        let slab = Slab::new(layout.total())?;
        // SAFETY: the slab outlives the registration (field order above).
        unsafe { ring.submitter().register_buffers(&[slab.iovec()])? };

        let has_v6 = s.sockets.v6.is_some();
        let v6_raw = s.sockets.v6.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let wake_dup = dup(s.wake.raw())?;
        ring.submitter().register_files(&[
            s.queue.as_raw_fd(),
            s.sockets.v4.as_raw_fd(),
            v6_raw,
            wake_dup.as_raw_fd(),
        ])?;

        // Multishot reads need kernel 6.7; older kernels get fixed reads.
        let mut probe = io_uring::Probe::new();
        let multishot_ok = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::ReadMulti::CODE);
        let read_mode = match s.read_mode {
            ReadMode::Multishot if !multishot_ok => {
                if s.id == 0 {
                    tracing::warn!(
                        "this kernel has no multishot reads (IORING_OP_READ_MULTISHOT, Linux 6.7); using fixed reads"
                    );
                }
                ReadMode::Fixed
            }
            m => m,
        };
        let read_ring = match read_mode {
            ReadMode::Fixed => None,
            ReadMode::Multishot => {
                let mut r = BufRing::new(TX_SLOTS as u16, 1)?;
                r.register(&ring.submitter())?;
                for slot in 0..TX_SLOTS {
                    // SAFETY: in-bounds offset of the slab mapping.
                    let addr = unsafe {
                        slab.base().add(
                            tx_region.at(slot) + SLOT_PACKET_OFFSET
                                - if s.vnet_hdr { VNET_HDR_LEN } else { 0 },
                        )
                    };
                    r.push(slot as u16, addr, MAX_READ as u32);
                }
                r.publish();
                Some(r)
            }
        };
        let mut rx_ring = BufRing::new(RX_BUFFERS, 0)?;
        rx_ring.register(&ring.submitter())?;
        for bid in 0..RX_BUFFERS {
            // SAFETY: in-bounds offset of the slab mapping.
            let addr = unsafe { slab.base().add(rx_region.at(usize::from(bid))) };
            rx_ring.push(bid, addr, RX_BUFFER_SIZE as u32);
        }
        rx_ring.publish();

        let ops = (0..TX_SLOTS * OPS_PER_SLOT)
            .map(|_| SendOp {
                // SAFETY: msghdr and iovec are plain old data; zero is valid.
                hdr: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                name: RawAddr::default(),
                control: Control([0; SEND_CONTROL_LEN]),
                offset: 0,
                len: 0,
                segment: 0,
                peer: 0,
                dst: None,
                src: None,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let dummy = Queued {
            slot: 0,
            offset: 0,
            len: 0,
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            peer: 0,
        };
        let gather = (0..GATHER_OPS)
            .map(|_| GatherOp {
                // SAFETY: msghdr is plain old data; zero is valid.
                hdr: unsafe { std::mem::zeroed() },
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; MAX_GATHER],
                name: RawAddr::default(),
                control: Control([0; SEND_CONTROL_LEN]),
                items: [dummy; MAX_GATHER],
                n: 0,
                segment: 0,
                had_src: false,
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let rx_writes = (0..usize::from(RX_BUFFERS) * MAX_GRO_SEGMENTS)
            .map(|_| WriteVec {
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; 2],
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        // SAFETY: msghdr is plain old data; zero is valid.
        let mut recv_msg: Box<[libc::msghdr; 2]> = Box::new(unsafe { std::mem::zeroed() });
        for m in recv_msg.iter_mut() {
            m.msg_namelen = std::mem::size_of::<RawAddr>() as libc::socklen_t;
            m.msg_controllen = RECV_CONTROL_LEN;
        }

        let mut fds = vec![s.queue, s.sockets.v4, wake_dup];
        if let Some(v6) = s.sockets.v6 {
            fds.push(v6);
        }
        Ok(Worker {
            ring,
            rx_ring,
            read_ring,
            read_armed: false,
            read_starved: false,
            read_held: 0,
            slab,
            tx_region,
            rx_region,
            w_region,
            seg_area_offset,
            seg_area_len,
            framing,
            coalescer,
            pending: [(0, 0); MAX_GRO_SEGMENTS],
            pending_len: 0,
            nth_write: 0,
            free_wslots: (0..w_region.count as u16).rev().collect(),
            wslot_segments: vec![1; w_region.count],
            timer_gate: vec![None; s.counters.peers.len()],
            id: s.id,
            vnet: if s.vnet_hdr { VNET_HDR_LEN } else { 0 },
            rxq_dropped_seen: [0; 2],
            gso: s.gso,
            gso_offered: s.gso,
            gso_refused_at: None,
            gso_eio_warned: false,
            gso_seg_limit: usize::MAX,
            has_v6,
            mode: s.mode,
            counters: s.counters,
            local_addrs: s.local_addrs,
            control: s.control,
            stop: s.stop,
            _wake: s.wake,
            wake_buf: Box::new(0),
            tx: vec![TxSlot::default(); TX_SLOTS],
            ops,
            queued: Vec::with_capacity(MAX_GATHER),
            gather,
            free_gather: (0..GATHER_OPS as u16).rev().collect(),
            free_tx: match read_mode {
                ReadMode::Fixed => (0..TX_SLOTS as u16).rev().collect(),
                ReadMode::Multishot => Vec::with_capacity(TX_SLOTS),
            },
            reads_in_flight: 0,
            rx_refs: vec![0; usize::from(RX_BUFFERS)],
            rx_writes,
            recv_msg,
            recv_armed: [false; 2],
            rx_starved: false,
            rx_held: 0,
            read_errors: 0,
            inflight: 0,
            _fds: fds,
        })
    }

    /// Queues one submission; flushes the queue to the kernel first if full.
    fn push(&mut self, sqe: squeue::Entry) {
        self.inflight += 1;
        loop {
            // SAFETY: every pointer an entry carries points into memory the
            // worker owns and keeps in place until the completion arrives
            // (slab, ops, rx_writes, recv_msg, wake_buf).
            let pushed = unsafe { self.ring.submission().push(&sqe) };
            if pushed.is_ok() {
                return;
            }
            // Rare: more follow-ups than the SQ holds in one batch.
            if let Err(e) = self.ring.submit() {
                tracing::warn!(worker = self.id, error = %e, "io_uring submit failed");
            }
        }
    }

    fn arm_wake(&mut self) {
        let sqe = opcode::Read::new(FD_WAKE, (&mut *self.wake_buf as *mut u64).cast(), 8)
            .build()
            .user_data(ud(K_WAKE, 0, 0));
        self.push(sqe);
    }

    fn arm_recv(&mut self, sock: usize) {
        if self.recv_armed[sock] || self.rx_starved || (sock == 1 && !self.has_v6) {
            return;
        }
        let fd = if sock == 0 { FD_V4 } else { FD_V6 };
        let sqe = opcode::RecvMsgMulti::new(fd, &self.recv_msg[sock], self.rx_ring.bgid())
            .build()
            .user_data(ud(K_RECV, sock as u64, 0));
        self.recv_armed[sock] = true;
        self.push(sqe);
    }

    fn arm_reads(&mut self) {
        if let Some(r) = &self.read_ring {
            if self.read_armed || self.read_starved || self.stop.load(Ordering::Relaxed) {
                return;
            }
            let sqe = opcode::ReadMulti::new(FD_TUN, 0, r.bgid())
                .build()
                .user_data(ud(K_READ, MULTISHOT_READ as u64, 0));
            self.read_armed = true;
            self.push(sqe);
            return;
        }
        while self.reads_in_flight < READS_IN_FLIGHT && !self.stop.load(Ordering::Relaxed) {
            let Some(slot) = self.free_tx.pop() else {
                return;
            };
            let s = usize::from(slot);
            self.tx[s] = TxSlot::default();
            let off = self.tx_region.at(s) + SLOT_PACKET_OFFSET - self.vnet;
            // SAFETY: in-bounds pointer into the registered slab.
            let ptr = unsafe { self.slab.base().add(off) };
            let sqe = opcode::ReadFixed::new(FD_TUN, ptr, MAX_READ as u32, 0)
                .build()
                .user_data(ud(K_READ, s as u64, 0));
            self.reads_in_flight += 1;
            self.push(sqe);
        }
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_wake();
        self.arm_recv(0);
        self.arm_recv(1);
        self.arm_reads();
        tracing::debug!(worker = self.id, mode = M::NAME, "worker running");
        // Whatever ends the loop, requests in flight point into our memory:
        // cancel and reap them before it goes.
        let r = self.serve();
        self.drain();
        r
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            if !self.batch() {
                return Ok(());
            }
            if self.read_errors >= MAX_READ_ERRORS {
                return Err(io::Error::other(
                    "the device is gone or keeps failing reads (was the interface deleted?)",
                ));
            }
        }
    }

    /// Handles every completion the ring holds. Returns false to stop.
    fn batch(&mut self) -> bool {
        self.counters.batches.inc();
        let mode = self.mode.clone();
        let view = mode.begin();
        let now = Instant::now();
        let mut keep_going = true;
        loop {
            let cqe = {
                let mut cq = self.ring.completion();
                cq.sync();
                cq.next()
            };
            let Some(cqe) = cqe else { break };
            self.counters.completions.inc();
            let (kind, a, b) = ud_parts(cqe.user_data());
            let res = cqe.result();
            let flags = cqe.flags();
            let multishot = kind == K_RECV || (kind == K_READ && a == MULTISHOT_READ);
            if !multishot || !cqueue::more(flags) {
                self.inflight = self.inflight.saturating_sub(1);
            }
            match kind {
                K_READ if a == MULTISHOT_READ => {
                    if !cqueue::more(flags) {
                        self.read_armed = false;
                    }
                    match cqueue::buffer_select(flags) {
                        Some(slot) => {
                            self.read_held += 1;
                            self.on_read(&*mode, &view, now, usize::from(slot), res)
                        }
                        // As with receives: starved only if every slot is ours.
                        None if res == -libc::ENOBUFS => {
                            self.read_starved = self.read_held >= TX_SLOTS
                        }
                        None => self.on_read_error(res),
                    }
                }
                K_READ => self.on_read(&*mode, &view, now, a, res),
                K_SEND => self.on_send(a, b, res),
                K_GATHER => self.on_gather(a, res),
                K_RECV => self.on_recv(&*mode, &view, now, a, res, flags),
                K_WRITE => self.on_write(b, res),
                K_WAKE => {
                    if self.stop.load(Ordering::Acquire) {
                        keep_going = false;
                    } else if res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
                        // Without its wake-up read the worker could never
                        // be told to stop: stop now rather than spin.
                        tracing::error!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "wake-up read failed");
                        keep_going = false;
                    } else {
                        self.arm_wake();
                    }
                }
                _ => {}
            }
        }
        self.flush_queued();
        if self
            .gso_refused_at
            .is_some_and(|t| now.saturating_duration_since(t) >= GSO_REPROBE_AFTER)
        {
            // A refusal is about the path at the time; try the full size
            // again (one refused send, resent at once, if it still fails).
            self.gso_refused_at = None;
            self.gso = self.gso_offered;
            self.gso_seg_limit = usize::MAX;
        }
        if keep_going {
            self.arm_reads();
            self.arm_recv(0);
            self.arm_recv(1);
        }
        keep_going
    }

    fn free_slot(&mut self, s: usize) {
        if let Some(r) = &mut self.read_ring {
            self.tx[s] = TxSlot::default();
            let off = self.tx_region.at(s) + SLOT_PACKET_OFFSET - self.vnet;
            // SAFETY: in-bounds pointer into the slab.
            let addr = unsafe { self.slab.base().add(off) };
            r.push(s as u16, addr, MAX_READ as u32);
            r.publish();
            self.read_held = self.read_held.saturating_sub(1);
            self.read_starved = false;
            return;
        }
        self.free_tx.push(s as u16);
    }

    /// Counts a failed device read; the first of a run is logged with its
    /// errno, and a deleted device stops the worker at once.
    fn on_read_error(&mut self, res: i32) {
        if res == -libc::EBADFD || res == -libc::ENODEV {
            // The interface was deleted under us: nothing more to read.
            self.read_errors = MAX_READ_ERRORS;
        } else if res < 0 && res != -libc::ECANCELED && res != -libc::EAGAIN && res != -libc::EINTR
        {
            if self.read_errors == 0 {
                tracing::warn!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "device read failed");
            }
            self.read_errors += 1;
        }
    }

    fn on_read(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, s: usize, res: i32) {
        self.reads_in_flight = self.reads_in_flight.saturating_sub(1);
        // Hold the slot while this packet is handled: sends started (or
        // failed) below release their own holds, and the slot goes back
        // only once the last one is done.
        self.tx[s].pending += 1;
        self.handle_read(mode, view, now, s, res);
        self.release(s);
    }

    fn handle_read(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, s: usize, res: i32) {
        if res <= 0 {
            self.on_read_error(res);
            return;
        }
        self.read_errors = 0;
        let n = res as usize;
        self.counters.dev_reads.inc();
        if n <= self.vnet || n > MAX_READ {
            self.counters.drop_packet(DropReason::Malformed);
            return;
        }
        let len = n - self.vnet;
        self.counters.dev_read_bytes.add(len as u64);
        let base = self.tx_region.at(s);
        if self.vnet > 0 {
            // SAFETY: the read into this slot completed; nothing else uses it.
            let raw = unsafe {
                self.slab
                    .slice_mut(base + SLOT_PACKET_OFFSET - VNET_HDR_LEN, VNET_HDR_LEN + len)
            };
            let (hdr, pkt) = raw.split_at_mut(VNET_HDR_LEN);
            let hdr = match VnetHeader::parse(hdr) {
                Ok(h) => h,
                Err(_) => {
                    self.counters.drop_packet(DropReason::Malformed);
                    return;
                }
            };
            if hdr.gso_type != GsoType::None {
                self.counters.dev_read_gso.inc();
                self.read_gso(mode, view, now, s, &hdr, len);
                return;
            }
            // Cost: one pass over the L4 bytes to finish the checksum the
            // kernel left partial; no copy.
            if finish_checksum(&hdr, pkt).is_err() {
                self.counters.drop_packet(DropReason::Malformed);
                return;
            }
        }
        self.read_single(mode, view, now, s, len);
    }

    /// One packet, sealed where it was read and sent from there: no copy.
    fn read_single(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, s: usize, len: usize) {
        let base = self.tx_region.at(s);
        // SAFETY: the slot is ours until its sends complete.
        let pkt = unsafe { self.slab.slice_mut(base + SLOT_PACKET_OFFSET, len) };
        let route = mode.route(view, pkt);
        if let Route::Drop(r) = route {
            self.counters.drop_packet(r);
            return;
        }
        let rel = SLOT_PACKET_OFFSET - M::HEADROOM;
        // SAFETY: the sealing window lies inside this slot.
        let buf = unsafe {
            self.slab
                .slice_mut(base + rel, M::HEADROOM + len + M::TAILROOM)
        };
        match mode.seal(view, now, route, buf, len) {
            Ok(sealed) => {
                if let Some(ev) = sealed.event {
                    self.forward_event(ev, now);
                }
                self.send_run(
                    mode, view, s, route, rel, sealed.len, sealed.len, 1, sealed.dst, len,
                )
            }
            Err(SealError::Stage(peer)) => self.stage(peer, base + SLOT_PACKET_OFFSET, len),
            Err(SealError::Drop(r)) => self.counters.drop_packet(r),
        }
    }

    /// A super-packet: each segment written once into the slot's segment
    /// area at a fixed stride, sealed there, and the run sent with
    /// `UDP_SEGMENT`. Cost: one copy per segment (the split writes headers
    /// and payload into the send slot), unavoidable since every segment
    /// needs its own headers and tag.
    fn read_gso(
        &mut self,
        mode: &M,
        view: &M::Batch<'_>,
        now: Instant,
        s: usize,
        hdr: &VnetHeader,
        len: usize,
    ) {
        let base = self.tx_region.at(s);
        // SAFETY: the read area and the segment area of this slot are
        // disjoint, and both are ours until the slot's sends complete.
        let pkt = unsafe { self.slab.slice_mut(base + SLOT_PACKET_OFFSET, len) };
        let split = match GsoSplit::new(hdr, pkt, self.framing) {
            Ok(sp) => sp,
            Err(_) => {
                self.counters.drop_packet(DropReason::Malformed);
                return;
            }
        };
        let route = mode.route(view, pkt);
        if let Route::Drop(r) = route {
            self.counters.drop_packet(r);
            return;
        }
        let seg_max = split.segment_size();
        let stride_max = M::HEADROOM + seg_max + M::TAILROOM;
        let count = split.segment_count();
        if stride_max * count > self.seg_area_len {
            self.counters.drop_packet(DropReason::Malformed);
            return;
        }
        self.counters.dev_read_gso_segments.add(count as u64);
        let area = self.seg_area_offset;
        let mut stride = 0usize;
        let mut total = 0usize;
        let mut dst = None;
        let mut plain = 0usize;
        for i in 0..count {
            let at = if stride == 0 { 0 } else { i * stride };
            // SAFETY: inside this slot's segment area (checked above: every
            // sealed segment is at most stride_max bytes).
            let out = unsafe { self.slab.slice_mut(base + area + at, stride_max) };
            let n = match split.write_segment(i, &mut out[M::HEADROOM..M::HEADROOM + seg_max]) {
                Ok(n) => n,
                Err(_) => {
                    self.counters.drop_packet(DropReason::Malformed);
                    return;
                }
            };
            match mode.seal(view, now, route, out, n) {
                Ok(sealed) => {
                    if let Some(ev) = sealed.event {
                        self.forward_event(ev, now);
                    }
                    if stride == 0 {
                        stride = sealed.len;
                    }
                    total = at + sealed.len;
                    dst = Some(sealed.dst);
                    plain += n;
                }
                Err(SealError::Stage(peer)) => {
                    // No session: hand every segment over as its own packet.
                    self.stage(peer, base + area + at + M::HEADROOM, n);
                    if stride == 0 {
                        stride = stride_max;
                    }
                }
                Err(SealError::Drop(r)) => {
                    self.counters.drop_packet(r);
                    return;
                }
            }
        }
        if let Some(dst) = dst {
            self.send_run(mode, view, s, route, area, total, stride, count, dst, plain);
        }
    }

    /// Tells the control thread what a seal or open reported. Timer-only
    /// events fire on every turnaround of a busy flow, so at most one per
    /// peer per [`TIMER_EVENT_INTERVAL`] goes out; the control thread
    /// re-reads the timer state after each, which covers the ones held back.
    fn forward_event(&mut self, ev: ControlEvent, now: Instant) {
        if ev.timers_only() {
            let Some(last) = self.timer_gate.get_mut(usize::from(ev.peer)) else {
                return;
            };
            if last.is_some_and(|t| now.saturating_duration_since(t) < TIMER_EVENT_INTERVAL) {
                return;
            }
            *last = Some(now);
        }
        if !self.control.send_event(ev) {
            self.counters.drop_packet(DropReason::QueueFull);
        }
    }

    /// Hands a plaintext packet to the control thread (no session yet).
    fn stage(&mut self, peer: u16, off: usize, len: usize) {
        // SAFETY: the bytes belong to a slot we hold.
        let pkt = unsafe { self.slab.slice_mut(off, len) };
        let msg = ToControl::Stage {
            peer,
            packet: pkt.to_vec().into_boxed_slice(),
        };
        if !self.control.send(msg) {
            self.counters.drop_packet(DropReason::QueueFull);
        }
    }

    /// Sends `count` sealed datagrams laid out at `stride` from slot offset
    /// `rel` (`total` bytes) to the route's peer, or to every flood target:
    /// as few `sendmsg` calls as `UDP_SEGMENT` allows.
    #[allow(clippy::too_many_arguments)]
    fn send_run(
        &mut self,
        mode: &M,
        view: &M::Batch<'_>,
        s: usize,
        route: Route,
        rel: usize,
        total: usize,
        stride: usize,
        count: usize,
        dst: SocketAddr,
        plain_bytes: usize,
    ) {
        // One GSO send is one UDP "datagram" to the stack: its payload must
        // stay under 64 KiB, and it carries at most 64 segments.
        let per_send = if self.gso && stride > 0 && stride <= self.gso_seg_limit {
            (GSO_MAX_BYTES / stride).clamp(1, MAX_GRO_SEGMENTS)
        } else {
            1
        };
        let send_to = |w: &mut Self, dst: SocketAddr, peer: u16| {
            let mut i = 0;
            while i < count {
                let k = per_send.min(count - i);
                let off = rel + i * stride;
                let len = if i + k == count {
                    total - i * stride
                } else {
                    k * stride
                };
                let seg = if k > 1 { stride as u16 } else { 0 };
                w.send(s, off as u32, len as u32, seg, dst, peer);
                i += k;
            }
        };
        match route {
            Route::Peer(p) => {
                if let Some(c) = self.counters.peers.get(usize::from(p)) {
                    c.tx_packets.add(count as u64);
                    c.tx_bytes.add(plain_bytes as u64);
                }
                if count == 1 && self.gso && total <= self.gso_seg_limit {
                    // Held to the end of the batch; the slot stays ours.
                    if self.queued.len() == MAX_GATHER {
                        self.flush_queued();
                    }
                    self.tx[s].pending += 1;
                    self.queued.push(Queued {
                        slot: s as u16,
                        offset: rel as u32,
                        len: total as u32,
                        dst,
                        peer: p,
                    });
                    return;
                }
                // Packets held earlier in this batch go first: one flow's
                // packets must leave in the order they were read.
                self.flush_queued();
                send_to(self, dst, p);
            }
            Route::Flood => {
                self.flush_queued();
                for i in 0..mode.flood_targets(view).len() {
                    let t = mode.flood_targets(view)[i];
                    send_to(self, t, i as u16);
                }
            }
            Route::Drop(_) => {}
        }
    }

    /// Starts one `sendmsg` of `slot[offset..offset + len]` to `dst`.
    fn send(&mut self, s: usize, offset: u32, len: u32, segment: u16, dst: SocketAddr, peer: u16) {
        self.tx[s].pending += 1;
        self.start_send(s, offset, len, segment, dst, peer);
    }

    /// Releases one pending send of slot `s` (freeing the slot after its last).
    fn release(&mut self, s: usize) {
        let slot = &mut self.tx[s];
        slot.pending = slot.pending.saturating_sub(1);
        if slot.pending == 0 {
            self.free_slot(s);
        }
    }

    /// Starts a send whose pending count the slot already holds.
    fn start_send(
        &mut self,
        s: usize,
        offset: u32,
        len: u32,
        segment: u16,
        dst: SocketAddr,
        peer: u16,
    ) {
        let slot = &mut self.tx[s];
        if usize::from(slot.next_op) >= OPS_PER_SLOT {
            self.counters.drop_packet(DropReason::QueueFull);
            self.release(s);
            return;
        }
        let dst = cmsg::canonical(dst);
        let use_v6 = dst.is_ipv6();
        if use_v6 && !self.has_v6 {
            self.counters.udp_tx_errors.inc();
            self.release(s);
            return;
        }
        let op_idx = usize::from(slot.next_op);
        slot.next_op += 1;
        let src = self
            .local_addrs
            .get(usize::from(peer))
            .filter(|a| a.is_ipv6() == use_v6);
        let base = self.tx_region.at(s);
        // SAFETY: in-bounds pointer into the slab.
        let data = unsafe { self.slab.base().add(base + offset as usize) };
        let op = &mut self.ops[s * OPS_PER_SLOT + op_idx];
        let (name, namelen) = RawAddr::from_socket_addr(dst);
        op.name = name;
        op.iov = libc::iovec {
            iov_base: data.cast(),
            iov_len: len as usize,
        };
        let seg = (segment != 0).then_some(segment);
        let clen = cmsg::build_send(&mut op.control.0, src, seg);
        op.hdr.msg_name = (&mut op.name as *mut RawAddr).cast();
        op.hdr.msg_namelen = namelen;
        op.hdr.msg_iov = &mut op.iov;
        op.hdr.msg_iovlen = 1;
        op.hdr.msg_control = if clen > 0 {
            op.control.0.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        op.hdr.msg_controllen = clen;
        op.hdr.msg_flags = 0;
        op.offset = offset;
        op.len = len;
        op.segment = segment;
        op.peer = peer;
        op.dst = Some(dst);
        op.src = src;
        let fd = if use_v6 { FD_V6 } else { FD_V4 };
        let sqe = opcode::SendMsg::new(fd, &op.hdr).build().user_data(ud(
            K_SEND,
            s as u64,
            op_idx as u64,
        ));
        self.counters.udp_tx_sends.inc();
        self.push(sqe);
    }

    fn on_send(&mut self, s: usize, op_idx: usize, res: i32) {
        let (segment, len, offset, dst, peer, had_src) = {
            let op = &self.ops[s * OPS_PER_SLOT + op_idx];
            (
                op.segment,
                op.len,
                op.offset,
                op.dst,
                op.peer,
                op.src.is_some(),
            )
        };
        if res >= 0 {
            let datagrams = if segment == 0 {
                1
            } else {
                u64::from(len.div_ceil(u32::from(segment)))
            };
            self.counters.udp_tx_datagrams.add(datagrams);
            self.counters.udp_tx_bytes.add(res as u64);
        } else if had_src && source_refused(res) {
            // The local address went away (an error that says nothing
            // about the segment size): forget it and resend the run as it
            // was, letting the kernel choose the source.
            self.local_addrs.set(usize::from(peer), None);
            self.counters.src_addr_resets.inc();
            if let Some(dst) = dst {
                self.send(s, offset, len, segment, dst, peer);
            }
        } else if segment != 0
            && (res == -libc::EIO || res == -libc::EINVAL || res == -libc::EMSGSIZE)
        {
            // EIO: the egress cannot segment at all; send one datagram at a
            // time from now on. EINVAL/EMSGSIZE: this segment size does not
            // fit the route's MTU; larger ones go singly (fragmented by the
            // kernel). Either way, resend this run without losing it.
            self.gso_refused(res, usize::from(segment));
            if let Some(dst) = dst {
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(u32::from(segment));
                    self.send(s, offset + at, n, 0, dst, peer);
                    at += n;
                }
            }
        } else {
            self.counters.udp_tx_errors.inc();
            tracing::debug!(worker = self.id, error = %io::Error::from_raw_os_error(-res), ?dst, "send failed");
        }
        self.release(s);
    }

    /// The kernel refused a GSO send of `segment`-byte datagrams.
    fn gso_refused(&mut self, res: i32, segment: usize) {
        self.counters.gso_fallbacks.inc();
        self.gso_refused_at = Some(Instant::now());
        if res == -libc::EIO {
            // Warned once: after each re-probe the egress refuses again.
            if self.gso && !self.gso_eio_warned {
                self.gso_eio_warned = true;
                tracing::warn!(
                    worker = self.id,
                    "UDP GSO refused by the kernel; sending one datagram per send"
                );
            }
            self.gso = false;
        } else if segment <= self.gso_seg_limit {
            tracing::info!(
                worker = self.id,
                segment,
                "datagrams of this size do not fit a GSO send on this route; sending them singly"
            );
            self.gso_seg_limit = segment.saturating_sub(1);
        }
    }

    /// Sends the packets held during the batch: runs of one size to one
    /// peer (the last may be shorter) as gathered `UDP_SEGMENT` sends.
    fn flush_queued(&mut self) {
        let n = self.queued.len();
        let mut i = 0;
        while i < n {
            let first = self.queued[i];
            let mut j = i + 1;
            let mut bytes = first.len as usize;
            while j < n && j - i < MAX_GATHER {
                let q = self.queued[j];
                if q.dst != first.dst
                    || q.peer != first.peer
                    || q.len > first.len
                    || bytes + q.len as usize > GSO_MAX_BYTES
                {
                    break;
                }
                bytes += q.len as usize;
                j += 1;
                if q.len < first.len {
                    break;
                }
            }
            if j - i > 1
                && self.gso
                && first.len as usize <= self.gso_seg_limit
                && !self.free_gather.is_empty()
            {
                self.start_gather(i, j);
            } else {
                for k in i..j {
                    let q = self.queued[k];
                    self.start_send(usize::from(q.slot), q.offset, q.len, 0, q.dst, q.peer);
                }
            }
            i = j;
        }
        self.queued.clear();
    }

    fn start_gather(&mut self, from: usize, to: usize) {
        let Some(g) = self.free_gather.pop() else {
            return;
        };
        let first = self.queued[from];
        let dst = cmsg::canonical(first.dst);
        let use_v6 = dst.is_ipv6();
        if use_v6 && !self.has_v6 {
            self.free_gather.push(g);
            for k in from..to {
                self.counters.udp_tx_errors.inc();
                self.release(usize::from(self.queued[k].slot));
            }
            return;
        }
        let src = self
            .local_addrs
            .get(usize::from(first.peer))
            .filter(|a| a.is_ipv6() == use_v6);
        let base = self.slab.base();
        let op = &mut self.gather[usize::from(g)];
        op.n = to - from;
        op.segment = first.len as u16;
        for (k, q) in self.queued[from..to].iter().enumerate() {
            op.items[k] = *q;
            op.iov[k] = libc::iovec {
                // SAFETY: in-bounds pointer into the slab (a held slot).
                iov_base: unsafe {
                    base.add(self.tx_region.at(usize::from(q.slot)) + q.offset as usize)
                }
                .cast(),
                iov_len: q.len as usize,
            };
        }
        let (name, namelen) = RawAddr::from_socket_addr(dst);
        op.name = name;
        op.had_src = src.is_some();
        let clen = cmsg::build_send(&mut op.control.0, src, Some(op.segment));
        op.hdr.msg_name = (&mut op.name as *mut RawAddr).cast();
        op.hdr.msg_namelen = namelen;
        op.hdr.msg_iov = op.iov.as_mut_ptr();
        op.hdr.msg_iovlen = op.n;
        op.hdr.msg_control = op.control.0.as_mut_ptr().cast();
        op.hdr.msg_controllen = clen;
        self.submit_gather(usize::from(g), use_v6);
    }

    /// Queues gather op `g`, whose message header is filled in.
    fn submit_gather(&mut self, g: usize, use_v6: bool) {
        let op = &mut self.gather[g];
        op.hdr.msg_flags = 0;
        let fd = if use_v6 { FD_V6 } else { FD_V4 };
        let sqe = opcode::SendMsg::new(fd, &op.hdr)
            .build()
            .user_data(ud(K_GATHER, g as u64, 0));
        self.counters.udp_tx_sends.inc();
        self.push(sqe);
    }

    fn on_gather(&mut self, g: usize, res: i32) {
        let (n, items, had_src) = {
            let op = &self.gather[g];
            (op.n, op.items, op.had_src)
        };
        if res < 0 && had_src && source_refused(res) {
            // As in `on_send`: the source may have gone away, or EINVAL
            // may be about the segment size. Send the same gather once
            // more without a source; a second refusal is about the size.
            self.local_addrs.set(usize::from(items[0].peer), None);
            self.counters.src_addr_resets.inc();
            let op = &mut self.gather[g];
            op.had_src = false;
            let clen = cmsg::build_send(&mut op.control.0, None, Some(op.segment));
            op.hdr.msg_controllen = clen;
            self.submit_gather(g, cmsg::canonical(items[0].dst).is_ipv6());
            return;
        }
        self.free_gather.push(g as u16);
        if res >= 0 {
            self.counters.udp_tx_datagrams.add(n as u64);
            self.counters.udp_tx_bytes.add(res as u64);
        } else if res == -libc::EIO || res == -libc::EINVAL || res == -libc::EMSGSIZE {
            // As in `on_send`: send each datagram alone, keeping every
            // slot's pending count for those sends.
            self.gso_refused(res, items[0].len as usize);
            for q in &items[..n] {
                self.start_send(usize::from(q.slot), q.offset, q.len, 0, q.dst, q.peer);
            }
            return;
        } else {
            self.counters.udp_tx_errors.add(n as u64);
        }
        for q in &items[..n] {
            self.release(usize::from(q.slot));
        }
    }

    fn recycle_rx(&mut self, bid: usize) {
        // SAFETY: in-bounds pointer into the slab.
        let addr = unsafe { self.slab.base().add(self.rx_region.at(bid)) };
        self.rx_ring.push(bid as u16, addr, RX_BUFFER_SIZE as u32);
        self.rx_ring.publish();
        self.rx_held = self.rx_held.saturating_sub(1);
        self.rx_starved = false;
    }

    fn on_recv(
        &mut self,
        mode: &M,
        view: &M::Batch<'_>,
        now: Instant,
        sock: usize,
        res: i32,
        flags: u32,
    ) {
        if !cqueue::more(flags) {
            self.recv_armed[sock] = false;
        }
        if res < 0 {
            if res == -libc::ENOBUFS {
                self.counters.rx_buffer_exhausted.inc();
                // Starved only if every buffer is with us: then the next
                // recycle re-arms. If some went back to the ring while this
                // completion waited in the queue, re-arm at once.
                self.rx_starved = self.rx_held >= usize::from(RX_BUFFERS);
            } else if res != -libc::ECANCELED {
                tracing::warn!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "receive failed");
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let bid = usize::from(bid);
        self.rx_held += 1;
        self.counters.udp_rx_receives.inc();
        let base = self.rx_region.at(bid);
        let total = (res as usize).min(RX_BUFFER_SIZE);
        let (src, info, payload_off, payload_len, truncated) = {
            // SAFETY: the kernel finished writing this buffer (its CQE is
            // here) and it is not in the ring until we recycle it.
            let buf = unsafe { self.slab.slice_mut(base, total) };
            match io_uring::types::RecvMsgOut::parse(buf, &self.recv_msg[sock]) {
                Ok(out) => {
                    let off = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
                    (
                        RawAddr::parse(out.name_data()),
                        cmsg::parse_recv(out.control_data()),
                        off,
                        out.payload_data().len(),
                        out.is_payload_truncated(),
                    )
                }
                Err(()) => (None, cmsg::RecvInfo::default(), 0, 0, true),
            }
        };
        if let Some(dropped) = info.rxq_dropped {
            // Each socket keeps its own running total: add what is new.
            let seen = &mut self.rxq_dropped_seen[sock];
            let new = dropped.wrapping_sub(*seen);
            *seen = dropped;
            self.counters.drops[DropReason::RcvbufOverflow.index()].add(u64::from(new));
        }
        let Some(src) = src.map(cmsg::canonical) else {
            self.counters.drop_packet(DropReason::Malformed);
            self.recycle_rx(bid);
            return;
        };
        if truncated || payload_len == 0 {
            self.counters.drop_packet(DropReason::Malformed);
            self.recycle_rx(bid);
            return;
        }
        let stride = info
            .gro_segment
            .map(usize::from)
            .unwrap_or(payload_len)
            .max(1);
        if payload_len > stride {
            self.counters.udp_rx_gro_receives.inc();
            self.counters
                .udp_rx_gro_datagrams
                .add(payload_len.div_ceil(stride) as u64);
        }
        let mut at = 0;
        self.pending_len = 0;
        self.nth_write = 0;
        while at < payload_len {
            let dlen = stride.min(payload_len - at);
            let off = base + payload_off + at;
            self.counters.udp_rx_datagrams.inc();
            self.counters.udp_rx_bytes.add(dlen as u64);
            // SAFETY: this datagram's bytes are ours (see above) and no
            // other live slice overlaps them.
            let dgram = unsafe { self.slab.slice_mut(off, dlen) };
            match mode.open(view, now, src, dgram) {
                Inbound::Deliver {
                    start,
                    end,
                    peer,
                    event,
                } => {
                    if let Some(c) = self.counters.peers.get(usize::from(peer)) {
                        c.rx_packets.inc();
                        c.rx_bytes.add((end - start) as u64);
                    }
                    self.local_addrs.set(usize::from(peer), info.local);
                    if let Some(ev) = event {
                        self.forward_event(ev, now);
                    }
                    if self.pending_len == MAX_GRO_SEGMENTS {
                        self.flush_deliveries(bid);
                    }
                    self.pending[self.pending_len] = ((off + start) as u32, (end - start) as u32);
                    self.pending_len += 1;
                }
                Inbound::Keepalive { peer, event } => {
                    self.local_addrs.set(usize::from(peer), info.local);
                    if let Some(ev) = event {
                        self.forward_event(ev, now);
                    }
                }
                Inbound::Control => {
                    let mut bytes = [0u8; MAX_HANDSHAKE_LEN];
                    let n = dgram.len().min(MAX_HANDSHAKE_LEN);
                    bytes[..n].copy_from_slice(&dgram[..n]);
                    let msg = ToControl::Handshake {
                        src,
                        local: info.local,
                        len: n as u8,
                        bytes,
                    };
                    self.counters.handshakes_to_control.inc();
                    if !self.control.send(msg) {
                        self.counters.drop_packet(DropReason::QueueFull);
                    }
                }
                Inbound::Drop(r) => self.counters.drop_packet(r),
            }
            at += dlen;
        }
        self.flush_deliveries(bid);
        if self.rx_refs[bid] == 0 {
            self.recycle_rx(bid);
        }
    }

    /// Writes the opened packets of one receive to the device: runs of one
    /// TCP flow coalesced into super-packets (one copy into a write slot,
    /// the only copy on this path), the rest in place.
    fn flush_deliveries(&mut self, bid: usize) {
        let n = self.pending_len;
        self.pending_len = 0;
        if n == 0 {
            return;
        }
        let coalesce = self.coalescer.is_some() && n >= 2 && !self.free_wslots.is_empty();
        if !coalesce {
            tracing::trace!(packets = n, free = self.free_wslots.len(), "not coalescing");
            for k in 0..n {
                let (off, len) = self.pending[k];
                self.write_to_device(bid, off as usize, len as usize);
            }
            return;
        }
        // Borrow the packets (in the receive buffer) and the free write
        // slots (elsewhere in the slab) at once: disjoint ranges.
        let mut pkts: [&[u8]; MAX_GRO_SEGMENTS] = [&[]; MAX_GRO_SEGMENTS];
        for (k, p) in pkts.iter_mut().enumerate().take(n) {
            let (off, len) = self.pending[k];
            // SAFETY: opened packets in a receive buffer we hold; read only
            // while the coalescer copies from them.
            *p = unsafe { self.slab.slice_mut(off as usize, len as usize) };
        }
        let nbuf = self.free_wslots.len().min(MAX_WSLOTS_PER_BATCH);
        let mut ids = [0u16; MAX_WSLOTS_PER_BATCH];
        let mut bufs: [&mut [u8]; MAX_WSLOTS_PER_BATCH] = Default::default();
        for j in 0..nbuf {
            let id = self.free_wslots[self.free_wslots.len() - 1 - j];
            ids[j] = id;
            // SAFETY: a free write slot: no write in flight from it.
            bufs[j] = unsafe {
                self.slab
                    .slice_mut(self.w_region.at(usize::from(id)), WSLOT_SIZE)
            };
        }
        let Some(coalescer) = self.coalescer.as_mut() else {
            return;
        };
        let writes: [Write; MAX_GRO_SEGMENTS];
        let count;
        match coalescer.coalesce(&pkts[..n], &mut bufs[..nbuf]) {
            Ok(w) => {
                count = w.len();
                let mut arr = [Write::Alone { packet: 0 }; MAX_GRO_SEGMENTS];
                arr[..count].copy_from_slice(w);
                writes = arr;
            }
            Err(_) => {
                for k in 0..n {
                    let (off, len) = self.pending[k];
                    self.write_to_device(bid, off as usize, len as usize);
                }
                return;
            }
        }
        tracing::trace!(packets = n, writes = count, buffers = nbuf, "coalesced");
        let mut used = 0;
        for w in &writes[..count] {
            match *w {
                Write::Alone { packet } => {
                    let (off, len) = self.pending[packet];
                    self.write_to_device(bid, off as usize, len as usize);
                }
                Write::Super {
                    buffer,
                    len,
                    segments,
                } => {
                    let id = ids[buffer];
                    used = used.max(buffer + 1);
                    self.write_slot(id, len, segments);
                }
            }
        }
        // The coalescer uses buffers in order: the first `used` are taken.
        let keep = self.free_wslots.len() - used;
        self.free_wslots.truncate(keep);
    }

    /// Writes a coalesced super-packet from write slot `id`.
    fn write_slot(&mut self, id: u16, len: usize, segments: usize) {
        // SAFETY: in-bounds pointer into the registered slab.
        let ptr = unsafe { self.slab.base().add(self.w_region.at(usize::from(id))) };
        self.wslot_segments[usize::from(id)] = segments as u16;
        let sqe = opcode::WriteFixed::new(FD_TUN, ptr, len as u32, 0)
            .build()
            .user_data(ud(K_WRITE, 0, (WRITE_FROM_SLOT | usize::from(id)) as u64));
        self.push(sqe);
    }

    /// Writes the packet at slab offset `off` to the device without
    /// copying it: in place with a zeroed virtio-net header written in
    /// front when the encapsulation header left room, else as a vectored
    /// write with a shared zero header.
    fn write_to_device(&mut self, bid: usize, off: usize, len: usize) {
        let nth = self.nth_write;
        if nth >= MAX_GRO_SEGMENTS {
            self.counters.drop_packet(DropReason::QueueFull);
            return;
        }
        self.nth_write += 1;
        self.rx_refs[bid] += 1;
        let user = ud(K_WRITE, 0, bid as u64);
        let sqe = if self.vnet == 0 {
            // SAFETY: in-bounds pointer into the registered slab.
            let ptr = unsafe { self.slab.base().add(off) };
            opcode::WriteFixed::new(FD_TUN, ptr, len as u32, 0).build()
        } else if M::HEADROOM >= VNET_HDR_LEN {
            // SAFETY: the 10 bytes before the packet are this datagram's
            // own (already consumed) encapsulation header.
            let hdr = unsafe { self.slab.slice_mut(off - VNET_HDR_LEN, VNET_HDR_LEN) };
            hdr.fill(0);
            // SAFETY: in-bounds pointer into the registered slab.
            let ptr = unsafe { self.slab.base().add(off - VNET_HDR_LEN) };
            opcode::WriteFixed::new(FD_TUN, ptr, (len + VNET_HDR_LEN) as u32, 0).build()
        } else {
            let wv = &mut self.rx_writes[bid * MAX_GRO_SEGMENTS + nth];
            wv.iov[0] = libc::iovec {
                iov_base: ZERO_VNET_HDR.as_ptr() as *mut libc::c_void,
                iov_len: VNET_HDR_LEN,
            };
            wv.iov[1] = libc::iovec {
                // SAFETY: in-bounds pointer into the slab.
                iov_base: unsafe { self.slab.base().add(off) }.cast(),
                iov_len: len,
            };
            opcode::Writev::new(FD_TUN, wv.iov.as_ptr(), 2).build()
        };
        self.push(sqe.user_data(user));
    }

    fn on_write(&mut self, b: usize, res: i32) {
        if res < 0 {
            self.counters.dev_write_errors.inc();
            tracing::debug!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "device write failed");
        } else {
            self.counters.dev_writes.inc();
        }
        if b & WRITE_FROM_SLOT != 0 {
            let id = b & !WRITE_FROM_SLOT;
            if res >= 0 {
                let segs = self.wslot_segments.get(id).copied().unwrap_or(1);
                self.counters.dev_write_packets.add(u64::from(segs));
                self.counters.dev_write_coalesced.inc();
                self.counters
                    .dev_write_coalesced_segments
                    .add(u64::from(segs));
            }
            self.free_wslots.push(id as u16);
            return;
        }
        if res >= 0 {
            self.counters.dev_write_packets.inc();
        }
        let bid = b;
        if let Some(r) = self.rx_refs.get_mut(bid) {
            *r = r.saturating_sub(1);
            if *r == 0 {
                self.recycle_rx(bid);
            }
        }
    }

    /// Cancels everything in flight and waits for it, so no operation can
    /// touch the slab after it is unmapped.
    fn drain(&mut self) {
        // Hand the kernel what is still queued first (re-arms of the last
        // batch), so the cancel reaches those too.
        let _ = self.ring.submit();
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(None, types::CancelBuilder::any());
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        // Bounded waits: a request that ignores the cancel must not hang
        // the daemon's exit (the deadline gives up on it instead).
        let ts = types::Timespec::new().nsec(50_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        while self.inflight > 0 && Instant::now() < deadline {
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let mut cq = self.ring.completion();
            cq.sync();
            for cqe in &mut cq {
                let (kind, a, _) = ud_parts(cqe.user_data());
                let multishot = kind == K_RECV || (kind == K_READ && a == MULTISHOT_READ);
                if !multishot || !cqueue::more(cqe.flags()) {
                    self.inflight = self.inflight.saturating_sub(1);
                }
            }
        }
        // The ring's own teardown is asynchronous (a kernel worker releases
        // its registered files a few milliseconds after the ring fd closes),
        // which would keep the device and the port alive past our exit and
        // make an immediate restart fail. Unregistering here drops those
        // references now, on this thread.
        let submitter = self.ring.submitter();
        let _ = submitter.unregister_files();
        let _ = submitter.unregister_buffers();
    }
}

fn dup(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd; the result is checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}
