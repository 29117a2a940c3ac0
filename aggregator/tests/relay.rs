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
    // Not the API's content type, an encoding it does not read, heartbeats and whoami: refused
    // with the reason.
    let (status, _) = http(
        &relay.base,
        "POST",
        "/api/v1/measurements",
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(status, 415);
    let (status, answer) = http(
        &relay.base,
        "POST",
        "/api/v1/measurements",
        &[NDJSON, ("Content-Encoding", "br")],
        b"x",
    );
    assert_eq!(status, 415, "{answer}");
    assert!(
        answer.contains("Content-Encoding must be gzip or none"),
        "{answer}"
    );
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
    let reply = one_past_the_bound(&relay.base, 4);
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("as many connections as it can"), "{reply}");

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

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn a_relay_takes_gzip_within_its_bounds_and_refuses_a_bomb_and_broken_gzip() {
    let dir = tempdir("relay-gzip");
    let r = dir.join("relay");
    let agg_port = free_port();
    let agg = format!("http://127.0.0.1:{agg_port}/");
    // Limits given as options: 64 KiB of body (inflated too), two lines per request.
    let relay = start_relay(&r, &agg, &["--max-body-kib", "64", "--max-lines", "2"]);
    let probe_key = Identity::generate().expect("key");
    let lines: Vec<String> = (0..3)
        .map(|i| {
            signed_in_ir(
                &probe_key,
                "canary",
                unix_now() - 120 + i,
                0.1,
                serde_json::json!({"ok": 0, "total": 4, "checks": [], "i": i}),
            )
        })
        .collect();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let gz = [NDJSON, ("Content-Encoding", "gzip")];

    // A gzip upload of three lines: the first two taken, the third left for the next request.
    let (status, answer) = http(
        &relay.base,
        "POST",
        "/api/v1/measurements",
        &gz,
        &gzip(body.as_bytes()),
    );
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    let statuses: Vec<&str> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["accepted", "accepted"], "{answer}");
    assert!(
        answer["incomplete"]
            .as_str()
            .is_some_and(|m| m.starts_with("at most 2 lines are read from one request")),
        "{answer}"
    );

    // A bomb: 16 MiB of zeros in a few KiB, refused once 64 KiB are inflated.
    let bomb = gzip(&vec![b'\n'; 16 << 20]);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let (status, answer) = http(&relay.base, "POST", "/api/v1/measurements", &gz, &bomb);
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer.contains("body larger than 65536 bytes once decompressed"),
        "{answer}"
    );
    // Cut short, or not gzip at all: 400 with the reason, nothing kept.
    let whole = gzip(format!("{}\n", lines[2]).as_bytes());
    for (what, bytes) in [
        ("truncated", &whole[..whole.len() / 2]),
        ("plain text", lines[2].as_bytes()),
    ] {
        let (status, answer) = http(&relay.base, "POST", "/api/v1/measurements", &gz, bytes);
        assert_eq!(status, 400, "{what}: {answer}");
        assert!(
            answer.contains("bad body: not valid gzip (RFC 1952)"),
            "{what}: {answer}"
        );
    }
    let queued = Store::open(&r.join("vantage.db")).expect("relay store");
    assert_eq!(
        queued.list(10).expect("list").len(),
        2,
        "only the two taken"
    );
    drop(queued);

    // The aggregator comes up: the two taken from gzip arrive, relayed by the relay.
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let server = start_aggregator_on(&format!("127.0.0.1:{agg_port}"), &ca, &db, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        rows = stored(&db);
        if rows.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(server);
    let mut want: Vec<(String, String)> = lines[..2]
        .iter()
        .map(|l| {
            (
                verify(l).expect("sig").id.to_string(),
                probe_key.public_key(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(rows, want);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn relay_limits_are_options_checked_before_anything_is_opened() {
    let dir = tempdir("relay-options");
    let data = dir.join("relay");
    let bad: &[(&str, &str, &str)] = &[
        (
            "--max-lines",
            "0",
            "--max-lines 0: must be 1 to 100000 (lines)",
        ),
        (
            "--header-seconds",
            "0",
            "--header-seconds 0: must be 1 to 600 (seconds)",
        ),
        (
            "--body-seconds",
            "86400",
            "--body-seconds 86400: must be 1 to 3600 (seconds)",
        ),
        (
            "--max-body-kib",
            "0",
            "--max-body-kib 0: must be 1 to 65536 (KiB)",
        ),
        (
            "--max-queue",
            "0",
            "--max-queue 0: must be 1 to 100000000 (envelopes)",
        ),
        (
            "--forward-seconds",
            "0",
            "--forward-seconds 0: must be 1 to 86400 (seconds)",
        ),
        (
            "--max-connections",
            "100000",
            "--max-connections 100000: must be 1 to 4096 (connections)",
        ),
        ("--max-lines", "99999999999999999999999", "invalid value"),
    ];
    for (flag, value, want) in bad {
        let out = Command::new(vantage())
            .args(["relay", "--listen", "127.0.0.1:0"])
            .args(["--aggregator", "http://127.0.0.1:9/"])
            .args([*flag, *value])
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("run vantage relay");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}");
        assert!(stderr.contains(want), "{flag} {value}: {stderr}");
        assert!(!data.exists(), "{flag} {value}: nothing is created first");
    }
    // --help names each limit with its unit and default.
    let out = Command::new(vantage())
        .args(["relay", "--help"])
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--max-lines <N>",
        "--header-seconds <SECS>",
        "--body-seconds <SECS>",
        "--max-body-kib <KIB>",
        "in KiB",
        "[default: 1000]",
        "[default: 10]",
        "[default: 4096]",
    ] {
        assert!(help.contains(want), "{want}: {help}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// (route, relayed_by) of the measurement `id` in an aggregator database, once it is there.
fn route_of(db: &Path, id: &str) -> Option<(String, Option<String>)> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row(
        "SELECT route, relayed_by FROM measurements WHERE id = ?1",
        [id],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .ok()
}

fn keys(db: &Path, args: &[&str]) {
    let out = Command::new(AGGREGATOR)
        .arg("keys")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("keys");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_relayer_is_recorded_only_while_its_key_stands_and_its_envelopes_always_count() {
    let dir = tempdir("relay-standing");
    let r = dir.join("relay");
    let agg_port = free_port();
    let agg = format!("http://127.0.0.1:{agg_port}/");
    let relay = start_relay(&r, &agg, &[]);
    let (relay_key, _) = Identity::load_or_create(&r.join("identity.key")).expect("relay key");
    let relay_key = relay_key.public_key();
    let probe_key = Identity::generate().expect("key");
    // An aggregator that takes enrolled keys only: the probe's, not (yet) the relay's.
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let server = start_aggregator_on(
        &format!("127.0.0.1:{agg_port}"),
        &ca,
        &db,
        &["--require-enrolment"],
    );
    keys(&db, &["allow", &probe_key.public_key()]);

    // Each step: the relay's standing, then one envelope through the relay and how it is
    // stored. Relayed by an unenrolled or revoked key, it is stored all the same, as an upload.
    let steps: [(Option<&str>, Option<&str>); 3] = [
        (None, None),
        (Some("allow"), Some(relay_key.as_str())),
        (Some("revoke"), None),
    ];
    for (i, (standing, by)) in steps.into_iter().enumerate() {
        if let Some(action) = standing {
            keys(&db, &[action, &relay_key]);
        }
        let line = signed_in_ir(
            &probe_key,
            "canary",
            unix_now() - 60 + i as i64,
            0.1,
            serde_json::json!({"ok": 0, "total": 4, "checks": [], "i": i}),
        );
        let id = verify(&line).expect("sig").id.to_string();
        let (status, answer) = http(
            &relay.base,
            "POST",
            "/api/v1/measurements",
            &[NDJSON],
            format!("{line}\n").as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("\"accepted\""), "{answer}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut found = None;
        while found.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(300));
            found = route_of(&db, &id);
        }
        let want = match by {
            Some(key) => ("relay".to_string(), Some(key.to_string())),
            None => ("upload".to_string(), None),
        };
        assert_eq!(found, Some(want), "after {standing:?}");
    }
    drop(server);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens `n` connections that send nothing, then one more that asks for a page, and returns
/// the answer to that one. An earlier request's connection may still own a slot for a moment
/// after its answer was read, so one of the `n` may have been refused instead: the relay
/// accepts in order, so by the time the last connection is answered any refusal of the idle
/// ones has been written. Then the set is opened again; if none of them was refused, the
/// answer stands, whatever it is.
fn one_past_the_bound(base: &str, n: usize) -> String {
    let addr = base.trim_start_matches("http://");
    let mut reply = String::new();
    for _ in 0..20 {
        let idle: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        reply = raw(base, "GET", &[], b"");
        if reply.starts_with("HTTP/1.1 503") {
            return reply;
        }
        std::thread::sleep(Duration::from_millis(500));
        let refused = idle.iter().any(|s| {
            s.set_nonblocking(true).expect("nonblocking");
            let mut byte = [0u8; 1];
            // Data or EOF means the relay answered or closed it: it held no slot.
            !matches!(s.peek(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        if !refused {
            return reply;
        }
    }
    reply
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
