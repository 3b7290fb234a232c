//! The control thread: handshakes, timers, the control socket and signals,
//! off the data path. It sleeps in `poll` until a worker hands it
//! something, a client connects, a signal arrives or the protocol's next
//! deadline passes; an idle tunnel costs it nothing.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_utils::CachePadded;
use tunnel_proto::{DropReason, Path};

use crate::counters::{ControlCounters, Counter, WorkerCounters};
use crate::handoff::{CHANNEL_CAPACITY, ControlInbox, EventFd};
use crate::load::HandshakeLoad;
use crate::status::{InterfaceStatus, PeerStatus};
use crate::uapi::protocol::{DeviceDump, Errno, Request, SetRequest};
use crate::uapi::server::{Commands, Reply};
use crate::underlay::{Underlay, UnderlayError};
use crate::worker::op::Family;
use crate::worker::transmit::{SendMsg, Transmit, Via};

/// Sends control-plane datagrams (handshakes, cookie replies, keepalives,
/// staged packets) with a plain `sendmsg` on a worker's socket: a
/// single-issuer ring accepts submissions only from its own thread, and
/// these are few.
#[derive(Debug)]
pub struct Outbox {
    v4: OwnedFd,
    v6: Option<OwnedFd>,
    /// Datagrams sent.
    pub sent: Counter,
    /// Sends the kernel refused.
    pub errors: Counter,
}

impl Outbox {
    /// An outbox over duplicates of one worker's sockets.
    pub fn new(v4: OwnedFd, v6: Option<OwnedFd>) -> Outbox {
        Outbox {
            v4,
            v6,
            sent: Counter::default(),
            errors: Counter::default(),
        }
    }

    /// Sends `bytes` as one datagram to `path.remote`, from `path.local`
    /// when given (and of the same family).
    pub fn send(&self, path: Path, bytes: &[u8]) {
        let t = Transmit {
            dst: path.remote,
            src: path.local,
            segment: None,
            // Handshakes and keepalives leave from the listen port.
            via: Via::Listen,
            peer: (),
        };
        let fd = match (t.family(), &self.v6) {
            (Family::V4, _) => self.v4.as_raw_fd(),
            (Family::V6, Some(v6)) => v6.as_raw_fd(),
            (Family::V6, None) => {
                self.errors.inc();
                return;
            }
        };
        let mut msg = SendMsg::<1>::default();
        let hdr = msg.fill(&t, [(bytes.as_ptr(), bytes.len())]);
        // SAFETY: every pointer in the header refers to `msg` or `bytes`,
        // which outlive the call.
        let rc = unsafe { libc::sendmsg(fd, hdr, libc::MSG_DONTWAIT) };
        if rc < 0 {
            self.errors.inc();
            tracing::debug!(dst = %t.dst, error = %io::Error::last_os_error(), "control send failed");
        } else {
            self.sent.inc();
        }
    }
}

/// What a tunnel mode does on the control thread: handshakes, staged
/// packets, session events and timers (WireGuard), and what `ringtun show`
/// reports about its peers.
pub trait ModeControl: Send {
    /// What workers report about a peer.
    type Event: Send;
    /// How workers name a peer when they stage a packet for it.
    type Peer: Send;

