//! A one-shot ICMP echo over a raw socket: the diagnostic the seed article
//! runs as `ping -c 1 -I veth0 10.1.1.1`, for tests and the e2e harness.
//!
//! A raw socket, because a datagram ICMP socket is refused in a new
//! namespace (its `net.ipv4.ping_group_range` is empty): this needs
//! CAP_NET_RAW. The socket is connected to the destination, so the kernel
//! hands it only that host's packets, and reports "host unreachable" (a
//! failed ARP, an ICMP error) as EHOSTUNREACH on it.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{Error, Result};
use crate::netns;

/// ICMPv4 echo request / reply (RFC 792).
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
/// ICMPv6 echo request / reply (RFC 4443 §4).
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// Size of the IPv4 header without options; raw IPv4 sockets receive it.
const IPV4_MIN_HEADER: usize = 20;

/// Echo sequence numbers, unique within the process so that concurrent
/// pings in one namespace never take each other's replies.
static SEQUENCE: AtomicU16 = AtomicU16::new(1);

/// How to ping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingOptions {
    /// How long to wait for the reply.
    pub timeout: Duration,
    /// Send through this device (SO_BINDTODEVICE), like `ping -I DEV`.
    pub interface: Option<String>,
    /// Use this source address.
    pub source: Option<IpAddr>,
    /// Bytes of payload after the 8-byte ICMP header (ping's default: 56).
    pub payload_len: usize,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            timeout: Duration::from_secs(1),
            interface: None,
            source: None,
            payload_len: 56,
        }
    }
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Echo {
    /// An echo reply with our identifier, sequence and payload.
    Reply {
        /// Round-trip time.
        rtt: Duration,
        /// Bytes of ICMP message received.
        bytes: usize,
    },
    /// The kernel said the host is unreachable (no ARP/ND answer, or an
    /// ICMP error from a router).
    Unreachable {
        /// The errno text, e.g. "No route to host".
        reason: String,
    },
    /// Nothing within the timeout.
    Timeout,
}

impl Echo {
    /// True for [`Echo::Reply`].
    pub fn is_reply(&self) -> bool {
        matches!(self, Echo::Reply { .. })
    }
}

/// Sends one echo request from the calling thread's namespace and waits for
/// the reply.
pub fn echo(dst: IpAddr, opts: &PingOptions) -> Result<Echo> {
    let action = format!("pinging {dst}");
    let io_err = |e: io::Error| Error::io(action.clone(), "CAP_NET_RAW", e);
    let (domain, protocol, request) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, ICMP_ECHO_REQUEST),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, ICMPV6_ECHO_REQUEST),
    };
    let socket = Socket::new(domain, Type::RAW, Some(protocol)).map_err(io_err)?;
    if let Some(dev) = &opts.interface {
        socket.bind_device(Some(dev.as_bytes())).map_err(io_err)?;
    }
    if let Some(src) = opts.source {
        socket
            .bind(&SockAddr::from(SocketAddr::new(src, 0)))
            .map_err(io_err)?;
    }
    socket
        .connect(&SockAddr::from(SocketAddr::new(dst, 0)))
        .map_err(io_err)?;

    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let ident = (std::process::id() as u16) ^ 0x5a5a;
    let mut packet = vec![0u8; 8 + opts.payload_len];
    packet[0] = request;
    packet[4..6].copy_from_slice(&ident.to_be_bytes());
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, byte) in packet[8..].iter_mut().enumerate() {
        *byte = i as u8;
    }
    if dst.is_ipv4() {
        // The kernel fills in the ICMPv6 checksum of a raw socket itself
        // (RFC 3542 §3.1), but not the ICMPv4 one.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }

    let start = Instant::now();
    match socket.send(&packet) {
        Ok(_) => {}
        Err(e) if is_unreachable(&e) => {
            return Ok(Echo::Unreachable {
                reason: e.to_string(),
            });
        }
        Err(e) => return Err(io_err(e)),
    }
    let deadline = start + opts.timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Echo::Timeout);
        }
        socket
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
            .map_err(io_err)?;
        let len = match (&socket).read(&mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Echo::Timeout);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_unreachable(&e) => {
                return Ok(Echo::Unreachable {
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(io_err(e)),
        };
        let icmp = match dst {
            IpAddr::V4(_) => strip_ipv4_header(&buf[..len]),
            IpAddr::V6(_) => Some(&buf[..len]),
        };
        let Some(icmp) = icmp else { continue };
        let reply = if dst.is_ipv4() {
            ICMP_ECHO_REPLY
        } else {
            ICMPV6_ECHO_REPLY
        };
        if icmp.len() == packet.len()
            && icmp[0] == reply
            && icmp[4..8] == packet[4..8]
            && icmp[8..] == packet[8..]
        {
            return Ok(Echo::Reply {
                rtt: start.elapsed(),
                bytes: icmp.len(),
            });
        }
    }
}

/// Sends one echo request from inside a named namespace (or the caller's
/// own for `None`).
pub fn echo_in(netns: Option<&str>, dst: IpAddr, opts: &PingOptions) -> Result<Echo> {
    netns::run_in_opt(netns, || echo(dst, opts))?
}

fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
}

/// The ICMP message inside an IPv4 packet, if the header is sane.
fn strip_ipv4_header(packet: &[u8]) -> Option<&[u8]> {
    let first = *packet.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IPV4_MIN_HEADER {
        return None;
    }
    packet.get(ihl..)
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod test {
    use super::*;

    /// An echo request, id 0x1234, seq 1, payload 00 01 02 03; checksum
    /// worked by hand: !(0x0800 + 0x1234 + 0x0001 + 0x0001 + 0x0203) = 0xe3c6.
    static ECHO_REQUEST: [u8; 12] = [
        0x08, 0x00, 0xe3, 0xc6, 0x12, 0x34, 0x00, 0x01, 0x00, 0x01, 0x02, 0x03,
    ];

    #[test]
    fn checksum_of_a_packet_with_its_checksum_is_zero() {
        assert_eq!(checksum(&ECHO_REQUEST), 0);
        let mut zeroed = ECHO_REQUEST;
        zeroed[2] = 0;
        zeroed[3] = 0;
        assert_eq!(checksum(&zeroed), 0xe3c6);
    }

    #[test]
    fn checksum_pads_an_odd_byte() {
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn ipv4_header_is_stripped_only_when_sane() {
        let mut packet = vec![0x45u8; 20];
        packet.extend_from_slice(&ECHO_REQUEST);
        assert_eq!(strip_ipv4_header(&packet), Some(&ECHO_REQUEST[..]));
        assert_eq!(strip_ipv4_header(&[]), None);
        assert_eq!(strip_ipv4_header(&[0x44]), None);
        assert_eq!(strip_ipv4_header(&[0x4f, 0, 0]), None);
    }
}
