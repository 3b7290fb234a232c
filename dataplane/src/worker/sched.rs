//! The send scheduler, a pure state machine: it decides how sealed
//! datagrams leave — one `UDP_SEGMENT` send per run of a super-packet,
//! single datagrams held to the end of a batch and gathered into one send
//! per peer and size — and how the limits it learns from the kernel's
//! refusals change that: GSO off after `EIO`, a smaller segment limit after
//! `EINVAL`/`EMSGSIZE`, a resend without a source address the kernel no
//! longer accepts, and after [`GSO_REPROBE_AFTER`] the full size again.
//!
//! It owns no ring and no socket: what it decides goes to a [`Sink`] (the
//! worker, which fills a `msghdr` and submits it; or a test, which
//! records). Every datagram is a [`Piece`] of a transmit slot, and holds
//! that slot until the sink gives it back.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::slots::{Hold, Tx};
use super::transmit::{Transmit, Via};

/// Most datagrams in one `UDP_SEGMENT` send (the kernel's limit) and in
/// one gathered send.
pub const MAX_SEGMENTS: usize = 64;
/// Largest UDP payload one GSO send may carry (the stack's 64 KiB datagram
/// limit less headers, with margin).
pub const GSO_MAX_BYTES: usize = 65_507;
/// How long a GSO refusal lowers the limits before they are probed again:
/// a refusal is about the path at the time (route MTU, egress device), and
/// the path can change.
pub const GSO_REPROBE_AFTER: Duration = Duration::from_secs(60);

/// Bytes `offset..offset + len` of the transmit slot `hold` holds, and
/// with a `tail`, more bytes of the same slot right behind them on the
/// wire (one datagram whose headers and payload lie apart).
#[derive(Debug)]
pub struct Piece {
    /// The hold that keeps the slot ours until the send completes.
    pub hold: Hold<Tx>,
    /// Where the bytes start in the slot.
    pub offset: u32,
    /// How many.
    pub len: u32,
    /// The rest of the datagram, elsewhere in the slot: (offset, length).
    pub tail: Option<(u32, u32)>,
}

impl Piece {
    /// Bytes it puts on the wire.
    pub fn bytes(&self) -> u32 {
        self.len + self.tail.map_or(0, |(_, n)| n)
    }
}

/// Where a sealed datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<P> {
    /// The destination.
    pub dst: SocketAddr,
    /// The local address to send from.
    pub src: Option<IpAddr>,
    /// The peer.
    pub peer: P,
}

/// `count` sealed datagrams laid out at `stride` from `offset` in one
/// slot, `total` bytes in all (the last may be shorter); or, with
/// `apart`, their headers laid out from `offset` and their payloads
/// elsewhere in the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Where the first starts in the slot.
    pub offset: usize,
    /// Bytes on the wire, all datagrams together.
    pub total: usize,
    /// Each datagram's size on the wire but the last's (which may be
    /// shorter); laid out contiguously, also the distance between two.
    pub stride: usize,
    /// How many.
    pub count: usize,
    /// Where the payloads are when they are not behind their headers.
    pub apart: Option<Apart>,
}

/// The layout of a run whose datagrams' headers and payloads lie apart:
/// datagram `i` is `head` bytes at `offset + i * head` (the run's offset),
/// then `stride - head` bytes at `payload + i * (stride - head)` (the
/// last's payload is what `total` leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Apart {
    /// Header bytes of each datagram, laid one after another.
    pub head: usize,
    /// Where the first payload starts in the slot; the rest follow it.
    pub payload: usize,
}

impl Run {
    /// One datagram of `len` bytes at `offset`.
    pub fn single(offset: usize, len: usize) -> Run {
        Run {
            offset,
            total: len,
            stride: len,
            count: 1,
            apart: None,
        }
    }

    /// Datagram `i` (of a run whose payloads lie apart, or of one), as a
    /// piece held by `hold`.
    fn datagram(&self, i: usize, hold: Hold<Tx>) -> Piece {
        let len = if i + 1 == self.count {
            self.total - i * self.stride
        } else {
            self.stride
        };
        match self.apart {
            None => Piece {
                hold,
                offset: (self.offset + i * self.stride) as u32,
                len: len as u32,
                tail: None,
            },
            Some(a) => {
                let size = self.stride - a.head;
                Piece {
                    hold,
                    offset: (self.offset + i * a.head) as u32,
                    len: a.head as u32,
                    tail: Some(((a.payload + i * size) as u32, (len - a.head) as u32)),
                }
            }
        }
    }
}

