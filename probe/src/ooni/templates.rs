//! The test templates OONI nests inside `test_keys` (`ooni/spec` `data-formats/`):
//! DNS queries (df-002-dnst), TCP connects (df-005-tcpconnect), TLS handshakes
//! (df-006-tlshandshake) and HTTP transactions (df-001-httpt).
//!
//! All `t0`/`t` values are seconds since `measurement_start_time`, taken from a monotonic clock.
//!
//! Every generation of OONI's probes is read, not only the current one: a field that an older
//! version did not write, or wrote as `null`, takes the meaning the template gives it (df-000:
//! "consumers MUST be prepared for any field to be null or missing"). Such fields are `Option`s
//! that are not written when `None`, so that a measurement read and written back gains no field
//! it did not have. Only the `failure` fields, which the templates define as always present and
//! `null` on success, are written as `null`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Bytes that are not valid UTF-8, as OONI encodes them: `{"format":"base64","data":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryData {
    /// Always `"base64"`.
    pub format: String,
    /// Standard base64.
    pub data: String,
}

impl BinaryData {
    /// Encodes raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        use base64::Engine as _;
        BinaryData {
            format: "base64".into(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

/// A body or header value: a string when it is UTF-8, else [`BinaryData`] (df-001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaybeBinary {
    /// Valid UTF-8.
    Text(String),
    /// Anything else.
    Binary(BinaryData),
}

impl MaybeBinary {
    /// Text when `bytes` is UTF-8, base64 otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => MaybeBinary::Text(text.to_string()),
            Err(_) => MaybeBinary::Binary(BinaryData::from_bytes(bytes)),
        }
    }
}

impl Default for MaybeBinary {
    fn default() -> Self {
        MaybeBinary::Text(String::new())
    }
}

/// One DNS lookup (df-002-dnst).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsQuery {
    /// Addresses and names in the answer; `null` on failure.
    pub answers: Option<Vec<DnsAnswer>>,
    /// `getaddrinfo`, `udp`, `doh`, ...; absent in ooniprobe 2.x (Python), which df-002-dnst
    /// reads as `unknown` ([`DnsQuery::engine`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// OONI failure string.
    pub failure: Option<String>,
    /// Raw `EAI_*` code when the system resolver failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub getaddrinfo_error: Option<i64>,
    /// The name looked up.
    pub hostname: String,
    /// `A`, `AAAA`, or `ANY` for getaddrinfo.
    pub query_type: String,
    /// The DNS response message, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_response: Option<String>,
    /// Response code of the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<i64>,
    /// `ip:port` for UDP, the URL for DoH, empty for the system resolver; absent before
    /// 2019-12-29 (df-002-dnst), when `resolver_hostname`/`resolver_port` named a custom one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver_address: Option<String>,
    /// Unused by OONI's current probes; kept for compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver_hostname: Option<String>,
    /// Unused by OONI's current probes; kept for compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver_port: Option<String>,
    /// When the query was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0: Option<f64>,
    /// When this response arrived (or the step failed); absent before the Go engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// `classic`, `depth=N`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Groups events of one transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i64>,
    /// DNS message id, as a Vantage extension: injected answers usually reuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_dns_id: Option<u16>,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DnsQuery {
    /// The engine, `unknown` when the probe did not say (df-002-dnst: "If omitted implies
    /// `unknown`"). ooniprobe 2.x and measurement-kit used the system resolver.
    pub fn engine(&self) -> &str {
        self.engine.as_deref().unwrap_or("unknown")
    }
}

/// One record of a DNS answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// `A`, `AAAA`, `CNAME`, ...
    pub answer_type: String,
    /// ASN of the address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// AS organisation of the address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_org_name: Option<String>,
    /// For `A`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// For `AAAA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// For `CNAME` and `PTR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// TTL in seconds; `null` when the resolver does not tell, absent in some older probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Other fields (e.g. SOA details), kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DnsAnswer {
    /// The address of an `A` or `AAAA` answer.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.ipv4.as_deref().or(self.ipv6.as_deref())?.parse().ok()
    }
}

