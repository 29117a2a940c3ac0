//! `vantage relay` (docs/carry.md), with the real binaries on loopback: a probe uploads by its
//! routes in order, the first (the aggregator) down, the second a relay; the relay checks and
//! queues, refuses a forged envelope with the reason, caps a flood, and forwards everything with
//! the probe's own signatures once the aggregator comes up.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{AGGREGATOR, http, signed_in_ir, start_aggregator_on, tempdir, vantage};
use vantage_probe::envelope::{Identity, verify};
use vantage_probe::store::Store;

fn probe(data: &Path, args: &[&str]) -> (Output, String, String) {
    let out = Command::new(vantage())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run vantage");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `vantage relay`, killed on drop.
struct Relay {
    child: Child,
    base: String,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(data: &Path, aggregator: &str, extra: &[&str]) -> Relay {
    let mut child = Command::new(vantage())
        .args([
            "relay",
            "--listen",
            "127.0.0.1:0",
            "--aggregator",
            aggregator,
        ])
        .args(["--forward-seconds", "1"])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vantage relay");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let base = line
        .strip_prefix("relaying on ")
        .and_then(|l| l.split_once('/').map(|_| l))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end_matches(['/', ';'])
        .to_string();
    Relay { child, base }
}

/// Stores `n` canary results signed by the probe's key; returns their ids, sorted.
fn seed(data: &Path, n: i64) -> Vec<String> {
    let (o, _, e) = probe(data, &["id"]);
    assert!(o.status.success(), "{e}");
    let (key, _) = Identity::load_or_create(&data.join("identity.key")).expect("key");
    let mut store = Store::open(&data.join("vantage.db")).expect("store");
    let now = unix_now();
    let mut ids = Vec::new();
    for i in 0..n {
        let at = now - 3600 + i * 60;
        let envelope = signed_in_ir(
            &key,
            "canary",
            at,
            0.1,
            serde_json::json!({"ok": 0, "total": 4, "checks": [], "i": i}),
        );
        let id = verify(&envelope).expect("verify").id.to_string();
        let measured_at = vantage_aggregator::detect::format_time(at);
        common::queue_canary(&mut store, &id, &measured_at, &envelope);
        ids.push(id);
    }
    ids.sort();
    ids
}

fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time")
}

/// The envelopes an aggregator database holds: (id, signer), sorted.
fn stored(db: &Path) -> Vec<(String, String)> {
    let out = Command::new(AGGREGATOR)
        .args(["export", "--limit", "100000", "--db"])
        .arg(db)
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v = verify(l).expect("stored envelope verifies");
            (v.id.to_string(), v.key)
        })
        .collect();
    rows.sort();
    rows
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");

