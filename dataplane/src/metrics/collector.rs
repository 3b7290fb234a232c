//! The metrics, read at scrape time: each worker's counters summed or
//! labelled by worker, the control thread's counters, and each peer's
//! traffic from the mode's current view. Nothing is copied in between
//! scrapes, so a scrape costs the workers nothing.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crossbeam_utils::CachePadded;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tunnel_proto::{DropReason, Traffic};

use crate::counters::{ControlCounters, WorkerCounters};

/// How a mode names its peers in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// WireGuard peers, by public key: `wireguard_*` as the exporter has them.
    WireGuard,
    /// Remote VTEPs, by endpoint: `ringtun_vtep_*`.
    Vtep,
}

/// One peer's figures at the moment of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSample {
    /// The public key (base64) or the VTEP's `address:port`.
    pub name: String,
    /// AllowedIPs, comma-separated as the exporter writes them (empty for a VTEP).
    pub allowed_ips: String,
    /// Traffic carried, summed over workers.
    pub traffic: Traffic,
    /// Unix time of the latest handshake (WireGuard; `None`: none yet).
    pub latest_handshake_unix: Option<u64>,
    /// Age of the session data is sent on, in seconds (`None`: none).
    pub session_age_seconds: Option<f64>,
}

/// Where a mode's peers are read from at scrape time.
pub trait PeerSource: Send + Sync + fmt::Debug + 'static {
    /// How the peers are named.
    fn kind(&self) -> PeerKind;
    /// Each peer's figures now.
    fn sample(&self, now: Instant, wall: SystemTime) -> Vec<PeerSample>;
}

/// What a scrape reads.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The interface name (the `interface` label of every metric).
    pub interface: String,
    /// Each worker's counters.
    pub workers: Vec<Arc<CachePadded<WorkerCounters>>>,
    /// The control thread's counters.
    pub control: Arc<ControlCounters>,
    /// The peers.
    pub peers: Arc<dyn PeerSource>,
}

/// The collector registered with the registry that `/metrics` encodes.
#[derive(Debug)]
pub struct TunnelCollector {
    sources: Sources,
}

impl TunnelCollector {
    /// A collector reading `sources` at every scrape.
    pub fn new(sources: Sources) -> TunnelCollector {
        TunnelCollector { sources }
    }
}

