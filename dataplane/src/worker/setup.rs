//! Starting a worker: its thread, pinned to a core; its ring, built on
//! that thread (a single-issuer ring takes submissions only from its
//! creator); its slab, registered with the ring; its device queue, sockets
//! and wake-up registered as fixed files; its provided-buffer rings.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::CachePadded;
use io_uring::{IoUring, opcode};

use super::device_read::SlotLayout;
use super::device_write::{WRITE_SLOT_LEN, WRITE_SLOTS};
use super::flow_queues::FlowQueues;
use super::ring::{Files, Io};
use super::sched::Scheduler;
use super::slots::{Home, Pool};
use super::socket_recv::{Deliveries, MAX_GRO_SEGMENTS};
use super::{
    BGID_READ, BGID_RECV, QUEUED_READ_BYTES, QUEUED_RECEIVE_BYTES, RX_BUFFER_SIZE, RX_BUFFERS,
    ReadMode, Reading, Receiving, TX_SLOTS, Worker,
};
use crate::bufring::BufRing;
use crate::cmsg::{RECV_CONTROL_LEN, RawAddr};
use crate::counters::WorkerCounters;
use crate::handoff::{ControlLink, EventFd};
use crate::mode::Mode;
use crate::offload::{CoalesceConfig, Coalescer, Framing};
use crate::slab::{Layout, Slab};
use crate::tun::{DeviceKind, Offloads};
use crate::udp::{FlowSockets, WorkerSockets};

