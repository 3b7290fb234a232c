//! Round trips across split and coalesce.
//!
//! coalesce(split(p)) gives back p, bit for bit, virtio-net header included,
//! when p is a super-packet as TUN hands it over (NEEDS_CSUM, pseudo-header
//! sum in the L4 checksum field, `hdr_len` = the headers). Fields that
//! legitimately differ, and are therefore excluded from the fixtures:
//! - `hdr_len`: the kernel reports `skb_headlen`, which may include payload;
//!   coalesce writes the exact header length.
//! - FIN: a FIN segment is never merged, so a super-packet carrying FIN comes
//!   back as the rest merged plus the last segment alone (tested separately).
//! - A super-packet that fits one segment comes back as that packet alone,
//!   with a finished checksum and a zero virtio-net header.
//! - UDP datagrams reordered within a batch merge in batch order: each keeps
//!   its payload, but IPv4 ids are renumbered from the first.

use super::coalesce::{CoalesceConfig, Coalescer, MAX_BATCH, Write};
use super::layout::Framing;
use super::split::{GsoSplit, finish_checksum};
use super::testutil::*;
use super::vnet::{VNET_HDR_LEN, VnetHeader};
use proptest::prelude::*;

fn config() -> CoalesceConfig {
    CoalesceConfig {
        udp: true,
        ..CoalesceConfig::default()
    }
}

fn buffers(n: usize) -> Vec<Vec<u8>> {
    vec![vec![0u8; VNET_HDR_LEN + 65535]; n]
}

fn split_all(hdr: &VnetHeader, pkt: &[u8]) -> Vec<Vec<u8>> {
    let s = GsoSplit::new(hdr, pkt, Framing::Ip).unwrap();
    (0..s.segment_count())
        .map(|i| {
            let mut out = vec![0u8; s.segment_len(i).unwrap()];
            s.write_segment(i, &mut out).unwrap();
            out
        })
        .collect()
}

/// Specs without FIN (see the module note).
fn spec_without_fin() -> impl Strategy<Value = Spec> {
    any_spec().prop_map(|s| Spec {
        flags: s.flags & !FIN,
        ..s
    })
}

/// Expands one write back into the packets it stands for: a super-packet is
/// split again (it must be one the splitter, like the kernel, accepts).
fn expand(co: &Coalescer, w: &Write, packets: &[Vec<u8>], bufs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    match *w {
        Write::Alone { packet } => vec![packets[packet].clone()],
        Write::Super {
            buffer,
            len,
            segments,
        } => {
            let b = &assembled(co, buffer, packets, bufs)[..];
            assert_eq!(b.len(), len);
            let hdr = VnetHeader::parse(b).unwrap();
            let segs = split_all(&hdr, &b[VNET_HDR_LEN..]);
            assert_eq!(
                segs.len(),
                segments,
                "a super-packet re-splits into what went in"
            );
            segs
        }
    }
}

/// Super-packet `buffer` of the last batch as one contiguous packet.
fn assembled(co: &Coalescer, buffer: usize, packets: &[Vec<u8>], bufs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    co.assemble(buffer, &bufs[buffer], packets, &mut out);
    out
}

/// (source port, sequence number, payload) of a TCP/UDP packet over IPv4/IPv6.
fn flow_view(pkt: &[u8]) -> (u16, u32, Vec<u8>) {
    let v6 = pkt[0] >> 4 == 6;
    let l4 = if v6 {
        40
    } else {
        usize::from(pkt[0] & 0xf) * 4
    };
    let tcp = pkt[if v6 { 6 } else { 9 }] == 6;
    let payload = if tcp {
        l4 + usize::from(pkt[l4 + 12] >> 4) * 4
    } else {
        l4 + 8
    };
    let seq = if tcp {
        u32::from_be_bytes([pkt[l4 + 4], pkt[l4 + 5], pkt[l4 + 6], pkt[l4 + 7]])
    } else {
        0
    };
    (
        u16::from_be_bytes([pkt[l4], pkt[l4 + 1]]),
        seq,
        pkt[payload..].to_vec(),
    )
}

