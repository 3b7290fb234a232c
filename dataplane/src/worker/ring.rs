//! What the kernel reads and writes for a worker: the ring, the slab and
//! who holds each of its buffers, and the storage of every operation in
//! flight (a `msghdr` and the holds of what it sends, or what a device
//! write writes from). The scheduler's sends land here (it is their
//! [`Sink`]); each completion gives back what its operation held. At stop,
//! everything in flight is cancelled and reaped before the memory goes.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tunnel_proto::DropReason;

use super::device_write::WRITE_SLOTS;
use super::op::{Family, Op};
use super::sched::{MAX_SEGMENTS, Piece, Recovery, Scheduler, Sink};
use super::slots::{Hold, Home, Pool, Rx, Tx, Wr};
use super::socket_recv::MAX_GRO_SEGMENTS;
use super::transmit::{SendMsg, Transmit, Via};
use crate::counters::WorkerCounters;
use crate::offload::VNET_HDR_LEN;
use crate::slab::{Region, Slab};

/// Single sends in flight at once (a GSO fallback or a VXLAN flood makes
/// many from one slot).
pub const SEND_OPS: usize = 2048;
/// Gathered sends in flight at once: one per transmit slot whose
/// super-packet left with its payload apart (VXLAN), twice over.
pub const GATHER_OPS: usize = 2 * super::TX_SLOTS;
/// Device writes in flight at once: every packet of every receive buffer
/// written alone, plus every write slot.
const WRITE_OPS: usize = super::RX_BUFFERS as usize * MAX_GRO_SEGMENTS + WRITE_SLOTS;
/// How long a stopping worker waits for the kernel to give back what it holds.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);

// Fixed-file slots.
pub(super) const FD_TUN: types::Fixed = types::Fixed(0);
pub(super) const FD_V4: types::Fixed = types::Fixed(1);
pub(super) const FD_V6: types::Fixed = types::Fixed(2);
pub(super) const FD_WAKE: types::Fixed = types::Fixed(3);
/// The first flow socket: the IPv4 ones, then as many IPv6 ones.
pub(super) const FD_FLOWS: u32 = 4;

