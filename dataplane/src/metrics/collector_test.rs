//! The encoding, read back: every name, label and value a scrape shows,
//! from counters set by hand.

use std::collections::BTreeMap;

use prometheus_client::registry::Registry;

use super::*;

/// Peers fixed by the test.
#[derive(Debug)]
struct Fixed(PeerKind, Vec<PeerSample>);

impl PeerSource for Fixed {
    fn kind(&self) -> PeerKind {
        self.0
    }
    fn sample(&self, _: Instant, _: SystemTime) -> Vec<PeerSample> {
        self.1.clone()
    }
}

/// One sample line of the text: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the OpenMetrics text the way a scraper does: `# TYPE` lines
/// give each family's type, every other non-comment line is a sample.
fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Line>) {
    let mut types = BTreeMap::new();
    let mut lines = Vec::new();
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').expect("a TYPE line has a type");
            types.insert(name.to_string(), t.to_string());
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        let (series, value) = l.rsplit_once(' ').expect("a sample has a value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",") {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (n.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        lines.push(Line {
            name,
            labels,
            value: value.parse().expect("a number"),
        });
    }
    (types, lines)
}

fn scrape(sources: Sources) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TunnelCollector::new(sources)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
    text
}

fn value(lines: &[Line], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<&Line> = lines
        .iter()
        .filter(|l| {
            l.name == name
                && want
                    .iter()
                    .all(|(k, v)| l.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} with {want:?}, found {found:?}"
    );
    found[0].value
}

fn two_workers() -> Vec<Arc<CachePadded<WorkerCounters>>> {
    let (a, b) = (
        Arc::new(WorkerCounters::new()),
        Arc::new(WorkerCounters::new()),
    );
    a.udp_tx_datagrams.add(64);
    a.udp_tx_sends.add(2);
    a.udp_rx_datagrams.add(10);
    a.udp_tx_bytes.add(90_000);
    b.udp_rx_bytes.add(1234);
    b.dev_write_coalesced.add(3);
    b.dev_write_coalesced_segments.add(24);
    b.yields.add(7);
    a.drop_packet(DropReason::Replay);
    b.drop_packet(DropReason::Replay);
    b.drop_packet(DropReason::RcvbufOverflow);
    vec![a, b]
}

const KEY: &str = "HnL3VGkz09UzsMPUwXZPV1/oOP/Pi+MdEzLxN9B790Y=";

#[test]
fn wireguard_peers_carry_the_exporters_names_and_labels() {
    let control = Arc::new(ControlCounters::default());
    control.handshakes_initiated.add(3);
    control.handshakes_completed.add(2);
    control.cookie_replies_sent.add(7);
    control.drops[DropReason::QueueFull.index()].set(5);
    control.drops[DropReason::Replay.index()].set(1);
    let peers = vec![
        PeerSample {
            name: KEY.into(),
            allowed_ips: "10.2.0.0/16,fd00:2::/64".into(),
            traffic: Traffic {
                tx_packets: 10,
                tx_bytes: 1000,
                rx_packets: 20,
                rx_bytes: 2000,
            },
            latest_handshake_unix: Some(1_700_000_000),
            session_age_seconds: Some(12.5),
        },
        PeerSample {
            name: "vazXl5zF9xQTKJDri+M9oy5uinwkfnoU/eTl5loi708=".into(),
            allowed_ips: String::new(),
            traffic: Traffic::default(),
            latest_handshake_unix: None,
            session_age_seconds: None,
        },
    ];
    let text = scrape(Sources {
        interface: "rt0".into(),
        workers: two_workers(),
        control,
        peers: Arc::new(Fixed(PeerKind::WireGuard, peers)),
    });
    let (types, lines) = parse(&text);
    let peer = [
        ("interface", "rt0"),
        ("public_key", KEY),
        ("allowed_ips", "10.2.0.0/16,fd00:2::/64"),
    ];
    assert_eq!(value(&lines, "wireguard_sent_bytes_total", &peer), 1000.0);
    assert_eq!(
        value(&lines, "wireguard_received_bytes_total", &peer),
        2000.0
    );
    assert_eq!(
        value(&lines, "wireguard_latest_handshake_seconds", &peer),
        1_700_000_000.0
    );
    assert_eq!(types["wireguard_sent_bytes"], "counter");
    assert_eq!(types["wireguard_latest_handshake_seconds"], "gauge");
    // A peer without a handshake shows 0, as the exporter does, and no
    // session age.
    let quiet = [("public_key", "vazXl5zF9xQTKJDri+M9oy5uinwkfnoU/eTl5loi708=")];
    assert_eq!(
        value(&lines, "wireguard_latest_handshake_seconds", &quiet),
        0.0
    );
    assert_eq!(
        value(
            &lines,
            "ringtun_peer_session_age_seconds",
            &[("public_key", KEY)]
        ),
        12.5
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.name == "ringtun_peer_session_age_seconds")
            .count(),
        1
    );
    assert_eq!(
        value(
            &lines,
            "ringtun_peer_received_packets_total",
            &[("public_key", KEY)]
        ),
        20.0
    );

    // Workers, each labelled, by direction.
    let w0_sent = [("worker", "0"), ("direction", "sent")];
    assert_eq!(value(&lines, "ringtun_udp_datagrams_total", &w0_sent), 64.0);
    assert_eq!(
        value(&lines, "ringtun_udp_sends_total", &[("worker", "0")]),
        2.0
    );
    assert_eq!(value(&lines, "ringtun_udp_bytes_total", &w0_sent), 90_000.0);
    assert_eq!(
        value(
            &lines,
            "ringtun_udp_bytes_total",
            &[("worker", "1"), ("direction", "received")]
        ),
        1234.0
    );
    assert_eq!(
        value(
            &lines,
            "ringtun_device_coalesced_segments_total",
            &[("worker", "1")]
        ),
        24.0
    );
    assert_eq!(
        value(&lines, "ringtun_worker_yields_total", &[("worker", "1")]),
        7.0
    );

    // Drops: every reason present, workers and control thread summed.
    for r in DropReason::ALL {
        value(&lines, "ringtun_drops_total", &[("reason", r.as_str())]);
    }
    assert_eq!(
        value(&lines, "ringtun_drops_total", &[("reason", "replay")]),
        3.0
    );
    assert_eq!(
        value(&lines, "ringtun_drops_total", &[("reason", "queue_full")]),
        5.0
    );
    assert_eq!(value(&lines, "ringtun_queue_full_total", &[]), 5.0);
    assert_eq!(
        value(&lines, "ringtun_socket_receive_buffer_overflows_total", &[]),
        1.0
    );
    assert_eq!(
        value(&lines, "ringtun_handshakes_initiated_total", &[]),
        3.0
    );
    assert_eq!(
        value(&lines, "ringtun_handshakes_completed_total", &[]),
        2.0
    );
    assert_eq!(value(&lines, "ringtun_cookie_replies_sent_total", &[]), 7.0);
    assert!(
        lines
            .iter()
            .all(|l| l.labels.get("interface").map(String::as_str) == Some("rt0")),
        "every sample names the interface"
    );
    assert!(!text.contains("ringtun_vtep_"));
}

