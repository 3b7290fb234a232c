//! The UAPI wire format: framing a client's byte stream into [`Request`]s,
//! parsing and validating a whole `set` before anything is applied, and
//! writing `get`, `set` and ringtun's own answers byte for byte as
//! wireguard-go does.
//!
//! Pure: no sockets, no threads, no clock. The server (next to this module)
//! feeds what it reads to a [`Framer`], acts on each [`Request`] and writes
//! the answer this module serialises.
//!
//! # The protocol
//!
//! A request is a request line, then `key=value` lines, then an empty line;
//! an answer is `key=value` lines ending with `errno=N` and an empty line:
//!
//! ```text
//! get=1\n\n                     -> private_key=..\n..allowed_ip=..\nerrno=0\n\n
//! set=1\nlisten_port=51820\n\n  -> errno=0\n\n   (or errno=-22\n\n)
//! ringtun_show=1\n\n            -> json={..}\nerrno=0\n\n
//! ringtun_down=1\n\n            -> errno=0\n\n
//! ringtun_reload=1\n\n          -> errno=0\n\n
//! ```
//!
//! References: wireguard-go `device/uapi.go` (the server: `IpcHandle`,
//! `IpcGetOperation`, `IpcSetOperation`), wireguard-go `ipc/uapi_unix.go`
//! (the errnos), wireguard-tools `src/ipc-uapi.h` (the client:
//! `userspace_set_device`, `userspace_get_device`) and
//! <https://www.wireguard.com/xplatform/>.
//!
//! # Where ringtun follows wireguard-go, and where it does not
//!
//! Followed exactly: the request lines; the one byte read after `get=1`;
//! which keys a set accepts where, and the errno of each failure; `\r\n`
//! line ends inside a set body (Go's `bufio.ScanLines` drops the `\r`); a
//! set cut short by the end of input counting as complete; all-zero private
//! and preshared keys meaning "none"; private keys clamped when set (so `get`
//! prints them clamped); the order and format of every `get` line.
//!
//! Different, on purpose:
//! - A set is parsed and validated whole before anything is returned, so a
//!   bad line changes nothing. wireguard-go applies each line as it reads it
//!   and stops at the bad one, leaving the lines before it applied.
//! - Lines and requests have size limits ([`Framer::new`]). wireguard-go's
//!   request line is unbounded and its set lines fail at 64 KiB with EIO.
//! - The whole set is consumed even when it fails, so the next request on the
//!   connection starts where it should. wireguard-go stops reading at the bad
//!   line, and whatever of the body its scanner had not yet buffered is then
//!   read as request lines (which closes the connection). That scanner also
//!   buffers past the empty line, so a request pipelined behind a set can be
//!   lost; here it is not.
//! - Endpoints are numeric only and a link-local zone must be a number
//!   (`[fe80::1%2]:51820`): resolving an interface name takes a system call.
//!   wireguard-go's `netip.ParseAddrPort` also takes `%eth0`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tunnel_proto::wg::IpPrefix;
use tunnel_proto::{KEY_LEN, PresharedKey, PrivateKey, PublicKey};
use zeroize::{Zeroize, Zeroizing};

/// A line limit that fits every line a real client sends (the longest, an
/// IPv6 endpoint with a zone, is under 80 bytes) with room to spare.
pub const MAX_LINE: usize = 4096;

/// A request limit that fits a `wg setconf` with every peer an interface
/// may have (65535; a peer with a few prefixes is about 300 bytes).
pub const MAX_REQUEST: usize = 24 << 20;

/// Buffer capacity a framer keeps between requests; more is given back.
const KEEP_CAPACITY: usize = 64 << 10;

/// The request lines, without their newline.
const GET: &[u8] = b"get=1";
const SET: &[u8] = b"set=1";
const SHOW: &[u8] = b"ringtun_show=1";
const DOWN: &[u8] = b"ringtun_down=1";
const RELOAD: &[u8] = b"ringtun_reload=1";
const OPERATIONS: [&[u8]; 5] = [GET, SET, SHOW, DOWN, RELOAD];

/// An errno the protocol answers with.
///
/// On the wire as wireguard-go writes it (`ipc/uapi_unix.go`): negative, as
/// in `errno=-22` for a failed set, and `errno=0` for success. `wg` reads a
/// set's errno with its sign, but a `get` answer only parses with exactly
/// `errno=0` (`userspace_get_device` takes no sign), so a failed get is an
/// EPROTO to `wg` whatever the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Errno {
    /// EIO: reading or writing the connection failed.
    Io,
    /// EPROTO: the bytes are not the protocol (unknown request line, a line
    /// without `=`, a limit exceeded). The server closes the connection.
    Protocol,
    /// EINVAL: a well-formed line with a key or value the device refuses.
    Invalid,
    /// EADDRINUSE: the listen port (or fwmark) could not be applied.
    AddrInUse,
    /// EPERM: the client may not configure this device (ringtun's own: not
    /// root and without CAP_NET_ADMIN); wireguard-go has no such check.
    Permission,
    /// ENOANO (55): any other failure, as wireguard-go's `IpcErrorUnknown`.
    Unknown,
}

impl Errno {
    /// The positive errno value (Linux numbering, as `wg` expects).
    pub const fn code(self) -> i32 {
        match self {
            Errno::Io => libc::EIO,
            Errno::Protocol => libc::EPROTO,
            Errno::Invalid => libc::EINVAL,
            Errno::AddrInUse => libc::EADDRINUSE,
            Errno::Permission => libc::EPERM,
            // wireguard-go writes the literal 55 rather than unix.ENOANO.
            Errno::Unknown => 55,
        }
    }

    /// The value on the wire: negative, as wireguard-go writes it.
    pub const fn wire(self) -> i64 {
        -(self.code() as i64)
    }

