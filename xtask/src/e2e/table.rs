//! The result table: one row per check, printed as it is made (so a long
//! run shows progress) and again in full at the end with the summary line.

use std::fmt::Write as _;
use std::io::Write as _;

/// How a check came out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed; the figure column says why.
    Fail,
    /// It could not run; the reason says why.
    Skipped(String),
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was checked.
    pub check: String,
    /// `wireguard`, `vxlan` or `-`.
    pub mode: String,
    /// Who sat on the other gateway (`ringtun`, `wireguard-go`, ...).
    pub peer: String,
    /// The result.
    pub outcome: Outcome,
    /// The key figure (time, throughput, drops) or the reason for a failure.
    pub figure: String,
}

/// Something that describes the system's state when a row fails.
pub type Diagnostics = Box<dyn Fn() -> String>;

/// The rows so far, with the context (mode, peer) new rows get.
pub struct Table {
    /// The command the rows are printed under (`e2e`, `soak`).
    who: &'static str,
    rows: Vec<Row>,
    mode: String,
    peer: String,
    diagnostics: Option<Diagnostics>,
}

impl Table {
    /// An empty table of `cargo xtask e2e`.
    pub fn new() -> Table {
        Table::of("e2e")
    }

    /// An empty table whose rows are printed as the command `who`'s.
    pub fn of(who: &'static str) -> Table {
        Table {
            who,
            rows: Vec::new(),
            mode: "-".into(),
            peer: "-".into(),
            diagnostics: None,
        }
    }

    /// What to print (not to the table: below the failing row, as it is
    /// made) when a row fails, e.g. every daemon's counters.
    pub fn set_diagnostics(&mut self, d: Option<Diagnostics>) {
        self.diagnostics = d;
    }

    /// Sets the mode and peer columns of the rows that follow.
    pub fn context(&mut self, mode: &str, peer: &str) {
        self.mode = mode.to_string();
        self.peer = peer.to_string();
    }

    /// The mode column of the rows that follow.
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// The peer column of the rows that follow.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Adds a row and prints it at once.
    pub fn push(&mut self, check: impl Into<String>, outcome: Outcome, figure: impl Into<String>) {
        let row = Row {
            check: check.into(),
            mode: self.mode.clone(),
            peer: self.peer.clone(),
            outcome,
            figure: figure.into(),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}: {}", self.who, render_row(&row, 0, 0, 0));
        if row.outcome == Outcome::Fail
            && let Some(d) = &self.diagnostics
        {
            for line in d().lines() {
                let _ = writeln!(out, "{}:   | {line}", self.who);
            }
        }
        let _ = out.flush();
        self.rows.push(row);
    }

    /// Adds a passing row.
    pub fn pass(&mut self, check: impl Into<String>, figure: impl Into<String>) {
        self.push(check, Outcome::Pass, figure);
    }

    /// Adds a failing row.
    pub fn fail(&mut self, check: impl Into<String>, why: impl Into<String>) {
        self.push(check, Outcome::Fail, why);
    }

    /// Adds a row that passes when `ok`.
    pub fn check(&mut self, check: impl Into<String>, ok: bool, figure: impl Into<String>) {
        let outcome = if ok { Outcome::Pass } else { Outcome::Fail };
        self.push(check, outcome, figure);
    }

    /// Adds a skipped row. With `CI` set in the environment a skip is a
    /// failure, so that CI cannot pass by skipping.
    pub fn skip(&mut self, check: impl Into<String>, why: impl Into<String>) {
        let why = why.into();
        if std::env::var_os("CI").is_some() {
            self.push(
                check,
                Outcome::Fail,
                format!("would skip ({why}); CI is set, and under CI a skip is a failure"),
            );
        } else {
            self.push(check, Outcome::Skipped(why), "");
        }
    }

    /// (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in &self.rows {
            match r.outcome {
                Outcome::Pass => c.0 += 1,
                Outcome::Fail => c.1 += 1,
                Outcome::Skipped(_) => c.2 += 1,
            }
        }
        c
    }

    /// The whole table and the summary line `N passed, N failed, N skipped`.
    pub fn render(&self) -> String {
        let w_check = width(self.rows.iter().map(|r| r.check.len()), "check");
        let w_mode = width(self.rows.iter().map(|r| r.mode.len()), "mode");
        let w_peer = width(self.rows.iter().map(|r| r.peer.len()), "peer");
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<w_check$}  {:<w_mode$}  {:<w_peer$}  {:<7}  key figure",
            "check", "mode", "peer", "result"
        );
        let _ = writeln!(
            out,
            "{}",
            "-".repeat(w_check + w_mode + w_peer + 7 + 8 + 10)
        );
        for r in &self.rows {
            let _ = writeln!(out, "{}", render_row(r, w_check, w_mode, w_peer));
        }
        let (p, f, s) = self.counts();
        let _ = writeln!(out, "{p} passed, {f} failed, {s} skipped");
        out
    }
}

fn width(lens: impl Iterator<Item = usize>, title: &str) -> usize {
    lens.max().unwrap_or(0).max(title.len())
}

fn render_row(r: &Row, w_check: usize, w_mode: usize, w_peer: usize) -> String {
    let (result, figure) = match &r.outcome {
        Outcome::Pass => ("pass", r.figure.clone()),
        Outcome::Fail => ("FAIL", r.figure.clone()),
        Outcome::Skipped(why) => ("skipped", why.clone()),
    };
    format!(
        "{:<w_check$}  {:<w_mode$}  {:<w_peer$}  {:<7}  {}",
        r.check, r.mode, r.peer, result, figure
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_each_outcome() {
        let mut t = Table::new();
        t.context("wireguard", "ringtun");
        t.pass("reach", "0.2 ms");
        t.fail("bulk", "hash mismatch");
        t.push("interop", Outcome::Skipped("no tool".into()), "");
        assert_eq!(t.counts(), (1, 1, 1));
        let text = t.render();
        assert!(text.ends_with("1 passed, 1 failed, 1 skipped\n"), "{text}");
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("no tool"), "{text}");
        assert!(text.contains("wireguard"), "{text}");
    }
}
