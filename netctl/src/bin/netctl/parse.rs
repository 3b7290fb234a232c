//! `ip`'s grammar parsed into typed commands. Pure: no system calls, so it
//! can be tested (and fuzzed) on any input.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use netctl::prefix::parse_addr;
use netctl::{
    Family, IpPrefix, LinkChange, NetnsTarget, Route, TunMode, TunTapConfig, VethConfig,
    VxlanConfig,
};

/// A command line that cannot be understood; the text says what to fix.
#[derive(Debug, PartialEq, Eq)]
pub struct Usage(pub String);

type Parsed<T> = Result<T, Usage>;

fn usage<T>(message: impl Into<String>) -> Parsed<T> {
    Err(Usage(message.into()))
}

/// Options given before the object, and the command.
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `-n NS`: act inside this namespace.
    pub netns: Option<String>,
    /// `-j`: JSON output.
    pub json: bool,
    /// `-4` / `-6`.
    pub family: Option<Family>,
    /// What to do.
    pub command: Command,
}

/// The help topics (`netctl OBJECT help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Link,
    Address,
    Route,
    Neigh,
    Netns,
    Tuntap,
    Sysctl,
    Ping,
    Topology,
}

/// `ip link add` by kind.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkAdd {
    Veth(VethConfig),
    Bridge { name: String, mtu: Option<u32> },
    Dummy { name: String, mtu: Option<u32> },
    Vxlan(VxlanConfig),
    TunTap { cfg: TunTapConfig, mtu: Option<u32> },
}

impl LinkAdd {
    /// The name of the link to create.
    pub fn name(&self) -> &str {
        match self {
            LinkAdd::Veth(c) => &c.name,
            LinkAdd::Bridge { name, .. } | LinkAdd::Dummy { name, .. } => name,
            LinkAdd::Vxlan(c) => &c.name,
            LinkAdd::TunTap { cfg, .. } => &cfg.name,
        }
    }
}

/// One command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help(Option<Topic>),
    Version,
    LinkAdd {
        add: LinkAdd,
        up: bool,
    },
    LinkSet {
        dev: String,
        change: LinkChange,
    },
    LinkDel {
        dev: String,
    },
    LinkShow {
        dev: Option<String>,
    },
    AddrAdd {
        dev: String,
        prefix: IpPrefix,
        nodad: bool,
    },
    AddrDel {
        dev: String,
        prefix: IpPrefix,
    },
    AddrShow {
        dev: Option<String>,
    },
    RouteAdd(Route),
    RouteDel(Route),
    RouteShow,
    NeighShow {
        dev: Option<String>,
    },
    NetnsAdd(String),
    NetnsDel(String),
    NetnsList,
    NetnsExec {
        name: String,
        argv: Vec<String>,
    },
    TuntapAdd(TunTapConfig),
    TuntapDel {
        dev: String,
        mode: Option<TunMode>,
    },
    TuntapShow,
    SysctlGet(String),
    SysctlSet {
        key: String,
        value: String,
    },
    Ping {
        dst: IpAddr,
        dev: Option<String>,
        count: u32,
        timeout: Duration,
    },
    Apply {
        file: PathBuf,
        prefix: Option<String>,
    },
    Destroy {
        file: PathBuf,
        prefix: Option<String>,
    },
}

/// The words of a command line, consumed left to right.
struct Words<'a> {
    words: &'a [String],
    pos: usize,
}

impl<'a> Words<'a> {
    fn new(words: &'a [String]) -> Self {
        Words { words, pos: 0 }
    }

    fn next(&mut self) -> Option<&'a str> {
        let word = self.words.get(self.pos)?;
        self.pos += 1;
        Some(word.as_str())
    }

    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).map(String::as_str)
    }

    /// The value after a keyword, or an error naming the keyword.
    fn value(&mut self, keyword: &str) -> Parsed<&'a str> {
        match self.next() {
            Some(v) => Ok(v),
            None => usage(format!("{keyword} needs a value")),
        }
    }

    fn rest(&mut self) -> Vec<String> {
        let rest = self.words.get(self.pos..).unwrap_or_default().to_vec();
        self.pos = self.words.len();
        rest
    }

    fn end(&self, context: &str) -> Parsed<()> {
        match self.peek() {
            None => Ok(()),
            Some(extra) => usage(format!(
                "{context}: unexpected {extra:?} (netctl {context} help)"
            )),
        }
    }
}

fn number<T: std::str::FromStr>(keyword: &str, text: &str) -> Parsed<T> {
    // FromStr for integers accepts a leading '+'; `ip` does not.
    if text.starts_with('+') {
        return usage(format!("{keyword}: {text:?} is not a number"));
    }
    text.parse()
        .or_else(|_| usage(format!("{keyword}: {text:?} is not a number")))
}

