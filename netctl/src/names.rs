//! Name rules for interfaces and namespaces, checked before anything reaches
//! the kernel so that the error can say which rule was broken.

use crate::error::Error;

/// Longest interface name: IFNAMSIZ (16) minus the terminating NUL.
pub const IFNAME_MAX: usize = 15;
/// Longest namespace name: a file name under /run/netns (NAME_MAX).
pub const NETNS_NAME_MAX: usize = 255;

/// Checks an interface name the way the kernel's `dev_valid_name` does.
pub fn check_ifname(name: &str) -> Result<(), Error> {
    let bad = |reason| Error::BadName {
        what: "interface",
        input: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > IFNAME_MAX {
        return Err(bad("interface names have at most 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("\".\" and \"..\" are reserved"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(bad("it may not contain '/', ':', NUL or white space"));
    }
    Ok(())
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
    fn interface_names_follow_the_kernel() {
        assert!(check_ifname("veth0").is_ok());
        assert!(check_ifname("a234567890abcde").is_ok());
        let err = check_ifname("a234567890abcdef").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"a234567890abcdef\" is not a valid interface name: interface names have at most 15 bytes"
        );
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
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
