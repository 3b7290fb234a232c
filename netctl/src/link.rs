//! Links: create (veth, bridge, dummy, VXLAN), change (up/down, MTU,
//! master/nomaster, namespace, name), delete, look up and list them with
//! kind, state, MTU, master, addresses and counters.
//!
//! TUN/TAP devices are made by ioctl, not netlink: see [`crate::tuntap`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::str::FromStr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, Nla};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType,
    LinkMessage, State,
};
use nix::errno::Errno;
use rtnetlink::{LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan};

use crate::mac::MacAddr;
use serde::Serialize;

use crate::addr::Address;
use crate::error::{Error, Result};
use crate::names::require_ifname;
use crate::netlink::{Failure, Netlink};
use crate::netns;

/// The IANA VXLAN port (RFC 7348 §5). netctl uses it when no `dstport` is
/// given; `ip` would leave the kernel's historical default, 8472.
pub const VXLAN_PORT: u16 = 4789;

/// What a link is, as the kernel's IFLA_INFO_KIND (and, for TUN/TAP, its
/// IFLA_TUN_TYPE) says.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// The loopback device.
    Loopback,
    /// A device without a kind: a physical NIC or a virtio device.
    Device,
    /// One end of a veth pair.
    Veth,
    /// A Linux bridge.
    Bridge,
    /// A dummy device.
    Dummy,
    /// A TUN device (L3).
    Tun,
    /// A TAP device (L2).
    Tap,
    /// A VXLAN device.
    Vxlan,
    /// Any other kind, by the kernel's name.
    Other(String),
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkKind::Loopback => "loopback",
            LinkKind::Device => "device",
            LinkKind::Veth => "veth",
            LinkKind::Bridge => "bridge",
            LinkKind::Dummy => "dummy",
            LinkKind::Tun => "tun",
            LinkKind::Tap => "tap",
            LinkKind::Vxlan => "vxlan",
            LinkKind::Other(kind) => kind,
        })
    }
}

impl FromStr for LinkKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "veth" => LinkKind::Veth,
            "bridge" => LinkKind::Bridge,
            "dummy" => LinkKind::Dummy,
            "tun" => LinkKind::Tun,
            "tap" => LinkKind::Tap,
            "vxlan" => LinkKind::Vxlan,
            other => {
                return Err(Error::Invalid(format!(
                    "unknown link type {other:?}: netctl makes veth, bridge, dummy, vxlan, tun and tap"
                )));
            }
        })
    }
}

/// Packet and byte counters of a link (IFLA_STATS64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// What the kernel reports about a TUN/TAP device (IFLA_INFO_DATA of kind "tun").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TunInfo {
    /// True for TAP (L2), false for TUN (L3).
    pub tap: bool,
    /// IFF_MULTI_QUEUE.
    pub multi_queue: bool,
    /// TUNSETPERSIST: the device outlives its file descriptors.
    pub persist: bool,
    /// IFF_VNET_HDR as last set by an attached queue.
    pub vnet_hdr: bool,
    /// Packet information header (the opposite of IFF_NO_PI).
    pub pi: bool,
    /// The owning user, if one was set.
    pub owner: Option<u32>,
    /// The owning group, if one was set.
    pub group: Option<u32>,
    /// Queues attached right now.
    pub queues: u32,
}

/// What the kernel reports about a VXLAN device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VxlanInfo {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Source address of outer packets.
    pub local: Option<IpAddr>,
    /// Unicast remote VTEP.
    pub remote: Option<IpAddr>,
    /// Multicast group.
    pub group: Option<IpAddr>,
    /// Destination UDP port.
    pub dstport: u16,
    /// Index of the underlay device (`dev`), if one was given.
    pub dev_index: Option<u32>,
    /// Whether the FDB learns source MACs.
    pub learning: bool,
}

