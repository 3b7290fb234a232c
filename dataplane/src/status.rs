//! What `ringtun show` reports: one serde structure, sent as JSON over the
//! control socket and rendered as text by the client.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::counters::WorkerSnapshot;

/// One peer as `ringtun show` lists it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// Public key (wireguard) or `vtep N` (vxlan).
    pub name: String,
    /// Current endpoint, if known.
    pub endpoint: Option<String>,
    /// Local address replies leave from, if learned.
    pub local_address: Option<String>,
    /// AllowedIPs.
    pub allowed_ips: Vec<String>,
    /// Seconds since the UNIX epoch of the latest completed handshake.
    pub latest_handshake_unix: Option<u64>,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// Whether roaming is off for this peer.
    pub pinned: bool,
    /// Whether each inner flow to this peer leaves from a source port of
    /// its own (`SpreadFlows`; always in vxlan mode).
    #[serde(default)]
    pub spread_flows: bool,
    /// Plaintext bytes received from this peer.
    pub rx_bytes: u64,
    /// Packets received from this peer.
    pub rx_packets: u64,
    /// Plaintext bytes sent to this peer.
    pub tx_bytes: u64,
    /// Packets sent to this peer.
    pub tx_packets: u64,
    /// Handshakes completed with this peer.
    pub handshakes: u64,
    /// What each data-plane worker sent to and received from this peer,
    /// in worker order (packets the control thread sends itself, such as
    /// keepalives, count only in the totals).
    #[serde(default)]
    pub by_worker: Vec<WorkerShare>,
}

/// One worker's part of one peer's traffic.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerShare {
    /// Packets this worker sealed (encapsulated) and sent to the peer.
    pub tx_packets: u64,
    /// Packets from the peer this worker opened (decapsulated) and delivered.
    pub rx_packets: u64,
}

/// A worker's share as `ringtun show` lists it, from its traffic lane.
pub fn share(t: &tunnel_proto::Traffic) -> WorkerShare {
    WorkerShare {
        tx_packets: t.tx_packets,
        rx_packets: t.rx_packets,
    }
}

/// A worker's share of one peer's packets, in percent of the peer's
/// totals; `None` for a direction with no packets yet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkerPercent {
    /// Of the packets sent to the peer.
    pub sent: Option<f64>,
    /// Of the packets received from it.
    pub received: Option<f64>,
}

impl PeerStatus {
    /// Each worker's share of the packets sent to this peer and of those
    /// received from it.
    pub fn worker_shares(&self) -> Vec<WorkerPercent> {
        let pct = |part: u64, whole: u64| (whole > 0).then(|| part as f64 * 100.0 / whole as f64);
        self.by_worker
            .iter()
            .map(|w| WorkerPercent {
                sent: pct(w.tx_packets, self.tx_packets),
                received: pct(w.rx_packets, self.rx_packets),
            })
            .collect()
    }
}

/// The whole interface.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Interface name.
    pub interface: String,
    /// `wireguard` or `vxlan`.
    pub mode: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The file `ringtun up` read (and a reload reads again); none for an
    /// interface started bare.
    #[serde(default)]
    pub config: Option<String>,
    /// UDP listen port.
    pub listen_port: u16,
    /// The IPv4 ports sends leave from, one picked by the hash of each
    /// inner flow (vxlan mode); empty: every send leaves from the listen port.
    #[serde(default)]
    pub source_ports_v4: Vec<u16>,
    /// The same for IPv6.
    #[serde(default)]
    pub source_ports_v6: Vec<u16>,
    /// Public key (wireguard mode).
    pub public_key: Option<String>,
    /// Offloads the device accepted (`csum`, `tso4`, ...), and whether
    /// UDP GSO/GRO are in use.
    pub offloads: Vec<String>,
    /// Device MTU.
    pub mtu: u32,
    /// Peers.
    pub peers: Vec<PeerStatus>,
    /// Counters per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// Drops by reason, summed over workers and the control thread.
    pub drops: Vec<(String, u64)>,
    /// Handshake-class messages the control thread handled, by outcome.
    pub control: Vec<(String, u64)>,
}

