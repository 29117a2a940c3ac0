//! Signal (OONI spec ts-029-signal): a GET of each backend URL, the handshake checked against
//! Signal's own roots (which the data file holds), and a lookup of `uptime.signal.org` that is
//! recorded and never judged.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Session, SignalPlan, status};

/// The version of OONI's test whose steps and keys these are (ts-029's example; the versions
/// before it broke on Signal's certificate and endpoint changes).
pub const TEST_VERSION: &str = "0.2.5";

/// Runs the checks concurrently and returns the test's own keys.
pub(super) async fn measure(plan: &SignalPlan, session: &Arc<Session>) -> Map<String, Value> {
    let mut set = tokio::task::JoinSet::new();
    for (i, url) in plan.urls.iter().enumerate() {
        let (s, url) = (session.clone(), url.clone());
        set.spawn(async move { (i, s.fetch(&url).await) });
    }
    let uptime = {
        let (s, host) = (session.clone(), plan.uptime_host.clone());
        tokio::spawn(async move { s.resolve(&host).await })
    };
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            Err(e) => results.push((usize::MAX, Some(format!("unknown_failure: {e}")))),
        }
    }
    let _ = uptime.await;
    results.sort_by_key(|r| r.0);
    // ts-029: blocked when any endpoint fails; the failure is the first endpoint's, in the
    // data file's order.
    let failure = results.into_iter().find_map(|r| r.1);
    let mut k = Map::new();
    k.insert("signal_backend_failure".into(), json!(failure.clone()));
    k.insert("signal_backend_status".into(), json!(status(&failure)));
    k
}