/// What the fixed-file table holds beyond the device, the IPv4 listen
/// socket and the wake-up.
#[derive(Clone, Copy, Debug)]
pub(super) struct Files {
    /// Whether the IPv6 listen socket is there.
    pub has_v6: bool,
    /// Flow sockets per family (0: every send leaves from the listen port).
    pub flow_count: usize,
    /// Whether the IPv6 flow sockets are there.
    pub flow_v6: bool,
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

/// One single send: its `msghdr` and the piece it sends (one iovec, or
/// two when its payload lies apart from its headers).
struct SendOp<P> {
    msg: SendMsg<2>,
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

/// One gathered send: its `msghdr` over up to [`MAX_SEGMENTS`] pieces,
/// each one or two iovecs.
struct GatherOp<P> {
    msg: SendMsg<{ 2 * MAX_SEGMENTS }>,
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
    /// A coalesced super-packet of this many segments: its headers in a
    /// write slot, its payload where it was received.
    Gathered(Hold<Wr>, Hold<Rx>, usize),
}

/// The iovecs of one coalesced write: the headers, then each segment's
/// payload.
type GatherIov = [libc::iovec; 1 + MAX_GRO_SEGMENTS];

/// One device write: its source, and the iovecs of a vectored write (a
/// shared zero virtio-net header, then the packet).
#[derive(Default)]
struct WriteOp {
    from: Option<WriteFrom>,
    iov: [libc::iovec; 2],
}

static ZERO_VNET_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// The iovecs of `p` (its bytes, then its tail) in the transmit slots of
/// `region` of the slab at `base`.
fn piece_iov(
    base: *mut u8,
    region: Region,
    p: &Piece,
) -> impl Iterator<Item = (*const u8, usize)> + use<> {
    let slot = region.at(p.hold.index());
    let head = (p.offset, p.len);
    std::iter::once(head).chain(p.tail).map(move |(off, len)| {
        // SAFETY: in bounds of the slab: the piece lies in its slot.
        let ptr = unsafe { base.add(slot + off as usize) };
        (ptr.cast_const(), len as usize)
    })
}

/// What the kernel reads and writes for a worker: the ring, the slab and
/// who holds each of its buffers, and the storage of every operation in
/// flight. The scheduler's sends land here ([`Sink`]).
pub(super) struct Io<P> {
    // Field order matters: the ring must be dropped (unregistering the
    // slab) before the memory it points at.
    pub(super) ring: IoUring,
    pub(super) slab: Slab,
    pub(super) tx_region: Region,
    pub(super) rx_region: Region,
    pub(super) wr_region: Region,
    pub(super) tx: Pool<Tx>,
    pub(super) rx: Pool<Rx>,
    pub(super) wr: Pool<Wr>,
    sends: Table<SendOp<P>>,
    gathers: Table<GatherOp<P>>,
    writes: Table<WriteOp>,
    /// The iovecs of each write slot's coalesced write, by slot.
    gather_iov: Box<[GatherIov]>,
    pub(super) has_v6: bool,
    /// Flow sockets per family (0: every send leaves from the listen port).
    pub(super) flow_count: usize,
    /// Whether the IPv6 flow sockets are there.
    flow_v6: bool,
    pub(super) counters: Arc<CachePadded<WorkerCounters>>,
    /// Completions still owed by the kernel (for a clean drain at stop).
    pub(super) inflight: usize,
    id: usize,
}

impl<P: Copy> Io<P> {
    /// The ring over `slab`, carved into transmit slots, receive buffers
    /// and write slots (`regions`, in that order); transmit slots held as
    /// `tx` says, receive buffers fed to the kernel, write slots free.
    pub(super) fn new(
        ring: IoUring,
        slab: Slab,
        regions: [Region; 3],
        tx: Pool<Tx>,
        files: Files,
        counters: Arc<CachePadded<WorkerCounters>>,
        id: usize,
    ) -> Io<P> {
        let [tx_region, rx_region, wr_region] = regions;
        Io {
            ring,
            slab,
            tx_region,
            rx_region,
            wr_region,
            tx,
            rx: Pool::new(rx_region.count, Home::Kernel),
            wr: Pool::new(wr_region.count, Home::FreeList),
            sends: Table::new(SEND_OPS),
            gathers: Table::new(GATHER_OPS),
            writes: Table::new(WRITE_OPS),
            gather_iov: vec![
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                }; 1 + MAX_GRO_SEGMENTS];
                wr_region.count
            ]
            .into_boxed_slice(),
            has_v6: files.has_v6,
            flow_count: files.flow_count,
            flow_v6: files.flow_v6,
            counters,
            inflight: 0,
            id,
        }
    }

