//! GRO-style coalescing (wire to device): a receive batch of opened IP packets
//! becomes a list of TUN/TAP writes, consecutive TCP segments of one flow (and
//! UDP datagrams, with USO) merged into super-packets with a virtio-net header.
//!
//! What may merge follows the kernel's `tcp_gro_receive` / `inet_gro_receive`
//! (and wireguard-go's `tun/offload_linux.go`): same addresses and ports; same
//! link header, TOS/traffic class, TTL/hop limit, DF, IPv4 options, IPv6 flow
//! label; same ACK number, TCP flags (but PSH) and TCP options; contiguous
//! sequence numbers; no SYN/FIN/RST/URG; PSH and a short segment only last;
//! CWR only first; all segments `gso_size` long but the last; at most
//! [`MAX_SEGMENTS`] segments and 64 KiB. A packet that fails any of these is
//! written alone with an all-zero virtio-net header, so the kernel sees it as
//! it arrived.
//!
//! What the kernel accepts from a TUN write (`virtio_net_hdr_to_skb`):
//! `NEEDS_CSUM` with `csum_start` at the L4 header and `csum_offset` at its
//! checksum, whose field holds the folded pseudo-header sum over the whole
//! super-packet's L4 length (CHECKSUM_PARTIAL, as `tcp_v4_send_check` leaves
//! it); `UDP_L4` requires `NEEDS_CSUM`.
//!
//! Order within a flow is preserved: a packet only ever joins the flow's most
//! recent write; anything that cannot join starts a new write, which becomes
//! the flow's most recent. Writes come out in the order of their first packet.
//!
//! Nothing is copied but headers: a super-packet's output buffer holds its
//! virtio-net header and the head packet's rewritten headers
//! ([`Coalescer::header_len`]); its payload stays where the packets are, and
//! [`Coalescer::payloads`] names the pieces, in order, for a vectored write.

use super::OffloadError;
use super::checksum::{Sum, checksum};
use super::layout::{self, ETHERNET_VLAN_HEADER_LEN, Framing, L4Proto, Layout, MAX_IP_PACKET};
use super::split::MAX_SEGMENTS;
use super::vnet::{GsoType, VNET_HDR_LEN, VnetHeader};

/// Most packets one [`Coalescer::coalesce`] call takes (a `UDP_GRO` receive
/// holds at most 64 segments).
pub const MAX_BATCH: usize = 64;

/// Flows tracked at once within a batch. When all slots hold open writes, a
/// further flow is not tracked: its packets are written alone.
pub const MAX_FLOWS: usize = 8;

/// Most bytes of a super-packet's output buffer: the virtio-net header, a
/// tagged Ethernet header, and the longest IPv4 and TCP headers (60 bytes
/// each). The payload is never copied there.
pub const MAX_SUPER_HEADER: usize = VNET_HDR_LEN + ETHERNET_VLAN_HEADER_LEN + 60 + 60;

/// No next packet in a super-packet's list.
const LAST: u8 = u8::MAX;

const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_ACK: u8 = 0x10;
const TCP_FLAG_URG: u8 = 0x20;
const TCP_FLAG_CWR: u8 = 0x80;

/// What to coalesce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Device framing: IP packets (TUN) or Ethernet frames (TAP).
    pub framing: Framing,
    /// Merge TCP segments (needs a device opened with `IFF_VNET_HDR`).
    pub tcp: bool,
    /// Merge UDP datagrams into `UDP_L4` super-packets: only when the kernel
    /// takes USO writes (`TUNSETOFFLOAD` accepted `TUN_F_USO4|TUN_F_USO6`).
    pub udp: bool,
    /// Verify each merged packet's IPv4 header and L4 checksums first. A
    /// super-packet reaches the stack as CHECKSUM_PARTIAL, i.e. trusted, so
    /// without this a corrupt segment would be accepted instead of dropped.
    /// Costs one checksum pass over the merged payload (packets written alone
    /// are not touched); the AEAD already rules out corruption on the wire.
    pub verify_checksums: bool,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            framing: Framing::Ip,
            tcp: true,
            udp: false,
            verify_checksums: true,
        }
    }
}

/// One write to the device, in the order they should be issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Packet `packet` of the batch as it is: the caller puts an all-zero
    /// virtio-net header in the [`VNET_HDR_LEN`] bytes in front of it (its
    /// headroom) and writes both, no copy.
    Alone {
        /// Index into the batch.
        packet: usize,
    },
    /// A super-packet whose headers are in output buffer `buffer` (the
    /// first [`Coalescer::header_len`] bytes) and whose payload is the
    /// pieces [`Coalescer::payloads`] names, in that order.
    Super {
        /// Index into the output buffers.
        buffer: usize,
        /// Bytes of the whole super-packet, virtio-net header included.
        len: usize,
        /// Packets merged into it.
        segments: usize,
    },
}

/// A flow's identity: addresses, ports, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowKey {
    proto: L4Proto,
    v6: bool,
    addrs: [u8; 32],
    ports: [u8; 4],
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    key: FlowKey,
    /// The flow's most recent item.
    item: usize,
}

/// A write under construction.
#[derive(Clone, Copy, Debug)]
struct Item {
    /// Batch index of its first packet.
    head: usize,
    /// Present if the head may start a merge.
    run: Option<Run>,
}

