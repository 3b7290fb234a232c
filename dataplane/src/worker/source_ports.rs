//! Which flow socket, so which source port, each inner flow leaves from:
//! a flow seen for the first time takes the next port in turn, and keeps
//! it while it is active. One table serves every worker, so a flow keeps
//! its port when the device hands it to another worker.
//!
//! Why in turn rather than by hash: a receiving ringtun steers each
//! datagram to the worker its sender's address plus source port names,
//! modulo the worker count (the flow sockets' ports are consecutive), so flows given out in turn
//! are spread evenly over its workers. A hash spreads a handful of flows
//! only as evenly as chance makes it: eight flows over two workers split
//! 7:1 or worse about one time in fourteen, and a peer's eight flows are
//! a common case. Against a receiver that hashes (the kernel's VXLAN, any
//! other), turns are no worse than a hash.
//!
//! A new flow that starts while one group of ports is busy and another
//! idle goes to the idle one: ports whose index is equal modulo the
//! worker count land on one worker of a receiver with as many workers as
//! this gateway (the usual site-to-site pair), so a probe, a DNS query or
//! an SSH session that starts beside a bulk transfer does not land behind
//! it on the receiving worker, and neither does its answer on the way
//! back, since the answer's gateway does the same. It does not use up the
//! class's turn, so turns stay even. Only an idle group draws a flow: a
//! choice by least load among busy groups would follow TCP's slow start
//! (the group whose flows started last looks lightest) and pile flows up.
//! Flows that start together (within [`LEAST_WINDOW`]) just take turns.
//!
//! The table is a fixed array of atomic words, two ways per set, with no
//! lock and no allocation after start (only a new flow's look at the
//! groups' traffic takes a lock). A flow whose two places are held
//! by flows still active falls back to its hash's port. A place idle for
//! about a second may go to another flow: nothing of its old flow is in
//! flight by then. A flow that takes a place idle for under two seconds
//! gets its hash's port, not a turn: it may be one that was leaving from
//! its hash's port while both places were busy, and must not move while
//! active. Costs per sealed run: one atomic load, one atomic add to the
//! port's byte count (a line shared only by workers sending from that
//! port), and a store every tick (16 ms) at most.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::flow::{Opening, pick};
use super::transmit::Via;

/// Places in the table (a power of two): 32 KiB, room for thousands of
/// active flows before any falls back to its hash.
const SLOTS: usize = 4096;
/// The table's clock: 2^4 ms, about 16 ms a tick.
const TICK_SHIFT: u32 = 4;
/// Bits of the tick kept in an entry (it wraps after about 37 hours; a
/// place idle for half of that looks fresh again, and is held a little
/// longer than it needs).
const TICK_BITS: u32 = 23;
const TICK_MASK: u32 = (1 << TICK_BITS) - 1;
/// Ticks without a packet after which a place may be given to another
/// flow: about one second.
const IDLE_TICKS: u32 = 64;

/// At or above this rate since the last look, a group of ports is busy:
/// 2 Mbit/s, below the ACKs of a bulk transfer coming the other way
/// (about 6 Mbit/s for 5 Gbit/s of GRO'd data), above a probe or a shell.
pub const BUSY_RATE: u64 = 2_000_000 / 8;
/// Below this rate since the last look, a group of ports is idle:
/// 0.5 Mbit/s, handshakes and keepalives.
pub const IDLE_RATE: u64 = 500_000 / 8;
/// The shortest time between two looks at the groups' traffic: new flows
/// closer together than this take turns.
pub const LEAST_WINDOW: Duration = Duration::from_millis(10);

/// An entry: the flow's hash (32 bits), the tick it was last used (23),
/// a bit that says the place is taken, the port's index (8).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Entry(u64);

impl Entry {
    const TAKEN: u64 = 1 << 8;

    fn new(hash: u32, tick: u32, port: u8) -> Entry {
        Entry(
            u64::from(hash) << 32
                | u64::from(tick & TICK_MASK) << 9
                | Entry::TAKEN
                | u64::from(port),
        )
    }

    fn taken(self) -> bool {
        self.0 & Entry::TAKEN != 0
    }

    fn hash(self) -> u32 {
        (self.0 >> 32) as u32
    }

    fn tick(self) -> u32 {
        (self.0 >> 9) as u32 & TICK_MASK
    }

