//! `wireguard` mode, control side: drives `tunnel_proto::wg::Tunnel` with
//! what workers hand over and the clock, sends what it produces, and
//! publishes its snapshots to the workers.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tunnel_proto::wg::{self, Handled, PeerId, TRANSMIT_BUF_LEN, Tunnel};
use tunnel_proto::{DropReason, Path};

use crate::control::{ModeControl, Outbox};
use crate::counters::Counter;
use crate::status::PeerStatus;
use crate::wg_mode::{WgEvent, WgMode};

/// The WireGuard control side: the tunnel, where its snapshots go, and
/// counts of handshake outcomes.
pub struct WgControl {
    tunnel: Tunnel,
    mode: Arc<WgMode>,
    buf: Box<[u8]>,
    responded: Counter,
    established: Counter,
    cookies_stored: Counter,
    rejected: Counter,
}

impl WgControl {
    /// The control side of `tunnel`, whose snapshots go to `mode`.
    pub fn new(tunnel: Tunnel, mode: Arc<WgMode>) -> WgControl {
        WgControl {
            tunnel,
            mode,
            buf: vec![0u8; TRANSMIT_BUF_LEN].into_boxed_slice(),
            responded: Counter::default(),
            established: Counter::default(),
            cookies_stored: Counter::default(),
            rejected: Counter::default(),
        }
    }

    /// Publishes a new snapshot, then sends everything the tunnel queued:
    /// in that order, so that the peer's answer to a handshake response
    /// cannot reach a worker before the session it needs.
    fn flush(&mut self, now: Instant, out: &Outbox) {
        if let Some(snap) = self.tunnel.poll_snapshot() {
            self.mode.publish(snap);
        }
        while let Some(t) = self.tunnel.poll_transmit(now, &mut self.buf) {
            let path = Path {
                remote: t.dst,
                local: t.src,
            };
            out.send(path, &self.buf[..t.len]);
        }
        // Staged packets sealed just now may have moved the snapshot on.
        if let Some(snap) = self.tunnel.poll_snapshot() {
            self.mode.publish(snap);
        }
    }
}

impl ModeControl for WgControl {
    type Event = WgEvent;
    type Peer = PeerId;

    fn on_handshake(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: Path,
        msg: &[u8],
        under_load: bool,
        out: &Outbox,
    ) {
        match self
            .tunnel
            .handle_handshake(now, wall, from, msg, under_load)
        {
            Ok(Handled::Responded(_)) => self.responded.inc(),
            Ok(Handled::Established(_)) => self.established.inc(),
            Ok(Handled::CookieStored(_)) => self.cookies_stored.inc(),
            Err(e) => {
                self.rejected.inc();
                tracing::debug!(src = %from.remote, error = %e, "handshake message rejected");
            }
        }
        self.flush(now, out);
    }

    fn on_stage(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: PeerId,
        packet: &[u8],
        out: &Outbox,
    ) {
        // Errors are counted by the tunnel (queue_full, no_route, ...).
        let _ = self.tunnel.stage(peer, packet, now, wall);
        self.flush(now, out);
    }

    fn on_event(&mut self, now: Instant, wall: SystemTime, event: WgEvent, out: &Outbox) {
        if event.events.contains(wg::Events::CONFIRMED) {
            // A responder's session is complete once the initiator's first
            // data packet arrives.
            self.established.inc();
        }
        self.tunnel
            .handle_events(event.peer, event.events, now, wall);
        self.flush(now, out);
    }

    fn on_timeout(&mut self, now: Instant, wall: SystemTime, out: &Outbox) {
        self.tunnel.handle_timeout(now, wall);
        self.flush(now, out);
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.tunnel.poll_timeout()
    }

    fn public_key(&self) -> Option<String> {
        self.tunnel.public_key().map(|k| k.to_base64())
    }

    fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.tunnel
            .peer_ids()
            .filter_map(|id| self.tunnel.peer_status(id, now))
            .map(|st| PeerStatus {
                name: st.public_key.to_base64(),
                endpoint: st.endpoint.map(|e| e.to_string()),
                local_address: st.local_address.map(|a| a.to_string()),
                allowed_ips: st.allowed_ips.iter().map(|p| p.to_string()).collect(),
                latest_handshake_unix: st
                    .latest_handshake
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                persistent_keepalive: st
                    .persistent_keepalive
                    .map(|d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX)),
                pinned: st.pinned,
                handshakes: st.handshakes,
                rx_bytes: st.traffic.rx_bytes,
                rx_packets: st.traffic.rx_packets,
                tx_bytes: st.traffic.tx_bytes,
                tx_packets: st.traffic.tx_packets,
            })
            .collect()
    }

    fn drops(&self) -> [u64; DropReason::COUNT] {
        *self.tunnel.drop_counts()
    }

    fn control_counters(&self) -> Vec<(String, u64)> {
        vec![
            ("handshake_responses".into(), self.responded.get()),
            ("handshakes_completed".into(), self.established.get()),
            ("cookies_received".into(), self.cookies_stored.get()),
            ("handshake_messages_rejected".into(), self.rejected.get()),
        ]
    }
}
