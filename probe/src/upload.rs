//! Uploading the outbox to the aggregator (DESIGN "Aggregator", ingest).
//!
//! `POST {aggregator}/api/v1/measurements` with a body of signed envelope lines (JSONL). The
//! aggregator answers 200 with one outcome per line:
//!
//! ```text
//! {"results":[{"id":"<hex>","status":"accepted"|"duplicate"|"rejected","reason":"..."}]}
//! ```
//!
//! `accepted` and `duplicate` both mean the aggregator has it (uploads are idempotent by id), so
//! the result leaves the outbox; `rejected` leaves it too, with the reason kept, because sending a
//! line with a bad signature again would fail again forever. Anything else (refused connection,
//! a stall past the deadline, HTTP 5xx, an answer that is not the JSON above) is retried with
//! exponential backoff and jitter, so that many probes coming back online after a shutdown do not
//! all retry at the same instant.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::engine::{EngineConfig, TlsContext, Trace, client};
use crate::ooni::{Asn, CountryCode};
use crate::store::{Store, StoreError};

/// How to upload.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The aggregator's base URL.
    pub aggregator: Url,
    /// Envelopes per request.
    pub batch: usize,
    /// Deadline for one request.
    pub timeout: Duration,
    /// Attempts in a row that may fail before giving up for now.
    pub max_attempts: u32,
    /// First backoff; doubled after each failure, up to `max_backoff`.
    pub backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// SOCKS5 proxy for uploads (e.g. Tor at 127.0.0.1:9050).
    pub socks5: Option<std::net::SocketAddr>,
}

impl UploadConfig {
    /// Defaults for `aggregator`.
    pub fn new(aggregator: Url) -> Self {
        UploadConfig {
            aggregator,
            batch: 100,
            timeout: Duration::from_secs(30),
            max_attempts: 8,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            socks5: None,
        }
    }
}

/// What an upload run achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Newly accepted by the aggregator.
    pub accepted: u64,
    /// The aggregator already had them.
    pub duplicate: u64,
    /// Refused; not retried.
    pub rejected: u64,
    /// Still waiting.
    pub remaining: u64,
    /// The last error, when the run gave up.
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Answer {
    results: Vec<LineOutcome>,
}

#[derive(Debug, Deserialize)]
struct LineOutcome {
    id: Option<String>,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error("{0}")]
    Transport(String),
    #[error("aggregator answered HTTP {0}")]
    Status(u16),
    #[error("aggregator answer is not the expected JSON: {0}")]
    Answer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The delay before attempt `n` (1-based) after a failure: `base * 2^(n-1)`, capped, with
/// ±50% jitter.
pub fn backoff(config: &UploadConfig, failures: u32) -> Duration {
    use ring::rand::SecureRandom as _;
    let exp = config
        .backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(config.max_backoff);
    let mut b = [0u8; 1];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    // 0.5 ..= 1.5 times the delay.
    exp.mul_f64(0.5 + f64::from(b[0]) / 255.0)
}

/// Sends everything pending in `store`, oldest first.
pub async fn upload(
    store: &mut Store,
    config: &UploadConfig,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<UploadReport, StoreError> {
    let mut report = UploadReport::default();
    let mut failures = 0;
    let mut batch = config.batch.max(1);
    loop {
        let pending = store.pending(batch)?;
        if pending.is_empty() {
            break;
        }
        match send(store, &pending, config, engine, tls, &mut report).await {
            Ok(()) => failures = 0,
            Err(Attempt::Status(413)) if batch > 1 => batch = (batch / 2).max(1),
            Err(Attempt::Store(e)) => return Err(e),
            Err(e) => {
                failures += 1;
                let message = e.to_string();
                store.record_error(&message)?;
                tracing::warn!(attempt = failures, "upload failed: {message}");
                if failures >= config.max_attempts {
                    report.error = Some(message);
                    break;
                }
                tokio::time::sleep(backoff(config, failures)).await;
            }
        }
    }
    report.remaining = store.status()?.pending;
    Ok(report)
}

async fn send(
    store: &mut Store,
    pending: &[(String, String)],
    config: &UploadConfig,
    engine: &EngineConfig,
    tls: &TlsContext,
    report: &mut UploadReport,
) -> Result<(), Attempt> {
    let mut body = String::new();
    for (_, line) in pending {
        body.push_str(line);
        body.push('\n');
    }
    let url = config
        .aggregator
        .join("api/v1/measurements")
        .map_err(|e| Attempt::Transport(e.to_string()))?;
    let mut call = client::Call::post(
        &url,
        body.into_bytes(),
        "application/x-ndjson",
        "application/json",
    );
    call.timeout = config.timeout;
    call.body_cap = 4 << 20;
    call.socks5 = config.socks5;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| Attempt::Transport(format!("{}: {e}", e.failure())))?;
    if reply.status != 200 {
        return Err(Attempt::Status(reply.status));
    }
    let answer: Answer =
        serde_json::from_slice(&reply.body).map_err(|e| Attempt::Answer(e.to_string()))?;
    let mut outcomes = Vec::new();
    for line in answer.results {
        let Some(id) = line.id else { continue };
        if !pending.iter().any(|(p, _)| *p == id) {
            continue;
        }
        let state = match line.status.as_str() {
            "accepted" => {
                report.accepted += 1;
                "accepted"
            }
            "duplicate" => {
                report.duplicate += 1;
                "duplicate"
            }
            "rejected" => {
                report.rejected += 1;
                "rejected"
            }
            other => return Err(Attempt::Answer(format!("unknown status {other:?}"))),
        };
        outcomes.push((id, state.to_string(), line.reason));
    }
    if outcomes.is_empty() {
        return Err(Attempt::Answer("no outcome for any line sent".into()));
    }
    store.record_outcomes(&outcomes)?;
    Ok(())
}