/// Where the scheduler's sends go (each `send` or `gather` is one
/// `sendmsg`), and the keeper of the transmit slots they hold.
pub trait Sink<P> {
    /// One more hold on the slot `hold` holds (one slot, several sends).
    fn share(&mut self, hold: &Hold<Tx>) -> Hold<Tx>;
    /// Gives a hold back (nothing was sent from it).
    fn release(&mut self, hold: Hold<Tx>);
    /// One piece: one datagram, or with `t.segment` a run of them.
    fn send(&mut self, t: Transmit<P>, piece: Piece);
    /// Whether a gathered send can start now (its storage is limited).
    fn can_gather(&self) -> bool;
    /// Several pieces, one datagram each, of `t.segment` bytes (the last
    /// may be shorter), as one `UDP_SEGMENT` send.
    fn gather(&mut self, t: Transmit<P>, pieces: impl Iterator<Item = Piece>);
}

/// What to do with a send the kernel refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The local address went away (an error that says nothing about the
    /// segment size): forget it and send the same again, letting the
    /// kernel choose the source. A second refusal is then about the size.
    WithoutSource,
    /// The kernel would not segment this: send each datagram alone (the
    /// limits are lowered already).
    Singly,
    /// Count it as a send error; the datagrams are lost.
    Fail,
}

/// Whether a send from a chosen local address (`IP_PKTINFO`) failed in a
/// way that a vanished address explains: IPv4's route lookup for a source
/// that is no longer local fails with ENETUNREACH, IPv6's control-message
/// check with EINVAL, a bind-time check with EADDRNOTAVAIL. Resending once
/// without a source costs little when the cause was something else.
fn source_refused(res: i32) -> bool {
    res == -libc::EINVAL || res == -libc::EADDRNOTAVAIL || res == -libc::ENETUNREACH
}

/// Whether a refused GSO send says the egress cannot segment (`EIO`) or
/// this segment size does not fit the route's MTU (`EINVAL`, `EMSGSIZE`).
fn segmentation_refused(res: i32) -> bool {
    res == -libc::EIO || res == -libc::EINVAL || res == -libc::EMSGSIZE
}

/// A single datagram waiting for the end of the batch.
#[derive(Debug)]
struct Queued<P> {
    piece: Piece,
    target: Target<P>,
    via: Via,
    /// Its place in the queue, to keep the order while grouping.
    seq: u8,
}

/// See the module docs.
#[derive(Debug)]
pub struct Scheduler<P> {
    queued: Vec<Queued<P>>,
    /// The datagrams of one gathered send of a run laid out apart.
    pieces: Vec<Piece>,
    /// Whether anything queued leaves from a flow socket.
    queued_flows: bool,
    /// Whether runs go as `UDP_SEGMENT` sends now.
    gso: bool,
    /// Whether the socket offered GSO at start: what a re-probe restores.
    gso_offered: bool,
    /// Largest datagram a GSO send may carry on this path; bigger ones go
    /// one per send (and the kernel fragments them).
    segment_limit: usize,
    refused_at: Option<Instant>,
    /// The `EIO` refusal has been logged (it comes back after every re-probe).
    eio_warned: bool,
    worker: usize,
}

impl<P: Copy + Eq> Scheduler<P> {
    /// A scheduler for worker `worker`, with GSO if the socket offers it.
    pub fn new(gso: bool, worker: usize) -> Scheduler<P> {
        Scheduler {
            queued: Vec::with_capacity(MAX_SEGMENTS),
            pieces: Vec::with_capacity(MAX_SEGMENTS),
            queued_flows: false,
            gso,
            gso_offered: gso,
            segment_limit: usize::MAX,
            refused_at: None,
            eio_warned: false,
            worker,
        }
    }

