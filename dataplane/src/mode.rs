//! What a worker asks of a tunnel mode, per packet. The worker owns the
//! I/O (rings, buffers, sockets); a mode only routes, seals and opens bytes
//! in buffers it is handed, in the manner of quinn-udp plus quinn-proto:
//! the worker never interprets protocol state, the mode never sees a fd.

use std::net::SocketAddr;
use std::time::Instant;

use tunnel_proto::DropReason;

/// Where an outbound packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To one peer (WireGuard peer or VXLAN VTEP), by index.
    Peer(u16),
    /// To every peer (VXLAN broadcast, multicast and unknown unicast).
    Flood,
    /// Nowhere.
    Drop(DropReason),
}

/// A sealed packet ready to send: `buf[..len]` is the UDP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Wire length from the start of the buffer.
    pub len: usize,
    /// Destination (for `Route::Flood`: unused, the worker asks `flood_targets`).
    pub dst: SocketAddr,
    /// Something the control thread must hear about.
    pub event: Option<ControlEvent>,
}

/// Why a packet could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealError {
    /// No usable session yet: hand the plaintext to the control thread,
    /// which holds it until a handshake completes.
    Stage(u16),
    /// Drop it, counted under this reason.
    Drop(DropReason),
}

/// What the control thread must hear about after a packet was sealed or
/// opened: WireGuard's session events for one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlEvent {
    /// Peer index.
    pub peer: u16,
    /// What happened.
    pub events: tunnel_proto::wg::Events,
}

impl ControlEvent {
    /// Only a timer moved: the worker may forward these at a bounded rate
    /// (they fire on every turnaround of a busy flow), because the control
    /// thread re-reads the timer state shortly after each one it gets.
    pub fn timers_only(&self) -> bool {
        self.events == tunnel_proto::wg::Events::TIMERS
    }
}

/// What became of one received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Deliver `dgram[start..end]` to the device.
    Deliver {
        /// First byte of the inner packet.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// The peer it came from.
        peer: u16,
        /// Something the control thread must hear about.
        event: Option<ControlEvent>,
    },
    /// Authenticated but nothing to deliver (a keepalive).
    Keepalive {
        /// The peer it came from.
        peer: u16,
        /// Something the control thread must hear about.
        event: Option<ControlEvent>,
    },
    /// A handshake-class message for the control thread.
    Control,
    /// Dropped, counted under this reason.
    Drop(DropReason),
}

/// A tunnel mode as the worker sees it.
pub trait Mode: Send + Sync + 'static {
    /// Bytes in front of the inner packet that sealing writes.
    const HEADROOM: usize;
    /// Bytes after the inner packet that sealing may write (padding, tag).
    const TAILROOM: usize;
    /// Short name for logs.
    const NAME: &'static str;
    /// Whether every delivered packet was authenticated end to end (AEAD).
    /// Then a corrupt inner checksum can only come from the peer itself, so
    /// coalescing need not verify inner checksums first: the kernel's own
    /// WireGuard marks decrypted packets CHECKSUM_UNNECESSARY for the same
    /// reason. Plaintext modes verify.
    const AUTHENTICATED: bool;

    /// Per-batch view of shared state (for example a loaded peer table),
    /// taken once per completion batch rather than per packet.
    type Batch<'a>
    where
        Self: 'a;

    /// Takes the per-batch view.
    fn begin(&self) -> Self::Batch<'_>;

    /// Picks the destination of the inner packet `pkt`.
    fn route(&self, batch: &Self::Batch<'_>, pkt: &[u8]) -> Route;

    /// Seals the inner packet at `buf[HEADROOM..HEADROOM + len]` in place
    /// for `route` (never `Route::Drop`).
    fn seal(
        &self,
        batch: &Self::Batch<'_>,
        now: Instant,
        route: Route,
        buf: &mut [u8],
        len: usize,
    ) -> Result<Sealed, SealError>;

    /// Every destination of a flood, in order.
    fn flood_targets(&self, batch: &Self::Batch<'_>) -> &[SocketAddr];

    /// Opens one received datagram in place.
    fn open(
        &self,
        batch: &Self::Batch<'_>,
        now: Instant,
        src: SocketAddr,
        dgram: &mut [u8],
    ) -> Inbound;
}
