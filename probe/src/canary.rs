//! The connectivity canary (README.md, "Connectivity canary: `vantage canary`").
//!
//! A cheap check of whether this network reaches the Internet at all: a DNS question to several
//! anycast resolvers and root servers, and a TCP connect to well-known anycast addresses, all by
//! IP address. It needs neither a working resolver nor the aggregator, so a probe keeps
//! recording canaries through a shutdown and uploads them afterwards from its queue; that late
//! evidence is what lets the aggregator reconstruct an event nothing could report while it
//! lasted (README, "Timeline": a shutdown is confirmed when the probes' offline queues come in).
//!
//! The result is an OONI-format measurement, `test_name: canary`, whose `test_keys` hold the
//! DNS and TCP records in OONI's own templates (df-002-dnst `queries`, df-005-tcpconnect
//! `tcp_connect`) and one line per target in `checks`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::dns::{Resolver, lookup};
use crate::engine::tcp::connect;
use crate::engine::{EngineConfig, TlsContext, Trace};
use crate::ooni::{DnsQuery, Measurement, TcpConnect};

/// `test_name` of canary measurements.
pub const CANARY: &str = "canary";

/// Version of the canary's `test_keys`.
pub const CANARY_VERSION: &str = "0.1.0";

/// The name DNS canaries ask for. Root servers are authoritative for `root-servers.net` and
/// every public resolver can resolve it, so one question suits both kinds of target.
pub const CANARY_NAME: &str = "a.root-servers.net";

/// Vantage's targets, compiled in (`test-lists/canaries.csv`).
pub const BUILTIN_TARGETS: &str = include_str!("../../test-lists/canaries.csv");

const HEADER: &str = "address,port,protocol,description";

/// How a target is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A DNS question over UDP; any well-formed answer counts.
    Dns,
    /// A TCP handshake.
    Tcp,
}

impl Protocol {
    /// `dns` or `tcp`, as in the target list.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Dns => "dns",
            Protocol::Tcp => "tcp",
        }
    }
}

/// One canary target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where.
    pub addr: SocketAddr,
    /// How.
    pub protocol: Protocol,
    /// Who runs it, for people reading the result.
    pub description: String,
}

/// A target list that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    /// The first line is not the expected header.
    #[error("{source_name}: the first line must be `{HEADER}`")]
    Header {
        /// File or list name.
        source_name: String,
    },
    /// A malformed line. The whole list is refused: a canary measured against half a list would
    /// read as a partial outage.
    #[error("{source_name}:{line}: {reason}")]
    Line {
        /// File or list name.
        source_name: String,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// No targets at all.
    #[error("{source_name}: no targets")]
    Empty {
        /// File or list name.
        source_name: String,
    },
}

/// Reads `address,port,protocol,description` lines.
pub fn parse_targets(text: &str, source_name: &str) -> Result<Vec<Target>, TargetsError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == HEADER => {}
        _ => {
            return Err(TargetsError::Header {
                source_name: source_name.into(),
            });
        }
    }
    let mut targets = Vec::new();
    for (i, line) in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| TargetsError::Line {
            source_name: source_name.into(),
            line: i + 1,
            reason: reason.into(),
        };
        let mut fields = line.splitn(4, ',');
        let (Some(address), Some(port), Some(protocol)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected address,port,protocol,description"));
        };
        let ip: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| bad("the address must be an IP address (a canary uses no DNS)"))?;
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("bad port"))?;
        let protocol = match protocol.trim() {
            "dns" => Protocol::Dns,
            "tcp" => Protocol::Tcp,
            other => return Err(bad(&format!("unknown protocol {other:?} (dns or tcp)"))),
        };
        targets.push(Target {
            addr: SocketAddr::new(ip, port),
            protocol,
            description: fields.next().unwrap_or("").trim().to_string(),
        });
    }
    if targets.is_empty() {
        return Err(TargetsError::Empty {
            source_name: source_name.into(),
        });
    }
    Ok(targets)
}

/// One target's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `IP:port`.
    pub target: String,
    /// How it was checked.
    pub protocol: Protocol,
    /// From the target list.
    pub description: String,
    /// Whether it answered.
    pub ok: bool,
    /// OONI failure string when it did not.
    pub failure: Option<String>,
    /// Seconds the check took.
    pub t: f64,
}

/// `test_keys` of a canary measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryKeys {
    /// One per target, in list order.
    pub checks: Vec<Check>,
    /// Targets that answered.
    pub ok: usize,
    /// Targets checked.
    pub total: usize,
    /// The DNS exchanges (df-002-dnst).
    pub queries: Vec<DnsQuery>,
    /// The TCP connects (df-005-tcpconnect).
    pub tcp_connect: Vec<TcpConnect>,
}

