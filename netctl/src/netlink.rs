//! The synchronous NETLINK_ROUTE socket: one request at a time, replies
//! matched by sequence number, multi-part dumps collected, and NLMSG_ERROR
//! turned into an errno plus the kernel's extended-ACK text.
//!
//! A netlink socket acts in the network namespace it was created in, for its
//! whole life. [`Netlink::in_netns`] therefore opens the socket on a thread
//! that has entered the namespace; the caller's own namespace never changes.

use std::cell::Cell;
use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::netns;

/// `NLM_F_CAPPED`: the kernel quoted only the header of our request.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ACK attributes follow the quoted request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG` (linux/netlink.h): a human-readable error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// A dump the kernel marks inconsistent (NLM_F_DUMP_INTR) is retried this often.
const DUMP_ATTEMPTS: usize = 5;
/// The kernel always answers a request with ACK set; this only guards against
/// a wedged kernel turning into a hung test.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed, before the caller says what it was doing.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The kernel answered with NLMSG_ERROR.
    Kernel {
        /// The (positive) errno.
        errno: Errno,
        /// The extended-ACK message, if the kernel sent one.
        message: Option<String>,
    },
    /// send/recv on the socket failed.
    Io(io::Error),
    /// A reply could not be decoded.
    Decode(String),
}

impl Failure {
    /// The errno if the kernel refused the request.
    pub(crate) fn errno(&self) -> Option<Errno> {
        match self {
            Failure::Kernel { errno, .. } => Some(*errno),
            Failure::Io(e) => e.raw_os_error().map(Errno::from_raw),
            Failure::Decode(_) => None,
        }
    }

    /// Turns the failure into an [`Error`] that says what was being done.
    /// EPERM/EACCES become [`Error::NeedsPrivilege`]; callers that know
    /// better (EEXIST, ENODEV) match on [`Failure::errno`] first.
    pub(crate) fn context(self, action: impl Into<String>) -> Error {
        let action = action.into();
        match self {
            Failure::Kernel {
                errno: Errno::EPERM | Errno::EACCES,
                ..
            } => Error::NeedsPrivilege {
                action,
                capability: "CAP_NET_ADMIN",
            },
            Failure::Kernel { errno, message } => Error::Kernel {
                action,
                errno,
                message: message.unwrap_or_else(|| errno.desc().to_string()),
            },
            Failure::Io(source) => Error::io(action, "CAP_NET_ADMIN", source),
            Failure::Decode(detail) => Error::Decode { action, detail },
        }
    }
}

/// A NETLINK_ROUTE socket bound to one network namespace.
///
/// Every object API of the crate (links, addresses, routes) is a method on
/// this handle. Not `Sync`: one request is in flight at a time.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: Cell<u32>,
    netns: Option<String>,
}

impl Netlink {
    /// Opens a handle on the calling thread's own network namespace.
    pub fn current() -> Result<Self> {
        let action = "opening a NETLINK_ROUTE socket";
        let mut socket =
            Socket::new(NETLINK_ROUTE).map_err(|e| Error::io(action, "CAP_NET_ADMIN", e))?;
        socket
            .bind_auto()
            .map_err(|e| Error::io(action, "CAP_NET_ADMIN", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| Error::io(action, "CAP_NET_ADMIN", e))?;
        // Both are best effort: without them errors still carry an errno,
        // only the kernel's explanation is missing.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        socket2::SockRef::from(&socket)
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io(action, "CAP_NET_ADMIN", e))?;
        Ok(Netlink {
            socket,
            seq: Cell::new(0),
            netns: None,
        })
    }

    /// Opens a handle acting inside the named namespace (under /run/netns).
    pub fn in_netns(name: &str) -> Result<Self> {
        let mut handle = netns::run_in(name, Netlink::current)??;
        handle.netns = Some(name.to_string());
        Ok(handle)
    }

    /// Opens a handle on the named namespace, or on the caller's own for `None`.
    pub fn open(netns: Option<&str>) -> Result<Self> {
        match netns {
            Some(name) => Netlink::in_netns(name),
            None => Netlink::current(),
        }
    }

