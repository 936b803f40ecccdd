//! The optional client address allowlist (`cyrvaultd_allow`): addresses and
//! networks in CIDR form, space separated. Checked before anything is read from
//! the client; an empty or unset list allows every peer (authentication still
//! applies when a secret is configured).
#![forbid(unsafe_code)]

use std::net::IpAddr;

use crate::cyrus::config::ConfigError;

/// One allowed network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

/// A parsed allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    nets: Vec<Net>,
}

impl AllowList {
    /// Parse `value` (e.g. `127.0.0.1 10.0.0.0/8 ::1`); `file` and `option` name the
    /// setting in errors.
    pub fn parse(value: &str, file: &str, option: &str) -> Result<AllowList, ConfigError> {
        let mut nets = Vec::new();
        for word in value.split_whitespace() {
            let bad = |why: &str| ConfigError::new(file, option, format!("{word:?}: {why}"));
            let (a, p) = match word.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (word, None),
            };
            let addr: IpAddr = a.parse().map_err(|_| bad("not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match p {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| bad("bad prefix length"))?,
            };
            nets.push(Net { addr, prefix });
        }
        Ok(AllowList { nets })
    }

    /// Whether the list is empty (everyone allowed).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `peer` may connect. IPv4-mapped IPv6 peers match IPv4 networks.
    pub fn allows(&self, peer: IpAddr) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        self.nets.iter().any(|n| matches(n, peer))
    }
}

fn matches(net: &Net, peer: IpAddr) -> bool {
    match (net.addr, peer) {
        (IpAddr::V4(n), IpAddr::V4(p)) => {
            let mask = if net.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(net.prefix))
            };
            u32::from(n) & mask == u32::from(p) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(p)) => {
            let mask = if net.prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(net.prefix))
            };
            u128::from(n) & mask == u128::from(p) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_allows_all() {
        let a = AllowList::parse("", "f", "o").unwrap();
        assert!(a.allows(ip("192.0.2.1")));
    }

    #[test]
    fn addresses_and_networks() {
        let a = AllowList::parse("127.0.0.1 10.1.0.0/16 2001:db8::/32", "f", "o").unwrap();
        assert!(a.allows(ip("127.0.0.1")));
        assert!(!a.allows(ip("127.0.0.2")));
        assert!(a.allows(ip("10.1.200.3")));
        assert!(!a.allows(ip("10.2.0.1")));
        assert!(a.allows(ip("2001:db8:1::5")));
        assert!(!a.allows(ip("2001:db9::5")));
        assert!(a.allows(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = AllowList::parse("10.0.0.0/33", "/etc/imapd.conf", "cyrvaultd_allow").unwrap_err();
        assert_eq!(e.option, "cyrvaultd_allow");
        assert!(e.to_string().contains("10.0.0.0/33"));
        assert!(AllowList::parse("example.com", "f", "o").is_err());
    }
}
