//! ringtun as a service: the systemd notifications arrive in order, READY=1
//! only once the device exists and traffic crosses, RELOADING=1 and READY=1
//! around a SIGHUP, STOPPING=1 at the end; started without CAP_NET_ADMIN,
//! or with too little locked memory for its buffers, it fails at once with
//! a sentence that says how to fix it, and leaves nothing behind.

mod dataplane_lab;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use dataplane_lab::{IFACE, Lab, Underlay, assert_reaches, inner4, must};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{self, TunnelMode, UpOptions};

/// A datagram socket standing in for systemd's notification socket, bound
/// to an abstract name inside `netns` (abstract names belong to a network
/// namespace, so the daemon there can reach it).
fn notify_socket_in(netns: &str, name: &str) -> UnixDatagram {
    let fd = must(netctl::netns::open(netns), netns);
    let name = name.to_string();
    // setns on a thread of its own: the socket keeps the namespace it was
    // made in, the test's threads keep theirs.
    let sock = std::thread::spawn(move || -> std::io::Result<UnixDatagram> {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
    })
    .join()
    .unwrap_or_else(|_| panic!("the thread binding the notify socket panicked"));
    let sock = must(sock, "binding the notify socket");
    must(
        sock.set_read_timeout(Some(Duration::from_secs(20))),
        "a timeout on the notify socket",
    );
    sock
}

fn next_message(sock: &UnixDatagram, waiting_for: &str) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification while waiting for {waiting_for}: {e}"),
    }
}

fn link_is_up(netns: &str, iface: &str) -> bool {
    let nl = must(netctl::Netlink::in_netns(netns), netns);
    nl.link(iface).is_ok_and(|l| l.up)
}

#[test]
fn ready_arrives_once_the_device_serves_then_reloading_and_stopping() {
    require_root!("ready_arrives_once_the_device_serves_then_reloading_and_stopping");
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("svn");
    let _a = lab.up(
        1,
        &lab.conf(mode, 1, &[2], Underlay::V4),
        &UpOptions::default(),
    );
    let name = format!("ringtun-notify-{}", lab.ns(2));
    let sock = notify_socket_in(lab.ns(2), &name);
    // The daemon is started in the background; this thread looks at the
    // device the moment READY=1 arrives.
    let ns2 = lab.ns(2).to_string();
    let watcher = std::thread::spawn(move || {
        let first = next_message(&sock, "READY=1");
        let up_then = link_is_up(&ns2, IFACE);
        (sock, first, up_then)
    });
    let mut opts = UpOptions::default();
    opts.env.push(("NOTIFY_SOCKET".into(), format!("@{name}")));
    let mut b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);
    let (sock, first, up_then) = watcher
        .join()
        .unwrap_or_else(|_| panic!("the notify watcher panicked"));
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "the first notification should be READY=1, came {first:?}"
    );
    assert!(up_then, "{IFACE} was not up when READY=1 arrived");
    assert_reaches(lab.ns(2), inner4(mode, 1), "right after READY=1");

    must(b.signal(nix::sys::signal::Signal::SIGHUP), "SIGHUP");
    let reloading = next_message(&sock, "RELOADING=1");
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1")
            && reloading.lines().any(|l| l
                .strip_prefix("MONOTONIC_USEC=")
                .is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0))),
        "after SIGHUP expected RELOADING=1 with MONOTONIC_USEC=, came {reloading:?}"
    );
    let again = next_message(&sock, "READY=1 after the reload");
    assert!(
        again.lines().any(|l| l == "READY=1"),
        "after the reload expected READY=1, came {again:?}"
    );
    assert_reaches(lab.ns(2), inner4(mode, 1), "after the reload");

    must(b.down(), "ringtun down");
    let stopping = next_message(&sock, "STOPPING=1");
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "at stop expected STOPPING=1, came {stopping:?}"
    );
    if let Err(e) = b.expect_clean_exit(Duration::from_secs(10)) {
        panic!("after ringtun down: {e}");
    }
}

