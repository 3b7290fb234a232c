//! The protocol's behaviour, with the bytes `wg`, wgctrl-go and
//! wireguard-go put on the wire as fixtures.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;

use super::*;

// RFC 7748 §6.1: Alice's private key as given (not clamped), the same key
// clamped (what wireguard-go stores and `get` prints), and both public keys.
const PRIVATE_HEX: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const PRIVATE_CLAMPED_HEX: &str =
    "70076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c6a";
const PEER_A_HEX: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const PEER_B_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const PSK_HEX: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

/// What `wg setconf wg0 wg0.conf` sends (`userspace_set_device`; setconf sets
/// the private key, port and fwmark flags whether or not the file has them,
/// plus replace_peers, and replace_allowed_ips on every peer).
const WG_SETCONF: &[u8] = b"set=1\n\
private_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n\
listen_port=51820\n\
fwmark=0\n\
replace_peers=true\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
preshared_key=a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5\n\
endpoint=192.0.2.1:51820\n\
persistent_keepalive_interval=25\n\
replace_allowed_ips=true\n\
allowed_ip=10.0.0.0/24\n\
allowed_ip=fd00::/64\n\
public_key=8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n\
endpoint=[2001:db8::1]:51821\n\
replace_allowed_ips=true\n\
allowed_ip=10.0.1.0/24\n\
\n";

/// What `wg syncconf` sends when the running device has peer B and the file
/// only peer A, which had a preshared key and a keepalive the file drops:
/// stale peers first with remove=true, zeroed psk and keepalive, no
/// replace_peers.
const WG_SYNCCONF: &[u8] = b"set=1\n\
private_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n\
listen_port=51820\n\
fwmark=0\n\
public_key=8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n\
remove=true\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n\
persistent_keepalive_interval=0\n\
replace_allowed_ips=true\n\
allowed_ip=10.0.0.0/24\n\
\n";

/// What `wg set wg0 peer A endpoint 192.0.2.7:51820 allowed-ips
/// +10.0.2.0/24,-10.0.0.0/24` sends: `+` and `-` make the change incremental
/// (no replace_allowed_ips); `+` is not sent, `-` is.
const WG_SET_INCREMENTAL: &[u8] = b"set=1\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
endpoint=192.0.2.7:51820\n\
allowed_ip=10.0.2.0/24\n\
allowed_ip=-10.0.0.0/24\n\
\n";

/// What wgctrl-go sends for a peer with `UpdateOnly` (`wg` never does).
const WGCTRL_UPDATE_ONLY: &[u8] = b"set=1\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
update_only=true\n\
persistent_keepalive_interval=25\n\
\n";

/// What wireguard-go's `IpcGetOperation` and `IpcHandle` print for
/// [`device_with_two_peers`]: the key clamped, fwmark 0 left out, tx before
/// rx, a never-seen peer with zeros.
const GET_ANSWER: &[u8] =
    b"private_key=70076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c6a\n\
listen_port=51820\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
preshared_key=a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5\n\
protocol_version=1\n\
endpoint=192.0.2.1:51820\n\
last_handshake_time_sec=1700000000\n\
last_handshake_time_nsec=123456789\n\
tx_bytes=4096\n\
rx_bytes=2048\n\
persistent_keepalive_interval=25\n\
allowed_ip=10.0.0.0/24\n\
allowed_ip=fd00::/64\n\
public_key=8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n\
preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n\
protocol_version=1\n\
endpoint=[2001:db8::1]:51821\n\
last_handshake_time_sec=0\n\
last_handshake_time_nsec=0\n\
tx_bytes=0\n\
rx_bytes=0\n\
persistent_keepalive_interval=0\n\
allowed_ip=10.0.1.0/24\n\
errno=0\n\
\n";

fn public(hex: &str) -> PublicKey {
    PublicKey::from_hex(hex).unwrap()
}

fn psk(hex: &str) -> PresharedKey {
    PresharedKey::from_hex(hex).unwrap()
}