/// One link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// What kind of device it is.
    pub kind: LinkKind,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier present (IFF_LOWER_UP).
    pub lower_up: bool,
    /// Operational state as `ip` prints it: UP, DOWN, UNKNOWN, LOWERLAYERDOWN, ...
    pub state: String,
    /// The IFF_* flags as `ip` prints them (BROADCAST, MULTICAST, UP, ...).
    pub flags: Vec<String>,
    /// MTU in bytes.
    pub mtu: u32,
    /// Name of the bridge this link is a port of.
    pub master: Option<String>,
    /// Index of that bridge.
    pub master_index: Option<u32>,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    /// IFLA_LINK: the peer's index for a veth, the lower device for others.
    pub link_index: Option<u32>,
    /// IFLA_LINK_NETNSID: set when `link_index` is in another namespace.
    pub link_netnsid: Option<i32>,
    /// Addresses on the link (filled by [`Netlink::link`] and [`Netlink::links`]).
    pub addresses: Vec<Address>,
    /// Counters.
    pub stats: Option<LinkStats>,
    /// TUN/TAP details.
    pub tun: Option<TunInfo>,
    /// VXLAN details.
    pub vxlan: Option<VxlanInfo>,
    /// Most segments in one GSO packet the stack builds for this link.
    pub gso_max_segs: Option<u32>,
}

/// A veth pair to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethConfig {
    /// This end's name (created in the handle's namespace).
    pub name: String,
    /// The other end's name.
    pub peer: String,
    /// Create the other end directly in this named namespace.
    pub peer_netns: Option<String>,
    /// MTU of this end (kernel default 1500).
    pub mtu: Option<u32>,
    /// MTU of the other end.
    pub peer_mtu: Option<u32>,
}

impl VethConfig {
    /// A pair `name`/`peer`, both in the handle's namespace, default MTU.
    pub fn new(name: &str, peer: &str) -> Self {
        VethConfig {
            name: name.to_string(),
            peer: peer.to_string(),
            peer_netns: None,
            mtu: None,
            peer_mtu: None,
        }
    }

    /// Puts the peer in the named namespace.
    pub fn peer_netns(mut self, netns: &str) -> Self {
        self.peer_netns = Some(netns.to_string());
        self
    }
}

/// A VXLAN device to create (`ip link add NAME type vxlan id VNI ...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanConfig {
    /// Device name.
    pub name: String,
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Source address of outer packets.
    pub local: Option<IpAddr>,
    /// Unicast remote VTEP (exclusive with `group`).
    pub remote: Option<IpAddr>,
    /// Multicast group (exclusive with `remote`; needs `dev`).
    pub group: Option<IpAddr>,
    /// Destination UDP port; [`VXLAN_PORT`] if `None`.
    pub dstport: Option<u16>,
    /// Underlay device name.
    pub dev: Option<String>,
    /// FDB learning (kernel default: on).
    pub learning: Option<bool>,
    /// Outer TTL.
    pub ttl: Option<u8>,
    /// MTU (kernel default: 1450 over a 1500 underlay).
    pub mtu: Option<u32>,
}

/// Where `link set ... netns` moves a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsTarget {
    /// A named namespace under /run/netns.
    Named(String),
    /// The namespace of a process.
    Pid(u32),
}

/// Several changes to one link, sent in one request as `ip link set` does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// Bring the link up (`Some(true)`) or down.
    pub up: Option<bool>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// `Some(Some(bridge))` enslaves, `Some(None)` releases (`nomaster`).
    pub master: Option<Option<String>>,
    /// Move the link to another namespace.
    pub netns: Option<NetnsTarget>,
    /// Rename the link.
    pub name: Option<String>,
    /// Most segments the stack may put in one GSO packet for this link
    /// (`gso_max_segs`): a tunnel caps it so one super-packet fits one
    /// `UDP_SEGMENT` send.
    pub gso_max_segs: Option<u32>,
    /// New hardware address (`address aa:bb:...`).
    pub address: Option<MacAddr>,
}