    /// A handshake-class message that came `from`. `under_load` is set
    /// when handshakes are queueing up.
    fn on_handshake(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: Path,
        msg: &[u8],
        under_load: bool,
        out: &Outbox,
    );
    /// An outbound packet for `peer`, which has no usable session.
    fn on_stage(
        &mut self,
        now: Instant,
        wall: SystemTime,
        peer: Self::Peer,
        packet: &[u8],
        out: &Outbox,
    );
    /// Something a worker learned.
    fn on_event(&mut self, now: Instant, wall: SystemTime, event: Self::Event, out: &Outbox);
    /// Timers: called when `next_timeout` has passed (and at other times).
    fn on_timeout(&mut self, now: Instant, wall: SystemTime, out: &Outbox);
    /// The next deadline, if any.
    fn next_timeout(&self) -> Option<Instant>;
    /// The interface's public key, if it has one (WireGuard).
    fn public_key(&self) -> Option<String>;
    /// Peers for `ringtun show`, with their traffic.
    fn peers(&self) -> Vec<PeerStatus>;
    /// Drops the control thread counted itself, by reason.
    fn drops(&self) -> [u64; DropReason::COUNT];
    /// Counters of handshake outcomes, for `ringtun show`.
    fn control_counters(&self) -> Vec<(String, u64)>;
    /// The counters a metrics scrape reads from another thread.
    fn shared_counters(&self) -> Arc<ControlCounters>;
    /// The configuration as the UAPI's `get` reports it (the caller fills
    /// in the port and mark); `Err` for a mode that has none.
    fn dump(&self) -> Result<DeviceDump, Errno>;
    /// Whether `set` can be applied whole: nothing changes here, and
    /// after `Ok` [`apply`](Self::apply) cannot fail.
    fn validate(&self, set: &SetRequest) -> Result<(), Errno>;
    /// Applies a validated `set` (its peers and keys; the caller did the
    /// port and mark), keeping every session the change does not touch.
    fn apply(&mut self, set: SetRequest, now: Instant, wall: SystemTime, out: &Outbox);
    /// What reading the configuration file again asks for: the `set` that
    /// makes the running configuration the file's (as `wg syncconf`), and
    /// ringtun's own per-peer settings beside it; `Err` for a mode whose
    /// peers cannot change while it runs.
    fn reload_plan(&self, config: &crate::config::Config) -> Result<ReloadPlan, String>;
    /// Applies ringtun's own per-peer settings of a reload, after its `set`.
    fn apply_extras(&mut self, plan: &ReloadPlan);
    /// The listen port moved: peers that learn it only from handshakes
    /// must hear of it.
    fn listen_port_moved(&mut self) {}
}

/// What a reload changes: the UAPI `set` it amounts to, plus what the
/// UAPI has no key for (`PinEndpoint`, `SpreadFlows`), and the prefixes
/// routes follow.
#[derive(Debug)]
pub struct ReloadPlan {
    /// The change, as `wg syncconf` would send it.
    pub set: SetRequest,
    /// ringtun's own settings per peer.
    pub extras: Vec<(tunnel_proto::PublicKey, PeerExtras)>,
    /// Every AllowedIPs prefix of the file (the routes follow them).
    pub prefixes: Vec<(std::net::IpAddr, u8)>,
}

/// A peer's settings that only ringtun's file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerExtras {
    /// `PinEndpoint`.
    pub pin_endpoint: bool,
    /// `SpreadFlows`.
    pub spread_flows: bool,
}

/// Where a reload reads from, and the routes it keeps in step.
#[derive(Debug)]
pub struct ReloadSource {
    /// The file `ringtun up` was given.
    pub file: std::path::PathBuf,
    /// The interface's name (which a reload cannot change).
    pub name: String,
    /// The routes added for AllowedIPs.
    pub routes: crate::routes::Routes,
}

/// What the control thread needs.
pub struct ControlSetup<C: ModeControl> {
    /// The mode's control side.
    pub mode: C,
    /// Messages and events from workers, and their doorbell.
    pub inbox: ControlInbox<C::Event, C::Peer>,
    /// Parsed requests from the configuration socket's thread (which rings
    /// the doorbell after each).
    pub commands: Commands,
    /// The tunnel's sockets: port, mark, each worker's.
    pub underlay: Underlay,
    /// Read end of the signal pipe (SIGINT, SIGTERM).
    pub signals: UnixStream,
    /// Read end of the reload pipe (SIGHUP).
    pub hangups: UnixStream,
    /// The file to read again on a reload (`None`: started bare).
    pub reload: Option<ReloadSource>,
    /// The daemon-wide stop flag.
    pub stop: Arc<AtomicBool>,
    /// Each worker's wake-up.
    pub worker_wakes: Vec<Arc<EventFd>>,
    /// Each worker's counters.
    pub counters: Vec<Arc<CachePadded<WorkerCounters>>>,
    /// The fixed part of the status.
    pub status: InterfaceStatus,
    /// Sends for the control plane.
    pub outbox: Outbox,
    /// Whether handshakes are answered with cookies.
    pub load: HandshakeLoad,
}

/// Why the control loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT or SIGTERM.
    Signal,
    /// `ringtun down`.
    Down,
    /// A worker died.
    WorkerExited,
}

fn poll_fds(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = timeout
        .map(|d| i32::try_from(d.as_millis().max(1)).unwrap_or(i32::MAX))
        .unwrap_or(-1);
    // SAFETY: fds is a valid slice of pollfd for the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINTR) {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(rc as usize)
}

