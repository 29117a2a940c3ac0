//! Scoring of the probe's `quic` test on arrival (`docs/quic.md`, "In the aggregator": the
//! aggregator scores, the probe's own verdict is for display).
//!
//! The verdict is made again from the recorded handshakes with the probe library's rules
//! ([`vantage_probe::quic::assess`]), not read from the probe's `quic_blocking`. Its target is
//! the host measured with the test named, `quic:<host>` ([`quic_target`]): QUIC is blocked per
//! destination (UDP 443 dropped to some addresses, Initial packets filtered by SNI), so the
//! blocking detector must see each host's QUIC on its own and make the event "QUIC blocked:
//! news.example" from that host's measurements alone, never from a control host's that works.
//! The prefix keeps a host's QUIC apart from the same host's web_connectivity, whose working
//! TCP would otherwise dilute the QUIC failures in one target. The event is on the layer where
//! QUIC failed: `tcp_ip` for datagrams dropped or refused (as a UDP exchange is for OONI's
//! stunreachability), `tls` for a handshake failing inside QUIC. A host unreachable over both
//! QUIC and TCP says nothing of QUIC and stays undetermined: it is web_connectivity's to judge.

use serde::{Deserialize, Serialize};
use vantage_probe::ooni::{TcpConnect, TlsHandshake};
use vantage_probe::quic::{Assessment, QUIC, Verdict, assess};
use vantage_probe::verdict::services::{Check, ServiceVerdict};

use crate::store::Row;

/// The rule set that scored a quic measurement, stored with its verdict.
pub const QUIC_RULES: &str = "vantage-quic-1";

/// The prefix of a quic verdict's target (the row's domain), and the whole target of a
/// measurement that names no host.
pub const QUIC_TARGET: &str = "quic";

/// The target a quic measurement of `host` is stored under: `quic:<host>`, as the blocking
/// detector keys it and `timeline` prints it.
pub fn quic_target(host: Option<&str>) -> String {
    match host {
        Some(h) if !h.is_empty() => format!("{QUIC_TARGET}:{h}"),
        _ => QUIC_TARGET.to_string(),
    }
}

/// The host of a measurement's `input` (the URL measured), lowercased.
fn input_host(input: Option<&str>) -> Option<String> {
    input
        .and_then(|i| url::Url::parse(i).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
}

/// The most steps of each kind a quic measurement may hold: the probe measures at most
/// `vantage_probe::quic::MAX_ADDRESSES` addresses, one of each per address. More is not the
/// test, and would let one measurement weigh more than it measured.
pub const MAX_STEPS: usize = 16;

/// The stored verdict: the assessment, with what it was about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuicVerdict {
    /// `quic`.
    pub test_name: String,
    /// [`quic_target`] of the host.
    pub target: String,
    /// The host measured.
    pub host: Option<String>,
    /// [`QUIC_RULES`].
    pub rule_set: String,
    /// What the handshakes show.
    #[serde(flatten)]
    pub assessment: Assessment,
}

/// The steps a quic measurement's `test_keys` hold, as the verdict reads them.
#[derive(Debug, Default, Deserialize)]
struct Keys {
    #[serde(default)]
    dns_failure: Option<String>,
    #[serde(default)]
    tcp_connect: Vec<TcpConnect>,
    #[serde(default)]
    tls_handshakes: Vec<TlsHandshake>,
    #[serde(default)]
    quic_handshakes: Vec<TlsHandshake>,
}

impl Keys {
    fn too_many(&self) -> bool {
        self.tcp_connect.len() > MAX_STEPS
            || self.tls_handshakes.len() > MAX_STEPS
            || self.quic_handshakes.len() > MAX_STEPS
    }

    fn assess(&self) -> Assessment {
        assess(
            self.dns_failure.as_deref(),
            &self.tcp_connect,
            &self.tls_handshakes,
            &self.quic_handshakes,
        )
    }
}

