//! What can go wrong in a configuration file, and what is merely worth a warning. Every
//! message starts with `FILE:LINE:` (or `FILE:` when no line is to blame) and names the key.

use std::fmt;
use std::io;

use super::Mode;
use super::address::AddressError;
use super::endpoint::EndpointError;
use netctl::names::IfNameError;
use tunnel_proto::KeyError;
use tunnel_proto::wg::{IpPrefix, PrefixError};

/// A `[Section]` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// `[Interface]`: this end of the tunnel.
    Interface,
    /// `[Peer]`: one remote site.
    Peer,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interface => "[Interface]",
            Self::Peer => "[Peer]",
        })
    }
}

/// A configuration file that cannot be used. Its Display is the sentence to show the user:
/// `rt0.conf:7: ListenPort = 70000: not a port number (0-65535)`.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// The 1-based line to blame, if one is.
    pub line: Option<usize>,
    /// What is wrong.
    #[source]
    pub kind: ErrorKind,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

/// The cause of a [`ConfigError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened or read.
    #[error("cannot read: {0}")]
    Read(#[source] io::Error),
    /// The file is implausibly large for a configuration.
    #[error("larger than {limit} bytes: not a configuration file")]
    TooLarge {
        /// The size limit in bytes.
        limit: usize,
    },
    /// The line is not valid UTF-8.
    #[error("not valid UTF-8 text")]
    NotUtf8,
    /// The line is neither `[Section]` nor `Key = Value`.
    #[error("expected `[Interface]`, `[Peer]` or `Key = Value`, found `{text}`")]
    Syntax {
        /// The offending text (shortened, escaped).
        text: String,
    },
    /// A `[Section]` other than `[Interface]` and `[Peer]`.
    #[error("unknown section [{name}] (expected [Interface] or [Peer])")]
    UnknownSection {
        /// The section name as written.
        name: String,
    },
    /// A key before the first section header.
    #[error("{key} appears before any [Interface] or [Peer] section")]
    KeyOutsideSection {
        /// The key as written.
        key: String,
    },
    /// A key that neither wg-quick nor ringtun knows in this section.
    #[error("unknown key {key} in {section}{}", hint_other_section(*.section, *.belongs_in))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The section it appeared in.
        section: Section,
        /// The section where this key would be valid, if any.
        belongs_in: Option<Section>,
    },
    /// A single-valued key given twice in one section.
    #[error("{key} is set twice in this section (first on line {first_line})")]
    DuplicateKey {
        /// The key's canonical name.
        key: &'static str,
        /// Where it was first set.
        first_line: usize,
    },
    /// A second `[Interface]` section.
    #[error("a second [Interface] section (the first is on line {first_line})")]
    DuplicateInterface {
        /// Where the first one starts.
        first_line: usize,
    },
    /// No `[Interface]` section at all.
    #[error("no [Interface] section")]
    NoInterface,
    /// A key the section needs in this mode is absent; the line is the section header's.
    #[error("{section} has no {key}, which Mode = {mode} requires")]
    MissingKey {
        /// The section lacking it.
        section: Section,
        /// The key's canonical name.
        key: &'static str,
        /// The mode that requires it.
        mode: Mode,
    },
    /// A value that does not parse as what the key takes.
    #[error("{key} = {value}: {problem}")]
    BadValue {
        /// The key's canonical name.
        key: &'static str,
        /// The value as written (shortened and escaped; `(hidden)` for secrets).
        value: String,
        /// What was expected instead.
        problem: ValueProblem,
    },
    /// A key that makes sense only in the other mode.
    #[error("{key} applies only with Mode = {applies_in} (this file is Mode = {mode})")]
    WrongMode {
        /// The key's canonical name.
        key: &'static str,
        /// The mode in which the key would apply.
        applies_in: Mode,
        /// The file's mode.
        mode: Mode,
    },
    /// Two peers share a `PublicKey` (wireguard) or an `Endpoint` (vxlan).
    #[error("another [Peer] (line {first_line}) has the same {key}")]
    DuplicatePeer {
        /// `PublicKey` or `Endpoint`.
        key: &'static str,
        /// The other peer's section line.
        first_line: usize,
    },
    /// The same AllowedIPs prefix under two peers. `wg` would silently give it to the last
    /// one; like tunnel-proto's table, ringtun refuses, as it hides a configuration mistake.
    #[error("AllowedIPs {prefix} is already given to the [Peer] on line {first_peer_line}")]
    AllowedIpConflict {
        /// The prefix (host bits cleared).
        prefix: IpPrefix,
        /// The section line of the peer that listed it first.
        first_peer_line: usize,
    },
    /// An explicit MTU below IPv6's minimum while an IPv6 address is configured.
    #[error(
        "MTU = {mtu}: IPv6 needs an MTU of at least 1280, and Address on line {address_line} is IPv6"
    )]
    MtuTooSmallForIpv6 {
        /// The MTU given.
        mtu: u32,
        /// The line of the IPv6 address.
        address_line: usize,
    },
    /// The interface name (from the file name or given explicitly) is not a valid Linux name.
    #[error("interface name {name:?} is not valid: {source}")]
    InvalidName {
        /// The name as derived or given.
        name: String,
        /// Why the kernel would refuse it.
        source: IfNameError,
    },
}

