//! The local addresses connections are opened from (`--source-addrs`).
//!
//! One source address offers about 28,000 ephemeral ports (Linux's default
//! `ip_local_port_range`), and a closed connection keeps its port in
//! TIME_WAIT for a minute; a reconnect storm of 100,000 devices needs twice
//! that many ports at once. Every address of 127.0.0.0/8 is local on Linux,
//! so spreading the connections round-robin over a few of them keeps the
//! simulator clear of the ephemeral-port limit.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use anyhow::{Context, bail};

/// Most addresses one `--source-addrs` value may name (a range typo such as
/// `127.0.0.2-127.9.0.0` should fail, not allocate millions).
pub const MAX_ADDRS: usize = 65_536;

/// The source addresses, used round-robin; empty means "let the OS choose".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAddrs(Vec<IpAddr>);

impl SourceAddrs {
    /// The address connection `i` binds to (None: the OS chooses).
    pub fn for_connection(&self, i: usize) -> Option<IpAddr> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0[i % self.0.len()])
        }
    }

    /// How many addresses there are (0: the OS chooses).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the OS chooses the source address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The addresses.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }
}

impl FromStr for SourceAddrs {
    type Err = anyhow::Error;

    /// `any`, or a comma-separated list whose items are addresses
    /// (`127.0.0.2`, `::1`) or inclusive IPv4 ranges (`127.0.0.2-127.0.0.33`).
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("any") {
            return Ok(SourceAddrs(Vec::new()));
        }
        let mut addrs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('-') {
                Some((first, last)) => {
                    let first: Ipv4Addr = first
                        .trim()
                        .parse()
                        .with_context(|| format!("{item:?}: ranges are of IPv4 addresses"))?;
                    let last: Ipv4Addr = last
                        .trim()
                        .parse()
                        .with_context(|| format!("{item:?}: ranges are of IPv4 addresses"))?;
                    let (first, last) = (u32::from(first), u32::from(last));
                    if last < first {
                        bail!("{item:?}: the range ends before it starts");
                    }
                    let count = usize::try_from(last - first)
                        .ok()
                        .and_then(|n| n.checked_add(1))
                        .filter(|&n| n.saturating_add(addrs.len()) <= MAX_ADDRS);
                    if count.is_none() {
                        bail!("{item:?}: more than {MAX_ADDRS} addresses");
                    }
                    addrs.extend((first..=last).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
                }
                None => {
                    let addr: IpAddr = item
                        .parse()
                        .with_context(|| format!("{item:?} is not an IP address"))?;
                    addrs.push(addr);
                }
            }
            if addrs.len() > MAX_ADDRS {
                bail!("more than {MAX_ADDRS} addresses");
            }
        }
        if addrs.is_empty() {
            bail!("no address given (use `any` to let the OS choose)");
        }
        Ok(SourceAddrs(addrs))
    }
}

impl fmt::Display for SourceAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => f.write_str("any"),
            [one] => write!(f, "{one}"),
            [first, .., last] => write!(f, "{first}..{last} ({} addresses)", self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_expand_in_order() -> anyhow::Result<()> {
        let addrs: SourceAddrs = "127.0.0.2-127.0.0.4, 127.0.1.9,::1".parse()?;
        let expected: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.1.9", "::1"]
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, _>>()?;
        assert_eq!(addrs.addrs(), expected.as_slice());
        assert_eq!(addrs.for_connection(0), Some(expected[0]));
        assert_eq!(addrs.for_connection(6), Some(expected[1]), "round-robin");
        // A range across an octet boundary.
        let wide: SourceAddrs = "127.0.0.254-127.0.1.1".parse()?;
        assert_eq!(wide.len(), 4);
        assert_eq!(wide.to_string(), "127.0.0.254..127.0.1.1 (4 addresses)");
        Ok(())
    }

    #[test]
    fn any_lets_the_os_choose() -> anyhow::Result<()> {
        let any: SourceAddrs = "any".parse()?;
        assert!(any.is_empty());
        assert_eq!(any.for_connection(3), None);
        assert_eq!(any.to_string(), "any");
        Ok(())
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "",
            "127.0.0.9-127.0.0.2",
            "localhost",
            "::1-::3",
            "10.0.0.0-10.255.255.255",
        ] {
            assert!(bad.parse::<SourceAddrs>().is_err(), "{bad:?} accepted");
        }
    }
}
