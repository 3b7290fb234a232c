//! Peer endpoints as written (`1.2.3.4:51820`, `[fd00::1]:51820`, `gw.example.net:51820`),
//! kept unresolved: turning a host name into an address is I/O, done by [`Endpoint::resolve`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A peer's `Endpoint`: an address, or a host name still to be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A literal IPv4 or IPv6 socket address.
    Addr(SocketAddr),
    /// A host name and a port; [`Endpoint::resolve`] looks it up.
    Host {
        /// The DNS name, as written.
        host: String,
        /// The UDP port.
        port: u16,
    },
}

/// Why a string is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// No `:PORT` at the end.
    #[error("no port (expected IPV4:PORT, [IPV6]:PORT or HOST:PORT)")]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    /// An IPv6 address written without brackets (its colons would be ambiguous with the port's).
    #[error("an IPv6 address needs brackets: [IPV6]:PORT")]
    Ipv6NeedsBrackets,
    /// The part in brackets is not an IPv6 address.
    #[error("the part in brackets is not an IPv6 address")]
    BadIpv6,
    /// The host is neither an IP address nor a valid DNS name.
    #[error("not an IP address or a host name")]
    BadHost,
}

/// A host name that did not resolve to an address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The resolver failed (unknown name, no network, ...).
    #[error("cannot resolve {endpoint}: {source}")]
    Lookup {
        /// The endpoint as written.
        endpoint: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// The resolver answered with no address.
    #[error("{endpoint} resolves to no address")]
    NoAddress {
        /// The endpoint as written.
        endpoint: String,
    },
}

impl Endpoint {
    /// The socket address to send to. A literal address returns at once; a host name is looked
    /// up with the system resolver (blocking I/O: call it off the data path) and the first
    /// address returned is used, as `wg` does (getaddrinfo orders them by RFC 6724 preference).
    pub fn resolve(&self) -> Result<SocketAddr, ResolveError> {
        match self {
            Self::Addr(addr) => Ok(*addr),
            Self::Host { host, port } => {
                let mut addrs = (host.as_str(), *port).to_socket_addrs().map_err(|source| {
                    ResolveError::Lookup {
                        endpoint: self.to_string(),
                        source,
                    }
                })?;
                addrs.next().ok_or_else(|| ResolveError::NoAddress {
                    endpoint: self.to_string(),
                })
            }
        }
    }

    /// The port, known without resolving.
    pub fn port(&self) -> u16 {
        match self {
            Self::Addr(a) => a.port(),
            Self::Host { port, .. } => *port,
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or(EndpointError::BadIpv6)?;
            let port = after.strip_prefix(':').ok_or(EndpointError::MissingPort)?;
            let port = parse_port(port)?;
            // SocketAddr's parser understands a numeric scope (`[fe80::1%2]:51820`).
            return format!("[{inside}]:{port}")
                .parse::<SocketAddr>()
                .map(Self::Addr)
                .map_err(|_| EndpointError::BadIpv6);
        }
        let (host, port) = s.rsplit_once(':').ok_or(EndpointError::MissingPort)?;
        if host.contains(':') {
            return Err(if s.parse::<IpAddr>().is_ok() {
                EndpointError::MissingPort
            } else {
                EndpointError::Ipv6NeedsBrackets
            });
        }
        let port = parse_port(port)?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self::Addr(SocketAddr::new(ip, port)));
        }
        if !is_host_name(host) {
            return Err(EndpointError::BadHost);
        }
        Ok(Self::Host {
            host: host.to_owned(),
            port,
        })
    }
}

fn parse_port(s: &str) -> Result<u16, EndpointError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EndpointError::BadPort);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(EndpointError::BadPort),
        Ok(p) => Ok(p),
    }
}