    /// The symbolic name, for logs (`EINVAL`).
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Io => "EIO",
            Errno::Protocol => "EPROTO",
            Errno::Invalid => "EINVAL",
            Errno::AddrInUse => "EADDRINUSE",
            Errno::Permission => "EPERM",
            Errno::Unknown => "ENOANO",
        }
    }

    /// The errno an answer's `errno=N` names, either sign accepted (other
    /// servers write it positive); `None` for 0 and for numbers this module
    /// does not know.
    pub fn from_wire(n: i64) -> Option<Errno> {
        let code = i32::try_from(n.unsigned_abs()).ok()?;
        [
            Errno::Io,
            Errno::Protocol,
            Errno::Invalid,
            Errno::AddrInUse,
            Errno::Permission,
            Errno::Unknown,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A protocol error: the errno to answer with, the 1-based line of the
/// request (or answer) at fault, and a sentence for logs.
///
/// The sentence never holds a key: values are quoted only for keys that
/// carry no secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason} ({errno})")]
pub struct ProtoError {
    /// The errno the answer carries.
    pub errno: Errno,
    /// The 1-based line, counting the request line as line 1.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

impl ProtoError {
    fn new(errno: Errno, line: usize, reason: impl Into<String>) -> ProtoError {
        ProtoError {
            errno,
            line,
            reason: reason.into(),
        }
    }

    /// Whether the server closes the connection after answering: the client
    /// does not speak the protocol (EPROTO), so nothing after it can be
    /// trusted to start a request. (wireguard-go closes without a word after
    /// an unknown request line; answering `errno=-71` first changes nothing
    /// for `wg`, which reports EPROTO for a closed connection too.)
    pub fn closes_connection(&self) -> bool {
        self.errno == Errno::Protocol
    }
}

/// One operation a client asks for.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `get=1\n\n`: the device and its peers, answered with [`write_get`].
    Get,
    /// `set=1\n`, `key=value` lines, `\n`: change the configuration, answered
    /// with [`write_errno`].
    Set(SetRequest),
    /// `ringtun_show=1\n\n`: ringtun's own status (drops by reason,
    /// counters, offloads) as JSON, answered with [`write_show`]. Stock tools
    /// never send it, so `get` stays exactly what they parse.
    Show,
    /// `ringtun_down=1\n\n`: stop the daemon, answered with [`write_errno`].
    Down,
    /// `ringtun_reload=1\n\n`: read the configuration file again and apply
    /// the difference (as SIGHUP does), answered with [`write_errno`].
    Reload,
}

/// A whole `set`, validated. Fields left `None` (or `false`, or empty) were
/// not in the request and leave the device as it is.
///
/// Applying it in field order, then the peers in order, does what
/// wireguard-go does for the same lines (`handleDeviceLine`,
/// `handlePeerLine`): device keys can only come before the first peer, so
/// their order among themselves does not matter, and `replace_peers` removes
/// the old peers before any peer of this request is added.
#[derive(Clone, Debug, Default)]
pub struct SetRequest {
    /// `private_key=HEX`: `Some(None)` for the all-zero key, which removes it
    /// (wireguard-go's `FromMaybeZeroHex`). A non-zero key is clamped, as
    /// wireguard-go and the kernel store it, so `get` prints it clamped.
    pub private_key: Option<Option<PrivateKey>>,
    /// `listen_port=N`: 0 asks for a random port.
    pub listen_port: Option<u16>,
    /// `fwmark=N`: 0 turns marking off.
    pub fwmark: Option<u32>,
    /// `replace_peers=true`: remove every peer before adding these.
    pub replace_peers: bool,
    /// The peers, in request order. The same key may appear twice: apply
    /// them in order, the second sees what the first did.
    pub peers: Vec<PeerSet>,
}

impl PartialEq for SetRequest {
    fn eq(&self, other: &SetRequest) -> bool {
        let keys_equal = match (&self.private_key, &other.private_key) {
            (Some(Some(a)), Some(Some(b))) => secret_eq(&a.to_hex(), &b.to_hex()),
            (Some(None), Some(None)) | (None, None) => true,
            _ => false,
        };
        keys_equal
            && self.listen_port == other.listen_port
            && self.fwmark == other.fwmark
            && self.replace_peers == other.replace_peers
            && self.peers == other.peers
    }
}

/// One peer's lines of a `set`, from its `public_key` line to the next.
///
/// Two cases the applier handles (wireguard-go `handlePublicKeyLine`): a
/// peer whose key is the device's own public key is ignored, lines and all;
/// and with `remove` or `update_only` set the other fields still had to be
/// valid but have no lasting effect (see each flag).
#[derive(Clone, Debug, PartialEq)]
pub struct PeerSet {
    /// `public_key=HEX`: which peer; created unless `update_only`.
    pub public_key: PublicKey,
    /// The line of `public_key`, for error messages of the applier.
    pub line: usize,
    /// `remove=true`: remove the peer (if it exists). wireguard-go applies
    /// the lines before `remove` and then removes the peer, so the net
    /// effect is the removal alone; lines after it are checked and ignored.
    pub remove: bool,
    /// `update_only=true`: change the peer only if it already exists; a
    /// peer this request would create is ignored with all its lines
    /// (wireguard-go creates it, then drops it at `update_only`). `wg` never
    /// sends it; wgctrl-go does.
    pub update_only: bool,
    /// `preshared_key=HEX`: `Some(None)` for all zeros, which removes it.
    pub preshared_key: Option<Option<PresharedKey>>,
    /// `endpoint=IP:PORT` (IPv6 in brackets), numeric only, as wireguard-go's
    /// `netip.ParseAddrPort`.
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval=SECONDS`: 0 turns it off. wireguard-go
    /// sends a keepalive at once when this turns it on.
    pub persistent_keepalive: Option<u16>,
    /// `replace_allowed_ips` and `allowed_ip` lines, in request order.
    pub allowed_ips: Vec<AllowedIpOp>,
}

impl PeerSet {
    fn new(public_key: PublicKey, line: usize) -> PeerSet {
        PeerSet {
            public_key,
            line,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            allowed_ips: Vec::new(),
        }
    }
}

/// A change to one peer's AllowedIPs, applied in request order: a `Clear`
/// after some `Add`s drops those too, as in wireguard-go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllowedIpOp {
    /// `replace_allowed_ips=true`: remove all of the peer's prefixes.
    Clear,
    /// `allowed_ip=10.0.0.0/24`: route the prefix to this peer, taking it
    /// from whichever peer had it.
    Add(IpPrefix),
    /// `allowed_ip=-10.0.0.0/24` (`wg set ... allowed-ips -10.0.0.0/24`):
    /// remove the prefix, but only if this very peer holds exactly this
    /// prefix (wireguard-go `AllowedIPs.Remove`).
    Remove(IpPrefix),
}

/// What `get` reports about the device.
#[derive(Clone, Debug, Default)]
pub struct DeviceDump {
    /// The private key; `None` (or all zeros) prints no line.
    pub private_key: Option<PrivateKey>,
    /// The UDP port; 0 prints no line.
    pub listen_port: u16,
    /// The fwmark; 0 prints no line.
    pub fwmark: u32,
    /// The peers, printed in this order.
    pub peers: Vec<PeerDump>,
}

impl PartialEq for DeviceDump {
    fn eq(&self, other: &DeviceDump) -> bool {
        let key = |d: &DeviceDump| {
            d.private_key
                .as_ref()
                .filter(|k| !k.is_zero())
                .map(|k| k.to_hex())
        };
        let keys_equal = match (key(self), key(other)) {
            (Some(a), Some(b)) => secret_eq(&a, &b),
            (None, None) => true,
            _ => false,
        };
        keys_equal
            && self.listen_port == other.listen_port
            && self.fwmark == other.fwmark
            && self.peers == other.peers
    }
}

/// What `get` reports about one peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerDump {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The preshared key; `None` prints all zeros.
    pub preshared_key: Option<PresharedKey>,
    /// The current endpoint, if any.
    pub endpoint: Option<SocketAddr>,
    /// The latest completed handshake, as time since the Unix epoch; `None`
    /// prints 0 and 0 (so `Some(Duration::ZERO)` reads back as `None`).
    pub last_handshake: Option<Duration>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds; 0 is off.
    pub persistent_keepalive: u16,
    /// The peer's AllowedIPs, printed in this order.
    pub allowed_ips: Vec<IpPrefix>,
}

/// Equality of two secrets' encodings without an early exit.
fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// Incremental framing of a client's byte stream into [`Request`]s.
///
/// Bytes may arrive in any chunks (one at a time included); what comes out
/// depends only on the bytes, never on how they were cut. Several requests
/// may follow one another on a connection, as wireguard-go serves them in a
/// loop. The buffer holds private keys, so it is erased when consumed, when
/// it grows and when dropped.
///
/// ```text
/// loop { read; framer.push(chunk); while let Some(r) = framer.next_request() { answer r } }
/// at EOF: framer.end_of_input(); then next_request() once more
/// ```
pub struct Framer {
    /// Received bytes; the current request starts at `start`.
    buf: Zeroizing<Vec<u8>>,
    /// First byte of the current request.
    start: usize,
    /// First byte of the line being read.
    line_start: usize,
    /// `line_start..scanned` holds no newline: where the next search resumes,
    /// so a request arriving a byte at a time is scanned once, not n² times.
    scanned: usize,
    /// The 1-based number of the line at `line_start`.
    line_no: usize,
    state: FrameState,
    max_line: usize,
    max_request: usize,
    /// The client shut its side: an unfinished set ends at the last byte.
    eof: bool,
    /// After an EPROTO nothing more comes out; pushed bytes are dropped.
    closed: bool,
}

#[derive(Clone, Copy, Debug)]
enum FrameState {
    /// Reading the request line.
    RequestLine,
    /// After `get=1\n` (or show, down): the one byte that must be `\n`.
    Terminator(Bare),
    /// Reading a set's body, which starts at `body_start`.
    SetBody { body_start: usize },
}

/// The requests that are a request line and an empty line.
#[derive(Clone, Copy, Debug)]
enum Bare {
    Get,
    Show,
    Down,
    Reload,
}

impl Bare {
    fn request(self) -> Request {
        match self {
            Bare::Get => Request::Get,
            Bare::Show => Request::Show,
            Bare::Down => Request::Down,
            Bare::Reload => Request::Reload,
        }
    }

    fn line(self) -> &'static str {
        match self {
            Bare::Get => "get=1",
            Bare::Show => "ringtun_show=1",
            Bare::Down => "ringtun_down=1",
            Bare::Reload => "ringtun_reload=1",
        }
    }
}

impl fmt::Debug for Framer {
    /// The state and sizes, never the bytes: they may hold keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("buffered", &(self.buf.len() - self.start))
            .field("line", &self.line_no)
            .field("state", &self.state)
            .field("eof", &self.eof)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Framer {
    /// A framer for one connection. A line longer than `max_line` bytes (its
    /// newline not counted), or a request longer than `max_request` bytes
    /// (request line and final empty line counted), is an EPROTO error: the
    /// end of the request cannot be found without reading on, so the
    /// connection is closed. [`MAX_LINE`] and [`MAX_REQUEST`] suit a server.
    pub fn new(max_line: usize, max_request: usize) -> Framer {
        Framer {
            buf: Zeroizing::new(Vec::new()),
            start: 0,
            line_start: 0,
            scanned: 0,
            line_no: 1,
            state: FrameState::RequestLine,
            max_line,
            max_request,
            eof: false,
            closed: false,
        }
    }

    /// Appends bytes read from the client. Dropped after an EPROTO error or
    /// after [`end_of_input`](Self::end_of_input).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.closed || self.eof || bytes.is_empty() {
            return;
        }
        if self.start == self.buf.len() && self.buf.capacity() > KEEP_CAPACITY {
            // Everything read was consumed: let a big set's buffer go (erased
            // as it drops) rather than hold megabytes for an idle connection.
            self.buf = Zeroizing::new(Vec::new());
            self.reset_offsets();
        }
        if self.start > 0 {
            // Compact once per push, not once per request: a push holding
            // thousands of pipelined requests is then consumed in linear time.
            let len = self.buf.len();
            self.buf.copy_within(self.start..len, 0);
            let kept = len - self.start;
            self.buf[kept..].zeroize();
            self.buf.truncate(kept);
            self.line_start -= self.start;
            self.scanned -= self.start;
            if let FrameState::SetBody { body_start } = &mut self.state {
                *body_start -= self.start;
            }
            self.start = 0;
        }
        extend_secret(&mut self.buf, bytes);
    }

    /// Tells the framer the client shut its side. wireguard-go's set reader
    /// (a `bufio.Scanner`) treats the end of input as the end of the set, a
    /// last line without newline included, and applies it; a `get=1` without
    /// its empty line is dropped without an answer. Call
    /// [`next_request`](Self::next_request) afterwards for what is left.
    pub fn end_of_input(&mut self) {
        self.eof = true;
    }

    /// Whether the framer stopped after an EPROTO error or at the end of
    /// input: the server answers what came out and closes.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next complete request, `None` until more bytes come (or never
    /// again once closed). An `Err` whose [`ProtoError::closes_connection`]
    /// holds is the last thing this framer returns; after any other `Err`
    /// the connection goes on with the next request, as in wireguard-go.
    pub fn next_request(&mut self) -> Option<Result<Request, ProtoError>> {
        if self.closed {
            return None;
        }
        let next = self.step();
        match &next {
            Some(Err(e)) if e.closes_connection() => self.close(),
            None if self.eof => self.close(),
            _ => {}
        }
        next
    }

    fn close(&mut self) {
        self.closed = true;
        // Erases the whole capacity, not just the length.
        self.buf.zeroize();
        self.reset_offsets();
    }

    /// Offsets for an empty buffer; only between requests or once closed.
    fn reset_offsets(&mut self) {
        self.start = 0;
        self.line_start = 0;
        self.scanned = 0;
    }

    fn step(&mut self) -> Option<Result<Request, ProtoError>> {
        loop {
            match self.state {
                FrameState::RequestLine => {
                    let Some(nl) = self.find_newline() else {
                        // Fail as soon as the line can no longer become a
                        // request line, so a stranger's bytes are not buffered
                        // up to the limit first.
                        let partial = &self.buf[self.line_start..];
                        if OPERATIONS.iter().any(|op| op.starts_with(partial)) {
                            return None;
                        }
                        return Some(Err(bad_request_line()));
                    };
                    self.state = match &self.buf[self.line_start..nl] {
                        GET => FrameState::Terminator(Bare::Get),
                        SHOW => FrameState::Terminator(Bare::Show),
                        DOWN => FrameState::Terminator(Bare::Down),
                        RELOAD => FrameState::Terminator(Bare::Reload),
                        SET => FrameState::SetBody { body_start: nl + 1 },
                        _ => return Some(Err(bad_request_line())),
                    };
                    self.next_line(nl);
                }
                FrameState::Terminator(bare) => {
                    // wireguard-go reads exactly one byte after `get=1\n`; if
                    // it is not a newline it answers EINVAL and reads the next
                    // request line from the byte after it.
                    let &byte = self.buf.get(self.line_start)?;
                    let line = self.line_no;
                    self.end_request(self.line_start + 1);
                    return Some(if byte == b'\n' {
                        Ok(bare.request())
                    } else {
                        Err(ProtoError::new(
                            Errno::Invalid,
                            line,
                            format!("{} must be followed by an empty line", bare.line()),
                        ))
                    });
                }
                FrameState::SetBody { body_start } => {
                    let newline = self.find_newline();
                    if let Some(e) = self.limit_error(newline) {
                        return Some(Err(e));
                    }
                    let Some(nl) = newline else {
                        if !self.eof {
                            return None;
                        }
                        // wireguard-go's scanner ends the set at the end of
                        // input, a last line without newline included.
                        let end = self.buf.len();
                        let parsed = parse_set(&self.buf[body_start..end], 2);
                        self.end_request(end);
                        return Some(parsed.map(Request::Set));
                    };
                    let line = &self.buf[self.line_start..nl];
                    // Go's bufio.ScanLines drops one `\r` before the newline,
                    // so `\r\n` alone also ends the set.
                    if line.is_empty() || line == b"\r" {
                        let parsed = parse_set(&self.buf[body_start..self.line_start], 2);
                        self.end_request(nl + 1);
                        return Some(parsed.map(Request::Set));
                    }
                    self.next_line(nl);
                }
            }
        }
    }

    /// Where the next newline at or after `line_start` is, if it came yet.
    fn find_newline(&mut self) -> Option<usize> {
        let from = self.scanned.max(self.line_start);
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(i) => Some(from + i),
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// The limit the current line breaks first, if any. Both limits are
    /// judged at the byte that crosses them, whichever comes first in the
    /// stream, so the error does not depend on how the bytes were chunked.
    fn limit_error(&self, newline: Option<usize>) -> Option<ProtoError> {
        // Content bytes of the line known so far end here (exclusive); every
        // byte up to `known` (exclusive) has arrived.
        let (content_end, known) = match newline {
            Some(nl) => (nl, nl + 1),
            None => (self.buf.len(), self.buf.len()),
        };
        let line_cross = self.line_start.saturating_add(self.max_line);
        let request_cross = self.start.saturating_add(self.max_request);
        let line_over = line_cross < content_end;
        let request_over = request_cross < known;
        match (line_over, request_over) {
            (true, true) if request_cross < line_cross => Some(self.request_too_long()),
            (true, _) => Some(ProtoError::new(
                Errno::Protocol,
                self.line_no,
                format!("line longer than {} bytes", self.max_line),
            )),
            (false, true) => Some(self.request_too_long()),
            (false, false) => None,
        }
    }

    fn request_too_long(&self) -> ProtoError {
        ProtoError::new(
            Errno::Protocol,
            self.line_no,
            format!("request longer than {} bytes", self.max_request),
        )
    }

    fn next_line(&mut self, newline: usize) {
        self.line_start = newline + 1;
        self.scanned = self.line_start;
        self.line_no += 1;
    }

    /// Consumes the request ending before `end`, erasing its bytes.
    fn end_request(&mut self, end: usize) {
        self.buf[self.start..end].zeroize();
        self.start = end;
        self.line_start = end;
        self.scanned = end;
        self.line_no = 1;
        self.state = FrameState::RequestLine;
    }
}

fn bad_request_line() -> ProtoError {
    // The line is not quoted: a client that forgot `set=1` sends
    // `private_key=...` first.
    ProtoError::new(
        Errno::Protocol,
        1,
        "the request line is not get=1, set=1, ringtun_show=1, ringtun_down=1 or ringtun_reload=1",
    )
}

/// Appends to a buffer holding secrets without leaving a copy behind: `Vec`'s
/// own growth would free the old allocation unerased.
fn extend_secret(buf: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) {
    let needed = buf.len().saturating_add(bytes.len());
    if needed > buf.capacity() {
        let capacity = needed.max(buf.capacity().saturating_mul(2)).max(256);
        let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
        grown.extend_from_slice(buf);
        // The old allocation, now in `grown`, is erased when it drops here.
        std::mem::swap(buf, &mut grown);
    }
    buf.extend_from_slice(bytes);
}

// ---------------------------------------------------------------------------
// Lines and values
// ---------------------------------------------------------------------------

/// A `key=value` line, checked to have its `=`: the zero-copy view every
/// line of a request or answer goes through.
#[derive(Clone, Copy)]
struct Line<'a> {
    key: &'a [u8],
    value: &'a [u8],
    number: usize,
}

impl<'a> Line<'a> {
    /// Splits at the first `=`; a line without one is EPROTO, as in
    /// wireguard-go ("failed to parse line") and `wg`.
    fn new_checked(text: &'a [u8], number: usize) -> Result<Line<'a>, ProtoError> {
        let Some(eq) = text.iter().position(|&b| b == b'=') else {
            return Err(ProtoError::new(Errno::Protocol, number, "line has no '='"));
        };
        Ok(Line {
            key: &text[..eq],
            value: &text[eq + 1..],
            number,
        })
    }

    fn error(&self, errno: Errno, reason: impl Into<String>) -> ProtoError {
        ProtoError::new(errno, self.number, reason)
    }

    fn invalid(&self, reason: impl Into<String>) -> ProtoError {
        self.error(Errno::Invalid, reason)
    }

    /// The key for an error message. Quoted only when it looks like a key
    /// name, since a confused client may put anything there, a hex secret
    /// (or half of one) included.
    fn shown_key(&self) -> String {
        let named =
            |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-';
        if self.key.len() <= 32
            && self.key.iter().all(named)
            && !self.key.iter().all(u8::is_ascii_hexdigit)
        {
            shown(self.key)
        } else {
            format!("a key of {} bytes", self.key.len())
        }
    }

    /// A key this module matched, for an error message.
    fn key_name(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.key)
    }

    /// The value for an error message. Only for keys that carry no secret.
    fn shown_value(&self) -> String {
        shown(self.value)
    }

    /// Flags take exactly `true` (wireguard-go compares the string).
    fn flag(&self) -> Result<(), ProtoError> {
        if self.value == b"true" {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "{} must be exactly true, not {}",
                self.key_name(),
                self.shown_value()
            )))
        }
    }

    /// A decimal number that fits `T`, as Go's `strconv.ParseUint(v, 10, bits)`.
    fn decimal_value<T: TryFrom<u64>>(&self, what: &str) -> Result<T, ProtoError> {
        decimal(self.value).ok_or_else(|| {
            self.invalid(format!(
                "{} {} is not {what}",
                self.key_name(),
                self.shown_value()
            ))
        })
    }

    /// A 32-byte key in hex. The value is never quoted: it may be a secret.
    fn key_bytes(&self, errno: Errno) -> Result<Zeroizing<[u8; KEY_LEN]>, ProtoError> {
        key_from_hex(self.value).ok_or_else(|| {
            self.error(
                errno,
                format!("{} is not {} hex digits", self.key_name(), 2 * KEY_LEN),
            )
        })
    }
}

