//! The neighbour table (ARP and NDP entries): what `ip neigh show` prints.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use serde::Serialize;

use crate::error::Result;
use crate::mac::MacAddr;
use crate::netlink::Netlink;

/// One entry of the neighbour table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub address: IpAddr,
    /// The link it was resolved on.
    pub dev: String,
    /// Its link-layer address, once resolved.
    pub mac: Option<MacAddr>,
    /// `REACHABLE`, `STALE`, `FAILED`, ... as `ip` prints them.
    pub state: String,
}

impl fmt::Display for Neighbour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.address, self.dev)?;
        if let Some(mac) = self.mac {
            write!(f, " lladdr {mac}")?;
        }
        write!(f, " {}", self.state)
    }
}

impl Netlink {
    /// `ip neigh show [dev NAME]`: IPv4 and IPv6 entries. As there, NOARP
    /// entries (fixed multicast mappings, nothing learnt) are left out.
    pub fn neighbours(&self, dev: Option<&str>) -> Result<Vec<Neighbour>> {
        let index = dev.map(|d| self.link_index(d)).transpose()?;
        let replies = self
            .dump(RouteNetlinkMessage::GetNeighbour(
                NeighbourMessage::default(),
            ))
            .map_err(|f| f.context("listing neighbours"))?;
        let names = self.link_names()?;
        let mut out = Vec::new();
        for r in &replies {
            let RouteNetlinkMessage::NewNeighbour(msg) = r else {
                continue;
            };
            if index.is_some_and(|i| msg.header.ifindex != i)
                || msg.header.state == NeighbourState::Noarp
            {
                continue;
            }
            let Some((address, mac)) = decode(msg) else {
                continue;
            };
            // A link gone between the two dumps keeps its index.
            let dev = names
                .get(&msg.header.ifindex)
                .cloned()
                .unwrap_or_else(|| format!("if{}", msg.header.ifindex));
            out.push(Neighbour {
                address,
                dev,
                mac,
                state: state_word(msg.header.state),
            });
        }
        Ok(out)
    }
}

fn decode(msg: &NeighbourMessage) -> Option<(IpAddr, Option<MacAddr>)> {
    let mut address = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                address = Some(IpAddr::V4(*a));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                address = Some(IpAddr::V6(*a));
            }
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr);
            }
            _ => {}
        }
    }
    Some((address?, mac))
}

fn state_word(s: NeighbourState) -> String {
    match s {
        NeighbourState::Incomplete => "INCOMPLETE".into(),
        NeighbourState::Reachable => "REACHABLE".into(),
        NeighbourState::Stale => "STALE".into(),
        NeighbourState::Delay => "DELAY".into(),
        NeighbourState::Probe => "PROBE".into(),
        NeighbourState::Failed => "FAILED".into(),
        NeighbourState::Noarp => "NOARP".into(),
        NeighbourState::Permanent => "PERMANENT".into(),
        NeighbourState::None => "NONE".into(),
        NeighbourState::Other(n) => format!("state {n:#x}"),
        _ => "UNKNOWN".into(),
    }
}
