//! WhatsApp (OONI spec ts-018-whatsapp, version 2022-12-07-001): the chat endpoints, the
//! registration service and the web client.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Session, WhatsappPlan, status};

/// The version of OONI's test whose steps and keys these are (ts-018's example).
pub const TEST_VERSION: &str = "0.10.0";

/// Runs the three checks concurrently and returns the test's own keys.
pub(super) async fn measure(plan: &WhatsappPlan, session: &Arc<Session>) -> Map<String, Value> {
    let registration = {
        let (s, url) = (session.clone(), plan.registration_url.clone());
        tokio::spawn(async move { s.fetch(&url).await })
    };
    let web = {
        let (s, url) = (session.clone(), plan.web_url.clone());
        tokio::spawn(async move { s.fetch(&url).await })
    };
    // ts-018 "WhatsApp endpoints check": every endpoint on every port; an endpoint is blocked
    // when it fails on all its ports, the service when every endpoint is.
    let mut set = tokio::task::JoinSet::new();
    for (i, host) in plan.endpoints.iter().enumerate() {
        let (s, host, ports) = (session.clone(), host.clone(), plan.ports.clone());
        set.spawn(async move {
            let mut ok = false;
            for port in ports {
                ok |= endpoint(&s, &host, port).await;
            }
            (i, host, ok)
        });
    }
    let mut endpoints = Vec::new();
    while let Some(joined) = set.join_next().await {
        if let Ok(e) = joined {
            endpoints.push(e);
        }
    }
    endpoints.sort_by_key(|e| e.0);
    let blocked: Vec<String> = endpoints
        .iter()
        .filter(|e| !e.2)
        .map(|e| e.1.clone())
        .collect();
    let any_ok = endpoints.iter().any(|e| e.2);
    let joined = |r: Result<Option<String>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Some(format!("unknown_failure: {e}")))
    };
    let registration = joined(registration.await);
    let web = joined(web.await);

    let mut k = Map::new();
    k.insert(
        "registration_server_failure".into(),
        json!(registration.clone()),
    );
    k.insert(
        "registration_server_status".into(),
        json!(status(&registration)),
    );
    k.insert("whatsapp_endpoints_blocked".into(), json!(blocked));
    // A legacy key the spec says is always empty.
    k.insert(
        "whatsapp_endpoints_dns_inconsistent".into(),
        json!(Vec::<String>::new()),
    );
    k.insert(
        "whatsapp_endpoints_status".into(),
        json!(if any_ok { "ok" } else { "blocked" }),
    );
    k.insert("whatsapp_web_failure".into(), json!(web.clone()));
    k.insert("whatsapp_web_status".into(), json!(status(&web)));
    k
}

/// One endpoint on one port, as OONI's `tcpconnect://host:port`: every address in turn until
/// one connects.
async fn endpoint(session: &Session, host: &str, port: u16) -> bool {
    let Ok(addrs) = session.resolve(host).await else {
        return false;
    };
    for ip in addrs {
        if session.connect(SocketAddr::new(ip, port)).await.is_none() {
            return true;
        }
    }
    false
}