fn prefix(text: &str) -> Parsed<IpPrefix> {
    text.parse()
        .map_err(|e: netctl::Error| Usage(e.to_string()))
}

fn address(text: &str) -> Parsed<IpAddr> {
    parse_addr(text).map_err(|e| Usage(e.to_string()))
}

/// Verbs `ip` spells several ways.
fn is_show(word: &str) -> bool {
    matches!(word, "show" | "list" | "ls" | "lst" | "sh")
}

fn is_del(word: &str) -> bool {
    matches!(word, "del" | "delete")
}

fn is_help(word: &str) -> bool {
    matches!(word, "help" | "-h" | "--help")
}

/// Parses everything after the program name.
pub fn parse(args: &[String]) -> Parsed<Invocation> {
    let mut w = Words::new(args);
    let mut inv = Invocation {
        netns: None,
        json: false,
        family: None,
        command: Command::Help(None),
    };
    while let Some(word) = w.peek() {
        match word {
            "-n" | "-netns" | "--netns" => {
                w.next();
                inv.netns = Some(w.value(word)?.to_string());
            }
            "-j" | "-json" | "--json" => {
                w.next();
                inv.json = true;
            }
            "-4" => {
                w.next();
                inv.family = Some(Family::Ipv4);
            }
            "-6" => {
                w.next();
                inv.family = Some(Family::Ipv6);
            }
            "-V" | "--version" | "-Version" => {
                w.next();
                inv.command = Command::Version;
                return Ok(inv);
            }
            w2 if w2.starts_with('-') && !is_help(w2) => {
                return usage(format!("unknown option {w2:?} (netctl --help)"));
            }
            _ => break,
        }
    }
    let Some(object) = w.next() else {
        return Ok(inv);
    };
    inv.command = match object {
        "help" | "-h" | "--help" => Command::Help(None),
        "link" | "l" => link(&mut w, inv.family)?,
        "address" | "addr" | "a" => addr(&mut w)?,
        "route" | "r" | "ro" => route(&mut w, inv.family)?,
        "neigh" | "neighbour" | "neighbor" | "n" => neigh(&mut w)?,
        "netns" => netns(&mut w)?,
        "tuntap" => tuntap(&mut w)?,
        "sysctl" => sysctl(&mut w)?,
        "ping" => ping(&mut w)?,
        "apply" | "destroy" => topology(&mut w, object)?,
        other => {
            return usage(format!(
                "unknown object {other:?}: netctl knows link, address, route, neigh, netns, tuntap, sysctl, \
                 ping, apply and destroy (netctl --help)"
            ));
        }
    };
    if inv.netns.is_some()
        && matches!(
            inv.command,
            Command::NetnsAdd(_)
                | Command::NetnsDel(_)
                | Command::NetnsList
                | Command::NetnsExec { .. }
                | Command::Apply { .. }
                | Command::Destroy { .. }
        )
    {
        return usage(
            "-n does not apply to netns, apply and destroy: they name their namespaces themselves",
        );
    }
    Ok(inv)
}

/// `[dev] NAME` as `ip` accepts it.
fn device(w: &mut Words, context: &str) -> Parsed<String> {
    match w.next() {
        Some("dev") => Ok(w.value("dev")?.to_string()),
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => usage(format!("{context} needs a device name")),
    }
}

fn optional_device(w: &mut Words, context: &str) -> Parsed<Option<String>> {
    let dev = match w.peek() {
        None => None,
        Some(_) => Some(device(w, context)?),
    };
    w.end(context)?;
    Ok(dev)
}

fn link(w: &mut Words, family: Option<Family>) -> Parsed<Command> {
    let _ = family;
    match w.next() {
        None => Ok(Command::LinkShow { dev: None }),
        Some(v) if is_help(v) => Ok(Command::Help(Some(Topic::Link))),
        Some("add") => link_add(w),
        Some("set") | Some("change") => link_set(w),
        Some(v) if is_del(v) => {
            let dev = device(w, "link delete")?;
            // `ip link del veth0 type veth` is accepted; the type is not needed.
            if w.peek() == Some("type") {
                w.next();
                w.value("type")?;
            }
            w.end("link")?;
            Ok(Command::LinkDel { dev })
        }
        Some(v) if is_show(v) => Ok(Command::LinkShow {
            dev: optional_device(w, "link")?,
        }),
        Some(other) => usage(format!(
            "link: unknown command {other:?}: try add, set, delete or show (netctl link help)"
        )),
    }
}

