//! The Noise_IKpsk2 handshake as WireGuard builds it (whitepaper §5.4.2–5.4.5).
//!
//! Written directly over x25519-dalek, BLAKE2s and ChaCha20-Poly1305 rather
//! than through `snow`: WireGuard fixes one pattern and two messages, so the
//! whole construction is a page of code that mirrors the whitepaper line by
//! line; doing it by hand lets us precompute the static-static DH and the
//! initial hashes per peer (one X25519 fewer per handshake), keep every
//! intermediate in zeroized fixed-size arrays (no heap state per handshake),
//! decrypt the initiator's identity before choosing that peer's PSK without
//! a builder dance, and name each failure precisely. The in-memory interop
//! test against boringtun proves it byte for byte.

use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::crypto::{self, CONSTRUCTION, IDENTIFIER, LABEL_COOKIE, LABEL_MAC1, hash, kdf};
use super::error::HandshakeError;
use super::messages::{Initiation, Response};
use super::tai64n::Tai64N;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};

fn initial_chaining_key() -> [u8; 32] {
    hash(&[CONSTRUCTION])
}

/// HASH(HASH(Ci || IDENTIFIER) || responder's static public key).
fn initial_hash(responder: &PublicKey) -> [u8; 32] {
    hash(&[
        &hash(&[&initial_chaining_key(), IDENTIFIER]),
        responder.as_bytes(),
    ])
}

/// DH(secret, public), refusing a non-contributory (low-order point) result.
fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<[u8; 32], HandshakeError> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(HandshakeError::LowOrderPoint);
    }
    Ok(shared.to_bytes())
}

/// Our static identity and the keys derived from it.
#[derive(ZeroizeOnDrop)]
pub(crate) struct Identity {
    #[zeroize(skip)]
    pub(crate) private: PrivateKey,
    #[zeroize(skip)]
    pub(crate) public: PublicKey,
    /// HASH(LABEL_MAC1 || our public key): MAC1 of messages sent to us.
    pub(crate) mac1_key: [u8; 32],
    /// HASH(LABEL_COOKIE || our public key): seals the cookie replies we send.
    pub(crate) cookie_key: [u8; 32],
    responder_hash: [u8; 32],
}

impl Identity {
    pub(crate) fn new(private: PrivateKey) -> Identity {
        let public = private.public_key();
        Identity {
            mac1_key: hash(&[LABEL_MAC1, public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, public.as_bytes()]),
            responder_hash: initial_hash(&public),
            private,
            public,
        }
    }
}

/// One peer's keys, precomputed once from the configuration.
#[derive(ZeroizeOnDrop)]
pub(crate) struct PeerKeys {
    #[zeroize(skip)]
    pub(crate) public: PublicKey,
    psk: [u8; 32],
    static_static: [u8; 32],
    /// HASH(LABEL_MAC1 || peer's public key): MAC1 of messages we send it.
    pub(crate) mac1_key: [u8; 32],
    /// HASH(LABEL_COOKIE || peer's public key): opens its cookie replies.
    pub(crate) cookie_key: [u8; 32],
    initiator_hash: [u8; 32],
}

impl PeerKeys {
    /// Fails if the peer's key is a low-order point (the static-static DH is
    /// zero). Without an identity of our own (an interface not configured
    /// yet) the static-static secret stays zero until one is set; the key
    /// is still checked, with a throwaway scalar: a low-order point gives a
    /// zero result with every clamped scalar.
    pub(crate) fn new(
        id: Option<&Identity>,
        public: PublicKey,
        psk: Option<&PresharedKey>,
    ) -> Result<PeerKeys, HandshakeError> {
        let static_static = match id {
            Some(id) => dh(id.private.secret(), public.as_bytes())?,
            None => {
                let mut probe = dh(&StaticSecret::from([0x5a; 32]), public.as_bytes())?;
                probe.zeroize();
                [0; 32]
            }
        };
        Ok(PeerKeys {
            psk: psk.map(|k| *k.as_bytes()).unwrap_or([0; 32]),
            static_static,
            mac1_key: hash(&[LABEL_MAC1, public.as_bytes()]),
            cookie_key: hash(&[LABEL_COOKIE, public.as_bytes()]),
            initiator_hash: initial_hash(&public),
            public,
        })
    }
}

