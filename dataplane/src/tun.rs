//! TUN (L3) and TAP (L2) devices opened with the kernel's own ioctls: one
//! queue fd per worker (`IFF_MULTI_QUEUE`), no packet-info prefix, and an
//! optional virtio-net header in front of every packet (`IFF_VNET_HDR`) that
//! carries segmentation offload.
//!
//! The device is not persistent: it disappears with its last queue fd, so a
//! crashed daemon leaves nothing behind.

use std::ffi::CStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use netctl::names::{IfNameError, check_ifname};
use thiserror::Error;

/// Which kind of device: TUN carries IP packets, TAP Ethernet frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// L3: IP packets, for `wireguard` mode.
    Tun,
    /// L2: Ethernet frames, for `vxlan` mode.
    Tap,
}

/// Size of the `virtio_net_hdr` the kernel puts in front of every packet
/// when `IFF_VNET_HDR` is on.
pub const VNET_HDR_LEN: usize = 10;

/// The offloads a device accepted, as `TUNSETOFFLOAD` bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads(pub u32);

impl Offloads {
    /// No offload: one packet per read, checksums complete.
    pub const NONE: Offloads = Offloads(0);
    /// The kernel may hand over packets with a partial checksum.
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    /// TCP segmentation offload, IPv4.
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    /// TCP segmentation offload, IPv6.
    pub const TSO6: u32 = libc::TUN_F_TSO6;
    /// UDP segmentation offload, IPv4.
    pub const USO4: u32 = libc::TUN_F_USO4;
    /// UDP segmentation offload, IPv6.
    pub const USO6: u32 = libc::TUN_F_USO6;

    /// Whether every bit of `flag` is on.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    /// Whether the device may hand over TCP super-packets.
    pub fn tso(self) -> bool {
        self.has(Self::TSO4) || self.has(Self::TSO6)
    }

    /// Whether the device may hand over UDP super-packets.
    pub fn uso(self) -> bool {
        self.has(Self::USO4) || self.has(Self::USO6)
    }

    /// Names of the offloads that are on, as `ringtun show` prints them.
    pub fn names(self) -> Vec<&'static str> {
        let all = [
            (Self::CSUM, "csum"),
            (Self::TSO4, "tso4"),
            (Self::TSO6, "tso6"),
            (Self::USO4, "uso4"),
            (Self::USO6, "uso6"),
        ];
        all.iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, name)| *name)
            .collect()
    }
}

