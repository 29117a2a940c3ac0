//! `vantage run`: measure a list once, sign every result, keep it in the local store.
//!
//! Measurements run with bounded concurrency; each finished measurement is signed, scored for
//! display and stored (with its outbox row) before it is reported to the caller, so whatever the
//! caller has shown is already safe on disk.

use std::ops::ControlFlow;

use url::Url;

use crate::engine::{EngineConfig, Resolver, TlsContext};
use crate::envelope::{EnvelopeError, Identity, MeasurementId};
use crate::ooni::{Asn, Blocking, CountryCode, WebConnectivityMeasurement};
use crate::store::{NewResult, Store, StoreError};
use crate::test_lists::Entry;
use crate::verdict::fingerprints::Fingerprints;
use crate::verdict::rules::VANTAGE;
use crate::verdict::{Verdict, score};
use crate::web_connectivity::{NO_TEST_HELPER, WebConnectivityPlan, measure};

/// Errors that stop a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed: results can no longer be kept, so measuring further would lose them.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] EnvelopeError),
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// What to measure.
    pub entries: Vec<Entry>,
    /// Measurements at once.
    pub concurrency: usize,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Resolvers, the first being the classic one.
    pub resolvers: Vec<Resolver>,
    /// The test helper, if an aggregator is configured.
    pub test_helper: Option<Url>,
    /// Country written into measurements.
    pub probe_cc: CountryCode,
    /// ASN written into measurements.
    pub probe_asn: Asn,
}

/// One finished, stored measurement.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its id.
    pub id: MeasurementId,
    /// The verdict shown to the volunteer.
    pub verdict: Verdict,
    /// Traffic it cost, roughly: the page bodies received plus the signed result, which is
    /// sent once to the test helper's aggregator on upload. The daemon's daily budget counts it.
    pub bytes: u64,
    /// How far the probe itself got, to tell an offline machine from a censored network.
    pub reach: Reach,
    /// Why there is no usable control (OONI's `control_failure`), when there is none.
    pub control_failure: Option<String>,
    /// Why the verdict is what it is, in one line for a person ([`reason`]).
    pub reason: String,
}

/// How far a measurement got from the probe's own network, whatever the verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    /// A name had to be looked up (a URL with an IP address needs none).
    pub looked_up: bool,
    /// Some lookup answered with addresses.
    pub resolved: bool,
    /// Some TCP connection was established.
    pub connected: bool,
}

impl Reach {
    /// What `m` records of the probe's own lookups and connections.
    pub fn of(m: &WebConnectivityMeasurement) -> Self {
        let k = &m.test_keys;
        let queries = k.queries.as_deref().unwrap_or_default();
        Reach {
            looked_up: !queries.is_empty() || k.dns_experiment_failure.is_some(),
            resolved: queries
                .iter()
                .any(|q| q.failure.is_none() && q.answers.as_ref().is_some_and(|a| !a.is_empty())),
            connected: k.tcp_connect.iter().flatten().any(|c| c.status.success),
        }
    }
}

/// Why a run looks like a machine without a network rather than a censored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offline {
    /// No lookup succeeded, nothing was reached, and no test helper was configured.
    NoHelper,
    /// No lookup succeeded, nothing was reached, and the test helper could not be had either.
    HelperUnreachable,
}

/// Whether a run's results, each as (how far it got, its `control_failure`), look like an
/// offline machine: names had to be looked up, none resolved,
/// no connection was made, and no control came back. A censor blocks some names, not every
/// name together with the uncensored test helper, and a control that answered proves a
/// network. A network cut off entirely (a shutdown) looks the same from inside, which is why
/// the canary (`vantage canary`) records it separately, by IP only. A run whose URLs are all
/// IP addresses looks nothing up and is never called offline here.
pub fn offline<'a>(results: impl IntoIterator<Item = (Reach, Option<&'a str>)>) -> Option<Offline> {
    let (mut looked_up, mut reached, mut controlled, mut helper) = (false, false, false, false);
    for (reach, control_failure) in results {
        looked_up |= reach.looked_up;
        reached |= reach.resolved || reach.connected;
        controlled |= control_failure.is_none();
        helper |= control_failure.is_some_and(|f| f != NO_TEST_HELPER);
    }
    if !looked_up || reached || controlled {
        return None;
    }
    Some(if helper {
        Offline::HelperUnreachable
    } else {
        Offline::NoHelper
    })
}

