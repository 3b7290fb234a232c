//! Running the `ringtun` daemon inside a namespace: find (or build) the
//! binary, make keys, write configuration files, start `ringtun up` in a
//! named namespace and wait for `ready: IFACE`, read `ringtun show --json`,
//! and stop it with SIGTERM, SIGKILL or `ringtun down`.
//!
//! ```no_run
//! use ringtun_tests::ringtun::{Conf, Keypair, LabDir, PeerConf, Ringtun, UpOptions};
//! # fn main() -> Result<(), ringtun_tests::ringtun::Error> {
//! let dir = LabDir::new("doc")?;
//! let (a, b) = (Keypair::generate()?, Keypair::generate()?);
//! let conf = Conf::wireguard(&a)
//!     .listen_port(51820)
//!     .address("10.99.0.1/24")
//!     .peer(PeerConf::wireguard(&b.public_key).allowed_ip("10.99.0.2/32"));
//! let path = conf.write(dir.path(), "rt0")?;
//! let daemon = Ringtun::up("site-a", &path, &UpOptions::default())?;
//! let status = daemon.show()?;
//! assert_eq!(status.interface, "rt0");
//! daemon.terminate()?;
//! # Ok(()) }
//! ```
//!
//! The daemon is a child of the calling thread: it gets SIGKILL if that
//! thread ends (`PR_SET_PDEATHSIG`), so that a test process that dies
//! without unwinding leaves no daemon behind. Start it from the thread that
//! owns the [`Ringtun`] for its whole life (a test's own thread, xtask's
//! main thread), not from a short-lived helper thread.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::config::PrivateKey;
use dataplane::status::InterfaceStatus;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long `ringtun up` may take to print `ready:` by default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped daemon may take to exit by default.
pub const DEFAULT_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `ringtun show`/`down`/`genkey` command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of the daemon's stderr kept for diagnostics (the latest ones).
const STDERR_LINES_KEPT: usize = 400;

/// Why running ringtun failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The binary could not be found or built.
    #[error("the ringtun binary: {0}")]
    Binary(String),
    /// A file or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The namespace could not be opened.
    #[error("namespace {netns}: {source}")]
    Netns {
        /// Namespace name.
        netns: String,
        /// netctl's error.
        #[source]
        source: netctl::Error,
    },
    /// `ringtun up` exited or timed out before printing `ready: IFACE`.
    #[error(
        "ringtun up for {iface} in {netns} did not become ready: {why}\n--- its stderr ---\n{stderr}"
    )]
    NotReady {
        /// Interface name.
        iface: String,
        /// Namespace name.
        netns: String,
        /// What happened instead.
        why: String,
        /// The daemon's stderr.
        stderr: String,
    },
    /// The daemon did not exit within its time.
    #[error("ringtun for {iface} did not exit within {timeout:?}\n--- its stderr ---\n{stderr}")]
    ExitTimeout {
        /// Interface name.
        iface: String,
        /// The time allowed.
        timeout: Duration,
        /// The daemon's stderr.
        stderr: String,
    },
    /// The daemon exited, but not with status 0.
    #[error("ringtun for {iface} exited with {status}\n--- its stderr ---\n{stderr}")]
    BadExit {
        /// Interface name.
        iface: String,
        /// How it exited.
        status: ExitStatus,
        /// The daemon's stderr.
        stderr: String,
    },
    /// A `ringtun` command (show, down, ...) failed.
    #[error("`ringtun {args}` in {netns} failed ({status}): {stderr}")]
    Command {
        /// The arguments.
        args: String,
        /// Namespace name, or `host`.
        netns: String,
        /// How it exited.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// `ringtun show --json` printed something that is not a status.
    #[error("`ringtun show {iface} --json` printed no status ({detail}): {stdout}")]
    BadJson {
        /// Interface name.
        iface: String,
        /// The parse error.
        detail: String,
        /// What it printed.
        stdout: String,
    },
    /// Making a key failed (no randomness).
    #[error("generating a key: {0}")]
    Key(String),
}