/// A DNS name as RFC 1123 allows it (plus `_`, which resolvers accept): labels of 1-63
/// letters, digits, `-` or `_`, not starting or ending with `-`, at most 253 bytes, an optional
/// final dot; the last label not all digits, so that a mistyped address (`10.0.0.256`) is
/// refused here instead of being sent to a resolver.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    let labels_ok = host.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && !last_numeric
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(a) => write!(f, "{a}"),
            Self::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep(s: &str) -> Result<Endpoint, EndpointError> {
        s.parse()
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            ep("192.0.2.1:51820"),
            Ok(Endpoint::Addr("192.0.2.1:51820".parse().unwrap()))
        );
        assert_eq!(
            ep("[2001:db8::1]:4789"),
            Ok(Endpoint::Addr("[2001:db8::1]:4789".parse().unwrap()))
        );
        assert_eq!(
            ep("[fe80::1%2]:51820"),
            Ok(Endpoint::Addr("[fe80::1%2]:51820".parse().unwrap()))
        );
        assert_eq!(
            ep("gw-1.example.net:51820"),
            Ok(Endpoint::Host {
                host: "gw-1.example.net".into(),
                port: 51820
            })
        );
        assert_eq!(
            ep("localhost.:1"),
            Ok(Endpoint::Host {
                host: "localhost.".into(),
                port: 1
            })
        );
    }

    #[test]
    fn display_gives_back_what_was_parsed() {
        for s in [
            "192.0.2.1:51820",
            "[2001:db8::1]:4789",
            "gw.example.net:51820",
        ] {
            assert_eq!(ep(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_endpoints_with_the_reason() {
        assert_eq!(ep("192.0.2.1"), Err(EndpointError::MissingPort));
        assert_eq!(ep("gw.example.net"), Err(EndpointError::MissingPort));
        assert_eq!(ep("2001:db8::1"), Err(EndpointError::MissingPort));
        assert_eq!(
            ep("2001:db8::1:51820"),
            Err(EndpointError::Ipv6NeedsBrackets)
        );
        assert_eq!(ep("fd00::x:51820"), Err(EndpointError::Ipv6NeedsBrackets));
        assert_eq!(ep("[2001:db8::1]"), Err(EndpointError::MissingPort));
        assert_eq!(ep("[2001:db8::1:51820"), Err(EndpointError::BadIpv6));
        assert_eq!(ep("[192.0.2.1]:51820"), Err(EndpointError::BadIpv6));
        assert_eq!(ep("192.0.2.1:0"), Err(EndpointError::BadPort));
        assert_eq!(ep("192.0.2.1:65536"), Err(EndpointError::BadPort));
        assert_eq!(ep("192.0.2.1:+80"), Err(EndpointError::BadPort));
        assert_eq!(ep("192.0.2.1:"), Err(EndpointError::BadPort));
        assert_eq!(ep("10.0.0.256:80"), Err(EndpointError::BadHost));
        assert_eq!(ep("bad host:80"), Err(EndpointError::BadHost));
        assert_eq!(ep("-gw.example:80"), Err(EndpointError::BadHost));
        assert_eq!(ep(":80"), Err(EndpointError::BadHost));
        assert_eq!(ep("a..b:80"), Err(EndpointError::BadHost));
    }

    #[test]
    fn resolve_of_an_address_needs_no_lookup() {
        assert_eq!(
            ep("192.0.2.1:51820").unwrap().resolve().unwrap(),
            "192.0.2.1:51820".parse().unwrap()
        );
    }

    #[test]
    fn resolve_looks_up_localhost() {
        // `localhost` resolves from /etc/hosts or the resolver's built-in rule: no network needed.
        let addr = ep("localhost:51820").unwrap().resolve().unwrap();
        assert!(addr.ip().is_loopback(), "localhost resolved to {addr}");
        assert_eq!(addr.port(), 51820);
    }

    #[test]
    fn resolve_failure_names_the_endpoint() {
        // `.invalid` is reserved (RFC 2606) and never resolves.
        let err = ep("no-such-host.invalid:51820")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot resolve no-such-host.invalid:51820: "),
            "got: {err}"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Endpoint>();
        }

        #[test]
        fn socket_addrs_round_trip(a in any::<SocketAddr>().prop_filter("port 0 is refused", |a| a.port() != 0)) {
            // Flow info is not part of the text form.
            let a = match a { SocketAddr::V6(mut v6) => { v6.set_flowinfo(0); SocketAddr::V6(v6) } v4 => v4 };
            prop_assert_eq!(a.to_string().parse::<Endpoint>(), Ok(Endpoint::Addr(a)));
        }
    }
}