/// Why `verdict` is what it is, in one line: the layer and the rule for a block, the status
/// for a page that loaded, and for an undetermined result what the control lacked and what
/// failed here. OONI's failure strings are kept as they are (df-007), so they can be searched.
pub fn reason(m: &WebConnectivityMeasurement, verdict: &Verdict) -> String {
    let k = &m.test_keys;
    let here = k
        .dns_experiment_failure
        .as_deref()
        .or(k.http_experiment_failure.as_deref());
    match (&verdict.blocking, verdict.accessible) {
        (Some(b @ Blocking::Kind(_)), _) => {
            let mut s = format!(
                "{} interference (rule {}",
                layer(b).unwrap_or("?"),
                verdict.rule
            );
            if let Some(f) = here {
                s.push_str(": ");
                s.push_str(f);
            }
            s.push(')');
            if verdict.confirmed {
                s.push_str(&format!(
                    ", confirmed blockpage ({})",
                    verdict.fingerprints.join(", ")
                ));
            }
            s
        }
        (Some(Blocking::Flag(false)), Some(true)) => {
            let code = k
                .requests
                .iter()
                .flatten()
                .find_map(|r| r.response.as_ref()?.code);
            match code {
                Some(code) => format!("the page loaded (HTTP {code})"),
                None => "the page loaded".to_string(),
            }
        }
        (Some(Blocking::Flag(_)), _) => match here {
            Some(f) => format!("down for everyone: the test helper failed too ({f})"),
            None => "down for everyone: the test helper failed too".to_string(),
        },
        (None, _) => {
            let why = match k.control_failure.as_deref() {
                Some(NO_TEST_HELPER) => "no control: no test helper was asked".to_string(),
                Some(f) => format!("no usable control from the test helper: {f}"),
                None => format!("rule {}", verdict.rule),
            };
            match here {
                Some(f) => format!("{why}; here: {f}"),
                None => why,
            }
        }
    }
}

/// Measures every entry; `on_result` sees each result after it is stored. When it answers
/// [`ControlFlow::Break`], no further measurement starts (those in flight still finish and are
/// stored): that is how the daemon keeps to its traffic budget.
pub async fn run(
    plan: &RunPlan,
    tls: &TlsContext,
    identity: &Identity,
    store: &mut Store,
    mut on_result: impl FnMut(&Finished) -> ControlFlow<()>,
) -> Result<Vec<Finished>, RunError> {
    let fingerprints = Fingerprints::builtin();
    let mut queue = plan.entries.iter();
    let mut tasks = tokio::task::JoinSet::new();
    let mut finished = Vec::with_capacity(plan.entries.len());
    let start_one = |tasks: &mut tokio::task::JoinSet<_>, entry: &Entry| {
        let plan =
            WebConnectivityPlan::new(&entry.url, plan.resolvers.clone(), plan.engine.clone()).map(
                |p| match &plan.test_helper {
                    Some(th) => p.with_test_helper(th.clone()),
                    None => p,
                },
            );
        let tls = tls.clone();
        let url = entry.url.clone();
        tasks.spawn(async move {
            match plan {
                Ok(p) => Some(measure(&p, &tls).await),
                Err(e) => {
                    tracing::warn!("skipping {url}: {e}");
                    None
                }
            }
        });
    };
    for entry in queue.by_ref().take(plan.concurrency.max(1)) {
        start_one(&mut tasks, entry);
    }
    let mut stopped = false;
    while let Some(joined) = tasks.join_next().await {
        if !stopped && let Some(entry) = queue.next() {
            start_one(&mut tasks, entry);
        }
        let Ok(Some(mut m)) = joined else { continue };
        m.probe_cc = plan.probe_cc;
        m.probe_asn = plan.probe_asn;
        let json =
            serde_json::to_string(&m).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        let (id, line) = identity.seal(&json)?;
        let verdict = score(&m, &VANTAGE, &fingerprints);
        let blocking = verdict
            .blocking
            .as_ref()
            .map(|b| serde_json::to_string(b).unwrap_or_default());
        let verdict_json = serde_json::to_string(&verdict).unwrap_or_default();
        store.insert(&NewResult {
            id: id.as_str(),
            input: m.input.as_deref(),
            test_name: &m.test_name,
            measured_at: &m.measurement_start_time,
            blocking: blocking.as_deref(),
            accessible: verdict.accessible,
            confirmed: verdict.confirmed,
            verdict: &verdict_json,
            envelope: &line,
        })?;
        let received: u64 = m
            .test_keys
            .requests
            .iter()
            .flatten()
            .filter_map(|r| r.response.as_ref()?.x_body_length)
            .sum();
        let done = Finished {
            id,
            reason: reason(&m, &verdict),
            verdict,
            bytes: received + line.len() as u64,
            reach: Reach::of(&m),
            control_failure: m.test_keys.control_failure.clone(),
        };
        stopped |= on_result(&done).is_break();
        finished.push(done);
    }
    Ok(finished)
}

/// Signs `m` and keeps it in the local store, queued for upload, in one transaction, with what
/// `row` says of it (its `id` and `envelope` are filled in here): a result recorded offline is
/// evidence only if it survives until it can be sent. The canary and the throttling test keep
/// their results this way.
pub fn keep<T: serde::Serialize>(
    m: &T,
    row: NewResult<'_>,
    identity: &Identity,
    store: &mut Store,
) -> Result<MeasurementId, RunError> {
    let json = serde_json::to_string(m).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let (id, line) = identity.seal(&json)?;
    store.insert(&NewResult {
        id: id.as_str(),
        envelope: &line,
        ..row
    })?;
    Ok(id)
}