/// A mergeable run of one flow's packets.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Output buffer once a second packet joined.
    buffer: Option<usize>,
    /// Batch index of the last packet that joined (the head's, at first).
    last: usize,
    /// Headers of the head packet (offsets within the packet, and within
    /// the buffer after the virtio-net header).
    layout: Layout,
    /// Bytes of link header + IP packet so far.
    len: usize,
    /// Payload bytes of every segment but the last.
    gso_size: usize,
    segments: usize,
    /// TCP sequence number the next segment must carry.
    next_seq: u32,
    /// May take more segments.
    open: bool,
    /// The head's checksums were verified (done once, on the first join).
    verified: bool,
}

/// A packet that may take part in coalescing.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    layout: Layout,
    seq: u32,
    flags: u8,
}

/// Coalesces receive batches; fixed memory, reused across batches.
#[derive(Clone, Debug)]
pub struct Coalescer {
    config: CoalesceConfig,
    items: [Option<Item>; MAX_BATCH],
    writes: [Write; MAX_BATCH],
    flows: [Option<Flow>; MAX_FLOWS],
    /// Output buffers the last batch took (always the first ones).
    buffers_used: usize,
    /// Per output buffer: the batch index of its super-packet's head, and
    /// the bytes of headers it holds.
    heads: [(u8, u8); MAX_BATCH],
    /// Per packet of the batch: the next packet of its super-packet, or
    /// [`LAST`].
    next: [u8; MAX_BATCH],
    /// Per packet of the batch: its payload within it, as (start, end).
    payload: [(u16, u32); MAX_BATCH],
}

