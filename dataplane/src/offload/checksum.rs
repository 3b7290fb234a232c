//! The internet checksum (RFC 1071): a wide-word sum, pseudo-header sums for
//! IPv4 and IPv6, and incremental updates (RFC 1624).
//!
//! The ones'-complement sum is independent of byte order (RFC 1071 §2(B)):
//! summing native-endian words and swapping the folded result once gives the
//! same value as summing big-endian words. [`Sum`] therefore accumulates
//! native-endian 32-bit words into 64-bit lanes (no carry handling in the
//! loop, which the compiler vectorises) and converts only in [`Sum::fold`].

/// IP protocol number of TCP (IANA).
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP (IANA).
pub const IPPROTO_UDP: u8 = 17;

/// A ones'-complement partial sum, not yet folded nor complemented.
///
/// Sums of consecutive pieces of one buffer combine with [`Sum::add`] only if
/// every piece but the last has an even length (a piece of odd length would
/// shift the byte lanes of the next one); all headers (multiples of 4 bytes)
/// satisfy this, so the payload goes last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum(u64);

impl Sum {
    /// The empty sum.
    pub const ZERO: Sum = Sum(0);

    /// The sum of `data`.
    #[inline]
    pub fn of(data: &[u8]) -> Sum {
        Sum(sum_native(data))
    }

    /// This sum plus the sum of `data` (see the type's note on odd lengths).
    #[inline]
    #[must_use]
    pub fn add_bytes(self, data: &[u8]) -> Sum {
        self.add(Sum::of(data))
    }

    /// This sum plus a 16-bit word given in host order (as it is written in
    /// big-endian on the wire: a length, a protocol number).
    #[inline]
    #[must_use]
    pub fn add_u16(self, word: u16) -> Sum {
        self.add(Sum(u64::from(u16::from_ne_bytes(word.to_be_bytes()))))
    }

    /// This sum plus a 32-bit word given in host order.
    #[inline]
    #[must_use]
    pub fn add_u32(self, word: u32) -> Sum {
        self.add(Sum(u64::from(u32::from_ne_bytes(word.to_be_bytes()))))
    }

    /// The sum of both.
    #[inline]
    #[must_use]
    #[allow(clippy::should_implement_trait)] // `+` would hide the even-length caveat
    pub fn add(self, other: Sum) -> Sum {
        // Ones'-complement addition: a carry out of bit 63 wraps to bit 0.
        let (s, carry) = self.0.overflowing_add(other.0);
        Sum(s + u64::from(carry))
    }

    /// The sum folded to 16 bits, as the big-endian value written on the wire
    /// (not complemented: this is what a CHECKSUM_PARTIAL field holds).
    #[inline]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff_ffff) + (s >> 32);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        // `s` now fits 16 bits; it holds native-endian lanes, so a swap on
        // little-endian hosts gives the big-endian value.
        u16::from_be_bytes((s as u16).to_ne_bytes())
    }

    /// The internet checksum: the complement of [`Sum::fold`], the value a
    /// header's checksum field holds.
    #[inline]
    pub fn checksum(self) -> u16 {
        !self.fold()
    }
}

/// The internet checksum of `data` (the value to store in a checksum field
/// that was zero while summing; a buffer whose stored checksum is right
/// checksums to 0).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    Sum::of(data).checksum()
}

/// Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768): addresses,
/// protocol, and the L4 length (header plus payload).
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> Sum {
    Sum::of(&src)
        .add_bytes(&dst)
        .add_u16(u16::from(protocol))
        .add_u16(l4_len)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, the 32-bit
/// upper-layer length, and the next-header value.
#[inline]
pub fn pseudo_header_v6(src: [u8; 16], dst: [u8; 16], protocol: u8, l4_len: u32) -> Sum {
    Sum::of(&src)
        .add_bytes(&dst)
        .add_u32(l4_len)
        .add_u16(u16::from(protocol))
}

/// A checksum after one 16-bit word of the summed data changed from `old` to
/// `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`), without re-reading the data.
#[inline]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!checksum) + u32::from(!old) + u32::from(new);
    !fold32(s)
}

/// A checksum after one aligned 32-bit word (two 16-bit words, such as a TCP
/// sequence number or an IPv4 address) changed from `old` to `new`.
#[inline]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let c = update_u16(checksum, (old >> 16) as u16, (new >> 16) as u16);
    update_u16(c, old as u16, new as u16)
}

