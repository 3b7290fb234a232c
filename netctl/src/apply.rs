//! Applying and destroying a [`Topology`].
//!
//! Apply creates what is missing and checks what exists: an existing object
//! whose attributes differ from the file is an error naming the difference,
//! never silently changed. So a second apply of the same file succeeds and
//! changes nothing. If a step fails, everything this apply created is
//! removed again, in reverse order, and the error lists what was created,
//! what failed and what was rolled back.
//!
//! Order: namespaces (with `lo` up), sysctls, links (VXLAN last: its
//! underlay must exist), MTU and master of new links, device sysctls,
//! addresses, links up, routes.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::addr::AddrOptions;
use crate::error::{Error, Result};
use crate::link::{Link, LinkKind, VXLAN_PORT, VethConfig};
use crate::netlink::Netlink;
use crate::netns;
use crate::route::{Route, TABLE_MAIN};
use crate::sysctl;
use crate::topology::{LinkKindSpec, LinkSpec, Topology};
use crate::tuntap;

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The prefix that was put in front of every namespace name.
    pub prefix: String,
    /// Objects created, in order ("namespace t-a", "bridge br0 in t-a", ...).
    pub created: Vec<String>,
    /// Objects that already existed as the file describes them.
    pub unchanged: Vec<String>,
}

impl Applied {
    /// A namespace's full name (prefix included).
    pub fn netns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// What a destroy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destroyed {
    /// Namespaces deleted (with everything in them).
    pub deleted: Vec<String>,
    /// Namespaces that were already gone.
    pub absent: Vec<String>,
}

/// Why an apply failed, and what it undid.
#[derive(Debug)]
pub struct ApplyFailure {
    /// The step that failed, e.g. "adding 10.1.1.2/24 to br0 in t-a".
    pub step: String,
    /// The error of that step.
    pub error: Error,
    /// Objects this apply had created before the failure.
    pub created: Vec<String>,
    /// Objects removed again.
    pub rolled_back: Vec<String>,
    /// Objects that could not be removed, with why.
    pub rollback_errors: Vec<String>,
}

impl fmt::Display for ApplyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "apply failed while {}: {}", self.step, self.error)?;
        if self.created.is_empty() {
            write!(f, "; nothing had been created")?;
        } else {
            write!(
                f,
                "; created before the failure: {}",
                self.created.join(", ")
            )?;
            if self.rollback_errors.is_empty() {
                write!(f, "; all of it rolled back")?;
            } else {
                write!(f, "; rolled back: {}", self.rolled_back.join(", "))?;
                write!(f, "; NOT rolled back: {}", self.rollback_errors.join(", "))?;
            }
        }
        Ok(())
    }
}

/// One thing to undo on failure.
enum Undo {
    Netns(String),
    Link {
        ns: String,
        name: String,
    },
    Addr {
        ns: String,
        dev: String,
        prefix: crate::prefix::IpPrefix,
    },
    Route {
        ns: String,
        route: Route,
    },
    Sysctl {
        ns: String,
        key: String,
        old: String,
    },
}

impl Undo {
    fn netns(&self) -> &str {
        match self {
            Undo::Netns(ns) => ns,
            Undo::Link { ns, .. }
            | Undo::Addr { ns, .. }
            | Undo::Route { ns, .. }
            | Undo::Sysctl { ns, .. } => ns,
        }
    }
}

/// The state of one apply: handles per namespace, and the undo log.
struct Run<'t> {
    topology: &'t Topology,
    prefix: String,
    handles: HashMap<String, Netlink>,
    created_ns: HashSet<String>,
    created_links: HashSet<(String, String)>,
    undo: Vec<(String, Undo)>,
    applied: Applied,
    step: String,
}

impl<'t> Run<'t> {
    fn full(&self, ns: &str) -> String {
        format!("{}{ns}", self.prefix)
    }

    fn handle(&mut self, ns: &str) -> Result<&Netlink> {
        if !self.handles.contains_key(ns) {
            let handle = Netlink::in_netns(ns)?;
            self.handles.insert(ns.to_string(), handle);
        }
        self.handles.get(ns).ok_or_else(|| Error::NoSuchNetns {
            name: ns.to_string(),
        })
    }

    fn step(&mut self, step: String) {
        self.step = step;
    }

    fn created(&mut self, what: String, undo: Undo) {
        self.applied.created.push(what.clone());
        self.undo.push((what, undo));
    }

    fn unchanged(&mut self, what: String) {
        self.applied.unchanged.push(what);
    }

