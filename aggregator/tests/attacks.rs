//! The aggregator under attack, end to end: the real `vantage-aggregator serve` on loopback,
//! replaying each attack of the threat model (SECURITY.md) with the answer an attacker must get,
//! then checking that the server still serves, that nothing partial or poisoned was stored, and
//! that its peak memory (the kernel's VmHWM) stayed under the bound SECURITY.md documents.
//!
//! The throughput server and the test helper have their own attacks in `attacks_helpers.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{AGGREGATOR, Server, http, tempdir};
use serde_json::Value;
use vantage_aggregator::store::{Row, Sqlite, Storage};
use vantage_probe::envelope::Identity;

/// The documented bound on the server's resident memory under every attack here.
const MEMORY_BOUND_KB: u64 = 300 * 1024;

const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];
const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];

/// The server's peak resident set so far, in KiB.
fn peak_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn addr(server: &Server) -> SocketAddr {
    server
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address")
}

/// An OONI-format measurement of `test_name`, as a probe would sign it.
fn measurement(test_name: &str, start: &str, test_keys: &Value) -> Value {
    serde_json::json!({
        "data_format_version": "0.2.0", "input": null, "measurement_start_time": start,
        "probe_asn": "AS64500", "probe_cc": "IT", "probe_ip": "127.0.0.1",
        "software_name": "vantage", "software_version": "0", "test_keys": test_keys,
        "test_name": test_name, "test_runtime": 0.1, "test_version": "0.1.0"
    })
}

fn now_text() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc()
        .format(format)
        .expect("format")
}

fn seal(id: &Identity, m: &Value) -> String {
    id.seal(&m.to_string()).expect("seal").1
}

fn upload(server: &Server, body: &str) -> (u16, Value) {
    let (status, text) = http(
        &server.base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        body.as_bytes(),
    );
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json)
}

/// (status, reason) of each line's outcome.
fn outcomes(answer: &Value) -> Vec<(String, String)> {
    answer["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|o| {
                    (
                        o["status"].as_str().unwrap_or("").to_string(),
                        o["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `body` gzip-compressed; returns the status, the `Retry-After` header and the body.
fn gzip_upload(base: &str, body: &[u8]) -> (u16, Option<String>, String) {
    let mut s = TcpStream::connect(base.trim_start_matches("http://")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300)))
        .expect("timeout");
    let head = format!(
        "POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    let _ = s.write_all(body);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let retry = reply
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .map(str::to_string);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, retry, body)
}

fn gzip(data: impl Fn(&mut dyn Write)) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    data(&mut enc);
    enc.finish().expect("gzip")
}

/// A database of `n` stored measurements of about 7 KB each, written through the library
/// before the server starts (ingesting them over HTTP would only make the test slower).
fn seed(db: &Path, n: usize) {
    let store = Sqlite::open(db).expect("open");
    let padding = "x".repeat(7000);
    for chunk in 0..n.div_ceil(1000) {
        let rows: Vec<Row> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| Row {
                id: format!("{i:064x}"),
                source: "vantage".into(),
                probe_key: Some("seed".into()),
                probe_cc: "IT".into(),
                probe_asn: 64500,
                test_name: "web_connectivity".into(),
                input: Some(format!("https://example.org/{i}")),
                domain: Some("example.org".into()),
                measured_at: format!("2026-01-01 00:{:02}:{:02}", (i / 60) % 60, i % 60),
                blocking: Some("false".into()),
                accessible: Some(true),
                confirmed: false,
                rule_set: None,
                verdict: None,
                envelope: format!("{{\"v\":1,\"n\":{i},\"pad\":\"{padding}\"}}"),
                network_verified: false,
                route: vantage_aggregator::store::Route::Upload,
            })
            .collect();
        store.insert(&rows).expect("insert");
    }
}

fn server(name: &str, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let dir = tempdir(name);
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    (
        common::start_aggregator_with(&ca, &db, extra),
        db.to_path_buf(),
    )
}

fn healthy(server: &Server) {
    let (status, body) = http(&server.base, "GET", "/api/v1/health", &[], b"");
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");
}

