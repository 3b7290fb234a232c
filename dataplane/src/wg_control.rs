//! `wireguard` mode, control side: drives `tunnel_proto::wg::Tunnel` with
//! what workers hand over and the clock, sends what it produces, and
//! publishes its snapshots to the workers.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use tunnel_proto::wg::{
    self, Handled, IpPrefix, MAX_PEERS, PeerConfig, PeerId, TRANSMIT_BUF_LEN, Tunnel,
};
use tunnel_proto::{DropReason, Path, PublicKey};

use crate::config::{Config, ModeConfig};
use crate::control::{ModeControl, Outbox, PeerExtras, ReloadPlan};
use crate::counters::{ControlCounters, Counter};
use crate::status::{PeerStatus, share};
use crate::uapi::protocol::{AllowedIpOp, DeviceDump, Errno, PeerDump, PeerSet, SetRequest};
use crate::wg_mode::{PeerEntry, WgEvent, WgMode};

/// The first byte of a handshake initiation (whitepaper §5.4.2).
const HANDSHAKE_INITIATION: u8 = 1;
/// The first byte of a cookie reply (whitepaper §5.4.7).
const COOKIE_REPLY: u8 = 3;

/// The WireGuard control side: the tunnel, where its snapshots go, and
/// counts of handshake outcomes.
pub struct WgControl {
    tunnel: Tunnel,
    mode: Arc<WgMode>,
    buf: Box<[u8]>,
    responded: Counter,
    cookies_stored: Counter,
    rejected: Counter,
    shared: Arc<ControlCounters>,
}

impl WgControl {
    /// The control side of `tunnel`, whose snapshots go to `mode`.
    pub fn new(tunnel: Tunnel, mode: Arc<WgMode>) -> WgControl {
        let control = WgControl {
            tunnel,
            mode,
            buf: vec![0u8; TRANSMIT_BUF_LEN].into_boxed_slice(),
            responded: Counter::default(),
            cookies_stored: Counter::default(),
            rejected: Counter::default(),
            shared: Default::default(),
        };
        control.publish_directory(Instant::now());
        control
    }

    /// Tells metrics who the peers are now. With every snapshot: a
    /// snapshot comes with each session and configuration change, which is
    /// when keys, AllowedIPs and latest handshakes change.
    fn publish_directory(&self, now: Instant) {
        let peers = self
            .tunnel
            .peer_ids()
            .filter_map(|id| self.tunnel.peer_status(id, now))
            .map(|st| PeerEntry {
                id: st.id,
                public_key: st.public_key.to_base64(),
                allowed_ips: st
                    .allowed_ips
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                latest_handshake: st.latest_handshake,
            })
            .collect();
        self.mode.publish_directory(peers);
    }

    /// Publishes a snapshot the tunnel has made, and the directory with it.
    fn publish_snapshot(&mut self, now: Instant) {
        if let Some(snap) = self.tunnel.poll_snapshot() {
            self.mode.publish(snap);
            self.publish_directory(now);
        }
    }

    /// Publishes a new snapshot, then sends everything the tunnel queued:
    /// in that order, so that the peer's answer to a handshake response
    /// cannot reach a worker before the session it needs.
    fn flush(&mut self, now: Instant, out: &Outbox) {
        self.publish_snapshot(now);
        while let Some(t) = self.tunnel.poll_transmit(now, &mut self.buf) {
            let path = Path {
                remote: t.dst,
                local: t.src,
            };
            // The message type is the first byte (whitepaper §5.4): what
            // metrics count among what the protocol sends.
            match self.buf.first().copied() {
                Some(HANDSHAKE_INITIATION) => self.shared.handshakes_initiated.inc(),
                Some(COOKIE_REPLY) => self.shared.cookie_replies_sent.inc(),
                _ => {}
            }
            out.send(path, &self.buf[..t.len]);
        }
        // Staged packets sealed just now may have moved the snapshot on.
        self.publish_snapshot(now);
    }
}