#[test]
fn super_packet_with_fin_comes_back_as_merged_rest_and_fin_alone() {
    let spec = Spec {
        payload: 5000,
        gso_size: 1000,
        flags: ACK | PSH | FIN,
        ..Spec::tcp4()
    };
    let (hdr, pkt) = super_packet(&spec);
    let segs = split_all(&hdr, &pkt);
    let mut bufs = buffers(1);
    let mut co = Coalescer::new(config());
    let w = co.coalesce(&segs, &mut bufs).unwrap();
    assert_eq!(
        w,
        [
            Write::Super {
                buffer: 0,
                len: 10 + 40 + 4000,
                segments: 4
            },
            Write::Alone { packet: 4 }
        ]
    );
}

#[test]
fn super_packet_of_one_segment_comes_back_alone_and_finished() {
    let spec = Spec {
        payload: 700,
        gso_size: 1000,
        ..Spec::tcp6()
    };
    let (hdr, pkt) = super_packet(&spec);
    let segs = split_all(&hdr, &pkt);
    let mut co = Coalescer::new(config());
    assert_eq!(
        co.coalesce(&segs, &mut buffers(1)).unwrap(),
        [Write::Alone { packet: 0 }]
    );
    let mut finished = pkt.clone();
    finish_checksum(&hdr, &mut finished).unwrap();
    assert_eq!(segs[0], finished);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn coalesce_of_split_gives_the_super_packet_back(spec in spec_without_fin()) {
        let (hdr, pkt) = super_packet(&spec);
        let segs = split_all(&hdr, &pkt);
        let mut bufs = buffers(1);
        let mut co = Coalescer::new(config());
        let w = co.coalesce(&segs, &mut bufs).unwrap().to_vec();
        if segs.len() == 1 {
            prop_assert_eq!(w, vec![Write::Alone { packet: 0 }]);
        } else {
            prop_assert_eq!(
                &w,
                &vec![Write::Super { buffer: 0, len: VNET_HDR_LEN + pkt.len(), segments: segs.len() }]
            );
            let out = &assembled(&co, 0, &segs, &bufs)[..];
            prop_assert_eq!(out.len(), VNET_HDR_LEN + pkt.len());
            prop_assert_eq!(VnetHeader::parse(out).unwrap(), hdr);
            prop_assert!(out[VNET_HDR_LEN..] == pkt[..], "super-packet bytes differ from the original");
        }
    }

    #[test]
    fn interleaved_flows_each_come_back_whole(
        specs in proptest::collection::vec(spec_without_fin(), 1..=4),
        order in proptest::collection::vec(any::<prop::sample::Index>(), MAX_BATCH),
    ) {
        // Distinct flows, small enough to fit one batch together.
        let specs: Vec<Spec> = specs
            .into_iter()
            .enumerate()
            .map(|(f, s)| Spec { sport: 1000 + f as u16, payload: s.payload.min(15 * usize::from(s.gso_size)), ..s })
            .collect();
        let split: Vec<(VnetHeader, Vec<u8>, Vec<Vec<u8>>)> = specs
            .iter()
            .map(|s| {
                let (h, p) = super_packet(s);
                let segs = split_all(&h, &p);
                (h, p, segs)
            })
            .collect();
        // Interleave: repeatedly take the next segment of a flow picked by `order`.
        let mut next = vec![0usize; split.len()];
        let mut batch = Vec::new();
        let mut pick = order.iter();
        while batch.len() < split.iter().map(|s| s.2.len()).sum::<usize>() {
            let live: Vec<usize> = (0..split.len()).filter(|&f| next[f] < split[f].2.len()).collect();
            let f = live[pick.next().map_or(0, |i| i.index(live.len()))];
            batch.push(split[f].2[next[f]].clone());
            next[f] += 1;
        }
        let mut bufs = buffers(4);
        let mut co = Coalescer::new(config());
        let writes = co.coalesce(&batch, &mut bufs).unwrap().to_vec();
        prop_assert_eq!(writes.len(), split.len(), "one write per flow");
        for w in &writes {
            let got = match *w {
                Write::Alone { packet } => batch[packet].clone(),
                Write::Super { buffer, len, .. } => {
                    let b = assembled(&co, buffer, &batch, &bufs);
                    prop_assert_eq!(b.len(), len);
                    b
                }
            };
            let matched = split.iter().any(|(h, p, segs)| match w {
                Write::Alone { .. } => segs.len() == 1 && segs[0] == got,
                Write::Super { .. } => {
                    VnetHeader::parse(&got).unwrap() == *h && got[VNET_HDR_LEN..] == p[..]
                }
            });
            prop_assert!(matched, "write {:?} is none of the original super-packets", w);
        }
    }

    #[test]
    fn any_batch_keeps_flow_order_and_writes_valid_super_packets(
        specs in proptest::collection::vec(spec_without_fin(), 1..=3),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..MAX_BATCH),
    ) {
        // Segments of a few flows, picked with repeats, gaps and reordering.
        let pool: Vec<Vec<Vec<u8>>> = specs
            .iter()
            .enumerate()
            .map(|(f, s)| {
                let (h, p) = super_packet(&Spec { sport: 1000 + f as u16, ..s.clone() });
                split_all(&h, &p)
            })
            .collect();
        let batch: Vec<Vec<u8>> =
            picks.iter().map(|(f, i)| { let segs = &pool[f.index(pool.len())]; segs[i.index(segs.len())].clone() }).collect();
        let mut bufs = buffers(3);
        let mut co = Coalescer::new(config());
        let writes = co.coalesce(&batch, &mut bufs).unwrap().to_vec();
        let mut out = Vec::new();
        for w in &writes {
            for seg in expand(&co, w, &batch, &bufs) {
                verify_segment(&seg, Framing::Ip);
                out.push(flow_view(&seg));
            }
        }
        prop_assert_eq!(out.len(), batch.len(), "every packet written exactly once");
        let input: Vec<_> = batch.iter().map(|p| flow_view(p)).collect();
        for f in 0..pool.len() as u16 {
            let of = |v: &Vec<(u16, u32, Vec<u8>)>| v.iter().filter(|x| x.0 == 1000 + f).cloned().collect::<Vec<_>>();
            prop_assert!(of(&out) == of(&input), "flow {} reordered or altered", f);
        }
    }

    #[test]
    fn any_bytes_never_panic_and_every_packet_is_written_once(
        junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..MAX_BATCH),
        spec in spec_without_fin(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>()), 0..8),
        verify in any::<bool>(),
    ) {
        let (h, p) = super_packet(&spec);
        let mut batch = split_all(&h, &p);
        for (k, at, byte) in flips {
            let seg = &mut batch[k.index(spec_len(&spec, &h))];
            let i = at.index(seg.len().min(spec.headers_len() + 4));
            seg[i] = byte;
        }
        batch.extend(junk);
        batch.truncate(MAX_BATCH);
        let mut bufs = buffers(2);
        let mut co = Coalescer::new(CoalesceConfig { verify_checksums: verify, ..config() });
        let writes = co.coalesce(&batch, &mut bufs).unwrap().to_vec();
        let mut seen = vec![0; batch.len()];
        let mut total = 0;
        for w in &writes {
            match *w {
                Write::Alone { packet } => { seen[packet] += 1; total += 1; }
                Write::Super { buffer, len, segments } => {
                    // Whatever went in, a super-packet the splitter accepts comes out.
                    let b = &assembled(&co, buffer, &batch, &bufs)[..];
                    prop_assert_eq!(b.len(), len);
                    let hdr = VnetHeader::parse(b).unwrap();
                    let s = GsoSplit::new(&hdr, &b[VNET_HDR_LEN..], Framing::Ip).unwrap();
                    prop_assert_eq!(s.segment_count(), segments);
                    for (k, _) in co.payloads(buffer) {
                        seen[k] += 1;
                    }
                    total += segments;
                }
            }
        }
        prop_assert_eq!(total, batch.len());
        prop_assert!(seen.iter().all(|&n| n <= 1));
        let mut supers: Vec<usize> = writes
            .iter()
            .filter_map(|w| match w { Write::Super { buffer, .. } => Some(*buffer), _ => None })
            .collect();
        supers.sort_unstable();
        prop_assert_eq!(supers, (0..co.buffers_used()).collect::<Vec<_>>(),
            "the first buffers are taken, one per super-packet");
    }
}

fn spec_len(spec: &Spec, h: &VnetHeader) -> usize {
    spec.payload.div_ceil(usize::from(h.gso_size)).max(1)
}
