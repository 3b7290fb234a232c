//! The parser's behaviour, message by message.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::*;

// Key pairs from `wg genkey | tee /dev/stderr | wg pubkey`.
const SK_A: &str = "4PeKeEOEVKIYaN3u7iZVhOqYXqoEljKdpVMeojgxbV8=";
const PK_A: &str = "UiUJT6vgXEZZZ9q78yh8rTRg+0WtuRuO5tZtUzDFYHI=";
const PK_B: &str = "HnL3VGkz09UzsMPUwXZPV1/oOP/Pi+MdEzLxN9B790Y=";
const PK_C: &str = "vazXl5zF9xQTKJDri+M9oy5uinwkfnoU/eTl5loi708=";
const PSK: &str = "h3A78f/oti0fwpb32dCvJg0EJnkXUIjjmW1V0oIDAII=";

fn parse(text: &str) -> (Config, Vec<Warning>) {
    Config::parse(text, "rt0.conf").unwrap_or_else(|e| panic!("refused: {e}\n--\n{text}"))
}

fn error(text: &str) -> String {
    match Config::parse(text, "rt0.conf") {
        Ok(_) => panic!("accepted, expected an error:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn warnings(text: &str) -> Vec<String> {
    parse(text).1.iter().map(ToString::to_string).collect()
}

fn wireguard(config: &Config) -> &WireGuardConfig {
    match &config.mode {
        ModeConfig::WireGuard(wg) => wg,
        ModeConfig::Vxlan(_) => panic!("expected wireguard mode, got vxlan"),
    }
}

fn vxlan(config: &Config) -> &VxlanConfig {
    match &config.mode {
        ModeConfig::Vxlan(vx) => vx,
        ModeConfig::WireGuard(_) => panic!("expected vxlan mode, got wireguard"),
    }
}

fn addrs(list: &[&str]) -> Vec<InterfaceAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn prefixes(list: &[&str]) -> Vec<IpPrefix> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn wg_iface(extra: &str) -> String {
    format!("[Interface]\nPrivateKey = {SK_A}\n{extra}")
}

const FULL_WIREGUARD: &str = "\
# site A, the hub
[Interface]
PrivateKey = 4PeKeEOEVKIYaN3u7iZVhOqYXqoEljKdpVMeojgxbV8=
ListenPort = 51820
Address = 10.0.0.1/24, fd00::1/64
Address = 10.9.0.1
MTU = 1380
Table = 1234
Workers = 2
Offload = off

[Peer]   # site B over IPv4
PublicKey = HnL3VGkz09UzsMPUwXZPV1/oOP/Pi+MdEzLxN9B790Y=
PresharedKey = h3A78f/oti0fwpb32dCvJg0EJnkXUIjjmW1V0oIDAII=
AllowedIPs = 10.0.1.0/24, fd00:1::/64
AllowedIPs = 192.168.1.7/24
Endpoint = 192.0.2.1:51820
PersistentKeepalive = 25
PinEndpoint = true

[Peer]
# site C over IPv6
PublicKey = vazXl5zF9xQTKJDri+M9oy5uinwkfnoU/eTl5loi708=
AllowedIPs = 10.0.2.0/24
Endpoint = [2001:db8::3]:4500
";

#[test]
fn full_wireguard_config_with_two_peers() {
    let (config, warnings) = parse(FULL_WIREGUARD);
    assert_eq!(warnings, vec![]);
    assert_eq!(config.name.as_str(), "rt0");
    assert_eq!(config.file, "rt0.conf");
    assert_eq!(config.mode(), Mode::WireGuard);
    assert_eq!(
        config.interface,
        Interface {
            line: 2,
            listen_port: Some(51820),
            addresses: addrs(&["10.0.0.1/24", "fd00::1/64", "10.9.0.1/32"]),
            mtu: 1380,
            mtu_explicit: true,
            table: Table::Id(1234),
            workers: Workers::Count(NonZeroUsize::new(2).unwrap()),
            offload: false,
            fwmark: 0,
            metrics_listen: None,
            socket_buffer: 32 << 20,
            queue_limit: None,
        }
    );
    let wg = wireguard(&config);
    assert_eq!(wg.private_key.to_base64(), SK_A);
    assert_eq!(wg.private_key.public_key().to_base64(), PK_A);
    assert_eq!(wg.peers.len(), 2);

    let b = &wg.peers[0];
    assert_eq!(b.line, 12);
    assert_eq!(b.public_key.to_base64(), PK_B);
    assert_eq!(
        b.preshared_key
            .as_ref()
            .map(PresharedKey::to_base64)
            .as_deref(),
        Some(PSK)
    );
    // Host bits are cleared, as wg stores AllowedIPs.
    assert_eq!(
        b.allowed_ips,
        prefixes(&["10.0.1.0/24", "fd00:1::/64", "192.168.1.0/24"])
    );
    assert_eq!(
        b.endpoint,
        Some(Endpoint::Addr("192.0.2.1:51820".parse().unwrap()))
    );
    assert_eq!(b.persistent_keepalive, NonZeroU16::new(25));
    assert!(b.pin_endpoint);

    let c = &wg.peers[1];
    assert_eq!(c.line, 21);
    assert_eq!(c.public_key.to_base64(), PK_C);
    assert!(c.preshared_key.is_none());
    assert_eq!(c.allowed_ips, prefixes(&["10.0.2.0/24"]));
    let v6: SocketAddr = "[2001:db8::3]:4500".parse().unwrap();
    assert_eq!(c.endpoint, Some(Endpoint::Addr(v6)));
    assert_eq!(c.endpoint.as_ref().map(|e| e.resolve().unwrap()), Some(v6));
    assert_eq!(c.persistent_keepalive, None);
    assert!(!c.pin_endpoint);
}

#[test]
fn wireguard_defaults() {
    let (config, warnings) = parse(&format!("[Interface]\nPrivateKey = {SK_A}\n"));
    assert!(warnings.is_empty());
    assert_eq!(
        config.interface,
        Interface {
            line: 1,
            listen_port: None,
            addresses: vec![],
            mtu: DEFAULT_MTU_WIREGUARD,
            mtu_explicit: false,
            table: Table::Auto,
            workers: Workers::Auto,
            offload: true,
            fwmark: 0,
            metrics_listen: None,
            socket_buffer: 32 << 20,
            queue_limit: None,
        }
    );
    assert_eq!(config.interface.mtu, 1420);
    assert!(wireguard(&config).peers.is_empty());
    assert!(wireguard(&config).handshake_on_start);
}

#[test]
fn handshake_on_start_is_a_wireguard_switch() {
    let (config, _) = parse(&wg_iface("HandshakeOnStart = off\n"));
    assert!(!wireguard(&config).handshake_on_start);
    let tunnel = wireguard(&config).to_tunnel_config(1420).unwrap();
    assert!(!tunnel.handshake_on_start);
    let on = wireguard(&parse(&wg_iface("")).0)
        .to_tunnel_config(1420)
        .unwrap();
    assert!(on.handshake_on_start, "on unless turned off");
    let (_, warnings) = parse("[Interface]\nMode = vxlan\nHandshakeOnStart = on\n");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].to_string().contains("HandshakeOnStart"),
        "{}",
        warnings[0]
    );
}

