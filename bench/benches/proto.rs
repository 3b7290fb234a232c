//! tunnel-proto micro-benchmarks: seal and open per packet size, a whole
//! handshake, the replay window and the AllowedIPs lookup.
//!
//! `cargo bench -p bench --bench proto -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use bench::fixtures::{PEER, established, handshake, tunnel, wan_addr as addr};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tunnel_proto::wg::{
    AllowedIps, HEADROOM, IpPrefix, PeerId, ReplayWindow, TAILROOM, TRANSMIT_BUF_LEN,
};

const SIZES: [usize; 4] = [64, 512, 1420, 8192];

fn ip_packet(len: usize) -> Vec<u8> {
    bench::fixtures::ip_packet(len, [10, 0, 0, 2])
}

fn seal_open(c: &mut Criterion) {
    let (dp_a, dp_b, now) = established();
    let mut g = c.benchmark_group("seal");
    for size in SIZES {
        let pkt = ip_packet(size);
        let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
        g.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: size as u64,
        });
        g.bench_function(format!("{size}"), |bch| {
            bch.iter(|| {
                // The plaintext is re-copied each time: sealing is in place.
                buf[HEADROOM..HEADROOM + size].copy_from_slice(&pkt);
                black_box(dp_a.encapsulate(PEER, 0, now, &mut buf, size).unwrap())
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("open");
    for size in SIZES {
        let pkt = ip_packet(size);
        g.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: size as u64,
        });
        g.bench_function(format!("{size}"), |bch| {
            bch.iter_batched_ref(
                || {
                    // Each open needs a fresh counter (the replay window refuses
                    // repeats): seal one outside the timed part.
                    let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
                    buf[HEADROOM..HEADROOM + size].copy_from_slice(&pkt);
                    let s = dp_a.encapsulate(PEER, 0, now, &mut buf, size).unwrap();
                    buf.truncate(s.len);
                    buf
                },
                |buf| black_box(dp_b.decapsulate(now, 0, addr(1).into(), buf).unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn handshakes(c: &mut Criterion) {
    let (mut a, mut b) = (tunnel(1, 2), tunnel(2, 1));
    let mut buf = vec![0u8; TRANSMIT_BUF_LEN];
    let mut now = Instant::now();
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("initiation+response", |bch| {
        bch.iter(|| {
            // Virtual time: past REKEY_TIMEOUT and the responder's rate limit each round.
            now += Duration::from_secs(6);
            black_box(handshake(&mut a, &mut b, now, &mut buf))
        })
    });
    g.finish();
}

fn replay_window(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_window");
    g.throughput(Throughput::Elements(1));
    let mut w = ReplayWindow::new();
    let mut counter = 0u64;
    g.bench_function("in_order", |bch| {
        bch.iter(|| {
            counter += 1;
            black_box(w.update(black_box(counter)))
        })
    });
    // Four workers' worth of reordering: counters arrive up to 4096 apart.
    let mut w = ReplayWindow::new();
    let order: Vec<u64> = (0..65536u64)
        .map(|i| (i & !4095) + ((i * 2654435761) & 4095))
        .collect();
    let mut i = 0usize;
    let mut base = 0u64;
    g.bench_function("reordered", |bch| {
        bch.iter(|| {
            if i == order.len() {
                i = 0;
                base += 1 << 20;
            }
            let c = base + order[i];
            i += 1;
            black_box(w.update(black_box(c)))
        })
    });
    g.finish();
}

/// 10,000 prefixes: 9,000 IPv4 of lengths 16–32 and 1,000 IPv6 /48–/64, over 250 peers.
fn allowed_ips(c: &mut Criterion) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut prefixes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while prefixes.len() < 10_000 {
        let r = rnd();
        let p = if prefixes.len() < 9_000 {
            IpPrefix::new(
                IpAddr::V4(Ipv4Addr::from(r as u32 | 0x0a00_0000)),
                16 + (r >> 40) as u8 % 17,
            )
            .unwrap()
        } else {
            let a = u128::from(r) << 64 | 0xfd00u128 << 112;
            IpPrefix::new(IpAddr::V6(Ipv6Addr::from(a)), 48 + (r >> 40) as u8 % 17).unwrap()
        };
        if seen.insert(p) {
            prefixes.push((p, PeerId::new((prefixes.len() % 250) as u32, 0)));
        }
    }
    let table = AllowedIps::new(prefixes.iter().copied()).unwrap();
    // Half the probes hit a prefix, half are random.
    let probes: Vec<IpAddr> = (0..4096)
        .map(|i| {
            if i % 2 == 0 {
                prefixes[(rnd() % 10_000) as usize].0.addr()
            } else {
                IpAddr::V4(Ipv4Addr::from(rnd() as u32))
            }
        })
        .collect();
    let mut g = c.benchmark_group("allowed_ips");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("lookup_10k", |bch| {
        bch.iter(|| {
            i = (i + 1) & 4095;
            black_box(table.lookup(black_box(probes[i])))
        })
    });
    g.finish();
}

criterion_group!(benches, seal_open, handshakes, replay_window, allowed_ips);
criterion_main!(benches);