/// `ringtun up` in `netns`, with `caps` dropped from the bounding set (uid 0
/// kept: an exec by root then gets every capability but those) and
/// RLIMIT_MEMLOCK at `memlock` bytes if given; returns its stderr, after
/// checking that it failed within a few seconds.
fn up_without(
    netns: &str,
    conf: &std::path::Path,
    caps: &'static [u32],
    memlock: Option<u64>,
) -> String {
    let mut cmd = must(ringtun::command_in(Some(netns)), "a ringtun command");
    cmd.arg("up").arg(conf);
    // SAFETY: between fork and exec only prctl and setrlimit run: plain
    // system calls, no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            for &cap in caps {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(bytes) = memlock {
                let lim = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let start = Instant::now();
    let out = must(cmd.output(), "running ringtun up");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "ringtun up should have failed, exited with {}: {stderr}",
        out.status
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "failing took {:?}",
        start.elapsed()
    );
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    stderr
}

fn assert_nothing_left(netns: &str) {
    let nl = must(netctl::Netlink::in_netns(netns), netns);
    assert!(nl.link(IFACE).is_err(), "{IFACE} was left in {netns}");
    let sock = ringtun::lab_uapi_dir(netns)
        .join("wireguard")
        .join(format!("{IFACE}.sock"));
    assert!(!sock.exists(), "{} was left behind", sock.display());
    let _ = std::fs::remove_dir_all(ringtun::lab_uapi_dir(netns));
}

#[test]
fn without_cap_net_admin_it_fails_at_once_naming_the_capability() {
    require_root!("without_cap_net_admin_it_fails_at_once_naming_the_capability");
    let lab = Lab::pair("svc");
    let conf = lab.write(1, &lab.conf(TunnelMode::WireGuard, 1, &[2], Underlay::V4));
    let stderr = up_without(
        lab.ns(1),
        &conf,
        &[dataplane::privilege::CAP_NET_ADMIN],
        None,
    );
    for want in [
        "CAP_NET_ADMIN",
        "setcap cap_net_admin+ep",
        "AmbientCapabilities=CAP_NET_ADMIN",
    ] {
        assert!(
            stderr.contains(want),
            "stderr should name {want:?}: {stderr}"
        );
    }
    assert_nothing_left(lab.ns(1));
}

#[test]
fn too_little_locked_memory_names_the_limit_the_need_and_the_fix() {
    require_root!("too_little_locked_memory_names_the_limit_the_need_and_the_fix");
    let lab = Lab::pair("svm");
    let conf = lab.write(
        1,
        &lab.conf(TunnelMode::WireGuard, 1, &[2], Underlay::V4)
            .workers(2),
    );
    // CAP_IPC_LOCK lifts the limit: without it, 1 MiB is far too little.
    let stderr = up_without(
        lab.ns(1),
        &conf,
        &[dataplane::privilege::CAP_IPC_LOCK],
        Some(1 << 20),
    );
    for want in [
        "RLIMIT_MEMLOCK is 1024 KiB",
        "2 worker(s) need",
        "LimitMEMLOCK=",
        "ulimit -l",
    ] {
        assert!(
            stderr.contains(want),
            "stderr should say {want:?}: {stderr}"
        );
    }
    assert_nothing_left(lab.ns(1));
}

#[test]
fn locked_memory_another_instance_holds_is_named_when_the_kernel_refuses() {
    require_root!("locked_memory_another_instance_holds_is_named_when_the_kernel_refuses");
    let lab = Lab::pair("svl");
    let mode = TunnelMode::WireGuard;
    // Room for one worker's buffers, not two: enough for each instance's
    // own check, too little for the user's sum the kernel keeps. Offloads
    // off, so that the limit stays under a container's hard limit (8 MiB
    // here), which root without CAP_SYS_RESOURCE cannot raise.
    let per_worker =
        dataplane::worker::locked_bytes_per_worker(false, dataplane::tun::DeviceKind::Tun);
    let limit = per_worker + per_worker / 4;
    let opts = UpOptions {
        launcher: vec![
            "prlimit".into(),
            format!("--memlock={limit}:{limit}"),
            "setpriv".into(),
            "--bounding-set=-ipc_lock".into(),
            "--".into(),
        ],
        ..UpOptions::default()
    };
    let one_worker = |i: u8, other: u8| {
        lab.conf(mode, i, &[other], Underlay::V4)
            .workers(1)
            .offload(false)
    };
    let _first = lab.up(1, &one_worker(1, 2), &opts);
    let conf = lab.write(2, &one_worker(2, 1));
    let stderr = up_without(
        lab.ns(2),
        &conf,
        &[dataplane::privilege::CAP_IPC_LOCK],
        Some(limit),
    );
    for want in [
        "RLIMIT_MEMLOCK for all of this user's processes together",
        "other ringtun instances included",
        "LimitMEMLOCK=infinity",
    ] {
        assert!(
            stderr.contains(want),
            "stderr should say {want:?}: {stderr}"
        );
    }
    assert_nothing_left(lab.ns(2));
}

