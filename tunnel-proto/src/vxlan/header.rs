//! The VXLAN header (RFC 7348 §5): flags with the I bit, a 24-bit VNI.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

use std::fmt;

use crate::DropReason;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// Bytes a caller reserves in front of an Ethernet frame for the header.
pub const HEADROOM: usize = HEADER_LEN;
/// The IANA port for VXLAN (RFC 7348 §5).
pub const UDP_PORT: u16 = 4789;

/// The I flag: "VNI valid" (RFC 7348 §5). It is the only flag we accept.
const FLAG_I: u8 = 0x08;

/// A 24-bit VXLAN Network Identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

/// A number that does not fit the VNI's 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a VNI is 24 bits (0..=16777215), {0} is too large")]
pub struct VniError(pub u32);

impl Vni {
    /// Largest VNI.
    pub const MAX: u32 = (1 << 24) - 1;

    /// A VNI, if `v` fits in 24 bits.
    pub const fn new(v: u32) -> Result<Vni, VniError> {
        if v > Self::MAX {
            Err(VniError(v))
        } else {
            Ok(Vni(v))
        }
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a datagram is not a VXLAN frame for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VxlanError {
    /// Shorter than the 8-byte header.
    #[error("VXLAN datagram of {0} bytes is shorter than the 8-byte header")]
    Truncated(usize),
    /// The I flag is missing, or another flag or reserved bit is set.
    #[error(
        "VXLAN header has flags/reserved word {0:#010x}; only the I flag (0x08000000) is valid"
    )]
    BadFlags(u32),
    /// The reserved byte after the VNI is not zero.
    #[error("VXLAN header's last reserved byte is {0:#04x}, not zero")]
    BadReserved(u8),
    /// The VNI is not the one this interface serves.
    #[error("VXLAN frame for VNI {got}, this interface serves VNI {expected}")]
    WrongVni {
        /// The VNI we serve.
        expected: Vni,
        /// The VNI in the frame.
        got: Vni,
    },
}

impl From<VxlanError> for DropReason {
    fn from(e: VxlanError) -> DropReason {
        match e {
            VxlanError::WrongVni { .. } => DropReason::WrongVni,
            _ => DropReason::Malformed,
        }
    }
}

/// A zero-copy view of a VXLAN header and the frame behind it.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` after checking it holds a whole header; after this the
    /// accessors cannot panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, VxlanError> {
        let len = buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(VxlanError::Truncated(len));
        }
        Ok(Packet { buffer })
    }

    /// The first word: flags (high byte) and 24 reserved bits.
    pub fn flags_word(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The VNI field.
    pub fn vni(&self) -> Vni {
        let b = self.buffer.as_ref();
        Vni(u32::from_be_bytes([0, b[4], b[5], b[6]]))
    }

    /// The reserved byte after the VNI.
    pub fn reserved_low(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags word to exactly the I flag.
    pub fn set_flags_i(&mut self) {
        let b = self.buffer.as_mut();
        b[..4].copy_from_slice(&[FLAG_I, 0, 0, 0]);
    }

    /// Sets the VNI and clears the reserved byte after it.
    pub fn set_vni(&mut self, vni: Vni) {
        let b = self.buffer.as_mut();
        let v = vni.0.to_be_bytes();
        b[4..8].copy_from_slice(&[v[1], v[2], v[3], 0]);
    }
}

/// The meaning of a VXLAN header: only the VNI is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The frame's VXLAN Network Identifier.
    pub vni: Vni,
}

impl Repr {
    /// Validates the header and that it carries `expected`.
    ///
    /// Strict like the kernel's `vxlan_rcv`: besides the I flag every flag and
    /// reserved bit must be clear (RFC 7348 says "ignore"; Linux drops such a
    /// frame as malformed because they signal extensions it was not asked to
    /// parse, and so do we).
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, expected: Vni) -> Result<Repr, VxlanError> {
        let flags = packet.flags_word();
        if flags != u32::from(FLAG_I) << 24 {
            return Err(VxlanError::BadFlags(flags));
        }
        let reserved = packet.reserved_low();
        if reserved != 0 {
            return Err(VxlanError::BadReserved(reserved));
        }
        let got = packet.vni();
        if got != expected {
            return Err(VxlanError::WrongVni { expected, got });
        }
        Ok(Repr { vni: got })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_flags_i();
        packet.set_vni(self.vni);
    }
}