    /// Whether runs currently leave as `UDP_SEGMENT` sends.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Datagrams held for the end of the batch.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// How many datagrams of `stride` bytes one send carries now.
    fn per_send(&self, stride: usize) -> usize {
        if self.gso && stride > 0 && stride <= self.segment_limit {
            (GSO_MAX_BYTES / stride).clamp(1, MAX_SEGMENTS)
        } else {
            1
        }
    }

    /// Sends `run` from the slot `hold` holds to every target, through the
    /// socket `via` (the datagrams of one run are one inner flow). A single
    /// datagram to a single target waits for [`flush`](Self::flush), to be
    /// gathered with others of its size to the same place and socket (a
    /// gathered send leaves from one port); anything else
    /// goes now, after what waits (one flow's packets leave in the order
    /// they were read), as few sends as `UDP_SEGMENT` allows. The hold is
    /// used up: each send gets its own.
    pub fn send_run(
        &mut self,
        hold: Hold<Tx>,
        run: Run,
        via: Via,
        targets: impl Iterator<Item = Target<P>>,
        sink: &mut impl Sink<P>,
    ) {
        let mut targets = targets.peekable();
        let Some(first) = targets.next() else {
            sink.release(hold);
            return;
        };
        let single = run.count == 1 && targets.peek().is_none();
        if single && self.gso && run.total <= self.segment_limit {
            if self.queued.len() == MAX_SEGMENTS {
                self.flush(sink);
            }
            self.queued_flows |= via != Via::Listen;
            self.queued.push(Queued {
                piece: run.datagram(0, hold),
                target: first,
                via,
                seq: self.queued.len() as u8,
            });
            return;
        }
        self.flush(sink);
        if run.apart.is_some() {
            return self.send_apart(hold, run, via, first, targets, sink);
        }
        let per_send = self.per_send(run.stride);
        let mut hold = Some(hold);
        let mut target = Some(first);
        while let Some(t) = target.take() {
            target = targets.next();
            let mut i = 0;
            while i < run.count {
                let k = per_send.min(run.count - i);
                let len = if i + k == run.count {
                    run.total - i * run.stride
                } else {
                    k * run.stride
                };
                let last = i + k == run.count && target.is_none();
                let h = match (&hold, last) {
                    (Some(h), false) => sink.share(h),
                    _ => match hold.take() {
                        Some(h) => h,
                        None => return,
                    },
                };
                sink.send(
                    Transmit {
                        dst: t.dst,
                        src: t.src,
                        segment: (k > 1).then_some(run.stride as u16),
                        via,
                        peer: t.peer,
                    },
                    Piece {
                        hold: h,
                        offset: (run.offset + i * run.stride) as u32,
                        len: len as u32,
                        tail: None,
                    },
                );
                i += k;
            }
        }
    }

    /// [`send_run`](Self::send_run) for a run whose payloads lie apart
    /// from their headers: each datagram is a piece of two iovecs, as many
    /// to a gathered `UDP_SEGMENT` send as one carries, or one per send
    /// without GSO or a free gather.
    fn send_apart(
        &mut self,
        hold: Hold<Tx>,
        run: Run,
        via: Via,
        first: Target<P>,
        targets: impl Iterator<Item = Target<P>>,
        sink: &mut impl Sink<P>,
    ) {
        let per_send = self.per_send(run.stride);
        for t in std::iter::once(first).chain(targets) {
            let mut i = 0;
            while i < run.count {
                let k = per_send.min(run.count - i);
                let transmit = Transmit {
                    dst: t.dst,
                    src: t.src,
                    segment: None,
                    via,
                    peer: t.peer,
                };
                if k > 1 && sink.can_gather() {
                    self.pieces
                        .extend((i..i + k).map(|d| run.datagram(d, sink.share(&hold))));
                    let t = Transmit {
                        segment: Some(run.stride as u16),
                        ..transmit
                    };
                    sink.gather(t, self.pieces.drain(..));
                } else {
                    for d in i..i + k {
                        let piece = run.datagram(d, sink.share(&hold));
                        sink.send(transmit, piece);
                    }
                }
                i += k;
            }
        }
        sink.release(hold);
    }

