//! `wireguard` mode (TUN, L3): the workers' side. Routing, sealing and
//! opening go through the shared `tunnel_proto::wg::Snapshot`, loaded once
//! per batch; the control thread swaps in a new one whenever a session or
//! the configuration changes.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, Guard};
use tunnel_proto::wg::{self, EncapError, MessageType, PeerId, Snapshot};
use tunnel_proto::{DropReason, Path};

use crate::metrics::{PeerKind, PeerSample, PeerSource};
use crate::mode::{Inbound, Mode, Route, SealError, SealResult, Sealed};
use crate::worker::sched::Target;

/// The WireGuard mode's shared state: the current snapshot, and who the
/// peers are for a metrics scrape.
#[derive(Debug)]
pub struct WgMode {
    snapshot: ArcSwap<Snapshot>,
    directory: ArcSwap<Vec<PeerEntry>>,
}

/// What a metrics scrape needs about a peer that the snapshot does not
/// carry: its key, AllowedIPs and latest handshake. The control thread
/// publishes these with each snapshot; traffic and session age are read
/// from the snapshot itself at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer in the snapshot.
    pub id: PeerId,
    /// Its public key, base64.
    pub public_key: String,
    /// Its AllowedIPs, comma-separated.
    pub allowed_ips: String,
    /// Its latest handshake (wall clock).
    pub latest_handshake: Option<SystemTime>,
}

impl WgMode {
    /// A mode starting from `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> WgMode {
        WgMode {
            snapshot: ArcSwap::new(snapshot),
            directory: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Publishes a new snapshot; workers pick it up at their next batch.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
    }

    /// Publishes who the peers are, for metrics.
    pub fn publish_directory(&self, peers: Vec<PeerEntry>) {
        self.directory.store(Arc::new(peers));
    }
}

impl PeerSource for WgMode {
    fn kind(&self) -> PeerKind {
        PeerKind::WireGuard
    }

    fn sample(&self, now: Instant, _wall: SystemTime) -> Vec<PeerSample> {
        let snap = self.snapshot.load();
        self.directory
            .load()
            .iter()
            .filter_map(|p| {
                Some(PeerSample {
                    name: p.public_key.clone(),
                    allowed_ips: p.allowed_ips.clone(),
                    traffic: snap.traffic(p.id)?,
                    latest_handshake_unix: p
                        .latest_handshake
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs()),
                    session_age_seconds: snap.session_age(p.id, now).map(|d| d.as_secs_f64()),
                })
            })
            .collect()
    }
}

/// What a worker tells the control thread about one peer: the session
/// events a seal or an open reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgEvent {
    /// The peer.
    pub peer: PeerId,
    /// What happened.
    pub events: wg::Events,
}

fn event(peer: PeerId, events: wg::Events) -> Option<WgEvent> {
    (!events.is_empty()).then_some(WgEvent { peer, events })
}

/// Opens with the batch's snapshot; if the receiver index is unknown and a
/// newer snapshot was published meanwhile (a handshake completed during a
/// long batch), tries once more with that one, so the first packet of a
/// new session is not lost to the race.
#[inline]
fn decapsulate_fresh(
    current: &ArcSwap<Snapshot>,
    dp: &Snapshot,
    now: Instant,
    lane: usize,
    from: Path,
    dgram: &mut [u8],
) -> Result<wg::Opened, DropReason> {
    match dp.decapsulate(now, lane, from, dgram) {
        Err(DropReason::UnknownIndex) => {
            let fresh = current.load();
            if fresh.generation() == dp.generation() {
                return Err(DropReason::UnknownIndex);
            }
            fresh.decapsulate(now, lane, from, dgram)
        }
        other => other,
    }
}

impl Mode for WgMode {
    const HEADROOM: usize = wg::HEADROOM;
    const TAILROOM: usize = wg::TAILROOM;
    const AUTHENTICATED: bool = true;
    /// Only toward a peer that spreads flows itself (`SpreadFlows`): a
    /// stock WireGuard peer expects the listen port.
    const FLOW_SOURCE_PORTS: bool = true;
    const NAME: &'static str = "wireguard";
    type Peer = PeerId;
    type Event = WgEvent;
    type Batch<'a> = Guard<Arc<Snapshot>>;
    type Targets<'b> = std::iter::Once<Target<PeerId>>;

    #[inline]
    fn begin(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    #[inline]
    fn route(&self, dp: &Guard<Arc<Snapshot>>, pkt: &[u8]) -> Route<PeerId> {
        let Some(dst) = wg::destination(pkt) else {
            return Route::Drop(DropReason::Malformed);
        };
        match dp.route(dst) {
            Some(p) => Route::Peer(p),
            None => Route::Drop(DropReason::NoRoute),
        }
    }

    #[inline]
    fn seal<'b>(
        &'b self,
        dp: &'b Guard<Arc<Snapshot>>,
        lane: usize,
        now: Instant,
        route: Route<PeerId>,
        buf: &mut [u8],
        len: usize,
    ) -> SealResult<'b, Self> {
        let Route::Peer(peer) = route else {
            return Err(SealError::Drop(DropReason::NoRoute));
        };
        match dp.encapsulate(peer, lane, now, buf, len) {
            Ok(s) => Ok(Sealed {
                len: s.len,
                targets: std::iter::once(Target {
                    dst: s.dst,
                    src: s.src,
                    peer,
                }),
                spread: s.spread,
                event: event(peer, s.events),
            }),
            Err(EncapError::NoSession | EncapError::CounterExhausted) => {
                Err(SealError::Stage(peer))
            }
            Err(e) => Err(SealError::Drop(e.into())),
        }
    }

    #[inline]
    fn open(
        &self,
        dp: &Guard<Arc<Snapshot>>,
        lane: usize,
        now: Instant,
        from: Path,
        dgram: &mut [u8],
    ) -> Inbound<WgEvent> {
        match wg::message_type(dgram) {
            Ok(MessageType::Data) => {
                match decapsulate_fresh(&self.snapshot, dp, now, lane, from, dgram) {
                    Ok(o) if o.keepalive => Inbound::Keepalive {
                        event: event(o.peer, o.events),
                    },
                    Ok(o) => Inbound::Deliver {
                        start: o.payload.start,
                        end: o.payload.end,
                        event: event(o.peer, o.events),
                    },
                    Err(r) => Inbound::Drop(r),
                }
            }
            // Screened here, on the worker, so that junk never takes a
            // slot in the bounded channel to the control thread.
            Ok(_) => match dp.screen_handshake(dgram) {
                Ok(()) => Inbound::Control,
                Err(r) => Inbound::Drop(r),
            },
            Err(_) => Inbound::Drop(DropReason::Malformed),
        }
    }

    fn forget_local(&self, dp: &Guard<Arc<Snapshot>>, peer: PeerId) {
        dp.forget_local(peer);
    }
}
