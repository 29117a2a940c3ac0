//! The app tests: WhatsApp (OONI spec ts-018), Telegram (ts-020), Signal (ts-029) and Facebook
//! Messenger (ts-019), each a list of checks of the URLs, endpoints and data centres the app
//! talks to, read as OONI's fastpath reads them.

use std::net::IpAddr;

use serde_json::Value;

use super::{Layer, Outcome, answers, arr, connect_succeeded, failed, host_of, str_at};
use crate::engine::bogon::is_bogon;

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

/// WhatsApp (OONI spec ts-018): the endpoints the app talks to, the registration service, the
/// web client. OONI's fastpath reads the requests and connects, not the `*_status` keys (a
/// probe bug made those wrong); so does this, falling back to the keys only when the
/// measurement has no requests.
pub(super) fn whatsapp(tk: &Value) -> Vec<(String, Outcome)> {
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
pub(super) fn telegram(tk: &Value) -> Vec<(String, Outcome)> {
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
pub(super) fn signal(tk: &Value) -> Vec<(String, Outcome)> {
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
pub(super) fn facebook_messenger(tk: &Value) -> Vec<(String, Outcome)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::services::test_support::{
        connect, dbg, layer, query, request, short, whatsapp_keys,
    };
    use crate::verdict::services::{Meta, OONI_ENGINE, score_service_with};
    use serde_json::json;

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
}
