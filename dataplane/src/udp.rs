//! The underlay UDP sockets: per worker one IPv4 and one IPv6 socket, all
//! bound to the listen port with `SO_REUSEPORT`; with several workers, a
//! classic BPF program gives each datagram to a worker by its sender's
//! address and source port (see [`crate::steering`]).
//!
//! Every socket reports the local address a datagram arrived on
//! (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) so replies can leave from it, counts
//! receive-buffer overflows (`SO_RXQ_OVFL`) and, with offloads, accepts
//! coalesced receives (`UDP_GRO`).
//!
//! Modes that spread flows over source ports (VXLAN; WireGuard toward a
//! peer with `SpreadFlows`) also get flow sockets: a set per family, each
//! bound to an ephemeral port of its own, only sent from (see
//! [`FlowSockets`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// Why the sockets could not be set up.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UdpError {
    /// Creating a socket failed.
    #[error("creating an {family} UDP socket failed: {source}")]
    Create {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A socket option was refused.
    #[error("setting {option} on the {family} UDP socket failed: {source}")]
    Option {
        /// The option's name.
        option: &'static str,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The port is taken or not ours.
    #[error("binding UDP port {port} ({family}) failed: {source}{hint}")]
    Bind {
        /// The port.
        port: u16,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

/// The sockets one worker owns.
#[derive(Debug)]
pub struct WorkerSockets {
    /// IPv4 underlay.
    pub v4: OwnedFd,
    /// IPv6 underlay; `None` when IPv6 is disabled in this namespace.
    pub v6: Option<OwnedFd>,
}

impl WorkerSockets {
    /// Second descriptors for the same sockets (the control thread sends
    /// from, and sets options on, the workers' sockets through these).
    pub fn try_clone(&self) -> io::Result<WorkerSockets> {
        Ok(WorkerSockets {
            v4: self.v4.try_clone()?,
            v6: self.v6.as_ref().map(OwnedFd::try_clone).transpose()?,
        })
    }

    /// Sets `SO_MARK` (0: none) on both, so that policy routing can tell
    /// the tunnel's own datagrams from what it carries (wg-quick routes
    /// everything else into the tunnel). Needs CAP_NET_ADMIN.
    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        set_mark(&self.v4, mark)?;
        if let Some(v6) = &self.v6 {
            set_mark(v6, mark)?;
        }
        Ok(())
    }
}

/// The flow sockets: per family [`FLOW_PORTS`](crate::worker::FLOW_PORTS)
/// UDP sockets on consecutive ports of the ephemeral range (as the
/// kernel's VXLAN picks its source ports from it), outside the listen
/// port's `SO_REUSEPORT` group. A send leaves from the one its inner flow
/// was given ([`SourcePorts`](crate::worker::SourcePorts)). One set serves every worker
/// (each ring registers them as its own fixed files), so a flow's port
/// does not depend on the worker that happens to send it: if it did, the
/// receiver's reply would pick the worker by the port, the device's flow
/// table would move the flow to it, and a new port could move it back.
///
/// Nothing is expected on them (peers send to the listen port): a filter
/// drops whatever arrives before it is queued, and the receive buffer is
/// the kernel's smallest, so nothing piles up unread.
#[derive(Debug)]
pub struct FlowSockets {
    /// IPv4.
    pub v4: Vec<OwnedFd>,
    /// IPv6; empty when IPv6 is disabled in this namespace.
    pub v6: Vec<OwnedFd>,
}

impl FlowSockets {
    /// The ports they are bound to: IPv4's, then IPv6's.
    pub fn ports(&self) -> io::Result<(Vec<u16>, Vec<u16>)> {
        let ports = |fds: &[OwnedFd]| -> io::Result<Vec<u16>> {
            fds.iter()
                .map(|fd| {
                    let s = socket2::SockRef::from(fd);
                    s.local_addr()?
                        .as_socket()
                        .map(|a| a.port())
                        .ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidData, "socket has no inet address")
                        })
                })
                .collect()
        };
        Ok((ports(&self.v4)?, ports(&self.v6)?))
    }

    /// Sets `SO_MARK` (0: none) on every one, as on the listen sockets.
    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        self.v4
            .iter()
            .chain(&self.v6)
            .try_for_each(|fd| set_mark(fd, mark))
    }
}

/// Options for the sockets.
#[derive(Clone, Copy, Debug)]
pub struct SocketOptions {
    /// Listen port; 0 picks one (the same for every worker).
    pub port: u16,
    /// Turn `UDP_GRO` on.
    pub gro: bool,
    /// `SO_MARK` of the tunnel's datagrams (wg's fwmark; 0: none).
    pub fwmark: u32,
    /// Receive and send buffer asked for each socket (`SocketBuffer`),
    /// forced with CAP_NET_ADMIN, else what rmem_max and wmem_max allow.
    pub buffer: usize,
}

