//! Every WireGuard message parser on arbitrary bytes: no panic, and whatever
//! parses emits back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::wg::message_type;
use tunnel_proto::wg::messages::{CookieReply, DataHeader, Initiation, Response};

fuzz_target!(|data: &[u8]| {
    let kind = message_type(data);
    if let Ok(m) = Initiation::parse(data) {
        assert_eq!(&m.emit()[..], data);
    }
    if let Ok(m) = Response::parse(data) {
        assert_eq!(&m.emit()[..], data);
    }
    if let Ok(m) = CookieReply::parse(data) {
        assert_eq!(&m.emit()[..], data);
    }
    if let Ok(m) = DataHeader::parse(data) {
        assert_eq!(&m.emit()[..], &data[..16]);
    }
    let _ = kind;
});
