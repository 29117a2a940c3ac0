//! Bogon addresses: ranges that never belong to a public web site.
//!
//! A DNS answer in one of these ranges is a classic sign of tampering (Iran's 10.10.34.34), and a
//! test helper must never connect to one, or anyone could use it to probe its operator's private
//! network. The table is OONI's (`internal/netxlite/bogon.go`; RFC 6890 special-purpose ranges).

use std::net::IpAddr;

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
    ([0, 0, 0, 0, 0, 0, 0, 0], 96),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    ([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// Whether `addr` is in a bogon range.
pub fn is_bogon(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let a = u32::from(v4);
            a == 0xffff_ffff
                || V4.iter().any(|(net, len)| {
                    let mask = u32::MAX << (32 - u32::from(*len));
                    a & mask == u32::from_be_bytes(*net) & mask
                })
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_bogon(IpAddr::V4(v4));
            }
            let a = u128::from(v6);
            V6.iter().any(|(net, len)| {
                let mask = if *len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(*len))
                };
                a & mask == u128::from(std::net::Ipv6Addr::from(*net)) & mask
            })
        }
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
}
