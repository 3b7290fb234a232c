//! The underlay UDP sockets: per worker one IPv4 and one IPv6 socket, all
//! bound to the listen port with `SO_REUSEPORT` so the kernel spreads peers
//! over workers by their 4-tuple.
//!
//! Every socket reports the local address a datagram arrived on
//! (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) so replies can leave from it, counts
//! receive-buffer overflows (`SO_RXQ_OVFL`) and, with offloads, accepts
//! coalesced receives (`UDP_GRO`).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// Socket buffer size asked for with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`:
/// large enough that a burst of GSO sends from the peer does not overflow
/// the receive queue while a worker is busy sealing.
pub const SOCKET_BUFFER_BYTES: usize = 32 << 20;

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

/// Options for the sockets.
#[derive(Clone, Copy, Debug)]
pub struct SocketOptions {
    /// Listen port; 0 picks one (the same for every worker).
    pub port: u16,
    /// Turn `UDP_GRO` on.
    pub gro: bool,
    /// `SO_MARK` of the tunnel's datagrams (wg's fwmark; 0: none).
    pub fwmark: u32,
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

fn one_socket(domain: Domain, port: u16, gro: bool, mark: u32) -> Result<Socket, UdpError> {
    let family = if domain == Domain::IPV4 {
        "IPv4"
    } else {
        "IPv6"
    };
    let opt = |option: &'static str| {
        move |source: io::Error| UdpError::Option {
            option,
            family,
            source,
        }
    };
    let sock = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(|source| UdpError::Create { family, source })?;
    sock.set_reuse_port(true).map_err(opt("SO_REUSEPORT"))?;
    if domain == Domain::IPV6 {
        sock.set_only_v6(true).map_err(opt("IPV6_V6ONLY"))?;
        setsockopt_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
            .map_err(opt("IPV6_RECVPKTINFO"))?;
    } else {
        setsockopt_int(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1).map_err(opt("IP_PKTINFO"))?;
    }
    setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).map_err(opt("SO_RXQ_OVFL"))?;
    // FORCE needs CAP_NET_ADMIN; without it fall back to what rmem_max allows.
    let size = SOCKET_BUFFER_BYTES as i32;
    if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES)
            .map_err(opt("SO_RCVBUF"))?;
    }
    if setsockopt_int(&sock, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        sock.set_send_buffer_size(SOCKET_BUFFER_BYTES)
            .map_err(opt("SO_SNDBUF"))?;
    }
    if gro {
        setsockopt_int(&sock, libc::SOL_UDP, libc::UDP_GRO, 1).map_err(opt("UDP_GRO"))?;
    }
    if mark != 0 {
        set_mark(&sock, mark).map_err(opt("SO_MARK (fwmark; needs CAP_NET_ADMIN)"))?;
    }
    let addr: SocketAddr = if domain == Domain::IPV4 {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into()
    } else {
        SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into()
    };
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

/// Opens `workers` socket pairs on `opts.port` and returns them with the
/// port actually bound (useful when `opts.port` is 0).
pub fn open_worker_sockets(
    workers: usize,
    opts: SocketOptions,
) -> Result<(Vec<WorkerSockets>, u16), UdpError> {
    let mut port = opts.port;
    let mut out = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let v4 = one_socket(Domain::IPV4, port, opts.gro, opts.fwmark)?;
        if port == 0 {
            port = local_port(&v4).map_err(|source| UdpError::Option {
                option: "getsockname",
                family: "IPv4",
                source,
            })?;
        }
        let v6 = match one_socket(Domain::IPV6, port, opts.gro, opts.fwmark) {
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
    Ok((out, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_one_port() {
        let (socks, port) = open_worker_sockets(
            2,
            SocketOptions {
                port: 0,
                gro: true,
                fwmark: 0,
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
