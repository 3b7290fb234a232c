//! One worker: a thread pinned to a core that owns one device queue, its
//! UDP sockets, one io_uring and one slab of registered memory, and moves
//! packets both ways in batches.
//!
//! ```text
//!  queue ──ReadMulti──▶ device_read (route, split, seal) ─▶ sched ──SendMsg (UDP_SEGMENT)──▶ wire
//!  wire ──RecvMsgMulti (UDP_GRO)──▶ socket_recv (open) ─▶ device_write (coalesce) ──WriteFixed──▶ queue
//! ```
//!
//! The loop: submit what the last batch produced and wait for at least
//! one completion (one `io_uring_enter`), reap every completion the ring
//! holds and dispatch each on its [`Op`], then flush the sends held for
//! the end of the batch, give freed buffers back to the kernel and re-arm.
//! A batch ends when the ring is empty, never on a timer, so a lone ping
//! is not held back and an idle tunnel sleeps in the kernel. On stop,
//! everything in flight is cancelled and reaped before the memory goes.
//!
//! The parts that need neither root nor a ring live in their own modules
//! with their own tests: [`op`] (what a completion is about), [`slots`]
//! (who holds each buffer), [`transmit`] (a send as a `msghdr`), [`sched`]
//! (how datagrams leave), `device_read`, `socket_recv`, `device_write`.
//! What is left here is the ring: submissions, completions, and the
//! memory the kernel reads and writes.

pub mod device_read;
pub mod device_write;
pub mod op;
pub mod sched;
pub mod slots;
pub mod socket_recv;
pub mod transmit;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tunnel_proto::DropReason;

use crate::bufring::BufRing;
use crate::cmsg::{RECV_CONTROL_LEN, RawAddr};
use crate::counters::WorkerCounters;
use crate::handoff::{ControlLink, EventFd};
use crate::mode::Mode;
use crate::offload::{CoalesceConfig, Coalescer, Framing, VNET_HDR_LEN};
use crate::slab::{Layout, Region, Slab};
use crate::tun::{DeviceKind, Offloads};
use crate::udp::WorkerSockets;

pub use device_read::{MAX_READ, PACKET_OFFSET, SlotLayout};
pub use device_write::{WRITE_SLOT_LEN, WRITE_SLOTS};
pub use sched::{GSO_MAX_BYTES, GSO_REPROBE_AFTER, MAX_SEGMENTS};
pub use socket_recv::MAX_GRO_SEGMENTS;

use device_write::Planned;
use op::{Family, Op};
use sched::{Piece, Recovery, Scheduler, Sink};
use slots::{Hold, Home, Pool, Rx, Tx, Wr};
use socket_recv::Deliveries;
use transmit::{SendMsg, Transmit};

/// Fixed reads kept in flight on the device queue. Every POLLIN wakes all
/// pending reads and one wins, so more than a few only burn CPU.
pub const READS_IN_FLIGHT: usize = 3;
/// Transmit slots: each holds one read and what is sent from it.
pub const TX_SLOTS: usize = 16;
/// Provided receive buffers (a power of two).
pub const RX_BUFFERS: u16 = 64;
/// Single sends in flight at once (a GSO fallback or a VXLAN flood makes
/// many from one slot).
pub const SEND_OPS: usize = 2048;
/// Gathered sends in flight at once.
pub const GATHER_OPS: usize = 16;
/// Device writes in flight at once: every packet of every receive buffer
/// written alone, plus every write slot.
const WRITE_OPS: usize = RX_BUFFERS as usize * MAX_GRO_SEGMENTS + WRITE_SLOTS;
/// Failed device reads in a row after which a worker gives up.
const MAX_READ_ERRORS: u32 = 16;
/// Bytes of receive metadata before the payload in a provided buffer.
const RX_META: usize = 16 + std::mem::size_of::<RawAddr>() + RECV_CONTROL_LEN;
/// A provided receive buffer: metadata plus the largest UDP payload.
pub const RX_BUFFER_SIZE: usize = RX_META + 65_535 + 64;
/// How long a stopping worker waits for the kernel to give back what it holds.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

// Fixed-file slots.
const FD_TUN: types::Fixed = types::Fixed(0);
const FD_V4: types::Fixed = types::Fixed(1);
const FD_V6: types::Fixed = types::Fixed(2);
const FD_WAKE: types::Fixed = types::Fixed(3);

/// Buffer groups of the provided-buffer rings.
const BGID_RECV: u16 = 0;
const BGID_READ: u16 = 1;

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
    /// Worker number, for logs, and its traffic lane in every peer's counters.
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
    /// Link to the control thread.
    pub control: ControlLink<M::Event, M::Peer>,
    /// Set to stop; then `wake` is notified.
    pub stop: Arc<AtomicBool>,
    /// Notified to make the worker look at `stop`.
    pub wake: Arc<EventFd>,
    /// Told once the worker's ring and memory are set up, or why not.
    pub started: std::sync::mpsc::Sender<Result<(), String>>,
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

