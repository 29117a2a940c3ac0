//! The tests of one input with the Go engine's generic steps: urlgetter (OONI spec ts-027),
//! dnscheck (ts-028) and stunreachability (ts-025), whose failures say their layer through
//! `failed_operation` or the failure string.

use serde_json::Value;

use super::{
    Layer, OPERATION_LAYERS, Outcome, arr, failure_layer, host_of, is_probe_error, layer_of, str_at,
};

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
pub(super) fn urlgetter(tk: &Value) -> Outcome {
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
pub(super) fn dnscheck(tk: &Value) -> Outcome {
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
pub(super) fn stun(tk: &Value) -> Outcome {
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

#[cfg(test)]
mod tests {
    use crate::verdict::services::test_support::{layer, query, request};
    use serde_json::{Value, json};

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
}
