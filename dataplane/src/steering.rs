//! CPU-affine steering, both ways: a packet is handled by the worker pinned
//! to the CPU it appeared on.
//!
//! Device to wire, a tiny eBPF program attached with `TUNSETSTEERINGEBPF`
//! picks the device queue by the CPU the sending application runs on (the
//! TUN equivalent of XPS). Wire to device, a classic BPF program attached
//! with `SO_ATTACH_REUSEPORT_CBPF` picks the socket of the `SO_REUSEPORT`
//! group by the CPU that received the datagram (RSS, then this).
//!
//! Why: a worker woken from another CPU costs an inter-processor interrupt,
//! and on a virtual machine whose other vCPU is idle (halted) that wake-up
//! took ~45 µs here, four times per round trip; woken on its own CPU it
//! costs a context switch. Measured with `rt-pingpong`: p50 round trip
//! through two ringtun instances 199 µs with cross-CPU wake-ups, 23 µs with
//! everything on one CPU.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `bpf(2)` command to load a program.
const BPF_PROG_LOAD: libc::c_int = 5;
/// Program type accepted by `TUNSETSTEERINGEBPF`.
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `bpf_get_smp_processor_id`, from the kernel's base helper set.
const BPF_FUNC_GET_SMP_PROCESSOR_ID: i32 = 8;
/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct BpfInsn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`; the rest
/// of the 128 bytes stays zero, as the kernel requires.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    rest: [u8; 64],
}

/// Loads `r0 = bpf_get_smp_processor_id(); return r0`: the TUN driver
/// takes the result modulo the number of queues.
pub fn load_cpu_program() -> io::Result<OwnedFd> {
    let insns = [
        // call bpf_get_smp_processor_id
        BpfInsn {
            code: 0x85,
            regs: 0,
            off: 0,
            imm: BPF_FUNC_GET_SMP_PROCESSOR_ID,
        },
        // exit
        BpfInsn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    let license = b"Dual MIT/GPL\0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"ringtun_cpu");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        rest: [0; 64],
    };
    // SAFETY: BPF_PROG_LOAD reads `attr` and the instruction and license
    // buffers it points to, all alive for the call; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Makes the device pick its queue with `prog` (any queue fd will do: the
/// program belongs to the device).
pub fn attach_tun(queue: &impl AsRawFd, prog: &OwnedFd) -> io::Result<()> {
    let fd: libc::c_int = prog.as_raw_fd();
    // SAFETY: TUNSETSTEERINGEBPF reads an int through the pointer for the call.
    let rc = unsafe { libc::ioctl(queue.as_raw_fd(), libc::TUNSETSTEERINGEBPF, &fd) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the `SO_REUSEPORT` group of `socket` deliver each datagram to the
/// socket whose index is the receiving CPU (the kernel falls back to its
/// hash when the index is out of range, e.g. with fewer workers than CPUs).
pub fn attach_reuseport(socket: &impl AsRawFd) -> io::Result<()> {
    // ld #cpu; ret a
    let mut code = [
        insn(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        ),
        insn(libc::BPF_RET | libc::BPF_A, 0, 0, 0),
    ];
    attach_reuseport_program(socket, &mut code)
}

/// One classic BPF instruction.
const fn insn(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Makes the `SO_REUSEPORT` group of `socket`, `members` sockets, deliver
/// each datagram to the socket whose index is a hash of its sender's
/// address plus its UDP source port, modulo `members`. What it buys: a
/// sender that spreads its flows over consecutive source ports (ringtun's
/// flow sockets, given out in turn) has them spread evenly over the
/// receiving workers, where the kernel's hash of the 4-tuple splits a
/// handful of ports as unevenly as chance makes it. The address is in the
/// sum, hashed ([`address_mix`]), so that peers that all send from one
/// well-known port (51820, 4789) still spread by address as under the
/// kernel's hash, even addresses that differ in a regular way (`::1` of
/// many prefixes, the `.1` of a row of /30s). A sender with one port lands
/// on one worker, as with the hash. A datagram that is neither IPv4 nor
/// IPv6 gets an index out of range, so the kernel's hash picks; so does
/// any index past a socket that left.
///
/// The program runs with the packet's data past the UDP header, so it
/// reads through the network header (`SKF_NET_OFF`): the port past the
/// IPv4 header's own length. An IPv6 header with extension headers before
/// UDP would have the port read from one of them, which is still one value
/// per sender and so still keeps each sender's datagrams on one socket.
pub fn attach_reuseport_by_source_port(socket: &impl AsRawFd, members: usize) -> io::Result<()> {
    let n = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    let net = libc::SKF_NET_OFF as u32;
    let ld_word = |at: u32| insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, net + at);
    let tax = insn(libc::BPF_MISC | libc::BPF_TAX, 0, 0, 0);
    let xor_x = insn(libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X, 0, 0, 0);
    let mut code = [
        // 0: A = IP version; IPv6: to 9; IPv4: on; else: to 27
        insn(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, net),
        insn(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 0, 0, 4),
        insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 6, 0, 6),
        insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 23, 4),
        // 4: IPv4. M[0] = source port (past the header's own length);
        // A = source address; to 21
        insn(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 0, 0, net),
        insn(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 0, 0, net),
        insn(libc::BPF_ST, 0, 0, 0),
        ld_word(12),
        insn(libc::BPF_JMP | libc::BPF_JA, 0, 0, 12),
        // 9: IPv6. M[0] = source port; A = the source address's four
        // words folded by XOR
        insn(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, net + 40),
        insn(libc::BPF_ST, 0, 0, 0),
        ld_word(8),
        tax,
        ld_word(12),
        xor_x,
        tax,
        ld_word(16),
        xor_x,
        tax,
        ld_word(20),
        xor_x,
        // 21: A = mix(A) + M[0], modulo n
        insn(
            libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K,
            0,
            0,
            ADDRESS_MIX,
        ),
        insn(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 0, 0, 16),
        insn(libc::BPF_LDX | libc::BPF_MEM, 0, 0, 0),
        insn(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_X, 0, 0, 0),
        insn(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, 0, 0, n),
        insn(libc::BPF_RET | libc::BPF_A, 0, 0, 0),
        // 27: neither: out of range, the kernel's hash
        insn(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
    ];
    attach_reuseport_program(socket, &mut code)
}

/// The multiplier of [`address_mix`] (the 32-bit golden ratio).
const ADDRESS_MIX: u32 = 0x9e37_79b1;

/// What the reuseport program adds to the source port for a sender's
/// address: the IPv4 address, or the XOR of an IPv6 address's four
/// words, times [`ADDRESS_MIX`], its top 16 bits.
pub fn address_mix(addr: std::net::IpAddr) -> u32 {
    let folded = match addr {
        std::net::IpAddr::V4(a) => u32::from(a),
        std::net::IpAddr::V6(a) => a
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .fold(0, |x, w| x ^ w),
    };
    folded.wrapping_mul(ADDRESS_MIX) >> 16
}

fn attach_reuseport_program(
    socket: &impl AsRawFd,
    code: &mut [libc::sock_filter],
) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: the kernel copies the program during the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_program_loads_and_a_reuseport_group_takes_the_filter() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "under CI this test must run as root (loading BPF needs CAP_BPF)"
            );
            eprintln!("SKIPPED the_cpu_program_loads...: needs root (CAP_BPF)");
            return;
        }
        let prog = load_cpu_program().expect("BPF_PROG_LOAD of a two-instruction socket filter");
        assert!(prog.as_raw_fd() >= 0);
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket");
        sock.set_reuse_port(true).expect("SO_REUSEPORT");
        sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind");
        attach_reuseport(&sock).expect("SO_ATTACH_REUSEPORT_CBPF");
    }
    /// Receives what is waiting on `s`, if anything, without blocking.
    fn got(s: &std::net::UdpSocket) -> bool {
        let mut b = [0u8; 16];
        s.recv(&mut b).is_ok()
    }

    /// Senders reach the two members of a group by the parity of their
    /// address's mix plus their port, in both families (IPv6 where there is
    /// one), eight times: with the kernel's hash, each would be a coin
    /// toss.
    #[test]
    fn a_reuseport_group_by_source_port_takes_consecutive_ports_in_turn() {
        use std::net::{SocketAddr, UdpSocket};
        use std::time::{Duration, Instant};
        for any in ["127.0.0.1:0", "[::1]:0"] {
            let any: SocketAddr = any.parse().unwrap();
            let member = |at: SocketAddr| -> std::io::Result<UdpSocket> {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(at),
                    socket2::Type::DGRAM,
                    None,
                )?;
                s.set_reuse_port(true)?;
                s.bind(&at.into())?;
                Ok(s.into())
            };
            let first = match member(any) {
                Ok(s) => s,
                Err(e) if any.is_ipv6() => {
                    eprintln!("no IPv6 loopback here ({e}): IPv4 only");
                    continue;
                }
                Err(e) => panic!("binding {any}: {e}"),
            };
            let second = member(first.local_addr().unwrap()).expect("joining the group");
            let group = [first, second];
            attach_reuseport_by_source_port(&group[0], 2).expect("SO_ATTACH_REUSEPORT_CBPF");
            for s in &group {
                s.set_nonblocking(true).unwrap();
            }
            let to = group[0].local_addr().unwrap();
            for round in 0..8u16 {
                // Another address than the group's, so that reading the
                // destination's instead would show.
                let from: SocketAddr = if any.is_ipv4() {
                    "127.0.0.2:0".parse().unwrap()
                } else {
                    any
                };
                let sender = UdpSocket::bind(from).unwrap();
                let from = sender.local_addr().unwrap();
                let port = from.port();
                let want = ((address_mix(from.ip()) + u32::from(port)) % 2) as usize;
                sender.send_to(&round.to_be_bytes(), to).unwrap();
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    if got(&group[want]) {
                        break;
                    }
                    assert!(
                        !got(&group[1 - want]),
                        "{any}: from port {port}, the datagram reached member {} not {want}",
                        1 - want
                    );
                    assert!(
                        Instant::now() < deadline,
                        "{any}: nothing arrived from {port}"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Peers that all send from 51820 spread by address, also where their
    /// addresses differ in a regular way that a plain sum would fold onto
    /// one worker: the `.1` of a row of /30s over 4 workers, `::1` of
    /// eight /64s over 2.
    #[test]
    fn peers_on_one_port_spread_by_address() {
        let workers = |addrs: &[std::net::IpAddr], n: u32| {
            let mut seen: Vec<u32> = addrs
                .iter()
                .map(|a| (address_mix(*a) + 51820) % n)
                .collect();
            seen.sort_unstable();
            seen.dedup();
            seen.len()
        };
        let thirties: Vec<std::net::IpAddr> =
            (0..8u8).map(|i| [10, 0, 0, 4 * i + 1].into()).collect();
        assert!(workers(&thirties, 4) >= 3, "{thirties:?}");
        let prefixes: Vec<std::net::IpAddr> = (0..8u16)
            .map(|i| std::net::Ipv6Addr::new(0x2001, 0xdb8, i, 0, 0, 0, 0, 1).into())
            .collect();
        assert_eq!(workers(&prefixes, 2), 2, "{prefixes:?}");
    }
}
