//! `uapi: wg-quick up and down` and its full-tunnel case: stock wg-quick
//! in gateway A's namespace with `WG_QUICK_USERSPACE_IMPLEMENTATION=ringtun`
//! (the module missing, it runs `ringtun IFACE`, configures it with `wg
//! setconf`, adds addresses, MTU and routes) against a plain `ringtun up`
//! on gateway B; traffic crosses both ways; `wg-quick down` leaves no
//! interface, socket, rule or daemon.
//!
//! The full tunnel (`AllowedIPs = 0.0.0.0/0, ::/0`) is where the fwmark
//! matters: wg-quick routes everything into the tunnel by a table of its
//! own, except what carries the mark it gives the interface (`wg set
//! fwmark`, SO_MARK on ringtun's sockets). B's endpoint there is an
//! address gateway A reaches only by a default route, which wg-quick's
//! rules hide from unmarked packets, so the tunnel's own datagrams reach B
//! only if ringtun marks them (a connected WAN address would reach B
//! unmarked too and prove nothing).
//!
//! A daemon wg-quick started is not the harness's child: a guard brings
//! it down (by `wg-quick down`, then by its pid), and if the harness dies
//! first, removing the lab takes its device, on which it exits.

use std::net::IpAddr;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netctl::{Family, Netlink, Route};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ringtun_tests::ringtun::{Conf, UAPI_DIR_ENV};

use super::super::checks::{self, Ctx};
use super::super::lab::{l3, l3c, wan};
use super::{
    Keys, Sites3, WG_QUICK, WG_QUICK_FULL, Wg, iface, interface, peer, peer_a, socket_path, up,
    verdict, wg_quick_format,
};
use crate::peers::write_private;
use crate::process;

/// How long `wg-quick up` or `down` may run (ringtun backgrounds once up,
/// within 30 s).
const QUICK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the interface, its socket and its daemon may take to go
/// after `wg-quick down`.
const GONE_WITHIN: Duration = Duration::from_secs(10);
/// The table (and fwmark) wg-quick picks first for a full tunnel.
const TABLE: u32 = 51820;

/// The programs these rows run.
struct Tools {
    wg: Wg,
    wg_quick: PathBuf,
    ip: PathBuf,
    nft: Option<PathBuf>,
    /// A directory holding only `ringtun`, a link to the binary under test,
    /// put first on wg-quick's PATH.
    bin: PathBuf,
}

