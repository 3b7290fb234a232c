//! A peer's traffic counters: one lane per writing thread (each data-plane
//! worker, and the control thread for the packets it sends itself), each
//! on its own cache line, summed when someone asks. A peer owns its
//! counters, so they come and go with it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Packets and bytes both ways, as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets sent to the peer.
    pub tx_packets: u64,
    /// Plaintext bytes sent to the peer.
    pub tx_bytes: u64,
    /// Packets received from the peer and delivered.
    pub rx_packets: u64,
    /// Plaintext bytes received from the peer and delivered.
    pub rx_bytes: u64,
}

/// One writer's counters for one peer. A lane has exactly one writing
/// thread, so a relaxed load and store replace a locked `fetch_add`.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct TrafficLane {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
}

#[inline]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl TrafficLane {
    /// Counts `packets` sent, `bytes` of plaintext.
    #[inline]
    pub fn sent(&self, packets: u64, bytes: u64) {
        add(&self.tx_packets, packets);
        add(&self.tx_bytes, bytes);
    }

    /// Counts `packets` received and delivered, `bytes` of plaintext.
    #[inline]
    pub fn received(&self, packets: u64, bytes: u64) {
        add(&self.rx_packets, packets);
        add(&self.rx_bytes, bytes);
    }

    fn read(&self) -> Traffic {
        Traffic {
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Every lane of one peer.
#[derive(Debug)]
pub struct PeerTraffic {
    lanes: Box<[TrafficLane]>,
}

impl PeerTraffic {
    /// Counters with `lanes` lanes (at least one).
    pub fn new(lanes: usize) -> PeerTraffic {
        PeerTraffic {
            lanes: (0..lanes.max(1)).map(|_| TrafficLane::default()).collect(),
        }
    }

    /// Lane `i`; out of range, the last lane (a misnumbered writer shares
    /// a lane and may lose counts, never packets).
    #[inline]
    pub fn lane(&self, i: usize) -> &TrafficLane {
        let last = self.lanes.len() - 1;
        &self.lanes[i.min(last)]
    }

    /// Each lane on its own, in lane order (a worker's share of a peer's
    /// packets, for `ringtun show`).
    pub fn by_lane(&self) -> Vec<Traffic> {
        self.lanes.iter().map(TrafficLane::read).collect()
    }

    /// The sum of every lane.
    pub fn total(&self) -> Traffic {
        self.lanes
            .iter()
            .map(TrafficLane::read)
            .fold(Traffic::default(), |a, b| Traffic {
                tx_packets: a.tx_packets + b.tx_packets,
                tx_bytes: a.tx_bytes + b.tx_bytes,
                rx_packets: a.rx_packets + b.rx_packets,
                rx_bytes: a.rx_bytes + b.rx_bytes,
            })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn lanes_sum_and_a_stray_lane_number_lands_in_the_last() {
        let t = PeerTraffic::new(3);
        t.lane(0).sent(2, 100);
        t.lane(1).received(1, 40);
        t.lane(9).sent(1, 1);
        assert_eq!(
            t.total(),
            Traffic {
                tx_packets: 3,
                tx_bytes: 101,
                rx_packets: 1,
                rx_bytes: 40
            }
        );
        assert_eq!(std::mem::align_of::<TrafficLane>(), 64, "one line per lane");
        assert_eq!(PeerTraffic::new(0).total(), Traffic::default());
        let lanes = t.by_lane();
        assert_eq!(lanes.len(), 3);
        assert_eq!((lanes[0].tx_packets, lanes[1].rx_packets), (2, 1));
        // The misnumbered writer landed in the last lane.
        assert_eq!(lanes[2].tx_bytes, 1);
    }
}