fn link_add(w: &mut Words) -> Parsed<Command> {
    let mut name: Option<String> = None;
    let mut mtu = None;
    let mut up = false;
    let kind = loop {
        match w.next() {
            None => {
                return usage(
                    "link add needs `type veth|bridge|dummy|vxlan|tun|tap` (netctl link help)",
                );
            }
            Some("name") | Some("dev") => name = Some(w.value("name")?.to_string()),
            Some("mtu") => mtu = Some(number("mtu", w.value("mtu")?)?),
            Some("up") => up = true,
            Some("type") => break w.value("type")?,
            Some(other) if name.is_none() && !other.is_empty() => name = Some(other.to_string()),
            Some(other) => {
                return usage(format!("link add: unexpected {other:?} (netctl link help)"));
            }
        }
    };
    let Some(name) = name else {
        return usage("link add needs a name");
    };
    let add = match kind {
        "veth" => {
            let mut cfg = VethConfig::new(&name, "");
            cfg.mtu = mtu;
            let mut peer = None;
            if w.peek() == Some("peer") {
                w.next();
                while let Some(word) = w.next() {
                    match word {
                        "name" | "dev" => peer = Some(w.value("peer name")?.to_string()),
                        "mtu" => cfg.peer_mtu = Some(number("peer mtu", w.value("peer mtu")?)?),
                        "netns" => cfg.peer_netns = Some(w.value("peer netns")?.to_string()),
                        other if peer.is_none() => peer = Some(other.to_string()),
                        other => return usage(format!("link add veth peer: unexpected {other:?}")),
                    }
                }
            }
            let Some(peer) = peer else {
                return usage(
                    "link add ... type veth needs `peer name NAME` (netctl picks no peer name for you)",
                );
            };
            cfg.peer = peer;
            LinkAdd::Veth(cfg)
        }
        "bridge" => LinkAdd::Bridge { name, mtu },
        "dummy" => LinkAdd::Dummy { name, mtu },
        "vxlan" => {
            let mut cfg = VxlanConfig {
                name,
                mtu,
                ..VxlanConfig::default()
            };
            let mut id = None;
            while let Some(word) = w.next() {
                match word {
                    "id" | "vni" => id = Some(number("id", w.value("id")?)?),
                    "local" => cfg.local = Some(address(w.value("local")?)?),
                    "remote" => cfg.remote = Some(address(w.value("remote")?)?),
                    "group" => cfg.group = Some(address(w.value("group")?)?),
                    "dstport" | "port" => {
                        cfg.dstport = Some(number("dstport", w.value("dstport")?)?)
                    }
                    "dev" => cfg.dev = Some(w.value("dev")?.to_string()),
                    "ttl" | "hoplimit" => cfg.ttl = Some(number("ttl", w.value("ttl")?)?),
                    "learning" => cfg.learning = Some(true),
                    "nolearning" => cfg.learning = Some(false),
                    other => {
                        return usage(format!(
                            "link add ... type vxlan: unexpected {other:?} (netctl link help)"
                        ));
                    }
                }
            }
            let Some(id) = id else {
                return usage("link add ... type vxlan needs `id VNI`");
            };
            cfg.vni = id;
            LinkAdd::Vxlan(cfg)
        }
        "tun" | "tap" => {
            let mode = if kind == "tun" {
                TunMode::Tun
            } else {
                TunMode::Tap
            };
            let mut cfg = TunTapConfig::new(&name, mode);
            tuntap_flags(w, &mut cfg, "link add")?;
            LinkAdd::TunTap { cfg, mtu }
        }
        other => {
            return usage(format!(
                "link add: unknown type {other:?}: netctl makes veth, bridge, dummy, vxlan, tun and tap"
            ));
        }
    };
    w.end("link")?;
    Ok(Command::LinkAdd { add, up })
}

fn link_set(w: &mut Words) -> Parsed<Command> {
    let dev = device(w, "link set")?;
    let mut change = LinkChange::default();
    let mut any = false;
    while let Some(word) = w.next() {
        any = true;
        match word {
            "up" => change.up = Some(true),
            "down" => change.up = Some(false),
            "mtu" => change.mtu = Some(number("mtu", w.value("mtu")?)?),
            "master" => change.master = Some(Some(w.value("master")?.to_string())),
            "nomaster" => change.master = Some(None),
            "netns" => {
                let target = w.value("netns")?;
                change.netns = Some(
                    if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
                        NetnsTarget::Pid(number("netns", target)?)
                    } else {
                        NetnsTarget::Named(target.to_string())
                    },
                );
            }
            "name" => change.name = Some(w.value("name")?.to_string()),
            "address" => {
                change.address = Some(
                    w.value("address")?
                        .parse()
                        .map_err(|e: netctl::Error| Usage(e.to_string()))?,
                );
            }
            other => {
                return usage(format!(
                    "link set: unknown attribute {other:?}: try up, down, mtu N, master BRIDGE, nomaster, \
                     netns NS, name NEW, address MAC"
                ));
            }
        }
    }
    if !any {
        return usage(format!(
            "link set {dev}: nothing to change (up, down, mtu, master, ...)"
        ));
    }
    Ok(Command::LinkSet { dev, change })
}

