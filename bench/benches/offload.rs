//! Offload primitives: GSO split of a 64 KiB TCP super-packet, GRO coalesce
//! of a 44-segment receive batch, and the internet checksum.
//!
//! `cargo bench -p bench --bench offload`. Throughput is reported as packets/s
//! (segments) and bytes/s together.
// The fixtures are built from constants; a failure is a bug in the bench itself.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dataplane::offload::checksum::Sum;
use dataplane::offload::{
    CoalesceConfig, Coalescer, Framing, GsoSplit, GsoType, MAX_BATCH, VNET_HDR_LEN, VnetHeader,
    finish_checksum,
};
use std::hint::black_box;

use bench::fixtures::tcp4_super_packet;

const MSS: usize = 1380;

/// The segments `split` makes of a super-packet, each in its own buffer.
fn segments(hdr: &VnetHeader, pkt: &[u8]) -> Vec<Vec<u8>> {
    let s = GsoSplit::new(hdr, pkt, Framing::Ip).unwrap();
    (0..s.segment_count())
        .map(|i| {
            let mut out = vec![0u8; s.segment_len(i).unwrap()];
            s.write_segment(i, &mut out).unwrap();
            out
        })
        .collect()
}

fn split(c: &mut Criterion) {
    // The largest IPv4 super-packet: 65535 bytes, 48 segments at MSS 1380.
    let (hdr, pkt) = tcp4_super_packet(65535 - 40, MSS);
    let s = GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap();
    let mut slots = vec![[0u8; 2048]; s.segment_count()];
    let mut g = c.benchmark_group("offload/split");
    g.throughput(Throughput::ElementsAndBytes {
        elements: s.segment_count() as u64,
        bytes: s.total_len() as u64,
    });
    g.bench_function("tcp4_64k_mss1380", |b| {
        b.iter(|| {
            let s = GsoSplit::new(black_box(&hdr), black_box(&pkt), Framing::Ip).unwrap();
            for (i, slot) in slots.iter_mut().enumerate().take(s.segment_count()) {
                black_box(s.write_segment(i, slot).unwrap());
            }
        })
    });
    g.finish();

    // GSO NONE: the checksum finished in place (the no-copy path).
    let (mut hdr1, mut one) = tcp4_super_packet(1460, MSS);
    hdr1.gso_type = GsoType::None;
    let mut g = c.benchmark_group("offload/finish_checksum");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: one.len() as u64,
    });
    g.bench_function("tcp4_1500", |b| {
        b.iter(|| finish_checksum(black_box(&hdr1), black_box(&mut one)).unwrap())
    });
    g.finish();
}

fn coalesce(c: &mut Criterion) {
    // 44 segments of one flow, as one UDP_GRO receive delivers them.
    let (hdr, pkt) = tcp4_super_packet(44 * MSS, MSS);
    let segs = segments(&hdr, &pkt);
    assert_eq!(segs.len(), 44);
    let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
    let bytes: usize = segs.iter().map(Vec::len).sum();
    let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; 4];
    let mut g = c.benchmark_group("offload/coalesce");
    g.throughput(Throughput::ElementsAndBytes {
        elements: 44,
        bytes: bytes as u64,
    });
    for verify in [true, false] {
        let mut co = Coalescer::new(CoalesceConfig {
            verify_checksums: verify,
            ..CoalesceConfig::default()
        });
        let name = if verify {
            "tcp4_44x1380_verified"
        } else {
            "tcp4_44x1380_trusted"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let w = co.coalesce(black_box(&refs), &mut bufs).unwrap();
                assert_eq!(w.len(), 1);
            })
        });
    }
    // Four flows interleaved, 11 segments each: the flow table at work.
    let flows: Vec<Vec<Vec<u8>>> = (0..4u8)
        .map(|f| {
            let (hdr, mut pkt) = tcp4_super_packet(11 * MSS, MSS);
            pkt[21] = f; // source port
            segments(&hdr, &pkt)
        })
        .collect();
    let mixed: Vec<&[u8]> = (0..11)
        .flat_map(|i| flows.iter().map(move |f| f[i].as_slice()))
        .collect();
    assert!(mixed.len() <= MAX_BATCH);
    let mut co = Coalescer::new(CoalesceConfig::default());
    g.bench_function("tcp4_4flows_interleaved_44x1380", |b| {
        b.iter(|| {
            let w = co.coalesce(black_box(&mixed), &mut bufs).unwrap();
            assert_eq!(w.len(), 4);
        })
    });
    g.finish();
}

/// The textbook loop (RFC 1071 §4.1): 16-bit words into a 32-bit
/// accumulator, folded once at the end (no overflow below 128 KiB). The
/// reference the wide sum is compared to.
fn checksum_rfc1071_loop(data: &[u8]) -> u16 {
    assert!(
        data.len() < 128 * 1024,
        "the 32-bit accumulator would overflow"
    );
    let mut sum: u32 = 0;
    let (words, tail) = data.as_chunks::<2>();
    for w in words {
        sum += u32::from(u16::from_be_bytes(*w));
    }
    if let [b] = tail {
        sum += u32::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn internet_checksum(c: &mut Criterion) {
    for (group, wide) in [
        ("offload/checksum", true),
        ("offload/checksum_rfc1071_loop", false),
    ] {
        let mut g = c.benchmark_group(group);
        for len in [1500usize, 65536] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            assert_eq!(Sum::of(&data).checksum(), checksum_rfc1071_loop(&data));
            g.throughput(Throughput::ElementsAndBytes {
                elements: 1,
                bytes: len as u64,
            });
            g.bench_with_input(BenchmarkId::from_parameter(len), &data, |b, d| {
                if wide {
                    b.iter(|| black_box(Sum::of(black_box(d)).checksum()))
                } else {
                    b.iter(|| black_box(checksum_rfc1071_loop(black_box(d))))
                }
            });
        }
        g.finish();
    }
}

criterion_group!(benches, split, coalesce, internet_checksum);
criterion_main!(benches);
