//! The systemd notification protocol (`sd_notify(3)`): one datagram of
//! `KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`, a path or,
//! with a leading `@`, an abstract address. Outside systemd (no
//! variable) every call does nothing.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where `$NOTIFY_SOCKET` points, parsed: `None` for an empty value or
/// one this implementation cannot reach (`vsock:`, which ringtun never
/// runs under).
pub fn notify_address(value: &str) -> Option<io::Result<SocketAddr>> {
    if let Some(name) = value.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return Some(SocketAddr::from_abstract_name(name.as_bytes()));
    }
    value
        .starts_with('/')
        .then(|| SocketAddr::from_pathname(value))
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the service
/// manager. `Ok(false)`: not run by one.
pub fn notify(state: &str) -> io::Result<bool> {
    let Ok(value) = std::env::var(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let Some(addr) = notify_address(&value) else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr?)?;
    Ok(true)
}

/// Sends `state`, logging rather than failing: a service manager that went
/// away is no reason to stop the tunnel.
pub fn tell(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "telling the service manager");
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as `RELOADING=1` wants it in
/// `MONOTONIC_USEC=` (systemd compares it with its own clock to tell one
/// reload from the next).
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000)
        .unwrap_or(0)
}

/// `READY=1`: the interface is up and serving.
pub fn ready(iface: &str) {
    tell(&format!("READY=1\nSTATUS=serving {iface}"));
}

/// `RELOADING=1`: the configuration is being read again.
pub fn reloading() {
    tell(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// `READY=1` after a reload, with what came of it.
pub fn reloaded(outcome: &str) {
    tell(&format!("READY=1\nSTATUS={outcome}"));
}

/// `STOPPING=1`: tearing down.
pub fn stopping() {
    tell("STOPPING=1");
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_addresses_and_the_rest_is_ignored() {
        let p = notify_address("/run/systemd/notify").unwrap().unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        use std::os::linux::net::SocketAddrExt;
        let a = notify_address("@sd-notify/x").unwrap().unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"sd-notify/x"[..]));
        assert!(notify_address("").is_none());
        assert!(notify_address("vsock:2:1234").is_none());
    }

    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ringtun-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        let target = notify_address(&format!("@{name}")).unwrap().unwrap();
        sock.send_to_addr(b"READY=1", &target).unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(monotonic_usec() > 0);
    }
}
