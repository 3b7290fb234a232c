//! WireGuard's four message formats (whitepaper §5.4), parsed from and
//! emitted to bytes. Lengths are exact: a handshake message of any other
//! length, a non-zero reserved field or an unknown type is malformed.

use std::fmt;

use crate::DropReason;

/// Type byte of a handshake initiation.
pub const TYPE_INITIATION: u8 = 1;
/// Type byte of a handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Type byte of a cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Type byte of a transport data message.
pub const TYPE_DATA: u8 = 4;

/// Length of a handshake initiation (whitepaper §5.4.2).
pub const INITIATION_LEN: usize = 148;
/// Length of a handshake response (whitepaper §5.4.3).
pub const RESPONSE_LEN: usize = 92;
/// Length of a cookie reply (whitepaper §5.4.7).
pub const COOKIE_REPLY_LEN: usize = 64;
/// Length of the transport data header: type, reserved, receiver, counter.
pub const DATA_HEADER_LEN: usize = 16;
/// Length of the Poly1305 tag behind every AEAD ciphertext.
pub const TAG_LEN: usize = 16;
/// The shortest transport message: header and the tag of an empty (keepalive) payload.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;

/// Where MAC1 starts in an initiation: it covers every byte before it.
pub const INITIATION_MAC1_OFFSET: usize = 116;
/// Where MAC2 starts in an initiation: it covers every byte before it.
pub const INITIATION_MAC2_OFFSET: usize = 132;
/// Where MAC1 starts in a response.
pub const RESPONSE_MAC1_OFFSET: usize = 60;
/// Where MAC2 starts in a response.
pub const RESPONSE_MAC2_OFFSET: usize = 76;

/// The kind of a WireGuard message, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Handshake initiation (type 1).
    Initiation,
    /// Handshake response (type 2).
    Response,
    /// Cookie reply (type 3).
    CookieReply,
    /// Transport data (type 4).
    Data,
}

impl MessageType {
    /// Whether the control plane (not a data worker) handles it.
    pub const fn is_handshake(self) -> bool {
        !matches!(self, MessageType::Data)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageType::Initiation => "handshake initiation",
            MessageType::Response => "handshake response",
            MessageType::CookieReply => "cookie reply",
            MessageType::Data => "transport data",
        })
    }
}

/// Why bytes are not a WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Fewer than the 4 bytes of type and reserved field.
    #[error("datagram of {0} bytes is too short for a WireGuard message")]
    Truncated(usize),
    /// The type byte is not 1 to 4.
    #[error("unknown WireGuard message type {0}")]
    UnknownType(u8),
    /// The three reserved bytes after the type are not zero.
    #[error("reserved bytes of a WireGuard message are {0:02x?}, not zero")]
    Reserved([u8; 3]),
    /// A handshake message whose length is not its fixed length.
    #[error("{kind} must be {expected} bytes, got {got}")]
    WrongLength {
        /// The message's type.
        kind: MessageType,
        /// Its fixed length.
        expected: usize,
        /// The datagram's length.
        got: usize,
    },
    /// A transport message shorter than header and tag.
    #[error("transport data must be at least {DATA_MIN_LEN} bytes, got {0}")]
    DataTooShort(usize),
}

impl From<MessageError> for DropReason {
    fn from(_: MessageError) -> DropReason {
        DropReason::Malformed
    }
}

/// Classifies a datagram, checking its type, reserved bytes and length.
/// Workers call this to route handshake messages to the control plane.
pub fn message_type(datagram: &[u8]) -> Result<MessageType, MessageError> {
    let Some(head) = datagram.get(..4) else {
        return Err(MessageError::Truncated(datagram.len()));
    };
    let kind = match head[0] {
        TYPE_INITIATION => MessageType::Initiation,
        TYPE_RESPONSE => MessageType::Response,
        TYPE_COOKIE_REPLY => MessageType::CookieReply,
        TYPE_DATA => MessageType::Data,
        t => return Err(MessageError::UnknownType(t)),
    };
    if head[1..4] != [0, 0, 0] {
        return Err(MessageError::Reserved([head[1], head[2], head[3]]));
    }
    let got = datagram.len();
    let expected = match kind {
        MessageType::Initiation => INITIATION_LEN,
        MessageType::Response => RESPONSE_LEN,
        MessageType::CookieReply => COOKIE_REPLY_LEN,
        MessageType::Data if got < DATA_MIN_LEN => return Err(MessageError::DataTooShort(got)),
        MessageType::Data => return Ok(kind),
    };
    if got != expected {
        return Err(MessageError::WrongLength {
            kind,
            expected,
            got,
        });
    }
    Ok(kind)
}