    /// Sends what waits: runs of one size to one target through one socket
    /// (the last of a run may be shorter) as gathered `UDP_SEGMENT` sends, the rest one
    /// by one. No allocation: the runs are found first, then the queue is
    /// drained into them.
    ///
    /// With flow sockets, the datagrams are grouped by target and socket
    /// first, each group in the order it was queued: flows interleave in a
    /// batch, a gathered send takes one socket's, and order matters only
    /// within a flow, which keeps to one socket. (Sends from the listen
    /// socket alone, as in WireGuard mode, keep the queue's order.)
    pub fn flush(&mut self, sink: &mut impl Sink<P>) {
        let n = self.queued.len();
        if n == 0 {
            return;
        }
        if std::mem::take(&mut self.queued_flows) && n > 2 {
            // In place, at most 64 entries; `seq` makes it stable.
            // Not by source address: a flow's source can change within a
            // batch (forgotten after a refusal, or learned anew), and its
            // datagrams must still leave in the order read. Runs end where
            // the source changes.
            self.queued.sort_unstable_by(|a, b| {
                (a.target.dst, a.via, a.seq).cmp(&(b.target.dst, b.via, b.seq))
            });
        }
        // Where each run ends (exclusive); at most one run per datagram.
        let mut ends = [0u8; MAX_SEGMENTS];
        let mut runs = 0;
        let mut i = 0;
        while i < n {
            let first = &self.queued[i];
            let size = first.piece.bytes() as usize;
            let mut bytes = size;
            let mut j = i + 1;
            // A run continues while the next goes to the same place from
            // the same socket, is no longer, fits, and the one before it
            // was not shorter.
            while j < n && j - i < MAX_SEGMENTS {
                let next = &self.queued[j];
                let len = next.piece.bytes() as usize;
                if next.target != first.target
                    || next.via != first.via
                    || len > size
                    || bytes + len > GSO_MAX_BYTES
                {
                    break;
                }
                bytes += len;
                j += 1;
                if len < size {
                    break;
                }
            }
            ends[runs] = j as u8;
            runs += 1;
            i = j;
        }
        let (gso, limit) = (self.gso, self.segment_limit);
        let mut queue = self.queued.drain(..);
        let mut start = 0;
        for &end in &ends[..runs] {
            let count = usize::from(end) - start;
            start = usize::from(end);
            let Some(first) = queue.next() else { break };
            let size = first.piece.bytes() as usize;
            let t = Transmit {
                dst: first.target.dst,
                src: first.target.src,
                segment: None,
                via: first.via,
                peer: first.target.peer,
            };
            let rest = queue.by_ref().take(count - 1).map(|q| q.piece);
            if count > 1 && gso && size <= limit && sink.can_gather() {
                let t = Transmit {
                    segment: Some(size as u16),
                    ..t
                };
                sink.gather(t, std::iter::once(first.piece).chain(rest));
            } else {
                sink.send(t, first.piece);
                for piece in rest {
                    sink.send(t, piece);
                }
            }
        }
    }

    /// The kernel refused a send of `t` with `res` (a negative errno):
    /// what to do with its datagrams. Lowers the limits first when the
    /// refusal is about segmentation.
    pub fn refused(&mut self, res: i32, t: &Transmit<P>, now: Instant) -> Recovery {
        if t.src().is_some() && source_refused(res) {
            return Recovery::WithoutSource;
        }
        let Some(segment) = t.segment else {
            return Recovery::Fail;
        };
        if !segmentation_refused(res) {
            return Recovery::Fail;
        }
        self.refused_at = Some(now);
        if res == -libc::EIO {
            if self.gso && !self.eio_warned {
                self.eio_warned = true;
                tracing::warn!(
                    worker = self.worker,
                    "UDP GSO refused by the kernel; sending one datagram per send"
                );
            }
            self.gso = false;
        } else if usize::from(segment) <= self.segment_limit {
            tracing::info!(
                worker = self.worker,
                segment,
                "datagrams of this size do not fit a GSO send on this route; sending them singly"
            );
            self.segment_limit = usize::from(segment).saturating_sub(1);
        }
        Recovery::Singly
    }

    /// Once [`GSO_REPROBE_AFTER`] has passed since the last refusal, tries
    /// the full size again (one refused send, resent at once, if it still
    /// fails). Call once per batch.
    pub fn tick(&mut self, now: Instant) {
        if self
            .refused_at
            .is_some_and(|t| now.saturating_duration_since(t) >= GSO_REPROBE_AFTER)
        {
            self.refused_at = None;
            self.gso = self.gso_offered;
            self.segment_limit = usize::MAX;
        }
    }

