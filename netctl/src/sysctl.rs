//! Per-namespace sysctls (`net.*`), read and written through /proc/sys.
//!
//! /proc/sys/net shows the network namespace of the task that looks the
//! file up, not the one that mounted /proc: so a thread that has entered a
//! namespace (see [`crate::netns::run_in`]) reads and writes that
//! namespace's values. Only `net.*` keys are accepted: the others are global
//! to the host, and writing one "inside a namespace" would change the host.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::netns;

/// Turns `net.ipv4.ip_forward` (or `net/ipv4/conf/eth0.100/forwarding`,
/// the form for names with dots) into its /proc/sys path.
pub fn path(key: &str) -> Result<PathBuf> {
    let bad = |reason: &str| Error::BadSysctl {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    if parts.first() != Some(&"net") {
        return Err(bad("only net.* keys are per network namespace"));
    }
    if parts.len() < 2 {
        return Err(bad(
            "a key names a file below net, e.g. net.ipv4.ip_forward",
        ));
    }
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." || part.contains('\0') {
            return Err(bad("empty, \".\" or \"..\" components are not allowed"));
        }
    }
    let mut path = PathBuf::from("/proc/sys");
    path.extend(parts);
    Ok(path)
}

/// Reads a sysctl in the calling thread's namespace, trimmed.
pub fn read(key: &str) -> Result<String> {
    let path = path(key)?;
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) => Err(sysctl_error(key, "reading", e)),
    }
}

/// Writes a sysctl in the calling thread's namespace.
pub fn write(key: &str, value: &str) -> Result<()> {
    let path = path(key)?;
    if value.contains('\n') || value.contains('\0') {
        return Err(Error::BadSysctl {
            key: key.to_string(),
            reason: format!("value {value:?} holds a newline or NUL"),
        });
    }
    let result = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    result.map_err(|e| sysctl_error(key, "writing", e))
}

/// Reads a sysctl inside a named namespace (or the caller's for `None`).
pub fn read_in(netns: Option<&str>, key: &str) -> Result<String> {
    netns::run_in_opt(netns, || read(key))?
}

/// Writes a sysctl inside a named namespace (or the caller's for `None`).
pub fn write_in(netns: Option<&str>, key: &str, value: &str) -> Result<()> {
    netns::run_in_opt(netns, || write(key, value))?
}

/// Compares two sysctl values the way the kernel prints them: runs of
/// white space are equal (`"4096\t131072"` is `"4096 131072"`).
pub fn same_value(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

fn sysctl_error(key: &str, doing: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound => Error::BadSysctl {
            key: key.to_string(),
            reason: "no such sysctl (a device key needs the device to exist)".to_string(),
        },
        io::ErrorKind::InvalidInput => Error::BadSysctl {
            key: key.to_string(),
            reason: "the kernel refused the value".to_string(),
        },
        _ => Error::io(format!("{doing} sysctl {key}"), "CAP_NET_ADMIN", e),
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys_paths() {
        assert_eq!(
            path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn host_wide_and_escaping_keys_are_refused() {
        let err = path("kernel.hostname").unwrap_err();
        assert_eq!(
            err.to_string(),
            "sysctl kernel.hostname: only net.* keys are per network namespace"
        );
        for bad in [
            "",
            "net",
            "net..ipv4",
            "net/../kernel/hostname",
            "net/ipv4/",
            "/net/ipv4",
        ] {
            assert!(path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn values_compare_by_words() {
        assert!(same_value("4096\t131072", "4096 131072"));
        assert!(same_value("1\n", "1"));
        assert!(!same_value("1", "0"));
    }
}