impl<C: ModeControl> ControlSetup<C> {
    /// Runs until a signal, `ringtun down`, or `workers_alive` turns false.
    pub fn run(mut self, workers_alive: &dyn Fn() -> bool) -> StopCause {
        let cause = loop {
            let now = Instant::now();
            // Re-check workers at least every second while traffic flows is
            // not needed: a dying worker sets `stop` and wakes us.
            let timeout = self
                .mode
                .next_timeout()
                .map(|t| t.saturating_duration_since(now));
            let mut fds = [
                libc::pollfd {
                    fd: self.inbox.doorbell.raw(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.signals.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.hangups.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if let Err(e) = poll_fds(&mut fds, timeout) {
                tracing::error!(error = %e, "control poll failed");
                std::thread::sleep(Duration::from_millis(50));
            }
            if fds[1].revents != 0 {
                break StopCause::Signal;
            }
            if fds[2].revents != 0 {
                // Several SIGHUPs before we look are one reload.
                let mut sink = [0u8; 64];
                while matches!(io::Read::read(&mut &self.hangups, &mut sink), Ok(n) if n > 0) {}
                let (now, wall) = (Instant::now(), SystemTime::now());
                match self.reload(now, wall) {
                    Ok(()) => tracing::info!("configuration read again (SIGHUP)"),
                    Err(e) => tracing::error!("reload refused, nothing changed: {e}"),
                }
            }
            let now = Instant::now();
            let wall = SystemTime::now();
            self.inbox.doorbell.answer();
            // Session events first: they keep working sessions working.
            while let Ok(ev) = self.inbox.events.try_recv() {
                self.mode.on_event(now, wall, ev, &self.outbox);
            }
            // Then the configuration socket's clients, few and cheap: an
            // operator's `show` never waits behind a turn of a flood.
            let down = self.serve_commands(now, wall);
            // At most one channel's worth of each per turn, so that a flood
            // cannot keep signals, timers and clients waiting; the rest next
            // turn. Handshakes first: a response completes the session the
            // staged packets are waiting for.
            for _ in 0..CHANNEL_CAPACITY {
                let Ok(h) = self.inbox.handshakes.try_recv() else {
                    break;
                };
                let under_load = self.load.on_handshake(now, self.inbox.handshakes.len());
                self.mode
                    .on_handshake(now, wall, h.from, h.message(), under_load, &self.outbox);
            }
            for _ in 0..CHANNEL_CAPACITY {
                let Ok(s) = self.inbox.staged.try_recv() else {
                    break;
                };
                self.mode
                    .on_stage(now, wall, s.peer, &s.packet, &self.outbox);
            }
            if !self.inbox.handshakes.is_empty() || !self.inbox.staged.is_empty() {
                self.inbox.doorbell.ring();
            }
            if self.mode.next_timeout().is_some_and(|t| t <= now) {
                self.mode.on_timeout(now, wall, &self.outbox);
            }
            // For metrics, read on another thread: a copy of 13 numbers a turn.
            self.mode.shared_counters().mirror_drops(&self.mode.drops());
            if down {
                break StopCause::Down;
            }
            if self.stop.load(Ordering::Acquire) || !workers_alive() {
                break StopCause::WorkerExited;
            }
            // Under load, at most one turn a millisecond: a flood then costs
            // a wake-up per millisecond, not one per datagram (its messages
            // wait in the bounded channel meanwhile).
            if self.load.is_loaded(Instant::now()) {
                std::thread::sleep(crate::load::LOADED_TURN);
            }
        };
        self.stop.store(true, Ordering::Release);
        for w in &self.worker_wakes {
            w.notify();
        }
        cause
    }

    /// Answers every request the configuration socket's thread parsed;
    /// true if one asked the daemon to stop.
    fn serve_commands(&mut self, now: Instant, wall: SystemTime) -> bool {
        while let Ok(cmd) = self.commands.rx.try_recv() {
            let (reply, down) = match cmd.request {
                Request::Get => (Reply::Get(self.dump()), false),
                Request::Set(set) => (Reply::Set(self.apply_set(set, now, wall)), false),
                Request::Show => (
                    Reply::Show(serde_json::to_string(&self.status()).map_err(|_| Errno::Unknown)),
                    false,
                ),
                Request::Down => (Reply::Down, true),
                Request::Reload => (
                    Reply::Reload(self.reload(now, wall).map_err(|e| {
                        tracing::error!("reload refused, nothing changed: {e}");
                        Errno::Invalid
                    })),
                    false,
                ),
            };
            // The client may have gone: its answer then goes nowhere.
            let _ = cmd.reply.send(reply);
            if down {
                return true;
            }
        }
        false
    }

    /// Reads the configuration file again and applies the difference: the
    /// peers and keys as `wg syncconf` would (sessions kept where the keys
    /// did not change), the port and mark, `PinEndpoint` and `SpreadFlows`, and the routes
    /// for AllowedIPs. A file that does not parse changes nothing.
    /// The service manager hears of it (`RELOADING=1`, then `READY=1` with
    /// the outcome), so `systemctl reload` waits for it.
    pub fn reload(&mut self, now: Instant, wall: SystemTime) -> Result<(), String> {
        crate::notify::reloading();
        let r = self.reload_file(now, wall);
        crate::notify::reloaded(match &r {
            Ok(()) => "configuration read again",
            Err(_) => "reload refused, nothing changed (see the log)",
        });
        r
    }

    fn reload_file(&mut self, now: Instant, wall: SystemTime) -> Result<(), String> {
        let src = self
            .reload
            .as_ref()
            .ok_or("this interface was started bare: there is no file to read again")?;
        let (config, warnings) = crate::config::Config::from_file_named(&src.file, &src.name)
            .map_err(|e| e.to_string())?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let plan = self.mode.reload_plan(&config)?;
        let set = plan.set.clone();
        self.apply_set(set, now, wall)
            .map_err(|e| format!("the file's settings were refused ({e}); see the log above"))?;
        self.mode.apply_extras(&plan);
        if let Some(src) = self.reload.as_mut() {
            let nl = netctl::Netlink::current().map_err(|e| format!("opening netlink: {e}"))?;
            src.routes
                .follow(&nl, &plan.prefixes)
                .map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    /// The configuration as `get` reports it.
    fn dump(&self) -> Result<DeviceDump, Errno> {
        let mut d = self.mode.dump()?;
        d.listen_port = self.underlay.port();
        d.fwmark = self.underlay.fwmark();
        Ok(d)
    }

    /// Applies a `set` whole or not at all: the mode checks its part
    /// first, then the sockets move (the step that can still fail, and
    /// leaves everything as it was when it does), then the mode applies.
    pub fn apply_set(
        &mut self,
        set: SetRequest,
        now: Instant,
        wall: SystemTime,
    ) -> Result<(), Errno> {
        self.mode.validate(&set)?;
        let moved = self
            .underlay
            .change(set.listen_port, set.fwmark)
            .map_err(|e| {
                tracing::warn!(error = %e, "configuration refused");
                match e {
                    ref e if e.port_in_use() => Errno::AddrInUse,
                    UnderlayError::Mark { .. } => Errno::Permission,
                    _ => Errno::Io,
                }
            })?;
        if moved {
            self.mode.listen_port_moved();
        }
        if moved && let Some(first) = self.underlay.first() {
            match first.try_clone() {
                Ok(s) => self.outbox = Outbox::new(s.v4, s.v6),
                Err(e) => {
                    tracing::warn!(error = %e, "the control thread keeps sending from the old port")
                }
            }
        }
        self.status.listen_port = self.underlay.port();
        self.mode.apply(set, now, wall, &self.outbox);
        Ok(())
    }

    /// The full status: fixed facts, peers, counters summed over workers.
    pub fn status(&self) -> InterfaceStatus {
        let mut st = self.status.clone();
        st.public_key = self.mode.public_key();
        st.peers = self.mode.peers();
        st.workers = self.counters.iter().map(|c| c.snapshot()).collect();
        let control_drops = self.mode.drops();
        st.drops = DropReason::ALL
            .iter()
            .map(|r| {
                let sum: u64 = self
                    .counters
                    .iter()
                    .map(|c| c.drops[r.index()].get())
                    .sum::<u64>()
                    + control_drops[r.index()];
                (r.as_str().to_string(), sum)
            })
            .collect();
        let mut control = self.mode.control_counters();
        control.push(("sent".into(), self.outbox.sent.get()));
        control.push(("send_errors".into(), self.outbox.errors.get()));
        st.control = control;
        st
    }
}
