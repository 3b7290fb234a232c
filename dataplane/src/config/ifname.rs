//! Linux network interface names in a configuration, checked by netctl's one
//! rule ([`netctl::names::check_ifname`], the kernel's `dev_valid_name`).

use std::fmt;
use std::str::FromStr;

use netctl::names::{IfNameError, check_ifname};

/// A valid Linux network interface name (`rt0`, `br-lan`): what
/// [`check_ifname`] accepts. A type of its own so that a configuration cannot
/// hold an unchecked name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

impl IfName {
    /// Checks `name` against the kernel's rules.
    pub fn new(name: &str) -> Result<Self, IfNameError> {
        check_ifname(name)?;
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
    fn if_name_gives_netctls_verdict() {
        // The rules themselves are pinned in netctl::names; here, that IfName
        // neither adds nor drops one (the last two are where the old rule of
        // this file and the kernel's differed).
        for name in [
            "rt0",
            "",
            "x".repeat(16).as_str(),
            "..",
            "a:b",
            "là",
            "a\u{1}b",
        ] {
            assert_eq!(
                IfName::new(name).map(|n| n.to_string()),
                check_ifname(name).map(|()| name.to_owned()),
                "{name:?}"
            );
        }
    }
}
