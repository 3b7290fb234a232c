//! The `/metrics` thread: a blocking listener, one request per
//! connection, a deadline on every connection and a bound on what a
//! request may send, so that a slow or silent client costs this thread a
//! second or two and nobody else anything.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::request::{MAX_REQUEST_BYTES, RequestError, head_end, parse_request};

/// How long one connection may take, request and answer together: a
/// scraper on a LAN needs milliseconds.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(2);

/// The OpenMetrics text format, what prometheus-client writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` for `/metrics`; done before the device exists, so that an
/// address in use stops the start with nothing made.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// The running `/metrics` thread.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    /// A second handle on the listening socket, to wake the blocked
    /// `accept` at stop (a `shutdown` of a listener makes it fail).
    wake: OwnedFd,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// Serves `registry` on `listener` from a new thread.
    pub fn spawn(listener: TcpListener, registry: Registry) -> io::Result<MetricsServer> {
        let addr = listener.local_addr()?;
        let wake = listener.as_fd().try_clone_to_owned()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ringtun-metrics".into())
            .spawn(move || serve(&listener, &registry, &flag))?;
        Ok(MetricsServer {
            addr,
            wake,
            stop,
            thread,
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the thread (a connection being served finishes first, within
    /// [`CONNECTION_DEADLINE`]) and closes the listener.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&self.wake),
            nix::sys::socket::Shutdown::Both,
        );
        if self.thread.join().is_err() {
            tracing::error!("the metrics thread panicked");
        }
    }
}

fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                if let Err(e) = serve_one(stream, registry) {
                    tracing::debug!(error = %e, "metrics client");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "metrics: accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Answers one connection: reads the head (at most
/// [`MAX_REQUEST_BYTES`], within [`CONNECTION_DEADLINE`]), then writes
/// the metrics or a status that says why not, and closes.
pub fn serve_one(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    let deadline = Instant::now() + CONNECTION_DEADLINE;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let parsed = loop {
        if let Some(end) = head_end(&buf[..len]) {
            break parse_request(&buf[..end]);
        }
        if len == buf.len() {
            break Err(RequestError::TooLarge);
        }
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left()))?;
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let response = match parsed {
        Ok(scrape) => {
            let mut body = String::new();
            prometheus_client::encoding::text::encode(&mut body, registry)
                .map_err(|_| io::Error::other("encoding the metrics"))?;
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if !scrape.head_only {
                r.push_str(&body);
            }
            r
        }
        Err(e) => {
            let allow = if e == RequestError::MethodNotAllowed {
                "Allow: GET, HEAD\r\n"
            } else {
                ""
            };
            let body = format!("{}\n", e.status());
            format!(
                "HTTP/1.1 {}\r\nContent-Type: text/plain\r\n{allow}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                e.status(),
                body.len()
            )
        }
    };
    // A client that reads slowly or never: the whole answer goes within the
    // deadline or not at all. A write timeout alone bounds each send, and a
    // client that reads a little before each one expires would renew it.
    let mut rest = response.as_bytes();
    while !rest.is_empty() {
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left()))?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    fn server() -> MetricsServer {
        let listener = bind("127.0.0.1:0".parse().expect("an address")).expect("binds");
        MetricsServer::spawn(listener, Registry::default()).expect("spawns")
    }

    fn ask(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("sends");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("reads the answer");
        answer
    }

    #[test]
    fn a_scrape_gets_openmetrics_and_anything_else_a_status() {
        let srv = server();
        let ok = ask(
            srv.local_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let head = ask(srv.local_addr(), b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let other = ask(srv.local_addr(), b"GET /debug HTTP/1.1\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let post = ask(srv.local_addr(), b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        let huge = ask(srv.local_addr(), &vec![b'a'; MAX_REQUEST_BYTES + 10]);
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        srv.stop();
    }

    #[test]
    fn a_client_that_reads_slowly_is_cut_off_at_the_deadline() {
        use prometheus_client::metrics::counter::Counter;
        // An answer far larger than both sockets' buffers, so that it goes
        // only as fast as the client reads.
        let mut registry = Registry::default();
        for i in 0..10_000 {
            registry.register(format!("c{i}"), "one of many", Counter::<u64>::default());
        }
        let listener = bind("127.0.0.1:0".parse().expect("an address")).expect("binds");
        let addr = listener.local_addr().expect("an address");
        let client = std::thread::spawn(move || {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("a socket");
            sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            sock.connect(&addr.into()).expect("connects");
            let mut s = TcpStream::from(sock);
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
                .expect("sends");
            // A little every 200 ms, enough to renew a per-send timeout,
            // for longer than the deadline; then it gives up.
            let mut got = 0;
            let mut chunk = [0u8; 4096];
            let until = Instant::now() + Duration::from_secs(30);
            while Instant::now() < until {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got += n,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            got
        });
        let (stream, _) = listener.accept().expect("accepts");
        socket2::SockRef::from(&stream)
            .set_send_buffer_size(4096)
            .expect("SO_SNDBUF");
        let served = serve_one(stream, &registry);
        let got = client.join().expect("the client thread");
        let kind = served.as_ref().map_err(io::Error::kind);
        assert!(
            matches!(
                kind,
                Err(io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
            ),
            "a slow reader should be cut off by the deadline, came {served:?} after {got} bytes"
        );
    }

    #[test]
    fn a_silent_client_holds_the_thread_for_the_deadline_at_most() {
        let srv = server();
        let _silent = TcpStream::connect(srv.local_addr()).expect("connects");
        let t = Instant::now();
        let ok = ask(srv.local_addr(), b"GET /metrics HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        let waited = t.elapsed();
        assert!(
            waited < CONNECTION_DEADLINE + Duration::from_secs(1),
            "a scrape behind a silent client waited {waited:?}"
        );
        let t = Instant::now();
        srv.stop();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "stop took {:?}",
            t.elapsed()
        );
    }
}
