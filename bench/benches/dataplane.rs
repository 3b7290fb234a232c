//! The data plane's per-packet and per-batch work, without the I/O: what
//! one worker does between a completion and the next submission.
//!
//! - `dataplane/classify`: picking the peer of an outbound packet (the
//!   WireGuard AllowedIPs route, the VXLAN forwarding table), and taking
//!   the per-batch snapshot.
//! - `dataplane/send_batch`: one device read to its `sendmsg` calls: a
//!   64 KiB TCP super-packet split into segments at a fixed stride, each
//!   sealed in place, control messages built per `UDP_SEGMENT` send; and a
//!   single 1420-byte packet routed, sealed and addressed in place.
//! - `dataplane/receive_batch`: one `UDP_GRO` receive of 44 datagrams,
//!   each opened in place, then coalesced into one device write.
//!
//! `cargo bench -p bench --bench dataplane`. Packets/s and bytes/s are
//! reported together (inner bytes: what the tunnel carries).
// Fixtures are built from constants; a failure is a bug in the bench itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use bench::fixtures::{
    PEER, established, ip_packet, tcp4_super_frame, tcp4_super_packet, tunnel_with_peers, wan_addr,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::cmsg;
use dataplane::mode::{Inbound, Mode, Route};
use dataplane::offload::{CoalesceConfig, Coalescer, Framing, GsoSplit, VNET_HDR_LEN, Write};
use dataplane::vxlan_mode::VxlanMode;
use dataplane::wg_mode::WgMode;
use dataplane::worker::{GSO_MAX_BYTES, MAX_GRO_SEGMENTS};
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
    let mode = VxlanMode::new(vni(), vec![wan_addr(2), wan_addr(3)]);
    let batch = mode.begin();
    let mut d = vxlan_datagram(MAC_B, MAC_A, 64);
    let r = mode.open(&batch, Instant::now(), wan_addr(2), &mut d);
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
            debug_assert_eq!(r, Route::Peer(0));
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
            debug_assert_eq!(r, Route::Peer(0));
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

/// What `read_gso` plus `send_run` do for one super-packet: split, seal
/// each segment at a fixed stride, and build the control messages of each
/// `UDP_SEGMENT` send. Returns the number of sends.
fn build_send_batch<M: Mode>(
    mode: &M,
    batch: &M::Batch<'_>,
    now: Instant,
    split: &GsoSplit<'_>,
    pkt: &[u8],
    area: &mut [u8],
    control: &mut [u8; cmsg::SEND_CONTROL_LEN],
) -> usize {
    let seg_max = split.segment_size();
    let stride_max = M::HEADROOM + seg_max + M::TAILROOM;
    let count = split.segment_count();
    let route = mode.route(batch, pkt);
    let mut stride = 0;
    let mut total = 0;
    for i in 0..count {
        let at = i * stride;
        let out = &mut area[at..at + stride_max];
        let n = split
            .write_segment(i, &mut out[M::HEADROOM..M::HEADROOM + seg_max])
            .unwrap();
        let sealed = mode.seal(batch, now, route, out, n).unwrap();
        if stride == 0 {
            stride = sealed.len;
        }
        total = at + sealed.len;
    }
    let per_send = (GSO_MAX_BYTES / stride).clamp(1, MAX_GRO_SEGMENTS);
    let mut sends = 0;
    let mut i = 0;
    while i < count {
        let k = per_send.min(count - i);
        let seg = (k > 1).then_some(stride as u16);
        black_box(cmsg::build_send(control, None, seg));
        i += k;
        sends += 1;
    }
    black_box(total);
    sends
}

