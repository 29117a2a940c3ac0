//! `vantage run`: measure a list once, sign every result, keep it in the local store.
//!
//! Measurements run with bounded concurrency; each finished measurement is signed, scored for
//! display and stored (with its outbox row) before it is reported to the caller, so whatever the
//! caller has shown is already safe on disk.

use std::ops::ControlFlow;

use url::Url;

use crate::engine::{EngineConfig, Resolver, TlsContext};
use crate::envelope::{EnvelopeError, Identity, MeasurementId};
use crate::ooni::{Asn, Blocking, CountryCode};
use crate::store::{NewResult, Store, StoreError};
use crate::test_lists::Entry;
use crate::verdict::fingerprints::Fingerprints;
use crate::verdict::rules::VANTAGE;
use crate::verdict::{Verdict, score};
use crate::web_connectivity::{WebConnectivityPlan, measure};

/// Lists compiled into the binary: (name, CSV text).
pub const BUILTIN_LISTS: [(&str, &str); 4] = [
    ("global", include_str!("../../test-lists/global.csv")),
    ("ir", include_str!("../../test-lists/ir.csv")),
    ("ru", include_str!("../../test-lists/ru.csv")),
    ("tr", include_str!("../../test-lists/tr.csv")),
];

/// The built-in list called `name`.
pub fn builtin_list(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    BUILTIN_LISTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

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
            verdict,
            bytes: received + line.len() as u64,
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

/// The layer a volunteer reads for a blocking type.
pub fn layer(blocking: &Blocking) -> Option<&'static str> {
    match blocking {
        Blocking::Kind(k) => Some(match k.as_str() {
            "dns" => "DNS",
            "tcp_ip" => "TCP",
            "tls" => "TLS",
            _ => "HTTP",
        }),
        Blocking::Flag(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_lists::TestList;

    #[test]
    fn builtin_lists_parse_cleanly() {
        for (name, text) in BUILTIN_LISTS {
            let (list, problems) = TestList::parse(name, text.as_bytes()).expect("list");
            assert!(problems.is_empty(), "{name}: {problems:?}");
            assert!(list.entries.len() >= 5, "{name}");
        }
        assert!(builtin_list("IR").is_some());
        assert!(builtin_list("zz").is_none());
    }

    #[test]
    fn layers_for_volunteers() {
        assert_eq!(layer(&Blocking::Kind("tcp_ip".into())), Some("TCP"));
        assert_eq!(layer(&Blocking::Kind("http-diff".into())), Some("HTTP"));
        assert_eq!(layer(&Blocking::Flag(false)), None);
    }
}
