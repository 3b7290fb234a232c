//! Control messages on the underlay sockets, both ways: the local address a
//! datagram arrived on and its GRO segment size in, the source address and
//! the GSO segment size out. Received control data is parsed as untrusted
//! bytes; sent control data is written into fixed per-operation storage.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Bytes of control data a receive asks for: `IPV6_PKTINFO` (40) or
/// `IP_PKTINFO` (32), `UDP_GRO` (24), `SO_RXQ_OVFL` (24), with room to spare.
pub const RECV_CONTROL_LEN: usize = 128;

/// Bytes of control data a send may carry: source address plus `UDP_SEGMENT`.
pub const SEND_CONTROL_LEN: usize = 64;

const HDR: usize = std::mem::size_of::<libc::cmsghdr>();

fn align(len: usize) -> usize {
    len.div_ceil(std::mem::size_of::<usize>()) * std::mem::size_of::<usize>()
}

/// What the control messages of one receive said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvInfo {
    /// The local address the datagram was sent to.
    pub local: Option<IpAddr>,
    /// Interface index it arrived on.
    pub ifindex: u32,
    /// With `UDP_GRO`: the size of each coalesced datagram (the last may be shorter).
    pub gro_segment: Option<u16>,
    /// The socket's running count of datagrams dropped for lack of buffer space.
    pub rxq_dropped: Option<u32>,
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn read_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Parses the control data the kernel wrote for one receive. Unknown and
/// truncated messages are skipped; nothing here can read out of bounds.
pub fn parse_recv(mut control: &[u8]) -> RecvInfo {
    let mut info = RecvInfo::default();
    while control.len() >= HDR {
        let len = usize::from_ne_bytes(
            control[..std::mem::size_of::<usize>()]
                .try_into()
                .unwrap_or([0; std::mem::size_of::<usize>()]),
        );
        let level = read_i32(&control[8..]).unwrap_or(-1);
        let ty = read_i32(&control[12..]).unwrap_or(-1);
        if len < HDR || len > control.len() {
            break;
        }
        let data = &control[HDR..len];
        match (level, ty) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= 12 => {
                // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
                info.ifindex = read_u32(data).unwrap_or(0);
                let a: [u8; 4] = data[8..12].try_into().unwrap_or([0; 4]);
                info.local = Some(IpAddr::V4(Ipv4Addr::from(a)));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 20 => {
                // struct in6_pktinfo { in6_addr ipi6_addr; int ipi6_ifindex; }
                let a: [u8; 16] = data[..16].try_into().unwrap_or([0; 16]);
                info.local = Some(IpAddr::V6(Ipv6Addr::from(a)));
                info.ifindex = read_u32(&data[16..]).unwrap_or(0);
            }
            (libc::SOL_UDP, libc::UDP_GRO) => {
                info.gro_segment = read_i32(data)
                    .and_then(|v| u16::try_from(v).ok())
                    .filter(|&v| v > 0);
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => info.rxq_dropped = read_u32(data),
            _ => {}
        }
        let step = align(len);
        if step >= control.len() {
            break;
        }
        control = &control[step..];
    }
    info
}

/// Writes one control message at `buf[at..]`; returns the bytes used.
fn put(buf: &mut [u8], at: usize, level: i32, ty: i32, data: &[u8]) -> usize {
    let len = HDR + data.len();
    let space = align(len);
    let out = &mut buf[at..at + space];
    out.fill(0);
    out[..8].copy_from_slice(&len.to_ne_bytes());
    out[8..12].copy_from_slice(&level.to_ne_bytes());
    out[12..16].copy_from_slice(&ty.to_ne_bytes());
    out[HDR..HDR + data.len()].copy_from_slice(data);
    space
}

/// Fills `buf` with the control messages for one send: the source address
/// (so replies leave from the address the peer used) and the GSO segment
/// size. Returns the control length to put in `msg_controllen`.
pub fn build_send(
    buf: &mut [u8; SEND_CONTROL_LEN],
    src: Option<IpAddr>,
    segment: Option<u16>,
) -> usize {
    let mut at = 0;
    match src {
        Some(IpAddr::V4(a)) => {
            let mut d = [0u8; 12];
            d[4..8].copy_from_slice(&a.octets()); // ipi_spec_dst: the source to use
            at += put(buf, at, libc::IPPROTO_IP, libc::IP_PKTINFO, &d);
        }
        Some(IpAddr::V6(a)) => {
            let mut d = [0u8; 20];
            d[..16].copy_from_slice(&a.octets());
            at += put(buf, at, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &d);
        }
        None => {}
    }
    if let Some(seg) = segment {
        at += put(
            buf,
            at,
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            &seg.to_ne_bytes(),
        );
    }
    at
}

/// A socket address in the C layout, big enough for IPv4 and IPv6.
#[derive(Clone, Copy)]
#[repr(C)]
pub union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_socket_addr())
    }
}