/// Both rows, against one `ringtun up` on gateway B that has no endpoint
/// for A (so that A's endpoint for B stays the one its file gives: B
/// answers from the address A sent to).
pub fn rows(ctx: &mut Ctx, s: &Sites3, wg: &Wg, keys: &Keys) -> Result<()> {
    let rows = [WG_QUICK, WG_QUICK_FULL];
    if !ctx.wants_any(&rows) {
        return Ok(());
    }
    ctx.interrupted()?;
    let beside_wg = wg.path.with_file_name("wg-quick");
    let found = [
        beside_wg.is_file().then_some(beside_wg),
        ringtun_tests::find_in_path("wg-quick"),
    ]
    .into_iter()
    .flatten()
    .next()
    .zip(ringtun_tests::find_in_path("ip"));
    let Some((wg_quick, ip)) = found else {
        for r in rows {
            if ctx.wants(r) {
                ctx.table.skip(
                    r,
                    "wg-quick (wireguard-tools) or ip (iproute2) is not on PATH",
                );
            }
        }
        return Ok(());
    };
    let bin = ctx.dir.path().join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let link = bin.join("ringtun");
    if !link.exists() {
        symlink(ringtun_tests::ringtun::ringtun_bin()?, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let tools = Tools {
        wg: wg.clone(),
        wg_quick,
        ip,
        nft: ringtun_tests::find_in_path("nft"),
        bin,
    };
    let b_conf = interface(&keys.b, l3::TUN_B).peer(peer_a(keys, None));
    let b = up(ctx, &s.gw_b, &b_conf, &iface('b'))?;
    // A full tunnel's rules go through nft, or iptables-restore without it.
    let firewall = tools.nft.is_some()
        || ["iptables-restore", "ip6tables-restore"]
            .iter()
            .all(|t| ringtun_tests::find_in_path(t).is_some());
    for (row, full) in [(WG_QUICK, false), (WG_QUICK_FULL, true)] {
        if full && !firewall && ctx.wants(row) {
            ctx.table.skip(
                row,
                "wg-quick's full tunnel needs nft (nftables) or iptables-restore and ip6tables-restore",
            );
            continue;
        }
        if ctx.wants(row) {
            checks::guarded(ctx, row, |ctx| one(ctx, s, &tools, keys, &b, row, full))?;
        }
    }
    checks::terminate_row(ctx, b);
    Ok(())
}

/// Gateway A's wg-quick file: B's site (or everything, `full`) through B
/// at its WAN address (or at the address behind the default route).
fn conf_a(keys: &Keys, full: bool) -> Conf {
    let b = if full {
        peer(
            &keys.b.public_key,
            &["0.0.0.0/0", "::/0"],
            Some(wan::at(l3c::FAR_B4, l3::PORT)),
        )
    } else {
        let mut allowed = l3::TUN_B_HOST.to_vec();
        allowed.extend(l3::LAN_B_NETS);
        peer(
            &keys.b.public_key,
            &allowed,
            Some(wan::at(wan::B4, l3::PORT)),
        )
    };
    interface(&keys.a, l3::TUN_A).peer(b)
}

/// `ip -4 rule` and `ip -6 rule` in `ns`.
fn rules(tools: &Tools, ns: &str) -> Result<String> {
    let v4 = process::run_with_timeout(ns, &tools.ip, &["-4", "rule"], QUICK_TIMEOUT)?;
    let v6 = process::run_with_timeout(ns, &tools.ip, &["-6", "rule"], QUICK_TIMEOUT)?;
    Ok(format!("{v4}{v6}"))
}

/// The last lines of what a command printed, for a figure.
fn tail(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

/// A process's state letter from /proc (None: no such process).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// The command name of a process.
fn proc_comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_string())
}

/// A wg-quick interface up in a namespace; brought down on drop if a row
/// did not (wg-quick down, then SIGTERM/SIGKILL to the daemon's pid, then
/// its socket removed).
struct Quick<'a> {
    tools: &'a Tools,
    ns: String,
    file: PathBuf,
    iface: String,
    workers: Option<usize>,
    /// The daemon, once known.
    pid: Option<u32>,
    /// `wg-quick down` ran.
    down: bool,
}

impl Quick<'_> {
    /// `wg-quick VERB FILE` inside the namespace, as `ip netns exec` runs
    /// it, with ringtun as the userspace implementation.
    fn wg_quick(&self, verb: &str) -> Result<Output> {
        let path = format!(
            "PATH={}:{}",
            self.tools.bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let uapi = format!("{UAPI_DIR_ENV}=");
        let workers = self.workers.map(|w| format!("RINGTUN_WORKERS={w}"));
        let file = self.file.to_string_lossy().into_owned();
        let quick = self.tools.wg_quick.to_string_lossy().into_owned();
        let mut args = vec![
            "netns",
            "exec",
            &self.ns,
            "env",
            &path,
            "WG_QUICK_USERSPACE_IMPLEMENTATION=ringtun",
            &uapi,
        ];
        if let Some(w) = &workers {
            args.push(w);
        }
        args.extend([quick.as_str(), verb, file.as_str()]);
        process::output_in(&self.ns, &self.tools.ip, &args, &[], QUICK_TIMEOUT)
    }
}

