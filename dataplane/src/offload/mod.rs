//! Segmentation offload: the virtio-net header, GSO split of TUN/TAP
//! super-packets into wire-sized segments, and GRO coalescing back.
//!
//! Everything here is pure: no syscalls, no allocation, no clock. The caller
//! (the io_uring worker) owns every buffer.
//!
//! Device to wire, per read from a queue opened with `IFF_VNET_HDR`:
//! ```text
//! let hdr = VnetHeader::parse(&buf[..n])?;            // first 10 bytes
//! let pkt = &mut buf[VNET_HDR_LEN..n];
//! if hdr.gso_type == GsoType::None {
//!     finish_checksum(&hdr, pkt)?;                    // in place, no copy
//!     // classify, seal in place, send
//! } else {
//!     let split = GsoSplit::new(&hdr, pkt, Framing::Ip)?;
//!     for i in 0..split.segment_count() {
//!         let n = split.write_segment(i, &mut slot_i[HEADROOM..])?;  // one copy
//!         // seal slot_i in place
//!     }
//!     // one sendmsg, UDP_SEGMENT = sealed size of split.segment_size()
//! }
//! ```
//!
//! Wire to device, per receive batch of opened packets (at most [`MAX_BATCH`]):
//! ```text
//! let writes = coalescer.coalesce(&packets, &mut super_bufs)?;
//! for w in writes {
//!     match *w {
//!         Write::Alone { packet } => { /* zero vnet header in the 10 bytes before it, write */ }
//!         Write::Super { buffer, len } => { /* write super_bufs[buffer][..len] */ }
//!     }
//! }
//! ```
//!
//! Costs, per call (measured by `cargo bench -p bench --bench offload`):
//! - [`finish_checksum`]: one checksum pass, in place; no copy.
//! - [`GsoSplit::write_segment`]: one copy of the segment (headers and its
//!   share of the payload) into the caller's send slot, then one checksum pass
//!   over it while it is in cache. This is the only copy on the send path.
//! - [`Coalescer::coalesce`]: packets written alone are neither copied nor
//!   read past their headers; a merged packet's payload is copied once into
//!   the output buffer (the only copy on the receive path) and, with
//!   [`CoalesceConfig::verify_checksums`], checksummed once before.
//!
//! Every error is a malformed packet (drop reason `malformed`, see
//! [`OffloadError::is_malformed`]), except [`OffloadError::OutputTooSmall`],
//! [`OffloadError::SegmentOutOfRange`] and [`OffloadError::BatchTooLarge`],
//! which are the caller's mistakes.

pub mod checksum;
pub mod coalesce;
pub(crate) mod layout;
pub mod split;
pub mod vnet;

pub use coalesce::{
    CoalesceConfig, Coalescer, MAX_BATCH, MAX_FLOWS, MAX_SUPER_HEADER, Payloads, Write,
};
pub use layout::{ETHERNET_HEADER_LEN, ETHERNET_VLAN_HEADER_LEN, Framing};
pub use split::{GsoSplit, MAX_SEGMENTS, finish_checksum};
pub use vnet::{GsoType, VNET_HDR_LEN, VnetHeader};

