//! A socket receive: one multishot completion fills a provided buffer with
//! the sender's address, control messages (the local address it arrived
//! on, the GRO segment size, the socket's overflow count) and a payload of
//! one or, with `UDP_GRO`, many datagrams of one size. Each datagram is
//! opened in place; what is to be delivered is listed for the device
//! writes, handshake messages are copied to the control thread.

use std::ops::Range;
use std::time::Instant;

use tunnel_proto::{DropReason, Path};

use crate::cmsg::{self, RawAddr};
use crate::counters::WorkerCounters;
use crate::handoff::ControlLink;
use crate::mode::{Inbound, Mode};

/// Most datagrams one GRO receive can carry.
pub const MAX_GRO_SEGMENTS: usize = 64;

/// What the header of one receive said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Who sent it, and the local address it came to.
    pub from: Path,
    /// The datagrams, within the buffer.
    pub payload: Range<usize>,
    /// The size of each datagram (the last may be shorter).
    pub stride: usize,
    /// The socket's running count of datagrams it dropped for lack of room.
    pub rxq_dropped: Option<u32>,
}

/// Parses a provided buffer a multishot `RecvMsg` filled, whose request
/// header was `msg` (only its name and control lengths count).
pub fn parse(buf: &[u8], msg: &libc::msghdr) -> Result<Received, DropReason> {
    let out = io_uring::types::RecvMsgOut::parse(buf, msg).map_err(|()| DropReason::Malformed)?;
    let info = cmsg::parse_recv(out.control_data());
    let remote = RawAddr::parse(out.name_data())
        .map(cmsg::canonical)
        .ok_or(DropReason::Malformed)?;
    let payload = out.payload_data();
    if out.is_payload_truncated() || payload.is_empty() {
        return Err(DropReason::Malformed);
    }
    let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
    Ok(Received {
        from: Path {
            remote,
            local: info.local,
        },
        payload: start..start + payload.len(),
        stride: info
            .gro_segment
            .map(usize::from)
            .unwrap_or(payload.len())
            .max(1),
        rxq_dropped: info.rxq_dropped,
    })
}

/// The packets of one receive to write to the device: (start, length)
/// within the receive's buffer.
#[derive(Debug)]
pub struct Deliveries {
    list: [(u32, u32); MAX_GRO_SEGMENTS],
    len: usize,
}

impl Default for Deliveries {
    fn default() -> Self {
        Deliveries {
            list: [(0, 0); MAX_GRO_SEGMENTS],
            len: 0,
        }
    }
}

impl Deliveries {
    /// The packets listed so far.
    pub fn as_slice(&self) -> &[(u32, u32)] {
        &self.list[..self.len]
    }

    /// Forgets them (the next receive).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    fn push(&mut self, start: usize, len: usize) -> bool {
        let Some(slot) = self.list.get_mut(self.len) else {
            return false;
        };
        *slot = (start as u32, len as u32);
        self.len += 1;
        true
    }
}