fn addr(w: &mut Words) -> Parsed<Command> {
    let verb = w.next();
    match verb {
        None => Ok(Command::AddrShow { dev: None }),
        Some(v) if is_help(v) => Ok(Command::Help(Some(Topic::Address))),
        Some(v) if is_show(v) => Ok(Command::AddrShow {
            dev: optional_device(w, "address")?,
        }),
        Some(v @ ("add" | "del" | "delete")) => {
            let mut dev = None;
            let mut pfx = None;
            let mut nodad = false;
            while let Some(word) = w.next() {
                match word {
                    "dev" => dev = Some(w.value("dev")?.to_string()),
                    "local" => pfx = Some(prefix(w.value("local")?)?),
                    "nodad" if v == "add" => nodad = true,
                    other if pfx.is_none() => pfx = Some(prefix(other)?),
                    other => {
                        return usage(format!(
                            "address {v}: unexpected {other:?} (netctl address help)"
                        ));
                    }
                }
            }
            let Some(pfx) = pfx else {
                return usage(format!("address {v} needs an address, e.g. 10.1.1.2/24"));
            };
            let Some(dev) = dev else {
                return usage(format!("address {v} {pfx} needs `dev NAME`"));
            };
            if nodad && pfx.family() == Family::Ipv4 {
                return usage(format!("nodad is for IPv6 addresses, not {pfx}"));
            }
            Ok(if v == "add" {
                Command::AddrAdd {
                    dev,
                    prefix: pfx,
                    nodad,
                }
            } else {
                Command::AddrDel { dev, prefix: pfx }
            })
        }
        Some(other) => usage(format!(
            "address: unknown command {other:?}: try add, del or show (netctl address help)"
        )),
    }
}

fn neigh(w: &mut Words) -> Parsed<Command> {
    match w.next() {
        None => Ok(Command::NeighShow { dev: None }),
        Some(v) if is_help(v) => Ok(Command::Help(Some(Topic::Neigh))),
        Some(v) if is_show(v) => Ok(Command::NeighShow {
            dev: optional_device(w, "neigh")?,
        }),
        Some(other) => usage(format!(
            "neigh: unknown command {other:?}: netctl only shows the table (netctl neigh help)"
        )),
    }
}

fn route(w: &mut Words, family: Option<Family>) -> Parsed<Command> {
    let verb = w.next();
    match verb {
        None => Ok(Command::RouteShow),
        Some(v) if is_help(v) => Ok(Command::Help(Some(Topic::Route))),
        Some(v) if is_show(v) => {
            w.end("route")?;
            Ok(Command::RouteShow)
        }
        Some(v @ ("add" | "del" | "delete")) => {
            let mut dest: Option<&str> = None;
            let mut r = Route::default_route(Family::Ipv4);
            while let Some(word) = w.next() {
                match word {
                    "via" => r.via = Some(address(w.value("via")?)?),
                    "dev" | "oif" => r.dev = Some(w.value("dev")?.to_string()),
                    "metric" | "priority" | "preference" => {
                        r.metric = Some(number("metric", w.value("metric")?)?)
                    }
                    "src" => r.src = Some(address(w.value("src")?)?),
                    "table" => {
                        let t = w.value("table")?;
                        r.table = Some(if t == "main" {
                            254
                        } else {
                            number("table", t)?
                        });
                    }
                    "onlink" => r.onlink = true,
                    "to" => dest = Some(w.value("to")?),
                    other if dest.is_none() => dest = Some(other),
                    other => {
                        return usage(format!(
                            "route {v}: unexpected {other:?} (netctl route help)"
                        ));
                    }
                }
            }
            let Some(dest) = dest else {
                return usage(format!(
                    "route {v} needs a destination: default or a prefix"
                ));
            };
            r.dest = if dest == "default" {
                let fam = family
                    .or(r.via.or(r.src).map(|a| Family::of(&a)))
                    .unwrap_or(Family::Ipv4);
                IpPrefix::default_route(fam)
            } else {
                IpPrefix::parse_network(dest).map_err(|e| Usage(e.to_string()))?
            };
            if r.via.is_none() && r.dev.is_none() && v == "add" {
                return usage(format!(
                    "route add {dest} needs via GATEWAY, dev NAME or both"
                ));
            }
            if let Some(f) = family
                && f != r.dest.family()
            {
                return usage(format!("route {v} {dest}: not an {f} destination"));
            }
            Ok(if v == "add" {
                Command::RouteAdd(r)
            } else {
                Command::RouteDel(r)
            })
        }
        Some(other) => usage(format!(
            "route: unknown command {other:?}: try add, del or show (netctl route help)"
        )),
    }
}