impl WgControl {
    /// Applies one peer's block of a `set` (see `PeerSet`).
    fn apply_peer(
        &mut self,
        p: PeerSet,
        replace: bool,
        now: Instant,
    ) -> Result<(), tunnel_proto::wg::ConfigError> {
        let id = self.tunnel.peer_id(&p.public_key);
        if p.remove {
            if let Some(id) = id {
                self.tunnel.remove_peer(id)?;
            }
            return Ok(());
        }
        let current = id.and_then(|id| self.tunnel.peer_status(id, now));
        // A block under replace_peers describes the whole peer.
        let mut allowed: Vec<IpPrefix> = match &current {
            Some(st) if !replace => st.allowed_ips.clone(),
            _ => Vec::new(),
        };
        for op in &p.allowed_ips {
            match *op {
                AllowedIpOp::Clear => allowed.clear(),
                AllowedIpOp::Add(prefix) => {
                    if !allowed.contains(&prefix) {
                        allowed.push(prefix);
                    }
                }
                AllowedIpOp::Remove(prefix) => allowed.retain(|x| *x != prefix),
            }
        }
        let psk = match p.preshared_key {
            Some(psk) => Some(psk),
            None if replace => Some(None),
            None => None,
        };
        let keepalive = p.persistent_keepalive.or(replace.then_some(0));
        let id = match id {
            Some(id) => id,
            None if p.update_only => return Ok(()),
            None => {
                let mut cfg = PeerConfig::new(p.public_key);
                cfg.endpoint = p.endpoint;
                self.tunnel.add_peer(cfg)?
            }
        };
        if let Some(psk) = psk {
            self.tunnel.set_preshared_key(id, psk)?;
        }
        if let Some(ep) = p.endpoint {
            self.tunnel.set_endpoint(id, Some(ep))?;
        }
        if let Some(secs) = keepalive {
            self.tunnel
                .set_persistent_keepalive(id, Some(Duration::from_secs(u64::from(secs))))?;
        }
        self.tunnel.set_allowed_ips(id, allowed)
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
            Ok(Handled::Established(_)) => self.shared.handshakes_completed.inc(),
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
            self.shared.handshakes_completed.inc();
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
                spread_flows: st.spread_flows,
                handshakes: st.handshakes,
                rx_bytes: st.traffic.rx_bytes,
                rx_packets: st.traffic.rx_packets,
                tx_bytes: st.traffic.tx_bytes,
                tx_packets: st.traffic.tx_packets,
                by_worker: st.traffic_by_worker.iter().map(share).collect(),
            })
            .collect()
    }

    fn drops(&self) -> [u64; DropReason::COUNT] {
        *self.tunnel.drop_counts()
    }

    fn dump(&self) -> Result<DeviceDump, Errno> {
        let now = Instant::now();
        let peers = self
            .tunnel
            .peer_ids()
            .filter_map(|id| {
                let st = self.tunnel.peer_status(id, now)?;
                Some(PeerDump {
                    public_key: st.public_key,
                    preshared_key: self.tunnel.preshared_key(id).cloned(),
                    endpoint: st.endpoint,
                    last_handshake: st
                        .latest_handshake
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok()),
                    rx_bytes: st.traffic.rx_bytes,
                    tx_bytes: st.traffic.tx_bytes,
                    persistent_keepalive: st
                        .persistent_keepalive
                        .map_or(0, |d| u16::try_from(d.as_secs()).unwrap_or(u16::MAX)),
                    allowed_ips: st.allowed_ips,
                })
            })
            .collect();
        Ok(DeviceDump {
            private_key: self.tunnel.private_key().cloned(),
            listen_port: 0,
            fwmark: 0,
            peers,
        })
    }

    fn validate(&self, set: &SetRequest) -> Result<(), Errno> {
        let own = match &set.private_key {
            Some(k) => k.as_ref().map(|k| k.public_key()),
            None => self.tunnel.public_key(),
        };
        let mut added = HashSet::new();
        for p in set
            .peers
            .iter()
            .filter(|p| Some(p.public_key) != own && !p.remove)
        {
            let refuse = |what: &str| {
                tracing::warn!(peer = %p.public_key, line = p.line, "configuration refused: {what}");
                Errno::Invalid
            };
            Tunnel::check_peer_key(&p.public_key).map_err(|_| refuse("a low-order public key"))?;
            if let Some(ep) = p.endpoint {
                Tunnel::check_endpoint(&p.public_key, ep)
                    .map_err(|_| refuse("an endpoint that cannot be sent to"))?;
            }
            let exists = !set.replace_peers && self.tunnel.peer_id(&p.public_key).is_some();
            if !exists && !p.update_only {
                added.insert(p.public_key);
            }
        }
        let kept = if set.replace_peers {
            0
        } else {
            self.tunnel.peer_count()
        };
        if kept + added.len() > MAX_PEERS {
            tracing::warn!(
                peers = kept + added.len(),
                max = MAX_PEERS,
                "configuration refused: too many peers"
            );
            return Err(Errno::Invalid);
        }
        Ok(())
    }

    fn apply(&mut self, set: SetRequest, now: Instant, wall: SystemTime, out: &Outbox) {
        if let Some(key) = set.private_key
            && let Err(e) = self.tunnel.set_private_key(key)
        {
            tracing::error!(error = %e, "setting the private key");
        }
        if set.replace_peers {
            // wg's setconf: the peers become exactly these. A peer named
            // again keeps its sessions (the kernel would drop it and make
            // it anew); what its block leaves out goes back to the default.
            let named: HashSet<PublicKey> = set
                .peers
                .iter()
                .filter(|p| !p.remove && !p.update_only)
                .map(|p| p.public_key)
                .collect();
            let gone: Vec<PeerId> = self
                .tunnel
                .peer_ids()
                .filter(|id| {
                    self.tunnel
                        .peer_status(*id, now)
                        .is_some_and(|st| !named.contains(&st.public_key))
                })
                .collect();
            for id in gone {
                let _ = self.tunnel.remove_peer(id);
            }
        }
        let own = self.tunnel.public_key();
        for p in set.peers {
            if Some(p.public_key) == own {
                continue;
            }
            if let Err(e) = self.apply_peer(p, set.replace_peers, now) {
                tracing::error!(error = %e, "applying a validated peer");
            }
        }
        self.flush(now, out);
        let _ = wall;
    }

    fn reload_plan(&self, config: &Config) -> Result<ReloadPlan, String> {
        let ModeConfig::WireGuard(w) = &config.mode else {
            return Err(
                "the file is now in vxlan mode: a mode cannot change while ringtun runs".into(),
            );
        };
        let mut peers = Vec::new();
        let mut extras = Vec::new();
        let mut prefixes = Vec::new();
        for p in &w.peers {
            let endpoint = p
                .endpoint
                .as_ref()
                .map(|e| e.resolve())
                .transpose()
                .map_err(|e| format!("{}: peer at line {}: {e}", config.file, p.line))?;
            let mut allowed_ips = vec![AllowedIpOp::Clear];
            allowed_ips.extend(p.allowed_ips.iter().map(|&a| AllowedIpOp::Add(a)));
            prefixes.extend(p.allowed_ips.iter().map(|a| (a.addr(), a.prefix_len())));
            peers.push(PeerSet {
                public_key: p.public_key,
                line: p.line,
                remove: false,
                update_only: false,
                preshared_key: Some(p.preshared_key.clone()),
                endpoint,
                persistent_keepalive: Some(p.persistent_keepalive.map_or(0, |k| k.get())),
                allowed_ips,
            });
            extras.push((
                p.public_key,
                PeerExtras {
                    pin_endpoint: p.pin_endpoint,
                    spread_flows: p.spread_flows,
                },
            ));
        }
        // Peers the file no longer has go, as with `wg syncconf`.
        let named: HashSet<PublicKey> = w.peers.iter().map(|p| p.public_key).collect();
        let now = Instant::now();
        for id in self.tunnel.peer_ids() {
            if let Some(st) = self.tunnel.peer_status(id, now)
                && !named.contains(&st.public_key)
            {
                peers.push(PeerSet {
                    public_key: st.public_key,
                    line: 0,
                    remove: true,
                    update_only: false,
                    preshared_key: None,
                    endpoint: None,
                    persistent_keepalive: None,
                    allowed_ips: Vec::new(),
                });
            }
        }
        Ok(ReloadPlan {
            set: SetRequest {
                private_key: Some(Some(w.private_key.clone())),
                listen_port: Some(config.interface.listen_port.unwrap_or(0)),
                fwmark: Some(config.interface.fwmark),
                replace_peers: false,
                peers,
            },
            extras,
            prefixes,
        })
    }

    fn apply_extras(&mut self, plan: &ReloadPlan) {
        for (key, x) in &plan.extras {
            if let Some(id) = self.tunnel.peer_id(key) {
                let _ = self.tunnel.set_pinned(id, x.pin_endpoint);
                let _ = self.tunnel.set_spread_flows(id, x.spread_flows);
            }
        }
    }

    fn listen_port_moved(&mut self) {
        // Their data from us leaves from flow ports: only a handshake
        // tells them where our listen port is now.
        self.tunnel.contact_spreading_peers();
    }

    fn shared_counters(&self) -> Arc<ControlCounters> {
        self.shared.clone()
    }

    fn control_counters(&self) -> Vec<(String, u64)> {
        vec![
            ("handshake_responses".into(), self.responded.get()),
            (
                "handshakes_completed".into(),
                self.shared.handshakes_completed.get(),
            ),
            ("cookies_received".into(), self.cookies_stored.get()),
            ("handshake_messages_rejected".into(), self.rejected.get()),
        ]
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::uapi::protocol::{AllowedIpOp, Errno, PeerSet, SetRequest};
    use tunnel_proto::PrivateKey;
    use tunnel_proto::wg::TunnelConfig;

    fn key(n: u8) -> PublicKey {
        PrivateKey::from_bytes([n; 32]).public_key()
    }

    fn prefix(s: &str) -> IpPrefix {
        s.parse().unwrap()
    }

    fn control() -> (WgControl, Outbox) {
        let tunnel = Tunnel::new(
            TunnelConfig::new(PrivateKey::from_bytes([1; 32])),
            Instant::now(),
            SystemTime::now(),
        )
        .unwrap();
        let mode = Arc::new(WgMode::new(tunnel.snapshot()));
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        (WgControl::new(tunnel, mode), Outbox::new(sock.into(), None))
    }

    fn peer(n: u8, ops: Vec<AllowedIpOp>) -> PeerSet {
        PeerSet {
            public_key: key(n),
            line: 2,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: ops,
        }
    }

    fn set(c: &mut WgControl, out: &Outbox, s: SetRequest) -> Result<(), Errno> {
        c.validate(&s)?;
        c.apply(s, Instant::now(), SystemTime::now(), out);
        Ok(())
    }

    fn allowed(c: &WgControl, n: u8) -> Vec<String> {
        let d = c.dump().unwrap();
        let p = d.peers.iter().find(|p| p.public_key == key(n)).unwrap();
        p.allowed_ips.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_reload_applies_the_files_own_peer_switches() {
        let (mut c, out) = control();
        let file = |b: &str, cc: &str| {
            format!(
                "[Interface]\nPrivateKey = {}\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.2.0.0/16\n{b}\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = 10.3.0.0/16\n{cc}\n",
                PrivateKey::from_bytes([1; 32]).to_base64(),
                key(2).to_base64(),
                key(3).to_base64(),
            )
        };
        let switches = |c: &WgControl| -> Vec<(bool, bool)> {
            [2, 3]
                .map(|n| {
                    let id = c.tunnel.peer_id(&key(n)).unwrap();
                    let st = c.tunnel.peer_status(id, Instant::now()).unwrap();
                    (st.pinned, st.spread_flows)
                })
                .to_vec()
        };
        for (b, cc, want) in [
            (
                "PinEndpoint = true\nSpreadFlows = true",
                "",
                vec![(true, true), (false, false)],
            ),
            ("", "SpreadFlows = on", vec![(false, false), (false, true)]),
        ] {
            let (config, _) = Config::parse(&file(b, cc), "rt0.conf").unwrap();
            let plan = c.reload_plan(&config).unwrap();
            set(&mut c, &out, plan.set.clone()).unwrap();
            c.apply_extras(&plan);
            assert_eq!(switches(&c), want, "{b:?} / {cc:?}");
        }
    }

    #[test]
    fn peers_are_added_changed_moved_and_removed() {
        let (mut c, out) = control();
        let s = SetRequest {
            peers: vec![
                peer(2, vec![AllowedIpOp::Add(prefix("10.2.0.0/16"))]),
                peer(3, vec![AllowedIpOp::Add(prefix("10.3.0.0/16"))]),
            ],
            ..SetRequest::default()
        };
        set(&mut c, &out, s).unwrap();
        let id2 = c.tunnel.peer_id(&key(2)).unwrap();
        // A prefix given to 3 moves from 2; 2 keeps its id (and sessions).
        let s = SetRequest {
            peers: vec![peer(3, vec![AllowedIpOp::Add(prefix("10.2.0.0/16"))])],
            ..SetRequest::default()
        };
        set(&mut c, &out, s).unwrap();
        assert!(allowed(&c, 2).is_empty());
        assert_eq!(allowed(&c, 3), vec!["10.2.0.0/16", "10.3.0.0/16"]);
        assert_eq!(c.tunnel.peer_id(&key(2)), Some(id2));
        // update_only does not create; remove removes.
        let mut ghost = peer(9, vec![]);
        ghost.update_only = true;
        let mut gone = peer(2, vec![]);
        gone.remove = true;
        set(
            &mut c,
            &out,
            SetRequest {
                peers: vec![ghost, gone],
                ..SetRequest::default()
            },
        )
        .unwrap();
        assert_eq!(c.tunnel.peer_id(&key(9)), None);
        assert_eq!(c.tunnel.peer_id(&key(2)), None);
        assert_eq!(c.dump().unwrap().peers.len(), 1);
    }

    #[test]
    fn replace_peers_keeps_a_peer_named_again_and_drops_the_rest() {
        let (mut c, out) = control();
        let s = SetRequest {
            peers: vec![
                peer(2, vec![AllowedIpOp::Add(prefix("10.2.0.0/16"))]),
                peer(3, vec![]),
            ],
            ..SetRequest::default()
        };
        set(&mut c, &out, s).unwrap();
        let id2 = c.tunnel.peer_id(&key(2)).unwrap();
        let mut again = peer(
            2,
            vec![AllowedIpOp::Clear, AllowedIpOp::Add(prefix("10.22.0.0/16"))],
        );
        again.persistent_keepalive = Some(25);
        set(
            &mut c,
            &out,
            SetRequest {
                replace_peers: true,
                peers: vec![again],
                ..SetRequest::default()
            },
        )
        .unwrap();
        assert_eq!(
            c.tunnel.peer_id(&key(2)),
            Some(id2),
            "the same peer, sessions kept"
        );
        assert_eq!(c.tunnel.peer_id(&key(3)), None);
        assert_eq!(allowed(&c, 2), vec!["10.22.0.0/16"]);
        assert_eq!(c.dump().unwrap().peers[0].persistent_keepalive, 25);
    }

    #[test]
    fn a_bad_peer_anywhere_refuses_the_whole_set() {
        let (mut c, out) = control();
        set(
            &mut c,
            &out,
            SetRequest {
                peers: vec![peer(2, vec![])],
                ..SetRequest::default()
            },
        )
        .unwrap();
        let before = c.dump().unwrap();
        // A low-order point (all zeros) after a good change.
        let mut bad = peer(0, vec![]);
        bad.public_key = PublicKey::from_bytes([0; 32]);
        let s = SetRequest {
            private_key: Some(Some(PrivateKey::from_bytes([7; 32]))),
            peers: vec![peer(4, vec![]), bad],
            ..SetRequest::default()
        };
        assert_eq!(set(&mut c, &out, s), Err(Errno::Invalid));
        assert_eq!(c.dump().unwrap(), before, "nothing changed");
        let mut unreachable = peer(5, vec![]);
        unreachable.endpoint = Some("0.0.0.0:51820".parse().unwrap());
        let s = SetRequest {
            peers: vec![unreachable],
            ..SetRequest::default()
        };
        assert_eq!(set(&mut c, &out, s), Err(Errno::Invalid));
        assert_eq!(c.dump().unwrap(), before);
    }

    #[test]
    fn a_peer_with_the_interfaces_own_key_is_ignored() {
        let (mut c, out) = control();
        let own = PrivateKey::from_bytes([1; 32]).public_key();
        let mut me = peer(0, vec![AllowedIpOp::Add(prefix("10.9.0.0/16"))]);
        me.public_key = own;
        set(
            &mut c,
            &out,
            SetRequest {
                peers: vec![me],
                ..SetRequest::default()
            },
        )
        .unwrap();
        assert!(c.dump().unwrap().peers.is_empty());
    }
}
