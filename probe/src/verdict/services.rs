//! Verdicts of OONI's app, circumvention and middlebox tests, read from their own `test_keys`
//! as OONI's pipeline reads them (`whatsapp`, `telegram`, `signal`, `facebook_messenger`, `tor`,
//! `vanilla_tor`, `dnscheck`, `stunreachability`, `http_header_field_manipulation`,
//! `http_invalid_request_line`, `urlgetter`).
//!
//! Each test is a list of checks (WhatsApp's web client, its registration server, its
//! endpoints; Telegram's web client and its data centres; ...), each check decided from what
//! the probe measured when the measurement carries it (`requests`, `tcp_connect`, `queries`,
//! `tls_handshakes`) and from the probe's own summary keys otherwise (older probes wrote only
//! those). A check is `ok`, `blocked` on a layer, or `unknown`; the verdict is blocked when any
//! check is (the first in the test's table names the layer), unknown when any check cannot tell,
//! and accessible when every check worked.
//!
//! Layers are named in web_connectivity's words so that the blocking detector treats a
//! service as one more target: `dns`, `tcp_ip`, `tls`, `http-failure`, and `http-diff` for a
//! middlebox's tampering. Which layer a failure belongs to is read first from the stage that
//! failed for that host (a lookup that failed or answered only bogons, connects that all
//! failed, handshakes that all failed; OONI spec df-002-dnst, df-005-tcpconnect,
//! df-006-tlshandshake) and else from the failure string (OONI spec df-007-errors),
//! [`FAILURE_LAYERS`].
//!
//! Missing or null keys never panic: a check with nothing to read is `unknown`.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::engine::bogon::is_bogon;
use crate::ooni::Blocking;

/// The version of these rules, stored with every verdict they make.
pub const RULE_SET: &str = "ooni-services-1";

/// The test names scored here.
pub const SERVICE_TESTS: &[&str] = &[
    "whatsapp",
    "telegram",
    "signal",
    "facebook_messenger",
    "tor",
    "vanilla_tor",
    "dnscheck",
    "stunreachability",
    "http_header_field_manipulation",
    "http_invalid_request_line",
    "urlgetter",
];

/// A verdict on one measurement of a service test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceVerdict {
    /// The test name.
    pub test_name: String,
    /// What was measured, as the blocking detector names its target: the service (`whatsapp`,
    /// `telegram`, ...) or, for tests with an input, the input's host.
    pub target: String,
    /// `false`, a blocking type in web_connectivity's words (`dns`, `tcp_ip`, `tls`,
    /// `http-failure`, `http-diff`), or `None` when the measurement cannot tell.
    pub blocking: Option<Blocking>,
    /// Whether the service was reachable; `None` when unknown.
    pub accessible: Option<bool>,
    /// The id of the rule that decided.
    pub rule: String,
    /// [`RULE_SET`].
    pub rule_set: &'static str,
    /// What each check of the test found, in the test's order: the reasons behind `rule`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// One check of a service test and what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The check's name within its test (`web`, `registration`, `endpoints`, ...).
    pub name: String,
    /// `ok`, `blocked` or `unknown`.
    pub outcome: &'static str,
    /// The layer, when blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<&'static str>,
    /// Why, in words: the key or the failure that decided.
    pub why: String,
}

/// Where in a connection a service failed, in web_connectivity's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// Name resolution.
    Dns,
    /// Reaching the address (TCP connect, or a UDP exchange for STUN).
    TcpIp,
    /// The TLS (or obfs4) handshake.
    Tls,
    /// The request after the handshake.
    HttpFailure,
    /// An answer that differs from the expected one: a middlebox's tampering.
    HttpDiff,
}

impl Layer {
    /// web_connectivity's name of the layer (OONI spec ts-017, "blocking").
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Dns => "dns",
            Layer::TcpIp => "tcp_ip",
            Layer::Tls => "tls",
            Layer::HttpFailure => "http-failure",
            Layer::HttpDiff => "http-diff",
        }
    }
}

/// What one check found.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Ok(String),
    Blocked(Layer, String),
    Unknown(String),
}

/// The measurement's envelope fields some rules depend on (a test version with a known bug, a
/// date after which a version broke). Every field is optional: a rule that needs a missing one
/// does not fire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// `test_version`.
    pub test_version: Option<String>,
    /// `measurement_start_time`, `YYYY-MM-DD HH:MM:SS`.
    pub measurement_start_time: Option<String>,
    /// `annotations.engine_name`: the engine version rules are of OONI's engine
    /// (`ooniprobe-engine`) only.
    pub engine_name: Option<String>,
    /// `annotations.engine_version`.
    pub engine_version: Option<String>,
}

impl Meta {
    /// The fields read from a whole measurement.
    pub fn of(measurement: &Value) -> Meta {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let annotation = |k: &str| text(measurement.get("annotations").and_then(|a| a.get(k)));
        Meta {
            test_version: text(measurement.get("test_version")),
            measurement_start_time: text(measurement.get("measurement_start_time")),
            engine_name: annotation("engine_name"),
            engine_version: annotation("engine_version"),
        }
    }
}

/// Scores a measurement of one of [`SERVICE_TESTS`]; `None` for any other test name.
pub fn score_service(
    test_name: &str,
    input: Option<&str>,
    test_keys: &Value,
) -> Option<ServiceVerdict> {
    score_service_with(test_name, input, test_keys, &Meta::default())
}

/// [`score_service`] with the envelope fields that version-specific rules read
/// ([`BROKEN_VERSIONS`]).
pub fn score_service_with(
    test_name: &str,
    input: Option<&str>,
    test_keys: &Value,
    meta: &Meta,
) -> Option<ServiceVerdict> {
    let tk = test_keys;
    let (target, checks): (String, Vec<(String, Outcome)>) = match test_name {
        "whatsapp" => ("whatsapp".into(), whatsapp(tk)),
        "telegram" => ("telegram".into(), telegram(tk)),
        "signal" => ("signal".into(), signal(tk)),
        "facebook_messenger" => ("facebook_messenger".into(), facebook_messenger(tk)),
        "tor" => ("tor".into(), vec![("targets".into(), tor(tk))]),
        "vanilla_tor" => ("tor".into(), vec![("bootstrap".into(), vanilla_tor(tk))]),
        "dnscheck" => (
            input_target(input, None, test_name),
            vec![("resolver".into(), dnscheck(tk))],
        ),
        "stunreachability" => (
            input_target(input, str_at(tk, "endpoint"), test_name),
            vec![("binding".into(), stun(tk))],
        ),
        "http_header_field_manipulation" => (
            test_name.to_string(),
            vec![("headers".into(), header_field_manipulation(tk))],
        ),
        "http_invalid_request_line" => (
            test_name.to_string(),
            vec![("request_lines".into(), invalid_request_line(tk))],
        ),
        "urlgetter" => (
            input_target(input, None, test_name),
            vec![("fetch".into(), urlgetter(tk))],
        ),
        _ => return None,
    };
    let mut checks = checks;
    if let Some(why) = broken_version(test_name, meta) {
        checks.insert(0, ("version".into(), Outcome::Unknown(why)));
    }
    Some(combine(test_name, target, checks))
}

/// The verdict of a test's checks: blocked when any is (the first names the layer), else
/// unknown when any cannot tell, else accessible.
fn combine(test_name: &str, target: String, checks: Vec<(String, Outcome)>) -> ServiceVerdict {
    let first_blocked = checks.iter().find_map(|(name, o)| match o {
        Outcome::Blocked(layer, _) => Some((name.clone(), *layer)),
        _ => None,
    });
    let first_unknown = checks.iter().find_map(|(name, o)| match o {
        Outcome::Unknown(_) => Some(name.clone()),
        _ => None,
    });
    let (blocking, accessible, rule) = match (first_blocked, first_unknown) {
        // A version known to report wrongly makes the whole measurement unknown.
        (_, Some(name)) if name == "version" => (None, None, format!("{test_name}.version")),
        (Some((name, layer)), _) => (
            Some(Blocking::Kind(layer.as_str().to_string())),
            Some(false),
            format!("{test_name}.{name}.blocked"),
        ),
        (None, Some(name)) => (None, None, format!("{test_name}.{name}.unknown")),
        (None, None) if checks.is_empty() => (None, None, format!("{test_name}.empty")),
        (None, None) => (
            Some(Blocking::Flag(false)),
            Some(true),
            format!("{test_name}.ok"),
        ),
    };
    let checks = checks
        .into_iter()
        .map(|(name, o)| match o {
            Outcome::Ok(why) => Check {
                name,
                outcome: "ok",
                layer: None,
                why,
            },
            Outcome::Blocked(layer, why) => Check {
                name,
                outcome: "blocked",
                layer: Some(layer.as_str()),
                why,
            },
            Outcome::Unknown(why) => Check {
                name,
                outcome: "unknown",
                layer: None,
                why,
            },
        })
        .collect();
    ServiceVerdict {
        test_name: test_name.to_string(),
        target,
        blocking,
        accessible,
        rule,
        rule_set: RULE_SET,
        checks,
    }
}

// ---------------------------------------------------------------------------------------------
// Failures and stages

/// Failure strings (OONI spec df-007-errors, and measurement-kit's and ooniprobe 2.x's legacy
/// names) whose prefix alone says the layer. Anything else (`generic_timeout_error`,
/// `connection_reset`, `eof_error`, ...) can happen at any stage: its layer is read from the
/// stage that failed ([`stage`]), else it is the test's fallback layer.
pub const FAILURE_LAYERS: &[(&str, Layer)] = &[
    ("dns_", Layer::Dns),
    ("android_dns_cache_no_data", Layer::Dns),
    ("ssl_", Layer::Tls),
    ("connection_refused", Layer::TcpIp),
    ("host_unreachable", Layer::TcpIp),
    ("network_unreachable", Layer::TcpIp),
    ("connect_error", Layer::TcpIp),
    ("tcp_timed_out_error", Layer::TcpIp),
];