type Labels = Vec<(&'static str, String)>;

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, N)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A label value as the text format needs it: backslash, double quote and
/// line feed escaped. prometheus-client writes values as given, and an
/// interface name may hold `"` or `\` (the kernel refuses only `/`, `:`
/// and white space); the other labels are base64 keys, addresses and fixed
/// names, which never do.
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl TunnelCollector {
    fn iface(&self) -> (&'static str, String) {
        ("interface", label_value(&self.sources.interface))
    }

    /// One row per worker of `f`'s counter.
    fn per_worker(&self, f: impl Fn(&WorkerCounters) -> u64) -> Vec<(Labels, u64)> {
        self.per_worker_with(&[], f)
    }

    fn per_worker_with(
        &self,
        extra: &[(&'static str, &str)],
        f: impl Fn(&WorkerCounters) -> u64,
    ) -> Vec<(Labels, u64)> {
        self.sources
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut labels = vec![self.iface(), ("worker", i.to_string())];
                labels.extend(extra.iter().map(|&(k, v)| (k, v.to_string())));
                (labels, f(w))
            })
            .collect()
    }

    /// A drop reason summed over workers and the control thread.
    fn drops(&self, reason: DropReason) -> u64 {
        let i = reason.index();
        self.sources
            .workers
            .iter()
            .map(|w| w.drops[i].get())
            .sum::<u64>()
            + self.sources.control.drops[i].get()
    }

    fn encode_peers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let peers = self.sources.peers.sample(Instant::now(), SystemTime::now());
        match self.sources.peers.kind() {
            PeerKind::WireGuard => {
                let exporter = |p: &PeerSample| {
                    vec![
                        self.iface(),
                        ("public_key", p.name.clone()),
                        ("allowed_ips", p.allowed_ips.clone()),
                    ]
                };
                let by_key = |p: &PeerSample| vec![self.iface(), ("public_key", p.name.clone())];
                counters(
                    enc,
                    "wireguard_sent_bytes",
                    "Bytes sent to the peer (inner packets)",
                    peers.iter().map(|p| (exporter(p), p.traffic.tx_bytes)),
                )?;
                counters(
                    enc,
                    "wireguard_received_bytes",
                    "Bytes received from the peer and delivered (inner packets)",
                    peers.iter().map(|p| (exporter(p), p.traffic.rx_bytes)),
                )?;
                gauges(
                    enc,
                    "wireguard_latest_handshake_seconds",
                    "Unix time of the latest handshake with the peer (0: none yet)",
                    peers
                        .iter()
                        .map(|p| (exporter(p), p.latest_handshake_unix.unwrap_or(0))),
                )?;
                counters(
                    enc,
                    "ringtun_peer_sent_packets",
                    "Packets sent to the peer",
                    peers.iter().map(|p| (by_key(p), p.traffic.tx_packets)),
                )?;
                counters(
                    enc,
                    "ringtun_peer_received_packets",
                    "Packets received from the peer and delivered",
                    peers.iter().map(|p| (by_key(p), p.traffic.rx_packets)),
                )?;
                gauges(
                    enc,
                    "ringtun_peer_session_age_seconds",
                    "Age of the session data to the peer is sent on (absent: no session)",
                    peers
                        .iter()
                        .filter_map(|p| Some((by_key(p), p.session_age_seconds?))),
                )
            }
            PeerKind::Vtep => {
                let vtep = |p: &PeerSample| vec![self.iface(), ("vtep", p.name.clone())];
                let rows = [
                    (
                        "ringtun_vtep_sent_bytes",
                        "Bytes of frames sent to the remote VTEP",
                        (|t: &Traffic| t.tx_bytes) as fn(&Traffic) -> u64,
                    ),
                    (
                        "ringtun_vtep_received_bytes",
                        "Bytes of frames received from the remote VTEP and delivered",
                        |t| t.rx_bytes,
                    ),
                    (
                        "ringtun_vtep_sent_packets",
                        "Frames sent to the remote VTEP",
                        |t| t.tx_packets,
                    ),
                    (
                        "ringtun_vtep_received_packets",
                        "Frames received from the remote VTEP and delivered",
                        |t| t.rx_packets,
                    ),
                ];
                for (name, help, f) in rows {
                    counters(
                        enc,
                        name,
                        help,
                        peers.iter().map(|p| (vtep(p), f(&p.traffic))),
                    )?;
                }
                Ok(())
            }
        }
    }

    fn encode_workers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut udp_datagrams =
            self.per_worker_with(&[("direction", "sent")], |w| w.udp_tx_datagrams.get());
        udp_datagrams.extend(
            self.per_worker_with(&[("direction", "received")], |w| w.udp_rx_datagrams.get()),
        );
        counters(
            enc,
            "ringtun_udp_datagrams",
            "Datagrams sent and received on the underlay, per worker",
            udp_datagrams,
        )?;
        let mut udp_bytes =
            self.per_worker_with(&[("direction", "sent")], |w| w.udp_tx_bytes.get());
        udp_bytes
            .extend(self.per_worker_with(&[("direction", "received")], |w| w.udp_rx_bytes.get()));
        counters(
            enc,
            "ringtun_udp_bytes",
            "UDP payload bytes sent and received on the underlay, per worker",
            udp_bytes,
        )?;
        type Row = (&'static str, &'static str, fn(&WorkerCounters) -> u64);
        let rows: [Row; 13] = [
            (
                "ringtun_device_reads",
                "Reads from the TUN/TAP queue (a super-packet is one)",
                |w| w.dev_reads.get(),
            ),
            (
                "ringtun_device_read_bytes",
                "Bytes read from the TUN/TAP queue",
                |w| w.dev_read_bytes.get(),
            ),
            (
                "ringtun_device_written_packets",
                "Packets delivered to the TUN/TAP queue (a coalesced write counts its segments)",
                |w| w.dev_write_packets.get(),
            ),
            (
                "ringtun_device_writes",
                "Writes to the TUN/TAP queue",
                |w| w.dev_writes.get(),
            ),
            (
                "ringtun_udp_sends",
                "sendmsg calls on the underlay; the datagrams sent over this is datagrams per send (UDP GSO)",
                |w| w.udp_tx_sends.get(),
            ),
            (
                "ringtun_udp_receives",
                "Receive completions on the underlay (one may carry several datagrams with GRO)",
                |w| w.udp_rx_receives.get(),
            ),
            (
                "ringtun_udp_gro_receives",
                "Receives that carried more than one datagram (UDP GRO)",
                |w| w.udp_rx_gro_receives.get(),
            ),
            (
                "ringtun_udp_gro_datagrams",
                "Datagrams carried by those receives",
                |w| w.udp_rx_gro_datagrams.get(),
            ),
            (
                "ringtun_device_gso_reads",
                "Super-packets read from the device (TSO/USO)",
                |w| w.dev_read_gso.get(),
            ),
            (
                "ringtun_device_gso_segments",
                "Segments split out of those super-packets",
                |w| w.dev_read_gso_segments.get(),
            ),
            (
                "ringtun_device_coalesced_writes",
                "Coalesced super-packet writes to the device",
                |w| w.dev_write_coalesced.get(),
            ),
            (
                "ringtun_device_coalesced_segments",
                "Segments delivered in those writes; over ringtun_device_coalesced_writes, segments per coalesced write",
                |w| w.dev_write_coalesced_segments.get(),
            ),
            (
                "ringtun_worker_yields",
                "sched_yield calls after 200 µs of running without sleeping, each an offer of the CPU to threads waiting for it",
                |w| w.yields.get(),
            ),
        ];
        for (name, help, f) in rows {
            counters(enc, name, help, self.per_worker(f))?;
        }
        Ok(())
    }

    fn encode_control(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        counters(
            enc,
            "ringtun_drops",
            "Packets dropped, by reason (the names ringtun show uses)",
            DropReason::ALL.iter().map(|&r| {
                (
                    vec![self.iface(), ("reason", r.as_str().to_string())],
                    self.drops(r),
                )
            }),
        )?;
        counters(
            enc,
            "ringtun_socket_receive_buffer_overflows",
            "Datagrams the kernel dropped because a socket's receive buffer was full (SO_RXQ_OVFL)",
            [(vec![self.iface()], self.drops(DropReason::RcvbufOverflow))],
        )?;
        counters(
            enc,
            "ringtun_queue_full",
            "Packets or messages dropped because a bounded queue was full",
            [(vec![self.iface()], self.drops(DropReason::QueueFull))],
        )?;
        let c = &self.sources.control;
        counters(
            enc,
            "ringtun_handshakes_initiated",
            "Handshake initiations sent (first tries and retries)",
            [(vec![self.iface()], c.handshakes_initiated.get())],
        )?;
        counters(
            enc,
            "ringtun_handshakes_completed",
            "Sessions made (as initiator on a response, as responder on the first data packet)",
            [(vec![self.iface()], c.handshakes_completed.get())],
        )?;
        counters(
            enc,
            "ringtun_cookie_replies_sent",
            "Cookie replies sent to handshake messages that came under load without a valid MAC2",
            [(vec![self.iface()], c.cookie_replies_sent.get())],
        )
    }
}

impl Collector for TunnelCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.encode_peers(&mut enc)?;
        self.encode_workers(&mut enc)?;
        self.encode_control(&mut enc)
    }
}

#[cfg(test)]
#[path = "collector_test.rs"]
mod test;
