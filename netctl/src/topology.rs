//! Declarative topologies: a TOML file (or a value built in code) naming
//! namespaces, links with their ends' namespaces, bridges and their
//! members, addresses, routes and sysctls. [`Topology::apply`] and
//! [`Topology::destroy`] live in [`crate::apply`].
//!
//! Every object lives in a namespace the topology declares, and every
//! namespace name gets the prefix in front, so the same file can be applied
//! many times side by side and applying never touches the caller's own
//! namespace. The schema is documented by `netctl/examples/topology.toml`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::link::{VXLAN_PORT, VxlanConfig};
use crate::mac::MacAddr;
use crate::names::{check_netns_name, require_ifname};
use crate::prefix::{Family, IpPrefix};
use crate::route::Route;
use crate::sysctl;
use crate::tuntap::{TunMode, TunTapConfig};

/// A whole topology.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Put in front of every namespace name (`--prefix` overrides it).
    #[serde(default)]
    pub prefix: String,
    /// The namespaces, created first.
    #[serde(default, rename = "namespace")]
    pub namespaces: Vec<NamespaceSpec>,
    /// The links, each in one of the namespaces.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
    /// The routes, added last.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
}

/// A namespace and its sysctls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Name without the prefix.
    pub name: String,
    /// Bring `lo` up when the namespace is created (default true; `ip netns
    /// add` leaves it down, which breaks pinging one's own addresses).
    #[serde(default = "yes")]
    pub loopback_up: bool,
    /// `net.*` sysctls, e.g. `"net.ipv4.ip_forward" = 1`. Keys naming a
    /// device are applied once the links exist.
    #[serde(default)]
    pub sysctls: BTreeMap<String, SysctlValue>,
}

/// A sysctl value: TOML integers and strings are both accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SysctlValue {
    /// An integer, e.g. `1`.
    Int(i64),
    /// Anything else, written verbatim, e.g. `"4096 131072"`.
    Text(String),
}

impl fmt::Display for SysctlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysctlValue::Int(i) => write!(f, "{i}"),
            SysctlValue::Text(t) => f.write_str(t),
        }
    }
}

/// The kinds of link a topology can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKindSpec {
    /// One end of a veth pair.
    Veth,
    /// A bridge.
    Bridge,
    /// A dummy device.
    Dummy,
    /// A persistent TUN device.
    Tun,
    /// A persistent TAP device.
    Tap,
    /// A VXLAN device.
    Vxlan,
}

impl fmt::Display for LinkKindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkKindSpec::Veth => "veth",
            LinkKindSpec::Bridge => "bridge",
            LinkKindSpec::Dummy => "dummy",
            LinkKindSpec::Tun => "tun",
            LinkKindSpec::Tap => "tap",
            LinkKindSpec::Vxlan => "vxlan",
        })
    }
}

/// A link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The namespace it lives in (without the prefix).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: LinkKindSpec,
    /// veth only: the other end. The pair is created from the entry that
    /// names a peer; the other end may have an entry of its own (kind veth,
    /// no peer) for its MTU, master, addresses and state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerSpec>,
    /// MTU; the kernel's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Bring it up (default true).
    #[serde(default = "yes")]
    pub up: bool,
    /// The bridge (in the same namespace) it is a port of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Addresses: `"10.1.1.2/24"` or `{ address = "fd00::2/64", nodad = true }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddressSpec>,
    /// vxlan only: its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanSpec>,
    /// tun/tap only: queue and ownership options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun: Option<TunSpec>,
    /// Its hardware address. Pin a bridge's: without one the kernel gives
    /// it the lowest address among its ports, which changes (and flushes
    /// its neighbour entries) whenever a port comes or goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

