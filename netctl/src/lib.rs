//! Linux network virtualization over netlink: named namespaces, veth pairs,
//! bridges, TUN/TAP, VXLAN, addresses, routes and sysctls, and declarative
//! topologies built from them. No shelling out to `ip`, no async runtime.
//!
//! Layers, bottom up:
//! - [`netlink`]: a synchronous NETLINK_ROUTE socket ([`Netlink`]): request
//!   and ACK by sequence number, multi-part dumps, kernel errors as errno
//!   plus the kernel's own explanation (extended ACK). Messages are built
//!   with rtnetlink's builders and serialised by netlink-packet-route.
//! - one module per object: [`netns`], [`link`], [`tuntap`], [`addr`],
//!   [`route`], [`sysctl`]; most are methods on [`Netlink`], whose
//!   namespace is fixed when it is opened ([`Netlink::in_netns`]).
//! - [`topology`] and [`apply`]: a TOML description applied idempotently,
//!   with rollback, and destroyed.
//! - the `netctl` binary: `ip`'s grammar over all of this.
//!
//! ```no_run
//! use netctl::{Netlink, VethConfig, netns};
//! # fn main() -> netctl::Result<()> {
//! netns::add("a")?;
//! netns::add("b")?;
//! let a = Netlink::in_netns("a")?;
//! a.add_veth(&VethConfig::new("veth0", "veth1").peer_netns("b"))?;
//! a.addr_add("veth0", "10.1.1.2/24".parse()?)?;
//! a.link_set_up("veth0")?;
//! # Ok(()) }
//! ```

pub mod addr;
pub mod apply;
pub mod error;
pub mod link;
pub mod mac;
pub mod names;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod ping;
pub mod prefix;
pub mod route;
pub mod sysctl;
pub mod topology;
pub mod tuntap;

pub use addr::{AddrOptions, Address};
pub use apply::{Applied, ApplyFailure, Destroyed};
pub use error::{Error, Result};
pub use link::{Link, LinkChange, LinkKind, LinkStats, NetnsTarget, VethConfig, VxlanConfig};
pub use mac::MacAddr;
pub use neigh::Neighbour;
pub use netlink::Netlink;
pub use prefix::{Family, IpPrefix};
pub use route::{Route, RouteEntry};
pub use topology::Topology;
pub use tuntap::{TunMode, TunTapConfig};
