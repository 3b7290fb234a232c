//! `vxlan` mode (TAP, L2): Ethernet frames in RFC 7348 VXLAN, plaintext.
//! Each peer is a static remote VTEP; frames to a learned MAC go to the
//! VTEP it was learned behind, everything else is replicated to every VTEP.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tunnel_proto::DropReason;
use tunnel_proto::vxlan::{self, Fdb, MacAddr, Vni};

use crate::mode::{Inbound, Mode, Route, SealError, Sealed};

/// How long a learned MAC stays: the Linux bridge's default ageing time.
pub const FDB_AGEING: Duration = Duration::from_secs(300);
/// Slots in the forwarding table (memory fixed at start).
pub const FDB_CAPACITY: usize = 4096;

/// The VXLAN mode's state, shared by all workers.
#[derive(Debug)]
pub struct VxlanMode {
    vni: Vni,
    vteps: Vec<SocketAddr>,
    /// Remote VTEPs by IP: the kernel's VXLAN sends from a per-flow source
    /// port, so the port cannot identify the sender.
    by_ip: HashMap<IpAddr, u16>,
    fdb: Fdb,
}

impl VxlanMode {
    /// A mode for `vni` with these remote VTEPs, in peer order.
    pub fn new(vni: Vni, vteps: Vec<SocketAddr>) -> VxlanMode {
        let by_ip = vteps
            .iter()
            .enumerate()
            .map(|(i, a)| (crate::cmsg::canonical(*a).ip(), i as u16))
            .collect();
        VxlanMode {
            vni,
            vteps: vteps.into_iter().map(crate::cmsg::canonical).collect(),
            by_ip,
            fdb: Fdb::new(FDB_CAPACITY, FDB_AGEING, Instant::now()),
        }
    }

    /// The remote VTEPs.
    pub fn vteps(&self) -> &[SocketAddr] {
        &self.vteps
    }
}

impl Mode for VxlanMode {
    const HEADROOM: usize = vxlan::HEADROOM;
    const TAILROOM: usize = 0;
    const AUTHENTICATED: bool = false;
    const NAME: &'static str = "vxlan";
    type Batch<'a> = Instant;

    fn begin(&self) -> Instant {
        Instant::now()
    }

    #[inline]
    fn route(&self, now: &Instant, pkt: &[u8]) -> Route {
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
            Some(v) => Route::Peer(v),
            None => Route::Flood,
        }
    }

    #[inline]
    fn seal(
        &self,
        _now: &Instant,
        _t: Instant,
        route: Route,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Sealed, SealError> {
        let dst = match route {
            Route::Peer(p) => *self
                .vteps
                .get(usize::from(p))
                .ok_or(SealError::Drop(DropReason::NoRoute))?,
            Route::Flood => *self
                .vteps
                .first()
                .ok_or(SealError::Drop(DropReason::NoRoute))?,
            Route::Drop(r) => return Err(SealError::Drop(r)),
        };
        let mut pkt = vxlan::Packet::new_checked(&mut buf[..vxlan::HEADER_LEN + len])
            .map_err(|_| SealError::Drop(DropReason::Malformed))?;
        vxlan::Repr { vni: self.vni }.emit(&mut pkt);
        Ok(Sealed {
            len: vxlan::HEADER_LEN + len,
            dst,
            event: None,
        })
    }

    fn flood_targets(&self, _now: &Instant) -> &[SocketAddr] {
        &self.vteps
    }

    #[inline]
    fn open(&self, now: &Instant, _t: Instant, src: SocketAddr, dgram: &mut [u8]) -> Inbound {
        let Some(&vtep) = self.by_ip.get(&src.ip()) else {
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
        self.fdb.learn(smac, vtep, *now);
        Inbound::Deliver {
            start: range.start,
            end: range.end,
            peer: vtep,
            event: None,
        }
    }
}