/// One TCP connect (df-005-tcpconnect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpConnect {
    /// Address connected to.
    pub ip: String,
    /// Port connected to.
    pub port: u16,
    /// Outcome.
    pub status: TcpStatus,
    /// When the SYN went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0: Option<f64>,
    /// When the handshake completed or failed; absent before the Go engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// `classic`, `depth=N`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Groups events of one transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i64>,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Outcome of a TCP connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TcpStatus {
    /// Set by OONI's legacy analysis; absent in what we write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
    /// OONI failure string. Some older probes wrote `false` for "no failure" (df-005-tcpconnect),
    /// read here as `null`.
    #[serde(default, deserialize_with = "failure_or_false")]
    pub failure: Option<String>,
    /// Whether the handshake completed.
    pub success: bool,
}

/// A failure string, or `null`, or the `false` some older probes wrote for `null`
/// (df-005-tcpconnect, Status).
fn failure_or_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Failure {
        Text(String),
        Flag(bool),
    }
    match Option::<Failure>::deserialize(d)? {
        Some(Failure::Text(s)) => Ok(Some(s)),
        Some(Failure::Flag(false)) | None => Ok(None),
        Some(Failure::Flag(true)) => Err(serde::de::Error::custom(
            "invalid failure `true`: expected a failure string, null or false",
        )),
    }
}

/// One TLS handshake (df-006-tlshandshake).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsHandshake {
    /// `tcp`; absent in web_connectivity 0.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `ip:port`; absent in web_connectivity 0.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// IANA cipher suite name; empty on failure.
    pub cipher_suite: String,
    /// OONI failure string.
    pub failure: Option<String>,
    /// ALPN protocol; empty when none.
    pub negotiated_protocol: String,
    /// Whether verification was skipped (never, in Vantage).
    #[serde(default)]
    pub no_tls_verify: bool,
    /// The peer's chain, leaf first, as base64 DER. Recorded even when verification failed.
    pub peer_certificates: Option<Vec<BinaryData>>,
    /// SNI sent.
    pub server_name: String,
    /// When the ClientHello went out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0: Option<f64>,
    /// When the handshake completed or failed.
    pub t: f64,
    /// `classic`, `depth=N`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// `TLSv1.3`, `TLSv1.2`; empty on failure.
    pub tls_version: String,
    /// Groups events of one transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i64>,
    /// The TLS alert received from the peer, if any (Vantage extension), e.g. `handshake_failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_alert: Option<String>,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One HTTP request and its response (df-001-httpt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpTransaction {
    /// `tcp`; absent before web_connectivity 0.5 (df-001-httpt: optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `ip:port` of the connection used; absent before web_connectivity 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// ALPN negotiated for this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    /// OONI failure string. ooniprobe 2.x also wrote the final one as the top-level
    /// `http_experiment_failure`.
    #[serde(default)]
    pub failure: Option<String>,
    /// What we sent.
    pub request: HttpRequest,
    /// What came back; on failure, what came back before it. `null` in ooniprobe 2.x when
    /// nothing came back.
    #[serde(default)]
    pub response: Option<HttpResponse>,
    /// When the request started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t0: Option<f64>,
    /// When the body was read (or the step failed); absent before the Go engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
    /// `classic`, `depth=N`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Groups events of one transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<i64>,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A map that may be written `null` (as the Go engine writes an empty one), read as empty.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, MaybeBinary>, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

impl HttpRequest {
    /// Whether `body` was cut (df-001-httpt: "`false` or omitted otherwise").
    pub fn truncated(&self) -> bool {
        self.body_is_truncated.unwrap_or(false)
    }
}

impl HttpResponse {
    /// Whether the body was cut (df-001-httpt: "`false` or omitted otherwise").
    pub fn truncated(&self) -> bool {
        self.body_is_truncated.unwrap_or(false)
    }

    /// The status code, 0 when none was received or written.
    pub fn status(&self) -> i64 {
        self.code.unwrap_or(0)
    }