impl LinkSpec {
    /// A link of `kind` named `name` in `namespace`, up, with nothing else.
    pub fn new(namespace: &str, name: &str, kind: LinkKindSpec) -> Self {
        LinkSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            kind,
            peer: None,
            mtu: None,
            up: true,
            master: None,
            addresses: Vec::new(),
            vxlan: None,
            tun: None,
            mac: None,
        }
    }

    /// The TUN/TAP configuration this entry describes.
    pub fn tuntap_config(&self) -> Option<TunTapConfig> {
        let mode = match self.kind {
            LinkKindSpec::Tun => TunMode::Tun,
            LinkKindSpec::Tap => TunMode::Tap,
            _ => return None,
        };
        let opts = self.tun.clone().unwrap_or_default();
        Some(TunTapConfig {
            multi_queue: opts.multi_queue,
            owner: opts.user,
            group: opts.group,
            vnet_hdr: opts.vnet_hdr,
            ..TunTapConfig::new(&self.name, mode)
        })
    }

    /// The VXLAN configuration this entry describes.
    pub fn vxlan_config(&self) -> Option<VxlanConfig> {
        let v = self.vxlan.as_ref()?;
        Some(VxlanConfig {
            name: self.name.clone(),
            vni: v.vni,
            local: v.local,
            remote: v.remote,
            group: v.group,
            dstport: Some(v.dstport.unwrap_or(VXLAN_PORT)),
            dev: v.dev.clone(),
            learning: v.learning,
            ttl: v.ttl,
            mtu: self.mtu,
        })
    }
}

/// The other end of a veth pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Its name.
    pub name: String,
    /// Its namespace (without the prefix).
    pub namespace: String,
}

/// VXLAN parameters, as `ip link add NAME type vxlan ...` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanSpec {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Outer source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<IpAddr>,
    /// Unicast remote VTEP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpAddr>,
    /// Multicast group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<IpAddr>,
    /// UDP destination port (default 4789).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dstport: Option<u16>,
    /// Underlay device, in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// FDB learning (kernel default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning: Option<bool>,
    /// Outer TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
}

/// TUN/TAP options, as `ip tuntap add` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunSpec {
    /// IFF_MULTI_QUEUE.
    #[serde(default)]
    pub multi_queue: bool,
    /// Owning uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// Owning gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// IFF_VNET_HDR at creation.
    #[serde(default)]
    pub vnet_hdr: bool,
}

/// An address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AddressSpec {
    /// Address and prefix length.
    pub address: IpPrefix,
    /// IPv6: skip duplicate address detection (usable at once).
    pub nodad: bool,
}

impl AddressSpec {
    /// An address with DAD as the kernel does it.
    pub fn new(address: IpPrefix) -> Self {
        AddressSpec {
            address,
            nodad: false,
        }
    }
}

impl<'de> Deserialize<'de> for AddressSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AddressVisitor;

        impl<'de> Visitor<'de> for AddressVisitor {
            type Value = AddressSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an address like \"10.1.1.2/24\" or { address = \"fd00::2/64\", nodad = true }",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<AddressSpec, E> {
                v.parse().map(AddressSpec::new).map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AddressSpec, A::Error> {
                let mut address = None;
                let mut nodad = false;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "address" => {
                            let text: String = map.next_value()?;
                            address = Some(text.parse::<IpPrefix>().map_err(de::Error::custom)?);
                        }
                        "nodad" => nodad = map.next_value()?,
                        other => {
                            return Err(de::Error::unknown_field(other, &["address", "nodad"]));
                        }
                    }
                }
                let address = address.ok_or_else(|| de::Error::missing_field("address"))?;
                Ok(AddressSpec { address, nodad })
            }
        }

        d.deserialize_any(AddressVisitor)
    }
}

/// A route in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The namespace (without the prefix).
    pub namespace: String,
    /// `"default"` (IPv4, or IPv6 when `via`/`src` is IPv6), `"::/0"`, or a
    /// prefix such as `"10.2.0.0/24"`.
    pub to: String,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<IpAddr>,
    /// Output device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    /// Preferred source address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    /// Routing table (default: main).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// The gateway is on the link even without a prefix that says so.
    #[serde(default)]
    pub onlink: bool,
}