/// The verdict on a quic measurement of `input` (its URL) with `test_keys`, in the form
/// `vantage-aggregator score` prints for OONI's service tests (`ServiceVerdict`: target,
/// blocking, accessible, the rule, one check). Keys that cannot be read, or hold more steps
/// than the test takes, are an error.
pub fn service_verdict(
    input: Option<&str>,
    test_keys: &serde_json::Value,
) -> Result<ServiceVerdict, String> {
    let keys =
        Keys::deserialize(test_keys).map_err(|e| format!("not a {QUIC} measurement: {e}"))?;
    if keys.too_many() {
        return Err(format!(
            "malformed: a {QUIC} measurement has at most {MAX_STEPS} steps of each kind"
        ));
    }
    let a = keys.assess();
    let (outcome, layer) = match (a.verdict, a.layer.as_deref()) {
        (_, Some("tls")) => ("blocked", Some("tls")),
        (_, Some(_)) => ("blocked", Some("tcp_ip")),
        (Verdict::Accessible | Verdict::TcpBlocked, None) => ("ok", None),
        _ => ("unknown", None),
    };
    Ok(ServiceVerdict {
        test_name: QUIC.into(),
        target: quic_target(input_host(input).as_deref()),
        blocking: a.blocking(),
        accessible: a.accessible(),
        rule: format!("{QUIC}.{}", a.verdict.as_str()),
        rule_set: QUIC_RULES,
        checks: vec![Check {
            name: "handshakes".into(),
            outcome,
            layer,
            why: a.reason,
        }],
    })
}

