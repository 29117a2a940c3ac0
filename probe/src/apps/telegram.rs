//! Telegram (OONI spec ts-020-telegram): the desktop client's data centres (DCs) by address,
//! and the web client.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use url::Url;

use super::{Session, TelegramPlan, status};

/// The version of OONI's test whose steps and keys these are (ts-020's example).
pub const TEST_VERSION: &str = "0.3.0";

/// Runs the checks concurrently and returns the test's own keys.
pub(super) async fn measure(plan: &TelegramPlan, session: &Arc<Session>) -> Map<String, Value> {
    let web = {
        let (s, url) = (session.clone(), plan.web_url.clone());
        tokio::spawn(async move { s.fetch(&url).await })
    };
    // ts-020 "Telegram access points check": an empty POST to every DC on every port.
    let mut set = tokio::task::JoinSet::new();
    for ip in &plan.access_points {
        for port in &plan.ports {
            let (s, addr) = (session.clone(), SocketAddr::new(*ip, *port));
            set.spawn(async move {
                let url = Url::parse(&format!("http://{addr}/"));
                match url {
                    Ok(url) => s.post(&url).await,
                    Err(e) => Some(format!("unknown_failure: {e}")),
                }
            });
        }
    }
    let mut answered = false;
    while let Some(joined) = set.join_next().await {
        answered |= matches!(joined, Ok(None));
    }
    let web = web
        .await
        .unwrap_or_else(|e| Some(format!("unknown_failure: {e}")));
    // TCP blocking: no connect to a DC worked (the web client's connects are not the DCs').
    let dcs: Vec<String> = plan.access_points.iter().map(|ip| ip.to_string()).collect();
    let connected =
        session.connected_to(|ip, port| dcs.iter().any(|d| *d == ip) && plan.ports.contains(&port));
    let mut k = Map::new();
    k.insert("telegram_http_blocking".into(), json!(!answered));
    k.insert("telegram_tcp_blocking".into(), json!(!connected));
    k.insert("telegram_web_failure".into(), json!(web.clone()));
    k.insert("telegram_web_status".into(), json!(status(&web)));
    k
}
