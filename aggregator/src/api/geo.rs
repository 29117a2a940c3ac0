//! Geolocation for whoami: the caller's address is looked up, answered as `AS<n>` and a
//! country, and dropped: no table or log holds a client IP (SECURITY.md, "A measurement cannot
//! carry a volunteer's address into the public record").
//!
//! Two sources, as operators have them:
//! - MaxMind DB files (`--geoip`, repeatable): an ASN database (GeoLite2-ASN, DB-IP ASN Lite:
//!   `autonomous_system_number`) and a country database (GeoLite2-Country or -City, DB-IP
//!   Country Lite: `country.iso_code`). Each answer comes from the first file that has it.
//! - A CSV of prefixes (`--prefixes`): `prefix,asn,cc`, e.g. `203.0.113.0/24,64500,IT`; the
//!   most specific matching prefix wins.
//!
//! An address nothing knows is `AS0` and `ZZ`, OONI's "unknown".

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

/// Errors opening a MaxMind DB file.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {path} as a MaxMind DB")]
pub struct MmdbError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: maxminddb::MaxMindDbError,
}

/// Where whoami's answers come from.
#[derive(Debug, Default)]
pub enum Geo {
    /// Nothing configured: everyone is `AS0`, `ZZ`.
    #[default]
    Unknown,
    /// An operator's prefix table.
    Prefixes(Prefixes),
    /// MaxMind DB files, in the order given.
    Mmdb(Vec<Mmdb>),
}

impl Geo {
    /// (ASN, country) of `ip`; 0 and `ZZ` for what no source knows.
    pub fn lookup(&self, ip: IpAddr) -> (u32, String) {
        match self {
            Geo::Unknown => (0, "ZZ".into()),
            Geo::Prefixes(p) => p.lookup(ip),
            Geo::Mmdb(files) => {
                let mut asn = None;
                let mut cc = None;
                for f in files {
                    let record = f.record(ip);
                    asn = asn.or(record.autonomous_system_number);
                    cc = cc.or(record
                        .country
                        .and_then(|c| c.iso_code)
                        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
                        .map(|c| c.to_ascii_uppercase()));
                }
                (asn.unwrap_or(0), cc.unwrap_or_else(|| "ZZ".into()))
            }
        }
    }
}

/// The fields whoami reads from any MaxMind DB record; the rest is skipped.
#[derive(Debug, Default, serde::Deserialize)]
struct Record<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    country: Option<Country<'a>>,
}

#[derive(Debug, serde::Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

/// One MaxMind DB file, read into memory (GeoLite2-ASN is about 10 MB, -Country about 8 MB).
pub struct Mmdb {
    reader: maxminddb::Reader<Vec<u8>>,
    path: String,
}

impl std::fmt::Debug for Mmdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mmdb({}, {})", self.path, self.database_type())
    }
}

impl Mmdb {
    /// Opens and checks the file's metadata.
    pub fn open(path: &Path) -> Result<Mmdb, MmdbError> {
        let reader = maxminddb::Reader::open_readfile(path).map_err(|source| MmdbError {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Mmdb {
            reader,
            path: path.display().to_string(),
        })
    }

    /// The `database_type` from the file's metadata, e.g. `GeoLite2-ASN`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The record for `ip`; empty when the file has none (or cannot hold `ip`: an IPv6 address
    /// in an IPv4-only file). A corrupt record is treated as missing, not as an error for the
    /// caller, whose request has nothing to do with it.
    fn record(&self, ip: IpAddr) -> Record<'_> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match self
            .reader
            .lookup(ip)
            .and_then(|r| r.decode::<Record<'_>>())
        {
            Ok(Some(r)) => r,
            Ok(None) => Record::default(),
            Err(e) => {
                tracing::warn!("{}: unreadable record: {e}", self.path);
                Record::default()
            }
        }
    }
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
    use vantage_fixtures::mmdb::{MmdbWriter, asn_record, country_record};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn maxmind_files_answer_asn_and_country_from_the_first_file_that_knows() {
        let dir = std::env::temp_dir().join(format!("vantage-mmdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (asn, country) = (dir.join("asn.mmdb"), dir.join("country.mmdb"));
        MmdbWriter::new("GeoLite2-ASN")
            .insert(ip("198.51.100.0"), 24, asn_record(64500, "Example Net"))
            .insert(
                ip("198.51.100.128"),
                25,
                asn_record(64501, "Example Mobile"),
            )
            .insert(ip("2001:db8::"), 32, asn_record(64502, "Example v6"))
            .write(&asn);
        MmdbWriter::new("GeoLite2-Country")
            .insert(ip("198.51.100.0"), 24, country_record("ir"))
            .insert(ip("2001:db8::"), 32, country_record("TR"))
            .write(&country);
        let a = Mmdb::open(&asn).expect("asn db");
        assert_eq!(a.database_type(), "GeoLite2-ASN");
        let geo = Geo::Mmdb(vec![a, Mmdb::open(&country).expect("country db")]);
        assert_eq!(geo.lookup(ip("198.51.100.7")), (64500, "IR".into()));
        assert_eq!(geo.lookup(ip("198.51.100.200")), (64501, "IR".into()));
        assert_eq!(geo.lookup(ip("::ffff:198.51.100.7")), (64500, "IR".into()));
        assert_eq!(geo.lookup(ip("2001:db8::1")), (64502, "TR".into()));
        assert_eq!(geo.lookup(ip("192.0.2.1")), (0, "ZZ".into()));

        // A truncated or foreign file is refused at start, naming it.
        let bytes = std::fs::read(&asn).expect("read");
        std::fs::write(&asn, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = Mmdb::open(&asn).expect_err("truncated");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot open {} as a MaxMind DB", asn.display())),
            "{err}"
        );
        std::fs::write(&asn, "prefix,asn,cc\n").expect("csv");
        assert!(Mmdb::open(&asn).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

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
