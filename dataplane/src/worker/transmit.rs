//! One UDP send, and the one function that turns it into a `msghdr` with
//! its control messages (source address, GSO segment size). The workers'
//! sends and gathers and the control thread's outbox all go through it, as
//! quinn-udp's `Transmit` does: GSO is a field, not a mode.

use std::net::{IpAddr, SocketAddr};

use crate::cmsg::{self, RawAddr, SEND_CONTROL_LEN};
use crate::worker::op::Family;

/// Which of a worker's sockets of the destination's family a send leaves
/// from, and so its source port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// The listen socket: the listen port (what a WireGuard peer expects).
    #[default]
    Listen,
    /// Flow socket `k`: a port of its own, picked by the hash of the inner
    /// flow (VXLAN's per-flow source ports).
    Flow(u8),
}

/// Where a send goes, from where, and how it is cut into datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit<P> {
    /// The destination.
    pub dst: SocketAddr,
    /// The local address to send from (`IP_PKTINFO`); `None`, or one of
    /// the other family, lets the kernel choose.
    pub src: Option<IpAddr>,
    /// With `UDP_SEGMENT`: the size of each datagram (the last may be
    /// shorter). `None`: the payload is one datagram.
    pub segment: Option<u16>,
    /// The socket it leaves from.
    pub via: Via,
    /// The peer it is for, to forget a local address the kernel refuses.
    pub peer: P,
}

impl<P> Transmit<P> {
    /// The destination in the form sockets want (IPv4-mapped IPv6 as IPv4).
    pub fn dst(&self) -> SocketAddr {
        cmsg::canonical(self.dst)
    }

    /// The socket it leaves from.
    pub fn family(&self) -> Family {
        if self.dst().is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// The source address that goes on the wire: only one of the
    /// destination's family can be asked for.
    pub fn src(&self) -> Option<IpAddr> {
        let v6 = self.dst().is_ipv6();
        self.src.filter(|a| a.is_ipv6() == v6)
    }

    /// The same send, letting the kernel choose the source.
    pub fn without_src(self) -> Transmit<P> {
        Transmit { src: None, ..self }
    }
}

#[repr(C, align(8))]
struct Control([u8; SEND_CONTROL_LEN]);

/// What a `sendmsg` reads: header, up to `N` iovecs, the address and the
/// control messages. It must not move while the kernel may read it, so it
/// lives in a fixed table (the workers) or on the stack of a synchronous
/// call (the outbox).
#[repr(C)]
pub struct SendMsg<const N: usize> {
    hdr: libc::msghdr,
    iov: [libc::iovec; N],
    name: RawAddr,
    control: Control,
}

impl<const N: usize> Default for SendMsg<N> {
    fn default() -> Self {
        SendMsg {
            // SAFETY: msghdr is plain old data; all-zero is a valid value.
            hdr: unsafe { std::mem::zeroed() },
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; N],
            name: RawAddr::default(),
            control: Control([0; SEND_CONTROL_LEN]),
        }
    }
}

impl<const N: usize> SendMsg<N> {
    /// Fills the header for `t` over `bufs` (one iovec each; beyond `N`
    /// are ignored) and returns it for the submission. The pointers in the
    /// header point into `self` and at `bufs`' memory, which the caller
    /// keeps in place until the send completes.
    pub fn fill<P>(
        &mut self,
        t: &Transmit<P>,
        bufs: impl IntoIterator<Item = (*const u8, usize)>,
    ) -> *const libc::msghdr {
        let mut n = 0;
        for (slot, (ptr, len)) in self.iov.iter_mut().zip(bufs) {
            *slot = libc::iovec {
                iov_base: ptr as *mut libc::c_void,
                iov_len: len,
            };
            n += 1;
        }
        let (name, namelen) = RawAddr::from_socket_addr(t.dst());
        self.name = name;
        let clen = cmsg::build_send(&mut self.control.0, t.src(), t.segment);
        self.hdr.msg_name = (&mut self.name as *mut RawAddr).cast();
        self.hdr.msg_namelen = namelen;
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = n;
        self.hdr.msg_control = if clen > 0 {
            self.control.0.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        self.hdr.msg_controllen = clen;
        self.hdr.msg_flags = 0;
        &self.hdr
    }

    /// Rewrites the control messages of a filled header without a source
    /// address (the kernel refused it); the iovecs and address stay.
    pub fn drop_src<P>(&mut self, t: &Transmit<P>) -> *const libc::msghdr {
        let clen = cmsg::build_send(&mut self.control.0, None, t.segment);
        self.hdr.msg_control = if clen > 0 {
            self.control.0.as_mut_ptr().cast()
        } else {
            std::ptr::null_mut()
        };
        self.hdr.msg_controllen = clen;
        self.hdr.msg_flags = 0;
        &self.hdr
    }

    /// The header as last filled.
    pub fn header(&self) -> &libc::msghdr {
        &self.hdr
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// (level, type, data) of every control message in a filled header.
    fn control_messages(h: &libc::msghdr) -> Vec<(i32, i32, Vec<u8>)> {
        let mut out = Vec::new();
        if h.msg_control.is_null() {
            return out;
        }
        // SAFETY: the header points at its own control buffer of msg_controllen bytes.
        let buf =
            unsafe { std::slice::from_raw_parts(h.msg_control.cast::<u8>(), h.msg_controllen) };
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut at = 0;
        while at + hdr <= buf.len() {
            let len = usize::from_ne_bytes(buf[at..at + 8].try_into().unwrap());
            let level = i32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap());
            let ty = i32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap());
            out.push((level, ty, buf[at + hdr..at + len].to_vec()));
            at += len.div_ceil(8) * 8;
        }
        out
    }