#[test]
fn vxlan_defaults() {
    let (config, _) = parse("[Interface]\nMode = vxlan\n[Peer]\nEndpoint = 192.0.2.2:4789\n");
    assert_eq!(config.mode(), Mode::Vxlan);
    assert_eq!(config.interface.listen_port, Some(VXLAN_PORT));
    assert_eq!(config.interface.listen_port, Some(4789));
    assert_eq!(config.interface.mtu, DEFAULT_MTU_VXLAN);
    assert_eq!(config.interface.mtu, 1450);
    assert_eq!(config.interface.table, Table::Auto);
    assert!(config.interface.offload);
    let vx = vxlan(&config);
    assert_eq!(vx.vni, DEFAULT_VNI);
    assert_eq!(vx.vni, 1);
    assert_eq!(vx.bridge, None);
    assert_eq!(
        vx.peers,
        vec![VxlanPeer {
            line: 3,
            endpoint: Endpoint::Addr("192.0.2.2:4789".parse().unwrap()),
            allowed_ips: vec![],
        }]
    );
}

#[test]
fn vxlan_full() {
    let (config, warnings) = parse(
        "[Interface]\nMode = vxlan\nVNI = 16777215\nBridge = br-lan\nListenPort = 8472\nAddress = 10.7.0.1/24\n\
         [Peer]\nEndpoint = 192.0.2.2:8472\nAllowedIPs = 10.8.0.0/16\n\
         [Peer]\nEndpoint = gw-c.example.net:8472\n",
    );
    assert_eq!(warnings, Vec::<Warning>::new());
    assert_eq!(config.interface.listen_port, Some(8472));
    let vx = vxlan(&config);
    assert_eq!(vx.vni, MAX_VNI);
    assert_eq!(vx.bridge.as_ref().map(IfName::as_str), Some("br-lan"));
    assert_eq!(vx.peers[0].allowed_ips, prefixes(&["10.8.0.0/16"]));
    assert_eq!(
        vx.peers[1].endpoint,
        Endpoint::Host {
            host: "gw-c.example.net".into(),
            port: 8472
        }
    );
}

#[test]
fn listen_port_zero_means_any_port() {
    assert_eq!(
        parse(&wg_iface("ListenPort = 0\n")).0.interface.listen_port,
        None
    );
    let vx = "[Interface]\nMode = vxlan\nListenPort = 0\n";
    assert_eq!(parse(vx).0.interface.listen_port, None);
}

#[test]
fn keys_and_sections_are_case_insensitive() {
    let text = format!(
        "[INTERFACE]\nprivatekey = {SK_A}\nLISTENPORT = 1000\naddress = 10.0.0.1/24\nmtu = 1400\n\
         TABLE = OFF\nmode = WireGuard\nworkers = AUTO\nOFFLOAD = On\n\
         [peer]\npublickey = {PK_B}\nallowedips = 10.0.1.0/24\nENDPOINT = 192.0.2.1:1\n\
         persistentkeepalive = OFF\npinendpoint = FALSE\npresharedkey = {PSK}\n"
    );
    let (config, _) = parse(&text);
    assert_eq!(config.interface.listen_port, Some(1000));
    assert_eq!(config.interface.mtu, 1400);
    assert_eq!(config.interface.table, Table::Off);
    assert_eq!(config.interface.workers, Workers::Auto);
    assert!(config.interface.offload);
    let peer = &wireguard(&config).peers[0];
    assert_eq!(peer.public_key.to_base64(), PK_B);
    assert_eq!(peer.persistent_keepalive, None);
    assert!(!peer.pin_endpoint);
    let (vx, _) = parse("[interface]\nMODE = VXLAN\n");
    assert_eq!(vx.mode(), Mode::Vxlan);
}

#[test]
fn comments_blank_lines_crlf_and_bom() {
    let text = format!(
        "\u{feff}# whole-line comment\r\n\r\n   \t\r\n[Interface] # trailing\r\n  PrivateKey={SK_A}   # the key, = included\r\n\
         ListenPort = 5 #x\r\n#ListenPort = 6\r\n"
    );
    let (config, _) = parse(&text);
    assert_eq!(config.interface.listen_port, Some(5));
    assert_eq!(wireguard(&config).private_key.to_base64(), SK_A);
}

#[test]
fn address_takes_commas_blanks_and_several_lines() {
    let (config, _) = parse(&wg_iface(
        "Address = 10.0.0.1/24,fd00::1/64\nAddress = 10.0.3.1 10.0.4.1/16 , fd01::1\n",
    ));
    assert_eq!(
        config.interface.addresses,
        addrs(&[
            "10.0.0.1/24",
            "fd00::1/64",
            "10.0.3.1/32",
            "10.0.4.1/16",
            "fd01::1/128"
        ])
    );
}