fn send_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dataplane/send_batch");
    let now = Instant::now();
    let mut control = [0u8; cmsg::SEND_CONTROL_LEN];
    let mut area = vec![0u8; 128 * 1024];

    // wireguard: a 64 KiB TCP super-packet from TUN, 48 segments.
    let (dp_a, _, _) = established();
    let wg = WgMode::new(dp_a.clone());
    let (hdr, pkt) = tcp4_super_packet(65535 - 40, MSS);
    let split = GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap();
    g.throughput(Throughput::ElementsAndBytes {
        elements: split.segment_count() as u64,
        bytes: split.total_len() as u64,
    });
    g.bench_function("wireguard_tcp4_64k_mss1380", |b| {
        b.iter(|| {
            let batch = wg.begin();
            let split = GsoSplit::new(black_box(&hdr), black_box(&pkt), Framing::Ip).unwrap();
            black_box(build_send_batch(
                &wg,
                &batch,
                now,
                &split,
                &pkt,
                &mut area,
                &mut control,
            ))
        })
    });

    // vxlan: the same payload as a TAP frame.
    let vx = vxlan_mode_with_learned_mac();
    let (fhdr, fpkt) = tcp4_super_frame(65535 - 40, MSS, MAC_A, MAC_B);
    let fsplit = GsoSplit::new(&fhdr, &fpkt, Framing::Ethernet).unwrap();
    g.throughput(Throughput::ElementsAndBytes {
        elements: fsplit.segment_count() as u64,
        bytes: fsplit.total_len() as u64,
    });
    g.bench_function("vxlan_tcp4_64k_mss1380", |b| {
        b.iter(|| {
            let batch = vx.begin();
            let split =
                GsoSplit::new(black_box(&fhdr), black_box(&fpkt), Framing::Ethernet).unwrap();
            black_box(build_send_batch(
                &vx,
                &batch,
                now,
                &split,
                &fpkt,
                &mut area,
                &mut control,
            ))
        })
    });

    // One packet with no offload: routed, sealed where it was read,
    // addressed; no copy.
    let single = ip_packet(1420, [10, 0, 0, 2]);
    let mut slot = vec![0u8; WgMode::HEADROOM + 1420 + WgMode::TAILROOM];
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: 1420,
    });
    g.bench_function("wireguard_single_1420", |b| {
        b.iter(|| {
            // The plaintext is re-copied each time (sealing is in place):
            // the read the device would have done.
            slot[WgMode::HEADROOM..WgMode::HEADROOM + 1420].copy_from_slice(&single);
            let batch = wg.begin();
            let route = wg.route(&batch, &slot[WgMode::HEADROOM..WgMode::HEADROOM + 1420]);
            let s = wg.seal(&batch, now, route, &mut slot, 1420).unwrap();
            black_box(cmsg::RawAddr::from_socket_addr(s.dst));
            black_box(cmsg::build_send(&mut control, None, None))
        })
    });
    g.finish();
}

/// Opens each datagram in place and coalesces what is delivered; returns
/// the number of device writes.
fn open_and_coalesce<M: Mode>(
    mode: &M,
    now: Instant,
    src: SocketAddr,
    dgrams: &mut [Vec<u8>],
    co: &mut Coalescer,
    bufs: &mut [Vec<u8>],
) -> usize {
    let batch = mode.begin();
    let mut ranges = [(0usize, 0usize, 0usize); MAX_GRO_SEGMENTS];
    let mut n = 0;
    for (k, d) in dgrams.iter_mut().enumerate() {
        if let Inbound::Deliver { start, end, .. } = mode.open(&batch, now, src, d) {
            ranges[n] = (k, start, end);
            n += 1;
        }
    }
    let mut pkts: [&[u8]; MAX_GRO_SEGMENTS] = [&[]; MAX_GRO_SEGMENTS];
    for (p, &(k, start, end)) in pkts.iter_mut().zip(&ranges[..n]) {
        *p = &dgrams[k][start..end];
    }
    let w: &[Write] = co.coalesce(&pkts[..n], bufs).unwrap();
    w.len()
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
    let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; 4];
    // The AEAD authenticated every packet: the worker trusts inner checksums.
    let mut co = Coalescer::new(CoalesceConfig {
        verify_checksums: !WgMode::AUTHENTICATED,
        ..CoalesceConfig::default()
    });
    g.throughput(Throughput::ElementsAndBytes {
        elements: N as u64,
        bytes: inner_bytes as u64,
    });
    g.bench_function("wireguard_tcp4_44x1380", |b| {
        b.iter_batched_ref(
            || {
                // Each open needs fresh counters (the replay window refuses
                // repeats): seal the batch outside the timed part.
                segs.iter()
                    .map(|s| {
                        let mut buf = vec![0u8; WgMode::HEADROOM + s.len() + WgMode::TAILROOM];
                        buf[WgMode::HEADROOM..WgMode::HEADROOM + s.len()].copy_from_slice(s);
                        let sealed = dp_a.encapsulate(PEER, 0, now, &mut buf, s.len()).unwrap();
                        buf.truncate(sealed.len);
                        buf
                    })
                    .collect::<Vec<_>>()
            },
            |dgrams| {
                let w = open_and_coalesce(&wg_b, now, wan_addr(1), dgrams, &mut co, &mut bufs);
                assert_eq!(w, 1);
            },
            BatchSize::SmallInput,
        )
    });

    // vxlan: the same segments as Ethernet frames in VXLAN (plaintext:
    // nothing to renew between iterations, and checksums are verified).
    let vx = vxlan_mode_with_learned_mac();
    let mut vdgrams: Vec<Vec<u8>> = segs
        .iter()
        .map(|s| {
            let mut d = vxlan_datagram(MAC_B, MAC_A, 14 + s.len());
            d[vxlan::HEADER_LEN + 14..].copy_from_slice(s);
            d
        })
        .collect();
    let mut vco = Coalescer::new(CoalesceConfig {
        framing: Framing::Ethernet,
        verify_checksums: !VxlanMode::AUTHENTICATED,
        ..CoalesceConfig::default()
    });
    g.bench_function("vxlan_tcp4_44x1380", |b| {
        b.iter(|| {
            let w = open_and_coalesce(
                &vx,
                Instant::now(),
                wan_addr(2),
                &mut vdgrams,
                &mut vco,
                &mut bufs,
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