fn prefix(s: &str) -> IpPrefix {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Every request in `bytes`, pushed in one piece.
fn frame_all(bytes: &[u8]) -> Vec<Result<Request, ProtoError>> {
    let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
    framer.push(bytes);
    std::iter::from_fn(|| framer.next_request()).collect()
}

/// The one request `bytes` holds, which must parse.
fn parse_one(bytes: &[u8]) -> Request {
    match frame_all(bytes).as_slice() {
        [Ok(request)] => request.clone(),
        other => panic!(
            "expected one request from {:?}, got {other:?}",
            bytes.escape_ascii().to_string()
        ),
    }
}

fn parse_set_request(bytes: &[u8]) -> SetRequest {
    match parse_one(bytes) {
        Request::Set(set) => set,
        other => panic!("expected a set, got {other:?}"),
    }
}

/// The error the one request in `bytes` gives.
fn error_of(bytes: &[u8]) -> ProtoError {
    match frame_all(bytes).as_slice() {
        [Err(e)] => e.clone(),
        other => panic!(
            "expected one error from {:?}, got {other:?}",
            bytes.escape_ascii().to_string()
        ),
    }
}

fn peer(hex: &str, line: usize) -> PeerSet {
    PeerSet::new(public(hex), line)
}

fn device_with_two_peers() -> DeviceDump {
    DeviceDump {
        private_key: Some(PrivateKey::from_hex(PRIVATE_CLAMPED_HEX).unwrap()),
        listen_port: 51820,
        fwmark: 0,
        peers: vec![
            PeerDump {
                public_key: public(PEER_A_HEX),
                preshared_key: Some(psk(PSK_HEX)),
                endpoint: Some(addr("192.0.2.1:51820")),
                last_handshake: Some(Duration::new(1_700_000_000, 123_456_789)),
                rx_bytes: 2048,
                tx_bytes: 4096,
                persistent_keepalive: 25,
                allowed_ips: vec![prefix("10.0.0.0/24"), prefix("fd00::/64")],
            },
            PeerDump {
                public_key: public(PEER_B_HEX),
                preshared_key: None,
                endpoint: Some(addr("[2001:db8::1]:51821")),
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: 0,
                allowed_ips: vec![prefix("10.0.1.0/24")],
            },
        ],
    }
}

// --- set: what the tools send -------------------------------------------

#[test]
fn wg_setconf_parses_to_every_field() {
    let set = parse_set_request(WG_SETCONF);
    let key = set.private_key.as_ref().and_then(Option::as_ref).unwrap();
    assert_eq!(key.to_hex().as_str(), PRIVATE_CLAMPED_HEX, "stored clamped");
    assert_eq!(set.listen_port, Some(51820));
    assert_eq!(set.fwmark, Some(0));
    assert!(set.replace_peers);
    let mut a = peer(PEER_A_HEX, 6);
    a.preshared_key = Some(Some(psk(PSK_HEX)));
    a.endpoint = Some(addr("192.0.2.1:51820"));
    a.persistent_keepalive = Some(25);
    a.allowed_ips = vec![
        AllowedIpOp::Clear,
        AllowedIpOp::Add(prefix("10.0.0.0/24")),
        AllowedIpOp::Add(prefix("fd00::/64")),
    ];
    let mut b = peer(PEER_B_HEX, 13);
    b.endpoint = Some(addr("[2001:db8::1]:51821"));
    b.allowed_ips = vec![AllowedIpOp::Clear, AllowedIpOp::Add(prefix("10.0.1.0/24"))];
    assert_eq!(set.peers, vec![a, b]);
}

#[test]
fn wg_syncconf_removes_stale_peers_and_zeroes_what_the_file_dropped() {
    let set = parse_set_request(WG_SYNCCONF);
    assert!(!set.replace_peers);
    let mut stale = peer(PEER_B_HEX, 5);
    stale.remove = true;
    let mut kept = peer(PEER_A_HEX, 7);
    kept.preshared_key = Some(None);
    kept.persistent_keepalive = Some(0);
    kept.allowed_ips = vec![AllowedIpOp::Clear, AllowedIpOp::Add(prefix("10.0.0.0/24"))];
    assert_eq!(set.peers, vec![stale, kept]);
}

#[test]
fn wg_set_incremental_allowed_ips_add_and_remove_in_order() {
    let set = parse_set_request(WG_SET_INCREMENTAL);
    assert!(set.private_key.is_none());
    assert_eq!(
        (set.listen_port, set.fwmark, set.replace_peers),
        (None, None, false)
    );
    let mut a = peer(PEER_A_HEX, 2);
    a.endpoint = Some(addr("192.0.2.7:51820"));
    a.allowed_ips = vec![
        AllowedIpOp::Add(prefix("10.0.2.0/24")),
        AllowedIpOp::Remove(prefix("10.0.0.0/24")),
    ];
    assert_eq!(set.peers, vec![a]);
}

#[test]
fn wgctrl_update_only_is_a_flag_on_the_peer() {
    let set = parse_set_request(WGCTRL_UPDATE_ONLY);
    let mut a = peer(PEER_A_HEX, 2);
    a.update_only = true;
    a.persistent_keepalive = Some(25);
    assert_eq!(set.peers, vec![a]);
}

#[test]
fn all_zero_private_and_preshared_keys_mean_remove() {
    let set = parse_set_request(
        b"set=1\n\
private_key=0000000000000000000000000000000000000000000000000000000000000000\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n\
\n",
    );
    assert!(matches!(set.private_key, Some(None)));
    assert_eq!(set.peers[0].preshared_key, Some(None));
}

#[test]
fn keys_take_either_case_of_hex() {
    let upper = format!("set=1\npublic_key={}\n\n", PEER_A_HEX.to_uppercase());
    assert_eq!(
        parse_set_request(upper.as_bytes()).peers[0].public_key,
        public(PEER_A_HEX)
    );
}

#[test]
fn replace_allowed_ips_after_allowed_ip_keeps_request_order() {
    let set = parse_set_request(
        b"set=1\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
allowed_ip=10.0.0.0/8\n\
replace_allowed_ips=true\n\
allowed_ip=10.9.0.0/16\n\
\n",
    );
    assert_eq!(
        set.peers[0].allowed_ips,
        vec![
            AllowedIpOp::Add(prefix("10.0.0.0/8")),
            AllowedIpOp::Clear,
            AllowedIpOp::Add(prefix("10.9.0.0/16")),
        ]
    );
}

#[test]
fn the_same_peer_twice_stays_two_entries_in_order() {
    let set = parse_set_request(
        b"set=1\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
remove=true\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
endpoint=192.0.2.1:1\n\
\n",
    );
    assert_eq!(set.peers.len(), 2);
    assert!(set.peers[0].remove && !set.peers[1].remove);
    assert_eq!((set.peers[0].line, set.peers[1].line), (2, 4));
}

#[test]
fn host_bits_of_allowed_ips_are_cleared_and_protocol_version_1_accepted() {
    let set = parse_set_request(
        b"set=1\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
protocol_version=1\n\
allowed_ip=10.1.2.3/8\n\
allowed_ip=::ffff:10.0.0.1/128\n\
allowed_ip=0.0.0.0/0\n\
allowed_ip=::/0\n\
\n",
    );
    assert_eq!(
        set.peers[0].allowed_ips,
        vec![
            AllowedIpOp::Add(prefix("10.0.0.0/8")),
            AllowedIpOp::Add(prefix("::ffff:10.0.0.1/128")),
            AllowedIpOp::Add(prefix("0.0.0.0/0")),
            AllowedIpOp::Add(prefix("::/0")),
        ]
    );
}

#[test]
fn numbers_take_leading_zeros_like_go_parseuint() {
    let set = parse_set_request(b"set=1\nlisten_port=051820\nfwmark=4294967295\n\n");
    assert_eq!((set.listen_port, set.fwmark), (Some(51820), Some(u32::MAX)));
}

#[test]
fn endpoints_are_numeric_with_ipv6_in_brackets_and_an_optional_numeric_zone() {
    let set = parse_set_request(
        b"set=1\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
endpoint=[fe80::1%2]:51820\n\
\n",
    );
    assert_eq!(
        set.peers[0].endpoint,
        Some(SocketAddr::V6(SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            51820,
            0,
            2
        )))
    );
}

