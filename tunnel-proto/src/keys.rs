//! Curve25519 keys and pre-shared keys in `wg`'s base64 format.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::random::{self, RandomError};

/// Length of every key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in `wg`'s base64 form (32 bytes, padded: 43 characters and `=`).
pub const KEY_BASE64_LEN: usize = 44;

/// A key string that is not a valid `wg` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The string does not have exactly 44 characters.
    #[error("a key is {KEY_BASE64_LEN} base64 characters, this one has {0}")]
    WrongLength(usize),
    /// The string is not base64 for 32 bytes.
    #[error("a key must be base64 for 32 bytes (like `wg genkey` prints): {0}")]
    InvalidBase64(String),
    /// The string is not 64 hex digits (the UAPI's form).
    #[error("a key is 64 hex digits in the configuration protocol")]
    InvalidHex,
}

/// Decodes 64 hex digits (either case), as the UAPI carries keys.
fn decode_hex(s: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() != 2 * KEY_LEN {
        return Err(KeyError::InvalidHex);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return Err(KeyError::InvalidHex);
        };
        *o = hi << 4 | lo;
    }
    Ok(out)
}

/// 64 lowercase hex digits.
fn encode_hex(bytes: &[u8; KEY_LEN]) -> Zeroizing<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = Zeroizing::new(String::with_capacity(2 * KEY_LEN));
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

fn decode(s: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let s = s.trim();
    if s.len() != KEY_BASE64_LEN {
        return Err(KeyError::WrongLength(s.chars().count()));
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // 44 characters with padding decode to at most 33 bytes: give the decoder room,
    // then insist on exactly 32.
    let mut scratch = Zeroizing::new([0u8; KEY_LEN + 3]);
    let n = STANDARD
        .decode_slice(s.as_bytes(), &mut scratch[..])
        .map_err(|e| KeyError::InvalidBase64(e.to_string()))?;
    if n != KEY_LEN {
        return Err(KeyError::InvalidBase64(format!(
            "decodes to {n} bytes, not 32"
        )));
    }
    out.copy_from_slice(&scratch[..KEY_LEN]);
    Ok(out)
}

fn encode(bytes: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(bytes)
}

/// An x25519 static private key. Zeroized on drop; `Debug` does not show it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// A fresh key from the OS CSPRNG, clamped as `wg genkey` prints it.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random::fill(&mut bytes[..])?;
        // Curve25519 clamping (RFC 7748 §5), as `wg genkey` applies before printing.
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Ok(Self::from_bytes(*bytes))
    }

    /// The key from its 32 raw bytes (clamping happens at use, as in `wg`).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// Parses `wg`'s format: exactly 44 base64 characters.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        Ok(Self::from_bytes(*decode(s)?))
    }

    /// `wg`'s format. The returned string holds the secret: do not log it.
    pub fn to_base64(&self) -> String {
        let bytes = Zeroizing::new(self.0.to_bytes());
        encode(&bytes)
    }

    /// From 64 hex digits (the UAPI's form).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Ok(Self::from_bytes(*decode_hex(s)?))
    }

    /// As 64 hex digits (the UAPI's form), erased when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        encode_hex(&Zeroizing::new(self.0.to_bytes()))
    }

    /// Whether all 32 bytes are zero (the UAPI's "no private key").
    pub fn is_zero(&self) -> bool {
        self.0.to_bytes().iter().all(|&b| b == 0)
    }

    /// The matching public key (`wg pubkey`).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The raw secret, for the handshake's Diffie-Hellman.
    pub(crate) fn secret(&self) -> &x25519_dalek::StaticSecret {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

/// An x25519 public key: a peer's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// The key from its 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses `wg`'s format: exactly 44 base64 characters.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        Ok(PublicKey(*decode(s)?))
    }

    /// `wg`'s format.
    pub fn to_base64(&self) -> String {
        encode(&self.0)
    }

    /// From 64 hex digits (the UAPI's form).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Ok(PublicKey(*decode_hex(s)?))
    }

    /// As 64 hex digits (the UAPI's form).
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0).to_string()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

