//! The wg-quick configuration format plus ringtun's own `[Interface]` keys.
//!
//! ```text
//! [Interface]
//! PrivateKey = <44 characters of base64>   # required in wireguard mode
//! ListenPort = 51820                       # absent or 0: a random port (wireguard), 4789 (vxlan)
//! FwMark = 0xca6c                          # SO_MARK of the tunnel's own datagrams: off | decimal | 0x hex
//! Address = 10.0.0.1/24, fd00::1/64        # several per line and/or several lines
//! MTU = 1420                               # default 1420 (wireguard), 1450 (vxlan)
//! Table = auto                             # auto (a route per AllowedIPs) | off | main | 1-4294967295
//! Mode = wireguard                         # ringtun: wireguard (TUN, L3) | vxlan (TAP, L2)
//! Workers = auto                           # ringtun: auto (one per usable CPU) | 1-1024
//! VNI = 1                                  # ringtun, vxlan only: 0-16777215, default 1
//! Bridge = br0                             # ringtun, vxlan only: enslave the TAP to this bridge
//! Offload = on                             # ringtun: TUN/TAP offloads and UDP GSO/GRO, default on
//! HandshakeOnStart = on                    # ringtun, wireguard only: contact peers with an Endpoint at start, default on
//! MetricsListen = 127.0.0.1:9586           # ringtun: serve GET /metrics (Prometheus) there; default off
//! SocketBuffer = 32M                       # ringtun: each tunnel socket's receive and send buffer, 64K-1G, default 32M
//! QueueLimit = 2M                          # ringtun: bytes a worker's flow queues hold each way, 64K-64M, default auto (1M to the wire, 2M to the device)
//!
//! [Peer]
//! PublicKey = <44 characters of base64>    # required in wireguard mode
//! PresharedKey = <44 characters of base64>
//! AllowedIPs = 10.0.1.0/24, fd00:1::/64    # several per line and/or several lines
//! Endpoint = 192.0.2.1:51820               # or [2001:db8::1]:51820 or host.name:51820; required in vxlan mode
//! PersistentKeepalive = 25                 # off or 0-65535 seconds (0 = off)
//! PinEndpoint = true                       # ringtun: roaming off (keep Endpoint), default false
//! SpreadFlows = true                       # ringtun, wireguard only, both ends ringtun: each inner flow from a source port of its own, default false
//! ```
//!
//! Section and key names are case-insensitive, as in wg-quick; values are trimmed; `#` starts
//! a comment anywhere on a line. wg-quick keys that ringtun does not act on (DNS, PreUp,
//! PostUp, PreDown, PostDown, SaveConfig) give a [`Warning`]; any other unknown key is
//! an error. Every [`ConfigError`] names the file, the line and the key. One prefix under
//! the AllowedIPs of two peers is an error (`wg` would quietly give it to the last one).
//!
//! Sizes take a K, M or G suffix (binary: 1K is 1024 bytes). `SocketBuffer`, `QueueLimit`,
//! `Workers`, `Mode` and `Offload` take effect at start; a reload leaves them as they are.
//!
//! VNI 1 is the default because `ip link add ... type vxlan` has none and a VNI must match on
//! both sides: 1 is the value people type first. The vxlan MTU default, 1450, is the kernel
//! vxlan device's: a VXLAN frame costs 50 bytes on a 1500-byte underlay.

mod address;
mod endpoint;
mod error;
mod ifname;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::num::{NonZeroU16, NonZeroUsize};
use std::path::Path;
use std::time::Duration;

pub use address::{AddressError, InterfaceAddr};
pub use endpoint::{Endpoint, EndpointError, ResolveError};
pub use error::{ConfigError, ErrorKind, Section, ValueProblem, Warning, WarningKind};
pub use ifname::IfName;
pub use netctl::names::IfNameError;
pub use tunnel_proto::wg::{IpPrefix, PeerConfig, PrefixError, TunnelConfig};
pub use tunnel_proto::{PresharedKey, PrivateKey, PublicKey};