#[test]
fn upload_bombs_and_export_floods_stay_within_the_memory_bound() {
    let dir = tempdir("attack-memory");
    let db = dir.join("agg.db");
    seed(&db, 20_000);
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let server = common::start_aggregator_with(&ca, &db, &[]);
    let base = server.base.clone();

    // 8 gzip bombs at once: 127 MiB of newlines each, about 130 KB on the wire. Each is read
    // as it inflates: no line, so nothing stored, and a plain 200.
    let bomb = gzip(|w| {
        let newlines = vec![b'\n'; 1 << 20];
        for _ in 0..127 {
            w.write_all(&newlines).expect("write");
        }
    });
    assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| gzip_upload(&base, &bomb)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert!(body.contains("\"results\":[]"), "{body}");
    }

    // One line of 127 MiB: refused as too large without being held.
    let long_line = gzip(|w| {
        let a = vec![b'a'; 1 << 20];
        for _ in 0..127 {
            w.write_all(&a).expect("write");
        }
    });
    let (status, _, body) = gzip_upload(&base, &long_line);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("too large: 133169152 bytes"),
        "the line is refused by its length: {body}"
    );

    // A bomb past the decompressed limit: 413, and the server goes on.
    let big = gzip(|w| {
        let newlines = vec![b'\n'; 1 << 20];
        for _ in 0..129 {
            w.write_all(&newlines).expect("write");
        }
    });
    let (status, _, body) = gzip_upload(&base, &big);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("once decompressed"), "{body}");

    // More bombs at once than the byte budget holds (96 MiB, 7 MiB each): the ones beyond it
    // are told to come back later, with Retry-After.
    let answers: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|_| s.spawn(|| gzip_upload(&base, &bomb)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(
        answers.iter().all(|(s, _, _)| *s == 200 || *s == 503),
        "{answers:?}"
    );
    assert!(!busy.is_empty(), "24 bombs at once must exceed the budget");
    for (_, retry, body) in busy {
        assert_eq!(retry.as_deref(), Some("5"), "{body}");
        assert!(body.contains("too many uploads in progress"), "{body}");
    }

    eprintln!(
        "attack-memory: peak resident set {} MiB after the upload bombs",
        peak_kb(&server) / 1024
    );

    // 3 exports of 100,000 rows at once, read to the end: each streams 20,000 envelopes
    // (about 140 MB) a page at a time.
    let exports: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let (status, body) =
                        http(&base, "GET", "/api/v1/export?limit=100000", &[], b"");
                    assert_eq!(status, 200);
                    body.lines().filter(|l| l.starts_with("{\"v\":1")).count()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    assert_eq!(exports, vec![20_000; 3]);

    // Exports beyond the 4 that may stream at once get 503 while those run.
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(addr(&server)).expect("connect");
            s.write_all(b"GET /api/v1/export?limit=100000 HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("request");
            let mut first = [0u8; 12];
            s.read_exact(&mut first).expect("first bytes");
            assert_eq!(&first[9..12], b"200");
            s
        })
        .collect();
    let (status, body) = http(&base, "GET", "/api/v1/export?limit=10", &[], b"");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many exports in progress"), "{body}");
    slow.clear();

    healthy(&server);
    let peak = peak_kb(&server);
    eprintln!(
        "attack-memory: peak resident set {} MiB after the exports too",
        peak / 1024
    );
    assert!(
        peak < MEMORY_BOUND_KB,
        "peak {peak} KiB over the {MEMORY_BOUND_KB} KiB bound"
    );
    // Nothing was stored by the bombs: the 20,000 seeded rows are all there is.
    let (_, page) = http(&base, "GET", "/api/v1/measurements?limit=1000", &[], b"");
    let page: Value = serde_json::from_str(&page).expect("json");
    assert_eq!(page["results"].as_array().map(Vec::len), Some(1000));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens `n` connections from `source` that send nothing.
fn silent(server: SocketAddr, source: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            let from: SocketAddr = format!("{source}:0").parse().expect("source");
            socket.bind(&from.into()).expect("bind source");
            socket.connect(&server.into()).ok()?;
            Some(TcpStream::from(socket))
        })
        .collect()
}

