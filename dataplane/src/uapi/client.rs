//! The client side of the configuration socket: what `ringtun show`,
//! `ringtun down` and ringtun's own tests use. It speaks the same protocol
//! as `wg` (one connection per request, the answer read to its empty line).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use super::protocol::{self, DeviceDump, Errno, ProtoError, Request, SetRequest};
use super::socket::{self, Kind};
use crate::status::InterfaceStatus;

/// How long a client waits for an answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);
/// Largest answer a client reads (a `get` of thousands of peers fits).
const MAX_ANSWER: u64 = 64 << 20;

/// Why talking to a daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing serves the interface.
    #[error(
        "no ringtun instance for interface {iface} (no socket answers at {}; is it up? with RINGTUN_UAPI_DIR set, the same value must be set here)",
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    )]
    NotRunning {
        /// The interface.
        iface: String,
        /// Where we looked.
        paths: Vec<PathBuf>,
    },
    /// The daemon refused the request.
    #[error("ringtun for {iface} refused the request: {errno}")]
    Refused {
        /// The interface.
        iface: String,
        /// Its answer.
        errno: Errno,
    },
    /// Socket trouble (including a timeout, and a refused permission).
    #[error("talking to ringtun for {iface} at {}: {source}", path.display())]
    Io {
        /// The interface.
        iface: String,
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The answer was not the protocol.
    #[error("ringtun for {iface} sent an answer that is not the protocol: {detail}")]
    BadAnswer {
        /// The interface.
        iface: String,
        /// What was wrong.
        detail: String,
    },
}

/// Where the socket of `iface` is: the WireGuard directory, else ringtun's.
fn find(iface: &str, base: Option<&Path>) -> Result<PathBuf, ClientError> {
    let paths: Vec<PathBuf> = [Kind::WireGuard, Kind::Vxlan]
        .iter()
        .map(|&k| socket::path(k, base, iface))
        .collect();
    paths
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or(ClientError::NotRunning {
            iface: iface.to_string(),
            paths,
        })
}

/// Sends `request` to the daemon of `iface` and reads its whole answer.
fn exchange(iface: &str, request: &Request) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    exchange_in(socket::base_from_env().as_deref(), iface, request)
}

/// [`exchange`] with the socket directories below `base`, whatever the
/// environment says.
fn exchange_in(
    base: Option<&Path>,
    iface: &str,
    request: &Request,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let path = find(iface, base)?;
    let io_err = |source| ClientError::Io {
        iface: iface.to_string(),
        path: path.clone(),
        source,
    };
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ClientError::NotRunning {
                iface: iface.to_string(),
                paths: vec![path],
            });
        }
        Err(e) => return Err(io_err(e)),
    };
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err)?;
    stream
        .set_write_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err)?;
    let mut out = Zeroizing::new(Vec::new());
    protocol::write_request(request, &mut out);
    stream.write_all(&out).map_err(io_err)?;
    let mut answer = Zeroizing::new(Vec::new());
    let mut chunk = Zeroizing::new([0u8; 4096]);
    let mut limited = (&stream).take(MAX_ANSWER);
    loop {
        if let Some(n) = protocol::answer_len(&answer) {
            answer.truncate(n);
            return Ok(answer);
        }
        let n = limited.read(&mut chunk[..]).map_err(io_err)?;
        if n == 0 {
            return Err(ClientError::BadAnswer {
                iface: iface.to_string(),
                detail: format!("the connection closed after {} bytes", answer.len()),
            });
        }
        answer.extend_from_slice(&chunk[..n]);
    }
}

fn answer_error(iface: &str, e: ProtoError) -> ClientError {
    if e.errno == Errno::Protocol {
        ClientError::BadAnswer {
            iface: iface.to_string(),
            detail: e.to_string(),
        }
    } else {
        ClientError::Refused {
            iface: iface.to_string(),
            errno: e.errno,
        }
    }
}

/// ringtun's status of `iface`.
pub fn show(iface: &str) -> Result<InterfaceStatus, ClientError> {
    show_in(socket::base_from_env().as_deref(), iface)
}

/// [`show`] for a daemon whose sockets are below `base` (its
/// `RINGTUN_UAPI_DIR`; `None`: the standard directories).
pub fn show_in(base: Option<&Path>, iface: &str) -> Result<InterfaceStatus, ClientError> {
    let answer = exchange_in(base, iface, &Request::Show)?;
    let json = protocol::parse_show_answer(&answer).map_err(|e| answer_error(iface, e))?;
    serde_json::from_str(&json).map_err(|e| ClientError::BadAnswer {
        iface: iface.to_string(),
        detail: e.to_string(),
    })
}

/// Asks the daemon of `iface` to stop.
pub fn down(iface: &str) -> Result<(), ClientError> {
    let answer = exchange(iface, &Request::Down)?;
    protocol::parse_errno_answer(&answer).map_err(|e| answer_error(iface, e))
}

/// Asks the daemon of `iface` to read its configuration file again.
pub fn reload(iface: &str) -> Result<(), ClientError> {
    let answer = exchange(iface, &Request::Reload)?;
    protocol::parse_errno_answer(&answer).map_err(|e| answer_error(iface, e))
}

/// The device and peers of `iface`, as `wg show` reads them.
pub fn get(iface: &str) -> Result<DeviceDump, ClientError> {
    let answer = exchange(iface, &Request::Get)?;
    protocol::parse_get_answer(&answer).map_err(|e| answer_error(iface, e))
}

/// Changes the configuration of `iface` (all of `set`, or none of it).
pub fn set(iface: &str, set: SetRequest) -> Result<(), ClientError> {
    let answer = exchange(iface, &Request::Set(set))?;
    protocol::parse_errno_answer(&answer).map_err(|e| answer_error(iface, e))
}

/// The interfaces with a socket in either directory, sorted.
pub fn interfaces() -> Vec<String> {
    let base = socket::base_from_env();
    let mut names: Vec<String> = [Kind::WireGuard, Kind::Vxlan]
        .iter()
        .filter_map(|&k| std::fs::read_dir(socket::directory(k, base.as_deref())).ok())
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".sock"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
