//! `wireguard` mode, control side: drives `tunnel_proto::wg::Tunnel` with
//! what workers hand over and the clock, sends what it produces, and
//! publishes its snapshots to the workers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tunnel_proto::DropReason;
use tunnel_proto::wg::{self, Handled, PeerId, TRANSMIT_BUF_LEN, Tunnel};

use crate::control::{ControlPlane, Outbox};
use crate::counters::Counter;
use crate::local_addr::LocalAddrTable;
use crate::mode::ControlEvent;
use crate::status::PeerStatus;
use crate::wg_mode::WgMode;

/// How soon after a forwarded timer-only event the control thread looks at
/// the timers again (workers hold back further ones for
/// [`crate::worker::TIMER_EVENT_INTERVAL`]).
const TIMER_RECHECK: Duration = Duration::from_millis(1500);

/// The WireGuard control plane.
pub struct WgPlane {
    tunnel: Tunnel,
    mode: Arc<WgMode>,
    local_addrs: Arc<LocalAddrTable>,
    buf: Box<[u8]>,
    recheck: Option<Instant>,
    pin: Vec<bool>,
    /// Per peer: handshakes completed (as initiator, or confirmed as responder).
    handshakes: Vec<u64>,
    /// Per peer: data packets and plaintext bytes this thread sent itself
    /// (packets staged until a handshake completed).
    staged_sent: Vec<(u64, u64)>,
    responded: Counter,
    established: Counter,
    cookies_stored: Counter,
    rejected: Counter,
}

impl WgPlane {
    /// A plane over `tunnel`, whose snapshots go to `mode`.
    pub fn new(
        tunnel: Tunnel,
        mode: Arc<WgMode>,
        local_addrs: Arc<LocalAddrTable>,
        pin: Vec<bool>,
    ) -> WgPlane {
        let peers = tunnel.peer_count();
        WgPlane {
            handshakes: vec![0; peers],
            staged_sent: vec![(0, 0); peers],
            tunnel,
            mode,
            local_addrs,
            buf: vec![0u8; TRANSMIT_BUF_LEN].into_boxed_slice(),
            recheck: None,
            pin,
            responded: Counter::default(),
            established: Counter::default(),
            cookies_stored: Counter::default(),
            rejected: Counter::default(),
        }
    }

    /// The peer whose endpoint is `dst`.
    fn peer_at(&self, dst: SocketAddr) -> Option<usize> {
        let snap = self.tunnel.snapshot();
        (0..snap.peer_count()).find(|&i| snap.endpoint(PeerId::from_index(i as u16)) == Some(dst))
    }

    /// The local address to send to `dst` from: the one a message from
    /// `dst` just arrived on, else the one the peer's data arrives on.
    fn local_for(
        &self,
        dst: SocketAddr,
        reply: Option<(SocketAddr, Option<IpAddr>)>,
    ) -> Option<IpAddr> {
        if let Some((src, local)) = reply
            && src == dst
        {
            return local;
        }
        self.peer_at(dst).and_then(|i| self.local_addrs.get(i))
    }

    /// Publishes a new snapshot, then sends everything the tunnel queued:
    /// in that order, so that the peer's answer to a handshake response
    /// cannot reach a worker before the session it needs.
    fn flush(&mut self, now: Instant, out: &Outbox, reply: Option<(SocketAddr, Option<IpAddr>)>) {
        if let Some(snap) = self.tunnel.poll_snapshot() {
            self.mode.publish(snap);
        }
        while let Some(t) = self.tunnel.poll_transmit(now, &mut self.buf) {
            let local = self.local_for(t.dst, reply);
            out.send(t.dst, local, &self.buf[..t.len]);
            // Staged packets leave from here as transport data: count them
            // with the peer's traffic like the workers' sends.
            if wg::message_type(&self.buf[..t.len]) == Ok(wg::MessageType::Data)
                && t.len > wg::HEADROOM + 16
                && let Some(i) = self.peer_at(t.dst)
                && let Some(c) = self.staged_sent.get_mut(i)
            {
                c.0 += 1;
                c.1 += (t.len - wg::HEADROOM - 16) as u64;
            }
        }
        // Staged packets sealed just now may have moved the snapshot on.
        if let Some(snap) = self.tunnel.poll_snapshot() {
            self.mode.publish(snap);
        }
    }
}

impl ControlPlane for WgPlane {
    fn on_handshake(
        &mut self,
        now: Instant,
        wall: SystemTime,
        src: SocketAddr,
        local: Option<IpAddr>,
        msg: &[u8],
        under_load: bool,
        out: &Outbox,
    ) {
        match self
            .tunnel
            .handle_handshake(now, wall, src, msg, under_load)
        {
            Ok(Handled::Responded(_)) => self.responded.inc(),
            Ok(Handled::Established(p)) => {
                self.established.inc();
                if let Some(h) = self.handshakes.get_mut(p.index()) {
                    *h += 1;
                }
            }
            Ok(Handled::CookieStored(_)) => self.cookies_stored.inc(),
            Err(e) => {
                self.rejected.inc();
                tracing::debug!(%src, error = %e, "handshake message rejected");
            }
        }
        self.flush(now, out, Some((src, local)));
    }

    fn on_stage(&mut self, now: Instant, wall: SystemTime, peer: u16, packet: &[u8], out: &Outbox) {
        // Errors are counted by the tunnel (queue_full, no_route, ...).
        let _ = self
            .tunnel
            .stage(PeerId::from_index(peer), packet, now, wall);
        self.flush(now, out, None);
    }

    fn on_event(&mut self, now: Instant, wall: SystemTime, event: ControlEvent, out: &Outbox) {
        if event.timers_only() || event.events.contains(wg::Events::TIMERS) {
            self.recheck = Some(now + TIMER_RECHECK);
        }
        if event.events.contains(wg::Events::CONFIRMED) {
            // A responder's session is complete once the initiator's first
            // data packet arrives.
            self.established.inc();
            if let Some(h) = self.handshakes.get_mut(usize::from(event.peer)) {
                *h += 1;
            }
        }
        self.tunnel
            .handle_events(PeerId::from_index(event.peer), event.events, now, wall);
        self.flush(now, out, None);
    }

    fn on_timeout(&mut self, now: Instant, wall: SystemTime, out: &Outbox) {
        if self.recheck.is_some_and(|t| t <= now) {
            self.recheck = None;
        }
        self.tunnel.handle_timeout(now, wall);
        self.flush(now, out, None);
    }

    fn next_timeout(&self) -> Option<Instant> {
        match (self.tunnel.poll_timeout(), self.recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        (0..self.tunnel.peer_count())
            .filter_map(|i| {
                let st = self.tunnel.peer_status(PeerId::from_index(i as u16), now)?;
                Some(PeerStatus {
                    name: st.public_key.to_base64(),
                    endpoint: st.endpoint.map(|e| e.to_string()),
                    local_address: None,
                    allowed_ips: st.allowed_ips.iter().map(|p| p.to_string()).collect(),
                    latest_handshake_unix: st
                        .latest_handshake
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs()),
                    persistent_keepalive: st
                        .persistent_keepalive
                        .map(|d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX)),
                    pinned: self.pin.get(i).copied().unwrap_or(false),
                    handshakes: self.handshakes.get(i).copied().unwrap_or(0),
                    tx_packets: self.staged_sent.get(i).map_or(0, |c| c.0),
                    tx_bytes: self.staged_sent.get(i).map_or(0, |c| c.1),
                    ..Default::default()
                })
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