/// How many of `sockets` the server has closed (a read sees the end or an error at once).
fn closed(sockets: &mut [TcpStream]) -> usize {
    sockets
        .iter_mut()
        .filter(|s| {
            let mut s: &TcpStream = s;
            s.set_nonblocking(true).expect("nonblocking");
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count()
}

/// Waits (up to 30 s) until fewer than `n` connections wait in the accept queue of the
/// listener on 127.0.0.1:`port`: its `rx_queue` in /proc/net/tcp (proc(5)).
fn accept_queue_below(port: u16, n: usize) {
    let local = format!("0100007F:{port:04X}");
    let started = Instant::now();
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        let queued = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A"))
            .and_then(|f| f.get(4)?.split_once(':'))
            .and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok())
            .expect("the server's listening socket in /proc/net/tcp");
        if queued < n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{queued} connections still wait to be accepted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`closed`], asked again until at least `want` are closed or `within` has passed since
/// `since`: a loaded server closes them a while after the test asks, and a fixed sleep before
/// one count either waits too little there or wastes time everywhere else. Returns the last
/// count and when it was taken.
fn closed_by(
    sockets: &mut [TcpStream],
    want: usize,
    since: Instant,
    within: Duration,
) -> (usize, Duration) {
    loop {
        let shut = closed(sockets);
        if shut >= want || since.elapsed() >= within {
            return (shut, since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn silent_connections_cannot_lock_out_a_probe() {
    let (server, _db) = server(
        "attack-connections",
        &[
            "--max-connections",
            "1000",
            "--max-connections-per-source",
            "50",
        ],
    );
    let to = addr(&server);

    // One source gets 50 connections; the rest are closed at once (well before the 10 s head
    // deadline would close the 50 it holds).
    let opened = Instant::now();
    let mut one = silent(to, "127.0.0.2", 200);
    let (shut, after) = closed_by(&mut one, 140, opened, Duration::from_secs(30));
    assert!(
        (140..=150).contains(&shut),
        "{shut} of 200 closed at once, {after:?} after they were opened"
    );

    // 3,000 silent connections from 100 sources, three times the global cap: the newest take
    // the places of the oldest, and a probe asking for something still gets its answer.
    // Each source's thirty are opened once the server has taken the earlier ones off the
    // kernel's accept queue: past the queue's 1,024 (listen(2)), a connection's last handshake
    // packet is dropped and the server takes it only seconds later, when the client answers a
    // retransmitted SYN-ACK, so its head deadline starts late. The test is about the server's
    // deadlines, not the kernel's queue.
    let mut crowd = Vec::new();
    let crowd_opened = Instant::now();
    for i in 1..=100 {
        accept_queue_below(to.port(), 512);
        crowd.extend(silent(to, &format!("127.0.1.{i}"), 30));
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        healthy(&server);
        worst = worst.max(t.elapsed());
    }
    eprintln!("attack-connections: worst health latency {worst:?} under 3,000 silent sockets");
    assert!(worst < Duration::from_secs(1), "{worst:?}");

    // No socket stays open without sending its request head: the 10 s head deadline closes
    // every silent one. Asked until they are all closed: a loaded machine accepts the crowd
    // (and so starts its deadlines) a while after the test opened it, and closes 3,000
    // sockets a while after the deadline. A server without the deadline, or with one of 30 s,
    // still fails.
    let want = crowd.len();
    let (crowd_shut, after) = closed_by(&mut crowd, want, crowd_opened, Duration::from_secs(25));
    let one_shut = closed(&mut one);
    eprintln!("attack-connections: {crowd_shut} of {want} closed {after:?} after the crowd came");
    assert_eq!(
        (crowd_shut, one_shut),
        (crowd.len(), one.len()),
        "silent sockets left open {after:?} after the crowd came"
    );
    healthy(&server);
    let peak = peak_kb(&server);
    eprintln!("attack-connections: peak resident set {} MiB", peak / 1024);
    assert!(peak < MEMORY_BOUND_KB, "peak {peak} KiB");
}

#[test]
fn poisoned_and_forged_lines_are_refused_and_break_no_query() {
    let (server, db) = server(
        "attack-poison",
        &["--lines-per-key-hour", "5", "--new-keys-per-hour", "4"],
    );
    let now = now_text();
    let probe = Identity::generate().expect("key");

    // Two canaries claiming i64::MAX targets answered in one bin, the overflow that broke the
    // signals query for good: refused, and the signals still answer.
    let huge = serde_json::json!({"ok": i64::MAX, "total": i64::MAX, "checks": []});
    let canary = |n: u64| {
        let mut m = measurement("canary", &now, &huge);
        m["test_runtime"] = n.into();
        seal(&probe, &m)
    };
    let (status, answer) = upload(&server, &format!("{}\n{}\n", canary(1), canary(2)));
    assert_eq!(status, 200);
    for (status, reason) in outcomes(&answer) {
        assert_eq!(status, "rejected");
        assert!(reason.starts_with("malformed: canary counts"), "{reason}");
    }
    let (status, body) = http(&server.base, "GET", "/api/v1/signals?cc=IT", &[], b"");
    assert_eq!(status, 200, "{body}");

    // The same key is not registered by lines that failed: it is unknown still.
    let keys = Command::new(AGGREGATOR)
        .args(["keys", "list", "--db"])
        .arg(&db)
        .output()
        .expect("keys list");
    assert!(
        !String::from_utf8_lossy(&keys.stdout).contains(&probe.public_key()),
        "a key registered by refused lines"
    );

    // A real probe address, a time before 2012, nesting 40 deep, and a forged signature.
    let mut with_ip = measurement("canary", &now, &serde_json::json!({"ok": 1, "total": 1}));
    with_ip["probe_ip"] = "203.0.113.9".into();
    let old = measurement(
        "canary",
        "2011-06-01 00:00:00",
        &serde_json::json!({"ok": 1, "total": 1}),
    );
    let mut deep = serde_json::json!(1);
    for _ in 0..40 {
        deep = serde_json::json!([deep]);
    }
    let deep = measurement("dash", &now, &deep);
    let good = measurement("canary", &now, &serde_json::json!({"ok": 8, "total": 9}));
    let forged = seal(&probe, &good).replace("\"test_runtime\":0.1", "\"test_runtime\":0.2");
    let body = [
        seal(&probe, &with_ip),
        seal(&probe, &old),
        seal(&probe, &deep),
        forged,
        seal(&probe, &good),
    ]
    .join("\n");
    let (status, answer) = upload(&server, &body);
    assert_eq!(status, 200);
    let got = outcomes(&answer);
    assert!(got[0].1.starts_with("probe_ip"), "{got:?}");
    assert_eq!(got[1].1, "time before 2012");
    assert_eq!(got[2].1, "malformed: nested deeper than 32 levels");
    assert_eq!(got[3].1, "bad signature");
    assert_eq!(got[4].0, "accepted", "{got:?}");
    let (_, stored) = http(&server.base, "GET", "/api/v1/measurements", &[], b"");
    assert!(
        !stored.contains("203.0.113.9"),
        "a probe address republished"
    );

    // One key, 6 more lines: 4 fit in its 5 an hour, the rest are refused as rate limited (the
    // probe keeps those queued).
    let lines: Vec<String> = (0..6)
        .map(|n| {
            let mut m = good.clone();
            m["test_runtime"] = (n + 10).into();
            seal(&probe, &m)
        })
        .collect();
    let (_, answer) = upload(&server, &lines.join("\n"));
    let got = outcomes(&answer);
    assert_eq!(got.iter().filter(|(s, _)| s == "accepted").count(), 4);
    assert_eq!(
        got.iter()
            .filter(|(_, r)| r.starts_with("rate limited: this key"))
            .count(),
        2,
        "{got:?}"
    );

    // New keys: 4 an hour, and the first probe took one.
    let fresh: Vec<String> = (0..4)
        .map(|n| {
            let mut m = good.clone();
            m["test_runtime"] = (n + 100).into();
            seal(&Identity::generate().expect("key"), &m)
        })
        .collect();
    let (_, answer) = upload(&server, &fresh.join("\n"));
    let got = outcomes(&answer);
    assert_eq!(got.iter().filter(|(s, _)| s == "accepted").count(), 3);
    assert!(
        got[3].1.starts_with("rate limited: more than 4 new keys"),
        "{got:?}"
    );

    // Media types: a body without one, or of another, is refused before it is read.
    let (status, body) = http(&server.base, "POST", "/api/v1/measurements", &[], b"{}\n");
    assert_eq!(status, 415, "{body}");
    let (status, _) = http(
        &server.base,
        "POST",
        "/api/v1/heartbeat",
        &[("Content-Type", "text/plain")],
        b"{}",
    );
    assert_eq!(status, 415);
    let (status, body) = http(
        &server.base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON[0], ("Content-Encoding", "br")],
        b"{}\n",
    );
    assert_eq!(status, 415, "{body}");
    let (status, _) = http(&server.base, "POST", "/api/v1/th", JSON, b"not json");
    assert_eq!(status, 400);

    // 25,000 lines in one body: 20,000 are read and answered, and the answer says the rest
    // must come again.
    let (status, answer) = upload(&server, &"{}\n".repeat(25_000));
    assert_eq!(status, 200);
    assert_eq!(answer["results"].as_array().map(Vec::len), Some(20_000));
    assert!(
        answer["incomplete"]
            .as_str()
            .is_some_and(|t| t.contains("lines after line 20000 were not read")),
        "{answer}"
    );

    // What is stored is exactly what was accepted: 1 + 4 + 3 canaries, nothing partial.
    let (status, page) = http(
        &server.base,
        "GET",
        "/api/v1/measurements?limit=1000",
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&page).expect("json");
    assert_eq!(page["results"].as_array().map(Vec::len), Some(8), "{page}");
    let (status, body) = http(&server.base, "GET", "/api/v1/signals?cc=IT", &[], b"");
    assert_eq!(status, 200, "{body}");
    healthy(&server);
}

/// `POST path` from the loopback address `source`, as a probe elsewhere would send it.
fn post_from(server: &Server, source: &str, path: &str, kind: &str, body: &str) -> (u16, String) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let from: SocketAddr = format!("{source}:0").parse().expect("source");
    socket.bind(&from.into()).expect("bind source");
    socket.connect(&addr(server).into()).expect("connect");
    let mut s = TcpStream::from(socket);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(body.as_bytes()).expect("body");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status = reply.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, reply)
}

#[test]
fn probes_that_are_not_in_the_network_they_claim_do_not_count_for_it() {
    // The operator's prefixes: 127.0.0.1 is inside AS64500 (IT); 127.0.0.3 is a host in another
    // country, where fake probes run.
    let dir = tempdir("attack-claims");
    let prefixes = dir.join("prefixes.csv");
    std::fs::write(
        &prefixes,
        "prefix,asn,cc\n127.0.0.1/32,64500,IT\n127.0.0.3/32,64999,DE\n",
    )
    .expect("prefixes");
    let (server, _db) = server(
        "attack-claims-db",
        &["--prefixes", prefixes.to_str().expect("utf-8")],
    );
    let now = now_text();
    let beat = measurement("heartbeat", &now, &serde_json::json!({}));
    let real = Identity::generate().expect("key");
    let (status, reply) = post_from(
        &server,
        "127.0.0.1",
        "/api/v1/heartbeat",
        "application/json",
        &seal(&real, &beat),
    );
    assert_eq!(status, 200, "{reply}");
    // Five fake probes "in" AS64500 send heartbeats and all-good canaries from elsewhere, as a
    // censor hiding a shutdown would. They are answered like anyone (nothing tells them apart
    // on the wire) but do not count as probes of AS64500.
    for n in 0..5 {
        let fake = Identity::generate().expect("key");
        let (status, reply) = post_from(
            &server,
            "127.0.0.3",
            "/api/v1/heartbeat",
            "application/json",
            &seal(&fake, &beat),
        );
        assert_eq!(status, 200, "{reply}");
        let mut canary = measurement("canary", &now, &serde_json::json!({"ok": 9, "total": 9}));
        canary["test_runtime"] = (n + 1).into();
        let (status, reply) = post_from(
            &server,
            "127.0.0.3",
            "/api/v1/measurements",
            "application/x-ndjson",
            &seal(&fake, &canary),
        );
        assert_eq!(status, 200, "{reply}");
        assert!(reply.contains("accepted"), "{reply}");
    }
    let (status, body) = http(
        &server.base,
        "GET",
        "/api/v1/signals?cc=IT&asn=AS64500",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let signals: Value = serde_json::from_str(&body).expect("json");
    let bins = signals["bins"].as_array().expect("bins");
    let probes: i64 = bins.iter().filter_map(|b| b["probes"].as_i64()).sum();
    let beats: i64 = bins.iter().filter_map(|b| b["heartbeats"].as_i64()).sum();
    assert_eq!(
        (probes, beats),
        (1, 1),
        "only the probe inside AS64500 counts: {body}"
    );
    healthy(&server);
    let _ = std::fs::remove_dir_all(&dir);
}
