//! The dnscheck scenario: encrypted resolvers on the lab's Internet, one of them blocked. Two
//! DNS-over-TLS resolvers (RFC 7858, TCP 853, with a certificate from the lab's CA) and one
//! DNS-over-HTTPS resolver (RFC 8484, on the web server's port 443); the router drops TCP 853
//! to the first, as censors cut DoT by its port and address (docs/dnscheck.md), and leaves the
//! other two alone as controls. `vantage run --test dnscheck` with the lab's resolvers file must
//! find the first blocked at the TCP connect (`generic_timeout_error`, layer `tcp_ip`) and the
//! controls answering; the aggregator must make one service event,
//! `dnscheck:dot-blocked.lab` on the tcp layer, from the first resolver's results alone.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_fixtures::dns::{Behaviour, respond};
use vantage_fixtures::http::{Request, Response};
use vantage_fixtures::tls::Leaf;

use crate::check::{HostEvent, Report, Timeline};

/// Last octets of the two DoT resolvers on the lab's Internet (`SITES_NET`).
const BLOCKED: u8 = 29;
const CONTROL: u8 = 30;
/// The DoT resolver whose TCP 853 the router drops.
pub const BLOCKED_NAME: &str = "dot-blocked.lab";
/// The DoT resolver left alone.
pub const CONTROL_NAME: &str = "dot-ok.lab";
/// The DoH resolver left alone: the web server answers DNS for it (on the control's address).
pub const DOH_NAME: &str = "doh-ok.lab";
/// The name every resolver is asked for (`--domain`), and what they answer.
pub const QUERIED: &str = "dnscheck.lab";
const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
/// DoT's port (RFC 7858 section 3.1).
const DOT_PORT: u16 = 853;

/// The resolvers, as (name, URL), in the order of the resolvers file.
const RESOLVERS: &[(&str, &str)] = &[
    (BLOCKED_NAME, "dot://dot-blocked.lab/"),
    (CONTROL_NAME, "dot://dot-ok.lab/"),
    (DOH_NAME, "https://doh-ok.lab/dns-query"),
];

fn addr(host: u8) -> Ipv4Addr {
    let [a, b, c, _] = crate::topology::SITES_NET.octets();
    Ipv4Addr::new(a, b, c, host)
}

/// The resolvers' addresses.
pub fn addrs() -> Vec<Ipv4Addr> {
    vec![addr(BLOCKED), addr(CONTROL)]
}

/// The names the lab's certificate must cover.
pub const TLS_NAMES: &[&str] = &[BLOCKED_NAME, CONTROL_NAME, DOH_NAME];

/// The Internet resolver's records for them: the probe bootstraps each resolver's name.
pub fn net_resolver_args() -> Vec<String> {
    vec![
        format!("--host-record={BLOCKED_NAME},{}", addr(BLOCKED)),
        format!("--host-record={CONTROL_NAME},{}", addr(CONTROL)),
        format!("--host-record={DOH_NAME},{}", addr(CONTROL)),
    ]
}

