//! OONI's base measurement envelope (`ooni/spec` `data-formats/df-000-base.md`).
//!
//! Field names are OONI's, so that OONI's tools read our data and we read theirs. Every field a
//! consumer might meet as `null` or missing is an `Option` (df-000: "consumers MUST be prepared for
//! any field to be null or missing"), and fields we do not model are kept in `extra`, so reading an
//! OONI measurement and writing it back loses nothing. An optional field that was absent is not
//! written back either (ooniprobe 2.x wrote no `resolver_ip`, some probes no `test_helpers`,
//! miniooni's `example` no `input`), so nothing is added.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// `data_format_version` we write (df-000 section "Data format version").
pub const DATA_FORMAT_VERSION: &str = "0.2.0";

/// The probe address written in every measurement: the real one never leaves the probe
/// (`ooni/probe-cli` `model.DefaultProbeIP`).
pub const SCRUBBED_PROBE_IP: &str = "127.0.0.1";

/// One OONI measurement, generic over its `test_keys`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement<TK> {
    /// Free metadata (platform, architecture, engine_name, ...). Values are usually strings, but
    /// df-000 tells consumers not to assume so.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
    /// `"0.2.0"`.
    pub data_format_version: String,
    /// Which test templates (`dnst`, `httpt`, ...) and versions `test_keys` uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
    /// The URL or other input; `null` for input-less tests, absent in some (miniooni's
    /// `example` of data format 0.3.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// UTC, `"YYYY-MM-DD HH:MM:SS"`.
    pub measurement_start_time: String,
    /// `"AS<n>"`, `"AS0"` when unknown.
    pub probe_asn: Asn,
    /// ISO 3166 alpha-2, `"ZZ"` when unknown.
    pub probe_cc: CountryCode,
    /// Always [`SCRUBBED_PROBE_IP`] in what we write.
    pub probe_ip: String,
    /// AS organisation name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_network_name: Option<String>,
    /// Server-assigned report id; empty or absent for us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_id: Option<String>,
    /// ASN of the resolver the probe uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver_asn: Option<String>,
    /// Address of the resolver the probe uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver_ip: Option<String>,
    /// AS organisation of the resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver_network_name: Option<String>,
    /// `"vantage"` for us.
    pub software_name: String,
    /// Our crate version.
    pub software_version: String,
    /// Test helpers used, e.g. `{"backend": {"address": ..., "type": "https"}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_helpers: Option<Value>,
    /// Test-specific keys.
    pub test_keys: TK,
    /// snake_case test name, e.g. `web_connectivity`.
    pub test_name: String,
    /// Seconds spent measuring this input.
    pub test_runtime: f64,
    /// Start of the whole run, same format as `measurement_start_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_start_time: Option<String>,
    /// Version of the test, e.g. `"0.5.28"`.
    pub test_version: String,
    /// Everything else, kept as it came (e.g. `id`, `options`, pipeline fields, `x_` keys).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(
    Measurement<TK>,
    required: [
        data_format_version,
        measurement_start_time,
        probe_asn,
        probe_cc,
        probe_ip,
        software_name,
        software_version,
        test_keys,
        test_name,
        test_runtime,
        test_version,
    ],
    optional: [
        annotations,
        extensions,
        input,
        probe_network_name,
        report_id,
        resolver_asn,
        resolver_ip,
        resolver_network_name,
        test_helpers,
        test_start_time,
    ],
);

impl<TK> Measurement<TK> {
    /// A measurement as Vantage writes it (df-000-base): started now, the probe address
    /// scrubbed, country and network unknown until the caller sets them.
    pub fn vantage(test_name: &str, test_version: &str, test_keys: TK) -> Self {
        Measurement {
            annotations: default_annotations(),
            data_format_version: DATA_FORMAT_VERSION.into(),
            extensions: None,
            input: None,
            measurement_start_time: ooni_timestamp(SystemTime::now()),
            probe_asn: Asn(0),
            probe_cc: CountryCode::UNKNOWN,
            probe_ip: SCRUBBED_PROBE_IP.into(),
            probe_network_name: None,
            report_id: None,
            resolver_asn: None,
            resolver_ip: None,
            resolver_network_name: None,
            software_name: "vantage".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            test_helpers: None,
            test_keys,
            test_name: test_name.into(),
            test_runtime: 0.0,
            test_start_time: None,
            test_version: test_version.into(),
            extra: Map::new(),
        }
    }
}

/// An autonomous system number, written `"AS<n>"` as OONI does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Asn(pub u32);

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AS{}", self.0)
    }
}