fn netns(w: &mut Words) -> Parsed<Command> {
    let cmd = match w.next() {
        None => Command::NetnsList,
        Some(v) if is_help(v) => Command::Help(Some(Topic::Netns)),
        Some(v) if is_show(v) => Command::NetnsList,
        Some("add") => Command::NetnsAdd(w.value("netns add")?.to_string()),
        Some(v) if is_del(v) => Command::NetnsDel(w.value("netns del")?.to_string()),
        Some("exec") => {
            let name = w.value("netns exec")?.to_string();
            let argv = w.rest();
            if argv.is_empty() {
                return usage("netns exec NAME needs a command to run");
            }
            return Ok(Command::NetnsExec { name, argv });
        }
        Some(other) => {
            return usage(format!(
                "netns: unknown command {other:?}: try add, del, list or exec (netctl netns help)"
            ));
        }
    };
    w.end("netns")?;
    Ok(cmd)
}

fn tuntap_flags(w: &mut Words, cfg: &mut TunTapConfig, context: &str) -> Parsed<()> {
    while let Some(word) = w.next() {
        match word {
            "mode" => {
                cfg.mode = match w.value("mode")? {
                    "tun" => TunMode::Tun,
                    "tap" => TunMode::Tap,
                    other => return usage(format!("mode {other:?}: use tun or tap")),
                }
            }
            "multi_queue" => cfg.multi_queue = true,
            "vnet_hdr" => cfg.vnet_hdr = true,
            "pi" => cfg.pi = true,
            "one_queue" => {}
            "user" => cfg.owner = Some(user_id(w.value("user")?)?),
            "group" => cfg.group = Some(group_id(w.value("group")?)?),
            other => {
                return usage(format!(
                    "{context}: unexpected {other:?}: try mode tun|tap, multi_queue, user U, group G, vnet_hdr, pi"
                ));
            }
        }
    }
    Ok(())
}

/// A uid, by number or by name.
fn user_id(text: &str) -> Parsed<u32> {
    if let Ok(id) = text.parse() {
        return Ok(id);
    }
    match nix::unistd::User::from_name(text) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => usage(format!("user {text:?}: no such user")),
    }
}

/// A gid, by number or by name.
fn group_id(text: &str) -> Parsed<u32> {
    if let Ok(id) = text.parse() {
        return Ok(id);
    }
    match nix::unistd::Group::from_name(text) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => usage(format!("group {text:?}: no such group")),
    }
}

fn tuntap(w: &mut Words) -> Parsed<Command> {
    match w.next() {
        None => Ok(Command::TuntapShow),
        Some(v) if is_help(v) => Ok(Command::Help(Some(Topic::Tuntap))),
        Some(v) if is_show(v) => {
            w.end("tuntap")?;
            Ok(Command::TuntapShow)
        }
        Some("add") => {
            let mut name = None;
            let mut cfg = TunTapConfig::new("", TunMode::Tun);
            let mut mode_given = false;
            while let Some(word) = w.peek() {
                match word {
                    "dev" | "name" => {
                        w.next();
                        name = Some(w.value("dev")?.to_string());
                    }
                    "mode" => {
                        mode_given = true;
                        tuntap_flags(w, &mut cfg, "tuntap add")?;
                    }
                    "multi_queue" | "vnet_hdr" | "pi" | "one_queue" | "user" | "group" => {
                        tuntap_flags(w, &mut cfg, "tuntap add")?;
                    }
                    other if name.is_none() => {
                        name = Some(other.to_string());
                        w.next();
                    }
                    other => {
                        return usage(format!(
                            "tuntap add: unexpected {other:?} (netctl tuntap help)"
                        ));
                    }
                }
            }
            let Some(name) = name else {
                return usage("tuntap add needs `dev NAME`");
            };
            if !mode_given {
                return usage(format!("tuntap add {name} needs `mode tun` or `mode tap`"));
            }
            cfg.name = name;
            Ok(Command::TuntapAdd(cfg))
        }
        Some(v) if is_del(v) => {
            let dev = device(w, "tuntap del")?;
            let mut mode = None;
            while let Some(word) = w.next() {
                match word {
                    "mode" => {
                        mode = Some(match w.value("mode")? {
                            "tun" => TunMode::Tun,
                            "tap" => TunMode::Tap,
                            other => return usage(format!("mode {other:?}: use tun or tap")),
                        })
                    }
                    // Accepted as ip does; deleting needs neither.
                    "multi_queue" | "vnet_hdr" | "pi" | "one_queue" => {}
                    other => return usage(format!("tuntap del: unexpected {other:?}")),
                }
            }
            Ok(Command::TuntapDel { dev, mode })
        }
        Some(other) => usage(format!(
            "tuntap: unknown command {other:?}: try add, del or show (netctl tuntap help)"
        )),
    }
}