    /// The namespace this handle acts in (`None`: the one it was opened in by
    /// [`Netlink::current`]).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// The namespace as an owned value, for error variants.
    pub(crate) fn ns(&self) -> Option<String> {
        self.netns.clone()
    }

    fn next_seq(&self) -> u32 {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        seq
    }

    fn send(&self, payload: RouteNetlinkMessage, flags: u16) -> Result<u32, Failure> {
        let seq = self.next_seq();
        let mut msg = NetlinkMessage::from(payload);
        msg.header.flags = flags;
        msg.header.sequence_number = seq;
        msg.finalize();
        // One allocation per request: this is the control path.
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(Failure::Io)?;
        Ok(seq)
    }

    /// Reads one datagram (which can hold several messages) whole.
    fn recv_datagram(&self) -> Result<Vec<u8>, Failure> {
        let mut buf: Vec<u8> = Vec::new();
        let len = loop {
            match self.socket.recv(&mut buf, libc::MSG_PEEK | libc::MSG_TRUNC) {
                Ok(len) => break len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            }
        };
        buf.clear();
        buf.reserve(len);
        loop {
            match self.socket.recv(&mut buf, 0) {
                Ok(_) => return Ok(buf),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Io(e)),
            }
        }
    }

    /// Sends `payload` with NLM_F_ACK (plus `flags`) and waits for the ACK.
    pub(crate) fn request(&self, payload: RouteNetlinkMessage, flags: u16) -> Result<(), Failure> {
        let seq = self.send(payload, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        loop {
            let datagram = self.recv_datagram()?;
            for msg in split(&datagram)? {
                if msg.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(err) = msg.payload {
                    return match err.code {
                        None => Ok(()),
                        Some(code) => {
                            Err(kernel_failure(code.get(), msg.header.flags, &err.header))
                        }
                    };
                }
            }
        }
    }

    /// Sends a dump request and collects every reply until NLMSG_DONE,
    /// retrying when the kernel flags the dump as interrupted.
    pub(crate) fn dump(
        &self,
        payload: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (replies, interrupted) = self.dump_once(payload.clone())?;
            if !interrupted || attempt >= DUMP_ATTEMPTS {
                return Ok(replies);
            }
        }
    }

    fn dump_once(
        &self,
        payload: RouteNetlinkMessage,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), Failure> {
        let seq = self.send(payload, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            let datagram = self.recv_datagram()?;
            for msg in split(&datagram)? {
                if msg.header.sequence_number != seq {
                    continue;
                }
                interrupted |= msg.header.flags & NLM_F_DUMP_INTR != 0;
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Done(done) => {
                        if done.code < 0 {
                            return Err(Failure::Kernel {
                                errno: Errno::from_raw(-done.code),
                                message: None,
                            });
                        }
                        return Ok((replies, interrupted));
                    }
                    NetlinkPayload::Error(err) => {
                        if let Some(code) = err.code {
                            return Err(kernel_failure(code.get(), msg.header.flags, &err.header));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends a GET for one object and returns the kernel's single reply.
    pub(crate) fn get(&self, payload: RouteNetlinkMessage) -> Result<RouteNetlinkMessage, Failure> {
        let seq = self.send(payload, NLM_F_REQUEST)?;
        loop {
            let datagram = self.recv_datagram()?;
            for msg in split(&datagram)? {
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => return Ok(inner),
                    NetlinkPayload::Error(err) => {
                        return Err(match err.code {
                            Some(code) => kernel_failure(code.get(), msg.header.flags, &err.header),
                            None => Failure::Decode("an ACK where a reply was expected".into()),
                        });
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Splits one datagram into its netlink messages.
fn split(datagram: &[u8]) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, Failure> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let rest = datagram.get(offset..).unwrap_or_default();
        let len = NetlinkBuffer::new_checked(rest)
            .map_err(|e| Failure::Decode(e.to_string()))?
            .length() as usize;
        let one = rest.get(..len).ok_or_else(|| {
            Failure::Decode(format!("message of {len} bytes in {} left", rest.len()))
        })?;
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(one)
            .map_err(|e| Failure::Decode(e.to_string()))?;
        out.push(msg);
        // Messages are aligned to 4 bytes (NLMSG_ALIGN); a zero length would
        // loop forever, but new_checked refuses lengths below the header.
        offset += (len + 3) & !3;
    }
    Ok(out)
}

/// Builds a [`Failure::Kernel`] from an NLMSG_ERROR, pulling the
/// extended-ACK message out of the attributes that follow the quoted request.
fn kernel_failure(code: i32, flags: u16, quoted: &[u8]) -> Failure {
    let errno = Errno::from_raw(code.saturating_abs());
    let message = if flags & NLM_F_ACK_TLVS != 0 {
        ext_ack_message(flags, quoted)
    } else {
        None
    };
    Failure::Kernel { errno, message }
}

/// Finds NLMSGERR_ATTR_MSG in the TLVs after the quoted request.
fn ext_ack_message(flags: u16, quoted: &[u8]) -> Option<String> {
    let quoted_len = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32::from_ne_bytes(quoted.get(..4)?.try_into().ok()?) as usize
    };
    let mut tlvs = quoted.get((quoted_len + 3) & !3..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]);
        if len < 4 {
            return None;
        }
        let value = tlvs.get(4..len)?;
        if kind == NLMSGERR_ATTR_MSG {
            let text = String::from_utf8_lossy(value);
            let text = text.trim_end_matches('\0').trim();
            return (!text.is_empty()).then(|| text.to_string());
        }
        tlvs = tlvs.get((len + 3) & !3..)?;
    }
    None
}

#[cfg(test)]
mod test {
    use super::*;

    /// An NLMSG_ERROR payload after the error code, as the kernel sends it
    /// with NETLINK_CAP_ACK and NETLINK_EXT_ACK: the 16-byte header of the
    /// request, then NLMSGERR_ATTR_MSG "Unknown device type" and
    /// NLMSGERR_ATTR_OFFS.
    static CAPPED_EXT_ACK: [u8; 48] = [
        // quoted nlmsghdr: len 52, type 16 (RTM_NEWLINK), flags, seq 7, pid 0
        52, 0, 0, 0, 16, 0, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, //
        // NLMSGERR_ATTR_MSG, len 24: "Unknown device type\0"
        24, 0, 1, 0, b'U', b'n', b'k', b'n', b'o', b'w', b'n', b' ', b'd', b'e', b'v', b'i', b'c',
        b'e', b' ', b't', b'y', b'p', b'e', 0, //
        // NLMSGERR_ATTR_OFFS, len 8
        8, 0, 2, 0, 36, 0, 0, 0,
    ];

    #[test]
    fn ext_ack_message_is_found_after_a_capped_request() {
        let msg = ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &CAPPED_EXT_ACK);
        assert_eq!(msg.as_deref(), Some("Unknown device type"));
    }

    #[test]
    fn ext_ack_parser_survives_every_truncation() {
        for cut in 0..CAPPED_EXT_ACK.len() {
            let _ = ext_ack_message(NLM_F_CAPPED | NLM_F_ACK_TLVS, &CAPPED_EXT_ACK[..cut]);
            let _ = ext_ack_message(NLM_F_ACK_TLVS, &CAPPED_EXT_ACK[..cut]);
        }
    }

    #[test]
    fn kernel_failure_without_tlvs_keeps_the_errno() {
        match kernel_failure(-17, 0, &CAPPED_EXT_ACK) {
            Failure::Kernel { errno, message } => {
                assert_eq!(errno, Errno::EEXIST);
                assert_eq!(message, None);
            }
            other => panic!("expected a kernel failure, got {other:?}"),
        }
    }

    #[test]
    fn split_refuses_garbage_instead_of_panicking() {
        assert!(split(&[1, 2, 3]).is_err());
        assert!(split(&[0xff; 40]).is_err());
        assert!(split(&[]).map(|v| v.is_empty()).unwrap_or(false));
    }
}
