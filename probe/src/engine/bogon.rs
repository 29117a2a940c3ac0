//! Bogon addresses: ranges that never belong to a public web site.
//!
//! A DNS answer in one of these ranges is a classic sign of tampering (Iran's 10.10.34.34), and a
//! test helper must never connect to one, or anyone could use it to probe its operator's private
//! network. The table is OONI's (`internal/netxlite/bogon.go`; RFC 6890 special-purpose ranges).
//!
//! An IPv6 address can carry an IPv4 address that the network, or the helper's own kernel, turns
//! into IPv4 traffic to it: `::ffff:10.0.0.1` is a connection to 10.0.0.1, and on a network with
//! a NAT64 gateway so is `64:ff9b::a00:1`. Such an address is judged by the IPv4 address it
//! carries (see [`embedded_ipv4`]), so that no spelling of a private address gets past the check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// (network, prefix length), IPv4.
const V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),
    ([10, 0, 0, 0], 8),
    ([100, 64, 0, 0], 10),
    ([127, 0, 0, 0], 8),
    ([169, 254, 0, 0], 16),
    ([172, 16, 0, 0], 12),
    ([192, 0, 0, 0], 24),
    ([192, 0, 2, 0], 24),
    ([192, 168, 0, 0], 16),
    ([198, 18, 0, 0], 15),
    ([198, 51, 100, 0], 24),
    ([203, 0, 113, 0], 24),
    ([224, 0, 0, 0], 4),
    ([240, 0, 0, 0], 4),
];

/// (network, prefix length), IPv6.
const V6: &[([u16; 8], u8)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 0], 128),
    ([0, 0, 0, 0, 0, 0, 0, 1], 128),
    ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
    // IPv4-compatible addresses (RFC 4291 section 2.5.5.1), deprecated: the whole range.
    ([0, 0, 0, 0, 0, 0, 0, 0], 96),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    // Local-use NAT64 prefix (RFC 8215 section 3): where its IPv4 address sits depends on the
    // prefix length the operator chose, and it is never globally reachable, so the whole range.
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
    ([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// Whether `addr` is in a bogon range, or is an IPv6 address carrying an IPv4 bogon.
pub fn is_bogon(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => is_bogon_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_bogon_v4(v4);
            }
            if embedded_ipv4(v6).into_iter().flatten().any(is_bogon_v4) {
                return true;
            }
            let a = u128::from(v6);
            V6.iter().any(|(net, len)| {
                let mask = if *len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(*len))
                };
                a & mask == u128::from(Ipv6Addr::from(*net)) & mask
            })
        }
    }
}

fn is_bogon_v4(v4: Ipv4Addr) -> bool {
    let a = u32::from(v4);
    a == 0xffff_ffff
        || V4.iter().any(|(net, len)| {
            let mask = u32::MAX << (32 - u32::from(*len));
            a & mask == u32::from_be_bytes(*net) & mask
        })
}

/// The IPv4 addresses an IPv6 address carries in a form that sends traffic to them, at most two.
///
/// - IPv4-mapped `::ffff:a.b.c.d` (RFC 4291 section 2.5.5.2): a dual-stack socket connects to
///   `a.b.c.d` itself.
/// - IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765 section 2.1, stateless IP/ICMP translation).
/// - NAT64 with the well-known prefix `64:ff9b::/96` (RFC 6052 sections 2.1 and 2.2, the
///   address in the last 32 bits): the network's NAT64 gateway opens an IPv4 connection to it.
///   Section 3.1 forbids the well-known prefix for non-global IPv4 addresses, so such an address
///   is never legitimate, but a gateway that does not enforce it would carry the connection.
/// - 6to4 `2002:AABB:CCDD::/48` (RFC 3056 section 2, the address in bits 16 to 47): a host
///   with a 6to4 interface tunnels to that IPv4 address directly.
/// - Teredo `2001:0::/32` (RFC 4380 section 4): the server's address in bits 32 to 63 and the
///   client's, with every bit inverted, in the last 32 bits; traffic goes to the client's
///   address through a relay, and qualification traffic to the server's.
///
/// Not recognised, on purpose: ISATAP interface identifiers (RFC 5214 section 6.1), whose IPv4
/// address is only reachable inside the site that owns the IPv6 prefix, and NAT64 with a
/// network-specific prefix (RFC 6052 section 2.2), which cannot be told apart from an ordinary
/// IPv6 address: a test helper behind such a gateway must not be given that prefix as a
/// route to private IPv4 networks (see SECURITY.md).
pub fn embedded_ipv4(v6: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| Some(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => [v4(hi, lo), None],
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => [v4(hi, lo), None],
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => [v4(hi, lo), None],
        [0x2002, hi, lo, ..] => [v4(hi, lo), None],
        [0x2001, 0, server_hi, server_lo, _, _, client_hi, client_lo] => {
            [v4(server_hi, server_lo), v4(!client_hi, !client_lo)]
        }
        _ => [None, None],
    }
}