/// The default MTU in wireguard mode, as wg-quick's: 1500 minus 80 bytes of IPv6 + UDP +
/// WireGuard overhead.
pub const DEFAULT_MTU_WIREGUARD: u32 = 1420;
/// The default MTU in vxlan mode, as the kernel's vxlan device: 1500 minus 50 bytes of
/// outer Ethernet-in-IPv4/UDP/VXLAN headers.
pub const DEFAULT_MTU_VXLAN: u32 = 1450;
/// The UDP port of VXLAN (RFC 7348 §5, IANA), used when `ListenPort` is absent in vxlan mode.
pub const VXLAN_PORT: u16 = 4789;
/// The VNI used when `VNI` is absent in vxlan mode.
pub const DEFAULT_VNI: u32 = 1;
/// The largest VNI: the field is 24 bits (RFC 7348 §5).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The largest `Workers =` value accepted.
pub const MAX_WORKERS: usize = 1024;
/// `SocketBuffer` when the file has none: enough that a burst of GSO sends
/// from the peer does not overflow the receive queue while a worker is busy.
pub const DEFAULT_SOCKET_BUFFER: usize = 32 << 20;
/// The `SocketBuffer =` values accepted.
pub const SOCKET_BUFFER_RANGE: std::ops::RangeInclusive<usize> = (64 << 10)..=(1 << 30);
/// The `QueueLimit =` values accepted.
pub const QUEUE_LIMIT_RANGE: std::ops::RangeInclusive<usize> = (64 << 10)..=(64 << 20);
/// Files larger than this are refused unread: no configuration comes near it.
pub const MAX_FILE_SIZE: usize = 1 << 20;

/// A parsed configuration file: one interface and its peers.
#[derive(Debug)]
pub struct Config {
    /// The interface name: the file's stem (`rt0.conf` → `rt0`) unless overridden.
    pub name: IfName,
    /// The file as the user named it, for messages.
    pub file: String,
    /// Settings of `[Interface]` common to both modes.
    pub interface: Interface,
    /// The mode and what only it uses: keys, VNI, peers.
    pub mode: ModeConfig,
}

/// `[Interface]` settings that apply in both modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The line of the `[Interface]` header.
    pub line: usize,
    /// The UDP port to listen on; `None` lets the kernel pick one (wireguard mode without
    /// `ListenPort`, or `ListenPort = 0`). Vxlan mode without `ListenPort` gives [`VXLAN_PORT`].
    pub listen_port: Option<u16>,
    /// `Address` entries in file order, host bits kept (`10.0.0.1/24`).
    pub addresses: Vec<InterfaceAddr>,
    /// The device MTU.
    pub mtu: u32,
    /// Whether the file set `MTU` (else `mtu` is the mode's default, which
    /// the daemon may lower for an IPv6 underlay as the kernel's VXLAN does).
    pub mtu_explicit: bool,
    /// Which routes to add for the peers' AllowedIPs.
    pub table: Table,
    /// How many worker threads (each a core, a device queue, a socket and a ring).
    pub workers: Workers,
    /// Whether to use TUN/TAP offloads and UDP GSO/GRO (`Offload = on`, the default).
    pub offload: bool,
    /// `FwMark`: the `SO_MARK` of the tunnel's own datagrams (0: none).
    pub fwmark: u32,
    /// `MetricsListen`: where `/metrics` is served (`None`: not served).
    pub metrics_listen: Option<MetricsListen>,
    /// `SocketBuffer`: bytes of receive and of send buffer asked for each
    /// tunnel socket ([`DEFAULT_SOCKET_BUFFER`] when absent).
    pub socket_buffer: usize,
    /// `QueueLimit`: bytes each worker's flow queues hold each way before
    /// the fattest flow loses its oldest packet (`None`: the defaults,
    /// [`QUEUED_READ_BYTES`](crate::worker::QUEUED_READ_BYTES) and
    /// [`QUEUED_RECEIVE_BYTES`](crate::worker::QUEUED_RECEIVE_BYTES)).
    pub queue_limit: Option<usize>,
}

