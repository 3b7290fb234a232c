//! The tunnel's UDP sockets as the control thread manages them: their
//! port and firewall mark, a second descriptor of every worker's sockets
//! (to set options on them, and for the control thread's own sends), the
//! flow sockets (their mark; their ports are their own and never move),
//! and each worker's mailbox for new ones.
//!
//! A change is all or nothing: a new port is bound (the whole `SO_REUSEPORT`
//! group, with the mark) before any worker hears of it, so a port in use
//! leaves everything as it was; a new mark alone is set on every socket.
//! The same values again change nothing: `wg setconf` and `wg syncconf`
//! send the port and the mark every time.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::handoff::EventFd;
use crate::udp::{self, FlowSockets, SocketOptions, UdpError, WorkerSockets};

/// Why a change of port or mark was refused (nothing changed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnderlayError {
    /// The new port could not be bound.
    #[error("moving to port {port}: {source}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// Why.
        #[source]
        source: UdpError,
    },
    /// The kernel refused the mark.
    #[error("setting fwmark {mark}: {source} (SO_MARK needs CAP_NET_ADMIN)")]
    Mark {
        /// The mark asked for.
        mark: u32,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A descriptor could not be duplicated.
    #[error("duplicating a socket: {0}")]
    Dup(#[source] std::io::Error),
}

impl UnderlayError {
    /// Whether the port is taken (EADDRINUSE), as the UAPI reports it.
    pub fn port_in_use(&self) -> bool {
        matches!(
            self,
            UnderlayError::Bind {
                source: UdpError::Bind { source, .. },
                ..
            } if source.raw_os_error() == Some(libc::EADDRINUSE)
        )
    }
}

/// One worker's mailbox: where its new sockets go, and its wake-up.
#[derive(Debug)]
pub struct Mailbox {
    /// New sockets.
    pub sockets: Sender<WorkerSockets>,
    /// Rung after each.
    pub wake: Arc<EventFd>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Underlay {
    port: u16,
    fwmark: u32,
    gro: bool,
    /// Each socket's receive and send buffer (`SocketBuffer`).
    buffer: usize,
    /// Whether the group steers by receiving CPU (`--cpu-steering`), so a
    /// new group must too.
    cpu_steered: bool,
    /// Second descriptors of each worker's sockets, in worker order.
    sockets: Vec<WorkerSockets>,
    /// The flow sockets, in a mode that spreads flows over source ports.
    flows: Option<Arc<FlowSockets>>,
    mailboxes: Vec<Mailbox>,
}

impl Underlay {
    /// The sockets the workers were started with (second descriptors), on
    /// `port` with `fwmark`, `gro` and `buffer` as they were opened with,
    /// the flow sockets if any, and their mailboxes.
    pub fn new(
        port: u16,
        fwmark: u32,
        gro: bool,
        buffer: usize,
        sockets: Vec<WorkerSockets>,
        flows: Option<Arc<FlowSockets>>,
        mailboxes: Vec<Mailbox>,
    ) -> Underlay {
        Underlay {
            port,
            fwmark,
            gro,
            buffer,
            cpu_steered: false,
            sockets,
            flows,
            mailboxes,
        }
    }

    /// Sets `mark` on the flow sockets; on failure puts the old one back.
    fn mark_flows(&self, mark: u32) -> Result<(), UnderlayError> {
        let Some(f) = &self.flows else { return Ok(()) };
        f.set_mark(mark).map_err(|source| {
            let _ = f.set_mark(self.fwmark);
            UnderlayError::Mark { mark, source }
        })
    }

    /// The listen port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The firewall mark (0: none).
    pub fn fwmark(&self) -> u32 {
        self.fwmark
    }

    /// Makes a group opened by a listen-port move steer by receiving CPU,
    /// as the daemon made the first one.
    pub fn steer_by_cpu(mut self, on: bool) -> Underlay {
        self.cpu_steered = on;
        self
    }

    /// Worker 0's sockets (second descriptors), for the control thread's
    /// own sends.
    pub fn first(&self) -> Option<&WorkerSockets> {
        self.sockets.first()
    }

    /// Moves to `port` (`Some(0)`: any port, which the current one is, so
    /// nothing moves) and/or sets `fwmark`. Returns whether the sockets
    /// changed (the caller then takes new descriptors for its own sends
    /// from [`first`](Self::first)). Refused, nothing changed.
    pub fn change(
        &mut self,
        port: Option<u16>,
        fwmark: Option<u32>,
    ) -> Result<bool, UnderlayError> {
        let mark = fwmark.unwrap_or(self.fwmark);
        let new_port = port.filter(|&p| p != 0 && p != self.port);
        if let Some(p) = new_port {
            // The flow sockets stay where they are (their ports are not
            // the listen port); only a new mark reaches them.
            if mark != self.fwmark {
                self.mark_flows(mark)?;
            }
            let (fresh, bound) = udp::open_worker_sockets(
                self.sockets.len(),
                SocketOptions {
                    port: p,
                    gro: self.gro,
                    fwmark: mark,
                    buffer: self.buffer,
                },
            )
            .map_err(|source| {
                if let Some(f) = &self.flows {
                    let _ = f.set_mark(self.fwmark);
                }
                UnderlayError::Bind { port: p, source }
            })?;
            if self.cpu_steered
                && let Some(s) = fresh.first()
            {
                let v4 = crate::steering::attach_reuseport(&s.v4);
                let v6 =
                    s.v6.as_ref()
                        .map_or(Ok(()), crate::steering::attach_reuseport);
                if let Err(e) = v4.and(v6) {
                    tracing::warn!(error = %e, port = p, "CPU steering refused on the new port; steering by source port");
                }
            }
            let mut kept = Vec::with_capacity(fresh.len());
            for s in &fresh {
                kept.push(s.try_clone().map_err(UnderlayError::Dup)?);
            }
            for (mailbox, s) in self.mailboxes.iter().zip(fresh) {
                // A worker that has stopped has no use for them.
                if mailbox.sockets.send(s).is_ok() {
                    mailbox.wake.notify();
                }
            }
            self.sockets = kept;
            self.port = bound;
            self.fwmark = mark;
            return Ok(true);
        }
        if mark != self.fwmark {
            self.mark_flows(mark)?;
            for (i, s) in self.sockets.iter().enumerate() {
                if let Err(source) = s.set_mark(mark) {
                    // Put back the ones already changed.
                    for s in &self.sockets[..i] {
                        let _ = s.set_mark(self.fwmark);
                    }
                    if let Some(f) = &self.flows {
                        let _ = f.set_mark(self.fwmark);
                    }
                    return Err(UnderlayError::Mark { mark, source });
                }
            }
            self.fwmark = mark;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn underlay(workers: usize) -> (Underlay, Vec<crossbeam_channel::Receiver<WorkerSockets>>) {
        underlay_with(workers, None)
    }

    fn underlay_with(
        workers: usize,
        flows: Option<Arc<FlowSockets>>,
    ) -> (Underlay, Vec<crossbeam_channel::Receiver<WorkerSockets>>) {
        let (socks, port) = udp::open_worker_sockets(
            workers,
            SocketOptions {
                port: 0,
                gro: false,
                fwmark: 0,
                buffer: 1 << 20,
            },
        )
        .unwrap();
        let mut rxs = Vec::new();
        let mut boxes = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            rxs.push(rx);
            boxes.push(Mailbox {
                sockets: tx,
                wake: Arc::new(EventFd::new().unwrap()),
            });
        }
        (
            Underlay::new(port, 0, false, 1 << 20, socks, flows, boxes),
            rxs,
        )
    }

    #[test]
    fn the_same_port_again_or_any_port_moves_nothing() {
        let (mut u, rxs) = underlay(2);
        let port = u.port();
        assert!(!u.change(Some(port), None).unwrap());
        assert!(!u.change(Some(0), None).unwrap(), "0 is any port: this one");
        assert!(rxs.iter().all(|r| r.is_empty()));
        assert_eq!(u.port(), port);
    }

    #[test]
    fn a_new_port_reaches_every_worker_and_a_taken_one_changes_nothing() {
        let (mut u, rxs) = underlay(2);
        let old = u.port();
        // A port held by a socket outside the group is refused.
        let taken = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let busy = taken.local_addr().unwrap().port();
        let e = u.change(Some(busy), None).unwrap_err();
        assert!(e.port_in_use(), "{e}");
        assert_eq!(u.port(), old);
        assert!(rxs.iter().all(|r| r.is_empty()), "nothing sent on failure");
        // A free one is bound by all and sent to each worker.
        drop(taken);
        assert!(u.change(Some(busy), None).unwrap());
        assert_eq!(u.port(), busy);
        assert!(rxs.iter().all(|r| r.len() == 1));
    }

    #[test]
    fn the_flow_sockets_keep_their_ports_when_the_listen_port_moves() {
        let flows = Arc::new(udp::open_flow_sockets(2, 0, 1 << 20).unwrap());
        let before = flows.ports().unwrap();
        let (mut u, rxs) = underlay_with(2, Some(flows.clone()));
        let free = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let p = free.local_addr().unwrap().port();
        drop(free);
        assert!(u.change(Some(p), None).unwrap());
        assert!(rxs.iter().all(|r| r.len() == 1));
        assert_eq!(flows.ports().unwrap(), before);
        assert!(!before.0.contains(&p));
    }
}
