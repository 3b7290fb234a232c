//! One worker: a thread pinned to a core that owns one device queue, its
//! UDP sockets, one io_uring and one slab of registered memory, and moves
//! packets both ways in batches.
//!
//! ```text
//!  queue ──ReadMulti──▶ flow_queues ─▶ device_read (route, split, seal) ─▶ sched ──SendMsg (UDP_SEGMENT)──▶ wire
//!  wire ──RecvMsgMulti (UDP_GRO)──▶ flow_queues ─▶ socket_recv (open) ─▶ device_write (coalesce) ──WriteFixed──▶ queue
//! ```
//!
//! The loop: submit what the last batch produced and wait for at least
//! one completion (one `io_uring_enter`), reap every completion the ring
//! holds and dispatch each on its [`Op`] (a read or a receive joins its
//! flow's queue), then work: newly active flows first, then up to a
//! budget of the backlog each way; flush the sends held for the end of the
//! batch, give freed buffers back to the kernel and re-arm. While a
//! backlog remains the next look at the ring does not sleep. A worker that
//! has run for 200 µs without sleeping yields the CPU after its next enter
//! (see [`time_slice`]), so a thread woken on its CPU need not wait for a
//! tick. A batch ends when the ring is empty, never on a timer, so a lone
//! ping is not held back and an idle tunnel sleeps in the kernel. On stop,
//! everything in flight is cancelled and reaped before the memory goes.
//!
//! The parts live in their own modules, in the order a packet meets them:
//! [`setup`] (the thread, the ring, the memory), [`flow_queues`] (who goes
//! first), [`device_read`] (route, split, seal), [`flow`] (which source
//! port a flow leaves from),
//! [`sched`] (how datagrams leave), [`transmit`] (a send as a
//! `msghdr`), [`socket_recv`] (parse, open), [`device_write`] (coalesce),
//! with [`op`] (what a completion is about), [`slots`] (who holds each
//! buffer) and [`ring`] (the ring, the slab and every operation's storage;
//! the drain). All but `setup` and `ring` are tested without root or a
//! ring. What is left here is the loop.

pub mod device_read;
pub mod device_write;
pub mod flow;
pub mod flow_queues;
pub mod op;
mod ring;
pub mod sched;
mod setup;
pub mod slots;
pub mod socket_recv;
pub mod source_ports;
pub mod time_slice;
pub mod transmit;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Receiver;
use io_uring::{cqueue, opcode};
use tunnel_proto::DropReason;

use crate::bufring::BufRing;
use crate::cmsg::{RECV_CONTROL_LEN, RawAddr};
use crate::handoff::{ControlLink, EventFd};
use crate::mode::Mode;
use crate::offload::Coalescer;
use crate::udp::WorkerSockets;

pub use device_read::{MAX_READ, PACKET_OFFSET, SlotLayout};
pub use device_write::{WRITE_SLOT_LEN, WRITE_SLOTS};
pub use flow::FLOW_PORTS;
pub use ring::{GATHER_OPS, SEND_OPS};
pub use sched::{GSO_MAX_BYTES, GSO_REPROBE_AFTER, MAX_SEGMENTS};
pub use setup::{WorkerSetup, locked_bytes_per_worker, spawn};
pub use socket_recv::MAX_GRO_SEGMENTS;
pub use source_ports::SourcePorts;

use device_write::Planned;
use flow::Opening;
use flow_queues::{FlowQueues, Queued};
use op::{Family, Op};
use ring::{FD_TUN, FD_WAKE, Io};
use sched::Scheduler;
use slots::{Hold, Rx, Tx};
use socket_recv::{Deliveries, Received};

