//! The `netctl` binary: every `ip` command of the seed article with netctl
//! in its place, the message each documented mistake gets, JSON output,
//! topology files from the command line, and the grammar in `--help`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use netctl::{Topology, netns};

const NETCTL: &str = env!("CARGO_BIN_EXE_netctl");

/// The project's skip rule (as `ringtun_tests::require_root_or_skip`, which
/// netctl cannot depend on): skip loudly without root, fail under CI.
fn require_root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let message = format!("SKIPPED {test}: needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)");
    if std::env::var_os("CI").is_some() {
        panic!("{message}; CI is set, and under CI a skip is a failure");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a
    // skip must be seen.
    let _ = writeln!(std::io::stderr(), "{message}");
    false
}

macro_rules! require_root {
    ($test:expr) => {
        if !require_root_or_skip($test) {
            return;
        }
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("cli{tag}-{}-{n}-{:04x}", std::process::id(), nanos & 0xffff)
}

/// Namespaces made by a test, deleted when it ends (also on panic).
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, tag: &str) -> String {
        let name = unique(tag);
        self.0.push(name.clone());
        ok(&["netns", "add", &name]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if netns::exists(name) {
                let _ = netns::delete(name);
            }
        }
    }
}

fn netctl(args: &[&str]) -> Output {
    Command::new(NETCTL)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running netctl {args:?}: {e}"))
}