fn set_mark(fd: &impl AsRawFd, mark: u32) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_MARK, mark as i32)
}

fn setsockopt_int(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the option value is an int that lives for the call; the length matches.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `IPv4` or `IPv6`, as errors name a socket's family.
fn family_name(domain: Domain) -> &'static str {
    if domain == Domain::IPV4 {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Turns the kernel's refusal of `option` into an error naming it.
fn option_error(option: &'static str, family: &'static str) -> impl Fn(io::Error) -> UdpError {
    move |source| UdpError::Option {
        option,
        family,
        source,
    }
}

/// A non-blocking, close-on-exec UDP socket of `domain`; an IPv6 one
/// carries IPv6 only (the IPv4 socket has the mapped addresses).
fn new_udp_socket(domain: Domain) -> Result<Socket, UdpError> {
    let family = family_name(domain);
    let sock = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(|source| UdpError::Create { family, source })?;
    if domain == Domain::IPV6 {
        sock.set_only_v6(true)
            .map_err(option_error("IPV6_V6ONLY", family))?;
    }
    Ok(sock)
}

/// The send buffer every tunnel socket has, `buffer` bytes (forced with
/// CAP_NET_ADMIN, else what wmem_max allows), and the fwmark, if one is set.
fn set_send_buffer_and_mark(
    sock: &Socket,
    family: &'static str,
    mark: u32,
    buffer: usize,
) -> Result<(), UdpError> {
    let opt = |option| option_error(option, family);
    let size = i32::try_from(buffer).unwrap_or(i32::MAX);
    if setsockopt_int(sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        sock.set_send_buffer_size(buffer)
            .map_err(opt("SO_SNDBUF"))?;
    }
    if mark != 0 {
        set_mark(sock, mark).map_err(opt("SO_MARK (fwmark; needs CAP_NET_ADMIN)"))?;
    }
    Ok(())
}

/// The wildcard address of `domain` at `port`.
fn any_address(domain: Domain, port: u16) -> SocketAddr {
    if domain == Domain::IPV4 {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into()
    } else {
        SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into()
    }
}

fn one_socket(domain: Domain, port: u16, opts: &SocketOptions) -> Result<Socket, UdpError> {
    let family = family_name(domain);
    let opt = |option| option_error(option, family);
    let sock = new_udp_socket(domain)?;
    sock.set_reuse_port(true).map_err(opt("SO_REUSEPORT"))?;
    if domain == Domain::IPV6 {
        setsockopt_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
            .map_err(opt("IPV6_RECVPKTINFO"))?;
    } else {
        setsockopt_int(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1).map_err(opt("IP_PKTINFO"))?;
    }
    setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).map_err(opt("SO_RXQ_OVFL"))?;
    // FORCE needs CAP_NET_ADMIN; without it fall back to what rmem_max allows.
    let size = i32::try_from(opts.buffer).unwrap_or(i32::MAX);
    if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        sock.set_recv_buffer_size(opts.buffer)
            .map_err(opt("SO_RCVBUF"))?;
    }
    if opts.gro {
        setsockopt_int(&sock, libc::SOL_UDP, libc::UDP_GRO, 1).map_err(opt("UDP_GRO"))?;
    }
    set_send_buffer_and_mark(&sock, family, opts.fwmark, opts.buffer)?;
    let addr = any_address(domain, port);
    sock.bind(&addr.into()).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EADDRINUSE) => {
                ": the port is in use by another program (not ringtun's SO_REUSEPORT group)"
            }
            Some(libc::EACCES) => ": ports below 1024 need CAP_NET_BIND_SERVICE",
            _ => "",
        };
        UdpError::Bind {
            port,
            family,
            source,
            hint,
        }
    })?;
    Ok(sock)
}

fn local_port(sock: &Socket) -> io::Result<u16> {
    let addr = sock.local_addr()?;
    addr.as_socket()
        .map(|a| a.port())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "socket has no inet address"))
}

/// A socket only sent from, bound to `port` (0: an ephemeral one), no
/// `SO_REUSEPORT`, a filter that drops every datagram that arrives, the
/// smallest receive buffer. Sources chosen per send (`IP_PKTINFO` in the
/// control message) and `UDP_SEGMENT` need no option.
fn flow_socket(domain: Domain, mark: u32, buffer: usize, port: u16) -> Result<Socket, UdpError> {
    let family = family_name(domain);
    let opt = |option| option_error(option, family);
    let sock = new_udp_socket(domain)?;
    // Classic BPF `ret #0`: keep no byte of any datagram, before it is queued.
    let drop_all = [socket2::SockFilter::new(
        (libc::BPF_RET | libc::BPF_K) as u16,
        0,
        0,
        0,
    )];
    sock.attach_filter(&drop_all)
        .map_err(opt("SO_ATTACH_FILTER"))?;
    // The kernel rounds 0 up to its minimum (SOCK_MIN_RCVBUF).
    sock.set_recv_buffer_size(0).map_err(opt("SO_RCVBUF"))?;
    set_send_buffer_and_mark(&sock, family, mark, buffer)?;
    sock.bind(&any_address(domain, port).into())
        .map_err(|source| UdpError::Bind {
            port,
            family,
            source,
            hint: if port == 0 {
                ": no ephemeral port is free (net.ipv4.ip_local_port_range)"
            } else {
                ""
            },
        })?;
    Ok(sock)
}

