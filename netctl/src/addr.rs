//! Addresses: add, delete and list IPv4 and IPv6 addresses on links
//! (`ip addr add 10.1.1.2/24 dev veth0`).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use nix::errno::Errno;
use rtnetlink::AddressMessageBuilder;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::netlink::Netlink;
use crate::prefix::{Family, IpPrefix};

/// Options of `ip addr add` that netctl supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrOptions {
    /// IPv6: skip duplicate address detection, so the address is usable at
    /// once instead of "tentative" for about a second (IFA_F_NODAD).
    pub nodad: bool,
}

/// An address on a link, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Address {
    /// The address and its prefix length.
    pub prefix: IpPrefix,
    /// The link's index.
    pub index: u32,
    /// `global`, `link`, `host` or a number.
    pub scope: String,
    /// IPv6 duplicate address detection is still running: not usable yet.
    pub tentative: bool,
    /// IPv6 duplicate address detection found a duplicate.
    pub dadfailed: bool,
}

impl Address {
    /// The family of the address.
    pub fn family(&self) -> Family {
        self.prefix.family()
    }
}

fn message(index: u32, prefix: IpPrefix) -> AddressMessage {
    match prefix.addr() {
        IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(a, prefix.len())
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
            .index(index)
            .address(a, prefix.len())
            .build(),
    }
}

impl Netlink {
    /// `ip addr add PREFIX dev DEV`.
    pub fn addr_add(&self, dev: &str, prefix: IpPrefix) -> Result<()> {
        self.addr_add_with(dev, prefix, AddrOptions::default())
    }

    /// `ip addr add PREFIX dev DEV [nodad]`.
    pub fn addr_add_with(&self, dev: &str, prefix: IpPrefix, options: AddrOptions) -> Result<()> {
        let index = self.link_index(dev)?;
        let mut msg = message(index, prefix);
        if prefix.addr().is_loopback() {
            msg.header.scope = AddressScope::Host;
        }
        if options.nodad {
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|f| match f.errno() {
            Some(Errno::EEXIST) => Error::AddressExists {
                prefix: prefix.to_string(),
                dev: dev.to_string(),
                netns: self.ns(),
            },
            _ => f.context(format!("adding {prefix} to {dev}")),
        })
    }

    /// `ip addr del PREFIX dev DEV`.
    pub fn addr_del(&self, dev: &str, prefix: IpPrefix) -> Result<()> {
        let index = self.link_index(dev)?;
        self.request(RouteNetlinkMessage::DelAddress(message(index, prefix)), 0)
            .map_err(|f| match f.errno() {
                Some(Errno::EADDRNOTAVAIL | Errno::ENOENT | Errno::ESRCH) => Error::NoSuchAddress {
                    prefix: prefix.to_string(),
                    dev: dev.to_string(),
                    netns: self.ns(),
                },
                _ => f.context(format!("deleting {prefix} from {dev}")),
            })
    }

    /// The addresses of one link (`Some(dev)`) or of every link.
    pub fn addrs(&self, dev: Option<&str>) -> Result<Vec<Address>> {
        let index = dev.map(|d| self.link_index(d)).transpose()?;
        self.addrs_of_index(index)
    }

    pub(crate) fn addrs_of_index(&self, index: Option<u32>) -> Result<Vec<Address>> {
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|f| f.context("listing addresses"))?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(msg) => decode_address(msg),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }
}

fn decode_address(msg: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(msg.header.flags.bits());
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            // IFA_FLAGS supersedes the 8-bit header field when present.
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on a
    // point-to-point link and the address elsewhere (IPv6 sends only it).
    let addr = local.or(address)?;
    let prefix = IpPrefix::new(addr, msg.header.prefix_len).ok()?;
    let scope = match msg.header.scope {
        AddressScope::Universe => "global".to_string(),
        AddressScope::Link => "link".to_string(),
        AddressScope::Host => "host".to_string(),
        AddressScope::Site => "site".to_string(),
        other => u8::from(other).to_string(),
    };
    Some(Address {
        prefix,
        index: msg.header.index,
        scope,
        tentative: flags & AddressFlags::Tentative.bits() != 0,
        dadfailed: flags & AddressFlags::Dadfailed.bits() != 0,
    })
}
