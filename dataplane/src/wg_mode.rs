//! `wireguard` mode (TUN, L3): the workers' side. Routing, sealing and
//! opening go through the shared `tunnel_proto::wg::DataPlane` snapshot,
//! loaded once per batch; the control thread swaps in a new one whenever a
//! session changes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};
use tunnel_proto::DropReason;
use tunnel_proto::wg::{self, DataPlane, EncapError, MessageType, PeerId};

use crate::mode::{ControlEvent, Inbound, Mode, Route, SealError, Sealed};

/// The WireGuard mode's shared state: the current snapshot.
#[derive(Debug)]
pub struct WgMode {
    snapshot: ArcSwap<DataPlane>,
}

impl WgMode {
    /// A mode starting from `snapshot`.
    pub fn new(snapshot: Arc<DataPlane>) -> WgMode {
        WgMode {
            snapshot: ArcSwap::new(snapshot),
        }
    }

    /// Publishes a new snapshot; workers pick it up at their next batch.
    pub fn publish(&self, snapshot: Arc<DataPlane>) {
        self.snapshot.store(snapshot);
    }
}

fn event(peer: PeerId, events: wg::Events) -> Option<ControlEvent> {
    (!events.is_empty()).then_some(ControlEvent {
        peer: peer.index() as u16,
        events,
    })
}

/// Opens with the batch's snapshot; if the receiver index is unknown and a
/// newer snapshot was published meanwhile (a handshake completed during a
/// long batch), tries once more with that one, so the first packet of a
/// new session is not lost to the race.
#[inline]
fn decapsulate_fresh(
    current: &ArcSwap<DataPlane>,
    dp: &DataPlane,
    now: Instant,
    src: SocketAddr,
    dgram: &mut [u8],
) -> Result<wg::Opened, DropReason> {
    match dp.decapsulate(now, src, dgram) {
        Err(DropReason::UnknownIndex) => {
            let fresh = current.load();
            if fresh.generation() == dp.generation() {
                return Err(DropReason::UnknownIndex);
            }
            fresh.decapsulate(now, src, dgram)
        }
        other => other,
    }
}

impl Mode for WgMode {
    const HEADROOM: usize = wg::HEADROOM;
    const TAILROOM: usize = wg::TAILROOM;
    const AUTHENTICATED: bool = true;
    const NAME: &'static str = "wireguard";
    type Batch<'a> = Guard<Arc<DataPlane>>;

    #[inline]
    fn begin(&self) -> Guard<Arc<DataPlane>> {
        self.snapshot.load()
    }

    #[inline]
    fn route(&self, dp: &Guard<Arc<DataPlane>>, pkt: &[u8]) -> Route {
        let Some(dst) = wg::destination(pkt) else {
            return Route::Drop(DropReason::Malformed);
        };
        match dp.route(dst) {
            Some(p) => Route::Peer(p.index() as u16),
            None => Route::Drop(DropReason::NoRoute),
        }
    }

    #[inline]
    fn seal(
        &self,
        dp: &Guard<Arc<DataPlane>>,
        now: Instant,
        route: Route,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Sealed, SealError> {
        let Route::Peer(p) = route else {
            return Err(SealError::Drop(DropReason::NoRoute));
        };
        let peer = PeerId::from_index(p);
        match dp.encapsulate(peer, now, buf, len) {
            Ok(s) => Ok(Sealed {
                len: s.len,
                dst: s.dst,
                event: event(peer, s.events),
            }),
            Err(EncapError::NoSession | EncapError::CounterExhausted) => Err(SealError::Stage(p)),
            Err(e) => Err(SealError::Drop(e.into())),
        }
    }

    fn flood_targets(&self, _dp: &Guard<Arc<DataPlane>>) -> &[SocketAddr] {
        &[]
    }

    #[inline]
    fn open(
        &self,
        dp: &Guard<Arc<DataPlane>>,
        now: Instant,
        src: SocketAddr,
        dgram: &mut [u8],
    ) -> Inbound {
        match wg::message_type(dgram) {
            Ok(MessageType::Data) => match decapsulate_fresh(&self.snapshot, dp, now, src, dgram) {
                Ok(o) if o.keepalive => Inbound::Keepalive {
                    peer: o.peer.index() as u16,
                    event: event(o.peer, o.events),
                },
                Ok(o) => Inbound::Deliver {
                    start: o.payload.start,
                    end: o.payload.end,
                    peer: o.peer.index() as u16,
                    event: event(o.peer, o.events),
                },
                Err(r) => Inbound::Drop(r),
            },
            // Screened here, on the worker, so that junk never takes a
            // slot in the bounded channel to the control thread.
            Ok(_) => match dp.screen_handshake(dgram) {
                Ok(()) => Inbound::Control,
                Err(r) => Inbound::Drop(r),
            },
            Err(_) => Inbound::Drop(DropReason::Malformed),
        }
    }
}
