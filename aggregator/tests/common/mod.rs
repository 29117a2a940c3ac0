//! Helpers shared by the end-to-end tests: the real binaries and a scripted ingest server.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vantage_probe::envelope::verify;

pub const AGGREGATOR: &str = env!("CARGO_BIN_EXE_vantage-aggregator");

/// The `vantage` binary beside this package's binary, brought up to date once per test run:
/// `cargo test -p vantage-aggregator` alone would otherwise test a stale probe.
pub fn vantage() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let mut cargo = Command::new(env!("CARGO"));
        // Variables cargo sets for this test would make the nested build look different (ring's
        // build script reruns when CARGO_MANIFEST_DIR changes), so each `cargo test` and each
        // nested build would rebuild ring and everything above it in turn.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            let per_crate = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
                "CARGO_TARGET_TMPDIR",
            ];
            if per_crate.iter().any(|p| key.starts_with(p)) {
                cargo.env_remove(&key);
            }
        }
        let status = cargo
            .args([
                "build",
                "--quiet",
                "-p",
                "vantage-probe",
                "--bin",
                "vantage",
            ])
            .status()
            .expect("run cargo");
        assert!(status.success(), "cannot build the vantage binary");
    });
    Path::new(AGGREGATOR).with_file_name("vantage")
}

/// A fresh temporary directory for one test.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

/// The aggregator, killed on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub th: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `vantage-aggregator serve` with its helper connecting from 127.0.0.2.
pub fn start_aggregator(ca: &Path) -> Server {
    let db = ca.with_file_name("aggregator.db");
    start_aggregator_with(ca, &db, &[])
}

/// A fresh directory holding a test CA and a new database, with an aggregator serving it:
/// (server, directory, database path).
pub async fn fresh_aggregator(name: &str) -> (Server, PathBuf, PathBuf) {
    let dir = tempdir(name);
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let server = serve(&ca, &db, &[]).await;
    (server, dir, db)
}

/// [`start_aggregator_with`], off the async runtime (it waits for the server's first line).
pub async fn serve(ca: &Path, db: &Path, extra: &[&str]) -> Server {
    let (ca, db) = (ca.to_path_buf(), db.to_path_buf());
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        start_aggregator_with(&ca, &db, &extra)
    })
    .await
    .expect("join")
}

/// Starts `vantage-aggregator serve` on `db`, with extra arguments.
pub fn start_aggregator_with(ca: &Path, db: &Path, extra: &[&str]) -> Server {
    start_aggregator_on("127.0.0.1:0", ca, db, extra)
}

/// [`start_aggregator_with`] on a given address, e.g. the port of an aggregator that was
/// stopped, to bring it back where its probes expect it.
pub fn start_aggregator_on(listen: &str, ca: &Path, db: &Path, extra: &[&str]) -> Server {
    let mut serve = Command::new(AGGREGATOR);
    serve
        .args(["serve", "--listen", listen, "--th-local-addr", "127.0.0.2"])
        .args(["--th-allow-private", "--th-timeout", "3", "--ca-file"])
        .arg(ca)
        .arg("--db")
        .arg(db)
        .args(extra);
    spawn_server(serve)
}

/// Starts `serve` (a `vantage-aggregator serve ...` command, listening on a free port) and waits
/// for the line that says where it listens.
pub fn spawn_server(mut serve: Command) -> Server {
    let mut child = serve
        .stdout(Stdio::piped())
        .spawn()
        .expect("start vantage-aggregator");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listen line");
    let base = line
        .trim()
        .strip_prefix("vantage-aggregator listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server {
        child,
        th: format!("{base}/api/v1/th"),
        base,
    }
}

/// What the test ingest server does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// HTTP 500.
    Fail,
    /// Never answers.
    Stall,
    /// Verifies and records every line.
    Accept,
}

/// A test ingest server: `POST /api/v1/measurements` answering per line, after a script of
/// failures; every verified id it accepted, in order (repeats would show up twice).
#[derive(Clone, Default)]
pub struct Ingest {
    pub script: Arc<Mutex<VecDeque<Behaviour>>>,
    pub received: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<Mutex<usize>>,
}