    fn port(self) -> u8 {
        self.0 as u8
    }

    /// Ticks since last use; a tick slightly ahead of `now` (another
    /// worker's batch started later than this one's) is no age at all.
    fn age(self, now: u32) -> u32 {
        let age = now.wrapping_sub(self.tick()) & TICK_MASK;
        if age > TICK_MASK / 2 { 0 } else { age }
    }

    fn idle(self, now: u32) -> bool {
        self.age(now) > IDLE_TICKS
    }
}

/// The shared table of flows and their source ports (see the module docs).
#[derive(Debug)]
pub struct SourcePorts {
    slots: Box<[AtomicU64]>,
    /// The next port to give out to a flow of each [`Opening`], modulo
    /// `ports`.
    next: [AtomicU32; Opening::COUNT],
    /// Flow sockets per family (0: every send leaves from the listen port).
    ports: usize,
    /// Groups of ports that a receiver with this gateway's worker count
    /// gives one worker each (1: no load is looked at).
    groups: usize,
    /// Bytes sent from each port.
    sent: Box<[CachePadded<AtomicU64>]>,
    /// When the last look was, `sent` as it was then, and room for the
    /// groups' traffic since (so a look allocates nothing).
    seen: Mutex<(Instant, Vec<u64>, Vec<u64>)>,
    epoch: Instant,
}

impl SourcePorts {
    /// A table for `ports` flow sockets per family (at most 256 are
    /// used) on a gateway of `workers` workers. Load is looked at only
    /// when the worker count divides the ports (so each turn's group is
    /// known): 2, 4, 8, 16 or 32 workers with 32 ports.
    pub fn new(ports: usize, workers: usize) -> SourcePorts {
        let ports = ports.min(usize::from(u8::MAX) + 1);
        let groups = if workers > 1 && ports.is_multiple_of(workers) {
            workers
        } else {
            1
        };
        let epoch = Instant::now();
        SourcePorts {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            next: std::array::from_fn(|_| AtomicU32::new(0)),
            ports,
            groups,
            sent: (0..ports)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            seen: Mutex::new((epoch, vec![0; ports], vec![0; groups])),
            epoch,
        }
    }

    /// The socket a run of `bytes` of inner-flow hash `flow` leaves from
    /// at `now`, `opening` telling how its packet would open a flow (used
    /// only when the flow is new): the listen socket when the mode keeps
    /// one port (no hash) or there are no flow sockets. Cost: an atomic
    /// load and add; a lock only for a new flow.
    #[inline]
    pub fn via(&self, flow: Option<u32>, opening: Opening, now: Instant, bytes: usize) -> Via {
        match flow {
            Some(h) if self.ports > 0 => {
                let port = self.port(h, opening, now);
                self.sent[usize::from(port)].fetch_add(bytes as u64, Relaxed);
                Via::Flow(port)
            }
            _ => Via::Listen,
        }
    }

    fn tick(&self, now: Instant) -> u32 {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        (ms >> TICK_SHIFT) as u32 & TICK_MASK
    }

    /// The port of flow `hash` at tick `now`, given out in turn within
    /// its class the first time (see the module docs).
    fn port(&self, hash: u32, opening: Opening, at: Instant) -> u8 {
        let now = self.tick(at);
        let set = hash as usize & (SLOTS - 1) & !1;
        let ways = [&self.slots[set], &self.slots[set + 1]];
        let seen = ways.map(|w| Entry(w.load(Relaxed)));
        // Already here: keep its port, and say it is still active.
        for (w, e) in ways.iter().zip(seen) {
            if e.taken() && e.hash() == hash {
                if e.tick() != now & TICK_MASK {
                    let _ = w.compare_exchange(
                        e.0,
                        Entry::new(hash, now, e.port()).0,
                        Relaxed,
                        Relaxed,
                    );
                }
                return e.port();
            }
        }
        // New: a free place takes it, else an idle one. A place idle for
        // under two idle spans was in use lately, so this flow may have
        // been leaving from its hash's port while both were busy: it keeps
        // that port, so that it does not move while active.
        let mut order = [0, 1];
        if seen[0].taken() && !seen[1].taken() {
            order = [1, 0];
        }
        for (w, e) in order.map(|i| (ways[i], seen[i])) {
            if e.taken() && !e.idle(now) {
                continue;
            }
            let port = if e.taken() && e.age(now) <= 2 * IDLE_TICKS {
                pick(hash, self.ports) as u8
            } else {
                self.give(opening, at)
            };
            match w.compare_exchange(e.0, Entry::new(hash, now, port).0, Relaxed, Relaxed) {
                Ok(_) => return port,
                // Another worker took the place at the same time, perhaps
                // for this very flow.
                Err(won) if Entry(won).taken() && Entry(won).hash() == hash => {
                    return Entry(won).port();
                }
                Err(_) => {}
            }
        }
        // Both places held by active flows: the hash, which is stable.
        pick(hash, self.ports) as u8
    }

