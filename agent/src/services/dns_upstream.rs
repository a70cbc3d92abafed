//! The host's resolvers, where the gateway's DNS forwards what is not a network's own name:
//! the `nameserver` lines of dom0's `/etc/resolv.conf` (or the file the agent is told). I/O-free:
//! the caller reads the file.

use std::net::{IpAddr, SocketAddr};

/// Most resolvers used (glibc's `MAXNS`).
pub const MAX_RESOLVERS: usize = 3;

/// The resolvers a `resolv.conf` names, in order, at most [`MAX_RESOLVERS`], port 53. IPv6
/// resolvers are used too; lines that are not `nameserver <address>` are ignored (comments,
/// `search`, `options`, a scoped IPv6 address).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        let sa = SocketAddr::new(addr, 53);
        if !out.contains(&sa) {
            out.push(sa);
        }
        if out.len() == MAX_RESOLVERS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_taken_in_order_and_the_rest_is_ignored() {
        let text = "# generated\nsearch example.org\nnameserver 10.0.0.53\n\
                    nameserver   192.0.2.1 # second\n;nameserver 9.9.9.9\n\
                    nameserver fe80::1%eth0\nnameserver 2001:db8::53\nnameserver 10.0.0.53\n\
                    nameserver 192.0.2.2\noptions ndots:2\n";
        let got: Vec<String> = parse_resolv_conf(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.53:53", "192.0.2.1:53", "[2001:db8::53]:53"]);
        assert!(parse_resolv_conf("").is_empty());
    }
}
