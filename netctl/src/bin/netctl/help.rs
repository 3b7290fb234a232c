//! The grammar, as `netctl --help` and `netctl OBJECT help` print it.

use crate::parse::Topic;

const HEAD: &str = "\
netctl: ip's grammar for namespaces, links, addresses and routes, over netlink

Usage: netctl [OPTIONS] OBJECT COMMAND [ARGS]

Options (before OBJECT):
  -n, -netns NS    act inside the named namespace NS (/run/netns/NS)
  -j, -json        JSON output for show/list
  -4, -6           address family for route show and `route add default`
  -V, --version    print the version
  -h, --help       this text; `netctl OBJECT help` for one object

As in ip: the `dev` and `name` keywords are optional where ip has them
optional, several attributes go in one `link set`, and show/list/ls,
del/delete and the abbreviations l, a, addr, r are accepted.
";

const LINK: &str = "\
link add [name] NAME [mtu MTU] [up] type veth peer [name] PEER [mtu MTU] [netns NS]
link add [name] NAME [mtu MTU] [up] type bridge | dummy
link add [name] NAME [mtu MTU] [up] type vxlan id VNI [local ADDR] [remote ADDR | group ADDR]
                                    [dstport PORT] [dev DEV] [ttl TTL] [learning | nolearning]
                                    (dstport defaults to 4789, the IANA port)
link add [name] NAME [mtu MTU] [up] type tun | tap [multi_queue] [user U] [group G] [vnet_hdr] [pi]
link set [dev] NAME { up | down | mtu MTU | master BRIDGE | nomaster | netns NS|PID | name NEW |
              address MAC } ...
link del [dev] NAME
link show [[dev] NAME]          kind, state, MTU, master, addresses (-j for JSON)
";

const ADDRESS: &str = "\
address add PREFIX dev NAME [nodad]      e.g. 10.1.1.2/24, fd00::2/64 (nodad: usable at once)
address del PREFIX dev NAME
address show [[dev] NAME]
";

const ROUTE: &str = "\
route add { default | PREFIX } [via GATEWAY] [dev NAME] [metric N] [src ADDR] [table N|main] [onlink]
route del { default | PREFIX } [via GATEWAY] [dev NAME] [metric N] [table N|main]
route show                       the main table; IPv4 unless -6
";

const NEIGH: &str = "\
neigh show [[dev] NAME]          ARP and NDP entries: address, link, MAC, state
";

const NETNS: &str = "\
netns add NAME                   create /run/netns/NAME (as `ip netns add`; lo stays down)
netns del NAME
netns list
netns exec NAME COMMAND [ARGS]   run COMMAND inside NAME
";

const TUNTAP: &str = "\
tuntap add [dev] NAME mode { tun | tap } [multi_queue] [user U] [group G] [vnet_hdr] [pi]
                                 persistent device, as `ip tuntap add`
tuntap del [dev] NAME [mode { tun | tap }]
tuntap show
";

const SYSCTL: &str = "\
sysctl KEY                       read, e.g. net.ipv4.ip_forward (net.* keys only:
sysctl KEY=VALUE                 the others are not per namespace)
sysctl get KEY | set KEY VALUE | -w KEY=VALUE
";

const PING: &str = "\
ping [-I DEV] [-c COUNT] [-W SECONDS] ADDRESS
                                 ICMP echo over a raw socket (works in a new namespace);
                                 exit status 0 if every echo was answered
";

const TOPOLOGY: &str = "\
apply FILE.toml [--prefix P]     create what the file describes and is missing, check what
                                 exists (a difference is an error), roll back on failure
destroy FILE.toml [--prefix P]   delete every namespace the file names, with their contents
                                 (the prefix goes in front of every namespace name;
                                 see netctl/examples/topology.toml for the schema)
";

const EXAMPLES: &str = "\
Examples (the seed article, with ip replaced by netctl):
  netctl netns add a
  netctl -n a link add veth0 type veth peer name veth1
  netctl -n a addr add 10.1.1.2/24 dev veth0
  netctl -n a link set dev veth0 up
  netctl -n a link add name br0 type bridge
  netctl -n a link set dev veth0 master br0 up mtu 1400
  netctl -n a link set dev veth1 netns b
  netctl tuntap add dev tun0 mode tun multi_queue
";

/// The text for a topic, or the whole grammar.
pub fn text(topic: Option<Topic>) -> String {
    match topic {
        None => format!(
            "{HEAD}\nObjects and commands:\n{}\n{EXAMPLES}",
            [
                LINK, ADDRESS, ROUTE, NEIGH, NETNS, TUNTAP, SYSCTL, PING, TOPOLOGY
            ]
            .iter()
            .flat_map(|section| section.lines())
            .map(|line| format!("  {line}\n"))
            .collect::<String>()
        ),
        Some(topic) => match topic {
            Topic::Link => LINK,
            Topic::Address => ADDRESS,
            Topic::Route => ROUTE,
            Topic::Neigh => NEIGH,
            Topic::Netns => NETNS,
            Topic::Tuntap => TUNTAP,
            Topic::Sysctl => SYSCTL,
            Topic::Ping => PING,
            Topic::Topology => TOPOLOGY,
        }
        .to_string(),
    }
}