#[test]
fn crlf_line_ends_in_a_set_body_are_accepted_like_go_scanlines() {
    let set = parse_set_request(b"set=1\nlisten_port=1\r\nfwmark=2\r\n\r\n");
    assert_eq!((set.listen_port, set.fwmark), (Some(1), Some(2)));
}

#[test]
fn an_empty_set_changes_nothing() {
    assert_eq!(parse_one(b"set=1\n\n"), Request::Set(SetRequest::default()));
}

// --- set: what is refused, and with which errno --------------------------

/// Each bad request, the errno wireguard-go answers it with, and the line.
const BAD_SETS: &[(&[u8], Errno, usize)] = &[
    // A line without '=' (wireguard-go: "failed to parse line").
    (b"set=1\nlisten_port\n\n", Errno::Protocol, 2),
    (b"set=1\nlisten_port=1\n\x00\n\n", Errno::Protocol, 3),
    // Unknown keys, and keys in the wrong place.
    (b"set=1\nlisten-port=1\n\n", Errno::Invalid, 2),
    (b"set=1\nprotocol_version=1\n\n", Errno::Invalid, 2),
    (b"set=1\nendpoint=192.0.2.1:1\n\n", Errno::Invalid, 2),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nlisten_port=1\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nname=x\n\n",
        Errno::Invalid,
        3,
    ),
    // Keys that are not 64 hex digits.
    (b"set=1\npublic_key=xyz\n\n", Errno::Invalid, 2),
    (
        b"set=1\nprivate_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2\n\n",
        Errno::Invalid,
        2,
    ),
    (
        b"set=1\nprivate_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2ag\n\n",
        Errno::Invalid,
        2,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\npreshared_key=\n\n",
        Errno::Invalid,
        3,
    ),
    // Numbers: range, sign, space, empty.
    (b"set=1\nlisten_port=65536\n\n", Errno::Invalid, 2),
    (b"set=1\nlisten_port=+1\n\n", Errno::Invalid, 2),
    (b"set=1\nlisten_port=-1\n\n", Errno::Invalid, 2),
    (b"set=1\nlisten_port= 1\n\n", Errno::Invalid, 2),
    (b"set=1\nlisten_port=1 \n\n", Errno::Invalid, 2),
    (b"set=1\nlisten_port=\n\n", Errno::Invalid, 2),
    (b"set=1\nlisten_port=0x10\n\n", Errno::Invalid, 2),
    (b"set=1\nfwmark=4294967296\n\n", Errno::Invalid, 2),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\npersistent_keepalive_interval=65536\n\n",
        Errno::Invalid,
        3,
    ),
    // Flags are exactly `true`.
    (b"set=1\nreplace_peers=false\n\n", Errno::Invalid, 2),
    (b"set=1\nreplace_peers=True\n\n", Errno::Invalid, 2),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nremove=1\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nupdate_only=yes\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nreplace_allowed_ips=TRUE\n\n",
        Errno::Invalid,
        3,
    ),
    // protocol_version is exactly 1.
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nprotocol_version=2\n\n",
        Errno::Invalid,
        3,
    ),
    // Endpoints: no hostnames, IPv6 in brackets, no named zone.
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nendpoint=vpn.example.com:51820\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nendpoint=fd00::1:51820\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nendpoint=192.0.2.1\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nendpoint=[fe80::1%eth0]:51820\n\n",
        Errno::Invalid,
        3,
    ),
    // Prefixes: length required, in range, no sign, no leading zero, one `-`.
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=10.0.0.1\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=10.0.0.0/33\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=::/129\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=10.0.0.0/08\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=10.0.0.0/+8\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=--10.0.0.0/8\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=+10.0.0.0/8\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=010.0.0.0/8\n\n",
        Errno::Invalid,
        3,
    ),
    (
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\nallowed_ip=fe80::%2/64\n\n",
        Errno::Invalid,
        3,
    ),
];