impl InterfaceStatus {
    /// The sum of one drop reason over everything.
    pub fn drop_count(&self, reason: &str) -> u64 {
        self.drops
            .iter()
            .filter(|(n, _)| n == reason)
            .map(|(_, v)| *v)
            .sum()
    }

    /// The offload counters summed over workers.
    pub fn offload_totals(&self) -> OffloadTotals {
        let sum = |f: fn(&WorkerSnapshot) -> u64| self.workers.iter().map(f).sum::<u64>();
        OffloadTotals {
            super_packets: sum(|w| w.dev_read_gso),
            super_packet_segments: sum(|w| w.dev_read_gso_segments),
            udp_sends: sum(|w| w.udp_tx_sends),
            udp_datagrams: sum(|w| w.udp_tx_datagrams),
            gro_receives: sum(|w| w.udp_rx_gro_receives),
            gro_datagrams: sum(|w| w.udp_rx_gro_datagrams),
            rx_datagrams: sum(|w| w.udp_rx_datagrams),
            coalesced_writes: sum(|w| w.dev_write_coalesced),
            coalesced_segments: sum(|w| w.dev_write_coalesced_segments),
        }
    }

    /// Human-readable layout, close to `wg show`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "interface: {} ({} mode, pid {})",
            self.interface, self.mode, self.pid
        );
        if let Some(file) = &self.config {
            let _ = writeln!(s, "  config: {file}");
        }
        if let Some(pk) = &self.public_key {
            let _ = writeln!(s, "  public key: {pk}");
        }
        let _ = writeln!(s, "  listening port: {}", self.listen_port);
        for (family, ports) in [
            ("IPv4", &self.source_ports_v4),
            ("IPv6", &self.source_ports_v6),
        ] {
            if !ports.is_empty() {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                let _ = writeln!(s, "  source ports, {family}, by flow: {}", list.join(" "));
            }
        }
        let _ = writeln!(s, "  mtu: {}", self.mtu);
        let off = if self.offloads.is_empty() {
            "none".to_string()
        } else {
            self.offloads.join(" ")
        };
        let _ = writeln!(s, "  offloads: {off}");
        let _ = writeln!(s, "  workers: {}", self.workers.len());
        for p in &self.peers {
            let _ = writeln!(s);
            let _ = writeln!(s, "peer: {}", p.name);
            if let Some(e) = &p.endpoint {
                let pin = if p.pinned { " (pinned)" } else { "" };
                let spread = if p.spread_flows {
                    " (flows spread over source ports)"
                } else {
                    ""
                };
                let _ = writeln!(s, "  endpoint: {e}{pin}{spread}");
            }
            if let Some(l) = &p.local_address {
                let _ = writeln!(s, "  local address: {l}");
            }
            if !p.allowed_ips.is_empty() {
                let _ = writeln!(s, "  allowed ips: {}", p.allowed_ips.join(", "));
            }
            if let Some(t) = p.latest_handshake_unix {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let _ = writeln!(
                    s,
                    "  latest handshake: {} seconds ago",
                    now.saturating_sub(t)
                );
            }
            let _ = writeln!(
                s,
                "  transfer: {} received ({} packets), {} sent ({} packets)",
                human_bytes(p.rx_bytes),
                p.rx_packets,
                human_bytes(p.tx_bytes),
                p.tx_packets
            );
            if p.by_worker.len() > 1 {
                let shares = p.worker_shares();
                let list = |pick: fn(&WorkerPercent) -> Option<f64>| {
                    shares
                        .iter()
                        .enumerate()
                        .map(|(i, sh)| match pick(sh) {
                            Some(v) => format!("{i}: {v:.0}%"),
                            None => format!("{i}: -"),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    s,
                    "  by worker: sent {}; received {}",
                    list(|sh| sh.sent),
                    list(|sh| sh.received)
                );
            }
            if let Some(k) = p.persistent_keepalive {
                let _ = writeln!(s, "  persistent keepalive: every {k} seconds");
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "drops:");
        let mut any = false;
        for (name, v) in &self.drops {
            if *v > 0 {
                any = true;
                let _ = writeln!(s, "  {name:<18} {v}");
            }
        }
        if !any {
            let _ = writeln!(s, "  none");
        }
        let sum = |f: fn(&WorkerSnapshot) -> u64| self.workers.iter().map(f).sum::<u64>();
        let errors = [
            ("udp send errors", sum(|w| w.udp_tx_errors)),
            ("device write errors", sum(|w| w.dev_write_errors)),
            ("gso fallbacks", sum(|w| w.gso_fallbacks)),
            ("local address resets", sum(|w| w.src_addr_resets)),
            ("receive buffer exhaustions", sum(|w| w.rx_buffer_exhausted)),
        ];
        if errors.iter().any(|(_, v)| *v > 0) {
            let _ = writeln!(s);
            let _ = writeln!(s, "errors:");
            for (name, v) in errors.iter().filter(|(_, v)| *v > 0) {
                let _ = writeln!(s, "  {name:<26} {v}");
            }
        }
        let _ = writeln!(s);
        s.push_str(&self.offload_totals().render());
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "worker",
            "dev reads",
            "gso reads",
            "udp sends",
            "udp tx",
            "udp rx",
            "dev writes",
            "batches"
        );
        for (i, w) in self.workers.iter().enumerate() {
            let _ = writeln!(
                s,
                "{:<7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
                i,
                w.dev_reads,
                w.dev_read_gso,
                w.udp_tx_sends,
                w.udp_tx_datagrams,
                w.udp_rx_datagrams,
                w.dev_writes,
                w.batches
            );
        }
        s
    }
}

