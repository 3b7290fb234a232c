//! The data plane's per-packet and per-batch work, without the I/O: what
//! one worker does between a completion and the next submission, through
//! the worker's own parts (`device_read`, `sched`, `transmit`,
//! `socket_recv`, `device_write`).
//!
//! - `dataplane/classify`: picking the peer of an outbound packet (the
//!   WireGuard AllowedIPs route, the VXLAN forwarding table), and taking
//!   the per-batch snapshot.
//! - `dataplane/send_batch`: one device read to its `sendmsg` headers: a
//!   64 KiB TCP super-packet split into segments at a fixed stride, each
//!   sealed in place, the scheduler's `UDP_SEGMENT` sends, each header
//!   filled; and a single 1420-byte packet routed, sealed in place, held
//!   for the end of the batch and sent.
//! - `dataplane/receive_batch`: one `UDP_GRO` receive of 44 datagrams,
//!   each opened in place, then planned into device writes (coalesced
//!   into one).
//!
//! `cargo bench -p bench --bench dataplane`. Packets/s and bytes/s are
//! reported together (inner bytes: what the tunnel carries).
// Fixtures are built from constants; a failure is a bug in the bench itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use bench::fixtures::{
    PEER, established, ip_packet, tcp4_super_frame, tcp4_super_packet, tunnel_with_peers, wan_addr,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::cmsg;
use dataplane::counters::WorkerCounters;
use dataplane::handoff::ControlLink;
use dataplane::mode::{Inbound, Mode, Route};
use dataplane::offload::{CoalesceConfig, Coalescer, Framing, GsoSplit, VNET_HDR_LEN, VnetHeader};
use dataplane::vxlan_mode::{VtepId, VxlanMode};
use dataplane::wg_mode::WgMode;
use dataplane::worker::device_read::{self, PACKET_OFFSET, SlotLayout};
use dataplane::worker::device_write::{self, Planned, WRITE_SLOT_LEN};
use dataplane::worker::sched::{Piece, Scheduler, Sink};
use dataplane::worker::slots::{Hold, Home, Pool, Tx, Wr};
use dataplane::worker::socket_recv::{self, Deliveries, Received};
use dataplane::worker::transmit::{SendMsg, Transmit};
use tunnel_proto::Path;
use tunnel_proto::vxlan::{self, Vni};

const MSS: usize = 1380;
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const VNI: u32 = 42;

fn vni() -> Vni {
    Vni::new(VNI).unwrap()
}

/// A VXLAN datagram carrying an Ethernet frame from `src` to `dst`.
fn vxlan_datagram(src: [u8; 6], dst: [u8; 6], frame_len: usize) -> Vec<u8> {
    let mut d = vec![0u8; vxlan::HEADER_LEN + frame_len];
    let mut pkt = vxlan::Packet::new_checked(&mut d[..]).unwrap();
    vxlan::Repr { vni: vni() }.emit(&mut pkt);
    let f = &mut d[vxlan::HEADER_LEN..];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    d
}

/// A VXLAN mode with two remote VTEPs that has learned `MAC_B` behind the first.
fn vxlan_mode_with_learned_mac() -> VxlanMode {
    let mode = VxlanMode::new(vni(), vec![wan_addr(2), wan_addr(3)], 1);
    let batch = mode.begin();
    let mut d = vxlan_datagram(MAC_B, MAC_A, 64);
    let r = mode.open(&batch, 0, Instant::now(), Path::from(wan_addr(2)), &mut d);
    assert!(matches!(r, Inbound::Deliver { .. }), "{r:?}");
    mode
}

