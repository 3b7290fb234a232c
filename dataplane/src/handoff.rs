//! What workers hand to the control thread, and how they wake it:
//! bounded channels (a full channel drops and counts `queue_full`, it
//! never blocks a worker) plus a doorbell eventfd the control thread polls.
//!
//! Three channels, one per kind, so that no kind can crowd out another:
//! handshake messages (whose backlog and rate are WireGuard's "under
//! load"), packets staged for a peer without a session (bounded on their
//! own: local traffic never switches cookie mode on), and session events
//! (a flood of either never costs a working session its CONFIRMED).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};
use tunnel_proto::{DropReason, Path};

use crate::counters::WorkerCounters;

/// Largest handshake-class message (the 148-byte initiation).
pub const MAX_HANDSHAKE_LEN: usize = 148;

/// Capacity of each worker → control channel (handshakes, staged
/// packets, events).
pub const CHANNEL_CAPACITY: usize = 1024;

/// A handshake initiation, response or cookie reply, copied out of the
/// receive buffer (at most 148 bytes, so no allocation).
#[derive(Debug)]
pub struct Handshake {
    /// Where it came from, and the local address it arrived on.
    pub from: Path,
    /// Valid bytes in `bytes`.
    pub len: u8,
    /// The message.
    pub bytes: [u8; MAX_HANDSHAKE_LEN],
}

impl Handshake {
    /// The message's bytes.
    pub fn message(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// An outbound packet for a peer named by `P` with no usable session.
/// This is the one allocation on a worker's path, and it happens only
/// while a handshake is pending (bounded by its channel and the control
/// thread's per-peer queue).
#[derive(Debug)]
pub struct Staged<P> {
    /// The peer.
    pub peer: P,
    /// The plaintext packet.
    pub packet: Box<[u8]>,
}

/// An eventfd: workers write to wake the control thread.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter, waking any poller. A full counter
    /// (`EAGAIN`) already means "wake up", so errors are ignored.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter (non-blocking).
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a local.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The descriptor, for polling.
    pub fn raw(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// The control thread's wake-up: an eventfd rung at most once between
/// two of the control thread's looks, so a burst of messages from a busy
/// worker costs one `write` instead of one per message.
#[derive(Debug)]
pub struct Doorbell {
    fd: EventFd,
    rung: AtomicBool,
}

impl Doorbell {
    /// A doorbell over a fresh eventfd.
    pub fn new() -> io::Result<Doorbell> {
        Ok(Doorbell {
            fd: EventFd::new()?,
            rung: AtomicBool::new(false),
        })
    }

    /// Wakes the control thread unless a wake-up is already pending. Called
    /// after the message is in its channel: the control thread clears the
    /// flag before it reads the channels, so either it sees the message or
    /// this call sees the flag cleared and writes.
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            self.fd.notify();
        }
    }

    /// Control thread: consume the wake-up, before reading the channels.
    pub fn answer(&self) {
        self.fd.drain();
        self.rung.swap(false, Ordering::AcqRel);
    }

    /// The descriptor, for polling.
    pub fn raw(&self) -> i32 {
        self.fd.raw()
    }
}

/// The control thread's ends of the link.
#[derive(Debug)]
pub struct ControlInbox<E, P> {
    /// Handshake messages: bounded, and their backlog is one of
    /// WireGuard's "under load" signals.
    pub handshakes: Receiver<Handshake>,
    /// Packets staged for peers without a session: bounded on their own.
    pub staged: Receiver<Staged<P>>,
    /// Session events: a separate channel, so that a flood of handshake
    /// messages can never crowd out the CONFIRMED or REKEY that keeps a
    /// working session alive.
    pub events: Receiver<E>,
    /// Rung by workers after sending.
    pub doorbell: Arc<Doorbell>,
}

/// A worker's end of the link to the control thread.
#[derive(Debug)]
pub struct ControlLink<E, P> {
    handshakes: Sender<Handshake>,
    staged: Sender<Staged<P>>,
    events: Sender<E>,
    doorbell: Arc<Doorbell>,
}

impl<E, P> Clone for ControlLink<E, P> {
    fn clone(&self) -> Self {
        ControlLink {
            handshakes: self.handshakes.clone(),
            staged: self.staged.clone(),
            events: self.events.clone(),
            doorbell: self.doorbell.clone(),
        }
    }
}

impl<E, P> ControlLink<E, P> {
    /// Makes both ends.
    pub fn new() -> io::Result<(ControlLink<E, P>, ControlInbox<E, P>)> {
        let (htx, handshakes) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let (stx, staged) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let (etx, events) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let doorbell = Arc::new(Doorbell::new()?);
        Ok((
            ControlLink {
                handshakes: htx,
                staged: stx,
                events: etx,
                doorbell: doorbell.clone(),
            },
            ControlInbox {
                handshakes,
                staged,
                events,
                doorbell,
            },
        ))
    }