#[test]
fn empty_allowed_ips_means_none() {
    let (config, _) = parse(&wg_iface(&format!(
        "[Peer]\nPublicKey = {PK_B}\nAllowedIPs =\n"
    )));
    assert!(wireguard(&config).peers[0].allowed_ips.is_empty());
}

#[test]
fn table_values() {
    for (value, want) in [
        ("auto", Table::Auto),
        ("off", Table::Off),
        ("main", Table::Id(254)),
        ("1", Table::Id(1)),
        ("4294967295", Table::Id(u32::MAX)),
    ] {
        let (config, _) = parse(&wg_iface(&format!("Table = {value}\n")));
        assert_eq!(config.interface.table, want, "Table = {value}");
    }
}

#[test]
fn keepalive_zero_is_off() {
    let (config, _) = parse(&wg_iface(&format!(
        "[Peer]\nPublicKey = {PK_B}\nPersistentKeepalive = 0\n[Peer]\nPublicKey = {PK_C}\nPersistentKeepalive = 65535\n"
    )));
    let peers = &wireguard(&config).peers;
    assert_eq!(peers[0].persistent_keepalive, None);
    assert_eq!(peers[1].persistent_keepalive, NonZeroU16::new(65535));
}

#[test]
fn workers_bounds() {
    let (config, _) = parse(&wg_iface("Workers = 1024\n"));
    assert_eq!(
        config.interface.workers,
        Workers::Count(NonZeroUsize::new(1024).unwrap())
    );
    assert_eq!(
        error(&wg_iface("Workers = 0\n")),
        "rt0.conf:3: Workers = 0: not a worker count (auto or 1-1024)"
    );
    assert_eq!(
        error(&wg_iface("Workers = 1025\n")),
        "rt0.conf:3: Workers = 1025: not a worker count (auto or 1-1024)"
    );
}

#[test]
fn socket_buffer_and_queue_limit_take_sizes() {
    let (config, _) = parse(&wg_iface(""));
    assert_eq!(config.interface.socket_buffer, 32 << 20);
    assert_eq!(config.interface.queue_limit, None);
    let (config, _) = parse(&wg_iface("SocketBuffer = 4m\nQueueLimit = 256K\n"));
    assert_eq!(config.interface.socket_buffer, 4 << 20);
    assert_eq!(config.interface.queue_limit, Some(256 << 10));
    let (config, _) = parse(&wg_iface("SocketBuffer = 1G\nQueueLimit = auto\n"));
    assert_eq!(config.interface.socket_buffer, 1 << 30);
    assert_eq!(config.interface.queue_limit, None);
    let (config, _) = parse(&wg_iface("SocketBuffer = 65536\nQueueLimit = 64M\n"));
    assert_eq!(config.interface.socket_buffer, 65536);
    assert_eq!(config.interface.queue_limit, Some(64 << 20));
    let buffer = "not a socket buffer size (64K-1G: bytes, or a number with K, M or G)";
    for bad in [
        "65535",
        "2G",
        "32MB",
        "M",
        "-1M",
        "1.5M",
        "99999999999999999999G",
    ] {
        assert_eq!(
            error(&wg_iface(&format!("SocketBuffer = {bad}\n"))),
            format!("rt0.conf:3: SocketBuffer = {bad}: {buffer}")
        );
    }
    let queue = "not a queue limit (auto, or 64K-64M: bytes, or a number with K, M or G)";
    for bad in ["63K", "65M", "off"] {
        assert_eq!(
            error(&wg_iface(&format!("QueueLimit = {bad}\n"))),
            format!("rt0.conf:3: QueueLimit = {bad}: {queue}")
        );
    }
}

// ---- warnings ----

#[test]
fn wg_quick_keys_are_warned_about_and_ignored() {
    let text = wg_iface(
        "DNS = 1.1.1.1\nPreUp = echo a\nPostUp = iptables -A FORWARD -i %i -j ACCEPT\nPreDown = x\n\
         PostDown = y\nSaveConfig = true\npostup = again\n",
    );
    let (config, _) = parse(&text);
    assert_eq!(config.interface.listen_port, None);
    assert_eq!(
        warnings(&text),
        vec![
            "rt0.conf:3: DNS is a wg-quick key that ringtun does not act on; ignored",
            "rt0.conf:4: PreUp is a wg-quick key that ringtun does not act on; ignored",
            "rt0.conf:5: PostUp is a wg-quick key that ringtun does not act on; ignored",
            "rt0.conf:6: PreDown is a wg-quick key that ringtun does not act on; ignored",
            "rt0.conf:7: PostDown is a wg-quick key that ringtun does not act on; ignored",
            "rt0.conf:8: SaveConfig is a wg-quick key that ringtun does not act on; ignored",
            "rt0.conf:9: PostUp is a wg-quick key that ringtun does not act on; ignored",
        ]
    );
}

#[test]
fn fwmark_is_off_decimal_or_hex_as_in_wg_quick() {
    for (value, mark) in [
        ("off", 0),
        ("0", 0),
        ("51820", 51820),
        ("0xca6c", 0xca6c),
        ("0XFFFFFFFF", u32::MAX),
    ] {
        let (config, _) = parse(&wg_iface(&format!("FwMark = {value}\n")));
        assert_eq!(config.interface.fwmark, mark, "FwMark = {value}");
    }
    for bad in ["-1", "0x", "0x1g", "4294967296", "mark"] {
        assert_eq!(
            error(&wg_iface(&format!("FwMark = {bad}\n"))),
            format!(
                "rt0.conf:3: FwMark = {bad}: not a firewall mark (off, or 0-4294967295 in decimal or 0x hex)"
            )
        );
    }
}