/// Runs netctl and returns stdout; panics with stderr if it failed.
fn ok(args: &[&str]) -> String {
    let out = netctl(args);
    assert!(
        out.status.success(),
        "netctl {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs netctl expecting failure; returns (exit code, stderr).
fn fails(args: &[&str]) -> (i32, String) {
    let out = netctl(args);
    assert!(!out.status.success(), "netctl {} succeeded", args.join(" "));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
    )
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn json(args: &[&str]) -> serde_json::Value {
    let text = ok(args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("netctl {args:?} printed no JSON ({e}): {text}"))
}

fn link<'a>(links: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    links
        .as_array()
        .and_then(|a| a.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no link {name} in {links}"))
}

fn has_address(link: &serde_json::Value, prefix: &str) -> bool {
    link["addresses"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["prefix"] == prefix))
}

#[test]
fn help_prints_the_grammar() {
    let text = ok(&["--help"]);
    for needle in [
        "link add [name] NAME",
        "peer [name] PEER",
        "link set [dev] NAME { up | down | mtu MTU | master BRIDGE | nomaster | netns NS|PID",
        "address add PREFIX dev NAME",
        "route add { default | PREFIX } [via GATEWAY] [dev NAME]",
        "netns add NAME",
        "tuntap add [dev] NAME mode { tun | tap } [multi_queue]",
        "apply FILE.toml [--prefix P]",
        "-n, -netns NS",
    ] {
        assert!(text.contains(needle), "--help lacks {needle:?}");
    }
    assert_eq!(ok(&[]), text, "no arguments prints the help");
    assert!(ok(&["link", "help"]).starts_with("link add"));
    assert!(ok(&["--version"]).starts_with("netctl "));
}

#[test]
fn mistakes_exit_2_with_a_message_that_names_them() {
    let cases: &[(&str, &str)] = &[
        (
            "addr add 10.1.1.300/24 dev veth0",
            "netctl: 10.1.1.300/24 is not an IPv4 prefix",
        ),
        (
            "addr add fd00::1/129 dev veth0",
            "netctl: fd00::1/129 is not an IPv6 prefix",
        ),
        ("lnk show", "netctl: unknown object \"lnk\""),
        ("link set dev veth0 mtu", "netctl: mtu needs a value"),
        (
            "link set dev veth0 mtu big",
            "netctl: mtu: \"big\" is not a number",
        ),
        (
            "link add veth0 type veth",
            "netctl: link add ... type veth needs `peer name NAME`",
        ),
        (
            "route add 10.0.0.5/8 dev veth0",
            "netctl: 10.0.0.5/8 has host bits set: did you mean 10.0.0.0/8?",
        ),
        (
            "tuntap add dev tun0",
            "netctl: tuntap add tun0 needs `mode tun` or `mode tap`",
        ),
        ("-n", "netctl: -n needs a value"),
        ("-n a netns add b", "netctl: -n does not apply to netns"),
    ];
    for (line, wanted) in cases {
        let (code, stderr) = fails(&words(line));
        assert_eq!(code, 2, "netctl {line}: exit {code}, {stderr}");
        assert!(
            stderr.starts_with(wanted),
            "netctl {line}: wanted {wanted:?}, got {stderr:?}"
        );
    }
}

#[test]
fn a_bad_topology_file_is_named_with_its_line() {
    let dir = std::env::temp_dir().join(unique("topo"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[[namespace]]\nname = \"a\"\n[[link]]\nnamespace = \"a\"\nname = \"x\"\nkind = \"veth\"\nmtu = \"big\"\n").unwrap();
    let (code, stderr) = fails(&["apply", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("line 7"),
        "{stderr}"
    );
}

/// The article's commands, in its order, `ip` replaced by `netctl -n NS`.
const SEED_COMMANDS: &[&str] = &[
    "link add veth0 type veth peer name veth1",
    "addr add 10.1.1.2/24 dev veth0",
    "addr add 10.1.1.1/24 dev veth1",
    "link set dev veth0 up",
    "link set dev veth1 up",
    "link add name br0 type bridge",
    "link set br0 up",
    "link set dev veth0 master br0",
    "addr del 10.1.1.2/24 dev veth0",
    "addr add 10.1.1.2/24 dev br0",
];

#[test]
fn every_ip_command_of_the_seed_works_with_netctl_in_its_place() {
    require_root!("every_ip_command_of_the_seed_works_with_netctl_in_its_place");
    let mut spaces = Namespaces(Vec::new());
    let ns = spaces.add("seed");
    for line in SEED_COMMANDS {
        let mut args = vec!["-n", ns.as_str()];
        args.extend(words(line));
        ok(&args);
    }
    let links = json(&["-n", &ns, "-j", "link", "show"]);
    let (veth0, veth1, br0) = (
        link(&links, "veth0"),
        link(&links, "veth1"),
        link(&links, "br0"),
    );
    assert_eq!(veth0["master"], "br0");
    assert_eq!(veth0["kind"], "veth");
    assert_eq!(br0["kind"], "bridge");
    for l in [veth0, veth1, br0] {
        assert_eq!(l["up"], true, "{l}");
        assert_eq!(l["mtu"], 1500, "{l}");
    }
    assert!(has_address(br0, "10.1.1.2/24"), "{br0}");
    assert!(has_address(veth1, "10.1.1.1/24"), "{veth1}");
    assert!(!has_address(veth0, "10.1.1.2/24"), "{veth0}");

    // The same state through `netns exec`, as `ip netns exec` would run it.
    let shown = ok(&["netns", "exec", &ns, NETCTL, "link", "show", "dev", "veth0"]);
    assert!(
        shown.contains("veth0@veth1:") && shown.contains("master br0"),
        "{shown}"
    );
}

#[test]
fn the_seed_across_two_namespaces_pings_as_the_article_says() {
    require_root!("the_seed_across_two_namespaces_pings_as_the_article_says");
    let mut spaces = Namespaces(Vec::new());
    let a = spaces.add("a");
    let b = spaces.add("b");
    let run = |ns: &str, line: &str| {
        let mut args = vec!["-n", ns];
        args.extend(words(line));
        ok(&args)
    };
    run(
        &a,
        &format!("link add veth0 type veth peer name veth1 netns {b}"),
    );
    let fresh = json(&["-n", &b, "-j", "link", "show", "veth1"]);
    assert_eq!(fresh[0]["state"], "DOWN");
    assert_eq!(fresh[0]["mtu"], 1500);
    run(&a, "addr add 10.1.1.2/24 dev veth0");
    run(&b, "addr add 10.1.1.1/24 dev veth1");
    run(&a, "link set dev veth0 up");
    run(&b, "link set dev veth1 up");
    let ping = |dev: &str| {
        netctl(&[
            "-n", &a, "ping", "-c", "1", "-W", "2", "-I", dev, "10.1.1.1",
        ])
    };
    assert!(
        ping("veth0").status.success(),
        "ping -I veth0 before the bridge"
    );

    run(&a, "link add name br0 type bridge");
    run(&a, "link set br0 up");
    run(&a, "link set dev veth0 master br0");
    let lost = ping("veth0");
    assert_eq!(
        lost.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&lost.stdout)
    );
    assert!(String::from_utf8_lossy(&lost.stdout).contains("0 answered"));

    run(&a, "addr del 10.1.1.2/24 dev veth0");
    run(&a, "addr add 10.1.1.2/24 dev br0");
    let answered = (0..5).any(|_| ping("br0").status.success());
    assert!(
        answered,
        "ping -I br0 after giving the address to the bridge"
    );
}

#[test]
fn errors_from_the_kernel_name_the_object_and_exit_1() {
    require_root!("errors_from_the_kernel_name_the_object_and_exit_1");
    let mut spaces = Namespaces(Vec::new());
    let ns = spaces.add("err");
    ok(&[
        "-n", &ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
    ]);
    let cases = [
        (
            "link add veth0 type veth peer name veth9",
            format!("netctl: veth0 already exists in namespace {ns}"),
        ),
        (
            "link set dev br9 up",
            format!("netctl: no such device br9 in namespace {ns}"),
        ),
        (
            "link set dev veth0 master br9",
            format!("netctl: no such device br9 in namespace {ns}"),
        ),
        (
            "addr del 10.9.9.9/24 dev veth0",
            format!("netctl: address 10.9.9.9/24 is not on veth0 in namespace {ns}"),
        ),
    ];
    for (line, wanted) in &cases {
        let mut args = vec!["-n", ns.as_str()];
        args.extend(words(line));
        let (code, stderr) = fails(&args);
        assert_eq!(code, 1, "{line}: {stderr}");
        assert_eq!(&stderr, wanted, "{line}");
    }
    let missing = unique("missing");
    let (code, stderr) = fails(&["-n", &missing, "link", "show"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr,
        format!("netctl: no such namespace {missing} (see `netctl netns list`)")
    );
}

/// `struct __user_cap_header_struct` of `<linux/capability.h>`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one per 32 capabilities.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, two [`CapData`].
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Leaves the calling process uid 0 but without any capability, for itself
/// and for whatever it execs: the bounding set emptied, every set cleared,
/// and the securebits that make root special (capabilities on exec, the
/// fixup on a uid change) switched off and locked.
///
/// Staying uid 0 keeps the test independent of where the checkout lives:
/// a checkout under a 0700 directory (`/root`, `mktemp -d`) cannot be
/// entered by another user, so switching to `nobody` would fail the exec
/// itself. Runs between fork and exec, so it only makes system calls: no
/// allocation, no lock (`io::Error::last_os_error` allocates nothing).
fn drop_every_capability() -> std::io::Result<()> {
    use std::io::Error;
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // the capset below takes away. EINVAL marks the first number past the
    // kernel's CAP_LAST_CAP.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            let e = Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    // Without these, exec of any binary by uid 0 would fill the permitted
    // set again (up to the bounding set, so belt and braces).
    let securebits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, securebits, 0, 0, 0) } != 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if cleared != 0 {
        return Err(Error::last_os_error());
    }
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset(2) reads one header and, for version 3, two data
    // structs; both live on this stack frame for the whole call.
    if unsafe { libc::syscall(libc::SYS_capset, &header, none.as_ptr()) } != 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

#[test]
fn without_cap_net_admin_the_error_says_run_as_root() {
    require_root!("without_cap_net_admin_the_error_says_run_as_root");
    let mut spaces = Namespaces(Vec::new());
    let ns = spaces.add("priv");
    let fd = netns::open(&ns).unwrap();
    let mut cmd = Command::new(NETCTL);
    cmd.args(["link", "add", "name", "br0", "type", "bridge"]);
    // SAFETY: between fork and exec only async-signal-safe system calls run:
    // setns into the test's namespace (so nothing can touch the host's),
    // then every capability dropped, the uid kept (see
    // `drop_every_capability`).
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
            drop_every_capability()
        });
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {NETCTL} without capabilities: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "netctl: creating a bridge br0 needs CAP_NET_ADMIN: run as root"
    );
    let links = json(&["-n", &ns, "-j", "link", "show"]);
    assert_eq!(links.as_array().map(Vec::len), Some(1), "only lo: {links}");
}

