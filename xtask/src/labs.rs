//! Labs as `e2e` and `bench` make them: a topology applied under a prefix
//! made of the harness's tag, its pid and the lab's name (`e2e-4242-wg-`),
//! destroyed on drop unless kept; and, by that prefix, the namespaces of
//! this run still present and those left by a run that died.

use std::path::Path;

use anyhow::{Context, Result};
use netctl::{Applied, Topology, netns};

/// A topology to be applied under `{tag}{pid}-{lab}-`; destroyed on drop,
/// unless kept. Owned before it is applied: a failed apply rolls itself
/// back, and a half-made lab is destroyed all the same.
pub struct LabGuard {
    topology: Topology,
    prefix: String,
    keep_note: Option<String>,
}

impl LabGuard {
    /// The guard of `topology` as lab `lab` of this run of harness `tag`
    /// (`"e2e-"`, `"bench-"`). Nothing is made until [`LabGuard::apply`].
    pub fn new(topology: Topology, tag: &str, lab: &str) -> LabGuard {
        LabGuard {
            topology,
            prefix: format!("{tag}{}-{lab}-", std::process::id()),
            keep_note: None,
        }
    }

    /// Leave the lab up when dropped and print `note` (how to enter it and
    /// remove it) instead.
    pub fn keep(&mut self, note: String) {
        self.keep_note = Some(note);
    }

    /// Makes what is missing (again: a second apply changes nothing).
    pub fn apply(&self) -> netctl::Result<Applied> {
        self.topology.apply(Some(&self.prefix))
    }

    /// The prefix of its namespaces.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A namespace's full name.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Some(note) = &self.keep_note {
            println!("{note}");
            return;
        }
        if let Err(e) = self.topology.destroy(Some(&self.prefix)) {
            eprintln!("cleanup: destroying {}: {e}", self.prefix);
        }
        ringtun_tests::ringtun::remove_lab_uapi_dirs(&self.prefix);
    }
}

/// Removes the namespaces of harness `tag` left by earlier runs that died
/// without cleaning up (`{tag}{pid}-...` whose pid no longer runs), and
/// kills what still runs inside them first (a daemon that changed user,
/// as FRR's do, loses its parent-death signal and outlives the harness).
/// Returns their names.
pub fn remove_stale(tag: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in netns::list()? {
        let Some(rest) = name.strip_prefix(tag) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_processes_in(&name);
        netns::delete(&name).with_context(|| format!("removing stale namespace {name}"))?;
        removed.push(name);
    }
    Ok(removed)
}

/// SIGKILLs every process whose network namespace is `/run/netns/NAME`
/// (compared by inode, as `ip netns pids` does).
fn kill_processes_in(name: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(Path::new("/run/netns").join(name)) else {
        return;
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(own) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if own.ino() == ns.ino() && own.dev() == ns.dev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Namespaces of this run of harness `tag` still present.
pub fn our_namespaces(tag: &str) -> Result<Vec<String>> {
    let mine = format!("{tag}{}-", std::process::id());
    Ok(netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect())
}
