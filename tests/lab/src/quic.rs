//! The QUIC scenario: two hosts on the lab's Internet serve HTTPS over TCP (the web server) and
//! QUIC (a quinn endpoint on UDP 443, ALPN h3, RFC 9000 and RFC 9001); the router drops UDP 443
//! to one of them, as Iran and Russia do (docs/quic.md), and leaves the other alone.
//! `vantage run --test quic` must call the first `quic-blocked` (TCP works) and the second
//! `accessible`, and the aggregator make one service event, `quic:quic-blocked.lab` on the tcp
//! layer, from the first host's results alone, and none naming the second.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use vantage_fixtures::tls::Leaf;

use crate::check::{HostEvent, Report, Timeline};

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

/// The results each probe's `vantage run --test quic` printed in `dir` (`quicN.out`), as (host,
/// result id).
fn results(dir: &Path) -> Vec<(&'static str, String)> {
    (1..=crate::topology::PROBES.len())
        .filter_map(|i| std::fs::read_to_string(dir.join(format!("quic{i}.out"))).ok())
        .flat_map(|out| {
            out.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| Some((host_of(&v)?, v["id"].as_str()?.to_string())))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The event QUIC to the blocked host must make: `quic:quic-blocked.lab` on the tcp layer in
/// AS64500, its evidence exactly the probes' results for that host; `quic:quic-ok.lab` and its
/// results in no event (the aggregator scores QUIC per host, `aggregator/src/ingest/quic.rs`).
pub fn expected_event(dir: &Path) -> HostEvent {
    let (blocked, control): (Vec<_>, Vec<_>) = results(dir)
        .into_iter()
        .partition(|(host, _)| *host == BLOCKED_NAME);
    HostEvent {
        target: format!("quic:{BLOCKED_NAME}"),
        layer: "tcp",
        blocked: blocked.into_iter().map(|(_, id)| id).collect(),
        controls: vec![format!("quic:{CONTROL_NAME}")],
        control_ids: control.into_iter().map(|(_, id)| id).collect(),
    }
}

/// The timeline: [`expected_event`], waited for up to 20 s (the apps' events were waited for
/// just before, so the detector has seen the uploads).
pub fn check_timeline(timeline: &Timeline, dir: &Path, report: &mut Report) -> Result<()> {
    crate::check::check_host_event(
        timeline,
        &expected_event(dir),
        std::time::Duration::from_secs(20),
        report,
    )
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
