//! The `/metrics` request reader on arbitrary bytes: finding the end of the
//! head and parsing the request line never panic; a head that ends is
//! within the bytes, and a scrape is only ever a GET or HEAD of /metrics
//! over HTTP/1.x.
#![no_main]

use dataplane::metrics::{head_end, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(end) = head_end(data) {
        assert!(end <= data.len());
        assert!(data[..end].ends_with(b"\n\n") || data[..end].ends_with(b"\r\n\r\n"));
    }
    if let Ok(scrape) = parse_request(data) {
        let want: &[u8] = if scrape.head_only { b"HEAD /metrics" } else { b"GET /metrics" };
        assert!(data.starts_with(want));
    }
});