/// The offloads at work, summed over an interface's workers: each one as
/// how often it engaged and how many packets it carried, so that a
/// configured offload that silently stopped working shows as an average
/// of one (or nothing at all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffloadTotals {
    /// Super-packets read from the device (TSO/USO).
    pub super_packets: u64,
    /// Segments split out of them.
    pub super_packet_segments: u64,
    /// UDP `sendmsg` operations.
    pub udp_sends: u64,
    /// Datagrams those sends carried (more than one each with UDP GSO).
    pub udp_datagrams: u64,
    /// Receives that carried more than one datagram (UDP GRO).
    pub gro_receives: u64,
    /// Datagrams those receives carried.
    pub gro_datagrams: u64,
    /// Every datagram received, with GRO or without.
    pub rx_datagrams: u64,
    /// Coalesced super-packets written to the device.
    pub coalesced_writes: u64,
    /// Segments those writes carried.
    pub coalesced_segments: u64,
}

impl OffloadTotals {
    /// What was counted since `before` (an earlier reading of the same
    /// interface): field by field, never below zero, so that a restarted
    /// daemon's smaller counters read as nothing rather than wrap.
    pub fn since(&self, before: &OffloadTotals) -> OffloadTotals {
        OffloadTotals {
            super_packets: self.super_packets.saturating_sub(before.super_packets),
            super_packet_segments: self
                .super_packet_segments
                .saturating_sub(before.super_packet_segments),
            udp_sends: self.udp_sends.saturating_sub(before.udp_sends),
            udp_datagrams: self.udp_datagrams.saturating_sub(before.udp_datagrams),
            gro_receives: self.gro_receives.saturating_sub(before.gro_receives),
            gro_datagrams: self.gro_datagrams.saturating_sub(before.gro_datagrams),
            rx_datagrams: self.rx_datagrams.saturating_sub(before.rx_datagrams),
            coalesced_writes: self
                .coalesced_writes
                .saturating_sub(before.coalesced_writes),
            coalesced_segments: self
                .coalesced_segments
                .saturating_sub(before.coalesced_segments),
        }
    }

    /// Both together (two gateways, say), field by field.
    pub fn plus(&self, other: &OffloadTotals) -> OffloadTotals {
        OffloadTotals {
            super_packets: self.super_packets + other.super_packets,
            super_packet_segments: self.super_packet_segments + other.super_packet_segments,
            udp_sends: self.udp_sends + other.udp_sends,
            udp_datagrams: self.udp_datagrams + other.udp_datagrams,
            gro_receives: self.gro_receives + other.gro_receives,
            gro_datagrams: self.gro_datagrams + other.gro_datagrams,
            rx_datagrams: self.rx_datagrams + other.rx_datagrams,
            coalesced_writes: self.coalesced_writes + other.coalesced_writes,
            coalesced_segments: self.coalesced_segments + other.coalesced_segments,
        }
    }