/// A symmetric pre-shared key mixed into the handshake. Zeroized on drop;
/// `Debug` does not show it.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// A fresh key from the OS CSPRNG (`wg genpsk`).
    pub fn generate() -> Result<Self, RandomError> {
        let mut k = PresharedKey([0; KEY_LEN]);
        random::fill(&mut k.0)?;
        Ok(k)
    }

    /// The key from its 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PresharedKey(bytes)
    }

    /// Parses `wg`'s format: exactly 44 base64 characters.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        Ok(PresharedKey(*decode(s)?))
    }

    /// `wg`'s format. The returned string holds the secret: do not log it.
    pub fn to_base64(&self) -> String {
        encode(&self.0)
    }

    /// From 64 hex digits (the UAPI's form).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        Ok(PresharedKey(*decode_hex(s)?))
    }

    /// As 64 hex digits (the UAPI's form), erased when dropped.
    pub fn to_hex(&self) -> Zeroizing<String> {
        encode_hex(&self.0)
    }

    /// Whether all 32 bytes are zero (the UAPI's "no preshared key").
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// The raw key, for the handshake.
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_base64(s)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // RFC 7748 §6.1: Alice's private key and public key.
    const ALICE_PRIVATE_HEX: &str =
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC_HEX: &str =
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn public_key_matches_rfc7748_vector() {
        let sk = PrivateKey::from_bytes(hex32(ALICE_PRIVATE_HEX));
        assert_eq!(sk.public_key().as_bytes(), &hex32(ALICE_PUBLIC_HEX));
    }

    #[test]
    fn base64_round_trips_like_wg() {
        // A key pair printed by `wg genkey | tee /dev/stderr | wg pubkey`.
        let sk = PrivateKey::from_bytes(hex32(ALICE_PRIVATE_HEX));
        let text = sk.to_base64();
        assert_eq!(text, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=");
        assert_eq!(text.len(), KEY_BASE64_LEN);
        let back = PrivateKey::from_base64(&text).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        let pk = sk.public_key();
        assert_eq!(
            pk.to_base64(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
        assert_eq!(PublicKey::from_base64(&pk.to_base64()).unwrap(), pk);
        let psk = PresharedKey::from_bytes([7; 32]);
        assert_eq!(PresharedKey::from_base64(&psk.to_base64()).unwrap(), psk);
    }

    #[test]
    fn hex_is_the_uapi_form_of_every_key() {
        let sk = PrivateKey::from_bytes([0xab; 32]);
        assert_eq!(sk.to_hex().as_str(), "ab".repeat(32));
        assert_eq!(
            PrivateKey::from_hex(&"AB".repeat(32)).unwrap().public_key(),
            sk.public_key()
        );
        let pk = sk.public_key();
        assert_eq!(PublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
        let psk = PresharedKey::from_bytes([1; 32]);
        assert_eq!(PresharedKey::from_hex(&psk.to_hex()).unwrap(), psk);
        assert!(PresharedKey::from_bytes([0; 32]).is_zero());
        assert!(PrivateKey::from_bytes([0; 32]).is_zero());
        for bad in ["", "ab", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert_eq!(
                PublicKey::from_hex(bad),
                Err(KeyError::InvalidHex),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_strings_give_specific_errors() {
        assert_eq!(PublicKey::from_base64("abc"), Err(KeyError::WrongLength(3)));
        let long = "A".repeat(45);
        assert_eq!(
            PublicKey::from_base64(&long),
            Err(KeyError::WrongLength(45))
        );
        // 44 characters but not base64.
        let bad = format!("{}=", "!".repeat(43));
        assert!(matches!(
            PublicKey::from_base64(&bad),
            Err(KeyError::InvalidBase64(_))
        ));
        // 44 characters of valid base64 without padding: 33 bytes, not 32.
        let unpadded = "A".repeat(44);
        assert!(matches!(
            PublicKey::from_base64(&unpadded),
            Err(KeyError::InvalidBase64(_))
        ));
    }

    #[test]
    fn generated_keys_are_clamped_distinct_and_debug_hides_secrets() {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
        let raw = a.0.to_bytes();
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
        let dbg = format!("{a:?}");
        assert!(
            !dbg.contains(&a.to_base64()),
            "Debug leaked the secret: {dbg}"
        );
        let psk = PresharedKey::generate().unwrap();
        assert_eq!(format!("{psk:?}"), "PresharedKey(..)");
    }
}