fn sysctl(w: &mut Words) -> Parsed<Command> {
    let cmd = match w.next() {
        None => return usage("sysctl needs a key, e.g. netctl -n NS sysctl net.ipv4.ip_forward=1"),
        Some(v) if is_help(v) => Command::Help(Some(Topic::Sysctl)),
        Some("get") => Command::SysctlGet(w.value("sysctl get")?.to_string()),
        Some("set") => {
            let key = w.value("sysctl set")?;
            match key.split_once('=') {
                Some((k, v)) => Command::SysctlSet {
                    key: k.to_string(),
                    value: v.to_string(),
                },
                None => Command::SysctlSet {
                    key: key.to_string(),
                    value: w.value(&format!("sysctl set {key}"))?.to_string(),
                },
            }
        }
        Some("-w") => {
            let kv = w.value("sysctl -w")?;
            let Some((k, v)) = kv.split_once('=') else {
                return usage(format!("sysctl -w {kv}: write KEY=VALUE"));
            };
            Command::SysctlSet {
                key: k.to_string(),
                value: v.to_string(),
            }
        }
        Some(kv) => match kv.split_once('=') {
            Some((k, v)) => Command::SysctlSet {
                key: k.to_string(),
                value: v.to_string(),
            },
            None => Command::SysctlGet(kv.to_string()),
        },
    };
    w.end("sysctl")?;
    Ok(cmd)
}

fn ping(w: &mut Words) -> Parsed<Command> {
    let mut dst = None;
    let mut dev = None;
    let mut count = 1;
    let mut timeout = Duration::from_secs(1);
    while let Some(word) = w.next() {
        match word {
            "-I" => dev = Some(w.value("-I")?.to_string()),
            "-c" => count = number("-c", w.value("-c")?)?,
            "-W" => {
                let secs: f64 = number("-W", w.value("-W")?)?;
                if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
                    return usage(format!("-W {secs}: give seconds between 0 and 3600"));
                }
                timeout = Duration::from_secs_f64(secs);
            }
            v if is_help(v) => return Ok(Command::Help(Some(Topic::Ping))),
            other if dst.is_none() => dst = Some(address(other)?),
            other => return usage(format!("ping: unexpected {other:?} (netctl ping help)")),
        }
    }
    let Some(dst) = dst else {
        return usage("ping needs a destination address");
    };
    if count == 0 {
        return usage("-c 0: send at least one echo");
    }
    Ok(Command::Ping {
        dst,
        dev,
        count,
        timeout,
    })
}

fn topology(w: &mut Words, verb: &str) -> Parsed<Command> {
    let mut file = None;
    let mut prefix = None;
    while let Some(word) = w.next() {
        match word {
            "--prefix" | "prefix" | "-p" => prefix = Some(w.value("--prefix")?.to_string()),
            v if is_help(v) => return Ok(Command::Help(Some(Topic::Topology))),
            other if other.starts_with("--prefix=") => {
                prefix = Some(other.trim_start_matches("--prefix=").to_string());
            }
            other if file.is_none() => file = Some(PathBuf::from(other)),
            other => return usage(format!("{verb}: unexpected {other:?} (netctl {verb} help)")),
        }
    }
    let Some(file) = file else {
        return usage(format!(
            "{verb} needs a topology file, e.g. netctl {verb} topology.toml"
        ));
    };
    Ok(if verb == "apply" {
        Command::Apply { file, prefix }
    } else {
        Command::Destroy { file, prefix }
    })
}

#[cfg(test)]
mod test {
    use super::*;

    fn p(line: &str) -> Parsed<Invocation> {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        parse(&args)
    }

    fn cmd(line: &str) -> Command {
        match p(line) {
            Ok(inv) => inv.command,
            Err(Usage(e)) => panic!("{line:?} did not parse: {e}"),
        }
    }

    fn err(line: &str) -> String {
        match p(line) {
            Ok(inv) => panic!("{line:?} parsed as {inv:?}"),
            Err(Usage(e)) => e,
        }
    }

