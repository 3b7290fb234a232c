//! Device writes: the opened packets of one receive go to the device
//! either where they were received (no copy: a zeroed virtio-net header is
//! written into the 10 bytes in front of each, which held its outer
//! header) or, for runs of one TCP flow, as one super-packet that the
//! kernel's stack takes as a single GRO packet: its headers in a write
//! slot, its payload where it was received, gathered by one vectored write
//! (no copy of the payload either).

use super::slots::{Hold, Pool, Wr};
use crate::offload::{Coalescer, MAX_SUPER_HEADER, Write};

/// A write slot: a super-packet's headers (the payload is never copied).
pub const WRITE_SLOT_LEN: usize = MAX_SUPER_HEADER.next_multiple_of(64);
/// Write slots per worker.
pub const WRITE_SLOTS: usize = 64;
/// Most write slots one receive may fill, so that one burst cannot take
/// them all.
pub const MAX_SLOTS_PER_RECEIVE: usize = 8;

/// How one packet, or several merged, reach the device.
#[derive(Debug)]
pub enum Planned {
    /// Packet `n` of the receive, written where it is.
    Alone(usize),
    /// A super-packet of `segments` packets whose headers are in the write
    /// slot `slot` holds; the coalescer's output buffer `buffer` names its
    /// payload ([`Coalescer::payloads`]).
    Coalesced {
        /// The slot, held until its write completes.
        slot: Hold<Wr>,
        /// The coalescer's output buffer it was.
        buffer: usize,
        /// Packets merged into it.
        segments: usize,
    },
}

/// Plans the writes of one receive's opened `packets`, in the order they
/// must be issued: with a coalescer and at least two packets, runs of one
/// flow go into free write slots (at most [`MAX_SLOTS_PER_RECEIVE`]);
/// everything else alone. `slot_bytes` gives the memory of a held slot.
/// Slots the coalescer did not fill go back to the pool.
pub fn plan<'a>(
    coalescer: Option<&mut Coalescer>,
    packets: &[&[u8]],
    pool: &mut Pool<Wr>,
    mut slot_bytes: impl FnMut(&Hold<Wr>) -> &'a mut [u8],
    mut emit: impl FnMut(Planned),
) {
    let alone = |emit: &mut dyn FnMut(Planned)| {
        for n in 0..packets.len() {
            emit(Planned::Alone(n));
        }
    };
    let Some(coalescer) = coalescer.filter(|_| packets.len() >= 2) else {
        return alone(&mut emit);
    };
    let mut holds: [Option<Hold<Wr>>; MAX_SLOTS_PER_RECEIVE] = Default::default();
    let mut bufs: [&mut [u8]; MAX_SLOTS_PER_RECEIVE] = Default::default();
    let mut n = 0;
    while n < MAX_SLOTS_PER_RECEIVE {
        let Some(h) = pool.take_free() else { break };
        bufs[n] = slot_bytes(&h);
        holds[n] = Some(h);
        n += 1;
    }
    if n == 0 {
        return alone(&mut emit);
    }
    match coalescer.coalesce(packets, &mut bufs[..n]) {
        Ok(writes) => {
            for w in writes {
                match *w {
                    Write::Alone { packet } => emit(Planned::Alone(packet)),
                    Write::Super {
                        buffer, segments, ..
                    } => match holds.get_mut(buffer).and_then(Option::take) {
                        Some(slot) => emit(Planned::Coalesced {
                            slot,
                            buffer,
                            segments,
                        }),
                        None => debug_assert!(false, "the coalescer named buffer {buffer} twice"),
                    },
                }
            }
        }
        Err(_) => alone(&mut emit),
    }
    for h in holds.into_iter().flatten() {
        let _ = pool.release(h);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::offload::testutil::{Spec, wire_packet};
    use crate::offload::{CoalesceConfig, Framing};
    use crate::worker::slots::Home;

    /// Plans `packets` with `slots` free write slots; returns the plan as
    /// (alone packet | segments per super-packet) and gives the slots back.
    fn planned(packets: &[Vec<u8>], slots: usize, coalesce: bool) -> (Vec<String>, Pool<Wr>) {
        let mut pool = Pool::new(slots, Home::FreeList);
        let mut store: Vec<Vec<u8>> = (0..slots).map(|_| vec![0u8; WRITE_SLOT_LEN]).collect();
        let mut mem: Vec<Option<&mut [u8]>> = store.iter_mut().map(|v| Some(&mut v[..])).collect();
        let mut c = Coalescer::new(CoalesceConfig {
            framing: Framing::Ip,
            tcp: true,
            udp: false,
            verify_checksums: true,
        });
        let pkts: Vec<&[u8]> = packets.iter().map(|p| &p[..]).collect();
        let mut out = Vec::new();
        let mut done = Vec::new();
        plan(
            coalesce.then_some(&mut c),
            &pkts,
            &mut pool,
            |h| mem[h.index()].take().expect("a slot lent once"),
            |p| match p {
                Planned::Alone(n) => out.push(format!("alone {n}")),
                Planned::Coalesced { slot, segments, .. } => {
                    out.push(format!("super {segments}"));
                    done.push(slot);
                }
            },
        );
        for h in done {
            let _ = pool.release(h);
        }
        (out, pool)
    }

    fn flow(n: usize) -> Vec<Vec<u8>> {
        let spec = Spec {
            payload: 1000,
            ..Spec::tcp4()
        };
        (0..n)
            .map(|i| wire_packet(&spec.advanced(i * 1000)))
            .collect()
    }

    #[test]
    fn a_run_of_one_flow_is_coalesced_and_the_rest_written_alone() {
        let mut pkts = flow(3);
        pkts.push(wire_packet(&Spec {
            payload: 100,
            ..Spec::udp4()
        }));
        let (plan, pool) = planned(&pkts, 4, true);
        assert_eq!(plan, vec!["super 3", "alone 3"]);
        assert!(pool.all_returned(), "unused slots went back");
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn without_a_coalescer_a_single_packet_or_free_slots_all_go_alone() {
        let pkts = flow(3);
        assert_eq!(
            planned(&pkts, 4, false).0,
            vec!["alone 0", "alone 1", "alone 2"]
        );
        assert_eq!(planned(&pkts[..1], 4, true).0, vec!["alone 0"]);
        assert_eq!(
            planned(&pkts, 0, true).0,
            vec!["alone 0", "alone 1", "alone 2"]
        );
    }
}
