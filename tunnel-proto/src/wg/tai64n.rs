//! TAI64N timestamps (whitepaper §5.4.2): the initiation's replay guard.

use std::time::{SystemTime, UNIX_EPOCH};

/// Offset of TAI64 labels: 2^62, plus the 10 s TAI−UTC difference of 1972
/// that WireGuard implementations add.
const TAI64_BASE: u64 = (1 << 62) + 10;

/// The nanosecond bits an initiation's timestamp leaves out (the low 24).
const TIMESTAMP_WHITENER: u32 = (1 << 24) - 1;

/// A TAI64N label: 8 bytes of seconds, 4 of nanoseconds, both big-endian,
/// so comparing the bytes compares the times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tai64N([u8; 12]);

impl Tai64N {
    /// The label for a wall-clock time (times before 1970 map to 1970),
    /// its nanoseconds rounded down to a multiple of 2^24 (about 16.8 ms),
    /// as the kernel and wireguard-go do: an initiation must not tell a
    /// listener the sender's clock to the nanosecond.
    pub fn from_system_time(wall: SystemTime) -> Tai64N {
        let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::from_parts(
            TAI64_BASE.saturating_add(since.as_secs()),
            since.subsec_nanos() & !TIMESTAMP_WHITENER,
        )
    }

    fn from_parts(secs: u64, nanos: u32) -> Tai64N {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&secs.to_be_bytes());
        b[8..].copy_from_slice(&nanos.to_be_bytes());
        Tai64N(b)
    }

    fn parts(&self) -> (u64, u32) {
        let mut s = [0u8; 8];
        s.copy_from_slice(&self.0[..8]);
        let mut n = [0u8; 4];
        n.copy_from_slice(&self.0[8..]);
        (u64::from_be_bytes(s), u32::from_be_bytes(n))
    }

    /// The smallest label after this one: an initiator whose clock did not
    /// move (or moved back) still sends increasing timestamps.
    pub fn next(&self) -> Tai64N {
        let (s, n) = self.parts();
        if n >= 999_999_999 {
            Self::from_parts(s.saturating_add(1), 0)
        } else {
            Self::from_parts(s, n + 1)
        }
    }

    /// The raw 12 bytes.
    pub const fn to_bytes(self) -> [u8; 12] {
        self.0
    }

    /// From the raw 12 bytes (any value: only ever compared).
    pub const fn from_bytes(b: [u8; 12]) -> Tai64N {
        Tai64N(b)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    #[test]
    fn encodes_seconds_with_the_tai_offset_and_whitened_nanoseconds() {
        let t = Tai64N::from_system_time(UNIX_EPOCH + Duration::new(1, 5));
        assert_eq!(t.to_bytes(), [0x40, 0, 0, 0, 0, 0, 0, 0x0b, 0, 0, 0, 0]);
        let t = Tai64N::from_system_time(UNIX_EPOCH + Duration::new(1, 0x1234_5678));
        assert_eq!(
            &t.to_bytes()[8..],
            &[0x12, 0, 0, 0],
            "the low 24 bits of the nanoseconds are not sent"
        );
    }

    #[test]
    fn later_times_compare_greater_and_next_increases() {
        let a = Tai64N::from_system_time(UNIX_EPOCH + Duration::new(100, 999_999_999));
        let b = Tai64N::from_system_time(UNIX_EPOCH + Duration::new(101, 0));
        assert!(a < b);
        assert!(a < a.next() && a.next() < b);
        let last = Tai64N::from_parts(7, 999_999_999);
        assert_eq!(
            last.next(),
            Tai64N::from_parts(8, 0),
            "next carries into the seconds"
        );
        assert!(b < b.next());
        assert_eq!(
            Tai64N::from_system_time(UNIX_EPOCH - Duration::from_secs(5)),
            Tai64N::from_system_time(UNIX_EPOCH)
        );
    }
}