#[test]
fn each_bad_set_line_names_its_errno_and_line() {
    for &(bytes, errno, line) in BAD_SETS {
        let e = error_of(bytes);
        assert_eq!(
            (e.errno, e.line),
            (errno, line),
            "for {:?}: {e}",
            bytes.escape_ascii().to_string()
        );
    }
}

#[test]
fn one_bad_line_fails_the_whole_set_even_after_good_lines() {
    let e = error_of(
        b"set=1\n\
listen_port=51820\n\
replace_peers=true\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
allowed_ip=10.0.0.0/24\n\
allowed_ip=10.0.0.0/99\n\
\n",
    );
    assert_eq!((e.errno, e.line), (Errno::Invalid, 6));
}

#[test]
fn a_failed_set_is_consumed_whole_and_the_connection_goes_on() {
    let results = frame_all(b"set=1\nlisten_port=x\nfwmark=1\n\nget=1\n\n");
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].as_ref().unwrap_err().errno, Errno::Invalid);
    assert_eq!(results[1], Ok(Request::Get));
}

#[test]
fn secrets_stay_out_of_debug_output_and_error_messages() {
    let set = parse_set_request(WG_SETCONF);
    let debug = format!("{set:?}");
    for secret in [PRIVATE_HEX, PRIVATE_CLAMPED_HEX, PSK_HEX, "a5a5a5"] {
        assert!(!debug.contains(secret), "Debug shows {secret}: {debug}");
    }
    // Half a key as a key, a private key one digit short, a psk with a bad
    // digit, an unknown key holding a key, and a key sent without `set=1`.
    let bad: [&[u8]; 5] = [
        b"set=1\n77076d0a7318a57d3c16c17251b26645=1\n\n",
        b"set=1\nprivate_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2\n\n",
        b"set=1\npublic_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\npreshared_key=a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5ax\n\n",
        b"set=1\n77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a=1\n\n",
        b"private_key=77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n\n",
    ];
    for bytes in bad {
        let e = error_of(bytes);
        let text = format!("{e} {e:?}");
        for secret in ["77076d0a7318", "a5a5a5a5"] {
            assert!(!text.contains(secret), "error shows a secret: {text}");
        }
    }
}

#[test]
fn errors_read_as_a_sentence_with_line_and_errno() {
    let e = error_of(b"set=1\nlisten_port=70000\n\n");
    assert_eq!(
        e.to_string(),
        "line 2: listen_port \"70000\" is not a port (0 to 65535) (EINVAL)"
    );
    let e = error_of(b"set=1\nlisten-port=1\n\n");
    assert_eq!(
        e.to_string(),
        "line 2: unknown device key \"listen-port\" (EINVAL)"
    );
}

// --- request lines and framing --------------------------------------------

#[test]
fn bare_requests_are_their_line_and_an_empty_line() {
    assert_eq!(parse_one(b"get=1\n\n"), Request::Get);
    assert_eq!(parse_one(b"ringtun_show=1\n\n"), Request::Show);
    assert_eq!(parse_one(b"ringtun_down=1\n\n"), Request::Down);
    assert_eq!(parse_one(b"ringtun_reload=1\n\n"), Request::Reload);
}

#[test]
fn get_with_a_trailing_byte_is_einval_and_the_next_request_still_parses() {
    // wireguard-go reads one byte after `get=1\n`; `x` is consumed with it.
    let results = frame_all(b"get=1\nxget=1\n\n");
    assert_eq!(results.len(), 2, "{results:?}");
    let e = results[0].as_ref().unwrap_err();
    assert_eq!((e.errno, e.line), (Errno::Invalid, 2));
    assert!(!e.closes_connection());
    assert_eq!(results[1], Ok(Request::Get));
}

#[test]
fn unknown_request_lines_are_eproto_and_close_the_connection() {
    for bytes in [
        &b"GET=1\n\n"[..],
        b"get=2\n\n",
        b"set=1\r\n\n",
        b"get=1 \n\n",
        b"\n",
        b"GET / HTTP/1.1\r\n",
        b"set=true\n",
    ] {
        let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
        framer.push(bytes);
        let e = framer.next_request().unwrap().unwrap_err();
        assert_eq!((e.errno, e.line), (Errno::Protocol, 1), "{bytes:?}");
        assert!(e.closes_connection());
        assert!(framer.is_closed());
        framer.push(b"get=1\n\n");
        assert_eq!(framer.next_request(), None, "nothing after an EPROTO");
    }
}

#[test]
fn a_stranger_is_refused_at_its_first_byte_not_at_a_newline() {
    let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
    framer.push(b"H");
    assert_eq!(
        framer.next_request().unwrap().unwrap_err().errno,
        Errno::Protocol
    );
}

