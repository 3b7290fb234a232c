//! WireGuard's primitives (whitepaper §5.4): HASH, MAC, HMAC, KDF₁₋₃ over
//! BLAKE2s, the handshake's ChaCha20-Poly1305, and the cookie's
//! XChaCha20-Poly1305.

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

use super::messages::TAG_LEN;

/// Noise protocol name, hashed into the initial chaining key.
pub(crate) const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// WireGuard's identifier, mixed into the initial hash (the Noise prologue).
pub(crate) const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// Label of the MAC1 key.
pub(crate) const LABEL_MAC1: &[u8] = b"mac1----";
/// Label of the cookie-reply key.
pub(crate) const LABEL_COOKIE: &[u8] = b"cookie--";

/// The AEAD failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unauthentic;

/// HASH(parts...) = BLAKE2s-256.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// MAC(key, parts...) = keyed BLAKE2s with a 16-byte output configured up
/// front (truncating a 32-byte MAC would give different bytes).
pub(crate) fn mac<const K: usize>(key: &[u8; K], parts: &[&[u8]]) -> [u8; 16] {
    const { assert!(K <= 32, "BLAKE2s keys are at most 32 bytes") };
    let Ok(mut m) = <Blake2sMac<U16> as KeyInit>::new_from_slice(key) else {
        unreachable!("a key of at most 32 bytes is a valid BLAKE2s key")
    };
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// HMAC(key, parts...) with BLAKE2s-256 (RFC 2104, 64-byte block).
pub(crate) fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let mut inner = Blake2s256::new();
    Update::update(&mut inner, &ipad);
    for p in parts {
        Update::update(&mut inner, p);
    }
    let mut inner_out: [u8; 32] = inner.finalize_fixed().into();
    let mut outer = Blake2s256::new();
    Update::update(&mut outer, &opad);
    Update::update(&mut outer, &inner_out);
    let out = outer.finalize_fixed().into();
    ipad.zeroize();
    opad.zeroize();
    inner_out.zeroize();
    out
}

/// KDFₙ(key, input): HKDF with HMAC-BLAKE2s, returning N 32-byte outputs.
pub(crate) fn kdf<const N: usize>(key: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    let mut prk = hmac(key, &[input]);
    let mut out = [[0u8; 32]; N];
    for i in 0..N {
        let counter = [i as u8 + 1];
        out[i] = if i == 0 {
            hmac(&prk, &[&counter])
        } else {
            hmac(&prk, &[&out[i - 1], &counter])
        };
    }
    prk.zeroize();
    out
}

/// ChaCha20-Poly1305 keyed for one use (handshake) or a session (data).
pub(crate) fn chacha_key(key: &[u8; 32]) -> LessSafeKey {
    let Ok(k) = UnboundKey::new(&CHACHA20_POLY1305, key) else {
        unreachable!("a 32-byte key is a valid ChaCha20-Poly1305 key")
    };
    LessSafeKey::new(k)
}

/// WireGuard's nonce: 4 zero bytes then the 64-bit counter, little-endian.
#[inline]
pub(crate) fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

/// AEAD(key, 0, plaintext, aad) for the handshake: seals `N` bytes into `N + 16`.
pub(crate) fn seal<const N: usize, const M: usize>(
    key: &[u8; 32],
    plaintext: &[u8; N],
    aad: &[u8],
) -> [u8; M] {
    const { assert!(M == N + TAG_LEN) };
    let mut out = [0u8; M];
    out[..N].copy_from_slice(plaintext);
    let Ok(tag) =
        chacha_key(key).seal_in_place_separate_tag(nonce(0), Aad::from(aad), &mut out[..N])
    else {
        unreachable!("aws-lc only refuses to seal more than 256 GiB")
    };
    out[N..].copy_from_slice(tag.as_ref());
    out
}

/// The inverse of [`seal`]: `M` sealed bytes to `N` plaintext bytes.
pub(crate) fn open<const N: usize, const M: usize>(
    key: &[u8; 32],
    sealed: &[u8; M],
    aad: &[u8],
) -> Result<[u8; N], Unauthentic> {
    const { assert!(M == N + TAG_LEN) };
    let mut buf = *sealed;
    let res = chacha_key(key)
        .open_in_place(nonce(0), Aad::from(aad), &mut buf)
        .map(|p| {
            let mut out = [0u8; N];
            out.copy_from_slice(&p[..N]);
            out
        });
    buf.zeroize();
    res.map_err(|_| Unauthentic)
}

