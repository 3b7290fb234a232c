//! The line parser (sections, `Key = Value`, values) and the checks that span lines.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroUsize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{
    Config, ConfigError, DEFAULT_MTU_VXLAN, DEFAULT_MTU_WIREGUARD, DEFAULT_SOCKET_BUFFER,
    DEFAULT_VNI, Endpoint, ErrorKind, IfName, Interface, InterfaceAddr, IpPrefix, MAX_FILE_SIZE,
    MAX_VNI, MAX_WORKERS, MetricsListen, Mode, ModeConfig, PresharedKey, PrivateKey, PublicKey,
    QUEUE_LIMIT_RANGE, SOCKET_BUFFER_RANGE, Section, Table, VXLAN_PORT, ValueProblem, VxlanConfig,
    VxlanPeer, Warning, WarningKind, WireGuardConfig, WireGuardPeer, Workers,
};

/// Values quoted in messages are cut to this many characters, so a pasted blob stays readable.
const SHOWN_MAX_CHARS: usize = 60;
/// The smallest MTU the kernel accepts for IPv4 (RFC 791), and the largest a TUN/TAP takes.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;
/// IPv6 refuses links below this MTU (RFC 8200 §5); the kernel removes IPv6 from such a link.
const IPV6_MIN_MTU: u32 = 1280;
/// `main` in /etc/iproute2/rt_tables.
const RT_TABLE_MAIN: u32 = 254;

pub(super) fn from_file(
    path: &Path,
    name: Option<&str>,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let label = path.display().to_string();
    let fail = |kind| ConfigError {
        file: label.clone(),
        line: None,
        kind,
    };
    let file = File::open(path).map_err(|e| fail(ErrorKind::Read(e)))?;
    // fstat on the open file: the mode checked is that of the bytes read.
    let mode = file
        .metadata()
        .map_err(|e| fail(ErrorKind::Read(e)))?
        .permissions()
        .mode();
    let mut bytes = Vec::new();
    // One byte over the limit tells "too large" from "exactly the limit" without reading on.
    file.take(MAX_FILE_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(ErrorKind::Read(e)))?;
    if bytes.len() > MAX_FILE_SIZE {
        return Err(fail(ErrorKind::TooLarge {
            limit: MAX_FILE_SIZE,
        }));
    }
    let (config, mut warnings) = parse_bytes(&bytes, &label, name)?;
    if let Some(kind) = access_warning(mode) {
        warnings.insert(
            0,
            Warning {
                file: label,
                line: None,
                kind,
            },
        );
    }
    Ok((config, warnings))
}

/// `wg` warns when a configuration is world accessible; group access leaks the key as well.
fn access_warning(mode: u32) -> Option<WarningKind> {
    let mode = mode & 0o7777;
    if mode & 0o007 != 0 {
        Some(WarningKind::Accessible { who: "world", mode })
    } else if mode & 0o070 != 0 {
        Some(WarningKind::Accessible { who: "group", mode })
    } else {
        None
    }
}

pub(super) fn parse_bytes(
    bytes: &[u8],
    label: &str,
    name: Option<&str>,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_text(text, label, name),
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            Err(ConfigError {
                file: label.to_owned(),
                line: Some(line),
                kind: ErrorKind::NotUtf8,
            })
        }
    }
}

pub(super) fn parse_text(
    text: &str,
    label: &str,
    name: Option<&str>,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    let name = interface_name(label, name)?;
    // Editors on other systems may start a UTF-8 file with a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser {
        file: label,
        warnings: Vec::new(),
        interface: None,
        peers: Vec::new(),
        section: None,
    };
    for (index, line) in text.split('\n').enumerate() {
        parser.line(index + 1, line)?;
    }
    parser.finish(name)
}

/// The explicit name, else the file's stem as wg-quick does (`/etc/ringtun/rt0.conf` → `rt0`).
fn interface_name(label: &str, name: Option<&str>) -> Result<IfName, ConfigError> {
    let name = match name {
        Some(n) => n,
        None => Path::new(label)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(""),
    };
    IfName::new(name).map_err(|source| ConfigError {
        file: label.to_owned(),
        line: None,
        kind: ErrorKind::InvalidName {
            name: shown(name),
            source,
        },
    })
}