    fn name_of(h: &libc::msghdr) -> Option<SocketAddr> {
        // SAFETY: msg_name points at the RawAddr inside the SendMsg.
        unsafe { &*h.msg_name.cast::<RawAddr>() }.to_socket_addr()
    }

    #[test]
    fn a_gathered_gso_send_from_a_chosen_source() {
        let mut m = SendMsg::<4>::default();
        let a = [1u8; 100];
        let b = [2u8; 60];
        let t = Transmit {
            dst: "192.0.2.9:51820".parse().unwrap(),
            src: Some("10.0.0.1".parse().unwrap()),
            segment: Some(100),
            via: Via::Listen,
            peer: (),
        };
        m.fill(&t, [(a.as_ptr(), a.len()), (b.as_ptr(), b.len())]);
        let h = m.header();
        assert_eq!(h.msg_iovlen, 2);
        assert_eq!(name_of(h), Some(t.dst));
        let c = control_messages(h);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].0, c[0].1), (libc::IPPROTO_IP, libc::IP_PKTINFO));
        assert_eq!(&c[0].2[4..8], &[10, 0, 0, 1], "ipi_spec_dst is the source");
        assert_eq!((c[1].0, c[1].1), (libc::SOL_UDP, libc::UDP_SEGMENT));
        assert_eq!(c[1].2, 100u16.to_ne_bytes());
        assert_eq!(t.family(), Family::V4);

        m.drop_src(&t);
        let c = control_messages(m.header());
        assert_eq!(c.len(), 1, "the source is gone, the segment size stays");
        assert_eq!(c[0].1, libc::UDP_SEGMENT);
        assert_eq!(m.header().msg_iovlen, 2);
    }

    #[test]
    fn a_plain_send_has_no_control_and_a_mapped_address_goes_v4() {
        let mut m = SendMsg::<1>::default();
        let a = [0u8; 10];
        let t = Transmit {
            dst: "[::ffff:192.0.2.1]:9".parse().unwrap(),
            src: Some("fd00::1".parse().unwrap()),
            segment: None,
            via: Via::Listen,
            peer: 7u8,
        };
        m.fill(&t, [(a.as_ptr(), a.len())]);
        let h = m.header();
        assert_eq!(t.family(), Family::V4, "an IPv4-mapped destination");
        assert_eq!(name_of(h), Some("192.0.2.1:9".parse().unwrap()));
        assert!(h.msg_control.is_null(), "an IPv6 source cannot go to IPv4");
        assert_eq!(h.msg_controllen, 0);
        let t6 = Transmit {
            dst: "[fd00::2]:9".parse().unwrap(),
            ..t
        };
        m.fill(&t6, [(a.as_ptr(), a.len())]);
        let c = control_messages(m.header());
        assert_eq!((c[0].0, c[0].1), (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO));
        assert_eq!(t6.family(), Family::V6);
    }

    #[test]
    fn more_buffers_than_iovecs_are_cut() {
        let mut m = SendMsg::<2>::default();
        let a = [0u8; 4];
        let t = Transmit {
            dst: "192.0.2.1:1".parse().unwrap(),
            src: None,
            segment: Some(4),
            via: Via::Flow(3),
            peer: (),
        };
        m.fill(&t, (0..5).map(|_| (a.as_ptr(), a.len())));
        assert_eq!(m.header().msg_iovlen, 2);
    }
}
