//! The control socket: an abstract UNIX socket named `ringtun/IFACE`.
//! Abstract sockets belong to a network namespace, so two gateways in two
//! namespaces of one host never clash, and nothing is left in the file
//! system after a crash. Only root or a holder of CAP_NET_ADMIN may talk to
//! it (checked with `SO_PEERCRED`).
//!
//! The protocol is one request line (`show` or `down`) and one answer:
//! the status as JSON, or `ok`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use thiserror::Error;

use crate::status::InterfaceStatus;

/// Largest answer a client accepts (a status with thousands of peers fits).
const MAX_ANSWER: u64 = 16 << 20;

/// The socket's abstract name for an interface.
pub fn socket_name(iface: &str) -> String {
    format!("ringtun/{iface}")
}

/// A request a client can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// The status as JSON.
    Show,
    /// Stop the daemon.
    Down,
}

/// Why talking to a daemon failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CtlError {
    /// Nobody listens on the interface's socket.
    #[error(
        "no ringtun instance for interface {iface} in this network namespace (is it up? run this inside the namespace the daemon runs in, e.g. `ip netns exec NS ringtun ...`)"
    )]
    NotRunning {
        /// Interface name.
        iface: String,
    },
    /// The daemon refused us.
    #[error("ringtun for {iface} refused the request: {reason}")]
    Refused {
        /// Interface name.
        iface: String,
        /// What it said.
        reason: String,
    },
    /// Socket trouble.
    #[error("talking to ringtun for {iface}: {source}")]
    Io {
        /// Interface name.
        iface: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The answer was not what the protocol says.
    #[error("ringtun for {iface} sent an answer that is not a status: {detail}")]
    BadAnswer {
        /// Interface name.
        iface: String,
        /// What was wrong.
        detail: String,
    },
}

/// Binds the listening socket for `iface` (non-blocking, for polling).
pub fn listen(iface: &str) -> io::Result<UnixListener> {
    let addr = SocketAddr::from_abstract_name(socket_name(iface).as_bytes())?;
    let l = UnixListener::bind_addr(&addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another ringtun already serves {iface} in this network namespace"),
            )
        } else {
            e
        }
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The uid and pid of the process at the other end.
fn peer_cred(s: &UnixStream) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes a ucred into our local of the given size.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}

/// Whether process `pid` holds CAP_NET_ADMIN in its effective set.
fn has_net_admin(pid: i32) -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Reads one request from an accepted connection, checking who asks.
pub fn read_request(s: &UnixStream) -> Result<Request, String> {
    let cred = peer_cred(s).map_err(|e| format!("cannot identify the caller: {e}"))?;
    if cred.uid != 0 && !has_net_admin(cred.pid) {
        return Err("needs root or CAP_NET_ADMIN".to_string());
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(s.take(256))
        .read_line(&mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    match line.trim() {
        "show" => Ok(Request::Show),
        "down" => Ok(Request::Down),
        other => Err(format!("unknown request {other:?} (expected show or down)")),
    }
}

/// Writes an answer; errors are the client's problem (it went away).
pub fn answer(mut s: &UnixStream, text: &str) {
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(text.as_bytes());
}

fn connect(iface: &str) -> Result<UnixStream, CtlError> {
    let io = |source| CtlError::Io {
        iface: iface.to_string(),
        source,
    };
    let addr = SocketAddr::from_abstract_name(socket_name(iface).as_bytes()).map_err(io)?;
    match UnixStream::connect_addr(&addr) {
        Ok(s) => Ok(s),
        Err(e)
            if e.kind() == io::ErrorKind::ConnectionRefused
                || e.kind() == io::ErrorKind::NotFound =>
        {
            Err(CtlError::NotRunning {
                iface: iface.to_string(),
            })
        }
        Err(e) => Err(io(e)),
    }
}

fn request(iface: &str, req: &str) -> Result<String, CtlError> {
    let io = |source| CtlError::Io {
        iface: iface.to_string(),
        source,
    };
    let mut s = connect(iface)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    s.write_all(format!("{req}\n").as_bytes()).map_err(io)?;
    let mut out = String::new();
    s.take(MAX_ANSWER).read_to_string(&mut out).map_err(io)?;
    if let Some(reason) = out.strip_prefix("error: ") {
        return Err(CtlError::Refused {
            iface: iface.to_string(),
            reason: reason.trim().to_string(),
        });
    }
    Ok(out)
}

/// Asks the daemon for its status.
pub fn show(iface: &str) -> Result<InterfaceStatus, CtlError> {
    let text = request(iface, "show")?;
    serde_json::from_str(&text).map_err(|e| CtlError::BadAnswer {
        iface: iface.to_string(),
        detail: e.to_string(),
    })
}

/// Asks the daemon to stop.
pub fn down(iface: &str) -> Result<(), CtlError> {
    let text = request(iface, "down")?;
    if text.trim() == "ok" {
        Ok(())
    } else {
        Err(CtlError::BadAnswer {
            iface: iface.to_string(),
            detail: text,
        })
    }
}

/// Lists the interfaces with a daemon in this namespace, from the kernel's
/// table of UNIX sockets (abstract names show as `@ringtun/IFACE`).
pub fn running_interfaces() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter_map(|p| p.strip_prefix("@ringtun/"))
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    v
}
