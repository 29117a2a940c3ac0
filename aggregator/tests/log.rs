//! The transparency log end to end (docs/transparency.md): the real `serve` on loopback with a
//! SQLite file, signed measurements uploaded over HTTP, the leaf indices of the answer, the
//! checkpoint published within 10 seconds, the tiles and proofs served, all verified by an
//! independent verifier written in Python from the specifications (`log_verify.py`), and then
//! the same file altered underneath the server: the verifier, holding the checkpoint it saw
//! before, reports what no longer verifies.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{AGGREGATOR, fresh_aggregator, serve, signed_in_ir, spawn_server, tempdir};
use serde_json::Value;
use vantage_aggregator::store::Sqlite;
use vantage_probe::envelope::Identity;

const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

/// Measurements uploaded: more than one full tile (256), so that the log has a full and a
/// partial tile at level 0 and a partial one at level 1.
const COUNT: usize = 300;

/// A GET on loopback: status, headers (lower-case names) and the body's bytes.
fn get(base: &str, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read");
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked"),
        "{path}: a chunked answer"
    );
    (status, headers, reply[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Waits (up to `limit`) for a checkpoint of `size` entries; returns it and how long it took.
fn checkpoint_of(base: &str, size: u64, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let (status, _, body) = get(base, "/log/checkpoint");
        let text = String::from_utf8_lossy(&body).into_owned();
        if status == 200 && text.lines().nth(1) == Some(size.to_string().as_str()) {
            return (text, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "no checkpoint of {size} within {limit:?}: {status} {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`python_verifier`] off the test's runtime, which the server it asks shares.
async fn verify(base: &str, public_key: &str, pinned: Option<&Path>, ids: &Path) -> (bool, String) {
    let (base, key) = (base.to_string(), public_key.to_string());
    let (pinned, ids) = (pinned.map(Path::to_path_buf), ids.to_path_buf());
    tokio::task::spawn_blocking(move || python_verifier(&base, &key, pinned.as_deref(), &ids))
        .await
        .expect("join")
}

/// The Python verifier's run: (success, its report).
fn python_verifier(
    base: &str,
    public_key: &str,
    pinned: Option<&Path>,
    ids: &Path,
) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/log_verify.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--base", base, "--public-key", public_key, "--measurements"])
        .arg(ids)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(p) = pinned {
        cmd.arg("--checkpoint").arg(p);
    }
    let out = cmd.output().expect("python3 (tests/run.sh installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

/// `COUNT` canary rounds signed by `key`: (id, envelope line).
fn measurements(key: &Identity) -> Vec<(String, String)> {
    let start = vantage_aggregator::store::now() - 86_400;
    (0..COUNT)
        .map(|i| {
            let line = signed_in_ir(
                key,
                "canary",
                start + i64::try_from(i).expect("small") * 60,
                0.5,
                serde_json::json!({"ok": 4, "total": 4, "checks": []}),
            );
            let id = vantage_probe::envelope::verify(&line)
                .expect("signed")
                .id
                .to_string();
            (id, line)
        })
        .collect()
}

/// Uploads `lines`; returns each line's (status, leaf_index).
fn upload(base: &str, lines: &[String]) -> Vec<(String, Option<u64>)> {
    let (status, body) = common::http(
        base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        lines.join("\n").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["status"].as_str().expect("status").to_string(),
                r["leaf_index"].as_u64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_measurements_are_provably_in_the_signed_log_and_an_altered_file_is_caught() {
    let (server, dir, db) = fresh_aggregator("log").await;
    let base = server.base.clone();
    let aggregator_key = Identity::load_or_create(&dir.join("agg.db.key"))
        .expect("the aggregator's key")
        .0
        .public_key();
    let probe = Identity::generate().expect("key");
    let signed = measurements(&probe);
    let lines: Vec<String> = signed.iter().map(|(_, l)| l.clone()).collect();

    // Each accepted line gets its leaf, in order; sent again, each is a duplicate with the same.
    let (answers, again, took) = tokio::task::spawn_blocking({
        let (base, lines) = (base.clone(), lines.clone());
        move || {
            let answers = upload(&base, &lines);
            let uploaded = Instant::now();
            let again = upload(&base, &lines);
            checkpoint_of(&base, COUNT as u64, Duration::from_secs(20));
            (answers, again, uploaded.elapsed())
        }
    })
    .await
    .expect("join");
    let want: Vec<(String, Option<u64>)> = (0..COUNT as u64)
        .map(|i| ("accepted".to_string(), Some(i)))
        .collect();
    assert_eq!(answers, want);
    let dup: Vec<(String, Option<u64>)> = (0..COUNT as u64)
        .map(|i| ("duplicate".to_string(), Some(i)))
        .collect();
    assert_eq!(again, dup, "a duplicate is not appended twice");
    assert!(
        took <= Duration::from_secs(12),
        "the checkpoint came {took:?} after the upload"
    );

    let (checkpoint, _) = checkpoint_of(&base, COUNT as u64, Duration::from_secs(1));
    let origin = checkpoint.lines().next().expect("origin").to_string();
    assert!(origin.starts_with("vantage.invalid/"), "{checkpoint}");
    let (status, headers, _) = get(&base, "/log/checkpoint");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/plain; charset=utf-8")
    );

    // The tiles of a log of 300: level 0 has a full tile and one of 44, level 1 one of 1.
    let (status, headers, full) = get(&base, "/log/tile/0/000");
    assert_eq!((status, full.len()), (200, 256 * 32));
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/octet-stream")
    );
    let (status, headers, partial) = get(&base, "/log/tile/0/001.p/44");
    assert_eq!((status, partial.len()), (200, 44 * 32));
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=60")
    );
    let (status, _, top) = get(&base, "/log/tile/1/000.p/1");
    assert_eq!((status, top.len()), (200, 32));
    let (status, _, bundle) = get(&base, "/log/tile/entries/001.p/44");
    assert_eq!((status, bundle.len()), (200, 44 * 66));
    assert_eq!(
        &bundle[..2],
        &[0, 64],
        "each entry is 64 bytes, length first"
    );
    // The first entry of the second bundle is leaf 256: measurement 256's id and the probe key.
    assert_eq!(hex::encode(&bundle[2..34]), signed[256].0);
    for (path, status) in [
        ("/log/tile/0/001", 404),
        ("/log/tile/0/001.p/45", 404),
        ("/log/tile/2/000.p/1", 404),
        ("/log/tile/0/x000/001.p/44", 400),
        ("/log/tile/0/001.p/0", 400),
        ("/log/tile/0/001.p/256", 400),
        ("/log/tile/64/000", 400),
        ("/log/tile/00/000", 400),
        ("/log/tile/0/0001", 400),
        ("/log/tile/0/x018/x446/x744/x073/x709/x551/616", 400),
        ("/log/tile/entries/000/extra", 400),
        ("/log/tile/", 404),
    ] {
        let (got, _, body) = get(&base, path);
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, _) = get(&base, &format!("/log/tile/0/{}000", "x000/".repeat(200)));
    assert_eq!(status, 400, "an endless path is refused");

    // A proof, as a client reads it.
    let (status, _, body) = get(&base, &format!("/api/v1/log/proof/{}", signed[5].0));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let proof: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(proof["leaf_index"], 5);
    assert_eq!(proof["tree_size"], COUNT);
    assert_eq!(proof["checkpoint"], checkpoint);
    assert_eq!(
        proof["inclusion_proof"].as_array().expect("hashes").len(),
        9
    );
    for (path, status) in [
        (format!("/api/v1/log/proof/{}", "0".repeat(64)), 404),
        ("/api/v1/log/proof/xyz".to_string(), 400),
        (format!("/api/v1/log/proof/{}", "g".repeat(64)), 400),
    ] {
        let (got, _, _) = get(&base, &path);
        assert_eq!(got, status, "{path}");
    }

    // The independent verifier agrees: signature, root from the tiles, every proof.
    let ids = dir.join("measurements.txt");
    let probe_key = probe.public_key();
    std::fs::write(
        &ids,
        signed
            .iter()
            .map(|(id, _)| format!("{id} {probe_key}\n"))
            .collect::<String>(),
    )
    .expect("write");
    let pinned = dir.join("checkpoint.txt");
    std::fs::write(&pinned, &checkpoint).expect("write");
    let (ok, report) = verify(&base, &aggregator_key, None, &ids).await;
    assert!(ok, "{report}");
    assert!(
        report.contains("is signed by the aggregator's key"),
        "{report}"
    );
    assert!(report.contains("ok 300 of 300 proofs verify"), "{report}");
    assert!(report.ends_with("0 failed\n"), "{report}");
    // Another key's checkpoint is not this aggregator's.
    let (ok, report) = verify(&base, &probe_key, None, &ids).await;
    assert!(!ok && report.contains("FAIL checkpoint"), "{report}");
    drop(server);

    // Altered: the operator rewrites measurement 7's leaf and its leaf hash in the file.
    let forged_id = "ee".repeat(32);
    {
        let c = rusqlite::Connection::open(&db).expect("open");
        let mut leaf = hex::decode(&forged_id).expect("hex");
        leaf.extend_from_slice(&[1u8; 32]);
        c.execute(
            "UPDATE log_leaves SET leaf = ?1 WHERE idx = 7",
            rusqlite::params![leaf],
        )
        .expect("alter");
        // Leaf 7's stored hashes begin with its leaf hash (docs/transparency.md).
        let mut hashes: Vec<u8> = c
            .query_row("SELECT hashes FROM log_leaves WHERE idx = 7", [], |r| {
                r.get(0)
            })
            .expect("leaf 7's hashes");
        hashes[..32].copy_from_slice(&tlog_tiles::record_hash(&leaf).0);
        let n = c
            .execute(
                "UPDATE log_leaves SET hashes = ?1 WHERE idx = 7",
                rusqlite::params![hashes],
            )
            .expect("alter");
        assert_eq!(n, 1);
    }
    // Our own audit, from the leaves up, says where.
    let audit = vantage_aggregator::log::audit(&Sqlite::open(&db).expect("open"));
    let e = audit.expect_err("the audit catches it").to_string();
    assert!(e.contains("the log was altered"), "{e}");
    let ca = dir.join("ca.pem");
    let server = serve(&ca, &db, &[]).await;
    let base = server.base.clone();
    let (ok, report) = verify(&base, &aggregator_key, Some(&pinned), &ids).await;
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL the root of the 300 leaf hashes of the tiles is the checkpoint's"),
        "{report}"
    );
    assert!(
        report.contains(&format!("FAIL proof of {}: HTTP 500", signed[7].0)),
        "the rewritten measurement's leaf is not its own: {report}"
    );
    assert!(
        report.contains(&format!("FAIL proof of {}: HTTP 500", signed[6].0)),
        "its neighbour's proof no longer leads to the signed root: {report}"
    );
    assert!(report.contains("FAIL 298 of 300 proofs verify"), "{report}");
    drop(server);

    // Deleted: the last measurement and its leaf are removed from the file.
    {
        let c = rusqlite::Connection::open(&db).expect("open");
        let last = &signed[COUNT - 1].0;
        assert_eq!(
            c.execute("DELETE FROM log_leaves WHERE idx = ?1", [COUNT as i64 - 1])
                .expect("delete"),
            1
        );
        c.execute("DELETE FROM measurements WHERE id = ?1", [last])
            .expect("delete");
    }
    let shrunk = vantage_aggregator::log::check(&Sqlite::open(&db).expect("open"));
    let e = shrunk.expect_err("caught").to_string();
    assert!(e.contains("299 leaves, fewer than the 300"), "{e}");
    let server = serve(&ca, &db, &[]).await;
    let base = server.base.clone();
    let (ok, report) = verify(&base, &aggregator_key, Some(&pinned), &ids).await;
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL the level-0 tiles of a tree of 300: HTTP Error 404"),
        "{report}"
    );
    assert!(
        report.contains(&format!("FAIL proof of {}: HTTP 404", signed[COUNT - 1].0)),
        "{report}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_log_nothing_is_appended_until_the_next_start_with_it() {
    let (server, dir, db) = fresh_aggregator("no-log").await;
    drop(server);
    let ca = dir.join("ca.pem");
    let server = serve(&ca, &db, &["--no-log"]).await;
    let probe = Identity::generate().expect("key");
    let signed = measurements(&probe);
    let lines: Vec<String> = signed.iter().take(3).map(|(_, l)| l.clone()).collect();
    let base = server.base.clone();
    let answers = tokio::task::spawn_blocking({
        let (base, lines) = (base.clone(), lines.clone());
        move || upload(&base, &lines)
    })
    .await
    .expect("join");
    assert!(
        answers.iter().all(|a| a == &("accepted".to_string(), None)),
        "no leaf without the log: {answers:?}"
    );
    for path in [
        "/log/checkpoint".to_string(),
        "/log/tile/0/000.p/1".to_string(),
        format!("/api/v1/log/proof/{}", signed[0].0),
    ] {
        let (status, _, body) = get(&base, &path);
        assert_eq!(status, 404, "{path}");
        let answer: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            answer["error"],
            "this aggregator keeps no transparency log (it was started with --no-log)"
        );
    }
    drop(server);
    // Started again with the log, it appends what was stored meanwhile before anything else.
    let server = serve(&ca, &db, &[]).await;
    let base = server.base.clone();
    let next = tokio::task::spawn_blocking({
        let (base, line) = (base.clone(), signed[3].1.clone());
        move || {
            let answer = upload(&base, &[line]);
            checkpoint_of(&base, 4, Duration::from_secs(20));
            answer
        }
    })
    .await
    .expect("join");
    assert_eq!(next, [("accepted".to_string(), Some(3))]);
    let (status, _, body) = get(&base, &format!("/api/v1/log/proof/{}", signed[1].0));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let proof: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (proof["leaf_index"].as_u64(), proof["tree_size"].as_u64()),
        (Some(1), Some(4))
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// `serve` on the ClickHouse store `url`, signing with the key file `key`, its detectors off.
fn serve_clickhouse(dir: &Path, url: &str, key: &Path) -> common::Server {
    let mut cmd = Command::new(AGGREGATOR);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-detect", "--db"])
        .arg(dir.join("node"))
        .arg("--key")
        .arg(key)
        .args(["--store", url]);
    spawn_server(cmd)
}

/// The ids of the leaves `[0, size)` as the entry bundles serve them (size < 512).
fn logged_ids(base: &str, size: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, width) in [(0, size.min(256)), (1, size.saturating_sub(256))] {
        if width == 0 {
            continue;
        }
        let path = if width == 256 {
            format!("/log/tile/entries/{n:03}")
        } else {
            format!("/log/tile/entries/{n:03}.p/{width}")
        };
        let (status, _, bundle) = get(base, &path);
        assert_eq!((status, bundle.len()), (200, width * 66), "{path}");
        ids.extend(bundle.chunks(66).map(|e| {
            assert_eq!(&e[..2], &[0, 64], "{path}");
            hex::encode(&e[2..34])
        }));
    }
    ids
}

/// Two `serve` nodes on one ClickHouse database: measurements uploaded to either, and the same
/// ones to both, are in the one log exactly once, integrated by the node holding the log's
/// lease and checkpointed within 10 s; both nodes serve the same checkpoint, tiles and proofs,
/// which the independent verifier checks; when one node stops, the other goes on.
#[tokio::test(flavor = "multi_thread")]
async fn on_clickhouse_what_either_node_stores_is_logged_once_by_the_sequencer() {
    let clickhouse = vantage_fixtures::clickhouse::Server::start()
        .expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)");
    let dir = tempdir("log-clickhouse");
    let key = dir.join("agg.key");
    let aggregator_key = Identity::load_or_create(&key)
        .expect("the aggregator's key")
        .0
        .public_key();
    let url = clickhouse.url("vantage");
    let (one, two) = tokio::task::spawn_blocking({
        let (dir, url, key) = (dir.clone(), url.clone(), key.clone());
        move || {
            std::fs::create_dir_all(dir.join("a")).expect("mkdir");
            std::fs::create_dir_all(dir.join("b")).expect("mkdir");
            (
                serve_clickhouse(&dir.join("a"), &url, &key),
                serve_clickhouse(&dir.join("b"), &url, &key),
            )
        }
    })
    .await
    .expect("join");
    let (a, b) = (one.base.clone(), two.base.clone());
    let probe = Identity::generate().expect("key");
    let signed = measurements(&probe);
    let lines: Vec<String> = signed.iter().map(|(_, l)| l.clone()).collect();

    // 200 through one node, the last 150 through the other (50 of them twice): no leaf index
    // in the answers, and a proof asked at once is "not yet" (or already there), never 404.
    let (first, second, early, took) = tokio::task::spawn_blocking({
        let (a, b, lines, id) = (a.clone(), b.clone(), lines.clone(), signed[0].0.clone());
        move || {
            let first = upload(&a, &lines[..200]);
            let second = upload(&b, &lines[150..]);
            let uploaded = Instant::now();
            let (status, headers, body) = get(&b, &format!("/api/v1/log/proof/{id}"));
            let early = (
                status,
                header(&headers, "retry-after").map(str::to_string),
                String::from_utf8_lossy(&body).into_owned(),
            );
            checkpoint_of(&a, COUNT as u64, Duration::from_secs(20));
            (first, second, early, uploaded.elapsed())
        }
    })
    .await
    .expect("join");
    assert!(
        first.iter().all(|a| *a == ("accepted".to_string(), None)),
        "{first:?}"
    );
    let want: Vec<(String, Option<u64>)> = (150..COUNT)
        .map(|i| {
            let status = if i < 200 { "duplicate" } else { "accepted" };
            (status.to_string(), None)
        })
        .collect();
    assert_eq!(second, want);
    match early {
        (503, Some(retry), _) => assert!(retry.parse::<u64>().is_ok_and(|r| r > 0), "{retry}"),
        (200, _, _) => {}
        other => panic!("a proof asked before the sequencer ran: {other:?}"),
    }
    assert!(
        took <= Duration::from_secs(12),
        "the checkpoint came {took:?} after the upload"
    );

    // Both nodes serve the one log: the same checkpoint, every measurement once.
    let (checkpoint, _) = checkpoint_of(&a, COUNT as u64, Duration::from_secs(1));
    let (from_b, _) = checkpoint_of(&b, COUNT as u64, Duration::from_secs(12));
    assert_eq!(checkpoint, from_b);
    let mut logged = logged_ids(&b, COUNT);
    logged.sort();
    let mut ids: Vec<String> = signed.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(logged, ids, "every measurement exactly once");
    let (status, _, full) = get(&a, "/log/tile/0/000");
    assert_eq!((status, full.len()), (200, 256 * 32));
    let (status, _, body) = get(&b, &format!("/api/v1/log/proof/{}", signed[7].0));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let proof: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(proof["tree_size"], COUNT);
    assert_eq!(proof["checkpoint"], checkpoint);
    let (status, headers, body) = get(&a, &format!("/api/v1/log/entry/{}", signed[7].0));
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-vantage-entry"), Some("measurement"));
    assert_eq!(String::from_utf8_lossy(&body), signed[7].1);
    let (status, _, _) = get(&a, &format!("/api/v1/log/proof/{}", "0".repeat(64)));
    assert_eq!(status, 404, "an id never stored");

    // The independent verifier, through either node.
    let ids_file = dir.join("measurements.txt");
    let probe_key = probe.public_key();
    std::fs::write(
        &ids_file,
        signed
            .iter()
            .map(|(id, _)| format!("{id} {probe_key}\n"))
            .collect::<String>(),
    )
    .expect("write");
    for base in [&a, &b] {
        let (ok, report) = verify(base, &aggregator_key, None, &ids_file).await;
        assert!(ok, "{report}");
        assert!(report.contains("ok 300 of 300 proofs verify"), "{report}");
    }

    // Everything again through both nodes, then one new measurement: the next checkpoint has
    // one leaf more, the new one, and nothing was appended twice.
    let extra = measurements(&Identity::generate().expect("key")).swap_remove(0);
    tokio::task::spawn_blocking({
        let (a, b, lines, extra) = (a.clone(), b.clone(), lines.clone(), extra.1.clone());
        move || {
            assert!(upload(&b, &lines).iter().all(|r| r.0 == "duplicate"));
            assert!(upload(&a, &lines).iter().all(|r| r.0 == "duplicate"));
            upload(&a, &[extra]);
            checkpoint_of(&b, COUNT as u64 + 1, Duration::from_secs(20));
        }
    })
    .await
    .expect("join");
    let logged = logged_ids(&a, COUNT + 1);
    assert_eq!(logged[COUNT], extra.0);
    assert_eq!(
        logged[..COUNT].iter().filter(|id| **id == extra.0).count(),
        0
    );

    // One node stops (whichever held the log's lease): the other goes on, taking the lease
    // over once it lapses (20 s), and logs what it stores next.
    drop(one);
    let last = measurements(&Identity::generate().expect("key")).swap_remove(0);
    let took = tokio::task::spawn_blocking({
        let (b, line) = (b.clone(), last.1.clone());
        move || {
            upload(&b, &[line]);
            let uploaded = Instant::now();
            checkpoint_of(&b, COUNT as u64 + 2, Duration::from_secs(40));
            uploaded.elapsed()
        }
    })
    .await
    .expect("join");
    assert!(took <= Duration::from_secs(35), "{took:?}");
    assert_eq!(logged_ids(&b, COUNT + 2)[COUNT + 1], last.0);
    drop(two);
    std::fs::remove_dir_all(&dir).ok();
}

/// Posts one envelope to `path`: (status, body).
fn post_envelope(base: &str, path: &str, line: &str) -> (u16, String) {
    common::http(
        base,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        line.as_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_and_enrolments_are_logged_once_and_only_a_heartbeat_s_envelope_is_served() {
    let dir = tempdir("log-entries");
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let out = Command::new(AGGREGATOR)
        .args(["keys", "token", "--count", "1", "--db"])
        .arg(&db)
        .output()
        .expect("keys token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let server = serve(&ca, &db, &["--require-enrolment"]).await;
    let base = server.base.clone();
    let aggregator_key = Identity::load_or_create(&dir.join("agg.db.key"))
        .expect("the aggregator's key")
        .0
        .public_key();
    let (alice, bob) = (
        Identity::generate().expect("key"),
        Identity::generate().expect("key"),
    );
    let now = vantage_aggregator::store::now();
    let id_of = |line: &str| {
        vantage_probe::envelope::verify(line)
            .expect("signed")
            .id
            .to_string()
    };
    let enrolment = signed_in_ir(
        &alice,
        "enrolment",
        now - 60,
        0.0,
        serde_json::json!({ "token": token }),
    );
    let beat = signed_in_ir(&alice, "heartbeat", now - 30, 0.0, serde_json::json!({}));
    let canaries: Vec<String> = measurements(&alice)
        .into_iter()
        .take(2)
        .map(|m| m.1)
        .collect();
    let stolen = signed_in_ir(
        &bob,
        "enrolment",
        now - 20,
        0.0,
        serde_json::json!({ "token": token }),
    );

    let (answers, statuses) = tokio::task::spawn_blocking({
        let base = base.clone();
        let (enrolment, beat, canaries, stolen) = (
            enrolment.clone(),
            beat.clone(),
            canaries.clone(),
            stolen.clone(),
        );
        move || {
            let mut statuses = Vec::new();
            // Leaf 0: the enrolment; leaf 1: the heartbeat; 2 and 3: the measurements.
            statuses.push(post_envelope(&base, "/api/v1/enrol", &enrolment));
            statuses.push(post_envelope(&base, "/api/v1/heartbeat", &beat));
            let answers = upload(&base, &canaries);
            // None of these is appended: the same heartbeat again, the same enrolment again
            // (its key is already enrolled), another key with the spent token.
            statuses.push(post_envelope(&base, "/api/v1/heartbeat", &beat));
            statuses.push(post_envelope(&base, "/api/v1/enrol", &enrolment));
            statuses.push(post_envelope(&base, "/api/v1/enrol", &stolen));
            checkpoint_of(&base, 4, Duration::from_secs(20));
            (answers, statuses)
        }
    })
    .await
    .expect("join");
    let codes: Vec<u16> = statuses.iter().map(|s| s.0).collect();
    assert_eq!(codes, [200, 200, 200, 200, 403], "{statuses:?}");
    assert!(statuses[4].1.contains("token already used"), "{statuses:?}");
    assert_eq!(
        answers,
        [
            ("accepted".to_string(), Some(2)),
            ("accepted".to_string(), Some(3))
        ]
    );
    // Nothing more was appended: a checkpoint of 5 never comes.
    tokio::time::sleep(vantage_aggregator::log::PUBLISH_EVERY + Duration::from_secs(1)).await;
    let (checkpoint, _) = checkpoint_of(&base, 4, Duration::from_secs(1));

    // The entry bundle holds the enrolment's and the heartbeat's leaves: id, then key.
    let (status, _, bundle) = get(&base, "/log/tile/entries/000.p/4");
    assert_eq!((status, bundle.len()), (200, 4 * 66));
    let alice_key = alice.public_key();
    let raw_key = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(&alice_key)
            .expect("base64")
    };
    for (i, line) in [&enrolment, &beat, &canaries[0], &canaries[1]]
        .iter()
        .enumerate()
    {
        let entry = &bundle[i * 66 + 2..i * 66 + 66];
        assert_eq!(hex::encode(&entry[..32]), id_of(line), "leaf {i}");
        assert_eq!(&entry[32..], &raw_key[..], "leaf {i}");
    }

    // Each has a proof; the heartbeat's and the measurement's envelopes are served byte for
    // byte, the enrolment's is not (it carries its token).
    for (line, index) in [(&enrolment, 0), (&beat, 1), (&canaries[1], 3)] {
        let (status, _, body) = get(&base, &format!("/api/v1/log/proof/{}", id_of(line)));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let proof: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(proof["leaf_index"], index);
        assert_eq!(proof["checkpoint"], checkpoint);
    }
    for (line, kind, leaf) in [
        (&beat, "heartbeat", "1"),
        (&canaries[0], "measurement", "2"),
    ] {
        let (status, headers, body) = get(&base, &format!("/api/v1/log/entry/{}", id_of(line)));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            String::from_utf8_lossy(&body),
            line.as_str(),
            "byte for byte"
        );
        assert_eq!(header(&headers, "x-vantage-entry"), Some(kind));
        assert_eq!(header(&headers, "x-vantage-leaf"), Some(leaf));
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
    }
    let (status, _, body) = get(&base, &format!("/api/v1/log/entry/{}", id_of(&enrolment)));
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("is an enrolment (leaf 0)"), "{body}");
    assert!(!body.contains(&token), "{body}");
    for (path, status) in [
        (format!("/api/v1/log/entry/{}", id_of(&stolen)), 404),
        (format!("/api/v1/log/entry/{}", "0".repeat(64)), 404),
        ("/api/v1/log/entry/xyz".to_string(), 400),
        (format!("/api/v1/log/entry/{}", "g".repeat(64)), 400),
    ] {
        let (got, _, body) = get(&base, &path);
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }

    // The independent verifier proves all four leaves against the checkpoint.
    let ids = dir.join("entries.txt");
    std::fs::write(
        &ids,
        [&enrolment, &beat, &canaries[0], &canaries[1]]
            .iter()
            .map(|l| format!("{} {alice_key}\n", id_of(l)))
            .collect::<String>(),
    )
    .expect("write");
    let (ok, report) = verify(&base, &aggregator_key, None, &ids).await;
    assert!(ok, "{report}");
    assert!(report.contains("ok 4 of 4 proofs verify"), "{report}");
    drop(server);

    // The token is not in the file in the clear, logged or not.
    let file = std::fs::read(&db).expect("db");
    let wal = std::fs::read(db.with_extension("db-wal")).unwrap_or_default();
    for bytes in [&file, &wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token stored in clear"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
