//! `ringtun up FILE` and `ringtun IFACE`: read the configuration (or start
//! bare and wait for one over the configuration socket, as `wireguard-go
//! IFACE` does), make the device, the sockets and the configuration
//! socket, start one worker per core, the configuration socket's thread and
//! the control thread, and tear everything down on SIGINT, SIGTERM,
//! `ringtun down` or the device's removal.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{self, Config, InterfaceAddr, ModeConfig, Table, Workers};
use crate::control::{ControlSetup, ModeControl, Outbox, ReloadSource, StopCause};
use crate::counters::WorkerCounters;
use crate::handoff::{ControlLink, EventFd};
use crate::metrics::{self, MetricsServer, PeerSource, Sources, TunnelCollector};
use crate::mode::Mode;
use crate::offload::ETHERNET_HEADER_LEN;
use crate::routes::Routes;
use crate::status::InterfaceStatus;
use crate::tun::{Device, DeviceKind, Offloads};
use crate::uapi::socket::{Kind, UapiListener};
use crate::udp::{self, SocketOptions};
use crate::underlay::{Mailbox, Underlay};
use crate::vxlan_mode::{VxlanControl, VxlanMode};
use crate::wg_control::WgControl;
use crate::wg_mode::WgMode;
use crate::worker::{self, WorkerSetup};

/// Options of `ringtun up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The configuration file.
    pub config: PathBuf,
    /// Interface name instead of the file's stem.
    pub name: Option<String>,
    /// Worker count instead of the file's `Workers`.
    pub workers: Option<usize>,
    /// Turn offloads off whatever the file says.
    pub no_offload: bool,
    /// How workers read the device.
    pub read_mode: worker::ReadMode,
    /// Pin each worker to its own core.
    pub pin: bool,
    /// Steer each packet to the worker on the CPU it appeared on.
    pub cpu_steering: bool,
    /// The time slice each worker asks for (`None`: the kernel's own).
    pub worker_slice: Option<Duration>,
    /// Whether a worker that has run 200 µs without sleeping lets threads
    /// woken on its CPU run first.
    pub worker_yield: bool,
    /// Where the configuration socket goes instead of `/var/run`
    /// (`RINGTUN_UAPI_DIR`).
    pub uapi_dir: Option<PathBuf>,
    /// Where to serve `/metrics`, instead of the file's `MetricsListen`.
    pub metrics_listen: Option<SocketAddr>,
}

/// Options of `ringtun IFACE`: an interface with no configuration yet.
#[derive(Clone, Debug)]
pub struct BareOptions {
    /// The interface name.
    pub name: String,
    /// Worker count (default: one per CPU).
    pub workers: Option<usize>,
    /// Turn offloads off.
    pub no_offload: bool,
    /// Where the configuration socket goes instead of `/var/run`.
    pub uapi_dir: Option<PathBuf>,
    /// Where to serve `/metrics` (`None`: not served).
    pub metrics_listen: Option<SocketAddr>,
}

/// Where `/metrics` is served, and where that was asked for (for a
/// message when the address is taken).
#[derive(Clone, Debug)]
struct MetricsTarget {
    addr: SocketAddr,
    /// `rt0.conf:5: MetricsListen` or `--metrics-listen`.
    origin: String,
}

/// Offloads asked of the device when `Offload = on`.
pub const WANTED_OFFLOADS: Offloads =
    Offloads(Offloads::CSUM | Offloads::TSO4 | Offloads::TSO6 | Offloads::USO4 | Offloads::USO6);

/// The kernel's vxlan default MTU over an IPv6 underlay (1500 - 70).
pub const VXLAN_IPV6_DEFAULT_MTU: u32 = 1430;

/// What every mode shares once the configuration is read.
struct Common {
    name: String,
    mtu: u32,
    addresses: Vec<InterfaceAddr>,
    table: Table,
    workers: usize,
    offload: bool,
    listen_port: u16,
    fwmark: u32,
    read_mode: worker::ReadMode,
    pin: bool,
    cpu_steering: bool,
    worker_slice: Option<Duration>,
    worker_yield: bool,
    uapi_dir: Option<PathBuf>,
    metrics: Option<MetricsTarget>,
    /// `SocketBuffer`.
    socket_buffer: usize,
    /// `QueueLimit` (`None`: the defaults).
    queue_limit: Option<usize>,
}

