//! A device read: from the bytes the kernel wrote into a transmit slot to
//! sealed datagrams ready to send. The virtio-net header says whether the
//! read is one packet or a super-packet; one packet is sealed where it was
//! read (no copy). A super-packet is split: every segment needs its own
//! headers. Where sealing encrypts (wireguard), each segment is written
//! whole into the slot's segment area at a fixed stride and sealed there
//! (one copy per segment). Where it only puts a header in front (vxlan,
//! [`Mode::SEALS_HEADER_ONLY`]), only each segment's headers are written
//! there, one after another, and sealed; the payload is sent from where it
//! was read, each datagram two iovecs (no copy of the payload).
//!
//! A transmit slot:
//! ```text
//! 0        READ_OFFSET   PACKET_OFFSET                      segment area
//! | room for  | vnet hdr  | packet (up to MAX_READ) ...       | seg 0 | seg 1 | ...
//! | the outer header sealing writes in front of the packet  |   sealed at a stride
//! |                       | hdrs | payload 0 | payload 1 ... | hdrs 0 | hdrs 1 | ... (apart)
//! ```

use std::time::Instant;

use tunnel_proto::DropReason;

use super::flow::{Opening, flow_hash, frame_opening, packet_flow_hash, packet_opening};
use super::sched::{Apart, Run};
use crate::counters::WorkerCounters;
use crate::handoff::ControlLink;
use crate::mode::{Mode, Route, SealError};
use crate::offload::{
    ETHERNET_VLAN_HEADER_LEN, Framing, GsoSplit, GsoType, MAX_SEGMENTS, VNET_HDR_LEN, VnetHeader,
    finish_checksum,
};

/// Where the inner packet starts in a transmit slot: room for the largest
/// encapsulation header (16) and, just before the packet, the virtio-net
/// header (10).
pub const PACKET_OFFSET: usize = 16;
/// Largest read from the device: a 64 KiB super-packet plus its header.
/// A TAP frame adds its Ethernet header (with a VLAN tag) to the 64 KiB
/// packet. The device reports a packet's full length even when it did not
/// fit, so a read above this is a truncated packet.
pub const MAX_READ: usize = VNET_HDR_LEN + ETHERNET_VLAN_HEADER_LEN + 65_535;

/// Room per segment beyond its share of the payload: the largest link, IP
/// and TCP headers (18 + 60 + 60) and the outer header and tail sealing
/// adds (at most 16 + 31), rounded up.
const SEGMENT_OVERHEAD: usize = 192;
/// The largest segment size the segment area is sized for: a jumbo frame.
/// The area does not depend on the device's MTU, which can change while
/// the workers run (wg-quick sets it after starting the daemon).
const LARGEST_SEGMENT: usize = 9216;

/// How a worker's transmit slots are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    /// Bytes of virtio-net header in front of each read (0 or 10).
    pub vnet: usize,
    /// IP packets (TUN) or Ethernet frames (TAP).
    pub framing: Framing,
    /// Where the segment area starts in the slot.
    pub seg_area: usize,
    /// How long it is (0 without offloads: nothing is ever split).
    pub seg_area_len: usize,
}

impl SlotLayout {
    /// The layout with (`vnet`) or without offloads. The segment area
    /// holds any super-packet: at most 64 KiB of payload in at most
    /// [`MAX_SEGMENTS`] segments, each with its headers and seal, the
    /// last laid out at full stride (up to [`LARGEST_SEGMENT`]).
    pub fn new(vnet: bool, framing: Framing) -> SlotLayout {
        SlotLayout {
            vnet: if vnet { VNET_HDR_LEN } else { 0 },
            framing,
            // The read area plus room for a sealed single packet's tail.
            seg_area: (PACKET_OFFSET + MAX_READ + 64).div_ceil(64) * 64,
            seg_area_len: if vnet {
                (65_535 + MAX_SEGMENTS * SEGMENT_OVERHEAD + LARGEST_SEGMENT).div_ceil(64) * 64
            } else {
                0
            },
        }
    }

    /// Bytes of one transmit slot.
    pub fn slot_len(&self) -> usize {
        self.seg_area + self.seg_area_len
    }

    /// Where a read lands in the slot (its virtio-net header first).
    pub fn read_offset(&self) -> usize {
        PACKET_OFFSET - self.vnet
    }
}

