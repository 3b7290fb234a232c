//! Carries out a parsed command through the library and renders the result.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use netctl::ping::{Echo, PingOptions};
use netctl::{AddrOptions, Family, Link, LinkKind, Netlink, Topology, netns, sysctl, tuntap};

use crate::help;
use crate::parse::{Command, Invocation, LinkAdd};

/// What to print and how to exit.
pub struct Outcome {
    /// Text for stdout.
    pub stdout: String,
    /// Exit status.
    pub code: ExitCode,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Outcome {
            stdout,
            code: ExitCode::SUCCESS,
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("rendering JSON")?;
    text.push('\n');
    Ok(text)
}

/// Runs one command.
pub fn run(inv: Invocation) -> Result<Outcome> {
    let ns = inv.netns.as_deref();
    let text = match inv.command {
        Command::Help(topic) => help::text(topic),
        Command::Version => format!("netctl {}\n", env!("CARGO_PKG_VERSION")),
        Command::LinkAdd { add, up } => {
            let handle = Netlink::open(ns)?;
            let name = add.name().to_string();
            let mtu = match add {
                LinkAdd::Veth(cfg) => {
                    handle.add_veth(&cfg)?;
                    None
                }
                LinkAdd::Bridge { name, mtu } => {
                    handle.add_bridge(&name)?;
                    mtu
                }
                LinkAdd::Dummy { name, mtu } => {
                    handle.add_dummy(&name)?;
                    mtu
                }
                LinkAdd::Vxlan(cfg) => {
                    handle.add_vxlan(&cfg)?;
                    None
                }
                LinkAdd::TunTap { cfg, mtu } => {
                    tuntap::create_in(ns, &cfg)?;
                    mtu
                }
            };
            if let Some(mtu) = mtu {
                handle.set_mtu(&name, mtu)?;
            }
            if up {
                handle.link_set_up(&name)?;
            }
            String::new()
        }
        Command::LinkSet { dev, change } => {
            Netlink::open(ns)?.link_set(&dev, &change)?;
            String::new()
        }
        Command::LinkDel { dev } => {
            Netlink::open(ns)?.delete_link(&dev)?;
            String::new()
        }
        Command::LinkShow { dev } | Command::AddrShow { dev } => {
            let handle = Netlink::open(ns)?;
            let all = handle.links()?;
            let shown: Vec<Link> = match &dev {
                Some(name) => vec![handle.link(name)?],
                None => all.clone(),
            };
            if inv.json {
                json(&shown)?
            } else {
                render_links(&shown, &all)
            }
        }
        Command::AddrAdd { dev, prefix, nodad } => {
            Netlink::open(ns)?.addr_add_with(&dev, prefix, AddrOptions { nodad })?;
            String::new()
        }
        Command::AddrDel { dev, prefix } => {
            Netlink::open(ns)?.addr_del(&dev, prefix)?;
            String::new()
        }
        Command::RouteAdd(route) => {
            Netlink::open(ns)?.route_add(&route)?;
            String::new()
        }
        Command::RouteDel(route) => {
            Netlink::open(ns)?.route_del(&route)?;
            String::new()
        }
        Command::RouteShow => {
            // As `ip route`: IPv4 unless -6.
            let routes = Netlink::open(ns)?.routes(Some(inv.family.unwrap_or(Family::Ipv4)))?;
            if inv.json {
                json(&routes)?
            } else {
                routes.iter().map(|r| format!("{r}\n")).collect()
            }
        }
        Command::NeighShow { dev } => {
            let entries = Netlink::open(ns)?.neighbours(dev.as_deref())?;
            if inv.json {
                json(&entries)?
            } else {
                entries.iter().map(|n| format!("{n}\n")).collect()
            }
        }
        Command::NetnsAdd(name) => {
            netns::add(&name)?;
            String::new()
        }
        Command::NetnsDel(name) => {
            netns::delete(&name)?;
            String::new()
        }
        Command::NetnsList => {
            let names = netns::list()?;
            if inv.json {
                json(&names)?
            } else {
                names.iter().map(|n| format!("{n}\n")).collect()
            }
        }
        Command::NetnsExec { name, argv } => return exec_in(&name, &argv),
        Command::TuntapAdd(cfg) => {
            tuntap::create_in(ns, &cfg)?;
            String::new()
        }
        Command::TuntapDel { dev, mode } => {
            tuntap::delete(&Netlink::open(ns)?, &dev, mode)?;
            String::new()
        }
        Command::TuntapShow => {
            let links: Vec<Link> = Netlink::open(ns)?
                .links()?
                .into_iter()
                .filter(|l| matches!(l.kind, LinkKind::Tun | LinkKind::Tap))
                .collect();
            if inv.json {
                json(&links)?
            } else {
                links
                    .iter()
                    .map(|l| format!("{}: {}\n", l.name, tun_words(l)))
                    .collect()
            }
        }
        Command::SysctlGet(key) => format!("{key} = {}\n", sysctl::read_in(ns, &key)?),
        Command::SysctlSet { key, value } => {
            sysctl::write_in(ns, &key, &value)?;
            format!("{key} = {value}\n")
        }
        Command::Ping {
            dst,
            dev,
            count,
            timeout,
        } => {
            let opts = PingOptions {
                timeout,
                interface: dev,
                ..PingOptions::default()
            };
            let mut out = String::new();
            let mut answered = 0;
            for seq in 1..=count {
                match netctl::ping::echo_in(ns, dst, &opts)? {
                    Echo::Reply { rtt, bytes } => {
                        answered += 1;
                        let _ = writeln!(
                            out,
                            "{bytes} bytes from {dst}: seq={seq} time={:.3} ms",
                            rtt.as_secs_f64() * 1e3
                        );
                    }
                    Echo::Unreachable { reason } => {
                        let _ = writeln!(out, "{dst}: seq={seq} unreachable ({reason})");
                    }
                    Echo::Timeout => {
                        let _ = writeln!(
                            out,
                            "{dst}: seq={seq} no reply within {:.1} s",
                            timeout.as_secs_f64()
                        );
                    }
                }
            }
            let _ = writeln!(out, "{count} sent, {answered} answered");
            return Ok(Outcome {
                stdout: out,
                code: if answered == count {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            });
        }
        Command::Apply { file, prefix } => {
            let topology = Topology::from_file(&file)?;
            let applied = topology.apply(prefix.as_deref())?;
            let mut out = String::new();
            for what in &applied.created {
                let _ = writeln!(out, "created   {what}");
            }
            for what in &applied.unchanged {
                let _ = writeln!(out, "unchanged {what}");
            }
            let _ = writeln!(
                out,
                "{}: {} created, {} unchanged (prefix {:?})",
                file.display(),
                applied.created.len(),
                applied.unchanged.len(),
                applied.prefix
            );
            out
        }
        Command::Destroy { file, prefix } => {
            let topology = Topology::from_file(&file)?;
            let destroyed = topology.destroy(prefix.as_deref())?;
            let mut out = String::new();
            for ns in &destroyed.deleted {
                let _ = writeln!(out, "deleted namespace {ns}");
            }
            for ns in &destroyed.absent {
                let _ = writeln!(out, "absent  namespace {ns}");
            }
            out
        }
    };
    Ok(Outcome::ok(text))
}

/// Replaces this process with `argv` running inside the namespace, as
/// `ip netns exec` does. netctl is single-threaded here, so entering the
/// namespace on this thread moves exactly the process about to exec.
fn exec_in(name: &str, argv: &[String]) -> Result<Outcome> {
    let fd = netns::open(name)?;
    nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering namespace {name} needs CAP_SYS_ADMIN: run as root"))?;
    let Some((program, args)) = argv.split_first() else {
        bail!("netns exec {name} needs a command");
    };
    let err = std::process::Command::new(program).args(args).exec();
    bail!("running {program} in namespace {name}: {err}")
}

fn tun_words(link: &Link) -> String {
    let Some(t) = link.tun else {
        return link.kind.to_string();
    };
    let mut words = vec![if t.tap {
        "tap".to_string()
    } else {
        "tun".to_string()
    }];
    if !t.pi {
        words.push("no_pi".into());
    }
    if t.multi_queue {
        words.push("multi_queue".into());
    }
    if t.persist {
        words.push("persist".into());
    }
    if t.vnet_hdr {
        words.push("vnet_hdr".into());
    }
    if let Some(uid) = t.owner {
        words.push(format!("user {uid}"));
    }
    if let Some(gid) = t.group {
        words.push(format!("group {gid}"));
    }
    words.push(format!("queues {}", t.queues));
    words.join(" ")
}

/// `ip link`-like text: one header line per link, then its details.
fn render_links(shown: &[Link], all: &[Link]) -> String {
    let names: HashMap<u32, &str> = all.iter().map(|l| (l.index, l.name.as_str())).collect();
    let mut out = String::new();
    for link in shown {
        let at = match (&link.kind, link.link_index, link.link_netnsid) {
            // The peer is in another namespace: only its index means anything.
            (LinkKind::Veth, Some(i), Some(_)) => format!("@if{i}"),
            (LinkKind::Veth, Some(i), None) => match names.get(&i) {
                Some(peer) => format!("@{peer}"),
                None => format!("@if{i}"),
            },
            _ => String::new(),
        };
        let _ = write!(
            out,
            "{}: {}{at}: <{}> mtu {}",
            link.index,
            link.name,
            link.flags.join(","),
            link.mtu
        );
        if let Some(master) = &link.master {
            let _ = write!(out, " master {master}");
        }
        let _ = writeln!(out, " state {} kind {}", link.state, link.kind);
        if let Some(mac) = &link.mac {
            let kind = if link.kind == LinkKind::Loopback {
                "loopback"
            } else {
                "ether"
            };
            let _ = writeln!(out, "    link/{kind} {mac}");
        }
        if let Some(v) = &link.vxlan {
            let _ = write!(out, "    vxlan id {}", v.vni);
            if let Some(a) = v.remote {
                let _ = write!(out, " remote {a}");
            }
            if let Some(a) = v.group {
                let _ = write!(out, " group {a}");
            }
            if let Some(a) = v.local {
                let _ = write!(out, " local {a}");
            }
            if let Some(dev) = v.dev_index.and_then(|i| names.get(&i)) {
                let _ = write!(out, " dev {dev}");
            }
            let _ = writeln!(
                out,
                " dstport {}{}",
                v.dstport,
                if v.learning { "" } else { " nolearning" }
            );
        }
        if link.tun.is_some() {
            let _ = writeln!(out, "    {}", tun_words(link));
        }
        for a in &link.addresses {
            let _ = write!(
                out,
                "    {} {} scope {}",
                a.family().ip_word(),
                a.prefix,
                a.scope
            );
            if a.tentative {
                out.push_str(" tentative");
            }
            if a.dadfailed {
                out.push_str(" dadfailed");
            }
            out.push('\n');
        }
    }
    out
}