#[test]
fn several_requests_on_one_connection_come_out_in_order() {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"get=1\n\n");
    stream.extend_from_slice(WG_SETCONF);
    stream.extend_from_slice(b"ringtun_show=1\n\n");
    stream.extend_from_slice(WG_SET_INCREMENTAL);
    stream.extend_from_slice(b"ringtun_down=1\n\n");
    let results = frame_all(&stream);
    let expected = vec![
        Ok(Request::Get),
        Ok(parse_one(WG_SETCONF)),
        Ok(Request::Show),
        Ok(parse_one(WG_SET_INCREMENTAL)),
        Ok(Request::Down),
    ];
    assert_eq!(results, expected);
}

#[test]
fn every_split_point_and_a_byte_at_a_time_parse_the_same() {
    for fixture in [
        WG_SETCONF,
        WG_SYNCCONF,
        WG_SET_INCREMENTAL,
        WGCTRL_UPDATE_ONLY,
    ] {
        let whole = parse_one(fixture);
        for cut in 0..=fixture.len() {
            let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
            framer.push(&fixture[..cut]);
            let mut got: Vec<_> = std::iter::from_fn(|| framer.next_request()).collect();
            framer.push(&fixture[cut..]);
            got.extend(std::iter::from_fn(|| framer.next_request()));
            assert_eq!(got, vec![Ok(whole.clone())], "cut at {cut}");
        }
        let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
        let mut got = Vec::new();
        for &b in fixture {
            framer.push(&[b]);
            got.extend(std::iter::from_fn(|| framer.next_request()));
        }
        assert_eq!(got, vec![Ok(whole)], "a byte at a time");
    }
}

#[test]
fn a_big_set_a_byte_at_a_time_is_framed_in_linear_time() {
    // 5,000 peers, about 600 kB: a framer that rescanned its buffer on every
    // byte would take minutes here.
    let mut set = SetRequest::default();
    for i in 0..5000u32 {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        let mut p = PeerSet::new(PublicKey::from_bytes(key), 2 + 4 * i as usize);
        p.endpoint = Some(SocketAddr::from((Ipv4Addr::from(i), 51820)));
        p.allowed_ips = vec![
            AllowedIpOp::Clear,
            AllowedIpOp::Add(IpPrefix::new(IpAddr::V4(Ipv4Addr::from(i << 8)), 24).unwrap()),
        ];
        set.peers.push(p);
    }
    let mut bytes = Zeroizing::new(Vec::new());
    write_request(&Request::Set(set.clone()), &mut bytes);
    let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
    let mut got = Vec::new();
    for &b in bytes.iter() {
        framer.push(&[b]);
        got.extend(std::iter::from_fn(|| framer.next_request()));
    }
    assert_eq!(got, vec![Ok(Request::Set(set))]);
    // The framer gave the big buffer back once the next request came.
    framer.push(b"get=1\n\n");
    assert_eq!(framer.next_request(), Some(Ok(Request::Get)));
    assert!(framer.buf.capacity() <= KEEP_CAPACITY);
}

#[test]
fn a_line_at_the_limit_passes_and_one_byte_more_is_eproto() {
    // "listen_port=" and 8 digits: 20 bytes.
    let line = b"set=1\nlisten_port=00051820\n\n";
    let mut framer = Framer::new(20, MAX_REQUEST);
    framer.push(line);
    assert!(matches!(framer.next_request(), Some(Ok(Request::Set(_)))));

    let mut framer = Framer::new(19, MAX_REQUEST);
    framer.push(b"set=1\nlisten_port=0005182");
    assert_eq!(framer.next_request(), None, "19 bytes, no newline yet");
    framer.push(b"0");
    let e = framer.next_request().unwrap().unwrap_err();
    assert_eq!((e.errno, e.line), (Errno::Protocol, 2), "{e}");
    assert!(framer.is_closed());
}

#[test]
fn a_request_at_the_limit_passes_and_one_byte_more_is_eproto() {
    let request = b"set=1\nlisten_port=1\nfwmark=2\n\n";
    let mut framer = Framer::new(MAX_LINE, request.len());
    framer.push(request);
    assert!(matches!(framer.next_request(), Some(Ok(Request::Set(_)))));

    let mut framer = Framer::new(MAX_LINE, request.len() - 1);
    framer.push(request);
    let e = framer.next_request().unwrap().unwrap_err();
    assert_eq!((e.errno, e.line), (Errno::Protocol, 4), "{e}");
    // The limit counts each request on its own.
    let mut framer = Framer::new(MAX_LINE, request.len());
    framer.push(request);
    framer.push(request);
    assert_eq!(std::iter::from_fn(|| framer.next_request()).count(), 2);
}

#[test]
fn a_set_cut_short_by_the_end_of_input_is_taken_whole_like_wireguard_go() {
    let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
    framer.push(b"set=1\nlisten_port=1\nfwmark=7");
    assert_eq!(framer.next_request(), None);
    framer.end_of_input();
    let set = match framer.next_request() {
        Some(Ok(Request::Set(set))) => set,
        other => panic!("expected a set, got {other:?}"),
    };
    assert_eq!((set.listen_port, set.fwmark), (Some(1), Some(7)));
    assert_eq!(framer.next_request(), None);
    assert!(framer.is_closed());
}

#[test]
fn a_get_cut_short_by_the_end_of_input_gets_no_answer() {
    let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
    framer.push(b"get=1\n");
    framer.end_of_input();
    assert_eq!(framer.next_request(), None);
    assert!(framer.is_closed());
}