/// Runs of consecutive ports tried, each from an ephemeral port the
/// kernel picks, before the flow sockets take whatever ports come.
const CONSECUTIVE_TRIES: usize = 16;

/// `count` flow sockets of `domain` on consecutive ports where a free run
/// is found inside the ephemeral range, else on any ports. Why consecutive:
/// a receiver that steers by address plus source port modulo its workers
/// (a ringtun) then gets flows given out in turn over the ports evenly
/// over its workers, whatever their number.
fn flow_socket_run(
    domain: Domain,
    count: usize,
    mark: u32,
    buffer: usize,
) -> Result<Vec<Socket>, UdpError> {
    let top = ephemeral_top();
    for _ in 0..CONSECUTIVE_TRIES {
        let first = flow_socket(domain, mark, buffer, 0)?;
        let base = local_port(&first).map_err(option_error("getsockname", family_name(domain)))?;
        if usize::from(base) + count.saturating_sub(1) > usize::from(top) {
            continue;
        }
        let mut run = Vec::with_capacity(count);
        run.push(first);
        // The run's top was checked against the range's: no overflow.
        let last = u16::try_from(usize::from(base) + count.saturating_sub(1)).unwrap_or(u16::MAX);
        for port in base.saturating_add(1)..=last {
            match flow_socket(domain, mark, buffer, port) {
                Ok(s) => run.push(s),
                Err(UdpError::Bind { source, .. })
                    if source.raw_os_error() == Some(libc::EADDRINUSE) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if run.len() == count {
            return Ok(run);
        }
    }
    tracing::warn!(
        family = family_name(domain),
        "no run of {count} free consecutive ports: the flow sockets take any ports, \
         and a receiving ringtun spreads flows over its workers less evenly"
    );
    (0..count)
        .map(|_| flow_socket(domain, mark, buffer, 0))
        .collect()
}

/// The highest port of this namespace's ephemeral range (65535 if it
/// cannot be read).
fn ephemeral_top() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(u16::MAX)
}

/// Opens `count` flow sockets per family, with the firewall mark `fwmark`
/// and a send buffer of `buffer` bytes (IPv6 ones only where IPv6 is
/// enabled), each family's on consecutive ports where a free run is found.
pub fn open_flow_sockets(
    count: usize,
    fwmark: u32,
    buffer: usize,
) -> Result<FlowSockets, UdpError> {
    let v4 = flow_socket_run(Domain::IPV4, count, fwmark, buffer)?;
    let v6 = match flow_socket_run(Domain::IPV6, count, fwmark, buffer) {
        Ok(v6) => v6,
        // IPv6 disabled, as for the listen sockets.
        Err(UdpError::Create { source, .. })
            if source.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            Vec::new()
        }
        Err(UdpError::Bind { source, .. })
            if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
        {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    Ok(FlowSockets {
        v4: v4.into_iter().map(OwnedFd::from).collect(),
        v6: v6.into_iter().map(OwnedFd::from).collect(),
    })
}

/// Opens `workers` socket pairs on `opts.port` and returns them with the
/// port actually bound (useful when `opts.port` is 0).
pub fn open_worker_sockets(
    workers: usize,
    opts: SocketOptions,
) -> Result<(Vec<WorkerSockets>, u16), UdpError> {
    let mut port = opts.port;
    let mut out = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let v4 = one_socket(Domain::IPV4, port, &opts)?;
        if port == 0 {
            port = local_port(&v4).map_err(|source| UdpError::Option {
                option: "getsockname",
                family: "IPv4",
                source,
            })?;
        }
        let v6 = match one_socket(Domain::IPV6, port, &opts) {
            Ok(s) => Some(OwnedFd::from(s)),
            // IPv6 disabled (no `ipv6` module, or disable_ipv6 in this namespace).
            Err(UdpError::Create { source, .. })
                if source.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                None
            }
            Err(UdpError::Bind { source, .. })
                if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
            {
                None
            }
            Err(e) => return Err(e),
        };
        out.push(WorkerSockets {
            v4: OwnedFd::from(v4),
            v6,
        });
    }
    if out.len() > 1 {
        steer_by_source_port(&out);
    }
    Ok((out, port))
}