/// `MetricsListen = ADDRESS:PORT`, and the line that set it (a port in
/// use at start is reported against that line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen {
    /// The address and port to serve `/metrics` on.
    pub addr: std::net::SocketAddr,
    /// The line of the file that set it.
    pub line: usize,
}

/// `Table =`: where the routes for AllowedIPs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// Add a route for each peer's AllowedIPs in the main table, as wg-quick does (default).
    Auto,
    /// Add no routes.
    Off,
    /// Add the routes to this routing table (`main` is 254).
    Id(u32),
}

/// `Workers =`: the number of data-plane workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workers {
    /// One per CPU the process may run on (default).
    Auto,
    /// Exactly this many (1 to [`MAX_WORKERS`]).
    Count(NonZeroUsize),
}

/// `Mode =`: which protocol the tunnel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// WireGuard over a TUN device (L3), the default.
    #[default]
    WireGuard,
    /// VXLAN over a TAP device (L2), plaintext.
    Vxlan,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WireGuard => "wireguard",
            Self::Vxlan => "vxlan",
        })
    }
}

/// What depends on the mode: a wireguard configuration always has its keys, a vxlan
/// configuration always has its endpoints, so the engine never checks for either.
#[derive(Debug)]
pub enum ModeConfig {
    /// `Mode = wireguard` (or no Mode).
    WireGuard(WireGuardConfig),
    /// `Mode = vxlan`.
    Vxlan(VxlanConfig),
}

/// The wireguard-mode part of a configuration.
#[derive(Debug)]
pub struct WireGuardConfig {
    /// This interface's static private key (zeroized on drop).
    pub private_key: PrivateKey,
    /// The peers in file order.
    pub peers: Vec<WireGuardPeer>,
    /// Start a handshake with every peer that has an endpoint as soon as
    /// the daemon runs (`HandshakeOnStart = on`, the default; wg waits for
    /// traffic). After a restart the other side's packets name a session
    /// this side no longer has, and only a handshake restores it.
    pub handshake_on_start: bool,
}

/// One `[Peer]` in wireguard mode.
#[derive(Debug)]
pub struct WireGuardPeer {
    /// The line of the `[Peer]` header, to name the peer in messages.
    pub line: usize,
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// The optional pre-shared key mixed into the handshake (zeroized on drop).
    pub preshared_key: Option<PresharedKey>,
    /// Inner prefixes routed to and accepted from this peer, host bits cleared as `wg`
    /// stores them, repeats removed; no prefix appears under two peers.
    pub allowed_ips: Vec<IpPrefix>,
    /// Where to send until the peer is heard from; `None` waits for it to call.
    pub endpoint: Option<Endpoint>,
    /// Send a keepalive after this many idle seconds; `None` (off or 0) sends none.
    pub persistent_keepalive: Option<NonZeroU16>,
    /// Keep the endpoint even when authenticated packets arrive from elsewhere (roaming off),
    /// for static site-to-site links. Without `endpoint`, the first address the peer is heard
    /// from is kept (tunnel-proto's rule).
    pub pin_endpoint: bool,
    /// The peer is a ringtun with `SpreadFlows` set for us: each inner flow goes to it from a
    /// source port of its own, so its receiving workers share our traffic, and data from its
    /// flow ports moves only the endpoint's address. Both ends must set it: a stock WireGuard
    /// peer would answer to whichever port it heard last.
    pub spread_flows: bool,
}

