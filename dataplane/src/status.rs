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
    /// UDP listen port.
    pub listen_port: u16,
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

    /// Human-readable layout, close to `wg show`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "interface: {} ({} mode, pid {})",
            self.interface, self.mode, self.pid
        );
        if let Some(pk) = &self.public_key {
            let _ = writeln!(s, "  public key: {pk}");
        }
        let _ = writeln!(s, "  listening port: {}", self.listen_port);
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
                let _ = writeln!(s, "  endpoint: {e}{pin}");
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
        assert!(text.contains("endpoint: 10.0.0.2:51820"));
        assert!(text.contains("2.00 KiB received"));
        assert!(text.contains("malformed"));
        assert!(
            !text.contains("replay"),
            "zero drops are not listed:\n{text}"
        );
        assert_eq!(st.drop_count("malformed"), 3);
    }
}
