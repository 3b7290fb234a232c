//! The parsers of user text: keys in base64 and AllowedIPs prefixes. No
//! panic; whatever parses prints back to something that parses the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::wg::IpPrefix;
use tunnel_proto::{PresharedKey, PrivateKey, PublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = PublicKey::from_base64(s) {
        assert_eq!(PublicKey::from_base64(&k.to_base64()), Ok(k));
    }
    if let Ok(k) = PrivateKey::from_base64(s) {
        assert_eq!(
            PrivateKey::from_base64(&k.to_base64()).map(|k| k.public_key()),
            Ok(k.public_key())
        );
    }
    let _ = PresharedKey::from_base64(s);
    if let Ok(p) = s.parse::<IpPrefix>() {
        assert_eq!(p.to_string().parse::<IpPrefix>(), Ok(p));
    }
});