/// Like [`is_bogon`] for text; OONI counts an unparseable address as a bogon.
pub fn is_bogon_str(addr: &str) -> bool {
    addr.parse::<IpAddr>().map(is_bogon).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bogons() {
        for a in [
            "10.10.34.34",
            "127.0.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "255.255.255.255",
            "nonsense",
        ] {
            assert!(is_bogon_str(a), "{a}");
        }
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1::1",
            "172.32.0.1",
        ] {
            assert!(!is_bogon_str(a), "{a}");
        }
    }

    #[test]
    fn ipv6_forms_of_private_ipv4_addresses_are_bogons() {
        for a in [
            // NAT64, well-known prefix (RFC 6052): 127.0.0.1, 10.0.0.1, 192.168.1.1, 169.254.169.254.
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::c0a8:101",
            "64:ff9b::a9fe:a9fe",
            // Local-use NAT64 prefix (RFC 8215), whatever it carries.
            "64:ff9b:1::808:808",
            "64:ff9b:1:ffff::1",
            // IPv4-mapped and IPv4-translated.
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::ffff:0:a00:1",
            // IPv4-compatible, deprecated: all of it.
            "::7f00:1",
            "::808:808",
            // 6to4 (RFC 3056): 2002:0a00:0001::/48 is 10.0.0.1's.
            "2002:a00:1::1",
            "2002:7f00:1:abcd::1",
            "2002:c0a8:101::",
            // Teredo (RFC 4380): a private server, or a private client (inverted bits).
            "2001:0:a00:1::1",
            "2001:0:808:808:0:0:f5ff:fffe",
        ] {
            assert!(is_bogon_str(a), "{a} carries a private IPv4 address");
        }
        for a in [
            // The same forms carrying public addresses reach public hosts.
            "64:ff9b::808:808",
            "64:ff9b::5db8:d822",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            // Teredo: server 8.8.8.8, client 93.184.216.34 (inverted: a247:27dd).
            "2001:0:808:808::a247:27dd",
            // Ordinary global addresses that merely look similar.
            "64:ff9c::a00:1",
            "2003:a00:1::1",
            "2001:4860::a00:1",
        ] {
            assert!(!is_bogon_str(a), "{a} is public");
        }
    }

    #[test]
    fn embedded_addresses() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().expect("v6");
        let v4 = |s: &str| Some(s.parse::<Ipv4Addr>().expect("v4"));
        assert_eq!(embedded_ipv4(v6("64:ff9b::a00:1")), [v4("10.0.0.1"), None]);
        assert_eq!(
            embedded_ipv4(v6("2002:c000:204::1")),
            [v4("192.0.2.4"), None]
        );
        // RFC 4380 section 4's example: server 65.54.227.120, client 192.0.2.45.
        assert_eq!(
            embedded_ipv4(v6("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            [v4("65.54.227.120"), v4("192.0.2.45")]
        );
        assert_eq!(embedded_ipv4(v6("2606:2800:220:1::1")), [None, None]);
    }
}
