//! The 10-byte `virtio_net_hdr` that prefixes every read and write on a TUN/TAP
//! queue opened with `IFF_VNET_HDR` (include/uapi/linux/virtio_net.h).
//!
//! Byte order: the kernel uses the legacy virtio convention for TUN, which is
//! the host's own order unless `TUNSETVNETLE`/`TUNSETVNETBE` says otherwise
//! (drivers/net/tun_vnet.h, `tun_vnet_is_little_endian`). ringtun runs on
//! little-endian hosts (x86-64, aarch64), so the fields are little-endian
//! here; a big-endian port would set `TUNSETVNETLE` at open.

use super::OffloadError;

/// Length of `struct virtio_net_hdr` (without `num_buffers`): what TUN expects
/// by default (`TUNSETVNETHDRSZ` unchanged).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial; the checksum of
/// the bytes from `csum_start` to the end goes at `csum_start + csum_offset`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_F_RSC_INFO`: not used by TUN; a flag byte holding it is rejected.
const KNOWN_FLAGS: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID;

/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP` (UFO: IP fragmentation, not UDP segmentation).
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO: each segment a whole UDP datagram).
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: TCP with ECN; CWR belongs on the first segment only.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// The segmentation a super-packet asks for (the `gso_type` without the ECN bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GsoType {
    /// An ordinary packet.
    None,
    /// TCP over IPv4, segmented at `gso_size` payload bytes.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP fragmentation offload (UFO), obsolete: parsed but never split.
    Udp,
    /// UDP segmentation offload (USO): `gso_size` payload bytes per datagram.
    UdpL4,
}

impl GsoType {
    fn from_raw(raw: u8) -> Result<GsoType, OffloadError> {
        Ok(match raw & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE => GsoType::None,
            VIRTIO_NET_HDR_GSO_TCPV4 => GsoType::TcpV4,
            VIRTIO_NET_HDR_GSO_UDP => GsoType::Udp,
            VIRTIO_NET_HDR_GSO_TCPV6 => GsoType::TcpV6,
            VIRTIO_NET_HDR_GSO_UDP_L4 => GsoType::UdpL4,
            _ => return Err(OffloadError::UnknownGsoType(raw)),
        })
    }

    fn to_raw(self) -> u8 {
        match self {
            GsoType::None => VIRTIO_NET_HDR_GSO_NONE,
            GsoType::TcpV4 => VIRTIO_NET_HDR_GSO_TCPV4,
            GsoType::TcpV6 => VIRTIO_NET_HDR_GSO_TCPV6,
            GsoType::Udp => VIRTIO_NET_HDR_GSO_UDP,
            GsoType::UdpL4 => VIRTIO_NET_HDR_GSO_UDP_L4,
        }
    }
}

/// The meaning of a `virtio_net_hdr` (smoltcp's `Repr`): parse it from the
/// bytes a read returned, emit it in front of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VnetHeader {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: a partial L4 checksum awaits completion.
    pub needs_csum: bool,
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the sender verified the checksum.
    pub data_valid: bool,
    /// The segmentation requested.
    pub gso_type: GsoType,
    /// `VIRTIO_NET_HDR_GSO_ECN`: CWR goes on the first segment only.
    pub ecn: bool,
    /// Length of the headers up to the L4 payload, as the sender claims it.
    /// Advisory only: the kernel fills in `skb_headlen`, which may include
    /// payload, so the splitter recomputes it from the packet.
    pub hdr_len: u16,
    /// L4 payload bytes per segment.
    pub gso_size: u16,
    /// Offset, from the start of the packet, where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start` (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl VnetHeader {
    /// The all-zero header: an ordinary packet with a complete checksum.
    pub const ZERO: VnetHeader = VnetHeader {
        needs_csum: false,
        data_valid: false,
        gso_type: GsoType::None,
        ecn: false,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the first [`VNET_HDR_LEN`] bytes of `buf`; the packet follows them.
    ///
    /// Fails on a short buffer, on flag bits TUN never sets, and on an unknown
    /// `gso_type`.
    pub fn parse(buf: &[u8]) -> Result<VnetHeader, OffloadError> {
        let Some(b) = buf.first_chunk::<VNET_HDR_LEN>() else {
            return Err(OffloadError::Truncated {
                what: "virtio-net header",
                needed: VNET_HDR_LEN,
                got: buf.len(),
            });
        };
        let flags = b[0];
        if flags & !KNOWN_FLAGS != 0 {
            return Err(OffloadError::UnknownVnetFlags(flags));
        }
        let gso_type = GsoType::from_raw(b[1])?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHeader {
            needs_csum: flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0,
            data_valid: flags & VIRTIO_NET_HDR_F_DATA_VALID != 0,
            gso_type,
            ecn: b[1] & VIRTIO_NET_HDR_GSO_ECN != 0,
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// The header's 10 bytes, ready to precede a write.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = if self.needs_csum {
            VIRTIO_NET_HDR_F_NEEDS_CSUM
        } else {
            0
        } | if self.data_valid {
            VIRTIO_NET_HDR_F_DATA_VALID
        } else {
            0
        };
        b[1] = self.gso_type.to_raw() | if self.ecn { VIRTIO_NET_HDR_GSO_ECN } else { 0 };
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), OffloadError> {
        let got = buf.len();
        let Some(b) = buf.first_chunk_mut::<VNET_HDR_LEN>() else {
            return Err(OffloadError::OutputTooSmall {
                needed: VNET_HDR_LEN,
                got,
            });
        };
        *b = self.to_bytes();
        Ok(())
    }

    /// Bytes this header occupies ([`VNET_HDR_LEN`]), as smoltcp's `buffer_len`.
    pub const fn buffer_len(&self) -> usize {
        VNET_HDR_LEN
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// What TUN hands over for a 64 KiB TCPv4 super-packet with MSS 1448:
    /// NEEDS_CSUM, TCPV4, hdr_len 66, gso_size 1448, csum_start 20, csum_offset 16.
    static TSO4_BYTES: [u8; 10] = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x14, 0x00, 0x10, 0x00];

    #[test]
    fn parses_a_tso4_header_little_endian() {
        let h = VnetHeader::parse(&TSO4_BYTES).unwrap();
        assert_eq!(
            h,
            VnetHeader {
                needs_csum: true,
                data_valid: false,
                gso_type: GsoType::TcpV4,
                ecn: false,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 20,
                csum_offset: 16,
            }
        );
        assert_eq!(h.to_bytes(), TSO4_BYTES);
    }

    #[test]
    fn zero_header_is_ten_zero_bytes() {
        assert_eq!(VnetHeader::ZERO.to_bytes(), [0; VNET_HDR_LEN]);
        assert_eq!(VnetHeader::parse(&[0; 10]).unwrap(), VnetHeader::ZERO);
    }

    #[test]
    fn ecn_bit_is_kept_apart_from_the_type() {
        let mut b = TSO4_BYTES;
        b[1] = VIRTIO_NET_HDR_GSO_TCPV6 | VIRTIO_NET_HDR_GSO_ECN;
        let h = VnetHeader::parse(&b).unwrap();
        assert_eq!(h.gso_type, GsoType::TcpV6);
        assert!(h.ecn);
        assert_eq!(h.to_bytes(), b);
    }

    #[test]
    fn short_buffer_is_truncated_error() {
        let err = VnetHeader::parse(&TSO4_BYTES[..9]).unwrap_err();
        assert_eq!(
            err,
            OffloadError::Truncated {
                what: "virtio-net header",
                needed: 10,
                got: 9
            }
        );
    }

    #[test]
    fn unknown_gso_type_and_flags_are_rejected() {
        let mut b = TSO4_BYTES;
        b[1] = 2;
        assert_eq!(VnetHeader::parse(&b), Err(OffloadError::UnknownGsoType(2)));
        let mut b = TSO4_BYTES;
        b[0] = 4;
        assert_eq!(
            VnetHeader::parse(&b),
            Err(OffloadError::UnknownVnetFlags(4))
        );
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let mut small = [0u8; 9];
        assert_eq!(
            VnetHeader::ZERO.emit(&mut small),
            Err(OffloadError::OutputTooSmall { needed: 10, got: 9 })
        );
        let mut big = [0xffu8; 12];
        VnetHeader::parse(&TSO4_BYTES)
            .unwrap()
            .emit(&mut big)
            .unwrap();
        assert_eq!(&big[..10], &TSO4_BYTES);
        assert_eq!(&big[10..], &[0xff, 0xff], "emit writes 10 bytes, no more");
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(h) = VnetHeader::parse(&bytes) {
                prop_assert_eq!(&h.to_bytes()[..], &bytes[..VNET_HDR_LEN]);
            }
        }
    }
}
