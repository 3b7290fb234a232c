//! Why a packet was dropped: one enum shared by the protocol and the data
//! plane's counters, with the names `ringtun show` prints.

use std::fmt;

/// The reason a packet was dropped (DESIGN.md, "Drop reasons").
///
/// Every rejection in this crate maps to exactly one of these; the data plane
/// keeps one counter per reason, indexed by [`DropReason::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Bad length or type.
    Malformed,
    /// No session with that receiver index.
    UnknownIndex,
    /// AEAD or MAC1 check failed.
    AuthFailed,
    /// Counter seen before, too old for the window, or a stale handshake timestamp.
    Replay,
    /// Session past REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES.
    Expired,
    /// Inner source address not in the sending peer's AllowedIPs.
    DisallowedSource,
    /// Outbound packet with no peer for its destination.
    NoRoute,
    /// The peer has no known endpoint yet.
    NoEndpoint,
    /// Handshake under load without a valid MAC2 (a cookie reply went out instead).
    CookieRequired,
    /// Handshake beyond the per-peer rate limit.
    RateLimited,
    /// VXLAN frame for a VNI this interface does not serve.
    WrongVni,
    /// A bounded queue was full.
    QueueFull,
    /// The kernel socket receive buffer overflowed (`SO_RXQ_OVFL`).
    RcvbufOverflow,
    /// A worker's flow queues were full: the oldest read of the flow
    /// holding the most bytes made room.
    FlowQueueFull,
}

impl DropReason {
    /// Every reason, in [`index`](Self::index) order.
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::UnknownIndex,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::Expired,
        DropReason::DisallowedSource,
        DropReason::NoRoute,
        DropReason::NoEndpoint,
        DropReason::CookieRequired,
        DropReason::RateLimited,
        DropReason::WrongVni,
        DropReason::QueueFull,
        DropReason::RcvbufOverflow,
        DropReason::FlowQueueFull,
    ];

    /// Number of reasons: the length of a per-reason counter array.
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index in `0..COUNT`, for counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The printed name (`ringtun show`, metrics labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownIndex => "unknown_index",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::Expired => "expired",
            DropReason::DisallowedSource => "disallowed_source",
            DropReason::NoRoute => "no_route",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::CookieRequired => "cookie_required",
            DropReason::RateLimited => "rate_limited",
            DropReason::WrongVni => "wrong_vni",
            DropReason::QueueFull => "queue_full",
            DropReason::RcvbufOverflow => "rcvbuf_overflow",
            DropReason::FlowQueueFull => "flow_queue_full",
        }
    }

    /// The reason with this printed name, if any.
    pub fn from_name(name: &str) -> Option<DropReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn index_is_dense_and_matches_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r} has index {} at position {i}", r.index());
        }
        assert_eq!(DropReason::COUNT, 14);
    }

    #[test]
    fn names_are_the_documented_ones_and_round_trip() {
        let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "malformed",
                "unknown_index",
                "auth_failed",
                "replay",
                "expired",
                "disallowed_source",
                "no_route",
                "no_endpoint",
                "cookie_required",
                "rate_limited",
                "wrong_vni",
                "queue_full",
                "rcvbuf_overflow",
                "flow_queue_full"
            ]
        );
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_name(r.as_str()), Some(r));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(DropReason::from_name("nope"), None);
    }
}