#[inline]
fn fold32(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Sum of `data` as native-endian words in a u64 (unfolded).
///
/// Eight independent u64 lanes over 32-byte blocks of u32 words: a u32 added
/// into a u64 cannot carry out before 2^32 additions, so the loop has no
/// carry chain and LLVM turns it into SIMD widening adds.
#[inline]
fn sum_native(data: &[u8]) -> u64 {
    let (blocks, rest) = data.as_chunks::<32>();
    let mut lanes = [0u64; 8];
    for block in blocks {
        let (words, _) = block.as_chunks::<4>();
        for (lane, word) in lanes.iter_mut().zip(words) {
            *lane += u64::from(u32::from_ne_bytes(*word));
        }
    }
    let mut acc = lanes.iter().fold(0u64, |a, &l| {
        let (s, c) = a.overflowing_add(l);
        s + u64::from(c)
    });
    let (words, tail) = rest.as_chunks::<2>();
    for word in words {
        acc += u64::from(u16::from_ne_bytes(*word));
    }
    if let [last] = tail {
        // An odd trailing byte is the high byte of a zero-padded big-endian
        // word, which in native order is the byte at the lower address.
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    acc
}

#[cfg(test)]
mod test {
    use super::*;
    use proptest::prelude::*;

    /// The textbook one-byte-at-a-time sum, for comparison.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            s += hi | lo;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// RFC 1071 §3 worked example: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
    #[test]
    fn rfc1071_example_sums_to_ddf2() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Sum::of(&data).fold(), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    /// A real IPv4 header (from Wikipedia's example) has checksum b861.
    #[test]
    fn ipv4_header_checksum_matches_known_value() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(
            checksum(&hdr),
            0,
            "a header with its checksum in place sums to 0"
        );
    }

    #[test]
    fn odd_length_pads_last_byte_high() {
        assert_eq!(Sum::of(&[0xab]).fold(), 0xab00);
        assert_eq!(Sum::of(&[0x01, 0x02, 0x03]).fold(), 0x0402);
    }

    #[test]
    fn pseudo_header_v4_matches_manual_sum() {
        let src = [10, 0, 0, 1];
        let dst = [10, 0, 0, 2];
        let manual = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0x05, 0xdc];
        assert_eq!(
            pseudo_header_v4(src, dst, IPPROTO_TCP, 1500).fold(),
            Sum::of(&manual).fold()
        );
    }

    #[test]
    fn pseudo_header_v6_matches_manual_sum() {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut manual = Vec::new();
        manual.extend_from_slice(&src);
        manual.extend_from_slice(&dst);
        manual.extend_from_slice(&70000u32.to_be_bytes());
        manual.extend_from_slice(&[0, 0, 0, IPPROTO_UDP]);
        assert_eq!(
            pseudo_header_v6(src, dst, IPPROTO_UDP, 70000).fold(),
            Sum::of(&manual).fold()
        );
    }

    proptest! {
        #[test]
        fn wide_sum_equals_bytewise_reference(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            prop_assert_eq!(Sum::of(&data).fold(), reference(&data));
        }

        #[test]
        fn sums_of_even_pieces_combine(
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cut in 0usize..300,
        ) {
            let cut = (cut * 2).min(data.len() & !1);
            let joined = Sum::of(&data[..cut]).add_bytes(&data[cut..]);
            prop_assert_eq!(joined.fold(), reference(&data));
        }

        #[test]
        fn incremental_update_u16_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            at in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let words = data.len() / 2;
            let i = at.index(words) * 2;
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            // Ones'-complement has two zeros: compare as sums, where 0 and ffff agree.
            let updated = update_u16(before, old, new);
            prop_assert!(updated == after || (updated ^ after) == 0xffff && (updated == 0 || after == 0),
                "RFC 1624 update gave {updated:#06x}, recomputing gave {after:#06x}");
        }

        #[test]
        fn incremental_update_u32_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 4..200),
            at in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            let i = at.index(data.len() / 4) * 4;
            let before = checksum(&data);
            let old = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            data[i..i + 4].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            let updated = update_u32(before, old, new);
            prop_assert!(updated == after || (updated ^ after) == 0xffff && (updated == 0 || after == 0),
                "RFC 1624 update gave {updated:#06x}, recomputing gave {after:#06x}");
        }
    }
}