#[test]
fn vxlan_mode_warns_about_wireguard_only_keys() {
    let text = format!(
        "[Interface]\nMode = vxlan\nPrivateKey = {SK_A}\n[Peer]\nEndpoint = 192.0.2.2:4789\n\
         PublicKey = {PK_B}\nPresharedKey = {PSK}\nPersistentKeepalive = 25\nPinEndpoint = true\nSpreadFlows = on\n"
    );
    assert_eq!(
        warnings(&text),
        vec![
            "rt0.conf:3: PrivateKey has no effect with Mode = vxlan (VXLAN is plaintext, peers are identified by Endpoint); ignored",
            "rt0.conf:6: PublicKey has no effect with Mode = vxlan (VXLAN is plaintext, peers are identified by Endpoint); ignored",
            "rt0.conf:7: PresharedKey has no effect with Mode = vxlan (VXLAN is plaintext, peers are identified by Endpoint); ignored",
            "rt0.conf:8: PersistentKeepalive has no effect with Mode = vxlan (VXLAN is plaintext, peers are identified by Endpoint); ignored",
            "rt0.conf:9: PinEndpoint has no effect with Mode = vxlan (VXLAN is plaintext, peers are identified by Endpoint); ignored",
            "rt0.conf:10: SpreadFlows is always on with Mode = vxlan (each inner flow leaves from a source port of its own, as RFC 7348 asks); ignored",
        ]
    );
}

#[test]
fn warnings_come_in_file_order() {
    // [Interface] may follow the peers: the mode is known only at the end, so the peer's
    // warning (line 3) is found after the DNS line's (line 6) and must be sorted back.
    let text = format!(
        "[Peer]\nEndpoint = 192.0.2.2:4789\nPublicKey = {PK_B}\n[Interface]\nMode = vxlan\nDNS = 1.1.1.1\n"
    );
    let lines: Vec<Option<usize>> = Config::parse(&text, "rt0.conf").map_or_else(
        |e| panic!("{e}"),
        |(_, w)| w.iter().map(|w| w.line).collect(),
    );
    assert_eq!(lines, vec![Some(3), Some(6)]);
}

#[test]
fn repeated_allowed_ips_collapse_within_a_peer() {
    let text = wg_iface(&format!(
        "[Peer]\nPublicKey = {PK_B}\nAllowedIPs = 10.0.1.0/24, 10.0.9.0/24\nAllowedIPs = 10.0.1.7/24\n"
    ));
    let (config, _) = parse(&text);
    assert_eq!(
        wireguard(&config).peers[0].allowed_ips,
        prefixes(&["10.0.1.0/24", "10.0.9.0/24"])
    );
}

#[test]
fn a_prefix_under_two_peers_is_refused() {
    let text = wg_iface(&format!(
        "[Peer]\nPublicKey = {PK_B}\nAllowedIPs = 10.0.1.0/24, 10.0.9.0/24\n\
         [Peer]\nPublicKey = {PK_C}\nAllowedIPs = 10.0.2.0/24\nAllowedIPs = 10.0.9.5/24\n"
    ));
    assert_eq!(
        error(&text),
        "rt0.conf:9: AllowedIPs 10.0.9.0/24 is already given to the [Peer] on line 3"
    );
    let vx = "[Interface]\nMode = vxlan\n[Peer]\nEndpoint = 192.0.2.2:4789\nAllowedIPs = fd00::/64\n\
              [Peer]\nEndpoint = 192.0.2.3:4789\nAllowedIPs = fd00::1/64\n";
    assert_eq!(
        error(vx),
        "rt0.conf:8: AllowedIPs fd00::/64 is already given to the [Peer] on line 3"
    );
}

#[test]
fn metrics_listen_takes_a_numeric_address_and_port_and_names_its_line() {
    let (config, _) = parse(&wg_iface("MetricsListen = [::1]:9586\n"));
    assert_eq!(
        config.interface.metrics_listen,
        Some(MetricsListen {
            addr: "[::1]:9586".parse().unwrap(),
            line: 3
        })
    );
    assert_eq!(parse(&wg_iface("")).0.interface.metrics_listen, None);
    for bad in ["localhost:9586", "127.0.0.1", "127.0.0.1:99999", ":9586"] {
        assert_eq!(
            error(&wg_iface(&format!("MetricsListen = {bad}\n"))),
            format!(
                "rt0.conf:3: MetricsListen = {bad}: not an address and port to listen on \
                 (127.0.0.1:9586, [::1]:9586, 0.0.0.0:9586)"
            )
        );
    }
}

// ---- errors, message by message ----

#[test]
fn bad_listen_port_names_file_line_key_and_expectation() {
    let text = wg_iface("\n# ports\n\nAddress = 10.0.0.1/24\nListenPort = 70000\n");
    assert_eq!(
        error(&text),
        "rt0.conf:7: ListenPort = 70000: not a port number (0-65535)"
    );
    assert_eq!(
        error(&wg_iface("ListenPort = -1\n")),
        "rt0.conf:3: ListenPort = -1: not a port number (0-65535)"
    );
    assert_eq!(
        error(&wg_iface("ListenPort = +80\n")),
        "rt0.conf:3: ListenPort = +80: not a port number (0-65535)"
    );
}

#[test]
fn the_error_is_structured_too() {
    let err = Config::parse(&wg_iface("ListenPort = 70000\n"), "rt0.conf").unwrap_err();
    assert_eq!(err.file, "rt0.conf");
    assert_eq!(err.line, Some(3));
    match err.kind {
        ErrorKind::BadValue {
            key,
            value,
            problem,
        } => {
            assert_eq!(
                (key, value.as_str(), problem),
                ("ListenPort", "70000", ValueProblem::Port)
            );
        }
        other => panic!("expected BadValue, got {other:?}"),
    }
}