/// What a read became: the sealed datagrams, where they go, and the flow
/// they carry.
#[derive(Debug)]
pub struct SealedRead<T> {
    /// The sealed datagrams, laid out in the slot.
    pub run: Run,
    /// Where they go.
    pub targets: T,
    /// The hash of the inner flow ([`flow_hash`], [`packet_flow_hash`]),
    /// when the mode spreads flows over source ports
    /// ([`Mode::FLOW_SOURCE_PORTS`]) and the targets take it. A
    /// super-packet is one flow: its segments share it.
    pub flow: Option<u32>,
}

/// The hash of the inner flow a read of `n` bytes (virtio-net header
/// included) into `slot` carries: which flow queue it waits in and, in a
/// mode that spreads flows, which source port it leaves from. A
/// super-packet is one flow. Cost: a look at the headers, once per read.
/// A read too short or too long hashes as flow 0 (sealing drops it).
pub fn read_flow(layout: &SlotLayout, slot: &[u8], n: usize) -> u32 {
    if n <= layout.vnet || n > MAX_READ || slot.len() < PACKET_OFFSET + n - layout.vnet {
        return 0;
    }
    let pkt = &slot[PACKET_OFFSET..PACKET_OFFSET + n - layout.vnet];
    match layout.framing {
        Framing::Ethernet => flow_hash(pkt),
        Framing::Ip => packet_flow_hash(pkt),
    }
}

/// How the packet of a read of `n` bytes into `slot` would open a flow
/// ([`Opening`]): taken with [`read_flow`], before sealing. Cost: a look
/// at the headers.
pub fn read_opening(layout: &SlotLayout, slot: &[u8], n: usize) -> Opening {
    if n <= layout.vnet || n > MAX_READ || slot.len() < PACKET_OFFSET + n - layout.vnet {
        return Opening::Other;
    }
    let pkt = &slot[PACKET_OFFSET..PACKET_OFFSET + n - layout.vnet];
    match layout.framing {
        Framing::Ethernet => frame_opening(pkt),
        Framing::Ip => packet_opening(pkt),
    }
}

/// Handles a read of `n` bytes (virtio-net header included) into `slot`,
/// of the inner flow `flow` ([`read_flow`], taken before sealing, which
/// encrypts the headers in place): routes, splits and seals it for `mode`.
/// Returns the sealed datagrams as a run in the slot, their targets and,
/// when they leave from the flow's own port, their flow; `None` if nothing
/// is to be sent (dropped and counted, or staged with the control thread).
#[allow(clippy::too_many_arguments)]
pub fn seal_read<'b, M: Mode>(
    layout: &SlotLayout,
    mode: &'b M,
    view: &'b M::Batch<'_>,
    lane: usize,
    now: Instant,
    slot: &mut [u8],
    n: usize,
    flow: u32,
    link: &ControlLink<M::Event, M::Peer>,
    counters: &WorkerCounters,
) -> Option<SealedRead<M::Targets<'b>>> {
    if n <= layout.vnet || n > MAX_READ || slot.len() < layout.slot_len() {
        counters.drop_packet(DropReason::Malformed);
        return None;
    }
    let len = n - layout.vnet;
    let (run, targets, spread) =
        seal_packet(layout, mode, view, lane, now, slot, len, link, counters)?;
    Some(SealedRead {
        run,
        targets,
        flow: (M::FLOW_SOURCE_PORTS && spread).then_some(flow),
    })
}