/// Parses a datagram for `vni` and returns the Ethernet frame's byte range.
pub fn parse_frame(datagram: &[u8], vni: Vni) -> Result<std::ops::Range<usize>, VxlanError> {
    let packet = Packet::new_checked(datagram)?;
    Repr::parse(&packet, vni)?;
    Ok(HEADER_LEN..datagram.len())
}

#[cfg(test)]
mod test {
    use super::*;

    // A VXLAN header for VNI 42 captured from the kernel's vxlan device
    // (`ip link add vx0 type vxlan id 42 dstport 4789`), followed by the first
    // bytes of a broadcast ARP frame.
    static PACKET_BYTES: [u8; 22] = [
        0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, // VXLAN
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x42, 0xac, 0x11, 0x00, 0x02, // src
        0x08, 0x06, // ARP
    ];

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    #[test]
    fn parses_the_fixture() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.vni(), vni(42));
        assert_eq!(Repr::parse(&p, vni(42)), Ok(Repr { vni: vni(42) }));
        assert_eq!(p.payload(), &PACKET_BYTES[8..]);
        assert_eq!(parse_frame(&PACKET_BYTES, vni(42)), Ok(8..22));
    }

    #[test]
    fn emits_the_fixture_header() {
        let mut buf = [0xffu8; 8];
        let mut p = Packet::new_checked(&mut buf[..]).unwrap();
        Repr { vni: vni(42) }.emit(&mut p);
        assert_eq!(buf, PACKET_BYTES[..8]);
    }

    #[test]
    fn foreign_vni_is_wrong_vni() {
        let err = parse_frame(&PACKET_BYTES, vni(7)).unwrap_err();
        assert_eq!(
            err,
            VxlanError::WrongVni {
                expected: vni(7),
                got: vni(42)
            }
        );
        assert_eq!(DropReason::from(err), DropReason::WrongVni);
    }

    #[test]
    fn missing_i_flag_or_extra_bits_are_malformed() {
        for (i, bad) in [
            (0usize, 0x00u8),
            (0, 0x0c),
            (0, 0x88),
            (1, 1),
            (3, 0x80),
            (7, 1),
        ] {
            let mut b = PACKET_BYTES;
            b[i] = bad;
            let err = parse_frame(&b, vni(42)).unwrap_err();
            assert_eq!(
                DropReason::from(err),
                DropReason::Malformed,
                "byte {i} = {bad:#x}: {err}"
            );
        }
    }

    #[test]
    fn short_datagrams_are_truncated() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                parse_frame(&PACKET_BYTES[..n], vni(42)),
                Err(VxlanError::Truncated(n))
            );
        }
        assert_eq!(parse_frame(&PACKET_BYTES[..8], vni(42)), Ok(8..8));
    }

    #[test]
    fn vni_is_24_bits() {
        assert_eq!(Vni::new(Vni::MAX).map(Vni::get), Ok(0xff_ffff));
        assert_eq!(Vni::new(1 << 24), Err(VniError(1 << 24)));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), v in 0u32..=Vni::MAX) {
                let vni = Vni::new(v).unwrap();
                if let Ok(range) = parse_frame(&bytes, vni) {
                    prop_assert_eq!(range, HEADER_LEN..bytes.len());
                    prop_assert_eq!(bytes[0], 0x08);
                }
            }

            #[test]
            fn emit_then_parse_round_trips(v in 0u32..=Vni::MAX, frame in proptest::collection::vec(any::<u8>(), 0..32)) {
                let vni = Vni::new(v).unwrap();
                let mut buf = vec![0xa5u8; HEADER_LEN + frame.len()];
                buf[HEADER_LEN..].copy_from_slice(&frame);
                let repr = Repr { vni };
                repr.emit(&mut Packet::new_checked(&mut buf[..]).unwrap());
                let p = Packet::new_checked(&buf[..]).unwrap();
                prop_assert_eq!(Repr::parse(&p, vni), Ok(repr));
                prop_assert_eq!(p.payload(), &frame[..]);
            }
        }
    }
}