#[test]
fn topology_files_apply_idempotently_and_destroy_from_the_command_line() {
    require_root!("topology_files_apply_idempotently_and_destroy_from_the_command_line");
    let file: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "xtask",
        "topologies",
        "seed.toml",
    ]
    .iter()
    .collect();
    let file = file.to_str().unwrap().to_string();
    let prefix = format!("{}-", unique("topo"));
    struct Destroy<'a>(&'a str, &'a str);
    impl Drop for Destroy<'_> {
        fn drop(&mut self) {
            if let Ok(t) = Topology::from_file(self.0) {
                let _ = t.destroy(Some(self.1));
            }
        }
    }
    let _cleanup = Destroy(&file, &prefix);

    let first = ok(&["apply", &file, "--prefix", &prefix]);
    assert!(
        first.contains(&format!("created   namespace {prefix}a")),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            "created   address 10.1.1.2/24 on br0 in {prefix}a"
        )),
        "{first}"
    );
    let second = ok(&["apply", &file, "--prefix", &prefix]);
    assert!(second.contains(": 0 created"), "{second}");
    assert!(!second.contains("created   "), "{second}");
    let ping = ok(&["-n", &format!("{prefix}a"), "ping", "-W", "2", "fd00:1::1"]);
    assert!(ping.contains("1 answered"), "{ping}");

    let gone = ok(&["destroy", &file, "--prefix", &prefix]);
    assert!(
        gone.contains(&format!("deleted namespace {prefix}a")),
        "{gone}"
    );
    assert!(
        gone.contains(&format!("deleted namespace {prefix}b")),
        "{gone}"
    );
    let again = ok(&["destroy", &file, "--prefix", &prefix]);
    assert!(
        again.contains(&format!("absent  namespace {prefix}a")),
        "{again}"
    );
    assert!(
        !netns::list()
            .unwrap()
            .iter()
            .any(|n| n.starts_with(&prefix))
    );
}

