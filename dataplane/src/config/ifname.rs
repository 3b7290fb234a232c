//! Linux network interface names, checked the way the kernel checks them.

use std::fmt;
use std::str::FromStr;

/// `IFNAMSIZ` (16, linux/if.h) counts the terminating NUL, so a name holds at most 15 bytes.
pub const IFNAME_MAX_LEN: usize = 15;

/// A valid Linux network interface name (`rt0`, `br-lan`): what `dev_valid_name()` in
/// net/core/dev.c accepts, minus control characters that no tool could print.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

/// Why a string is not a Linux interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IfNameError {
    /// The name is empty.
    #[error("empty")]
    Empty,
    /// The name is longer than [`IFNAME_MAX_LEN`] bytes.
    #[error("{len} bytes long, the limit is {IFNAME_MAX_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name is `.` or `..`, which the kernel refuses (they would clash in /sys/class/net).
    #[error("`.` and `..` are reserved")]
    Dot,
    /// The name holds a character the kernel refuses (`/`, `:`, whitespace) or a control character.
    #[error("contains {0:?}, and `/`, `:`, whitespace and control characters are not allowed")]
    BadChar(char),
}

impl IfName {
    /// Checks `name` against the kernel's rules.
    pub fn new(name: &str) -> Result<Self, IfNameError> {
        if name.is_empty() {
            return Err(IfNameError::Empty);
        }
        if name.len() > IFNAME_MAX_LEN {
            return Err(IfNameError::TooLong { len: name.len() });
        }
        if name == "." || name == ".." {
            return Err(IfNameError::Dot);
        }
        if let Some(c) = name
            .chars()
            .find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(IfNameError::BadChar(c));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = IfNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IfName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_the_kernel_accepts() {
        for name in [
            "rt0",
            "br-lan",
            "a",
            "wg_site.2",
            "x".repeat(15).as_str(),
            "é",
        ] {
            assert_eq!(
                IfName::new(name).map(|n| n.to_string()),
                Ok(name.to_owned())
            );
        }
    }

    #[test]
    fn rejects_names_the_kernel_refuses() {
        assert_eq!(IfName::new(""), Err(IfNameError::Empty));
        assert_eq!(
            IfName::new(&"x".repeat(16)),
            Err(IfNameError::TooLong { len: 16 })
        );
        assert_eq!(IfName::new("."), Err(IfNameError::Dot));
        assert_eq!(IfName::new(".."), Err(IfNameError::Dot));
        assert_eq!(IfName::new("a/b"), Err(IfNameError::BadChar('/')));
        assert_eq!(IfName::new("eth0:1"), Err(IfNameError::BadChar(':')));
        assert_eq!(IfName::new("my tun"), Err(IfNameError::BadChar(' ')));
        assert_eq!(IfName::new("a\tb"), Err(IfNameError::BadChar('\t')));
        assert_eq!(IfName::new("a\0"), Err(IfNameError::BadChar('\0')));
    }

    #[test]
    fn error_says_what_is_wrong() {
        assert_eq!(
            IfName::new(&"x".repeat(20)).map_err(|e| e.to_string()),
            Err("20 bytes long, the limit is 15".to_owned())
        );
        assert_eq!(
            IfName::new("a b").map_err(|e| e.to_string()),
            Err(
                "contains ' ', and `/`, `:`, whitespace and control characters are not allowed"
                    .to_owned()
            )
        );
    }
}