fn expect(datagram: &[u8], kind: MessageType) -> Result<(), MessageError> {
    let got = message_type(datagram)?;
    if got != kind {
        // The right length for another type is still the wrong length for this one.
        return Err(MessageError::WrongLength {
            kind,
            expected: fixed_len(kind),
            got: datagram.len(),
        });
    }
    Ok(())
}

fn fixed_len(kind: MessageType) -> usize {
    match kind {
        MessageType::Initiation => INITIATION_LEN,
        MessageType::Response => RESPONSE_LEN,
        MessageType::CookieReply => COOKIE_REPLY_LEN,
        MessageType::Data => DATA_MIN_LEN,
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// Handshake initiation (type 1, 148 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiation {
    /// The initiator's index for the session being set up.
    pub sender_index: u32,
    /// The initiator's ephemeral public key.
    pub ephemeral: [u8; 32],
    /// The initiator's static public key, sealed (32 + 16 tag).
    pub encrypted_static: [u8; 48],
    /// The TAI64N timestamp, sealed (12 + 16 tag).
    pub encrypted_timestamp: [u8; 28],
    /// MAC1 over bytes 0..116.
    pub mac1: [u8; 16],
    /// MAC2 over bytes 0..132 (zero without a cookie).
    pub mac2: [u8; 16],
}

impl Initiation {
    /// Parses exactly 148 bytes of type 1.
    pub fn parse(b: &[u8]) -> Result<Initiation, MessageError> {
        expect(b, MessageType::Initiation)?;
        Ok(Initiation {
            sender_index: le32(b, 4),
            ephemeral: arr(b, 8),
            encrypted_static: arr(b, 40),
            encrypted_timestamp: arr(b, 88),
            mac1: arr(b, INITIATION_MAC1_OFFSET),
            mac2: arr(b, INITIATION_MAC2_OFFSET),
        })
    }

    /// The message's bytes.
    pub fn emit(&self) -> [u8; INITIATION_LEN] {
        let mut b = [0u8; INITIATION_LEN];
        b[0] = TYPE_INITIATION;
        b[4..8].copy_from_slice(&self.sender_index.to_le_bytes());
        b[8..40].copy_from_slice(&self.ephemeral);
        b[40..88].copy_from_slice(&self.encrypted_static);
        b[88..116].copy_from_slice(&self.encrypted_timestamp);
        b[116..132].copy_from_slice(&self.mac1);
        b[132..148].copy_from_slice(&self.mac2);
        b
    }
}

/// Handshake response (type 2, 92 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The responder's index for the new session.
    pub sender_index: u32,
    /// The initiator's index, from the initiation.
    pub receiver_index: u32,
    /// The responder's ephemeral public key.
    pub ephemeral: [u8; 32],
    /// The empty payload, sealed (its 16-byte tag).
    pub encrypted_nothing: [u8; 16],
    /// MAC1 over bytes 0..60.
    pub mac1: [u8; 16],
    /// MAC2 over bytes 0..76 (zero without a cookie).
    pub mac2: [u8; 16],
}

impl Response {
    /// Parses exactly 92 bytes of type 2.
    pub fn parse(b: &[u8]) -> Result<Response, MessageError> {
        expect(b, MessageType::Response)?;
        Ok(Response {
            sender_index: le32(b, 4),
            receiver_index: le32(b, 8),
            ephemeral: arr(b, 12),
            encrypted_nothing: arr(b, 44),
            mac1: arr(b, RESPONSE_MAC1_OFFSET),
            mac2: arr(b, RESPONSE_MAC2_OFFSET),
        })
    }

    /// The message's bytes.
    pub fn emit(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[0] = TYPE_RESPONSE;
        b[4..8].copy_from_slice(&self.sender_index.to_le_bytes());
        b[8..12].copy_from_slice(&self.receiver_index.to_le_bytes());
        b[12..44].copy_from_slice(&self.ephemeral);
        b[44..60].copy_from_slice(&self.encrypted_nothing);
        b[60..76].copy_from_slice(&self.mac1);
        b[76..92].copy_from_slice(&self.mac2);
        b
    }
}

