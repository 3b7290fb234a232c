//! Persistent TUN and TAP devices, made as `ip tuntap add` makes them: open
//! /dev/net/tun, TUNSETIFF, optionally TUNSETOWNER/TUNSETGROUP, then
//! TUNSETPERSIST so the device outlives the file descriptor.
//!
//! The device is created in the network namespace of the thread that opens
//! /dev/net/tun, so [`create_in`] does the whole job on a thread inside the
//! target namespace.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::link::LinkKind;
use crate::names::require_ifname;
use crate::netlink::Netlink;
use crate::netns;

/// The clone device every TUN/TAP queue is opened from.
pub const TUN_CLONE_DEVICE: &str = "/dev/net/tun";

/// Layer 3 (TUN) or layer 2 (TAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunMode {
    /// IP packets (IFF_TUN).
    Tun,
    /// Ethernet frames (IFF_TAP).
    Tap,
}

impl TunMode {
    /// "tun" or "tap".
    pub fn word(self) -> &'static str {
        match self {
            TunMode::Tun => "tun",
            TunMode::Tap => "tap",
        }
    }
}

/// A TUN/TAP device to create (`ip tuntap add dev NAME mode tun ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunTapConfig {
    /// Device name.
    pub name: String,
    /// TUN or TAP.
    pub mode: TunMode,
    /// IFF_MULTI_QUEUE: several queues (fds) can attach, one per worker.
    pub multi_queue: bool,
    /// Owning user: that user may attach without CAP_NET_ADMIN.
    pub owner: Option<u32>,
    /// Owning group.
    pub group: Option<u32>,
    /// IFF_VNET_HDR at creation (each attaching queue sets its own).
    pub vnet_hdr: bool,
    /// Keep the packet information header (`ip`'s `pi`; IFF_NO_PI otherwise).
    pub pi: bool,
}

impl TunTapConfig {
    /// A single-queue device of the given mode with no owner.
    pub fn new(name: &str, mode: TunMode) -> Self {
        TunTapConfig {
            name: name.to_string(),
            mode,
            multi_queue: false,
            owner: None,
            group: None,
            vnet_hdr: false,
            pi: false,
        }
    }
}

/// Creates a persistent TUN/TAP device in the calling thread's namespace.
pub fn create(cfg: &TunTapConfig) -> Result<()> {
    require_ifname(&cfg.name)?;
    let handle = Netlink::current()?;
    if handle.link_index(&cfg.name).is_ok() {
        return Err(Error::LinkExists {
            name: cfg.name.clone(),
            netns: None,
        });
    }
    let action = format!("creating {} device {}", cfg.mode.word(), cfg.name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_CLONE_DEVICE)
        .map_err(|e| {
            Error::io(
                format!("{action}: opening {TUN_CLONE_DEVICE}"),
                "CAP_NET_ADMIN",
                e,
            )
        })?;
    let fd = file.as_raw_fd();

    let mut flags = match cfg.mode {
        TunMode::Tun => libc::IFF_TUN,
        TunMode::Tap => libc::IFF_TAP,
    };
    if !cfg.pi {
        flags |= libc::IFF_NO_PI;
    }
    if cfg.multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    if cfg.vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(cfg.name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The flags field is a short; every IFF_* used above fits in 16 bits.
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    // SAFETY: fd is an open /dev/net/tun; TUNSETIFF reads and writes an
    // ifreq, and `ifr` is a live, properly sized one (name NUL-terminated:
    // require_ifname limits it to 15 bytes of a zeroed 16-byte array).
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(Error::io(
            format!("{action}: TUNSETIFF"),
            "CAP_NET_ADMIN",
            io::Error::last_os_error(),
        ));
    }
    if let Some(uid) = cfg.owner {
        // SAFETY: TUNSETOWNER takes the uid by value; fd is attached above.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETOWNER, libc::c_ulong::from(uid)) };
        if rc < 0 {
            return Err(Error::io(
                format!("{action}: TUNSETOWNER"),
                "CAP_NET_ADMIN",
                io::Error::last_os_error(),
            ));
        }
    }
    if let Some(gid) = cfg.group {
        // SAFETY: TUNSETGROUP takes the gid by value; fd is attached above.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETGROUP, libc::c_ulong::from(gid)) };
        if rc < 0 {
            return Err(Error::io(
                format!("{action}: TUNSETGROUP"),
                "CAP_NET_ADMIN",
                io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: TUNSETPERSIST takes an int flag by value; fd is attached above.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(Error::io(
            format!("{action}: TUNSETPERSIST"),
            "CAP_NET_ADMIN",
            io::Error::last_os_error(),
        ));
    }
    // Closing the fd detaches the queue; the device stays (persistent).
    drop(file);
    Ok(())
}

/// Creates a persistent TUN/TAP device in a named namespace (or the
/// caller's own for `None`).
pub fn create_in(netns: Option<&str>, cfg: &TunTapConfig) -> Result<()> {
    netns::run_in_opt(netns, || create(cfg))?.map_err(|e| match e {
        Error::LinkExists { name, .. } => Error::LinkExists {
            name,
            netns: netns.map(str::to_string),
        },
        other => other,
    })
}

/// Deletes a TUN/TAP device, like `ip tuntap del dev NAME mode MODE`;
/// refuses other kinds of link.
pub fn delete(handle: &Netlink, name: &str, mode: Option<TunMode>) -> Result<()> {
    let link = handle.link(name)?;
    let ok = matches!(
        (mode, &link.kind),
        (None, LinkKind::Tun | LinkKind::Tap)
            | (Some(TunMode::Tun), LinkKind::Tun)
            | (Some(TunMode::Tap), LinkKind::Tap)
    );
    if !ok {
        return Err(Error::Invalid(format!(
            "{name} is a {} device, not {}",
            link.kind,
            mode.map_or("tun or tap", TunMode::word)
        )));
    }
    handle.delete_link(name)
}
