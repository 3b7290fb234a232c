//! What a completion is about: each submission carries an [`Op`] in its
//! `user_data`, and each completion is dispatched on it. An operation that
//! owns buffers names the table entry that holds them until it completes.

/// Which underlay socket: each worker has an IPv4 one and, when the host
/// has IPv6, an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// The IPv4 socket.
    V4,
    /// The IPv6 socket.
    V6,
}

impl Family {
    /// Both, in the order they are armed.
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// 0 for IPv4, 1 for IPv6: an index into per-socket arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One kind of io_uring operation of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The read of the wake-up eventfd (stop, or look again).
    Wake,
    /// A fixed read from the device into the slot of read-table entry `n`.
    Read(u16),
    /// The multishot device read; each completion names the slot it filled.
    ReadMulti,
    /// The multishot receive on one socket; each completion names its buffer.
    Recv(Family),
    /// One `sendmsg` from one transmit slot, send-table entry `n`.
    Send(u16),
    /// One `sendmsg` gathering datagrams from several slots, gather-table entry `n`.
    Gather(u16),
    /// One device write, write-table entry `n`.
    Write(u16),
    /// A cancel of the receives on sockets being replaced (a new listen port).
    Cancel,
}

impl Op {
    /// The operation as `user_data`: a tag in the top byte, the entry below.
    pub fn encode(self) -> u64 {
        let (tag, n): (u64, u16) = match self {
            Op::Wake => (1, 0),
            Op::Read(n) => (2, n),
            Op::ReadMulti => (3, 0),
            Op::Recv(Family::V4) => (4, 0),
            Op::Recv(Family::V6) => (4, 1),
            Op::Send(n) => (5, n),
            Op::Gather(n) => (6, n),
            Op::Write(n) => (7, n),
            Op::Cancel => (8, 0),
        };
        tag << 56 | u64::from(n)
    }

    /// The operation a completion's `user_data` names; `None` for anything
    /// this worker never submitted.
    pub fn decode(user_data: u64) -> Option<Op> {
        let n = (user_data & 0xffff) as u16;
        if user_data >> 16 & 0xff_ffff_ffff != 0 {
            return None;
        }
        Some(match user_data >> 56 {
            1 if n == 0 => Op::Wake,
            2 => Op::Read(n),
            3 if n == 0 => Op::ReadMulti,
            4 if n == 0 => Op::Recv(Family::V4),
            4 if n == 1 => Op::Recv(Family::V6),
            5 => Op::Send(n),
            6 => Op::Gather(n),
            7 => Op::Write(n),
            8 if n == 0 => Op::Cancel,
            _ => return None,
        })
    }

    /// Whether one submission of this operation completes many times
    /// (until a completion without `IORING_CQE_F_MORE`).
    pub fn is_multishot(self) -> bool {
        matches!(self, Op::ReadMulti | Op::Recv(_))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn every_operation_round_trips_and_strangers_are_refused() {
        let all = [
            Op::Wake,
            Op::Read(0),
            Op::Read(15),
            Op::ReadMulti,
            Op::Recv(Family::V4),
            Op::Recv(Family::V6),
            Op::Send(0),
            Op::Send(u16::MAX),
            Op::Gather(7),
            Op::Write(63),
            Op::Cancel,
        ];
        for op in all {
            assert_eq!(Op::decode(op.encode()), Some(op), "{op:?}");
        }
        for stranger in [
            0,
            9 << 56,
            8 << 56 | 1,
            1 << 56 | 1,
            4 << 56 | 2,
            5 << 56 | 1 << 20,
            u64::MAX,
        ] {
            assert_eq!(Op::decode(stranger), None, "{stranger:#x}");
        }
        assert!(Op::Recv(Family::V6).is_multishot() && Op::ReadMulti.is_multishot());
        assert!(!Op::Send(1).is_multishot());
    }
}
