//! The request `/metrics` answers, read from untrusted bytes: a pure
//! parser of the request line, so it can be tested and fuzzed alone.

/// The most a request may send before its head ends: a scraper's request
/// is a few hundred bytes; anything near this is not one.
pub const MAX_REQUEST_BYTES: usize = 8192;

/// A request to answer with the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrape {
    /// `HEAD`: the headers only.
    pub head_only: bool,
}

/// Why a request gets no metrics, as an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not an HTTP/1.x request line.
    #[error("400 Bad Request")]
    Malformed,
    /// A method other than GET or HEAD.
    #[error("405 Method Not Allowed")]
    MethodNotAllowed,
    /// A path other than `/metrics`.
    #[error("404 Not Found")]
    NotFound,
    /// The head did not end within [`MAX_REQUEST_BYTES`].
    #[error("431 Request Header Fields Too Large")]
    TooLarge,
}

impl RequestError {
    /// The status line's code and reason, as `400 Bad Request`.
    pub fn status(&self) -> String {
        self.to_string()
    }
}

/// Where the request's head ends (just past the blank line), if it has
/// arrived: `\r\n\r\n`, or `\n\n` from clients that send bare newlines.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads the request line at the start of `head`: `GET /metrics HTTP/1.1`
/// (a query string is ignored, as Prometheus's own `?` parameters are).
/// Headers are not looked at: nothing in them changes the answer.
pub fn parse_request(head: &[u8]) -> Result<Scrape, RequestError> {
    let line_end = head
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(RequestError::Malformed)?;
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    let line = std::str::from_utf8(line).map_err(|_| RequestError::Malformed)?;
    if !line.is_ascii() || line.chars().any(|c| c.is_ascii_control()) {
        return Err(RequestError::Malformed);
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() || target.is_empty() {
        return Err(RequestError::Malformed);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Err(RequestError::NotFound);
    }
    Ok(Scrape { head_only })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_scrapers_request_is_a_scrape() {
        let req = b"GET /metrics HTTP/1.1\r\nHost: 10.0.0.1:9586\r\nAccept: application/openmetrics-text\r\n\r\n";
        assert_eq!(head_end(req), Some(req.len()));
        assert_eq!(parse_request(req), Ok(Scrape { head_only: false }));
        assert_eq!(
            parse_request(b"HEAD /metrics?x=1 HTTP/1.0\n\n"),
            Ok(Scrape { head_only: true })
        );
    }

    #[test]
    fn anything_else_gets_the_status_that_says_why() {
        let cases: &[(&[u8], RequestError)] = &[
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                RequestError::MethodNotAllowed,
            ),
            (b"GET / HTTP/1.1\r\n\r\n", RequestError::NotFound),
            (b"GET /metrics/ HTTP/1.1\r\n\r\n", RequestError::NotFound),
            (b"GET /metrics\r\n\r\n", RequestError::Malformed),
            (b"GET  /metrics HTTP/1.1\r\n\r\n", RequestError::Malformed),
            (b"GET /metrics HTTP/2\r\n\r\n", RequestError::Malformed),
            (b"GET /metrics HTTP/1.1 x\r\n\r\n", RequestError::Malformed),
            (
                b"GET /met\x00rics HTTP/1.1\r\n\r\n",
                RequestError::Malformed,
            ),
            (
                b"GET /m\xc3\xa9trics HTTP/1.1\r\n\r\n",
                RequestError::Malformed,
            ),
            (b"\r\n\r\n", RequestError::Malformed),
            (b"GET /metrics HTTP/1.1", RequestError::Malformed),
            (b"", RequestError::Malformed),
        ];
        for (req, want) in cases {
            assert_eq!(
                parse_request(req),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"a\r\n\r\nb\n\n"), Some(5));
        assert_eq!(head_end(b""), None);
    }
}