/// One packet or super-packet of `len` bytes at [`PACKET_OFFSET`], sealed.
#[allow(clippy::too_many_arguments)]
fn seal_packet<'b, M: Mode>(
    layout: &SlotLayout,
    mode: &'b M,
    view: &'b M::Batch<'_>,
    lane: usize,
    now: Instant,
    slot: &mut [u8],
    len: usize,
    link: &ControlLink<M::Event, M::Peer>,
    counters: &WorkerCounters,
) -> Option<(Run, M::Targets<'b>, bool)> {
    if layout.vnet > 0 {
        let (hdr, pkt) =
            slot[PACKET_OFFSET - VNET_HDR_LEN..PACKET_OFFSET + len].split_at_mut(VNET_HDR_LEN);
        let Ok(hdr) = VnetHeader::parse(hdr) else {
            counters.drop_packet(DropReason::Malformed);
            return None;
        };
        if hdr.gso_type != GsoType::None {
            counters.dev_read_gso.inc();
            return seal_split(
                layout, mode, view, lane, now, slot, &hdr, len, link, counters,
            );
        }
        // Cost: one pass over the L4 bytes to finish the checksum the
        // kernel left partial; no copy.
        if finish_checksum(&hdr, pkt).is_err() {
            counters.drop_packet(DropReason::Malformed);
            return None;
        }
    }
    let route = mode.route(view, &slot[PACKET_OFFSET..PACKET_OFFSET + len]);
    if let Route::Drop(r) = route {
        counters.drop_packet(r);
        return None;
    }
    // Sealed where it was read: the outer header goes in the room before it.
    let rel = PACKET_OFFSET - M::HEADROOM;
    let buf = &mut slot[rel..PACKET_OFFSET + len + M::TAILROOM];
    match mode.seal(view, lane, now, route, buf, len) {
        Ok(sealed) => {
            if let Some(ev) = sealed.event {
                link.event(ev, counters);
            }
            Some((Run::single(rel, sealed.len), sealed.targets, sealed.spread))
        }
        Err(SealError::Stage(peer)) => {
            link.stage(peer, &slot[PACKET_OFFSET..PACKET_OFFSET + len], counters);
            None
        }
        Err(SealError::Drop(r)) => {
            counters.drop_packet(r);
            None
        }
    }
}

/// A super-packet: each segment written once into the segment area at a
/// fixed stride and sealed there. Segments that find no session (all of
/// them, in practice: they share a peer and a snapshot) are staged; only
/// the sealed ones before the first of those are sent.
#[allow(clippy::too_many_arguments)]
fn seal_split<'b, M: Mode>(
    layout: &SlotLayout,
    mode: &'b M,
    view: &'b M::Batch<'_>,
    lane: usize,
    now: Instant,
    slot: &mut [u8],
    hdr: &VnetHeader,
    len: usize,
    link: &ControlLink<M::Event, M::Peer>,
    counters: &WorkerCounters,
) -> Option<(Run, M::Targets<'b>, bool)> {
    let (read, area) = slot.split_at_mut(layout.seg_area);
    let pkt = &read[PACKET_OFFSET..PACKET_OFFSET + len];
    let Ok(split) = GsoSplit::new(hdr, pkt, layout.framing) else {
        counters.drop_packet(DropReason::Malformed);
        return None;
    };
    let route = mode.route(view, pkt);
    if let Route::Drop(r) = route {
        counters.drop_packet(r);
        return None;
    }
    let seg_max = split.segment_size();
    let stride_max = M::HEADROOM + seg_max + M::TAILROOM;
    let count = split.segment_count();
    if stride_max * count > layout.seg_area_len.min(area.len()) {
        counters.drop_packet(DropReason::Malformed);
        return None;
    }
    counters.dev_read_gso_segments.add(count as u64);
    if M::SEALS_HEADER_ONLY {
        match seal_headers(
            layout, mode, view, lane, now, &split, route, area, link, counters,
        ) {
            HeadersSealed::Sent(run, targets, spread) => return Some((run, targets, spread)),
            HeadersSealed::Dropped => return None,
            HeadersSealed::MustStage => {}
        }
    }
    let mut stride = 0usize;
    let mut total = 0usize;
    let mut sealed_count = 0usize;
    let mut targets = None;
    for i in 0..count {
        // Every segment but the last is `stride` long once sealed; until
        // the first is sealed, lay them out at the largest size.
        let at = i * if stride == 0 { stride_max } else { stride };
        let out = &mut area[at..at + stride_max];
        let Ok(n) = split.write_segment(i, &mut out[M::HEADROOM..M::HEADROOM + seg_max]) else {
            counters.drop_packet(DropReason::Malformed);
            return None;
        };
        match mode.seal(view, lane, now, route, out, n) {
            Ok(sealed) => {
                if let Some(ev) = sealed.event {
                    link.event(ev, counters);
                }
                if stride == 0 {
                    stride = sealed.len;
                }
                total = at + sealed.len;
                sealed_count += 1;
                targets = Some((sealed.targets, sealed.spread));
            }
            Err(SealError::Stage(peer)) => {
                link.stage(peer, &out[M::HEADROOM..M::HEADROOM + n], counters);
                // The rest cannot be sent either: stage them too.
                for j in i + 1..count {
                    let out = &mut area[at..at + stride_max];
                    if let Ok(n) =
                        split.write_segment(j, &mut out[M::HEADROOM..M::HEADROOM + seg_max])
                    {
                        link.stage(peer, &out[M::HEADROOM..M::HEADROOM + n], counters);
                    }
                }
                break;
            }
            Err(SealError::Drop(r)) => {
                counters.drop_packet(r);
                return None;
            }
        }
    }
    let run = Run {
        offset: layout.seg_area,
        total,
        stride,
        count: sealed_count,
        apart: None,
    };
    targets.map(|(t, spread)| (run, t, spread))
}