/// Cookie reply (type 3, 64 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieReply {
    /// The sender index of the message this answers.
    pub receiver_index: u32,
    /// XChaCha20-Poly1305 nonce.
    pub nonce: [u8; 24],
    /// The 16-byte cookie, sealed (16 + 16 tag).
    pub encrypted_cookie: [u8; 32],
}

impl CookieReply {
    /// Parses exactly 64 bytes of type 3.
    pub fn parse(b: &[u8]) -> Result<CookieReply, MessageError> {
        expect(b, MessageType::CookieReply)?;
        Ok(CookieReply {
            receiver_index: le32(b, 4),
            nonce: arr(b, 8),
            encrypted_cookie: arr(b, 32),
        })
    }

    /// The message's bytes.
    pub fn emit(&self) -> [u8; COOKIE_REPLY_LEN] {
        let mut b = [0u8; COOKIE_REPLY_LEN];
        b[0] = TYPE_COOKIE_REPLY;
        b[4..8].copy_from_slice(&self.receiver_index.to_le_bytes());
        b[8..32].copy_from_slice(&self.nonce);
        b[32..64].copy_from_slice(&self.encrypted_cookie);
        b
    }
}

/// The header of a transport data message (type 4); the sealed packet and
/// its tag follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// The receiver's session index.
    pub receiver_index: u32,
    /// The 64-bit nonce counter.
    pub counter: u64,
}

impl DataHeader {
    /// Parses the header of a transport message of at least 32 bytes.
    #[inline]
    pub fn parse(b: &[u8]) -> Result<DataHeader, MessageError> {
        expect(b, MessageType::Data)?;
        let mut c = [0u8; 8];
        c.copy_from_slice(&b[8..16]);
        Ok(DataHeader {
            receiver_index: le32(b, 4),
            counter: u64::from_le_bytes(c),
        })
    }

