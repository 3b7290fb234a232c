//! GSO split (device to wire): one TCP or UDP super-packet read from TUN/TAP
//! becomes up to [`MAX_SEGMENTS`] complete IP packets, each written once,
//! straight into the caller's send slot.
//!
//! What changes per segment (as the kernel's `tcp_gso_segment` /
//! `__udp_gso_segment` do it): IPv4 total length, id (+1 per segment) and
//! header checksum; IPv6 payload length; TCP sequence number (+ bytes before
//! the segment), FIN and PSH kept on the last segment only, CWR on the first
//! only; UDP length; and a full L4 checksum computed from scratch (the partial
//! checksum the kernel left covers the whole super-packet, not a segment).

use super::OffloadError;
use super::checksum::{Sum, checksum};
use super::layout::{self, Framing, L4Proto, Layout};
use super::vnet::{GsoType, VnetHeader};

/// Most segments one super-packet may produce: a `UDP_SEGMENT` send carries at
/// most 64 (`UDP_MAX_SEGMENTS` in older kernels, and the batch size ringtun sizes
/// its send slots for).
pub const MAX_SEGMENTS: usize = 64;

const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_CWR: u8 = 0x80;

/// Finishes a partial checksum in place (no copy): for a packet read with
/// `NEEDS_CSUM`, the checksum of the bytes from `csum_start` to the end of
/// `pkt` (whose checksum field already holds the pseudo-header sum) is
/// complemented and stored at `csum_start + csum_offset`, as the kernel's
/// `skb_checksum_help` does. A no-op without `NEEDS_CSUM`.
///
/// `pkt` is the packet after the virtio-net header, exactly as long as the
/// read returned. Meant for `gso_type` NONE; for a GSO packet it is right only
/// when the packet fits in one segment ([`GsoSplit::segment_count`] is 1), which
/// then needs no split and no copy.
pub fn finish_checksum(hdr: &VnetHeader, pkt: &mut [u8]) -> Result<(), OffloadError> {
    if !hdr.needs_csum {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > pkt.len() {
        return Err(OffloadError::CsumOutOfRange {
            csum_start: hdr.csum_start,
            csum_offset: hdr.csum_offset,
            len: pkt.len(),
        });
    }
    // `skb_checksum_help` stores CSUM_MANGLED_0 for a zero result: for UDP a
    // zero would mean "no checksum"; for TCP 0xffff is the same value.
    let c = match checksum(&pkt[start..]) {
        0 => 0xffff,
        c => c,
    };
    pkt[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// What the split does with the bytes.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `gso_type` NONE: one segment, the packet itself; the checksum field at
    /// this offset gets finished (NEEDS_CSUM), or nothing changes (`None`).
    Whole { finish: Option<(usize, usize)> },
    /// TCP or UDP segmentation per [`Layout`].
    Segment(Layout),
}

/// A validated super-packet, ready to be cut into segments.
///
/// Built once per read by [`GsoSplit::new`], which checks everything; then
/// [`GsoSplit::write_segment`] writes each segment into a caller's buffer.
/// Every segment but the last has length [`GsoSplit::segment_size`]; the last
/// may be shorter: exactly what a `UDP_SEGMENT` send needs.
#[derive(Clone, Copy, Debug)]
pub struct GsoSplit<'a> {
    /// The packet after the virtio-net header, trimmed to its IP length.
    pkt: &'a [u8],
    mode: Mode,
    /// L4 payload bytes per segment.
    gso_size: usize,
    /// Segments this packet makes (1..=MAX_SEGMENTS).
    count: usize,
    /// Pseudo-header sum without the length (addresses and protocol).
    pseudo: Sum,
    /// IPv4 id of the first segment.
    ip_id: u16,
    /// TCP sequence number of the first segment.
    seq: u32,
}

impl<'a> GsoSplit<'a> {
    /// Validates `pkt` (the bytes after the virtio-net header `hdr`) and
    /// prepares its segments. `framing` says whether `pkt` starts with an IP
    /// header (TUN) or an Ethernet header (TAP).
    ///
    /// `hdr_len` is not trusted: the header length comes from the packet.
    /// With `NEEDS_CSUM`, `csum_start` must point at the L4 header and
    /// `csum_offset` at its checksum. GSO NONE yields one segment, the packet
    /// itself (prefer [`finish_checksum`] in place for those: no copy).
    pub fn new(hdr: &VnetHeader, pkt: &'a [u8], framing: Framing) -> Result<Self, OffloadError> {
        let proto_for = |v6: bool| match hdr.gso_type {
            GsoType::TcpV4 if !v6 => Some(L4Proto::Tcp),
            GsoType::TcpV6 if v6 => Some(L4Proto::Tcp),
            GsoType::UdpL4 => Some(L4Proto::Udp),
            _ => None,
        };
        match hdr.gso_type {
            GsoType::None => return Self::whole(hdr, pkt),
            GsoType::Udp => return Err(OffloadError::UnsupportedGsoType),
            GsoType::TcpV4 | GsoType::TcpV6 | GsoType::UdpL4 => {}
        }
        let l = layout::parse(pkt, framing)?;
        if proto_for(l.v6) != Some(l.proto) {
            return Err(OffloadError::GsoTypeMismatch {
                gso_type: hdr.gso_type,
                ip_version: if l.v6 { 6 } else { 4 },
                protocol: match l.proto {
                    L4Proto::Tcp => "TCP",
                    L4Proto::Udp => "UDP",
                },
            });
        }
        if hdr.needs_csum {
            if usize::from(hdr.csum_start) != l.l4 {
                return Err(OffloadError::CsumStartMismatch {
                    csum_start: hdr.csum_start,
                    l4_offset: l.l4,
                });
            }
            if usize::from(hdr.csum_offset) != l.proto.csum_offset() {
                return Err(OffloadError::CsumOffsetMismatch {
                    csum_offset: hdr.csum_offset,
                    expected: l.proto.csum_offset(),
                });
            }
        }
        let gso_size = usize::from(hdr.gso_size);
        if gso_size == 0 {
            return Err(OffloadError::GsoSizeZero);
        }
        let count = l.payload_len().div_ceil(gso_size).max(1);
        if count > MAX_SEGMENTS {
            return Err(OffloadError::TooManySegments {
                segments: count,
                max: MAX_SEGMENTS,
            });
        }
        let pseudo = Sum::of(&pkt[l.addrs()]).add_u16(u16::from(l.proto.number()));
        let ip_id = if l.v6 {
            0
        } else {
            u16::from_be_bytes([pkt[l.l3 + 4], pkt[l.l3 + 5]])
        };
        let seq = match l.proto {
            L4Proto::Tcp => {
                u32::from_be_bytes([pkt[l.l4 + 4], pkt[l.l4 + 5], pkt[l.l4 + 6], pkt[l.l4 + 7]])
            }
            L4Proto::Udp => 0,
        };
        Ok(GsoSplit {
            pkt: &pkt[..l.end],
            mode: Mode::Segment(l),
            gso_size,
            count,
            pseudo,
            ip_id,
            seq,
        })
    }

    fn whole(hdr: &VnetHeader, pkt: &'a [u8]) -> Result<Self, OffloadError> {
        let finish = if hdr.needs_csum {
            let start = usize::from(hdr.csum_start);
            let field = start + usize::from(hdr.csum_offset);
            if field + 2 > pkt.len() {
                return Err(OffloadError::CsumOutOfRange {
                    csum_start: hdr.csum_start,
                    csum_offset: hdr.csum_offset,
                    len: pkt.len(),
                });
            }
            Some((start, field))
        } else {
            None
        };
        Ok(GsoSplit {
            pkt,
            mode: Mode::Whole { finish },
            gso_size: pkt.len(),
            count: 1,
            pseudo: Sum::ZERO,
            ip_id: 0,
            seq: 0,
        })
    }

    /// Number of segments (1 to [`MAX_SEGMENTS`]).
    pub fn segment_count(&self) -> usize {
        self.count
    }

    /// Length of every segment but the last (the `UDP_SEGMENT` size before
    /// encapsulation); the last is at most this long.
    pub fn segment_size(&self) -> usize {
        match self.mode {
            Mode::Whole { .. } => self.pkt.len(),
            Mode::Segment(l) => l.payload + self.gso_size.min(l.payload_len()),
        }
    }

    /// Length of segment `i`, or `None` past the last.
    pub fn segment_len(&self, i: usize) -> Option<usize> {
        self.chunk(i).map(|(_, len)| self.headers_len() + len)
    }

    /// Total bytes of all segments: what the send slots must hold together.
    pub fn total_len(&self) -> usize {
        match self.mode {
            Mode::Whole { .. } => self.pkt.len(),
            Mode::Segment(l) => self.count * l.payload + l.payload_len(),
        }
    }

    /// Bytes of headers each segment starts with (0 for a packet that is
    /// not segmented).
    pub fn headers_len(&self) -> usize {
        match self.mode {
            Mode::Whole { .. } => 0,
            Mode::Segment(l) => l.payload,
        }
    }

    /// Payload range of segment `i`: (offset into the payload, length).
    fn chunk(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.count {
            return None;
        }
        Some(match self.mode {
            Mode::Whole { .. } => (0, self.pkt.len()),
            Mode::Segment(l) => {
                let start = i * self.gso_size;
                (start, self.gso_size.min(l.payload_len() - start))
            }
        })
    }

    /// Writes segment `i`, a complete IP packet (behind the link header on
    /// TAP) with finished checksums, at the start of `out`; returns its length.
    ///
    /// Cost: one copy of the headers and of this segment's payload, and one
    /// checksum pass over the segment's L4 bytes while they are in cache.
    pub fn write_segment(&self, i: usize, out: &mut [u8]) -> Result<usize, OffloadError> {
        let Some((start, chunk)) = self.chunk(i) else {
            return Err(OffloadError::SegmentOutOfRange {
                index: i,
                count: self.count,
            });
        };
        let hl = self.headers_len();
        let len = hl + chunk;
        let got = out.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(OffloadError::OutputTooSmall { needed: len, got });
        };
        let l = match self.mode {
            Mode::Whole { finish } => {
                // The one copy on the no-split path; `finish_checksum` in place avoids it.
                out.copy_from_slice(self.pkt);
                if let Some((start, field)) = finish {
                    let c = match checksum(&out[start..]) {
                        0 => 0xffff,
                        c => c,
                    };
                    out[field..field + 2].copy_from_slice(&c.to_be_bytes());
                }
                return Ok(len);
            }
            Mode::Segment(l) => l,
        };
        // The copy: headers, then this segment's share of the payload.
        let (headers, payload) = out.split_at_mut(hl);
        payload.copy_from_slice(&self.pkt[hl + start..hl + start + chunk]);
        self.finish_headers(&l, i, start, headers, payload);
        Ok(len)
    }

    /// Where segment `i`'s payload lies in the packet this split was made
    /// from (the bytes after the virtio-net header), or `None` past the
    /// last: what is sent behind the headers [`GsoSplit::write_headers`]
    /// writes, from where it is.
    pub fn payload_range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let (start, chunk) = self.chunk(i)?;
        let at = self.headers_len() + start;
        Some(at..at + chunk)
    }

    /// Writes only the headers of segment `i` at the start of `out`, with
    /// checksums over the payload where it lies
    /// ([`GsoSplit::payload_range`]); returns their length, which is the
    /// same for every segment. Only for a packet that is segmented.
    ///
    /// Cost: one copy of the headers and one checksum pass over the
    /// payload, which is read and not copied.
    pub fn write_headers(&self, i: usize, out: &mut [u8]) -> Result<usize, OffloadError> {
        let Mode::Segment(l) = self.mode else {
            return Err(OffloadError::NotSegmented);
        };
        let Some((start, chunk)) = self.chunk(i) else {
            return Err(OffloadError::SegmentOutOfRange {
                index: i,
                count: self.count,
            });
        };
        let hl = self.headers_len();
        let got = out.len();
        let Some(out) = out.get_mut(..hl) else {
            return Err(OffloadError::OutputTooSmall { needed: hl, got });
        };
        let payload = &self.pkt[hl + start..hl + start + chunk];
        self.finish_headers(&l, i, start, out, payload);
        Ok(hl)
    }

    /// Writes segment `i`'s headers into `out` (exactly the headers'
    /// length): copied, with its lengths, IPv4 id, TCP sequence number and
    /// flags, and checksums over `out` and `payload` (`chunk` bytes from
    /// payload offset `start`).
    fn finish_headers(&self, l: &Layout, i: usize, start: usize, out: &mut [u8], payload: &[u8]) {
        let hl = out.len();
        out.copy_from_slice(&self.pkt[..hl]);
        let len = hl + payload.len();

        let l3 = l.l3;
        if l.v6 {
            let payload_len = (len - l3 - layout::IPV6_HDR) as u16;
            out[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
        } else {
            let total = (len - l3) as u16;
            let id = self.ip_id.wrapping_add(i as u16);
            out[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            out[l3 + 10..l3 + 12].fill(0);
            let c = checksum(&out[l3..l.l4]);
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }

        let l4 = l.l4;
        let l4_len = (len - l4) as u16;
        match l.proto {
            L4Proto::Tcp => {
                let seq = self.seq.wrapping_add(start as u32);
                out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                let mut flags = out[l4 + 13];
                if i + 1 != self.count {
                    flags &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
                }
                if i != 0 {
                    flags &= !TCP_FLAG_CWR;
                }
                out[l4 + 13] = flags;
            }
            L4Proto::Udp => {
                out[l4 + 4..l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
            }
        }
        let field = l4 + l.proto.csum_offset();
        out[field..field + 2].fill(0);
        // The L4 header's length is even (TCP: words; UDP: 8), so the
        // payload's sum follows it without shifting lanes.
        let sum = self
            .pseudo
            .add_u16(l4_len)
            .add_bytes(&out[l4..])
            .add_bytes(payload);
        let c = match (l.proto, sum.checksum()) {
            // RFC 768: a computed zero is sent as all ones (zero means "none").
            (L4Proto::Udp, 0) => 0xffff,
            (_, c) => c,
        };
        out[field..field + 2].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::offload::ETHERNET_VLAN_HEADER_LEN;
    use crate::offload::testutil::*;
    use proptest::prelude::*;

    fn split_all(hdr: &VnetHeader, pkt: &[u8], framing: Framing) -> Vec<Vec<u8>> {
        let s = GsoSplit::new(hdr, pkt, framing).unwrap();
        (0..s.segment_count())
            .map(|i| {
                let mut out = vec![0u8; 70000];
                let n = s.write_segment(i, &mut out).unwrap();
                assert_eq!(Some(n), s.segment_len(i));
                out.truncate(n);
                if s.headers_len() > 0 {
                    // The same segment with its payload left where it is.
                    let mut headers = vec![0u8; s.headers_len()];
                    assert_eq!(s.write_headers(i, &mut headers), Ok(s.headers_len()));
                    let range = s.payload_range(i).unwrap();
                    assert_eq!(
                        [&headers[..], &pkt[range]].concat(),
                        out,
                        "segment {i} apart"
                    );
                }
                out
            })
            .collect()
    }

    #[test]
    fn tcp4_super_packet_splits_into_verified_segments_with_fin_psh_on_last() {
        let spec = Spec {
            payload: 4000,
            gso_size: 1380,
            flags: ACK | PSH | FIN,
            ..Spec::tcp4()
        };
        let (hdr, pkt) = super_packet(&spec);
        let segs = split_all(&hdr, &pkt, Framing::Ip);
        assert_eq!(segs.len(), 3);
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            [1420, 1420, 1280]
        );
        for (i, seg) in segs.iter().enumerate() {
            let info = verify_segment(seg, Framing::Ip);
            assert_eq!(
                info.seq,
                spec.seq.wrapping_add(1380 * i as u32),
                "segment {i} seq"
            );
            assert_eq!(
                info.ip_id,
                Some(spec.ip_id.wrapping_add(i as u16)),
                "segment {i} id"
            );
            let last = i == 2;
            assert_eq!(info.fin, last, "FIN on segment {i}");
            assert_eq!(info.psh, last, "PSH on segment {i}");
            assert_eq!(
                &seg[40..],
                &spec.payload_bytes()[i * 1380..(i * 1380 + seg.len() - 40)]
            );
        }
    }

    #[test]
    fn tcp4_with_ip_and_tcp_options_keeps_them_in_every_segment() {
        let spec = Spec {
            ip_options: vec![1, 1, 1, 0], // NOP NOP NOP EOL
            tcp_options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], // NOP NOP timestamps
            payload: 3000,
            gso_size: 1000,
            flags: ACK | CWR,
            ..Spec::tcp4()
        };
        let (hdr, pkt) = super_packet(&spec);
        assert!(hdr.ecn, "CWR makes the fixture an ECN super-packet");
        let segs = split_all(&hdr, &pkt, Framing::Ip);
        assert_eq!(segs.len(), 3);
        for (i, seg) in segs.iter().enumerate() {
            let info = verify_segment(seg, Framing::Ip);
            assert_eq!(&seg[20..24], &[1, 1, 1, 0], "IP options in segment {i}");
            assert_eq!(
                &seg[44..56],
                &spec.tcp_options[..],
                "TCP options in segment {i}"
            );
            assert_eq!(info.cwr, i == 0, "CWR only on the first segment");
            assert_eq!(seg.len(), 24 + 32 + 1000);
        }
    }

    #[test]
    fn tcp6_super_packet_splits() {
        let spec = Spec {
            payload: 65_000,
            gso_size: 1220,
            flags: ACK | PSH,
            ..Spec::tcp6()
        };
        let (hdr, pkt) = super_packet(&spec);
        let segs = split_all(&hdr, &pkt, Framing::Ip);
        assert_eq!(segs.len(), 65_000usize.div_ceil(1220));
        let mut payload = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let info = verify_segment(seg, Framing::Ip);
            assert_eq!(info.ip_id, None);
            assert_eq!(info.psh, i + 1 == segs.len());
            payload.extend_from_slice(&seg[60..]);
        }
        assert_eq!(
            payload,
            spec.payload_bytes(),
            "segments carry the payload in order"
        );
    }

    #[test]
    fn udp4_and_udp6_super_packets_split_into_datagrams() {
        for base in [Spec::udp4(), Spec::udp6()] {
            let spec = Spec {
                payload: 5000,
                gso_size: 1200,
                ..base
            };
            let (hdr, pkt) = super_packet(&spec);
            let segs = split_all(&hdr, &pkt, Framing::Ip);
            assert_eq!(segs.len(), 5);
            for seg in &segs {
                let info = verify_segment(seg, Framing::Ip);
                assert!(info.udp_len.is_some());
            }
            assert_eq!(segs[4].len() - segs[4].len().min(spec.headers_len()), 200);
        }
    }

    #[test]
    fn ethernet_framed_super_packet_repeats_the_link_header() {
        let spec = Spec {
            payload: 3000,
            gso_size: 1400,
            vlan: true,
            ..Spec::tcp4()
        };
        let (hdr, frame) = super_packet_eth(&spec);
        let segs = split_all(&hdr, &frame, Framing::Ethernet);
        assert_eq!(segs.len(), 3);
        for seg in &segs {
            let link = ETHERNET_VLAN_HEADER_LEN;
            assert_eq!(&seg[..link], &frame[..link]);
            verify_segment(seg, Framing::Ethernet);
        }
    }

    #[test]
    fn payload_fitting_one_segment_matches_finish_in_place() {
        let spec = Spec {
            payload: 900,
            gso_size: 1380,
            flags: ACK | PSH,
            ..Spec::tcp4()
        };
        let (hdr, pkt) = super_packet(&spec);
        let s = GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap();
        assert_eq!(s.segment_count(), 1);
        let mut copied = vec![0u8; pkt.len()];
        s.write_segment(0, &mut copied).unwrap();
        let mut in_place = pkt.clone();
        finish_checksum(&hdr, &mut in_place).unwrap();
        assert_eq!(copied, in_place);
        verify_segment(&in_place, Framing::Ip);
    }

    #[test]
    fn gso_none_with_needs_csum_is_finished_in_place() {
        let spec = Spec {
            payload: 500,
            ..Spec::udp6()
        };
        let (mut hdr, mut pkt) = super_packet(&spec);
        hdr.gso_type = GsoType::None;
        hdr.gso_size = 0;
        finish_checksum(&hdr, &mut pkt).unwrap();
        verify_segment(&pkt, Framing::Ip);
        // And through GsoSplit: one segment, the same bytes.
        let (hdr2, pkt2) = {
            let (mut h, p) = super_packet(&spec);
            h.gso_type = GsoType::None;
            (h, p)
        };
        let segs = split_all(&hdr2, &pkt2, Framing::Ip);
        assert_eq!(segs, vec![pkt]);
        // It has no per-segment headers to write apart from its payload.
        let s = GsoSplit::new(&hdr2, &pkt2, Framing::Ip).unwrap();
        assert_eq!(s.headers_len(), 0);
        assert_eq!(
            s.write_headers(0, &mut [0u8; 100]),
            Err(OffloadError::NotSegmented)
        );
    }

    #[test]
    fn finish_checksum_without_needs_csum_changes_nothing() {
        let spec = Spec::tcp4();
        let (_, mut pkt) = super_packet(&spec);
        let before = pkt.clone();
        finish_checksum(&VnetHeader::ZERO, &mut pkt).unwrap();
        assert_eq!(pkt, before);
    }

    #[test]
    fn finish_checksum_out_of_range_is_an_error() {
        let hdr = VnetHeader {
            needs_csum: true,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHeader::ZERO
        };
        let mut pkt = [0u8; 37];
        assert_eq!(
            finish_checksum(&hdr, &mut pkt),
            Err(OffloadError::CsumOutOfRange {
                csum_start: 20,
                csum_offset: 16,
                len: 37
            })
        );
    }

    #[test]
    fn hdr_len_is_not_trusted() {
        let spec = Spec {
            payload: 3000,
            gso_size: 1000,
            ..Spec::tcp4()
        };
        let (mut hdr, pkt) = super_packet(&spec);
        hdr.hdr_len = 1234; // as if the kernel reported skb_headlen
        let segs = split_all(&hdr, &pkt, Framing::Ip);
        assert_eq!(segs.len(), 3);
        assert!(segs.iter().all(|s| s.len() == 1040));
    }

    #[test]
    fn malformed_super_packets_are_typed_errors() {
        let (hdr, pkt) = super_packet(&Spec {
            payload: 3000,
            gso_size: 1000,
            ..Spec::tcp4()
        });
        let err = |h: &VnetHeader, p: &[u8]| GsoSplit::new(h, p, Framing::Ip).unwrap_err();

        assert_eq!(
            err(&VnetHeader { gso_size: 0, ..hdr }, &pkt),
            OffloadError::GsoSizeZero
        );
        assert_eq!(
            err(
                &VnetHeader {
                    gso_size: 10,
                    ..hdr
                },
                &pkt
            ),
            OffloadError::TooManySegments {
                segments: 300,
                max: 64
            }
        );
        assert_eq!(
            err(
                &VnetHeader {
                    csum_start: 24,
                    ..hdr
                },
                &pkt
            ),
            OffloadError::CsumStartMismatch {
                csum_start: 24,
                l4_offset: 20
            }
        );
        assert_eq!(
            err(
                &VnetHeader {
                    csum_offset: 6,
                    ..hdr
                },
                &pkt
            ),
            OffloadError::CsumOffsetMismatch {
                csum_offset: 6,
                expected: 16
            }
        );
        assert_eq!(
            err(
                &VnetHeader {
                    gso_type: GsoType::TcpV6,
                    ..hdr
                },
                &pkt
            ),
            OffloadError::GsoTypeMismatch {
                gso_type: GsoType::TcpV6,
                ip_version: 4,
                protocol: "TCP"
            }
        );
        assert_eq!(
            err(
                &VnetHeader {
                    gso_type: GsoType::UdpL4,
                    ..hdr
                },
                &pkt
            ),
            OffloadError::GsoTypeMismatch {
                gso_type: GsoType::UdpL4,
                ip_version: 4,
                protocol: "TCP"
            }
        );
        assert_eq!(
            err(
                &VnetHeader {
                    gso_type: GsoType::Udp,
                    ..hdr
                },
                &pkt
            ),
            OffloadError::UnsupportedGsoType
        );
        assert!(matches!(
            err(&hdr, &pkt[..pkt.len() - 1]),
            OffloadError::Truncated { .. }
        ));

        let mut v6 = super_packet(&Spec {
            payload: 3000,
            gso_size: 1000,
            ..Spec::tcp6()
        });
        v6.1[6] = 0; // hop-by-hop options header
        assert_eq!(
            err(&v6.0, &v6.1),
            OffloadError::UnsupportedIpv6NextHeader(0)
        );
    }

    #[test]
    fn output_slot_too_small_and_index_out_of_range_are_errors() {
        let (hdr, pkt) = super_packet(&Spec {
            payload: 3000,
            gso_size: 1000,
            ..Spec::tcp4()
        });
        let s = GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap();
        let mut small = [0u8; 1039];
        assert_eq!(
            s.write_segment(0, &mut small),
            Err(OffloadError::OutputTooSmall {
                needed: 1040,
                got: 1039
            })
        );
        let mut big = [0u8; 2000];
        assert_eq!(
            s.write_segment(3, &mut big),
            Err(OffloadError::SegmentOutOfRange { index: 3, count: 3 })
        );
        assert_eq!(s.segment_len(3), None);
        assert_eq!(s.segment_size(), 1040);
        assert_eq!(s.total_len(), 3 * 1040);
    }

    #[test]
    fn exactly_64_segments_is_accepted_65_is_not() {
        let (hdr, pkt) = super_packet(&Spec {
            payload: 64 * 1000,
            gso_size: 1000,
            ..Spec::tcp6()
        });
        assert_eq!(
            GsoSplit::new(&hdr, &pkt, Framing::Ip)
                .unwrap()
                .segment_count(),
            64
        );
        let (hdr, pkt) = super_packet(&Spec {
            payload: 64 * 1000 + 1,
            gso_size: 1000,
            ..Spec::tcp6()
        });
        assert_eq!(
            GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap_err(),
            OffloadError::TooManySegments {
                segments: 65,
                max: 64
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn every_segment_verifies_with_etherparse(spec in any_spec()) {
            let (hdr, pkt) = super_packet(&spec);
            let s = GsoSplit::new(&hdr, &pkt, Framing::Ip).unwrap();
            let mut out = vec![0u8; 70_000];
            let mut payload = Vec::new();
            let mut next_seq = spec.seq;
            for i in 0..s.segment_count() {
                let n = s.write_segment(i, &mut out).unwrap();
                let seg = &out[..n];
                let info = verify_segment(seg, Framing::Ip);
                if i + 1 < s.segment_count() {
                    prop_assert_eq!(n, s.segment_size(), "all but the last have the same length");
                } else {
                    prop_assert!(n <= s.segment_size());
                }
                if spec.tcp {
                    prop_assert_eq!(info.seq, next_seq);
                    prop_assert_eq!(info.fin, spec.flags & FIN != 0 && i + 1 == s.segment_count());
                    prop_assert_eq!(info.psh, spec.flags & PSH != 0 && i + 1 == s.segment_count());
                    prop_assert_eq!(info.cwr, spec.flags & CWR != 0 && i == 0);
                }
                if !spec.v6 {
                    prop_assert_eq!(info.ip_id, Some(spec.ip_id.wrapping_add(i as u16)));
                }
                next_seq = next_seq.wrapping_add(info.payload_len as u32);
                payload.extend_from_slice(&seg[spec.headers_len()..]);
            }
            prop_assert_eq!(payload, spec.payload_bytes());
        }

        #[test]
        fn any_bytes_never_panic(
            hdr_bytes in proptest::array::uniform10(any::<u8>()),
            pkt in proptest::collection::vec(any::<u8>(), 0..400),
            eth in any::<bool>(),
        ) {
            let framing = if eth { Framing::Ethernet } else { Framing::Ip };
            if let Ok(hdr) = VnetHeader::parse(&hdr_bytes) {
                let mut owned = pkt.clone();
                let _ = finish_checksum(&hdr, &mut owned);
                if let Ok(s) = GsoSplit::new(&hdr, &pkt, framing) {
                    let mut out = vec![0u8; 512];
                    for i in 0..=s.segment_count() {
                        let _ = s.write_segment(i, &mut out);
                    }
                }
            }
        }

        #[test]
        fn mutated_super_packets_never_panic(
            spec in any_spec(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let (hdr, mut pkt) = super_packet(&spec);
            for (at, byte) in flips {
                let i = at.index(spec.headers_len() + 8);
                if i < pkt.len() { pkt[i] = byte; }
            }
            pkt.truncate(cut.index(pkt.len() + 1));
            if let Ok(s) = GsoSplit::new(&hdr, &pkt, Framing::Ip) {
                let mut out = vec![0u8; 70_000];
                for i in 0..s.segment_count() {
                    prop_assert!(s.write_segment(i, &mut out).is_ok());
                }
            }
        }
    }
}
