//! Verdicts: is a measured URL blocked, how, and how sure are we?
//!
//! Scoring is authoritative on the aggregator (docs/architecture.md, "What probe and aggregator
//! agree on"); the probe uses the same code
//! only to show a volunteer what it saw. Rules are data ([`rules`]), fingerprints are data
//! ([`fingerprints`]), and every verdict names the rule set version that produced it.

pub mod consistency;
pub mod fingerprints;
pub mod http_diff;
pub mod observe;
pub mod rules;
pub mod services;

use serde::Serialize;

use crate::engine::bogon::is_bogon;
use crate::ooni::{Blocking, ControlResponse, WebConnectivityMeasurement};
use crate::throttling::passive::{Goodput, PassiveRules, goodput, steady_cut_kbps};
use consistency::{Consistency, ConsistencyRules, dns_consistency, injected_answers};
use fingerprints::{Fingerprints, Match};
use observe::{Decisive, Observations};
use rules::{Cond, Outcome, RuleSet};

/// The blocking type of a page held to a low rate: the active throttling test's
/// (`crate::throttling`), so that both read the same in stored verdicts.
pub const THROTTLING: &str = "throttling";

/// OONI's own verdict, as found in a measurement, for comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputVerdict {
    /// `test_keys.blocking`.
    pub blocking: Option<Blocking>,
    /// `test_keys.accessible`.
    pub accessible: Option<bool>,
    /// `test_keys.dns_consistency`.
    pub dns_consistency: Option<String>,
}

/// A verdict on one measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The URL.
    pub input: Option<String>,
    /// The probe's country.
    pub probe_cc: String,
    /// `false`, a blocking type, or `null`.
    pub blocking: Option<Blocking>,
    /// Whether the site is reachable from the probe; `null` when unknown.
    pub accessible: Option<bool>,
    /// `consistent`, `inconsistent` or `null`.
    pub dns_consistency: Option<&'static str>,
    /// Whether a blockpage or injection fingerprint for the probe's country matched.
    pub confirmed: bool,
    /// Names of every fingerprint that matched (including `fp` ones).
    pub fingerprints: Vec<String>,
    /// The id of the rule that decided, with `+inconsistent-dns` when DNS overrode it.
    pub rule: String,
    /// The rule set version.
    pub rule_set: &'static str,
    /// What OONI's rules say, when this verdict comes from another rule set and differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ooni_rules_blocking: Option<Option<Blocking>>,
    /// Why there was no usable control, when there was none: the measurement's
    /// `control_failure` (no helper, the helper refused or failed) or why its answer measured
    /// nothing of the site. Such a verdict is never decided by the control
    /// (`docs/scoring.md`, "When the helper refuses or fails"); [`crate::th::describe`] says it
    /// in words for a volunteer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_failure: Option<String>,
    /// OONI's verdict stored in the input, if any.
    pub input_verdict: InputVerdict,
    /// How fast the final page arrived at the probe and at the helper, when its body was large
    /// enough to tell: the passive throttling signal, judged against the target's baseline by
    /// the aggregator (README.md, "Throttling").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<Goodput>,
}

impl Verdict {
    /// Whether the verdict is an anomaly (any blocking type).
    pub fn anomaly(&self) -> bool {
        matches!(self.blocking, Some(Blocking::Kind(_)))
    }

    /// What a volunteer is told of this verdict, the one reading every summary and log line
    /// counts by: a throttled page loads (slowly), so it is never counted as blocked
    /// (docs/scoring.md).
    pub fn finding(&self) -> Finding<'_> {
        match (&self.blocking, self.accessible) {
            (Some(Blocking::Kind(k)), _) if k == THROTTLING => Finding::Throttled,
            (Some(Blocking::Kind(k)), _) => Finding::Blocked(k),
            (Some(Blocking::Flag(false)), Some(true)) => Finding::Accessible,
            (Some(Blocking::Flag(_)), _) => Finding::DownForEveryone,
            (None, _) => Finding::Undetermined,
        }
    }
}