impl Drop for Quick<'_> {
    fn drop(&mut self) {
        if !self.down && socket_path(&self.iface).exists() {
            let _ = self.wg_quick("down");
        }
        if let Some(pid) = self.pid {
            let ours = || proc_comm(pid).as_deref() == Some("ringtun");
            if ours() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                let deadline = Instant::now() + GONE_WITHIN;
                while ours() && proc_state(pid) != Some('Z') && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if ours() && proc_state(pid) != Some('Z') {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
        let socket = socket_path(&self.iface);
        if socket.exists()
            && self
                .pid
                .is_none_or(|p| proc_state(p).is_none_or(|s| s == 'Z'))
        {
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// A default route in a namespace's main table, removed on drop.
struct DefaultVia {
    ns: String,
    via: IpAddr,
}

impl DefaultVia {
    fn add(ns: &str, via: IpAddr) -> Result<DefaultVia> {
        Netlink::in_netns(ns)?.route_add(&Route::default_route(Family::Ipv4).via(via))?;
        Ok(DefaultVia {
            ns: ns.to_string(),
            via,
        })
    }
}

impl Drop for DefaultVia {
    fn drop(&mut self) {
        if let Ok(nl) = Netlink::in_netns(&self.ns) {
            let _ = nl.route_del(&Route::default_route(Family::Ipv4).via(self.via));
        }
    }
}

/// Waits until `done` says yes or `within` passes; whether it did.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One row: wg-quick up, traffic both ways, wg-quick down and nothing left.
fn one(
    ctx: &mut Ctx,
    s: &Sites3,
    tools: &Tools,
    keys: &Keys,
    b: &ringtun_tests::ringtun::Ringtun,
    row: &str,
    full: bool,
) -> Result<()> {
    ctx.interrupted()?;
    let q = iface('q');
    let file = ctx.dir.path().join(format!("{q}.conf"));
    write_private(&file, &wg_quick_format(&conf_a(keys, full)))?;
    let rules_before = rules(tools, &s.gw_a)?;
    let _default = if full {
        Some(DefaultVia::add(&s.gw_a, wan::B4)?)
    } else {
        None
    };
    let mut quick = Quick {
        tools,
        ns: s.gw_a.clone(),
        file,
        iface: q.clone(),
        workers: ctx.opts.workers,
        pid: None,
        down: false,
    };
    let mut wrong = Vec::new();
    let up_out = quick.wg_quick("up")?;
    if !up_out.status.success() {
        bail!("wg-quick up failed ({}): {}", up_out.status, tail(&up_out));
    }
    let stderr = String::from_utf8_lossy(&up_out.stderr).into_owned();
    if !stderr.contains(&format!("[#] ringtun {q}")) {
        wrong.push(format!(
            "wg-quick did not run `ringtun {q}`: {}",
            tail(&up_out)
        ));
    }
    let status = ringtun_tests::ringtun::show_json_with_env(
        Some(&s.gw_a),
        &q,
        &[(UAPI_DIR_ENV.to_string(), String::new())],
    )?;
    quick.pid = Some(status.pid);
    let exe = std::fs::read_link(format!("/proc/{}/exe", status.pid)).ok();
    let bin = std::fs::canonicalize(ringtun_tests::ringtun::ringtun_bin()?).ok();
    if exe.is_none() || exe != bin {
        wrong.push(format!(
            "the daemon serving {q} (pid {}) runs {exe:?}, not {bin:?}",
            status.pid
        ));
    }
    let mark = tools.wg.run(&s.gw_a, &["show", &q, "fwmark"])?;
    let rules_up = rules(tools, &s.gw_a)?;
    let want_mark = format!("0x{TABLE:x}");
    let rule = format!("not from all fwmark {want_mark} lookup {TABLE}");
    if full && (mark.trim() != want_mark || !rules_up.contains(&rule)) {
        wrong.push(format!(
            "full tunnel: fwmark {:?} (expected {want_mark}); rules: {}",
            mark.trim(),
            rules_up.lines().collect::<Vec<_>>().join(" | ")
        ));
    }
    if !full && mark.trim() != "off" {
        wrong.push(format!("fwmark {:?} without a full tunnel", mark.trim()));
    }

    let a_key = keys.a.public_key.as_str();
    let rx_from_a = || -> Result<u64> {
        Ok(b.show()?
            .peers
            .iter()
            .find(|p| p.name == a_key)
            .map_or(0, |p| p.rx_bytes))
    };
    let rx0 = rx_from_a()?;
    let mut pings = Vec::new();
    for (ns, dst, label) in [
        (&s.lan_a, l3::LAN_B4, "a->b v4"),
        (&s.lan_a, l3::LAN_B6, "a->b v6"),
        (&s.lan_b, l3::LAN_A4, "b->a v4"),
        (&s.lan_b, l3::LAN_A6, "b->a v6"),
    ] {
        let echo = checks::ping_until(ns, dst, Duration::from_secs(10))?;
        if !echo.is_reply() {
            wrong.push(format!("{label} unanswered"));
        }
        pings.push(format!(
            "{label} {}",
            if echo.is_reply() { "ok" } else { "LOST" }
        ));
    }
    let rx1 = rx_from_a()?;
    if rx1 <= rx0 {
        wrong.push("B received nothing from A: the pings did not cross the tunnel".into());
    }
    let endpoints = tools.wg.run(&s.gw_a, &["show", &q, "endpoints"])?;
    let want_endpoint = wan::at(if full { l3c::FAR_B4 } else { wan::B4 }, l3::PORT).to_string();
    if !endpoints.contains(&want_endpoint) {
        wrong.push(format!(
            "A's endpoint for B is {:?}, not {want_endpoint}",
            endpoints.trim()
        ));
    }

    let down_out = quick.wg_quick("down")?;
    quick.down = true;
    if !down_out.status.success() {
        wrong.push(format!(
            "wg-quick down failed ({}): {}",
            down_out.status,
            tail(&down_out)
        ));
    }
    let nl = Netlink::in_netns(&s.gw_a)?;
    let pid = status.pid;
    let link_gone = wait_until(GONE_WITHIN, || nl.link_index(&q).is_err());
    let socket_gone = wait_until(GONE_WITHIN, || !socket_path(&q).exists());
    let daemon_gone = wait_until(GONE_WITHIN, || {
        proc_state(pid).is_none_or(|st| st == 'Z') || proc_comm(pid).as_deref() != Some("ringtun")
    });
    for (gone, what) in [
        (link_gone, format!("interface {q}")),
        (socket_gone, format!("socket {}", socket_path(&q).display())),
        (daemon_gone, format!("daemon pid {pid}")),
    ] {
        if !gone {
            wrong.push(format!(
                "{what} still there {GONE_WITHIN:?} after wg-quick down"
            ));
        }
    }
    let rules_after = rules(tools, &s.gw_a)?;
    if rules_after != rules_before {
        wrong.push(format!(
            "ip rules after down: {} (before: {})",
            rules_after.lines().collect::<Vec<_>>().join(" | "),
            rules_before.lines().collect::<Vec<_>>().join(" | ")
        ));
    }
    let table_left = nl.routes_in_table(None, TABLE)?;
    if !table_left.is_empty() {
        wrong.push(format!(
            "table {TABLE} still holds {} route(s)",
            table_left.len()
        ));
    }
    let nft_note = match &tools.nft {
        Some(nft) => {
            let tables =
                process::run_with_timeout(&s.gw_a, nft, &["list", "tables"], QUICK_TIMEOUT)?;
            if tables.contains(&format!("wg-quick-{q}")) {
                wrong.push(format!("nft table wg-quick-{q} left: {}", tables.trim()));
            }
            "nft tables"
        }
        None => "(no nft to list)",
    };
    let rule_note = if rules_up.contains(&rule) {
        format!(", rule `{rule}`")
    } else {
        String::new()
    };
    let figure = format!(
        "wg-quick up: ringtun pid {pid}, fwmark {}{rule_note}; {}; B received +{} B from A; \
         endpoint {want_endpoint}; after down checked: interface, socket, daemon, ip rules, \
         table {TABLE}, {nft_note}",
        mark.trim(),
        pings.join(", "),
        rx1.saturating_sub(rx0)
    );
    verdict(ctx, row, &wrong, &figure);
    Ok(())
}
