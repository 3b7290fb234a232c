//! `dist/systemd/ringtun@.service` is a unit systemd accepts, as an
//! instance (`ringtun@site`), with nothing to warn about; and it asks for
//! what the daemon does and no more privilege than it needs.

use std::process::Command;

use ringtun_tests::{repo_root, require_tool_or_skip, ringtun};

const UNIT: &str = "dist/systemd/ringtun@.service";

fn unit_text() -> String {
    let path = repo_root().join(UNIT);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn systemd_analyze_verifies_the_unit_as_an_instance_without_a_warning() {
    if !require_tool_or_skip(
        "systemd_analyze_verifies_the_unit_as_an_instance_without_a_warning",
        "systemd-analyze",
    ) {
        return;
    }
    // verify checks that ExecStart's program exists: point it at the build.
    let bin = ringtun::ringtun_bin().unwrap_or_else(|e| panic!("building ringtun: {e}"));
    let text = unit_text().replace("/usr/local/bin/ringtun", &bin.display().to_string());
    let dir = std::env::temp_dir().join(ringtun_tests::unique_name("unit"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("making {}: {e}", dir.display()));
    let instance = dir.join("ringtun@site.service");
    let written = std::fs::write(&instance, text);
    let out = written.and_then(|()| {
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&instance)
            .output()
    });
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.unwrap_or_else(|e| panic!("running systemd-analyze verify: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {UNIT} (as ringtun@site): {}\n{stderr}",
        out.status
    );
}

#[test]
fn the_unit_is_type_notify_and_holds_only_cap_net_admin() {
    let text = unit_text();
    let settings: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(key, _)| *key == k)
            .map(|(_, v)| *v)
            .collect()
    };
    for (key, want) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/local/bin/ringtun up /etc/ringtun/%i.conf",
        ),
        ("ExecReload", "/usr/local/bin/ringtun reload %i"),
        ("User", "ringtun"),
        ("AmbientCapabilities", "CAP_NET_ADMIN"),
        ("CapabilityBoundingSet", "CAP_NET_ADMIN"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_NETLINK AF_UNIX",
        ),
        ("RuntimeDirectory", "wireguard ringtun"),
    ] {
        assert_eq!(get(key), vec![want], "{key}= in {UNIT}");
    }
    // No fixed figure for locked memory: the kernel charges io_uring's
    // buffers to the user, summed over every instance the unit runs, and
    // the need grows with the host's cores (a worker per CPU).
    assert_eq!(
        get("LimitMEMLOCK"),
        vec!["infinity"],
        "LimitMEMLOCK= in {UNIT}"
    );
}