/// A verdict as the volunteer reads it ([`Verdict::finding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding<'a> {
    /// Refused at a layer: OONI's blocking type (`dns`, `tcp_ip`, `tls`, `http-diff`, ...).
    Blocked(&'a str),
    /// Loads, held to a low rate ([`THROTTLING`]).
    Throttled,
    /// Reachable from the probe.
    Accessible,
    /// Unreachable from the control as well: the site is down, not blocked.
    DownForEveryone,
    /// Nothing can be said (the control or the probe's own steps failed).
    Undetermined,
}

impl Finding<'_> {
    /// The finding in a word or two, as `vantage measure`, `vantage results` and the daemon's
    /// log say it.
    pub fn word(self) -> &'static str {
        match self {
            Finding::Blocked(_) => "blocked",
            Finding::Throttled => "throttled",
            Finding::Accessible => "accessible",
            Finding::DownForEveryone => "down for everyone",
            Finding::Undetermined => "undetermined",
        }
    }
}

/// Scores `m` with `set` and `fingerprints`.
pub fn score(
    m: &WebConnectivityMeasurement,
    set: &RuleSet,
    fingerprints: &Fingerprints,
) -> Verdict {
    let mut verdict = score_only(m, set, fingerprints);
    if set.name != rules::OONI.name {
        let ooni = score_only(m, &rules::OONI, fingerprints);
        if ooni.blocking != verdict.blocking {
            verdict.ooni_rules_blocking = Some(ooni.blocking);
        }
    }
    verdict
}

fn score_only(
    m: &WebConnectivityMeasurement,
    set: &RuleSet,
    fingerprints: &Fingerprints,
) -> Verdict {
    let obs = Observations::of(m, set.unusable_control_is_none);
    let consistency = dns_consistency(
        &obs,
        ConsistencyRules {
            tls_proves_address: set.tls_proves_address,
            aaaa_failure_beside_valid_a: set.aaaa_failure_beside_valid_a,
        },
    );
    let matches = fingerprints.matches(m);
    let facts = Facts {
        set,
        m,
        obs: &obs,
        matches: &matches,
    };
    let decided = set
        .rules
        .iter()
        .find(|r| r.when.iter().all(|c| facts.holds(*c)));
    let (mut id, mut outcome) = decided
        .map_or(("undetermined".to_string(), Outcome::Undetermined), |r| {
            (r.id.to_string(), r.then)
        });

    // OONI: whenever DNS is inconsistent, a blocking verdict is a DNS one (ooni/probe#1975,
    // #2206). A failure on both sides is also read as DNS then, since the probe may have been
    // sent to the wrong address.
    // A page held to a rate from an address that is not the site's is the same DNS finding.
    if consistency == Some(Consistency::Inconsistent)
        && matches!(outcome, Outcome::Blocked(k) if k != "dns")
            | matches!(outcome, Outcome::Down | Outcome::Throttled)
    {
        outcome = Outcome::Blocked("dns");
        id.push_str("+inconsistent-dns");
    }
    let confirmed: Vec<&Match> = matches.iter().filter(|x| x.confirmed).collect();
    if set.fingerprints_decide && !confirmed.is_empty() && !matches!(outcome, Outcome::Blocked(_)) {
        let layer = if confirmed.iter().any(|x| x.dns) {
            "dns"
        } else {
            "http-diff"
        };
        outcome = Outcome::Blocked(layer);
        id.push_str("+confirmed-fingerprint");
    }
    let (blocking, accessible) = match outcome {
        Outcome::Accessible => (Some(Blocking::Flag(false)), Some(true)),
        Outcome::Down => (Some(Blocking::Flag(false)), Some(false)),
        Outcome::Undetermined => (None, None),
        Outcome::Blocked(kind) => (Some(Blocking::Kind(kind.into())), Some(false)),
        Outcome::Throttled => (Some(Blocking::Kind(THROTTLING.into())), Some(true)),
    };
    let tk = &m.test_keys;
    Verdict {
        input: m.input.clone(),
        probe_cc: m.probe_cc.to_string(),
        blocking,
        accessible,
        dns_consistency: consistency.map(Consistency::as_str),
        confirmed: !confirmed.is_empty(),
        fingerprints: matches.iter().map(|x| x.name.clone()).collect(),
        rule: id,
        rule_set: set.version,
        ooni_rules_blocking: None,
        control_failure: obs.control_failure.clone(),
        input_verdict: InputVerdict {
            blocking: tk.blocking.clone(),
            accessible: tk.accessible,
            dns_consistency: tk.dns_consistency.clone(),
        },
        goodput: goodput(m, &PassiveRules::default()),
    }
}