/// Opens every datagram of a receive (`buf` is the whole provided buffer,
/// `rx` what [`parse`] made of it) in place, for `mode`; lists what to
/// deliver in `out`, sends session events and handshake messages to the
/// control thread, counts the rest.
#[allow(clippy::too_many_arguments)]
pub fn open_all<M: Mode>(
    mode: &M,
    view: &M::Batch<'_>,
    lane: usize,
    now: Instant,
    buf: &mut [u8],
    rx: &Received,
    out: &mut Deliveries,
    link: &ControlLink<M::Event, M::Peer>,
    counters: &WorkerCounters,
) {
    out.clear();
    let payload = rx.payload.clone();
    let count = (payload.len()).div_ceil(rx.stride);
    counters.udp_rx_receives.inc();
    if count > 1 {
        counters.udp_rx_gro_receives.inc();
        counters.udp_rx_gro_datagrams.add(count as u64);
    }
    let mut at = payload.start;
    while at < payload.end {
        let dlen = rx.stride.min(payload.end - at);
        counters.udp_rx_datagrams.inc();
        counters.udp_rx_bytes.add(dlen as u64);
        let dgram = &mut buf[at..at + dlen];
        match mode.open(view, lane, now, rx.from, dgram) {
            Inbound::Deliver { start, end, event } => {
                if let Some(ev) = event {
                    link.event(ev, counters);
                }
                if !out.push(at + start, end - start) {
                    counters.drop_packet(DropReason::QueueFull);
                }
            }
            Inbound::Keepalive { event } => {
                if let Some(ev) = event {
                    link.event(ev, counters);
                }
            }
            Inbound::Control => link.handshake(rx.from, dgram, counters),
            Inbound::Drop(r) => counters.drop_packet(r),
        }
        at += dlen;
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::cmsg::RECV_CONTROL_LEN;
    use crate::vxlan_mode::VxlanMode;
    use std::net::SocketAddr;
    use tunnel_proto::vxlan::Vni;

    /// The request header a worker arms its receives with.
    fn request() -> libc::msghdr {
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_namelen = std::mem::size_of::<RawAddr>() as libc::socklen_t;
        m.msg_controllen = RECV_CONTROL_LEN;
        m
    }

    /// A control message as the kernel writes it.
    fn cmsg(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut v = vec![0u8; (hdr + data.len()).div_ceil(8) * 8];
        v[..8].copy_from_slice(&(hdr + data.len()).to_ne_bytes());
        v[8..12].copy_from_slice(&level.to_ne_bytes());
        v[12..16].copy_from_slice(&ty.to_ne_bytes());
        v[hdr..hdr + data.len()].copy_from_slice(data);
        v
    }

    /// A provided buffer as a multishot receive leaves it: the
    /// `io_uring_recvmsg_out` header, the name field, the control field,
    /// the payload.
    fn received(from: SocketAddr, control: &[u8], payload: &[u8], flags: u32) -> Vec<u8> {
        let m = request();
        let (name, namelen) = RawAddr::from_socket_addr(from);
        let mut b = Vec::new();
        for v in [namelen, control.len() as u32, payload.len() as u32, flags] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        // SAFETY: RawAddr is plain old data of this size.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&name as *const RawAddr).cast::<u8>(),
                std::mem::size_of::<RawAddr>(),
            )
        };
        b.extend_from_slice(raw);
        let mut c = control.to_vec();
        c.resize(m.msg_controllen, 0);
        b.extend_from_slice(&c);
        b.extend_from_slice(payload);
        b
    }

    fn vxlan_datagram(vni: u32, body: u8) -> Vec<u8> {
        let mut d = vec![0x08, 0, 0, 0, 0, 0, 0, 0];
        d[4..7].copy_from_slice(&vni.to_be_bytes()[1..]);
        // Ethernet: dst, src (unicast), type IPv4, then a body.
        d.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0]);
        d.extend_from_slice(&[body; 46]);
        d
    }

    #[test]
    fn a_gro_receive_is_parsed_and_each_datagram_opened() {
        let vtep: SocketAddr = "192.0.2.1:4789".parse().unwrap();
        let mode = VxlanMode::new(Vni::new(42).unwrap(), vec![vtep], 2);
        let view = <VxlanMode as Mode>::begin(&mode);
        let counters = WorkerCounters::new();
        let (link, _inbox) = ControlLink::new().unwrap();
        let mut control = cmsg(
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            &[0, 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1],
        );
        control.extend(cmsg(libc::SOL_UDP, libc::UDP_GRO, &68i32.to_ne_bytes()));
        control.extend(cmsg(
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &5u32.to_ne_bytes(),
        ));
        let mut payload = vxlan_datagram(42, 1);
        payload.extend(vxlan_datagram(7, 2)); // another VNI
        payload.extend(&vxlan_datagram(42, 3)[..40]); // short, still a frame
        let from: SocketAddr = "192.0.2.1:33333".parse().unwrap();
        let mut buf = received(from, &control, &payload, 0);
        let rx = parse(&buf, &request()).unwrap();
        assert_eq!(rx.from.remote, from);
        assert_eq!(rx.from.local, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(rx.stride, 68);
        assert_eq!(rx.rxq_dropped, Some(5));
        assert_eq!(rx.payload.len(), payload.len());
        let mut out = Deliveries::default();
        open_all(
            &mode,
            &view,
            0,
            Instant::now(),
            &mut buf,
            &rx,
            &mut out,
            &link,
            &counters,
        );
        let start = rx.payload.start;
        assert_eq!(
            out.as_slice(),
            &[((start + 8) as u32, 60), ((start + 136 + 8) as u32, 32)],
            "the frames behind their VXLAN headers; the wrong VNI dropped"
        );
        assert_eq!(counters.udp_rx_gro_receives.get(), 1);
        assert_eq!(counters.udp_rx_gro_datagrams.get(), 3);
        assert_eq!(counters.drops[DropReason::WrongVni.index()].get(), 1);
    }

    #[test]
    fn truncated_nameless_and_empty_receives_are_malformed() {
        let from: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let m = request();
        assert_eq!(
            parse(&received(from, &[], b"x", libc::MSG_TRUNC as u32), &m),
            Err(DropReason::Malformed)
        );
        assert_eq!(
            parse(&received(from, &[], b"", 0), &m),
            Err(DropReason::Malformed)
        );
        assert_eq!(
            parse(&[0u8; 20], &m),
            Err(DropReason::Malformed),
            "shorter than its header"
        );
        let mut b = received(from, &[], b"x", 0);
        b[16..18].copy_from_slice(&0u16.to_ne_bytes()); // family AF_UNSPEC
        assert_eq!(parse(&b, &m), Err(DropReason::Malformed));
    }

    #[test]
    fn handshake_messages_go_to_the_control_thread() {
        use crate::wg_mode::WgMode;
        use tunnel_proto::PrivateKey;
        use tunnel_proto::wg::{Tunnel, TunnelConfig, messages::INITIATION_LEN};
        let tunnel = Tunnel::new(
            TunnelConfig::new(PrivateKey::from_bytes([1; 32])),
            Instant::now(),
            std::time::SystemTime::now(),
        )
        .unwrap();
        let mode = WgMode::new(tunnel.snapshot());
        let view = mode.begin();
        let counters = WorkerCounters::new();
        let (link, inbox) = ControlLink::new().unwrap();
        let from: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        // A cookie reply carries no MAC1: only its length is screened.
        let mut reply = vec![0u8; 64];
        reply[0] = 3;
        let mut junk = vec![0u8; INITIATION_LEN];
        junk[0] = 1;
        for d in [reply, junk] {
            let mut buf = received(from, &[], &d, 0);
            let rx = parse(&buf, &request()).unwrap();
            let mut out = Deliveries::default();
            open_all(
                &mode,
                &view,
                0,
                Instant::now(),
                &mut buf,
                &rx,
                &mut out,
                &link,
                &counters,
            );
            assert!(out.as_slice().is_empty());
        }
        let msgs: Vec<_> = inbox.handshakes.try_iter().map(|h| h.len).collect();
        assert_eq!(msgs, [64]);
        assert_eq!(
            counters.drops[DropReason::AuthFailed.index()].get(),
            1,
            "bad MAC1"
        );
    }
}
