//! ringtun on both gateways of a lab: started from a mode's two
//! configurations, stopped and started again by the restart rows, and
//! stopped at the end with a failed row if it does not stop cleanly.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Result;
use ringtun_tests::ringtun::{Conf, Ringtun, UpOptions};

use super::checks::{self, Ctx, Stop};
use super::lab::{self, Sites};

/// The restart rows, in the order [`Pair::restart_rows`] makes them.
pub const RESTART_ROWS: [&str; 2] = [
    "restart gw-a by SIGTERM mid-transfer",
    "restart gw-b by SIGKILL mid-transfer",
];

/// A ringtun on each gateway, with what it takes to start them again.
pub struct Pair {
    /// Gateway A's (`None` while a restart row has it stopped).
    pub a: Option<Ringtun>,
    /// Gateway B's.
    pub b: Option<Ringtun>,
    a_path: PathBuf,
    b_path: PathBuf,
    gw_a: String,
    gw_b: String,
    up: UpOptions,
}

impl Pair {
    /// Writes `confs` (gateway A's, gateway B's) as `rt-a` and `rt-b` and
    /// starts ringtun with them, offloads off if `no_offload`.
    pub fn start(ctx: &Ctx, s: &Sites, confs: (Conf, Conf), no_offload: bool) -> Result<Pair> {
        let a_path = confs.0.write(ctx.dir.path(), lab::TUN_A)?;
        let b_path = confs.1.write(ctx.dir.path(), lab::TUN_B)?;
        let up = ctx.up_options(no_offload);
        let a = Ringtun::up(&s.gw_a, &a_path, &up)?;
        let b = Ringtun::up(&s.gw_b, &b_path, &up)?;
        Ok(Pair {
            a: Some(a),
            b: Some(b),
            a_path,
            b_path,
            gw_a: s.gw_a.clone(),
            gw_b: s.gw_b.clone(),
            up,
        })
    }

    /// Gateway A's offloads as `ringtun show` reports them (`None` if it
    /// is not running).
    pub fn offloads_a(&self) -> Result<Option<Vec<String>>> {
        let st = self.a.as_ref().map(|a| a.show()).transpose()?;
        Ok(st.map(|s| s.offloads))
    }

    /// The restart rows: while lan-a sends to `to` in lan-b, gateway A's
    /// ringtun is stopped by SIGTERM, then gateway B's by SIGKILL, and each
    /// is started again from its file.
    pub fn restart_rows(&mut self, ctx: &mut Ctx, s: &Sites, to: IpAddr) -> Result<()> {
        let up = &self.up;
        for (check, how, slot, path, ns) in [
            (
                RESTART_ROWS[0],
                Stop::Term,
                &mut self.a,
                &self.a_path,
                &self.gw_a,
            ),
            (
                RESTART_ROWS[1],
                Stop::Kill,
                &mut self.b,
                &self.b_path,
                &self.gw_b,
            ),
        ] {
            checks::restart(
                ctx,
                check,
                slot,
                how,
                &|| Ok(Ringtun::up(ns, path, up)?),
                &s.lan_a,
                &s.lan_b,
                to,
            )?;
        }
        Ok(())
    }

    /// Stops gateway A's (SIGTERM; an unclean exit is an error).
    pub fn stop_a(&mut self) -> Result<()> {
        match self.a.take() {
            Some(a) => checks::terminate(a),
            None => Ok(()),
        }
    }

    /// Starts gateway A's again from its file.
    pub fn start_a(&mut self) -> Result<()> {
        self.a = Some(Ringtun::up(&self.gw_a, &self.a_path, &self.up)?);
        Ok(())
    }

    /// Stops both; one that does not exit cleanly on SIGTERM is a failed row.
    pub fn stop_row(mut self, ctx: &mut Ctx) {
        let mut first = None;
        for d in [self.a.take(), self.b.take()].into_iter().flatten() {
            if let Err(e) = checks::terminate(d) {
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            ctx.table.fail(checks::STOPS_CLEANLY, format!("{e:#}"));
        }
    }
}