#[test]
fn unknown_keys_are_errors() {
    assert_eq!(
        error(&wg_iface("Foo = 1\n")),
        "rt0.conf:3: unknown key Foo in [Interface]"
    );
    assert_eq!(
        error(&wg_iface(&format!(
            "[Peer]\nPublicKey = {PK_B}\nListenport = 1\n"
        ))),
        "rt0.conf:5: unknown key Listenport in [Peer] (it belongs in [Interface])"
    );
    assert_eq!(
        error(&wg_iface("Endpoint = 192.0.2.1:1\n")),
        "rt0.conf:3: unknown key Endpoint in [Interface] (it belongs in [Peer])"
    );
    // DNS is only warned about where wg-quick reads it.
    assert_eq!(
        error(&wg_iface(&format!(
            "[Peer]\nPublicKey = {PK_B}\nDNS = 1.1.1.1\n"
        ))),
        "rt0.conf:5: unknown key DNS in [Peer] (it belongs in [Interface])"
    );
    assert_eq!(
        error(&wg_iface("DstPort = 4789\n")),
        "rt0.conf:3: unknown key DstPort in [Interface]"
    );
}

#[test]
fn syntax_errors() {
    assert_eq!(
        error(&wg_iface("ListenPort 51820\n")),
        "rt0.conf:3: expected `[Interface]`, `[Peer]` or `Key = Value`, found `ListenPort 51820`"
    );
    assert_eq!(
        error(&wg_iface(" = 5\n")),
        "rt0.conf:3: expected `[Interface]`, `[Peer]` or `Key = Value`, found `= 5`"
    );
    assert_eq!(
        error("[Interface\n"),
        "rt0.conf:1: expected `[Interface]`, `[Peer]` or `Key = Value`, found `[Interface`"
    );
    assert_eq!(
        error("[Peers]\n"),
        "rt0.conf:1: unknown section [Peers] (expected [Interface] or [Peer])"
    );
    assert_eq!(
        error("ListenPort = 1\n[Interface]\n"),
        "rt0.conf:1: ListenPort appears before any [Interface] or [Peer] section"
    );
    // Control characters are escaped, long text is cut.
    assert_eq!(
        error(&format!("[Interface]\nbad\u{1b}[2J{}\n", "x".repeat(100))),
        format!(
            "rt0.conf:2: expected `[Interface]`, `[Peer]` or `Key = Value`, found `bad\\u{{1b}}[2J{}…`",
            "x".repeat(53)
        )
    );
}

#[test]
fn duplicate_keys_and_sections() {
    assert_eq!(
        error(&wg_iface("ListenPort = 1\nlistenport = 2\n")),
        "rt0.conf:4: ListenPort is set twice in this section (first on line 3)"
    );
    assert_eq!(
        error(&wg_iface(&format!("PrivateKey = {SK_A}\n"))),
        "rt0.conf:3: PrivateKey is set twice in this section (first on line 2)"
    );
    assert_eq!(
        error(&wg_iface(&format!(
            "[Peer]\nPublicKey = {PK_B}\nEndpoint = 192.0.2.1:1\nEndpoint = 192.0.2.1:2\n"
        ))),
        "rt0.conf:6: Endpoint is set twice in this section (first on line 5)"
    );
    assert_eq!(
        error(&wg_iface("[Interface]\n")),
        "rt0.conf:3: a second [Interface] section (the first is on line 1)"
    );
    assert_eq!(
        error(&wg_iface(&format!(
            "[Peer]\nPublicKey = {PK_B}\n[Peer]\nPublicKey = {PK_B}\n"
        ))),
        "rt0.conf:5: another [Peer] (line 3) has the same PublicKey"
    );
    assert_eq!(
        error(
            "[Interface]\nMode = vxlan\n[Peer]\nEndpoint = 192.0.2.1:4789\n[Peer]\nEndpoint = 192.0.2.1:4789\n"
        ),
        "rt0.conf:5: another [Peer] (line 3) has the same Endpoint"
    );
}

#[test]
fn missing_required_keys_name_the_section_line() {
    assert_eq!(error(""), "rt0.conf: no [Interface] section");
    assert_eq!(
        error("# nothing\n[Peer]\n"),
        "rt0.conf: no [Interface] section"
    );
    assert_eq!(
        error("\n[Interface]\nListenPort = 1\n"),
        "rt0.conf:2: [Interface] has no PrivateKey, which Mode = wireguard requires"
    );
    assert_eq!(
        error(&wg_iface(&format!(
            "[Peer]\nPublicKey = {PK_B}\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n"
        ))),
        "rt0.conf:6: [Peer] has no PublicKey, which Mode = wireguard requires"
    );
    assert_eq!(
        error("[Interface]\nMode = vxlan\n[Peer]\nAllowedIPs = 10.0.0.0/8\n"),
        "rt0.conf:3: [Peer] has no Endpoint, which Mode = vxlan requires"
    );
}

#[test]
fn bad_keys_are_refused_and_secrets_stay_hidden() {
    let short = &SK_A[..43];
    assert_eq!(
        error(&format!("[Interface]\nPrivateKey = {short}\n")),
        "rt0.conf:2: PrivateKey = (hidden): not a key: a key is 44 base64 characters, this one has 43"
    );
    let msg = error(&format!("[Interface]\nPrivateKey = {}!\n", &SK_A[..43]));
    assert!(
        msg.starts_with("rt0.conf:2: PrivateKey = (hidden): not a key: "),
        "{msg}"
    );
    assert!(!msg.contains(&SK_A[..20]), "the secret leaked: {msg}");
    assert_eq!(
        error(&wg_iface(&format!(
            "[Peer]\nPublicKey = {PK_B}\nPresharedKey = {short}\n"
        ))),
        "rt0.conf:5: PresharedKey = (hidden): not a key: a key is 44 base64 characters, this one has 43"
    );
    assert_eq!(
        error(&wg_iface("[Peer]\nPublicKey = abc\n")),
        "rt0.conf:4: PublicKey = abc: not a key: a key is 44 base64 characters, this one has 3"
    );
}