impl Error {
    fn io(action: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            action: action.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------- binary

static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();

/// The `ringtun` binary to test. `RINGTUN_BIN` overrides; otherwise the one
/// in the profile directory this process runs from (`target/debug` for
/// `target/debug/deps/test-…` or `target/debug/xtask`), built first with
/// `cargo build -p dataplane --bin ringtun` in the same profile so that it is
/// never stale. Built at most once per process. Without cargo (a test binary
/// run by hand), an existing binary is used as it is.
pub fn ringtun_bin() -> Result<PathBuf> {
    BINARY
        .get_or_init(locate_or_build)
        .clone()
        .map_err(Error::Binary)
}

fn locate_or_build() -> std::result::Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("RINGTUN_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("RINGTUN_BIN={} is not a file", bin.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let mut profile_dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", exe.display()))?
        .to_path_buf();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let bin = profile_dir.join("ringtun");
    let (Some(profile), Some(target_dir)) = (
        profile_dir.file_name().and_then(|n| n.to_str()),
        profile_dir.parent(),
    ) else {
        return Err(format!(
            "cannot tell the cargo profile from {}",
            exe.display()
        ));
    };
    let profile = if profile == "debug" { "dev" } else { profile };
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| crate::find_in_path("cargo"));
    let Some(cargo) = cargo else {
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "{} does not exist and cargo is not on PATH to build it (or set RINGTUN_BIN)",
                bin.display()
            ))
        };
    };
    let manifest = crate::repo_root().join("Cargo.toml");
    let out = Command::new(&cargo)
        .args(["build", "--quiet", "-p", "dataplane", "--bin", "ringtun"])
        .arg("--profile")
        .arg(profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", cargo.display()))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p dataplane --bin ringtun --profile {profile} (target dir {}) failed:\n{}",
            target_dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo built ringtun, but {} does not exist",
            bin.display()
        ))
    }
}

/// Where the labs' ringtuns keep their configuration sockets: one
/// directory per namespace. `/var/run/wireguard` is shared by every
/// namespace of the host, and the labs run instances with one interface
/// name side by side; a directory per namespace keeps them apart, as the
/// per-namespace sockets of a real deployment would be.
pub const LAB_UAPI_ROOT: &str = "/run/ringtun-labs";

/// The configuration-socket directory of the ringtuns in `netns`.
pub fn lab_uapi_dir(netns: &str) -> PathBuf {
    Path::new(LAB_UAPI_ROOT).join(netns)
}

/// Removes the configuration-socket directories of the namespaces whose
/// names start with `prefix` (a lab's, when it is torn down: a daemon
/// killed with SIGKILL leaves its socket behind).
pub fn remove_lab_uapi_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir(LAB_UAPI_ROOT) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(prefix))
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    // The root goes when the last lab does.
    let _ = std::fs::remove_dir(LAB_UAPI_ROOT);
}

/// A `ringtun` command that runs inside `netns` (`None`: this process's
/// own namespace), as [`program_in`] makes it; it gets SIGKILL if the
/// calling thread ends first. Inside a namespace its configuration socket
/// is the namespace's own ([`lab_uapi_dir`]), unless the caller's
/// environment names one.
pub fn command_in(netns: Option<&str>) -> Result<Command> {
    let mut cmd = program_in(&ringtun_bin()?, netns, Signal::SIGKILL)?;
    if let Some(ns) = netns
        && std::env::var_os(UAPI_DIR_ENV).is_none()
    {
        cmd.env(UAPI_DIR_ENV, lab_uapi_dir(ns));
    }
    Ok(cmd)
}

/// The environment variable that moves ringtun's configuration sockets
/// (empty: the standard `/var/run/wireguard`, where `wg` looks). A daemon
/// started with it in [`UpOptions::env`] is asked with the same value by
/// [`Ringtun::show`] and [`Ringtun::down`].
pub const UAPI_DIR_ENV: &str = "RINGTUN_UAPI_DIR";

/// A command for `program` that runs inside `netns` (`None`: this
/// process's own namespace), its stdin empty. The child enters the
/// namespace with `setns` between fork and exec, as `ip netns exec` would
/// (without its /sys remount), and gets `death_signal` if the calling
/// thread ends first, so that a harness that dies takes its children
/// with it.
pub fn program_in(program: &Path, netns: Option<&str>, death_signal: Signal) -> Result<Command> {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    let ns_fd = match netns {
        Some(name) => Some(netctl::netns::open(name).map_err(|source| Error::Netns {
            netns: name.to_string(),
            source,
        })?),
        None => None,
    };
    let death_signal = death_signal as libc::c_ulong;
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (prctl, setns: plain syscalls), nothing allocates or takes a lock. The
    // namespace fd is owned by the closure, so it stays open until the
    // Command is dropped, after the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = &ns_fd
                && libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Runs `ringtun ARGS` inside `netns` to completion (killed after
/// [`COMMAND_TIMEOUT`]) and returns its output, whatever its exit status.
pub fn run_in(netns: Option<&str>, args: &[&str]) -> Result<Output> {
    run_with_env(netns, args, &[])
}

/// [`run_in`] with `env` set for the command (after [`command_in`]'s own,
/// so that `RINGTUN_UAPI_DIR` here names the socket directory).
pub fn run_with_env(
    netns: Option<&str>,
    args: &[&str],
    env: &[(String, String)],
) -> Result<Output> {
    let mut cmd = command_in(netns)?;
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_with_timeout(cmd, &args.join(" "), COMMAND_TIMEOUT)
}

/// Runs `ringtun ARGS` inside `netns` and returns its stdout; a non-zero
/// exit is an [`Error::Command`] carrying its stderr.
pub fn run_ok_in(netns: Option<&str>, args: &[&str]) -> Result<String> {
    run_ok_with_env(netns, args, &[])
}

/// [`run_ok_in`] with `env` set for the command, as [`run_with_env`].
fn run_ok_with_env(netns: Option<&str>, args: &[&str], env: &[(String, String)]) -> Result<String> {
    let out = run_with_env(netns, args, env)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            args: args.join(" "),
            netns: netns.unwrap_or("host").to_string(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn output_with_timeout(mut cmd: Command, what: &str, timeout: Duration) -> Result<Output> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("starting ringtun {what}"), e))?;
    match collect_output(child, timeout) {
        Ok(Some(out)) => Ok(out),
        Ok(None) => Err(Error::io(
            format!("ringtun {what}"),
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("still running after {timeout:?}; killed"),
            ),
        )),
        Err(e) => Err(Error::io("waiting for ringtun", e)),
    }
}