/// Sends a signed "I am alive" (`POST /api/v1/heartbeat`): an envelope of a minimal OONI-format
/// measurement with `test_name: heartbeat`, so the aggregator can tell a network that went dark
/// from a probe that was switched off (DESIGN "Tests the probe runs").
pub async fn heartbeat(
    identity: &crate::envelope::Identity,
    config: &UploadConfig,
    cc: CountryCode,
    asn: Asn,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<(), String> {
    let control = Control {
        test_name: "heartbeat",
        test_keys: serde_json::json!({}),
        path: "api/v1/heartbeat",
    };
    control.send(identity, config, cc, asn, engine, tls).await
}

/// Enrols this probe's key with a one-time token from the aggregator's operator
/// (`POST /api/v1/enrol`, for aggregators run with `--require-enrolment`). The token travels
/// inside an envelope signed by the key, which proves the sender holds it.
pub async fn enrol(
    identity: &crate::envelope::Identity,
    config: &UploadConfig,
    token: &str,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<(), String> {
    let control = Control {
        test_name: "enrolment",
        test_keys: serde_json::json!({ "token": token }),
        path: "api/v1/enrol",
    };
    let zz = CountryCode::UNKNOWN;
    control
        .send(identity, config, zz, Asn(0), engine, tls)
        .await
}

/// A signed message to the aggregator that is not a measurement result: an envelope of a
/// minimal OONI-format measurement, so it is checked exactly like one.
struct Control {
    test_name: &'static str,
    test_keys: serde_json::Value,
    path: &'static str,
}

impl Control {
    async fn send(
        self,
        identity: &crate::envelope::Identity,
        config: &UploadConfig,
        cc: CountryCode,
        asn: Asn,
        engine: &EngineConfig,
        tls: &TlsContext,
    ) -> Result<(), String> {
        let mut m = crate::ooni::Measurement::vantage(self.test_name, "0.1.0", self.test_keys);
        m.probe_cc = cc;
        m.probe_asn = asn;
        let json = serde_json::to_string(&m).map_err(|e| e.to_string())?;
        let (_, line) = identity.seal(&json).map_err(|e| e.to_string())?;
        let url = config
            .aggregator
            .join(self.path)
            .map_err(|e| e.to_string())?;
        let mut call = client::Call::post(
            &url,
            line.into_bytes(),
            "application/json",
            "application/json",
        );
        call.timeout = config.timeout;
        call.socks5 = config.socks5;
        let reply = client::send(call, engine, tls, &Trace::new())
            .await
            .map_err(|e| e.failure().to_string())?;
        match reply.status {
            200 => Ok(()),
            status => Err(format!(
                "aggregator answered HTTP {status}: {}",
                String::from_utf8_lossy(&reply.body)
            )),
        }
    }
}

/// What `GET /api/v1/whoami` answers: the caller's network and country, which the aggregator
/// looks up from the connection's address and then forgets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WhoAmI {
    /// `AS<n>`.
    pub probe_asn: Asn,
    /// Two letters.
    pub probe_cc: CountryCode,
}

/// Asks the aggregator where this probe is. Never through a proxy: that would locate the proxy.
pub async fn whoami(
    aggregator: &Url,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<WhoAmI, String> {
    get_json(aggregator, "api/v1/whoami", engine, tls).await
}

/// Asks the aggregator where its throughput server is and which certificate to pin, for the
/// throttling test. Asked directly, like whoami: the answer must hold on this network.
pub async fn throughput(
    aggregator: &Url,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<crate::throttling::ServerInfo, String> {
    get_json(aggregator, "api/v1/throughput", engine, tls).await
}

/// `GET` of a small JSON document of the aggregator's API.
async fn get_json<T: serde::de::DeserializeOwned>(
    aggregator: &Url,
    path: &str,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<T, String> {
    let url = aggregator.join(path).map_err(|e| e.to_string())?;
    let mut call = client::Call::get(&url, "application/json");
    call.timeout = engine.timeouts.http;
    call.body_cap = 64 * 1024;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| e.failure().to_string())?;
    if reply.status != 200 {
        let detail = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(|e| format!(": {e}")))
            .unwrap_or_default();
        return Err(format!(
            "aggregator answered HTTP {} to {path}{detail}",
            reply.status
        ));
    }
    serde_json::from_slice(&reply.body).map_err(|e| format!("unexpected answer to {path}: {e}"))
}

/// Test lists fetched from the aggregator and kept in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedLists {
    /// The aggregator key that signed them, now pinned in `aggregator.key`.
    pub key: String,
    /// Whether that key was seen for the first time and trusted on first use.
    pub first_use: bool,
    /// Each list kept: name, URL rows, file written.
    pub files: Vec<(String, usize, std::path::PathBuf)>,
}

/// Downloads a country's list and the global one (`GET /api/v1/test-lists/{cc}`), checks the
/// aggregator's signature against `key` (else the key pinned in `data_dir/aggregator.key`, else
/// the key seen now, trusted on first use and pinned), and writes each list to
/// `data_dir/lists/<name>.csv`, where it replaces the built-in list. Nothing is written unless
/// the whole document verifies.
pub async fn fetch_lists(
    aggregator: &Url,
    cc: CountryCode,
    key: Option<&str>,
    data_dir: &std::path::Path,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<FetchedLists, String> {
    let url = aggregator
        .join(&format!(
            "api/v1/test-lists/{}",
            cc.as_str().to_ascii_lowercase()
        ))
        .map_err(|e| e.to_string())?;
    let mut call = client::Call::get(&url, "application/json");
    call.timeout = engine.timeouts.http;
    call.body_cap = 16 << 20;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| format!("cannot fetch {url}: {}", e.failure()))?;
    if reply.status != 200 {
        return Err(format!("cannot fetch {url}: HTTP {}", reply.status));
    }
    let line =
        String::from_utf8(reply.body).map_err(|_| format!("{url}: the answer is not UTF-8"))?;
    let pin = data_dir.join("aggregator.key");
    let pinned = std::fs::read_to_string(&pin)
        .ok()
        .map(|k| k.trim().to_string());
    let (expected, first_use) = match (key, pinned) {
        (Some(given), _) => (given.to_string(), false),
        (None, Some(pinned)) => (pinned, false),
        (None, None) => {
            let seen = crate::envelope::verify(line.trim())
                .map_err(|e| format!("test lists refused: {e}"))?
                .key;
            (seen, true)
        }
    };
    let lists =
        crate::test_lists::SignedLists::verify(&line, &expected).map_err(|e| e.to_string())?;
    let dir = data_dir.join("lists");
    let write = |path: &std::path::Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write(&pin, &format!("{expected}\n"))?;
    let mut files = Vec::new();
    for (name, text) in &lists.lists {
        let file = dir.join(format!("{name}.csv"));
        write(&file, text)?;
        files.push((name.clone(), text.lines().count().saturating_sub(1), file));
    }
    Ok(FetchedLists {
        key: expected,
        first_use,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut c = UploadConfig::new(Url::parse("http://127.0.0.1/").expect("url"));
        c.backoff = Duration::from_secs(1);
        c.max_backoff = Duration::from_secs(10);
        for (n, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 10.0), (30, 10.0)] {
            let d = backoff(&c, n).as_secs_f64();
            assert!((base * 0.5..=base * 1.5).contains(&d), "attempt {n}: {d}");
        }
    }
}
