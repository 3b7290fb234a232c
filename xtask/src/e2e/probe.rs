//! ICMP echo probes of an exact size with fragmentation forbidden, for the
//! size checks: does a packet of N bytes cross the tunnel whole, and is one
//! too large answered with "fragmentation needed" (IPv4, RFC 1191) or
//! "packet too big" (IPv6, RFC 8201) rather than silently lost?
//!
//! netctl's ping cannot forbid fragmentation, so this opens its own raw
//! socket with `IP_PMTUDISC_PROBE`: DF is set on every packet and the
//! cached path MTU is ignored, so each probe tests the path afresh instead
//! of being fragmented (or refused) at the source after the first answer.
//! The socket is not connected: it sees every ICMP message reaching the
//! namespace, including the errors routers send about our probe.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) types used here.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ICMP_HEADER: usize = 8;

static IDENT: AtomicU16 = AtomicU16::new(0x4e00);

/// What came back for a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The echo reply, whole.
    Reply {
        /// Round-trip time.
        rtt: Duration,
    },
    /// A router said the packet is too big for its next hop.
    TooBig {
        /// The router that said so.
        from: IpAddr,
        /// The MTU it reported.
        mtu: u32,
    },
    /// The kernel refused to send it (larger than the local link).
    LocalTooBig,
    /// Nothing within the timeout.
    Timeout,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Reply { rtt } => write!(f, "reply in {:.2} ms", rtt.as_secs_f64() * 1e3),
            Probe::TooBig { from, mtu } => write!(f, "too big, mtu {mtu} (from {from})"),
            Probe::LocalTooBig => f.write_str("refused locally: larger than the link MTU"),
            Probe::Timeout => f.write_str("no answer"),
        }
    }
}

/// A probe, tried up to three times: ICMP errors are rate limited and the
/// first packet may wait for a handshake.
pub fn probe_retry(ns: &str, dst: IpAddr, total: usize) -> Result<Probe> {
    let mut last = Probe::Timeout;
    for _ in 0..3 {
        last = probe_in(ns, dst, total, Duration::from_secs(2))?;
        if !matches!(last, Probe::Timeout) {
            break;
        }
    }
    Ok(last)
}

/// Sends one echo request of `total` bytes (IP header included) from
/// inside `netns` to `dst` with fragmentation forbidden, and waits up to
/// `timeout` for the reply or an ICMP error about it.
pub fn probe_in(netns: &str, dst: IpAddr, total: usize, timeout: Duration) -> Result<Probe> {
    netctl::netns::run_in(netns, || probe(dst, total, timeout))?
        .with_context(|| format!("probing {dst} with {total} bytes from {netns}"))
}

fn probe(dst: IpAddr, total: usize, timeout: Duration) -> io::Result<Probe> {
    let v6 = dst.is_ipv6();
    let (domain, proto, header) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6, IPV6_HEADER)
    } else {
        (Domain::IPV4, Protocol::ICMPV4, IPV4_HEADER)
    };
    let socket = Socket::new(domain, Type::RAW, Some(proto))?;
    if v6 {
        set_int(
            &socket,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )?;
    } else {
        set_int(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )?;
    }
    let ident = IDENT.fetch_add(1, Ordering::Relaxed);
    let len = total.saturating_sub(header).max(ICMP_HEADER);
    let mut packet = vec![0u8; len];
    packet[0] = if v6 {
        ICMPV6_ECHO_REQUEST
    } else {
        ICMP_ECHO_REQUEST
    };
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&1u16.to_be_bytes());
    for (i, b) in packet[ICMP_HEADER..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    if !v6 {
        // The kernel computes the ICMPv6 checksum of a raw socket itself
        // (RFC 3542 §3.1), not the ICMPv4 one.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let start = Instant::now();
    match socket.send_to(&packet, &SockAddr::from(SocketAddr::new(dst, 0))) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => return Ok(Probe::LocalTooBig),
        Err(e) => return Err(e),
    }
    let deadline = start + timeout;
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 65_536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Probe::Timeout);
        }
        socket.set_read_timeout(Some(deadline - now))?;
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Probe::Timeout);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // SAFETY: recv_from initialised the first n bytes.
        let data: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let from_ip = from.as_socket().map(|s| s.ip());
        let outcome = if v6 {
            classify_v6(data, ident, len)
        } else {
            classify_v4(data, ident, len)
        };
        match outcome {
            Some(Answer::Reply) if from_ip == Some(dst) => {
                return Ok(Probe::Reply {
                    rtt: start.elapsed(),
                });
            }
            Some(Answer::TooBig(mtu)) => {
                return Ok(Probe::TooBig {
                    from: from_ip.unwrap_or(dst),
                    mtu,
                });
            }
            _ => {}
        }
    }
}

