//! `wireguard` mode (TUN, L3): the workers' side. Routing, sealing and
//! opening go through the shared `tunnel_proto::wg::Snapshot`, loaded once
//! per batch; the control thread swaps in a new one whenever a session or
//! the configuration changes.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};
use tunnel_proto::wg::{self, EncapError, MessageType, PeerId, Snapshot};
use tunnel_proto::{DropReason, Path};

use crate::mode::{Inbound, Mode, Route, SealError, SealResult, Sealed};
use crate::worker::sched::Target;

/// The WireGuard mode's shared state: the current snapshot.
#[derive(Debug)]
pub struct WgMode {
    snapshot: ArcSwap<Snapshot>,
}

impl WgMode {
    /// A mode starting from `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>) -> WgMode {
        WgMode {
            snapshot: ArcSwap::new(snapshot),
        }
    }

    /// Publishes a new snapshot; workers pick it up at their next batch.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
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
    /// A WireGuard peer expects the listen port.
    const FLOW_SOURCE_PORTS: bool = false;
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