/// Everything a worker needs, handed over by the daemon.
pub struct WorkerSetup<M: Mode> {
    /// Worker number, for logs, and its traffic lane in every peer's counters.
    pub id: usize,
    /// Core to pin to (`None`: let the scheduler place the thread).
    pub core: Option<core_affinity::CoreId>,
    /// The time slice to ask the scheduler for (`None`: the kernel's own).
    pub slice: Option<std::time::Duration>,
    /// Whether to let threads woken on its CPU run first once it has run
    /// 200 µs without sleeping ([`GiveWay`](super::time_slice::GiveWay)).
    pub give_way: bool,
    /// This worker's device queue.
    pub queue: OwnedFd,
    /// This worker's sockets.
    pub sockets: WorkerSockets,
    /// The flow sockets every worker sends from, in a mode that spreads
    /// flows over source ports.
    pub flows: Option<Arc<FlowSockets>>,
    /// Which of the flow sockets each inner flow leaves from, one table for
    /// every worker.
    pub source_ports: Arc<super::SourcePorts>,
    /// Bytes the flow queues hold each way (`QueueLimit`; `None`: the
    /// defaults).
    pub queue_limit: Option<usize>,
    /// Whether device I/O carries a virtio-net header.
    pub vnet_hdr: bool,
    /// Whether to send runs of equal datagrams with `UDP_SEGMENT`.
    pub gso: bool,
    /// TUN (IP packets) or TAP (Ethernet frames).
    pub kind: DeviceKind,
    /// Offloads the device accepted.
    pub offloads: Offloads,
    /// How to read the device queue.
    pub read_mode: ReadMode,
    /// The tunnel mode.
    pub mode: Arc<M>,
    /// This worker's counters.
    pub counters: Arc<CachePadded<WorkerCounters>>,
    /// Link to the control thread.
    pub control: ControlLink<M::Event, M::Peer>,
    /// New sockets from the control thread (a new listen port), each
    /// followed by a ring of `wake`.
    pub rebind: crossbeam_channel::Receiver<WorkerSockets>,
    /// Set to stop; then `wake` is notified.
    pub stop: Arc<AtomicBool>,
    /// Notified to make the worker look at `stop`.
    pub wake: Arc<EventFd>,
    /// Told once the worker's ring and memory are set up, or why not.
    pub started: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Starts a worker thread.
pub fn spawn<M: Mode>(
    setup: WorkerSetup<M>,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    std::thread::Builder::new()
        .name(format!("rt-worker{}", setup.id))
        .spawn(move || {
            if let Some(core) = setup.core
                && !core_affinity::set_for_current(core)
            {
                tracing::warn!(worker = setup.id, ?core, "could not pin worker to its core");
            }
            if let Some(slice) = setup.slice {
                use super::time_slice::{Granted, request};
                match request(slice) {
                    Ok(Granted::Yes) => {}
                    Ok(Granted::Ignored) => tracing::info!(
                        worker = setup.id,
                        "the kernel keeps its own time slice (a slice of one's own needs Linux 6.12)"
                    ),
                    Ok(Granted::OtherPolicy) => tracing::info!(
                        worker = setup.id,
                        "the worker runs under a real-time policy set from outside; its time slice is left as it is"
                    ),
                    Err(e) => tracing::warn!(
                        worker = setup.id,
                        error = %e,
                        "could not ask for a {} µs time slice (sched_setattr); the kernel's own applies",
                        slice.as_micros()
                    ),
                }
            }
            let id = setup.id;
            let link = setup.control.clone();
            let stop = setup.stop.clone();
            let started = setup.started.clone();
            let r = match Worker::new(setup) {
                Ok(mut w) => {
                    let _ = started.send(Ok(()));
                    w.run()
                }
                Err(e) => {
                    let why = match e.raw_os_error() {
                        Some(libc::ENOSYS) | Some(libc::EPERM) => format!(
                            "{e}: io_uring is unavailable (kernel too old, or disabled by the sysctl kernel.io_uring_disabled)"
                        ),
                        Some(libc::ENOMEM) => format!(
                            "{e}: not enough locked memory for the ring's buffers (raise RLIMIT_MEMLOCK or run as root)"
                        ),
                        _ => e.to_string(),
                    };
                    let _ = started.send(Err(why));
                    Err(e)
                }
            };
            if let Err(e) = &r {
                tracing::error!(worker = id, error = %e, "worker stopped");
            }
            // Whatever the reason, the daemon stops with it: set the flag
            // before waking the control thread, which may look before this
            // thread has finished returning.
            stop.store(true, Ordering::Release);
            link.notify();
            r
        })
}

/// The worker's slab: transmit slots, receive buffers, write slots.
fn slab_layout(layout: &SlotLayout, vnet_hdr: bool) -> (Layout, [crate::slab::Region; 3]) {
    let mut mem = Layout::default();
    let tx = mem.region(layout.slot_len(), TX_SLOTS);
    let rx = mem.region(RX_BUFFER_SIZE, usize::from(RX_BUFFERS));
    let wr = mem.region(WRITE_SLOT_LEN, if vnet_hdr { WRITE_SLOTS } else { 0 });
    (mem, [tx, rx, wr])
}

/// Bytes of memory one worker pins for its ring, which the kernel counts
/// against `RLIMIT_MEMLOCK` unless the process has `CAP_IPC_LOCK`: the
/// slab registered as a fixed buffer (in whole pages) and a page for each
/// provided-buffer ring.
pub fn locked_bytes_per_worker(vnet_hdr: bool, kind: DeviceKind) -> u64 {
    let framing = match kind {
        DeviceKind::Tun => Framing::Ip,
        DeviceKind::Tap => Framing::Ethernet,
    };
    let (mem, _) = slab_layout(&SlotLayout::new(vnet_hdr, framing), vnet_hdr);
    let page = 4096;
    (mem.total().div_ceil(page) * page + 2 * page) as u64
}

/// ENOMEM from registering `bytes` of buffers: the kernel charges them to
/// the user's locked memory, which the start-up check could not see all
/// of (other processes of the same user, other ringtun instances among
/// them, count against the one `RLIMIT_MEMLOCK`).
fn locked_memory_refused(e: io::Error, bytes: usize) -> io::Error {
    if e.raw_os_error() != Some(libc::ENOMEM) {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!(
            "registering {} KiB of packet memory with io_uring failed ({e}): the kernel \
             counts it against RLIMIT_MEMLOCK for all of this user's processes together, \
             other ringtun instances included; raise the limit (`LimitMEMLOCK=infinity` \
             in a systemd unit, `ulimit -l`), give the process CAP_IPC_LOCK, or run fewer \
             workers (`Workers =`)",
            bytes.div_ceil(1024)
        ),
    )
}

impl<M: Mode> Worker<M> {
    fn new(s: WorkerSetup<M>) -> io::Result<Worker<M>> {
        // The ring is built here, on the worker's own thread: a
        // single-issuer ring accepts submissions only from its creator.
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(8192)
            .setup_submit_all()
            .build(512)?;

        let framing = match s.kind {
            DeviceKind::Tun => Framing::Ip,
            DeviceKind::Tap => Framing::Ethernet,
        };
        let layout = SlotLayout::new(s.vnet_hdr, framing);
        let (mem, [tx_region, rx_region, wr_region]) = slab_layout(&layout, s.vnet_hdr);
        let slab = Slab::new(mem.total())?;
        // SAFETY: the slab outlives the registration (field order of Io).
        unsafe { ring.submitter().register_buffers(&[slab.iovec()]) }
            .map_err(|e| locked_memory_refused(e, mem.total()))?;

        let has_v6 = s.sockets.v6.is_some();
        let v6_raw = s.sockets.v6.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let wake_dup = dup(s.wake.raw())?;
        // The flow sockets after the others, IPv4's then IPv6's (-1, an
        // empty slot, where IPv6 has none): the ring takes its own
        // reference to each, as to the listen sockets.
        let flow_count = s.flows.as_ref().map_or(0, |f| f.v4.len());
        let flow_v6 = s.flows.as_ref().is_some_and(|f| f.v6.len() == flow_count);
        let mut files = vec![
            s.queue.as_raw_fd(),
            s.sockets.v4.as_raw_fd(),
            v6_raw,
            wake_dup.as_raw_fd(),
        ];
        debug_assert_eq!(files.len(), super::ring::FD_FLOWS as usize);
        if let Some(f) = &s.flows {
            files.extend(f.v4.iter().map(|fd| fd.as_raw_fd()));
            files.extend((0..flow_count).map(|k| match f.v6.get(k) {
                Some(fd) if flow_v6 => fd.as_raw_fd(),
                _ => -1,
            }));
        }
        ring.submitter().register_files(&files)?;

        // Multishot reads need kernel 6.7; older kernels get fixed reads.
        let mut probe = io_uring::Probe::new();
        let multishot_ok = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::ReadMulti::CODE);
        let read_mode = match s.read_mode {
            ReadMode::Multishot if !multishot_ok => {
                if s.id == 0 {
                    tracing::warn!(
                        "this kernel has no multishot reads (IORING_OP_READ_MULTISHOT, Linux 6.7); using fixed reads"
                    );
                }
                ReadMode::Fixed
            }
            m => m,
        };
        let read_ring = match read_mode {
            ReadMode::Fixed => None,
            ReadMode::Multishot => {
                let r = BufRing::new(TX_SLOTS as u16, BGID_READ)?;
                r.register(&ring.submitter())?;
                Some(r)
            }
        };
        let recv_ring = BufRing::new(RX_BUFFERS, BGID_RECV)?;
        recv_ring.register(&ring.submitter())?;