/// Fixed reads kept in flight on the device queue. Every POLLIN wakes all
/// pending reads and one wins, so more than a few only burn CPU.
pub const READS_IN_FLIGHT: usize = 3;
/// Transmit slots: each holds one read and what is sent from it.
pub const TX_SLOTS: usize = 32;
/// Most bytes of reads waiting in the flow queues: sixteen 64 KiB
/// super-packets, half the slots, so that under bulk the other half is
/// free to read into while the sends of the last batch complete (a device
/// queue the worker stops reading fills in arrival order, the wait the
/// flow queues are there to avoid). About a millisecond of sealing. Small
/// packets can take every slot before the limit; one budget of work then
/// empties the queue.
pub const QUEUED_READ_BYTES: usize = 1 << 20;
/// Bytes of reads sealed, and of receives opened, between two looks at
/// the ring: a probe read or received meanwhile waits for at most this
/// much work before it is queued and goes first.
pub const WORK_BUDGET: usize = 64 * 1024;
/// Most bytes of receives waiting in the flow queues: about thirty full
/// GRO receives, half the receive buffers, the rest free for the socket's
/// next datagrams. A burst of small datagrams fits whole.
pub const QUEUED_RECEIVE_BYTES: usize = 2 << 20;
/// Provided receive buffers (a power of two).
pub const RX_BUFFERS: u16 = 64;
/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;
/// Failed device reads in a row after which a worker gives up.
const MAX_READ_ERRORS: u32 = 16;
/// Bytes of receive metadata before the payload in a provided buffer.
const RX_META: usize = 16 + std::mem::size_of::<RawAddr>() + RECV_CONTROL_LEN;
/// A provided receive buffer: metadata plus the largest UDP payload.
pub const RX_BUFFER_SIZE: usize = RX_META + 65_535 + 64;

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
    /// Which flow socket each inner flow leaves from (shared).
    source_ports: Arc<SourcePorts>,
    /// Device reads waiting to be sealed, by inner flow.
    read_queues: FlowQueues<Tx, Opening>,
    /// Socket receives waiting to be opened, by sender address and port.
    recv_queues: FlowQueues<Rx, Received>,
    coalescer: Option<Coalescer>,
    deliveries: Deliveries,
    planned: Vec<Planned>,
    reading: Reading,
    receiving: Receiving,
    mode: Arc<M>,
    control: ControlLink<M::Event, M::Peer>,
    stop: Arc<AtomicBool>,
    /// When the worker lets others on its CPU run first.
    give_way: time_slice::GiveWay,
    /// The worker's wake-up eventfd (the ring reads a duplicate of it).
    _wake: Arc<EventFd>,
    wake_buf: Box<u64>,
    id: usize,
    /// The sockets registered as fixed files (replaced on a new listen port).
    sockets: WorkerSockets,
    /// New sockets from the control thread (a new listen port).
    rebind: Receiver<WorkerSockets>,
    /// Keeps the device queue and the wake-up duplicate open while registered.
    _fds: Vec<OwnedFd>,
}