/// Transport keys derived at the end of a handshake.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct SessionKeys {
    pub(crate) send: [u8; 32],
    pub(crate) recv: [u8; 32],
}

/// The initiator's state between sending an initiation and its response.
#[derive(ZeroizeOnDrop)]
pub(crate) struct InitiatorHandshake {
    ck: [u8; 32],
    h: [u8; 32],
    ephemeral: StaticSecret,
}

/// Builds an initiation (MACs left zero for the caller) and the state to
/// finish the handshake with. `ephemeral` is the caller's random draw for
/// the ephemeral key; it is erased here.
pub(crate) fn initiate(
    id: &Identity,
    peer: &PeerKeys,
    sender_index: u32,
    timestamp: Tai64N,
    mut ephemeral: [u8; 32],
) -> Result<(Initiation, InitiatorHandshake), HandshakeError> {
    let secret = StaticSecret::from(ephemeral);
    ephemeral.zeroize();
    initiate_with(id, peer, sender_index, timestamp, secret)
}

fn initiate_with(
    id: &Identity,
    peer: &PeerKeys,
    sender_index: u32,
    timestamp: Tai64N,
    ephemeral: StaticSecret,
) -> Result<(Initiation, InitiatorHandshake), HandshakeError> {
    let e_pub = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let mut ck = initial_chaining_key();
    let mut h = peer.initiator_hash;
    [ck] = kdf(&ck, &e_pub);
    h = hash(&[&h, &e_pub]);
    let mut es = dh(&ephemeral, peer.public.as_bytes())?;
    let [ck2, mut k] = kdf(&ck, &es);
    es.zeroize();
    ck = ck2;
    let encrypted_static: [u8; 48] = crypto::seal(&k, id.public.as_bytes(), &h);
    h = hash(&[&h, &encrypted_static]);
    let [ck3, k2] = kdf(&ck, &peer.static_static);
    ck = ck3;
    k = k2;
    let encrypted_timestamp: [u8; 28] = crypto::seal(&k, &timestamp.to_bytes(), &h);
    h = hash(&[&h, &encrypted_timestamp]);
    k.zeroize();
    let msg = Initiation {
        sender_index,
        ephemeral: e_pub,
        encrypted_static,
        encrypted_timestamp,
        mac1: [0; 16],
        mac2: [0; 16],
    };
    Ok((msg, InitiatorHandshake { ck, h, ephemeral }))
}

/// A decrypted, authenticated initiation, before the responder decides to answer it.
#[derive(ZeroizeOnDrop)]
pub(crate) struct ConsumedInitiation {
    #[zeroize(skip)]
    pub(crate) initiator: PublicKey,
    #[zeroize(skip)]
    pub(crate) sender_index: u32,
    #[zeroize(skip)]
    pub(crate) timestamp: Tai64N,
    ck: [u8; 32],
    h: [u8; 32],
    remote_ephemeral: [u8; 32],
}