/// Words netctl knows, plus junk, for the never-panics property.
const VOCABULARY: &[&str] = &[
    "link",
    "addr",
    "route",
    "netns",
    "tuntap",
    "sysctl",
    "ping",
    "apply",
    "destroy",
    "add",
    "del",
    "set",
    "show",
    "list",
    "exec",
    "dev",
    "name",
    "type",
    "veth",
    "bridge",
    "vxlan",
    "tun",
    "tap",
    "peer",
    "mtu",
    "up",
    "down",
    "master",
    "nomaster",
    "via",
    "default",
    "metric",
    "table",
    "id",
    "mode",
    "multi_queue",
    "user",
    "group",
    "-j",
    "-4",
    "-6",
    "10.1.1.2/24",
    "fd00::1/64",
    "10.1.1.300/24",
    "1500",
    "-c",
    "-W",
    "-I",
    "--prefix",
    "help",
    "-w",
    "net.ipv4.ip_forward=1",
    "kernel.hostname",
    "0",
    "-1",
    "99999999999999999999",
    "",
    "veth0",
    "br0",
    "/",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever the arguments, netctl exits 0, 1 or 2 with a message, and
    /// never panics (exit 101). Every run is pinned to a namespace that
    /// does not exist, and `-n` is kept out of the random words, so no run
    /// can change anything: netns, apply and destroy refuse `-n`.
    #[test]
    fn no_command_line_makes_netctl_panic(
        picks in proptest::collection::vec(0usize..VOCABULARY.len(), 0..8),
        junk in proptest::collection::vec("[^\\x00]{0,10}", 0..2),
    ) {
        let missing = unique("nowhere");
        let mut args = vec!["-n".to_string(), missing];
        args.extend(picks.iter().map(|&i| VOCABULARY[i].to_string()));
        args.extend(junk.into_iter().filter(|j| !j.starts_with("-n") && !j.starts_with("--netns")));
        let out = Command::new(NETCTL).args(&args).output().unwrap();
        let code = out.status.code();
        proptest::prop_assert!(matches!(code, Some(0..=2)), "netctl {args:?} exited {code:?}");
        if code != Some(0) {
            proptest::prop_assert!(!out.stderr.is_empty(), "netctl {args:?} failed silently");
        }
    }
}