/// Error for a malformed ASN or country code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// Not `AS` followed by a decimal number.
    #[error("invalid ASN {0:?}: expected AS followed by a number, e.g. AS3269")]
    Asn(String),
    /// Not two ASCII letters.
    #[error("invalid country code {0:?}: expected two letters, e.g. IT")]
    CountryCode(String),
}

impl FromStr for Asn {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s
            .strip_prefix("AS")
            .or_else(|| s.strip_prefix("as"))
            .unwrap_or(s);
        digits
            .parse::<u32>()
            .map(Asn)
            .map_err(|_| FieldError::Asn(s.to_string()))
    }
}

impl Serialize for Asn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Asn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// ISO 3166-1 alpha-2 country code, upper case; `ZZ` means unknown (OONI's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// OONI's "unknown or withheld" country.
    pub const UNKNOWN: CountryCode = CountryCode(*b"ZZ");

    /// The two letters.
    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }
}

impl Default for CountryCode {
    fn default() -> Self {
        CountryCode::UNKNOWN
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CountryCode {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Ok(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => Err(FieldError::CountryCode(s.to_string())),
        }
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Formats a wall-clock time as OONI does: UTC, `"YYYY-MM-DD HH:MM:SS"`
/// (`ooni/probe-cli` `model.MeasurementDateFormat`).
pub fn ooni_timestamp(at: SystemTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from(at)
        .format(format)
        .unwrap_or_else(|_| "1970-01-01 00:00:00".to_string())
}

/// The `annotations` a Vantage measurement carries (df-000 section "Annotations").
pub fn default_annotations() -> Map<String, Value> {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    // std's OS names (`linux`, `macos`, `windows`, `freebsd`, ...) are df-000's platform names.
    let platform = std::env::consts::OS;
    let mut map = Map::new();
    map.insert("architecture".into(), architecture.into());
    map.insert("engine_name".into(), "vantage".into());
    map.insert("engine_version".into(), env!("CARGO_PKG_VERSION").into());
    map.insert("platform".into(), platform.into());
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"data_format_version":"0.2.0","measurement_start_time":"2026-01-01 00:00:00","probe_asn":"AS1","probe_cc":"IT","probe_ip":"127.0.0.1","software_name":"x","software_version":"1","test_keys":{},"test_name":"t","test_runtime":0.5,"test_version":"1""#;

    #[test]
    fn unknown_keys_are_kept_and_known_ones_checked() {
        let m: Measurement<Value> = serde_json::from_str(&format!(
            r#"{MINIMAL},"input":null,"x_new":[1,{{"a":2}}]}}"#
        ))
        .expect("parse");
        assert_eq!(m.input, None);
        assert_eq!(m.extra["x_new"], serde_json::json!([1, {"a": 2}]));
        assert!(m.annotations.is_empty());
        let missing = serde_json::from_str::<Measurement<Value>>(r#"{"test_name":"t"}"#)
            .expect_err("missing");
        assert!(
            missing
                .to_string()
                .starts_with("missing field `data_format_version`"),
            "{missing}"
        );
        let twice =
            serde_json::from_str::<Measurement<Value>>(&format!(r#"{MINIMAL},"test_name":"u"}}"#))
                .expect_err("duplicate");
        assert!(
            twice.to_string().starts_with("duplicate field `test_name`"),
            "{twice}"
        );
        let wrong =
            serde_json::from_str::<Measurement<Value>>(&format!(r#"{MINIMAL},"input":7}}"#))
                .expect_err("type");
        assert!(
            wrong.to_string().starts_with("invalid type: integer `7`"),
            "{wrong}"
        );
    }
    use std::time::Duration;

    #[test]
    fn asn_round_trips_as_ooni_string() {
        let asn: Asn = serde_json::from_str("\"AS3269\"").expect("parse");
        assert_eq!(asn, Asn(3269));
        assert_eq!(serde_json::to_string(&asn).expect("ser"), "\"AS3269\"");
        assert!(serde_json::from_str::<Asn>("\"ASX\"").is_err());
    }

    #[test]
    fn country_code_is_two_letters() {
        assert_eq!("it".parse::<CountryCode>().expect("cc").as_str(), "IT");
        let err = "ITA".parse::<CountryCode>().expect_err("three letters");
        assert_eq!(
            err.to_string(),
            "invalid country code \"ITA\": expected two letters, e.g. IT"
        );
        assert!("1T".parse::<CountryCode>().is_err());
    }

    #[test]
    fn timestamp_format() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_707_770_027);
        assert_eq!(ooni_timestamp(at), "2024-02-12 20:33:47");
    }
}