/// An Ethernet frame of `len` bytes to `dst`.
fn frame(dst: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&MAC_A);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane/classify");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: 1420,
    });

    let (dp_a, _, _) = established();
    let wg = WgMode::new(dp_a);
    let pkt = ip_packet(1420, [10, 0, 0, 2]);
    g.bench_function("wireguard_1_peer", |b| {
        let batch = wg.begin();
        b.iter(|| {
            let r = wg.route(&batch, black_box(&pkt));
            debug_assert_eq!(r, Route::Peer(PEER));
            black_box(r)
        })
    });

    // 1,000 peers, one /24 each: destinations spread over all of them.
    let big = WgMode::new(tunnel_with_peers(1000).snapshot());
    let pkts: Vec<Vec<u8>> = (0..1024u16)
        .map(|i| {
            let [hi, lo] = ((u32::from(i) * 7919 % 1000) as u16).to_be_bytes();
            ip_packet(1420, [10, hi, lo, 9])
        })
        .collect();
    let mut i = 0usize;
    g.bench_function("wireguard_1000_peers", |b| {
        let batch = big.begin();
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(big.route(&batch, black_box(&pkts[i])))
        })
    });

    let vx = vxlan_mode_with_learned_mac();
    let unicast = frame(MAC_B, 1420);
    g.bench_function("vxlan_learned_unicast", |b| {
        let batch = vx.begin();
        b.iter(|| {
            let r = vx.route(&batch, black_box(&unicast));
            debug_assert_eq!(r, Route::Peer(VtepId(0)));
            black_box(r)
        })
    });
    let broadcast = frame([0xff; 6], 1420);
    g.bench_function("vxlan_broadcast", |b| {
        let batch = vx.begin();
        b.iter(|| black_box(vx.route(&batch, black_box(&broadcast))))
    });
    g.finish();

    // Once per completion batch: the snapshot load (an arc-swap guard).
    let mut g = c.benchmark_group("dataplane/begin_batch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("wireguard", |b| b.iter(|| black_box(wg.begin())));
    g.bench_function("vxlan", |b| b.iter(|| black_box(vx.begin())));
    g.finish();
}

/// A sink as a completion would treat it: each send's header filled, its
/// hold given back at once.
struct Headers<'a> {
    pool: Pool<Tx>,
    msg: SendMsg<1>,
    gathered: SendMsg<64>,
    holds: Vec<Hold<Tx>>,
    slot: &'a [u8],
    sends: usize,
}

impl<P: Copy> Sink<P> for Headers<'_> {
    fn share(&mut self, hold: &Hold<Tx>) -> Hold<Tx> {
        self.pool.share(hold)
    }
    fn release(&mut self, hold: Hold<Tx>) {
        let _ = self.pool.release(hold);
    }
    fn send(&mut self, t: Transmit<P>, p: Piece) {
        let at = self.slot[p.offset as usize..].as_ptr();
        black_box(self.msg.fill(&t, [(at, p.len as usize)]));
        self.sends += 1;
        let _ = self.pool.release(p.hold);
    }
    fn can_gather(&self) -> bool {
        true
    }
    fn gather(&mut self, t: Transmit<P>, pieces: impl Iterator<Item = Piece>) {
        let slot = self.slot;
        let holds = &mut self.holds;
        black_box(self.gathered.fill(
            &t,
            pieces.map(|p| {
                let at = slot[p.offset as usize..].as_ptr();
                let len = p.len as usize;
                holds.push(p.hold);
                (at, len)
            }),
        ));
        for h in self.holds.drain(..) {
            let _ = self.pool.release(h);
        }
        self.sends += 1;
    }
}

/// What a worker keeps beside its mode: its counters and its link to the
/// control thread (made once, outside the timed part).
struct Worker<M: Mode> {
    counters: Box<WorkerCounters>,
    link: ControlLink<M::Event, M::Peer>,
    _inbox: dataplane::handoff::ControlInbox<M::Event, M::Peer>,
    ports: dataplane::worker::SourcePorts,
}

impl<M: Mode> Worker<M> {
    fn new() -> Worker<M> {
        let (link, inbox) = ControlLink::new().unwrap();
        Worker {
            counters: Box::new(WorkerCounters::new().into_inner()),
            link,
            _inbox: inbox,
            ports: dataplane::worker::SourcePorts::new(dataplane::worker::FLOW_PORTS, 2),
        }
    }
}