impl Default for RawAddr {
    fn default() -> Self {
        // SAFETY: both variants are plain old data; all-zero is valid.
        unsafe { std::mem::zeroed() }
    }
}

impl RawAddr {
    /// Encodes `addr`; returns it with its length for `msg_namelen`.
    pub fn from_socket_addr(addr: SocketAddr) -> (RawAddr, libc::socklen_t) {
        let mut raw = RawAddr::default();
        match addr {
            SocketAddr::V4(a) => {
                raw.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                (
                    raw,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                raw.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                (
                    raw,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }

    /// Decodes an address the kernel wrote, or `None` for another family.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the family field sits at the same offset in both variants.
        let family = unsafe { self.v4.sin_family };
        match i32::from(family) {
            libc::AF_INET => {
                // SAFETY: the family says this is the IPv4 variant.
                let a = unsafe { self.v4 };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this is the IPv6 variant.
                let a = unsafe { self.v6 };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Decodes the name bytes of a multishot receive (untrusted length).
    pub fn parse(bytes: &[u8]) -> Option<SocketAddr> {
        let mut raw = RawAddr::default();
        let n = bytes.len().min(std::mem::size_of::<RawAddr>());
        // SAFETY: copying at most size_of::<RawAddr>() bytes into a POD union.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (&mut raw as *mut RawAddr).cast::<u8>(),
                n,
            );
        }
        raw.to_socket_addr()
    }
}

/// Unmaps `::ffff:a.b.c.d` to `a.b.c.d` so one peer has one address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_control_round_trips_through_the_parser_layout() {
        let mut buf = [0u8; SEND_CONTROL_LEN];
        let n = build_send(&mut buf, Some("fd00::1".parse().unwrap()), Some(1452));
        assert_eq!(n, 40 + 24);
        let mut buf4 = [0u8; SEND_CONTROL_LEN];
        let n4 = build_send(&mut buf4, Some("10.0.0.1".parse().unwrap()), None);
        assert_eq!(n4, 32);
    }

    #[test]
    fn receive_control_messages_are_decoded() {
        let mut buf = [0u8; RECV_CONTROL_LEN];
        let mut at = 0;
        let mut pk = [0u8; 12];
        pk[..4].copy_from_slice(&7u32.to_ne_bytes());
        pk[8..12].copy_from_slice(&[10, 0, 0, 2]);
        at += put(&mut buf, at, libc::IPPROTO_IP, libc::IP_PKTINFO, &pk);
        at += put(
            &mut buf,
            at,
            libc::SOL_UDP,
            libc::UDP_GRO,
            &1452i32.to_ne_bytes(),
        );
        at += put(
            &mut buf,
            at,
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &3u32.to_ne_bytes(),
        );
        let info = parse_recv(&buf[..at]);
        assert_eq!(info.local, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(info.ifindex, 7);
        assert_eq!(info.gro_segment, Some(1452));
        assert_eq!(info.rxq_dropped, Some(3));
    }

    #[test]
    fn garbage_control_data_is_harmless() {
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = parse_recv(&junk);
        }
        let mut huge = [0xffu8; 32];
        huge[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(parse_recv(&huge), RecvInfo::default());
    }

    #[test]
    fn addresses_encode_and_decode() {
        for s in ["10.1.2.3:51820", "[fd00::5]:4789"] {
            let a: SocketAddr = s.parse().unwrap();
            let (raw, len) = RawAddr::from_socket_addr(a);
            assert!(len as usize <= std::mem::size_of::<RawAddr>());
            assert_eq!(raw.to_socket_addr(), Some(a));
        }
        let mapped: SocketAddr = "[::ffff:10.0.0.9]:5".parse().unwrap();
        assert_eq!(canonical(mapped), "10.0.0.9:5".parse().unwrap());
    }
}