    /// The header's 16 bytes.
    #[inline]
    pub fn emit(&self) -> [u8; DATA_HEADER_LEN] {
        let mut b = [0u8; DATA_HEADER_LEN];
        b[0] = TYPE_DATA;
        b[4..8].copy_from_slice(&self.receiver_index.to_le_bytes());
        b[8..16].copy_from_slice(&self.counter.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // A transport keepalive: receiver index 0x11223344, counter 5, a 16-byte tag.
    static KEEPALIVE_BYTES: [u8; 32] = [
        0x04, 0x00, 0x00, 0x00, 0x44, 0x33, 0x22, 0x11, // type, reserved, receiver (LE)
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // counter (LE)
        0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, // tag
        0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef,
    ];

    // A cookie reply for receiver 1 with nonce 0x01.. and sealed cookie 0x02...
    fn cookie_reply_bytes() -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = 3;
        b[4] = 1;
        b[8..32].fill(1);
        b[32..64].fill(2);
        b
    }

    #[test]
    fn parses_the_keepalive_fixture() {
        assert_eq!(message_type(&KEEPALIVE_BYTES), Ok(MessageType::Data));
        let h = DataHeader::parse(&KEEPALIVE_BYTES).unwrap();
        assert_eq!(
            h,
            DataHeader {
                receiver_index: 0x1122_3344,
                counter: 5
            }
        );
        assert_eq!(h.emit(), KEEPALIVE_BYTES[..16]);
    }

    #[test]
    fn parses_a_cookie_reply() {
        let b = cookie_reply_bytes();
        let c = CookieReply::parse(&b).unwrap();
        assert_eq!(c.receiver_index, 1);
        assert_eq!(c.nonce, [1; 24]);
        assert_eq!(c.encrypted_cookie, [2; 32]);
        assert_eq!(c.emit(), b);
    }

    #[test]
    fn initiation_and_response_field_offsets() {
        let init = Initiation {
            sender_index: 0xa1b2c3d4,
            ephemeral: [1; 32],
            encrypted_static: [2; 48],
            encrypted_timestamp: [3; 28],
            mac1: [4; 16],
            mac2: [5; 16],
        };
        let b = init.emit();
        assert_eq!(&b[..8], &[1, 0, 0, 0, 0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(b[INITIATION_MAC1_OFFSET - 1], 3);
        assert_eq!(b[INITIATION_MAC1_OFFSET], 4);
        assert_eq!(b[INITIATION_MAC2_OFFSET], 5);
        assert_eq!(Initiation::parse(&b), Ok(init));
        let resp = Response {
            sender_index: 7,
            receiver_index: 9,
            ephemeral: [1; 32],
            encrypted_nothing: [2; 16],
            mac1: [4; 16],
            mac2: [5; 16],
        };
        let b = resp.emit();
        assert_eq!(&b[..12], &[2, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(b[RESPONSE_MAC1_OFFSET], 4);
        assert_eq!(b[RESPONSE_MAC2_OFFSET], 5);
        assert_eq!(Response::parse(&b), Ok(resp));
    }

    #[test]
    fn wrong_type_reserved_or_length_is_malformed() {
        assert_eq!(message_type(&[]), Err(MessageError::Truncated(0)));
        assert_eq!(
            message_type(&[5, 0, 0, 0]),
            Err(MessageError::UnknownType(5))
        );
        assert_eq!(
            message_type(&[0, 0, 0, 0]),
            Err(MessageError::UnknownType(0))
        );
        let mut b = KEEPALIVE_BYTES;
        b[2] = 1;
        assert_eq!(message_type(&b), Err(MessageError::Reserved([0, 1, 0])));
        assert_eq!(
            message_type(&KEEPALIVE_BYTES[..31]),
            Err(MessageError::DataTooShort(31))
        );
        let mut init = [0u8; 149];
        init[0] = 1;
        assert_eq!(
            message_type(&init),
            Err(MessageError::WrongLength {
                kind: MessageType::Initiation,
                expected: 148,
                got: 149
            })
        );
        assert!(Initiation::parse(&init[..148]).is_ok());
        // A valid cookie reply is not an initiation.
        assert!(Initiation::parse(&cookie_reply_bytes()).is_err());
        assert_eq!(
            DropReason::from(MessageError::UnknownType(9)),
            DropReason::Malformed
        );
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        fn bytes() -> impl Strategy<Value = Vec<u8>> {
            // Bias toward valid type bytes and the interesting lengths.
            (
                0u8..6,
                prop_oneof![Just(32usize), Just(64), Just(92), Just(148), 0usize..200],
            )
                .prop_flat_map(|(t, n)| {
                    proptest::collection::vec(any::<u8>(), n).prop_map(move |mut v| {
                        if let Some(b) = v.first_mut() {
                            *b = t;
                        }
                        for b in v.iter_mut().skip(1).take(3) {
                            *b = 0;
                        }
                        v
                    })
                })
        }

        proptest! {
            #[test]
            fn any_bytes_never_panic(b in bytes()) {
                let kind = message_type(&b);
                prop_assert_eq!(Initiation::parse(&b).is_ok(), kind == Ok(MessageType::Initiation));
                prop_assert_eq!(Response::parse(&b).is_ok(), kind == Ok(MessageType::Response));
                prop_assert_eq!(CookieReply::parse(&b).is_ok(), kind == Ok(MessageType::CookieReply));
                prop_assert_eq!(DataHeader::parse(&b).is_ok(), kind == Ok(MessageType::Data));
            }

            #[test]
            fn parse_emit_round_trips(b in bytes()) {
                if let Ok(m) = Initiation::parse(&b) { prop_assert_eq!(&m.emit()[..], &b[..]); }
                if let Ok(m) = Response::parse(&b) { prop_assert_eq!(&m.emit()[..], &b[..]); }
                if let Ok(m) = CookieReply::parse(&b) { prop_assert_eq!(&m.emit()[..], &b[..]); }
                if let Ok(m) = DataHeader::parse(&b) { prop_assert_eq!(&m.emit()[..], &b[..16]); }
            }

            #[test]
            fn data_header_emit_parse_round_trips(receiver_index: u32, counter: u64, tail in proptest::collection::vec(any::<u8>(), 16..40)) {
                let h = DataHeader { receiver_index, counter };
                let mut b = h.emit().to_vec();
                b.extend_from_slice(&tail);
                prop_assert_eq!(DataHeader::parse(&b), Ok(h));
            }
        }
    }
}
