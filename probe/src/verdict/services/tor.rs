//! The circumvention tests: tor (OONI spec ts-023), which reaches each bridge and directory
//! authority, and vanilla_tor (ts-016), which bootstraps tor and reports where it stopped.

use serde_json::Value;

use super::{Layer, Outcome, failure_layer, str_at};

/// Tor (OONI spec ts-023): each target's `failure` (`null` worked, `false` did not run, a
/// string failed), blocked when more than half of the targets that ran failed, as OONI's
/// fastpath scores it. An obfs4 `ntor AUTH mismatch` is a stale bridge key, not censorship
/// (ts-023, "Ntor AUTH mismatch"): not counted. The layer is the most common among the
/// failed targets: `summary.connect` failed is `tcp_ip`, `summary.handshake` (TLS or obfs4)
/// is `tls`, else the failure string's (a directory port is fetched over HTTP).
pub(super) fn tor(tk: &Value) -> Outcome {
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
pub(super) fn vanilla_tor(tk: &Value) -> Outcome {
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

#[cfg(test)]
mod tests {
    use crate::verdict::services::test_support::layer;
    use serde_json::{Value, json};

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
}