async fn ingest(State(state): State<Ingest>, body: String) -> Response {
    *state.requests.lock().expect("lock") += 1;
    let next = state
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(Behaviour::Accept);
    match next {
        Behaviour::Fail => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Behaviour::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Behaviour::Accept => {}
    }
    let mut results = Vec::new();
    for line in body.lines().filter(|l| !l.is_empty()) {
        match verify(line) {
            Ok(v) => {
                let mut received = state.received.lock().expect("lock");
                let status = if received.contains(&v.id.to_string()) {
                    "duplicate"
                } else {
                    received.push(v.id.to_string());
                    "accepted"
                };
                results.push(serde_json::json!({"id": v.id.as_str(), "status": status}));
            }
            Err(e) => results.push(
                serde_json::json!({"id": null, "status": "rejected", "reason": e.to_string()}),
            ),
        }
    }
    axum::Json(serde_json::json!({ "results": results })).into_response()
}

impl Ingest {
    /// Serves on `addr` (port 0 for any) and returns the bound address.
    pub async fn serve(&self, addr: SocketAddr) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind ingest");
        let bound = listener.local_addr().expect("addr");
        let app = axum::Router::new()
            .route("/api/v1/measurements", axum::routing::post(ingest))
            .route(
                "/api/v1/whoami",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({"probe_cc": "IT", "probe_asn": "AS3269"}))
                }),
            )
            .with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        bound
    }
}

/// `vantage results list --json` for a data directory: (id, input) pairs.
pub fn stored(data: &Path) -> Vec<(String, String)> {
    let out = Command::new(vantage())
        .args([
            "results",
            "list",
            "--json",
            "--limit",
            "100000",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .expect("run vantage results");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["id"].as_str().expect("id").to_string(),
                v["input"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A plain HTTP/1.1 request to the aggregator; returns status and body.
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write head");
    let _ = s.write_all(body);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Decode a chunked body, if any.
    let body = if reply
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n.min(tail.len())]);
            rest = tail.get(n + 2..).unwrap_or_default();
        }
        out
    } else {
        body
    };
    (status, body)
}

/// A measurement of `test_name` by `key`, made at `at` (epoch seconds) in IR / AS64500, with
/// these test keys, sealed: the heartbeats and canaries of the timeline's end-to-end tests.
pub fn signed_in_ir(
    key: &vantage_probe::envelope::Identity,
    test_name: &str,
    at: i64,
    runtime: f64,
    keys: serde_json::Value,
) -> String {
    let mut m = serde_json::to_value(vantage_probe::ooni::Measurement::vantage(
        test_name, "0.1.0", keys,
    ))
    .expect("json");
    m["probe_cc"] = "IR".into();
    m["probe_asn"] = "AS64500".into();
    m["measurement_start_time"] = vantage_aggregator::detect::format_time(at).into();
    m["test_runtime"] = runtime.into();
    key.seal(&m.to_string()).expect("seal").1
}

/// The probes' heartbeats (every minute while online) and canary rounds (every five minutes,
/// failing while dark and uploaded once back) over `[from, to)`, dark during `[cut, back)`,
/// ingested through the library straight into `store` (each probe from its `Origin`), as a
/// node would: the fleet of the timeline's end-to-end tests.
pub fn seed_probes(
    store: &dyn vantage_aggregator::store::Storage,
    probes: &[(
        vantage_probe::envelope::Identity,
        vantage_aggregator::ingest::Origin,
    )],
    from: i64,
    to: i64,
    cut: i64,
    back: i64,
) {
    use vantage_aggregator::ingest::{self, IngestConfig};
    let fingerprints = vantage_probe::verdict::fingerprints::Fingerprints::builtin();
    let config = IngestConfig::default();
    for (p, (key, origin)) in probes.iter().enumerate() {
        let mut queue = Vec::new();
        let mut t = from + i64::try_from(p).expect("small") * 7;
        while t < to {
            let online = !(cut..back).contains(&t);
            if online {
                let beat = signed_in_ir(key, "heartbeat", t, 0.0, serde_json::json!({}));
                ingest::heartbeat(store, &beat, &config, origin)
                    .expect("store")
                    .expect("accepted");
            }
            if (t - from) % 300 < 60 {
                let ok = if online { 4 } else { 0 };
                let keys = serde_json::json!({"ok": ok, "total": 4, "checks": []});
                queue.push(signed_in_ir(key, "canary", t, p as f64 / 10.0, keys));
            }
            if online && !queue.is_empty() {
                let outcomes =
                    ingest::ingest(store, &queue.join("\n"), &config, &fingerprints, origin)
                        .expect("ingest");
                assert!(
                    outcomes
                        .iter()
                        .all(|o| o.status == ingest::Status::Accepted),
                    "{outcomes:?}"
                );
                queue.clear();
            }
            t += 60;
        }
    }
}

