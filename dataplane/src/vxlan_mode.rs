//! `vxlan` mode (TAP, L2): Ethernet frames in RFC 7348 VXLAN, plaintext.
//! Each peer is a static remote VTEP; frames to a learned MAC go to the
//! VTEP it was learned behind, everything else is replicated to every VTEP.
//! Each VTEP keeps its own path (the local address its frames arrive on,
//! which replies leave from) and traffic counters.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use tunnel_proto::vxlan::{self, Fdb, MacAddr, Vni};
use tunnel_proto::{AtomicPath, DropReason, Path, PeerTraffic};

use crate::control::{ModeControl, Outbox, ReloadPlan};
use crate::counters::ControlCounters;
use crate::metrics::{PeerKind, PeerSample, PeerSource};
use crate::mode::{Inbound, Mode, Route, SealError, SealResult, Sealed};
use crate::status::PeerStatus;
use crate::uapi::protocol::{DeviceDump, Errno, SetRequest};
use crate::worker::sched::Target;

/// How long a learned MAC stays: the Linux bridge's default ageing time.
pub const FDB_AGEING: Duration = Duration::from_secs(300);
/// Slots in the forwarding table (memory fixed at start).
pub const FDB_CAPACITY: usize = 4096;

/// A remote VTEP, by its place in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VtepId(pub u16);

/// One remote VTEP.
#[derive(Debug)]
pub struct Vtep {
    /// Where its frames go (the kernel's VXLAN sends from other source
    /// ports, so this is configured, never learned).
    pub addr: SocketAddr,
    /// Its address and the local address its frames arrive on.
    pub path: AtomicPath,
    /// Traffic, one lane per worker.
    pub traffic: PeerTraffic,
}

/// The VXLAN mode's state, shared by all workers.
#[derive(Debug)]
pub struct VxlanMode {
    vni: Vni,
    vteps: Box<[Vtep]>,
    /// Remote VTEPs by IP: the kernel's VXLAN sends from a per-flow source
    /// port, so the port cannot identify the sender.
    by_ip: HashMap<IpAddr, u16>,
    fdb: Fdb,
}

impl VxlanMode {
    /// A mode for `vni` with these remote VTEPs, in peer order, counting
    /// traffic in `lanes` lanes (one per worker).
    pub fn new(vni: Vni, vteps: Vec<SocketAddr>, lanes: usize) -> VxlanMode {
        let vteps: Box<[Vtep]> = vteps
            .into_iter()
            .map(crate::cmsg::canonical)
            .map(|addr| Vtep {
                addr,
                path: AtomicPath::new(Some(Path::from(addr))),
                traffic: PeerTraffic::new(lanes),
            })
            .collect();
        let by_ip = vteps
            .iter()
            .enumerate()
            .map(|(i, v)| (v.addr.ip(), i as u16))
            .collect();
        VxlanMode {
            vni,
            vteps,
            by_ip,
            fdb: Fdb::new(FDB_CAPACITY, FDB_AGEING, Instant::now()),
        }
    }

    /// The remote VTEPs.
    pub fn vteps(&self) -> &[Vtep] {
        &self.vteps
    }

    fn target(&self, i: usize) -> Option<Target<VtepId>> {
        let v = self.vteps.get(i)?;
        Some(Target {
            dst: v.addr,
            src: v.path.load().and_then(|p| p.local),
            peer: VtepId(i as u16),
        })
    }
}

impl PeerSource for VxlanMode {
    fn kind(&self) -> PeerKind {
        PeerKind::Vtep
    }

    fn sample(&self, _now: Instant, _wall: SystemTime) -> Vec<PeerSample> {
        self.vteps
            .iter()
            .map(|v| PeerSample {
                name: v.addr.to_string(),
                allowed_ips: String::new(),
                traffic: v.traffic.total(),
                latest_handshake_unix: None,
                session_age_seconds: None,
            })
            .collect()
    }
}

/// Where one sealed frame goes: one VTEP, or every one (a flood).
#[derive(Debug)]
pub struct VxlanTargets<'b> {
    mode: &'b VxlanMode,
    next: usize,
    end: usize,
}

impl Iterator for VxlanTargets<'_> {
    type Item = Target<VtepId>;

    fn next(&mut self) -> Option<Target<VtepId>> {
        if self.next >= self.end {
            return None;
        }
        let t = self.mode.target(self.next);
        self.next += 1;
        t
    }
}