/// The Go engine's `failed_operation` (OONI spec ts-027-urlgetter, df-008-netevents), and its
/// layer; `None` for `top_level`, a failure of the probe itself before any network operation.
pub const OPERATION_LAYERS: &[(&str, Option<Layer>)] = &[
    ("resolve", Some(Layer::Dns)),
    ("connect", Some(Layer::TcpIp)),
    ("tls_handshake", Some(Layer::Tls)),
    ("quic_handshake", Some(Layer::Tls)),
    ("http_round_trip", Some(Layer::HttpFailure)),
    ("top_level", None),
];

/// A failure the probe itself caused (OONI's fastpath sets accuracy 0 on any `*_failure` that
/// starts with it): it says nothing of the network.
fn is_probe_error(failure: &str) -> bool {
    failure.starts_with("unknown_failure")
}

fn failure_layer(failure: &str) -> Option<Layer> {
    FAILURE_LAYERS
        .iter()
        .find(|(prefix, _)| failure.starts_with(prefix))
        .map(|(_, l)| *l)
}

/// The layer of `failure` when fetching `host`: the stage that failed for the host, else the
/// failure string's, else `fallback`.
fn layer_of(failure: &str, host: Option<&str>, tk: &Value, fallback: Layer) -> Layer {
    host.and_then(|h| stage(h, tk))
        .or_else(|| failure_layer(failure))
        .unwrap_or(fallback)
}

/// The addresses the measurement's lookups of `host` answered, and whether there were lookups
/// and whether every one failed.
fn answers(host: &str, tk: &Value) -> (Vec<IpAddr>, usize, usize) {
    let (mut ips, mut lookups, mut failed) = (Vec::new(), 0, 0);
    for q in arr(tk, "queries") {
        if !str_at(q, "hostname").is_some_and(|h| h.eq_ignore_ascii_case(host)) {
            continue;
        }
        lookups += 1;
        if str_at(q, "failure").is_some() {
            failed += 1;
        }
        for a in arr(q, "answers") {
            let ip = str_at(a, "ipv4").or_else(|| str_at(a, "ipv6"));
            if let Some(ip) = ip.and_then(|s| s.parse::<IpAddr>().ok()) {
                ips.push(ip);
            }
        }
    }
    (ips, lookups, failed)
}

/// The stage at which `host` failed, from the measurement's own records: every lookup failed
/// or answered only bogons (`dns`, as web_connectivity's `dns_bogon_error`), every connect to
/// its addresses failed (`tcp_ip`), every handshake naming it failed (`tls`). `None` when the
/// records do not show a failed stage (older probes have none).
fn stage(host: &str, tk: &Value) -> Option<Layer> {
    let (ips, lookups, failed) = answers(host, tk);
    if lookups > 0 && ips.is_empty() && failed == lookups {
        return Some(Layer::Dns);
    }
    if !ips.is_empty() && ips.iter().all(|ip| is_bogon(*ip)) {
        return Some(Layer::Dns);
    }
    let connects: Vec<&Value> = arr(tk, "tcp_connect")
        .filter(|c| {
            str_at(c, "ip")
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|ip| ips.contains(&ip))
        })
        .collect();
    if !connects.is_empty() && connects.iter().all(|c| !connect_succeeded(c)) {
        return Some(Layer::TcpIp);
    }
    let handshakes: Vec<&Value> = arr(tk, "tls_handshakes")
        .filter(|h| str_at(h, "server_name").is_some_and(|s| s.eq_ignore_ascii_case(host)))
        .collect();
    if !handshakes.is_empty() && handshakes.iter().all(|h| str_at(h, "failure").is_some()) {
        return Some(Layer::Tls);
    }
    None
}

