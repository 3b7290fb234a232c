//! MAC1, MAC2 and cookie replies (whitepaper §5.3, §5.4.4, §5.4.7): the
//! handshake's cheap checks and its defence against floods.
//!
//! MAC1 (keyed by the receiver's public key) proves the sender knows whom it
//! talks to; it is checked before any Diffie-Hellman. Under load a responder
//! also wants MAC2, keyed by a cookie that binds the sender's address to a
//! secret rotated every two minutes; without it the responder answers with a
//! cookie reply, which costs it no DH and no state.

use std::net::SocketAddr;
use std::time::Instant;

use subtle::ConstantTimeEq;

use super::crypto::{self, Unauthentic, mac};
use super::messages::CookieReply;
use super::timers::{COOKIE_SECRET_LATENCY, COOKIE_SECRET_MAX_AGE};
use crate::random::{RandomError, Rng};

/// Writes MAC1 and MAC2 into a message whose MAC1 starts at `mac1_at`
/// (MAC2 follows it). MAC2 stays zero without a cookie. Returns MAC1, which
/// a cookie reply to this message will use as associated data.
pub(crate) fn write_macs(
    msg: &mut [u8],
    mac1_at: usize,
    mac1_key: &[u8; 32],
    cookie: Option<&[u8; 16]>,
) -> [u8; 16] {
    let mac2_at = mac1_at + 16;
    let mac1 = mac(mac1_key, &[&msg[..mac1_at]]);
    msg[mac1_at..mac2_at].copy_from_slice(&mac1);
    let mac2 = cookie
        .map(|c| mac(c, &[&msg[..mac2_at]]))
        .unwrap_or([0; 16]);
    msg[mac2_at..mac2_at + 16].copy_from_slice(&mac2);
    mac1
}

/// Whether MAC1 of a message addressed to the owner of `mac1_key` is right.
pub(crate) fn mac1_ok(msg: &[u8], mac1_at: usize, mac1_key: &[u8; 32]) -> bool {
    let expected = mac(mac1_key, &[&msg[..mac1_at]]);
    expected.ct_eq(&msg[mac1_at..mac1_at + 16]).into()
}

/// The sender's address as the cookie binds it: IP bytes, then port (big-endian).
fn address_bytes(src: SocketAddr) -> ([u8; 18], usize) {
    let mut b = [0u8; 18];
    let n = match src.ip() {
        std::net::IpAddr::V4(a) => {
            b[..4].copy_from_slice(&a.octets());
            4
        }
        std::net::IpAddr::V6(a) => {
            b[..16].copy_from_slice(&a.octets());
            16
        }
    };
    b[n..n + 2].copy_from_slice(&src.port().to_be_bytes());
    (b, n + 2)
}

/// The responder's side: the rotating secret, MAC2 checks, cookie replies.
pub(crate) struct CookieChecker {
    secret: [u8; 32],
    born: Option<Instant>,
}

impl Drop for CookieChecker {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl CookieChecker {
    pub(crate) fn new() -> CookieChecker {
        CookieChecker {
            secret: [0; 32],
            born: None,
        }
    }

    /// The current secret, made on first use and replaced every
    /// COOKIE_SECRET_MAX_AGE: lazily, so an idle tunnel has no timer for it.
    fn secret(&mut self, now: Instant, rng: &mut Rng) -> Result<&[u8; 32], RandomError> {
        let fresh = self
            .born
            .is_some_and(|b| now.saturating_duration_since(b) < COOKIE_SECRET_MAX_AGE);
        if !fresh {
            rng.fill(&mut self.secret)?;
            self.born = Some(now);
        }
        Ok(&self.secret)
    }

    /// The cookie for `src`: MAC(secret, address).
    fn cookie(
        &mut self,
        now: Instant,
        src: SocketAddr,
        rng: &mut Rng,
    ) -> Result<[u8; 16], RandomError> {
        let (a, n) = address_bytes(src);
        Ok(mac(self.secret(now, rng)?, &[&a[..n]]))
    }