#[test]
fn framer_debug_shows_no_bytes() {
    let mut framer = Framer::new(MAX_LINE, MAX_REQUEST);
    framer.push(&WG_SETCONF[..100]);
    assert_eq!(framer.next_request(), None);
    let debug = format!("{framer:?}");
    assert!(!debug.contains("77076d0a"), "{debug}");
    assert!(debug.contains("buffered: 100"), "{debug}");
}

// --- answers ----------------------------------------------------------------

#[test]
fn get_answer_is_byte_for_byte_what_wireguard_go_prints() {
    let mut out = Zeroizing::new(Vec::new());
    write_get(&device_with_two_peers(), &mut out);
    assert_eq!(
        out.escape_ascii().to_string(),
        GET_ANSWER.escape_ascii().to_string()
    );
}

#[test]
fn get_of_an_unconfigured_device_is_only_errno() {
    let mut out = Zeroizing::new(Vec::new());
    write_get(&DeviceDump::default(), &mut out);
    assert_eq!(out.as_slice(), b"errno=0\n\n");
    // An all-zero key counts as none, as wireguard-go's IsZero check.
    let zero_key = DeviceDump {
        private_key: Some(PrivateKey::from_bytes([0; 32])),
        fwmark: 0x51,
        ..DeviceDump::default()
    };
    let mut out = Zeroizing::new(Vec::new());
    write_get(&zero_key, &mut out);
    assert_eq!(out.as_slice(), b"fwmark=81\nerrno=0\n\n");
}

#[test]
fn get_answer_parses_back_to_the_same_device() {
    assert_eq!(parse_get_answer(GET_ANSWER), Ok(device_with_two_peers()));
}

#[test]
fn get_answer_parsing_ignores_unknown_keys_like_wg() {
    let answer = b"listen_port=1\n\
future_device_key=whatever\n\
public_key=de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n\
protocol_version=1\n\
listen_port=9\n\
future_peer_key=1\n\
errno=0\n\
\n";
    let dump = parse_get_answer(answer).unwrap();
    assert_eq!(dump.listen_port, 1, "a device key after a peer is ignored");
    assert_eq!(dump.peers.len(), 1);
    assert_eq!(dump.peers[0].last_handshake, None);
}

#[test]
fn get_answer_with_an_errno_is_the_servers_error() {
    let e = parse_get_answer(b"errno=-22\n\n").unwrap_err();
    assert_eq!((e.errno, e.line), (Errno::Invalid, 1));
    let e = parse_get_answer(b"errno=-2\n\n").unwrap_err();
    assert_eq!(e.errno, Errno::Unknown);
    assert!(e.reason.contains("errno=-2"), "{e}");
}

#[test]
fn broken_get_answers_are_eproto() {
    for (answer, line) in [
        (&b"listen_port=1\n\n"[..], 2),      // no errno
        (b"listen_port=1\nerrno=0\n", 3),    // cut short
        (b"errno=0\n\nerrno=0\n\n", 3),      // two answers
        (b"listen_port=x\nerrno=0\n\n", 1),  // bad number
        (b"listen_port\nerrno=0\n\n", 1),    // no '='
        (b"private_key=12\nerrno=0\n\n", 1), // short key
        (b"errno=zero\n\n", 1),              // bad errno
    ] {
        let e = parse_get_answer(answer).unwrap_err();
        assert_eq!(
            (e.errno, e.line),
            (Errno::Protocol, line),
            "{:?}: {e}",
            answer.escape_ascii().to_string()
        );
    }
}

#[test]
fn set_answers_are_errno_lines_with_a_negative_errno() {
    let mut out = Vec::new();
    write_errno(Ok(()), &mut out);
    write_errno(Err(Errno::Invalid), &mut out);
    write_errno(Err(Errno::AddrInUse), &mut out);
    write_errno(Err(Errno::Unknown), &mut out);
    assert_eq!(
        out.as_slice(),
        b"errno=0\n\nerrno=-22\n\nerrno=-98\n\nerrno=-55\n\n"
    );
    assert_eq!(parse_errno_answer(b"errno=0\n\n"), Ok(()));
    let e = parse_errno_answer(b"errno=-98\n\n").unwrap_err();
    assert_eq!(e.errno, Errno::AddrInUse);
    // A server that writes the errno positive still means an error.
    assert_eq!(
        parse_errno_answer(b"errno=1\n\n").unwrap_err().errno,
        Errno::Permission
    );
}

#[test]
fn errnos_have_linux_numbers_and_names() {
    let table = [
        (Errno::Io, -5, "EIO"),
        (Errno::Protocol, -71, "EPROTO"),
        (Errno::Invalid, -22, "EINVAL"),
        (Errno::AddrInUse, -98, "EADDRINUSE"),
        (Errno::Permission, -1, "EPERM"),
        (Errno::Unknown, -55, "ENOANO"),
    ];
    for (errno, wire, name) in table {
        assert_eq!((errno.wire(), errno.name()), (wire, name));
        assert_eq!(Errno::from_wire(wire), Some(errno));
    }
    assert_eq!(Errno::from_wire(0), None);
}

#[test]
fn show_answer_is_one_json_line_then_errno() {
    let mut out = Vec::new();
    write_show("{\"a\":\n1}", &mut out);
    assert_eq!(out.as_slice(), b"json={\"a\": 1}\nerrno=0\n\n");
    assert_eq!(parse_show_answer(&out).unwrap(), "{\"a\": 1}");
    assert_eq!(
        parse_show_answer(b"errno=0\n\n").unwrap_err().errno,
        Errno::Protocol,
        "no json line"
    );
}

