//! Ethernet (MAC) addresses: parsed from and printed as `aa:bb:cc:dd:ee:ff`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A 48-bit Ethernet address; a string in files (`mac = "fe:54:00:00:00:01"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether the group bit is set (multicast or broadcast): such an
    /// address cannot be a link's own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the locally-administered bit is set.
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl TryFrom<String> for MacAddr {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    /// Six two-digit hexadecimal octets separated by `:`, as `ip` prints them.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Invalid(format!("{s:?} is not a MAC address: {why}"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for (i, byte) in out.iter_mut().enumerate() {
            let part = parts
                .next()
                .ok_or_else(|| bad(&format!("{i} octets, 6 expected")))?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!(
                    "octet {} is {part:?}, two hex digits expected",
                    i + 1
                )));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad("not hexadecimal"))?;
        }
        if parts.next().is_some() {
            return Err(bad("more than 6 octets"));
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let m: MacAddr = "fe:0A:b1:00:ff:09".parse().unwrap();
        assert_eq!(m.0, [0xfe, 0x0a, 0xb1, 0x00, 0xff, 0x09]);
        assert_eq!(m.to_string(), "fe:0a:b1:00:ff:09");
        assert!(m.is_local() && !m.is_multicast());
        assert!(
            "01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .unwrap()
                .is_multicast()
        );
    }

    #[test]
    fn refuses_malformed_with_the_reason() {
        for (text, why) in [
            ("", "octet 1"),
            ("fe:00:00:00:00", "5 octets"),
            ("fe:00:00:00:00:00:00", "more than 6"),
            ("fe:0:00:00:00:00", "octet 2 is \"0\""),
            ("fe:00:00:00:00:zz", "octet 6"),
            ("fe-00-00-00-00-00", "octet 1"),
        ] {
            let e = text.parse::<MacAddr>().unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