impl WireGuardConfig {
    /// What tunnel-proto's `Tunnel` is built from, every endpoint resolved ([`Endpoint::resolve`]:
    /// blocking DNS for a host name, so call it before the data path starts). `mtu` is the
    /// interface's, which bounds padding.
    pub fn to_tunnel_config(&self, mtu: u32) -> Result<TunnelConfig, ResolveError> {
        let mut tunnel = TunnelConfig::new(self.private_key.clone());
        tunnel.peers = self
            .peers
            .iter()
            .map(WireGuardPeer::to_peer_config)
            .collect::<Result<_, _>>()?;
        tunnel.mtu = u16::try_from(mtu).ok();
        tunnel.handshake_on_start = self.handshake_on_start;
        Ok(tunnel)
    }
}

impl WireGuardPeer {
    /// The peer as tunnel-proto takes it, its endpoint resolved ([`Endpoint::resolve`]).
    pub fn to_peer_config(&self) -> Result<PeerConfig, ResolveError> {
        let mut peer = PeerConfig::new(self.public_key);
        peer.preshared_key = self.preshared_key.clone();
        peer.allowed_ips = self.allowed_ips.clone();
        peer.endpoint = self.endpoint.as_ref().map(Endpoint::resolve).transpose()?;
        peer.persistent_keepalive = self
            .persistent_keepalive
            .map(|secs| Duration::from_secs(u64::from(secs.get())));
        peer.pin_endpoint = self.pin_endpoint;
        peer.spread_flows = self.spread_flows;
        Ok(peer)
    }
}

/// The vxlan-mode part of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The VXLAN network identifier (24 bits), [`DEFAULT_VNI`] when absent.
    pub vni: u32,
    /// A bridge to enslave the TAP device to.
    pub bridge: Option<IfName>,
    /// The remote VTEPs in file order.
    pub peers: Vec<VxlanPeer>,
}

/// One `[Peer]` in vxlan mode: a remote VTEP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPeer {
    /// The line of the `[Peer]` header, to name the peer in messages.
    pub line: usize,
    /// The remote VTEP's address.
    pub endpoint: Endpoint,
    /// Prefixes reachable through this VTEP, host bits cleared; only used for routes when
    /// `Table` is not `off`.
    pub allowed_ips: Vec<IpPrefix>,
}

impl Config {
    /// Reads and parses the file at `path`; the interface is named after the file's stem.
    /// Warns if the file is accessible by group or others.
    pub fn from_file(path: impl AsRef<Path>) -> Result<(Config, Vec<Warning>), ConfigError> {
        parse::from_file(path.as_ref(), None)
    }

    /// Like [`Config::from_file`], with the interface named `name` instead of after the file
    /// (`ringtun up --name`).
    pub fn from_file_named(
        path: impl AsRef<Path>,
        name: &str,
    ) -> Result<(Config, Vec<Warning>), ConfigError> {
        parse::from_file(path.as_ref(), Some(name))
    }

    /// Parses `text`; `file_label` names it in messages and its stem names the interface.
    pub fn parse(text: &str, file_label: &str) -> Result<(Config, Vec<Warning>), ConfigError> {
        parse::parse_text(text, file_label, None)
    }

    /// Like [`Config::parse`], with the interface named `name`.
    pub fn parse_named(
        text: &str,
        file_label: &str,
        name: &str,
    ) -> Result<(Config, Vec<Warning>), ConfigError> {
        parse::parse_text(text, file_label, Some(name))
    }

    /// Parses raw file contents, which need not be UTF-8 (an error names the line if not).
    pub fn parse_bytes(
        bytes: &[u8],
        file_label: &str,
        name: Option<&str>,
    ) -> Result<(Config, Vec<Warning>), ConfigError> {
        parse::parse_bytes(bytes, file_label, name)
    }

    /// The configuration's mode.
    pub fn mode(&self) -> Mode {
        match self.mode {
            ModeConfig::WireGuard(_) => Mode::WireGuard,
            ModeConfig::Vxlan(_) => Mode::Vxlan,
        }
    }
}
