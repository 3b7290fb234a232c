//! The TAP device's own MAC address: the same on every start, and never
//! the lowest on a bridge.
//!
//! A Linux bridge without an address of its own takes the lowest MAC of
//! its ports. A TAP with a random MAC (the kernel's default) is the lowest
//! half the time, so each start or stop of ringtun would change the
//! bridge's MAC: the gateway flushes its own neighbour entries, and every
//! host on the LAN keeps sending to the old MAC until its entry times out
//! (several seconds without a reply from the gateway's LAN address).
//!
//! So the TAP gets `fe:` followed by five bytes hashed from the machine,
//! the network namespace and the interface name. `fe` is the highest
//! first octet a unicast, locally administered address can have, so any
//! other port (kernel random addresses start with `fe` one time in 64)
//! stays the bridge's lowest, as libvirt does for its guests' TAPs; and
//! the hash makes the address, and so the bridge's if the TAP is its only
//! port, the same across restarts, yet different for two instances on one
//! machine (their TAPs' own frames cross the overlay).

use std::os::unix::fs::MetadataExt;

use netctl::MacAddr;

/// The MAC ringtun gives TAP device `ifname` in the current namespace.
pub fn for_device(ifname: &str) -> MacAddr {
    // Whichever identifies the machine: machine-id where systemd (or a
    // container) provides one, the hostname otherwise.
    let machine = std::fs::read("/etc/machine-id")
        .or_else(|_| std::fs::read("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    // The namespace's inode: fixed for its lifetime (and for the initial
    // namespace across boots), distinct between live namespaces.
    let netns = std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    derive(&machine, netns, ifname)
}

/// The address from its inputs (pure, so it can be tested).
fn derive(machine: &[u8], netns: u64, ifname: &str) -> MacAddr {
    // FNV-1a: stable across Rust releases, unlike std's hasher, and enough
    // to spread five bytes; nothing here is secret.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(b"ringtun tap");
    eat(machine.trim_ascii());
    eat(&netns.to_le_bytes());
    eat(ifname.as_bytes());
    let b = h.to_be_bytes();
    MacAddr([0xfe, b[0], b[1], b[2], b[3], b[4]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_local_and_above_any_other_first_octet() {
        let m = derive(b"0123456789abcdef", 4026531840, "rt-a");
        assert_eq!(m.0[0], 0xfe);
        assert!(m.is_local() && !m.is_multicast());
    }

    #[test]
    fn the_same_inputs_give_the_same_address() {
        assert_eq!(derive(b"id\n", 7, "rt0"), derive(b"id", 7, "rt0"));
        assert_eq!(for_device("rt0"), for_device("rt0"));
    }

    #[test]
    fn machine_namespace_and_name_each_change_it() {
        let base = derive(b"machine", 7, "rt0");
        assert_ne!(base, derive(b"machinf", 7, "rt0"));
        assert_ne!(base, derive(b"machine", 8, "rt0"));
        assert_ne!(base, derive(b"machine", 7, "rt1"));
        assert_ne!(derive(b"ab", 7, "c"), derive(b"a", 7, "bc"));
    }
}
