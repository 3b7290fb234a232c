//! Flow queues: between the device read and the seal, and between the
//! socket receive and the open. Each read or receive waits in the queue of
//! its flow, and the worker handles them in deficit round robin, newly
//! active flows first (fq_codel's order, RFC 8290 §4.2), so a sparse flow
//! — a probe, a DNS query, a handshake's first packet, TCP's own ACKs — is
//! sealed or opened ahead of a bulk transfer's backlog instead of behind it.
//!
//! Why in the worker and not in the kernel: a TUN device never stops its
//! queue; it drops when its ring is full. A qdisc in front of it therefore
//! never holds anything, and what waits, waits in the device's ring in
//! arrival order; a UDP socket's receive buffer is one FIFO too. So the
//! worker reads both eagerly and keeps the backlog itself, where flows can
//! pass each other, and keeps it short: past [`FlowQueues::limit`]
//! bytes, the oldest entry of the flow holding the most bytes is dropped
//! (the flow that built the queue pays, and its sender slows down). The
//! limit is in bytes, not entries: a burst of small datagrams costs little
//! to hold and is not cut short; the number of entries is bounded by the
//! buffers anyway.
//!
//! A pure structure, tested without a ring: entries are buffers' holds, a
//! buffer waits in at most one queue, so the links live in arrays indexed
//! by buffer and nothing is allocated after start.

use std::collections::VecDeque;

use super::slots::{Hold, Kind};

/// Flow buckets: a flow's hash picks one. As in fq_codel, enough that a
/// sparse flow rarely shares a bulk flow's bucket (1 in 1024 per bulk flow).
pub const BUCKETS: usize = 1024;
/// Bytes a flow earns per round: one full-size Ethernet frame, as in
/// fq_codel. A flow that sends a 64 KiB super-packet goes that far into
/// deficit and waits its turn for as many rounds, so flows share in bytes,
/// and a newly active flow gets one entry, not 64 KiB of them, ahead of
/// the backlogged ones. Rounds in which every flow is still in deficit are
/// counted at once, not walked (43 of them after each 64 KiB entry).
pub const QUANTUM: i32 = 1514;

/// No slot: the end of a bucket's list.
const NIL: u16 = u16::MAX;

/// A read or receive waiting its turn: the buffer that holds it, its
/// length, its flow's hash and what else the worker needs back.
#[derive(Debug)]
pub struct Queued<K: Kind, T> {
    /// The buffer it landed in.
    pub hold: Hold<K>,
    /// Its length as the operation returned it.
    pub len: u32,
    /// Its flow's hash: the inner flow of a read ([`super::flow`]), the
    /// sender's address and port of a receive.
    pub flow: u32,
    /// What the worker needs to handle it (a receive's parsed header, so
    /// that it is parsed once).
    pub meta: T,
}

/// Which round-robin list a bucket is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    /// On none: nothing waits in it.
    Idle,
    /// Newly active: served before every old flow.
    New,
    /// Backlogged, or newly emptied while others wait.
    Old,
}

/// One flow bucket: its entries (linked through [`FlowQueues::next`]), their
/// bytes and its deficit.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    head: u16,
    tail: u16,
    bytes: u32,
    deficit: i32,
    list: List,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        head: NIL,
        tail: NIL,
        bytes: 0,
        deficit: 0,
        list: List::Idle,
    };
}

/// See the module docs.
#[derive(Debug)]
pub struct FlowQueues<K: Kind, T> {
    buckets: Box<[Bucket]>,
    /// Each buffer's waiting entry, by buffer index.
    entries: Box<[Option<Queued<K, T>>]>,
    /// The entry after each buffer's in its bucket, by buffer index.
    next: Box<[u16]>,
    new: VecDeque<u16>,
    old: VecDeque<u16>,
    len: usize,
    bytes: usize,
    limit: usize,
    /// Whether rounds in which every flow is in deficit are counted at
    /// once (always, but in the test that compares it with walking them
    /// one by one).
    count_rounds_at_once: bool,
}