impl Coalescer {
    /// A coalescer for `config`; about 9 KiB, no heap.
    pub fn new(config: CoalesceConfig) -> Coalescer {
        Coalescer {
            config,
            items: [None; MAX_BATCH],
            writes: [Write::Alone { packet: 0 }; MAX_BATCH],
            flows: [None; MAX_FLOWS],
            buffers_used: 0,
            heads: [(0, 0); MAX_BATCH],
            next: [LAST; MAX_BATCH],
            payload: [(0, 0); MAX_BATCH],
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> CoalesceConfig {
        self.config
    }

    /// Turns one receive batch into device writes.
    ///
    /// `packets` are whole IP packets (TUN) or Ethernet frames (TAP), each
    /// trimmed or not to its IP length (bytes past it are ignored when
    /// merging). `buffers` are the output buffers for super-packets' headers,
    /// taken in order (`buffers[..self.buffers_used()]` afterwards, no gaps),
    /// each best [`MAX_SUPER_HEADER`] bytes; a packet whose headers do not
    /// fit is not merged. When they run out, the remaining packets are
    /// written alone.
    ///
    /// Returns the writes, in issue order; every packet appears in exactly
    /// one. Nothing is kept between calls: a flow never spans two batches,
    /// and a super-packet's payload is read from `packets`, so they must
    /// stay as they are until it is written.
    pub fn coalesce<P: AsRef<[u8]>, B: AsMut<[u8]>>(
        &mut self,
        packets: &[P],
        buffers: &mut [B],
    ) -> Result<&[Write], OffloadError> {
        if packets.len() > MAX_BATCH {
            return Err(OffloadError::BatchTooLarge {
                packets: packets.len(),
                max: MAX_BATCH,
            });
        }
        let config = self.config;
        self.flows = [None; MAX_FLOWS];
        self.buffers_used = 0;
        let mut n_items = 0;
        let mut next_buffer = 0;

        for (k, pkt) in packets.iter().enumerate() {
            let pkt = pkt.as_ref();
            let (key, cand) = match self.classify(pkt) {
                Some(c) => c,
                None => {
                    self.items[n_items] = Some(Item { head: k, run: None });
                    n_items += 1;
                    continue;
                }
            };
            let slot = self
                .flows
                .iter()
                .position(|f| f.is_some_and(|f| f.key == key));
            if let (Some(cand), Some(s)) = (cand, slot)
                && let Some(Flow { item, .. }) = self.flows[s]
                && let Some(it) = self.items[item].as_mut()
                && let Some(run) = it.run.as_mut()
                && run.open
            {
                let head = packets[it.head].as_ref();
                let lists = Lists {
                    next: &mut self.next,
                    payload: &mut self.payload,
                };
                if try_join(
                    &config,
                    run,
                    (it.head, head),
                    (k, pkt),
                    &cand,
                    buffers,
                    &mut next_buffer,
                    lists,
                ) {
                    continue;
                }
            }
            // A new write, now the flow's most recent.
            let run = cand.as_ref().map(|c| Run::start(c, k));
            self.items[n_items] = Some(Item { head: k, run });
            match slot {
                Some(s) => self.flows[s] = Some(Flow { key, item: n_items }),
                // A packet that cannot start a merge need not be tracked:
                // nothing of its flow is open before it.
                None if cand.is_some() => {
                    // A full table forgets a flow whose write is closed; if
                    // all are open, the newcomer goes untracked rather than
                    // evicting an open one (round-robin eviction thrashes
                    // when more flows than slots take turns).
                    let items = &self.items;
                    let reusable = |f: &Option<Flow>| match f {
                        None => true,
                        Some(f) => !items[f.item].and_then(|it| it.run).is_some_and(|r| r.open),
                    };
                    if let Some(s) = self.flows.iter().position(reusable) {
                        self.flows[s] = Some(Flow { key, item: n_items });
                    }
                }
                None => {}
            }
            n_items += 1;
        }

        for i in 0..n_items {
            let Some(item) = self.items[i].take() else {
                continue;
            };
            self.writes[i] = match item.run {
                Some(
                    run @ Run {
                        buffer: Some(j), ..
                    },
                ) => {
                    finish_super(&run, buffers[j].as_mut());
                    // Both fit a byte: a batch has at most 64 packets, and
                    // headers of at most MAX_SUPER_HEADER bytes were copied.
                    self.heads[j] = (item.head as u8, (VNET_HDR_LEN + run.layout.payload) as u8);
                    Write::Super {
                        buffer: j,
                        len: VNET_HDR_LEN + run.len,
                        segments: run.segments,
                    }
                }
                _ => Write::Alone { packet: item.head },
            };
        }
        self.buffers_used = next_buffer;
        Ok(&self.writes[..n_items])
    }

    /// How many output buffers the last [`Coalescer::coalesce`] took: always
    /// the first ones, each holding one [`Write::Super`].
    pub fn buffers_used(&self) -> usize {
        self.buffers_used
    }

    /// Bytes at the start of output buffer `buffer` that begin its
    /// super-packet: the virtio-net header and the rewritten headers.
    pub fn header_len(&self, buffer: usize) -> usize {
        usize::from(self.heads.get(buffer).map_or(0, |h| h.1))
    }

    /// The payload of the super-packet in output buffer `buffer` (of the
    /// last batch), after its headers, in order: each piece is a packet's
    /// index in the batch and the byte range of that packet to write.
    /// Empty for a buffer the last batch did not take.
    pub fn payloads(&self, buffer: usize) -> Payloads<'_> {
        let at = if buffer < self.buffers_used {
            self.heads[buffer].0
        } else {
            LAST
        };
        Payloads { c: self, at }
    }

    /// The super-packet in output buffer `buffer` as one contiguous packet,
    /// appended to `out`: for a writer that cannot gather, and for checks.
    pub fn assemble<P: AsRef<[u8]>>(
        &self,
        buffer: usize,
        header: &[u8],
        packets: &[P],
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(&header[..self.header_len(buffer).min(header.len())]);
        for (k, range) in self.payloads(buffer) {
            if let Some(p) = packets.get(k).and_then(|p| p.as_ref().get(range)) {
                out.extend_from_slice(p);
            }
        }
    }

    /// The flow key of a TCP/UDP packet, and whether it may be merged.
    /// `None`: not TCP/UDP over IP (or malformed): written alone, untracked.
    fn classify(&self, pkt: &[u8]) -> Option<(FlowKey, Option<Candidate>)> {
        let l = layout::parse(pkt, self.config.framing).ok()?;
        let mut addrs = [0u8; 32];
        let a = &pkt[l.addrs()];
        addrs[..a.len()].copy_from_slice(a);
        let ports = [pkt[l.l4], pkt[l.l4 + 1], pkt[l.l4 + 2], pkt[l.l4 + 3]];
        let key = FlowKey {
            proto: l.proto,
            v6: l.v6,
            addrs,
            ports,
        };
        let enabled = match l.proto {
            L4Proto::Tcp => self.config.tcp,
            L4Proto::Udp => self.config.udp,
        };
        if !enabled {
            return Some((key, None));
        }
        if l.payload_len() == 0 || l.end - l.l3 > MAX_IP_PACKET {
            return Some((key, None));
        }
        let (seq, flags) = match l.proto {
            L4Proto::Tcp => {
                let flags = pkt[l.l4 + 13];
                let bad = TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST | TCP_FLAG_URG;
                if flags & bad != 0 || flags & TCP_FLAG_ACK == 0 {
                    return Some((key, None));
                }
                let s = &pkt[l.l4 + 4..l.l4 + 8];
                (u32::from_be_bytes([s[0], s[1], s[2], s[3]]), flags)
            }
            L4Proto::Udp => {
                let udp_len = usize::from(u16::from_be_bytes([pkt[l.l4 + 4], pkt[l.l4 + 5]]));
                if udp_len != l.end - l.l4 {
                    return Some((key, None));
                }
                (0, 0)
            }
        };
        Some((
            key,
            Some(Candidate {
                layout: l,
                seq,
                flags,
            }),
        ))
    }
}

/// The payload pieces of one super-packet ([`Coalescer::payloads`]).
#[derive(Clone, Debug)]
pub struct Payloads<'a> {
    c: &'a Coalescer,
    at: u8,
}

impl Iterator for Payloads<'_> {
    type Item = (usize, core::ops::Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let k = usize::from(self.at);
        let (start, end) = *self.c.payload.get(k)?;
        self.at = self.c.next[k];
        Some((k, usize::from(start)..end as usize))
    }
}

impl Run {
    fn start(c: &Candidate, k: usize) -> Run {
        let l = c.layout;
        Run {
            buffer: None,
            last: k,
            layout: l,
            len: l.end,
            gso_size: l.payload_len(),
            segments: 1,
            next_seq: c.seq.wrapping_add(l.payload_len() as u32),
            // PSH ends a merge: nothing may follow it.
            open: c.flags & TCP_FLAG_PSH == 0,
            verified: false,
        }
    }
}

