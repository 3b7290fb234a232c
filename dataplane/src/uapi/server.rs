//! The configuration socket's own thread: it accepts clients, checks who
//! they are, frames their bytes into requests, hands each request to the
//! control thread and writes the answer back. Reading and writing happen
//! here, never on the control thread, so a slow client (a byte every few
//! seconds) or a connect loop delays other clients at most, never a
//! handshake or a timer: the control thread only ever sees whole, parsed
//! requests. Each request has a deadline from its first byte; a client
//! past it is closed.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use zeroize::Zeroizing;

use super::protocol::{self, DeviceDump, Errno, Framer, MAX_LINE, MAX_REQUEST, Request};
use super::socket::{self, UapiListener};
use crate::handoff::{Doorbell, EventFd};

/// How long a client may take to send one whole request, and to read its
/// answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// How long the control thread may take to answer (a big `set`).
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(30);
/// Requests waiting for the control thread at once.
pub const COMMAND_QUEUE: usize = 4;

/// A request for the control thread, and where its answer goes.
#[derive(Debug)]
pub struct Command {
    /// What the client asked.
    pub request: Request,
    /// Where the answer goes (the UAPI thread waits on it).
    pub reply: Sender<Reply>,
}

/// The control thread's answer to a [`Command`].
#[derive(Debug)]
pub enum Reply {
    /// The device as `get` reports it, or why not.
    Get(Result<DeviceDump, Errno>),
    /// Whether the `set` was applied (all of it) or refused (none of it).
    Set(Result<(), Errno>),
    /// ringtun's status as one line of JSON, or why not.
    Show(Result<String, Errno>),
    /// Whether the file was read again and applied (all of it) or not.
    Reload(Result<(), Errno>),
    /// The daemon stops after this answer.
    Down,
}

/// What the control thread keeps of the configuration socket: the
/// commands, and the doorbell its thread rings after each.
#[derive(Debug)]
pub struct Commands {
    /// Parsed requests.
    pub rx: Receiver<Command>,
}

/// Starts the socket's thread. It stops when `stop` is set and `wake`
/// rung; the socket file goes with the listener.
pub fn spawn(
    listener: UapiListener,
    doorbell: Arc<Doorbell>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
) -> io::Result<(Commands, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
    listener.listener().set_nonblocking(true)?;
    let own_uid = nix::unistd::geteuid().as_raw();
    let handle = std::thread::Builder::new()
        .name("rt-uapi".into())
        .spawn(move || {
            let server = Server {
                listener,
                commands: tx,
                doorbell,
                stop,
                wake,
                own_uid,
            };
            server.run();
        })?;
    Ok((Commands { rx }, handle))
}

struct Server {
    listener: UapiListener,
    commands: Sender<Command>,
    doorbell: Arc<Doorbell>,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    own_uid: u32,
}

/// Waits until `fd` is readable (or writable), `other` (if any) is
/// readable, or `until` passes. True if `fd` is ready.
fn wait_for(fd: i32, events: i16, other: Option<i32>, until: Option<Instant>) -> bool {
    let mut fds = [
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
        libc::pollfd {
            fd: other.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = until.map_or(-1, |t| {
        let left = t.saturating_duration_since(Instant::now());
        i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
    });
    let n = if other.is_some() { 2 } else { 1 };
    // SAFETY: fds is a valid array of `n` pollfd for the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
    rc > 0 && fds[0].revents != 0
}

impl Server {
    fn run(self) {
        let lfd = self.listener.listener().as_raw_fd();
        while !self.stop.load(Ordering::Acquire) {
            wait_for(lfd, libc::POLLIN, Some(self.wake.raw()), None);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            self.wake.drain();
            // One client at a time, each bounded by its deadlines.
            while let Ok((stream, _)) = self.listener.listener().accept() {
                self.serve(stream);
                if self.stop.load(Ordering::Acquire) {
                    break;
                }
            }
        }
    }

    /// Answers one client's requests until it closes, errs, stalls past a
    /// deadline, or asks the daemon to stop.
    fn serve(&self, mut stream: UnixStream) {
        match socket::peer_of(&stream) {
            Ok(peer) if socket::allowed(peer, self.own_uid) => {}
            Ok(peer) => {
                tracing::warn!(
                    uid = peer.uid,
                    pid = peer.pid,
                    "configuration socket: refused a client that is neither root nor the daemon's user"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "configuration socket: cannot identify a client");
                return;
            }
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
        let mut buf = Zeroizing::new([0u8; 4096]);
        let mut deadline = Instant::now() + CLIENT_DEADLINE;
        loop {
            while let Some(next) = framer.next_request() {
                let answer = match next {
                    Ok(request) => match self.ask(request) {
                        Some((answer, down)) => {
                            let _ = write_all(&mut stream, &answer);
                            if down {
                                return;
                            }
                            deadline = Instant::now() + CLIENT_DEADLINE;
                            continue;
                        }
                        // The control thread is gone: the daemon stops.
                        None => return,
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "configuration socket: refused a request");
                        let mut out = Vec::new();
                        protocol::write_errno(Err(e.errno), &mut out);
                        if e.closes_connection() {
                            let _ = write_all(&mut stream, &out);
                            return;
                        }
                        Zeroizing::new(out)
                    }
                };
                if write_all(&mut stream, &answer).is_err() {
                    return;
                }
            }
            if framer.is_closed()
                || !wait_for(stream.as_raw_fd(), libc::POLLIN, None, Some(deadline))
            {
                // Closed after a protocol error, or stalled past the deadline.
                return;
            }
            match stream.read(&mut buf[..]) {
                Ok(0) => {
                    framer.end_of_input();
                    if framer.next_request().is_none() {
                        return;
                    }
                }
                Ok(n) => framer.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Hands `request` to the control thread and returns the bytes of its
    /// answer, and whether the daemon stops; `None` if the control thread
    /// is gone.
    fn ask(&self, request: Request) -> Option<(Zeroizing<Vec<u8>>, bool)> {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let cmd = Command {
            request,
            reply: reply_tx,
        };
        self.commands.send_timeout(cmd, ANSWER_DEADLINE).ok()?;
        self.doorbell.ring();
        let reply = reply_rx.recv_timeout(ANSWER_DEADLINE).ok()?;
        let mut out = Zeroizing::new(Vec::new());
        let down = match reply {
            Reply::Get(Ok(dump)) => {
                protocol::write_get(&dump, &mut out);
                false
            }
            // wg reads a get's errno without a sign: any failure is EPROTO
            // to it, whatever the number; the number is still the truth.
            Reply::Get(Err(e)) | Reply::Show(Err(e)) => {
                protocol::write_errno(Err(e), &mut out);
                false
            }
            Reply::Set(r) | Reply::Reload(r) => {
                protocol::write_errno(r, &mut out);
                false
            }
            Reply::Show(Ok(json)) => {
                protocol::write_show(&json, &mut out);
                false
            }
            Reply::Down => {
                protocol::write_errno(Ok(()), &mut out);
                true
            }
        };
        Some((out, down))
    }
}

/// Writes all of `bytes` to a non-blocking stream within
/// [`CLIENT_DEADLINE`]: a client that does not read is dropped.
fn write_all(stream: &mut UnixStream, bytes: &[u8]) -> io::Result<()> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let mut at = 0;
    while at < bytes.len() {
        match stream.write(&bytes[at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_for(stream.as_raw_fd(), libc::POLLOUT, None, Some(deadline)) {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