/// The router's rule: TCP 853 to the blocked resolver dropped, so its connects time out.
pub fn router_rules() -> Vec<Vec<String>> {
    let blocked = addr(BLOCKED).to_string();
    let port = DOT_PORT.to_string();
    vec![
        [
            "iptables", "-A", "FORWARD", "-p", "tcp", "-d", &blocked, "--dport", &port, "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ]
}

/// The resolvers file `vantage run --test dnscheck --resolvers-file` reads (the format of
/// test-lists/resolvers.toml).
pub fn resolvers_file() -> String {
    RESOLVERS
        .iter()
        .map(|(_, url)| format!("[[resolver]]\nurl = \"{url}\"\noperator = \"vantage-lab\"\n\n"))
        .collect()
}

/// The arguments of `vantage run` for the scenario, before the common ones.
pub fn run_args(file: &Path) -> Vec<String> {
    vec![
        "--test".into(),
        "dnscheck".into(),
        "--resolvers-file".into(),
        file.display().to_string(),
        "--domain".into(),
        QUERIED.into(),
    ]
}

fn table() -> Vec<(String, Behaviour)> {
    vec![(QUERIED.to_string(), Behaviour::Answer(vec![ANSWER]))]
}

/// The DoH resolver's answer to `req` when it is addressed to [`DOH_NAME`] (RFC 8484 POST of a
/// DNS message), for the web server's handler; `None` for any other host.
pub fn doh_answer(host: &str, req: &Request) -> Option<Response> {
    if !host.eq_ignore_ascii_case(DOH_NAME) {
        return None;
    }
    let reply = hickory_proto::op::Message::from_vec(&req.body)
        .ok()
        .and_then(|q| respond(&q, &table()).into_iter().next());
    Some(match reply {
        Some((_, bytes)) => Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/dns-message".into())],
            body: bytes,
        },
        None => Response {
            status: 400,
            headers: Vec::new(),
            body: b"not a DNS query".to_vec(),
        },
    })
}

/// A DoT resolver on every address of the namespace (TCP 853, ALPN `dot`), with `leaf`, whose
/// PEM files are written in `dir`: each connection's length-prefixed queries (RFC 7766 section
/// 8) answered from the table until the client closes.
pub async fn serve_dot(leaf: &Leaf, dir: &Path) -> Result<tokio::task::JoinHandle<()>> {
    let (chain, key) = (dir.join("dot-chain.pem"), dir.join("dot-key.pem"));
    leaf.write_pem(&chain, &key);
    let key =
        PrivateKeyDer::from_pem_file(&key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions for DoT")?
        .with_no_client_auth()
        .with_single_cert(leaf.chain.clone(), key)
        .context("the DoT server's certificate")?;
    tls.alpn_protocols = vec![b"dot".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let at = SocketAddr::from(([0, 0, 0, 0], DOT_PORT));
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("a DoT server on tcp {at}"))?;
    Ok(tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(stream).await else {
                    return;
                };
                let table = table();
                loop {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut query).await.is_err() {
                        return;
                    }
                    let Ok(q) = hickory_proto::op::Message::from_vec(&query) else {
                        return;
                    };
                    for (_, reply) in respond(&q, &table) {
                        let Ok(n) = u16::try_from(reply.len()) else {
                            return;
                        };
                        if s.write_all(&n.to_be_bytes()).await.is_err()
                            || s.write_all(&reply).await.is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    }))
}

/// The resolver a JSON line of `vantage run --test dnscheck` is about.
pub fn resolver_of(v: &Value) -> Option<&'static str> {
    RESOLVERS
        .iter()
        .find(|(_, url)| v["input"] == *url)
        .map(|(name, _)| *name)
}

/// Every resolver the probes must report on.
pub fn names() -> impl Iterator<Item = &'static str> {
    RESOLVERS.iter().map(|(name, _)| *name)
}

