//! `uapi: wg show, showconf, dump`: after a transfer, what the stock
//! tools print of gateway A (and of B, whose socket sits in the same
//! directory) is what the files say: keys, port, endpoints, AllowedIPs;
//! and a handshake within the last minute and counters that rose. The
//! parsers of wg's three outputs live here too.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use netctl::IpPrefix;
use ringtun_tests::ringtun::{Conf, Keypair};

use super::super::checks::{self, Ctx, human};
use super::super::lab::{l3, l3c};
use super::{Confs, Keys, SHOW, Sites3, Wg, iface, verdict};

/// Bytes of the transfer from lan-a to lan-b before the tools are asked.
const TRANSFER: u64 = 16 << 20;
/// How old the latest handshake may be.
const RECENT: u64 = 60;

/// One interface line of `wg show all dump`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpInterface {
    /// Interface name.
    pub name: String,
    /// Private key, base64 (`(none)` without one).
    pub private_key: String,
    /// Public key, base64.
    pub public_key: String,
    /// Listen port.
    pub listen_port: String,
    /// fwmark (`off`, or hex).
    pub fwmark: String,
}

/// One peer line of `wg show all dump`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpPeer {
    /// The interface it belongs to.
    pub iface: String,
    /// Its public key, base64.
    pub public_key: String,
    /// `(none)` or the key.
    pub preshared_key: String,
    /// `IP:PORT` or `(none)`.
    pub endpoint: String,
    /// AllowedIPs as printed.
    pub allowed_ips: Vec<String>,
    /// Unix time of the latest handshake (0: none).
    pub latest_handshake: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// `off` or seconds.
    pub keepalive: String,
}

/// `wg show all dump`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    /// Interface lines.
    pub interfaces: Vec<DumpInterface>,
    /// Peer lines.
    pub peers: Vec<DumpPeer>,
}

impl Dump {
    /// Parses the tab-separated lines: 5 fields for an interface, 9 for a
    /// peer; anything else is an error naming the line.
    pub fn parse(text: &str) -> Result<Dump> {
        let mut dump = Dump::default();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let num = |i: usize| -> Result<u64> {
                f[i].parse()
                    .with_context(|| format!("dump line {}: field {} is {:?}", n + 1, i + 1, f[i]))
            };
            match f.len() {
                5 => dump.interfaces.push(DumpInterface {
                    name: f[0].into(),
                    private_key: f[1].into(),
                    public_key: f[2].into(),
                    listen_port: f[3].into(),
                    fwmark: f[4].into(),
                }),
                9 => dump.peers.push(DumpPeer {
                    iface: f[0].into(),
                    public_key: f[1].into(),
                    preshared_key: f[2].into(),
                    endpoint: f[3].into(),
                    allowed_ips: if f[4] == "(none)" {
                        Vec::new()
                    } else {
                        f[4].split(',').map(String::from).collect()
                    },
                    latest_handshake: num(5)?,
                    rx_bytes: num(6)?,
                    tx_bytes: num(7)?,
                    keepalive: f[8].into(),
                }),
                k => bail!("dump line {} has {k} fields: {line:?}", n + 1),
            }
        }
        Ok(dump)
    }

    /// The interface line of `name`.
    pub fn interface(&self, name: &str) -> Option<&DumpInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The peer `key` of interface `iface`.
    pub fn peer(&self, iface: &str, key: &str) -> Option<&DumpPeer> {
        self.peers
            .iter()
            .find(|p| p.iface == iface && p.public_key == key)
    }

    /// The peers of interface `iface`.
    pub fn peers_of(&self, iface: &str) -> Vec<&DumpPeer> {
        self.peers.iter().filter(|p| p.iface == iface).collect()
    }
}

/// One section of [`Sections`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// `Interface`, `Peer` (INI) or `interface`, `peer` (`wg show`).
    pub head: String,
    /// What follows the head in `wg show` (the name, the key); empty in INI.
    pub name: String,
    /// Its `key`, `value` lines, in order.
    pub lines: Vec<(String, String)>,
}