/// Waits for a child for up to `timeout`; `None` if it still runs.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    wait_until(child, Instant::now() + timeout).map_err(|e| Error::io("waiting for ringtun", e))
}

fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        match child.try_wait()? {
            Some(status) => return Ok(Some(status)),
            None if Instant::now() >= deadline => return Ok(None),
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

// ---------------------------------------------------------- child output

/// Waits up to `timeout` for a spawned child to exit and returns what it
/// printed on its piped stdout and stderr; `Ok(None)` if it still ran at
/// the deadline (it is killed and reaped then). Each pipe is drained on a
/// thread of its own: a child blocked on a full pipe would never exit.
pub fn collect_output(mut child: Child, timeout: Duration) -> io::Result<Option<Output>> {
    let deadline = Instant::now() + timeout;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let Some(status) = wait_until(&mut child, deadline)? else {
        let _ = child.kill();
        let _ = child.wait();
        return Ok(None);
    };
    Ok(Some(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }))
}

/// Stops a child: SIGTERM, then SIGKILL if it still runs after `grace`;
/// reaps it either way.
pub fn stop_child(child: &mut Child, grace: Duration) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    if !matches!(wait_until(child, Instant::now() + grace), Ok(Some(_))) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The latest lines a long-running child prints on its piped stdout and
/// stderr, for diagnostics. Each pipe is read on a thread of its own until
/// it closes, so that the child never blocks on a full pipe.
#[derive(Clone, Debug)]
pub struct LineTail {
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineTail {
    /// Follows `child`'s pipes, keeping the latest `keep` lines. Every line
    /// `ready` accepts is announced on the returned channel, which
    /// disconnects once every pipe has closed (the child exited, or closed
    /// them).
    pub fn follow(
        child: &mut Child,
        keep: usize,
        ready: impl Fn(&str) -> bool + Clone + Send + 'static,
    ) -> (LineTail, mpsc::Receiver<()>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let read = |pipe: Box<dyn Read + Send>| {
            let (lines, tx, ready) = (lines.clone(), tx.clone(), ready.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(io::Result::ok) {
                    if ready(&line) {
                        let _ = tx.send(());
                    }
                    let mut kept = lines.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() >= keep {
                        kept.remove(0);
                    }
                    kept.push(line);
                }
            });
        };
        if let Some(p) = child.stdout.take() {
            read(Box::new(p));
        }
        if let Some(p) = child.stderr.take() {
            read(Box::new(p));
        }
        (LineTail { lines }, rx)
    }

    /// The lines kept so far, joined by `separator`.
    pub fn joined(&self, separator: &str) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join(separator)
    }
}

// ------------------------------------------------------------------ keys

/// A WireGuard key pair in the base64 form configuration files use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keypair {
    /// `PrivateKey =` value.
    pub private_key: String,
    /// The matching public key, for the peers' `PublicKey =`.
    pub public_key: String,
}

impl Keypair {
    /// A fresh random key pair (the same keys `ringtun genkey | ringtun
    /// pubkey` would give, made in process).
    pub fn generate() -> Result<Keypair> {
        let key = PrivateKey::generate().map_err(|e| Error::Key(e.to_string()))?;
        Ok(Keypair {
            private_key: key.to_base64(),
            public_key: key.public_key().to_base64(),
        })
    }
}

/// A fresh random preshared key, base64.
pub fn genpsk() -> Result<String> {
    dataplane::config::PresharedKey::generate()
        .map(|k| k.to_base64())
        .map_err(|e| Error::Key(e.to_string()))
}

