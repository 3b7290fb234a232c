//! ringtun's vxlan mode against the Linux kernel's own vxlan device: site 1
//! runs ringtun, site 2 a kernel `vxlan` (`ip link add vx0 type vxlan id
//! 42 local WAN2 remote WAN1 dstport 4789 dev wan0`) with the same VNI.
//! Pings and hashed bulk transfers cross both ways, over an IPv4 and an
//! IPv6 underlay, with IPv4 and IPv6 inside.
//!
//! The kernel device's transmit checksum offload is turned off (`ethtool
//! -K vx0 tx off`), as a NIC would do that work on a real wire: over veth
//! on one host the kernel hands the frame on with the inner TCP checksum
//! still unfinished (CHECKSUM_PARTIAL), and a userspace receiver reading
//! the datagram from a UDP socket cannot tell. Without it no TCP segment
//! from the kernel side is accepted (its pings still cross).

mod dataplane_lab;

use dataplane_lab::{
    Lab, Underlay, VNI, VXLAN_MTU_IPV6_UNDERLAY, VXLAN_PORT, WAN, assert_bulk, assert_reaches,
    inner4, inner6, must, wan,
};
use netctl::{AddrOptions, IpPrefix, Netlink, VxlanConfig};
use ringtun_tests::require_root;
use ringtun_tests::ringtun::{TunnelMode, UpOptions};

const BULK: u64 = 64 << 20;
/// `ETHTOOL_STXCSUM` (linux/ethtool.h): set transmit checksum offload.
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value` (linux/ethtool.h).
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `ethtool -K DEV tx off` inside `netns`, through the SIOCETHTOOL ioctl.
fn disable_tx_checksum(netns: &str, dev: &str) {
    let result = must(
        netctl::netns::run_in(netns, || -> std::io::Result<()> {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
            let mut value = EthtoolValue {
                cmd: ETHTOOL_STXCSUM,
                data: 0,
            };
            // SAFETY: an all-zero ifreq is valid; the name (shorter than
            // IFNAMSIZ, so NUL-terminated) and the data pointer are set below.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr
                .ifr_name
                .iter_mut()
                .zip(dev.bytes().take(libc::IFNAMSIZ - 1))
            {
                *d = s as libc::c_char;
            }
            ifr.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
            // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it
            // points to, both alive for the call.
            let rc = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&sock),
                    libc::SIOCETHTOOL,
                    &mut ifr,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        }),
        netns,
    );
    must(
        result,
        format!("turning transmit checksum offload off on {dev}"),
    );
}
/// The kernel device's name in site 2.
const KERNEL_VXLAN: &str = "vx0";

fn against_the_kernel(ctx: &str, underlay: Underlay, workers: usize) {
    let mode = TunnelMode::Vxlan;
    let lab = Lab::pair("dpx");
    let nl = must(Netlink::in_netns(lab.ns(2)), "netlink in site 2");
    must(
        nl.add_vxlan(&VxlanConfig {
            name: KERNEL_VXLAN.to_string(),
            vni: VNI,
            local: Some(wan(2, underlay)),
            remote: Some(wan(1, underlay)),
            dstport: Some(VXLAN_PORT),
            dev: Some(WAN.to_string()),
            ..VxlanConfig::default()
        }),
        "adding the kernel's vxlan device",
    );
    let kernel_mtu = must(nl.link(KERNEL_VXLAN), "the kernel vxlan").mtu;
    let expected_mtu = match underlay {
        Underlay::V4 => 1450,
        Underlay::V6 => VXLAN_MTU_IPV6_UNDERLAY,
    };
    assert_eq!(
        kernel_mtu, expected_mtu,
        "{ctx}: the kernel's vxlan MTU over this underlay (the lab's ringtun side uses the same)"
    );
    for (addr, len) in [(inner4(mode, 2), 24), (inner6(mode, 2), 64)] {
        let prefix = must(IpPrefix::new(addr, len), "prefix");
        must(
            nl.addr_add_with(KERNEL_VXLAN, prefix, AddrOptions { nodad: true }),
            format!("adding {prefix} to {KERNEL_VXLAN}"),
        );
    }
    disable_tx_checksum(lab.ns(2), KERNEL_VXLAN);
    must(nl.link_set_up(KERNEL_VXLAN), "setting vx0 up");

    let opts = UpOptions {
        workers: Some(workers),
        ..UpOptions::default()
    };
    let a = lab.up(1, &lab.conf(mode, 1, &[2], underlay), &opts);
    for inner in [inner4 as fn(TunnelMode, u8) -> _, inner6] {
        assert_reaches(lab.ns(1), inner(mode, 2), ctx);
        assert_reaches(lab.ns(2), inner(mode, 1), ctx);
    }
    let c = format!("{ctx}: IPv4 inside, ringtun to the kernel");
    assert_bulk(lab.ns(1), lab.ns(2), inner4(mode, 2), BULK, &[&a], &c);
    let c = format!("{ctx}: IPv6 inside, the kernel to ringtun");
    assert_bulk(lab.ns(2), lab.ns(1), inner6(mode, 1), BULK, &[&a], &c);
    let c = format!("{ctx}: IPv6 inside, ringtun to the kernel");
    assert_bulk(lab.ns(1), lab.ns(2), inner6(mode, 2), BULK, &[&a], &c);
    let c = format!("{ctx}: IPv4 inside, the kernel to ringtun");
    assert_bulk(lab.ns(2), lab.ns(1), inner4(mode, 1), BULK, &[&a], &c);

    let status = must(a.show(), "show");
    // A full flow queue is congestion, not a rejected frame: the bulk
    // transfer's own backlog trimmed, which its TCP answers by slowing down.
    let dropped: Vec<&(String, u64)> = status
        .drops
        .iter()
        .filter(|(reason, n)| *n > 0 && reason != "flow_queue_full")
        .collect();
    assert!(
        dropped.is_empty(),
        "{ctx}: ringtun dropped frames from the kernel's vxlan: {dropped:?}"
    );
    must(a.terminate(), "stopping ringtun");
}

#[test]
fn vxlan_interoperates_with_the_kernel_vxlan_over_ipv4() {
    require_root!("vxlan_interoperates_with_the_kernel_vxlan_over_ipv4");
    against_the_kernel("kernel vxlan, IPv4 underlay", Underlay::V4, 2);
}

#[test]
fn vxlan_interoperates_with_the_kernel_vxlan_over_ipv6() {
    require_root!("vxlan_interoperates_with_the_kernel_vxlan_over_ipv6");
    against_the_kernel("kernel vxlan, IPv6 underlay", Underlay::V6, 1);
}