fn worker_count(cfg: Workers, over: Option<usize>) -> usize {
    if let Some(n) = over {
        return n.max(1);
    }
    match cfg {
        Workers::Count(n) => n.get(),
        Workers::Auto => core_affinity::get_core_ids()
            .map(|c| c.len())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
    }
}

/// Runs `ringtun up` in the foreground until stopped.
pub fn up(opts: &UpOptions) -> Result<()> {
    let (cfg, warnings) = match &opts.name {
        Some(n) => Config::from_file_named(&opts.config, n),
        None => Config::from_file(&opts.config),
    }
    .map_err(anyhow::Error::new)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let Config {
        name,
        interface,
        mode,
        ..
    } = cfg;
    let mut common = Common {
        name: name.as_str().to_string(),
        mtu: interface.mtu,
        addresses: interface.addresses.clone(),
        table: interface.table,
        workers: worker_count(interface.workers, opts.workers),
        offload: interface.offload && !opts.no_offload,
        fwmark: interface.fwmark,
        read_mode: opts.read_mode,
        pin: opts.pin,
        cpu_steering: opts.cpu_steering,
        worker_slice: opts.worker_slice,
        worker_yield: opts.worker_yield,
        uapi_dir: opts.uapi_dir.clone(),
        metrics: match (opts.metrics_listen, interface.metrics_listen) {
            (Some(addr), _) => Some(MetricsTarget {
                addr,
                origin: "--metrics-listen".into(),
            }),
            (None, Some(m)) => Some(MetricsTarget {
                addr: m.addr,
                origin: format!("{}:{}: MetricsListen", opts.config.display(), m.line),
            }),
            (None, None) => None,
        },
        socket_buffer: interface.socket_buffer,
        queue_limit: interface.queue_limit,
        listen_port: interface.listen_port.unwrap_or(match &mode {
            ModeConfig::Vxlan(_) => config::VXLAN_PORT,
            ModeConfig::WireGuard(_) => 0,
        }),
    };
    match mode {
        ModeConfig::Vxlan(v) => {
            let vni = tunnel_proto::vxlan::Vni::new(v.vni).context("VNI")?;
            let mut vteps = Vec::with_capacity(v.peers.len());
            let mut routes = Vec::new();
            for p in &v.peers {
                vteps.push(
                    p.endpoint
                        .resolve()
                        .with_context(|| format!("peer at line {}", p.line))?,
                );
                routes.extend(p.allowed_ips.iter().map(|a| (a.addr(), a.prefix_len())));
            }
            // VXLAN costs 50 bytes over IPv4 and 70 over IPv6: as the
            // kernel's vxlan device does, default to 1430 when any VTEP is
            // reached over IPv6, so a full frame fits a 1500-byte underlay.
            if !interface.mtu_explicit && vteps.iter().any(|a| crate::cmsg::canonical(*a).is_ipv6())
            {
                common.mtu = VXLAN_IPV6_DEFAULT_MTU;
            }
            let mode = Arc::new(VxlanMode::new(vni, vteps, common.workers));
            let control = VxlanControl::new(mode.clone());
            run(
                &common,
                DeviceKind::Tap,
                mode,
                control,
                &routes,
                v.bridge.as_ref().map(|b| b.as_str().to_string()),
                Some(opts.config.clone()),
            )
        }
        ModeConfig::WireGuard(w) => {
            let mut tcfg = w.to_tunnel_config(common.mtu)?;
            // One traffic lane per worker, and the last for the control thread.
            tcfg.traffic_lanes = common.workers + 1;
            let routes: Vec<(IpAddr, u8)> = w
                .peers
                .iter()
                .flat_map(|p| p.allowed_ips.iter().map(|a| (a.addr(), a.prefix_len())))
                .collect();
            let now = std::time::Instant::now();
            let tunnel = tunnel_proto::wg::Tunnel::new(tcfg, now, std::time::SystemTime::now())
                .map_err(anyhow::Error::new)
                .with_context(|| format!("{}: building the tunnel", opts.config.display()))?;
            let mode = Arc::new(WgMode::new(tunnel.snapshot()));
            let control = WgControl::new(tunnel, mode.clone());
            run(
                &common,
                DeviceKind::Tun,
                mode,
                control,
                &routes,
                None,
                Some(opts.config.clone()),
            )
        }
    }
}