    /// Whether the message carries a MAC2 made with the current cookie for `src`.
    pub(crate) fn mac2_ok(
        &mut self,
        msg: &[u8],
        mac2_at: usize,
        src: SocketAddr,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<bool, RandomError> {
        if self
            .born
            .is_none_or(|b| now.saturating_duration_since(b) >= COOKIE_SECRET_MAX_AGE)
        {
            // No secret, or an expired one: no cookie we issued is still valid.
            return Ok(false);
        }
        let cookie = self.cookie(now, src, rng)?;
        let expected = mac(&cookie, &[&msg[..mac2_at]]);
        Ok(expected.ct_eq(&msg[mac2_at..mac2_at + 16]).into())
    }

    /// A cookie reply to the message with `sender_index` and `mac1` from `src`,
    /// sealed with our cookie key (HASH(LABEL_COOKIE || our public key)).
    pub(crate) fn reply(
        &mut self,
        our_cookie_key: &[u8; 32],
        sender_index: u32,
        mac1: &[u8; 16],
        src: SocketAddr,
        now: Instant,
        rng: &mut Rng,
    ) -> Result<CookieReply, RandomError> {
        let cookie = self.cookie(now, src, rng)?;
        let mut nonce = [0u8; 24];
        rng.fill(&mut nonce)?;
        Ok(CookieReply {
            receiver_index: sender_index,
            nonce,
            encrypted_cookie: crypto::xseal(our_cookie_key, &nonce, &cookie, mac1),
        })
    }
}

/// A cookie received from a peer, for the MAC2 of what we send it next.
#[derive(Clone, Copy)]
pub(crate) struct ReceivedCookie {
    cookie: [u8; 16],
    at: Instant,
}

impl ReceivedCookie {
    /// Opens a cookie reply from the peer whose cookie key is `peer_cookie_key`,
    /// answering the message whose MAC1 was `last_mac1`.
    pub(crate) fn open(
        peer_cookie_key: &[u8; 32],
        reply: &CookieReply,
        last_mac1: &[u8; 16],
        now: Instant,
    ) -> Result<ReceivedCookie, Unauthentic> {
        let cookie = crypto::xopen(
            peer_cookie_key,
            &reply.nonce,
            &reply.encrypted_cookie,
            last_mac1,
        )?;
        Ok(ReceivedCookie { cookie, at: now })
    }

    /// The cookie while the peer's secret can still be the one that made it.
    pub(crate) fn fresh(&self, now: Instant) -> Option<&[u8; 16]> {
        (now.saturating_duration_since(self.at) < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY)
            .then_some(&self.cookie)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wg::messages::{INITIATION_LEN, INITIATION_MAC1_OFFSET, INITIATION_MAC2_OFFSET};
    use std::time::Duration;

    const SRC: &str = "192.0.2.7:51820";

    #[test]
    fn mac1_detects_any_change() {
        let key = [5u8; 32];
        let mut msg = [9u8; INITIATION_LEN];
        write_macs(&mut msg, INITIATION_MAC1_OFFSET, &key, None);
        assert!(mac1_ok(&msg, INITIATION_MAC1_OFFSET, &key));
        assert_eq!(
            &msg[INITIATION_MAC2_OFFSET..],
            &[0; 16],
            "no cookie: MAC2 is zero"
        );
        assert!(!mac1_ok(&msg, INITIATION_MAC1_OFFSET, &[6u8; 32]));
        msg[3] ^= 1;
        assert!(!mac1_ok(&msg, INITIATION_MAC1_OFFSET, &key));
    }

    #[test]
    fn cookie_round_trip_makes_mac2_valid_for_that_address_only() {
        let t0 = Instant::now();
        let responder_cookie_key = [1u8; 32];
        let mac1_key = [2u8; 32];
        let src: SocketAddr = SRC.parse().unwrap();
        let mut checker = CookieChecker::new();
        let mut rng = Rng::from_seed(crate::RngSeed([9; 32]));
        let mut msg = [7u8; INITIATION_LEN];
        let mac1 = write_macs(&mut msg, INITIATION_MAC1_OFFSET, &mac1_key, None);
        assert!(
            !checker
                .mac2_ok(&msg, INITIATION_MAC2_OFFSET, src, t0, &mut rng)
                .unwrap()
        );

        let reply = checker
            .reply(&responder_cookie_key, 42, &mac1, src, t0, &mut rng)
            .unwrap();
        assert_eq!(reply.receiver_index, 42);
        // The initiator opens it with the responder's cookie key and its own MAC1.
        assert!(ReceivedCookie::open(&responder_cookie_key, &reply, &[0; 16], t0).is_err());
        let got = ReceivedCookie::open(&responder_cookie_key, &reply, &mac1, t0).unwrap();
        let cookie = *got.fresh(t0).unwrap();
        write_macs(&mut msg, INITIATION_MAC1_OFFSET, &mac1_key, Some(&cookie));
        assert!(
            checker
                .mac2_ok(
                    &msg,
                    INITIATION_MAC2_OFFSET,
                    src,
                    t0 + Duration::from_secs(1),
                    &mut rng
                )
                .unwrap()
        );
        let other: SocketAddr = "192.0.2.7:51821".parse().unwrap();
        assert!(
            !checker
                .mac2_ok(&msg, INITIATION_MAC2_OFFSET, other, t0, &mut rng)
                .unwrap()
        );

        // After the secret rotates the old cookie is worthless, and the
        // initiator has stopped using it a little earlier.
        assert!(got.fresh(t0 + Duration::from_secs(116)).is_none());
        assert!(
            !checker
                .mac2_ok(
                    &msg,
                    INITIATION_MAC2_OFFSET,
                    src,
                    t0 + Duration::from_secs(121),
                    &mut rng
                )
                .unwrap()
        );
    }
}