impl RouteSpec {
    /// The route this entry describes.
    pub fn route(&self) -> Result<Route> {
        let dest = if self.to == "default" {
            let family = self
                .via
                .or(self.src)
                .map_or(Family::Ipv4, |a| Family::of(&a));
            IpPrefix::default_route(family)
        } else {
            IpPrefix::parse_network(&self.to)?
        };
        let route = Route {
            dest,
            via: self.via,
            dev: self.dev.clone(),
            metric: self.metric,
            src: self.src,
            table: self.table,
            onlink: self.onlink,
        };
        Ok(route)
    }
}

fn yes() -> bool {
    true
}

impl Topology {
    /// Reads and checks a topology file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Topology {
            path: shown.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        Topology::parse(&text, &shown)
    }

    /// Parses and checks a topology from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let topology: Topology = toml::from_str(text).map_err(|e| Error::Topology {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        topology.validate().map_err(|message| Error::Topology {
            path: origin.to_string(),
            message,
        })?;
        Ok(topology)
    }

    /// The prefix in effect: the override if given, else the file's.
    pub fn effective_prefix<'a>(&'a self, prefix: Option<&'a str>) -> &'a str {
        prefix.unwrap_or(&self.prefix)
    }

    /// A namespace's full name under a prefix.
    pub fn netns_name(&self, prefix: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.effective_prefix(prefix))
    }

    /// The entry describing the veth end `(namespace, name)` whose pair is
    /// created by another entry, if there is one.
    pub(crate) fn peer_entry(&self, namespace: &str, name: &str) -> Option<&LinkSpec> {
        self.links.iter().find(|l| {
            l.kind == LinkKindSpec::Veth
                && l.peer.is_none()
                && l.namespace == namespace
                && l.name == name
        })
    }

    /// Checks that the topology is consistent; the message names the object.
    pub fn validate(&self) -> Result<(), String> {
        let mut namespaces = HashSet::new();
        for ns in &self.namespaces {
            check_netns_name(&format!("{}{}", self.prefix, ns.name))
                .map_err(|e| format!("namespace {:?}: {e}", ns.name))?;
            if !namespaces.insert(ns.name.as_str()) {
                return Err(format!("namespace {} is declared twice", ns.name));
            }
            for key in ns.sysctls.keys() {
                sysctl::path(key).map_err(|e| format!("namespace {}: {e}", ns.name))?;
            }
        }

        let mut names: HashSet<(&str, &str)> = HashSet::new();
        for link in &self.links {
            let what = format!("link {} in namespace {}", link.name, link.namespace);
            if !namespaces.contains(link.namespace.as_str()) {
                return Err(format!(
                    "{what}: namespace {} is not declared",
                    link.namespace
                ));
            }
            require_ifname(&link.name).map_err(|e| format!("{what}: {e}"))?;
            if !names.insert((link.namespace.as_str(), link.name.as_str())) {
                return Err(format!("{what} is declared twice"));
            }
            if link.peer.is_some() && link.kind != LinkKindSpec::Veth {
                return Err(format!("{what}: only a veth has a peer"));
            }
            if link.vxlan.is_some() != (link.kind == LinkKindSpec::Vxlan) {
                return Err(format!(
                    "{what}: a vxlan link needs a vxlan table, and only a vxlan link has one"
                ));
            }
            if link.tun.is_some() && !matches!(link.kind, LinkKindSpec::Tun | LinkKindSpec::Tap) {
                return Err(format!("{what}: only a tun or tap link has a tun table"));
            }
            if let Some(mac) = link.mac
                && mac.is_multicast()
            {
                return Err(format!(
                    "{what}: mac {mac} is a multicast address and cannot be a link's own"
                ));
            }
            if let Some(v) = &link.vxlan {
                if v.vni >= 1 << 24 {
                    return Err(format!("{what}: vni {} does not fit 24 bits", v.vni));
                }
                if v.remote.is_some() && v.group.is_some() {
                    return Err(format!("{what}: give remote or group, not both"));
                }
            }
            for a in &link.addresses {
                if a.nodad && a.address.family() == Family::Ipv4 {
                    return Err(format!(
                        "{what}: nodad is for IPv6 addresses, not {}",
                        a.address
                    ));
                }
            }
            if let Some(master) = &link.master {
                let bridge = self
                    .links
                    .iter()
                    .find(|l| l.namespace == link.namespace && &l.name == master);
                match bridge {
                    Some(b) if b.kind == LinkKindSpec::Bridge => {}
                    Some(b) => {
                        return Err(format!(
                            "{what}: master {master} is a {}, not a bridge",
                            b.kind
                        ));
                    }
                    None => {
                        return Err(format!(
                            "{what}: master {master} is not a bridge declared in namespace {}",
                            link.namespace
                        ));
                    }
                }
            }
            if let Some(peer) = &link.peer {
                if !namespaces.contains(peer.namespace.as_str()) {
                    return Err(format!(
                        "{what}: peer namespace {} is not declared",
                        peer.namespace
                    ));
                }
                require_ifname(&peer.name).map_err(|e| format!("{what}: peer: {e}"))?;
                if peer.namespace == link.namespace && peer.name == link.name {
                    return Err(format!("{what}: a veth cannot be its own peer"));
                }
                let clash = self
                    .links
                    .iter()
                    .find(|l| l.namespace == peer.namespace && l.name == peer.name);
                if let Some(other) = clash
                    && (other.kind != LinkKindSpec::Veth || other.peer.is_some())
                {
                    return Err(format!(
                        "{what}: its peer {} in namespace {} is declared as another link; \
                         describe the peer end as kind = \"veth\" without a peer",
                        peer.name, peer.namespace
                    ));
                }
            }
        }
        for link in &self.links {
            if link.kind == LinkKindSpec::Veth && link.peer.is_none() {
                let creator = self.links.iter().filter(|l| {
                    l.peer
                        .as_ref()
                        .is_some_and(|p| p.namespace == link.namespace && p.name == link.name)
                });
                if creator.count() != 1 {
                    return Err(format!(
                        "link {} in namespace {}: a veth without a peer must be the peer of exactly one other veth",
                        link.name, link.namespace
                    ));
                }
            }
        }

        for route in &self.routes {
            let what = format!("route to {} in namespace {}", route.to, route.namespace);
            if !namespaces.contains(route.namespace.as_str()) {
                return Err(format!(
                    "{what}: namespace {} is not declared",
                    route.namespace
                ));
            }
            if route.via.is_none() && route.dev.is_none() {
                return Err(format!("{what}: give via, dev or both"));
            }
            if let Some(dev) = &route.dev {
                require_ifname(dev).map_err(|e| format!("{what}: {e}"))?;
            }
            let r = route.route().map_err(|e| format!("{what}: {e}"))?;
            for addr in [route.via, route.src].into_iter().flatten() {
                if Family::of(&addr) != r.family() {
                    return Err(format!("{what}: {addr} is not an {} address", r.family()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const SEED: &str = r#"
        prefix = "seed-"

        [[namespace]]
        name = "a"
        sysctls = { "net.ipv6.conf.all.accept_dad" = 0 }

        [[namespace]]
        name = "b"

        [[link]]
        namespace = "a"
        name = "veth0"
        kind = "veth"
        peer = { name = "veth1", namespace = "b" }
        master = "br0"

        [[link]]
        namespace = "b"
        name = "veth1"
        kind = "veth"
        addresses = ["10.1.1.1/24", { address = "fd00::1/64", nodad = true }]

        [[link]]
        namespace = "a"
        name = "br0"
        kind = "bridge"
        addresses = ["10.1.1.2/24"]

        [[route]]
        namespace = "b"
        to = "default"
        via = "10.1.1.2"
    "#;

    #[test]
    fn the_seed_topology_parses() {
        let t = Topology::parse(SEED, "seed").unwrap();
        assert_eq!(t.prefix, "seed-");
        assert_eq!(t.namespaces.len(), 2);
        assert_eq!(t.links[1].addresses[1].address.to_string(), "fd00::1/64");
        assert!(t.links[1].addresses[1].nodad);
        assert!(t.links[0].up, "links are up unless told otherwise");
        assert_eq!(t.netns_name(None, "a"), "seed-a");
        assert_eq!(t.netns_name(Some("x-"), "a"), "x-a");
        assert_eq!(
            t.routes[0].route().unwrap().to_string(),
            "default via 10.1.1.2"
        );
    }

    fn error_of(text: &str) -> String {
        Topology::parse(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn a_bad_address_is_named() {
        let text = SEED.replace("10.1.1.2/24", "10.1.1.300/24");
        let err = error_of(&text);
        assert!(err.contains("10.1.1.300/24 is not an IPv4 prefix"), "{err}");
        assert!(err.starts_with("t.toml: "), "{err}");
    }

    #[test]
    fn a_bridge_mac_is_kept_and_a_bad_one_named() {
        let pinned = "kind = \"bridge\"\n        mac = \"fe:54:00:00:00:02\"";
        let t = Topology::parse(&SEED.replacen("kind = \"bridge\"", pinned, 1), "t.toml").unwrap();
        let br = t.links.iter().find(|l| l.name == "br0").unwrap();
        assert_eq!(
            br.mac.map(|m| m.to_string()).as_deref(),
            Some("fe:54:00:00:00:02")
        );
        let err = error_of(&SEED.replacen(
            "kind = \"bridge\"",
            "kind = \"bridge\"\n        mac = \"fe:54\"",
            1,
        ));
        assert!(err.contains("\"fe:54\" is not a MAC address"), "{err}");
        assert!(err.starts_with("t.toml: "), "{err}");
        let err = error_of(&SEED.replacen(
            "kind = \"bridge\"",
            "kind = \"bridge\"\n        mac = \"01:00:5e:00:00:01\"",
            1,
        ));
        assert!(err.contains("is a multicast address"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = error_of(&SEED.replace("master = \"br0\"", "mastr = \"br0\""));
        assert!(err.contains("mastr"), "{err}");
    }

    #[test]
    fn inconsistencies_name_the_object() {
        let cases = [
            (
                ("master = \"br0\"", "master = \"br9\""),
                "master br9 is not a bridge declared in namespace a",
            ),
            (
                ("name = \"b\"", "name = \"a\""),
                "namespace a is declared twice",
            ),
            (
                ("\"net.ipv6.conf.all.accept_dad\"", "\"kernel.hostname\""),
                "only net.* keys are per network namespace",
            ),
            (
                ("to = \"default\"", "to = \"10.9.9.9/24\""),
                "10.9.9.9/24 has host bits set: did you mean 10.9.9.0/24?",
            ),
            (
                ("address = \"fd00::1/64\"", "address = \"10.1.1.9/24\""),
                "nodad is for IPv6 addresses, not 10.1.1.9/24",
            ),
            (
                ("kind = \"bridge\"", "kind = \"dummy\""),
                "master br0 is a dummy, not a bridge",
            ),
            (
                ("via = \"10.1.1.2\"", "src = \"10.1.1.1\""),
                "give via, dev or both",
            ),
        ];
        for ((from, to), wanted) in cases {
            assert!(SEED.contains(from), "fixture lacks {from}");
            let err = error_of(&SEED.replacen(from, to, 1));
            assert!(err.contains(wanted), "wanted {wanted:?} in {err:?}");
        }
    }

    #[test]
    fn a_lone_veth_end_is_refused() {
        let text = r#"
            [[namespace]]
            name = "a"
            [[link]]
            namespace = "a"
            name = "veth9"
            kind = "veth"
        "#;
        let err = error_of(text);
        assert!(
            err.contains("must be the peer of exactly one other veth"),
            "{err}"
        );
    }

    #[test]
    fn a_route_to_an_undeclared_namespace_is_refused() {
        let text = SEED.replace(
            "[[route]]\n        namespace = \"b\"",
            "[[route]]\n        namespace = \"z\"",
        );
        let err = error_of(&text);
        assert!(err.contains("namespace z is not declared"), "{err}");
    }
}