/// Spreads a group's datagrams over its members by source port (see
/// [`attach_reuseport_by_source_port`](crate::steering::attach_reuseport_by_source_port)).
/// Where the kernel refuses it, its hash of the 4-tuple picks, which is
/// correct, only less even.
fn steer_by_source_port(group: &[WorkerSockets]) {
    let members = group.len();
    let first = &group[0];
    let v4 = crate::steering::attach_reuseport_by_source_port(&first.v4, members);
    let v6 = first.v6.as_ref().map_or(Ok(()), |s| {
        crate::steering::attach_reuseport_by_source_port(s, members)
    });
    if let Err(e) = v4.and(v6) {
        tracing::warn!(error = %e, "steering by source port refused; the kernel's hash spreads senders over workers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine with most of its ephemeral range free, a run is
    /// found at once: each family's ports follow one another.
    #[test]
    fn flow_sockets_take_consecutive_ports() {
        let flows = open_flow_sockets(32, 0, 1 << 20).expect("loopback sockets");
        let (v4, v6) = flows.ports().expect("ports");
        for ports in [&v4, &v6] {
            if ports.is_empty() {
                continue;
            }
            let base = ports[0];
            let want: Vec<u16> = (base..).take(32).collect();
            assert_eq!(ports, &want, "not one run of ports");
        }
        assert_eq!(v4.len(), 32);
    }

    #[test]
    fn flow_sockets_have_ports_of_their_own_and_receive_nothing() {
        let flows = open_flow_sockets(4, 0, 1 << 20).expect("loopback sockets");
        let (v4, v6) = flows.ports().expect("ports");
        assert_eq!(v4.len(), 4);
        let mut distinct = v4.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "each its own port: {v4:?}");
        assert!(v6.is_empty() || v6.len() == 4, "{v6:?}");
        // A datagram sent to one is dropped by its filter, not queued.
        let sock = Socket::from(flows.v4[0].try_clone().expect("dup"));
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe");
        probe
            .send_to(b"anyone there?", ("127.0.0.1", v4[0]))
            .expect("send");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut buf = [std::mem::MaybeUninit::new(0u8); 64];
        let got = sock.recv(&mut buf);
        assert!(
            got.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::WouldBlock),
            "expected nothing queued, got {got:?}"
        );
        // They send, from their own port.
        let sender = std::net::UdpSocket::from(Socket::from(flows.v4[1].try_clone().expect("dup")));
        let to = probe.local_addr().expect("probe addr");
        sender
            .send_to(b"hello", to)
            .expect("send from a flow socket");
        let mut buf = [0u8; 16];
        probe.set_nonblocking(false).expect("blocking");
        probe
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let (n, from) = probe.recv_from(&mut buf).expect("the datagram");
        assert_eq!((&buf[..n], from.port()), (&b"hello"[..], v4[1]));
    }

    /// `SocketBuffer` reaches every socket, receive and send (the kernel
    /// reports twice what was asked, its bookkeeping included).
    #[test]
    fn the_socket_buffer_asked_for_is_the_one_given() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "under CI this test must run as root (SO_RCVBUFFORCE needs CAP_NET_ADMIN)"
            );
            eprintln!("SKIPPED the_socket_buffer_asked_for...: needs root (SO_RCVBUFFORCE)");
            return;
        }
        for buffer in [256 << 10, 3 << 20] {
            let opts = SocketOptions {
                port: 0,
                gro: false,
                fwmark: 0,
                buffer,
            };
            let (socks, _) = open_worker_sockets(2, opts).expect("loopback sockets");
            let flows = open_flow_sockets(2, 0, buffer).expect("flow sockets");
            for fd in socks
                .iter()
                .flat_map(|s| std::iter::once(&s.v4).chain(&s.v6))
            {
                let s = socket2::SockRef::from(fd);
                assert_eq!(s.recv_buffer_size().unwrap(), 2 * buffer);
                assert_eq!(s.send_buffer_size().unwrap(), 2 * buffer);
            }
            for fd in flows.v4.iter().chain(&flows.v6) {
                let s = socket2::SockRef::from(fd);
                assert_eq!(s.send_buffer_size().unwrap(), 2 * buffer);
            }
        }
    }

    #[test]
    fn workers_share_one_port() {
        let (socks, port) = open_worker_sockets(
            2,
            SocketOptions {
                port: 0,
                gro: true,
                fwmark: 0,
                buffer: 1 << 20,
            },
        )
        .expect("loopback sockets");
        assert_ne!(port, 0);
        assert_eq!(socks.len(), 2);
        for s in &socks {
            let sock = Socket::from(s.v4.try_clone().expect("dup"));
            assert_eq!(local_port(&sock).expect("port"), port);
        }
    }
}
