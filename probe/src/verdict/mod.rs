//! Verdicts: is a measured URL blocked, how, and how sure are we?
//!
//! Scoring is authoritative on the aggregator (DESIGN "Scoring"); the probe uses the same code
//! only to show a volunteer what it saw. Rules are data ([`rules`]), fingerprints are data
//! ([`fingerprints`]), and every verdict names the rule set version that produced it.

pub mod consistency;
pub mod fingerprints;
pub mod http_diff;
pub mod observe;
pub mod rules;

use serde::Serialize;

use crate::engine::bogon::is_bogon;
use crate::ooni::{Blocking, WebConnectivityMeasurement};
use crate::throttling::passive::{Goodput, PassiveRules, goodput};
use consistency::{Consistency, ConsistencyRules, dns_consistency, injected_answers};
use fingerprints::{Fingerprints, Match};
use observe::{Decisive, Observations};
use rules::{Cond, Outcome, RuleSet};

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
    /// OONI's verdict stored in the input, if any.
    pub input_verdict: InputVerdict,
    /// How fast the final page arrived at the probe and at the helper, when its body was large
    /// enough to tell: the passive throttling signal, judged against the target's baseline by
    /// the aggregator (issue 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<Goodput>,
}

impl Verdict {
    /// Whether the verdict is an anomaly (any blocking type).
    pub fn anomaly(&self) -> bool {
        matches!(self.blocking, Some(Blocking::Kind(_)))
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
    let obs = Observations::of(m);
    let consistency = dns_consistency(
        &obs,
        ConsistencyRules {
            tls_proves_address: set.tls_proves_address,
        },
    );
    let matches = fingerprints.matches(m);
    let facts = Facts {
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
    if consistency == Some(Consistency::Inconsistent)
        && matches!(outcome, Outcome::Blocked(k) if k != "dns") | matches!(outcome, Outcome::Down)
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
        input_verdict: InputVerdict {
            blocking: tk.blocking.clone(),
            accessible: tk.accessible,
            dns_consistency: tk.dns_consistency.clone(),
        },
        goodput: goodput(m, &PassiveRules::default()),
    }
}

struct Facts<'a> {
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
                    c.dns
                        .addrs
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
                _ => false,
            },
            Cond::HttpFailed => matches!(obs.decisive, Decisive::HttpFailed(_)),
            Cond::TlsFailed => matches!(obs.decisive, Decisive::TlsFailed(_)),
            Cond::TcpFailed => matches!(obs.decisive, Decisive::TcpFailed(_)),
            Cond::DnsFailed => matches!(obs.decisive, Decisive::DnsFailed(_)),
            Cond::FalsePositivePage => self.matches.iter().any(|x| x.scope == "fp" && !x.dns),
            Cond::SamePage => match (&obs.decisive, control) {
                (Decisive::HttpOk(r), Some(c)) => r
                    .response
                    .as_ref()
                    .is_some_and(|resp| http_diff::compare(resp, &c.http_request).same_page()),
                _ => false,
            },
            Cond::ControlHttpFailed => control.is_some_and(|c| c.http_request.failure.is_some()),
            Cond::ControlHttpOk => control.is_some_and(|c| c.http_request.failure.is_none()),
            Cond::ControlTlsFailed | Cond::ControlTlsOk => {
                let status = control
                    .and_then(|c| c.tls_handshake.as_ref()?.get(failing_endpoint?))
                    .map(|t| t.status);
                status == Some(cond == Cond::ControlTlsOk)
            }
            Cond::ControlTcpFailed | Cond::ControlTcpOk => {
                let status = control
                    .and_then(|c| c.tcp_connect.get(failing_endpoint?))
                    .map(|t| t.status);
                status == Some(cond == Cond::ControlTcpOk)
            }
            Cond::ControlDnsFailed => control.is_some_and(|c| c.dns.failure.is_some()),
            Cond::ProbeNoAnswerControlEmpty => {
                matches!(&obs.decisive, Decisive::DnsFailed(f) if f == "dns_no_answer")
                    && control.is_some_and(|c| c.dns.addrs.is_empty())
            }
        }
    }
}