// ------------------------------------------------------------ lab files

/// A private temporary directory (mode 0700) for configuration files,
/// removed with its contents on drop.
#[derive(Debug)]
pub struct LabDir {
    path: PathBuf,
}

impl LabDir {
    /// Creates `$TMPDIR/ringtun-lab-TAG-…` (a [`crate::unique_name`]).
    pub fn new(tag: &str) -> Result<LabDir> {
        let path = std::env::temp_dir().join(format!("ringtun-lab-{}", crate::unique_name(tag)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(LabDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LabDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cleanup: removing {}: {e}", self.path.display());
        }
    }
}

/// `Mode =` of a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelMode {
    /// WireGuard over TUN (L3).
    WireGuard,
    /// VXLAN over TAP (L2).
    Vxlan,
}

impl TunnelMode {
    /// The word in `Mode =` and in `ringtun show`.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelMode::WireGuard => "wireguard",
            TunnelMode::Vxlan => "vxlan",
        }
    }
}

/// A ringtun configuration file (wg-quick format plus ringtun's keys),
/// built field by field and rendered with [`Conf::render`]. Absent fields
/// are left out of the file, so the daemon's defaults apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conf {
    /// `Mode =`.
    pub mode: TunnelMode,
    /// `PrivateKey =` (wireguard).
    pub private_key: Option<String>,
    /// `ListenPort =`.
    pub listen_port: Option<u16>,
    /// `Address =` lines (`10.0.0.1/24`).
    pub addresses: Vec<String>,
    /// `MTU =`.
    pub mtu: Option<u32>,
    /// `Table =` (`auto`, `off`, a number).
    pub table: Option<String>,
    /// `Workers =`.
    pub workers: Option<usize>,
    /// `VNI =` (vxlan).
    pub vni: Option<u32>,
    /// `Bridge =` (vxlan).
    pub bridge: Option<String>,
    /// `Offload =`.
    pub offload: Option<bool>,
    /// Any other `[Interface]` lines, written as given (`Key = value`).
    pub extra: Vec<String>,
    /// `[Peer]` sections.
    pub peers: Vec<PeerConf>,
}

/// One `[Peer]` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerConf {
    /// `PublicKey =` (wireguard).
    pub public_key: Option<String>,
    /// `PresharedKey =`.
    pub preshared_key: Option<String>,
    /// `AllowedIPs =` entries.
    pub allowed_ips: Vec<String>,
    /// `Endpoint =` (`IP:PORT`, `[IPv6]:PORT`, `host:PORT`).
    pub endpoint: Option<String>,
    /// `PersistentKeepalive =`.
    pub persistent_keepalive: Option<u16>,
    /// `PinEndpoint =`.
    pub pin_endpoint: Option<bool>,
    /// `SpreadFlows =`.
    pub spread_flows: Option<bool>,
}

impl Conf {
    /// A wireguard-mode interface with this key pair's private key.
    pub fn wireguard(keys: &Keypair) -> Conf {
        Conf {
            private_key: Some(keys.private_key.clone()),
            ..Conf::empty(TunnelMode::WireGuard)
        }
    }

    /// A vxlan-mode interface with this VNI.
    pub fn vxlan(vni: u32) -> Conf {
        Conf {
            vni: Some(vni),
            ..Conf::empty(TunnelMode::Vxlan)
        }
    }