/// A transmit slot holding a read of `pkt` behind its virtio-net header.
fn slot_with(layout: &SlotLayout, hdr: &VnetHeader, pkt: &[u8]) -> (Vec<u8>, usize) {
    let mut slot = vec![0u8; layout.slot_len()];
    let at = layout.read_offset();
    hdr.emit(&mut slot[at..at + VNET_HDR_LEN]).unwrap();
    slot[PACKET_OFFSET..PACKET_OFFSET + pkt.len()].copy_from_slice(pkt);
    (slot, VNET_HDR_LEN + pkt.len())
}

/// One device read of `n` bytes in `slot` through the worker's parts:
/// sealed, scheduled, every send's header filled. Returns the sends.
fn read_to_sends<M: Mode>(
    mode: &M,
    layout: &SlotLayout,
    slot: &mut [u8],
    n: usize,
    sched: &mut Scheduler<M::Peer>,
    worker: &Worker<M>,
) -> usize {
    let view = mode.begin();
    // The flow, as the worker takes it to queue the read.
    let flow = device_read::read_flow(layout, slot, n);
    let opening = device_read::read_opening(layout, slot, n);
    let device_read::SealedRead { run, targets, flow } = device_read::seal_read(
        layout,
        mode,
        &view,
        0,
        Instant::now(),
        slot,
        n,
        flow,
        &worker.link,
        &worker.counters,
    )
    .expect("sealed");
    let mut sink = Headers {
        pool: Pool::new(1, Home::FreeList),
        msg: SendMsg::default(),
        gathered: SendMsg::default(),
        holds: Vec::with_capacity(64),
        slot,
        sends: 0,
    };
    let hold = sink.pool.take_free().unwrap();
    // The flow's socket, as the worker picks it among its flow sockets.
    let via = worker.ports.via(flow, opening, Instant::now(), run.total);
    sched.send_run(hold, run, via, targets, &mut sink);
    sched.flush(&mut sink);
    sink.sends
}

fn send_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane/send_batch");

    // wireguard: a 64 KiB TCP super-packet from TUN, 48 segments.
    let (dp_a, _, _) = established();
    let wg = WgMode::new(dp_a.clone());
    let layout = SlotLayout::new(true, Framing::Ip);
    let (hdr, pkt) = tcp4_super_packet(65535 - 40, MSS);
    let split = GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap();
    g.throughput(Throughput::ElementsAndBytes {
        elements: split.segment_count() as u64,
        bytes: split.total_len() as u64,
    });
    let (mut slot, n) = slot_with(&layout, &hdr, &pkt);
    let mut sched = Scheduler::new(true, 0);
    let wg_worker = Worker::new();
    g.bench_function("wireguard_tcp4_64k_mss1380", |b| {
        // The read area is only read (segments go to the segment area).
        b.iter(|| {
            black_box(read_to_sends(
                &wg, &layout, &mut slot, n, &mut sched, &wg_worker,
            ))
        })
    });

    // vxlan: the same payload as a TAP frame.
    let vx = vxlan_mode_with_learned_mac();
    let vlayout = SlotLayout::new(true, Framing::Ethernet);
    let (fhdr, fpkt) = tcp4_super_frame(65535 - 40, MSS, MAC_A, MAC_B);
    let fsplit = GsoSplit::new(&fhdr, &fpkt, Framing::Ethernet).unwrap();
    g.throughput(Throughput::ElementsAndBytes {
        elements: fsplit.segment_count() as u64,
        bytes: fsplit.total_len() as u64,
    });
    let (mut vslot, vn) = slot_with(&vlayout, &fhdr, &fpkt);
    let mut vsched = Scheduler::new(true, 0);
    let vx_worker = Worker::new();
    g.bench_function("vxlan_tcp4_64k_mss1380", |b| {
        b.iter(|| {
            black_box(read_to_sends(
                &vx,
                &vlayout,
                &mut vslot,
                vn,
                &mut vsched,
                &vx_worker,
            ))
        })
    });

    // One packet with no offload: routed, sealed where it was read, held
    // for the end of the batch, sent; no copy.
    let plain = SlotLayout::new(false, Framing::Ip);
    let single = ip_packet(1420, [10, 0, 0, 2]);
    let mut slot = vec![0u8; plain.slot_len()];
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: 1420,
    });
    g.bench_function("wireguard_single_1420", |b| {
        b.iter(|| {
            // The plaintext is re-copied each time (sealing is in place):
            // the read the device would have done.
            slot[PACKET_OFFSET..PACKET_OFFSET + 1420].copy_from_slice(&single);
            black_box(read_to_sends(
                &wg, &plain, &mut slot, 1420, &mut sched, &wg_worker,
            ))
        })
    });
    g.finish();
}