enum Answer {
    Reply,
    TooBig(u32),
}

/// An IPv4 datagram as a raw ICMP socket delivers it (IP header included).
fn classify_v4(data: &[u8], ident: u16, len: usize) -> Option<Answer> {
    let ihl = usize::from(*data.first()? & 0x0f) * 4;
    let icmp = data.get(ihl..)?;
    match *icmp.first()? {
        ICMP_ECHO_REPLY if icmp.get(4..6)? == ident.to_be_bytes() && icmp.len() == len => {
            Some(Answer::Reply)
        }
        ICMP_DEST_UNREACH if *icmp.get(1)? == ICMP_FRAG_NEEDED => {
            // The offending packet's header and first 8 bytes follow.
            let inner = icmp.get(ICMP_HEADER..)?;
            let inner_ihl = usize::from(*inner.first()? & 0x0f) * 4;
            let echo = inner.get(inner_ihl..inner_ihl + ICMP_HEADER)?;
            (echo[0] == ICMP_ECHO_REQUEST && echo[4..6] == ident.to_be_bytes())
                .then(|| Answer::TooBig(u32::from(u16::from_be_bytes([icmp[6], icmp[7]]))))
        }
        _ => None,
    }
}

/// An ICMPv6 message as a raw ICMPv6 socket delivers it (no IP header).
fn classify_v6(icmp: &[u8], ident: u16, len: usize) -> Option<Answer> {
    match *icmp.first()? {
        ICMPV6_ECHO_REPLY if icmp.get(4..6)? == ident.to_be_bytes() && icmp.len() == len => {
            Some(Answer::Reply)
        }
        ICMPV6_PACKET_TOO_BIG => {
            let echo =
                icmp.get(ICMP_HEADER + IPV6_HEADER..ICMP_HEADER + IPV6_HEADER + ICMP_HEADER)?;
            (echo[0] == ICMPV6_ECHO_REQUEST && echo[4..6] == ident.to_be_bytes())
                .then(|| Answer::TooBig(u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]])))
        }
        _ => None,
    }
}

fn set_int(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int that lives across the call, and
    // its size is passed with it; the fd is open for the socket's life.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frag_needed_about_our_probe_is_recognised_with_its_mtu() {
        // IPv4 header (20) | ICMP 3/4 mtu 1420 | inner IPv4 header | echo header.
        let mut pkt = vec![0u8; 20 + 8 + 20 + 8];
        pkt[0] = 0x45;
        pkt[20] = ICMP_DEST_UNREACH;
        pkt[21] = ICMP_FRAG_NEEDED;
        pkt[26..28].copy_from_slice(&1420u16.to_be_bytes());
        pkt[28] = 0x45;
        pkt[48] = ICMP_ECHO_REQUEST;
        pkt[52..54].copy_from_slice(&0x4e07u16.to_be_bytes());
        assert!(matches!(
            classify_v4(&pkt, 0x4e07, 1472),
            Some(Answer::TooBig(1420))
        ));
        assert!(
            classify_v4(&pkt, 0x4e08, 1472).is_none(),
            "someone else's probe"
        );
        assert!(classify_v4(&pkt[..30], 0x4e07, 1472).is_none(), "truncated");
    }

    #[test]
    fn checksum_of_a_known_echo_request() {
        // type 8, code 0, id 1, seq 1: the sum is !0x0802.
        let pkt = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(checksum(&pkt), !0x0802);
    }
}
