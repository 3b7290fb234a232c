//! Routes: add, delete and list IPv4 and IPv6 routes, default or to a
//! prefix, via a gateway or a device (`ip route add default via 10.1.1.1`).

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::prefix::{Family, IpPrefix};

/// The main routing table (RT_TABLE_MAIN), where routes go unless told otherwise.
pub const TABLE_MAIN: u32 = 254;

/// A route to add or delete, or one the kernel reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Destination; a zero-length prefix is the default route.
    pub dest: IpPrefix,
    /// Gateway.
    pub via: Option<IpAddr>,
    /// Output device.
    pub dev: Option<String>,
    /// Metric (RTA_PRIORITY).
    pub metric: Option<u32>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// Routing table; `None` is the main table.
    pub table: Option<u32>,
    /// The gateway is on the link even if no prefix says so.
    pub onlink: bool,
}

impl Route {
    /// A route to `dest` with nothing else set yet.
    pub fn to(dest: IpPrefix) -> Self {
        Route {
            dest,
            via: None,
            dev: None,
            metric: None,
            src: None,
            table: None,
            onlink: false,
        }
    }

    /// The default route of a family.
    pub fn default_route(family: Family) -> Self {
        Route::to(IpPrefix::default_route(family))
    }

    /// Sets the gateway.
    pub fn via(mut self, gateway: IpAddr) -> Self {
        self.via = Some(gateway);
        self
    }

    /// Sets the output device.
    pub fn dev(mut self, dev: &str) -> Self {
        self.dev = Some(dev.to_string());
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, metric: u32) -> Self {
        self.metric = Some(metric);
        self
    }

    /// The route's family.
    pub fn family(&self) -> Family {
        self.dest.family()
    }

    /// The destination as `ip` prints it: `default` or a prefix.
    pub fn dest_word(&self) -> String {
        if self.dest.is_empty() {
            "default".to_string()
        } else {
            self.dest.to_string()
        }
    }

