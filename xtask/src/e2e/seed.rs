//! The seed article's scenario through the netctl library, kept as the
//! first rows (`--only seed`): `xtask/topologies/seed.toml` applied under a
//! unique prefix, pings across in both families, the article's failure
//! (the address on a bridge port) made and undone in code, and a second
//! apply that must change nothing.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use netctl::ping::{Echo, PingOptions};
use netctl::{Netlink, Topology};

use super::checks::{Ctx, ping_until};
use super::lab::{NETNS_TAG, topology_dir};
use crate::labs::LabGuard;

/// Runs the seed rows.
pub fn run(ctx: &mut Ctx) -> Result<()> {
    ctx.table.context("seed", "-");
    let checks = [
        "apply seed.toml",
        "ping a -> b (10.1.1.1, across br0 and the veth pair)",
        "ping b -> a (10.1.1.2 on br0)",
        "ping6 a -> b (fd00:1::1)",
        "ping6 b -> a (fd00:1::2)",
        "address on bridge port veth0: no reply",
        "address given back to br0: reply",
        "second apply changes nothing",
    ];
    if !ctx.wants_any(&checks) {
        return Ok(());
    }
    let mut lab = LabGuard::new(
        Topology::from_file(topology_dir().join("seed.toml"))?,
        NETNS_TAG,
        "seed",
    );
    if ctx.opts.keep {
        lab.keep(format!(
            "e2e: --keep: seed.toml is up under prefix {p}; remove it with \
             `netctl destroy xtask/topologies/seed.toml --prefix {p}`",
            p = lab.prefix()
        ));
    }
    let started = Instant::now();
    let applied = match lab.apply() {
        Ok(a) => a,
        Err(e) => {
            ctx.table.fail(checks[0], e.to_string());
            return Ok(());
        }
    };
    ctx.table.pass(
        checks[0],
        format!(
            "{} objects created in {:.0} ms",
            applied.created.len(),
            started.elapsed().as_secs_f64() * 1e3
        ),
    );
    let a = applied.netns("a");
    let b = applied.netns("b");
    for (from, dst, what) in [
        (&a, "10.1.1.1", checks[1]),
        (&b, "10.1.1.2", checks[2]),
        (&a, "fd00:1::1", checks[3]),
        (&b, "fd00:1::2", checks[4]),
    ] {
        ctx.interrupted()?;
        let echo = ping_until(from, dst.parse()?, Duration::from_secs(3))?;
        ctx.table.check(what, echo.is_reply(), describe(&echo));
    }

    // The article's failure, made in code: the address back on veth0, now
    // a bridge port. Replies go up through br0 and never reach the socket.
    let in_a = Netlink::in_netns(&a)?;
    let v4: netctl::IpPrefix = "10.1.1.2/24".parse()?;
    in_a.addr_del("br0", v4)?;
    in_a.addr_add("veth0", v4)?;
    let dst: IpAddr = "10.1.1.1".parse()?;
    let echo = netctl::ping::echo_in(
        Some(&a),
        dst,
        &PingOptions {
            timeout: Duration::from_secs(2),
            interface: Some("veth0".into()),
            ..PingOptions::default()
        },
    )?;
    ctx.table.check(
        checks[5],
        !echo.is_reply(),
        format!(
            "{} (as the article: replies go up through br0)",
            describe(&echo)
        ),
    );
    in_a.addr_del("veth0", v4)?;
    in_a.addr_add("br0", v4)?;
    let echo = ping_until(&a, dst, Duration::from_secs(3))?;
    ctx.table.check(checks[6], echo.is_reply(), describe(&echo));

    let again = lab.apply()?;
    ctx.table.check(
        checks[7],
        again.created.is_empty(),
        if again.created.is_empty() {
            format!("{} objects unchanged", again.unchanged.len())
        } else {
            format!("created {}", again.created.join(", "))
        },
    );
    Ok(())
}

fn describe(e: &Echo) -> String {
    match e {
        Echo::Reply { rtt, .. } => format!("reply, rtt {:.3} ms", rtt.as_secs_f64() * 1e3),
        Echo::Unreachable { reason } => format!("unreachable: {reason}"),
        Echo::Timeout => "no reply".into(),
    }
}