    fn empty(mode: TunnelMode) -> Conf {
        Conf {
            mode,
            private_key: None,
            listen_port: None,
            addresses: Vec::new(),
            mtu: None,
            table: None,
            workers: None,
            vni: None,
            bridge: None,
            offload: None,
            extra: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// Sets `ListenPort`.
    pub fn listen_port(mut self, port: u16) -> Conf {
        self.listen_port = Some(port);
        self
    }

    /// Adds an `Address`.
    pub fn address(mut self, prefix: &str) -> Conf {
        self.addresses.push(prefix.to_string());
        self
    }

    /// Sets `MTU`.
    pub fn mtu(mut self, mtu: u32) -> Conf {
        self.mtu = Some(mtu);
        self
    }

    /// Sets `Table`.
    pub fn table(mut self, table: &str) -> Conf {
        self.table = Some(table.to_string());
        self
    }

    /// Sets `Workers`.
    pub fn workers(mut self, n: usize) -> Conf {
        self.workers = Some(n);
        self
    }

    /// Sets `SpreadFlows` on every peer so far.
    pub fn spread_flows(mut self, on: bool) -> Conf {
        for p in &mut self.peers {
            p.spread_flows = Some(on);
        }
        self
    }

    /// Sets `Bridge`.
    pub fn bridge(mut self, bridge: &str) -> Conf {
        self.bridge = Some(bridge.to_string());
        self
    }

    /// Sets `Offload`.
    pub fn offload(mut self, on: bool) -> Conf {
        self.offload = Some(on);
        self
    }

    /// Adds a raw `[Interface]` line.
    pub fn extra(mut self, line: &str) -> Conf {
        self.extra.push(line.to_string());
        self
    }

    /// Adds a `[Peer]`.
    pub fn peer(mut self, peer: PeerConf) -> Conf {
        self.peers.push(peer);
        self
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::from("[Interface]\n");
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(s, "{k} = {v}");
        };
        line("Mode", &self.mode.as_str());
        if let Some(k) = &self.private_key {
            line("PrivateKey", k);
        }
        if let Some(p) = self.listen_port {
            line("ListenPort", &p);
        }
        for a in &self.addresses {
            line("Address", a);
        }
        if let Some(m) = self.mtu {
            line("MTU", &m);
        }
        if let Some(t) = &self.table {
            line("Table", t);
        }
        if let Some(w) = self.workers {
            line("Workers", &w);
        }
        if let Some(v) = self.vni {
            line("VNI", &v);
        }
        if let Some(b) = &self.bridge {
            line("Bridge", b);
        }
        if let Some(o) = self.offload {
            line("Offload", &if o { "on" } else { "off" });
        }
        for e in &self.extra {
            let _ = writeln!(s, "{e}");
        }
        for p in &self.peers {
            s.push_str(&p.render());
        }
        s
    }

    /// Writes the file as `DIR/IFACE.conf` with mode 0600 (the interface
    /// is named after the file, as wg-quick does) and returns its path.
    pub fn write(&self, dir: &Path, iface: &str) -> Result<PathBuf> {
        let path = dir.join(format!("{iface}.conf"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        io::Write::write_all(&mut f, self.render().as_bytes())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

impl PeerConf {
    /// A wireguard peer with this public key.
    pub fn wireguard(public_key: &str) -> PeerConf {
        PeerConf {
            public_key: Some(public_key.to_string()),
            ..PeerConf::default()
        }
    }

    /// A vxlan remote VTEP at this endpoint.
    pub fn vtep(endpoint: std::net::SocketAddr) -> PeerConf {
        PeerConf {
            endpoint: Some(endpoint.to_string()),
            ..PeerConf::default()
        }
    }

    /// Adds an `AllowedIPs` entry.
    pub fn allowed_ip(mut self, prefix: &str) -> PeerConf {
        self.allowed_ips.push(prefix.to_string());
        self
    }

    /// Sets `Endpoint` (`[v6]:port` for IPv6).
    pub fn endpoint(mut self, endpoint: std::net::SocketAddr) -> PeerConf {
        self.endpoint = Some(endpoint.to_string());
        self
    }

    /// Sets `PresharedKey`.
    pub fn preshared_key(mut self, psk: &str) -> PeerConf {
        self.preshared_key = Some(psk.to_string());
        self
    }

    /// Sets `PersistentKeepalive`.
    pub fn persistent_keepalive(mut self, secs: u16) -> PeerConf {
        self.persistent_keepalive = Some(secs);
        self
    }

    /// Sets `SpreadFlows`.
    pub fn spread_flows(mut self, on: bool) -> PeerConf {
        self.spread_flows = Some(on);
        self
    }

    /// Sets `PinEndpoint`.
    pub fn pin_endpoint(mut self, pin: bool) -> PeerConf {
        self.pin_endpoint = Some(pin);
        self
    }

    fn render(&self) -> String {
        let mut s = String::from("\n[Peer]\n");
        if let Some(k) = &self.public_key {
            let _ = writeln!(s, "PublicKey = {k}");
        }
        if let Some(k) = &self.preshared_key {
            let _ = writeln!(s, "PresharedKey = {k}");
        }
        if !self.allowed_ips.is_empty() {
            let _ = writeln!(s, "AllowedIPs = {}", self.allowed_ips.join(", "));
        }
        if let Some(e) = &self.endpoint {
            let _ = writeln!(s, "Endpoint = {e}");
        }
        if let Some(k) = self.persistent_keepalive {
            let _ = writeln!(s, "PersistentKeepalive = {k}");
        }
        if let Some(p) = self.pin_endpoint {
            let _ = writeln!(s, "PinEndpoint = {p}");
        }
        if let Some(p) = self.spread_flows {
            let _ = writeln!(s, "SpreadFlows = {p}");
        }
        s
    }
}

// ---------------------------------------------------------------- daemon

/// Options of `ringtun up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// `--name IFACE` (default: the configuration file's stem).
    pub name: Option<String>,
    /// `--workers N`.
    pub workers: Option<usize>,
    /// `--no-offload`.
    pub no_offload: bool,
    /// Extra environment for the daemon (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// How long to wait for `ready: IFACE`.
    pub ready_timeout: Duration,
    /// Run the daemon through this command line (`setpriv ... --`, say):
    /// the program, its arguments, then the ringtun binary and its own.
    pub launcher: Vec<String>,
    /// The ringtun binary to run instead of this build's (a copy that
    /// another user can reach).
    pub program: Option<PathBuf>,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            name: None,
            workers: None,
            no_offload: false,
            env: Vec::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            launcher: Vec::new(),
            program: None,
        }
    }
}

/// A running `ringtun up`, inside a namespace. Dropping it kills
/// (SIGKILL) and reaps the process if it still runs.
#[derive(Debug)]
pub struct Ringtun {
    child: Child,
    netns: String,
    iface: String,
    stderr: LineTail,
    exited: Option<ExitStatus>,
    /// `RINGTUN_UAPI_DIR` as the daemon was given it in
    /// [`UpOptions::env`], for the commands that reach its socket.
    uapi_env: Vec<(String, String)>,
}

impl Ringtun {
    /// Starts `ringtun up CONFIG` inside `netns` and waits until it prints
    /// `ready: IFACE`. On a timeout or an early exit the process is killed
    /// and the error carries its stderr.
    pub fn up(netns: &str, config: &Path, opts: &UpOptions) -> Result<Ringtun> {
        let iface = match &opts.name {
            Some(n) => n.clone(),
            None => config
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::io(
                        "naming the interface",
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{} has no file stem", config.display()),
                        ),
                    )
                })?,
        };
        let mut cmd = match (opts.launcher.split_first(), &opts.program) {
            (None, None) => command_in(Some(netns))?,
            (launcher, program) => {
                let bin = match program {
                    Some(p) => p.clone(),
                    None => ringtun_bin()?,
                };
                let mut cmd = match launcher {
                    Some((first, rest)) => {
                        let mut c = program_in(Path::new(first), Some(netns), Signal::SIGKILL)?;
                        c.args(rest).arg(&bin);
                        c
                    }
                    None => program_in(&bin, Some(netns), Signal::SIGKILL)?,
                };
                if std::env::var_os(UAPI_DIR_ENV).is_none() {
                    cmd.env(UAPI_DIR_ENV, lab_uapi_dir(netns));
                }
                cmd
            }
        };
        cmd.arg("up").arg(config);
        if let Some(n) = &opts.name {
            cmd.args(["--name", n]);
        }
        if let Some(w) = opts.workers {
            cmd.args(["--workers", &w.to_string()]);
        }
        if opts.no_offload {
            cmd.arg("--no-offload");
        }
        // Plain log lines: stderr is a pipe read by line, kept for errors.
        cmd.env("NO_COLOR", "1");
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting ringtun up in {netns}"), e))?;
        // Keeps draining after `ready:` so that the daemon never blocks on
        // a full pipe, and keeps the latest lines for diagnostics.
        let want = format!("ready: {iface}");
        let (stderr, ready_rx) =
            LineTail::follow(&mut child, STDERR_LINES_KEPT, move |l| l.trim() == want);
        let mut daemon = Ringtun {
            child,
            netns: netns.to_string(),
            iface,
            stderr,
            exited: None,
            uapi_env: opts
                .env
                .iter()
                .filter(|(k, _)| k == UAPI_DIR_ENV)
                .cloned()
                .collect(),
        };
        let why = match ready_rx.recv_timeout(opts.ready_timeout) {
            Ok(()) => return Ok(daemon),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                format!("no `ready:` line within {:?}", opts.ready_timeout)
            }
            // The pipe closed: the process exited (or closed stderr).
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                match wait_timeout(&mut daemon.child, Duration::from_secs(2))? {
                    Some(status) => {
                        daemon.exited = Some(status);
                        format!("it exited with {status}")
                    }
                    None => "it closed stderr without printing `ready:`".to_string(),
                }
            }
        };
        let _ = daemon.kill();
        Err(Error::NotReady {
            iface: daemon.iface.clone(),
            netns: daemon.netns.clone(),
            why,
            stderr: daemon.stderr(),
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The interface it serves.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// What the daemon printed on stderr so far (the latest lines).
    pub fn stderr(&self) -> String {
        // The reader thread may still be appending the last lines.
        std::thread::sleep(Duration::from_millis(20));
        self.stderr.joined("\n")
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// `ringtun show IFACE --json`, run inside the namespace (with the
    /// socket directory the daemon was given, if any).
    pub fn show(&self) -> Result<InterfaceStatus> {
        show_json_with_env(Some(&self.netns), &self.iface, &self.uapi_env)
    }

    /// `ringtun down IFACE`, run inside the namespace (the daemon should
    /// then exit: see [`Ringtun::wait_exit`]).
    pub fn down(&self) -> Result<()> {
        run_ok_with_env(Some(&self.netns), &["down", &self.iface], &self.uapi_env).map(|_| ())
    }

    /// Waits up to `timeout` for the process to exit and returns how it
    /// exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        match wait_timeout(&mut self.child, timeout)? {
            Some(status) => {
                self.exited = Some(status);
                Ok(status)
            }
            None => Err(Error::ExitTimeout {
                iface: self.iface.clone(),
                timeout,
                stderr: self.stderr(),
            }),
        }
    }

    /// Waits for the process to exit and requires exit status 0.
    pub fn expect_clean_exit(&mut self, timeout: Duration) -> Result<()> {
        let status = self.wait_exit(timeout)?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::BadExit {
                iface: self.iface.clone(),
                status,
                stderr: self.stderr(),
            })
        }
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, signal)
            .map_err(|e| Error::io(format!("sending {signal} to ringtun"), io::Error::from(e)))
    }

    /// Stops the daemon with SIGTERM and requires it to exit with status 0
    /// within [`DEFAULT_EXIT_TIMEOUT`]; on a timeout it is killed.
    pub fn terminate(mut self) -> Result<()> {
        self.signal(Signal::SIGTERM)?;
        self.expect_clean_exit(DEFAULT_EXIT_TIMEOUT)
    }

    /// Kills the daemon with SIGKILL and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        // ESRCH: it already exited; wait() below reaps it either way.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io("reaping ringtun", e))?;
        self.exited = Some(status);
        Ok(status)
    }

    /// The process's state from /proc/PID/stat, for diagnostics: `running
    /// (S)`, or for an exited process not yet reaped its wait status
    /// (`exited (Z), status 0`, `exited (Z), signal 9`); `gone` if reaped.
    pub fn proc_state(&self) -> String {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) else {
            return "gone".to_string();
        };
        // The command name is in parentheses and may contain spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let state = fields.first().copied().unwrap_or("?");
        if state != "Z" {
            return format!("running ({state})");
        }
        // Field 52, exit_code: the wait(2) status (Linux 3.5+).
        match fields.get(49).and_then(|c| c.parse::<i32>().ok()) {
            Some(code) if code & 0x7f != 0 => format!("exited (Z), signal {}", code & 0x7f),
            Some(code) => format!("exited (Z), status {}", (code >> 8) & 0xff),
            None => "exited (Z)".to_string(),
        }
    }

    /// The names (`comm`) of the daemon's threads, from /proc/PID/task.
    /// Threads that exit while the directory is read are skipped.
    pub fn thread_names(&self) -> Result<Vec<String>> {
        let dir = format!("/proc/{}/task", self.pid());
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {dir}"), e))?;
        let mut names = Vec::new();
        for entry in entries.flatten() {
            if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
                names.push(comm.trim_end().to_string());
            }
        }
        Ok(names)
    }

    /// True if the daemon died of `signal`.
    pub fn killed_by(status: ExitStatus, signal: Signal) -> bool {
        status.signal() == Some(signal as i32)
    }
}