    /// Segments per super-packet read (`None` before the first).
    pub fn segments_per_super_packet(&self) -> Option<f64> {
        ratio(self.super_packet_segments, self.super_packets)
    }

    /// Datagrams per UDP send (`None` before the first).
    pub fn datagrams_per_send(&self) -> Option<f64> {
        ratio(self.udp_datagrams, self.udp_sends)
    }

    /// Datagrams per GRO receive (`None` before the first).
    pub fn datagrams_per_gro_receive(&self) -> Option<f64> {
        ratio(self.gro_datagrams, self.gro_receives)
    }

    /// Segments per coalesced device write (`None` before the first).
    pub fn segments_per_coalesced_write(&self) -> Option<f64> {
        ratio(self.coalesced_segments, self.coalesced_writes)
    }

    /// The "offloads at work" block of `ringtun show`.
    pub fn render(&self) -> String {
        let avg = |a: Option<f64>| a.map(|v| format!(" (avg {v:.1})")).unwrap_or_default();
        let mut s = String::new();
        let _ = writeln!(s, "offloads at work:");
        let _ = writeln!(
            s,
            "  device reads:     {} super-packets -> {} segments{}",
            self.super_packets,
            self.super_packet_segments,
            avg(self.segments_per_super_packet())
        );
        let _ = writeln!(
            s,
            "  udp sends:        {} carrying {} datagrams{}",
            self.udp_sends,
            self.udp_datagrams,
            avg(self.datagrams_per_send())
        );
        let _ = writeln!(
            s,
            "  gro receives:     {} carrying {} of {} datagrams received{}",
            self.gro_receives,
            self.gro_datagrams,
            self.rx_datagrams,
            avg(self.datagrams_per_gro_receive())
        );
        let _ = writeln!(
            s,
            "  coalesced writes: {} carrying {} segments{}",
            self.coalesced_writes,
            self.coalesced_segments,
            avg(self.segments_per_coalesced_write())
        );
        s
    }
}