/// A fixed table of operation storage that must not move while the
/// kernel reads it (one entry per operation in flight).
struct Table<T> {
    entries: Box<[T]>,
    free: Vec<u16>,
}

impl<T: Default> Table<T> {
    fn new(n: usize) -> Table<T> {
        Table {
            entries: (0..n).map(|_| T::default()).collect(),
            free: (0..n as u16).rev().collect(),
        }
    }

    fn take(&mut self) -> Option<u16> {
        self.free.pop()
    }

    fn put(&mut self, n: u16) {
        self.free.push(n);
    }

    fn is_full(&self) -> bool {
        self.free.is_empty()
    }
}

/// One single send: its `msghdr` and the piece it sends.
struct SendOp<P> {
    msg: SendMsg<1>,
    t: Option<Transmit<P>>,
    piece: Option<Piece>,
}

impl<P> Default for SendOp<P> {
    fn default() -> Self {
        SendOp {
            msg: SendMsg::default(),
            t: None,
            piece: None,
        }
    }
}

/// One gathered send: its `msghdr` over up to [`MAX_SEGMENTS`] pieces.
struct GatherOp<P> {
    msg: SendMsg<MAX_SEGMENTS>,
    t: Option<Transmit<P>>,
    pieces: Vec<Piece>,
}

impl<P> Default for GatherOp<P> {
    fn default() -> Self {
        GatherOp {
            msg: SendMsg::default(),
            t: None,
            pieces: Vec::with_capacity(MAX_SEGMENTS),
        }
    }
}

/// What a device write writes from.
enum WriteFrom {
    /// An opened packet where it was received.
    Received(Hold<Rx>),
    /// A coalesced super-packet of this many segments.
    Slot(Hold<Wr>, usize),
}

/// One device write: its source, and the iovecs of a vectored write (a
/// shared zero virtio-net header, then the packet).
#[derive(Default)]
struct WriteOp {
    from: Option<WriteFrom>,
    iov: [libc::iovec; 2],
}

static ZERO_VNET_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// What the kernel reads and writes for a worker: the ring, the slab and
/// who holds each of its buffers, and the storage of every operation in
/// flight. The scheduler's sends land here ([`Sink`]).
struct Io<P> {
    // Field order matters: the ring must be dropped (unregistering the
    // slab) before the memory it points at.
    ring: IoUring,
    slab: Slab,
    tx_region: Region,
    rx_region: Region,
    wr_region: Region,
    tx: Pool<Tx>,
    rx: Pool<Rx>,
    wr: Pool<Wr>,
    sends: Table<SendOp<P>>,
    gathers: Table<GatherOp<P>>,
    writes: Table<WriteOp>,
    has_v6: bool,
    counters: Arc<CachePadded<WorkerCounters>>,
    /// Completions still owed by the kernel (for a clean drain at stop).
    inflight: usize,
    id: usize,
}

impl<P: Copy> Io<P> {
    /// Queues one submission; flushes the queue to the kernel first if full.
    fn push(&mut self, sqe: squeue::Entry, op: Op) {
        let sqe = sqe.user_data(op.encode());
        self.inflight += 1;
        loop {
            // SAFETY: every pointer an entry carries points into memory the
            // worker owns and keeps in place until the completion arrives
            // (the slab, the operation tables, the receive headers, the
            // wake-up buffer).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            // Rare: more follow-ups than the SQ holds in one batch.
            if let Err(e) = self.ring.submit() {
                tracing::warn!(worker = self.id, error = %e, "io_uring submit failed");
            }
        }
    }

    fn socket(&self, f: Family) -> Option<types::Fixed> {
        match f {
            Family::V4 => Some(FD_V4),
            Family::V6 => self.has_v6.then_some(FD_V6),
        }
    }

    fn tx_ptr(&self, p: &Piece) -> (*const u8, usize) {
        let off = self.tx_region.at(p.hold.index()) + p.offset as usize;
        // SAFETY: in bounds of the slab: the piece lies in its slot.
        (unsafe { self.slab.base().add(off) }, p.len as usize)
    }

    /// Submits send-table entry `n`, whose header is filled.
    fn submit_send(&mut self, n: u16, hdr: *const libc::msghdr, f: Family) {
        let Some(fd) = self.socket(f) else { return };
        self.counters.udp_tx_sends.inc();
        self.push(opcode::SendMsg::new(fd, hdr).build(), Op::Send(n));
    }

    /// Submits gather-table entry `n`, whose header is filled.
    fn submit_gather(&mut self, n: u16, hdr: *const libc::msghdr, f: Family) {
        let Some(fd) = self.socket(f) else { return };
        self.counters.udp_tx_sends.inc();
        self.push(opcode::SendMsg::new(fd, hdr).build(), Op::Gather(n));
    }