/// Why a device could not be opened or configured.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TunError {
    /// `/dev/net/tun` is missing or not openable.
    #[error("cannot open /dev/net/tun: {0} (is the tun module loaded? `modprobe tun`)")]
    OpenCloneDevice(#[source] io::Error),
    /// The kernel refused `TUNSETIFF`.
    #[error("creating {kind} device {name} (queue {queue}) failed: {source}{hint}")]
    SetIff {
        /// `tun` or `tap`.
        kind: &'static str,
        /// Interface name.
        name: String,
        /// Queue number that failed.
        queue: usize,
        /// The kernel's answer.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The interface name is one the kernel would refuse ([`check_ifname`]).
    #[error("{name:?} is not a valid interface name: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        #[source]
        reason: IfNameError,
    },
    /// An ioctl other than `TUNSETIFF` failed.
    #[error("{what} on {name} failed: {source}")]
    Ioctl {
        /// Which request.
        what: &'static str,
        /// Interface name.
        name: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
}

/// The open queues of one TUN/TAP device.
#[derive(Debug)]
pub struct Device {
    /// Interface name.
    pub name: String,
    /// TUN or TAP.
    pub kind: DeviceKind,
    /// One fd per queue, non-blocking (io_uring then polls instead of
    /// punting reads to `iou-wrk` threads).
    pub queues: Vec<OwnedFd>,
    /// Whether every packet carries a virtio-net header.
    pub vnet_hdr: bool,
    /// Offloads the kernel accepted.
    pub offloads: Offloads,
}

fn ifreq_for(name: &str, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    req
}

impl Device {
    /// Opens (creating if needed) device `name` with `queues` queues.
    ///
    /// With `vnet_hdr`, every read and write carries a 10-byte
    /// `virtio_net_hdr`; `want_offloads` is then offered to the kernel,
    /// dropping the UDP bits and then everything if it refuses (older
    /// kernels answer `EINVAL` to bits they do not know).
    pub fn open(
        name: &str,
        kind: DeviceKind,
        queues: usize,
        vnet_hdr: bool,
        want_offloads: Offloads,
    ) -> Result<Device, TunError> {
        // Checked before TUNSETIFF: ifreq_for counts on at most 15 bytes to
        // keep the name NUL-terminated, and the kernel would answer a bad
        // name with a bare EINVAL.
        check_ifname(name).map_err(|reason| TunError::BadName {
            name: name.to_string(),
            reason,
        })?;
        let mut flags = libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
        flags |= match kind {
            DeviceKind::Tun => libc::IFF_TUN,
            DeviceKind::Tap => libc::IFF_TAP,
        };
        if vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        let kind_name = match kind {
            DeviceKind::Tun => "tun",
            DeviceKind::Tap => "tap",
        };
        let mut fds = Vec::with_capacity(queues.max(1));
        for queue in 0..queues.max(1) {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open("/dev/net/tun")
                .map_err(TunError::OpenCloneDevice)?;
            let mut req = ifreq_for(name, flags);
            // SAFETY: TUNSETIFF reads an ifreq that lives for the call.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
            if rc < 0 {
                let source = io::Error::last_os_error();
                let hint = match source.raw_os_error() {
                    Some(libc::EPERM) => {
                        ": creating a TUN/TAP device needs CAP_NET_ADMIN: run as root"
                    }
                    Some(libc::EBUSY) => {
                        ": the name is taken by another device or by a running instance"
                    }
                    Some(libc::EINVAL) => {
                        ": the name exists with other flags (not multi-queue, or another kind)"
                    }
                    _ => "",
                };
                return Err(TunError::SetIff {
                    kind: kind_name,
                    name: name.to_string(),
                    queue,
                    source,
                    hint,
                });
            }
            fds.push(OwnedFd::from(file));
        }
        let mut dev = Device {
            name: name.to_string(),
            kind,
            queues: fds,
            vnet_hdr,
            offloads: Offloads::NONE,
        };
        if vnet_hdr {
            dev.set_vnet_hdr_len()?;
            dev.offloads = dev.negotiate_offloads(want_offloads)?;
        }
        Ok(dev)
    }

    /// Applies an ioctl that takes its argument by value to every queue.
    fn ioctl_value(&self, request: libc::Ioctl, arg: libc::c_ulong) -> io::Result<()> {
        for fd in &self.queues {
            // SAFETY: the request takes its argument by value; no memory is shared.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn set_vnet_hdr_len(&self) -> Result<(), TunError> {
        let len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        for fd in &self.queues {
            // SAFETY: TUNSETVNETHDRSZ reads an int through the pointer for the call.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
            if rc < 0 {
                return Err(TunError::Ioctl {
                    what: "TUNSETVNETHDRSZ",
                    name: self.name.clone(),
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }

    /// Offers `want` and then smaller sets until the kernel accepts one.
    fn negotiate_offloads(&self, want: Offloads) -> Result<Offloads, TunError> {
        let tcp = want.0 & (Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6);
        let candidates = [want.0, tcp, tcp & Offloads::CSUM, 0];
        let mut last = None;
        for bits in candidates {
            match self.ioctl_value(libc::TUNSETOFFLOAD, libc::c_ulong::from(bits)) {
                Ok(()) => return Ok(Offloads(bits)),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(source) => {
                    return Err(TunError::Ioctl {
                        what: "TUNSETOFFLOAD",
                        name: self.name.clone(),
                        source,
                    });
                }
            }
        }
        Err(TunError::Ioctl {
            what: "TUNSETOFFLOAD",
            name: self.name.clone(),
            source: last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
        })
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }
}

/// Reads the interface name back from a queue fd (`TUNGETIFF`), as a check
/// that the fd is attached.
pub fn queue_ifname(fd: &OwnedFd) -> io::Result<String> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes an ifreq that lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel NUL-terminates ifr_name within IFNAMSIZ.
    let name = unsafe { CStr::from_ptr(req.ifr_name.as_ptr()) };
    Ok(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_names_list_what_is_on() {
        let o = Offloads(Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6);
        assert_eq!(o.names(), vec!["csum", "tso4", "tso6"]);
        assert!(o.tso());
        assert!(!o.uso());
    }
}