/// Text in sections, each a head and `key: value` or `key = value`
/// lines: `wg showconf`'s INI (`[Interface]`, `[Peer]`) or `wg show`'s
/// (`interface: NAME`, `peer: KEY`, then indented `key: value`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sections {
    /// The sections, in order.
    pub sections: Vec<Section>,
}

impl Sections {
    /// `wg showconf`'s format.
    pub fn ini(text: &str) -> Sections {
        let mut out = Sections::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                out.sections.push(Section {
                    head: head.to_string(),
                    ..Section::default()
                });
            } else if let (Some((k, v)), Some(last)) =
                (line.split_once('='), out.sections.last_mut())
            {
                last.lines
                    .push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        out
    }

    /// `wg show IFACE`'s format.
    pub fn pretty(text: &str) -> Sections {
        let mut out = Sections::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if line.starts_with(' ') {
                if let Some(last) = out.sections.last_mut() {
                    last.lines
                        .push((k.trim().to_string(), v.trim().to_string()));
                }
            } else {
                out.sections.push(Section {
                    head: k.trim().to_string(),
                    name: v.trim().to_string(),
                    lines: Vec::new(),
                });
            }
        }
        out
    }

    /// The sections whose head is `head`.
    pub fn all(&self, head: &str) -> Vec<&Section> {
        self.sections.iter().filter(|s| s.head == head).collect()
    }
}

/// The value of `key` among a section's lines.
pub fn value<'a>(lines: &'a [(String, String)], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// AllowedIPs as a set, however they were written (`a, b` or `a,b`).
pub fn prefixes<'a>(list: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<IpPrefix>> {
    list.into_iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "(none)")
        .map(|p| p.parse().with_context(|| format!("{p:?} is not a prefix")))
        .collect()
}

/// `wg show`'s relative time (`Now`, `12 seconds ago`, `1 minute, 3
/// seconds ago`) is within a minute.
pub fn within_a_minute(pretty: &str) -> bool {
    pretty == "Now"
        || (pretty.ends_with("ago")
            && !["minute", "hour", "day", "year"]
                .iter()
                .any(|u| pretty.contains(u)))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a peer's traffic must have done between two dumps.
struct Rose<'a> {
    /// Its public key.
    key: &'a str,
    /// Its name in the figure.
    label: &'a str,
    /// Bytes sent to it at least.
    tx: u64,
    /// Bytes received from it at least.
    rx: u64,
}