    /// Writes the packet at slab offset `at` (`len` bytes) of the receive
    /// buffer `rx` holds to the device, without copying it: in place with
    /// a zeroed virtio-net header in front when the outer header left the
    /// room, else as a vectored write behind a shared zero header.
    fn write_received(&mut self, rx: Hold<Rx>, at: usize, len: usize, vnet: usize, room: usize) {
        let Some(n) = self.writes.take() else {
            self.counters.drop_packet(DropReason::QueueFull);
            let _ = self.rx.release(rx);
            return;
        };
        let sqe = if vnet == 0 {
            // SAFETY: in bounds of the slab (a packet of a held buffer).
            let ptr = unsafe { self.slab.base().add(at) };
            opcode::WriteFixed::new(FD_TUN, ptr, len as u32, 0).build()
        } else if room >= VNET_HDR_LEN {
            // SAFETY: the 10 bytes before the packet are its own, already
            // consumed outer header, in the held buffer.
            unsafe { self.slab.slice_mut(at - VNET_HDR_LEN, VNET_HDR_LEN) }.fill(0);
            // SAFETY: as above.
            let ptr = unsafe { self.slab.base().add(at - VNET_HDR_LEN) };
            opcode::WriteFixed::new(FD_TUN, ptr, (len + VNET_HDR_LEN) as u32, 0).build()
        } else {
            let e = &mut self.writes.entries[usize::from(n)];
            e.iov = [
                libc::iovec {
                    iov_base: ZERO_VNET_HDR.as_ptr() as *mut libc::c_void,
                    iov_len: VNET_HDR_LEN,
                },
                libc::iovec {
                    // SAFETY: in bounds of the slab.
                    iov_base: unsafe { self.slab.base().add(at) }.cast(),
                    iov_len: len,
                },
            ];
            opcode::Writev::new(FD_TUN, e.iov.as_ptr(), 2).build()
        };
        self.writes.entries[usize::from(n)].from = Some(WriteFrom::Received(rx));
        self.push(sqe, Op::Write(n));
    }

    /// Writes a coalesced super-packet from the write slot `slot` holds.
    fn write_slot(&mut self, slot: Hold<Wr>, len: usize, segments: usize) {
        let Some(n) = self.writes.take() else {
            self.counters.drop_packet(DropReason::QueueFull);
            let _ = self.wr.release(slot);
            return;
        };
        // SAFETY: in bounds of the slab (the held write slot).
        let ptr = unsafe { self.slab.base().add(self.wr_region.at(slot.index())) };
        self.writes.entries[usize::from(n)].from = Some(WriteFrom::Slot(slot, segments));
        self.push(
            opcode::WriteFixed::new(FD_TUN, ptr, len as u32, 0).build(),
            Op::Write(n),
        );
    }
}

impl<P: Copy> Sink<P> for Io<P> {
    fn share(&mut self, hold: &Hold<Tx>) -> Hold<Tx> {
        self.tx.share(hold)
    }

    fn release(&mut self, hold: Hold<Tx>) {
        let _ = self.tx.release(hold);
    }

    fn send(&mut self, t: Transmit<P>, piece: Piece) {
        let f = t.family();
        let n = match self.sends.take() {
            Some(n) if self.socket(f).is_some() => n,
            Some(n) => {
                // No IPv6 socket for an IPv6 destination.
                self.sends.put(n);
                self.counters.udp_tx_errors.inc();
                return self.release(piece.hold);
            }
            None => {
                self.counters.drop_packet(DropReason::QueueFull);
                return self.release(piece.hold);
            }
        };
        let buf = self.tx_ptr(&piece);
        let e = &mut self.sends.entries[usize::from(n)];
        let hdr = e.msg.fill(&t, [buf]);
        e.t = Some(t);
        e.piece = Some(piece);
        self.submit_send(n, hdr, f);
    }

    fn can_gather(&self) -> bool {
        !self.gathers.is_full()
    }

    fn gather(&mut self, t: Transmit<P>, pieces: impl Iterator<Item = Piece>) {
        let f = t.family();
        if self.socket(f).is_none() {
            // No IPv6 socket for an IPv6 destination.
            for p in pieces {
                self.counters.udp_tx_errors.inc();
                self.release(p.hold);
            }
            return;
        }
        let Some(n) = self.gathers.take() else {
            for p in pieces {
                self.send(Transmit { segment: None, ..t }, p);
            }
            return;
        };
        let (base, region) = (self.slab.base(), self.tx_region);
        let e = &mut self.gathers.entries[usize::from(n)];
        e.pieces.extend(pieces);
        let hdr = e.msg.fill(
            &t,
            e.pieces.iter().map(|p| {
                // SAFETY: in bounds of the slab: the piece lies in its slot.
                let ptr = unsafe { base.add(region.at(p.hold.index()) + p.offset as usize) };
                (ptr.cast_const(), p.len as usize)
            }),
        );
        e.t = Some(t);
        self.submit_gather(n, hdr, f);
    }
}

/// The multishot receive of each socket: its request header (only the
/// name and control lengths count) and whether it is armed.
struct Receiving {
    msgs: Box<[libc::msghdr; 2]>,
    armed: [bool; 2],
    /// Each socket's `SO_RXQ_OVFL` running total as last seen.
    rxq_seen: [u32; 2],
}

/// The device reads: how, whether the multishot read is armed, failures in a row.
struct Reading {
    mode: ReadMode,
    armed: bool,
    errors: u32,
}

