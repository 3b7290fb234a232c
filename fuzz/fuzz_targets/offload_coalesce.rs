//! Fuzz the wire-to-device offload path: a batch of arbitrary packets through
//! `Coalescer::coalesce`. Nothing may panic; every packet is written exactly
//! once; every super-packet carries a virtio-net header the splitter (like
//! the kernel) accepts, with as many segments as went into it.
#![no_main]

use dataplane::offload::{
    CoalesceConfig, Coalescer, Framing, GsoSplit, MAX_BATCH, VNET_HDR_LEN, VnetHeader, Write,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let framing = if mode & 1 == 0 {
        Framing::Ip
    } else {
        Framing::Ethernet
    };
    let config = CoalesceConfig {
        framing,
        tcp: mode & 2 == 0,
        udp: mode & 4 != 0,
        verify_checksums: mode & 8 == 0,
    };
    // Packets as [len_hi, len_lo, bytes..], up to MAX_BATCH of them.
    let mut packets: Vec<&[u8]> = Vec::new();
    while packets.len() < MAX_BATCH && rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        packets.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let mut buffers = vec![vec![0u8; VNET_HDR_LEN + 65535 + 18]; usize::from(mode >> 4) % 4];
    let mut coalescer = Coalescer::new(config);
    let writes = coalescer
        .coalesce(&packets, &mut buffers)
        .expect("batch within MAX_BATCH")
        .to_vec();

    let mut written = vec![false; packets.len()];
    let mut total = 0;
    for w in writes {
        match w {
            Write::Alone { packet } => {
                assert!(!written[packet], "packet {packet} written twice");
                written[packet] = true;
                total += 1;
            }
            Write::Super {
                buffer,
                len,
                segments,
            } => {
                for (k, range) in coalescer.payloads(buffer) {
                    assert!(!written[k], "packet {k} written twice");
                    assert!(range.end <= packets[k].len(), "payload past packet {k}");
                    written[k] = true;
                }
                let mut whole = Vec::new();
                coalescer.assemble(buffer, &buffers[buffer], &packets, &mut whole);
                assert_eq!(whole.len(), len);
                let b = &whole[..];
                let hdr = VnetHeader::parse(b).expect("super-packet has a valid virtio-net header");
                let split = GsoSplit::new(&hdr, &b[VNET_HDR_LEN..], framing)
                    .unwrap_or_else(|e| panic!("super-packet rejected by the splitter: {e}"));
                assert_eq!(split.segment_count(), segments);
                total += segments;
            }
        }
    }
    assert_eq!(total, packets.len(), "every packet written exactly once");
});