    fn namespaces(&mut self) -> Result<()> {
        let topology = self.topology;
        for spec in &topology.namespaces {
            let full = self.full(&spec.name);
            self.step(format!("creating namespace {full}"));
            if netns::exists(&full) {
                self.unchanged(format!("namespace {full}"));
                continue;
            }
            netns::add(&full)?;
            self.created_ns.insert(full.clone());
            self.created(format!("namespace {full}"), Undo::Netns(full.clone()));
            if spec.loopback_up {
                self.step(format!("setting lo up in {full}"));
                self.handle(&full)?.link_set_up("lo")?;
            }
        }
        Ok(())
    }

    /// Sets (new namespace) or checks (existing one) every sysctl; with
    /// `defer`, keys whose file does not exist yet are returned for later.
    fn sysctls(&mut self, defer: bool) -> Result<Vec<(String, String, String)>> {
        let topology = self.topology;
        let mut later = Vec::new();
        for spec in &topology.namespaces {
            let full = self.full(&spec.name);
            for (key, value) in &spec.sysctls {
                let value = value.to_string();
                self.step(format!("setting sysctl {key}={value} in {full}"));
                let current = match sysctl::read_in(Some(&full), key) {
                    Ok(current) => current,
                    Err(Error::BadSysctl { .. }) if defer => {
                        later.push((full.clone(), key.clone(), value));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                self.sysctl(&full, key, &value, current)?;
            }
        }
        Ok(later)
    }

    fn sysctl(&mut self, full: &str, key: &str, value: &str, current: String) -> Result<()> {
        let what = format!("sysctl {key}={value} in {full}");
        if sysctl::same_value(&current, value) {
            self.unchanged(what);
            return Ok(());
        }
        if !self.created_ns.contains(full) {
            return Err(Error::Mismatch {
                object: format!("namespace {full}"),
                field: "a sysctl",
                found: format!("{key}={current}"),
                wanted: format!("{key}={value}"),
            });
        }
        sysctl::write_in(Some(full), key, value)?;
        self.created(
            what,
            Undo::Sysctl {
                ns: full.to_string(),
                key: key.to_string(),
                old: current,
            },
        );
        Ok(())
    }

    fn links(&mut self) -> Result<()> {
        let topology = self.topology;
        // VXLAN last: its underlay device may be one of the other links.
        let order = self
            .topology
            .links
            .iter()
            .filter(|l| l.kind != LinkKindSpec::Vxlan)
            .chain(
                topology
                    .links
                    .iter()
                    .filter(|l| l.kind == LinkKindSpec::Vxlan),
            );
        for spec in order {
            // A peer end is made, and checked, with the entry that names it.
            if spec.kind == LinkKindSpec::Veth && spec.peer.is_none() {
                continue;
            }
            let full = self.full(&spec.namespace);
            self.step(format!("looking up {} {} in {full}", spec.kind, spec.name));
            match self.handle(&full)?.link(&spec.name) {
                Ok(link) => self.check_existing(spec, &full, &link)?,
                Err(Error::NoSuchDevice { .. }) => self.create_link(spec, &full)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn create_link(&mut self, spec: &LinkSpec, full: &str) -> Result<()> {
        let topology = self.topology;
        let what = format!("{} {} in {full}", spec.kind, spec.name);
        self.step(format!("creating {what}"));
        match spec.kind {
            LinkKindSpec::Veth => {
                let Some(peer) = &spec.peer else {
                    return Ok(());
                };
                let peer_full = self.full(&peer.namespace);
                let peer_entry = topology.peer_entry(&peer.namespace, &peer.name);
                let cfg = VethConfig {
                    name: spec.name.clone(),
                    peer: peer.name.clone(),
                    peer_netns: (peer_full != full).then(|| peer_full.clone()),
                    mtu: spec.mtu,
                    peer_mtu: peer_entry.and_then(|p| p.mtu),
                };
                // The peer's name may be taken in its own namespace.
                if self.handle(&peer_full)?.link_index(&peer.name).is_ok() {
                    return Err(Error::LinkExists {
                        name: peer.name.clone(),
                        netns: Some(peer_full),
                    });
                }
                self.handle(full)?.add_veth(&cfg)?;
                self.created_links
                    .insert((peer_full.clone(), peer.name.clone()));
                let what = format!(
                    "veth pair {} in {full} / {} in {peer_full}",
                    spec.name, peer.name
                );
                self.created(
                    what,
                    Undo::Link {
                        ns: full.to_string(),
                        name: spec.name.clone(),
                    },
                );
            }
            LinkKindSpec::Bridge => {
                self.handle(full)?.add_bridge(&spec.name)?;
                self.created_link(full, spec, what);
            }
            LinkKindSpec::Dummy => {
                self.handle(full)?.add_dummy(&spec.name)?;
                self.created_link(full, spec, what);
            }
            LinkKindSpec::Tun | LinkKindSpec::Tap => {
                if let Some(cfg) = spec.tuntap_config() {
                    tuntap::create_in(Some(full), &cfg)?;
                }
                self.created_link(full, spec, what);
            }
            LinkKindSpec::Vxlan => {
                if let Some(cfg) = spec.vxlan_config() {
                    self.handle(full)?.add_vxlan(&cfg)?;
                }
                self.created_link(full, spec, what);
            }
        }
        self.created_links
            .insert((full.to_string(), spec.name.clone()));
        Ok(())
    }

    fn created_link(&mut self, full: &str, spec: &LinkSpec, what: String) {
        self.created(
            what,
            Undo::Link {
                ns: full.to_string(),
                name: spec.name.clone(),
            },
        );
    }

    fn check_existing(&mut self, spec: &LinkSpec, full: &str, link: &Link) -> Result<()> {
        let topology = self.topology;
        check_link(spec, full, link, self.handle(full)?)?;
        self.unchanged(format!("{} {} in {full}", spec.kind, spec.name));
        if let Some(peer) = &spec.peer {
            let peer_full = self.full(&peer.namespace);
            self.step(format!("looking up veth {} in {peer_full}", peer.name));
            let found = match self.handle(&peer_full)?.link(&peer.name) {
                Ok(found) => found,
                Err(Error::NoSuchDevice { .. }) => {
                    return Err(Error::Mismatch {
                        object: format!("veth {} in {full}", spec.name),
                        field: "peer",
                        found: "another or none".to_string(),
                        wanted: format!("{} in {peer_full}", peer.name),
                    });
                }
                Err(e) => return Err(e),
            };
            if let Some(entry) = topology.peer_entry(&peer.namespace, &peer.name) {
                check_link(entry, &peer_full, &found, self.handle(&peer_full)?)?;
                self.unchanged(format!("veth {} in {peer_full}", peer.name));
            }
        }
        Ok(())
    }

    /// MTU and master of the links this apply created.
    fn configure_new_links(&mut self) -> Result<()> {
        let topology = self.topology;
        for spec in &topology.links {
            let full = self.full(&spec.namespace);
            if !self
                .created_links
                .contains(&(full.clone(), spec.name.clone()))
            {
                continue;
            }
            // veth and vxlan MTUs were given at creation.
            if let Some(mtu) = spec.mtu
                && matches!(
                    spec.kind,
                    LinkKindSpec::Bridge
                        | LinkKindSpec::Dummy
                        | LinkKindSpec::Tun
                        | LinkKindSpec::Tap
                )
            {
                self.step(format!("setting {} mtu {mtu} in {full}", spec.name));
                self.handle(&full)?.set_mtu(&spec.name, mtu)?;
            }
            // Before enslaving: a bridge with an address of its own keeps
            // it whatever ports come and go.
            if let Some(mac) = spec.mac {
                self.step(format!("setting {} address {mac} in {full}", spec.name));
                self.handle(&full)?.set_address(&spec.name, mac)?;
            }
            if let Some(master) = &spec.master {
                self.step(format!("setting {} master {master} in {full}", spec.name));
                self.handle(&full)?.set_master(&spec.name, master)?;
            }
        }
        Ok(())
    }

    fn addresses(&mut self) -> Result<()> {
        let topology = self.topology;
        for spec in &topology.links {
            let full = self.full(&spec.namespace);
            for a in &spec.addresses {
                let what = format!("address {} on {} in {full}", a.address, spec.name);
                self.step(format!("adding {} to {} in {full}", a.address, spec.name));
                let present = self
                    .handle(&full)?
                    .addrs(Some(&spec.name))?
                    .iter()
                    .any(|x| x.prefix == a.address);
                if present {
                    self.unchanged(what);
                    continue;
                }
                self.handle(&full)?.addr_add_with(
                    &spec.name,
                    a.address,
                    AddrOptions { nodad: a.nodad },
                )?;
                self.created(
                    what,
                    Undo::Addr {
                        ns: full.clone(),
                        dev: spec.name.clone(),
                        prefix: a.address,
                    },
                );
            }
        }
        Ok(())
    }

    fn links_up(&mut self) -> Result<()> {
        let topology = self.topology;
        for spec in &topology.links {
            let full = self.full(&spec.namespace);
            if spec.up
                && self
                    .created_links
                    .contains(&(full.clone(), spec.name.clone()))
            {
                self.step(format!("setting {} up in {full}", spec.name));
                self.handle(&full)?.link_set_up(&spec.name)?;
            }
        }
        Ok(())
    }

    fn routes(&mut self) -> Result<()> {
        let topology = self.topology;
        for spec in &topology.routes {
            let full = self.full(&spec.namespace);
            let route = spec.route()?;
            let what = format!("route {route} in {full}");
            self.step(format!("adding route {route} in {full}"));
            let table = route.table.unwrap_or(TABLE_MAIN);
            let existing: Vec<Route> = self
                .handle(&full)?
                .routes_in_table(Some(route.family()), table)?
                .into_iter()
                .map(|e| e.route)
                .filter(|r| {
                    r.dest == route.dest && (route.metric.is_none() || r.metric == route.metric)
                })
                .collect();
            if existing.is_empty() {
                self.handle(&full)?.route_add(&route)?;
                self.created(
                    what,
                    Undo::Route {
                        ns: full.clone(),
                        route,
                    },
                );
                continue;
            }
            let same = existing.iter().any(|r| {
                (route.via.is_none() || r.via == route.via)
                    && (route.dev.is_none() || r.dev == route.dev)
            });
            if !same {
                let found = existing
                    .iter()
                    .map(Route::to_string)
                    .collect::<Vec<_>>()
                    .join(" and ");
                return Err(Error::Mismatch {
                    object: format!("route to {} in {full}", route.dest_word()),
                    field: "next hop",
                    found,
                    wanted: route.to_string(),
                });
            }
            self.unchanged(what);
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<()> {
        self.namespaces()?;
        let later = self.sysctls(true)?;
        self.links()?;
        self.configure_new_links()?;
        for (full, key, value) in later {
            self.step(format!("setting sysctl {key}={value} in {full}"));
            let current = sysctl::read_in(Some(&full), &key)?;
            self.sysctl(&full, &key, &value, current)?;
        }
        self.addresses()?;
        self.links_up()?;
        self.routes()
    }

    /// Undoes everything in reverse; objects inside a namespace that is
    /// itself being deleted go with it.
    fn rollback(&mut self) -> (Vec<String>, Vec<String>) {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let undo = std::mem::take(&mut self.undo);
        for (what, action) in undo.into_iter().rev() {
            if !matches!(action, Undo::Netns(_)) && self.created_ns.contains(action.netns()) {
                done.push(what);
                continue;
            }
            let result = match &action {
                Undo::Netns(ns) => {
                    self.handles.remove(ns);
                    netns::delete(ns)
                }
                Undo::Link { ns, name } => self.handle(ns).and_then(|h| h.delete_link(name)),
                Undo::Addr { ns, dev, prefix } => {
                    self.handle(ns).and_then(|h| h.addr_del(dev, *prefix))
                }
                Undo::Route { ns, route } => self.handle(ns).and_then(|h| h.route_del(route)),
                Undo::Sysctl { ns, key, old } => sysctl::write_in(Some(ns), key, old),
            };
            match result {
                Ok(()) => done.push(what),
                Err(e) => failed.push(format!("{what} ({e})")),
            }
        }
        (done, failed)
    }
}

/// Compares an existing link with its entry; the first difference is the error.
fn check_link(spec: &LinkSpec, full: &str, link: &Link, handle: &Netlink) -> Result<()> {
    let object = format!("link {} in namespace {full}", spec.name);
    let mismatch = |field: &'static str, found: String, wanted: String| Error::Mismatch {
        object: object.clone(),
        field,
        found,
        wanted,
    };
    let wanted_kind = match spec.kind {
        LinkKindSpec::Veth => LinkKind::Veth,
        LinkKindSpec::Bridge => LinkKind::Bridge,
        LinkKindSpec::Dummy => LinkKind::Dummy,
        LinkKindSpec::Tun => LinkKind::Tun,
        LinkKindSpec::Tap => LinkKind::Tap,
        LinkKindSpec::Vxlan => LinkKind::Vxlan,
    };
    if link.kind != wanted_kind {
        return Err(mismatch(
            "kind",
            link.kind.to_string(),
            wanted_kind.to_string(),
        ));
    }
    if let Some(mtu) = spec.mtu
        && link.mtu != mtu
    {
        return Err(mismatch("mtu", link.mtu.to_string(), mtu.to_string()));
    }
    if let Some(mac) = spec.mac
        && link.mac.as_deref() != Some(mac.to_string().as_str())
    {
        return Err(mismatch(
            "mac",
            link.mac.clone().unwrap_or_else(|| "none".to_string()),
            mac.to_string(),
        ));
    }
    if link.up != spec.up {
        let word = |up: bool| if up { "up" } else { "down" }.to_string();
        return Err(mismatch("state", word(link.up), word(spec.up)));
    }
    if link.master != spec.master {
        let word = |m: &Option<String>| m.clone().unwrap_or_else(|| "none".to_string());
        return Err(mismatch("master", word(&link.master), word(&spec.master)));
    }
    if let (Some(cfg), Some(found)) = (spec.tuntap_config(), link.tun) {
        if found.multi_queue != cfg.multi_queue {
            return Err(mismatch(
                "multi_queue",
                found.multi_queue.to_string(),
                cfg.multi_queue.to_string(),
            ));
        }
        if cfg.owner.is_some() && found.owner != cfg.owner {
            return Err(mismatch(
                "user",
                format!("{:?}", found.owner),
                format!("{:?}", cfg.owner),
            ));
        }
        if cfg.group.is_some() && found.group != cfg.group {
            return Err(mismatch(
                "group",
                format!("{:?}", found.group),
                format!("{:?}", cfg.group),
            ));
        }
    }
    if let Some(v) = &spec.vxlan {
        let found = link.vxlan.clone().unwrap_or_default();
        let opt = |a: Option<std::net::IpAddr>| a.map_or("none".to_string(), |a| a.to_string());
        if found.vni != v.vni {
            return Err(mismatch("vni", found.vni.to_string(), v.vni.to_string()));
        }
        let port = v.dstport.unwrap_or(VXLAN_PORT);
        if found.dstport != port {
            return Err(mismatch(
                "dstport",
                found.dstport.to_string(),
                port.to_string(),
            ));
        }
        if found.local != v.local {
            return Err(mismatch("local", opt(found.local), opt(v.local)));
        }
        if found.remote != v.remote {
            return Err(mismatch("remote", opt(found.remote), opt(v.remote)));
        }
        if found.group != v.group {
            return Err(mismatch("group", opt(found.group), opt(v.group)));
        }
        if let Some(learning) = v.learning
            && found.learning != learning
        {
            return Err(mismatch(
                "learning",
                found.learning.to_string(),
                learning.to_string(),
            ));
        }
        if let Some(dev) = &v.dev {
            let index = handle.link_index(dev)?;
            if found.dev_index != Some(index) {
                return Err(mismatch(
                    "dev",
                    format!("{:?}", found.dev_index),
                    dev.clone(),
                ));
            }
        }
    }
    Ok(())
}

impl Topology {
    /// Creates what is missing, checks what exists, and on failure rolls
    /// back what it created. `prefix` overrides the file's.
    pub fn apply(&self, prefix: Option<&str>) -> Result<Applied> {
        self.validate().map_err(|message| Error::Topology {
            path: "<topology>".to_string(),
            message,
        })?;
        let prefix = self.effective_prefix(prefix).to_string();
        for ns in &self.namespaces {
            crate::names::check_netns_name(&format!("{prefix}{}", ns.name))?;
        }
        let mut run = Run {
            topology: self,
            prefix: prefix.clone(),
            handles: HashMap::new(),
            created_ns: HashSet::new(),
            created_links: HashSet::new(),
            undo: Vec::new(),
            applied: Applied {
                prefix,
                ..Applied::default()
            },
            step: "starting".to_string(),
        };
        match run.apply() {
            Ok(()) => Ok(run.applied),
            Err(error) => {
                let created = run.applied.created.clone();
                let (rolled_back, rollback_errors) = run.rollback();
                Err(Error::Apply(Box::new(ApplyFailure {
                    step: run.step.clone(),
                    error,
                    created,
                    rolled_back,
                    rollback_errors,
                })))
            }
        }
    }

    /// Deletes every namespace the topology names (and so everything in
    /// them). Namespaces already gone are reported, not an error.
    pub fn destroy(&self, prefix: Option<&str>) -> Result<Destroyed> {
        let mut destroyed = Destroyed::default();
        let mut first_error = None;
        for ns in self.namespaces.iter().rev() {
            let full = self.netns_name(prefix, &ns.name);
            if !netns::exists(&full) {
                destroyed.absent.push(full);
                continue;
            }
            match netns::delete(&full) {
                Ok(()) => destroyed.deleted.push(full),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(destroyed),
        }
    }
}