impl LinkChange {
    /// Describes the change for error messages (`up mtu 1400 master br0`).
    fn describe(&self) -> String {
        let mut words = Vec::new();
        if let Some(up) = self.up {
            words.push(if up {
                "up".to_string()
            } else {
                "down".to_string()
            });
        }
        if let Some(mtu) = self.mtu {
            words.push(format!("mtu {mtu}"));
        }
        match &self.master {
            Some(Some(m)) => words.push(format!("master {m}")),
            Some(None) => words.push("nomaster".to_string()),
            None => {}
        }
        match &self.netns {
            Some(NetnsTarget::Named(ns)) => words.push(format!("netns {ns}")),
            Some(NetnsTarget::Pid(pid)) => words.push(format!("netns {pid}")),
            None => {}
        }
        if let Some(name) = &self.name {
            words.push(format!("name {name}"));
        }
        if let Some(n) = self.gso_max_segs {
            words.push(format!("gso_max_segs {n}"));
        }
        if let Some(mac) = self.address {
            words.push(format!("address {mac}"));
        }
        words.join(" ")
    }
}

impl Netlink {
    /// Sends a create request for a link and turns EEXIST into
    /// [`Error::LinkExists`].
    fn create_link(&self, msg: LinkMessage, name: &str, what: &str) -> Result<()> {
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| match f.errno() {
                Some(Errno::EEXIST) => Error::LinkExists {
                    name: name.to_string(),
                    netns: self.ns(),
                },
                Some(Errno::EOPNOTSUPP) => Error::Kernel {
                    action: format!("creating {what} {name}"),
                    errno: Errno::EOPNOTSUPP,
                    message: "this kernel has no driver for it (load its module, or build it in)"
                        .to_string(),
                },
                _ => f.context(format!("creating {what} {name}")),
            })
    }

    /// Creates a veth pair, like `ip link add NAME type veth peer name PEER
    /// [netns NS]`. Both ends start DOWN with MTU 1500 unless told otherwise.
    pub fn add_veth(&self, cfg: &VethConfig) -> Result<()> {
        require_ifname(&cfg.name)?;
        require_ifname(&cfg.peer)?;
        // Kept open until the request is answered: the kernel reads it then.
        let peer_fd = cfg.peer_netns.as_deref().map(netns::open).transpose()?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(cfg.peer.clone());
        if let Some(fd) = &peer_fd {
            peer = peer.setns_by_fd(fd.as_raw_fd());
        }
        if let Some(mtu) = cfg.peer_mtu {
            peer = peer.mtu(mtu);
        }
        let mut builder = LinkVeth::new(&cfg.name, &cfg.peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())));
        if let Some(mtu) = cfg.mtu {
            builder = builder.mtu(mtu);
        }
        let result = self.request(
            RouteNetlinkMessage::NewLink(builder.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        );
        drop(peer_fd);
        result.map_err(|f| match f.errno() {
            // Either name can be the one taken: say which.
            Some(Errno::EEXIST) => {
                if self.link_index(&cfg.name).is_ok() {
                    Error::LinkExists {
                        name: cfg.name.clone(),
                        netns: self.ns(),
                    }
                } else {
                    Error::LinkExists {
                        name: cfg.peer.clone(),
                        netns: cfg.peer_netns.clone().or_else(|| self.ns()),
                    }
                }
            }
            _ => f.context(format!("creating a veth pair {}/{}", cfg.name, cfg.peer)),
        })
    }

    /// Creates a bridge, like `ip link add name NAME type bridge` (DOWN).
    pub fn add_bridge(&self, name: &str) -> Result<()> {
        require_ifname(name)?;
        // Not LinkBridge::new: that one also sets the bridge up, `ip` does not.
        let msg = LinkMessageBuilder::<LinkBridge>::new(name).build();
        self.create_link(msg, name, "a bridge")
    }

    /// Creates a dummy device, like `ip link add NAME type dummy`.
    pub fn add_dummy(&self, name: &str) -> Result<()> {
        require_ifname(name)?;
        self.create_link(LinkDummy::new(name).build(), name, "a dummy device")
    }

    /// Creates a VXLAN device, like `ip link add NAME type vxlan id VNI ...`.
    pub fn add_vxlan(&self, cfg: &VxlanConfig) -> Result<()> {
        require_ifname(&cfg.name)?;
        if cfg.vni >= 1 << 24 {
            return Err(Error::Invalid(format!(
                "vxlan {}: id {} does not fit the 24-bit VNI",
                cfg.name, cfg.vni
            )));
        }
        if cfg.remote.is_some() && cfg.group.is_some() {
            return Err(Error::Invalid(format!(
                "vxlan {}: give remote or group, not both",
                cfg.name
            )));
        }
        if let Some(remote) = cfg.remote
            && remote.is_multicast()
        {
            return Err(Error::Invalid(format!(
                "vxlan {}: remote {remote} is a multicast address: use group",
                cfg.name
            )));
        }
        if let Some(group) = cfg.group
            && !group.is_multicast()
        {
            return Err(Error::Invalid(format!(
                "vxlan {}: group {group} is not a multicast address: use remote",
                cfg.name
            )));
        }
        let mut b = LinkVxlan::new(&cfg.name, cfg.vni).port(cfg.dstport.unwrap_or(VXLAN_PORT));
        if let Some(dev) = &cfg.dev {
            b = b.dev(self.link_index(dev)?);
        }
        match cfg.local {
            Some(IpAddr::V4(a)) => b = b.local(a),
            Some(IpAddr::V6(a)) => b = b.local6(a),
            None => {}
        }
        // The kernel keeps remote and group in one attribute (IFLA_VXLAN_GROUP).
        match cfg.remote.or(cfg.group) {
            Some(IpAddr::V4(a)) => b = b.remote(a),
            Some(IpAddr::V6(a)) => b = b.remote6(a),
            None => {}
        }
        if let Some(learning) = cfg.learning {
            b = b.learning(learning);
        }
        if let Some(ttl) = cfg.ttl {
            b = b.ttl(ttl);
        }
        if let Some(mtu) = cfg.mtu {
            b = b.mtu(mtu);
        }
        self.create_link(b.build(), &cfg.name, "a vxlan device")
    }

    /// The index of a link, or [`Error::NoSuchDevice`].
    pub fn link_index(&self, name: &str) -> Result<u32> {
        Ok(self.link_message(name)?.header.index)
    }

    fn link_message(&self, name: &str) -> Result<LinkMessage> {
        require_ifname(name)?;
        let query = LinkMessageBuilder::<LinkUnspec>::new()
            .name(name.to_string())
            .build();
        match self.get(RouteNetlinkMessage::GetLink(query)) {
            Ok(RouteNetlinkMessage::NewLink(msg)) => Ok(msg),
            Ok(other) => Err(Error::Decode {
                action: format!("looking up {name}"),
                detail: format!("unexpected reply {other:?}"),
            }),
            Err(f) => Err(self.no_such_device(f, name, format!("looking up {name}"))),
        }
    }

    fn no_such_device(&self, f: Failure, name: &str, action: String) -> Error {
        match f.errno() {
            Some(Errno::ENODEV) => Error::NoSuchDevice {
                name: name.to_string(),
                netns: self.ns(),
            },
            _ => f.context(action),
        }
    }

    /// One link by name, with its addresses and counters.
    pub fn link(&self, name: &str) -> Result<Link> {
        let msg = self.link_message(name)?;
        let mut link = decode_link(&msg).ok_or_else(|| Error::Decode {
            action: format!("looking up {name}"),
            detail: "a link without a name".into(),
        })?;
        if let Some(master) = link.master_index {
            link.master = Some(self.link_name(master)?);
        }
        link.addresses = self.addrs_of_index(Some(link.index))?;
        Ok(link)
    }

    /// The name of the link with this index.
    pub fn link_name(&self, index: u32) -> Result<String> {
        let query = LinkMessageBuilder::<LinkUnspec>::new().index(index).build();
        match self.get(RouteNetlinkMessage::GetLink(query)) {
            Ok(RouteNetlinkMessage::NewLink(msg)) => {
                decode_link(&msg)
                    .map(|l| l.name)
                    .ok_or_else(|| Error::Decode {
                        action: format!("looking up link {index}"),
                        detail: "a link without a name".into(),
                    })
            }
            Ok(other) => Err(Error::Decode {
                action: format!("looking up link {index}"),
                detail: format!("unexpected reply {other:?}"),
            }),
            Err(f) => Err(self.no_such_device(
                f,
                &format!("#{index}"),
                format!("looking up link {index}"),
            )),
        }
    }

    /// Every link's name by index, from one dump: for listings that name
    /// links (routes, neighbours) without a request per entry.
    pub(crate) fn link_names(&self) -> Result<HashMap<u32, String>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|f| f.context("listing links"))?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(msg) => decode_link(msg).map(|l| (l.index, l.name)),
                _ => None,
            })
            .collect())
    }

    /// Every link in the namespace, with addresses and counters, by index.
    pub fn links(&self) -> Result<Vec<Link>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|f| f.context("listing links"))?;
        let mut links: Vec<Link> = replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(msg) => decode_link(msg),
                _ => None,
            })
            .collect();
        let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
        let mut addrs = self.addrs_of_index(None)?;
        for link in &mut links {
            link.master = link.master_index.and_then(|i| names.get(&i).cloned());
            let (mine, rest): (Vec<Address>, Vec<Address>) =
                addrs.into_iter().partition(|a| a.index == link.index);
            link.addresses = mine;
            addrs = rest;
        }
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// Counters of one link.
    pub fn link_stats(&self, name: &str) -> Result<LinkStats> {
        let msg = self.link_message(name)?;
        Ok(decode_link(&msg).and_then(|l| l.stats).unwrap_or_default())
    }

    /// Applies several changes in one request, like `ip link set dev NAME
    /// up mtu 1400 master br0`.
    pub fn link_set(&self, name: &str, change: &LinkChange) -> Result<()> {
        let index = self.link_index(name)?;
        let action = format!("setting {name} {}", change.describe());
        let mut b = LinkUnspec::new_with_index(index);
        match change.up {
            Some(true) => b = b.up(),
            Some(false) => b = b.down(),
            None => {}
        }
        if let Some(mtu) = change.mtu {
            b = b.mtu(mtu);
        }
        match &change.master {
            Some(Some(master)) => b = b.controller(self.link_index(master)?),
            Some(None) => b = b.nocontroller(),
            None => {}
        }
        if let Some(new_name) = &change.name {
            require_ifname(new_name)?;
            b = b.name(new_name.clone());
        }
        if let Some(n) = change.gso_max_segs {
            b = b.append_extra_attribute(LinkAttribute::GsoMaxSegs(n));
        }
        if let Some(mac) = change.address {
            if mac.is_multicast() {
                return Err(Error::Invalid(format!(
                    "{action}: {mac} is a multicast address and cannot be a link's own"
                )));
            }
            b = b.address(mac.0.to_vec());
        }
        // Kept open until the request is answered.
        let mut ns_fd = None;
        // As `ip`: a number is a pid unless a namespace has that name.
        let named = match &change.netns {
            Some(NetnsTarget::Named(ns)) => Some(ns.clone()),
            Some(NetnsTarget::Pid(pid)) if netns::exists(&pid.to_string()) => Some(pid.to_string()),
            _ => None,
        };
        match (&change.netns, named) {
            (_, Some(ns)) => {
                let fd = netns::open(&ns)?;
                b = b.setns_by_fd(fd.as_raw_fd());
                ns_fd = Some(fd);
            }
            (Some(NetnsTarget::Pid(pid)), None) => b = b.setns_by_pid(*pid),
            _ => {}
        }
        let result = self.request(RouteNetlinkMessage::SetLink(b.build()), 0);
        drop(ns_fd);
        result.map_err(|f| match (f.errno(), &change.name) {
            (Some(Errno::EEXIST), Some(new_name)) => Error::LinkExists {
                name: new_name.clone(),
                netns: self.ns(),
            },
            _ => self.no_such_device(f, name, action),
        })
    }

    /// `ip link set dev NAME gso_max_segs N`.
    pub fn set_gso_max_segs(&self, name: &str, segs: u32) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                gso_max_segs: Some(segs),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link set dev NAME up`.
    pub fn link_set_up(&self, name: &str) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                up: Some(true),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link set dev NAME down`.
    pub fn link_set_down(&self, name: &str) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                up: Some(false),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link set dev NAME address MAC`.
    pub fn set_address(&self, name: &str, mac: MacAddr) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                address: Some(mac),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link set dev NAME mtu MTU`.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                mtu: Some(mtu),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link set dev NAME master BRIDGE`.
    pub fn set_master(&self, name: &str, bridge: &str) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                master: Some(Some(bridge.to_string())),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link set dev NAME nomaster`.
    pub fn set_nomaster(&self, name: &str) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                master: Some(None),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link set dev NAME netns NS`: moves the link into a named namespace.
    pub fn move_to_netns(&self, name: &str, netns: &str) -> Result<()> {
        self.link_set(
            name,
            &LinkChange {
                netns: Some(NetnsTarget::Named(netns.to_string())),
                ..LinkChange::default()
            },
        )
    }

    /// `ip link delete dev NAME` (for a veth, the peer goes too).
    pub fn delete_link(&self, name: &str) -> Result<()> {
        let index = self.link_index(name)?;
        let msg = LinkUnspec::new_with_index(index).build();
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
            .map_err(|f| self.no_such_device(f, name, format!("deleting {name}")))
    }
}

/// Turns a kernel link message into a [`Link`] (addresses and master name
/// are filled in by the caller). `None` if it carries no name.
pub(crate) fn decode_link(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: if msg.header.link_layer_type == LinkLayerType::Loopback {
            LinkKind::Loopback
        } else {
            LinkKind::Device
        },
        up: msg.header.flags.contains(LinkFlags::Up),
        lower_up: msg.header.flags.contains(LinkFlags::LowerUp),
        state: "UNKNOWN".to_string(),
        flags: flag_words(msg.header.flags),
        mtu: 0,
        master: None,
        master_index: None,
        mac: None,
        link_index: None,
        link_netnsid: None,
        addresses: Vec::new(),
        stats: None,
        tun: None,
        vxlan: None,
        gso_max_segs: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::GsoMaxSegs(n) => link.gso_max_segs = Some(*n),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Controller(i) if *i != 0 => link.master_index = Some(*i),
            LinkAttribute::OperState(s) => link.state = state_word(*s),
            LinkAttribute::Address(mac) if !mac.is_empty() => {
                link.mac = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
            LinkAttribute::Link(i) if *i != 0 => link.link_index = Some(*i),
            LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(*id),
            LinkAttribute::Stats64(s) => {
                link.stats = Some(LinkStats {
                    rx_packets: s.rx_packets,
                    rx_bytes: s.rx_bytes,
                    rx_errors: s.rx_errors,
                    rx_dropped: s.rx_dropped,
                    tx_packets: s.tx_packets,
                    tx_bytes: s.tx_bytes,
                    tx_errors: s.tx_errors,
                    tx_dropped: s.tx_dropped,
                });
            }
            LinkAttribute::LinkInfo(infos) => decode_link_info(infos, &mut link),
            _ => {}
        }
    }
    link.name = name?;
    Some(link)
}

fn decode_link_info(infos: &[LinkInfo], link: &mut Link) {
    for info in infos {
        match info {
            LinkInfo::Kind(kind) => {
                link.kind = match kind {
                    InfoKind::Veth => LinkKind::Veth,
                    InfoKind::Bridge => LinkKind::Bridge,
                    InfoKind::Dummy => LinkKind::Dummy,
                    InfoKind::Tun => LinkKind::Tun,
                    InfoKind::Vxlan => LinkKind::Vxlan,
                    other => LinkKind::Other(other.to_string()),
                }
            }
            LinkInfo::Data(InfoData::Vxlan(attrs)) => link.vxlan = Some(decode_vxlan(attrs)),
            LinkInfo::Data(InfoData::Tun(attrs)) => {
                let tun = decode_tun(attrs);
                if tun.tap {
                    link.kind = LinkKind::Tap;
                }
                link.tun = Some(tun);
            }
            _ => {}
        }
    }
    // IFLA_INFO_DATA can come before or after IFLA_INFO_KIND.
    if link.tun.is_some_and(|t| t.tap) {
        link.kind = LinkKind::Tap;
    }
}

fn decode_vxlan(attrs: &[InfoVxlan]) -> VxlanInfo {
    let mut v = VxlanInfo {
        learning: true,
        ..VxlanInfo::default()
    };
    let mut peer = None;
    for attr in attrs {
        match attr {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Group(a) if !a.is_unspecified() => peer = Some(IpAddr::V4(*a)),
            InfoVxlan::Group6(a) if !a.is_unspecified() => peer = Some(IpAddr::V6(*a)),
            InfoVxlan::Local(a) if !a.is_unspecified() => v.local = Some(IpAddr::V4(*a)),
            InfoVxlan::Local6(a) if !a.is_unspecified() => v.local = Some(IpAddr::V6(*a)),
            InfoVxlan::Port(p) => v.dstport = *p,
            InfoVxlan::Link(i) if *i != 0 => v.dev_index = Some(*i),
            InfoVxlan::Learning(l) => v.learning = *l,
            _ => {}
        }
    }
    match peer {
        Some(a) if a.is_multicast() => v.group = Some(a),
        other => v.remote = other,
    }
    v
}

/// IFLA_TUN_* (linux/if_link.h, the "tun section" enum).
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_PI: u16 = 4;
const IFLA_TUN_VNET_HDR: u16 = 5;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;
const IFLA_TUN_NUM_QUEUES: u16 = 8;

fn decode_tun<T: Nla>(attrs: &[T]) -> TunInfo {
    let mut t = TunInfo::default();
    for attr in attrs {
        let mut value = vec![0u8; attr.value_len()];
        attr.emit_value(&mut value);
        let byte = value.first().copied().unwrap_or(0);
        let word = value
            .get(..4)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map(u32::from_ne_bytes);
        match attr.kind() {
            // IFF_TAP = 2
            IFLA_TUN_TYPE => t.tap = byte == 2,
            IFLA_TUN_PI => t.pi = byte != 0,
            IFLA_TUN_VNET_HDR => t.vnet_hdr = byte != 0,
            IFLA_TUN_PERSIST => t.persist = byte != 0,
            IFLA_TUN_MULTI_QUEUE => t.multi_queue = byte != 0,
            IFLA_TUN_NUM_QUEUES => t.queues = word.unwrap_or(0),
            IFLA_TUN_OWNER => t.owner = word,
            IFLA_TUN_GROUP => t.group = word,
            _ => {}
        }
    }
    t
}

fn state_word(state: State) -> String {
    match state {
        State::Up => "UP".into(),
        State::Down => "DOWN".into(),
        State::LowerLayerDown => "LOWERLAYERDOWN".into(),
        State::Dormant => "DORMANT".into(),
        State::Testing => "TESTING".into(),
        State::NotPresent => "NOTPRESENT".into(),
        _ => "UNKNOWN".into(),
    }
}

fn flag_words(flags: LinkFlags) -> Vec<String> {
    const WORDS: [(LinkFlags, &str); 8] = [
        (LinkFlags::Loopback, "LOOPBACK"),
        (LinkFlags::Broadcast, "BROADCAST"),
        (LinkFlags::Pointopoint, "POINTOPOINT"),
        (LinkFlags::Multicast, "MULTICAST"),
        (LinkFlags::Noarp, "NOARP"),
        (LinkFlags::Promisc, "PROMISC"),
        (LinkFlags::Up, "UP"),
        (LinkFlags::LowerUp, "LOWER_UP"),
    ];
    WORDS
        .iter()
        .filter(|(flag, _)| flags.contains(*flag))
        .map(|(_, word)| word.to_string())
        .collect()
}