#[test]
fn bad_values_name_what_was_expected() {
    let cases: &[(&str, &str)] = &[
        ("Address =", "Address = : empty value"),
        (
            "Address = 10.0.0.1/33",
            "Address = 10.0.0.1/33: 10.0.0.1/33: prefix length 33 is longer than 32",
        ),
        (
            "Address = 10.0.0.1/24,,fd00::1",
            "Address = 10.0.0.1/24,,fd00::1: empty entry in the comma-separated list",
        ),
        (
            "Address = 10.0.0.x",
            "Address = 10.0.0.x: 10.0.0.x: not an IPv4 or IPv6 address",
        ),
        ("MTU = 67", "MTU = 67: not an MTU (68-65535)"),
        ("MTU = 65536", "MTU = 65536: not an MTU (68-65535)"),
        ("MTU = 1420b", "MTU = 1420b: not an MTU (68-65535)"),
        (
            "Table = 0",
            "Table = 0: not a routing table (auto, off, main or a table number 1-4294967295)",
        ),
        (
            "Table = 4294967296",
            "Table = 4294967296: not a routing table (auto, off, main or a table number 1-4294967295)",
        ),
        (
            "Table = sometimes",
            "Table = sometimes: not a routing table (auto, off, main or a table number 1-4294967295)",
        ),
        ("Mode = gre", "Mode = gre: not a mode (wireguard or vxlan)"),
        (
            "Workers = many",
            "Workers = many: not a worker count (auto or 1-1024)",
        ),
        (
            "Offload = maybe",
            "Offload = maybe: not a switch (on, off, true or false)",
        ),
        (
            "HandshakeOnStart = soon",
            "HandshakeOnStart = soon: not a switch (on, off, true or false)",
        ),
        ("ListenPort =", "ListenPort = : empty value"),
    ];
    for (line, want) in cases {
        assert_eq!(
            error(&wg_iface(&format!("{line}\n"))),
            format!("rt0.conf:3: {want}"),
            "for `{line}`"
        );
    }
    let peer_cases: &[(&str, &str)] = &[
        (
            "AllowedIPs = 10.0.0.0/8, fd00::/129",
            "AllowedIPs = 10.0.0.0/8, fd00::/129: prefix length 129 is longer than 128 for fd00::",
        ),
        (
            "AllowedIPs = 10.0.0.0/8 10.1.0.0/16",
            "AllowedIPs = 10.0.0.0/8 10.1.0.0/16: invalid prefix length \"8 10.1.0.0/16\"",
        ),
        (
            "AllowedIPs = 10.0.0.0/8,",
            "AllowedIPs = 10.0.0.0/8,: empty entry in the comma-separated list",
        ),
        (
            "Endpoint = 192.0.2.1",
            "Endpoint = 192.0.2.1: not an endpoint: no port (expected IPV4:PORT, [IPV6]:PORT or HOST:PORT)",
        ),
        (
            "Endpoint = 2001:db8::1:51820",
            "Endpoint = 2001:db8::1:51820: not an endpoint: an IPv6 address needs brackets: [IPV6]:PORT",
        ),
        (
            "Endpoint = 192.0.2.1:0",
            "Endpoint = 192.0.2.1:0: not an endpoint: the port is not a number from 1 to 65535",
        ),
        (
            "Endpoint = bad_host!:1",
            "Endpoint = bad_host!:1: not an endpoint: not an IP address or a host name",
        ),
        (
            "PersistentKeepalive = 65536",
            "PersistentKeepalive = 65536: not a keepalive interval (off or 0-65535 seconds)",
        ),
        (
            "PersistentKeepalive = never",
            "PersistentKeepalive = never: not a keepalive interval (off or 0-65535 seconds)",
        ),
        (
            "PinEndpoint = yes please",
            "PinEndpoint = yes please: not a switch (on, off, true or false)",
        ),
        ("Endpoint =", "Endpoint = : empty value"),
    ];
    for (line, want) in peer_cases {
        let text = wg_iface(&format!("[Peer]\nPublicKey = {PK_B}\n{line}\n"));
        assert_eq!(error(&text), format!("rt0.conf:5: {want}"), "for `{line}`");
    }
}

#[test]
fn vni_and_bridge_bounds() {
    let vx = |line: &str| format!("[Interface]\nMode = vxlan\n{line}\n");
    assert_eq!(vxlan(&parse(&vx("VNI = 0")).0).vni, 0);
    assert_eq!(
        error(&vx("VNI = 16777216")),
        "rt0.conf:3: VNI = 16777216: not a VNI (0-16777215)"
    );
    assert_eq!(
        error(&vx("VNI = 0x10")),
        "rt0.conf:3: VNI = 0x10: not a VNI (0-16777215)"
    );
    assert_eq!(
        error(&vx("Bridge = br/lan")),
        "rt0.conf:3: Bridge = br/lan: not an interface name: contains '/', and `/`, `:`, NUL and whitespace are not allowed"
    );
    assert_eq!(
        error(&vx("Bridge = a-very-long-bridge-name")),
        "rt0.conf:3: Bridge = a-very-long-bridge-name: not an interface name: 23 bytes long, the limit is 15"
    );
}

#[test]
fn vxlan_only_keys_are_errors_in_wireguard_mode() {
    assert_eq!(
        error(&wg_iface("VNI = 42\n")),
        "rt0.conf:3: VNI applies only with Mode = vxlan (this file is Mode = wireguard)"
    );
    assert_eq!(
        error(&wg_iface("Bridge = br0\nMode = wireguard\n")),
        "rt0.conf:3: Bridge applies only with Mode = vxlan (this file is Mode = wireguard)"
    );
    // Mode may come after the keys it governs.
    let (config, _) = parse("[Interface]\nVNI = 42\nBridge = br0\nMode = vxlan\n");
    assert_eq!(vxlan(&config).vni, 42);
}