/// A value as quoted in a message: control characters escaped, long values cut.
fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A known key: its canonical name, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    PrivateKey,
    ListenPort,
    Address,
    Mtu,
    Table,
    Mode,
    Workers,
    Vni,
    Bridge,
    Offload,
    HandshakeOnStart,
    FwMark,
    MetricsListen,
    SocketBuffer,
    QueueLimit,
    /// A wg-quick key ringtun does not act on.
    WgQuickOnly,
    PublicKey,
    PresharedKey,
    AllowedIps,
    Endpoint,
    PersistentKeepalive,
    PinEndpoint,
    SpreadFlows,
}

const INTERFACE_KEYS: &[(&str, Field)] = &[
    ("PrivateKey", Field::PrivateKey),
    ("ListenPort", Field::ListenPort),
    ("Address", Field::Address),
    ("MTU", Field::Mtu),
    ("Table", Field::Table),
    ("Mode", Field::Mode),
    ("Workers", Field::Workers),
    ("VNI", Field::Vni),
    ("Bridge", Field::Bridge),
    ("Offload", Field::Offload),
    ("HandshakeOnStart", Field::HandshakeOnStart),
    ("DNS", Field::WgQuickOnly),
    ("PreUp", Field::WgQuickOnly),
    ("PostUp", Field::WgQuickOnly),
    ("PreDown", Field::WgQuickOnly),
    ("PostDown", Field::WgQuickOnly),
    ("SaveConfig", Field::WgQuickOnly),
    ("FwMark", Field::FwMark),
    ("MetricsListen", Field::MetricsListen),
    ("SocketBuffer", Field::SocketBuffer),
    ("QueueLimit", Field::QueueLimit),
];

const PEER_KEYS: &[(&str, Field)] = &[
    ("PublicKey", Field::PublicKey),
    ("PresharedKey", Field::PresharedKey),
    ("AllowedIPs", Field::AllowedIps),
    ("Endpoint", Field::Endpoint),
    ("PersistentKeepalive", Field::PersistentKeepalive),
    ("PinEndpoint", Field::PinEndpoint),
    ("SpreadFlows", Field::SpreadFlows),
];

fn keys_of(section: Section) -> &'static [(&'static str, Field)] {
    match section {
        Section::Interface => INTERFACE_KEYS,
        Section::Peer => PEER_KEYS,
    }
}

fn lookup(section: Section, key: &str) -> Option<(&'static str, Field)> {
    keys_of(section)
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(key))
        .copied()
}

/// A single-valued key: its value and the line that set it.
struct Slot<T>(Option<(T, usize)>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Slot<T> {
    fn set(&mut self, key: &'static str, line: usize, value: T) -> Result<(), ErrorKind> {
        if let Some((_, first_line)) = self.0 {
            return Err(ErrorKind::DuplicateKey { key, first_line });
        }
        self.0 = Some((value, line));
        Ok(())
    }

    fn line(&self) -> Option<usize> {
        self.0.as_ref().map(|(_, line)| *line)
    }

    fn value(self) -> Option<T> {
        self.0.map(|(v, _)| v)
    }
}

impl<T: Copy> Slot<T> {
    fn get(&self) -> Option<T> {
        self.0.as_ref().map(|(v, _)| *v)
    }
}

#[derive(Default)]
struct RawInterface {
    line: usize,
    private_key: Slot<PrivateKey>,
    listen_port: Slot<u16>,
    addresses: Vec<(InterfaceAddr, usize)>,
    mtu: Slot<u32>,
    table: Slot<Table>,
    mode: Slot<Mode>,
    workers: Slot<Workers>,
    vni: Slot<u32>,
    bridge: Slot<IfName>,
    offload: Slot<bool>,
    handshake_on_start: Slot<bool>,
    fwmark: Slot<u32>,
    metrics_listen: Slot<SocketAddr>,
    socket_buffer: Slot<usize>,
    queue_limit: Slot<Option<usize>>,
}

#[derive(Default)]
struct RawPeer {
    line: usize,
    public_key: Slot<PublicKey>,
    preshared_key: Slot<PresharedKey>,
    allowed_ips: Vec<(IpPrefix, usize)>,
    endpoint: Slot<Endpoint>,
    persistent_keepalive: Slot<Option<NonZeroU16>>,
    pin_endpoint: Slot<bool>,
    spread_flows: Slot<bool>,
}

struct Parser<'a> {
    file: &'a str,
    warnings: Vec<Warning>,
    interface: Option<RawInterface>,
    peers: Vec<RawPeer>,
    section: Option<Section>,
}