#[test]
fn answer_len_finds_the_end_of_the_first_answer() {
    assert_eq!(answer_len(b""), None);
    assert_eq!(answer_len(b"errno=0\n"), None);
    assert_eq!(answer_len(b"\n"), Some(1));
    assert_eq!(answer_len(b"errno=0\n\nerrno=0\n\n"), Some(9));
}

#[test]
fn written_requests_are_what_the_tools_send() {
    let mut out = Zeroizing::new(Vec::new());
    write_request(&parse_one(WG_SET_INCREMENTAL), &mut out);
    assert_eq!(out.as_slice(), WG_SET_INCREMENTAL);
    for bare in [Request::Get, Request::Show, Request::Down, Request::Reload] {
        let mut out = Zeroizing::new(Vec::new());
        write_request(&bare, &mut out);
        assert_eq!(parse_one(&out), bare);
    }
}

// --- properties -------------------------------------------------------------

fn key_bytes() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn nonzero_key_bytes() -> impl Strategy<Value = [u8; 32]> {
    key_bytes().prop_map(|mut k| {
        k[0] |= 1;
        k
    })
}

fn arb_prefix() -> impl Strategy<Value = IpPrefix> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, len)| IpPrefix::new(
            IpAddr::V4(Ipv4Addr::from(a)),
            len
        )
        .unwrap()),
        (any::<u128>(), 0u8..=128).prop_map(|(a, len)| IpPrefix::new(
            IpAddr::V6(Ipv6Addr::from(a)),
            len
        )
        .unwrap()),
    ]
}

fn arb_endpoint() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), p))),
        (
            any::<u128>(),
            any::<u16>(),
            prop_oneof![Just(0u32), any::<u32>()]
        )
            .prop_map(|(a, p, scope)| SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a),
                p,
                0,
                scope
            ))),
    ]
}

fn arb_peer_set() -> impl Strategy<Value = PeerSet> {
    (
        key_bytes(),
        any::<(bool, bool)>(),
        prop::option::of(prop::option::of(nonzero_key_bytes())),
        prop::option::of(arb_endpoint()),
        prop::option::of(any::<u16>()),
        prop::collection::vec(
            prop_oneof![
                Just(AllowedIpOp::Clear),
                arb_prefix().prop_map(AllowedIpOp::Add),
                arb_prefix().prop_map(AllowedIpOp::Remove),
            ],
            0..5,
        ),
    )
        .prop_map(
            |(key, (remove, update_only), psk, endpoint, keepalive, allowed_ips)| PeerSet {
                public_key: PublicKey::from_bytes(key),
                line: 0,
                remove,
                update_only,
                preshared_key: psk.map(|p| p.map(PresharedKey::from_bytes)),
                endpoint,
                persistent_keepalive: keepalive,
                allowed_ips,
            },
        )
}

fn arb_set() -> impl Strategy<Value = SetRequest> {
    (
        prop::option::of(prop::option::of(key_bytes())),
        prop::option::of(any::<u16>()),
        prop::option::of(any::<u32>()),
        any::<bool>(),
        prop::collection::vec(arb_peer_set(), 0..4),
    )
        .prop_map(
            |(private, listen_port, fwmark, replace_peers, peers)| SetRequest {
                // Clamped, as the parser stores it; clamping also makes it non-zero.
                private_key: private.map(|k| {
                    k.map(|mut k| {
                        k[0] &= 248;
                        k[31] = (k[31] & 127) | 64;
                        PrivateKey::from_bytes(k)
                    })
                }),
                listen_port,
                fwmark,
                replace_peers,
                peers,
            },
        )
}

/// Sets the line numbers the parser gives to the peers of a written request.
fn with_lines(mut set: SetRequest, bytes: &[u8]) -> SetRequest {
    let mut lines = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| l.starts_with(b"public_key="))
        .map(|(i, _)| i + 1);
    for peer in &mut set.peers {
        peer.line = lines.next().unwrap();
    }
    set
}

fn arb_dump() -> impl Strategy<Value = DeviceDump> {
    let peer = (
        key_bytes(),
        prop::option::of(nonzero_key_bytes()),
        prop::option::of(arb_endpoint()),
        prop::option::of(
            (any::<u64>(), 0u32..1_000_000_000).prop_filter_map("never is 0 and 0", |(s, n)| {
                (s != 0 || n != 0).then(|| Duration::new(s, n))
            }),
        ),
        any::<(u64, u64, u16)>(),
        prop::collection::vec(arb_prefix(), 0..4),
    )
        .prop_map(
            |(key, psk, endpoint, last_handshake, (rx, tx, keepalive), allowed_ips)| PeerDump {
                public_key: PublicKey::from_bytes(key),
                preshared_key: psk.map(PresharedKey::from_bytes),
                endpoint,
                last_handshake,
                rx_bytes: rx,
                tx_bytes: tx,
                persistent_keepalive: keepalive,
                allowed_ips,
            },
        );
    (
        prop::option::of(nonzero_key_bytes()),
        any::<(u16, u32)>(),
        prop::collection::vec(peer, 0..4),
    )
        .prop_map(|(key, (listen_port, fwmark), peers)| DeviceDump {
            private_key: key.map(PrivateKey::from_bytes),
            listen_port,
            fwmark,
            peers,
        })
}