    /// Gives back the holds of whatever still waits (the worker is stopping).
    pub fn abandon(&mut self, sink: &mut impl Sink<P>) {
        for q in self.queued.drain(..) {
            sink.release(q.piece.hold);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::worker::slots::{Home, Pool};

    /// One recorded send: its transmit and its pieces (slot, offset, len).
    type Sent = (Transmit<u8>, Vec<(usize, u32, u32)>);

    /// Keeps every piece, as the worker's operation tables do until the
    /// completion, and the slots; `complete` gives the pieces back.
    struct Recorder {
        pool: Pool<Tx>,
        sends: Vec<(Transmit<u8>, Vec<Piece>)>,
        gathers_left: usize,
    }

    impl Sink<u8> for Recorder {
        fn share(&mut self, hold: &Hold<Tx>) -> Hold<Tx> {
            self.pool.share(hold)
        }
        fn release(&mut self, hold: Hold<Tx>) {
            let _ = self.pool.release(hold);
        }
        fn send(&mut self, t: Transmit<u8>, p: Piece) {
            self.sends.push((t, vec![p]));
        }
        fn can_gather(&self) -> bool {
            self.gathers_left > 0
        }
        fn gather(&mut self, t: Transmit<u8>, pieces: impl Iterator<Item = Piece>) {
            self.gathers_left -= 1;
            self.sends.push((t, pieces.collect()));
        }
    }

    impl Recorder {
        fn new(slots: usize, gathers: usize) -> Recorder {
            Recorder {
                pool: Pool::new(slots, Home::FreeList),
                sends: Vec::new(),
                gathers_left: gathers,
            }
        }

        /// Hands the scheduler one single datagram of `len` from a fresh slot.
        fn single(&mut self, s: &mut Scheduler<u8>, len: usize, to: Target<u8>) {
            self.single_via(s, len, to, Via::Listen);
        }

        /// The same, leaving through the socket `via`.
        fn single_via(&mut self, s: &mut Scheduler<u8>, len: usize, to: Target<u8>, via: Via) {
            let hold = self.pool.take_free().expect("a free slot");
            s.send_run(hold, Run::single(16, len), via, [to].into_iter(), self);
        }

        /// What was sent; every hold goes back (the completions).
        fn complete(&mut self) -> Vec<Sent> {
            let sends = std::mem::take(&mut self.sends);
            sends
                .into_iter()
                .map(|(t, pieces)| {
                    let shape = pieces
                        .into_iter()
                        .map(|p| {
                            let shape = (p.hold.index(), p.offset, p.len);
                            let _ = self.pool.release(p.hold);
                            shape
                        })
                        .collect();
                    (t, shape)
                })
                .collect()
        }
    }

    fn target(last: u8, peer: u8) -> Target<u8> {
        Target {
            dst: SocketAddr::from(([192, 0, 2, last], 51820)),
            src: None,
            peer,
        }
    }

    fn shapes(sends: &[Sent]) -> Vec<(Option<u16>, usize)> {
        sends.iter().map(|(t, v)| (t.segment, v.len())).collect()
    }

    #[test]
    fn singles_of_one_size_to_one_peer_leave_as_one_gathered_send() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 4);
        for _ in 0..3 {
            sink.single(&mut s, 100, target(1, 0));
        }
        assert!(
            sink.sends.is_empty(),
            "singles wait for the end of the batch"
        );
        assert_eq!(s.queued(), 3);
        s.flush(&mut sink);
        let sends = sink.complete();
        assert_eq!(shapes(&sends), vec![(Some(100), 3)]);
        assert_eq!(sends[0].1[0], (0, 16, 100));
        assert!(sink.pool.all_returned(), "every slot came back");
    }