/// Runs `ringtun IFACE` in the foreground: a WireGuard interface with no
/// key, no peers, no address and no route, configured over its socket
/// (`wg setconf`, wg-quick) while it runs.
pub fn bare(opts: &BareOptions) -> Result<()> {
    let name = crate::config::IfName::new(&opts.name)
        .map_err(|e| anyhow::anyhow!("{:?} is not an interface name: {e}", opts.name))?;
    let common = Common {
        name: name.as_str().to_string(),
        mtu: config::DEFAULT_MTU_WIREGUARD,
        addresses: Vec::new(),
        // Routes are wg-quick's business here, as with wireguard-go.
        table: Table::Off,
        workers: worker_count(Workers::Auto, opts.workers),
        offload: !opts.no_offload,
        listen_port: 0,
        fwmark: 0,
        socket_buffer: config::DEFAULT_SOCKET_BUFFER,
        queue_limit: None,
        read_mode: worker::ReadMode::default(),
        pin: false,
        cpu_steering: false,
        worker_slice: Some(worker::time_slice::DEFAULT_SLICE),
        worker_yield: true,
        uapi_dir: opts.uapi_dir.clone(),
        metrics: opts.metrics_listen.map(|addr| MetricsTarget {
            addr,
            origin: "RINGTUN_METRICS_LISTEN".into(),
        }),
    };
    let mut tcfg =
        tunnel_proto::wg::TunnelConfig::new(tunnel_proto::PrivateKey::from_bytes([0; 32]));
    tcfg.private_key = None;
    tcfg.traffic_lanes = common.workers + 1;
    // Padding stops at the MTU the device starts with (wg-quick may set
    // another, after this starts).
    tcfg.mtu = u16::try_from(common.mtu).ok();
    let tunnel = tunnel_proto::wg::Tunnel::new(
        tcfg,
        std::time::Instant::now(),
        std::time::SystemTime::now(),
    )
    .map_err(anyhow::Error::new)?;
    let mode = Arc::new(WgMode::new(tunnel.snapshot()));
    let control = WgControl::new(tunnel, mode.clone());
    run(&common, DeviceKind::Tun, mode, control, &[], None, None)
}

/// MAC (TAP), addresses, MTU, bridge and link up, through netlink.
fn configure_device(name: &str, kind: DeviceKind, c: &Common, bridge: Option<&str>) -> Result<()> {
    let nl = netctl::Netlink::current().context("opening netlink")?;
    nl.set_mtu(name, c.mtu)
        .with_context(|| format!("setting MTU {} on {name}", c.mtu))?;
    if kind == DeviceKind::Tap {
        // Before it joins a bridge, so the bridge never sees another.
        let mac = crate::tap_mac::for_device(name);
        nl.set_address(name, mac)
            .with_context(|| format!("setting address {mac} on {name}"))?;
    }
    for a in &c.addresses {
        let p = netctl::IpPrefix::new(a.addr(), a.prefix_len())?;
        nl.addr_add_with(name, p, netctl::AddrOptions { nodad: true })
            .with_context(|| format!("adding address {a} to {name}"))?;
    }
    if let Some(br) = bridge {
        nl.set_master(name, br)
            .with_context(|| format!("enslaving {name} to bridge {br}"))?;
    }
    nl.link_set_up(name)
        .with_context(|| format!("setting {name} up"))?;
    Ok(())
}