    /// Queues one submission; flushes the queue to the kernel first if full.
    pub(super) fn push(&mut self, sqe: squeue::Entry, op: Op) {
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

    /// The listen socket of family `f`, if there is one.
    pub(super) fn listen_socket(&self, f: Family) -> Option<types::Fixed> {
        match f {
            Family::V4 => Some(FD_V4),
            Family::V6 => self.has_v6.then_some(FD_V6),
        }
    }

    /// The socket a send of family `f` leaves from: the flow socket `via`
    /// names when it is there, else the listen socket.
    pub(super) fn send_socket(&self, f: Family, via: Via) -> Option<types::Fixed> {
        match via {
            Via::Flow(k)
                if usize::from(k) < self.flow_count && (f == Family::V4 || self.flow_v6) =>
            {
                let slot = FD_FLOWS as usize + f.index() * self.flow_count + usize::from(k);
                Some(types::Fixed(slot as u32))
            }
            _ => self.listen_socket(f),
        }
    }

    fn tx_iov(&self, p: &Piece) -> impl Iterator<Item = (*const u8, usize)> + use<P> {
        piece_iov(self.slab.base(), self.tx_region, p)
    }

    /// Submits send-table entry `n`, whose header is filled. Without a
    /// socket to send from (a retry after the listen port moved to sockets
    /// without IPv6), the entry and its piece go back, counted as an error.
    pub(super) fn submit_send(&mut self, n: u16, hdr: *const libc::msghdr, f: Family, via: Via) {
        let Some(fd) = self.send_socket(f, via) else {
            self.counters.udp_tx_errors.inc();
            let e = &mut self.sends.entries[usize::from(n)];
            e.t = None;
            if let Some(p) = e.piece.take() {
                let _ = self.tx.release(p.hold);
            }
            self.sends.put(n);
            return;
        };
        self.counters.udp_tx_sends.inc();
        self.push(opcode::SendMsg::new(fd, hdr).build(), Op::Send(n));
    }

    /// Submits gather-table entry `n`, whose header is filled; without a
    /// socket, as [`Io::submit_send`].
    pub(super) fn submit_gather(&mut self, n: u16, hdr: *const libc::msghdr, f: Family, via: Via) {
        let Some(fd) = self.send_socket(f, via) else {
            let e = &mut self.gathers.entries[usize::from(n)];
            e.t = None;
            self.counters.udp_tx_errors.add(e.pieces.len() as u64);
            for p in e.pieces.drain(..) {
                let _ = self.tx.release(p.hold);
            }
            self.gathers.put(n);
            return;
        };
        self.counters.udp_tx_sends.inc();
        self.push(opcode::SendMsg::new(fd, hdr).build(), Op::Gather(n));
    }

    /// Writes the packet at slab offset `at` (`len` bytes) of the receive
    /// buffer `rx` holds to the device, without copying it: in place with
    /// a zeroed virtio-net header in front when the outer header left the
    /// room, else as a vectored write behind a shared zero header.
    pub(super) fn write_received(
        &mut self,
        rx: Hold<Rx>,
        at: usize,
        len: usize,
        vnet: usize,
        room: usize,
    ) {
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

    /// Writes a coalesced super-packet of `segments` packets in one
    /// vectored write: its first `header` bytes from the write slot `slot`
    /// holds, then `payloads` (slab offsets and lengths, one per segment)
    /// from the receive buffer `rx` holds. Both stay held until the write
    /// completes; the payload is never copied here.
    pub(super) fn write_gathered(
        &mut self,
        slot: Hold<Wr>,
        header: usize,
        rx: Hold<Rx>,
        payloads: impl Iterator<Item = (usize, usize)>,
        segments: usize,
    ) {
        let Some(n) = self.writes.take() else {
            self.counters.drop_packet(DropReason::QueueFull);
            let _ = self.wr.release(slot);
            let _ = self.rx.release(rx);
            return;
        };
        let base = self.slab.base();
        let iov = &mut self.gather_iov[slot.index()];
        // SAFETY: in bounds of the slab (the held write slot).
        let head = unsafe { base.add(self.wr_region.at(slot.index())) };
        iov[0] = libc::iovec {
            iov_base: head.cast(),
            iov_len: header,
        };
        let mut count = 1;
        for (at, len) in payloads {
            let Some(v) = iov.get_mut(count) else { break };
            *v = libc::iovec {
                // SAFETY: in bounds of the slab (a packet of the held receive buffer).
                iov_base: unsafe { base.add(at) }.cast(),
                iov_len: len,
            };
            count += 1;
        }
        if count != 1 + segments {
            // Not the packet the coalescer counted: write nothing.
            self.writes.put(n);
            self.counters.drop_packet(DropReason::Malformed);
            let _ = self.wr.release(slot);
            let _ = self.rx.release(rx);
            return;
        }
        // Fixed: every iovec lies in the registered slab, so the kernel
        // copies from pages it holds (memcpy) instead of from user memory
        // iovec by iovec, which cost about a third more (measured).
        let sqe = opcode::WritevFixed::new(FD_TUN, iov.as_ptr(), count as u32, 0).build();
        self.writes.entries[usize::from(n)].from = Some(WriteFrom::Gathered(slot, rx, segments));
        self.push(sqe, Op::Write(n));
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
            Some(n) if self.send_socket(f, t.via).is_some() => n,
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
        let iov = self.tx_iov(&piece);
        let e = &mut self.sends.entries[usize::from(n)];
        let hdr = e.msg.fill(&t, iov);
        e.t = Some(t);
        e.piece = Some(piece);
        self.submit_send(n, hdr, f, t.via);
    }

    fn can_gather(&self) -> bool {
        !self.gathers.is_full()
    }

    fn gather(&mut self, t: Transmit<P>, pieces: impl Iterator<Item = Piece>) {
        let f = t.family();
        if self.send_socket(f, t.via).is_none() {
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
        let hdr = e
            .msg
            .fill(&t, e.pieces.iter().flat_map(|p| piece_iov(base, region, p)));
        e.t = Some(t);
        self.submit_gather(n, hdr, f, t.via);
    }
}

impl<P: Copy + Eq> Io<P> {
    /// Send `n` completed with `res`. Returns the peer whose local address
    /// the kernel refused, to be forgotten.
    pub(super) fn on_send(
        &mut self,
        sched: &mut Scheduler<P>,
        now: Instant,
        n: u16,
        res: i32,
    ) -> Option<P> {
        let e = &mut self.sends.entries[usize::from(n)];
        let (Some(t), Some(piece)) = (e.t.take(), e.piece.take()) else {
            return None;
        };
        if res >= 0 {
            let datagrams = t.segment.map_or(1, |s| {
                u64::from(piece.bytes().div_ceil(u32::from(s.max(1))))
            });
            self.counters.udp_tx_datagrams.add(datagrams);
            self.counters.udp_tx_bytes.add(res as u64);
            self.sends.put(n);
            let _ = self.tx.release(piece.hold);
            return None;
        }
        match sched.refused(res, &t, now) {
            Recovery::WithoutSource => {
                self.counters.src_addr_resets.inc();
                let t = t.without_src();
                let e = &mut self.sends.entries[usize::from(n)];
                let hdr = e.msg.drop_src(&t);
                e.t = Some(t);
                e.piece = Some(piece);
                self.submit_send(n, hdr, t.family(), t.via);
                return Some(t.peer);
            }
            Recovery::Singly => {
                self.sends.put(n);
                self.resend_singly(t, piece);
            }
            Recovery::Fail => {
                self.counters.udp_tx_errors.inc();
                tracing::debug!(worker = self.id, error = %io::Error::from_raw_os_error(-res), dst = %t.dst, "send failed");
                self.sends.put(n);
                let _ = self.tx.release(piece.hold);
            }
        }
        None
    }

    /// Sends a refused GSO piece again, one datagram per send: nothing of
    /// the run is lost. Each part holds the slot; the last takes the
    /// piece's own hold.
    fn resend_singly(&mut self, t: Transmit<P>, piece: Piece) {
        let seg = u32::from(t.segment.unwrap_or(u16::MAX)).max(1);
        let single = Transmit { segment: None, ..t };
        if piece.tail.is_some() {
            // Headers and payload apart: always exactly one datagram.
            return self.send(single, piece);
        }
        let Piece {
            hold, offset, len, ..
        } = piece;
        let mut at = 0;
        while len - at > seg {
            let part = Piece {
                hold: self.tx.share(&hold),
                offset: offset + at,
                len: seg,
                tail: None,
            };
            self.send(single, part);
            at += seg;
        }
        let last = Piece {
            hold,
            offset: offset + at,
            len: len - at,
            tail: None,
        };
        self.send(single, last);
    }

    /// Gather `n` completed with `res`. Returns the peer whose local
    /// address the kernel refused, to be forgotten.
    pub(super) fn on_gather(
        &mut self,
        sched: &mut Scheduler<P>,
        now: Instant,
        n: u16,
        res: i32,
    ) -> Option<P> {
        let e = &mut self.gathers.entries[usize::from(n)];
        let t = e.t.take()?;
        if res >= 0 {
            self.counters.udp_tx_datagrams.add(e.pieces.len() as u64);
            self.counters.udp_tx_bytes.add(res as u64);
            for p in e.pieces.drain(..) {
                let _ = self.tx.release(p.hold);
            }
            self.gathers.put(n);
            return None;
        }
        match sched.refused(res, &t, now) {
            Recovery::WithoutSource => {
                // The same gather once more without a source; a second
                // refusal is about the size.
                self.counters.src_addr_resets.inc();
                let t = t.without_src();
                let e = &mut self.gathers.entries[usize::from(n)];
                let hdr = e.msg.drop_src(&t);
                e.t = Some(t);
                self.submit_gather(n, hdr, t.family(), t.via);
                return Some(t.peer);
            }
            Recovery::Singly => {
                let pieces = std::mem::take(&mut self.gathers.entries[usize::from(n)].pieces);
                let single = Transmit { segment: None, ..t };
                let mut pieces = pieces;
                for p in pieces.drain(..) {
                    self.send(single, p);
                }
                // Keep the entry's allocation for its next gather.
                self.gathers.entries[usize::from(n)].pieces = pieces;
                self.gathers.put(n);
            }
            Recovery::Fail => {
                let e = &mut self.gathers.entries[usize::from(n)];
                self.counters.udp_tx_errors.add(e.pieces.len() as u64);
                for p in e.pieces.drain(..) {
                    let _ = self.tx.release(p.hold);
                }
                self.gathers.put(n);
            }
        }
        None
    }

    /// Device write `n` completed with `res`.
    pub(super) fn on_write(&mut self, n: u16, res: i32) {
        let from = self.writes.entries[usize::from(n)].from.take();
        self.writes.put(n);
        let c = &self.counters;
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
                let _ = self.rx.release(hold);
            }
            Some(WriteFrom::Gathered(slot, rx, segments)) => {
                if res >= 0 {
                    c.dev_write_packets.add(segments as u64);
                    c.dev_write_coalesced.inc();
                    c.dev_write_coalesced_segments.add(segments as u64);
                }
                let _ = self.wr.release(slot);
                let _ = self.rx.release(rx);
            }
            None => {}
        }
    }

    /// Cancels everything in flight and waits for it, so no operation can
    /// touch the slab after it is unmapped; gives back every buffer the
    /// operations held, and checks (in debug builds) that none leaked.
    pub(super) fn drain(&mut self) {
        // Hand the kernel what is still queued first (re-arms of the last
        // batch), so the cancel reaches those too.
        let _ = self.ring.submit();
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(None, types::CancelBuilder::any());
        let deadline = Instant::now() + DRAIN_DEADLINE;
        // Bounded waits: a request that ignores the cancel must not hang
        // the daemon's exit (the deadline gives up on it instead).
        let ts = types::Timespec::new().nsec(50_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        while self.inflight > 0 && Instant::now() < deadline {
            let _ = self.ring.submitter().submit_with_args(1, &args);
            loop {
                let cqe = {
                    let mut cq = self.ring.completion();
                    cq.sync();
                    cq.next()
                };
                let Some(cqe) = cqe else { break };
                let Some(op) = Op::decode(cqe.user_data()) else {
                    continue;
                };
                if !op.is_multishot() || !cqueue::more(cqe.flags()) {
                    self.inflight = self.inflight.saturating_sub(1);
                }
                self.give_up(op, cqe.flags());
            }
        }
        let clean = self.inflight == 0;
        if clean {
            debug_assert!(
                self.tx.all_returned() && self.rx.all_returned() && self.wr.all_returned(),
                "worker {}: buffers still held after the drain: {} transmit slots, {} receive buffers, {} write slots",
                self.id,
                self.tx.held(),
                self.rx.held(),
                self.wr.held()
            );
        } else {
            tracing::warn!(
                worker = self.id,
                inflight = self.inflight,
                "operations still in flight at exit"
            );
            self.forget_holds();
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

    /// A completion while draining: give back what its operation held.
    fn give_up(&mut self, op: Op, flags: u32) {
        match op {
            Op::Wake | Op::Cancel => {}
            Op::ReadMulti => {
                if let Some(h) =
                    cqueue::buffer_select(flags).and_then(|s| self.tx.from_kernel(usize::from(s)))
                {
                    let _ = self.tx.release(h);
                }
            }
            Op::Read(slot) => {
                if let Some(h) = self.tx.from_kernel(usize::from(slot)) {
                    let _ = self.tx.release(h);
                }
            }
            Op::Recv(_) => {
                if let Some(h) =
                    cqueue::buffer_select(flags).and_then(|b| self.rx.from_kernel(usize::from(b)))
                {
                    let _ = self.rx.release(h);
                }
            }
            Op::Send(n) => {
                if let Some(p) = self.sends.entries[usize::from(n)].piece.take() {
                    let _ = self.tx.release(p.hold);
                }
                self.sends.put(n);
            }
            Op::Gather(n) => {
                let e = &mut self.gathers.entries[usize::from(n)];
                for p in e.pieces.drain(..) {
                    let _ = self.tx.release(p.hold);
                }
                self.gathers.put(n);
            }
            Op::Write(n) => {
                match self.writes.entries[usize::from(n)].from.take() {
                    Some(WriteFrom::Received(h)) => {
                        let _ = self.rx.release(h);
                    }
                    Some(WriteFrom::Gathered(slot, rx, _)) => {
                        let _ = self.wr.release(slot);
                        let _ = self.rx.release(rx);
                    }
                    None => {}
                }
                self.writes.put(n);
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