    #[test]
    fn a_shorter_datagram_ends_a_run_and_another_place_starts_one() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 4);
        for (len, to) in [
            (100, target(1, 0)),
            (100, target(1, 0)),
            (60, target(1, 0)),
            (100, target(1, 0)),
            (100, target(2, 1)),
            (120, target(2, 1)),
        ] {
            sink.single(&mut s, len, to);
        }
        s.flush(&mut sink);
        let sends = sink.complete();
        assert_eq!(
            shapes(&sends),
            vec![(Some(100), 3), (None, 1), (None, 1), (None, 1)],
            "100,100,60 | 100 | 100 | 120 (longer than its run's size)"
        );
        assert_eq!(sends[1].0.dst, target(1, 0).dst);
        assert_eq!(sends[2].0.peer, 1);
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_gathered_send_never_mixes_sockets() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 4);
        for via in [
            Via::Flow(1),
            Via::Flow(1),
            Via::Flow(5),
            Via::Flow(5),
            Via::Flow(5),
            Via::Listen,
        ] {
            sink.single_via(&mut s, 100, target(1, 0), via);
        }
        s.flush(&mut sink);
        let sends = sink.complete();
        assert_eq!(
            shapes(&sends),
            vec![(None, 1), (Some(100), 2), (Some(100), 3)],
            "one gathered send per socket"
        );
        let vias: Vec<Via> = sends.iter().map(|(t, _)| t.via).collect();
        assert_eq!(vias, vec![Via::Listen, Via::Flow(1), Via::Flow(5)]);
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn interleaved_flows_are_gathered_per_socket_each_in_its_order() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 4);
        // Two flows' datagrams alternate; the slot index tells the order.
        for (len, via) in [
            (100, Via::Flow(3)),
            (100, Via::Flow(7)),
            (100, Via::Flow(3)),
            (100, Via::Flow(7)),
            (60, Via::Flow(3)),
            (100, Via::Flow(7)),
        ] {
            sink.single_via(&mut s, len, target(1, 0), via);
        }
        s.flush(&mut sink);
        let sends = sink.complete();
        let got: Vec<(Via, Vec<usize>)> = sends
            .iter()
            .map(|(t, pieces)| (t.via, pieces.iter().map(|p| p.0).collect()))
            .collect();
        assert_eq!(
            got,
            vec![(Via::Flow(3), vec![0, 2, 4]), (Via::Flow(7), vec![1, 3, 5])],
            "one gathered send per flow socket, each flow's datagrams in the order read"
        );
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_flow_whose_source_changes_within_a_batch_keeps_its_order() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 4);
        let from = |src: Option<[u8; 4]>| Target {
            src: src.map(std::net::IpAddr::from),
            ..target(1, 0)
        };
        // Two datagrams from a chosen source, then the source is forgotten.
        for src in [Some([192, 0, 2, 9]), Some([192, 0, 2, 9]), None] {
            sink.single_via(&mut s, 100, from(src), Via::Flow(3));
        }
        s.flush(&mut sink);
        let order: Vec<usize> = sink
            .complete()
            .iter()
            .flat_map(|(_, pieces)| pieces.iter().map(|p| p.0).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            order,
            vec![0, 1, 2],
            "one flow's datagrams in the order read"
        );
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn from_the_listen_socket_alone_the_queue_keeps_its_order() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 4);
        for to in [target(2, 1), target(1, 0), target(2, 1)] {
            sink.single(&mut s, 100, to);
        }
        s.flush(&mut sink);
        let peers: Vec<u8> = sink.complete().iter().map(|(t, _)| t.peer).collect();
        assert_eq!(
            peers,
            vec![1, 0, 1],
            "WireGuard's sends as before: no grouping"
        );
    }

    #[test]
    fn without_gso_or_without_gather_storage_singles_go_one_by_one() {
        let mut s = Scheduler::new(false, 0);
        let mut sink = Recorder::new(16, 4);
        sink.single(&mut s, 100, target(1, 0));
        assert_eq!(
            shapes(&sink.complete()),
            vec![(None, 1)],
            "no GSO: sent at once"
        );

        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 0);
        for _ in 0..2 {
            sink.single(&mut s, 100, target(1, 0));
        }
        s.flush(&mut sink);
        assert_eq!(shapes(&sink.complete()), vec![(None, 1), (None, 1)]);
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_gathered_send_stops_at_64_datagrams_and_at_64_kib() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(200, 8);
        for _ in 0..70 {
            sink.single(&mut s, 100, target(1, 0));
        }
        s.flush(&mut sink);
        assert_eq!(
            shapes(&sink.complete()),
            vec![(Some(100), 64), (Some(100), 6)],
            "the 65th waited in a full queue, which flushed itself"
        );
        for _ in 0..50 {
            sink.single(&mut s, 1400, target(1, 0));
        }
        s.flush(&mut sink);
        assert_eq!(
            shapes(&sink.complete()),
            vec![(Some(1400), 46), (Some(1400), 4)],
            "46 × 1400 B is the most under 65507 B"
        );
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_super_packet_goes_as_one_gso_send_after_what_waits() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(16, 4);
        sink.single(&mut s, 100, target(1, 0));
        let hold = sink.pool.take_free().unwrap();
        let run = Run {
            offset: 1024,
            total: 43 * 1448 + 900,
            stride: 1448,
            count: 44,
            apart: None,
        };
        s.send_run(
            hold,
            run,
            Via::Listen,
            [target(1, 0)].into_iter(),
            &mut sink,
        );
        let sends = sink.complete();
        assert_eq!(
            shapes(&sends),
            vec![(None, 1), (Some(1448), 1)],
            "the single first"
        );
        assert_eq!(sends[1].1[0], (1, 1024, 43 * 1448 + 900));
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_run_beyond_one_send_is_cut_and_a_flood_sends_it_to_everyone() {
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(4, 4);
        let hold = sink.pool.take_free().unwrap();
        let run = Run {
            offset: 0,
            total: 60 * 1000,
            stride: 1000,
            count: 60,
            apart: None,
        };
        s.send_run(
            hold,
            run,
            Via::Flow(2),
            [target(1, 0), target(2, 1)].into_iter(),
            &mut sink,
        );
        let sends = sink.complete();
        assert_eq!(
            shapes(&sends),
            vec![(Some(1000), 1), (Some(1000), 1)],
            "one 60-datagram send per target"
        );
        assert_eq!(sends[1].0.dst, target(2, 1).dst);
        assert!(
            sends.iter().all(|(t, _)| t.via == Via::Flow(2)),
            "every copy of a flow's run leaves from its socket"
        );
        assert!(sink.pool.all_returned(), "one hold per send, all back");

        let hold = sink.pool.take_free().unwrap();
        let run = Run {
            offset: 0,
            total: 100 * 500,
            stride: 500,
            count: 100,
            apart: None,
        };
        s.send_run(
            hold,
            run,
            Via::Listen,
            [target(1, 0)].into_iter(),
            &mut sink,
        );
        let sends = sink.complete();
        assert_eq!(shapes(&sends), vec![(Some(500), 1), (Some(500), 1)]);
        assert_eq!(
            (sends[0].1[0].2, sends[1].1[0].2),
            (64 * 500, 36 * 500),
            "64 segments per send at most"
        );
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_run_apart_leaves_as_gathered_datagrams_of_headers_and_payload() {
        // 50 datagrams: 100 bytes of headers each from 8192 on, 1400 of
        // payload each from 16 on, the last 300.
        let run = Run {
            offset: 8192,
            total: 50 * 100 + 49 * 1400 + 300,
            stride: 1500,
            count: 50,
            apart: Some(Apart {
                head: 100,
                payload: 16,
            }),
        };
        /// Each send's datagrams: (offset, length, tail).
        type Datagrams = Vec<Vec<(u32, u32, Option<(u32, u32)>)>>;
        let pieces = |sink: &Recorder| -> Datagrams {
            sink.sends
                .iter()
                .map(|(_, ps)| ps.iter().map(|p| (p.offset, p.len, p.tail)).collect())
                .collect()
        };
        let mut s = Scheduler::new(true, 0);
        let mut sink = Recorder::new(4, 4);
        let hold = sink.pool.take_free().unwrap();
        let to = [target(1, 0), target(2, 1)];
        s.send_run(hold, run, Via::Flow(1), to.into_iter(), &mut sink);
        let p = pieces(&sink);
        let sends = sink.complete();
        assert_eq!(
            shapes(&sends),
            vec![
                (Some(1500), 43),
                (Some(1500), 7),
                (Some(1500), 43),
                (Some(1500), 7)
            ],
            "43 datagrams of 1500 bytes fit one send, to each target"
        );
        assert_eq!(sends[2].0.dst, target(2, 1).dst);
        assert_eq!(p[0][0], (8192, 100, Some((16, 1400))));
        assert_eq!(
            p[0][42],
            (8192 + 42 * 100, 100, Some((16 + 42 * 1400, 1400)))
        );
        assert_eq!(
            p[3][6],
            (8192 + 49 * 100, 100, Some((16 + 49 * 1400, 300))),
            "the last datagram carries what is left"
        );
        assert!(sink.pool.all_returned(), "every hold back");

        // Without GSO, or without a free gather: one datagram per send.
        for (gso, gathers) in [(false, 4), (true, 0)] {
            let mut s = Scheduler::new(gso, 0);
            let mut sink = Recorder::new(4, gathers);
            let hold = sink.pool.take_free().unwrap();
            s.send_run(
                hold,
                run,
                Via::Listen,
                [target(1, 0)].into_iter(),
                &mut sink,
            );
            let p = pieces(&sink);
            let sends = sink.complete();
            assert_eq!(shapes(&sends), vec![(None, 1); 50]);
            assert_eq!(
                p[49][0],
                (8192 + 49 * 100, 100, Some((16 + 49 * 1400, 300)))
            );
            assert!(sink.pool.all_returned());
        }
    }

    fn refusing(s: &mut Scheduler<u8>, res: i32, segment: Option<u16>, src: bool) -> Recovery {
        let t = Transmit {
            dst: target(1, 0).dst,
            src: src.then(|| "192.0.2.200".parse().unwrap()),
            segment,
            via: Via::Listen,
            peer: 0,
        };
        s.refused(res, &t, Instant::now())
    }

    #[test]
    fn eio_turns_gso_off_until_the_reprobe() {
        let mut s = Scheduler::new(true, 0);
        let t0 = Instant::now();
        assert_eq!(
            refusing(&mut s, -libc::EIO, Some(1400), false),
            Recovery::Singly
        );
        assert!(!s.gso());
        let mut sink = Recorder::new(4, 4);
        for _ in 0..2 {
            sink.single(&mut s, 100, target(1, 0));
        }
        assert_eq!(
            shapes(&sink.complete()),
            vec![(None, 1), (None, 1)],
            "sent at once, alone"
        );
        s.tick(t0 + Duration::from_secs(30));
        assert!(!s.gso(), "not yet");
        s.tick(t0 + GSO_REPROBE_AFTER + Duration::from_secs(1));
        assert!(s.gso(), "probed again after a minute");
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_refused_segment_size_goes_singly_and_larger_runs_too() {
        let mut s = Scheduler::new(true, 0);
        assert_eq!(
            refusing(&mut s, -libc::EMSGSIZE, Some(1450), false),
            Recovery::Singly
        );
        assert!(s.gso(), "other sizes still go with GSO");
        let mut sink = Recorder::new(8, 4);
        for _ in 0..2 {
            sink.single(&mut s, 1450, target(1, 0));
        }
        for _ in 0..2 {
            sink.single(&mut s, 1200, target(1, 0));
        }
        s.flush(&mut sink);
        assert_eq!(
            shapes(&sink.complete()),
            vec![(None, 1), (None, 1), (Some(1200), 2)]
        );
        assert!(sink.pool.all_returned());
    }

    #[test]
    fn a_refused_source_is_dropped_first_and_other_errors_fail() {
        let mut s = Scheduler::new(true, 0);
        for res in [-libc::EINVAL, -libc::EADDRNOTAVAIL, -libc::ENETUNREACH] {
            assert_eq!(
                refusing(&mut s, res, Some(1400), true),
                Recovery::WithoutSource
            );
        }
        assert!(s.gso(), "a source refusal says nothing about GSO");
        assert_eq!(
            refusing(&mut s, -libc::EINVAL, Some(1400), false),
            Recovery::Singly
        );
        assert_eq!(
            refusing(&mut s, -libc::ENOBUFS, Some(1000), false),
            Recovery::Fail
        );
        assert_eq!(refusing(&mut s, -libc::EINVAL, None, false), Recovery::Fail);
    }
}