/// A `tcp_connect` entry's `status.success` (OONI spec df-005-tcpconnect).
fn connect_succeeded(c: &Value) -> bool {
    c.get("status")
        .and_then(|s| s.get("success"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Checks of a URL the test fetches

/// A URL a test fetches, and the keys in which the probe summarised it.
pub struct UrlCheck {
    /// The check's name.
    pub name: &'static str,
    /// The URLs of its request (any of them), exactly as the probe writes `request.url`.
    pub urls: &'static [&'static str],
    /// The key that says `ok` or `blocked`.
    pub status_key: &'static str,
    /// The key that holds the failure.
    pub failure_key: &'static str,
    /// The layer of a failure whose stage and string say nothing more.
    pub fallback: Layer,
}

/// WhatsApp's registration service and web client (OONI spec ts-018, "Registration service
/// check" and "WhatsApp web check"). Only the HTTPS web client, as OONI's fastpath reads it:
/// `http://web.whatsapp.com/` was dropped from the test in 2022 and its failures were never
/// scored.
pub const WHATSAPP_URLS: &[UrlCheck] = &[
    UrlCheck {
        name: "registration",
        urls: &["https://v.whatsapp.net/v2/register"],
        status_key: "registration_server_status",
        failure_key: "registration_server_failure",
        fallback: Layer::HttpFailure,
    },
    UrlCheck {
        name: "web",
        urls: &["https://web.whatsapp.com/"],
        status_key: "whatsapp_web_status",
        failure_key: "whatsapp_web_failure",
        fallback: Layer::HttpFailure,
    },
];

/// Telegram's web client (OONI spec ts-020, "Telegram web version test"); both schemes until
/// 2022-12-07, as OONI's fastpath reads them.
pub const TELEGRAM_URLS: &[UrlCheck] = &[UrlCheck {
    name: "web",
    urls: &["https://web.telegram.org/", "http://web.telegram.org/"],
    status_key: "telegram_web_status",
    failure_key: "telegram_web_failure",
    fallback: Layer::HttpFailure,
}];

/// A check of a URL: the request's own failure when the measurement has the request; the
/// probe's summary keys otherwise. A `blocked` status with no failure is the title heuristic
/// of ooniprobe 2.x (OONI's fastpath ignores it: it flagged WhatsApp's "unsupported browser"
/// page), so it is `unknown`.
fn url_check(tk: &Value, check: &UrlCheck) -> Outcome {
    let mut seen = false;
    for r in arr(tk, "requests") {
        let url = r.get("request").and_then(|q| str_at(q, "url"));
        let Some(url) = url.filter(|u| check.urls.contains(u)) else {
            continue;
        };
        seen = true;
        if let Some(f) = str_at(r, "failure") {
            return failed(f, host_of(url).as_deref(), tk, check.fallback, url);
        }
    }
    if seen {
        return Outcome::Ok(format!("{} answered", check.urls[0]));
    }
    let failure = str_at(tk, check.failure_key);
    match (str_at(tk, check.status_key), failure) {
        (Some("ok"), _) => Outcome::Ok(format!("{}: ok", check.status_key)),
        (Some("blocked"), Some(f)) => {
            let host = check.urls.first().and_then(|u| host_of(u));
            failed(f, host.as_deref(), tk, check.fallback, check.failure_key)
        }
        (Some("blocked"), None) => Outcome::Unknown(format!(
            "{}: blocked with no failure (a page heuristic, not a network failure)",
            check.status_key
        )),
        (other, _) => Outcome::Unknown(format!("{}: {other:?}", check.status_key)),
    }
}

/// A failure of `what`: blocked on its layer, or unknown when the probe caused it.
fn failed(failure: &str, host: Option<&str>, tk: &Value, fallback: Layer, what: &str) -> Outcome {
    if is_probe_error(failure) {
        return Outcome::Unknown(format!("{what}: {failure} (a probe error)"));
    }
    Outcome::Blocked(
        layer_of(failure, host, tk, fallback),
        format!("{what}: {failure}"),
    )
}

// ---------------------------------------------------------------------------------------------
// The tests

/// WhatsApp (OONI spec ts-018): the endpoints the app talks to, the registration service, the
/// web client. OONI's fastpath reads the requests and connects, not the `*_status` keys (a
/// probe bug made those wrong); so does this, falling back to the keys only when the
/// measurement has no requests.
fn whatsapp(tk: &Value) -> Vec<(String, Outcome)> {
    let mut out = vec![("endpoints".to_string(), whatsapp_endpoints(tk))];
    out.extend(
        WHATSAPP_URLS
            .iter()
            .map(|c| (c.name.to_string(), url_check(tk, c))),
    );
    out
}

/// The app's endpoints `e1.whatsapp.net` to `e16.whatsapp.net` on ports 443 and 5222 (ts-018,
/// "WhatsApp endpoints check"): reachable when any connect succeeds, as the app tries them in
/// turn. A connect to a bogon (a resolver's sinkhole) does not count.
fn whatsapp_endpoints(tk: &Value) -> Outcome {
    let is_endpoint = |h: &str| {
        h.strip_prefix('e')
            .and_then(|r| r.strip_suffix(".whatsapp.net"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut ips = Vec::new();
    let (mut lookups, mut failed_lookups) = (0, 0);
    let mut hosts: Vec<&str> = arr(tk, "queries")
        .filter_map(|q| str_at(q, "hostname"))
        .filter(|h| is_endpoint(h))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    for h in &hosts {
        let (a, n, f) = answers(h, tk);
        ips.extend(a);
        lookups += n;
        failed_lookups += f;
    }
    // Connects to the endpoints' addresses when the lookups are there (the web client's and
    // the registration server's connects are in the same list), else every connect.
    let real = |c: &&Value| {
        str_at(c, "ip")
            .and_then(|s| s.parse::<IpAddr>().ok())
            .is_some_and(|ip| !is_bogon(ip) && (ips.is_empty() || ips.contains(&ip)))
    };
    let connects: Vec<&Value> = arr(tk, "tcp_connect").filter(real).collect();
    let ok = connects.iter().filter(|c| connect_succeeded(c)).count();
    if ok > 0 {
        return Outcome::Ok(format!("{ok} of {} connects succeeded", connects.len()));
    }
    if lookups > 0 && ips.is_empty() && failed_lookups == lookups {
        return Outcome::Blocked(Layer::Dns, "every endpoint lookup failed".into());
    }
    if !ips.is_empty() && ips.iter().all(|ip| is_bogon(*ip)) {
        return Outcome::Blocked(Layer::Dns, "endpoints resolve to bogons".into());
    }
    if !connects.is_empty() {
        return Outcome::Blocked(
            Layer::TcpIp,
            format!("none of {} connects succeeded", connects.len()),
        );
    }
    match str_at(tk, "whatsapp_endpoints_status") {
        Some("ok") => Outcome::Ok("whatsapp_endpoints_status: ok".into()),
        Some("blocked") => {
            Outcome::Blocked(Layer::TcpIp, "whatsapp_endpoints_status: blocked".into())
        }
        other => Outcome::Unknown(format!("whatsapp_endpoints_status: {other:?}")),
    }
}

/// Telegram (OONI spec ts-020): the web client, and the data centres (DCs) reached by TCP and
/// by HTTP.
fn telegram(tk: &Value) -> Vec<(String, Outcome)> {
    let mut out = vec![("access_points".to_string(), telegram_dcs(tk))];
    out.extend(
        TELEGRAM_URLS
            .iter()
            .map(|c| (c.name.to_string(), url_check(tk, c))),
    );
    out
}

/// The DCs, as OONI's fastpath scores them: the share of connects that failed plus the share
/// of HTTP requests (other than the web client's) that failed, each 0.5 when the measurement
/// has none, above 0.5 is blocked; on `tcp_ip` when connects fail at least as often as
/// requests, else on `http-failure`. The connects to the web client's addresses are left out
/// here (the web check has them). With neither, the probe's `telegram_tcp_blocking` and
/// `telegram_http_blocking` decide (ts-020, "Telegram access points check").
fn telegram_dcs(tk: &Value) -> Outcome {
    let (web_ips, _, _) = answers("web.telegram.org", tk);
    let (mut tcp_ok, mut tcp_bad) = (0usize, 0usize);
    for c in arr(tk, "tcp_connect") {
        let ip = str_at(c, "ip").and_then(|s| s.parse::<IpAddr>().ok());
        if ip.is_some_and(|ip| web_ips.contains(&ip)) {
            continue;
        }
        match c
            .get("status")
            .and_then(|s| s.get("success"))
            .and_then(Value::as_bool)
        {
            Some(true) => tcp_ok += 1,
            Some(false) => tcp_bad += 1,
            None => {}
        }
    }
    let (mut http_ok, mut http_bad) = (0usize, 0usize);
    for r in arr(tk, "requests") {
        let url = r
            .get("request")
            .and_then(|q| str_at(q, "url"))
            .unwrap_or("");
        if TELEGRAM_URLS.iter().any(|c| c.urls.contains(&url)) {
            continue;
        }
        if str_at(r, "failure").is_some() {
            http_bad += 1;
        } else {
            http_ok += 1;
        }
    }
    let share = |bad: usize, ok: usize| {
        if bad + ok == 0 {
            0.5
        } else {
            bad as f64 / (bad + ok) as f64
        }
    };
    if tcp_ok + tcp_bad + http_ok + http_bad > 0 {
        let (t, h) = (share(tcp_bad, tcp_ok), share(http_bad, http_ok));
        let why = format!(
            "{tcp_bad} of {} connects and {http_bad} of {} requests failed",
            tcp_ok + tcp_bad,
            http_ok + http_bad
        );
        return if t + h > 0.5 {
            let layer = if t >= h {
                Layer::TcpIp
            } else {
                Layer::HttpFailure
            };
            Outcome::Blocked(layer, why)
        } else {
            Outcome::Ok(why)
        };
    }
    let flag = |k: &str| tk.get(k).and_then(Value::as_bool);
    match (
        flag("telegram_tcp_blocking"),
        flag("telegram_http_blocking"),
    ) {
        (Some(true), _) => Outcome::Blocked(Layer::TcpIp, "telegram_tcp_blocking: true".into()),
        (_, Some(true)) => {
            Outcome::Blocked(Layer::HttpFailure, "telegram_http_blocking: true".into())
        }
        (Some(false), Some(false)) => Outcome::Ok("telegram_*_blocking: false".into()),
        other => Outcome::Unknown(format!("telegram_tcp/http_blocking: {other:?}")),
    }
}

/// Signal (OONI spec ts-029): `signal_backend_status`, as OONI's fastpath reads it; a failure
/// of the test itself (`failure`, `failed_operation`) makes it unknown.
fn signal(tk: &Value) -> Vec<(String, Outcome)> {
    let outcome = if let Some(f) = str_at(tk, "failure").or_else(|| str_at(tk, "failed_operation"))
    {
        Outcome::Unknown(format!("the test failed: {f}"))
    } else {
        match str_at(tk, "signal_backend_status") {
            Some("ok") => Outcome::Ok("signal_backend_status: ok".into()),
            Some("blocked") => match str_at(tk, "signal_backend_failure") {
                Some(f) => {
                    // The host of the first request that failed so, for its stage.
                    let host = arr(tk, "requests")
                        .find(|r| str_at(r, "failure") == Some(f))
                        .and_then(|r| r.get("request").and_then(|q| str_at(q, "url")))
                        .and_then(host_of);
                    failed(
                        f,
                        host.as_deref(),
                        tk,
                        Layer::HttpFailure,
                        "signal_backend_failure",
                    )
                }
                None => {
                    Outcome::Blocked(Layer::HttpFailure, "signal_backend_status: blocked".into())
                }
            },
            other => Outcome::Unknown(format!("signal_backend_status: {other:?}")),
        }
    };
    vec![("backend".into(), outcome)]
}

/// Facebook Messenger's endpoints and their host names (OONI spec ts-019, "Test
/// description"); keys are `facebook_<name>_dns_consistent` and `facebook_<name>_reachable`
/// from version 0.4.0, with `-` for `_` up to 0.3.0.
pub const FACEBOOK_ENDPOINTS: &[(&str, &str)] = &[
    ("stun", "stun.fbsbx.com"),
    ("b_api", "b-api.facebook.com"),
    ("b_graph", "b-graph.facebook.com"),
    ("edge", "edge-mqtt.facebook.com"),
    ("external_cdn", "external.xx.fbcdn.net"),
    ("scontent_cdn", "scontent.xx.fbcdn.net"),
    ("star", "star.c10r.facebook.com"),
];

/// Netblocks of Facebook's AS32934, the address space ts-019 calls consistent. Only used to
/// overrule a probe that called an answer inside them inconsistent (ooniprobe 2.x with no ASN
/// database called every answer inconsistent); an answer outside them keeps the probe's flag,
/// so this list need not be complete.
pub const FACEBOOK_NETBLOCKS: &[(&str, u8)] = &[
    ("31.13.24.0", 21),
    ("31.13.64.0", 18),
    ("45.64.40.0", 22),
    ("66.220.144.0", 20),
    ("69.63.176.0", 20),
    ("69.171.224.0", 19),
    ("74.119.76.0", 22),
    ("102.132.96.0", 20),
    ("103.4.96.0", 22),
    ("129.134.0.0", 16),
    ("157.240.0.0", 16),
    ("173.252.64.0", 18),
    ("179.60.192.0", 22),
    ("185.60.216.0", 22),
    ("185.89.216.0", 22),
    ("204.15.20.0", 22),
    ("2a03:2880::", 32),
];

fn in_netblock(ip: IpAddr, net: &str, len: u8) -> bool {
    match (ip, net.parse::<IpAddr>()) {
        (IpAddr::V4(a), Ok(IpAddr::V4(n))) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), Ok(IpAddr::V6(n))) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn is_facebook(ip: IpAddr) -> bool {
    FACEBOOK_NETBLOCKS
        .iter()
        .any(|(net, len)| in_netblock(ip, net, *len))
}

/// Facebook Messenger (OONI spec ts-019): per endpoint, an inconsistent answer is `dns`, an
/// unreachable endpoint `tcp_ip`; the per-endpoint keys win over the summary
/// `facebook_dns_blocking` (OONI's fastpath works around a probe that set it with every
/// endpoint consistent), which decides only when they are all missing.
fn facebook_messenger(tk: &Value) -> Vec<(String, Outcome)> {
    let key = |name: &str, what: &str| {
        let modern = format!("facebook_{name}_{what}");
        let legacy = format!(
            "facebook-{}-{}",
            name.replace('_', "-"),
            what.replace('_', "-")
        );
        tk.get(&modern)
            .or_else(|| tk.get(&legacy))
            .and_then(Value::as_bool)
    };
    let mut out = Vec::new();
    let mut any = false;
    for (name, host) in FACEBOOK_ENDPOINTS {
        let consistent = key(name, "dns_consistent");
        let reachable = key(name, "reachable");
        any |= consistent.is_some() || reachable.is_some();
        let (ips, _, _) = answers(host, tk);
        let proven = !ips.is_empty() && ips.iter().all(|ip| is_facebook(*ip));
        let outcome = match (consistent, reachable) {
            (Some(false), _) if proven => match reachable {
                Some(false) => Outcome::Blocked(Layer::TcpIp, format!("{host} unreachable")),
                Some(true) => Outcome::Ok(format!("{host} reachable")),
                None => Outcome::Unknown(format!(
                    "{host}: called inconsistent, but every answer is Facebook's; never connected"
                )),
            },
            (Some(false), _) => {
                Outcome::Blocked(Layer::Dns, format!("{host}: inconsistent answer"))
            }
            (_, Some(false)) => Outcome::Blocked(Layer::TcpIp, format!("{host} unreachable")),
            // STUN is UDP: the test never connects to it (`reachable` is always null).
            (Some(true), None) if *name == "stun" => Outcome::Ok(format!("{host} consistent")),
            (Some(true), Some(true)) => Outcome::Ok(format!("{host} consistent and reachable")),
            other => Outcome::Unknown(format!("{host}: {other:?}")),
        };
        out.push((name.to_string(), outcome));
    }
    if any {
        return out;
    }
    let flag = |k: &str| {
        tk.get(k)
            .or_else(|| tk.get(k.replace('_', "-").as_str()))
            .and_then(Value::as_bool)
    };
    let outcome = match (flag("facebook_dns_blocking"), flag("facebook_tcp_blocking")) {
        (Some(true), _) => Outcome::Blocked(Layer::Dns, "facebook_dns_blocking: true".into()),
        (_, Some(true)) => Outcome::Blocked(Layer::TcpIp, "facebook_tcp_blocking: true".into()),
        (Some(false), Some(false)) => Outcome::Ok("facebook_*_blocking: false".into()),
        other => Outcome::Unknown(format!("facebook_dns/tcp_blocking: {other:?}")),
    };
    vec![("summary".into(), outcome)]
}

/// Tor (OONI spec ts-023): each target's `failure` (`null` worked, `false` did not run, a
/// string failed), blocked when more than half of the targets that ran failed, as OONI's
/// fastpath scores it. An obfs4 `ntor AUTH mismatch` is a stale bridge key, not censorship
/// (ts-023, "Ntor AUTH mismatch"): not counted. The layer is the most common among the
/// failed targets: `summary.connect` failed is `tcp_ip`, `summary.handshake` (TLS or obfs4)
/// is `tls`, else the failure string's (a directory port is fetched over HTTP).
fn tor(tk: &Value) -> Outcome {
    let Some(targets) = tk.get("targets").and_then(Value::as_object) else {
        // Early versions wrote a list (OONI's fastpath does not score those either).
        return Outcome::Unknown("no targets object".into());
    };
    let (mut ok, mut stale, mut not_run) = (0usize, 0usize, 0usize);
    let mut layers: Vec<Layer> = Vec::new();
    for t in targets.values() {
        match t.get("failure") {
            Some(Value::Null) => ok += 1,
            Some(Value::Bool(false)) => not_run += 1,
            Some(Value::String(f)) if f.contains("ntor AUTH mismatch") => stale += 1,
            Some(Value::String(f)) => {
                let summary = |op: &str| {
                    t.get("summary")
                        .and_then(|s| s.get(op))
                        .and_then(|o| str_at(o, "failure"))
                };
                let layer = if summary("connect").is_some() {
                    Layer::TcpIp
                } else if summary("handshake").is_some() {
                    Layer::Tls
                } else {
                    failure_layer(f).unwrap_or(Layer::HttpFailure)
                };
                layers.push(layer);
            }
            _ => not_run += 1,
        }
    }
    let bad = layers.len();
    let why = format!(
        "{bad} of {} targets failed ({stale} stale bridge keys, {not_run} not run)",
        bad + ok
    );
    if bad + ok == 0 {
        return Outcome::Unknown(why);
    }
    if bad * 2 <= bad + ok {
        return Outcome::Ok(why);
    }
    let count = |l: Layer| layers.iter().filter(|x| **x == l).count();
    let layer = [Layer::Dns, Layer::TcpIp, Layer::Tls, Layer::HttpFailure]
        .into_iter()
        .max_by_key(|l| (count(*l), std::cmp::Reverse(*l)))
        .unwrap_or(Layer::TcpIp);
    Outcome::Blocked(layer, why)
}

/// Tor's bootstrap phases (`tor_progress_tag`, tor's control-spec "BOOTSTRAP" phases; the
/// `*_dir` tags are tor 0.2/0.3's), and the layer at which a bootstrap that stopped there
/// failed: still connecting is `tcp_ip`, handshaking is `tls`, anything after the channel
/// is up is `http-failure`.
pub const TOR_PHASES: &[(&str, Layer)] = &[
    ("starting", Layer::TcpIp),
    ("conn", Layer::TcpIp),
    ("conn_dir", Layer::TcpIp),
    ("conn_pt", Layer::TcpIp),
    ("conn_proxy", Layer::TcpIp),
    ("conn_or", Layer::TcpIp),
    ("conn_done", Layer::Tls),
    ("conn_done_pt", Layer::Tls),
    ("conn_done_proxy", Layer::Tls),
    ("handshake", Layer::Tls),
    ("handshake_dir", Layer::Tls),
    ("handshake_or", Layer::Tls),
];

/// vanilla_tor (OONI spec ts-016-vanilla-tor), as OONI's fastpath scores it: bootstrapped when
/// the log says `Bootstrapped 100%` (version 0.1's `tor_log` string or 0.2's `tor_logs` list;
/// `success` was wrong in some old probes) or `tor_progress` is 100; any lower progress is
/// blocked, on the layer of the phase it stopped at ([`TOR_PHASES`]). No log at all: unknown.
fn vanilla_tor(tk: &Value) -> Outcome {
    let log: Option<String> = match (tk.get("tor_logs"), tk.get("tor_log")) {
        (Some(Value::Array(lines)), _) => Some(
            lines
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        (_, Some(Value::String(s))) => Some(s.clone()),
        _ => None,
    };
    let Some(log) = log else {
        return Outcome::Unknown("no tor log".into());
    };
    if log.contains("Bootstrapped 100%: Done") || log.contains("Bootstrapped 100% (done): Done") {
        return Outcome::Ok("Bootstrapped 100%".into());
    }
    let progress = tk
        .get("tor_progress")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        .clamp(0.0, 100.0);
    if progress >= 100.0 {
        return Outcome::Ok("tor_progress: 100".into());
    }
    let tag = str_at(tk, "tor_progress_tag").unwrap_or("");
    let layer = TOR_PHASES
        .iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, l)| *l)
        .unwrap_or(if progress < 10.0 {
            Layer::TcpIp
        } else if progress < 15.0 {
            Layer::Tls
        } else {
            Layer::HttpFailure
        });
    Outcome::Blocked(layer, format!("bootstrap stopped at {progress}% ({tag})"))
}

/// The layer of a urlgetter result (OONI spec ts-027) that failed: its `failed_operation`
/// ([`OPERATION_LAYERS`]), else its failure; `None` for a probe error.
fn urlgetter_layer(keys: &Value, host: Option<&str>) -> Option<Layer> {
    let failure = str_at(keys, "failure")?;
    if is_probe_error(failure) {
        return None;
    }
    match str_at(keys, "failed_operation")
        .and_then(|op| OPERATION_LAYERS.iter().find(|(o, _)| *o == op))
    {
        Some((_, layer)) => *layer,
        None => Some(layer_of(failure, host, keys, Layer::HttpFailure)),
    }
}

/// urlgetter (OONI spec ts-027): `failure` null is accessible; a failure is blocked on the
/// layer of its `failed_operation`; `top_level` or `unknown_failure` is the probe's own error.
fn urlgetter(tk: &Value) -> Outcome {
    let Some(failure) = str_at(tk, "failure") else {
        return match tk.get("failure") {
            Some(Value::Null) => Outcome::Ok("failure: null".into()),
            other => Outcome::Unknown(format!("failure: {other:?}")),
        };
    };
    let host = arr(tk, "requests")
        .filter_map(|r| r.get("request").and_then(|q| str_at(q, "url")))
        .find_map(host_of);
    match urlgetter_layer(tk, host.as_deref()) {
        Some(layer) => Outcome::Blocked(layer, format!("failure: {failure}")),
        None => Outcome::Unknown(format!("failure: {failure} (a probe error)")),
    }
}

/// dnscheck (OONI spec ts-028): `bootstrap_failure` (the system resolver could not resolve the
/// resolver's own name) is `dns`; else the resolver works when any address's lookup worked,
/// and is blocked when all failed, on the most common layer of their failures.
fn dnscheck(tk: &Value) -> Outcome {
    if let Some(f) = str_at(tk, "bootstrap_failure") {
        return if is_probe_error(f) {
            Outcome::Unknown(format!("bootstrap_failure: {f} (a probe error)"))
        } else {
            Outcome::Blocked(Layer::Dns, format!("bootstrap_failure: {f}"))
        };
    }
    let Some(lookups) = tk.get("lookups").and_then(Value::as_object) else {
        return Outcome::Unknown("no lookups".into());
    };
    let (mut ok, mut layers, mut probe_errors) = (0usize, Vec::new(), 0usize);
    for keys in lookups.values() {
        if str_at(keys, "failure").is_none() {
            ok += 1;
        } else {
            match urlgetter_layer(keys, None) {
                Some(l) => layers.push(l),
                None => probe_errors += 1,
            }
        }
    }
    let why = format!(
        "{ok} of {} addresses answered",
        ok + layers.len() + probe_errors
    );
    if ok > 0 {
        return Outcome::Ok(why);
    }
    let count = |l: Layer| layers.iter().filter(|x| **x == l).count();
    match [Layer::Dns, Layer::TcpIp, Layer::Tls, Layer::HttpFailure]
        .into_iter()
        .filter(|l| count(*l) > 0)
        .max_by_key(|l| (count(*l), std::cmp::Reverse(*l)))
    {
        Some(layer) => Outcome::Blocked(layer, why),
        None => Outcome::Unknown(why),
    }
}

/// stunreachability (OONI spec ts-025): `failure` null is reachable, a failure blocked (as
/// OONI's fastpath scores it); a lookup failure is `dns`, anything else `tcp_ip` (the binding
/// request is one UDP exchange).
fn stun(tk: &Value) -> Outcome {
    match tk.get("failure") {
        Some(Value::Null) => Outcome::Ok("failure: null".into()),
        Some(Value::String(f)) if is_probe_error(f) => {
            Outcome::Unknown(format!("failure: {f} (a probe error)"))
        }
        Some(Value::String(f)) => Outcome::Blocked(
            failure_layer(f).unwrap_or(Layer::TcpIp),
            format!("failure: {f}"),
        ),
        other => Outcome::Unknown(format!("failure: {other:?}")),
    }
}

/// http_header_field_manipulation (OONI spec ts-006), as OONI's fastpath scores it: the test
/// helper echoes the headers it received in a JSON body (`headers_dict`); any difference from
/// the headers sent (apart from `Connection: close`), no body, or a body that is not that JSON
/// is a middlebox's tampering (`http-diff`). No request or no response: unknown.
fn header_field_manipulation(tk: &Value) -> Outcome {
    let Some(first) = arr(tk, "requests").next() else {
        return Outcome::Unknown("no request".into());
    };
    let Some(response) = first.get("response").filter(|r| r.is_object()) else {
        return Outcome::Unknown("no response".into());
    };
    let Some(body) = body_text(response.get("body")) else {
        return Outcome::Blocked(Layer::HttpDiff, "the response has no body".into());
    };
    let echoed = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("headers_dict").and_then(Value::as_object).cloned());
    let Some(echoed) = echoed else {
        return Outcome::Blocked(
            Layer::HttpDiff,
            "the response is not the helper's echo".into(),
        );
    };
    let mut received: Vec<(String, String)> = echoed
        .iter()
        .filter_map(|(k, v)| first_value(v).map(|v| (k.clone(), v)))
        .collect();
    let mut sent = header_pairs(first.get("request").and_then(|r| r.get("headers")));
    for list in [&mut received, &mut sent] {
        list.retain(|(k, v)| !(k == "Connection" && v == "close"));
        list.sort();
        list.dedup();
    }
    if received == sent {
        Outcome::Ok(format!("{} headers echoed unchanged", sent.len()))
    } else {
        let changed = received
            .iter()
            .filter(|h| !sent.contains(h))
            .chain(sent.iter().filter(|h| !received.contains(h)))
            .count();
        Outcome::Blocked(Layer::HttpDiff, format!("{changed} header changes"))
    }
}

/// A header value: a string, or the first of a list (`headers_dict` and legacy lists).
fn first_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The request's headers as pairs: a map (the Go engine), or a list of `[name, value]` or
/// `[name, [values]]` (ooniprobe 1.x and measurement-kit; OONI spec df-001-httpt).
fn header_pairs(headers: Option<&Value>) -> Vec<(String, String)> {
    match headers {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| first_value(v).map(|v| (k.clone(), v)))
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|pair| {
                let name = pair.get(0).and_then(Value::as_str)?;
                Some((name.to_string(), first_value(pair.get(1)?)?))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A body as text: a string, or `{"format": "base64", "data": ...}` (OONI spec df-001-httpt,
/// "MaybeBinaryData").
fn body_text(body: Option<&Value>) -> Option<String> {
    use base64::Engine as _;
    match body? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) if o.get("format").and_then(Value::as_str) == Some("base64") => {
            let data = o.get("data").and_then(Value::as_str)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

/// http_invalid_request_line (OONI spec ts-007), as OONI's fastpath scores it: the helper
/// echoes each request line; any line received that is not the one sent is tampering. The
/// probe's `tampering` key is not read (OONI's fastpath ignores it too: a probe bug set it
/// wrongly). Nothing sent and nothing received: unknown.
fn invalid_request_line(tk: &Value) -> Outcome {
    let sent: Vec<&Value> = arr(tk, "sent").collect();
    let received: Vec<&Value> = arr(tk, "received").collect();
    if sent.is_empty() && received.is_empty() {
        return Outcome::Unknown("nothing sent or received".into());
    }
    let changed = sent
        .iter()
        .zip(received.iter())
        .filter(|(s, r)| s != r)
        .count();
    if changed > 0 {
        Outcome::Blocked(
            Layer::HttpDiff,
            format!(
                "{changed} of {} request lines came back changed",
                sent.len()
            ),
        )
    } else {
        Outcome::Ok(format!("{} request lines echoed unchanged", sent.len()))
    }
}

// ---------------------------------------------------------------------------------------------
// Versions known to report wrongly

/// A probe version whose measurements of a test say nothing, from a date on.
pub struct BrokenVersion {
    /// The test.
    pub test_name: &'static str,
    /// Which field of [`Meta`] the range is of: `test_version` or `engine_version`.
    pub field: &'static str,
    /// Versions from (inclusive) ...
    pub from: (u32, u32, u32),
    /// ... to (exclusive).
    pub to: (u32, u32, u32),
    /// Measurements started on or after this day (`YYYY-MM-DD`); `""` for any.
    pub since: &'static str,
    /// Why, for the verdict.
    pub why: &'static str,
}

/// Signal's test pinned a certificate that Signal replaced, and some versions broke on a
/// change of Signal's servers: OONI's fastpath marks those measurements as failures, not
/// blocking (its `score_signal`; OONI spec ts-029, "Data analysis considerations").
pub const BROKEN_VERSIONS: &[BrokenVersion] = &[
    BrokenVersion {
        test_name: "signal",
        field: "test_version",
        from: (0, 2, 4),
        to: (0, 2, 5),
        since: "",
        why: "signal 0.2.4 reported every measurement wrongly",
    },
    BrokenVersion {
        test_name: "signal",
        field: "test_version",
        from: (0, 0, 0),
        to: (0, 2, 4),
        since: "2023-11-07",
        why: "signal up to 0.2.3 pinned a certificate Signal replaced on 2023-11-07",
    },
    BrokenVersion {
        test_name: "signal",
        field: "test_version",
        from: (0, 0, 0),
        to: (0, 2, 2),
        since: "2022-10-19",
        why: "signal before 0.2.2 broke on Signal's server change of 2022-10-19",
    },
    BrokenVersion {
        test_name: "signal",
        field: "engine_version",
        from: (0, 0, 0),
        to: (3, 17, 2),
        since: "2023-05-02",
        why: "engines before 3.17.2 ran a signal test broken by Signal's change of 2023-05-02",
    },
];

/// The `engine_name` of OONI's Go engine (OONI spec df-000-base, `annotations`), whose
/// versions the `engine_version` entries of [`BROKEN_VERSIONS`] are.
pub const OONI_ENGINE: &str = "ooniprobe-engine";

/// `a.b.c` (a suffix such as `-beta.3` ignored).
fn version(text: &str) -> Option<(u32, u32, u32)> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

fn broken_version(test_name: &str, meta: &Meta) -> Option<String> {
    BROKEN_VERSIONS.iter().find_map(|b| {
        if b.test_name != test_name {
            return None;
        }
        let field = match b.field {
            "test_version" => meta.test_version.as_deref(),
            _ if meta.engine_name.as_deref() == Some(OONI_ENGINE) => meta.engine_version.as_deref(),
            _ => None,
        };
        let v = version(field?)?;
        let day = meta.measurement_start_time.as_deref().unwrap_or("");
        let dated = b.since.is_empty() || (day.len() >= 10 && &day[..10] >= b.since);
        (v >= b.from && v < b.to && dated).then(|| b.why.to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Reading JSON without trusting its shape

/// The elements of `v[key]` when it is an array; nothing when it is missing, null or else.
fn arr<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// `v[key]` when it is a string.
fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The host of a URL or of a `host:port` endpoint, lowercased: `https://a.example/x`,
/// `stun://a.example:3478`, `dot://[2001:db8::1]:853`, `a.example:443`, `a.example`.
pub fn host_of(input: &str) -> Option<String> {
    let input = input.trim();
    let rest = input.split_once("://").map_or(input, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else if authority.matches(':').count() > 1 {
        // A bare IPv6 address.
        authority
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// A test with an input names its target by the input's host (else `endpoint`'s, else the
/// test's name).
fn input_target(input: Option<&str>, endpoint: Option<&str>, test_name: &str) -> String {
    input
        .and_then(host_of)
        .or_else(|| endpoint.and_then(host_of))
        .unwrap_or_else(|| test_name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/ooni/real/");

    /// The measurements of a real file: one JSON document or JSON lines.
    fn real(file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(format!("{REAL}{file}")).expect("real file");
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => vec![v],
            Err(_) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).expect("json line"))
                .collect(),
        }
    }

    fn score_real(m: &Value) -> ServiceVerdict {
        let test_name = m["test_name"].as_str().expect("test_name");
        score_service_with(
            test_name,
            m.get("input").and_then(Value::as_str),
            &m["test_keys"],
            &Meta::of(m),
        )
        .expect("a service test")
    }

    /// `(blocking, accessible)` as stored: `"false"`, a layer, or `"null"`.
    fn short(v: &ServiceVerdict) -> (String, Option<bool>) {
        let b = match &v.blocking {
            None => "null".to_string(),
            Some(Blocking::Flag(f)) => f.to_string(),
            Some(Blocking::Kind(k)) => k.clone(),
        };
        (b, v.accessible)
    }

    fn dbg(v: &ServiceVerdict) -> String {
        serde_json::to_string_pretty(v).unwrap_or_default()
    }

    /// What a measurement's own summary keys say, read as plainly as possible: `Some(true)`
    /// blocked, `Some(false)` not, `None` the probe itself could not tell.
    fn flags_say(m: &Value) -> Option<bool> {
        let tk = &m["test_keys"];
        let s = |k: &str| tk.get(k).and_then(Value::as_str);
        let b = |k: &str| tk.get(k).and_then(Value::as_bool);
        let n = |k: &str| tk.get(k).and_then(Value::as_u64).unwrap_or(0);
        match m["test_name"].as_str()? {
            "whatsapp" => Some(
                [
                    "whatsapp_endpoints_status",
                    "registration_server_status",
                    "whatsapp_web_status",
                ]
                .iter()
                .any(|k| s(k) == Some("blocked")),
            ),
            "telegram" => Some(
                b("telegram_tcp_blocking") == Some(true)
                    || b("telegram_http_blocking") == Some(true)
                    || s("telegram_web_status") == Some("blocked"),
            ),
            "signal" => s("signal_backend_status").map(|v| v == "blocked"),
            "facebook_messenger" => Some(
                b("facebook_dns_blocking") == Some(true)
                    || b("facebook_tcp_blocking") == Some(true),
            ),
            "tor" => {
                let kinds = ["dir_port", "obfs4", "or_port_dirauth", "or_port"];
                let total: u64 = kinds.iter().map(|k| n(&format!("{k}_total"))).sum();
                let up: u64 = kinds.iter().map(|k| n(&format!("{k}_accessible"))).sum();
                (total > 0).then(|| up * 2 < total)
            }
            "vanilla_tor" => b("success").map(|ok| !ok),
            "http_header_field_manipulation" => tk["tampering"]["total"].as_bool(),
            "http_invalid_request_line" => b("tampering"),
            "urlgetter" => match s("failed_operation") {
                Some("top_level") => None,
                _ => Some(s("failure").is_some()),
            },
            _ => None,
        }
    }

    fn blocked(v: &ServiceVerdict) -> Option<bool> {
        match &v.blocking {
            None => None,
            Some(Blocking::Flag(f)) => Some(*f),
            Some(Blocking::Kind(_)) => Some(true),
        }
    }

    /// Every real measurement of these tests in `tests/data/ooni/real/`, what it scores, and the
    /// stored `blocking` and `accessible` expected.
    /// One measurement's expected stored `blocking` and `accessible`.
    type Expected = (&'static str, Option<bool>);

    const REAL_SERVICES: &[(&str, &[Expected])] = &[
        // facebook_messenger 0.5.0, ooniprobe 2.3.0 (macOS), RU: see DISAGREE.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-01202003044cadd4e9b30806be0e72a6e05e161a_full-true.json",
            &[("null", None)],
        ),
        // facebook_messenger 0.0.2, ooniprobe-android 2.3.2: every endpoint consistent and
        // reachable.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-01202004070b44da76babb5b2787229c716eb5c0_full-true.json",
            &[("false", Some(true))],
        ),
        // http_header_field_manipulation 0.2.0, ES: echoed unchanged.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110105736.694076_ES_httpheaderfieldmanipulation_ea459e693b3d42a2_full-true.json",
            &[("false", Some(true))],
        ),
        // http_header_field_manipulation 0.2.0, IR: an empty 200 instead of the echo.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110104928.397322_IR_httpheaderfieldmanipulation_33ed804ee27d4955_full-true.json",
            &[("http-diff", Some(false))],
        ),
        // http_invalid_request_line 0.2.0, TR: every line echoed.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110105942.212061_TR_httpinvalidrequestline_f99ce62beb3badb9_full-true.json",
            &[("false", Some(true))],
        ),
        // http_invalid_request_line 0.2.0, US: the squid cache-manager line came back empty.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110105947.714767_US_httpinvalidrequestline_48ce6c10181803ab_full-true.json",
            &[("http-diff", Some(false))],
        ),
        // signal 0.2.0, BR: ok.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20210414233242.034345_BR_signal_390dca674022005a_full-true.json",
            &[("false", Some(true))],
        ),
        // signal 0.2.0, IR: NXDOMAIN for Signal's names.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20210415084230.511612_IR_signal_ed269d082953bf2e_full-true.json",
            &[("dns", Some(false))],
        ),
        // telegram 0.2.0, US: ok.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110102858.395748_US_telegram_b2b51fffce62b986_full-true.json",
            &[("false", Some(true))],
        ),
        // telegram 0.2.0, RU: the DCs answer; web.telegram.org resolves and connects, then
        // its HTTPS request times out.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221109225810.435617_RU_telegram_ecbc73cacd8ea566_full-true.json",
            &[("http-failure", Some(false))],
        ),
        // tor 0.3.0, US: 3 of 22 targets failed once the 10 stale obfs4 keys are left out.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110112405.003769_US_tor_56e03d764ee82e8f_full-true.json",
            &[("false", Some(true))],
        ),
        // tor 0.4.0, RU: 31 of 35 targets time out, most at connect.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20230121235805.670038_RU_tor_e8fd37f3f4f1085f_full-true.json",
            &[("tcp_ip", Some(false))],
        ),
        // urlgetter 0.2.0 (miniooni), two lines: inputs without a scheme, refused by the
        // probe itself (`top_level`).
        (
            "ooni_probe-cli__internal_cmd_oonireport_testdata_testmeasurement.json",
            &[("null", None), ("null", None)],
        ),
        // vanilla_tor 0.1.0, ooniprobe 2.0.2: bootstrapped.
        (
            "ooni_pipeline__af_fastpath_fastpath_tests_data_vanilla_tor_good_old.json",
            &[("false", Some(true))],
        ),
        // vanilla_tor 0.1.0, ooniprobe 2.2.0: stuck at 5 %, connecting to a directory server.
        (
            "ooni_pipeline__af_fastpath_fastpath_tests_data_vanilla_tor_bad_old.json",
            &[("tcp_ip", Some(false))],
        ),
        // vanilla_tor 0.2.0, ooniprobe-android 3.7.0: bootstrapped.
        (
            "ooni_pipeline__af_fastpath_fastpath_tests_data_vanilla_tor_good_new.json",
            &[("false", Some(true))],
        ),
        // whatsapp 0.9.0, JP, on a device whose VPN app sinkholes WhatsApp: every name
        // resolves to 0.0.0.0 / ::, the local listener fails TLS (`ssl_invalid_hostname`).
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221105223930.168194_JP_whatsapp_e3e891f975f0d5ef_full-true.json",
            &[("dns", Some(false))],
        ),
        // whatsapp 0.9.0, US: ok.
        (
            "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110103854.762862_US_whatsapp_cb48f652956e71e0_full-true.json",
            &[("false", Some(true))],
        ),
    ];

    /// Real measurements whose verdict differs from what their own flags say, and why.
    const DISAGREE: &[(&str, &str)] = &[(
        "01202003044cadd4e9b30806be0e72a6e05e161a",
        "ooniprobe 2.3.0 (measurement-kit, no ASN database) called every answer inconsistent \
         and set facebook_dns_blocking, but every answer is in AS32934's 157.240.0.0/16 and \
         no endpoint was connected to: nothing shows blocking, nothing shows access",
    )];

    #[test]
    fn every_real_measurement_of_a_service_test_scores_as_its_flags_say() {
        let index = std::fs::read_to_string(format!("{REAL}INDEX.csv")).expect("index");
        let listed: Vec<&str> = index
            .lines()
            .filter(|l| SERVICE_TESTS.iter().any(|t| l.contains(&format!(",{t},"))))
            .filter_map(|l| l.split(',').next())
            .collect();
        // Every real file of these tests is in the table.
        for file in &listed {
            assert!(
                REAL_SERVICES.iter().any(|(f, _)| f == file),
                "{file} is not scored here"
            );
        }
        assert_eq!(listed.len(), REAL_SERVICES.len());
        let mut disagreements = 0;
        for (file, expected) in REAL_SERVICES {
            let ms = real(file);
            assert_eq!(ms.len(), expected.len(), "{file}");
            for (m, (blocking, accessible)) in ms.iter().zip(expected.iter()) {
                let v = score_real(m);
                assert_eq!(
                    short(&v),
                    (blocking.to_string(), *accessible),
                    "{file}: {}",
                    dbg(&v)
                );
                if let Some((_, why)) = DISAGREE.iter().find(|(id, _)| file.contains(id)) {
                    assert_ne!(
                        blocked(&v),
                        flags_say(m),
                        "{file}: listed as disagreeing: {why}"
                    );
                    disagreements += 1;
                } else {
                    assert_eq!(blocked(&v), flags_say(m), "{file}: {}", dbg(&v));
                }
            }
        }
        assert_eq!(disagreements, DISAGREE.len());
    }

    #[test]
    fn targets_are_the_service_or_the_inputs_host() {
        let v = score_service("whatsapp", None, &json!({})).expect("whatsapp");
        assert_eq!(v.target, "whatsapp");
        let v = score_service("vanilla_tor", None, &json!({})).expect("vanilla_tor");
        assert_eq!(v.target, "tor");
        let v = score_service("urlgetter", Some("https://Www.Example.ORG/x?y"), &json!({}))
            .expect("urlgetter");
        assert_eq!(v.target, "www.example.org");
        let v = score_service("dnscheck", Some("dot://[2001:db8::1]:853/"), &json!({}))
            .expect("dnscheck");
        assert_eq!(v.target, "2001:db8::1");
        let v = score_service(
            "stunreachability",
            None,
            &json!({"endpoint": "stun.l.google.com:19302"}),
        )
        .expect("stun");
        assert_eq!(v.target, "stun.l.google.com");
        let v = score_service(
            "stunreachability",
            Some("stun://stun.example:3478"),
            &json!({}),
        )
        .expect("stun");
        assert_eq!(v.target, "stun.example");
        let v = score_service("urlgetter", Some("ooni.org"), &json!({})).expect("urlgetter");
        assert_eq!(v.target, "ooni.org");
        assert!(score_service("web_connectivity", None, &json!({})).is_none());
        assert!(score_service("ndt", None, &json!({})).is_none());
    }

    #[test]
    fn missing_null_and_wrongly_typed_keys_are_undetermined_never_a_panic() {
        let shapes = [
            json!(null),
            json!({}),
            json!([]),
            json!("x"),
            json!({"requests": null, "tcp_connect": null, "queries": null, "targets": null}),
            json!({"requests": [null, 1, {"request": null}], "tcp_connect": [{"status": null}],
                   "queries": [{"answers": null}], "targets": [1, 2], "lookups": null,
                   "sent": null, "received": "x", "tor_logs": null, "tor_progress": "x",
                   "failure": 7, "tampering": null}),
        ];
        for t in SERVICE_TESTS {
            for tk in &shapes {
                let v = score_service(t, Some("::"), tk).expect("scored");
                assert_eq!(
                    (&v.blocking, v.accessible),
                    (&None, None),
                    "{t} {tk}: {}",
                    dbg(&v)
                );
            }
        }
    }

    fn layer(test: &str, input: Option<&str>, tk: Value) -> String {
        let v = score_service(test, input, &tk).expect("scored");
        short(&v).0
    }

    fn connect(ip: &str, port: u16, failure: Option<&str>) -> Value {
        json!({"ip": ip, "port": port, "status": {"success": failure.is_none(), "failure": failure}})
    }

    fn query(host: &str, ips: &[&str], failure: Option<&str>) -> Value {
        let answers: Vec<Value> = ips.iter().map(|ip| json!({"ipv4": ip})).collect();
        json!({"hostname": host, "failure": failure, "answers": answers})
    }

    fn request(url: &str, failure: Option<&str>) -> Value {
        json!({"request": {"url": url}, "failure": failure, "response": {"code": 200}})
    }

    fn whatsapp_keys(web: Option<&str>, register: Option<&str>, endpoints_ok: bool) -> Value {
        json!({
            "queries": [query("e1.whatsapp.net", &["157.240.1.53"], None),
                        query("web.whatsapp.com", &["157.240.1.60"], None),
                        query("v.whatsapp.net", &["157.240.1.61"], None)],
            "tcp_connect": [connect("157.240.1.53", 5222, (!endpoints_ok).then_some("generic_timeout_error")),
                            connect("157.240.1.53", 443, (!endpoints_ok).then_some("generic_timeout_error")),
                            connect("157.240.1.60", 443, None),
                            connect("157.240.1.61", 443, None)],
            "tls_handshakes": [{"server_name": "web.whatsapp.com", "failure": web.filter(|f| f.starts_with("ssl_") || *f == "connection_reset")},
                               {"server_name": "v.whatsapp.net", "failure": null}],
            "requests": [request("https://web.whatsapp.com/", web),
                         request("https://v.whatsapp.net/v2/register", register)],
        })
    }

    #[test]
    fn whatsapp_blocked_endpoints_web_and_registration_each_on_their_layer() {
        assert_eq!(
            layer("whatsapp", None, whatsapp_keys(None, None, true)),
            "false"
        );
        // Every endpoint connect times out: the app cannot reach its servers.
        assert_eq!(
            layer("whatsapp", None, whatsapp_keys(None, None, false)),
            "tcp_ip"
        );
        // The web client's handshake is reset (SNI filtering): its stage says tls.
        assert_eq!(
            layer(
                "whatsapp",
                None,
                whatsapp_keys(Some("connection_reset"), None, true)
            ),
            "tls"
        );
        // The registration server times out after the handshake worked.
        assert_eq!(
            layer(
                "whatsapp",
                None,
                whatsapp_keys(None, Some("generic_timeout_error"), true)
            ),
            "http-failure"
        );
        // NXDOMAIN for every endpoint, no connects.
        let tk = json!({
            "queries": [query("e1.whatsapp.net", &[], Some("dns_nxdomain_error")),
                        query("e2.whatsapp.net", &[], Some("dns_nxdomain_error"))],
            "tcp_connect": [],
            "requests": [request("https://web.whatsapp.com/", None),
                         request("https://v.whatsapp.net/v2/register", None)],
        });
        assert_eq!(layer("whatsapp", None, tk), "dns");
        // A probe error is not blocking.
        let tk = whatsapp_keys(Some("unknown_failure: 'ascii' codec"), None, true);
        assert_eq!(layer("whatsapp", None, tk), "null");
        // Only the summary keys (an older probe): they decide.
        let tk = json!({"whatsapp_endpoints_status": "ok", "registration_server_status": "ok",
                        "whatsapp_web_status": "blocked", "whatsapp_web_failure": "ssl_invalid_certificate"});
        assert_eq!(layer("whatsapp", None, tk), "tls");
        // ooniprobe 2.x's title heuristic: blocked with no failure says nothing.
        let tk = json!({"whatsapp_endpoints_status": "ok", "registration_server_status": "ok",
                        "whatsapp_web_status": "blocked", "whatsapp_web_failure": null});
        assert_eq!(layer("whatsapp", None, tk), "null");
    }

    #[test]
    fn telegram_dcs_and_web_client() {
        let dcs = |tcp_fail: bool, http_fail: bool| {
            let f = |b: bool| b.then_some("generic_timeout_error");
            json!({
                "tcp_connect": [connect("149.154.175.50", 80, f(tcp_fail)), connect("149.154.167.51", 443, f(tcp_fail))],
                "requests": [request("http://149.154.175.50/", f(http_fail || tcp_fail)),
                             request("http://149.154.167.51:443/", f(http_fail || tcp_fail)),
                             request("https://web.telegram.org/", None)],
            })
        };
        assert_eq!(layer("telegram", None, dcs(false, false)), "false");
        assert_eq!(layer("telegram", None, dcs(true, false)), "tcp_ip");
        assert_eq!(layer("telegram", None, dcs(false, true)), "http-failure");
        // The web client's TLS handshake fails.
        let mut tk = dcs(false, false);
        tk["requests"][2]["failure"] = json!("ssl_failed_handshake");
        assert_eq!(layer("telegram", None, tk), "tls");
        // Only the summary keys.
        let tk = json!({"telegram_tcp_blocking": true, "telegram_http_blocking": true,
                        "telegram_web_status": "ok", "telegram_web_failure": null});
        assert_eq!(layer("telegram", None, tk), "tcp_ip");
        let tk = json!({"telegram_tcp_blocking": false, "telegram_http_blocking": false,
                        "telegram_web_status": "ok", "telegram_web_failure": null});
        assert_eq!(layer("telegram", None, tk), "false");
    }

    #[test]
    fn signal_status_failure_and_broken_versions() {
        let ok = json!({"failure": null, "failed_operation": null, "signal_backend_status": "ok"});
        assert_eq!(layer("signal", None, ok.clone()), "false");
        let tls = json!({"failure": null, "failed_operation": null,
                         "signal_backend_status": "blocked", "signal_backend_failure": "ssl_unknown_authority"});
        assert_eq!(layer("signal", None, tls.clone()), "tls");
        let test_failed = json!({"failure": "generic_timeout_error", "signal_backend_status": "blocked",
                                 "signal_backend_failure": "generic_timeout_error"});
        assert_eq!(layer("signal", None, test_failed), "null");
        // Version 0.2.3 after Signal's certificate change: unknown, whatever it says.
        let meta = |tv: &str, day: &str, engine: &str| Meta {
            test_version: Some(tv.into()),
            measurement_start_time: Some(format!("{day} 10:00:00")),
            engine_name: Some(OONI_ENGINE.into()),
            engine_version: Some(engine.into()),
        };
        let v = score_service_with("signal", None, &tls, &meta("0.2.3", "2023-11-08", "3.19.0"))
            .expect("signal");
        assert_eq!(
            (v.blocking.clone(), v.rule.as_str()),
            (None, "signal.version"),
            "{}",
            dbg(&v)
        );
        // The same the day before, or with the fixed version: scored.
        let v = score_service_with("signal", None, &tls, &meta("0.2.3", "2023-11-06", "3.19.0"))
            .expect("signal");
        assert_eq!(short(&v).0, "tls");
        let v = score_service_with("signal", None, &tls, &meta("0.2.5", "2024-01-01", "3.19.0"))
            .expect("signal");
        assert_eq!(short(&v).0, "tls");
        // An engine older than 3.17.2 after 2023-05-02, and test version 0.2.4 at any time.
        let v = score_service_with("signal", None, &ok, &meta("0.2.3", "2023-06-01", "3.17.1"))
            .expect("signal");
        assert_eq!(v.blocking, None);
        let v = score_service_with("signal", None, &ok, &meta("0.2.4", "2021-01-01", "3.19.0"))
            .expect("signal");
        assert_eq!(v.blocking, None);
        // Another engine's version numbers are not OONI's: Vantage 0.1.0 is not an old engine.
        let vantage = Meta {
            engine_name: Some("vantage".into()),
            ..meta("0.2.5", "2024-01-01", "0.1.0")
        };
        let v = score_service_with("signal", None, &ok, &vantage).expect("signal");
        assert_eq!(short(&v).0, "false");
    }

    #[test]
    fn facebook_messenger_inconsistent_dns_unreachable_endpoints_and_legacy_keys() {
        let all = |consistent: bool, reachable: Option<bool>| {
            let mut tk = serde_json::Map::new();
            for (name, _) in FACEBOOK_ENDPOINTS {
                tk.insert(format!("facebook_{name}_dns_consistent"), json!(consistent));
                tk.insert(format!("facebook_{name}_reachable"), json!(reachable));
            }
            Value::Object(tk)
        };
        assert_eq!(
            layer("facebook_messenger", None, all(true, Some(true))),
            "false"
        );
        assert_eq!(
            layer("facebook_messenger", None, all(true, Some(false))),
            "tcp_ip"
        );
        // Answers outside Facebook's space called inconsistent: DNS.
        let mut tk = all(false, None);
        tk["queries"] = json!([query("b-api.facebook.com", &["10.10.34.36"], None)]);
        assert_eq!(layer("facebook_messenger", None, tk), "dns");
        // One endpoint inconsistent, with its answer in Facebook's space but reachable: ok.
        let mut tk = all(true, Some(true));
        tk["facebook_b_api_dns_consistent"] = json!(false);
        tk["facebook_dns_blocking"] = json!(true);
        tk["queries"] = json!([query("b-api.facebook.com", &["157.240.1.35"], None)]);
        assert_eq!(layer("facebook_messenger", None, tk), "false");
        // The probe bug OONI's fastpath works around: facebook_dns_blocking with every
        // endpoint consistent.
        let mut tk = all(true, Some(true));
        tk["facebook_dns_blocking"] = json!(true);
        assert_eq!(layer("facebook_messenger", None, tk), "false");
        // Up to 0.3.0 the keys had dashes.
        let tk = json!({"facebook-b-api-dns-consistent": false, "facebook-b-api-reachable": null,
                        "facebook-dns-blocking": true});
        assert_eq!(layer("facebook_messenger", None, tk), "dns");
        // Only the summary flags.
        let tk = json!({"facebook_dns_blocking": false, "facebook_tcp_blocking": true});
        assert_eq!(layer("facebook_messenger", None, tk), "tcp_ip");
    }

    #[test]
    fn tor_targets_and_vanilla_tor_bootstrap() {
        let target = |failure: Value, connect: Option<&str>, handshake: Option<&str>| {
            json!({"failure": failure, "network_events": null,
                   "summary": {"connect": {"failure": connect}, "handshake": {"failure": handshake}}})
        };
        let t = json!({"targets": {
            "a": target(json!("generic_timeout_error"), Some("generic_timeout_error"), None),
            "b": target(json!("generic_timeout_error"), Some("generic_timeout_error"), None),
            "c": target(json!("connection_reset"), None, Some("connection_reset")),
            "d": target(Value::Null, None, None),
            "e": target(json!(false), None, None),
        }});
        assert_eq!(layer("tor", None, t), "tcp_ip");
        let t = json!({"targets": {
            "a": target(json!("connection_reset"), None, Some("connection_reset")),
            "b": target(json!("connection_reset"), None, Some("connection_reset")),
            "c": target(Value::Null, None, None),
        }});
        assert_eq!(layer("tor", None, t), "tls");
        // Half failed is not more than half.
        let t = json!({"targets": {
            "a": target(json!("generic_timeout_error"), Some("generic_timeout_error"), None),
            "b": target(Value::Null, None, None),
        }});
        assert_eq!(layer("tor", None, t), "false");
        // Stale obfs4 keys are not censorship, and a target list (early versions) is unknown.
        let t = json!({"targets": {
            "a": target(json!("handshake: ntor AUTH mismatch: Derived: 1 Received: 2"), None, None),
            "b": target(json!("handshake: ntor AUTH mismatch: Derived: 1 Received: 2"), None, None),
            "c": target(Value::Null, None, None),
        }});
        assert_eq!(layer("tor", None, t), "false");
        assert_eq!(layer("tor", None, json!({"targets": [1]})), "null");

        let vt = |logs: Value, progress: u64, tag: &str| json!({"tor_logs": logs, "tor_progress": progress, "tor_progress_tag": tag, "success": progress == 100});
        assert_eq!(
            layer(
                "vanilla_tor",
                None,
                vt(json!(["Bootstrapped 100% (done): Done"]), 100, "done")
            ),
            "false"
        );
        assert_eq!(
            layer("vanilla_tor", None, vt(json!([]), 5, "conn")),
            "tcp_ip"
        );
        assert_eq!(
            layer("vanilla_tor", None, vt(json!([]), 14, "handshake")),
            "tls"
        );
        assert_eq!(
            layer(
                "vanilla_tor",
                None,
                vt(json!([]), 50, "loading_descriptors")
            ),
            "http-failure"
        );
        // Version 0.1's log is one string; `success: false` with the log at 100 % is the old
        // probe bug OONI's fastpath works around.
        let tk = json!({"tor_log": "...\nBootstrapped 100%: Done\n", "success": false, "tor_progress": 0});
        assert_eq!(layer("vanilla_tor", None, tk), "false");
    }

    #[test]
    fn dnscheck_stun_and_urlgetter_failures_by_operation() {
        let lookup = |failure: Option<&str>, op: Option<&str>| json!({"failure": failure, "failed_operation": op});
        let dc = |lookups: Value| json!({"bootstrap_failure": null, "lookups": lookups});
        let input = Some("dot://dns.example:853/");
        assert_eq!(
            layer(
                "dnscheck",
                input,
                json!({"bootstrap_failure": "dns_nxdomain_error"})
            ),
            "dns"
        );
        assert_eq!(
            layer(
                "dnscheck",
                input,
                dc(json!({"dot://1.2.3.4:853": lookup(None, None),
                                                 "dot://1.2.3.5:853": lookup(Some("generic_timeout_error"), Some("connect"))}))
            ),
            "false"
        );
        assert_eq!(
            layer(
                "dnscheck",
                input,
                dc(
                    json!({"a": lookup(Some("generic_timeout_error"), Some("connect")),
                                                 "b": lookup(Some("connection_reset"), Some("tls_handshake")),
                                                 "c": lookup(Some("connection_reset"), Some("tls_handshake"))})
                )
            ),
            "tls"
        );
        assert_eq!(layer("dnscheck", input, dc(json!({}))), "null");

        let stun_in = Some("stun://stun.example:3478");
        assert_eq!(
            layer("stunreachability", stun_in, json!({"failure": null})),
            "false"
        );
        assert_eq!(
            layer(
                "stunreachability",
                stun_in,
                json!({"failure": "generic_timeout_error"})
            ),
            "tcp_ip"
        );
        assert_eq!(
            layer(
                "stunreachability",
                stun_in,
                json!({"failure": "dns_nxdomain_error"})
            ),
            "dns"
        );

        let ug = Some("https://blocked.example/");
        let fail = |f: &str, op: &str| json!({"failure": f, "failed_operation": op});
        assert_eq!(layer("urlgetter", ug, json!({"failure": null})), "false");
        assert_eq!(
            layer("urlgetter", ug, fail("dns_nxdomain_error", "resolve")),
            "dns"
        );
        assert_eq!(
            layer("urlgetter", ug, fail("generic_timeout_error", "connect")),
            "tcp_ip"
        );
        assert_eq!(
            layer("urlgetter", ug, fail("connection_reset", "tls_handshake")),
            "tls"
        );
        assert_eq!(
            layer("urlgetter", ug, fail("eof_error", "http_round_trip")),
            "http-failure"
        );
        assert_eq!(
            layer(
                "urlgetter",
                ug,
                fail("unknown_failure: bad scheme", "top_level")
            ),
            "null"
        );
        // No failed_operation (older engines): the stage of the request's host decides.
        let tk = json!({"failure": "generic_timeout_error",
                        "requests": [request("https://blocked.example/", Some("generic_timeout_error"))],
                        "queries": [query("blocked.example", &["127.0.0.1"], None)]});
        assert_eq!(layer("urlgetter", ug, tk), "dns");
    }

    #[test]
    fn middleboxes_tampering_with_headers_and_request_lines() {
        let hhfm = |body: Value, sent: Value| json!({"requests": [{"request": {"headers": sent}, "response": {"body": body, "code": 200}}]});
        let sent = json!({"AccEpT": "text/html", "hoSt": "abc.com"});
        let echo = json!(
            r#"{"headers_dict": {"AccEpT": ["text/html"], "hoSt": ["abc.com"], "Connection": ["close"]}}"#
        );
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(echo, sent.clone())
            ),
            "false"
        );
        // A proxy normalised the capitalisation.
        let lowered = json!(r#"{"headers_dict": {"accept": ["text/html"], "host": ["abc.com"]}}"#);
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(lowered, sent.clone())
            ),
            "http-diff"
        );
        // A block page instead of the echo, and no body.
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(json!("<html>blocked</html>"), sent.clone())
            ),
            "http-diff"
        );
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(Value::Null, sent.clone())
            ),
            "http-diff"
        );
        // The body as base64, and the headers as ooniprobe 1.x's list of [name, [value]].
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(r#"{"headers_dict": {"AccEpT": ["text/html"], "hoSt": ["abc.com"]}}"#);
        let legacy = json!([["AccEpT", ["text/html"]], ["hoSt", ["abc.com"]]]);
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(json!({"format": "base64", "data": b64}), legacy)
            ),
            "false"
        );
        // The helper never answered: nothing to compare.
        let tk = json!({"failure": "generic_timeout_error", "requests": [{"request": {"headers": sent}, "response": null}]});
        assert_eq!(layer("http_header_field_manipulation", None, tk), "null");

        let lines = json!({"sent": ["GET / HTTP/1.1\r\n", "XXX / HTTP/1.1\r\n"],
                           "received": ["GET / HTTP/1.1\r\n", "XXX / HTTP/1.1\r\n"], "tampering": true});
        // The probe's `tampering` flag is not read: the lines are.
        assert_eq!(layer("http_invalid_request_line", None, lines), "false");
        let lines = json!({"sent": ["GET / HTTP/1.1\r\n", "XXX / HTTP/1.1\r\n"],
                           "received": ["GET / HTTP/1.1\r\n", "HTTP/1.1 400 Bad Request\r\n"]});
        assert_eq!(layer("http_invalid_request_line", None, lines), "http-diff");
    }

    #[test]
    fn the_stored_verdict_names_its_rule_set_and_each_check() {
        let v = score_service(
            "whatsapp",
            None,
            &whatsapp_keys(None, Some("ssl_unknown_authority"), true),
        )
        .expect("whatsapp");
        assert_eq!(v.rule, "whatsapp.registration.blocked");
        assert_eq!(v.rule_set, RULE_SET);
        let text = serde_json::to_value(&v).expect("json");
        assert_eq!(text["blocking"], "tls");
        assert_eq!(text["checks"][1]["name"], "registration");
        assert_eq!(text["checks"][1]["layer"], "tls");
        assert_eq!(
            text["checks"][1]["why"],
            "https://v.whatsapp.net/v2/register: ssl_unknown_authority"
        );
        assert_eq!(text["checks"][0]["outcome"], "ok");
    }
}