/// Opens an initiation addressed to `id`. `peer_keys` finds the keys of the
/// peer the decrypted static key names (None: not a configured peer).
pub(crate) fn consume_initiation<'p>(
    id: &Identity,
    msg: &Initiation,
    peer_keys: impl FnOnce(&PublicKey) -> Option<&'p PeerKeys>,
) -> Result<(ConsumedInitiation, &'p PeerKeys), HandshakeError> {
    let mut ck = initial_chaining_key();
    let mut h = id.responder_hash;
    [ck] = kdf(&ck, &msg.ephemeral);
    h = hash(&[&h, &msg.ephemeral]);
    let mut es = dh(id.private.secret(), &msg.ephemeral)?;
    let [ck2, mut k] = kdf(&ck, &es);
    es.zeroize();
    ck = ck2;
    let initiator: [u8; 32] = crypto::open(&k, &msg.encrypted_static, &h)
        .map_err(|_| HandshakeError::Decrypt("static key"))?;
    let initiator = PublicKey::from_bytes(initiator);
    h = hash(&[&h, &msg.encrypted_static]);
    let peer = peer_keys(&initiator).ok_or(HandshakeError::UnknownPeer(initiator))?;
    let [ck3, k2] = kdf(&ck, &peer.static_static);
    ck = ck3;
    k = k2;
    let timestamp: [u8; 12] = crypto::open(&k, &msg.encrypted_timestamp, &h)
        .map_err(|_| HandshakeError::Decrypt("timestamp"))?;
    h = hash(&[&h, &msg.encrypted_timestamp]);
    k.zeroize();
    let consumed = ConsumedInitiation {
        initiator,
        sender_index: msg.sender_index,
        timestamp: Tai64N::from_bytes(timestamp),
        ck,
        h,
        remote_ephemeral: msg.ephemeral,
    };
    Ok((consumed, peer))
}

/// Answers a consumed initiation: the response (MACs left zero) and the
/// responder's transport keys. `ephemeral` is the caller's random draw
/// for the ephemeral key; it is erased here.
pub(crate) fn respond(
    init: &ConsumedInitiation,
    peer: &PeerKeys,
    sender_index: u32,
    mut ephemeral: [u8; 32],
) -> Result<(Response, SessionKeys), HandshakeError> {
    let secret = StaticSecret::from(ephemeral);
    ephemeral.zeroize();
    respond_with(init, peer, sender_index, &secret)
}

fn respond_with(
    init: &ConsumedInitiation,
    peer: &PeerKeys,
    sender_index: u32,
    ephemeral: &StaticSecret,
) -> Result<(Response, SessionKeys), HandshakeError> {
    let e_pub = x25519_dalek::PublicKey::from(ephemeral).to_bytes();
    let mut ck = init.ck;
    let mut h = init.h;
    [ck] = kdf(&ck, &e_pub);
    h = hash(&[&h, &e_pub]);
    let mut ee = dh(ephemeral, &init.remote_ephemeral)?;
    [ck] = kdf(&ck, &ee);
    ee.zeroize();
    let mut se = dh(ephemeral, init.initiator.as_bytes())?;
    [ck] = kdf(&ck, &se);
    se.zeroize();
    let [ck2, tau, mut k] = kdf(&ck, &peer.psk);
    ck = ck2;
    h = hash(&[&h, &tau]);
    let encrypted_nothing: [u8; 16] = crypto::seal(&k, &[0u8; 0], &h);
    k.zeroize();
    // The initiator sends with the first key, the responder with the second.
    let [recv, send] = kdf(&ck, &[]);
    ck.zeroize();
    h.zeroize();
    let msg = Response {
        sender_index,
        receiver_index: init.sender_index,
        ephemeral: e_pub,
        encrypted_nothing,
        mac1: [0; 16],
        mac2: [0; 16],
    };
    Ok((msg, SessionKeys { send, recv }))
}

