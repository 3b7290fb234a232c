//! The UAPI (configuration protocol) on arbitrary bytes: the framer never
//! panics and gives the same requests however the bytes are chunked; a set
//! that parses writes back to bytes that parse the same; a `get` answer that
//! parses writes back to the same device; the other answer parsers never
//! panic.
#![no_main]

use dataplane::uapi::protocol::{
    Framer, MAX_LINE, MAX_REQUEST, ProtoError, Request, parse_errno_answer, parse_get_answer,
    parse_show_answer, write_get, write_request,
};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

/// Every request in `bytes`, pushed `chunk` bytes at a time, then the end of input.
fn frame(
    bytes: &[u8],
    chunk: usize,
    max_line: usize,
    max_request: usize,
) -> Vec<Result<Request, ProtoError>> {
    let mut framer = Framer::new(max_line, max_request);
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        framer.push(piece);
        out.extend(std::iter::from_fn(|| framer.next_request()));
    }
    framer.end_of_input();
    out.extend(std::iter::from_fn(|| framer.next_request()));
    out
}

/// Peer line numbers depend on the lines around them, not on what they mean.
fn without_lines(request: &Request) -> Request {
    let mut request = request.clone();
    if let Request::Set(set) = &mut request {
        for peer in &mut set.peers {
            peer.line = 0;
        }
    }
    request
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, bytes)) = data.split_first() else {
        return;
    };
    // The first byte picks the chunk size and whether the limits are tiny.
    let chunk = usize::from(shape & 0x1f) + 1;
    let (max_line, max_request) = if shape & 0x80 != 0 {
        (usize::from(shape & 0x3f) + 8, usize::from(shape) * 2)
    } else {
        (MAX_LINE, MAX_REQUEST)
    };

    let whole = frame(bytes, usize::MAX, max_line, max_request);
    let chunked = frame(bytes, chunk, max_line, max_request);
    assert_eq!(chunked, whole, "chunking changed what the framer gave");

    for request in whole.iter().flatten() {
        let mut written = Zeroizing::new(Vec::new());
        write_request(request, &mut written);
        let again = frame(&written, usize::MAX, MAX_LINE, MAX_REQUEST);
        match again.as_slice() {
            [Ok(back)] => assert_eq!(without_lines(back), without_lines(request)),
            other => panic!("{request:?} wrote bytes that frame as {other:?}"),
        }
    }

    if let Ok(dump) = parse_get_answer(bytes) {
        let mut written = Zeroizing::new(Vec::new());
        write_get(&dump, &mut written);
        assert_eq!(parse_get_answer(&written), Ok(dump));
    }
    let _ = parse_show_answer(bytes);
    let _ = parse_errno_answer(bytes);
});