    fn check(&self) -> Result<()> {
        let family = self.family();
        for (what, addr) in [("via", self.via), ("src", self.src)] {
            if let Some(addr) = addr
                && Family::of(&addr) != family
            {
                return Err(Error::Invalid(format!(
                    "route to {}: {what} {addr} is not an {family} address",
                    self.dest_word()
                )));
            }
        }
        if self.dest.network() != self.dest {
            return Err(Error::HostBitsSet {
                input: self.dest.to_string(),
                network: self.dest.network().to_string(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dest_word())?;
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if let Some(table) = self.table.filter(|t| *t != TABLE_MAIN) {
            write!(f, " table {table}")?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// A route as the kernel reports it, with where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    /// The route; `dev` is resolved to a name and `table` is always set.
    #[serde(flatten)]
    pub route: Route,
    /// `kernel` (from an address), `boot` (added by ip or netctl), `static`, `ra`, ...
    pub protocol: String,
    /// `global`, `link`, `host`.
    pub scope: String,
    /// `unicast`, `local`, `blackhole`, `unreachable`, ...
    pub kind: String,
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != "unicast" {
            write!(f, "{} ", self.kind)?;
        }
        write!(f, "{} proto {}", self.route, self.protocol)?;
        if self.scope != "global" {
            write!(f, " scope {}", self.scope)?;
        }
        Ok(())
    }
}

fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::Ipv4 => AddressFamily::Inet,
        Family::Ipv6 => AddressFamily::Inet6,
    }
}

impl Netlink {
    fn route_message(&self, route: &Route) -> Result<RouteMessage> {
        route.check()?;
        let mut msg = RouteMessage::default();
        msg.header.address_family = address_family(route.family());
        msg.header.destination_prefix_length = route.dest.len();
        let table = route.table.unwrap_or(TABLE_MAIN);
        match u8::try_from(table) {
            Ok(t) => msg.header.table = t,
            Err(_) => {
                msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
                msg.attributes.push(RouteAttribute::Table(table));
            }
        }
        if !route.dest.is_empty() {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(
                    route.dest.addr(),
                )));
        }
        if let Some(via) = route.via {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(via)));
        }
        if let Some(dev) = &route.dev {
            msg.attributes
                .push(RouteAttribute::Oif(self.link_index(dev)?));
        }
        if let Some(src) = route.src {
            msg.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
        }
        if let Some(metric) = route.metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        if route.onlink {
            msg.header.flags.insert(RouteFlags::Onlink);
        }
        Ok(msg)
    }

    /// `ip route add DEST [via GW] [dev DEV] [metric N] [src ADDR] [table N] [onlink]`.
    pub fn route_add(&self, route: &Route) -> Result<()> {
        let mut msg = self.route_message(route)?;
        // As `ip route add`: proto boot, unicast; an IPv4 route without a
        // gateway is scope link (the destination is on the wire).
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if route.via.is_none() && route.family() == Family::Ipv4 {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|f| match f.errno() {
            Some(Errno::EEXIST) => Error::RouteExists {
                dest: route.dest_word(),
                netns: self.ns(),
            },
            _ => f.context(format!("adding route {route}")),
        })
    }

    /// `ip route del DEST [via GW] [dev DEV] ...`: deletes the first route
    /// that matches every field given.
    pub fn route_del(&self, route: &Route) -> Result<()> {
        let mut msg = self.route_message(route)?;
        // As `ip route del`: scope "nowhere" and no type match any route.
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.kind = RouteType::Unspec;
        self.request(RouteNetlinkMessage::DelRoute(msg), 0)
            .map_err(|f| match f.errno() {
                Some(Errno::ESRCH | Errno::ENOENT) => Error::NoSuchRoute {
                    dest: route.dest_word(),
                    netns: self.ns(),
                },
                _ => f.context(format!("deleting route {route}")),
            })
    }

    /// The routes of the main table, of one family or both.
    pub fn routes(&self, family: Option<Family>) -> Result<Vec<RouteEntry>> {
        self.routes_in_table(family, TABLE_MAIN)
    }

    /// The routes of one table, of one family or both.
    pub fn routes_in_table(&self, family: Option<Family>, table: u32) -> Result<Vec<RouteEntry>> {
        let mut query = RouteMessage::default();
        query.header.address_family = family.map_or(AddressFamily::Unspec, address_family);
        let replies = self
            .dump(RouteNetlinkMessage::GetRoute(query))
            .map_err(|f| f.context("listing routes"))?;
        let names = self.link_names()?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewRoute(msg) => decode_route(msg, &names),
                _ => None,
            })
            .filter(|e| e.route.table == Some(table))
            .filter(|e| family.is_none_or(|f| e.route.family() == f))
            .collect())
    }
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn decode_route(
    msg: &RouteMessage,
    names: &std::collections::HashMap<u32, String>,
) -> Option<RouteEntry> {
    let family = match msg.header.address_family {
        AddressFamily::Inet => Family::Ipv4,
        AddressFamily::Inet6 => Family::Ipv6,
        _ => return None,
    };
    let mut route = Route::default_route(family);
    let mut dest = None;
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dest = route_ip(a),
            RouteAttribute::Gateway(a) => route.via = route_ip(a),
            RouteAttribute::Oif(i) => {
                route.dev = Some(names.get(i).cloned().unwrap_or_else(|| format!("#{i}")))
            }
            RouteAttribute::PrefSource(a) => route.src = route_ip(a),
            RouteAttribute::Priority(p) => route.metric = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if let Some(dest) = dest {
        route.dest = IpPrefix::new(dest, msg.header.destination_prefix_length).ok()?;
    }
    route.table = Some(table);
    route.onlink = msg.header.flags.contains(RouteFlags::Onlink);
    let protocol = match msg.header.protocol {
        RouteProtocol::Kernel => "kernel".to_string(),
        RouteProtocol::Boot => "boot".to_string(),
        RouteProtocol::Static => "static".to_string(),
        RouteProtocol::Ra => "ra".to_string(),
        RouteProtocol::Dhcp => "dhcp".to_string(),
        RouteProtocol::Unspec => "unspec".to_string(),
        other => u8::from(other).to_string(),
    };
    let scope = match msg.header.scope {
        RouteScope::Universe => "global".to_string(),
        RouteScope::Link => "link".to_string(),
        RouteScope::Host => "host".to_string(),
        RouteScope::Site => "site".to_string(),
        RouteScope::NoWhere => "nowhere".to_string(),
        other => u8::from(other).to_string(),
    };
    let kind = match msg.header.kind {
        RouteType::Unicast => "unicast",
        RouteType::Local => "local",
        RouteType::Broadcast => "broadcast",
        RouteType::Anycast => "anycast",
        RouteType::Multicast => "multicast",
        RouteType::BlackHole => "blackhole",
        RouteType::Unreachable => "unreachable",
        RouteType::Prohibit => "prohibit",
        _ => "other",
    }
    .to_string();
    Some(RouteEntry {
        route,
        protocol,
        scope,
        kind,
    })
}