    /// The headers in the order received: `headers_list` when the probe wrote it, else the
    /// map `headers` of older probes (one value per name, df-001-httpt).
    pub fn header_pairs(&self) -> Vec<(&str, &MaybeBinary)> {
        match &self.headers_list {
            Some(list) => list.iter().map(|(k, v)| (k.as_str(), v)).collect(),
            None => self.headers.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }
}

/// An HTTP request as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    /// Always empty for GET; `null` in ooniprobe 2.x and in the Go engine's oldest versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<MaybeBinary>,
    /// Whether `body` was cut; absent (meaning `false`, df-001-httpt) before 2019-12-02.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_is_truncated: Option<bool>,
    /// Headers in the order sent; absent before 2019-12-02 (df-001-httpt), when only the map
    /// `headers` was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_list: Option<Vec<(String, MaybeBinary)>>,
    /// Headers as a map (df-001-httpt: the first value of each name).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: BTreeMap<String, MaybeBinary>,
    /// `GET`.
    pub method: String,
    /// Tor details; `is_tor` is false for us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tor: Option<Value>,
    /// `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_transport: Option<String>,
    /// Full URL.
    pub url: String,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An HTTP response as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    /// The body, up to the cap; `null` when none arrived.
    #[serde(default)]
    pub body: Option<MaybeBinary>,
    /// Whether the body was cut at the cap; absent (meaning `false`, df-001-httpt) before
    /// 2019-12-02.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_is_truncated: Option<bool>,
    /// Status code; 0 when none was received, absent in ooniprobe-ios/-android 2.x (0.0.1) when
    /// the request failed before a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// Headers in the order received; absent before 2019-12-02 (df-001-httpt) and `null` from the
    /// Go engine when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_list: Option<Vec<(String, MaybeBinary)>>,
    /// Headers as a map (df-001-httpt: the first value of each name).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub headers: BTreeMap<String, MaybeBinary>,
    /// Bytes of body received (before any cut), a Vantage extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_body_length: Option<u64>,
    /// Lower-case hex SHA-256 of the body bytes received, a Vantage extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_body_sha256: Option<String>,
    /// The page's `<title>`, a Vantage extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_title: Option<String>,
    /// How the response arrived over time, a Vantage extension: the passive throttling
    /// signal (README.md, "Throttling").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_transfer: Option<Transfer>,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a response arrived: times from sending the request, and body progress. A site slowed
/// down by a policer loads, eventually, and OONI records only that it loaded; these samples
/// show how fast, and the test helper records the same from its uncensored network.
///
/// A body still arriving when the exchange's deadline hit is recorded as cut there
/// (`cut_at_deadline`, `cut_ms`): the step's `failure` stays OONI's `generic_timeout_error`, and
/// the samples up to the cut tell a policed page (bytes arriving steadily until the end) from a
/// stalled one (`throttling::passive::SteadyCut`, `docs/scoring.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Milliseconds from sending the request to the response head.
    pub ttfb_ms: u64,
    /// Milliseconds from sending the request to the last body byte read.
    #[serde(default)]
    pub ttlb_ms: Option<u64>,
    /// `[ms after the request, body bytes so far]`, at most every 100 ms and at most 64 of them:
    /// the first 32 of the read and the latest 32 (at least 3.1 s of it), so that both how the
    /// body started and how it was arriving at the end are kept. The last one is where reading
    /// stopped.
    #[serde(default)]
    pub samples: Vec<(u64, u64)>,
    /// Whether the exchange's deadline cut the body read (the step failed with
    /// `generic_timeout_error`); absent when it did not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut_at_deadline: bool,
    /// Milliseconds from sending the request to the cut, when the deadline cut the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_ms: Option<u64>,
}

impl Transfer {
    /// Samples at most this often.
    pub const STEP_MS: u64 = 100;
    /// At most this many samples.
    pub const MAX_SAMPLES: usize = 64;
    /// The first this many samples are kept; later ones slide, the oldest of them dropped.
    pub const HEAD_SAMPLES: usize = 32;
    /// The latest samples always span at least this long (31 steps), unless the read was
    /// shorter: the longest tail a rule on how the body ended may look at.
    pub const TAIL_MS: u64 = (Self::MAX_SAMPLES - Self::HEAD_SAMPLES - 1) as u64 * Self::STEP_MS;

    /// Records that `bytes` body bytes had arrived at `ms`.
    pub fn record(&mut self, ms: u64, bytes: u64) {
        self.ttlb_ms = Some(ms);
        if let Some(last) = self.samples.last()
            && ms < last.0 + Self::STEP_MS
        {
            // Too soon after the last one.
            return;
        }
        self.push(ms, bytes);
    }

    /// Appends a sample; when full, the oldest sample after the first [`Self::HEAD_SAMPLES`]
    /// makes room.
    fn push(&mut self, ms: u64, bytes: u64) {
        if self.samples.len() >= Self::MAX_SAMPLES {
            self.samples.remove(Self::HEAD_SAMPLES);
        }
        self.samples.push((ms, bytes));
    }

    /// Closes the record: the last sample is where reading stopped.
    pub fn finish(&mut self, bytes: u64) {
        if let Some(t) = self.ttlb_ms
            && self.samples.last() != Some(&(t, bytes))
        {
            self.push(t, bytes);
        }
    }

