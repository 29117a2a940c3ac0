//! Geolocation for whoami from an operator's CSV of prefixes: `prefix,asn,cc`, e.g.
//! `203.0.113.0/24,64500,IT`. The most specific matching prefix wins; an address in no prefix is
//! `AS0` and `ZZ`, OONI's "unknown". (A MaxMind/DB-IP MMDB reader is still to come.)

use std::net::IpAddr;
use std::path::Path;

/// Errors reading a prefix file.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read.
    #[error("cannot read prefixes from {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// A prefix table.
#[derive(Debug, Clone, Default)]
pub struct Prefixes {
    entries: Vec<(IpAddr, u8, u32, String)>,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    let ((n, width), (a, w2)) = (bits(net), bits(ip));
    if width != w2 {
        return false;
    }
    let shift = u32::from(width - len.min(width));
    if shift >= 128 {
        return true;
    }
    (n >> shift) == (a >> shift)
}

impl Prefixes {
    /// Reads `prefix,asn,cc` lines (a header line `prefix,asn,cc` is allowed; `#` starts a
    /// comment). Any malformed line is an error: a wrong table would mislabel every probe.
    pub fn load(path: &Path) -> Result<Prefixes, GeoError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| GeoError::Read {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || (i == 0 && line == "prefix,asn,cc") {
                continue;
            }
            let bad = |reason: &str| GeoError::Line {
                path: p.clone(),
                line: i + 1,
                reason: reason.to_string(),
            };
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [prefix, asn, cc] = fields[..] else {
                return Err(bad("expected prefix,asn,cc"));
            };
            let (net, len) = prefix
                .split_once('/')
                .ok_or_else(|| bad("prefix needs /length"))?;
            let net: IpAddr = net.parse().map_err(|_| bad("bad address"))?;
            let len: u8 = len.parse().map_err(|_| bad("bad prefix length"))?;
            if len > bits(net).1 {
                return Err(bad("prefix length too long"));
            }
            let asn: u32 = asn
                .trim_start_matches("AS")
                .parse()
                .map_err(|_| bad("bad ASN"))?;
            if cc.len() != 2 || !cc.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(bad("bad country code"));
            }
            entries.push((net, len, asn, cc.to_ascii_uppercase()));
        }
        Ok(Prefixes { entries })
    }

    /// (ASN, country) of `ip`: the most specific prefix, else `(0, "ZZ")`.
    pub fn lookup(&self, ip: IpAddr) -> (u32, String) {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.entries
            .iter()
            .filter(|(net, len, _, _)| contains(*net, *len, ip))
            .max_by_key(|(_, len, _, _)| *len)
            .map_or((0, "ZZ".to_string()), |(_, _, asn, cc)| (*asn, cc.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_prefix_wins() {
        let dir = std::env::temp_dir().join(format!("vantage-geo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("p.csv");
        std::fs::write(
            &path,
            "prefix,asn,cc\n127.0.0.0/8,64500,IT\n127.0.0.2/32,AS64501,DE\n::1/128,64502,FR\n",
        )
        .expect("write");
        let p = Prefixes::load(&path).expect("load");
        assert_eq!(
            p.lookup("127.0.0.1".parse().expect("ip")),
            (64500, "IT".into())
        );
        assert_eq!(
            p.lookup("127.0.0.2".parse().expect("ip")),
            (64501, "DE".into())
        );
        assert_eq!(p.lookup("::1".parse().expect("ip")), (64502, "FR".into()));
        assert_eq!(p.lookup("192.0.2.1".parse().expect("ip")), (0, "ZZ".into()));
        std::fs::write(&path, "10.0.0.0/33,1,IT\n").expect("write");
        let err = Prefixes::load(&path).expect_err("bad");
        assert!(
            err.to_string().ends_with("p.csv:1: prefix length too long"),
            "{err}"
        );
    }
}
