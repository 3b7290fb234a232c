//! `uapi: syncconf under load`: `wg syncconf` with the configuration
//! gateway A already runs is a no-op, also while a transfer runs through
//! it: sent again and again during transfers from lan-a to lan-b, it
//! makes no handshake, spoils no byte and costs no throughput beyond
//! noise (measured against the same transfer just before without it, in
//! interleaved rounds whose medians are compared).

use std::time::Duration;

use anyhow::Result;
use ringtun_tests::ringtun::Ringtun;

use super::super::checks::{self, Ctx, human};
use super::super::lab::l3;
use super::{
    Confs, Gateways, Keys, SYNCCONF, Sites3, Wg, iface, measured_rate, size_for, verdict, wg_format,
};
use crate::peers::write_private;

/// Each transfer runs about this long at the rate measured before.
const SECONDS: f64 = 4.0;
/// Transfers without syncconf and with it, interleaved (one of each per
/// round), so that a neighbour's load on a shared machine falls on both.
const ROUNDS: usize = 3;
/// Times `wg syncconf` is sent during each transfer with it, at even
/// steps of its progress.
const SYNCS: u64 = 4;
/// The share of the median throughput without syncconf that the median
/// with it must reach.
const MIN_SHARE: f64 = 0.9;

/// Handshakes completed with each peer of `d`, by public key.
fn handshakes(d: &Ringtun) -> Result<Vec<(String, u64)>> {
    Ok(d.show()?
        .peers
        .into_iter()
        .map(|p| (p.name, p.handshakes))
        .collect())
}

/// The handshakes each peer made between `before` and `after`, as
/// `B +1` (peers named by `label`), and their sum.
fn new_handshakes(
    before: &[(String, u64)],
    after: &[(String, u64)],
    label: impl Fn(&str) -> String,
) -> (u64, String) {
    let mut sum = 0;
    let mut parts = Vec::new();
    for (key, n) in after {
        let old = before.iter().find(|(k, _)| k == key).map_or(0, |(_, o)| *o);
        let d = n.saturating_sub(old);
        sum += d;
        parts.push(format!("{} +{d}", label(key)));
    }
    (sum, parts.join(", "))
}

/// The median of a few figures (the upper one of an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// `1.23, 1.30, 1.19`.
fn list(v: &[f64]) -> String {
    v.iter()
        .map(|g| format!("{g:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The row: [`ROUNDS`] rounds of a transfer from lan-a to lan-b without
/// syncconf, then the same with `wg syncconf` of gateway A's own
/// configuration at every fifth of it.
pub fn row(
    ctx: &mut Ctx,
    s: &Sites3,
    wg: &Wg,
    (keys, confs): (&Keys, &Confs),
    gw: &Gateways,
    rate: &mut Option<f64>,
) -> Result<()> {
    if !ctx.wants(SYNCCONF) {
        return Ok(());
    }
    ctx.interrupted()?;
    let a = iface('a');
    let file = ctx.dir.path().join(format!("{a}.wg.conf"));
    write_private(&file, &wg_format(&confs.a))?;
    let file_arg = file.to_string_lossy().into_owned();
    let bytes = size_for(measured_rate(ctx, s, rate)?, SECONDS, 256 << 20, 16 << 30);

    // One transfer; with `sync`, syncconf at each step of its progress.
    // Its rate, how many syncconf ran before it ended, and what failed.
    let transfer = |ctx: &mut Ctx, sync: bool| -> Result<(Option<f64>, u64, Vec<String>)> {
        let t = checks::start_bulk(ctx, &s.lan_a, &s.lan_b, l3::LAN_B4, bytes)?;
        let (mut sent, mut during, mut wrong) = (0, 0, Vec::new());
        while sync && !t.is_finished() && sent < SYNCS {
            ctx.interrupted()?;
            if t.received_so_far() < bytes / (SYNCS + 1) * (sent + 1) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            if let Err(e) = wg.run(&s.gw_a, &["syncconf", &a, &file_arg]) {
                wrong.push(format!("{e:#}"));
            }
            sent += 1;
            if t.received_so_far() < bytes {
                during += 1;
            }
        }
        let gbit = match checks::wait_bulk(ctx, t)? {
            Ok(r) if r.intact() => Some(r.gbit_per_s()),
            Ok(r) => {
                wrong.push(checks::bulk_figure(&r));
                None
            }
            Err(e) => {
                wrong.push(e.to_string());
                None
            }
        };
        Ok((gbit, during, wrong))
    };
    let hs_before = handshakes(&gw.a)?;
    let (mut without, mut with, mut during, mut wrong) = (Vec::new(), Vec::new(), 0, Vec::new());
    for _ in 0..ROUNDS {
        for sync in [false, true] {
            let (gbit, d, w) = transfer(ctx, sync)?;
            during += d;
            wrong.extend(
                w.into_iter()
                    .map(|w| format!("{} syncconf: {w}", if sync { "with" } else { "without" })),
            );
            if let Some(g) = gbit {
                if sync { &mut with } else { &mut without }.push(g);
            }
        }
    }
    let hs_after = handshakes(&gw.a)?;
    let want = SYNCS * ROUNDS as u64;
    if during < want {
        wrong.push(format!(
            "only {during} of {want} syncconf ran during a transfer"
        ));
    }
    let (new, by_peer) = new_handshakes(&hs_before, &hs_after, |k| {
        if k == keys.b.public_key {
            "B".into()
        } else if k == keys.c.public_key {
            "C".into()
        } else {
            k.to_string()
        }
    });
    if new != 0 {
        wrong.push(format!("{new} new handshake(s)"));
    }
    let (m_with, m_without) = (median(&with), median(&without));
    let share = m_with / m_without.max(1e-9);
    if with.len() < ROUNDS || without.len() < ROUNDS {
        wrong.push("a transfer did not arrive whole".into());
    } else if share < MIN_SHARE {
        wrong.push(format!(
            "median throughput {:.0}% of the one without syncconf (at least {:.0}% expected)",
            share * 100.0,
            MIN_SHARE * 100.0
        ));
    }
    let figure = format!(
        "{during} syncconf during {ROUNDS} transfers of {} a->b, {ROUNDS} more without, interleaved: \
         new handshakes {by_peer}, sha256 equal in {} of {}; Gbit/s with {} (median {m_with:.2}), \
         without {} (median {m_without:.2}): {:.0}%",
        human(bytes),
        with.len() + without.len(),
        2 * ROUNDS,
        list(&with),
        list(&without),
        share * 100.0
    );
    verdict(ctx, SYNCCONF, &wrong, &figure);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_figure() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[1.0]), 1.0);
        assert_eq!(median(&[]), 0.0);
    }
}