/// Checks interface `name` in two dumps against its key pair and file;
/// appends what differs to `wrong` and returns the figure of its peers.
fn check_dump(
    wrong: &mut Vec<String>,
    (before, after): (&Dump, &Dump),
    name: &str,
    keys: &Keypair,
    conf: &Conf,
    rose: &[Rose<'_>],
) -> String {
    let now = unix_now();
    let Some(i) = after.interface(name) else {
        wrong.push(format!("dump: no interface {name}"));
        return String::new();
    };
    let port = conf.listen_port.map(|p| p.to_string()).unwrap_or_default();
    for (what, got, want) in [
        ("private key", &i.private_key, keys.private_key.as_str()),
        ("public key", &i.public_key, keys.public_key.as_str()),
        ("listen port", &i.listen_port, port.as_str()),
        ("fwmark", &i.fwmark, "off"),
    ] {
        if got != want {
            wrong.push(format!(
                "dump: {name}'s {what} is {got:?}, the file's {want:?}"
            ));
        }
    }
    let want_keys: BTreeSet<&str> = conf
        .peers
        .iter()
        .filter_map(|p| p.public_key.as_deref())
        .collect();
    let got_keys: BTreeSet<&str> = after
        .peers_of(name)
        .iter()
        .map(|p| p.public_key.as_str())
        .collect();
    if want_keys != got_keys {
        wrong.push(format!(
            "dump: {name}'s peers are {got_keys:?}, the file's {want_keys:?}"
        ));
    }
    for p in &conf.peers {
        let key = p.public_key.as_deref().unwrap_or_default();
        let Some(d) = after.peer(name, key) else {
            continue;
        };
        let endpoint = p.endpoint.as_deref().unwrap_or("(none)");
        if d.endpoint != endpoint {
            wrong.push(format!(
                "dump: {name} peer {key}: endpoint {}, the file's {endpoint}",
                d.endpoint
            ));
        }
        match (
            prefixes(d.allowed_ips.iter().map(String::as_str)),
            prefixes(p.allowed_ips.iter().map(String::as_str)),
        ) {
            (Ok(got), Ok(want)) if got == want => {}
            (got, want) => wrong.push(format!(
                "dump: {name} peer {key}: allowed ips {got:?}, the file's {want:?}"
            )),
        }
        if d.preshared_key != "(none)" || d.keepalive != "off" {
            wrong.push(format!(
                "dump: {name} peer {key}: preshared key {:?} and keepalive {:?}, the file has neither",
                d.preshared_key, d.keepalive
            ));
        }
        let age = now.saturating_sub(d.latest_handshake);
        if d.latest_handshake == 0 || d.latest_handshake > now + 1 || age > RECENT {
            wrong.push(format!(
                "dump: {name} peer {key}: latest handshake {} (now {now})",
                d.latest_handshake
            ));
        }
    }
    let mut figure = Vec::new();
    for r in rose {
        let Some(d) = after.peer(name, r.key) else {
            continue;
        };
        let old = before.peer(name, r.key);
        let tx = d.tx_bytes.saturating_sub(old.map_or(0, |o| o.tx_bytes));
        let rx = d.rx_bytes.saturating_sub(old.map_or(0, |o| o.rx_bytes));
        if tx < r.tx || rx < r.rx {
            wrong.push(format!(
                "dump: {name} peer {}: tx +{tx} B, rx +{rx} B; expected at least +{} and +{}",
                r.label, r.tx, r.rx
            ));
        }
        figure.push(format!(
            "{} handshake {} s ago, tx +{} rx +{}",
            r.label,
            now.saturating_sub(d.latest_handshake),
            human(tx),
            human(rx)
        ));
    }
    figure.join(", ")
}

/// Checks `wg show NAME` against the key pair and the file.
fn check_pretty(wrong: &mut Vec<String>, text: &str, name: &str, keys: &Keypair, conf: &Conf) {
    let s = Sections::pretty(text);
    match s.all("interface").first() {
        Some(Section { name: n, lines, .. }) if n == name => {
            let port = conf.listen_port.map(|p| p.to_string()).unwrap_or_default();
            for (k, want) in [
                ("public key", keys.public_key.as_str()),
                ("private key", "(hidden)"),
                ("listening port", port.as_str()),
            ] {
                if value(lines, k) != Some(want) {
                    wrong.push(format!(
                        "wg show: {k} is {:?}, expected {want:?}",
                        value(lines, k)
                    ));
                }
            }
        }
        other => wrong.push(format!("wg show: interface section {other:?}")),
    }
    let peers = s.all("peer");
    if peers.len() != conf.peers.len() {
        wrong.push(format!(
            "wg show: {} peers, the file has {}",
            peers.len(),
            conf.peers.len()
        ));
    }
    for p in &conf.peers {
        let key = p.public_key.as_deref().unwrap_or_default();
        let Some(Section { lines, .. }) = peers.iter().find(|p| p.name == key) else {
            wrong.push(format!("wg show: no peer {key}"));
            continue;
        };
        if value(lines, "endpoint") != p.endpoint.as_deref() {
            wrong.push(format!(
                "wg show: peer {key} endpoint {:?}, the file's {:?}",
                value(lines, "endpoint"),
                p.endpoint
            ));
        }
        let got = prefixes(value(lines, "allowed ips"));
        let want = prefixes(p.allowed_ips.iter().map(String::as_str));
        if !matches!((&got, &want), (Ok(g), Ok(w)) if g == w) {
            wrong.push(format!(
                "wg show: peer {key} allowed ips {got:?}, the file's {want:?}"
            ));
        }
        match value(lines, "latest handshake") {
            Some(t) if within_a_minute(t) => {}
            t => wrong.push(format!("wg show: peer {key} latest handshake {t:?}")),
        }
        if value(lines, "transfer").is_none_or(|t| !t.contains("received")) {
            wrong.push(format!("wg show: peer {key} has no transfer line"));
        }
    }
}

/// Checks `wg showconf` against the key pair and the file: exactly the
/// interface's key and port, and each peer's key, AllowedIPs and endpoint.
fn check_showconf(wrong: &mut Vec<String>, text: &str, keys: &Keypair, conf: &Conf) {
    let s = Sections::ini(text);
    let interface: Vec<(String, String)> = s
        .all("Interface")
        .first()
        .map(|x| x.lines.clone())
        .unwrap_or_default();
    let mut want = vec![
        (
            "ListenPort".to_string(),
            conf.listen_port.map(|p| p.to_string()).unwrap_or_default(),
        ),
        ("PrivateKey".to_string(), keys.private_key.clone()),
    ];
    let mut got = interface;
    want.sort();
    got.sort();
    if got != want {
        wrong.push(format!(
            "showconf: [Interface] is {got:?}, the file's {want:?}"
        ));
    }
    let peers = s.all("Peer");
    if peers.len() != conf.peers.len() {
        wrong.push(format!(
            "showconf: {} peers, the file has {}",
            peers.len(),
            conf.peers.len()
        ));
    }
    for p in &conf.peers {
        let key = p.public_key.as_deref().unwrap_or_default();
        let Some(Section { lines, .. }) = peers
            .iter()
            .find(|p| value(&p.lines, "PublicKey") == Some(key))
        else {
            wrong.push(format!("showconf: no peer {key}"));
            continue;
        };
        let names: BTreeSet<&str> = lines.iter().map(|(k, _)| k.as_str()).collect();
        let want_names: BTreeSet<&str> = ["PublicKey", "AllowedIPs", "Endpoint"].into();
        if names != want_names {
            wrong.push(format!("showconf: peer {key} has keys {names:?}"));
        }
        if value(lines, "Endpoint") != p.endpoint.as_deref() {
            wrong.push(format!(
                "showconf: peer {key} Endpoint {:?}, the file's {:?}",
                value(lines, "Endpoint"),
                p.endpoint
            ));
        }
        let got = prefixes(value(lines, "AllowedIPs"));
        let want = prefixes(p.allowed_ips.iter().map(String::as_str));
        if !matches!((&got, &want), (Ok(g), Ok(w)) if g == w) {
            wrong.push(format!(
                "showconf: peer {key} AllowedIPs {got:?}, the file's {want:?}"
            ));
        }
    }
}

/// The row: a transfer from lan-a to lan-b and a ping of gateway C, then
/// `wg show all dump` (before and after), `wg show A` and `wg showconf A`,
/// all run in gateway A's namespace.
pub fn row(ctx: &mut Ctx, s: &Sites3, wg: &Wg, keys: &Keys, confs: &Confs) -> Result<()> {
    if !ctx.wants(SHOW) {
        return Ok(());
    }
    ctx.interrupted()?;
    let (a, b) = (iface('a'), iface('b'));
    let dump = || -> Result<Dump> { Dump::parse(&wg.run(&s.gw_a, &["show", "all", "dump"])?) };
    let before = dump()?;
    let t = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4, TRANSFER)?;
    let report = checks::wait_bulk(ctx, t)?;
    let echo = checks::ping_until(&s.gw_a, l3c::TUN_C4, Duration::from_secs(10))?;
    let after = dump()?;
    let pretty = wg.run(&s.gw_a, &["show", &a])?;
    let showconf = wg.showconf(&s.gw_a, &a)?;

    let mut wrong = Vec::new();
    match &report {
        Ok(r) if r.intact() => {}
        Ok(r) => wrong.push(format!("the transfer: {}", checks::bulk_figure(r))),
        Err(e) => wrong.push(format!("the transfer: {e}")),
    }
    if !echo.is_reply() {
        wrong.push("gateway C did not answer a ping".into());
    }
    let at_a = check_dump(
        &mut wrong,
        (&before, &after),
        &a,
        &keys.a,
        &confs.a,
        &[
            Rose {
                key: &keys.b.public_key,
                label: "B",
                tx: TRANSFER,
                rx: 1,
            },
            Rose {
                key: &keys.c.public_key,
                label: "C",
                tx: 1,
                rx: 1,
            },
        ],
    );
    let at_b = check_dump(
        &mut wrong,
        (&before, &after),
        &b,
        &keys.b,
        &confs.b,
        &[Rose {
            key: &keys.a.public_key,
            label: "A",
            tx: 1,
            rx: TRANSFER,
        }],
    );
    check_pretty(&mut wrong, &pretty, &a, &keys.a, &confs.a);
    check_showconf(&mut wrong, &showconf, &keys.a, &confs.a);
    let figure = format!(
        "after {} a->b: dump at A: {at_a}; at B: {at_b}; keys, port, endpoints, allowed ips of \
         wg show, dump and showconf checked against the files",
        human(TRANSFER)
    );
    verdict(ctx, SHOW, &wrong, &figure);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "wg0\tSA0+private=\tPUB0=\t51820\toff\n\
        wg0\tPEER1=\t(none)\t192.0.2.2:51820\t10.99.0.2/32,10.10.2.0/24\t1733300000\t1200\t16777216\toff\n\
        wg0\tPEER2=\t(none)\t(none)\t(none)\t0\t0\t0\t25\n";

    #[test]
    fn a_dump_parses_into_interfaces_and_peers() {
        let d = Dump::parse(DUMP).unwrap();
        assert_eq!(d.interfaces.len(), 1);
        assert_eq!(d.interface("wg0").unwrap().listen_port, "51820");
        let p = d.peer("wg0", "PEER1=").unwrap();
        assert_eq!(p.allowed_ips, ["10.99.0.2/32", "10.10.2.0/24"]);
        assert_eq!((p.rx_bytes, p.tx_bytes), (1200, 16_777_216));
        assert_eq!(p.latest_handshake, 1_733_300_000);
        let q = d.peer("wg0", "PEER2=").unwrap();
        assert!(q.allowed_ips.is_empty());
        assert_eq!(q.keepalive, "25");
        assert_eq!(d.peers_of("wg0").len(), 2);
        assert!(Dump::parse("wg0\tonly\tthree\n").is_err());
        assert!(Dump::parse("i\tk\t-\te\ta\tsoon\t1\t2\toff\n").is_err());
    }

    #[test]
    fn showconf_and_show_parse_into_sections() {
        let conf = "[Interface]\nListenPort = 51820\nPrivateKey = K=\n\n[Peer]\nPublicKey = P=\nAllowedIPs = 10.0.0.0/24, fd00::/64\nEndpoint = 192.0.2.2:51820\n";
        let s = Sections::ini(conf);
        assert_eq!(s.all("Peer").len(), 1);
        assert_eq!(
            value(&s.all("Interface")[0].lines, "PrivateKey"),
            Some("K=")
        );
        let show = "interface: wg0\n  public key: PUB=\n  private key: (hidden)\n  listening port: 51820\n\npeer: P=\n  endpoint: 192.0.2.2:51820\n  allowed ips: 10.0.0.0/24, fd00::/64\n  latest handshake: 12 seconds ago\n  transfer: 1.20 KiB received, 16.00 MiB sent\n";
        let s = Sections::pretty(show);
        assert_eq!(s.all("interface")[0].name, "wg0");
        let peer = &s.all("peer")[0];
        assert_eq!(peer.name, "P=");
        assert_eq!(value(&peer.lines, "endpoint"), Some("192.0.2.2:51820"));
        assert_eq!(
            prefixes(value(&peer.lines, "allowed ips")).unwrap(),
            prefixes(["fd00::/64,10.0.0.0/24"]).unwrap()
        );
        assert!(within_a_minute("12 seconds ago"));
        assert!(within_a_minute("Now"));
        assert!(!within_a_minute("1 minute, 3 seconds ago"));
        assert!(!within_a_minute("(none)"));
    }
}