impl Drop for Ringtun {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.kill();
        }
    }
}

/// `ringtun show IFACE --json` inside `netns`, parsed.
pub fn show_json(netns: Option<&str>, iface: &str) -> Result<InterfaceStatus> {
    show_json_with_env(netns, iface, &[])
}

/// [`show_json`] with `env` set for the command, as [`run_with_env`].
pub fn show_json_with_env(
    netns: Option<&str>,
    iface: &str,
    env: &[(String, String)],
) -> Result<InterfaceStatus> {
    let stdout = run_ok_with_env(netns, &["show", iface, "--json"], env)?;
    serde_json::from_str(&stdout).map_err(|e| Error::BadJson {
        iface: iface.to_string(),
        detail: e.to_string(),
        stdout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wireguard_conf_renders_in_wg_quick_format_and_parses() {
        let a = Keypair::generate().unwrap();
        let b = Keypair::generate().unwrap();
        let text = Conf::wireguard(&a)
            .listen_port(51820)
            .address("10.99.0.1/24")
            .address("fd99::1/64")
            .workers(2)
            .offload(false)
            .peer(
                PeerConf::wireguard(&b.public_key)
                    .allowed_ip("10.99.0.2/32")
                    .allowed_ip("fd99::2/128")
                    .endpoint("[2001:db8::2]:51820".parse().unwrap())
                    .persistent_keepalive(5)
                    .pin_endpoint(true)
                    .spread_flows(true),
            )
            .render();
        let (cfg, warnings) = dataplane::config::Config::parse(&text, "rt7.conf")
            .unwrap_or_else(|e| panic!("the rendered file does not parse: {e}\n{text}"));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.name.as_str(), "rt7");
        assert_eq!(cfg.interface.listen_port, Some(51820));
        assert_eq!(cfg.interface.addresses.len(), 2);
        assert!(!cfg.interface.offload);
        let dataplane::config::ModeConfig::WireGuard(wg) = cfg.mode else {
            panic!("expected wireguard mode:\n{text}");
        };
        assert_eq!(wg.peers.len(), 1);
        assert_eq!(wg.peers[0].public_key.to_base64(), b.public_key);
        assert_eq!(wg.peers[0].allowed_ips.len(), 2);
        assert!(wg.peers[0].pin_endpoint);
        assert!(wg.peers[0].spread_flows);
    }

    #[test]
    fn a_vxlan_conf_renders_and_parses() {
        let text = Conf::vxlan(42)
            .listen_port(4789)
            .address("10.100.0.1/24")
            .peer(PeerConf::vtep("192.0.2.2:4789".parse().unwrap()))
            .render();
        let (cfg, _) = dataplane::config::Config::parse(&text, "vx0.conf")
            .unwrap_or_else(|e| panic!("the rendered file does not parse: {e}\n{text}"));
        let dataplane::config::ModeConfig::Vxlan(v) = cfg.mode else {
            panic!("expected vxlan mode:\n{text}");
        };
        assert_eq!(v.vni, 42);
        assert_eq!(v.peers.len(), 1);
    }

    #[test]
    fn keys_are_44_characters_of_base64_and_differ() {
        let a = Keypair::generate().unwrap();
        let b = Keypair::generate().unwrap();
        assert_eq!(a.private_key.len(), 44);
        assert_eq!(a.public_key.len(), 44);
        assert_ne!(a, b);
        assert_eq!(genpsk().unwrap().len(), 44);
    }

    #[test]
    fn conf_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = LabDir::new("unit").unwrap();
        let path = Conf::vxlan(1).write(dir.path(), "vx9").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
        let kept = dir.path().to_path_buf();
        drop(dir);
        assert!(!kept.exists(), "LabDir left {} behind", kept.display());
    }

    fn sh(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    #[test]
    fn collected_output_holds_both_pipes_and_a_child_past_its_time_is_killed() {
        let out = collect_output(
            sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(10),
        )
        .unwrap()
        .expect("sh exits at once");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let started = Instant::now();
        let late = collect_output(sh("sleep 30"), Duration::from_millis(100)).unwrap();
        assert!(late.is_none(), "sleep 30 finished within 100 ms?");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_line_tail_keeps_the_latest_lines_of_both_pipes_and_says_when_ready() {
        let follow = |script: &str, keep: usize| {
            let mut child = sh(script);
            let (tail, ready) = LineTail::follow(&mut child, keep, |l| l == "ready");
            ready.recv_timeout(Duration::from_secs(10)).unwrap();
            child.kill().unwrap();
            child.wait().unwrap();
            // Every pipe closed: the readers are done, the channel says so.
            assert_eq!(
                ready.recv_timeout(Duration::from_secs(10)),
                Err(mpsc::RecvTimeoutError::Disconnected)
            );
            tail
        };
        let tail = follow(
            "for i in 1 2 3 4; do echo $i; done; echo ready; exec sleep 30",
            3,
        );
        assert_eq!(tail.joined(","), "3,4,ready");
        let tail = follow("echo out; echo err >&2; echo ready; exec sleep 30", 10);
        let mut lines: Vec<String> = tail.joined(",").split(',').map(String::from).collect();
        lines.sort();
        assert_eq!(lines, ["err", "out", "ready"]);
    }

    #[test]
    fn a_stopped_child_gets_sigterm_and_sigkill_only_if_it_ignores_that() {
        let mut polite = sh("exec sleep 30");
        let started = Instant::now();
        stop_child(&mut polite, Duration::from_secs(20));
        let status = polite.try_wait().unwrap().expect("reaped");
        assert!(Ringtun::killed_by(status, Signal::SIGTERM), "{status}");
        assert!(started.elapsed() < Duration::from_secs(10));
        // The shell says when it ignores SIGTERM; the signal comes after.
        let mut deaf = sh("trap '' TERM; echo ignoring; exec sleep 30");
        let mut line = String::new();
        std::io::BufReader::new(deaf.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ignoring\n");
        stop_child(&mut deaf, Duration::from_millis(200));
        let status = deaf.try_wait().unwrap().expect("reaped");
        assert!(Ringtun::killed_by(status, Signal::SIGKILL), "{status}");
    }
}