    /// Wakes the control thread without a message (a worker is stopping).
    pub fn notify(&self) {
        self.doorbell.ring();
    }

    /// Hands a session event over, on the events' own channel; `false`
    /// when it is full (count `queue_full`).
    pub fn send_event(&self, ev: E) -> bool {
        let ok = self.events.try_send(ev).is_ok();
        if ok {
            self.doorbell.ring();
        }
        ok
    }

    /// A worker tells the control thread what a seal or open reported; a
    /// full channel is a `queue_full` drop in `counters`.
    pub fn event(&self, ev: E, counters: &WorkerCounters) {
        if !self.send_event(ev) {
            counters.drop_packet(DropReason::QueueFull);
        }
    }

    /// A worker hands over a plaintext packet for `peer`, which has no
    /// session yet. Cost: one copy and one allocation, only while a
    /// handshake is pending (bounded by the channel).
    pub fn stage(&self, peer: P, packet: &[u8], counters: &WorkerCounters) {
        let msg = Staged {
            peer,
            packet: packet.into(),
        };
        if self.staged.try_send(msg).is_ok() {
            self.doorbell.ring();
        } else {
            counters.drop_packet(DropReason::QueueFull);
        }
    }

    /// A worker hands over a handshake message that came `from` (copied:
    /// at most [`MAX_HANDSHAKE_LEN`] bytes, no allocation).
    pub fn handshake(&self, from: Path, msg: &[u8], counters: &WorkerCounters) {
        let mut bytes = [0u8; MAX_HANDSHAKE_LEN];
        let n = msg.len().min(MAX_HANDSHAKE_LEN);
        bytes[..n].copy_from_slice(&msg[..n]);
        counters.handshakes_to_control.inc();
        let msg = Handshake {
            from,
            len: n as u8,
            bytes,
        };
        if self.handshakes.try_send(msg).is_ok() {
            self.doorbell.ring();
        } else {
            counters.drop_packet(DropReason::QueueFull);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eventfd_count(d: &Doorbell) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a local from a non-blocking eventfd.
        let n = unsafe { libc::read(d.raw(), (&mut v as *mut u64).cast(), 8) };
        if n == 8 { v } else { 0 }
    }

    #[test]
    fn a_burst_rings_the_doorbell_once_until_answered() {
        let (link, inbox) = ControlLink::<u8, u16>::new().unwrap();
        for _ in 0..5 {
            assert!(link.send_event(1));
        }
        assert_eq!(
            eventfd_count(&inbox.doorbell),
            1,
            "one write for five messages"
        );
        inbox.doorbell.answer();
        link.notify();
        assert_eq!(
            eventfd_count(&inbox.doorbell),
            1,
            "answered, so it rings again"
        );
        assert_eq!(inbox.events.len(), 5);
    }

    #[test]
    fn each_kind_has_its_own_bound() {
        let (link, inbox) = ControlLink::<u8, u16>::new().unwrap();
        let counters = WorkerCounters::new();
        let full = || counters.drops[DropReason::QueueFull.index()].get();
        for _ in 0..CHANNEL_CAPACITY {
            link.stage(0, &[1, 2, 3], &counters);
        }
        assert_eq!(full(), 0);
        link.stage(0, &[1, 2, 3], &counters);
        assert_eq!(full(), 1, "the staged channel is bounded, and counts");
        let from = Path::from("192.0.2.1:51820".parse::<std::net::SocketAddr>().unwrap());
        link.handshake(from, &[1; 148], &counters);
        assert_eq!(full(), 1, "staged traffic leaves room for handshakes");
        assert_eq!(inbox.handshakes.len(), 1);
        for _ in 0..CHANNEL_CAPACITY {
            link.handshake(from, &[1; 148], &counters);
        }
        assert_eq!(full(), 2, "the handshake channel is bounded too");
        assert!(
            link.send_event(2),
            "a flood of handshakes must not cost a session its CONFIRMED"
        );
        assert_eq!(inbox.events.len(), 1);
        assert_eq!(inbox.staged.len(), CHANNEL_CAPACITY);
        let h = inbox.handshakes.try_recv().unwrap();
        assert_eq!(h.message(), &[1; 148][..]);
    }
}
