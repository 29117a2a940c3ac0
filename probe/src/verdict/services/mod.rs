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
//!
//! This file holds the interface, the combining of checks into a verdict, and what every
//! family of tests shares: the failure and operation layer tables, the stage a host failed
//! at, the versions known to report wrongly and the JSON readers. The rules of each family are
//! in their own file: `apps.rs` (WhatsApp, Telegram, Signal, Facebook Messenger), `tor.rs`
//! (tor, vanilla_tor), `middlebox.rs` (http_header_field_manipulation,
//! http_invalid_request_line) and `probes.rs` (urlgetter, dnscheck, stunreachability).

mod apps;
mod middlebox;
mod probes;
#[cfg(test)]
mod test_support;
mod tor;

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::engine::bogon::is_bogon;
use crate::ooni::Blocking;

pub use apps::{FACEBOOK_ENDPOINTS, FACEBOOK_NETBLOCKS, TELEGRAM_URLS, UrlCheck, WHATSAPP_URLS};
pub use tor::TOR_PHASES;

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
    /// `telegram`, ...) or, for tests with an input, the input's host (`dnscheck:<host>` for a
    /// resolver, whose web pages are another matter).
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
        "whatsapp" => ("whatsapp".into(), apps::whatsapp(tk)),
        "telegram" => ("telegram".into(), apps::telegram(tk)),
        "signal" => ("signal".into(), apps::signal(tk)),
        "facebook_messenger" => ("facebook_messenger".into(), apps::facebook_messenger(tk)),
        "tor" => ("tor".into(), vec![("targets".into(), tor::tor(tk))]),
        "vanilla_tor" => (
            "tor".into(),
            vec![("bootstrap".into(), tor::vanilla_tor(tk))],
        ),
        "dnscheck" => (
            named_target(input, test_name),
            vec![("resolver".into(), probes::dnscheck(tk))],
        ),
        "stunreachability" => (
            input_target(input, str_at(tk, "endpoint"), test_name),
            vec![("binding".into(), probes::stun(tk))],
        ),
        "http_header_field_manipulation" => (
            test_name.to_string(),
            vec![("headers".into(), middlebox::header_field_manipulation(tk))],
        ),
        "http_invalid_request_line" => (
            test_name.to_string(),
            vec![("request_lines".into(), middlebox::invalid_request_line(tk))],
        ),
        "urlgetter" => (
            input_target(input, None, test_name),
            vec![("fetch".into(), probes::urlgetter(tk))],
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
/// `connection_reset`, `eof_error`, ...) can happen at any stage: its layer is that of the
/// stage that failed for the check's host (read from its lookups, connects and handshakes),
/// else the test's fallback layer.
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

/// A resolver's target is its host with the test named, `dnscheck:<host>`: an encrypted
/// resolver is blocked on its own (TCP 853 dropped, its SNI reset) while its host's web pages
/// may well load (`dns.google`, `cloudflare-dns.com` are both), so the blocking detector must
/// not pool the two, and its event names `dnscheck:dns.google`, not a web site. The aggregator
/// names the probe's quic targets the same way (`quic:<host>`).
fn named_target(input: Option<&str>, test_name: &str) -> String {
    match input.and_then(host_of) {
        Some(host) => format!("{test_name}:{host}"),
        None => test_name.to_string(),
    }
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
    use super::test_support::{dbg, short, whatsapp_keys};
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

    /// One measurement's expected stored `blocking` and `accessible`.
    type Expected = (&'static str, Option<bool>);

    /// Every real measurement of these tests in `tests/data/ooni/real/`, what it scores, and the
    /// stored `blocking` and `accessible` expected.
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
        assert_eq!(v.target, "dnscheck:2001:db8::1");
        let v = score_service("dnscheck", Some("https://DNS.Google/dns-query"), &json!({}))
            .expect("dnscheck");
        assert_eq!(v.target, "dnscheck:dns.google");
        let v = score_service("dnscheck", None, &json!({})).expect("dnscheck");
        assert_eq!(v.target, "dnscheck");
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
