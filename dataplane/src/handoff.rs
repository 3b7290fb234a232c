//! What workers hand to the control thread, and how they wake it: a
//! bounded channel (a full channel drops and counts `queue_full`, it never
//! blocks a worker) plus an eventfd the control thread polls.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::mode::ControlEvent;

/// Largest handshake-class message (the 148-byte initiation).
pub const MAX_HANDSHAKE_LEN: usize = 148;

/// Capacity of the worker → control channel.
pub const CHANNEL_CAPACITY: usize = 1024;

/// One message from a worker.
#[derive(Debug)]
pub enum ToControl {
    /// A handshake initiation, response or cookie reply, copied out of the
    /// receive buffer (at most 148 bytes, so no allocation).
    Handshake {
        /// Where it came from.
        src: SocketAddr,
        /// The local address it arrived on.
        local: Option<IpAddr>,
        /// Valid bytes in `bytes`.
        len: u8,
        /// The message.
        bytes: [u8; MAX_HANDSHAKE_LEN],
    },
    /// An outbound packet for a peer with no usable session. This is the
    /// one allocation on a worker's path, and it happens only while a
    /// handshake is pending (bounded by the channel and the control
    /// thread's per-peer queue).
    Stage {
        /// The peer.
        peer: u16,
        /// The plaintext packet.
        packet: Box<[u8]>,
    },
    /// Something a receive taught the worker.
    Event(ControlEvent),
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

/// A worker's end of the link to the control thread.
#[derive(Clone, Debug)]
pub struct ControlLink {
    tx: Sender<ToControl>,
    wake: std::sync::Arc<EventFd>,
}

impl ControlLink {
    /// Makes both ends.
    pub fn new() -> io::Result<(ControlLink, Receiver<ToControl>, std::sync::Arc<EventFd>)> {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
        let wake = std::sync::Arc::new(EventFd::new()?);
        Ok((
            ControlLink {
                tx,
                wake: wake.clone(),
            },
            rx,
            wake,
        ))
    }

    /// Wakes the control thread without a message (a worker is stopping).
    pub fn notify(&self) {
        self.wake.notify();
    }

    /// Hands `msg` over; `false` when the channel is full (count `queue_full`).
    pub fn send(&self, msg: ToControl) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.wake.notify();
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}