/// Scores a `quic` measurement (`measurement` is its JSON) into `row`, whose domain becomes
/// [`quic_target`] of the host its `input` names (else of the domain it came with, as a row
/// rescored without one has none). A measurement whose steps cannot be read is kept unscored;
/// one holding more steps than the test takes is refused (`Err` with the reason).
pub fn apply_quic(row: &mut Row, measurement: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Part {
        test_keys: Keys,
    }
    let host = input_host(row.input.as_deref()).or_else(|| {
        let domain = row.domain.take().filter(|d| d != QUIC_TARGET)?;
        Some(match domain.strip_prefix("quic:") {
            Some(host) => host.to_string(),
            None => domain,
        })
    });
    row.domain = Some(quic_target(host.as_deref()));
    let Ok(part) = serde_json::from_str::<Part>(measurement) else {
        return Ok(());
    };
    let k = part.test_keys;
    if k.too_many() {
        return Err(format!(
            "malformed: a {QUIC} measurement has at most {MAX_STEPS} steps of each kind"
        ));
    }
    let a = k.assess();
    row.blocking = a.blocking().and_then(|b| serde_json::to_string(&b).ok());
    row.accessible = a.accessible();
    row.confirmed = false;
    row.rule_set = Some(QUIC_RULES.into());
    row.verdict = serde_json::to_string(&QuicVerdict {
        test_name: QUIC.into(),
        target: quic_target(host.as_deref()),
        host,
        rule_set: QUIC_RULES.into(),
        assessment: a,
    })
    .ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            id: "x".into(),
            source: "vantage".into(),
            probe_key: None,
            probe_cc: "ZZ".into(),
            probe_asn: 0,
            test_name: QUIC.into(),
            domain: Some("news.example".into()),
            input: Some("https://news.example/".into()),
            measured_at: "2026-01-01 00:00:00".into(),
            blocking: None,
            accessible: None,
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: String::new(),
            network_verified: false,
            route: crate::store::Route::Upload,
        }
    }

    fn measurement(quic: Option<&str>, tls: Option<&str>, copies: usize) -> String {
        let hs = |network: &str, failure: Option<&str>| {
            serde_json::json!({
                "network": network, "address": "192.0.2.1:443", "cipher_suite": "",
                "failure": failure, "negotiated_protocol": "", "peer_certificates": null,
                "server_name": "news.example", "t": 0.1, "tls_version": ""
            })
        };
        let connect = serde_json::json!({
            "ip": "192.0.2.1", "port": 443, "status": {"failure": null, "success": true}
        });
        serde_json::json!({
            "test_name": "quic",
            "test_keys": {
                "tcp_connect": vec![connect; copies],
                "tls_handshakes": vec![hs("tcp", tls); copies],
                "quic_handshakes": vec![hs("udp", quic); copies],
                // The probe's own verdict is not read: the handshakes decide.
                "quic_blocking": "accessible",
            }
        })
        .to_string()
    }

    #[test]
    fn dropped_quic_beside_working_tls_is_blocked_on_tcp_ip_under_the_hosts_quic_target() {
        let mut r = row();
        apply_quic(&mut r, &measurement(Some("generic_timeout_error"), None, 1)).expect("ok");
        assert_eq!(r.domain.as_deref(), Some("quic:news.example"));
        assert_eq!(r.blocking.as_deref(), Some("\"tcp_ip\""));
        assert_eq!(r.accessible, Some(false));
        assert_eq!(r.rule_set.as_deref(), Some(QUIC_RULES));
        let v: serde_json::Value =
            serde_json::from_str(r.verdict.as_deref().unwrap_or("null")).expect("verdict");
        assert_eq!(v["verdict"], "quic-blocked");
        assert_eq!(v["host"], "news.example");
    }

    #[test]
    fn both_failing_is_undetermined_and_working_quic_is_no_blocking() {
        let mut r = row();
        apply_quic(
            &mut r,
            &measurement(Some("generic_timeout_error"), Some("connection_reset"), 1),
        )
        .expect("ok");
        assert_eq!((r.blocking.as_deref(), r.accessible), (None, None));
        let mut r = row();
        apply_quic(&mut r, &measurement(None, None, 2)).expect("ok");
        assert_eq!(
            (r.blocking.as_deref(), r.accessible),
            (Some("false"), Some(true))
        );
        let mut r = row();
        apply_quic(&mut r, &measurement(Some("ssl_failed_handshake"), None, 1)).expect("ok");
        assert_eq!(r.blocking.as_deref(), Some("\"tls\""));
    }

    #[test]
    fn the_score_command_form_says_the_same() {
        let m: serde_json::Value =
            serde_json::from_str(&measurement(Some("generic_timeout_error"), None, 1))
                .expect("json");
        let v =
            service_verdict(Some("https://News.Example:443/x"), &m["test_keys"]).expect("verdict");
        assert_eq!(
            (v.target.as_str(), v.rule.as_str()),
            ("quic:news.example", "quic.quic-blocked")
        );
        assert_eq!(
            v.blocking,
            Some(vantage_probe::ooni::Blocking::Kind("tcp_ip".into()))
        );
        assert_eq!(
            (v.checks[0].outcome, v.checks[0].layer),
            ("blocked", Some("tcp_ip"))
        );
        let m: serde_json::Value =
            serde_json::from_str(&measurement(Some("eof_error"), Some("eof_error"), 1))
                .expect("json");
        let v = service_verdict(None, &m["test_keys"]).expect("verdict");
        assert_eq!((v.blocking, v.checks[0].outcome), (None, "unknown"));
        assert_eq!(v.target, "quic", "no input, no host: the bare test name");
        assert!(service_verdict(None, &serde_json::json!({"quic_handshakes": "x"})).is_err());
    }

    #[test]
    fn the_target_is_the_inputs_host_whatever_the_row_held() {
        let m = measurement(Some("generic_timeout_error"), None, 1);
        // As `rescore` builds it: no domain, the input alone.
        let mut r = row();
        r.domain = None;
        r.input = Some("https://Other.Example/".into());
        apply_quic(&mut r, &m).expect("ok");
        assert_eq!(r.domain.as_deref(), Some("quic:other.example"));
        // The stored verdict names the host and the target alike.
        let v: serde_json::Value =
            serde_json::from_str(r.verdict.as_deref().unwrap_or("null")).expect("verdict");
        assert_eq!(
            (&v["target"], &v["host"]),
            (&"quic:other.example".into(), &"other.example".into())
        );
        // An input that is no URL: the domain it came with, never prefixed twice.
        for (domain, expected) in [
            (Some("a.example"), "quic:a.example"),
            (Some("quic:a.example"), "quic:a.example"),
            (Some("quic"), "quic"),
            (Some("quicker.example"), "quic:quicker.example"),
            (None, "quic"),
        ] {
            let mut r = row();
            r.input = Some("not a url".into());
            r.domain = domain.map(String::from);
            apply_quic(&mut r, &m).expect("ok");
            assert_eq!(r.domain.as_deref(), Some(expected), "{domain:?}");
        }
    }

    #[test]
    fn more_steps_than_the_test_takes_is_refused_and_garbage_is_unscored() {
        let mut r = row();
        let err = apply_quic(&mut r, &measurement(None, None, MAX_STEPS + 1)).expect_err("refused");
        assert!(err.contains("at most 16"), "{err}");
        let mut r = row();
        apply_quic(&mut r, r#"{"test_keys": {"quic_handshakes": 7}}"#).expect("kept");
        assert_eq!((r.rule_set, r.blocking), (None, None));
    }
}