/// Headers that must be equal for `pkt` to join the write headed by `head`.
fn headers_match(head: &[u8], hl: &Layout, pkt: &[u8], pl: &Layout) -> bool {
    if hl.l4 != pl.l4 || hl.payload != pl.payload || hl.v6 != pl.v6 || hl.proto != pl.proto {
        return false;
    }
    let l3 = hl.l3;
    // Link header (TAP): MACs, tag.
    if head[..l3] != pkt[..l3] {
        return false;
    }
    let ip_same = if hl.v6 {
        // Version, traffic class, flow label; hop limit.
        head[l3..l3 + 4] == pkt[l3..l3 + 4] && head[l3 + 7] == pkt[l3 + 7]
    } else {
        // TOS; DF (and the reserved bit); TTL; options.
        head[l3 + 1] == pkt[l3 + 1]
            && head[l3 + 6] & 0xe0 == pkt[l3 + 6] & 0xe0
            && head[l3 + 8] == pkt[l3 + 8]
            && head[l3 + 20..hl.l4] == pkt[l3 + 20..pl.l4]
    };
    if !ip_same {
        return false;
    }
    match hl.proto {
        L4Proto::Udp => true,
        L4Proto::Tcp => {
            let l4 = hl.l4;
            let (hf, pf) = (head[l4 + 13], pkt[l4 + 13]);
            // ACK number; flags but PSH (CWR only on the head); options.
            head[l4 + 8..l4 + 12] == pkt[l4 + 8..l4 + 12]
                && pf & TCP_FLAG_CWR == 0
                && (hf & !(TCP_FLAG_PSH | TCP_FLAG_CWR)) == (pf & !TCP_FLAG_PSH)
                && head[l4 + 20..hl.payload] == pkt[l4 + 20..pl.payload]
        }
    }
}

/// Whether the IPv4 header and L4 checksums of a wire packet are right.
fn checksums_valid(pkt: &[u8], l: &Layout) -> bool {
    if !l.v6 && checksum(&pkt[l.l3..l.l4]) != 0 {
        return false;
    }
    let field = l.l4 + l.proto.csum_offset();
    if l.proto == L4Proto::Udp && pkt[field] == 0 && pkt[field + 1] == 0 {
        // IPv4 UDP without a checksum is fine; IPv6 requires one (RFC 8200 §8.1).
        return !l.v6;
    }
    let l4_len = (l.end - l.l4) as u16;
    let sum = Sum::of(&pkt[l.addrs()])
        .add_u16(u16::from(l.proto.number()))
        .add_u16(l4_len)
        .add_bytes(&pkt[l.l4..l.end]);
    sum.fold() == 0xffff
}

/// The per-packet lists of a batch's super-packets.
struct Lists<'a> {
    next: &'a mut [u8; MAX_BATCH],
    payload: &'a mut [(u16, u32); MAX_BATCH],
}

/// Appends packet `k` (`pkt`) to `it`, headed by packet `h` (`head`), if it
/// may join; false leaves `it` unchanged except that a head with bad
/// checksums is closed. Only the head's headers are copied (once, into the
/// output buffer); a joining packet's payload stays where it is.
#[allow(clippy::too_many_arguments)]
fn try_join<B: AsMut<[u8]>>(
    config: &CoalesceConfig,
    it: &mut Run,
    (h, head): (usize, &[u8]),
    (k, pkt): (usize, &[u8]),
    c: &Candidate,
    buffers: &mut [B],
    next_buffer: &mut usize,
    lists: Lists<'_>,
) -> bool {
    let pl = &c.layout;
    let plen = pl.payload_len();
    if it.segments >= MAX_SEGMENTS
        || plen > it.gso_size
        || it.len - it.layout.l3 + plen > MAX_IP_PACKET
        || (pl.proto == L4Proto::Tcp && c.seq != it.next_seq)
        || !headers_match(head, &it.layout, pkt, pl)
    {
        return false;
    }
    if config.verify_checksums {
        if !it.verified {
            if !checksums_valid(head, &it.layout) {
                it.open = false;
                return false;
            }
            it.verified = true;
        }
        if !checksums_valid(pkt, pl) {
            return false;
        }
    }
    let hl = it.layout.payload;
    let j = match it.buffer {
        Some(j) => j,
        None => {
            let Some(buf) = buffers.get_mut(*next_buffer) else {
                return false;
            };
            let buf = buf.as_mut();
            if buf.len() < VNET_HDR_LEN + hl || VNET_HDR_LEN + hl > MAX_SUPER_HEADER {
                return false;
            }
            // The copy on this path: the head's headers, once.
            buf[VNET_HDR_LEN..VNET_HDR_LEN + hl].copy_from_slice(&head[..hl]);
            lists.payload[h] = (hl as u16, it.layout.end as u32);
            lists.next[h] = LAST;
            let j = *next_buffer;
            *next_buffer += 1;
            it.buffer = Some(j);
            j
        }
    };
    lists.payload[k] = (pl.payload as u16, pl.end as u32);
    lists.next[k] = LAST;
    lists.next[it.last] = k as u8;
    it.last = k;
    it.len += plen;
    it.segments += 1;
    if pl.proto == L4Proto::Tcp {
        let buf = buffers[j].as_mut();
        it.next_seq = it.next_seq.wrapping_add(plen as u32);
        let l4 = VNET_HDR_LEN + it.layout.l4;
        // The newest window is the receiver's best information.
        buf[l4 + 14] = pkt[pl.l4 + 14];
        buf[l4 + 15] = pkt[pl.l4 + 15];
        if c.flags & TCP_FLAG_PSH != 0 {
            buf[l4 + 13] |= TCP_FLAG_PSH;
            it.open = false;
        }
    }
    if plen < it.gso_size {
        // A short segment is the last.
        it.open = false;
    }
    true
}