fn hint_other_section(section: Section, belongs_in: Option<Section>) -> String {
    match belongs_in {
        Some(other) if other != section => format!(" (it belongs in {other})"),
        _ => String::new(),
    }
}

/// What a value should have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueProblem {
    /// Nothing after `=`.
    #[error("empty value")]
    Empty,
    /// An entry of a comma-separated list is empty.
    #[error("empty entry in the comma-separated list")]
    EmptyListEntry,
    /// Not a UDP port.
    #[error("not a port number (0-65535)")]
    Port,
    /// Not a WireGuard key.
    #[error("not a key: {0}")]
    Key(KeyError),
    /// An `Address` entry that is not an address with a prefix length.
    #[error("{entry}: {source}")]
    Address {
        /// The entry (shortened, escaped).
        entry: String,
        /// Why it is not an address.
        source: AddressError,
    },
    /// An `AllowedIPs` entry that is not a prefix (the message quotes the entry).
    #[error("{0}")]
    AllowedIp(PrefixError),
    /// Not an MTU.
    #[error("not an MTU (68-65535)")]
    Mtu,
    /// Not a routing table setting.
    #[error("not a routing table (auto, off, main or a table number 1-4294967295)")]
    Table,
    /// Not a mode.
    #[error("not a mode (wireguard or vxlan)")]
    Mode,
    /// Not a worker count.
    #[error("not a worker count (auto or 1-1024)")]
    Workers,
    /// Not a VXLAN network identifier.
    #[error("not a VNI (0-16777215)")]
    Vni,
    /// Not an interface name.
    #[error("not an interface name: {0}")]
    IfName(IfNameError),
    /// Not a boolean.
    #[error("not a switch (on, off, true or false)")]
    Bool,
    /// Not a keepalive interval.
    #[error("not a keepalive interval (off or 0-65535 seconds)")]
    Keepalive,
    /// Not a firewall mark.
    #[error("not a firewall mark (off, or 0-4294967295 in decimal or 0x hex)")]
    FwMark,
    /// Not an endpoint.
    #[error("not an endpoint: {0}")]
    Endpoint(EndpointError),
    /// Not a socket buffer size.
    #[error("not a socket buffer size (64K-1G: bytes, or a number with K, M or G)")]
    SocketBuffer,
    /// Not a queue limit.
    #[error("not a queue limit (auto, or 64K-64M: bytes, or a number with K, M or G)")]
    QueueLimit,
    /// Not a numeric address and port to listen on.
    #[error("not an address and port to listen on (127.0.0.1:9586, [::1]:9586, 0.0.0.0:9586)")]
    ListenAddress,
}

/// Something in a usable configuration that the user should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file as the user named it.
    pub file: String,
    /// The 1-based line concerned, if one is.
    pub line: Option<usize>,
    /// What it is about.
    pub kind: WarningKind,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

/// The subject of a [`Warning`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WarningKind {
    /// A wg-quick key ringtun does not act on (DNS, hooks, SaveConfig, FwMark).
    #[error("{key} is a wg-quick key that ringtun does not act on; ignored")]
    IgnoredWgQuickKey {
        /// The key's canonical name.
        key: &'static str,
    },
    /// A key that has no meaning in the file's mode.
    #[error("{key} has no effect with Mode = {mode}{}; ignored", mode_reason(*.mode))]
    IgnoredInMode {
        /// The key's canonical name.
        key: &'static str,
        /// The file's mode.
        mode: Mode,
    },
    /// A switch that the file's mode always has on.
    #[error(
        "{key} is always on with Mode = {mode} (each inner flow leaves from a source port of its own, as RFC 7348 asks); ignored"
    )]
    AlwaysOnInMode {
        /// The key's canonical name.
        key: &'static str,
        /// The file's mode.
        mode: Mode,
    },
    /// The file is readable or writable by others than its owner, as `wg` warns.
    #[error("is {who} accessible (mode {mode:04o}); keys belong in a private file: chmod 600 it")]
    Accessible {
        /// `world` or `group`.
        who: &'static str,
        /// The file's permission bits.
        mode: u32,
    },
}

fn mode_reason(mode: Mode) -> &'static str {
    match mode {
        Mode::Vxlan => " (VXLAN is plaintext, peers are identified by Endpoint)",
        Mode::WireGuard => "",
    }
}
