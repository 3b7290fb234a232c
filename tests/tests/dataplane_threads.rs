//! The data path is io_uring on the workers' own threads: while a bulk
//! transfer flows, and while sparse request/response traffic wakes idle
//! workers, no io_uring work is punted to kernel `iou-wrk` threads (they
//! would show up as threads of the ringtun process).

mod dataplane_lab;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dataplane_lab::{Lab, Underlay, assert_reaches, diagnose, inner4, must};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{TunnelMode, UpOptions};

const BULK: u64 = 64 << 20;
/// Samples of the thread list a run must take while bytes flow, for the
/// absence of `iou-wrk` to mean something.
const MIN_SAMPLES: usize = 20;
/// Echoes the sparse test needs before the absence of `iou-wrk` means
/// something, and how long it may take to get them (a functional bound,
/// not a speed: an idle machine needs one 800 ms round).
const MIN_ECHOES: u64 = 200;
const ENOUGH_ECHOES_WITHIN: Duration = Duration::from_secs(120);

fn no_io_worker_threads(ctx: &str, mode: TunnelMode, no_offload: bool) {
    let lab = Lab::pair("dpt");
    let opts = UpOptions {
        workers: Some(2),
        no_offload,
        ..UpOptions::default()
    };
    let a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
    let b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);
    assert_reaches(lab.ns(1), inner4(mode, 2), ctx);
    let bulk = lab.start_bulk(mode, BULK);
    let mut names = BTreeSet::new();
    let mut samples = 0;
    while !bulk.is_finished() {
        let moving = bulk.received_so_far() > 0;
        for d in [&a, &b] {
            // A failed read means the daemon is gone; the checks below say so.
            if let Ok(threads) = d.thread_names() {
                names.extend(threads);
            }
        }
        if moving {
            samples += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let report = match bulk.join() {
        Ok(r) => r,
        Err(e) => panic!("{ctx}: {e}{}", diagnose(&[&a, &b])),
    };
    assert!(report.intact(), "{ctx}: {}", report.summary());
    assert!(
        samples >= MIN_SAMPLES,
        "{ctx}: only {samples} thread samples while bytes flowed (need {MIN_SAMPLES}): the transfer was too short to say anything"
    );
    let io_workers: Vec<&String> = names.iter().filter(|n| n.starts_with("iou-")).collect();
    assert!(
        io_workers.is_empty(),
        "{ctx}: io_uring punted work to kernel threads {io_workers:?} (all threads seen: {names:?})"
    );
    assert!(
        names.iter().any(|n| n.starts_with("rt-worker")),
        "{ctx}: no worker thread among {names:?}: is this reading the right process?"
    );
    eprintln!(
        "{ctx}: {samples} samples, threads seen {names:?}; {}",
        report.summary()
    );
    for d in [a, b] {
        must(d.terminate(), "stopping a site");
    }
}

#[test]
fn wireguard_bulk_runs_without_iou_wrk_threads() {
    require_root!("wireguard_bulk_runs_without_iou_wrk_threads");
    no_io_worker_threads("wireguard", TunnelMode::WireGuard, false);
}

#[test]
fn wireguard_without_offloads_runs_without_iou_wrk_threads() {
    require_root!("wireguard_without_offloads_runs_without_iou_wrk_threads");
    no_io_worker_threads("wireguard --no-offload", TunnelMode::WireGuard, true);
}

#[test]
fn vxlan_bulk_runs_without_iou_wrk_threads() {
    require_root!("vxlan_bulk_runs_without_iou_wrk_threads");
    no_io_worker_threads("vxlan", TunnelMode::Vxlan, false);
}

/// Sparse traffic is what exposes punting: a wake-up that finds no data
/// (several reads waiting on one queue, one packet) makes the kernel hand
/// the read to an io-wq thread. `--read-mode fixed` fails this test (one
/// `iou-wrk` thread after 500 probes, seen by hand); the default must not.
#[test]
fn sparse_request_response_runs_without_iou_wrk_threads() {
    require_root!("sparse_request_response_runs_without_iou_wrk_threads");
    let mode = TunnelMode::WireGuard;
    let lab = Lab::pair("dps");
    let opts = UpOptions {
        workers: Some(2),
        ..UpOptions::default()
    };
    let a = lab.up(1, &lab.conf(mode, 1, &[2], Underlay::V4), &opts);
    let b = lab.up(2, &lab.conf(mode, 2, &[1], Underlay::V4), &opts);
    assert_reaches(lab.ns(1), inner4(mode, 2), "sparse");
    let server_addr = std::net::SocketAddr::new(inner4(mode, 2), 7777);
    // Bound here, before any probe is sent: a socket keeps acting in the
    // namespace it was made in, on whichever thread serves it.
    let server_sock = must(
        netctl::netns::run_in(lab.ns(2), || std::net::UdpSocket::bind(server_addr)),
        "entering site 2",
    )
    .unwrap_or_else(|e| panic!("binding the echo server to {server_addr}: {e}"));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, received) = std::thread::scope(|s| {
        let server = s.spawn(|| bench::probe::serve(&server_sock, &stop));
        // Rounds of sparse probes until enough echoes came back for the
        // check to mean something; a busy machine takes more rounds.
        let deadline = Instant::now() + ENOUGH_ECHOES_WITHIN;
        let (mut sent, mut received) = (0, 0);
        while received < MIN_ECHOES && Instant::now() < deadline {
            let round = netctl::netns::run_in(lab.ns(1), || {
                bench::probe::run_client(&bench::probe::ClientOptions {
                    target: server_addr,
                    duration: Duration::from_millis(800),
                    interval: Duration::from_millis(1),
                    warmup: 5,
                    ..bench::probe::ClientOptions::default()
                })
            });
            match round {
                Ok(Ok(r)) => {
                    sent += r.sent;
                    received += r.received;
                }
                other => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    panic!("the probe client failed: {other:?}{}", diagnose(&[&a, &b]));
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let served = server.join();
        assert!(
            matches!(served, Ok(Ok(_))),
            "the echo server failed: {served:?}"
        );
        (sent, received)
    });
    assert!(
        received >= MIN_ECHOES,
        "too few echoes ({received} of {sent} in {ENOUGH_ECHOES_WITHIN:?}) for the check to mean anything{}",
        diagnose(&[&a, &b])
    );
    let mut names = BTreeSet::new();
    for d in [&a, &b] {
        names.extend(must(d.thread_names(), "listing a daemon's threads"));
    }
    let io_workers: Vec<&String> = names.iter().filter(|n| n.starts_with("iou-")).collect();
    assert!(
        io_workers.is_empty(),
        "io_uring punted work to kernel threads {io_workers:?} after {received} request/response exchanges"
    );
    for d in [a, b] {
        must(d.terminate(), "stopping a site");
    }
}