/// Why a packet or header could not be parsed, split or coalesced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadError {
    /// The buffer ends before a header or the length a header claims.
    #[error("truncated {what}: need {needed} bytes, have {got}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed from the start of the packet.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The virtio-net header sets flag bits TUN never uses.
    #[error("virtio-net header has unknown flags {0:#04x}")]
    UnknownVnetFlags(u8),
    /// The virtio-net header's `gso_type` is none of NONE/TCPV4/UDP/TCPV6/UDP_L4.
    #[error("virtio-net header has unknown gso_type {0:#04x}")]
    UnknownGsoType(u8),
    /// UFO (`VIRTIO_NET_HDR_GSO_UDP`) asks for IP fragmentation, which ringtun does not do.
    #[error("UDP fragmentation offload (gso_type UDP) is not supported")]
    UnsupportedGsoType,
    /// The IP version nibble is neither 4 nor 6.
    #[error("IP version {0} is not 4 or 6")]
    BadIpVersion(u8),
    /// A TAP frame's EtherType is not IPv4, IPv6 or one VLAN tag over them.
    #[error("EtherType {0:#06x} cannot be segmented")]
    UnsupportedEtherType(u16),
    /// A TAP frame's EtherType disagrees with the IP version nibble.
    #[error("EtherType {ethertype:#06x} carries IP version {version}")]
    EtherTypeMismatch {
        /// The frame's EtherType.
        ethertype: u16,
        /// The version nibble found.
        version: u8,
    },
    /// IPv4 IHL below 5 words.
    #[error("IPv4 header length {0} is below 20 bytes")]
    BadIpv4HeaderLength(usize),
    /// IPv4 total length shorter than its own header.
    #[error("IPv4 total length {total} is shorter than its {header}-byte header")]
    BadIpv4TotalLength {
        /// The total length field.
        total: usize,
        /// The header length.
        header: usize,
    },
    /// An IPv4 fragment cannot be segmented or coalesced.
    #[error("IPv4 fragment cannot be segmented")]
    Ipv4Fragment,
    /// IPv4 protocol other than TCP or UDP.
    #[error("IP protocol {0} cannot be segmented")]
    UnsupportedProtocol(u8),
    /// IPv6 next header other than TCP or UDP (extension headers are not walked).
    #[error("IPv6 next header {0} is not TCP or UDP (extension headers are unsupported)")]
    UnsupportedIpv6NextHeader(u8),
    /// TCP data offset below 5 words.
    #[error("TCP header length {0} is below 20 bytes")]
    BadTcpHeaderLength(usize),
    /// The GSO type names a protocol or IP version the packet does not carry.
    #[error("gso_type {gso_type:?} does not match an IPv{ip_version} {protocol} packet")]
    GsoTypeMismatch {
        /// The requested segmentation.
        gso_type: GsoType,
        /// The packet's IP version.
        ip_version: u8,
        /// The packet's L4 protocol ("TCP" or "UDP").
        protocol: &'static str,
    },
    /// `csum_start` does not point at the L4 header found in the packet.
    #[error("csum_start {csum_start} does not point at the L4 header (offset {l4_offset})")]
    CsumStartMismatch {
        /// From the virtio-net header.
        csum_start: u16,
        /// Where the L4 header is.
        l4_offset: usize,
    },
    /// `csum_offset` is not the L4 checksum field's offset.
    #[error("csum_offset {csum_offset} is not the L4 checksum offset {expected}")]
    CsumOffsetMismatch {
        /// From the virtio-net header.
        csum_offset: u16,
        /// What the protocol needs.
        expected: usize,
    },
    /// `csum_start + csum_offset + 2` lies beyond the packet.
    #[error("checksum field at {csum_start}+{csum_offset} lies beyond the {len}-byte packet")]
    CsumOutOfRange {
        /// From the virtio-net header.
        csum_start: u16,
        /// From the virtio-net header.
        csum_offset: u16,
        /// Packet length.
        len: usize,
    },
    /// A GSO packet with `gso_size` 0.
    #[error("gso_size is 0")]
    GsoSizeZero,
    /// More segments than one `UDP_SEGMENT` send can carry.
    #[error("{segments} segments exceed the limit of {max}")]
    TooManySegments {
        /// Segments the packet would need.
        segments: usize,
        /// The limit ([`MAX_SEGMENTS`]).
        max: usize,
    },
    /// The caller's output buffer is shorter than the segment or header.
    #[error("output buffer of {got} bytes is too small, need {needed}")]
    OutputTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// A segment index at or beyond [`GsoSplit::segment_count`].
    #[error("segment {index} out of range, there are {count}")]
    SegmentOutOfRange {
        /// Requested index.
        index: usize,
        /// Segment count.
        count: usize,
    },
    /// Headers asked of a packet that is not segmented (`gso_type` NONE):
    /// it is sent whole, it has no per-segment headers.
    #[error("a packet that is not segmented has no per-segment headers")]
    NotSegmented,
    /// More packets handed to [`Coalescer::coalesce`] than [`MAX_BATCH`].
    #[error("batch of {packets} packets exceeds the limit of {max}")]
    BatchTooLarge {
        /// Packets given.
        packets: usize,
        /// The limit.
        max: usize,
    },
}

impl OffloadError {
    /// Whether the packet is at fault (count it as drop reason `malformed`)
    /// rather than the caller (a slot too small, an index past the end, a
    /// batch too large: bugs in the engine).
    pub fn is_malformed(&self) -> bool {
        !matches!(
            self,
            OffloadError::OutputTooSmall { .. }
                | OffloadError::SegmentOutOfRange { .. }
                | OffloadError::NotSegmented
                | OffloadError::BatchTooLarge { .. }
        )
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod roundtrip_test;

#[cfg(test)]
mod test {
    use super::OffloadError;

    #[test]
    fn packet_faults_are_malformed_caller_faults_are_not() {
        assert!(OffloadError::GsoSizeZero.is_malformed());
        assert!(OffloadError::Ipv4Fragment.is_malformed());
        assert!(!OffloadError::OutputTooSmall { needed: 2, got: 1 }.is_malformed());
        assert!(!OffloadError::SegmentOutOfRange { index: 1, count: 1 }.is_malformed());
        assert!(
            !OffloadError::BatchTooLarge {
                packets: 65,
                max: 64
            }
            .is_malformed()
        );
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = OffloadError::TooManySegments {
            segments: 70,
            max: 64,
        };
        assert_eq!(e.to_string(), "70 segments exceed the limit of 64");
        let e = OffloadError::CsumStartMismatch {
            csum_start: 24,
            l4_offset: 20,
        };
        assert_eq!(
            e.to_string(),
            "csum_start 24 does not point at the L4 header (offset 20)"
        );
    }
}