impl<K: Kind, T> FlowQueues<K, T> {
    /// Queues for what `slots` buffers hold, at most `limit` bytes of it
    /// waiting at once (one entry always fits).
    pub fn new(slots: usize, limit: usize) -> FlowQueues<K, T> {
        assert!(slots < usize::from(NIL), "slot indices fit below NIL");
        FlowQueues {
            buckets: vec![Bucket::EMPTY; BUCKETS].into_boxed_slice(),
            entries: (0..slots).map(|_| None).collect(),
            next: vec![NIL; slots].into_boxed_slice(),
            new: VecDeque::with_capacity(BUCKETS),
            old: VecDeque::with_capacity(BUCKETS),
            len: 0,
            bytes: 0,
            limit,
            count_rounds_at_once: true,
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Most bytes that wait at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Queues `q` behind its flow's earlier entries. Past the limit, returns
    /// the entry dropped to make room: the oldest of the flow holding the
    /// most bytes (which may be `q`'s own flow). Cost: a scan of the
    /// buckets, only when over the limit.
    pub fn enqueue(&mut self, q: Queued<K, T>) -> Option<Queued<K, T>> {
        let slot = q.hold.index();
        let b = q.flow as usize % BUCKETS;
        let bucket = &mut self.buckets[b];
        bucket.bytes += q.len;
        self.next[slot] = NIL;
        match bucket.tail {
            NIL => bucket.head = slot as u16,
            tail => self.next[usize::from(tail)] = slot as u16,
        }
        bucket.tail = slot as u16;
        if bucket.list == List::Idle {
            bucket.list = List::New;
            bucket.deficit = QUANTUM;
            self.new.push_back(b as u16);
        }
        self.bytes += q.len as usize;
        self.entries[slot] = Some(q);
        self.len += 1;
        if self.bytes > self.limit && self.len > 1 {
            let fattest = (0..BUCKETS).max_by_key(|&i| self.buckets[i].bytes)?;
            return self.pop(fattest);
        }
        None
    }

    /// The next entry: the head of the first new flow with deficit left,
    /// else of the first old one; a flow out of deficit gets a quantum
    /// more and goes to the end of the old flows.
    pub fn dequeue(&mut self) -> Option<Queued<K, T>> {
        self.next(true)
    }

    /// The next entry of a newly active flow, if one waits: what the
    /// worker handles before any backlog, in both directions.
    pub fn dequeue_new(&mut self) -> Option<Queued<K, T>> {
        self.next(false)
    }

    fn next(&mut self, old_too: bool) -> Option<Queued<K, T>> {
        // Old flows passed over in deficit since the last one served.
        let mut passed = 0;
        loop {
            let (b, from_new) = match (self.new.front(), self.old.front()) {
                (Some(&b), _) => (usize::from(b), true),
                (None, Some(&b)) if old_too => (usize::from(b), false),
                _ => return None,
            };
            if self.buckets[b].deficit <= 0 {
                self.buckets[b].deficit += QUANTUM;
                self.rotate_to_old(b, from_new);
                if !from_new {
                    passed += 1;
                    if passed >= self.old.len() && self.count_rounds_at_once {
                        self.skip_rounds_in_deficit();
                        passed = 0;
                    }
                }
                continue;
            }
            if let Some(q) = self.pop(b) {
                self.buckets[b].deficit -= q.len as i32;
                return Some(q);
            }
            // Empty. A new flow that emptied goes behind the old ones
            // first (RFC 8290: else a flow sending one packet per round
            // would stay new and starve them); an old one goes idle.
            if from_new && !self.old.is_empty() {
                self.rotate_to_old(b, true);
            } else {
                self.list_of(from_new).pop_front();
                self.buckets[b].list = List::Idle;
            }
        }
    }

    /// Takes every waiting entry out (the worker is stopping).
    pub fn drain(&mut self) -> impl Iterator<Item = Queued<K, T>> + '_ {
        std::iter::from_fn(|| self.dequeue())
    }

    fn list_of(&mut self, new: bool) -> &mut VecDeque<u16> {
        if new { &mut self.new } else { &mut self.old }
    }

    /// When no new flow waits and every old flow is in deficit, the next
    /// rounds until one of them has earned enough only give each a quantum
    /// and keep the order: gives them all at once. Cost: a pass over the
    /// old flows, after a round of passing over them.
    fn skip_rounds_in_deficit(&mut self) {
        if !self.new.is_empty() {
            return;
        }
        let mut rounds = i32::MAX;
        for &b in &self.old {
            let deficit = self.buckets[usize::from(b)].deficit;
            if deficit > 0 {
                return;
            }
            // Quanta until the deficit is positive: ceil((1 - d) / Q).
            rounds = rounds.min((QUANTUM - deficit) / QUANTUM);
        }
        if rounds == i32::MAX {
            return;
        }
        for &b in &self.old {
            self.buckets[usize::from(b)].deficit += rounds * QUANTUM;
        }
    }

    /// Moves bucket `b` from the front of its list to the end of the old.
    fn rotate_to_old(&mut self, b: usize, from_new: bool) {
        self.list_of(from_new).pop_front();
        self.old.push_back(b as u16);
        self.buckets[b].list = List::Old;
    }

    /// The oldest entry of bucket `b`, out of it (the bucket keeps its list).
    fn pop(&mut self, b: usize) -> Option<Queued<K, T>> {
        let bucket = &mut self.buckets[b];
        let slot = match bucket.head {
            NIL => return None,
            s => usize::from(s),
        };
        bucket.head = self.next[slot];
        if bucket.head == NIL {
            bucket.tail = NIL;
        }
        let q = self.entries[slot].take()?;
        bucket.bytes -= q.len;
        self.len -= 1;
        self.bytes -= q.len as usize;
        Some(q)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::worker::slots::{Home, Pool, Tx};

    struct Bench {
        pool: Pool<Tx>,
        q: FlowQueues<Tx, ()>,
    }

    impl Bench {
        fn new(slots: usize, limit: usize) -> Bench {
            Bench {
                pool: Pool::new(slots, Home::FreeList),
                q: FlowQueues::new(slots, limit),
            }
        }

        /// Queues a read of `len` bytes of flow `flow`; returns its slot
        /// and the slot of the read dropped for it, if any.
        fn read(&mut self, flow: u32, len: u32) -> (usize, Option<(usize, u32)>) {
            let hold = self.pool.take_free().expect("a free slot");
            let slot = hold.index();
            let q = Queued {
                hold,
                len,
                flow,
                meta: (),
            };
            let dropped = self.q.enqueue(q).map(|d| {
                let seen = (d.hold.index(), d.flow);
                let _ = self.pool.release(d.hold);
                seen
            });
            (slot, dropped)
        }

        /// Dequeues one entry (of a newly active flow only, or any):
        /// its flow, slot and length.
        fn one(&mut self, any: bool) -> Option<(u32, usize, u32)> {
            let d = if any {
                self.q.dequeue()
            } else {
                self.q.dequeue_new()
            }?;
            let seen = (d.flow, d.hold.index(), d.len);
            let _ = self.pool.release(d.hold);
            Some(seen)
        }

        /// Dequeues everything: (flow, slot) in the order sealed.
        fn all(&mut self) -> Vec<(u32, usize)> {
            let mut out = Vec::new();
            while let Some(d) = self.q.dequeue() {
                out.push((d.flow, d.hold.index()));
                let _ = self.pool.release(d.hold);
            }
            out
        }
    }

    #[test]
    fn a_sparse_flow_passes_a_backlogged_one() {
        let mut b = Bench::new(32, usize::MAX);
        for _ in 0..8 {
            b.read(1, 65_000);
        }
        // The bulk flow has been served once: it is old now.
        let first = b.q.dequeue().unwrap();
        assert_eq!(first.flow, 1);
        let _ = b.pool.release(first.hold);
        let (probe, _) = b.read(2, 84);
        let order = b.all();
        assert_eq!(
            order[0],
            (2, probe),
            "the probe goes before the 7 bulk reads that were there first"
        );
        assert_eq!(order.len(), 8);
        assert!(b.pool.all_returned());
    }

    #[test]
    fn a_new_flow_goes_before_old_flows_with_deficit_left() {
        // Two backlogged flows of full-size frames, not deep in deficit:
        // round robin alone would serve one of them before the newcomer.
        let mut b = Bench::new(64, usize::MAX);
        for _ in 0..10 {
            b.read(1, 1500);
            b.read(2, 1500);
        }
        for _ in 0..4 {
            let q = b.q.dequeue().unwrap();
            let _ = b.pool.release(q.hold);
        }
        let (probe, _) = b.read(3, 100);
        assert_eq!(b.all()[0], (3, probe), "the newly active flow first");
        assert!(b.pool.all_returned());
    }

    #[test]
    fn only_newly_active_flows_are_served_first() {
        let mut b = Bench::new(16, usize::MAX);
        for _ in 0..3 {
            b.read(1, 65_000);
        }
        let q = b.q.dequeue_new().expect("flow 1 is new");
        let _ = b.pool.release(q.hold);
        assert!(
            b.q.dequeue_new().is_none(),
            "flow 1 spent its quantum: it is backlog now"
        );
        let (probe, _) = b.read(2, 100);
        let q = b.q.dequeue_new().expect("flow 2 is new");
        assert_eq!(q.hold.index(), probe);
        let _ = b.pool.release(q.hold);
        assert!(b.q.dequeue_new().is_none());
        assert_eq!(b.all().len(), 2, "the backlog is still there");
        assert!(b.pool.all_returned());
    }

    #[test]
    fn one_flow_keeps_its_order_and_backlogged_flows_share_by_bytes() {
        let mut b = Bench::new(64, usize::MAX);
        let mut bulk = Vec::new();
        for _ in 0..6 {
            bulk.push(b.read(1, 65_000).0);
        }
        // Flow 3 sends reads a quarter the size: four per bulk read.
        let mut small = Vec::new();
        for _ in 0..24 {
            small.push(b.read(3, 16_250).0);
        }
        let order = b.all();
        let of = |f: u32| -> Vec<usize> {
            order
                .iter()
                .filter(|(g, _)| *g == f)
                .map(|&(_, s)| s)
                .collect()
        };
        assert_eq!(of(1), bulk, "flow 1 in the order read");
        assert_eq!(of(3), small, "flow 3 in the order read");
        // While both are backlogged, each round gives each about a quantum.
        let first_half: Vec<u32> = order[..15].iter().map(|&(f, _)| f).collect();
        let ones = first_half.iter().filter(|&&f| f == 1).count();
        assert!(
            (2..=4).contains(&ones),
            "bytes shared, not reads: {first_half:?}"
        );
        assert!(b.pool.all_returned());
    }

    #[test]
    fn over_the_limit_the_fattest_flow_loses_its_oldest_read() {
        let mut b = Bench::new(16, 180_150);
        let (oldest, _) = b.read(1, 60_000);
        b.read(1, 60_000);
        b.read(2, 100);
        b.read(1, 60_000);
        let (_, dropped) = b.read(2, 100);
        assert_eq!(
            dropped,
            Some((oldest, 1)),
            "the bulk flow pays, at its head, not the sparse flow that came last"
        );
        assert_eq!(b.q.len(), 4);
        let order: Vec<u32> = b.all().iter().map(|&(f, _)| f).collect();
        assert_eq!(order.iter().filter(|&&f| f == 2).count(), 2);
        assert!(b.q.is_empty());
        assert!(b.pool.all_returned());
    }

    #[test]
    fn a_burst_of_small_datagrams_is_held_whole() {
        let mut b = Bench::new(64, 1 << 20);
        for i in 0..60 {
            let (_, dropped) = b.read(7, 200 + i);
            assert_eq!(dropped, None, "the burst fits in bytes");
        }
        assert_eq!(b.all().len(), 60);
        assert_eq!(b.q.bytes(), 0);
        assert!(b.pool.all_returned());
    }

    #[test]
    fn a_flow_that_empties_comes_back_as_new_and_idle_buckets_leave_the_lists() {
        let mut b = Bench::new(16, usize::MAX);
        for round in 0..100 {
            b.read(round % 5, 1000);
            let got = b.all();
            assert_eq!(got.len(), 1);
        }
        assert!(
            b.q.new.is_empty() && b.q.old.is_empty(),
            "no bucket left on a list"
        );
        assert!(b.q.dequeue().is_none());
        assert!(b.pool.all_returned());
    }

    #[test]
    fn one_backlogged_flow_keeps_the_deficit_walking_its_rounds_leaves() {
        let mut b = Bench::new(8, usize::MAX);
        for _ in 0..4 {
            b.read(3, 65_000);
        }
        assert!(b.one(true).is_some());
        // 65,000 bytes put the flow 42 quanta into deficit: served at
        // once, and the deficit it is left with is what walking the
        // rounds one by one leaves.
        assert!(b.one(true).is_some());
        let deficit = b.q.buckets[3].deficit;
        let walked = {
            let mut d = QUANTUM - 65_000;
            while d <= 0 {
                d += QUANTUM;
            }
            d - 65_000
        };
        assert_eq!(deficit, walked);
        assert_eq!(b.all().len(), 2);
        assert!(b.pool.all_returned());
    }

    proptest::proptest! {
        /// Random reads of a few flows (two share a bucket), served any
        /// way and over any limit: counting rounds in deficit at once
        /// serves and drops exactly what walking them one by one does.
        #[test]
        fn counting_rounds_at_once_serves_as_walking_them(
            ops in proptest::collection::vec((0u8..4, 0usize..6, 1u32..70_000), 1..300),
            limit in 50_000usize..3_000_000,
        ) {
            const FLOWS: [u32; 6] = [1, 2, 3, 1025, 7, 9];
            let mut fast = Bench::new(32, limit);
            let mut walk = Bench::new(32, limit);
            walk.q.count_rounds_at_once = false;
            for (op, flow, len) in ops {
                match op {
                    0 | 1 if fast.q.len() < 32 => {
                        let f = FLOWS[flow];
                        proptest::prop_assert_eq!(fast.read(f, len), walk.read(f, len));
                    }
                    2 => proptest::prop_assert_eq!(fast.one(false), walk.one(false)),
                    _ => proptest::prop_assert_eq!(fast.one(true), walk.one(true)),
                }
                proptest::prop_assert_eq!(fast.q.bytes(), walk.q.bytes());
            }
            proptest::prop_assert_eq!(fast.all(), walk.all());
        }
    }

    #[test]
    fn drain_gives_back_every_hold() {
        let mut b = Bench::new(8, usize::MAX);
        for f in 0..8 {
            b.read(f, 500);
        }
        let held: Vec<Queued<Tx, ()>> = b.q.drain().collect();
        assert_eq!(held.len(), 8);
        for q in held {
            let _ = b.pool.release(q.hold);
        }
        assert!(b.pool.all_returned());
    }
}