/// Signs and keeps the measurement `m` of one of OONI's service tests (the apps, dnscheck) as
/// [`keep`] does, its row filled from the verdict the aggregator's rules give it
/// ([`crate::verdict::services`]), so that the probe's summary and the aggregator agree.
pub fn keep_service<T: serde::Serialize>(
    m: &crate::ooni::Measurement<T>,
    input: Option<&str>,
    test_name: &str,
    verdict: Option<&crate::verdict::services::ServiceVerdict>,
    identity: &Identity,
    store: &mut Store,
) -> Result<MeasurementId, RunError> {
    let blocking = verdict
        .and_then(|v| v.blocking.as_ref())
        .map(|b| serde_json::to_string(b).unwrap_or_default());
    let verdict_json =
        serde_json::to_string(&verdict).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let row = NewResult {
        id: "",
        input,
        test_name,
        measured_at: &m.measurement_start_time,
        blocking: blocking.as_deref(),
        accessible: verdict.and_then(|v| v.accessible),
        confirmed: false,
        verdict: &verdict_json,
        envelope: "",
    };
    keep(m, row, identity, store)
}

/// The layer a volunteer reads for a blocking type.
pub fn layer(blocking: &Blocking) -> Option<&'static str> {
    match blocking {
        Blocking::Kind(k) => Some(match k.as_str() {
            "dns" => "DNS",
            "tcp_ip" => "TCP",
            "tls" => "TLS",
            // A page held to a low rate: it loads, slowly; no layer refuses it.
            "throttling" => "throttled",
            _ => "HTTP",
        }),
        Blocking::Flag(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_for_volunteers() {
        assert_eq!(layer(&Blocking::Kind("tcp_ip".into())), Some("TCP"));
        assert_eq!(layer(&Blocking::Kind("http-diff".into())), Some("HTTP"));
        assert_eq!(
            layer(&Blocking::Kind("throttling".into())),
            Some("throttled")
        );
        assert_eq!(layer(&Blocking::Flag(false)), None);
    }

    /// A measurement from JSON: what an offline machine records for `http://example.org/`,
    /// with `control_failure` as given.
    fn offline_measurement(control_failure: Option<&str>) -> WebConnectivityMeasurement {
        serde_json::from_value(serde_json::json!({
            "data_format_version": "0.2.0",
            "input": "http://example.org/",
            "measurement_start_time": "2026-01-01 00:00:00",
            "probe_asn": "AS0",
            "probe_cc": "ZZ",
            "probe_ip": "127.0.0.1",
            "software_name": "vantage",
            "software_version": "0.1.0",
            "test_name": "web_connectivity",
            "test_runtime": 0.1,
            "test_version": "0.5.28",
            "test_keys": {
                "queries": [{
                    "answers": null, "engine": "getaddrinfo", "failure": "dns_nxdomain_error",
                    "hostname": "example.org", "query_type": "ANY", "t": 0.002,
                    "resolver_address": ""
                }],
                "tcp_connect": [],
                "control": null,
                "control_failure": control_failure,
                "dns_experiment_failure": "dns_nxdomain_error",
                "http_experiment_failure": "dns_nxdomain_error",
                "blocking": null,
                "accessible": null
            }
        }))
        .expect("measurement")
    }

    #[test]
    fn an_offline_run_is_told_from_a_censored_one() {
        let failed = Reach {
            looked_up: true,
            ..Reach::default()
        };
        let none = Some(NO_TEST_HELPER);
        assert_eq!(
            offline([(failed, none), (failed, none)]),
            Some(Offline::NoHelper)
        );
        assert_eq!(
            offline([(failed, Some("connection_refused")), (failed, none)]),
            Some(Offline::HelperUnreachable)
        );
        // One answered lookup, one connection or one control proves a network.
        let resolved = Reach {
            resolved: true,
            ..failed
        };
        assert_eq!(offline([(failed, none), (resolved, none)]), None);
        let connected = Reach {
            connected: true,
            ..failed
        };
        assert_eq!(offline([(failed, none), (connected, none)]), None);
        assert_eq!(offline([(failed, none), (failed, None)]), None);
        // Nothing to look up (IP addresses only), or nothing measured: no claim.
        assert_eq!(offline([(Reach::default(), none)]), None);
        assert_eq!(offline([]), None);
    }

    #[test]
    fn an_offline_measurement_reads_as_one() {
        let m = offline_measurement(Some(NO_TEST_HELPER));
        let reach = Reach::of(&m);
        assert_eq!(
            reach,
            Reach {
                looked_up: true,
                resolved: false,
                connected: false
            }
        );
        let verdict = score(&m, &VANTAGE, &Fingerprints::builtin());
        assert_eq!(verdict.blocking, None);
        assert_eq!(
            reason(&m, &verdict),
            "no control: no test helper was asked; here: dns_nxdomain_error"
        );
        let m = offline_measurement(Some("connection_refused"));
        let verdict = score(&m, &VANTAGE, &Fingerprints::builtin());
        assert_eq!(verdict.blocking, None, "{verdict:?}");
        assert_eq!(
            reason(&m, &verdict),
            "no usable control from the test helper: connection_refused; here: \
             dns_nxdomain_error"
        );
    }
}
