//! The inner IPv4/IPv6 header parser: no panic, lengths within the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::wg::{destination, inner_header};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = inner_header(data) {
        assert!(h.total_len <= data.len());
        assert_eq!(destination(data), Some(h.dst));
    }
});
