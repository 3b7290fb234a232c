//! The routes `ringtun up` adds for its peers' AllowedIPs (what wg-quick
//! does for wg), remembered so that a reload can follow the file: routes
//! for prefixes that appeared are added, those for prefixes that went are
//! removed, the rest are left alone. A started-bare interface has none:
//! there wg-quick routes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::config::{InterfaceAddr, Table};

/// See the module docs.
#[derive(Debug)]
pub struct Routes {
    dev: String,
    table: Table,
    /// The interface's own prefixes: the kernel routes those already.
    connected: Vec<netctl::IpPrefix>,
    /// The routes ringtun added and still owns.
    added: BTreeSet<netctl::IpPrefix>,
}

impl Routes {
    /// None yet, for device `dev` with these addresses, in `table`
    /// (`Table::Off`: never any).
    pub fn new(dev: &str, table: Table, addresses: &[InterfaceAddr]) -> Routes {
        Routes {
            dev: dev.to_string(),
            table,
            connected: addresses
                .iter()
                .filter_map(|a| netctl::IpPrefix::new(a.addr(), a.prefix_len()).ok())
                .map(|p| p.network())
                .collect(),
            added: BTreeSet::new(),
        }
    }

    /// The routes `prefixes` call for: not a default route (warned: a
    /// full tunnel needs policy routing, `Table = off` and the operator's
    /// own rules), not one of the interface's own prefixes.
    pub fn wanted(&self, prefixes: &[(IpAddr, u8)]) -> BTreeSet<netctl::IpPrefix> {
        if self.table == Table::Off {
            return BTreeSet::new();
        }
        prefixes
            .iter()
            .filter_map(|&(addr, len)| netctl::IpPrefix::new(addr, len).ok())
            .map(|p| p.network())
            .filter(|p| {
                if p.is_empty() {
                    tracing::warn!(route = %p, dev = %self.dev, "not adding a default route: set Table = off and route it yourself");
                    return false;
                }
                !self.connected.contains(p)
            })
            .collect()
    }

    fn route(&self, dest: netctl::IpPrefix) -> netctl::Route {
        let mut route = netctl::Route::to(dest).dev(&self.dev);
        if let Table::Id(t) = self.table {
            route.table = Some(t);
        }
        route
    }

    /// Makes the routes those of `prefixes`: adds what is missing, removes
    /// what ringtun added that is no longer wanted. A route someone else
    /// made for the same prefix is left alone (and not taken over).
    pub fn follow(&mut self, nl: &netctl::Netlink, prefixes: &[(IpAddr, u8)]) -> Result<()> {
        let wanted = self.wanted(prefixes);
        let gone: Vec<netctl::IpPrefix> = self.added.difference(&wanted).copied().collect();
        for dest in gone {
            match nl.route_del(&self.route(dest)) {
                Ok(()) => {}
                Err(e) if e.errno() == Some(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("removing route {dest} dev {}", self.dev));
                }
            }
            self.added.remove(&dest);
        }
        for dest in wanted.difference(&self.added.clone()) {
            match nl.route_add(&self.route(*dest)) {
                Ok(()) => {
                    self.added.insert(*dest);
                }
                Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => {
                    tracing::warn!(route = %dest, "a route exists already; leaving it");
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("adding route {dest} dev {}", self.dev));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn p(s: &str) -> (IpAddr, u8) {
        let (a, l) = s.split_once('/').unwrap();
        (a.parse().unwrap(), l.parse().unwrap())
    }

    #[test]
    fn default_routes_own_prefixes_and_table_off_are_not_wanted() {
        let addrs = vec!["10.0.0.1/24".parse::<InterfaceAddr>().unwrap()];
        let r = Routes::new("rt0", Table::Auto, &addrs);
        let w = r.wanted(&[
            p("10.0.0.0/24"),
            p("0.0.0.0/0"),
            p("10.1.2.3/16"),
            p("fd00::/64"),
        ]);
        let w: Vec<String> = w.iter().map(|p| p.to_string()).collect();
        assert_eq!(w, vec!["10.1.0.0/16", "fd00::/64"]);
        let off = Routes::new("rt0", Table::Off, &addrs);
        assert!(off.wanted(&[p("10.1.0.0/16")]).is_empty());
    }
}
