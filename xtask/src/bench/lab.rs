//! One bench lab per system: two gateway namespaces joined by a WAN veth
//! pair, the same for every system (the traffic runs from gateway A to
//! gateway B, through the tunnel or, for raw veth, straight over the WAN).
//! Also finding the processes that live in a namespace (for the tunnel's
//! own CPU time).
//!
//! ```text
//!   gw-a [wan0 192.0.2.1] ═══ WAN veth, MTU 1500 ═══ [wan0 192.0.2.2] gw-b
//!        tunnel device 10.x.0.1 ~~~~~~~~~~~~~~~~~~~~~~ tunnel device 10.x.0.2
//! ```

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use netctl::Topology;

use crate::labs::LabGuard;

/// Every namespace this harness makes starts with this, then the pid.
pub const NETNS_TAG: &str = "bench-";

/// The WAN addresses of gateway A and B.
pub const WAN_A: &str = "192.0.2.1";
/// Gateway B's WAN address.
pub const WAN_B: &str = "192.0.2.2";

/// The two gateways and the WAN between them; `extra` adds links (the
/// kernel's vxlan devices) in the same schema.
fn topology_text(extra: &str) -> String {
    format!(
        r#"
prefix = "{NETNS_TAG}"

[[namespace]]
name = "gw-a"
sysctls = {{ "net.ipv6.conf.all.accept_dad" = 0, "net.ipv6.conf.default.accept_dad" = 0 }}

[[namespace]]
name = "gw-b"
sysctls = {{ "net.ipv6.conf.all.accept_dad" = 0, "net.ipv6.conf.default.accept_dad" = 0 }}

[[link]]
namespace = "gw-a"
name = "wan0"
kind = "veth"
mtu = 1500
peer = {{ name = "wan0", namespace = "gw-b" }}
addresses = ["{WAN_A}/24"]

[[link]]
namespace = "gw-b"
name = "wan0"
kind = "veth"
mtu = 1500
addresses = ["{WAN_B}/24"]
{extra}
"#
    )
}

/// A lab: the topology applied under `bench-PID-TAG-`, destroyed on drop.
pub struct Lab(LabGuard);

impl Lab {
    /// Builds the gateways and the WAN, plus `extra` links.
    pub fn apply(tag: &str, extra: &str) -> Result<Lab> {
        let topology = Topology::parse(&topology_text(extra), "bench lab")
            .context("parsing the bench topology")?;
        let lab = LabGuard::new(topology, NETNS_TAG, tag);
        lab.apply()
            .with_context(|| format!("applying the bench lab under prefix {}", lab.prefix()))?;
        Ok(Lab(lab))
    }

    /// Gateway A's namespace (the traffic's sender).
    pub fn gw_a(&self) -> String {
        self.0.ns("gw-a")
    }

    /// Gateway B's namespace (the traffic's receiver).
    pub fn gw_b(&self) -> String {
        self.0.ns("gw-b")
    }
}

/// The inode that names a namespace (what `/proc/PID/ns/net` links to).
fn netns_inode(name: &str) -> Result<u64> {
    let path = PathBuf::from("/run/netns").join(name);
    Ok(std::fs::metadata(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .ino())
}

/// Processes whose network namespace is `netns`, with their `comm`.
pub fn processes_in(netns: &str) -> Result<Vec<(u32, String)>> {
    let want = format!("net:[{}]", netns_inode(netns)?);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("listing /proc")?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look: skip what cannot be read.
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        if link.to_string_lossy() != want {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        found.push((pid, comm.trim_end().to_string()));
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_topology_parses_with_and_without_extra_links() {
        Topology::parse(&topology_text(""), "t").unwrap();
        let vx = r#"
[[link]]
namespace = "gw-a"
name = "vx0"
kind = "vxlan"
mtu = 1450
vxlan = { vni = 42, local = "192.0.2.1", remote = "192.0.2.2", dev = "wan0" }
addresses = ["10.30.0.1/24"]
"#;
        let t = Topology::parse(&topology_text(vx), "t").unwrap();
        assert_eq!(t.links.len(), 3);
    }
}