/// The JSON results of a search of the measurements API (`filters` is the query string).
pub fn search_results(base: &str, filters: &str) -> Vec<serde_json::Value> {
    let (status, body) = http(
        base,
        "GET",
        &format!("/api/v1/measurements?{filters}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{filters}: {body}");
    let mut v: serde_json::Value = serde_json::from_str(&body).expect("json");
    match v["results"].take() {
        serde_json::Value::Array(results) => results,
        other => panic!("{filters}: results is not a list: {other}"),
    }
}

/// The results of a search, as (id, blocking, accessible, rule_set).
pub fn search(
    base: &str,
    filters: &str,
) -> Vec<(
    String,
    serde_json::Value,
    serde_json::Value,
    serde_json::Value,
)> {
    search_results(base, filters)
        .into_iter()
        .map(|r| {
            (
                r["id"].as_str().expect("id").to_string(),
                r["blocking"].clone(),
                r["accessible"].clone(),
                r["rule_set"].clone(),
            )
        })
        .collect()
}

/// `GET /api/v1/measurements/{id}` from an async test (the request blocks): status and body.
pub async fn get_measurement(base: &str, id: &str) -> (u16, String) {
    let (base, path) = (base.to_string(), format!("/api/v1/measurements/{id}"));
    tokio::task::spawn_blocking(move || http(&base, "GET", &path, &[], b""))
        .await
        .expect("join")
}

/// Collects a spawned process's stderr, line by line, into a log the test can read while the
/// process runs (the daemons' tests wait for a line to appear).
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("log").push(line);
        }
    });
    log
}

/// Queues a failed canary's `envelope` in a probe's store, as its canary round would; true if
/// it was new.
pub fn queue_canary(
    store: &mut vantage_probe::store::Store,
    id: &str,
    measured_at: &str,
    envelope: &str,
) -> bool {
    store
        .insert(&vantage_probe::store::NewResult {
            id,
            input: None,
            test_name: "canary",
            measured_at,
            blocking: None,
            accessible: Some(false),
            confirmed: false,
            verdict: "{}",
            envelope,
        })
        .expect("insert")
}

/// Detection over IR as the timeline's tests run it: a full pass, default settings, at `now`.
pub fn detect_ir(store: &dyn vantage_aggregator::store::Storage, now: i64) {
    vantage_aggregator::detect::detect(
        store,
        Some("IR"),
        vantage_aggregator::detect::Pass::Full(None),
        now,
        &std::collections::HashMap::new(),
        &vantage_aggregator::detect::DetectConfig::default(),
    )
    .expect("detect");
}

/// Every event of IR / AS64500's timeline, of `kind` if given.
pub fn timeline_ir(
    store: &dyn vantage_aggregator::store::Storage,
    kind: Option<vantage_aggregator::detect::Kind>,
) -> Vec<vantage_aggregator::store::model::Event> {
    store
        .timeline(&vantage_aggregator::store::model::TimelineQuery {
            cc: Some("IR".into()),
            asn: Some(64500),
            since: 0,
            until: i64::MAX / 2,
            kind,
        })
        .expect("timeline")
}