/// `num / den`, or `None` when there is nothing to divide by.
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_peers_and_nonzero_drops() {
        let st = InterfaceStatus {
            interface: "rt0".into(),
            mode: "wireguard".into(),
            listen_port: 51820,
            peers: vec![PeerStatus {
                name: "abc=".into(),
                endpoint: Some("10.0.0.2:51820".into()),
                rx_bytes: 2048,
                ..Default::default()
            }],
            drops: vec![("malformed".into(), 3), ("replay".into(), 0)],
            workers: vec![WorkerSnapshot::default()],
            ..Default::default()
        };
        let text = st.render();
        assert!(text.contains("peer: abc="));
        assert!(
            !text.contains("source ports"),
            "a WireGuard interface sends from its listen port alone"
        );
        let vx = InterfaceStatus {
            source_ports_v4: vec![40001, 52002],
            ..st.clone()
        };
        assert!(
            vx.render()
                .contains("source ports, IPv4, by flow: 40001 52002\n"),
            "{}",
            vx.render()
        );
        assert!(text.contains("endpoint: 10.0.0.2:51820"));
        assert!(text.contains("2.00 KiB received"));
        assert!(text.contains("malformed"));
        assert!(
            !text.contains("replay"),
            "zero drops are not listed:\n{text}"
        );
        assert_eq!(st.drop_count("malformed"), 3);
    }

    #[test]
    fn render_sums_offloads_at_work_over_workers() {
        let w0 = WorkerSnapshot {
            dev_read_gso: 2,
            dev_read_gso_segments: 88,
            udp_tx_sends: 3,
            udp_tx_datagrams: 90,
            udp_rx_receives: 5,
            udp_rx_gro_receives: 1,
            udp_rx_gro_datagrams: 40,
            udp_rx_datagrams: 44,
            dev_write_coalesced: 1,
            dev_write_coalesced_segments: 40,
            ..Default::default()
        };
        let w1 = WorkerSnapshot {
            dev_read_gso: 2,
            dev_read_gso_segments: 12,
            udp_tx_sends: 1,
            udp_tx_datagrams: 10,
            udp_rx_receives: 1,
            udp_rx_gro_receives: 1,
            udp_rx_gro_datagrams: 20,
            udp_rx_datagrams: 20,
            dev_write_coalesced: 3,
            dev_write_coalesced_segments: 20,
            ..Default::default()
        };
        let st = InterfaceStatus {
            workers: vec![w0, w1],
            ..Default::default()
        };
        let text = st.render();
        for line in [
            "device reads:     4 super-packets -> 100 segments (avg 25.0)",
            "udp sends:        4 carrying 100 datagrams (avg 25.0)",
            "gro receives:     2 carrying 60 of 64 datagrams received (avg 30.0)",
            "coalesced writes: 4 carrying 60 segments (avg 15.0)",
        ] {
            assert!(text.contains(line), "expected {line:?} in:\n{text}");
        }
    }

    #[test]
    fn offloads_at_work_without_traffic_show_no_average() {
        let text = InterfaceStatus::default().offload_totals().render();
        assert!(
            text.contains("udp sends:        0 carrying 0 datagrams\n"),
            "no average before the first send:\n{text}"
        );
    }

    #[test]
    fn offload_totals_since_never_go_below_zero() {
        let before = OffloadTotals {
            udp_sends: 10,
            udp_datagrams: 100,
            coalesced_writes: 5,
            ..Default::default()
        };
        let after = OffloadTotals {
            udp_sends: 12,
            udp_datagrams: 180,
            coalesced_writes: 1,
            ..Default::default()
        };
        let d = after.since(&before);
        assert_eq!((d.udp_sends, d.udp_datagrams), (2, 80));
        assert_eq!(d.datagrams_per_send(), Some(40.0));
        assert_eq!(d.coalesced_writes, 0, "a restart reads as nothing");
        assert_eq!(d.segments_per_coalesced_write(), None);
        assert_eq!(d.plus(&d).udp_datagrams, 160);
    }

    #[test]
    fn each_workers_share_of_a_peer_is_shown_and_kept_in_json() {
        let peer = PeerStatus {
            name: "peer".into(),
            tx_packets: 100,
            rx_packets: 10,
            by_worker: vec![
                WorkerShare {
                    tx_packets: 60,
                    rx_packets: 0,
                },
                WorkerShare {
                    tx_packets: 38,
                    rx_packets: 10,
                },
            ],
            ..Default::default()
        };
        let pct = |sent, received| WorkerPercent { sent, received };
        assert_eq!(
            peer.worker_shares(),
            vec![pct(Some(60.0), Some(0.0)), pct(Some(38.0), Some(100.0))]
        );
        let status = InterfaceStatus {
            peers: vec![peer.clone()],
            ..Default::default()
        };
        let text = status.render();
        assert!(
            text.contains("  by worker: sent 0: 60%, 1: 38%; received 0: 0%, 1: 100%\n"),
            "{text}"
        );
        let json = serde_json::to_string(&status).unwrap();
        let back: InterfaceStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back.peers[0].by_worker, peer.by_worker);

        // No traffic yet: no share, no division by zero.
        let idle = PeerStatus {
            by_worker: vec![WorkerShare::default(); 2],
            ..Default::default()
        };
        assert_eq!(idle.worker_shares(), vec![pct(None, None), pct(None, None)]);
        let text = InterfaceStatus {
            peers: vec![idle],
            ..Default::default()
        }
        .render();
        assert!(
            text.contains("by worker: sent 0: -, 1: -; received 0: -, 1: -"),
            "{text}"
        );
    }

    #[test]
    fn a_status_from_a_build_without_worker_shares_still_reads() {
        let old = r#"{"name":"p","endpoint":null,"local_address":null,"allowed_ips":[],
            "latest_handshake_unix":null,"persistent_keepalive":null,"pinned":false,
            "rx_bytes":1,"rx_packets":1,"tx_bytes":2,"tx_packets":2,"handshakes":0}"#;
        let p: PeerStatus = serde_json::from_str(old).unwrap();
        assert!(p.by_worker.is_empty());
        assert!(p.worker_shares().is_empty());
    }
}