#[test]
fn pin_endpoint_without_endpoint_is_accepted() {
    // tunnel-proto keeps the first address such a peer is heard from.
    let (config, _) = parse(&wg_iface(&format!(
        "[Peer]\nPublicKey = {PK_B}\nPinEndpoint = true\n[Peer]\nPublicKey = {PK_C}\nPinEndpoint = false\n"
    )));
    let peers = &wireguard(&config).peers;
    assert!(peers[0].pin_endpoint && peers[0].endpoint.is_none());
    assert!(!peers[1].pin_endpoint);
}

#[test]
fn spread_flows_is_a_switch_per_peer_off_by_default() {
    let (config, _) = parse(&wg_iface(&format!(
        "[Peer]\nPublicKey = {PK_B}\nSpreadFlows = on\n[Peer]\nPublicKey = {PK_C}\n"
    )));
    let peers = &wireguard(&config).peers;
    assert!(peers[0].spread_flows);
    assert!(!peers[1].spread_flows);
    assert!(peers[0].to_peer_config().unwrap().spread_flows);
    assert_eq!(
        error(&wg_iface(&format!(
            "[Peer]\nPublicKey = {PK_B}\nSpreadFlows = sometimes\n"
        ))),
        "rt0.conf:5: SpreadFlows = sometimes: not a switch (on, off, true or false)"
    );
}

#[test]
fn wireguard_config_converts_to_tunnel_proto() {
    let (config, _) = parse(FULL_WIREGUARD);
    let tunnel = wireguard(&config)
        .to_tunnel_config(config.interface.mtu)
        .unwrap();
    assert_eq!(
        tunnel
            .private_key
            .as_ref()
            .map(|k| k.to_base64())
            .unwrap_or_default(),
        SK_A
    );
    assert_eq!(tunnel.mtu, Some(1380));
    assert_eq!(tunnel.peers.len(), 2);
    let b = &tunnel.peers[0];
    assert_eq!(b.public_key.to_base64(), PK_B);
    assert_eq!(
        b.preshared_key
            .as_ref()
            .map(PresharedKey::to_base64)
            .as_deref(),
        Some(PSK)
    );
    assert_eq!(
        b.allowed_ips,
        prefixes(&["10.0.1.0/24", "fd00:1::/64", "192.168.1.0/24"])
    );
    assert_eq!(b.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
    assert_eq!(
        b.persistent_keepalive,
        Some(std::time::Duration::from_secs(25))
    );
    assert!(b.pin_endpoint);
    let c = &tunnel.peers[1];
    assert_eq!(c.endpoint, Some("[2001:db8::3]:4500".parse().unwrap()));
    assert_eq!(c.persistent_keepalive, None);
    assert!(!c.pin_endpoint);

    // A host name is resolved here; one that cannot be is an error naming it.
    let text = wg_iface(&format!(
        "[Peer]\nPublicKey = {PK_B}\nEndpoint = localhost:9\n[Peer]\nPublicKey = {PK_C}\nEndpoint = nowhere.invalid:9\n"
    ));
    let (config, _) = parse(&text);
    let wg = wireguard(&config);
    let local = wg.peers[0].to_peer_config().unwrap();
    assert!(
        local
            .endpoint
            .is_some_and(|e| e.ip().is_loopback() && e.port() == 9),
        "{:?}",
        local.endpoint
    );
    let err = wg.to_tunnel_config(1420).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot resolve nowhere.invalid:9: "),
        "{err}"
    );
}

#[test]
fn small_mtu_with_ipv6_is_refused() {
    assert_eq!(
        error(&wg_iface(
            "MTU = 1279\nAddress = 10.0.0.1/24\nAddress = fd00::1/64\n"
        )),
        "rt0.conf:3: MTU = 1279: IPv6 needs an MTU of at least 1280, and Address on line 5 is IPv6"
    );
    assert_eq!(
        parse(&wg_iface("MTU = 1280\nAddress = fd00::1/64\n"))
            .0
            .interface
            .mtu,
        1280
    );
    assert_eq!(
        parse(&wg_iface("MTU = 576\nAddress = 10.0.0.1/24\n"))
            .0
            .interface
            .mtu,
        576
    );
}

#[test]
fn interface_name_comes_from_the_file_stem_or_the_override() {
    let text = wg_iface("");
    assert_eq!(
        Config::parse(&text, "/etc/ringtun/site-a.conf")
            .unwrap()
            .0
            .name
            .as_str(),
        "site-a"
    );
    assert_eq!(
        Config::parse_named(&text, "my site.conf", "rt9")
            .unwrap()
            .0
            .name
            .as_str(),
        "rt9"
    );
    let msg = |r: Result<(Config, Vec<Warning>), ConfigError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(Config::parse(&text, "my site.conf")),
        "my site.conf: interface name \"my site\" is not valid: contains ' ', and `/`, `:`, NUL and whitespace are not allowed"
    );
    assert_eq!(
        msg(Config::parse(&text, "a-name-that-is-too-long.conf")),
        "a-name-that-is-too-long.conf: interface name \"a-name-that-is-too-long\" is not valid: 23 bytes long, the limit is 15"
    );
    assert_eq!(
        msg(Config::parse_named(&text, "rt0.conf", "eth0:1")),
        "rt0.conf: interface name \"eth0:1\" is not valid: contains ':', and `/`, `:`, NUL and whitespace are not allowed"
    );
    assert_eq!(
        msg(Config::parse(&text, "")),
        ": interface name \"\" is not valid: empty"
    );
}

#[test]
fn non_utf8_names_the_line() {
    let mut bytes = wg_iface("ListenPort = 1\n").into_bytes();
    bytes.extend_from_slice(b"Address = 10.0.0.1\xff\n");
    let err = Config::parse_bytes(&bytes, "rt0.conf", None).unwrap_err();
    assert_eq!(err.to_string(), "rt0.conf:4: not valid UTF-8 text");
    let ok = Config::parse_bytes(wg_iface("").as_bytes(), "rt0.conf", Some("x")).unwrap();
    assert_eq!(ok.0.name.as_str(), "x");
}