struct Facts<'a> {
    set: &'a RuleSet,
    m: &'a WebConnectivityMeasurement,
    obs: &'a Observations<'a>,
    matches: &'a [Match],
}

impl Facts<'_> {
    fn holds(&self, cond: Cond) -> bool {
        let obs = self.obs;
        let control = obs.control;
        let failing_endpoint = match &obs.decisive {
            Decisive::TlsFailed(e) | Decisive::TcpFailed(e) => Some(e.as_str()),
            _ => None,
        };
        match cond {
            Cond::NoControl => control.is_none(),
            Cond::ProbeDnsOnlyBogons => {
                let th_public = control.is_some_and(|c| {
                    c.addrs()
                        .iter()
                        .any(|a| a.parse().is_ok_and(|ip| !is_bogon(ip)))
                });
                th_public
                    && !obs.probe_addrs.is_empty()
                    && obs.probe_addrs.iter().all(|ip| is_bogon(*ip))
            }
            Cond::InjectedDnsAnswers => injected_answers(self.m),
            Cond::HttpOk => matches!(obs.decisive, Decisive::HttpOk(_)),
            Cond::OverTls => match &obs.decisive {
                Decisive::HttpOk(r) | Decisive::HttpFailed(r) => {
                    r.request.url.starts_with("https://")
                }
                Decisive::HttpStepFailed(_) => self
                    .m
                    .input
                    .as_deref()
                    .is_some_and(|u| u.starts_with("https://")),
                _ => false,
            },
            Cond::HttpFailed => matches!(
                obs.decisive,
                Decisive::HttpFailed(_) | Decisive::HttpStepFailed(_)
            ),
            Cond::TlsFailed => matches!(obs.decisive, Decisive::TlsFailed(_)),
            Cond::TcpFailed => matches!(obs.decisive, Decisive::TcpFailed(_)),
            Cond::DnsFailed => matches!(obs.decisive, Decisive::DnsFailed(_)),
            Cond::FalsePositivePage => self.matches.iter().any(|x| x.scope == "fp" && !x.dns),
            Cond::SamePage | Cond::DifferentPage => match (&obs.decisive, control) {
                (Decisive::HttpOk(r), Some(c)) => {
                    r.response
                        .as_ref()
                        .zip(c.http())
                        .is_some_and(|(resp, http)| {
                            let diff = http_diff::compare_at(&obs.host, resp, http);
                            match cond {
                                Cond::DifferentPage => {
                                    self.set.strict_page_match && diff.different_page()
                                }
                                _ if self.set.strict_page_match => diff.same_page_vantage(),
                                _ => diff.same_page(),
                            }
                        })
                }
                _ => false,
            },
            Cond::BodySteadyAtDeadline => match &obs.decisive {
                Decisive::HttpFailed(r) if self.set.steady_cut_is_throttling => r
                    .response
                    .as_ref()
                    .and_then(|resp| resp.x_transfer.as_ref())
                    .and_then(|t| steady_cut_kbps(t, &PassiveRules::default().cut))
                    .is_some(),
                _ => false,
            },
            Cond::ControlHttpFailed => control
                .and_then(ControlResponse::http)
                .is_some_and(|h| h.failure.is_some()),
            Cond::ControlHttpOk => control
                .and_then(ControlResponse::http)
                .is_some_and(|h| h.failure.is_none()),
            Cond::ControlTlsFailed | Cond::ControlTlsOk => {
                let status = control
                    .and_then(|c| c.tls_handshake.as_ref()?.get(failing_endpoint?))
                    .map(|t| t.status);
                status == Some(cond == Cond::ControlTlsOk)
            }
            Cond::ControlTcpFailed | Cond::ControlTcpOk => {
                let status = control
                    .and_then(|c| c.tcp(failing_endpoint?))
                    .map(|t| t.status);
                status == Some(cond == Cond::ControlTcpOk)
            }
            Cond::ControlDnsFailed => control
                .and_then(ControlResponse::dns)
                .is_some_and(|d| d.failure.is_some()),
            Cond::ProbeNoAnswerControlEmpty => {
                matches!(&obs.decisive, Decisive::DnsFailed(f) if f == "dns_no_answer")
                    && control.is_some_and(|c| c.dns().is_some() && c.addrs().is_empty())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Map;
    use vantage_fixtures::http::{HttpFixture, Response};

    use super::*;
    use crate::engine::{EngineConfig, Resolver, TlsContext};
    use crate::ooni::{ControlDns, ControlHttpRequest, ControlResponse, ControlTcpConnect};
    use crate::th::{FAILED, REFUSED, UNUSABLE};
    use crate::web_connectivity::{NO_TEST_HELPER, WebConnectivityPlan, measure};

    const PAGE: &str = "<html><title>The real site</title><p>news</p></html>";

    /// Every summary counts by this reading: throttled apart from blocked, and a site
    /// unreachable from the control too is down, not blocked.
    #[test]
    fn a_verdict_reads_as_one_finding() {
        let reading = |blocking: Option<Blocking>, accessible: Option<bool>| {
            let v = Verdict {
                input: None,
                probe_cc: "ZZ".into(),
                blocking,
                accessible,
                dns_consistency: None,
                confirmed: false,
                fingerprints: vec![],
                rule: "test".into(),
                rule_set: rules::VANTAGE.version,
                ooni_rules_blocking: None,
                control_failure: None,
                input_verdict: InputVerdict {
                    blocking: None,
                    accessible: None,
                    dns_consistency: None,
                },
                goodput: None,
            };
            let f = v.finding();
            (format!("{f:?}"), f.word())
        };
        let kind = |k: &str| Some(Blocking::Kind(k.into()));
        let table = [
            (
                kind("tcp_ip"),
                Some(false),
                "Blocked(\"tcp_ip\")",
                "blocked",
            ),
            (kind(THROTTLING), Some(true), "Throttled", "throttled"),
            (
                Some(Blocking::Flag(false)),
                Some(true),
                "Accessible",
                "accessible",
            ),
            (
                Some(Blocking::Flag(false)),
                Some(false),
                "DownForEveryone",
                "down for everyone",
            ),
            (
                Some(Blocking::Flag(true)),
                None,
                "DownForEveryone",
                "down for everyone",
            ),
            (None, None, "Undetermined", "undetermined"),
        ];
        for (blocking, accessible, finding, word) in table {
            let seen = reading(blocking.clone(), accessible);
            assert_eq!(
                seen,
                (finding.to_string(), word),
                "{blocking:?} {accessible:?}"
            );
        }
    }

    /// A real measurement of `url` on loopback, without a helper.
    async fn measured(url: &str) -> WebConnectivityMeasurement {
        let plan = WebConnectivityPlan::new(url, vec![Resolver::System], EngineConfig::default())
            .expect("plan");
        measure(&plan, &TlsContext::new(vec![]).expect("tls")).await
    }

    /// A control at `ip` whose HTTP failed with `failure`, or got [`PAGE`]; `tried` lists the
    /// endpoints it connected to, with the outcome.
    fn control(ip: &str, failure: Option<&str>, tried: &[(&str, bool)]) -> ControlResponse {
        ControlResponse {
            tcp_connect: Some(
                tried
                    .iter()
                    .map(|(e, ok)| {
                        let c = ControlTcpConnect {
                            status: *ok,
                            failure: (!ok).then(|| "connection_refused_error".to_string()),
                        };
                        (e.to_string(), c)
                    })
                    .collect(),
            ),
            tls_handshake: Some(BTreeMap::new()),
            quic_handshake: None,
            http_request: Some(ControlHttpRequest {
                body_length: if failure.is_some() {
                    -1
                } else {
                    PAGE.len() as i64
                },
                discovered_h3_endpoint: None,
                failure: failure.map(str::to_string),
                title: Some(if failure.is_some() {
                    String::new()
                } else {
                    "The real site".into()
                }),
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

    fn with(
        m: &WebConnectivityMeasurement,
        control: Option<ControlResponse>,
        failure: Option<&str>,
    ) -> WebConnectivityMeasurement {
        let mut m = m.clone();
        m.test_keys.control = control;
        m.test_keys.control_failure = failure.map(str::to_string);
        m
    }

    fn undetermined(v: &Verdict, why: &str) {
        assert_eq!(v.blocking, None, "{why}: {v:?}");
        assert_eq!(v.accessible, None, "{why}: {v:?}");
        assert_eq!(v.dns_consistency, None, "{why}: {v:?}");
        assert_eq!(v.rule, "no-control", "{why}: {v:?}");
        assert!(!v.anomaly(), "{why}");
    }

    #[tokio::test]
    async fn a_helper_that_refused_or_failed_never_makes_a_page_blocked() {
        let site = HttpFixture::fixed(Response::html(PAGE)).await;
        let url = format!("http://127.0.0.1:{}/", site.addr.port());
        let m = measured(&url).await;
        assert!(
            m.test_keys.http_experiment_failure.is_none(),
            "the page arrived"
        );
        let fp = Fingerprints::builtin();
        let endpoint = site.addr.to_string();

        // Every way `th::call` and `th::unusable` record a helper that refused or failed.
        let kinds = [
            format!(
                "{REFUSED} (HTTP 403): this test helper does not connect to private or other non-public addresses"
            ),
            format!("{REFUSED} (HTTP 400): THRequest lists 33 tcp_connect endpoints"),
            format!("{REFUSED} (HTTP 413)"),
            format!("{FAILED} (HTTP 503): too many test helper requests in progress"),
            format!("{FAILED} (HTTP 429)"),
            format!("{FAILED} (HTTP 500)"),
            "connection_refused".to_string(),
            "generic_timeout_error".to_string(),
            "json_parse_error".to_string(),
            format!("{UNUSABLE}: its HTTP result has neither a page nor a failure (status -1)"),
            NO_TEST_HELPER.to_string(),
        ];
        // The control the bug report saw: the helper's refusal written as its own failure.
        let refusal_as_failure = control("127.0.0.1", Some("dns_lookup_error"), &[]);
        for set in [&rules::VANTAGE, &rules::OONI] {
            for kind in &kinds {
                // No control at all, as `th::call` leaves it ...
                let v = score(&with(&m, None, Some(kind)), set, &fp);
                undetermined(&v, kind);
                assert_eq!(v.control_failure.as_deref(), Some(kind.as_str()));
                // ... or a control kept beside `control_failure`: OONI's meaning is the same.
                let v = score(
                    &with(&m, Some(refusal_as_failure.clone()), Some(kind)),
                    set,
                    &fp,
                );
                undetermined(&v, kind);
            }
            // A measurement from a probe that did not check the answer: the vantage rules
            // check it; OONI's use the control, as OONI does (the bug this guards against).
            let old = with(&m, Some(refusal_as_failure.clone()), None);
            let mut partial = control("127.0.0.1", None, &[(&endpoint, true)]);
            if let Some(http) = partial.http_request.as_mut() {
                http.status_code = -1;
            }
            let partial = with(&m, Some(partial), None);
            if set.unusable_control_is_none {
                let v = score(&old, set, &fp);
                undetermined(&v, "refusal written as a failure");
                let why = v.control_failure.as_deref().unwrap_or_default();
                assert!(
                    why.starts_with(UNUSABLE) && why.contains("127.0.0.1"),
                    "{why}"
                );
                // A partial answer: neither a page nor a failure.
                undetermined(&score(&partial, set, &fp), "partial");
            } else {
                let v = score(&old, set, &fp);
                assert_eq!(v.rule, "http-unexpected-success", "{v:?}");
                assert_eq!(v.control_failure, None);
            }

            // Controls that did measure still decide, so the checks above are not vacuous.
            let same = control("127.0.0.1", None, &[(&endpoint, true)]);
            let v = score(&with(&m, Some(same), None), set, &fp);
            assert_eq!(v.blocking, Some(Blocking::Flag(false)), "{v:?}");
            assert_eq!(v.accessible, Some(true));
            assert_eq!(v.control_failure, None);
            // A lab helper that connected to the address and failed: OONI's unexpected success.
            let tried = control(
                "127.0.0.1",
                Some("connection_refused_error"),
                &[(&endpoint, false)],
            );
            let v = score(&with(&m, Some(tried), None), set, &fp);
            assert_eq!(v.rule, "http-unexpected-success", "{v:?}");
            assert!(v.anomaly());
        }
    }

    #[tokio::test]
    async fn a_helper_that_refused_or_failed_never_makes_a_failure_blocked_or_down() {
        // The probe cannot connect: without a usable control that says nothing either way.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let url = format!("http://{closed}/");
        let m = measured(&url).await;
        assert_eq!(
            m.test_keys.http_experiment_failure.as_deref(),
            Some("connection_refused")
        );
        let fp = Fingerprints::builtin();
        let endpoint = closed.to_string();
        let refusal = control("127.0.0.1", Some("dns_lookup_error"), &[]);
        for set in [&rules::VANTAGE, &rules::OONI] {
            for kind in [
                format!("{REFUSED} (HTTP 403)"),
                format!("{FAILED} (HTTP 503)"),
                "generic_timeout_error".to_string(),
            ] {
                undetermined(&score(&with(&m, None, Some(&kind)), set, &fp), &kind);
            }
            let v = score(&with(&m, Some(refusal.clone()), None), set, &fp);
            if set.unusable_control_is_none {
                undetermined(&v, "refusal written as a failure");
            } else {
                assert_eq!(v.rule, "down-for-control", "OONI's reading: {v:?}");
            }
            // The helper reached the page where the probe could not connect: blocked, as before.
            let page = control("127.0.0.1", None, &[(&endpoint, true)]);
            let v = score(&with(&m, Some(page), None), set, &fp);
            assert_eq!(v.rule, "tcp-blocked", "{v:?}");
            // Both failed to connect: down for everyone.
            let down = control(
                "127.0.0.1",
                Some("connection_refused_error"),
                &[(&endpoint, false)],
            );
            let v = score(&with(&m, Some(down), None), set, &fp);
            assert_eq!(v.rule, "tcp-down", "{v:?}");
        }
    }

    #[tokio::test]
    async fn a_page_still_arriving_at_the_deadline_is_throttled_and_a_stalled_one_failed() {
        use vantage_fixtures::throttle::ThrottleRelay;
        let loopback: std::net::IpAddr = [127, 0, 0, 1].into();
        let body = format!(
            "<title>The real site</title>{}",
            "<p>news</p>".repeat(30_000)
        );
        let site = HttpFixture::fixed(Response::html(&body)).await;
        // A policer at 16 KiB/s (131 kbit/s) in front of the site, and a site that stops.
        let policed = ThrottleRelay::for_peer(site.addr, loopback, 131_072).await;
        let stalled = HttpFixture::stalling(loopback, Response::html(&body), 40_000).await;
        let measure_in = |addr: std::net::SocketAddr| async move {
            let mut engine = EngineConfig::default();
            engine.timeouts.http = std::time::Duration::from_secs(4);
            let url = format!("http://{addr}/");
            let plan =
                WebConnectivityPlan::new(&url, vec![Resolver::System], engine).expect("plan");
            let m = measure(&plan, &TlsContext::new(vec![]).expect("tls")).await;
            // The helper got the page, from its own network.
            let page = control("127.0.0.1", None, &[(&addr.to_string(), true)]);
            with(&m, Some(page), None)
        };
        let (slow, stopped) = tokio::join!(measure_in(policed.addr), measure_in(stalled.addr));
        let fp = Fingerprints::builtin();
        for m in [&slow, &stopped] {
            assert_eq!(
                m.test_keys.http_experiment_failure.as_deref(),
                Some("generic_timeout_error")
            );
        }

        let v = score(&slow, &rules::VANTAGE, &fp);
        assert_eq!(v.rule, "http-body-throttled", "{v:?}");
        assert_eq!(v.blocking, Some(Blocking::Kind(THROTTLING.into())));
        assert_eq!(v.accessible, Some(true));
        let g = v.goodput.as_ref().expect("a rate");
        assert!(g.cut_at_deadline, "{g:?}");
        assert!((g.probe_kbps - 131.1).abs() < 0.3 * 131.1, "{g:?}");
        // OONI's rules, and the previous set, read it as they did.
        assert_eq!(
            v.ooni_rules_blocking,
            Some(Some(Blocking::Kind("http-failure".into())))
        );
        let before = score(&slow, &rules::VANTAGE_2, &fp);
        assert_eq!(before.rule, "http-failure", "{before:?}");
        assert_eq!(before.rule_set, "vantage-2");

        // Stalled: a failure, and no rate.
        let v = score(&stopped, &rules::VANTAGE, &fp);
        assert_eq!(v.rule, "http-failure", "{v:?}");
        assert_eq!(v.blocking, Some(Blocking::Kind("http-failure".into())));
        assert_eq!(v.goodput, None);

        // The helper timed out too: the site is slow for everyone.
        let mut both = slow.clone();
        if let Some(h) = both
            .test_keys
            .control
            .as_mut()
            .and_then(|c| c.http_request.as_mut())
        {
            h.failure = Some("generic_timeout_error".into());
        }
        assert_eq!(score(&both, &rules::VANTAGE, &fp).rule, "http-down");
    }

    #[test]
    fn no_control_verdicts_say_why_in_their_json() {
        let v = Verdict {
            input: None,
            probe_cc: "ZZ".into(),
            blocking: None,
            accessible: None,
            dns_consistency: None,
            confirmed: false,
            fingerprints: vec![],
            rule: "no-control".into(),
            rule_set: rules::VANTAGE.version,
            ooni_rules_blocking: None,
            control_failure: Some(format!("{REFUSED} (HTTP 403): private")),
            input_verdict: InputVerdict {
                blocking: None,
                accessible: None,
                dns_consistency: None,
            },
            goodput: None,
        };
        let json = serde_json::to_value(&v).expect("json");
        assert_eq!(
            json["control_failure"],
            "unknown_failure: test helper refused (HTTP 403): private"
        );
        let json = serde_json::to_value(Verdict {
            control_failure: None,
            ..v
        })
        .expect("json");
        assert!(json.get("control_failure").is_none());
    }
}