/// Sets lengths, the IPv4 header checksum, the partial L4 checksum and the
/// virtio-net header of a finished super-packet.
fn finish_super(it: &Run, buf: &mut [u8]) {
    let l = &it.layout;
    let (hdr, pkt) = buf.split_at_mut(VNET_HDR_LEN);
    // The headers: the payload is not here (see `Coalescer::payloads`).
    let pkt = &mut pkt[..l.payload];
    let l3 = l.l3;
    if l.v6 {
        let payload_len = (it.len - l3 - layout::IPV6_HDR) as u16;
        pkt[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
    } else {
        let total = (it.len - l3) as u16;
        pkt[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        pkt[l3 + 10..l3 + 12].fill(0);
        let c = checksum(&pkt[l3..l.l4]);
        pkt[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let l4_len = (it.len - l.l4) as u16;
    if l.proto == L4Proto::Udp {
        pkt[l.l4 + 4..l.l4 + 6].copy_from_slice(&l4_len.to_be_bytes());
    }
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, the
    // kernel (or the NIC, after resegmenting) adds the rest.
    let partial = Sum::of(&pkt[l.addrs()])
        .add_u16(u16::from(l.proto.number()))
        .add_u16(l4_len)
        .fold();
    let field = l.l4 + l.proto.csum_offset();
    pkt[field..field + 2].copy_from_slice(&partial.to_be_bytes());
    let vnet = VnetHeader {
        needs_csum: true,
        data_valid: false,
        gso_type: match (l.proto, l.v6) {
            (L4Proto::Tcp, false) => GsoType::TcpV4,
            (L4Proto::Tcp, true) => GsoType::TcpV6,
            (L4Proto::Udp, _) => GsoType::UdpL4,
        },
        ecn: l.proto == L4Proto::Tcp && pkt[l.l4 + 13] & TCP_FLAG_CWR != 0,
        hdr_len: l.payload as u16,
        gso_size: it.gso_size as u16,
        csum_start: l.l4 as u16,
        csum_offset: l.proto.csum_offset() as u16,
    };
    hdr.copy_from_slice(&vnet.to_bytes());
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::offload::ETHERNET_VLAN_HEADER_LEN;
    use crate::offload::split::GsoSplit;
    use crate::offload::testutil::*;

    fn buffers(n: usize) -> Vec<Vec<u8>> {
        vec![vec![0u8; VNET_HDR_LEN + MAX_IP_PACKET + ETHERNET_VLAN_HEADER_LEN]; n]
    }

    /// `count` consecutive wire segments of `seg` payload bytes each.
    fn segments(spec: &Spec, seg: usize, count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|i| {
                let ip_id = spec.ip_id.wrapping_add(i as u16);
                wire_packet(&Spec {
                    payload: seg,
                    ip_id,
                    ..spec.advanced(i * seg)
                })
            })
            .collect()
    }

    fn tcp_config() -> CoalesceConfig {
        CoalesceConfig::default()
    }

    fn all_config() -> CoalesceConfig {
        CoalesceConfig {
            udp: true,
            ..CoalesceConfig::default()
        }
    }

    /// Two 1000-byte segments of one TCPv4 flow, then one of 500 with PSH.
    #[test]
    fn tcp4_segments_merge_into_one_super_packet_with_psh_last() {
        let spec = Spec {
            flags: ACK,
            ..Spec::tcp4()
        };
        let mut pkts = segments(&spec, 1000, 2);
        let ip_id = spec.ip_id.wrapping_add(2);
        pkts.push(wire_packet(&Spec {
            payload: 500,
            flags: ACK | PSH,
            ip_id,
            ..spec.advanced(2000)
        }));
        let mut bufs = buffers(2);
        let mut co = Coalescer::new(tcp_config());
        let writes = co.coalesce(&pkts, &mut bufs).unwrap().to_vec();
        assert_eq!(
            writes,
            [Write::Super {
                buffer: 0,
                len: 10 + 40 + 2500,
                segments: 3
            }]
        );
        assert_eq!(co.header_len(0), 10 + 40, "only the headers were copied");
        let payloads: Vec<_> = co.payloads(0).collect();
        assert_eq!(payloads, [(0, 40..1040), (1, 40..1040), (2, 40..540)]);
        let mut whole = Vec::new();
        co.assemble(0, &bufs[0], &pkts, &mut whole);
        assert_eq!(whole.len(), 10 + 2540);
        let out = &whole[..];
        // NEEDS_CSUM, TCPV4, hdr_len 40, gso_size 1000, csum_start 20, csum_offset 16.
        assert_eq!(&out[..10], &[0x01, 0x01, 40, 0, 0xe8, 0x03, 20, 0, 16, 0]);
        let pkt = &out[10..];
        assert_eq!(
            u16::from_be_bytes([pkt[2], pkt[3]]),
            2540,
            "IPv4 total length"
        );
        assert_eq!(checksum(&pkt[..20]), 0, "IPv4 header checksum");
        assert_eq!(pkt[33] & PSH, PSH, "PSH from the last segment");
        assert_eq!(
            u32::from_be_bytes([pkt[24], pkt[25], pkt[26], pkt[27]]),
            spec.seq
        );
        let mut payload = Vec::new();
        for p in &pkts {
            payload.extend_from_slice(&p[40..]);
        }
        assert_eq!(&pkt[40..], &payload[..]);
        // The kernel would finish the partial checksum: the result verifies.
        let hdr = VnetHeader::parse(out).unwrap();
        let split = GsoSplit::new(&hdr, pkt, Framing::Ip).unwrap();
        assert_eq!(split.segment_count(), 3);
        let mut seg = vec![0u8; 2000];
        for (i, original) in pkts.iter().enumerate() {
            let n = split.write_segment(i, &mut seg).unwrap();
            assert_eq!(
                &seg[..n],
                &original[..],
                "segment {i} comes back bit for bit"
            );
        }
    }

    #[test]
    fn a_lone_packet_is_written_alone_without_copy() {
        let pkts = [wire_packet(&Spec {
            payload: 100,
            ..Spec::tcp4()
        })];
        let mut bufs = buffers(1);
        let mut co = Coalescer::new(tcp_config());
        assert_eq!(
            co.coalesce(&pkts, &mut bufs).unwrap(),
            [Write::Alone { packet: 0 }]
        );
    }

    #[test]
    fn fin_syn_rst_and_pure_acks_are_not_merged() {
        let spec = Spec::tcp6();
        for flags in [ACK | FIN, SYN, ACK | RST, ACK | URG] {
            let mut pkts = segments(&spec, 1000, 1);
            pkts.push(wire_packet(&Spec {
                payload: 1000,
                flags,
                ..spec.advanced(1000)
            }));
            pkts.push(wire_packet(&Spec {
                payload: 1000,
                ..spec.advanced(2000)
            }));
            let mut co = Coalescer::new(tcp_config());
            let w = co.coalesce(&pkts, &mut buffers(2)).unwrap();
            assert_eq!(
                w,
                [
                    Write::Alone { packet: 0 },
                    Write::Alone { packet: 1 },
                    Write::Alone { packet: 2 }
                ],
                "flags {flags:#04x} stop merging, and nothing after them joins what came before"
            );
        }
        let pure_acks = [
            wire_packet(&Spec {
                payload: 0,
                ..spec.clone()
            }),
            wire_packet(&Spec {
                payload: 0,
                ..spec.clone()
            }),
        ];
        let mut co = Coalescer::new(tcp_config());
        assert_eq!(co.coalesce(&pure_acks, &mut buffers(1)).unwrap().len(), 2);
    }

    #[test]
    fn psh_in_the_middle_ends_the_super_packet() {
        let spec = Spec::tcp4();
        let pkts = [
            wire_packet(&Spec {
                payload: 1000,
                ..spec.clone()
            }),
            wire_packet(&Spec {
                payload: 1000,
                flags: ACK | PSH,
                ..spec.advanced(1000)
            }),
            wire_packet(&Spec {
                payload: 1000,
                ..spec.advanced(2000)
            }),
            wire_packet(&Spec {
                payload: 1000,
                ..spec.advanced(3000)
            }),
        ];
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(2)).unwrap();
        assert_eq!(
            w,
            [
                Write::Super {
                    buffer: 0,
                    len: 10 + 40 + 2000,
                    segments: 2
                },
                Write::Super {
                    buffer: 1,
                    len: 10 + 40 + 2000,
                    segments: 2
                },
            ]
        );
    }

    #[test]
    fn a_short_segment_ends_the_super_packet_and_a_longer_one_cannot_follow() {
        let spec = Spec::tcp4();
        let pkts = [
            wire_packet(&Spec {
                payload: 1000,
                ..spec.clone()
            }),
            wire_packet(&Spec {
                payload: 600,
                ..spec.advanced(1000)
            }),
            wire_packet(&Spec {
                payload: 600,
                ..spec.advanced(1600)
            }),
            wire_packet(&Spec {
                payload: 1000,
                ..spec.advanced(2200)
            }),
        ];
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(3)).unwrap();
        assert_eq!(
            w,
            [
                Write::Super {
                    buffer: 0,
                    len: 10 + 40 + 1600,
                    segments: 2
                },
                Write::Alone { packet: 2 },
                Write::Alone { packet: 3 },
            ],
            "600 after 600 closes at once; 1000 after 600 exceeds gso_size"
        );
    }

    #[test]
    fn differing_ack_options_tos_ttl_or_seq_gap_split_writes_in_order() {
        let spec = Spec {
            tcp_options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            ..Spec::tcp4()
        };
        let variants: [Spec; 5] = [
            Spec {
                ack: spec.ack + 1,
                ..spec.advanced(1000)
            },
            Spec {
                tcp_options: vec![1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 2],
                ..spec.advanced(1000)
            },
            Spec {
                tos: 4,
                ..spec.advanced(1000)
            },
            Spec {
                ttl: 63,
                ..spec.advanced(1000)
            },
            spec.advanced(1001),
        ];
        for v in variants {
            let pkts = [
                wire_packet(&Spec {
                    payload: 1000,
                    ..spec.clone()
                }),
                wire_packet(&Spec {
                    payload: 1000,
                    ..v.clone()
                }),
            ];
            let mut co = Coalescer::new(tcp_config());
            let w = co.coalesce(&pkts, &mut buffers(1)).unwrap();
            assert_eq!(
                w,
                [Write::Alone { packet: 0 }, Write::Alone { packet: 1 }],
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_segment_after_a_gap_does_not_jump_ahead_of_the_one_that_broke_the_run() {
        // 0, 2, 1: packet 1 (seq 2000) breaks the run; packet 2 (seq 1000)
        // would continue packet 0 but must not be written before packet 1.
        let spec = Spec::tcp4();
        let pkts = [
            wire_packet(&Spec {
                payload: 1000,
                ..spec.clone()
            }),
            wire_packet(&Spec {
                payload: 1000,
                ..spec.advanced(2000)
            }),
            wire_packet(&Spec {
                payload: 1000,
                ..spec.advanced(1000)
            }),
        ];
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(2)).unwrap();
        assert_eq!(
            w,
            [
                Write::Alone { packet: 0 },
                Write::Alone { packet: 1 },
                Write::Alone { packet: 2 }
            ]
        );
    }

    #[test]
    fn interleaved_flows_each_become_one_super_packet() {
        let a = Spec {
            sport: 1000,
            ..Spec::tcp4()
        };
        let b = Spec {
            sport: 2000,
            ..Spec::tcp6()
        };
        let c = Spec {
            sport: 3000,
            ..Spec::udp4()
        };
        let (sa, sb, sc) = (
            segments(&a, 1200, 3),
            segments(&b, 1200, 3),
            segments(&c, 1200, 3),
        );
        let mut pkts = Vec::new();
        for i in 0..3 {
            pkts.push(sa[i].clone());
            pkts.push(sb[i].clone());
            pkts.push(sc[i].clone());
        }
        let mut co = Coalescer::new(all_config());
        let mut bufs = buffers(3);
        let w = co.coalesce(&pkts, &mut bufs).unwrap();
        assert_eq!(
            w,
            [
                Write::Super {
                    buffer: 0,
                    len: 10 + 40 + 3600,
                    segments: 3
                },
                Write::Super {
                    buffer: 1,
                    len: 10 + 60 + 3600,
                    segments: 3
                },
                Write::Super {
                    buffer: 2,
                    len: 10 + 28 + 3600,
                    segments: 3
                },
            ]
        );
        let udp = VnetHeader::parse(&bufs[2]).unwrap();
        assert_eq!(
            (udp.gso_type, udp.gso_size, udp.csum_offset),
            (GsoType::UdpL4, 1200, 6)
        );
    }

    #[test]
    fn buffers_go_to_runs_in_the_order_they_merge_writes_keep_first_packet_order() {
        let a = segments(
            &Spec {
                sport: 1,
                ..Spec::tcp4()
            },
            800,
            2,
        );
        let b = segments(
            &Spec {
                sport: 2,
                ..Spec::tcp4()
            },
            800,
            2,
        );
        let pkts = [a[0].clone(), b[0].clone(), b[1].clone(), a[1].clone()];
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(2)).unwrap();
        assert_eq!(
            w,
            [
                Write::Super {
                    buffer: 1,
                    len: 10 + 40 + 1600,
                    segments: 2
                },
                Write::Super {
                    buffer: 0,
                    len: 10 + 40 + 1600,
                    segments: 2
                },
            ]
        );
        assert_eq!(co.buffers_used(), 2);
    }

    #[test]
    fn udp_is_left_alone_unless_uso_is_on() {
        let pkts = segments(&Spec::udp6(), 1200, 3);
        let mut co = Coalescer::new(tcp_config());
        assert_eq!(co.coalesce(&pkts, &mut buffers(1)).unwrap().len(), 3);
    }

    #[test]
    fn more_flows_than_the_table_holds_still_write_every_packet_once_in_flow_order() {
        let flows: Vec<Spec> = (0..MAX_FLOWS + 3)
            .map(|f| Spec {
                sport: 1000 + f as u16,
                ..Spec::tcp4()
            })
            .collect();
        let mut pkts = Vec::new();
        for i in 0..2 {
            for f in &flows {
                pkts.push(wire_packet(&Spec {
                    payload: 500,
                    ..f.advanced(500 * i)
                }));
            }
        }
        let mut co = Coalescer::new(tcp_config());
        let writes = co.coalesce(&pkts, &mut buffers(4)).unwrap().to_vec();
        let mut seen = 0;
        for w in &writes {
            seen += match w {
                Write::Alone { .. } => 1,
                Write::Super { segments, .. } => *segments,
            };
        }
        assert_eq!(seen, pkts.len(), "every packet written exactly once");
        let supers = writes
            .iter()
            .filter(|w| matches!(w, Write::Super { .. }))
            .count();
        assert_eq!(
            supers, 4,
            "four buffers: four of the tracked flows merged, the rest alone"
        );
        // In flow order: a flow's alone second packet never precedes its first.
        for f in 0..flows.len() {
            let pos = |k: usize| writes.iter().position(|w| *w == Write::Alone { packet: k });
            if let (Some(first), Some(second)) = (pos(f), pos(flows.len() + f)) {
                assert!(first < second);
            }
        }
    }

    #[test]
    fn super_packets_stop_at_64_kib() {
        // 50 × 1380 = 69000 bytes of payload: more than one IP packet holds.
        let pkts = segments(&Spec::tcp4(), 1380, 50);
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(2)).unwrap();
        let per = (65535 - 40) / 1380;
        assert_eq!(
            w,
            [
                Write::Super {
                    buffer: 0,
                    len: 10 + 40 + per * 1380,
                    segments: per
                },
                Write::Super {
                    buffer: 1,
                    len: 10 + 40 + (50 - per) * 1380,
                    segments: 50 - per
                },
            ]
        );
    }

    #[test]
    fn super_packets_stop_at_64_segments() {
        let pkts = segments(&Spec::tcp6(), 100, 64);
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(1)).unwrap();
        assert_eq!(
            w,
            [Write::Super {
                buffer: 0,
                len: 10 + 60 + 6400,
                segments: 64
            }]
        );
        let too_many: Vec<Vec<u8>> = (0..65).map(|_| pkts[0].clone()).collect();
        assert_eq!(
            co.coalesce(&too_many, &mut buffers(1)),
            Err(OffloadError::BatchTooLarge {
                packets: 65,
                max: 64
            })
        );
    }

    #[test]
    fn out_of_buffers_leaves_the_rest_alone() {
        let a = segments(
            &Spec {
                sport: 1,
                ..Spec::tcp4()
            },
            800,
            2,
        );
        let b = segments(
            &Spec {
                sport: 2,
                ..Spec::tcp4()
            },
            800,
            2,
        );
        let pkts = [a[0].clone(), a[1].clone(), b[0].clone(), b[1].clone()];
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(1)).unwrap();
        assert_eq!(
            w,
            [
                Write::Super {
                    buffer: 0,
                    len: 10 + 40 + 1600,
                    segments: 2
                },
                Write::Alone { packet: 2 },
                Write::Alone { packet: 3 },
            ]
        );
        assert_eq!(co.buffers_used(), 1);
        let mut none: [Vec<u8>; 0] = [];
        assert_eq!(co.coalesce(&pkts, &mut none).unwrap().len(), 4);
        assert_eq!(co.buffers_used(), 0);
    }

    #[test]
    fn bad_checksums_are_not_merged_but_still_written() {
        let spec = Spec::tcp4();
        let mut pkts = segments(&spec, 1000, 3);
        pkts[1][100] ^= 0xff; // corrupt the payload of the second
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut buffers(2)).unwrap();
        assert_eq!(
            w,
            [
                Write::Alone { packet: 0 },
                Write::Alone { packet: 1 },
                Write::Alone { packet: 2 }
            ]
        );
        let mut bad_head = segments(&spec, 1000, 2);
        bad_head[0][10] ^= 1; // IPv4 header checksum
        let w = co.coalesce(&bad_head, &mut buffers(2)).unwrap();
        assert_eq!(w, [Write::Alone { packet: 0 }, Write::Alone { packet: 1 }]);
        // Without verification the caller takes responsibility.
        let mut trusting = Coalescer::new(CoalesceConfig {
            verify_checksums: false,
            ..tcp_config()
        });
        let w = trusting.coalesce(&pkts, &mut buffers(2)).unwrap();
        assert_eq!(
            w,
            [Write::Super {
                buffer: 0,
                len: 10 + 40 + 3000,
                segments: 3
            }]
        );
    }

    #[test]
    fn cwr_only_on_the_head_sets_the_ecn_bit() {
        let spec = Spec {
            flags: ACK | CWR,
            ..Spec::tcp4()
        };
        let pkts = [
            wire_packet(&Spec {
                payload: 1000,
                ..spec.clone()
            }),
            wire_packet(&Spec {
                payload: 1000,
                flags: ACK,
                ..spec.advanced(1000)
            }),
            wire_packet(&Spec {
                payload: 1000,
                flags: ACK | CWR,
                ..spec.advanced(2000)
            }),
        ];
        let mut bufs = buffers(2);
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut bufs).unwrap().to_vec();
        assert_eq!(
            w,
            [
                Write::Super {
                    buffer: 0,
                    len: 10 + 40 + 2000,
                    segments: 2
                },
                Write::Alone { packet: 2 },
            ]
        );
        assert!(VnetHeader::parse(&bufs[0]).unwrap().ecn);
    }

    #[test]
    fn padding_after_the_ip_length_is_not_merged_into_the_payload() {
        let mut pkts = segments(&Spec::tcp4(), 1000, 2);
        pkts[0].extend_from_slice(&[0; 16]);
        pkts[1].extend_from_slice(&[0; 5]);
        let mut bufs = buffers(1);
        let mut co = Coalescer::new(tcp_config());
        let w = co.coalesce(&pkts, &mut bufs).unwrap();
        assert_eq!(
            w,
            [Write::Super {
                buffer: 0,
                len: 10 + 40 + 2000,
                segments: 2
            }]
        );
    }

    #[test]
    fn ethernet_frames_merge_only_with_equal_link_headers() {
        let spec = Spec {
            vlan: true,
            ..Spec::tcp4()
        };
        let frames: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                wire_frame(&Spec {
                    payload: 1000,
                    ..spec.advanced(1000 * i)
                })
            })
            .collect();
        let config = CoalesceConfig {
            framing: Framing::Ethernet,
            ..tcp_config()
        };
        let mut bufs = buffers(1);
        let mut co = Coalescer::new(config);
        let w = co.coalesce(&frames, &mut bufs).unwrap();
        assert_eq!(
            w,
            [Write::Super {
                buffer: 0,
                // IPv4 and TCP headers: 40 bytes.
                len: VNET_HDR_LEN + ETHERNET_VLAN_HEADER_LEN + 40 + 3000,
                segments: 3
            }]
        );
        let hdr = VnetHeader::parse(&bufs[0]).unwrap();
        assert_eq!((hdr.csum_start, hdr.hdr_len), (38, 58));
        let mut other_mac = frames.clone();
        other_mac[1][0] = 0x04;
        let w = co.coalesce(&other_mac, &mut bufs).unwrap();
        assert_eq!(w.len(), 3, "a different destination MAC breaks the run");
    }

    #[test]
    fn garbage_and_non_tcp_packets_are_written_alone() {
        let pkts: [&[u8]; 4] = [&[], &[0x45], &[0x60; 39], &[0xff; 100]];
        let mut co = Coalescer::new(all_config());
        let w = co.coalesce(&pkts, &mut buffers(1)).unwrap();
        assert_eq!(
            w,
            (0..4)
                .map(|packet| Write::Alone { packet })
                .collect::<Vec<_>>()
        );
    }
}