/// `GET /metrics` from `127.0.0.1:port` inside `netns`: the body.
fn scrape(netns: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let got = netctl::netns::run_in(netns, || -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    });
    let text = must(must(got, "entering the namespace"), "scraping /metrics");
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        panic!("no header end in {text:?}");
    };
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_string()
}

/// The value of the first sample of `name` whose labels contain `label`.
fn sample(body: &str, name: &str, label: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn metrics_listen_serves_each_modes_peers_with_the_traffic_that_crossed() {
    require_root!("metrics_listen_serves_each_modes_peers_with_the_traffic_that_crossed");
    for (mode, tag) in [(TunnelMode::WireGuard, "smw"), (TunnelMode::Vxlan, "smx")] {
        let lab = Lab::pair(tag);
        let opts = UpOptions::default();
        let _a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
        let conf = lab
            .conf(mode, 2, &[1], Underlay::V4)
            .extra("MetricsListen = 127.0.0.1:9586");
        let b = lab.up(2, &conf, &opts);
        assert_reaches(lab.ns(1), inner4(mode, 2), "before the scrape");
        // A client that connects and never sends holds the metrics thread
        // only, for up to its 2 s deadline: traffic and the configuration
        // socket go on meanwhile, well within it.
        let silent = netctl::netns::run_in(lab.ns(2), || {
            std::net::TcpStream::connect(("127.0.0.1", 9586))
        });
        let silent = must(must(silent, "entering the namespace"), "connecting");
        let t = Instant::now();
        assert_reaches(lab.ns(1), inner4(mode, 2), "with a silent metrics client");
        must(b.show(), "ringtun show with a silent metrics client");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a ping and ringtun show took {:?} beside a silent metrics client",
            t.elapsed()
        );
        drop(silent);
        let body = scrape(lab.ns(2), 9586);
        let iface = format!("interface=\"{IFACE}\"");
        let (received, peer) = match mode {
            TunnelMode::WireGuard => (
                "wireguard_received_bytes_total",
                format!("public_key=\"{}\"", lab.keys[0].public_key),
            ),
            TunnelMode::Vxlan => (
                "ringtun_vtep_received_bytes_total",
                "vtep=\"192.".to_string(),
            ),
        };
        let got = sample(&body, received, &peer);
        assert!(
            got.is_some_and(|v| v > 0.0) && body.contains(&iface),
            "{mode:?}: expected {received} above 0 for {peer}, found {got:?} in:\n{body}"
        );
        let handshakes = sample(&body, "ringtun_handshakes_completed_total", &iface);
        match mode {
            TunnelMode::WireGuard => assert!(
                handshakes.is_some_and(|v| v >= 1.0),
                "a handshake completed, the metric says {handshakes:?}"
            ),
            TunnelMode::Vxlan => assert_eq!(handshakes, Some(0.0)),
        }
    }
}

#[test]
fn a_metrics_address_in_use_stops_the_start_naming_the_line_and_the_address() {
    require_root!("a_metrics_address_in_use_stops_the_start_naming_the_line_and_the_address");
    let lab = Lab::pair("svu");
    let taken = netctl::netns::run_in(lab.ns(1), || {
        std::net::TcpListener::bind(("127.0.0.1", 9586))
    });
    let _taken = must(must(taken, "entering the namespace"), "taking the port");
    let conf = lab.write(
        1,
        &lab.conf(TunnelMode::WireGuard, 1, &[2], Underlay::V4)
            .extra("MetricsListen = 127.0.0.1:9586"),
    );
    let stderr = up_without(lab.ns(1), &conf, &[], None);
    let want = format!(
        "{}:{}: MetricsListen = 127.0.0.1:9586: cannot serve /metrics there: address in use",
        conf.display(),
        std::fs::read_to_string(&conf)
            .unwrap_or_default()
            .lines()
            .position(|l| l.starts_with("MetricsListen"))
            .map_or(0, |i| i + 1)
    );
    assert!(stderr.contains(&want), "expected {want:?} in: {stderr}");
    assert_nothing_left(lab.ns(1));
}