/// Quoted, escaped and cut at 64 bytes: a line may be kilobytes of anything.
fn shown(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let cut = &bytes[..bytes.len().min(SHOWN)];
    let more = if bytes.len() > SHOWN { "..." } else { "" };
    format!("\"{}\"{more}", cut.escape_ascii())
}

/// Digits only, leading zeros allowed, no sign or space, in range of `T`
/// (Go's `ParseUint` with base 10, `wg`'s `NUM`).
fn decimal<T: TryFrom<u64>>(value: &[u8]) -> Option<T> {
    if value.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    T::try_from(n).ok()
}

/// `decimal` with an optional `-`, for `errno=` lines.
fn signed(value: &[u8]) -> Option<i64> {
    match value.split_first() {
        Some((b'-', digits)) => decimal::<i64>(digits).map(|n| -n),
        _ => decimal(value),
    }
}

/// 64 hex digits, either case (Go's `hex.DecodeString` and an exact length).
fn key_from_hex(value: &[u8]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if value.len() != 2 * KEY_LEN {
        return None;
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    for (o, pair) in out.iter_mut().zip(value.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn is_zero(bytes: &[u8; KEY_LEN]) -> bool {
    bytes.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// `ADDR/LEN` with the length required, as Go's `netip.ParsePrefix`: the
/// length is decimal without sign or leading zero, at most 32 or 128; no
/// zone. Host bits are cleared, as wireguard-go's table does on insert.
fn parse_prefix(value: &[u8]) -> Option<IpPrefix> {
    let text = std::str::from_utf8(value).ok()?;
    let (addr, len) = text.split_once('/')?;
    if len.len() > 1 && len.starts_with('0') {
        return None;
    }
    let len: u8 = decimal(len.as_bytes())?;
    let addr: IpAddr = addr.parse().ok()?;
    IpPrefix::new(addr, len).ok()
}

/// `IP:PORT` or `[IPv6]:PORT`, numeric, as Go's `netip.ParseAddrPort`.
fn parse_endpoint(value: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The line without its `\n`, and without one `\r` before it, as Go's
/// `bufio.ScanLines` reads a set body.
fn strip_line_end(raw: &[u8]) -> &[u8] {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    line.strip_suffix(b"\r").unwrap_or(line)
}

// ---------------------------------------------------------------------------
// set
// ---------------------------------------------------------------------------

const DEVICE_KEYS: [&[u8]; 4] = [b"private_key", b"listen_port", b"fwmark", b"replace_peers"];

/// Parses and validates a set body (the lines between `set=1` and the empty
/// line, numbered from `first_line`). The first bad line is the error for
/// the whole set.
fn parse_set(body: &[u8], first_line: usize) -> Result<SetRequest, ProtoError> {
    let mut request = SetRequest::default();
    let mut peer: Option<PeerSet> = None;
    for (i, raw) in body.split_inclusive(|&b| b == b'\n').enumerate() {
        let text = strip_line_end(raw);
        if text.is_empty() {
            // Only at the end of input: the framer ends a set at its first
            // empty line otherwise.
            break;
        }
        let line = Line::new_checked(text, first_line + i)?;
        if line.key == b"public_key" {
            // wireguard-go: "failed to get peer by public key", EINVAL.
            let key = PublicKey::from_bytes(*line.key_bytes(Errno::Invalid)?);
            if let Some(done) = peer.replace(PeerSet::new(key, line.number)) {
                request.peers.push(done);
            }
            continue;
        }
        match peer.as_mut() {
            None => device_line(&mut request, &line)?,
            Some(peer) => peer_line(peer, &line)?,
        }
    }
    request.peers.extend(peer);
    Ok(request)
}

/// A line before the first `public_key` (wireguard-go `handleDeviceLine`).
fn device_line(request: &mut SetRequest, line: &Line<'_>) -> Result<(), ProtoError> {
    match line.key {
        b"private_key" => {
            let mut bytes = line.key_bytes(Errno::Invalid)?;
            request.private_key = Some(if is_zero(&bytes) {
                None
            } else {
                // RFC 7748 §5 clamping, as wireguard-go's FromMaybeZeroHex
                // and the kernel apply when the key is set.
                bytes[0] &= 248;
                bytes[31] &= 127;
                bytes[31] |= 64;
                Some(PrivateKey::from_bytes(*bytes))
            });
        }
        b"listen_port" => request.listen_port = Some(line.decimal_value("a port (0 to 65535)")?),
        b"fwmark" => request.fwmark = Some(line.decimal_value("a fwmark (0 to 4294967295)")?),
        b"replace_peers" => {
            line.flag()?;
            request.replace_peers = true;
        }
        key if PEER_KEYS.contains(&key) => {
            return Err(line.invalid(format!(
                "{} belongs to a peer, after its public_key",
                line.shown_key()
            )));
        }
        _ => {
            return Err(line.invalid(format!("unknown device key {}", line.shown_key())));
        }
    }
    Ok(())
}

const PEER_KEYS: [&[u8]; 8] = [
    b"update_only",
    b"remove",
    b"preshared_key",
    b"endpoint",
    b"persistent_keepalive_interval",
    b"replace_allowed_ips",
    b"allowed_ip",
    b"protocol_version",
];

/// A line after a `public_key` (wireguard-go `handlePeerLine`).
fn peer_line(peer: &mut PeerSet, line: &Line<'_>) -> Result<(), ProtoError> {
    match line.key {
        b"update_only" => {
            line.flag()?;
            peer.update_only = true;
        }
        b"remove" => {
            line.flag()?;
            peer.remove = true;
        }
        b"preshared_key" => {
            // Plain FromHex in wireguard-go: any 32 bytes, zero meaning none.
            let bytes = line.key_bytes(Errno::Invalid)?;
            peer.preshared_key = Some(if is_zero(&bytes) {
                None
            } else {
                Some(PresharedKey::from_bytes(*bytes))
            });
        }
        b"endpoint" => {
            let endpoint = parse_endpoint(line.value).ok_or_else(|| {
                line.invalid(format!(
                    "endpoint {} is not IP:PORT (numeric; IPv6 as [ADDR]:PORT)",
                    line.shown_value()
                ))
            })?;
            peer.endpoint = Some(endpoint);
        }
        b"persistent_keepalive_interval" => {
            peer.persistent_keepalive =
                Some(line.decimal_value("a number of seconds (0 to 65535)")?);
        }
        b"replace_allowed_ips" => {
            line.flag()?;
            peer.allowed_ips.push(AllowedIpOp::Clear);
        }
        b"allowed_ip" => {
            let (remove, text) = match line.value.split_first() {
                Some((b'-', rest)) => (true, rest),
                _ => (false, line.value),
            };
            let prefix = parse_prefix(text).ok_or_else(|| {
                line.invalid(format!(
                    "allowed_ip {} is not ADDR/LEN (or -ADDR/LEN)",
                    line.shown_value()
                ))
            })?;
            peer.allowed_ips.push(if remove {
                AllowedIpOp::Remove(prefix)
            } else {
                AllowedIpOp::Add(prefix)
            });
        }
        b"protocol_version" => {
            if line.value != b"1" {
                return Err(
                    line.invalid(format!("protocol_version {} is not 1", line.shown_value()))
                );
            }
        }
        key if DEVICE_KEYS.contains(&key) => {
            return Err(line.invalid(format!(
                "{} is a device key, allowed only before the first public_key",
                line.shown_key()
            )));
        }
        _ => {
            return Err(line.invalid(format!("unknown peer key {}", line.shown_key())));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Writes into a secret-holding buffer through `extend_secret`.
struct SecretSink<'a>(&'a mut Zeroizing<Vec<u8>>);

impl fmt::Write for SecretSink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        extend_secret(self.0, s.as_bytes());
        Ok(())
    }
}

/// One `key=value\n` line. Formatting into memory cannot fail, so the
/// `fmt::Result` carries nothing.
fn put(out: &mut Zeroizing<Vec<u8>>, args: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut SecretSink(out), args);
    extend_secret(out, b"\n");
}

/// `key=HEX\n` for a secret key, its text erased after use.
fn put_secret(out: &mut Zeroizing<Vec<u8>>, key: &str, hex: &Zeroizing<String>) {
    extend_secret(out, key.as_bytes());
    extend_secret(out, b"=");
    extend_secret(out, hex.as_bytes());
    extend_secret(out, b"\n");
}

const ZERO_KEY_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Serialises a `get` answer exactly as wireguard-go's `IpcGetOperation`
/// and `IpcHandle` do, `errno=0` and the empty line included:
///
/// - `private_key` only if set and not zero; `listen_port` and `fwmark`
///   only if not zero;
/// - per peer: `public_key`, `preshared_key` (all zeros if none),
///   `protocol_version=1`, `endpoint` if any (IPv6 in brackets),
///   `last_handshake_time_sec` and `_nsec` (0 and 0 if never), `tx_bytes`,
///   then `rx_bytes`, `persistent_keepalive_interval`, one `allowed_ip`
///   line per prefix.
///
/// Appends to `out`, which is erased when dropped: it holds the private and
/// preshared keys.
pub fn write_get(dump: &DeviceDump, out: &mut Zeroizing<Vec<u8>>) {
    if let Some(key) = dump.private_key.as_ref().filter(|k| !k.is_zero()) {
        put_secret(out, "private_key", &key.to_hex());
    }
    if dump.listen_port != 0 {
        put(out, format_args!("listen_port={}", dump.listen_port));
    }
    if dump.fwmark != 0 {
        put(out, format_args!("fwmark={}", dump.fwmark));
    }
    for peer in &dump.peers {
        put(out, format_args!("public_key={}", peer.public_key.to_hex()));
        match &peer.preshared_key {
            Some(psk) => put_secret(out, "preshared_key", &psk.to_hex()),
            None => put(out, format_args!("preshared_key={ZERO_KEY_HEX}")),
        }
        put(out, format_args!("protocol_version=1"));
        if let Some(endpoint) = peer.endpoint {
            // SocketAddr's Display is Go's AddrPort.String: RFC 5952 IPv6 in
            // brackets, `::ffff:a.b.c.d` for mapped IPv4, `%N` for a zone.
            put(out, format_args!("endpoint={endpoint}"));
        }
        let handshake = peer.last_handshake.unwrap_or_default();
        put(
            out,
            format_args!("last_handshake_time_sec={}", handshake.as_secs()),
        );
        put(
            out,
            format_args!("last_handshake_time_nsec={}", handshake.subsec_nanos()),
        );
        put(out, format_args!("tx_bytes={}", peer.tx_bytes));
        put(out, format_args!("rx_bytes={}", peer.rx_bytes));
        put(
            out,
            format_args!(
                "persistent_keepalive_interval={}",
                peer.persistent_keepalive
            ),
        );
        for prefix in &peer.allowed_ips {
            put(out, format_args!("allowed_ip={prefix}"));
        }
    }
    extend_secret(out, b"errno=0\n\n");
}

/// Serialises the answer to a set or a down: `errno=0\n\n`, or the negative
/// errno (`errno=-22\n\n`) as wireguard-go writes it.
pub fn write_errno(result: Result<(), Errno>, out: &mut Vec<u8>) {
    let n = match result {
        Ok(()) => 0,
        Err(errno) => errno.wire(),
    };
    out.extend_from_slice(format!("errno={n}\n\n").as_bytes());
}

/// Serialises the answer to `ringtun_show`: `json=<one line>\nerrno=0\n\n`.
/// Nothing is escaped; a newline, which JSON allows only as whitespace
/// between tokens (never raw inside a string), becomes a space so that the
/// line stays one line.
pub fn write_show(json: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"json=");
    out.extend(json.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\nerrno=0\n\n");
}

/// Serialises a request as a client sends it, a set in the order of
/// `wg`'s `userspace_set_device` (each peer's flags and values, then its
/// AllowedIPs changes in order). Parsing the bytes gives `request` back.
pub fn write_request(request: &Request, out: &mut Zeroizing<Vec<u8>>) {
    let set = match request {
        Request::Set(set) => set,
        Request::Get => {
            extend_secret(out, b"get=1\n\n");
            return;
        }
        Request::Show => {
            extend_secret(out, b"ringtun_show=1\n\n");
            return;
        }
        Request::Reload => {
            extend_secret(out, b"ringtun_reload=1\n\n");
            return;
        }
        Request::Down => {
            extend_secret(out, b"ringtun_down=1\n\n");
            return;
        }
    };
    extend_secret(out, b"set=1\n");
    match &set.private_key {
        Some(Some(key)) => put_secret(out, "private_key", &key.to_hex()),
        Some(None) => put(out, format_args!("private_key={ZERO_KEY_HEX}")),
        None => {}
    }
    if let Some(port) = set.listen_port {
        put(out, format_args!("listen_port={port}"));
    }
    if let Some(mark) = set.fwmark {
        put(out, format_args!("fwmark={mark}"));
    }
    if set.replace_peers {
        put(out, format_args!("replace_peers=true"));
    }
    for peer in &set.peers {
        put(out, format_args!("public_key={}", peer.public_key.to_hex()));
        if peer.remove {
            put(out, format_args!("remove=true"));
        }
        if peer.update_only {
            put(out, format_args!("update_only=true"));
        }
        match &peer.preshared_key {
            Some(Some(psk)) => put_secret(out, "preshared_key", &psk.to_hex()),
            Some(None) => put(out, format_args!("preshared_key={ZERO_KEY_HEX}")),
            None => {}
        }
        if let Some(endpoint) = peer.endpoint {
            put(out, format_args!("endpoint={endpoint}"));
        }
        if let Some(interval) = peer.persistent_keepalive {
            put(
                out,
                format_args!("persistent_keepalive_interval={interval}"),
            );
        }
        for op in &peer.allowed_ips {
            match op {
                AllowedIpOp::Clear => put(out, format_args!("replace_allowed_ips=true")),
                AllowedIpOp::Add(prefix) => put(out, format_args!("allowed_ip={prefix}")),
                AllowedIpOp::Remove(prefix) => put(out, format_args!("allowed_ip=-{prefix}")),
            }
        }
    }
    extend_secret(out, b"\n");
}

// ---------------------------------------------------------------------------
// Reading answers (the client side)
// ---------------------------------------------------------------------------

/// The length of the first complete answer in `bytes` (through its empty
/// line), or `None` if it has not all arrived: for a client reading a
/// stream.
pub fn answer_len(bytes: &[u8]) -> Option<usize> {
    if bytes.first() == Some(&b'\n') {
        return Some(1);
    }
    bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// How many newlines `bytes` holds: the number of the line after them.
fn newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// The answer's lines, numbered from 1, without the final empty line; an
/// answer that is cut short or followed by more bytes is EPROTO.
fn answer_lines(answer: &[u8]) -> Result<impl Iterator<Item = (usize, &[u8])>, ProtoError> {
    match answer_len(answer) {
        Some(n) if n == answer.len() => Ok(answer[..n - 1]
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .map(|(i, raw)| (i + 1, raw.strip_suffix(b"\n").unwrap_or(raw)))),
        Some(n) => Err(ProtoError::new(
            Errno::Protocol,
            newlines(&answer[..n]) + 1,
            "bytes after the end of the answer",
        )),
        None => Err(ProtoError::new(
            Errno::Protocol,
            newlines(answer) + 1,
            "the answer does not end with an empty line",
        )),
    }
}

/// Reads an `errno=N` line; `Err` for a non-zero errno, which is the
/// server's answer rather than a broken one.
fn errno_line(line: &Line<'_>) -> Result<(), ProtoError> {
    let n = signed(line.value).ok_or_else(|| {
        line.error(
            Errno::Protocol,
            format!("errno {} is not a number", line.shown_value()),
        )
    })?;
    if n == 0 {
        return Ok(());
    }
    let errno = Errno::from_wire(n).unwrap_or(Errno::Unknown);
    Err(line.error(errno, format!("the server answered errno={n}")))
}

/// An answer without an errno line, reported at its final empty line.
fn no_errno(answer: &[u8]) -> ProtoError {
    ProtoError::new(
        Errno::Protocol,
        newlines(answer),
        "the answer has no errno line",
    )
}

/// Parses the answer to a set or a down: `Ok` for `errno=0`, the server's
/// errno as an `Err` otherwise. Unknown keys are ignored.
pub fn parse_errno_answer(answer: &[u8]) -> Result<(), ProtoError> {
    let mut seen = false;
    for (number, text) in answer_lines(answer)? {
        let line = Line::new_checked(text, number)?;
        if line.key == b"errno" {
            errno_line(&line)?;
            seen = true;
        }
    }
    if seen { Ok(()) } else { Err(no_errno(answer)) }
}

/// Parses the answer to `ringtun_show`: the JSON text of its `json=` line.
pub fn parse_show_answer(answer: &[u8]) -> Result<String, ProtoError> {
    let mut json = None;
    let mut seen = false;
    for (number, text) in answer_lines(answer)? {
        let line = Line::new_checked(text, number)?;
        match line.key {
            b"json" => {
                let text = std::str::from_utf8(line.value)
                    .map_err(|_| line.error(Errno::Protocol, "json is not UTF-8"))?;
                json = Some(text.to_owned());
            }
            b"errno" => {
                errno_line(&line)?;
                seen = true;
            }
            _ => {}
        }
    }
    if !seen {
        return Err(no_errno(answer));
    }
    json.ok_or_else(|| ProtoError::new(Errno::Protocol, 1, "the answer has no json line"))
}

/// Parses a `get` answer as `wg` does (`userspace_get_device`): device keys
/// before the first `public_key`, peer keys after it, unknown keys (and
/// device keys after a peer) ignored, an `errno` line required. A value that
/// does not parse is EPROTO; a non-zero errno is the server's error.
pub fn parse_get_answer(answer: &[u8]) -> Result<DeviceDump, ProtoError> {
    let mut dump = DeviceDump::default();
    let mut peer: Option<(PeerDump, u64, u64)> = None;
    let mut seen = false;
    for (number, text) in answer_lines(answer)? {
        let line = Line::new_checked(text, number)?;
        let bad = |what: &str| {
            line.error(
                Errno::Protocol,
                format!("{} {} is not {what}", line.key_name(), line.shown_value()),
            )
        };
        match (line.key, peer.as_mut()) {
            (b"errno", _) => {
                errno_line(&line)?;
                seen = true;
            }
            (b"public_key", _) => {
                let key = PublicKey::from_bytes(*line.key_bytes(Errno::Protocol)?);
                let fresh = PeerDump {
                    public_key: key,
                    preshared_key: None,
                    endpoint: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: 0,
                    allowed_ips: Vec::new(),
                };
                if let Some(done) = peer.replace((fresh, 0, 0)) {
                    dump.peers.push(finish_peer(done, &line)?);
                }
            }
            (b"private_key", None) => {
                let bytes = line.key_bytes(Errno::Protocol)?;
                dump.private_key = (!is_zero(&bytes)).then(|| PrivateKey::from_bytes(*bytes));
            }
            (b"listen_port", None) => {
                dump.listen_port = decimal(line.value).ok_or_else(|| bad("a port"))?
            }
            (b"fwmark", None) => {
                dump.fwmark = decimal(line.value).ok_or_else(|| bad("a fwmark"))?
            }
            (b"preshared_key", Some((p, ..))) => {
                let bytes = line.key_bytes(Errno::Protocol)?;
                p.preshared_key = (!is_zero(&bytes)).then(|| PresharedKey::from_bytes(*bytes));
            }
            (b"endpoint", Some((p, ..))) => {
                p.endpoint = Some(parse_endpoint(line.value).ok_or_else(|| bad("IP:PORT"))?);
            }
            (b"last_handshake_time_sec", Some((_, secs, _))) => {
                *secs = decimal(line.value).ok_or_else(|| bad("a number"))?;
            }
            (b"last_handshake_time_nsec", Some((_, _, nsecs))) => {
                *nsecs = decimal(line.value).ok_or_else(|| bad("a number"))?;
            }
            (b"tx_bytes", Some((p, ..))) => {
                p.tx_bytes = decimal(line.value).ok_or_else(|| bad("a number"))?
            }
            (b"rx_bytes", Some((p, ..))) => {
                p.rx_bytes = decimal(line.value).ok_or_else(|| bad("a number"))?
            }
            (b"persistent_keepalive_interval", Some((p, ..))) => {
                p.persistent_keepalive =
                    decimal(line.value).ok_or_else(|| bad("a number of seconds"))?;
            }
            (b"allowed_ip", Some((p, ..))) => {
                p.allowed_ips
                    .push(parse_prefix(line.value).ok_or_else(|| bad("ADDR/LEN"))?);
            }
            // protocol_version and keys from the future, as `wg` ignores them.
            _ => {}
        }
    }
    if let Some(done) = peer {
        let last = Line {
            key: b"",
            value: b"",
            number: newlines(answer),
        };
        dump.peers.push(finish_peer(done, &last)?);
    }
    if seen {
        Ok(dump)
    } else {
        Err(no_errno(answer))
    }
}

/// A peer of a get answer with its handshake time put together.
fn finish_peer(
    (mut peer, secs, nsecs): (PeerDump, u64, u64),
    at: &Line<'_>,
) -> Result<PeerDump, ProtoError> {
    if secs != 0 || nsecs != 0 {
        let time = Duration::from_secs(secs)
            .checked_add(Duration::from_nanos(nsecs))
            .ok_or_else(|| at.error(Errno::Protocol, "last handshake time out of range"))?;
        peer.last_handshake = Some(time);
    }
    Ok(peer)
}

#[cfg(test)]
mod tests;
