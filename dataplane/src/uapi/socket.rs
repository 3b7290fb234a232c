//! Where the configuration socket lives and who may use it.
//!
//! A WireGuard interface's socket is `/var/run/wireguard/IFACE.sock`, made
//! as wireguard-go makes it: the directory 0755 and owned by root, the
//! socket 0600, a stale socket (one nobody answers on) replaced, a live one
//! refused. `wg`, `wg-quick` and every wgctrl-based tool look there. A
//! VXLAN interface is not a WireGuard one, so its socket (same protocol,
//! answering only ringtun's own requests) is `/var/run/ringtun/IFACE.sock`,
//! where `wg show all` does not look.
//!
//! The directory is shared by every network namespace of a host, so two
//! instances with one interface name collide. `RINGTUN_UAPI_DIR` (or
//! `--uapi-dir`) moves both sockets under another directory, for labs and
//! containers that run several such instances on one host.
//!
//! Beyond the file's mode, every connection's peer credentials
//! (`SO_PEERCRED`, taken by the kernel at connect time, so neither an exec
//! nor a reused pid can change them) must be uid 0 or the daemon's own uid.
//! Capabilities are not consulted: a process in a fresh user namespace has
//! them all, without being anyone.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::stat::{Mode, umask};

/// The environment variable that moves the sockets' directories.
pub const DIR_ENV: &str = "RINGTUN_UAPI_DIR";

/// Which kind of interface a socket serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A WireGuard interface: where the WireGuard tools look.
    WireGuard,
    /// A VXLAN interface: ringtun's own directory.
    Vxlan,
}

/// The directory a socket of `kind` goes in: `/var/run/wireguard` or
/// `/var/run/ringtun`, or below `base` (`RINGTUN_UAPI_DIR`) when given.
pub fn directory(kind: Kind, base: Option<&Path>) -> PathBuf {
    let name = match kind {
        Kind::WireGuard => "wireguard",
        Kind::Vxlan => "ringtun",
    };
    match base {
        Some(b) => b.join(name),
        None => Path::new("/var/run").join(name),
    }
}

