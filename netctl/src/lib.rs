//! Linux network virtualization over netlink: namespaces, veth pairs,
//! bridges, TUN/TAP, VXLAN, addresses, routes and sysctls, plus declarative
//! topologies. Issue 2 fills it.