    /// Records that the deadline cut the body read at `ms`.
    pub fn cut(&mut self, ms: u64) {
        self.cut_at_deadline = true;
        self.cut_ms = Some(ms);
    }

    /// Reads shorter than this are timed as this long: below it the clock and the scheduler
    /// dominate, so the rate of a quick read is a lower bound.
    pub const MIN_TIMED_MS: u64 = 50;

    /// Goodput of the body in kbit/s, from the response head to the last byte; `None` for an
    /// empty body. A body read in under [`Self::MIN_TIMED_MS`] gives a lower bound.
    pub fn kbps(&self) -> Option<f64> {
        let (t, bytes) = *self.samples.last()?;
        let ms = t.checked_sub(self.ttfb_ms)?.max(Self::MIN_TIMED_MS);
        (bytes > 0).then(|| bytes as f64 * 8.0 / ms as f64)
    }
}

#[cfg(test)]
mod transfer_tests {
    use super::Transfer;

    #[test]
    fn samples_are_spaced_bounded_and_end_where_reading_stopped() {
        let mut t = Transfer {
            ttfb_ms: 20,
            ..Transfer::default()
        };
        for ms in (30..10_000).step_by(10) {
            t.record(ms, ms * 10);
        }
        t.finish(99_990);
        assert!(
            t.samples.len() <= Transfer::MAX_SAMPLES,
            "{}",
            t.samples.len()
        );
        assert_eq!(t.samples.last(), Some(&(9_990, 99_990)));
        assert!(
            t.samples
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(t.samples[1].0 - t.samples[0].0, Transfer::STEP_MS);
        // 99,990 bytes in 9,970 ms after the head: about 80 kbit/s.
        let kbps = t.kbps().expect("rate");
        assert!((kbps - 80.2).abs() < 0.5, "{kbps}");
        // Too quick to time: a lower bound, as if it had taken 50 ms.
        let mut quick = Transfer::default();
        quick.record(3, 1000);
        quick.finish(1000);
        assert_eq!(quick.kbps(), Some(160.0));
        assert_eq!(Transfer::default().kbps(), None);
    }

    #[test]
    fn the_first_samples_and_the_latest_are_kept_and_a_cut_is_written_only_when_there_is_one() {
        let mut t = Transfer::default();
        for ms in (0..20_000).step_by(100) {
            t.record(ms, ms);
        }
        t.finish(19_900);
        assert_eq!(t.samples.len(), Transfer::MAX_SAMPLES);
        // The start of the read, step by step ...
        assert_eq!(t.samples[Transfer::HEAD_SAMPLES - 1], (3_100, 3_100));
        // ... and its end: the latest samples, step by step, spanning TAIL_MS.
        let tail = &t.samples[Transfer::HEAD_SAMPLES..];
        assert!(
            tail.windows(2)
                .all(|w| w[1].0 - w[0].0 == Transfer::STEP_MS)
        );
        assert_eq!(tail[tail.len() - 1].0 - tail[0].0, Transfer::TAIL_MS);
        assert_eq!(t.samples.last(), Some(&(19_900, 19_900)));

        let json = serde_json::to_value(&t).expect("json");
        assert!(json.get("cut_at_deadline").is_none() && json.get("cut_ms").is_none());
        t.cut(20_000);
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["cut_at_deadline"], true);
        assert_eq!(json["cut_ms"], 20_000);
        let back: Transfer = serde_json::from_value(json).expect("back");
        assert_eq!(back, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_text_or_base64() {
        assert_eq!(
            serde_json::to_string(&MaybeBinary::from_bytes(b"hi")).expect("ser"),
            "\"hi\""
        );
        let bin = MaybeBinary::from_bytes(&[0xff, 0x00]);
        assert_eq!(
            serde_json::to_string(&bin).expect("ser"),
            r#"{"format":"base64","data":"/wA="}"#
        );
        let back: MaybeBinary =
            serde_json::from_str(r#"{"format":"base64","data":"/wA="}"#).expect("de");
        assert_eq!(back, bin);
    }

    #[test]
    fn unknown_fields_survive() {
        let raw = r#"{"ip":"1.2.3.4","port":443,"status":{"failure":null,"success":true},"t":0.5,"x_new":7}"#;
        let tcp: TcpConnect = serde_json::from_str(raw).expect("de");
        assert_eq!(tcp.extra.get("x_new"), Some(&Value::from(7)));
        let back = serde_json::to_value(&tcp).expect("ser");
        assert_eq!(back["x_new"], 7);
    }
}