/// What became of a super-packet whose segments' headers were sealed
/// alone.
enum HeadersSealed<T> {
    /// Every segment sealed: the run to send apart, its targets, and
    /// whether its flow spreads.
    Sent(Run, T, bool),
    /// Dropped and counted.
    Dropped,
    /// The route stages its packets (no session yet), which needs whole
    /// segments: nothing was counted, the caller writes them whole.
    MustStage,
}

/// A super-packet for a mode that seals headers alone: each segment's
/// headers are written and sealed in the segment area, one after another,
/// and its payload is sent from where it was read (no copy).
#[allow(clippy::too_many_arguments)]
fn seal_headers<'b, M: Mode>(
    layout: &SlotLayout,
    mode: &'b M,
    view: &'b M::Batch<'_>,
    lane: usize,
    now: Instant,
    split: &GsoSplit<'_>,
    route: Route<M::Peer>,
    area: &mut [u8],
    link: &ControlLink<M::Event, M::Peer>,
    counters: &WorkerCounters,
) -> HeadersSealed<M::Targets<'b>> {
    let hl = split.headers_len();
    let head = M::HEADROOM + hl;
    let count = split.segment_count();
    let (Some(first), Some(last)) = (split.payload_range(0), split.payload_range(count - 1)) else {
        counters.drop_packet(DropReason::Malformed);
        return HeadersSealed::Dropped;
    };
    if hl == 0 || head * count > layout.seg_area_len.min(area.len()) {
        counters.drop_packet(DropReason::Malformed);
        return HeadersSealed::Dropped;
    }
    let mut targets = None;
    for i in 0..count {
        let out = &mut area[i * head..(i + 1) * head];
        let (Ok(_), Some(payload)) = (
            split.write_headers(i, &mut out[M::HEADROOM..]),
            split.payload_range(i),
        ) else {
            counters.drop_packet(DropReason::Malformed);
            return HeadersSealed::Dropped;
        };
        match mode.seal(view, lane, now, route, out, hl + payload.len()) {
            Ok(sealed) => {
                if let Some(ev) = sealed.event {
                    link.event(ev, counters);
                }
                targets = Some((sealed.targets, sealed.spread));
            }
            Err(SealError::Stage(_)) if i == 0 => return HeadersSealed::MustStage,
            Err(SealError::Drop(r)) => {
                counters.drop_packet(r);
                return HeadersSealed::Dropped;
            }
            Err(SealError::Stage(_)) => {
                // Staging is decided per route, so at the first segment.
                counters.drop_packet(DropReason::Malformed);
                return HeadersSealed::Dropped;
            }
        }
    }
    let size = first.len();
    let run = Run {
        offset: layout.seg_area,
        total: count * head + (last.end - first.start),
        stride: head + size,
        count,
        apart: Some(Apart {
            head,
            payload: PACKET_OFFSET + first.start,
        }),
    };
    match targets {
        Some((t, spread)) => HeadersSealed::Sent(run, t, spread),
        // A split has at least one segment; kept for the type's sake.
        None => {
            counters.drop_packet(DropReason::Malformed);
            HeadersSealed::Dropped
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::handoff::ControlInbox;
    use crate::offload::testutil::{Spec, super_packet_eth, wire_frame};
    use crate::vxlan_mode::VxlanMode;
    use std::net::SocketAddr;
    use tunnel_proto::vxlan::{HEADER_LEN, Vni};

    fn vxlan(vteps: usize) -> VxlanMode {
        let addrs: Vec<SocketAddr> = (0..vteps)
            .map(|i| SocketAddr::from(([192, 0, 2, 1 + i as u8], 4789)))
            .collect();
        VxlanMode::new(Vni::new(42).unwrap(), addrs, 2)
    }

    type Link = (
        ControlLink<std::convert::Infallible, crate::vxlan_mode::VtepId>,
        ControlInbox<std::convert::Infallible, crate::vxlan_mode::VtepId>,
    );

    fn link() -> Link {
        ControlLink::new().unwrap()
    }

    /// `seal_read` of a read in its own flow, as the worker queues it.
    #[allow(clippy::too_many_arguments)]
    fn sealed<'b, M: Mode>(
        layout: &SlotLayout,
        mode: &'b M,
        view: &'b M::Batch<'_>,
        lane: usize,
        now: Instant,
        slot: &mut [u8],
        n: usize,
        link: &ControlLink<M::Event, M::Peer>,
        counters: &WorkerCounters,
    ) -> Option<SealedRead<M::Targets<'b>>> {
        let flow = read_flow(layout, slot, n);
        seal_read(layout, mode, view, lane, now, slot, n, flow, link, counters)
    }

    /// A slot holding a read of `bytes` behind a virtio-net header.
    fn slot_with(layout: &SlotLayout, hdr: &VnetHeader, bytes: &[u8]) -> (Vec<u8>, usize) {
        let mut slot = vec![0u8; layout.slot_len()];
        let at = layout.read_offset();
        hdr.emit(&mut slot[at..at + VNET_HDR_LEN]).unwrap();
        slot[PACKET_OFFSET..PACKET_OFFSET + bytes.len()].copy_from_slice(bytes);
        (slot, VNET_HDR_LEN + bytes.len())
    }

    #[test]
    fn a_super_frame_is_split_and_sealed_at_one_stride() {
        let layout = SlotLayout::new(true, Framing::Ethernet);
        let mode = vxlan(1);
        let view = <VxlanMode as Mode>::begin(&mode);
        let counters = WorkerCounters::new();
        let (link, inbox) = link();
        let spec = Spec {
            payload: 10 * 1400 + 300,
            gso_size: 1400,
            ..Spec::tcp4()
        };
        let (hdr, frame) = super_packet_eth(&spec);
        let (mut slot, n) = slot_with(&layout, &hdr, &frame);
        let SealedRead { run, targets, flow } = sealed(
            &layout,
            &mode,
            &view,
            0,
            Instant::now(),
            &mut slot,
            n,
            &link,
            &counters,
        )
        .expect("sent");
        assert_eq!(
            flow,
            Some(flow_hash(&frame)),
            "the super-packet's flow, hashed once for all its segments"
        );
        let head = HEADER_LEN + crate::offload::ETHERNET_HEADER_LEN + 20 + 20;
        let seg = head + 1400;
        assert_eq!(run.count, 11);
        assert_eq!(run.stride, seg);
        assert_eq!(run.offset, layout.seg_area);
        assert_eq!(
            run.total,
            10 * seg + seg - 1100,
            "the last carries 300 bytes"
        );
        assert_eq!(
            run.apart,
            Some(Apart {
                head,
                payload: PACKET_OFFSET + head - HEADER_LEN
            }),
            "headers sealed alone, the payload left where it was read"
        );
        let t: Vec<_> = targets.collect();
        assert_eq!(t.len(), 1, "a flood to the one VTEP");
        // Each datagram is the VXLAN header of VNI 42 and the very segment
        // a copying split writes.
        let split = GsoSplit::new(&hdr, &frame, Framing::Ethernet).unwrap();
        let mut want = vec![0u8; 2000];
        for i in 0..run.count {
            let h = &slot[run.offset + i * head..run.offset + (i + 1) * head];
            assert_eq!(h[0], 0x08, "I flag");
            assert_eq!(&h[4..7], &[0, 0, 42]);
            let n = split.write_segment(i, &mut want).unwrap();
            let at = PACKET_OFFSET + (head - HEADER_LEN) + i * 1400;
            let got = [&h[HEADER_LEN..], &slot[at..at + n - (head - HEADER_LEN)]].concat();
            assert_eq!(got, want[..n], "segment {i}");
        }
        assert_eq!(counters.dev_read_gso.get(), 1);
        assert_eq!(counters.dev_read_gso_segments.get(), 11);
        assert!(inbox.staged.is_empty(), "nothing staged");
    }

    #[test]
    fn a_single_frame_is_sealed_in_place() {
        let layout = SlotLayout::new(true, Framing::Ethernet);
        let mode = vxlan(2);
        let view = <VxlanMode as Mode>::begin(&mode);
        let counters = WorkerCounters::new();
        let (link, _inbox) = link();
        let frame = wire_frame(&Spec {
            payload: 100,
            ..Spec::udp4()
        });
        let hdr = VnetHeader::parse(&[0; VNET_HDR_LEN]).unwrap();
        let (mut slot, n) = slot_with(&layout, &hdr, &frame);
        let SealedRead { run, targets, flow } = sealed(
            &layout,
            &mode,
            &view,
            1,
            Instant::now(),
            &mut slot,
            n,
            &link,
            &counters,
        )
        .expect("sent");
        assert_eq!(
            run,
            Run::single(PACKET_OFFSET - HEADER_LEN, HEADER_LEN + frame.len())
        );
        assert_eq!(
            &slot[PACKET_OFFSET..PACKET_OFFSET + frame.len()],
            &frame[..],
            "no copy"
        );
        assert_eq!(
            targets.count(),
            2,
            "an unknown destination floods both VTEPs"
        );
        assert_eq!(flow, Some(flow_hash(&frame)));
    }

    #[test]
    fn a_jumbo_super_packet_fits_whatever_the_mtu_was_at_start() {
        // The device's MTU can grow after the workers started; the
        // segment area does not depend on it.
        let layout = SlotLayout::new(true, Framing::Ethernet);
        let mode = vxlan(1);
        let view = <VxlanMode as Mode>::begin(&mode);
        let counters = WorkerCounters::new();
        let (link, _inbox) = link();
        // The largest payloads in at most 64 segments (the daemon caps the
        // device's gso_max_segs so).
        for (gso_size, payload) in [(1400u16, 65_435), (8900, 65_435), (536, 64 * 536)] {
            let spec = Spec {
                payload,
                gso_size,
                ..Spec::tcp4()
            };
            let (hdr, frame) = super_packet_eth(&spec);
            let (mut slot, n) = slot_with(&layout, &hdr, &frame);
            let sent = sealed(
                &layout,
                &mode,
                &view,
                0,
                Instant::now(),
                &mut slot,
                n,
                &link,
                &counters,
            );
            assert!(sent.is_some(), "gso_size {gso_size} was dropped");
        }
        assert_eq!(counters.drops[DropReason::Malformed.index()].get(), 0);
    }

    #[test]
    fn bad_reads_are_dropped_as_malformed() {
        let layout = SlotLayout::new(true, Framing::Ethernet);
        let mode = vxlan(1);
        let view = <VxlanMode as Mode>::begin(&mode);
        let counters = WorkerCounters::new();
        let (link, _inbox) = link();
        let mut slot = vec![0u8; layout.slot_len()];
        for n in [0, VNET_HDR_LEN, MAX_READ + 1] {
            assert!(
                sealed(
                    &layout,
                    &mode,
                    &view,
                    0,
                    Instant::now(),
                    &mut slot,
                    n,
                    &link,
                    &counters
                )
                .is_none()
            );
        }
        // A header with flags TUN never sets.
        slot[layout.read_offset()] = 0x80;
        assert!(
            sealed(
                &layout,
                &mode,
                &view,
                0,
                Instant::now(),
                &mut slot,
                100,
                &link,
                &counters
            )
            .is_none()
        );
        assert_eq!(counters.drops[DropReason::Malformed.index()].get(), 4);
    }

    #[test]
    fn a_read_for_a_peer_without_a_session_is_staged() {
        use crate::wg_mode::WgMode;
        use tunnel_proto::PrivateKey;
        use tunnel_proto::wg::{IpPrefix, PeerConfig, Tunnel, TunnelConfig};
        let mut cfg = TunnelConfig::new(PrivateKey::from_bytes([1; 32]));
        let mut peer = PeerConfig::new(PrivateKey::from_bytes([2; 32]).public_key());
        peer.allowed_ips = vec!["10.0.0.0/24".parse::<IpPrefix>().unwrap()];
        cfg.peers.push(peer);
        let tunnel = Tunnel::new(cfg, Instant::now(), std::time::SystemTime::now()).unwrap();
        let mode = WgMode::new(tunnel.snapshot());
        let view = mode.begin();
        let layout = SlotLayout::new(true, Framing::Ip);
        let counters = WorkerCounters::new();
        let (link, inbox) = ControlLink::new().unwrap();
        let spec = Spec {
            payload: 3 * 1380,
            gso_size: 1380,
            dst4: [10, 0, 0, 9],
            ..Spec::tcp4()
        };
        let (hdr, pkt) = crate::offload::testutil::super_packet(&spec);
        let (mut slot, n) = slot_with(&layout, &hdr, &pkt);
        assert!(
            sealed(
                &layout,
                &mode,
                &view,
                0,
                Instant::now(),
                &mut slot,
                n,
                &link,
                &counters
            )
            .is_none()
        );
        let staged: Vec<usize> = inbox.staged.try_iter().map(|s| s.packet.len()).collect();
        assert_eq!(staged, vec![1420, 1420, 1420], "each segment staged alone");
    }

    /// Two wireguard sites with a session, site 1's peer (site 2) spreading
    /// its flows or not: site 1's tunnel.
    fn wireguard_site(spread: bool) -> tunnel_proto::wg::Tunnel {
        use tunnel_proto::PrivateKey;
        use tunnel_proto::wg::{
            Events, IpPrefix, PeerConfig, TRANSMIT_BUF_LEN, Tunnel, TunnelConfig,
        };
        let site = |me: u8, other: u8| {
            let mut cfg = TunnelConfig::new(PrivateKey::from_bytes([me; 32]));
            let mut p = PeerConfig::new(PrivateKey::from_bytes([other; 32]).public_key());
            p.allowed_ips = vec![format!("10.0.0.{other}/32").parse::<IpPrefix>().unwrap()];
            p.endpoint = Some(std::net::SocketAddr::from(([192, 0, 2, other], 51820)));
            p.spread_flows = spread;
            cfg.peers.push(p);
            Tunnel::new(cfg, Instant::now(), std::time::SystemTime::now()).unwrap()
        };
        let (mut a, mut b) = (site(1, 2), site(2, 1));
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
        let peer = tunnel_proto::wg::PeerId::new(0, 0);
        a.handle_events(peer, Events::REKEY, now, wall);
        let n = a.poll_transmit(now, &mut buf).expect("initiation").len;
        let from_a = std::net::SocketAddr::from(([192, 0, 2, 1], 51820));
        b.handle_handshake(now, wall, from_a.into(), &buf[..n], false)
            .unwrap();
        let n = b.poll_transmit(now, &mut buf).expect("response").len;
        let from_b = std::net::SocketAddr::from(([192, 0, 2, 2], 51820));
        a.handle_handshake(now, wall, from_b.into(), &buf[..n], false)
            .unwrap();
        a
    }

    #[test]
    fn a_sealed_read_names_its_flow_only_toward_a_peer_that_spreads_flows() {
        let layout = SlotLayout::new(true, Framing::Ip);
        let counters = WorkerCounters::new();
        let (link, _inbox) = ControlLink::new().unwrap();
        let spec = Spec {
            payload: 200,
            dst4: [10, 0, 0, 2],
            ..Spec::udp4()
        };
        let pkt = crate::offload::testutil::wire_packet(&spec);
        let hdr = VnetHeader::parse(&[0; VNET_HDR_LEN]).unwrap();
        for spread in [false, true] {
            let tunnel = wireguard_site(spread);
            let mode = crate::wg_mode::WgMode::new(tunnel.snapshot());
            let view = mode.begin();
            let (mut slot, n) = slot_with(&layout, &hdr, &pkt);
            let hash = read_flow(&layout, &slot, n);
            let sealed = sealed(
                &layout,
                &mode,
                &view,
                0,
                Instant::now(),
                &mut slot,
                n,
                &link,
                &counters,
            )
            .expect("sealed: the session is up");
            assert_eq!(
                sealed.flow,
                spread.then_some(hash),
                "SpreadFlows = {spread}: the flow's own port only when the peer spreads"
            );
        }
    }
}