impl Parser<'_> {
    fn error(&self, line: usize, kind: ErrorKind) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: Some(line),
            kind,
        }
    }

    fn warn(&mut self, line: usize, kind: WarningKind) {
        self.warnings.push(Warning {
            file: self.file.to_owned(),
            line: Some(line),
            kind,
        });
    }

    fn line(&mut self, line: usize, raw: &str) -> Result<(), ConfigError> {
        // As wg-quick: everything from the first `#` is a comment (no key value contains one).
        let content = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if content.is_empty() {
            return Ok(());
        }
        if let Some(rest) = content.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(self.error(
                    line,
                    ErrorKind::Syntax {
                        text: shown(content),
                    },
                ));
            };
            return self.section_header(line, name.trim());
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(self.error(
                line,
                ErrorKind::Syntax {
                    text: shown(content),
                },
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(self.error(
                line,
                ErrorKind::Syntax {
                    text: shown(content),
                },
            ));
        }
        let Some(section) = self.section else {
            return Err(self.error(line, ErrorKind::KeyOutsideSection { key: shown(key) }));
        };
        let Some((name, known)) = lookup(section, key) else {
            let other = match section {
                Section::Interface => Section::Peer,
                Section::Peer => Section::Interface,
            };
            let belongs_in = lookup(other, key).map(|_| other);
            return Err(self.error(
                line,
                ErrorKind::UnknownKey {
                    key: shown(key),
                    section,
                    belongs_in,
                },
            ));
        };
        if known == Field::WgQuickOnly {
            self.warn(line, WarningKind::IgnoredWgQuickKey { key: name });
            return Ok(());
        }
        if value.is_empty() && known != Field::AllowedIps {
            return Err(self.error(line, bad_value(name, known, value, ValueProblem::Empty)));
        }
        let result = match section {
            Section::Interface => self.interface_key(line, name, known, value),
            Section::Peer => self.peer_key(line, name, known, value),
        };
        result.map_err(|kind| self.error(line, kind))
    }

    fn section_header(&mut self, line: usize, name: &str) -> Result<(), ConfigError> {
        if name.eq_ignore_ascii_case("Interface") {
            if let Some(first) = &self.interface {
                let first_line = first.line;
                return Err(self.error(line, ErrorKind::DuplicateInterface { first_line }));
            }
            self.interface = Some(RawInterface {
                line,
                ..RawInterface::default()
            });
            self.section = Some(Section::Interface);
        } else if name.eq_ignore_ascii_case("Peer") {
            self.peers.push(RawPeer {
                line,
                ..RawPeer::default()
            });
            self.section = Some(Section::Peer);
        } else {
            return Err(self.error(line, ErrorKind::UnknownSection { name: shown(name) }));
        }
        Ok(())
    }

    fn interface_key(
        &mut self,
        line: usize,
        name: &'static str,
        key: Field,
        value: &str,
    ) -> Result<(), ErrorKind> {
        let bad = |problem| bad_value(name, key, value, problem);
        let Some(iface) = self.interface.as_mut() else {
            return Ok(());
        };
        match key {
            Field::PrivateKey => {
                let k = PrivateKey::from_base64(value).map_err(|e| bad(ValueProblem::Key(e)))?;
                iface.private_key.set(name, line, k)
            }
            Field::ListenPort => {
                let port = number(value, 0..=u64::from(u16::MAX))
                    .ok_or_else(|| bad(ValueProblem::Port))?;
                iface.listen_port.set(name, line, port as u16)
            }
            Field::FwMark => {
                let mark = fwmark(value).ok_or_else(|| bad(ValueProblem::FwMark))?;
                iface.fwmark.set(name, line, mark)
            }
            Field::Address => {
                for addr in address_list(value).map_err(bad)? {
                    iface.addresses.push((addr, line));
                }
                Ok(())
            }
            Field::Mtu => {
                let mtu = number(
                    value,
                    u64::from(*MTU_RANGE.start())..=u64::from(*MTU_RANGE.end()),
                )
                .ok_or_else(|| bad(ValueProblem::Mtu))?;
                iface.mtu.set(name, line, mtu as u32)
            }
            Field::Table => {
                let table = if value.eq_ignore_ascii_case("auto") {
                    Table::Auto
                } else if value.eq_ignore_ascii_case("off") {
                    Table::Off
                } else if value.eq_ignore_ascii_case("main") {
                    Table::Id(RT_TABLE_MAIN)
                } else {
                    let id = number(value, 1..=u64::from(u32::MAX))
                        .ok_or_else(|| bad(ValueProblem::Table))?;
                    Table::Id(id as u32)
                };
                iface.table.set(name, line, table)
            }
            Field::Mode => {
                let mode = if value.eq_ignore_ascii_case("wireguard") {
                    Mode::WireGuard
                } else if value.eq_ignore_ascii_case("vxlan") {
                    Mode::Vxlan
                } else {
                    return Err(bad(ValueProblem::Mode));
                };
                iface.mode.set(name, line, mode)
            }
            Field::Workers => {
                let workers = if value.eq_ignore_ascii_case("auto") {
                    Workers::Auto
                } else {
                    number(value, 1..=MAX_WORKERS as u64)
                        .and_then(|n| NonZeroUsize::new(n as usize))
                        .map(Workers::Count)
                        .ok_or_else(|| bad(ValueProblem::Workers))?
                };
                iface.workers.set(name, line, workers)
            }
            Field::Vni => {
                let vni =
                    number(value, 0..=u64::from(MAX_VNI)).ok_or_else(|| bad(ValueProblem::Vni))?;
                iface.vni.set(name, line, vni as u32)
            }
            Field::Bridge => {
                let bridge = IfName::new(value).map_err(|e| bad(ValueProblem::IfName(e)))?;
                iface.bridge.set(name, line, bridge)
            }
            Field::Offload => {
                let on = boolean(value).ok_or_else(|| bad(ValueProblem::Bool))?;
                iface.offload.set(name, line, on)
            }
            Field::HandshakeOnStart => {
                let on = boolean(value).ok_or_else(|| bad(ValueProblem::Bool))?;
                iface.handshake_on_start.set(name, line, on)
            }
            Field::MetricsListen => {
                // Numeric only: a name to resolve would make the port that
                // is served depend on the resolver at start.
                let addr: SocketAddr = value
                    .parse()
                    .map_err(|_| bad(ValueProblem::ListenAddress))?;
                iface.metrics_listen.set(name, line, addr)
            }
            Field::SocketBuffer => {
                let bytes = size(value)
                    .filter(|n| SOCKET_BUFFER_RANGE.contains(n))
                    .ok_or_else(|| bad(ValueProblem::SocketBuffer))?;
                iface.socket_buffer.set(name, line, bytes)
            }
            Field::QueueLimit => {
                let limit = if value.eq_ignore_ascii_case("auto") {
                    None
                } else {
                    Some(
                        size(value)
                            .filter(|n| QUEUE_LIMIT_RANGE.contains(n))
                            .ok_or_else(|| bad(ValueProblem::QueueLimit))?,
                    )
                };
                iface.queue_limit.set(name, line, limit)
            }
            // Peer keys never reach here: `lookup` took them from the interface table.
            _ => Ok(()),
        }
    }

    fn peer_key(
        &mut self,
        line: usize,
        name: &'static str,
        key: Field,
        value: &str,
    ) -> Result<(), ErrorKind> {
        let bad = |problem| bad_value(name, key, value, problem);
        let Some(peer) = self.peers.last_mut() else {
            return Ok(());
        };
        match key {
            Field::PublicKey => {
                let k = PublicKey::from_base64(value).map_err(|e| bad(ValueProblem::Key(e)))?;
                peer.public_key.set(name, line, k)
            }
            Field::PresharedKey => {
                let k = PresharedKey::from_base64(value).map_err(|e| bad(ValueProblem::Key(e)))?;
                peer.preshared_key.set(name, line, k)
            }
            Field::AllowedIps => {
                // `AllowedIPs =` with nothing is valid in wg: no addresses.
                if !value.is_empty() {
                    for prefix in prefix_list(value).map_err(bad)? {
                        peer.allowed_ips.push((prefix, line));
                    }
                }
                Ok(())
            }
            Field::Endpoint => {
                let ep = value
                    .parse::<Endpoint>()
                    .map_err(|e| bad(ValueProblem::Endpoint(e)))?;
                peer.endpoint.set(name, line, ep)
            }
            Field::PersistentKeepalive => {
                let secs = if value.eq_ignore_ascii_case("off") {
                    None
                } else {
                    let n = number(value, 0..=u64::from(u16::MAX))
                        .ok_or_else(|| bad(ValueProblem::Keepalive))?;
                    NonZeroU16::new(n as u16)
                };
                peer.persistent_keepalive.set(name, line, secs)
            }
            Field::PinEndpoint => {
                let on = boolean(value).ok_or_else(|| bad(ValueProblem::Bool))?;
                peer.pin_endpoint.set(name, line, on)
            }
            Field::SpreadFlows => {
                let on = boolean(value).ok_or_else(|| bad(ValueProblem::Bool))?;
                peer.spread_flows.set(name, line, on)
            }
            // Interface keys never reach here: `lookup` took them from the peer table.
            _ => Ok(()),
        }
    }

    fn finish(mut self, name: IfName) -> Result<(Config, Vec<Warning>), ConfigError> {
        let Some(raw) = self.interface.take() else {
            return Err(ConfigError {
                file: self.file.to_owned(),
                line: None,
                kind: ErrorKind::NoInterface,
            });
        };
        let mode = raw.mode.get().unwrap_or_default();
        let mtu = match raw.mtu.0 {
            Some((mtu, mtu_line)) => {
                if mtu < IPV6_MIN_MTU
                    && let Some((_, address_line)) =
                        raw.addresses.iter().find(|(a, _)| !a.is_ipv4())
                {
                    let address_line = *address_line;
                    return Err(self.error(
                        mtu_line,
                        ErrorKind::MtuTooSmallForIpv6 { mtu, address_line },
                    ));
                }
                mtu
            }
            None => match mode {
                Mode::WireGuard => DEFAULT_MTU_WIREGUARD,
                Mode::Vxlan => DEFAULT_MTU_VXLAN,
            },
        };
        let listen_port = match (raw.listen_port.get(), mode) {
            // Port 0 asks the kernel for any free port, as with wg.
            (Some(0), _) | (None, Mode::WireGuard) => None,
            (Some(port), _) => Some(port),
            (None, Mode::Vxlan) => Some(VXLAN_PORT),
        };
        let interface = Interface {
            line: raw.line,
            listen_port,
            addresses: raw.addresses.iter().map(|(a, _)| *a).collect(),
            mtu,
            mtu_explicit: raw.mtu.0.is_some(),
            table: raw.table.get().unwrap_or(Table::Auto),
            workers: raw.workers.get().unwrap_or(Workers::Auto),
            offload: raw.offload.get().unwrap_or(true),
            fwmark: raw.fwmark.get().unwrap_or(0),
            metrics_listen: raw
                .metrics_listen
                .0
                .map(|(addr, line)| MetricsListen { addr, line }),
            socket_buffer: raw.socket_buffer.get().unwrap_or(DEFAULT_SOCKET_BUFFER),
            queue_limit: raw.queue_limit.get().flatten(),
        };
        let peers = std::mem::take(&mut self.peers);
        let allowed_ips = self.settle_allowed_ips(&peers)?;
        let mode_config = match mode {
            Mode::WireGuard => self.wireguard(raw, peers, allowed_ips)?,
            Mode::Vxlan => self.vxlan(raw, peers, allowed_ips)?,
        };
        let config = Config {
            name,
            file: self.file.to_owned(),
            interface,
            mode: mode_config,
        };
        // Checks that span lines warn after the line-by-line pass: restore file order.
        self.warnings.sort_by_key(|w| w.line);
        Ok((config, self.warnings))
    }

    /// Each peer's AllowedIPs, repeats within a peer collapsed. A prefix under two peers is
    /// refused at its second listing (see [`ErrorKind::AllowedIpConflict`]).
    fn settle_allowed_ips(&self, peers: &[RawPeer]) -> Result<Vec<Vec<IpPrefix>>, ConfigError> {
        let mut owner: HashMap<IpPrefix, usize> = HashMap::new();
        let mut settled = Vec::with_capacity(peers.len());
        for peer in peers {
            let mut prefixes = Vec::with_capacity(peer.allowed_ips.len());
            for &(prefix, line) in &peer.allowed_ips {
                match owner.get(&prefix) {
                    Some(&first_peer_line) if first_peer_line != peer.line => {
                        return Err(self.error(
                            line,
                            ErrorKind::AllowedIpConflict {
                                prefix,
                                first_peer_line,
                            },
                        ));
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(prefix, peer.line);
                        prefixes.push(prefix);
                    }
                }
            }
            settled.push(prefixes);
        }
        Ok(settled)
    }

    fn wireguard(
        &mut self,
        raw: RawInterface,
        peers: Vec<RawPeer>,
        allowed_ips: Vec<Vec<IpPrefix>>,
    ) -> Result<ModeConfig, ConfigError> {
        let mode = Mode::WireGuard;
        for (key, line) in [("VNI", raw.vni.line()), ("Bridge", raw.bridge.line())] {
            if let Some(line) = line {
                return Err(self.error(
                    line,
                    ErrorKind::WrongMode {
                        key,
                        applies_in: Mode::Vxlan,
                        mode,
                    },
                ));
            }
        }
        let iface_line = raw.line;
        let Some(private_key) = raw.private_key.value() else {
            return Err(self.error(
                iface_line,
                ErrorKind::MissingKey {
                    section: Section::Interface,
                    key: "PrivateKey",
                    mode,
                },
            ));
        };
        let mut out: Vec<WireGuardPeer> = Vec::with_capacity(peers.len());
        for (peer, allowed_ips) in peers.into_iter().zip(allowed_ips) {
            let Some(public_key) = peer.public_key.value() else {
                return Err(self.error(
                    peer.line,
                    ErrorKind::MissingKey {
                        section: Section::Peer,
                        key: "PublicKey",
                        mode,
                    },
                ));
            };
            if let Some(first) = out.iter().find(|p| p.public_key == public_key) {
                let first_line = first.line;
                return Err(self.error(
                    peer.line,
                    ErrorKind::DuplicatePeer {
                        key: "PublicKey",
                        first_line,
                    },
                ));
            }
            let pin_endpoint = peer.pin_endpoint.get().unwrap_or(false);
            let endpoint = peer.endpoint.value();
            out.push(WireGuardPeer {
                line: peer.line,
                public_key,
                preshared_key: peer.preshared_key.value(),
                allowed_ips,
                endpoint,
                persistent_keepalive: peer.persistent_keepalive.get().flatten(),
                pin_endpoint,
                spread_flows: peer.spread_flows.get().unwrap_or(false),
            });
        }
        Ok(ModeConfig::WireGuard(WireGuardConfig {
            private_key,
            peers: out,
            handshake_on_start: raw.handshake_on_start.get().unwrap_or(true),
        }))
    }

    fn vxlan(
        &mut self,
        raw: RawInterface,
        peers: Vec<RawPeer>,
        allowed_ips: Vec<Vec<IpPrefix>>,
    ) -> Result<ModeConfig, ConfigError> {
        let mode = Mode::Vxlan;
        for (key, line) in [
            ("PrivateKey", raw.private_key.line()),
            ("HandshakeOnStart", raw.handshake_on_start.line()),
        ] {
            if let Some(line) = line {
                self.warn(line, WarningKind::IgnoredInMode { key, mode });
            }
        }
        let mut out: Vec<VxlanPeer> = Vec::with_capacity(peers.len());
        for (peer, allowed_ips) in peers.into_iter().zip(allowed_ips) {
            for (key, line) in [
                ("PublicKey", peer.public_key.line()),
                ("PresharedKey", peer.preshared_key.line()),
                ("PersistentKeepalive", peer.persistent_keepalive.line()),
                ("PinEndpoint", peer.pin_endpoint.line()),
            ] {
                if let Some(line) = line {
                    self.warn(line, WarningKind::IgnoredInMode { key, mode });
                }
            }
            if let Some(line) = peer.spread_flows.line() {
                let key = "SpreadFlows";
                self.warn(line, WarningKind::AlwaysOnInMode { key, mode });
            }
            let Some(endpoint) = peer.endpoint.value() else {
                return Err(self.error(
                    peer.line,
                    ErrorKind::MissingKey {
                        section: Section::Peer,
                        key: "Endpoint",
                        mode,
                    },
                ));
            };
            if let Some(first) = out.iter().find(|p| p.endpoint == endpoint) {
                let first_line = first.line;
                return Err(self.error(
                    peer.line,
                    ErrorKind::DuplicatePeer {
                        key: "Endpoint",
                        first_line,
                    },
                ));
            }
            out.push(VxlanPeer {
                line: peer.line,
                endpoint,
                allowed_ips,
            });
        }
        Ok(ModeConfig::Vxlan(VxlanConfig {
            vni: raw.vni.get().unwrap_or(DEFAULT_VNI),
            bridge: raw.bridge.value(),
            peers: out,
        }))
    }
}