// ---- files ----

/// A file in the temp directory, removed when dropped (also when the test fails).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8], mode: u32) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringtun-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let mut f = fs::File::create(&path).unwrap();
        f.write_all(contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn from_file_names_the_interface_after_the_file_and_checks_permissions() {
    let private = TempFile::new("rt7.conf", wg_iface("").as_bytes(), 0o600);
    let (config, warnings) = Config::from_file(private.path()).unwrap();
    assert_eq!(config.name.as_str(), "rt7");
    assert_eq!(config.file, private.path().display().to_string());
    assert_eq!(warnings, vec![]);

    let world = TempFile::new("rt7.conf", wg_iface("").as_bytes(), 0o644);
    let (_, warnings) = Config::from_file(world.path()).unwrap();
    let label = world.path().display().to_string();
    assert_eq!(
        warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![format!(
            "{label}: is world accessible (mode 0644); keys belong in a private file: chmod 600 it"
        )]
    );

    let group = TempFile::new("rt7.conf", wg_iface("DNS = 1.1.1.1\n").as_bytes(), 0o640);
    let (_, warnings) = Config::from_file(group.path()).unwrap();
    let label = group.path().display().to_string();
    assert_eq!(
        warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            format!(
                "{label}: is group accessible (mode 0640); keys belong in a private file: chmod 600 it"
            ),
            format!("{label}:3: DNS is a wg-quick key that ringtun does not act on; ignored"),
        ]
    );

    let named = Config::from_file_named(private.path(), "site9").unwrap().0;
    assert_eq!(named.name.as_str(), "site9");
}

#[test]
fn from_file_errors() {
    let missing = std::env::temp_dir().join("ringtun-config-test-no-such-dir/rt0.conf");
    let err = Config::from_file(&missing).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Read(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            missing.display()
        )
    );

    let big = TempFile::new("rt0.conf", &vec![b'#'; MAX_FILE_SIZE + 1], 0o600);
    assert_eq!(
        Config::from_file(big.path()).unwrap_err().to_string(),
        format!(
            "{}: larger than 1048576 bytes: not a configuration file",
            big.path().display()
        )
    );

    let bad = TempFile::new("rt0.conf", b"[Interface]\nListenPort = 70000\n", 0o600);
    assert_eq!(
        Config::from_file(bad.path()).unwrap_err().to_string(),
        format!(
            "{}:2: ListenPort = 70000: not a port number (0-65535)",
            bad.path().display()
        )
    );
}

#[test]
fn example_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");

    let (config, warnings) = Config::from_file(dir.join("wireguard.conf")).unwrap();
    // Only the permission warning may appear: it depends on the checkout's umask.
    assert!(
        warnings
            .iter()
            .all(|w| matches!(w.kind, WarningKind::Accessible { .. })),
        "{warnings:?}"
    );
    assert_eq!(config.name.as_str(), "wireguard");
    let wg = wireguard(&config);
    assert_eq!(wg.peers.len(), 2);
    assert!(
        wg.peers
            .iter()
            .any(|p| matches!(p.endpoint, Some(Endpoint::Addr(SocketAddr::V6(_)))))
    );

    let (config, warnings) = Config::from_file(dir.join("vxlan.conf")).unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| matches!(w.kind, WarningKind::Accessible { .. })),
        "{warnings:?}"
    );
    assert_eq!(config.name.as_str(), "vxlan");
    let vx = vxlan(&config);
    assert_eq!(vx.peers.len(), 2);
    assert!(vx.bridge.is_some());
}

// ---- no input makes it panic ----

/// Lines drawn from the grammar, good and bad, so that random files reach the deep checks.
fn config_line() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "PrivateKey",
        "ListenPort",
        "Address",
        "MTU",
        "Table",
        "Mode",
        "Workers",
        "VNI",
        "Bridge",
        "Offload",
        "HandshakeOnStart",
        "DNS",
        "PostUp",
        "PublicKey",
        "PresharedKey",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
        "PinEndpoint",
        "SpreadFlows",
        "SocketBuffer",
        "QueueLimit",
        "Bogus",
        "mtu",
    ]);
    let values = prop::sample::select(vec![
        SK_A,
        PK_B,
        PK_C,
        PSK,
        "",
        "0",
        "1",
        "1279",
        "1420",
        "70000",
        "auto",
        "off",
        "on",
        "true",
        "vxlan",
        "wireguard",
        "10.0.0.1/24",
        "fd00::1/64",
        "10.0.0.0/8, fd00::/8",
        "192.0.2.1:51820",
        "[2001:db8::1]:51820",
        "host.example:1",
        "br0",
        "16777215",
        "x/33",
        ",",
    ]);
    prop_oneof![
        Just("[Interface]".to_owned()),
        Just("[Peer]".to_owned()),
        Just("# comment".to_owned()),
        (keys, values).prop_map(|(k, v)| format!("{k} = {v}")),
        "\\PC{0,40}",
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = Config::parse(&text, "rt0.conf");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Config::parse_bytes(&bytes, "rt0.conf", None);
    }

    #[test]
    fn grammar_shaped_files_never_panic_and_errors_name_the_file(
        lines in prop::collection::vec(config_line(), 0..30)
    ) {
        let text = lines.join("\n");
        match Config::parse(&text, "rt0.conf") {
            Ok((config, warnings)) => {
                prop_assert_eq!(config.name.as_str(), "rt0");
                for w in warnings {
                    prop_assert!(w.to_string().starts_with("rt0.conf:"));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("rt0.conf:"), "{}", msg);
                if let Some(line) = e.line {
                    prop_assert!(line >= 1 && line <= lines.len().max(1), "line {} of {}", line, lines.len());
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_file_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let file = TempFile::new("rt0.conf", &bytes, 0o600);
        let _ = Config::from_file(file.path());
    }
}