impl<M: Mode> Worker<M> {
    fn run(&mut self) -> io::Result<()> {
        self.arm_wake();
        self.arm();
        tracing::debug!(worker = self.id, mode = M::NAME, "worker running");
        // Whatever ends the loop, requests in flight point into our memory:
        // cancel and reap them before it goes.
        let r = self.serve();
        for q in self.read_queues.drain() {
            let _ = self.io.tx.release(q.hold);
        }
        for q in self.recv_queues.drain() {
            let _ = self.io.rx.release(q.hold);
        }
        self.sched.abandon(&mut self.io);
        self.io.drain();
        r
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            let waits = self.read_queues.is_empty() && self.recv_queues.is_empty();
            let r = if waits {
                self.io.ring.submit_and_wait(1)
            } else {
                self.look()
            };
            // After the enter, so the last batch's sends and writes are on
            // their way while others run. Cost, unless turned off: a clock
            // read per batch, a getrusage per wait (to tell a sleep from
            // ready completions), a sched_yield per 200 µs of running.
            if self.give_way.is_on() && self.give_way_now(waits) {
                time_slice::give_way();
                self.io.counters.yields.inc();
            }
            match r {
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

    /// Whether to give way after this enter (`waited`: it was a wait,
    /// which restarts the run if it slept).
    fn give_way_now(&mut self, waited: bool) -> bool {
        let now = Instant::now();
        if waited {
            self.give_way.waited(now, time_slice::voluntary_switches());
        }
        self.give_way.due(now)
    }

    /// Submits and reaps without sleeping: work still waits in the flow
    /// queues, and what arrived meanwhile should join them first.
    /// `submit_and_wait(0)` would not do: with deferred task work, a
    /// completed read reaches the completion queue only in an enter that
    /// asks for events.
    fn look(&mut self) -> io::Result<usize> {
        let to_submit = self.io.ring.submission().len() as u32;
        // SAFETY: no argument is passed; GETEVENTS with zero to wait for
        // only runs the task work and returns.
        unsafe {
            self.io
                .ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
        }
    }

    /// Handles every completion the ring holds (a read or a receive only
    /// joins its flow's queue), does the batch's [`work`](Self::work), then
    /// flushes, gives back and re-arms. Returns false to stop.
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
                Op::ReadMulti => self.on_read_multi(res, flags),
                Op::Read(slot) => {
                    if let Some(hold) = self.io.tx.from_kernel(usize::from(slot)) {
                        self.on_read(hold, res);
                    }
                }
                Op::Recv(f) => self.on_recv(f, res, flags),
                Op::Send(n) => {
                    if let Some(p) = self.io.on_send(&mut self.sched, now, n, res) {
                        mode.forget_local(&view, p);
                    }
                }
                Op::Gather(n) => {
                    if let Some(p) = self.io.on_gather(&mut self.sched, now, n, res) {
                        mode.forget_local(&view, p);
                    }
                }
                Op::Write(n) => self.io.on_write(n, res),
                // The cancelled receives complete on their own.
                Op::Cancel => {}
            }
        }
        self.work(&mode, &view, now);
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
            let Some(fd) = self.io.listen_socket(f) else {
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
        while let Ok(sockets) = self.rebind.try_recv() {
            if let Err(e) = self.rebind_sockets(sockets) {
                tracing::error!(worker = self.id, error = %e, "taking the new sockets failed");
                return false;
            }
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

    fn on_read_multi(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.reading.armed = false;
        }
        match cqueue::buffer_select(flags) {
            Some(slot) => {
                if let Some(hold) = self.io.tx.from_kernel(usize::from(slot)) {
                    self.on_read(hold, res);
                }
            }
            // Out of slots: re-armed once one comes back (see `arm`).
            None if res == -libc::ENOBUFS => {}
            None => self.on_read_error(res),
        }
    }

    /// Moves to new sockets (a new listen port): they replace the old in
    /// the fixed-file table, so every send from now on uses them; the
    /// multishot receives still on the old ones are cancelled, and re-arm
    /// on the new ones when they end. Sends in flight finish on the old.
    fn rebind_sockets(&mut self, sockets: WorkerSockets) -> io::Result<()> {
        let v6 = sockets.v6.as_ref().map_or(-1, |s| s.as_raw_fd());
        self.io
            .ring
            .submitter()
            .register_files_update(ring::FD_V4.0, &[sockets.v4.as_raw_fd(), v6])?;
        self.io.has_v6 = sockets.v6.is_some();
        for f in Family::BOTH {
            if self.receiving.armed[f.index()] {
                let sqe = opcode::AsyncCancel::new(Op::Recv(f).encode()).build();
                self.io.push(sqe, Op::Cancel);
            }
        }
        // The old sockets close here; the receives being cancelled hold
        // their own references until they end. The new sockets' overflow
        // counts start from zero.
        self.sockets = sockets;
        self.receiving.rxq_seen = [0; 2];
        tracing::info!(worker = self.id, "moved to new sockets");
        Ok(())
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

    /// A read into the slot `hold` holds completed with `res`: it joins
    /// its flow's queue; over the queues' limit, the fattest flow's oldest
    /// read is dropped.
    fn on_read(&mut self, hold: Hold<Tx>, res: i32) {
        if res <= 0 {
            self.on_read_error(res);
            let _ = self.io.tx.release(hold);
            return;
        }
        self.reading.errors = 0;
        // Counted when read, whether it is sealed or dropped from the queue.
        self.io.counters.dev_reads.inc();
        let len = (res as usize).saturating_sub(self.layout.vnet);
        self.io.counters.dev_read_bytes.add(len as u64);
        let at = self.io.tx_region.at(hold.index());
        // SAFETY: the read into this slot completed and we hold it: no
        // operation is in flight on it and no other slice overlaps it.
        let slot = unsafe { self.io.slab.slice_mut(at, self.layout.slot_len()) };
        let flow = device_read::read_flow(&self.layout, slot, res as usize);
        let opening = if M::FLOW_SOURCE_PORTS {
            device_read::read_opening(&self.layout, slot, res as usize)
        } else {
            Opening::Other
        };
        let read = Queued {
            hold,
            len: res as u32,
            flow,
            meta: opening,
        };
        if let Some(dropped) = self.read_queues.enqueue(read) {
            self.io.counters.drop_packet(DropReason::FlowQueueFull);
            let _ = self.io.tx.release(dropped.hold);
        }
    }

    /// Seals queued reads in the flow queues' order, newly active flows
    /// first, until [`WORK_BUDGET`] bytes are sealed or none wait.
    fn seal_queued(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant) {
        let mut budget = WORK_BUDGET;
        while budget > 0 {
            let Some(q) = self.read_queues.dequeue() else {
                return;
            };
            budget = budget.saturating_sub(q.len as usize);
            self.seal_one(mode, view, now, q);
        }
    }

    /// Seals one queued read and hands its datagrams to the scheduler.
    fn seal_one(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, q: Queued<Tx, Opening>) {
        let at = self.io.tx_region.at(q.hold.index());
        // SAFETY: the read into this slot completed and it waited in the
        // queues since: we hold it, nothing is in flight on it and no
        // other slice overlaps it.
        let slot = unsafe { self.io.slab.slice_mut(at, self.layout.slot_len()) };
        let sealed = device_read::seal_read(
            &self.layout,
            mode,
            view,
            self.id,
            now,
            slot,
            q.len as usize,
            q.flow,
            &self.control,
            &self.io.counters,
        );
        match sealed {
            Some(s) => {
                let via = self.source_ports.via(s.flow, q.meta, now, s.run.total);
                self.sched
                    .send_run(q.hold, s.run, via, s.targets, &mut self.io);
            }
            None => {
                let _ = self.io.tx.release(q.hold);
            }
        }
    }

    /// The work of a batch, in the order that keeps sparse flows ahead:
    /// first whatever newly active flows hold, both ways (bounded: each
    /// such flow gets one quantum, then it is backlog), then the backlog,
    /// up to [`WORK_BUDGET`] each way. The sends and writes are submitted
    /// in this order too, so the kernel's own work for them (which runs
    /// inline, in the submit) follows it.
    fn work(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant) {
        let (mut opened, mut sealed) = (false, false);
        loop {
            let received = self.recv_queues.dequeue_new();
            let read = self.read_queues.dequeue_new();
            if received.is_none() && read.is_none() {
                break;
            }
            if let Some(q) = received {
                self.open_one(mode, view, now, q);
                opened = true;
            }
            if let Some(q) = read {
                self.seal_one(mode, view, now, q);
                sealed = true;
            }
        }
        if sealed {
            // The sparse flows' single datagrams leave ahead of the backlog.
            self.sched.flush(&mut self.io);
        }
        let backlog = !self.recv_queues.is_empty() || !self.read_queues.is_empty();
        if (opened || sealed) && backlog {
            // Cost: one more enter, only when sparse work goes ahead of a
            // backlog; it puts the sparse sends and writes on their way
            // now instead of after a budget of crypto. A failure here is
            // the next enter's to report.
            let _ = self.io.ring.submit();
        }
        self.open_queued(mode, view, now);
        self.seal_queued(mode, view, now);
    }

    /// A receive completed: it joins the queue of its sender's address and
    /// port; over the queues' limit, the fattest flow's oldest receive is
    /// dropped. The socket's overflow count is read here, in the order the
    /// kernel reported it.
    fn on_recv(&mut self, f: Family, res: i32, flags: u32) {
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
        let Some(rx) = self.parse_received(&hold, res as u32, f) else {
            let _ = self.io.rx.release(hold);
            return;
        };
        if let Some(dropped) = rx.rxq_dropped {
            // Each socket keeps its own running total: add what is new.
            let seen = &mut self.receiving.rxq_seen[f.index()];
            let new = dropped.wrapping_sub(*seen);
            *seen = dropped;
            self.io.counters.drops[DropReason::RcvbufOverflow.index()].add(u64::from(new));
        }
        let received = Queued {
            hold,
            len: res as u32,
            flow: flow::sender_hash(&rx.from.remote),
            meta: rx,
        };
        if let Some(dropped) = self.recv_queues.enqueue(received) {
            self.io.counters.drop_packet(DropReason::FlowQueueFull);
            let _ = self.io.rx.release(dropped.hold);
        }
    }

    /// What the receive of `len` bytes on the `f` socket into the buffer
    /// `hold` holds says; a malformed one is counted and `None`.
    fn parse_received(&mut self, hold: &Hold<Rx>, len: u32, f: Family) -> Option<Received> {
        let base = self.io.rx_region.at(hold.index());
        // SAFETY: the kernel finished writing this buffer (its completion
        // is here) and it is not in the ring until we give it back; only
        // read while this shared slice lives.
        let buf = unsafe {
            self.io
                .slab
                .slice_mut(base, (len as usize).min(RX_BUFFER_SIZE))
        };
        match socket_recv::parse(buf, &self.receiving.msgs[f.index()]) {
            Ok(rx) => Some(rx),
            Err(r) => {
                self.io.counters.drop_packet(r);
                None
            }
        }
    }

    /// Opens queued receives in the flow queues' order, newly active flows
    /// first, until [`WORK_BUDGET`] bytes are opened or none wait.
    fn open_queued(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant) {
        let mut budget = WORK_BUDGET;
        while budget > 0 {
            let Some(q) = self.recv_queues.dequeue() else {
                return;
            };
            budget = budget.saturating_sub(q.len as usize);
            self.open_one(mode, view, now, q);
        }
    }

    /// Opens one queued receive and writes what it carried to the device.
    fn open_one(&mut self, mode: &M, view: &M::Batch<'_>, now: Instant, q: Queued<Rx, Received>) {
        let rx = q.meta;
        let base = self.io.rx_region.at(q.hold.index());
        // SAFETY: as in `parse_received`: a completed receive we hold, not
        // in the ring; the only slice of it while this one lives.
        let buf = unsafe {
            self.io
                .slab
                .slice_mut(base, (q.len as usize).min(RX_BUFFER_SIZE))
        };
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
        self.write_deliveries(&q.hold, base);
        let _ = self.io.rx.release(q.hold);
    }

    /// Writes the opened packets of the receive buffer `rx` holds (at slab
    /// offset `base`): runs of one TCP flow coalesced (their headers
    /// rewritten in a write slot, their payloads gathered from the
    /// buffer), the rest in place.
    fn write_deliveries(&mut self, rx: &Hold<Rx>, base: usize) {
        let list = self.deliveries.as_slice();
        if list.is_empty() {
            return;
        }
        let mut packets: [&[u8]; MAX_GRO_SEGMENTS] = [&[]; MAX_GRO_SEGMENTS];
        for (p, &(start, len)) in packets.iter_mut().zip(list) {
            // SAFETY: opened packets of a buffer we hold; only read while
            // the coalescer looks at them.
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
                    buffer,
                    segments,
                } => {
                    let Some(c) = self.coalescer.as_ref() else {
                        let _ = self.io.wr.release(slot);
                        continue;
                    };
                    let list = self.deliveries.as_slice();
                    // Each payload where the receive left it: slab offsets.
                    let payloads = c.payloads(buffer).filter_map(|(k, range)| {
                        let &(start, _) = list.get(k)?;
                        Some((base + start as usize + range.start, range.len()))
                    });
                    let hold = self.io.rx.share(rx);
                    self.io
                        .write_gathered(slot, c.header_len(buffer), hold, payloads, segments);
                }
            }
        }
    }
}
