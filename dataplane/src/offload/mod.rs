//! Segmentation offload: the virtio-net header, GSO split of TUN/TAP
//! super-packets into wire-sized segments, and GRO coalescing back.