#[test]
fn vxlan_peers_are_remote_vteps_by_endpoint() {
    let peers = vec![PeerSample {
        name: "192.0.2.2:4789".into(),
        allowed_ips: String::new(),
        traffic: Traffic {
            tx_packets: 4,
            tx_bytes: 400,
            rx_packets: 5,
            rx_bytes: 500,
        },
        latest_handshake_unix: None,
        session_age_seconds: None,
    }];
    let text = scrape(Sources {
        interface: "rtv".into(),
        workers: two_workers(),
        control: Default::default(),
        peers: Arc::new(Fixed(PeerKind::Vtep, peers)),
    });
    let (_, lines) = parse(&text);
    let vtep = [("interface", "rtv"), ("vtep", "192.0.2.2:4789")];
    assert_eq!(value(&lines, "ringtun_vtep_sent_bytes_total", &vtep), 400.0);
    assert_eq!(
        value(&lines, "ringtun_vtep_received_bytes_total", &vtep),
        500.0
    );
    assert_eq!(value(&lines, "ringtun_vtep_sent_packets_total", &vtep), 4.0);
    assert_eq!(
        value(&lines, "ringtun_vtep_received_packets_total", &vtep),
        5.0
    );
    assert!(!text.contains("wireguard_"));
}

#[test]
fn a_scrape_reads_the_counters_as_they_are_then() {
    let workers = two_workers();
    let sources = Sources {
        interface: "rt0".into(),
        workers: workers.clone(),
        control: Default::default(),
        peers: Arc::new(Fixed(PeerKind::WireGuard, Vec::new())),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(TunnelCollector::new(sources)));
    let read = |registry: &Registry| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
        let (_, lines) = parse(&text);
        value(&lines, "ringtun_drops_total", &[("reason", "malformed")])
    };
    assert_eq!(read(&registry), 0.0);
    workers[1].drop_packet(DropReason::Malformed);
    assert_eq!(
        read(&registry),
        1.0,
        "no copy in between: the next scrape sees it"
    );
}

#[test]
fn an_interface_name_with_quotes_and_backslashes_is_escaped_and_help_has_no_quotes() {
    let text = scrape(Sources {
        interface: "rt\"a\\b".into(),
        workers: two_workers(),
        control: Default::default(),
        peers: Arc::new(Fixed(PeerKind::WireGuard, Vec::new())),
    });
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!samples.is_empty());
    for l in samples {
        assert!(
            l.contains(r#"interface="rt\"a\\b""#),
            "the interface label should be escaped: {l}"
        );
    }
    for l in text.lines().filter(|l| l.starts_with("# HELP ")) {
        assert!(!l.contains('"'), "a quote in HELP text: {l}");
    }
}