/// The base directory from the environment, if set.
pub fn base_from_env() -> Option<PathBuf> {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The socket path of interface `iface`.
pub fn path(kind: Kind, base: Option<&Path>, iface: &str) -> PathBuf {
    let mut name = OsString::from(iface);
    name.push(".sock");
    directory(kind, base).join(name)
}

/// Why the socket could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Another process answers on the socket: it serves this interface.
    #[error(
        "another process serves {iface}: {path} answers (stop it, or give this interface another name)"
    )]
    InUse {
        /// The interface.
        iface: String,
        /// The socket.
        path: PathBuf,
    },
    /// Making the directory or the socket failed.
    #[error("making the configuration socket {path}: {source}")]
    Io {
        /// The socket or its directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The listening socket of one interface; removed from the file system when
/// dropped (if it is still the one this process made).
#[derive(Debug)]
pub struct UapiListener {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the file we made, so that drop never removes a
    /// socket another instance made after ours was taken away.
    id: (u64, u64),
    /// Directories to remove on drop if empty: those under a base given
    /// by the caller (never `/var/run/wireguard`, which wireguard-go and
    /// the tools share).
    empty_dirs: Vec<PathBuf>,
}

impl UapiListener {
    /// Makes the socket for `iface`: the directory (0755) if missing, the
    /// socket (0600). A stale socket is replaced; one that answers is
    /// [`BindError::InUse`]. Call before any thread starts: the mode comes
    /// from the process umask, set around the bind.
    pub fn bind(kind: Kind, base: Option<&Path>, iface: &str) -> Result<UapiListener, BindError> {
        let dir = directory(kind, base);
        let path = path(kind, base, iface);
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| BindError::Io { path: p, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(io_err(&dir))?;
        let listener = match bind_private(&path) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if UnixStream::connect(&path).is_ok() {
                    return Err(BindError::InUse {
                        iface: iface.to_string(),
                        path,
                    });
                }
                // Nobody answers: a socket left by a process that died.
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                bind_private(&path).map_err(io_err(&path))?
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        // The umask left it 0700 (nobody else could ever connect); 0600 is
        // what the tools expect to see.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&path))?;
        let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
        Ok(UapiListener {
            listener,
            path,
            id: (meta.dev(), meta.ino()),
            empty_dirs: base.map_or_else(Vec::new, |b| vec![dir, b.to_path_buf()]),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }
}

impl Drop for UapiListener {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
        for d in &self.empty_dirs {
            // Fails, as it should, while another instance's socket is there.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Binds with a umask that leaves the socket to its owner (0600).
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    let old = umask(Mode::from_bits_truncate(0o077));
    let r = UnixListener::bind(path);
    umask(old);
    r
}

/// Who is at the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its user id.
    pub uid: u32,
    /// Its process id (for logs only: it can be reused).
    pub pid: i32,
}

/// The peer's credentials as the kernel recorded them at connect time.
pub fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    let cred = getsockopt(&stream.as_fd(), PeerCredentials).map_err(io::Error::from)?;
    Ok(Peer {
        uid: cred.uid(),
        pid: cred.pid(),
    })
}

/// Whether `peer` may configure or read the interface: root, or the user
/// the daemon runs as.
pub fn allowed(peer: Peer, own_uid: u32) -> bool {
    peer.uid == 0 || peer.uid == own_uid
}

#[cfg(test)]
mod test {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringtun-uapi-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn the_socket_is_private_a_stale_one_is_replaced_a_live_one_refused() {
        let base = scratch("bind");
        let l = UapiListener::bind(Kind::WireGuard, Some(&base), "rt9").unwrap();
        let p = base.join("wireguard").join("rt9.sock");
        assert_eq!(l.path(), p);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
        let dmode = std::fs::metadata(base.join("wireguard"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o755, "directory mode {dmode:o}");
        assert!(matches!(
            UapiListener::bind(Kind::WireGuard, Some(&base), "rt9"),
            Err(BindError::InUse { .. })
        ));
        drop(l);
        assert!(!p.exists(), "removed on drop");
        // A socket nobody answers on (its listener gone, file kept).
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        drop(UnixListener::bind(&p).unwrap());
        assert!(p.exists());
        let again = UapiListener::bind(Kind::WireGuard, Some(&base), "rt9").unwrap();
        drop(again);
        assert!(!p.exists(), "removed on drop");
        let vx = UapiListener::bind(Kind::Vxlan, Some(&base), "rt9").unwrap();
        assert_eq!(vx.path(), base.join("ringtun").join("rt9.sock"));
        drop(vx);
        assert!(
            !base.exists(),
            "the directories it made under the base go with the last socket"
        );
    }

    #[test]
    fn drop_leaves_a_newer_socket_alone() {
        let base = scratch("newer");
        let old = UapiListener::bind(Kind::WireGuard, Some(&base), "rt8").unwrap();
        std::fs::remove_file(old.path()).unwrap();
        let new = UapiListener::bind(Kind::WireGuard, Some(&base), "rt8").unwrap();
        drop(old);
        assert!(
            new.path().exists(),
            "the old listener must not remove the new socket"
        );
        drop(new);
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn only_root_and_the_daemons_own_user_are_allowed() {
        let base = scratch("cred");
        let l = UapiListener::bind(Kind::WireGuard, Some(&base), "rt7").unwrap();
        let c = UnixStream::connect(l.path()).unwrap();
        let (s, _) = l.listener().accept().unwrap();
        let me = peer_of(&s).unwrap();
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(me.pid, std::process::id() as i32);
        drop(c);
        assert!(allowed(Peer { uid: 0, pid: 1 }, 1000));
        assert!(allowed(Peer { uid: 1000, pid: 1 }, 1000));
        assert!(!allowed(Peer { uid: 1001, pid: 1 }, 1000));
        drop(l);
        let _ = std::fs::remove_dir_all(&base);
    }
}