/// Attaches CPU steering to the device and the socket groups; on failure
/// (no BPF in this kernel, say) the kernel's own hashing stays, which is
/// correct, only slower to wake.
fn steer_by_cpu(device: &Device, sockets: &[udp::WorkerSockets]) -> bool {
    let attach = || -> std::io::Result<()> {
        let prog = crate::steering::load_cpu_program()?;
        if let Some(q) = device.queues.first() {
            crate::steering::attach_tun(q, &prog)?;
        }
        if let Some(s) = sockets.first() {
            crate::steering::attach_reuseport(&s.v4)?;
            if let Some(v6) = &s.v6 {
                crate::steering::attach_reuseport(v6)?;
            }
        }
        Ok(())
    };
    match attach() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "CPU steering unavailable; the kernel's flow hashing picks workers");
            false
        }
    }
}

fn run<M: Mode + PeerSource, C: ModeControl<Event = M::Event, Peer = M::Peer>>(
    c: &Common,
    kind: DeviceKind,
    mode: Arc<M>,
    mode_control: C,
    routes: &[(IpAddr, u8)],
    bridge: Option<String>,
    reload: Option<PathBuf>,
) -> Result<()> {
    // Before anything is made: a missing capability or too low a limit is
    // then one sentence, and there is nothing to undo.
    crate::privilege::check_net_admin(&c.name)?;
    crate::privilege::check_memlock(worker::locked_bytes_per_worker(c.offload, kind), c.workers)?;
    // The configuration socket first: it is the lock that keeps a second
    // instance from attaching queues to a running instance's device. Made
    // before any thread starts (its mode comes from the umask).
    let uapi_kind = match kind {
        DeviceKind::Tun => Kind::WireGuard,
        DeviceKind::Tap => Kind::Vxlan,
    };
    let listener = UapiListener::bind(uapi_kind, c.uapi_dir.as_deref(), &c.name)?;
    // Before the device: a taken address stops the start with nothing made.
    let metrics_listener = match &c.metrics {
        Some(m) => Some(metrics::bind(m.addr).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                "address in use (another exporter, or another ringtun?)".to_string()
            } else {
                e.to_string()
            };
            anyhow::anyhow!(
                "{} = {}: cannot serve /metrics there: {why}",
                m.origin,
                m.addr
            )
        })?),
        None => None,
    };

    let vnet = c.offload;
    let want = if vnet {
        WANTED_OFFLOADS
    } else {
        Offloads::NONE
    };
    let device = Device::open(&c.name, kind, c.workers, vnet, want)?;
    let gso_gro = c.offload;
    let (sockets, port) = udp::open_worker_sockets(
        c.workers,
        SocketOptions {
            port: c.listen_port,
            gro: gso_gro,
            fwmark: c.fwmark,
            buffer: c.socket_buffer,
        },
    )?;
    // A mode that spreads flows over source ports sends from these; they
    // close when the last worker's ring and the control thread let go.
    // Without them every datagram leaves from the listen port, which is
    // still correct, only one peer's flows then meet one receiving worker.
    let (flows, source_ports) =
        match M::FLOW_SOURCE_PORTS.then(|| open_flows(c.fwmark, c.socket_buffer)) {
            Some(Ok((f, ports))) => {
                tracing::info!(v4 = ?ports.0, v6 = ?ports.1, "per-flow source ports");
                (Some(Arc::new(f)), ports)
            }
            Some(Err(e)) => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "no per-flow source ports: every datagram leaves from the listen port, \
                     and one peer's flows meet one receiving worker"
                );
                (None, Default::default())
            }
            None => (None, Default::default()),
        };
    let port_table = Arc::new(worker::SourcePorts::new(
        flows.as_ref().map_or(0, |f| f.v4.len()),
        c.workers,
    ));
    configure_device(&c.name, kind, c, bridge.as_deref())?;
    let mut route_set = Routes::new(&c.name, c.table, &c.addresses);
    route_set.follow(
        &netctl::Netlink::current().context("opening netlink")?,
        routes,
    )?;
    if vnet {
        // One super-packet must fit one UDP_SEGMENT send (64 KiB of UDP
        // payload): cap the segments the stack puts in one, or every
        // 64 KiB read would need a second send for its last few segments.
        let link_hdr = if kind == DeviceKind::Tap {
            ETHERNET_HEADER_LEN
        } else {
            0
        };
        let stride = M::HEADROOM + c.mtu as usize + link_hdr + M::TAILROOM;
        let segs = (worker::GSO_MAX_BYTES / stride).clamp(1, worker::MAX_SEGMENTS) as u32;
        netctl::Netlink::current()
            .and_then(|nl| nl.set_gso_max_segs(&c.name, segs))
            .with_context(|| format!("setting gso_max_segs {segs} on {}", c.name))?;
    }

    let (link, inbox) = ControlLink::new().context("eventfd")?;
    let stop = Arc::new(AtomicBool::new(false));
    let kept: Vec<udp::WorkerSockets> = sockets
        .iter()
        .map(udp::WorkerSockets::try_clone)
        .collect::<std::io::Result<_>>()
        .context("duplicating the sockets")?;
    let first = kept[0].try_clone().context("duplicating a socket")?;
    let outbox = Outbox::new(first.v4, first.v6);

    let (sig_read, sig_write) = UnixStream::pair().context("signal pipe")?;
    sig_read.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, sig_write.try_clone()?)
            .context("installing signal handlers")?;
    }
    let (hup_read, hup_write) = UnixStream::pair().context("signal pipe")?;
    hup_read.set_nonblocking(true)?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, hup_write.try_clone()?)
        .context("installing the SIGHUP handler")?;

    let cores = core_affinity::get_core_ids().unwrap_or_default();
    // Worker i is pinned to CPU i when the process may use CPUs 0..n: then,
    // if asked, steer each packet to the worker on the CPU it appeared on.
    let steer = c.cpu_steering
        && c.pin
        && !cores.is_empty()
        && (0..c.workers.min(cores.len())).all(|i| cores[i].id == i)
        && c.workers <= cores.len();
    let steered = steer && steer_by_cpu(&device, &sockets);
    let mut offloads: Vec<String> = device
        .offloads
        .names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    if gso_gro {
        offloads.push("udp-gso".into());
        offloads.push("udp-gro".into());
    }
    if steered {
        offloads.push("cpu-steering".into());
    }
    let mut counters = Vec::new();
    let mut wakes = Vec::new();
    let mut mailboxes = Vec::new();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    let dev_offloads = device.offloads;
    let queues: Vec<OwnedFd> = device.queues;
    for (id, (queue, socks)) in queues.into_iter().zip(sockets).enumerate() {
        let ctr = Arc::new(WorkerCounters::new());
        let wake = Arc::new(EventFd::new()?);
        counters.push(ctr.clone());
        wakes.push(wake.clone());
        let (rebind_tx, rebind) = crossbeam_channel::unbounded();
        mailboxes.push(Mailbox {
            sockets: rebind_tx,
            wake: wake.clone(),
        });
        let setup = WorkerSetup {
            id,
            core: (c.pin && !cores.is_empty()).then(|| cores[id % cores.len()]),
            slice: c.worker_slice,
            give_way: c.worker_yield,
            queue,
            sockets: socks,
            flows: flows.clone(),
            queue_limit: c.queue_limit,
            source_ports: port_table.clone(),
            vnet_hdr: vnet,
            gso: gso_gro,
            kind,
            offloads: dev_offloads,
            read_mode: c.read_mode,
            mode: mode.clone(),
            counters: ctr,
            control: link.clone(),
            rebind,
            stop: stop.clone(),
            wake,
            started: started_tx.clone(),
        };
        handles.push(worker::spawn(setup).context("spawning a worker")?);
    }
    drop(started_tx);
    let mut start_error = None;
    for _ in 0..handles.len() {
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => start_error = Some(why),
            Err(_) => start_error = Some("a worker exited during start".to_string()),
        }
    }
    if let Some(why) = start_error {
        stop.store(true, Ordering::Release);
        for w in &wakes {
            w.notify();
        }
        for h in handles {
            let _ = h.join();
        }
        anyhow::bail!("starting the data plane: {why}");
    }

    let status = InterfaceStatus {
        interface: c.name.clone(),
        mode: M::NAME.to_string(),
        pid: std::process::id(),
        listen_port: port,
        source_ports_v4: source_ports.0,
        source_ports_v6: source_ports.1,
        config: reload.as_ref().map(|f| f.display().to_string()),
        offloads,
        mtu: c.mtu,
        ..Default::default()
    };
    let uapi_wake = Arc::new(EventFd::new()?);
    let socket_path = listener.path().to_path_buf();
    let (commands, uapi_thread) = crate::uapi::server::spawn(
        listener,
        inbox.doorbell.clone(),
        stop.clone(),
        uapi_wake.clone(),
    )
    .context("starting the configuration socket's thread")?;
    let metrics_server = match metrics_listener {
        Some(l) => {
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register_collector(Box::new(TunnelCollector::new(Sources {
                interface: c.name.clone(),
                workers: counters.clone(),
                control: mode_control.shared_counters(),
                peers: mode.clone(),
            })));
            let server =
                MetricsServer::spawn(l, registry).context("starting the metrics thread")?;
            tracing::info!(addr = %server.local_addr(), "serving /metrics");
            Some(server)
        }
        None => None,
    };
    let mut all_wakes = wakes;
    all_wakes.push(uapi_wake);
    let control = ControlSetup {
        mode: mode_control,
        inbox,
        commands,
        underlay: Underlay::new(
            port,
            c.fwmark,
            gso_gro,
            c.socket_buffer,
            kept,
            flows,
            mailboxes,
        )
        .steer_by_cpu(steered),
        signals: sig_read,
        hangups: hup_read,
        reload: reload.map(|file| ReloadSource {
            file,
            name: c.name.clone(),
            routes: route_set,
        }),
        stop: stop.clone(),
        worker_wakes: all_wakes,
        counters: counters.clone(),
        status,
        outbox,
        load: Default::default(),
    };
    ready(&c.name, &socket_path);
    tracing::info!(interface = %c.name, workers = c.workers, port, "up");
    let alive = || handles.iter().all(|h| !h.is_finished());
    let cause = control.run(&alive);
    crate::notify::stopping();
    tracing::info!(interface = %c.name, ?cause, "stopping");
    stop.store(true, Ordering::Release);
    let mut failed = None;
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed = Some(anyhow::Error::new(e).context("a worker failed")),
            Err(_) => failed = Some(anyhow::anyhow!("a worker panicked")),
        }
    }
    if let Some(m) = metrics_server {
        m.stop();
    }
    drop(sig_write);
    drop(hup_write);
    // The socket file goes with its thread's listener.
    if uapi_thread.join().is_err() {
        tracing::error!("the configuration socket's thread panicked");
    }
    if cause == StopCause::WorkerExited
        && let Some(e) = failed
    {
        return Err(e);
    }
    Ok(())
}

