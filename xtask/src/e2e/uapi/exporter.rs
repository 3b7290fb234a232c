//! `uapi: prometheus exporter`: prometheus_wireguard_exporter (crates.io,
//! installed as boringtun-cli is), which runs `wg show IFACE dump`
//! itself, listening on a loopback port of gateway A's namespace; scraped
//! before and after a transfer, its byte counters for peer B rose by the
//! transfer and its handshake time is ringtun's own.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::super::checks::{self, Ctx, human};
use super::super::lab::l3;
use super::show::unix_now;
use super::{EXPORTER, Gateways, Keys, Sites3, iface, verdict};
use crate::process::Daemon;

/// Bytes sent from lan-a to lan-b between the scrapes.
const TRANSFER: u64 = 32 << 20;
/// How long the exporter may take to listen, and a scrape to answer.
const WITHIN: Duration = Duration::from_secs(15);

/// A port nothing listens on, on loopback in `ns` (the namespace is the
/// lab's own: nothing else binds there between this and the exporter).
fn free_port(ns: &str) -> Result<u16> {
    let l = netctl::netns::run_in(ns, || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?
        .with_context(|| format!("binding a loopback port in {ns}"))?;
    Ok(l.local_addr()?.port())
}

/// A connection to `127.0.0.1:port` inside `ns`, retried while refused
/// for up to [`WITHIN`]: the exporter says it listens a moment before it
/// does.
fn connect(ns: &str, port: u16) -> Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + WITHIN;
    loop {
        match netctl::netns::run_in(ns, || TcpStream::connect_timeout(&addr, WITHIN))? {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("connecting to the exporter at {addr} in {ns}"));
            }
        }
    }
}

/// `GET /metrics` from `127.0.0.1:port` inside `ns`: the body.
fn scrape(ns: &str, port: u16) -> Result<String> {
    let mut stream = connect(ns, port)?;
    stream.set_read_timeout(Some(WITHIN))?;
    stream.set_write_timeout(Some(WITHIN))?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .context("sending the request")?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .context("reading the exporter's answer")?;
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("the exporter's answer has no header end: {text:?}");
    };
    let status = head.lines().next().unwrap_or("");
    if !status.contains(" 200") {
        bail!("the exporter answered {status:?}: {body}");
    }
    Ok(body.to_string())
}

/// The value of `metric` whose labels hold `interface="IFACE"` and
/// `public_key="KEY"`.
pub fn sample(body: &str, metric: &str, iface: &str, key: &str) -> Option<f64> {
    let want_iface = format!("interface=\"{iface}\"");
    let want_key = format!("public_key=\"{key}\"");
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| l.contains(&want_iface) && l.contains(&want_key))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// The row.
pub fn row(
    ctx: &mut Ctx,
    s: &Sites3,
    keys: &Keys,
    gw: &Gateways,
    exporter: &Result<PathBuf, String>,
) -> Result<()> {
    if !ctx.wants(EXPORTER) {
        return Ok(());
    }
    ctx.interrupted()?;
    let exporter = match exporter {
        Ok(p) => p,
        Err(why) => {
            ctx.table.skip(EXPORTER, why.clone());
            return Ok(());
        }
    };
    let a = iface('a');
    let port = free_port(&s.gw_a)?.to_string();
    let daemon = Daemon::start(
        &s.gw_a,
        exporter,
        &["-l", "127.0.0.1", "-p", &port, "-i", &a, "-v", "true"],
        "Listening on",
        WITHIN,
    )?;
    let port: u16 = port.parse()?;
    let b_key = keys.b.public_key.as_str();
    let before = scrape(&s.gw_a, port)?;
    let t = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4, TRANSFER)?;
    let report = checks::wait_bulk(ctx, t)?;
    // ringtun's own view on either side of the scrape (a rekey may fall
    // between).
    let truth_before = gw.a.show()?;
    let after = scrape(&s.gw_a, port)?;
    let truth = gw.a.show()?;
    drop(daemon);

    let get = |body: &str, m: &str| sample(body, m, &a, b_key);
    let mut wrong = Vec::new();
    match &report {
        Ok(r) if r.intact() => {}
        Ok(r) => wrong.push(format!("the transfer: {}", checks::bulk_figure(r))),
        Err(e) => wrong.push(format!("the transfer: {e}")),
    }
    let mut rose = Vec::new();
    for (m, least) in [
        ("wireguard_sent_bytes_total", TRANSFER),
        ("wireguard_received_bytes_total", 1),
    ] {
        match (get(&before, m), get(&after, m)) {
            (Some(x), Some(y)) if y - x >= least as f64 => {
                rose.push(format!("{m} +{}", human((y - x) as u64)));
            }
            (x, y) => wrong.push(format!(
                "{m} for B: {x:?} before, {y:?} after (expected a rise of at least {least})"
            )),
        }
    }
    // The exporter's figures are wg's, which are ringtun's own.
    let own = truth.peers.iter().find(|p| p.name == b_key);
    let hs = get(&after, "wireguard_latest_handshake_seconds");
    let own_hs: Vec<Option<f64>> = [&truth_before, &truth]
        .iter()
        .map(|t| {
            t.peers
                .iter()
                .find(|p| p.name == b_key)
                .and_then(|p| p.latest_handshake_unix)
                .map(|h| h as f64)
        })
        .collect();
    let age = hs.map(|h| unix_now() as f64 - h);
    if hs.is_none() || !own_hs.contains(&hs) {
        wrong.push(format!(
            "wireguard_latest_handshake_seconds for B is {hs:?}, ringtun show says {own_hs:?}"
        ));
    }
    let own = own.map(|p| p.tx_bytes);
    let figure = format!(
        "scraped 127.0.0.1:{port} in gw-a around {} a->b: {}; handshake {:.0} s ago (as ringtun \
         show says); \
         sent to B in all: {} by the exporter, {} by ringtun show just after",
        human(TRANSFER),
        rose.join(", "),
        age.unwrap_or(f64::NAN),
        get(&after, "wireguard_sent_bytes_total").map_or("?".into(), |v| human(v as u64)),
        own.map(human).unwrap_or_else(|| "?".into())
    );
    verdict(ctx, EXPORTER, &wrong, &figure);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_interface_and_key() {
        let body = "# HELP wireguard_sent_bytes_total Bytes sent to the peer\n\
            # TYPE wireguard_sent_bytes_total counter\n\
            wireguard_sent_bytes_total{interface=\"rt0\",public_key=\"K1=\",allowed_ips=\"10.0.0.0/24\"} 1234\n\
            wireguard_sent_bytes_total{interface=\"rt0\",public_key=\"K2=\",allowed_ips=\"10.0.1.0/24\"} 99\n\
            wireguard_latest_handshake_seconds{interface=\"rt0\",public_key=\"K2=\",allowed_ips=\"\"} 1733300000\n";
        assert_eq!(
            sample(body, "wireguard_sent_bytes_total", "rt0", "K2="),
            Some(99.0)
        );
        assert_eq!(
            sample(body, "wireguard_latest_handshake_seconds", "rt0", "K2="),
            Some(1_733_300_000.0)
        );
        assert_eq!(
            sample(body, "wireguard_sent_bytes_total", "rt1", "K1="),
            None
        );
    }
}