/// A canary measurement.
pub type CanaryMeasurement = Measurement<CanaryKeys>;

/// Checks every target at once, each within the engine's DNS or connect deadline.
pub async fn measure(
    targets: &[Target],
    config: &EngineConfig,
    tls: &TlsContext,
) -> CanaryMeasurement {
    let started = Instant::now();
    // The round's time is when it began, not when its slowest check gave up: during a shutdown
    // that difference is the whole timeout, and the aggregator places the evidence by it.
    let start_time = crate::ooni::ooni_timestamp(std::time::SystemTime::now());
    let trace = Arc::new(Trace::new());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().enumerate() {
        let (target, config, tls, trace) =
            (target.clone(), config.clone(), tls.clone(), trace.clone());
        tasks.spawn(async move { (i, check(&target, &config, &tls, &trace).await) });
    }
    let mut outcomes: Vec<_> = tasks.join_all().await;
    outcomes.sort_by_key(|(i, _)| *i);
    let mut keys = CanaryKeys {
        checks: Vec::with_capacity(targets.len()),
        ok: 0,
        total: targets.len(),
        queries: Vec::new(),
        tcp_connect: Vec::new(),
    };
    for (_, (check, queries, connect)) in outcomes {
        keys.ok += usize::from(check.ok);
        keys.checks.push(check);
        keys.queries.extend(queries);
        keys.tcp_connect.extend(connect);
    }
    let mut m = Measurement::vantage(CANARY, CANARY_VERSION, keys);
    m.measurement_start_time = start_time;
    m.test_runtime = started.elapsed().as_secs_f64();
    m
}

/// Signs a round and keeps it in the local store, queued for upload, in one transaction; a
/// canary recorded during a shutdown is evidence only if it survives until it can be sent.
pub fn keep(
    m: &CanaryMeasurement,
    identity: &crate::envelope::Identity,
    store: &mut crate::store::Store,
) -> Result<crate::envelope::MeasurementId, crate::run::RunError> {
    let row = crate::store::NewResult {
        id: "",
        input: None,
        test_name: CANARY,
        measured_at: &m.measurement_start_time,
        blocking: None,
        accessible: Some(m.test_keys.ok * 2 >= m.test_keys.total),
        confirmed: false,
        verdict: "null",
        envelope: "",
    };
    crate::run::keep(m, row, identity, store)
}

async fn check(
    target: &Target,
    config: &EngineConfig,
    tls: &TlsContext,
    trace: &Trace,
) -> (Check, Vec<DnsQuery>, Option<TcpConnect>) {
    let t0 = trace.clock.secs();
    let (ok, failure, queries, record) = match target.protocol {
        Protocol::Dns => {
            let found = lookup(
                &Resolver::Udp(target.addr),
                CANARY_NAME,
                config,
                tls,
                trace,
                None,
            )
            .await;
            let failure = found.error.as_ref().map(|e| e.failure().to_string());
            (failure.is_none(), failure, found.queries, None)
        }
        Protocol::Tcp => {
            let (record, result) = connect(
                target.addr,
                config.local_addr,
                trace,
                config.timeouts.tcp_connect,
                None,
                trace.transaction(),
            )
            .await;
            let failure = result.err().map(|e| e.failure().to_string());
            (failure.is_none(), failure, Vec::new(), Some(record))
        }
    };
    let check = Check {
        target: target.addr.to_string(),
        protocol: target.protocol,
        description: target.description.clone(),
        ok,
        failure,
        t: trace.clock.secs() - t0,
    };
    (check, queries, record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_targets_parse_and_use_no_names() {
        let targets = parse_targets(BUILTIN_TARGETS, "canaries.csv").expect("builtin");
        assert!(targets.len() >= 6, "{targets:?}");
        assert!(targets.iter().any(|t| t.protocol == Protocol::Dns));
        assert!(targets.iter().any(|t| t.protocol == Protocol::Tcp));
    }

    #[test]
    fn a_bad_line_refuses_the_whole_list() {
        let cases = [
            (
                "1.1.1.1,53,dns,x\n",
                "l: the first line must be `address,port,protocol,description`",
            ),
            (
                "address,port,protocol,description\none.one.one.one,53,dns,x\n",
                "l:2: the address must be an IP address (a canary uses no DNS)",
            ),
            (
                "address,port,protocol,description\n1.1.1.1,0,tcp,x\n",
                "l:2: bad port",
            ),
            (
                "address,port,protocol,description\n1.1.1.1,53,icmp,x\n",
                "l:2: unknown protocol \"icmp\" (dns or tcp)",
            ),
            (
                "address,port,protocol,description\n# nothing\n",
                "l: no targets",
            ),
        ];
        for (text, want) in cases {
            let err = parse_targets(text, "l").expect_err(text);
            assert_eq!(err.to_string(), want);
        }
    }
}
