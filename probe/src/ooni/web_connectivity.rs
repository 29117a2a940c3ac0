//! `web_connectivity` test keys and the control (test helper) messages
//! (`ooni/spec` `nettests/ts-017-web-connectivity.md`; `ooni/probe-cli` `internal/model/th.go`).
//!
//! Every version is read, from ooniprobe 2.x and measurement-kit (0.0.1 to 0.3) to the Go engine
//! (0.4, 0.5): keys a version did not write are `None` and stay unwritten, `null`s the Go engine
//! writes for empty things (`control.tcp_connect`, `control.dns.addrs`) read as `None`, and a
//! control that is an empty object (`{}`, written by measurement-kit beside
//! `control_failure: json_parse_error`) reads as one that measured nothing. The `*_failure` keys
//! are always written, `null` on success, as ts-017 writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::templates::{DnsQuery, HttpTransaction, TcpConnect, TlsHandshake};

/// Name and version we write for this test. The version follows OONI's v0.5 ("LTE") layout of
/// `test_keys`, which is what researchers' tools expect today.
pub const TEST_NAME: &str = "web_connectivity";
/// See [`TEST_NAME`].
pub const TEST_VERSION: &str = "0.5.28";

/// `test_keys` of a `web_connectivity` measurement.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct WebConnectivityTestKeys {
    /// `redirect`: redirects are followed step by step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The resolver the system uses, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_resolver: Option<String>,
    /// Every DNS lookup, first response of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries: Option<Vec<DnsQuery>>,
    /// Every TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_connect: Option<Vec<TcpConnect>>,
    /// Every TLS handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshakes: Option<Vec<TlsHandshake>>,
    /// HTTP transactions, latest first (df-001: a redirect chain is in reverse time order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<HttpTransaction>>,
    /// Responses that arrived after the first one to the same UDP query, each with its arrival
    /// time: the trace of an injector racing the real resolver (OONI's v0.5 key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_dns_duplicate_responses: Option<Vec<DnsQuery>>,
    /// What we asked the test helper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_control_request: Option<ControlRequest>,
    /// What the test helper saw; `null` when there was no control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlResponse>,
    /// Why there is no control.
    #[serde(default)]
    pub control_failure: Option<String>,
    /// Failure of the classic DNS lookup.
    #[serde(default)]
    pub dns_experiment_failure: Option<String>,
    /// `consistent`, `inconsistent`, or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_consistency: Option<String>,
    /// Failure of the final HTTP request (or of the connection it needed).
    #[serde(default)]
    pub http_experiment_failure: Option<String>,
    /// Whether the body lengths of probe and control match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_length_match: Option<bool>,
    /// Ratio of the shorter body to the longer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_proportion: Option<f64>,
    /// Whether uncommon headers match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_match: Option<bool>,
    /// Whether status codes match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code_match: Option<bool>,
    /// Whether titles match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_match: Option<bool>,
    /// `false`, a blocking type (`dns`, `tcp_ip`, `http-failure`, `http-diff`, ...) or `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<Blocking>,
    /// Whether the site is accessible from here; `null` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessible: Option<bool>,
    /// Other fields (`network_events`, `x_doh`, `x_dns_flags`, ...), kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(
    WebConnectivityTestKeys,
    required: [],
    optional: [
        agent,
        client_resolver,
        queries,
        tcp_connect,
        tls_handshakes,
        requests,
        x_dns_duplicate_responses,
        x_control_request,
        control,
        control_failure,
        dns_experiment_failure,
        dns_consistency,
        http_experiment_failure,
        body_length_match,
        body_proportion,
        headers_match,
        status_code_match,
        title_match,
        blocking,
        accessible,
    ],
);

/// OONI's `blocking` key: `false` or a blocking type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Blocking {
    /// `false` (a `true` never appears, but is accepted).
    Flag(bool),
    /// `dns`, `tcp_ip`, `http-failure`, `http-diff`, or Vantage's `tls`.
    Kind(String),
}

/// OONI's `THRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    /// The URL to measure.
    pub http_request: String,
    /// Headers the helper should send.
    #[serde(default)]
    pub http_request_headers: BTreeMap<String, Vec<String>>,
    /// `ip:port` endpoints the probe resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_connect: Option<Vec<String>>,
    /// Whether to try HTTP/3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_quic_enabled: Option<bool>,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// OONI's `THResponse`. Failure strings here use the helper's legacy vocabulary