/// Says the interface is up: `ready: IFACE` on stderr (what scripts and
/// the tests wait for; a backgrounded daemon's parent waits for it too),
/// and `READY=1` to systemd.
fn ready(name: &str, socket: &Path) {
    eprintln!("ready: {name}");
    // And to systemd (`Type=notify`): the device, its sockets, its
    // configuration socket and /metrics are all serving by now.
    crate::notify::ready(name);
    tracing::info!(interface = %name, socket = %socket.display(), "configuration socket");
    if std::env::var("RINGTUN_DETACHED").is_ok_and(|v| v == "1") {
        // The parent that started us in the background stops reading now:
        // later lines go nowhere rather than to a closed pipe.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stderr(&null);
        }
    }
}

/// The flow sockets' ports: IPv4's, then IPv6's.
type FlowPorts = (Vec<u16>, Vec<u16>);

/// The flow sockets and their ports.
fn open_flows(fwmark: u32, buffer: usize) -> anyhow::Result<(udp::FlowSockets, FlowPorts)> {
    let f = udp::open_flow_sockets(worker::FLOW_PORTS, fwmark, buffer)
        .context("opening the flow sockets (per-flow source ports)")?;
    let ports = f.ports().context("reading the flow sockets' ports")?;
    Ok((f, ports))
}
