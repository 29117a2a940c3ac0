//! Facebook Messenger (OONI spec ts-019-facebook-messenger): each endpoint's answers checked
//! against Facebook's address space, then TCP connects to the consistent ones.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{FacebookPlan, Session};

/// The version of OONI's test whose steps and keys these are (ts-019's example).
pub const TEST_VERSION: &str = "0.4.0";

/// The endpoint ts-019 never connects to: STUN is a UDP service.
const STUN: &str = "stun";

/// Runs every endpoint concurrently and returns the test's own keys.
pub(super) async fn measure(plan: &FacebookPlan, session: &Arc<Session>) -> Map<String, Value> {
    let mut set = tokio::task::JoinSet::new();
    for (i, (name, host)) in plan.endpoints.iter().enumerate() {
        let (s, plan, name, host) = (session.clone(), plan.clone(), name.clone(), host.clone());
        set.spawn(async move {
            let (consistent, reachable) = endpoint(&s, &plan, &name, &host).await;
            (i, name, consistent, reachable)
        });
    }
    let mut found = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(e) = joined {
            found.push(e);
        }
    }
    found.sort_by_key(|e| e.0);
    let mut k = Map::new();
    let (mut dns_blocking, mut tcp_blocking) = (false, false);
    for (_, name, consistent, reachable) in found {
        dns_blocking |= !consistent;
        tcp_blocking |= reachable == Some(false);
        k.insert(format!("facebook_{name}_dns_consistent"), json!(consistent));
        k.insert(format!("facebook_{name}_reachable"), json!(reachable));
    }
    k.insert("facebook_dns_blocking".into(), json!(dns_blocking));
    k.insert("facebook_tcp_blocking".into(), json!(tcp_blocking));
    k
}

/// ts-019: consistent when the lookup answered and every address is Facebook's; then, except
/// for STUN, reachable when a TCP connect to every address on the port works. An inconsistent
/// endpoint is never connected to (its `reachable` is null): a censor's bogon is not a server.
async fn endpoint(
    session: &Session,
    plan: &FacebookPlan,
    name: &str,
    host: &str,
) -> (bool, Option<bool>) {
    let addrs = match session.resolve(host).await {
        Ok(a) => a,
        Err(_) => return (false, None),
    };
    if addrs.is_empty() || !addrs.iter().all(|ip| plan.is_facebook(*ip)) {
        return (false, None);
    }
    if name == STUN {
        return (true, None);
    }
    let mut ok = true;
    for ip in addrs {
        ok &= session
            .connect(SocketAddr::new(ip, plan.port))
            .await
            .is_none();
    }
    (true, Some(ok))
}