/// Finishes the initiator's side with the response: its transport keys.
pub(crate) fn consume_response(
    hs: &InitiatorHandshake,
    id: &Identity,
    peer: &PeerKeys,
    msg: &Response,
) -> Result<SessionKeys, HandshakeError> {
    let mut ck = hs.ck;
    let mut h = hs.h;
    [ck] = kdf(&ck, &msg.ephemeral);
    h = hash(&[&h, &msg.ephemeral]);
    let mut ee = dh(&hs.ephemeral, &msg.ephemeral)?;
    [ck] = kdf(&ck, &ee);
    ee.zeroize();
    let mut se = dh(id.private.secret(), &msg.ephemeral)?;
    [ck] = kdf(&ck, &se);
    se.zeroize();
    let [ck2, tau, mut k] = kdf(&ck, &peer.psk);
    ck = ck2;
    h = hash(&[&h, &tau]);
    let opened: Result<[u8; 0], _> = crypto::open(&k, &msg.encrypted_nothing, &h);
    k.zeroize();
    h.zeroize();
    opened.map_err(|_| HandshakeError::Decrypt("empty payload"))?;
    let [send, recv] = kdf(&ck, &[]);
    ck.zeroize();
    Ok(SessionKeys { send, recv })
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;

    pub(crate) fn pair() -> (Identity, Identity) {
        (
            Identity::new(PrivateKey::from_bytes([1; 32])),
            Identity::new(PrivateKey::from_bytes([2; 32])),
        )
    }

    #[test]
    fn both_sides_derive_matching_keys_with_and_without_psk() {
        let (i, r) = pair();
        for psk in [None, Some(PresharedKey::from_bytes([9; 32]))] {
            let i_peer = PeerKeys::new(Some(&i), r.public, psk.as_ref()).unwrap();
            let r_peer = PeerKeys::new(Some(&r), i.public, psk.as_ref()).unwrap();
            let ts = Tai64N::from_bytes([0x40, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
            let (init, hs) = initiate(&i, &i_peer, 77, ts, [0x11; 32]).unwrap();
            let (consumed, found) =
                consume_initiation(&r, &init, |k| (*k == i.public).then_some(&r_peer)).unwrap();
            assert_eq!(found.public, i.public);
            assert_eq!(consumed.timestamp, ts);
            assert_eq!(consumed.sender_index, 77);
            let (resp, r_keys) = respond(&consumed, &r_peer, 88, [0x22; 32]).unwrap();
            assert_eq!(resp.receiver_index, 77);
            let i_keys = consume_response(&hs, &i, &i_peer, &resp).unwrap();
            assert_eq!(i_keys.send, r_keys.recv);
            assert_eq!(i_keys.recv, r_keys.send);
            assert_ne!(i_keys.send, i_keys.recv);
        }
    }

    #[test]
    fn mismatched_psk_fails_the_response() {
        let (i, r) = pair();
        let i_peer =
            PeerKeys::new(Some(&i), r.public, Some(&PresharedKey::from_bytes([1; 32]))).unwrap();
        let r_peer = PeerKeys::new(Some(&r), i.public, None).unwrap();
        let (init, hs) = initiate(&i, &i_peer, 1, Tai64N::from_bytes([0; 12]), [0x33; 32]).unwrap();
        let (consumed, _) = consume_initiation(&r, &init, |_| Some(&r_peer)).unwrap();
        let (resp, _) = respond(&consumed, &r_peer, 2, [0x44; 32]).unwrap();
        assert_eq!(
            consume_response(&hs, &i, &i_peer, &resp).err(),
            Some(HandshakeError::Decrypt("empty payload"))
        );
    }

    #[test]
    fn unknown_initiator_and_tampering_are_refused() {
        let (i, r) = pair();
        let i_peer = PeerKeys::new(Some(&i), r.public, None).unwrap();
        let r_peer = PeerKeys::new(Some(&r), i.public, None).unwrap();
        let (init, _) = initiate(&i, &i_peer, 1, Tai64N::from_bytes([0; 12]), [0x33; 32]).unwrap();
        assert_eq!(
            consume_initiation(&r, &init, |_| None)
                .err()
                .map(|e| e.to_string()),
            Some(HandshakeError::UnknownPeer(i.public).to_string())
        );
        let mut bad = init.clone();
        bad.encrypted_timestamp[3] ^= 1;
        assert_eq!(
            consume_initiation(&r, &bad, |_| Some(&r_peer)).err(),
            Some(HandshakeError::Decrypt("timestamp"))
        );
        let mut bad = init;
        bad.encrypted_static[0] ^= 1;
        assert_eq!(
            consume_initiation(&r, &bad, |_| Some(&r_peer)).err(),
            Some(HandshakeError::Decrypt("static key"))
        );
    }

    #[test]
    fn low_order_keys_are_refused() {
        let (i, _) = pair();
        // The all-zero point has order 1: the shared secret would be zero.
        assert_eq!(
            PeerKeys::new(Some(&i), PublicKey::from_bytes([0; 32]), None).err(),
            Some(HandshakeError::LowOrderPoint)
        );
    }
}