/// The running worker.
struct Worker<M: Mode> {
    io: Io<M::Peer>,
    /// The provided-buffer rings (after `io`: the ring unregisters them first).
    recv_ring: BufRing,
    read_ring: Option<BufRing>,
    layout: SlotLayout,
    sched: Scheduler<M::Peer>,
    coalescer: Option<Coalescer>,
    deliveries: Deliveries,
    planned: Vec<Planned>,
    reading: Reading,
    receiving: Receiving,
    mode: Arc<M>,
    control: ControlLink<M::Event, M::Peer>,
    stop: Arc<AtomicBool>,
    /// The worker's wake-up eventfd (the ring reads a duplicate of it).
    _wake: Arc<EventFd>,
    wake_buf: Box<u64>,
    id: usize,
    /// Keeps the fds open while registered.
    _fds: Vec<OwnedFd>,
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

        let framing = match s.kind {
            DeviceKind::Tun => Framing::Ip,
            DeviceKind::Tap => Framing::Ethernet,
        };
        let layout = SlotLayout::new(s.vnet_hdr, s.mtu, framing);
        let mut mem = Layout::default();
        let tx_region = mem.region(layout.slot_len(), TX_SLOTS);
        let rx_region = mem.region(RX_BUFFER_SIZE, usize::from(RX_BUFFERS));
        let wr_region = mem.region(WRITE_SLOT_LEN, if s.vnet_hdr { WRITE_SLOTS } else { 0 });
        let slab = Slab::new(mem.total())?;
        // SAFETY: the slab outlives the registration (field order of Io).
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
                let r = BufRing::new(TX_SLOTS as u16, BGID_READ)?;
                r.register(&ring.submitter())?;
                Some(r)
            }
        };
        let recv_ring = BufRing::new(RX_BUFFERS, BGID_RECV)?;
        recv_ring.register(&ring.submitter())?;

        // SAFETY: msghdr is plain old data; zero is valid.
        let mut msgs: Box<[libc::msghdr; 2]> = Box::new(unsafe { std::mem::zeroed() });
        for m in msgs.iter_mut() {
            m.msg_namelen = std::mem::size_of::<RawAddr>() as libc::socklen_t;
            m.msg_controllen = RECV_CONTROL_LEN;
        }
        let coalescer = (s.vnet_hdr && s.offloads.tso()).then(|| {
            Coalescer::new(CoalesceConfig {
                framing,
                tcp: true,
                udp: s.offloads.uso(),
                verify_checksums: !M::AUTHENTICATED,
            })
        });
        let mut fds = vec![s.queue, s.sockets.v4, wake_dup];
        if let Some(v6) = s.sockets.v6 {
            fds.push(v6);
        }
        let tx_home = match read_mode {
            ReadMode::Fixed => Home::FreeList,
            ReadMode::Multishot => Home::Kernel,
        };
        let mut w = Worker {
            io: Io {
                ring,
                slab,
                tx_region,
                rx_region,
                wr_region,
                tx: Pool::new(TX_SLOTS, tx_home),
                rx: Pool::new(usize::from(RX_BUFFERS), Home::Kernel),
                wr: Pool::new(wr_region.count, Home::FreeList),
                sends: Table::new(SEND_OPS),
                gathers: Table::new(GATHER_OPS),
                writes: Table::new(WRITE_OPS),
                has_v6,
                counters: s.counters,
                inflight: 0,
                id: s.id,
            },
            recv_ring,
            read_ring,
            layout,
            sched: Scheduler::new(s.gso, s.id),
            coalescer,
            deliveries: Deliveries::default(),
            planned: Vec::with_capacity(MAX_GRO_SEGMENTS),
            reading: Reading {
                mode: read_mode,
                armed: false,
                errors: 0,
            },
            receiving: Receiving {
                msgs,
                armed: [false; 2],
                rxq_seen: [0; 2],
            },
            mode: s.mode,
            control: s.control,
            stop: s.stop,
            _wake: s.wake,
            wake_buf: Box::new(0),
            id: s.id,
            _fds: fds,
        };
        w.give_back();
        Ok(w)
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_wake();
        self.arm();
        tracing::debug!(worker = self.id, mode = M::NAME, "worker running");
        // Whatever ends the loop, requests in flight point into our memory:
        // cancel and reap them before it goes.
        let r = self.serve();
        self.drain();
        r
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            match self.io.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            if !self.batch() {
                return Ok(());
            }
            if self.reading.errors >= MAX_READ_ERRORS {
                return Err(io::Error::other(
                    "the device is gone or keeps failing reads (was the interface deleted?)",
                ));
            }
        }
    }

    /// Handles every completion the ring holds, then flushes, gives back
    /// and re-arms. Returns false to stop.
    fn batch(&mut self) -> bool {
        self.io.counters.batches.inc();
        let mode = self.mode.clone();
        let view = mode.begin();
        let now = Instant::now();
        let mut keep_going = true;
        loop {
            let cqe = {
                let mut cq = self.io.ring.completion();
                cq.sync();
                cq.next()
            };
            let Some(cqe) = cqe else { break };
            self.io.counters.completions.inc();
            let (res, flags) = (cqe.result(), cqe.flags());
            let Some(op) = Op::decode(cqe.user_data()) else {
                tracing::warn!(
                    worker = self.id,
                    user_data = cqe.user_data(),
                    "completion of an unknown operation"
                );
                continue;
            };
            if !op.is_multishot() || !cqueue::more(flags) {
                self.io.inflight = self.io.inflight.saturating_sub(1);
            }
            match op {
                Op::Wake => keep_going = self.on_wake(res),
                Op::ReadMulti => self.on_read_multi(&mode, &view, now, res, flags),
                Op::Read(slot) => {
                    if let Some(hold) = self.io.tx.from_kernel(usize::from(slot)) {
                        self.on_read(&mode, &view, now, hold, res);
                    }
                }
                Op::Recv(f) => self.on_recv(&mode, &view, now, f, res, flags),
                Op::Send(n) => self.on_send(&mode, &view, now, n, res),
                Op::Gather(n) => self.on_gather(&mode, &view, now, n, res),
                Op::Write(n) => self.on_write(n, res),
            }
        }
        self.sched.flush(&mut self.io);
        self.sched.tick(now);
        self.give_back();
        if keep_going {
            self.arm();
        }
        keep_going
    }

    // ----- arming -----

    fn arm_wake(&mut self) {
        let sqe = opcode::Read::new(FD_WAKE, (&mut *self.wake_buf as *mut u64).cast(), 8).build();
        self.io.push(sqe, Op::Wake);
    }

    /// Re-arms what ended: the device reads, and each socket's receive,
    /// each only while the kernel has buffers for it (else it would end at
    /// once with `ENOBUFS`, over and over).
    fn arm(&mut self) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        match self.reading.mode {
            ReadMode::Multishot => {
                if !self.reading.armed && self.io.tx.in_kernel() > 0 {
                    self.reading.armed = true;
                    let sqe = opcode::ReadMulti::new(FD_TUN, 0, BGID_READ).build();
                    self.io.push(sqe, Op::ReadMulti);
                }
            }
            ReadMode::Fixed => {
                while self.io.tx.in_kernel() < READS_IN_FLIGHT {
                    let Some(hold) = self.io.tx.take_free() else {
                        break;
                    };
                    let slot = self.io.tx.lend(hold);
                    let off = self.io.tx_region.at(slot) + self.layout.read_offset();
                    // SAFETY: in bounds of the slab: a lent slot's read area.
                    let ptr = unsafe { self.io.slab.base().add(off) };
                    let sqe = opcode::ReadFixed::new(FD_TUN, ptr, MAX_READ as u32, 0).build();
                    self.io.push(sqe, Op::Read(slot as u16));
                }
            }
        }
        for f in Family::BOTH {
            let i = f.index();
            let Some(fd) = self.io.socket(f) else {
                continue;
            };
            if self.receiving.armed[i] || self.io.rx.in_kernel() == 0 {
                continue;
            }
            self.receiving.armed[i] = true;
            let sqe = opcode::RecvMsgMulti::new(fd, &self.receiving.msgs[i], BGID_RECV).build();
            self.io.push(sqe, Op::Recv(f));
        }
    }

    /// Hands freed receive buffers (and, with multishot reads, transmit
    /// slots) back to their provided-buffer rings: one publish per ring
    /// per batch.
    fn give_back(&mut self) {
        let base = self.io.slab.base();
        let mut any = false;
        let (rx, region) = (&mut self.io.rx, self.io.rx_region);
        for bid in rx.take_returned() {
            // SAFETY: in bounds of the slab: a receive buffer.
            let addr = unsafe { base.add(region.at(bid)) };
            self.recv_ring.push(bid as u16, addr, RX_BUFFER_SIZE as u32);
            any = true;
        }
        if any {
            self.recv_ring.publish();
        }
        if let Some(r) = &mut self.read_ring {
            let mut any = false;
            let read_offset = self.layout.read_offset();
            let (tx, region) = (&mut self.io.tx, self.io.tx_region);
            for slot in tx.take_returned() {
                // SAFETY: in bounds of the slab: a transmit slot's read area.
                let addr = unsafe { base.add(region.at(slot) + read_offset) };
                r.push(slot as u16, addr, MAX_READ as u32);
                any = true;
            }
            if any {
                r.publish();
            }
        }
    }

    // ----- completions -----

    fn on_wake(&mut self, res: i32) -> bool {
        if self.stop.load(Ordering::Acquire) {
            return false;
        }
        if res < 0 && res != -libc::EINTR && res != -libc::EAGAIN {
            // Without its wake-up read the worker could never be told to
            // stop: stop now rather than spin.
            tracing::error!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "wake-up read failed");
            return false;
        }
        self.arm_wake();
        true
    }

    fn on_read_multi(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.reading.armed = false;
        }
        match cqueue::buffer_select(flags) {
            Some(slot) => {
                if let Some(hold) = self.io.tx.from_kernel(usize::from(slot)) {
                    self.on_read(mode, view, now, hold, res);
                }
            }
            // Out of slots: re-armed once one comes back (see `arm`).
            None if res == -libc::ENOBUFS => {}
            None => self.on_read_error(res),
        }
    }

    /// Counts a failed device read; the first of a run is logged with its
    /// errno, and a deleted device stops the worker at once.
    fn on_read_error(&mut self, res: i32) {
        if res == -libc::EBADFD || res == -libc::ENODEV {
            // The interface was deleted under us: nothing more to read.
            self.reading.errors = MAX_READ_ERRORS;
        } else if res < 0 && res != -libc::ECANCELED && res != -libc::EAGAIN && res != -libc::EINTR
        {
            if self.reading.errors == 0 {
                tracing::warn!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "device read failed");
            }
            self.reading.errors += 1;
        }
    }

    /// A read into the slot `hold` holds completed with `res`: seal it and
    /// hand the datagrams to the scheduler.
    fn on_read(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, hold: Hold<Tx>, res: i32) {
        if res <= 0 {
            self.on_read_error(res);
            let _ = self.io.tx.release(hold);
            return;
        }
        self.reading.errors = 0;
        let at = self.io.tx_region.at(hold.index());
        // SAFETY: the read into this slot completed and we hold it: no
        // operation is in flight on it and no other slice overlaps it.
        let slot = unsafe { self.io.slab.slice_mut(at, self.layout.slot_len()) };
        let sealed = device_read::seal_read(
            &self.layout,
            mode,
            view,
            self.id,
            now,
            slot,
            res as usize,
            &self.control,
            &self.io.counters,
        );
        match sealed {
            Some((run, targets)) => self.sched.send_run(hold, run, targets, &mut self.io),
            None => {
                let _ = self.io.tx.release(hold);
            }
        }
    }

    fn on_send(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, n: u16, res: i32) {
        let e = &mut self.io.sends.entries[usize::from(n)];
        let (Some(t), Some(piece)) = (e.t.take(), e.piece.take()) else {
            return;
        };
        if res >= 0 {
            let datagrams = t
                .segment
                .map_or(1, |s| u64::from(piece.len.div_ceil(u32::from(s.max(1)))));
            self.io.counters.udp_tx_datagrams.add(datagrams);
            self.io.counters.udp_tx_bytes.add(res as u64);
            self.io.sends.put(n);
            let _ = self.io.tx.release(piece.hold);
            return;
        }
        match self.sched.refused(res, &t, now) {
            Recovery::WithoutSource => {
                mode.forget_local(view, t.peer);
                self.io.counters.src_addr_resets.inc();
                let t = t.without_src();
                let e = &mut self.io.sends.entries[usize::from(n)];
                let hdr = e.msg.drop_src(&t);
                e.t = Some(t);
                e.piece = Some(piece);
                self.io.submit_send(n, hdr, t.family());
            }
            Recovery::Singly => {
                self.io.sends.put(n);
                self.resend_singly(t, piece);
            }
            Recovery::Fail => {
                self.io.counters.udp_tx_errors.inc();
                tracing::debug!(worker = self.id, error = %io::Error::from_raw_os_error(-res), dst = %t.dst, "send failed");
                self.io.sends.put(n);
                let _ = self.io.tx.release(piece.hold);
            }
        }
    }

    /// Sends a refused GSO piece again, one datagram per send: nothing of
    /// the run is lost. Each part holds the slot; the last takes the
    /// piece's own hold.
    fn resend_singly(&mut self, t: Transmit<M::Peer>, piece: Piece) {
        let seg = u32::from(t.segment.unwrap_or(u16::MAX)).max(1);
        let single = Transmit { segment: None, ..t };
        let Piece { hold, offset, len } = piece;
        let mut at = 0;
        while len - at > seg {
            let part = Piece {
                hold: self.io.tx.share(&hold),
                offset: offset + at,
                len: seg,
            };
            self.io.send(single, part);
            at += seg;
        }
        let last = Piece {
            hold,
            offset: offset + at,
            len: len - at,
        };
        self.io.send(single, last);
    }

    fn on_gather(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, n: u16, res: i32) {
        let e = &mut self.io.gathers.entries[usize::from(n)];
        let Some(t) = e.t.take() else { return };
        if res >= 0 {
            self.io.counters.udp_tx_datagrams.add(e.pieces.len() as u64);
            self.io.counters.udp_tx_bytes.add(res as u64);
            for p in e.pieces.drain(..) {
                let _ = self.io.tx.release(p.hold);
            }
            self.io.gathers.put(n);
            return;
        }
        match self.sched.refused(res, &t, now) {
            Recovery::WithoutSource => {
                // The same gather once more without a source; a second
                // refusal is about the size.
                mode.forget_local(view, t.peer);
                self.io.counters.src_addr_resets.inc();
                let t = t.without_src();
                let e = &mut self.io.gathers.entries[usize::from(n)];
                let hdr = e.msg.drop_src(&t);
                e.t = Some(t);
                self.io.submit_gather(n, hdr, t.family());
            }
            Recovery::Singly => {
                let pieces = std::mem::take(&mut self.io.gathers.entries[usize::from(n)].pieces);
                let single = Transmit { segment: None, ..t };
                let mut pieces = pieces;
                for p in pieces.drain(..) {
                    self.io.send(single, p);
                }
                // Keep the entry's allocation for its next gather.
                self.io.gathers.entries[usize::from(n)].pieces = pieces;
                self.io.gathers.put(n);
            }
            Recovery::Fail => {
                let e = &mut self.io.gathers.entries[usize::from(n)];
                self.io.counters.udp_tx_errors.add(e.pieces.len() as u64);
                for p in e.pieces.drain(..) {
                    let _ = self.io.tx.release(p.hold);
                }
                self.io.gathers.put(n);
            }
        }
    }

    fn on_recv(
        &mut self,
        mode: &M,
        view: &M::Batch<'_>,
        now: Instant,
        f: Family,
        res: i32,
        flags: u32,
    ) {
        if !cqueue::more(flags) {
            self.receiving.armed[f.index()] = false;
        }
        if res < 0 {
            if res == -libc::ENOBUFS {
                // Re-armed once a buffer comes back (see `arm`).
                self.io.counters.rx_buffer_exhausted.inc();
            } else if res != -libc::ECANCELED {
                tracing::warn!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "receive failed");
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            return;
        };
        let Some(hold) = self.io.rx.from_kernel(usize::from(bid)) else {
            return;
        };
        let base = self.io.rx_region.at(hold.index());
        // SAFETY: the kernel finished writing this buffer (its completion
        // is here) and it is not in the ring until we give it back.
        let buf = unsafe {
            self.io
                .slab
                .slice_mut(base, (res as usize).min(RX_BUFFER_SIZE))
        };
        let rx = match socket_recv::parse(buf, &self.receiving.msgs[f.index()]) {
            Ok(rx) => rx,
            Err(r) => {
                self.io.counters.drop_packet(r);
                let _ = self.io.rx.release(hold);
                return;
            }
        };
        if let Some(dropped) = rx.rxq_dropped {
            // Each socket keeps its own running total: add what is new.
            let seen = &mut self.receiving.rxq_seen[f.index()];
            let new = dropped.wrapping_sub(*seen);
            *seen = dropped;
            self.io.counters.drops[DropReason::RcvbufOverflow.index()].add(u64::from(new));
        }
        socket_recv::open_all(
            mode,
            view,
            self.id,
            now,
            buf,
            &rx,
            &mut self.deliveries,
            &self.control,
            &self.io.counters,
        );
        self.write_deliveries(&hold, base);
        let _ = self.io.rx.release(hold);
    }

    /// Writes the opened packets of the receive buffer `rx` holds (at slab
    /// offset `base`): runs of one TCP flow coalesced, the rest in place.
    fn write_deliveries(&mut self, rx: &Hold<Rx>, base: usize) {
        let list = self.deliveries.as_slice();
        if list.is_empty() {
            return;
        }
        let mut packets: [&[u8]; MAX_GRO_SEGMENTS] = [&[]; MAX_GRO_SEGMENTS];
        for (p, &(start, len)) in packets.iter_mut().zip(list) {
            // SAFETY: opened packets of a buffer we hold; only read while
            // the coalescer copies from them.
            *p = unsafe { self.io.slab.slice_mut(base + start as usize, len as usize) };
        }
        let slab = &self.io.slab;
        let region = self.io.wr_region;
        let planned = &mut self.planned;
        device_write::plan(
            self.coalescer.as_mut(),
            &packets[..list.len()],
            &mut self.io.wr,
            // SAFETY: a free write slot, now held: no write is in flight
            // from it and it lies apart from every receive buffer.
            |h| unsafe { slab.slice_mut(region.at(h.index()), WRITE_SLOT_LEN) },
            |p| planned.push(p),
        );
        let (vnet, room) = (self.layout.vnet, M::HEADROOM);
        for p in self.planned.drain(..) {
            match p {
                Planned::Alone(k) => {
                    let (start, len) = self.deliveries.as_slice()[k];
                    let hold = self.io.rx.share(rx);
                    self.io
                        .write_received(hold, base + start as usize, len as usize, vnet, room);
                }
                Planned::Coalesced {
                    slot,
                    len,
                    segments,
                } => self.io.write_slot(slot, len, segments),
            }
        }
    }

    fn on_write(&mut self, n: u16, res: i32) {
        let from = self.io.writes.entries[usize::from(n)].from.take();
        self.io.writes.put(n);
        let c = &self.io.counters;
        if res < 0 {
            c.dev_write_errors.inc();
            tracing::debug!(worker = self.id, error = %io::Error::from_raw_os_error(-res), "device write failed");
        } else {
            c.dev_writes.inc();
        }
        match from {
            Some(WriteFrom::Received(hold)) => {
                if res >= 0 {
                    c.dev_write_packets.inc();
                }
                let _ = self.io.rx.release(hold);
            }
            Some(WriteFrom::Slot(hold, segments)) => {
                if res >= 0 {
                    c.dev_write_packets.add(segments as u64);
                    c.dev_write_coalesced.inc();
                    c.dev_write_coalesced_segments.add(segments as u64);
                }
                let _ = self.io.wr.release(hold);
            }
            None => {}
        }
    }

    // ----- stop -----

    /// Cancels everything in flight and waits for it, so no operation can
    /// touch the slab after it is unmapped; gives back every buffer the
    /// operations held, and checks (in debug builds) that none leaked.
    fn drain(&mut self) {
        self.sched.abandon(&mut self.io);
        // Hand the kernel what is still queued first (re-arms of the last
        // batch), so the cancel reaches those too.
        let _ = self.io.ring.submit();
        let _ = self
            .io
            .ring
            .submitter()
            .register_sync_cancel(None, types::CancelBuilder::any());
        let deadline = Instant::now() + DRAIN_DEADLINE;
        // Bounded waits: a request that ignores the cancel must not hang
        // the daemon's exit (the deadline gives up on it instead).
        let ts = types::Timespec::new().nsec(50_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        while self.io.inflight > 0 && Instant::now() < deadline {
            let _ = self.io.ring.submitter().submit_with_args(1, &args);
            loop {
                let cqe = {
                    let mut cq = self.io.ring.completion();
                    cq.sync();
                    cq.next()
                };
                let Some(cqe) = cqe else { break };
                let Some(op) = Op::decode(cqe.user_data()) else {
                    continue;
                };
                if !op.is_multishot() || !cqueue::more(cqe.flags()) {
                    self.io.inflight = self.io.inflight.saturating_sub(1);
                }
                self.give_up(op, cqe.flags());
            }
        }
        let clean = self.io.inflight == 0;
        if clean {
            debug_assert!(
                self.io.tx.all_returned() && self.io.rx.all_returned() && self.io.wr.all_returned(),
                "worker {}: buffers still held after the drain: {} transmit slots, {} receive buffers, {} write slots",
                self.id,
                self.io.tx.held(),
                self.io.rx.held(),
                self.io.wr.held()
            );
        } else {
            tracing::warn!(
                worker = self.id,
                inflight = self.io.inflight,
                "operations still in flight at exit"
            );
            self.io.forget_holds();
        }
        // The ring's own teardown is asynchronous (a kernel worker releases
        // its registered files a few milliseconds after the ring fd closes),
        // which would keep the device and the port alive past our exit and
        // make an immediate restart fail. Unregistering here drops those
        // references now, on this thread.
        let submitter = self.io.ring.submitter();
        let _ = submitter.unregister_files();
        let _ = submitter.unregister_buffers();
    }

    /// A completion while draining: give back what its operation held.
    fn give_up(&mut self, op: Op, flags: u32) {
        match op {
            Op::Wake => {}
            Op::ReadMulti => {
                if let Some(h) = cqueue::buffer_select(flags)
                    .and_then(|s| self.io.tx.from_kernel(usize::from(s)))
                {
                    let _ = self.io.tx.release(h);
                }
            }
            Op::Read(slot) => {
                if let Some(h) = self.io.tx.from_kernel(usize::from(slot)) {
                    let _ = self.io.tx.release(h);
                }
            }
            Op::Recv(_) => {
                if let Some(h) = cqueue::buffer_select(flags)
                    .and_then(|b| self.io.rx.from_kernel(usize::from(b)))
                {
                    let _ = self.io.rx.release(h);
                }
            }
            Op::Send(n) => {
                if let Some(p) = self.io.sends.entries[usize::from(n)].piece.take() {
                    let _ = self.io.tx.release(p.hold);
                }
                self.io.sends.put(n);
            }
            Op::Gather(n) => {
                let e = &mut self.io.gathers.entries[usize::from(n)];
                for p in e.pieces.drain(..) {
                    let _ = self.io.tx.release(p.hold);
                }
                self.io.gathers.put(n);
            }
            Op::Write(n) => {
                match self.io.writes.entries[usize::from(n)].from.take() {
                    Some(WriteFrom::Received(h)) => {
                        let _ = self.io.rx.release(h);
                    }
                    Some(WriteFrom::Slot(h, _)) => {
                        let _ = self.io.wr.release(h);
                    }
                    None => {}
                }
                self.io.writes.put(n);
            }
        }
    }
}

impl<P> Io<P> {
    /// Operations the kernel never gave back keep their holds: forget
    /// them (the memory goes with the process) instead of failing the
    /// leak check on a shutdown that gave up waiting.
    fn forget_holds(&mut self) {
        for e in self.sends.entries.iter_mut() {
            if let Some(p) = e.piece.take() {
                std::mem::forget(p);
            }
        }
        for e in self.gathers.entries.iter_mut() {
            for p in e.pieces.drain(..) {
                std::mem::forget(p);
            }
        }
        for e in self.writes.entries.iter_mut() {
            if let Some(w) = e.from.take() {
                std::mem::forget(w);
            }
        }
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
