//! Fuzz the device-to-wire offload path: any virtio-net header and packet
//! bytes through `VnetHeader::parse`, `finish_checksum` and `GsoSplit`.
//! Nothing may panic, and an accepted split must keep its own promises:
//! every segment writes, lengths agree, all but the last have one size.
#![no_main]

use dataplane::offload::{
    Framing, GsoSplit, MAX_SEGMENTS, VNET_HDR_LEN, VnetHeader, finish_checksum,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framing = if mode & 1 == 0 {
        Framing::Ip
    } else {
        Framing::Ethernet
    };
    let Ok(hdr) = VnetHeader::parse(rest) else {
        return;
    };
    let pkt = &rest[VNET_HDR_LEN..];

    let mut in_place = pkt.to_vec();
    let _ = finish_checksum(&hdr, &mut in_place);

    let Ok(split) = GsoSplit::new(&hdr, pkt, framing) else {
        return;
    };
    let count = split.segment_count();
    assert!((1..=MAX_SEGMENTS).contains(&count), "segment count {count}");
    let mut out = vec![0u8; split.segment_size()];
    let mut total = 0;
    for i in 0..count {
        let n = split
            .write_segment(i, &mut out)
            .unwrap_or_else(|e| panic!("segment {i}: {e}"));
        assert_eq!(Some(n), split.segment_len(i));
        if i + 1 < count {
            assert_eq!(
                n,
                split.segment_size(),
                "segment {i} is not the common size"
            );
        }
        total += n;
    }
    assert_eq!(total, split.total_len());
    assert!(split.write_segment(count, &mut out).is_err());
    assert_eq!(split.segment_len(count), None);
});
