//! What ringtun needs of the system beyond a user's rights, checked before
//! anything is made, so that a missing capability or too low a limit is
//! one sentence that says how to fix it, and nothing is left behind.
//!
//! Only `CAP_NET_ADMIN` is needed: for the TUN/TAP device, its addresses
//! and routes (netlink), `SO_MARK` and the forced socket buffer sizes.
//! Memory pinned for io_uring's registered buffers counts against
//! `RLIMIT_MEMLOCK` unless the process also has `CAP_IPC_LOCK`.

use std::io;

/// `CAP_NET_ADMIN` (linux/capability.h).
pub const CAP_NET_ADMIN: u32 = 12;
/// `CAP_IPC_LOCK` (linux/capability.h).
pub const CAP_IPC_LOCK: u32 = 14;

/// A requirement the process does not meet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivilegeError {
    /// No `CAP_NET_ADMIN` in the effective set.
    #[error(
        "creating {iface} needs CAP_NET_ADMIN (a TUN/TAP device, its addresses and routes), which this process does not have: run as root, or grant only that capability: `setcap cap_net_admin+ep {exe}`, or `AmbientCapabilities=CAP_NET_ADMIN` in a systemd unit (dist/systemd/ringtun@.service)"
    )]
    NoNetAdmin {
        /// The interface that was to be made.
        iface: String,
        /// This program's path, for the setcap line.
        exe: String,
    },
    /// The registered buffers would exceed `RLIMIT_MEMLOCK`.
    #[error(
        "{workers} worker(s) need {needed_kib} KiB of locked memory for their io_uring buffers ({per_worker_kib} KiB each), but RLIMIT_MEMLOCK is {limit_kib} KiB: raise it (`LimitMEMLOCK={suggest_mib}M` in a systemd unit, `ulimit -l {suggest_kib}` in a shell, `prlimit --memlock`), or run fewer workers (`Workers =`)"
    )]
    MemlockTooLow {
        /// Workers asked for.
        workers: usize,
        /// Bytes each pins, in KiB.
        per_worker_kib: u64,
        /// Bytes all pin, in KiB.
        needed_kib: u64,
        /// The soft limit, in KiB.
        limit_kib: u64,
        /// A limit that fits, in MiB (rounded up).
        suggest_mib: u64,
        /// The same in KiB, as `ulimit -l` takes it.
        suggest_kib: u64,
    },
}

/// The effective capability set from `/proc/self/status` text (`CapEff:`).
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// This process's effective capabilities.
pub fn effective_caps() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_cap_eff(&status).ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Fails unless the process may create `iface`.
pub fn check_net_admin(iface: &str) -> Result<(), PrivilegeError> {
    // If the set cannot be read, let the device's own EPERM speak.
    let Ok(caps) = effective_caps() else {
        return Ok(());
    };
    if has(caps, CAP_NET_ADMIN) {
        return Ok(());
    }
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "ringtun".into());
    Err(PrivilegeError::NoNetAdmin {
        iface: iface.to_string(),
        exe,
    })
}

/// Whether `workers` workers pinning `per_worker` bytes each fit under a
/// soft `RLIMIT_MEMLOCK` of `limit` bytes (`None`: unlimited).
pub fn memlock_fits(
    per_worker: u64,
    workers: usize,
    limit: Option<u64>,
) -> Result<(), PrivilegeError> {
    let needed = per_worker.saturating_mul(workers as u64);
    match limit {
        Some(limit) if needed > limit => {
            let mib = 1 << 20;
            let suggest_mib = needed.div_ceil(mib);
            Err(PrivilegeError::MemlockTooLow {
                workers,
                per_worker_kib: per_worker.div_ceil(1024),
                needed_kib: needed.div_ceil(1024),
                limit_kib: limit / 1024,
                suggest_mib,
                suggest_kib: suggest_mib * 1024,
            })
        }
        _ => Ok(()),
    }
}

/// Fails if the workers' registered buffers would pass `RLIMIT_MEMLOCK`
/// (and the process has no `CAP_IPC_LOCK`, which lifts it).
pub fn check_memlock(per_worker: u64, workers: usize) -> Result<(), PrivilegeError> {
    if effective_caps().is_ok_and(|c| has(c, CAP_IPC_LOCK)) {
        return Ok(());
    }
    let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
    else {
        return Ok(());
    };
    let limit = (soft != nix::sys::resource::RLIM_INFINITY).then_some(soft);
    memlock_fits(per_worker, workers, limit)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_effective_set_comes_from_its_line() {
        let status = "Name:\tringtun\nCapInh:\t0000000000000000\nCapPrm:\t0000000000001000\nCapEff:\t0000000000001000\n";
        let caps = parse_cap_eff(status).unwrap();
        assert!(has(caps, CAP_NET_ADMIN));
        assert!(!has(caps, CAP_IPC_LOCK));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn too_low_a_memlock_limit_names_the_limit_the_need_and_the_fix() {
        assert_eq!(memlock_fits(6 << 20, 2, None), Ok(()));
        assert_eq!(memlock_fits(6 << 20, 2, Some(12 << 20)), Ok(()));
        let e = memlock_fits(6 << 20, 2, Some(8 << 20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("need 12288 KiB"), "{e}");
        assert!(e.contains("RLIMIT_MEMLOCK is 8192 KiB"), "{e}");
        assert!(e.contains("LimitMEMLOCK=12M"), "{e}");
        assert!(e.contains("ulimit -l 12288"), "{e}");
    }

    #[test]
    fn no_net_admin_says_which_capability_and_how_to_grant_it() {
        let e = PrivilegeError::NoNetAdmin {
            iface: "rt0".into(),
            exe: "/usr/local/bin/ringtun".into(),
        }
        .to_string();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
        assert!(
            e.contains("setcap cap_net_admin+ep /usr/local/bin/ringtun"),
            "{e}"
        );
        assert!(e.contains("AmbientCapabilities=CAP_NET_ADMIN"), "{e}");
    }
}