    /// A port for a new flow of class `opening`: the class's next turn;
    /// or, when that turn's group is busy and another is idle, a port of
    /// the idle group, the turn left for the next flow.
    fn give(&self, opening: Opening, at: Instant) -> u8 {
        let next = &self.next[opening.index()];
        let turn = next.load(Relaxed) as usize % self.ports;
        let group = turn % self.groups;
        if let Some(idle) = self.idle_instead_of(group, at) {
            // `turn - group` is the first port of the turn's round.
            return (turn - group + idle) as u8;
        }
        (next.fetch_add(1, Relaxed) as usize % self.ports) as u8
    }

    /// The idle group with the least traffic since the last look, if
    /// `group` is busy ([`IDLE_RATE`], [`BUSY_RATE`]); `None` when the
    /// look is too soon ([`LEAST_WINDOW`]), `group` is not busy or no group
    /// is idle.
    fn idle_instead_of(&self, group: usize, at: Instant) -> Option<usize> {
        if self.groups < 2 {
            return None;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (when, before, load) = &mut *seen;
        let window = at.saturating_duration_since(*when);
        if window < LEAST_WINDOW {
            return None;
        }
        load.fill(0);
        for (i, (sent, before)) in self.sent.iter().zip(before.iter_mut()).enumerate() {
            let now = sent.load(Relaxed);
            load[i % self.groups] += now.saturating_sub(*before);
            *before = now;
        }
        *when = at;
        let rate = |bytes: u64| u128::from(bytes) * 1_000_000 / window.as_micros().max(1);
        let (least, &low) = load.iter().enumerate().min_by_key(|(_, l)| **l)?;
        (rate(load[group]) >= u128::from(BUSY_RATE) && rate(low) < u128::from(IDLE_RATE))
            .then_some(least)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    fn port_of(t: &SourcePorts, hash: u32, at: Instant) -> u8 {
        opened(t, hash, Opening::Other, at)
    }

    fn opened(t: &SourcePorts, hash: u32, opening: Opening, at: Instant) -> u8 {
        match t.via(Some(hash), opening, at, 100) {
            Via::Flow(k) => k,
            Via::Listen => panic!("flow {hash:#x} left from the listen port"),
        }
    }

    /// Eight flows over 32 ports take eight consecutive ones, so a
    /// receiver steering by address plus port modulo 2 gets four each; hashing them
    /// would not (these eight hashes all pick the lower half of the ports).
    #[test]
    fn new_flows_take_the_ports_in_turn() {
        let t = SourcePorts::new(32, 2);
        let now = Instant::now();
        let hashes: Vec<u32> = (0..8u32).map(|i| i * 0x0100_0001).collect();
        let ports: Vec<u8> = hashes.iter().map(|&h| port_of(&t, h, now)).collect();
        assert_eq!(ports, (0..8).collect::<Vec<u8>>());
        let even = ports.iter().filter(|p| *p % 2 == 0).count();
        assert_eq!(even, 4);
        assert!(hashes.iter().all(|&h| pick(h, 32) < 16));
    }

    /// Connections opened alternately from each side: the openings and
    /// the answers each take the ports in turn, so each class is spread
    /// evenly over a receiver's two workers (one turn for all would give
    /// every opening an even port).
    #[test]
    fn each_class_takes_its_own_turns() {
        let t = SourcePorts::new(32, 2);
        let now = Instant::now();
        let mut syn = Vec::new();
        let mut syn_ack = Vec::new();
        for i in 0..8u32 {
            syn.push(opened(&t, 0x10 + 4 * i, Opening::Syn, now));
            syn_ack.push(opened(&t, 0x1000 + 4 * i, Opening::SynAck, now));
        }
        let even = |v: &[u8]| v.iter().filter(|p| *p % 2 == 0).count();
        assert_eq!((even(&syn), even(&syn_ack)), (4, 4), "{syn:?} {syn_ack:?}");
    }

    /// A flow keeps its port for every later packet, whichever worker
    /// (here: the same table from another thread) asks.
    #[test]
    fn a_flow_keeps_its_port_from_every_worker() {
        let t = std::sync::Arc::new(SourcePorts::new(32, 2));
        let now = Instant::now();
        let first: Vec<u8> = (0..100u32).map(|h| port_of(&t, h * 7919, now)).collect();
        let t2 = t.clone();
        let again = std::thread::spawn(move || {
            (0..100u32)
                .map(|h| port_of(&t2, h * 7919, now + Duration::from_millis(500)))
                .collect::<Vec<u8>>()
        })
        .join()
        .unwrap();
        assert_eq!(first, again);
    }

    /// A place whose flow has been idle for over a second goes to the next
    /// flow that needs it; a place in use does not, and the newcomer then
    /// leaves from its hash's port, and keeps it when it takes a place
    /// freed lately. A place idle for long gives a new flow a turn.
    #[test]
    fn idle_places_are_reused_and_busy_ones_kept() {
        let t = SourcePorts::new(32, 2);
        let t0 = Instant::now();
        // Four flows with the same set (equal low bits), different hashes.
        let (a, b, c, d) = (0x1000_0000u32, 0x2000_0000u32, 0x3000_0000u32, 0x5000_0000);
        assert_eq!(port_of(&t, a, t0), 0);
        assert_eq!(port_of(&t, b, t0), 1);
        // Both ways busy: c falls back to its hash, and stays there.
        let hashed = pick(c, 32) as u8;
        assert_ne!(hashed, 2, "the hash must differ from the next turn");
        assert_eq!(port_of(&t, c, t0), hashed);
        assert_eq!(port_of(&t, c, t0 + Duration::from_millis(100)), hashed);
        // a stays active, b goes idle: c takes b's place and, active all
        // along, keeps its port.
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(port_of(&t, a, later - Duration::from_millis(300)), 0);
        assert_eq!(port_of(&t, a, later), 0);
        assert_eq!(port_of(&t, c, later), hashed);
        assert_eq!(port_of(&t, c, later + Duration::from_millis(10)), hashed);
        // b, back after its idle second, finds both places busy: its hash.
        assert_eq!(
            port_of(&t, b, later + Duration::from_millis(20)),
            pick(b, 32) as u8
        );
        // Long after, a and c idle for seconds: d takes a turn, the next.
        let much_later = later + Duration::from_secs(5);
        assert_eq!(port_of(&t, d, much_later), 2);
    }

    /// A worker whose batch started a little earlier than another's sees
    /// the other's fresher tick as no age, not as an age near the wrap.
    #[test]
    fn a_tick_from_a_later_batch_is_no_age() {
        let e = Entry::new(7, 1001, 3);
        assert_eq!(e.age(1000), 0);
        assert!(!e.idle(1000));
        assert_eq!(e.age(1001 + 65), 65);
        assert!(e.idle(1001 + 65));
        let wrapped = Entry::new(7, TICK_MASK, 3);
        assert_eq!(wrapped.age(2), 3);
    }

    #[test]
    fn without_a_hash_or_ports_the_listen_socket() {
        let now = Instant::now();
        assert_eq!(
            SourcePorts::new(32, 2).via(None, Opening::Syn, now, 1),
            Via::Listen
        );
        assert_eq!(
            SourcePorts::new(0, 2).via(Some(7), Opening::Other, now, 1),
            Via::Listen
        );
    }

    /// A probe that starts while a bulk flow runs takes a port of the
    /// other group, whatever its turn; flows that start together, or with
    /// only a trickle between them, take turns.
    #[test]
    fn a_new_flow_avoids_the_group_that_carries_bulk() {
        let t0 = Instant::now();
        for bulk_group in 0..2u8 {
            let t = SourcePorts::new(32, 2);
            // Turn the bulk's class until its next port is in bulk_group.
            let bulk = (0..4u32)
                .map(|i| opened(&t, 0x100 + 2 * i, Opening::Syn, t0))
                .find(|p| p % 2 == bulk_group)
                .unwrap();
            // Bulk on its port: 6 MB every 10 ms (4.8 Gbit/s), and now and
            // then a new flow.
            for k in 1..=200u64 {
                let at = t0 + Duration::from_millis(10 * k);
                let via = t.via(
                    Some(0x100 + 2 * u32::from(bulk)),
                    Opening::Syn,
                    at,
                    6_000_000,
                );
                assert!(matches!(via, Via::Flow(p) if p == bulk));
                if k >= 100 && k % 25 == 0 {
                    let probe = opened(&t, 0x9000 + 2 * k as u32, Opening::Other, at);
                    assert_ne!(
                        probe % 2,
                        bulk % 2,
                        "probe at {k}0 ms on port {probe}, bulk on {bulk}"
                    );
                }
            }
        }
        // Both groups busy: turns, though one group carries more than the
        // other (a choice by least load would send flows 2 and 4 to odd
        // ports, where the lighter flows are).
        let t = SourcePorts::new(32, 2);
        let mut ports: Vec<u8> = Vec::new();
        for i in 0..6u32 {
            let at = t0 + Duration::from_millis(50 * u64::from(i));
            for (j, _) in ports.iter().enumerate() {
                let mb = if j % 2 == 0 { 8 } else { 1 };
                let _ = t.via(Some(0x700 + 2 * j as u32), Opening::Syn, at, mb << 20);
            }
            ports.push(opened(&t, 0x700 + 2 * i, Opening::Syn, at));
        }
        assert_eq!(ports, (0..6).collect::<Vec<u8>>());
        // No bulk: a trickle between flows is no reason to leave turns.
        let t = SourcePorts::new(32, 2);
        let mut ports = Vec::new();
        for i in 0..8u32 {
            let at = t0 + Duration::from_millis(50 * u64::from(i));
            let p = opened(&t, 0x500 + 2 * i, Opening::Syn, at);
            let _ = t.via(Some(0x500 + 2 * i), Opening::Syn, at, 1500);
            ports.push(p);
        }
        assert_eq!(ports, (0..8).collect::<Vec<u8>>());
    }

    /// With a worker count that does not divide the ports, or one worker,
    /// no group is looked at: turns only.
    #[test]
    fn groups_only_where_the_workers_divide_the_ports() {
        assert_eq!(SourcePorts::new(32, 3).groups, 1);
        assert_eq!(SourcePorts::new(32, 1).groups, 1);
        assert_eq!(SourcePorts::new(32, 4).groups, 4);
    }

    /// Four groups: a flow whose turn falls in a busy group goes to the
    /// quietest idle group and leaves the turn for the next flow; a flow
    /// whose turn falls in an idle group keeps its turn, even if another
    /// idle group is quieter.
    #[test]
    fn only_a_busy_turn_is_moved_and_the_turn_is_kept() {
        let t0 = Instant::now();
        let syn = Opening::Syn.index();
        let t = SourcePorts::new(32, 4);
        let flows: Vec<u8> = (0..4u32)
            .map(|i| opened(&t, 0x40 + 2 * i, Opening::Syn, t0))
            .collect();
        assert_eq!(flows, [0, 1, 2, 3]);
        for k in 1..=2u64 {
            let at = t0 + Duration::from_millis(50 * k);
            // Groups 0 and 1 busy, group 3 a trickle, group 2 silent.
            let _ = t.via(Some(0x40), Opening::Syn, at, 1 << 20);
            let _ = t.via(Some(0x42), Opening::Syn, at, 1 << 20);
            let _ = t.via(Some(0x46), Opening::Syn, at, 100);
            // The next turn (4) is in busy group 0: group 2's first port
            // of that round, and the turn stays where it was.
            assert_eq!(opened(&t, 0x1000 + 2 * k as u32, Opening::Syn, at), 6);
            assert_eq!(t.next[syn].load(Relaxed), 4);
        }
        // A turn in an idle group stays: group 3's port, not group 2's.
        let t = SourcePorts::new(32, 4);
        for i in 0..3u32 {
            assert_eq!(opened(&t, 0x40 + 2 * i, Opening::Syn, t0), i as u8);
        }
        let at = t0 + Duration::from_millis(50);
        let _ = t.via(Some(0x40), Opening::Syn, at, 1 << 20);
        let _ = t.via(Some(0x42), Opening::Syn, at, 1 << 20);
        assert_eq!(opened(&t, 0x1000, Opening::Syn, at), 3);
    }
}
