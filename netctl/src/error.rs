//! The one error type of the library: every variant names the object it is
//! about, and prints a sentence that says what to do.

use std::fmt;
use std::io;

use nix::errno::Errno;

use crate::apply::ApplyFailure;
use crate::names::IfNameError;
use crate::prefix::Family;

/// Everything netctl can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A link with this name is already in the namespace.
    #[error("{name} already exists{}", InNetns(netns))]
    LinkExists {
        /// The link's name.
        name: String,
        /// The namespace looked in (`None`: the caller's own).
        netns: Option<String>,
    },
    /// No link with this name in the namespace.
    #[error("no such device {name}{}", InNetns(netns))]
    NoSuchDevice {
        /// The name that was looked up.
        name: String,
        /// The namespace looked in (`None`: the caller's own).
        netns: Option<String>,
    },
    /// A named namespace with this name is already under /run/netns.
    #[error("namespace {name} already exists")]
    NetnsExists {
        /// The namespace's name.
        name: String,
    },
    /// No named namespace with this name under /run/netns.
    #[error("no such namespace {name} (see `netctl netns list`)")]
    NoSuchNetns {
        /// The name that was looked up.
        name: String,
    },
    /// The address is already on the device.
    #[error("address {prefix} already exists on {dev}{}", InNetns(netns))]
    AddressExists {
        /// The address with its prefix length.
        prefix: String,
        /// The device.
        dev: String,
        /// The namespace (`None`: the caller's own).
        netns: Option<String>,
    },
    /// The address is not on the device.
    #[error("address {prefix} is not on {dev}{}", InNetns(netns))]
    NoSuchAddress {
        /// The address with its prefix length.
        prefix: String,
        /// The device.
        dev: String,
        /// The namespace (`None`: the caller's own).
        netns: Option<String>,
    },
    /// A route to this destination is already in the table.
    #[error("route to {dest} already exists{}", InNetns(netns))]
    RouteExists {
        /// The destination prefix.
        dest: String,
        /// The namespace (`None`: the caller's own).
        netns: Option<String>,
    },
    /// No route matched the one to delete.
    #[error("no such route to {dest}{}", InNetns(netns))]
    NoSuchRoute {
        /// The destination prefix.
        dest: String,
        /// The namespace (`None`: the caller's own).
        netns: Option<String>,
    },
    /// Text that should have been an address with a prefix length.
    #[error("{input} is not an {family} prefix")]
    BadPrefix {
        /// What was given.
        input: String,
        /// The family it looked like.
        family: Family,
    },
    /// Text that should have been an IP address.
    #[error("{input} is not an IP address")]
    BadAddress {
        /// What was given.
        input: String,
    },
    /// A route destination with bits set beyond its prefix length.
    #[error("{input} has host bits set: did you mean {network}?")]
    HostBitsSet {
        /// What was given.
        input: String,
        /// The same prefix with the host bits cleared.
        network: String,
    },
    /// An interface name the kernel would refuse ([`check_ifname`]).
    ///
    /// [`check_ifname`]: crate::names::check_ifname
    #[error("{input:?} is not a valid interface name: {reason}")]
    BadIfName {
        /// What was given.
        input: String,
        /// Which rule it breaks.
        #[source]
        reason: IfNameError,
    },
    /// A namespace name the kernel would refuse.
    #[error("{input:?} is not a valid {what} name: {reason}")]
    BadName {
        /// What was named: "namespace".
        what: &'static str,
        /// What was given.
        input: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A sysctl key that netctl will not touch or that does not exist.
    #[error("sysctl {key}: {reason}")]
    BadSysctl {
        /// The key as given.
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// The caller lacks a capability.
    #[error("{action} needs {capability}: run as root")]
    NeedsPrivilege {
        /// What was being done, e.g. "creating a bridge br0".
        action: String,
        /// The capability the kernel checks, e.g. `CAP_NET_ADMIN`.
        capability: &'static str,
    },
    /// The kernel refused a netlink request.
    #[error("{action}: {message} ({errno})")]
    Kernel {
        /// What was being done, e.g. "setting veth0 master br0".
        action: String,
        /// The errno of the kernel's NLMSG_ERROR.
        errno: Errno,
        /// The kernel's extended-ACK message when it sent one, else strerror.
        message: String,
    },
    /// A system call outside netlink failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel sent something netctl could not decode.
    #[error("{action}: cannot decode the kernel's reply: {detail}")]
    Decode {
        /// What was being done.
        action: String,
        /// What went wrong.
        detail: String,
    },
    /// A request that makes no sense, caught before it reaches the kernel.
    #[error("{0}")]
    Invalid(String),
    /// A topology file that cannot be read or is inconsistent.
    #[error("{path}: {message}")]
    Topology {
        /// The file (or `<string>` when parsed from memory).
        path: String,
        /// What is wrong, naming the object.
        message: String,
    },
    /// An object of a topology exists with attributes other than the file's.
    #[error("{object} exists with {field} {found}, but the topology says {wanted}")]
    Mismatch {
        /// The object, e.g. "link veth0 in namespace t-a".
        object: String,
        /// The attribute that differs.
        field: &'static str,
        /// What the kernel has.
        found: String,
        /// What the file asks for.
        wanted: String,
    },
    /// Applying a topology failed; what it had created was rolled back.
    #[error("{0}")]
    Apply(Box<ApplyFailure>),
}

impl Error {
    /// The kernel's errno, when the error came from a system call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Error::Apply(failure) => failure.error.errno(),
            _ => None,
        }
    }

    /// An I/O error with what was being done; EPERM and EACCES become
    /// [`Error::NeedsPrivilege`] with the capability the call needs.
    pub(crate) fn io(
        action: impl Into<String>,
        capability: &'static str,
        source: io::Error,
    ) -> Self {
        let action = action.into();
        match source.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EPERM | Errno::EACCES) => Error::NeedsPrivilege { action, capability },
            _ => Error::Io { action, source },
        }
    }
}

/// Prints " in namespace NAME" after an object when it is not in the caller's
/// own namespace.
struct InNetns<'a>(&'a Option<String>);

impl fmt::Display for InNetns<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => Ok(()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