/// What differs between what a probe must see of `name` and its JSON line `v`: the blocked
/// resolver fails at the TCP connect of every lookup with `generic_timeout_error` (OONI spec
/// df-007) and is `tcp_ip`-blocked; a control answers [`ANSWER`] at every lookup.
pub fn differs(name: &str, v: &Value) -> Option<String> {
    let mut why = Vec::new();
    let blocked = name == BLOCKED_NAME;
    let (blocking, accessible) = if blocked {
        (Value::from("tcp_ip"), false)
    } else {
        (Value::Bool(false), true)
    };
    if v["blocking"] != blocking {
        why.push(format!("blocking {} (expected {blocking})", v["blocking"]));
    }
    if v["accessible"] != accessible {
        why.push(format!(
            "accessible {} (expected {accessible})",
            v["accessible"]
        ));
    }
    if !v["bootstrap_failure"].is_null() {
        why.push(format!(
            "bootstrap_failure {} (the name must resolve)",
            v["bootstrap_failure"]
        ));
    }
    let lookups = v["lookups"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if lookups.is_empty() {
        why.push("no lookup".into());
    }
    for l in lookups {
        let (failure, operation) = (&l["failure"], &l["failed_operation"]);
        if blocked && (failure != "generic_timeout_error" || operation != "connect") {
            why.push(format!(
                "{}: {failure} at {operation} (expected generic_timeout_error at connect)",
                l["endpoint"]
            ));
        }
        if !blocked
            && (!failure.is_null()
                || !l["answers"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == ANSWER.to_string().as_str())))
        {
            why.push(format!(
                "{}: failure {failure}, answers {} (expected {ANSWER})",
                l["endpoint"], l["answers"]
            ));
        }
    }
    if !v["id"].is_string() {
        why.push(format!("no result id: {}", v["id"]));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The event the blocked resolver must make: `dnscheck:dot-blocked.lab` on the tcp layer in
/// AS64500, its evidence exactly the probes' results for it; the controls and their results
/// in no event (the resolver's target is its host with the test named,
/// `vantage_probe::verdict::services`).
pub fn expected_event(dir: &Path) -> HostEvent {
    let (blocked, control): (Vec<_>, Vec<_>) = (1..=crate::topology::PROBES.len())
        .filter_map(|i| std::fs::read_to_string(dir.join(format!("dnscheck{i}.out"))).ok())
        .flat_map(|out| {
            out.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| Some((resolver_of(&v)?, v["id"].as_str()?.to_string())))
                .collect::<Vec<_>>()
        })
        .partition(|(name, _)| *name == BLOCKED_NAME);
    HostEvent {
        target: format!("dnscheck:{BLOCKED_NAME}"),
        layer: "tcp",
        blocked: blocked.into_iter().map(|(_, id)| id).collect(),
        controls: [CONTROL_NAME, DOH_NAME]
            .iter()
            .map(|n| format!("dnscheck:{n}"))
            .collect(),
        control_ids: control.into_iter().map(|(_, id)| id).collect(),
    }
}

/// The timeline: [`expected_event`], waited for up to 20 s.
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
    fn only_the_blocked_resolvers_port_853_is_dropped_and_the_file_parses() {
        let rules = router_rules().concat().join(" ");
        assert!(
            rules.contains("-p tcp -d 45.67.1.29 --dport 853 -j DROP"),
            "{rules}"
        );
        assert!(!rules.contains(&addr(CONTROL).to_string()), "{rules}");
        let sites: Vec<Ipv4Addr> = crate::scenario::SITES.iter().map(|s| s.addr()).collect();
        for a in addrs() {
            assert!(!sites.contains(&a), "{a}");
            assert!(!crate::apps::addrs().contains(&a), "{a}");
            assert!(!crate::quic::addrs().contains(&a), "{a}");
        }
        let targets = vantage_probe::dnscheck::parse_resolvers(&resolvers_file(), "lab")
            .expect("the probe reads the lab's resolvers file");
        assert_eq!(targets.len(), 3);
        assert_eq!(targets[0].port, DOT_PORT);
    }

    #[test]
    fn a_verdict_is_checked_per_resolver() {
        // The lines `vantage run --test dnscheck --json` prints, in their shape.
        let dropped = serde_json::json!({"test_name": "dnscheck", "input": "dot://dot-blocked.lab/",
            "accessible": false, "blocking": "tcp_ip", "bootstrap_failure": null, "id": "a1",
            "lookups": [{"endpoint": "45.67.1.29:853", "failure": "generic_timeout_error",
                         "failed_operation": "connect", "answers": []}]});
        assert_eq!(resolver_of(&dropped), Some(BLOCKED_NAME));
        assert_eq!(differs(BLOCKED_NAME, &dropped), None);
        let why = differs(CONTROL_NAME, &dropped).expect("a control must answer");
        assert!(
            why.contains("blocking \"tcp_ip\" (expected false)"),
            "{why}"
        );
        let answered = serde_json::json!({"test_name": "dnscheck",
            "input": "https://doh-ok.lab/dns-query", "accessible": true, "blocking": false,
            "bootstrap_failure": null, "id": "b2",
            "lookups": [{"endpoint": "45.67.1.30:443", "failure": null,
                         "failed_operation": null, "answers": ["192.0.2.53"]}]});
        assert_eq!(resolver_of(&answered), Some(DOH_NAME));
        assert_eq!(differs(DOH_NAME, &answered), None);
        // Reset rather than dropped: the right layer is not enough, the failure must match.
        let mut reset = dropped.clone();
        reset["lookups"][0]["failure"] = "connection_refused".into();
        let why = differs(BLOCKED_NAME, &reset).expect("refused is not dropped");
        assert!(
            why.contains("\"connection_refused\" at \"connect\""),
            "{why}"
        );
        let none = serde_json::json!({"input": "dot://dot-ok.lab/", "lookups": []});
        assert!(differs(CONTROL_NAME, &none).is_some_and(|w| w.contains("no lookup")));
    }
}
