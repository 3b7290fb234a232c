//! What a worker asks of a tunnel mode, per packet. The worker owns the
//! I/O (rings, buffers, sockets); a mode routes, seals and opens bytes in
//! buffers it is handed, and keeps what it knows about its peers (paths,
//! traffic counters) itself, in the manner of quinn-udp plus quinn-proto:
//! the worker never interprets protocol state, the mode never sees a fd.

use std::fmt::Debug;
use std::time::Instant;

use tunnel_proto::{DropReason, Path};

use crate::worker::sched::Target;

/// Where an outbound packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<P> {
    /// To one peer (WireGuard peer or VXLAN VTEP).
    Peer(P),
    /// To every peer (VXLAN broadcast, multicast and unknown unicast).
    Flood,
    /// Nowhere.
    Drop(DropReason),
}

/// A sealed packet: `buf[..len]` is the UDP payload, to go to every target.
#[derive(Debug)]
pub struct Sealed<T, E> {
    /// Wire length from the start of the buffer.
    pub len: usize,
    /// Every destination, with the local address to send from.
    pub targets: T,
    /// Whether it may leave from the source port its inner flow was given
    /// (a flow socket) rather than the listen port: the mode spreads
    /// flows ([`Mode::FLOW_SOURCE_PORTS`]) and these targets take it.
    pub spread: bool,
    /// Something the control thread must hear about.
    pub event: Option<E>,
}

/// Why a packet could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealError<P> {
    /// No usable session yet: hand the plaintext to the control thread,
    /// which holds it until a handshake completes.
    Stage(P),
    /// Drop it, counted under this reason.
    Drop(DropReason),
}

/// What [`Mode::seal`] gives: the sealed packet with its targets, or why not.
pub type SealResult<'b, M> =
    Result<Sealed<<M as Mode>::Targets<'b>, <M as Mode>::Event>, SealError<<M as Mode>::Peer>>;

/// What became of one received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound<E> {
    /// Deliver `dgram[start..end]` to the device.
    Deliver {
        /// First byte of the inner packet.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// Something the control thread must hear about.
        event: Option<E>,
    },
    /// Authenticated but nothing to deliver (a keepalive).
    Keepalive {
        /// Something the control thread must hear about.
        event: Option<E>,
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
    /// Whether a sealed packet may leave from a source port given to its
    /// inner flow (one of the flow sockets), so that receivers
    /// and ECMP spread flows: what RFC 7348 §5 asks of a VTEP, and what a
    /// WireGuard peer that is a ringtun takes when both ends say so
    /// ([`Sealed::spread`] says it per packet). Otherwise every datagram
    /// leaves from the listen port, which a stock WireGuard peer expects
    /// (it sends back to the port it last heard from).
    const FLOW_SOURCE_PORTS: bool;
    /// Whether [`Mode::seal`] writes only the headroom and neither reads
    /// nor changes the packet (nor its tailroom): then `buf` may end after
    /// the headroom, and the segments of a super-packet are sealed as
    /// headers alone, each payload sent from where it was read (no copy).
    /// Encryption needs the whole packet, so only plaintext modes can.
    const SEALS_HEADER_ONLY: bool = false;

    /// A peer, as routes, stages and targets name it.
    type Peer: Copy + Eq + Debug + Send + 'static;
    /// What the control thread must hear about (uninhabited for a mode
    /// whose control thread needs nothing from the workers).
    type Event: Copy + Debug + Send + 'static;

    /// Per-batch view of shared state (for example a loaded peer table),
    /// taken once per completion batch rather than per packet.
    type Batch<'a>
    where
        Self: 'a;

    /// The destinations of one sealed packet, read from the batch view.
    type Targets<'b>: Iterator<Item = Target<Self::Peer>>
    where
        Self: 'b;

    /// Takes the per-batch view.
    fn begin(&self) -> Self::Batch<'_>;

    /// Picks the destination of the inner packet `pkt`.
    fn route(&self, batch: &Self::Batch<'_>, pkt: &[u8]) -> Route<Self::Peer>;

    /// Seals the inner packet at `buf[HEADROOM..HEADROOM + len]` in place
    /// for `route` (never `Route::Drop`), counting it in traffic lane
    /// `lane` (the worker's own). With [`Mode::SEALS_HEADER_ONLY`], `buf`
    /// need only hold the headroom.
    fn seal<'b>(
        &'b self,
        batch: &'b Self::Batch<'_>,
        lane: usize,
        now: Instant,
        route: Route<Self::Peer>,
        buf: &mut [u8],
        len: usize,
    ) -> SealResult<'b, Self>;

    /// Opens one datagram received `from` (the sender, and the local
    /// address it arrived on) in place, counting it in traffic lane `lane`.
    fn open(
        &self,
        batch: &Self::Batch<'_>,
        lane: usize,
        now: Instant,
        from: Path,
        dgram: &mut [u8],
    ) -> Inbound<Self::Event>;

    /// The kernel refused the local address sends to `peer` left from (it
    /// is no longer ours): forget it, and let the kernel choose.
    fn forget_local(&self, batch: &Self::Batch<'_>, peer: Self::Peer);
}