        // SAFETY: msghdr is plain old data; zero is valid.
        let mut msgs: Box<[libc::msghdr; 2]> = Box::new(unsafe { std::mem::zeroed() });
        for m in msgs.iter_mut() {
            m.msg_namelen = std::mem::size_of::<RawAddr>() as libc::socklen_t;
            m.msg_controllen = RECV_CONTROL_LEN;
        }
        let coalescer = (s.vnet_hdr && s.offloads.tso()).then(|| {
            Coalescer::new(CoalesceConfig {
                framing,
                tcp: true,
                udp: s.offloads.uso(),
                verify_checksums: !M::AUTHENTICATED,
            })
        });
        let fds = vec![s.queue, wake_dup];
        let tx_home = match read_mode {
            ReadMode::Fixed => Home::FreeList,
            ReadMode::Multishot => Home::Kernel,
        };
        let mut w = Worker {
            io: Io::new(
                ring,
                slab,
                [tx_region, rx_region, wr_region],
                Pool::new(TX_SLOTS, tx_home),
                Files {
                    has_v6,
                    flow_count,
                    flow_v6,
                },
                s.counters,
                s.id,
            ),
            recv_ring,
            read_ring,
            layout,
            sched: Scheduler::new(s.gso, s.id),
            give_way: super::time_slice::GiveWay::new(
                s.give_way.then_some(super::time_slice::GIVE_WAY_AFTER),
                std::time::Instant::now(),
            ),
            read_queues: FlowQueues::new(TX_SLOTS, s.queue_limit.unwrap_or(QUEUED_READ_BYTES)),
            recv_queues: FlowQueues::new(
                usize::from(RX_BUFFERS),
                s.queue_limit.unwrap_or(QUEUED_RECEIVE_BYTES),
            ),
            coalescer,
            source_ports: s.source_ports,
            deliveries: Deliveries::default(),
            planned: Vec::with_capacity(MAX_GRO_SEGMENTS),
            reading: Reading {
                mode: read_mode,
                armed: false,
                errors: 0,
            },
            receiving: Receiving {
                msgs,
                armed: [false; 2],
                rxq_seen: [0; 2],
            },
            mode: s.mode,
            control: s.control,
            stop: s.stop,
            _wake: s.wake,
            wake_buf: Box::new(0),
            id: s.id,
            sockets: s.sockets,
            rebind: s.rebind,
            _fds: fds,
        };
        w.give_back();
        Ok(w)
    }
}

fn dup(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd; the result is checked.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
}