/// One GRO receive of `dgrams` (equal sizes but the last) through the
/// worker's parts: each opened in place, then the device writes planned.
/// Returns the writes.
#[allow(clippy::too_many_arguments)]
fn receive_to_writes<M: Mode>(
    mode: &M,
    from: Path,
    buf: &mut [u8],
    stride: usize,
    coalescer: &mut Coalescer,
    pool: &mut Pool<Wr>,
    slots: &mut [Vec<u8>],
    worker: &Worker<M>,
) -> usize {
    let view = mode.begin();
    let rx = Received {
        from,
        payload: 0..buf.len(),
        stride,
        rxq_dropped: None,
    };
    let mut out = Deliveries::default();
    socket_recv::open_all(
        mode,
        &view,
        0,
        Instant::now(),
        buf,
        &rx,
        &mut out,
        &worker.link,
        &worker.counters,
    );
    let mut pkts: [&[u8]; 64] = [&[]; 64];
    for (p, &(s, l)) in pkts.iter_mut().zip(out.as_slice()) {
        *p = &buf[s as usize..(s + l) as usize];
    }
    let mut mem: [Option<&mut [u8]>; 8] = Default::default();
    for (m, v) in mem.iter_mut().zip(slots.iter_mut()) {
        *m = Some(&mut v[..]);
    }
    let mut writes = 0;
    let mut held: [Option<Hold<Wr>>; 8] = Default::default();
    device_write::plan(
        Some(coalescer),
        &pkts[..out.as_slice().len()],
        pool,
        |h| mem[h.index()].take().unwrap(),
        |p| {
            writes += 1;
            if let Planned::Coalesced { slot, .. } = p {
                let i = slot.index();
                held[i] = Some(slot);
            }
        },
    );
    for h in held.into_iter().flatten() {
        let _ = pool.release(h);
    }
    writes
}