impl Mode for VxlanMode {
    const HEADROOM: usize = vxlan::HEADROOM;
    const TAILROOM: usize = 0;
    const AUTHENTICATED: bool = false;
    /// RFC 7348 §5: the source port from a hash of the inner frame; the
    /// receiver (ringtun or the kernel) accepts any.
    const FLOW_SOURCE_PORTS: bool = true;
    /// The header in front is all a plaintext frame needs.
    const SEALS_HEADER_ONLY: bool = true;
    const NAME: &'static str = "vxlan";
    type Peer = VtepId;
    /// The control thread needs nothing from VXLAN workers.
    type Event = Infallible;
    type Batch<'a> = Instant;
    type Targets<'b> = VxlanTargets<'b>;

    fn begin(&self) -> Instant {
        Instant::now()
    }

    #[inline]
    fn route(&self, now: &Instant, pkt: &[u8]) -> Route<VtepId> {
        let Some(dst) = MacAddr::dst_of(pkt) else {
            return Route::Drop(DropReason::Malformed);
        };
        if self.vteps.is_empty() {
            return Route::Drop(DropReason::NoRoute);
        }
        if dst.is_multicast() {
            return Route::Flood;
        }
        match self.fdb.lookup(dst, *now) {
            Some(v) => Route::Peer(VtepId(v)),
            None => Route::Flood,
        }
    }

    #[inline]
    fn seal<'b>(
        &'b self,
        _now: &'b Instant,
        lane: usize,
        _t: Instant,
        route: Route<VtepId>,
        buf: &mut [u8],
        len: usize,
    ) -> SealResult<'b, Self> {
        let (next, end) = match route {
            Route::Peer(VtepId(v)) if usize::from(v) < self.vteps.len() => {
                (usize::from(v), usize::from(v) + 1)
            }
            Route::Flood if !self.vteps.is_empty() => (0, self.vteps.len()),
            Route::Drop(r) => return Err(SealError::Drop(r)),
            _ => return Err(SealError::Drop(DropReason::NoRoute)),
        };
        // Only the header: the frame behind it may lie elsewhere
        // (`SEALS_HEADER_ONLY`).
        let mut pkt =
            vxlan::Packet::new_checked(buf.get_mut(..vxlan::HEADER_LEN).unwrap_or_default())
                .map_err(|_| SealError::Drop(DropReason::Malformed))?;
        vxlan::Repr { vni: self.vni }.emit(&mut pkt);
        for v in &self.vteps[next..end] {
            v.traffic.lane(lane).sent(1, len as u64);
        }
        Ok(Sealed {
            len: vxlan::HEADER_LEN + len,
            targets: VxlanTargets {
                mode: self,
                next,
                end,
            },
            spread: true,
            event: None,
        })
    }

    #[inline]
    fn open(
        &self,
        now: &Instant,
        lane: usize,
        _t: Instant,
        from: Path,
        dgram: &mut [u8],
    ) -> Inbound<Infallible> {
        let Some(&i) = self.by_ip.get(&from.remote.ip()) else {
            return Inbound::Drop(DropReason::DisallowedSource);
        };
        let range = match vxlan::parse_frame(dgram, self.vni) {
            Ok(r) => r,
            Err(e) => return Inbound::Drop(e.into()),
        };
        let frame = &dgram[range.clone()];
        let Some(smac) = MacAddr::src_of(frame) else {
            return Inbound::Drop(DropReason::Malformed);
        };
        self.fdb.learn(smac, i, *now);
        if let Some(v) = self.vteps.get(usize::from(i)) {
            // The remote stays the configured one; only the local address
            // (which replies leave from) is learned.
            v.path.roam(v.addr, from.local, true);
            v.traffic.lane(lane).received(1, range.len() as u64);
        }
        Inbound::Deliver {
            start: range.start,
            end: range.end,
            event: None,
        }
    }

    fn forget_local(&self, _now: &Instant, peer: VtepId) {
        if let Some(v) = self.vteps.get(usize::from(peer.0)) {
            v.path.forget_local();
        }
    }
}

/// The VXLAN control side: static VTEPs, nothing to negotiate; it
/// reports them for `ringtun show`.
pub struct VxlanControl {
    mode: std::sync::Arc<VxlanMode>,
    /// All zero: VXLAN has no handshakes, and the control thread drops nothing.
    counters: std::sync::Arc<ControlCounters>,
}

impl VxlanControl {
    /// The control side of `mode`.
    pub fn new(mode: std::sync::Arc<VxlanMode>) -> VxlanControl {
        VxlanControl {
            mode,
            counters: Default::default(),
        }
    }
}

impl ModeControl for VxlanControl {
    type Event = Infallible;
    type Peer = VtepId;

    /// VXLAN has no handshakes: workers never hand one over.
    fn on_handshake(&mut self, _: Instant, _: SystemTime, _: Path, _: &[u8], _: bool, _: &Outbox) {}

