//! VXLAN (RFC 7348) for the L2 mode: the 8-byte header and the learned
//! MAC → remote VTEP forwarding table.

mod fdb;
mod header;

pub use fdb::{Fdb, Learned, MacAddr};
pub use header::{
    HEADER_LEN, HEADROOM, Packet, Repr, UDP_PORT, Vni, VniError, VxlanError, parse_frame,
};