/// Byte soup shaped like the protocol: mostly sets in the order clients
/// send them, some with a bad or stray line, and noise, so that the framer's
/// every state and the parser's every key are reached, not just the first
/// check.
fn protocol_soup() -> impl Strategy<Value = Vec<u8>> {
    fn line(s: &str) -> Just<Vec<u8>> {
        Just(format!("{s}\n").into_bytes())
    }
    let device_line = prop_oneof![
        line(&format!("private_key={PRIVATE_HEX}")),
        line("private_key=0000000000000000000000000000000000000000000000000000000000000000"),
        line("listen_port=51820"),
        line("fwmark=7"),
        line("replace_peers=true"),
    ];
    let peer_line = prop_oneof![
        line(&format!("preshared_key={PSK_HEX}")),
        line("remove=true"),
        line("update_only=true"),
        line("protocol_version=1"),
        line("persistent_keepalive_interval=25"),
        line("replace_allowed_ips=true"),
        line("allowed_ip=10.0.0.0/8"),
        line("allowed_ip=-fd00::/64"),
        line("endpoint=[::1]:1"),
        line("endpoint=192.0.2.1:51820"),
    ];
    let stray_line = prop_oneof![
        line("listen_port=x"),
        line("no equals sign"),
        line("allowed_ip=10.0.0.0/33"),
        line("unknown=1"),
        Just(b"fwmark=1\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ];
    let peer = (
        prop_oneof![
            line(&format!("public_key={PEER_A_HEX}")),
            line(&format!("public_key={PEER_B_HEX}"))
        ],
        prop::collection::vec(peer_line, 0..4),
    )
        .prop_map(|(key, lines)| [key, lines.concat()].concat());
    let body = (
        prop::collection::vec(device_line, 0..3),
        prop::collection::vec(peer, 0..3),
        prop::option::weighted(0.3, (any::<prop::sample::Index>(), stray_line)),
    )
        .prop_map(|(device, peers, stray)| {
            let mut lines: Vec<Vec<u8>> = device.into_iter().chain(peers).collect();
            if let Some((at, stray)) = stray {
                lines.insert(at.index(lines.len() + 1), stray);
            }
            lines.concat()
        });
    let end = prop_oneof![
        8 => Just(b"\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
        1 => Just(Vec::new()),
    ];
    let request = prop_oneof![
        4 => (body, end).prop_map(|(body, end)| [b"set=1\n".to_vec(), body, end].concat()),
        2 => (
            prop_oneof![Just("get=1\n"), Just("ringtun_show=1\n"), Just("ringtun_down=1\n")],
            prop_oneof![4 => Just(b'\n'), 1 => any::<u8>()],
        )
            .prop_map(|(op, next)| [op.as_bytes(), &[next]].concat()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    prop::collection::vec(request, 0..6).prop_map(|requests| requests.concat())
}

/// Everything the framer gives for `bytes` pushed in chunks of the given
/// sizes (cycled), with the end of input after them.
fn frame_chunked(
    bytes: &[u8],
    sizes: &[usize],
    max_line: usize,
    max_request: usize,
) -> Vec<Result<Request, ProtoError>> {
    let mut framer = Framer::new(max_line, max_request);
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        framer.push(&rest[..n]);
        rest = &rest[n..];
        out.extend(std::iter::from_fn(|| framer.next_request()));
    }
    framer.end_of_input();
    out.extend(std::iter::from_fn(|| framer.next_request()));
    out
}

proptest! {
    #[test]
    fn arbitrary_bytes_in_arbitrary_chunks_frame_as_in_one_piece(
        bytes in prop_oneof![protocol_soup(), prop::collection::vec(any::<u8>(), 0..300)],
        sizes in prop::collection::vec(1usize..40, 1..8),
        max_line in prop_oneof![Just(MAX_LINE), 8usize..100],
        max_request in prop_oneof![Just(MAX_REQUEST), 16usize..400],
    ) {
        let whole = frame_chunked(&bytes, &[usize::MAX], max_line, max_request);
        let chunked = frame_chunked(&bytes, &sizes, max_line, max_request);
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn written_sets_parse_back_from_any_chunking(
        set in arb_set(),
        sizes in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut bytes = Zeroizing::new(Vec::new());
        write_request(&Request::Set(set.clone()), &mut bytes);
        let expected = Request::Set(with_lines(set, &bytes));
        let got = frame_chunked(&bytes, &sizes, MAX_LINE, MAX_REQUEST);
        prop_assert_eq!(got, vec![Ok(expected)]);
    }

    #[test]
    fn get_answers_parse_back_to_the_same_device(dump in arb_dump()) {
        let mut bytes = Zeroizing::new(Vec::new());
        write_get(&dump, &mut bytes);
        prop_assert_eq!(parse_get_answer(&bytes), Ok(dump));
    }

    #[test]
    fn answer_parsers_never_panic(bytes in prop_oneof![
        protocol_soup(),
        prop::collection::vec(any::<u8>(), 0..200),
    ]) {
        let _ = parse_get_answer(&bytes);
        let _ = parse_show_answer(&bytes);
        let _ = parse_errno_answer(&bytes);
    }
}
