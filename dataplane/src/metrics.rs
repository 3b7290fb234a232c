//! `GET /metrics` for Prometheus: the tunnel's counters in the OpenMetrics
//! text format, read at scrape time from where the workers and the control
//! thread keep them, served from a thread of its own so that a scrape, or a
//! client that connects and never reads, delays neither.
//!
//! The peer metrics carry the names and labels of
//! prometheus_wireguard_exporter (`wireguard_sent_bytes_total`, ...), so
//! dashboards made for it work; everything else is `ringtun_*`.

mod collector;
mod request;
mod server;

pub use collector::{PeerKind, PeerSample, PeerSource, Sources, TunnelCollector};
pub use request::{MAX_REQUEST_BYTES, RequestError, Scrape, head_end, parse_request};
pub use server::{MetricsServer, bind, serve_one};