fn receive_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane/receive_batch");
    const N: usize = 44;

    // wireguard: 44 segments of one TCP flow, sealed by site 1.
    let (dp_a, dp_b, now) = established();
    let wg_b = WgMode::new(dp_b);
    let (hdr, pkt) = tcp4_super_packet(N * MSS, MSS);
    let split = GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap();
    let segs: Vec<Vec<u8>> = (0..split.segment_count())
        .map(|i| {
            let mut out = vec![0u8; split.segment_len(i).unwrap()];
            split.write_segment(i, &mut out).unwrap();
            out
        })
        .collect();
    assert_eq!(segs.len(), N);
    let inner_bytes: usize = segs.iter().map(Vec::len).sum();
    let mut slots = vec![vec![0u8; WRITE_SLOT_LEN]; 8];
    let mut pool = Pool::new(8, Home::FreeList);
    // The AEAD authenticated every packet: the worker trusts inner checksums.
    let mut co = Coalescer::new(CoalesceConfig {
        verify_checksums: !WgMode::AUTHENTICATED,
        ..CoalesceConfig::default()
    });
    g.throughput(Throughput::ElementsAndBytes {
        elements: N as u64,
        bytes: inner_bytes as u64,
    });
    let stride = WgMode::HEADROOM + MSS + 40 + tunnel_proto::wg::messages::TAG_LEN;
    let wg_worker = Worker::new();
    g.bench_function("wireguard_tcp4_44x1380", |b| {
        b.iter_batched_ref(
            || {
                // Each open needs fresh counters (the replay window refuses
                // repeats): seal the receive outside the timed part.
                let mut gro = Vec::with_capacity(N * stride);
                for s in &segs {
                    let mut buf = vec![0u8; WgMode::HEADROOM + s.len() + WgMode::TAILROOM];
                    buf[WgMode::HEADROOM..WgMode::HEADROOM + s.len()].copy_from_slice(s);
                    let sealed = dp_a.encapsulate(PEER, 0, now, &mut buf, s.len()).unwrap();
                    assert_eq!(sealed.len, stride);
                    gro.extend_from_slice(&buf[..sealed.len]);
                }
                gro
            },
            |gro| {
                let from = Path::from(wan_addr(1));
                let w = receive_to_writes(
                    &wg_b, from, gro, stride, &mut co, &mut pool, &mut slots, &wg_worker,
                );
                assert_eq!(w, 1);
            },
            BatchSize::SmallInput,
        )
    });

    // vxlan: the same segments as Ethernet frames in VXLAN (plaintext:
    // nothing to renew between iterations, and checksums are verified).
    let vx = vxlan_mode_with_learned_mac();
    let vstride = vxlan::HEADER_LEN + 14 + MSS + 40;
    let mut vgro: Vec<u8> = Vec::with_capacity(N * vstride);
    for s in &segs {
        let mut d = vxlan_datagram(MAC_B, MAC_A, 14 + s.len());
        d[vxlan::HEADER_LEN + 14..].copy_from_slice(s);
        vgro.extend_from_slice(&d);
    }
    let mut vco = Coalescer::new(CoalesceConfig {
        framing: Framing::Ethernet,
        verify_checksums: !VxlanMode::AUTHENTICATED,
        ..CoalesceConfig::default()
    });
    let vx_worker = Worker::new();
    g.bench_function("vxlan_tcp4_44x1380", |b| {
        b.iter(|| {
            let from = Path::from(wan_addr(2));
            let w = receive_to_writes(
                &vx, from, &mut vgro, vstride, &mut vco, &mut pool, &mut slots, &vx_worker,
            );
            assert_eq!(w, 1);
        })
    });
    g.finish();

    // Per receive: the control messages (IP_PKTINFO and UDP_GRO).
    let mut g = c.benchmark_group("dataplane/recv_control");
    g.throughput(Throughput::Elements(1));
    let control = recv_control();
    g.bench_function("pktinfo_gro", |b| {
        b.iter(|| black_box(cmsg::parse_recv(black_box(&control))))
    });
    g.finish();
}

/// Control data as the kernel writes it for a GRO receive: IP_PKTINFO then UDP_GRO.
fn recv_control() -> Vec<u8> {
    fn put(out: &mut Vec<u8>, level: i32, ty: i32, data: &[u8]) {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let len = hdr + data.len();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&ty.to_ne_bytes());
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }
    let mut v = Vec::new();
    let mut pktinfo = [0u8; 12];
    pktinfo[..4].copy_from_slice(&3u32.to_ne_bytes());
    pktinfo[8..12].copy_from_slice(&[192, 0, 2, 1]);
    put(&mut v, libc::IPPROTO_IP, libc::IP_PKTINFO, &pktinfo);
    put(&mut v, libc::SOL_UDP, libc::UDP_GRO, &1432i32.to_ne_bytes());
    let info = cmsg::parse_recv(&v);
    assert_eq!(info.gro_segment, Some(1432));
    v
}

criterion_group!(benches, classify, send_batch, receive_batch);
criterion_main!(benches);
