//! The probe's side: the request it sends ([`request_for`]), the call ([`call`]), and the
//! `control_failure` strings for a helper that refused, failed, or answered with a control that
//! measured nothing of the site.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::Map;
use url::Url;

use super::{CALL_TIMEOUT, MAX_TCP_CONNECT};
use crate::engine::bogon::is_bogon;
use crate::engine::http::BROWSER_HEADERS;
use crate::engine::{EngineConfig, TlsContext, Trace, client};
use crate::ooni::{ControlRequest, ControlResponse};

/// The request a probe sends for `url` with the endpoints it resolved, the first
/// [`MAX_TCP_CONNECT`] of them.
pub fn request_for(url: &Url, endpoints: &[SocketAddr]) -> ControlRequest {
    ControlRequest {
        http_request: url.to_string(),
        http_request_headers: BROWSER_HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect(),
        // No more than a helper accepts (ours refuses longer lists).
        tcp_connect: Some(
            endpoints
                .iter()
                .take(MAX_TCP_CONNECT)
                .map(ToString::to_string)
                .collect(),
        ),
        x_quic_enabled: Some(false),
        extra: Map::new(),
    }
}

/// Calls the helper at `helper` and returns its answer, or the failure string for
/// `control_failure`.
pub async fn call(
    helper: &Url,
    request: &ControlRequest,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
) -> Result<ControlResponse, String> {
    let body = serde_json::to_vec(request).map_err(|e| format!("unknown_failure: {e}"))?;
    let trace = Trace::new();
    let mut call = client::Call::post(helper, body, "application/json", "application/json");
    call.timeout = CALL_TIMEOUT;
    call.body_cap = 16 << 20;
    let reply = client::send(call, config, tls_ctx, &trace)
        .await
        .map_err(|e| e.failure().to_string())?;
    if reply.status != 200 {
        return Err(refused_or_failed(reply.status, &reply.body));
    }
    // `json_parse_error` is OONI's failure for an answer that is not the JSON we expect. Old
    // measurements are read without a page or a lookup in their control; a helper answering
    // now must give both.
    serde_json::from_slice::<ControlResponse>(&reply.body)
        .ok()
        .filter(|c| c.http_request.is_some() && c.dns.is_some())
        .ok_or_else(|| "json_parse_error".to_string())
}

/// Start of `control_failure` when the helper answered a 4xx: it would not measure this
/// request (a private address, a scan-like list, a URL it cannot measure).
pub const REFUSED: &str = "unknown_failure: test helper refused";

/// Start of `control_failure` when the helper answered 429 or a 5xx: busy, rate-limited or
/// broken; the same request may work later.
pub const FAILED: &str = "unknown_failure: test helper failed";

/// Start of `control_failure` for an answer that is well-formed but measured nothing of the
/// site ([`unusable`]).
pub const UNUSABLE: &str = "unknown_failure: test helper control unusable";

/// `control_failure` for a helper that answered `status`, with what it said (`{"error": ...}`,
/// as the aggregator answers) cut to one short line. OONI's probe also records any status but
/// 200 as a control failure (`webconnectivitylte/control.go`); the text is ours, prefixed
/// `unknown_failure:` as OONI writes failures it does not classify (df-007).
fn refused_or_failed(status: u16, body: &[u8]) -> String {
    let said = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .map(|e| format!(": {}", crate::printable::one_line(&e, 300)))
        .unwrap_or_default();
    let kind = if status == 429 || status >= 500 {
        FAILED
    } else {
        REFUSED
    };
    format!("{kind} (HTTP {status}){said}")
}

/// Why a control answer that parsed still measured nothing of the site, or `None` when it can
/// be compared with the probe's. A measurement keeps such a control with `control_failure` set
/// (OONI's `control_failure` test key, ts-017's example output: set, it says the control is
/// not to be used, whatever `control` holds), and scoring treats it as no control
/// (`docs/scoring.md`, "When the helper refuses or fails").
///
/// Two shapes are caught:
/// - every address the helper had for the host is private or otherwise non-public, it
///   connected to none of them, and its HTTP request failed: that failure is the helper's own
///   refusal (this helper answered so before it answered 403, and a helper without the check
///   may still do so);
/// - an HTTP result with neither a failure nor a status (a partial answer).
pub fn unusable(control: &ControlResponse) -> Option<String> {
    let Some(http) = control.http() else {
        return Some(format!("{UNUSABLE}: its answer has no HTTP result"));
    };
    if http.failure.is_none() && http.status_code <= 0 {
        return Some(format!(
            "{UNUSABLE}: its HTTP result has neither a page nor a failure (status {})",
            http.status_code
        ));
    }
    let addrs: Vec<IpAddr> = control
        .addrs()
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let all_bogons = !addrs.is_empty()
        && addrs.len() == control.addrs().len()
        && addrs.iter().all(|ip| is_bogon(*ip));
    let tried = |ip: &IpAddr| {
        control
            .tcp_connect
            .iter()
            .flat_map(BTreeMap::keys)
            .filter_map(|e| e.parse::<SocketAddr>().ok())
            .any(|e| e.ip() == *ip)
    };
    if http.failure.is_some()
        && control.dns().is_some_and(|d| d.failure.is_none())
        && all_bogons
        && !addrs.iter().any(tried)
    {
        let list: Vec<String> = addrs.iter().take(8).map(ToString::to_string).collect();
        return Some(format!(
            "{UNUSABLE}: it did not connect to {}, a private or other non-public address, so its HTTP failure ({}) is its own refusal",
            list.join(","),
            http.failure.as_deref().unwrap_or_default()
        ));
    }
    None
}