    /// Every `ip` command of the seed article, with `ip` replaced.
    #[test]
    fn every_ip_command_of_the_seed_parses() {
        assert_eq!(
            cmd("link add veth0 type veth peer name veth1"),
            Command::LinkAdd {
                add: LinkAdd::Veth(VethConfig::new("veth0", "veth1")),
                up: false
            }
        );
        assert_eq!(
            cmd("addr add 10.1.1.2/24 dev veth0"),
            Command::AddrAdd {
                dev: "veth0".into(),
                prefix: "10.1.1.2/24".parse().unwrap(),
                nodad: false
            }
        );
        assert!(matches!(
            cmd("addr add 10.1.1.1/24 dev veth1"),
            Command::AddrAdd { .. }
        ));
        for line in [
            "link set dev veth0 up",
            "link set dev veth1 up",
            "link set br0 up",
        ] {
            match cmd(line) {
                Command::LinkSet { change, .. } => assert_eq!(change.up, Some(true), "{line}"),
                other => panic!("{line}: {other:?}"),
            }
        }
        assert_eq!(
            cmd("link add name br0 type bridge"),
            Command::LinkAdd {
                add: LinkAdd::Bridge {
                    name: "br0".into(),
                    mtu: None
                },
                up: false
            }
        );
        match cmd("link set dev veth0 master br0") {
            Command::LinkSet { dev, change } => {
                assert_eq!(dev, "veth0");
                assert_eq!(change.master, Some(Some("br0".into())));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            cmd("addr del 10.1.1.2/24 dev veth0"),
            Command::AddrDel {
                dev: "veth0".into(),
                prefix: "10.1.1.2/24".parse().unwrap()
            }
        );
        assert!(matches!(
            cmd("addr add 10.1.1.2/24 dev br0"),
            Command::AddrAdd { .. }
        ));
    }

    #[test]
    fn several_attributes_in_one_set() {
        match cmd("link set dev veth0 master br0 up mtu 1400") {
            Command::LinkSet { change, .. } => {
                assert_eq!(change.up, Some(true));
                assert_eq!(change.mtu, Some(1400));
                assert_eq!(change.master, Some(Some("br0".into())));
            }
            other => panic!("{other:?}"),
        }
        match cmd("link set veth1 netns B") {
            Command::LinkSet { change, .. } => {
                assert_eq!(change.netns, Some(NetnsTarget::Named("B".into())))
            }
            other => panic!("{other:?}"),
        }
        match cmd("link set veth1 netns 1") {
            Command::LinkSet { change, .. } => assert_eq!(change.netns, Some(NetnsTarget::Pid(1))),
            other => panic!("{other:?}"),
        }
        assert_eq!(cmd("neigh"), Command::NeighShow { dev: None });
        assert_eq!(
            cmd("neigh show dev veth0"),
            Command::NeighShow {
                dev: Some("veth0".into())
            }
        );
        match cmd("link set dev br0 address fe:54:00:0a:0b:0c") {
            Command::LinkSet { change, .. } => assert_eq!(
                change.address,
                Some(netctl::MacAddr([0xfe, 0x54, 0, 0x0a, 0x0b, 0x0c]))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_options_and_namespaces() {
        let inv = p("-n a -j link show").unwrap();
        assert_eq!(inv.netns.as_deref(), Some("a"));
        assert!(inv.json);
        assert_eq!(inv.command, Command::LinkShow { dev: None });
        assert_eq!(cmd("netns add a"), Command::NetnsAdd("a".into()));
        assert_eq!(cmd("netns del a"), Command::NetnsDel("a".into()));
        assert_eq!(cmd("netns list"), Command::NetnsList);
        assert_eq!(cmd("netns"), Command::NetnsList);
        assert_eq!(
            cmd("netns exec a ip link"),
            Command::NetnsExec {
                name: "a".into(),
                argv: vec!["ip".into(), "link".into()]
            }
        );
        assert!(err("-n a netns add b").contains("-n does not apply"));
    }

    #[test]
    fn tuntap_as_ip_writes_it() {
        match cmd("tuntap add dev tun0 mode tun multi_queue") {
            Command::TuntapAdd(cfg) => {
                assert_eq!(cfg.name, "tun0");
                assert_eq!(cfg.mode, TunMode::Tun);
                assert!(cfg.multi_queue);
            }
            other => panic!("{other:?}"),
        }
        match cmd("tuntap add tap0 mode tap user 0 group 0") {
            Command::TuntapAdd(cfg) => {
                assert_eq!(cfg.mode, TunMode::Tap);
                assert_eq!((cfg.owner, cfg.group), (Some(0), Some(0)));
            }
            other => panic!("{other:?}"),
        }
        assert!(err("tuntap add dev tun0").contains("needs `mode tun` or `mode tap`"));
        assert_eq!(
            cmd("tuntap del dev tun0 mode tun"),
            Command::TuntapDel {
                dev: "tun0".into(),
                mode: Some(TunMode::Tun)
            }
        );
    }

    #[test]
    fn vxlan_and_routes() {
        match cmd(
            "link add vx0 type vxlan id 42 local 10.0.0.1 remote 10.0.0.2 dstport 4789 dev eth0 nolearning",
        ) {
            Command::LinkAdd {
                add: LinkAdd::Vxlan(cfg),
                ..
            } => {
                assert_eq!(cfg.vni, 42);
                assert_eq!(cfg.remote, Some("10.0.0.2".parse().unwrap()));
                assert_eq!(cfg.dev.as_deref(), Some("eth0"));
                assert_eq!(cfg.learning, Some(false));
            }
            other => panic!("{other:?}"),
        }
        match cmd("route add default via 10.1.1.1") {
            Command::RouteAdd(r) => assert_eq!(r.to_string(), "default via 10.1.1.1"),
            other => panic!("{other:?}"),
        }
        match cmd("-6 route add default dev br0") {
            Command::RouteAdd(r) => assert_eq!(r.dest.to_string(), "::/0"),
            other => panic!("{other:?}"),
        }
        match cmd("route add 10.2.0.0/24 via 10.1.1.1 dev br0 metric 10") {
            Command::RouteAdd(r) => {
                assert_eq!(r.to_string(), "10.2.0.0/24 via 10.1.1.1 dev br0 metric 10")
            }
            other => panic!("{other:?}"),
        }
        assert!(err("route add 10.2.0.0/24").contains("needs via GATEWAY, dev NAME or both"));
        assert!(err("route add 10.2.0.5/24 dev x").contains("has host bits set"));
    }

    #[test]
    fn mistakes_get_specific_messages() {
        assert_eq!(
            err("addr add 10.1.1.300/24 dev veth0"),
            "10.1.1.300/24 is not an IPv4 prefix"
        );
        assert!(err("lnk show").contains("unknown object \"lnk\""));
        assert!(err("link set veth0 mtu abc").contains("mtu: \"abc\" is not a number"));
        assert!(err("link set veth0 mtu").contains("mtu needs a value"));
        assert!(err("link set veth0 colour red").contains("unknown attribute \"colour\""));
        assert!(err("link set br0 address fe:54:00").contains("3 octets, 6 expected"));
        assert!(err("neigh flush").contains("only shows the table"));
        assert!(err("link add veth0 type veth").contains("peer name"));
        assert!(err("link add x type wireguard").contains("unknown type"));
        assert!(err("addr add 10.1.1.2/24").contains("needs `dev NAME`"));
        assert!(err("--frobnicate").contains("unknown option"));
        assert!(err("ping").contains("needs a destination"));
        assert!(err("apply").contains("needs a topology file"));
    }

    const WORDS: &[&str] = &[
        "link",
        "addr",
        "route",
        "neigh",
        "netns",
        "tuntap",
        "sysctl",
        "ping",
        "apply",
        "destroy",
        "add",
        "del",
        "set",
        "show",
        "exec",
        "dev",
        "name",
        "type",
        "veth",
        "bridge",
        "vxlan",
        "tun",
        "tap",
        "peer",
        "mtu",
        "up",
        "down",
        "master",
        "nomaster",
        "address",
        "fe:54:00:0a:0b:0c",
        "netns",
        "via",
        "default",
        "metric",
        "table",
        "id",
        "mode",
        "multi_queue",
        "user",
        "group",
        "-n",
        "-j",
        "-4",
        "-6",
        "10.1.1.2/24",
        "fd00::1/64",
        "10.1.1.1",
        "1500",
        "-c",
        "-W",
        "-I",
        "--prefix",
        "=",
        "",
        "help",
        "-w",
        "net.ipv4.ip_forward=1",
        "0",
        "999999999999",
    ];

    proptest::proptest! {
        /// No command line makes the parser panic: it parses or says why not.
        #[test]
        fn parsing_never_panics(
            picks in proptest::collection::vec(0usize..WORDS.len(), 0..10),
            noise in proptest::collection::vec("\\PC{0,12}", 0..3),
        ) {
            let mut args: Vec<String> = picks.iter().map(|&i| WORDS[i].to_string()).collect();
            args.extend(noise);
            if let Err(Usage(message)) = parse(&args) {
                proptest::prop_assert!(!message.is_empty());
            }
        }
    }
}