/// (`dns_name_error`, `dns_server_failure`, `dns_lookup_error`, ...; `ooni/probe-cli`
/// `internal/oohelperd/`, which maps its errors to these older names).
///
/// Every part may be missing (a control of `{}`) and the Go engine writes `null` for an empty
/// `tcp_connect`; [`ControlResponse::http`], [`ControlResponse::dns`] and
/// [`ControlResponse::tcp`] read them with that meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Per endpoint; `null` or absent when the helper connected to nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_connect: Option<BTreeMap<String, ControlTcpConnect>>,
    /// Per endpoint; absent before web_connectivity 0.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_handshake: Option<BTreeMap<String, ControlTlsHandshake>>,
    /// Per endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quic_handshake: Option<Map<String, Value>>,
    /// The final page; absent when the helper's answer was empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<ControlHttpRequest>,
    /// HTTP/3 result, unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http3_request: Option<Value>,
    /// The helper's DNS lookup; absent when the helper's answer was empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<ControlDns>,
    /// Per address: ASN and flags (1 probe, 2 helper, 4 bogon, 8 valid for domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_info: Option<BTreeMap<String, IpInfo>>,
    /// Other fields, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ControlResponse {
    /// The helper's final page, when it reported one.
    pub fn http(&self) -> Option<&ControlHttpRequest> {
        self.http_request.as_ref()
    }

    /// The helper's DNS lookup, when it reported one.
    pub fn dns(&self) -> Option<&ControlDns> {
        self.dns.as_ref()
    }

    /// The helper's connect to `endpoint`, when it tried it.
    pub fn tcp(&self, endpoint: &str) -> Option<&ControlTcpConnect> {
        self.tcp_connect.as_ref()?.get(endpoint)
    }

    /// The addresses the helper resolved; none when it did not say.
    pub fn addrs(&self) -> &[String] {
        self.dns
            .as_ref()
            .and_then(|d| d.addrs.as_deref())
            .unwrap_or_default()
    }

    /// Whether the answer reports nothing at all: no page, no lookup, no connect (the `{}` that
    /// ooniprobe-ios 2.2 wrote beside `control_failure: json_parse_error`).
    pub fn is_empty(&self) -> bool {
        self.http_request.is_none()
            && self.dns.is_none()
            && self.tcp_connect.as_ref().is_none_or(BTreeMap::is_empty)
            && self.tls_handshake.as_ref().is_none_or(BTreeMap::is_empty)
    }
}

/// Control TCP connect outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlTcpConnect {
    /// Success.
    pub status: bool,
    /// Legacy failure string.
    pub failure: Option<String>,
}

/// Control TLS handshake outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlTlsHandshake {
    /// SNI used.
    pub server_name: String,
    /// Success.
    pub status: bool,
    /// Failure string.
    pub failure: Option<String>,
}

/// Control HTTP result; `-1` for `body_length` and `status_code` on failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlHttpRequest {
    /// Body length, `-1` on failure.
    pub body_length: i64,
    /// Alt-Svc h3 endpoint, if any; absent before web_connectivity 0.4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered_h3_endpoint: Option<String>,
    /// Legacy failure string.
    #[serde(default)]
    pub failure: Option<String>,
    /// Page title; absent when the helper's request failed, in older helpers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Response headers; `null` from the Go helper when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Status, `-1` on failure.
    pub status_code: i64,
    /// How the helper's own download arrived (a Vantage extension, hence `x_`:
    /// docs/architecture.md, "What probe and aggregator agree on"): the uncensored speed of the
    /// same page, to compare the probe's with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_transfer: Option<super::Transfer>,
}

/// Control DNS result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlDns {
    /// Legacy failure string.
    #[serde(default)]
    pub failure: Option<String>,
    /// Addresses; `null` from the Go helper when it resolved none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addrs: Option<Vec<String>>,
}

/// Per-address information from the helper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpInfo {
    /// ASN, 0 when unknown.
    pub asn: u32,
    /// Bit mask: 1 resolved by probe, 2 resolved by helper, 4 bogon, 8 valid for the domain.
    pub flags: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_is_false_or_a_kind() {
        let tk: WebConnectivityTestKeys =
            serde_json::from_str(r#"{"blocking":false}"#).expect("false");
        assert_eq!(tk.blocking, Some(Blocking::Flag(false)));
        let tk: WebConnectivityTestKeys =
            serde_json::from_str(r#"{"blocking":"http-diff"}"#).expect("kind");
        assert_eq!(tk.blocking, Some(Blocking::Kind("http-diff".into())));
        let tk: WebConnectivityTestKeys =
            serde_json::from_str(r#"{"blocking":null}"#).expect("null");
        assert_eq!(tk.blocking, None);
    }
}