/// One line for a volunteer on why there is no usable control, from `control_failure`.
pub fn describe(control_failure: &str) -> String {
    if control_failure == crate::web_connectivity::NO_TEST_HELPER {
        return "no test helper was configured (use --aggregator)".into();
    }
    if control_failure == "json_parse_error" {
        return "the test helper's answer was not a control (json_parse_error)".into();
    }
    for prefix in [REFUSED, FAILED, UNUSABLE] {
        if control_failure.starts_with(prefix) {
            return control_failure
                .trim_start_matches("unknown_failure: ")
                .replacen(
                    "test helper control unusable:",
                    "the test helper's control is unusable:",
                    1,
                )
                .replacen("test helper ", "the test helper ", 1);
        }
    }
    format!("the test helper could not be reached ({control_failure})")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ooni::{ControlDns, ControlHttpRequest, ControlTcpConnect};
    use crate::th::{HelperConfig, plan_for};

    #[test]
    fn request_carries_browser_headers_and_endpoints() {
        let url = Url::parse("https://example.org/").expect("url");
        let r = request_for(&url, &["93.184.216.34:443".parse().expect("addr")]);
        assert_eq!(r.http_request, "https://example.org/");
        assert_eq!(
            r.tcp_connect.as_deref(),
            Some(&["93.184.216.34:443".to_string()][..])
        );
        assert!(r.http_request_headers.contains_key("User-Agent"));
    }

    #[test]
    fn refusals_and_failures_become_distinct_control_failures() {
        let refused = refused_or_failed(
            403,
            br#"{"error":"this test helper does not connect to private addresses"}"#,
        );
        assert_eq!(
            refused,
            "unknown_failure: test helper refused (HTTP 403): this test helper does not connect to private addresses"
        );
        let scan = refused_or_failed(400, br#"{"error":"lists 33 tcp_connect endpoints"}"#);
        assert!(scan.starts_with(REFUSED), "{scan}");
        for status in [429, 500, 502, 503] {
            let f = refused_or_failed(status, br#"{"error":"too many requests"}"#);
            assert!(f.starts_with(FAILED), "{status}: {f}");
            assert!(f.contains(&format!("(HTTP {status})")), "{f}");
        }
        // A body that is not the aggregator's JSON adds nothing; a hostile one is cut short and
        // kept on one line.
        assert_eq!(
            refused_or_failed(404, b"<html>not found</html>"),
            "unknown_failure: test helper refused (HTTP 404)"
        );
        let long = format!(r#"{{"error":"line\nbreak{}"}}"#, "x".repeat(5000));
        let cut = refused_or_failed(403, long.as_bytes());
        assert!(!cut.contains('\n'), "{cut}");
        assert!(cut.len() < 400, "{}", cut.len());
        // Every kind reads as one line for a volunteer.
        assert_eq!(
            describe(&refused),
            "the test helper refused (HTTP 403): this test helper does not connect to private addresses"
        );
        assert_eq!(
            describe("connection_refused"),
            "the test helper could not be reached (connection_refused)"
        );
        assert_eq!(
            describe("generic_timeout_error"),
            "the test helper could not be reached (generic_timeout_error)"
        );
        assert!(describe("json_parse_error").contains("not a control"));
        assert!(describe(crate::web_connectivity::NO_TEST_HELPER).contains("--aggregator"));
        assert!(
            describe(&refused_or_failed(503, b"")).starts_with("the test helper failed (HTTP 503)")
        );
    }

    /// A fake helper on loopback answering every request with `reply` (status, body).
    async fn fake_helper(status: u16, body: &str) -> (Url, vantage_fixtures::http::HttpFixture) {
        let fixture =
            vantage_fixtures::http::HttpFixture::fixed(vantage_fixtures::http::Response {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.as_bytes().to_vec(),
            })
            .await;
        let url = Url::parse(&format!("http://{}/api/v1/th", fixture.addr)).expect("url");
        (url, fixture)
    }

    #[tokio::test]
    async fn the_client_records_each_way_a_helper_refuses_or_fails() {
        let tls = TlsContext::new(vec![]).expect("tls");
        let mut config = EngineConfig::default();
        config.timeouts.http = Duration::from_secs(2);
        let request = request_for(&Url::parse("http://127.0.0.1:9/").expect("url"), &[]);
        let cases = [
            (
                403,
                r#"{"error":"private"}"#,
                "unknown_failure: test helper refused (HTTP 403): private",
            ),
            (
                400,
                r#"{"error":"malformed"}"#,
                "unknown_failure: test helper refused (HTTP 400): malformed",
            ),
            (429, "{}", "unknown_failure: test helper failed (HTTP 429)"),
            (
                503,
                r#"{"error":"busy"}"#,
                "unknown_failure: test helper failed (HTTP 503): busy",
            ),
            (
                500,
                "oops",
                "unknown_failure: test helper failed (HTTP 500)",
            ),
            (200, "not json", "json_parse_error"),
            (200, r#"{"tcp_connect":{}}"#, "json_parse_error"),
        ];
        for (status, body, want) in cases {
            let (helper, _fixture) = fake_helper(status, body).await;
            let got = call(&helper, &request, &config, &tls)
                .await
                .expect_err("no control");
            assert_eq!(got, want, "{status} {body}");
        }
        // Unreachable: nothing listens.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let helper = Url::parse(&format!("http://{closed}/api/v1/th")).expect("url");
        let got = call(&helper, &request, &config, &tls)
            .await
            .expect_err("unreachable");
        assert_eq!(got, "connection_refused");
    }

    /// A control answer as this helper writes it for a URL at `ip`, that failed with `failure`.
    fn control_at(ip: &str, tried: bool, failure: Option<&str>) -> ControlResponse {
        let mut tcp_connect = BTreeMap::new();
        if tried {
            tcp_connect.insert(
                format!("{ip}:80"),
                ControlTcpConnect {
                    status: false,
                    failure: Some("connection_refused_error".into()),
                },
            );
        }
        ControlResponse {
            tcp_connect: Some(tcp_connect),
            tls_handshake: Some(BTreeMap::new()),
            quic_handshake: None,
            http_request: Some(ControlHttpRequest {
                body_length: -1,
                discovered_h3_endpoint: None,
                failure: failure.map(str::to_string),
                title: Some(String::new()),
                headers: Some(BTreeMap::new()),
                status_code: if failure.is_some() { -1 } else { 200 },
                x_transfer: None,
            }),
            http3_request: None,
            dns: Some(ControlDns {
                failure: None,
                addrs: Some(vec![ip.to_string()]),
            }),
            ip_info: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn a_control_that_measured_nothing_is_unusable() {
        // What this helper answered for a private address before it answered 403.
        let old = control_at("127.0.0.1", false, Some("dns_lookup_error"));
        let why = unusable(&old).expect("unusable");
        assert!(why.starts_with(UNUSABLE), "{why}");
        assert!(why.contains("127.0.0.1"), "{why}");
        assert!(
            describe(&why).starts_with("the test helper's control is unusable"),
            "{why}"
        );
        let v6 = control_at("fd00::1", false, Some("unknown_error"));
        assert!(unusable(&v6).is_some());
        // A lab helper that tried the address and failed measured the site: it is down.
        assert_eq!(
            unusable(&control_at(
                "127.0.0.1",
                true,
                Some("connection_refused_error")
            )),
            None
        );
        // A public address that failed for the helper is the site's failure, not the helper's.
        assert_eq!(
            unusable(&control_at(
                "93.184.216.34",
                false,
                Some("generic_timeout_error")
            )),
            None
        );
        // A page from a private address (a lab) is a control.
        assert_eq!(unusable(&control_at("127.0.0.1", false, None)), None);
        // A partial answer: no failure and no page.
        let mut partial = control_at("93.184.216.34", false, None);
        let http = partial.http_request.as_mut().expect("http");
        http.status_code = -1;
        assert!(
            unusable(&partial)
                .expect("partial")
                .contains("neither a page nor a failure")
        );
        if let Some(http) = partial.http_request.as_mut() {
            http.status_code = 0;
        }
        assert!(unusable(&partial).is_some());
    }

    #[test]
    fn the_probe_never_lists_more_than_a_helper_accepts() {
        let url = Url::parse("https://example.org/").expect("url");
        let many: Vec<SocketAddr> = (0..100u16)
            .map(|p| SocketAddr::from(([93, 184, 216, 34], 1000 + p)))
            .collect();
        let r = request_for(&url, &many);
        assert_eq!(r.tcp_connect.as_ref().map(Vec::len), Some(MAX_TCP_CONNECT));
        assert!(plan_for(&r, &HelperConfig::default()).is_ok());
    }
}
