//! The VXLAN header parser: no panic; a frame that parses re-emits to the
//! same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::vxlan::{HEADER_LEN, Packet, Repr, Vni, parse_frame};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let vni = Vni::new(u32::from(sel)).unwrap();
    if let Ok(range) = parse_frame(rest, vni) {
        assert_eq!(range.start, HEADER_LEN);
        let mut hdr = [0u8; HEADER_LEN];
        Repr { vni }.emit(&mut Packet::new_checked(&mut hdr[..]).unwrap());
        assert_eq!(&hdr[..], &rest[..HEADER_LEN]);
    }
});