fn bad_value(name: &'static str, key: Field, value: &str, problem: ValueProblem) -> ErrorKind {
    // A secret stays out of messages and logs, even a mistyped one.
    let value = if matches!(key, Field::PrivateKey | Field::PresharedKey) {
        "(hidden)".to_owned()
    } else {
        shown(value)
    };
    ErrorKind::BadValue {
        key: name,
        value,
        problem,
    }
}

/// A decimal number within `range`: digits only, since `u64::from_str` would take a `+`.
fn number(s: &str, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| range.contains(n))
}

/// A size in bytes: digits, then optionally K, M or G (binary, any case).
fn size(s: &str) -> Option<usize> {
    let (digits, shift) = match s.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n = number(digits, 0..=u64::MAX >> 30)?;
    usize::try_from(n << shift).ok()
}

/// `FwMark`: `off`, or a number in decimal or `0x` hex, as wg-quick takes it.
fn fwmark(s: &str) -> Option<u32> {
    if s.eq_ignore_ascii_case("off") {
        return Some(0);
    }
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None => number(s, 0..=u64::from(u32::MAX)).map(|n| n as u32),
    }
}

fn boolean(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("on") || s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// `Address` entries: comma-separated, and blank-separated too, since wg-quick splits on both.
fn address_list(value: &str) -> Result<Vec<InterfaceAddr>, ValueProblem> {
    let mut addrs = Vec::new();
    for entry in value.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(ValueProblem::EmptyListEntry);
        }
        for word in entry.split_whitespace() {
            let addr = word
                .parse::<InterfaceAddr>()
                .map_err(|source| ValueProblem::Address {
                    entry: shown(word),
                    source,
                })?;
            addrs.push(addr);
        }
    }
    Ok(addrs)
}

/// `AllowedIPs` entries: comma-separated only, as `wg` reads them.
fn prefix_list(value: &str) -> Result<Vec<IpPrefix>, ValueProblem> {
    value
        .split(',')
        .map(str::trim)
        .map(|entry| {
            if entry.is_empty() {
                return Err(ValueProblem::EmptyListEntry);
            }
            entry.parse::<IpPrefix>().map_err(ValueProblem::AllowedIp)
        })
        .collect()
}