#[test]
fn a_relay_queues_checks_caps_and_forwards_with_the_original_signatures() {
    let dir = tempdir("relay");
    let (a, r) = (dir.join("probe-a"), dir.join("relay"));
    let ids = seed(&a, 3);
    let (key_a, _) = Identity::load_or_create(&a.join("identity.key")).expect("key");
    let agg_port = free_port();
    let agg = format!("http://127.0.0.1:{agg_port}/");
    let relay = start_relay(&r, &agg, &["--max-queue", "5", "--max-connections", "4"]);

    // The aggregator is down: the first route fails, the relay takes the upload.
    let (o, out, e) = probe(
        &a,
        &[
            "upload",
            "--aggregator",
            &agg,
            "--route",
            &agg,
            "--route",
            &relay.base,
        ],
    );
    assert!(o.status.success(), "{out}{e}");
    assert!(
        out.contains("Uploaded 3 results (0 already there, 0 refused)"),
        "{out}"
    );
    assert!(out.contains(&format!("Sent by {}/.", relay.base)), "{out}");
    let (_, out, _) = probe(&a, &["results", "list", "--json"]);
    assert_eq!(out.matches("\"upload\":\"accepted\"").count(), 3, "{out}");
    // Again: the relay already has them.
    let (_, out, _) = probe(
        &a,
        &["upload", "--aggregator", &agg, "--route", &relay.base],
    );
    assert!(
        out.contains("Uploaded 0 results"),
        "nothing left to send: {out}"
    );

    // The relay's queue holds them, as relayed, signed by A.
    let queued = Store::open(&r.join("vantage.db")).expect("relay store");
    let held: Vec<_> = queued.list(10).expect("list");
    assert_eq!(held.len(), 3);
    assert!(held.iter().all(|h| h.relayed), "{held:?}");
    assert!(
        held.iter()
            .all(|h| verify(&h.envelope).expect("sig").key == key_a.public_key())
    );
    drop(queued);

    // A forged envelope is refused with the reason, the good one beside it taken.
    let other = Identity::generate().expect("key");
    let good = signed_in_ir(
        &other,
        "canary",
        unix_now() - 60,
        0.1,
        serde_json::json!({"ok": 1, "total": 4, "checks": []}),
    );
    let forged = good.replacen("\"ok\":1", "\"ok\":4", 1);
    assert_ne!(forged, good);
    let body = format!("{forged}\nnot json\n{good}\n");
    let (status, answer) = http(
        &relay.base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results[0]["status"], "rejected");
    assert_eq!(results[0]["reason"], "bad signature");
    assert_eq!(results[1]["status"], "rejected");
    assert!(
        results[1]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("malformed"),
        "{answer}"
    );
    assert_eq!(results[2]["status"], "accepted");
    assert_eq!(results[2]["id"], verify(&good).expect("sig").id.to_string());

    // A flood: the queue holds 4 of at most 5, so three more are refused whole with 503.
    let flood: String = (0..3)
        .map(|i| {
            signed_in_ir(
                &other,
                "canary",
                unix_now() - i,
                0.1,
                serde_json::json!({"ok": 0, "total": 4, "checks": [], "i": i}),
            ) + "\n"
        })
        .collect();
    let reply = raw(&relay.base, "POST", &[NDJSON], flood.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("retry-after: 60"),
        "{reply}"
    );
    assert!(
        reply.contains("the relay's queue is full (4 envelopes wait"),
        "{reply}"
    );
    // A body declared over the bound is refused before it is read.
    let reply = raw_declared(&relay.base, "POST", &[NDJSON], b"", Some(5 << 20));
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("body larger than 4194304 bytes"), "{reply}");
    // Not the API's content type, a gzip body, heartbeats and whoami: refused with the reason.
    let (status, _) = http(
        &relay.base,
        "POST",
        "/api/v1/measurements",
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(status, 415);
    let (status, _) = http(
        &relay.base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON, ("Content-Encoding", "gzip")],
        b"x",
    );
    assert_eq!(status, 415);
    let (status, answer) = http(&relay.base, "GET", "/api/v1/whoami", &[], b"");
    assert_eq!(status, 404);
    assert!(
        answer.contains("heartbeats, enrolment and whoami go to the aggregator directly"),
        "{answer}"
    );
    // A bad relay header is refused whole.
    let (status, answer) = http(
        &relay.base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON, ("vantage-relay", "v1.AAAA.BBBB")],
        good.as_bytes(),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("vantage-relay header"), "{answer}");
    // Connections beyond the bound are answered 503 at once while the others idle.
    let idle = hold_every_slot(&relay.base, 4);
    let reply = raw(&relay.base, "GET", &[], b"");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("as many connections as it can"), "{reply}");
    drop(idle);

    // The aggregator comes up where the relay expects it: everything arrives, under the
    // signatures of the probes that made it.
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let server = start_aggregator_on(&format!("127.0.0.1:{agg_port}"), &ca, &db, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        rows = stored(&db);
        if rows.len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(server);
    let (_, status, _) = probe(&r, &["status"]);
    let from_a: Vec<String> = rows
        .iter()
        .filter(|(_, k)| *k == key_a.public_key())
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(from_a, ids, "{rows:?}");
    assert_eq!(
        rows.len(),
        4,
        "A's three and the good one: {rows:?}\n{status}"
    );
    // Stored as relayed, by the relay's key (never an address).
    let (relay_key, _) = Identity::load_or_create(&r.join("identity.key")).expect("relay key");
    let conn = rusqlite::Connection::open(&db).expect("aggregator db");
    let routes: Vec<(String, Option<String>)> = conn
        .prepare("SELECT DISTINCT route, relayed_by FROM measurements")
        .expect("query")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("routes");
    assert_eq!(
        routes,
        [("relay".to_string(), Some(relay_key.public_key()))],
        "every measurement came by the relay"
    );
    drop(conn);
    let (_, out, _) = probe(&r, &["status"]);
    assert!(
        out.contains("0 waiting") || out.contains("waiting for upload: 0"),
        "{out}"
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request written by hand; the whole reply, head and body.
/// Opens `n` connections that send nothing, and keeps them once the relay holds all of them.
/// An earlier request's connection may still own a slot for a moment after its answer was
/// read; a connection the relay refused then has a 503 waiting, so the set is opened again.
fn hold_every_slot(base: &str, n: usize) -> Vec<std::net::TcpStream> {
    let addr = base.trim_start_matches("http://");
    for _ in 0..20 {
        let idle: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let refused = idle.iter().any(|s| {
            s.set_nonblocking(true).expect("nonblocking");
            let mut byte = [0u8; 1];
            // Data or EOF means the relay answered or closed it: not a held slot.
            !matches!(s.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        if !refused {
            return idle;
        }
        drop(idle);
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the relay never held {n} idle connections at once");
}

fn raw(base: &str, method: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    raw_declared(base, method, headers, body, None)
}

/// [`raw`] with a Content-Length of `declared` instead of the body's.
fn raw_declared(
    base: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    declared: Option<usize>,
) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut head = format!(
        "{method} /api/v1/measurements HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        declared.unwrap_or(body.len())
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("head");
    let _ = s.write_all(body);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}
