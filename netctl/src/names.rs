//! Name rules for interfaces and namespaces, checked before anything reaches
//! the kernel so that the error can say which rule was broken.
//!
//! [`check_ifname`] is the workspace's one interface-name rule: pure (no
//! syscall, no privilege), so config parsing and the TUN/TAP opener in
//! dataplane use it as well as every netctl call that names a link.

use crate::error::Error;

/// Longest interface name: IFNAMSIZ (16, linux/if.h) minus the terminating NUL.
pub const IFNAME_MAX: usize = 15;
/// Longest namespace name: a file name under /run/netns (NAME_MAX).
pub const NETNS_NAME_MAX: usize = 255;

/// Why a string is not a Linux interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IfNameError {
    /// The name is empty.
    #[error("empty")]
    Empty,
    /// The name is longer than [`IFNAME_MAX`] bytes.
    #[error("{len} bytes long, the limit is {IFNAME_MAX}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name is `.` or `..`, which would clash in /sys/class/net.
    #[error("`.` and `..` are reserved")]
    Dot,
    /// The name holds `/`, `:`, NUL or an ASCII white-space character.
    #[error("contains {0:?}, and `/`, `:`, NUL and whitespace are not allowed")]
    BadChar(char),
    /// The name holds a character whose UTF-8 encoding contains byte 0xA0,
    /// which the kernel's `isspace()` (lib/ctype.c, Latin-1) counts as a
    /// no-break space.
    #[error(
        "contains {0:?}, whose UTF-8 encoding holds byte 0xa0, white space to the kernel (Latin-1 no-break space)"
    )]
    Latin1Space(char),
}

/// Checks an interface name the way the kernel's `dev_valid_name`
/// (net/core/dev.c) does: 1 to [`IFNAME_MAX`] bytes, not `.` or `..`, and no
/// byte that is `/`, `:` or `isspace()`. NUL is refused too: the kernel
/// reads the name as a C string, so a NUL would silently cut it short.
pub fn check_ifname(name: &str) -> Result<(), IfNameError> {
    if name.is_empty() {
        return Err(IfNameError::Empty);
    }
    if name.len() > IFNAME_MAX {
        return Err(IfNameError::TooLong { len: name.len() });
    }
    if name == "." || name == ".." {
        return Err(IfNameError::Dot);
    }
    for c in name.chars() {
        // The kernel's isspace(): '\t'..='\r' (which includes '\v') and ' '
        // in ASCII, and 0xA0 above it.
        if matches!(c, '/' | ':' | '\0' | '\t'..='\r' | ' ') {
            return Err(IfNameError::BadChar(c));
        }
        if c.encode_utf8(&mut [0; 4]).bytes().any(|b| b == 0xa0) {
            return Err(IfNameError::Latin1Space(c));
        }
    }
    Ok(())
}

/// [`check_ifname`] as netctl's [`Error`], naming the refused input.
pub(crate) fn require_ifname(name: &str) -> Result<(), Error> {
    check_ifname(name).map_err(|reason| Error::BadIfName {
        input: name.to_string(),
        reason,
    })
}

/// Checks a namespace name the way `ip netns add` does: it becomes a file
/// under /run/netns.
pub fn check_netns_name(name: &str) -> Result<(), Error> {
    let bad = |reason| Error::BadName {
        what: "namespace",
        input: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > NETNS_NAME_MAX {
        return Err(bad("namespace names have at most 255 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("\".\" and \"..\" are reserved"));
    }
    if name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(bad("it may not contain '/' or NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn accepts_names_the_kernel_accepts() {
        for name in [
            "rt0",
            "veth0",
            "br-lan",
            "a",
            "wg_site.2",
            "a234567890abcde",
            "é",
            // Control characters other than white space pass dev_valid_name.
            "a\u{1}b",
        ] {
            assert_eq!(check_ifname(name), Ok(()), "{name:?} refused");
        }
    }

    #[test]
    fn rejects_names_the_kernel_refuses() {
        assert_eq!(check_ifname(""), Err(IfNameError::Empty));
        assert_eq!(
            check_ifname("a234567890abcdef"),
            Err(IfNameError::TooLong { len: 16 })
        );
        assert_eq!(check_ifname("."), Err(IfNameError::Dot));
        assert_eq!(check_ifname(".."), Err(IfNameError::Dot));
        for (name, c) in [
            ("a/b", '/'),
            ("eth0:1", ':'),
            ("my tun", ' '),
            ("a\tb", '\t'),
            ("a\nb", '\n'),
            ("a\u{b}b", '\u{b}'),
            ("a\u{c}b", '\u{c}'),
            ("a\rb", '\r'),
            ("a\0", '\0'),
        ] {
            assert_eq!(check_ifname(name), Err(IfNameError::BadChar(c)), "{name:?}");
        }
        // U+00A0 is C2 A0 and U+00E0 is C3 A0: both hold byte 0xA0.
        assert_eq!(
            check_ifname("a\u{a0}b"),
            Err(IfNameError::Latin1Space('\u{a0}'))
        );
        assert_eq!(check_ifname("là"), Err(IfNameError::Latin1Space('à')));
    }

    #[test]
    fn interface_name_errors_say_what_is_wrong() {
        assert_eq!(
            check_ifname(&"x".repeat(20)).map_err(|e| e.to_string()),
            Err("20 bytes long, the limit is 15".to_owned())
        );
        assert_eq!(
            check_ifname("a b").map_err(|e| e.to_string()),
            Err("contains ' ', and `/`, `:`, NUL and whitespace are not allowed".to_owned())
        );
        assert_eq!(
            require_ifname("a234567890abcdef").map_err(|e| e.to_string()),
            Err("\"a234567890abcdef\" is not a valid interface name: 16 bytes long, the limit is 15".to_owned())
        );
    }

    /// `dev_valid_name` (net/core/dev.c) transcribed byte for byte, with
    /// lib/ctype.c's `isspace()`, plus the NUL a C string cannot hold: the
    /// reference `check_ifname` must agree with.
    fn kernel_accepts(name: &[u8]) -> bool {
        let isspace = |b: u8| matches!(b, b'\t'..=b'\r' | b' ' | 0xa0);
        !name.is_empty()
            && name.len() < 16
            && name != b"."
            && name != b".."
            && !name
                .iter()
                .any(|&b| b == b'/' || b == b':' || b == 0 || isspace(b))
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_dev_valid_name(name in "([\\x00-\\x{ff}]|.){0,17}") {
            proptest::prop_assert_eq!(
                check_ifname(&name).is_ok(),
                kernel_accepts(name.as_bytes()),
                "{:?}: {:?}", name, check_ifname(&name)
            );
        }
    }

    #[test]
    fn namespace_names_are_file_names() {
        assert!(check_netns_name("seed-a").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_netns_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_netns_name(&"x".repeat(256)).is_err());
    }
}