    /// VXLAN never waits for a session: workers never stage.
    fn on_stage(&mut self, _: Instant, _: SystemTime, _: VtepId, _: &[u8], _: &Outbox) {}

    fn on_event(&mut self, _: Instant, _: SystemTime, event: Infallible, _: &Outbox) {
        match event {}
    }

    fn on_timeout(&mut self, _: Instant, _: SystemTime, _: &Outbox) {}

    fn next_timeout(&self) -> Option<Instant> {
        None
    }

    fn public_key(&self) -> Option<String> {
        None
    }

    fn peers(&self) -> Vec<PeerStatus> {
        self.mode
            .vteps()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let t = v.traffic.total();
                PeerStatus {
                    name: format!("vtep {i}"),
                    endpoint: Some(v.addr.to_string()),
                    local_address: v.path.load().and_then(|p| p.local).map(|a| a.to_string()),
                    pinned: true,
                    spread_flows: true,
                    rx_bytes: t.rx_bytes,
                    rx_packets: t.rx_packets,
                    tx_bytes: t.tx_bytes,
                    tx_packets: t.tx_packets,
                    by_worker: v
                        .traffic
                        .by_lane()
                        .iter()
                        .map(crate::status::share)
                        .collect(),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn drops(&self) -> [u64; DropReason::COUNT] {
        [0; DropReason::COUNT]
    }

    fn control_counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    fn shared_counters(&self) -> std::sync::Arc<ControlCounters> {
        self.counters.clone()
    }

    /// A VXLAN interface has no WireGuard configuration to report.
    fn dump(&self) -> Result<DeviceDump, Errno> {
        Err(Errno::Invalid)
    }

    /// Nor one to change: its VTEPs come from its file.
    fn validate(&self, _: &SetRequest) -> Result<(), Errno> {
        Err(Errno::Invalid)
    }

    fn apply(&mut self, _: SetRequest, _: Instant, _: SystemTime, _: &Outbox) {}

    /// VTEPs are fixed while the daemon runs: a restart applies a changed file.
    fn reload_plan(&self, _: &crate::config::Config) -> Result<ReloadPlan, String> {
        Err(
            "a vxlan interface's VTEPs cannot change while it runs: restart it to apply the file"
                .into(),
        )
    }

    fn apply_extras(&mut self, _: &ReloadPlan) {}
}

#[cfg(test)]
mod test {
    use super::*;

    fn frame(dst: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&[8, 0]);
        f
    }

    #[test]
    fn unknown_destinations_flood_every_vtep_and_learned_ones_go_to_one() {
        let vteps = vec![
            "192.0.2.1:4789".parse().unwrap(),
            "192.0.2.2:4789".parse().unwrap(),
        ];
        let m = VxlanMode::new(Vni::new(5).unwrap(), vteps, 1);
        let now = m.begin();
        let dst = [2, 0, 0, 0, 0, 7];
        assert_eq!(m.route(&now, &frame(dst)), Route::Flood);
        let mut buf = vec![0u8; 8 + 64];
        buf[8..].copy_from_slice(&frame(dst));
        let s = m.seal(&now, 0, now, Route::Flood, &mut buf, 64).unwrap();
        let to: Vec<u16> = s.targets.map(|t| t.peer.0).collect();
        assert_eq!(to, vec![0, 1]);
        // A frame from dst behind VTEP 1 teaches where it lives.
        let mut back = vec![0u8; 8 + 64];
        back[..8].copy_from_slice(&buf[..8]);
        let mut f = frame([2, 0, 0, 0, 0, 9]);
        f[6..12].copy_from_slice(&dst);
        back[8..].copy_from_slice(&f);
        let from = Path {
            remote: "192.0.2.2:40000".parse().unwrap(),
            local: Some("10.0.0.1".parse().unwrap()),
        };
        assert!(matches!(
            m.open(&now, 0, now, from, &mut back),
            Inbound::Deliver { .. }
        ));
        assert_eq!(m.route(&now, &frame(dst)), Route::Peer(VtepId(1)));
        let s = m
            .seal(&now, 0, now, Route::Peer(VtepId(1)), &mut buf, 64)
            .unwrap();
        let t: Vec<_> = s.targets.collect();
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].src,
            Some("10.0.0.1".parse().unwrap()),
            "replies leave from the learned address"
        );
        assert_eq!(
            t[0].dst,
            "192.0.2.2:4789".parse().unwrap(),
            "to the configured port"
        );
        m.forget_local(&now, VtepId(1));
        assert_eq!(m.target(1).unwrap().src, None);
        let tr = m.vteps()[1].traffic.total();
        assert_eq!(
            (tr.tx_packets, tr.rx_packets),
            (2, 1),
            "a flood counts a copy per VTEP"
        );
    }
}