/// XAEAD(key, nonce, cookie, aad) for the cookie reply.
pub(crate) fn xseal(key: &[u8; 32], nonce: &[u8; 24], cookie: &[u8; 16], aad: &[u8]) -> [u8; 32] {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(cookie);
    let Ok(tag) = cipher.encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut out[..16])
    else {
        unreachable!("XChaCha20-Poly1305 only refuses oversized messages")
    };
    out[16..].copy_from_slice(&tag);
    out
}

/// The inverse of [`xseal`].
pub(crate) fn xopen(
    key: &[u8; 32],
    nonce: &[u8; 24],
    sealed: &[u8; 32],
    aad: &[u8],
) -> Result<[u8; 16], Unauthentic> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut out = [0u8; 16];
    out.copy_from_slice(&sealed[..16]);
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            &mut out,
            sealed[16..].into(),
        )
        .map_err(|_| Unauthentic)?;
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hash_is_blake2s_256() {
        // RFC 7693 Appendix B: BLAKE2s-256("abc").
        assert_eq!(
            hash(&[b"a", b"bc"]).to_vec(),
            hex("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
        );
    }

    #[test]
    fn initial_chaining_key_and_hash_match_wireguard() {
        // The constants every WireGuard implementation precomputes
        // (wireguard-go noise-protocol.go InitialChainKey / InitialHash).
        let ck = hash(&[CONSTRUCTION]);
        assert_eq!(
            ck.to_vec(),
            hex("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
        );
        let h = hash(&[&ck, IDENTIFIER]);
        assert_eq!(
            h.to_vec(),
            hex("2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3")
        );
    }

    #[test]
    fn hmac_matches_the_generic_construction() {
        // HMAC with a 32-byte key equals H(k^opad || H(k^ipad || m)) computed by hand.
        let key = [0x0bu8; 32];
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for i in 0..32 {
            ipad[i] ^= key[i];
            opad[i] ^= key[i];
        }
        let inner = hash(&[&ipad, b"Hi There"]);
        let expected = hash(&[&opad, &inner]);
        assert_eq!(hmac(&key, &[b"Hi ", b"There"]), expected);
    }

    #[test]
    fn kdf_outputs_chain() {
        let key = [1u8; 32];
        let [a, b, c] = kdf::<3>(&key, b"input");
        let prk = hmac(&key, &[b"input"]);
        assert_eq!(a, hmac(&prk, &[&[1]]));
        assert_eq!(b, hmac(&prk, &[&a, &[2]]));
        assert_eq!(c, hmac(&prk, &[&b, &[3]]));
        assert_eq!(kdf::<1>(&key, b"input")[0], a);
    }

    #[test]
    fn mac_is_16_byte_keyed_blake2s_not_truncated() {
        let key = [7u8; 32];
        let m = mac(&key, &[b"message"]);
        let long = {
            let mut m = <blake2::Blake2sMac256 as KeyInit>::new_from_slice(&key).unwrap();
            Mac::update(&mut m, b"message");
            m.finalize_fixed()
        };
        assert_ne!(
            &m[..],
            &long[..16],
            "MAC must be configured for 16 bytes, not truncated"
        );
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = [3u8; 32];
        let sealed: [u8; 28] = seal(&key, &[9u8; 12], b"aad");
        assert_eq!(open::<12, 28>(&key, &sealed, b"aad"), Ok([9u8; 12]));
        assert_eq!(open::<12, 28>(&key, &sealed, b"other"), Err(Unauthentic));
        let mut bad = sealed;
        bad[0] ^= 1;
        assert_eq!(open::<12, 28>(&key, &bad, b"aad"), Err(Unauthentic));
        let x = xseal(&key, &[4; 24], &[5; 16], b"m1");
        assert_eq!(xopen(&key, &[4; 24], &x, b"m1"), Ok([5; 16]));
        assert_eq!(xopen(&key, &[4; 24], &x, b"m2"), Err(Unauthentic));
    }
}
