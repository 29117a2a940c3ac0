//! Evidence carried by hand (docs/carry.md), with the real binaries and real SQLite files:
//! `vantage export` on one probe, `vantage-aggregator ingest` of the file, `vantage import` on
//! another probe and its upload to a real `serve` on loopback; a tampered line, a truncated
//! file, a second import and an export to a full drive.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output};

use common::{AGGREGATOR, fresh_aggregator, signed_in_ir, tempdir, vantage};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use vantage_probe::envelope::{Identity, verify};
use vantage_probe::store::Store;

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

fn probe(data: &Path, args: &[&str]) -> (Output, String, String) {
    run(Command::new(vantage())
        .args(args)
        .arg("--data-dir")
        .arg(data))
}

fn aggregator(args: &[&str], files: &[&Path]) -> (Output, String, String) {
    run(Command::new(AGGREGATOR).args(args).args(files))
}

/// Stores `n` canary results signed by the probe's own key (created by `vantage id`), each
/// with `pad` bytes of incompressible padding; returns their ids.
fn seed(data: &Path, first: i64, n: i64, pad: usize) -> Vec<String> {
    let (o, _, e) = probe(data, &["id"]);
    assert!(o.status.success(), "{e}");
    let (key, _) = Identity::load_or_create(&data.join("identity.key")).expect("key");
    let mut store = Store::open(&data.join("vantage.db")).expect("store");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("time");
    let mut ids = Vec::new();
    for i in first..first + n {
        let mut noise = vec![0u8; pad];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut noise)
            .expect("random");
        let keys =
            serde_json::json!({"ok": 0, "total": 4, "checks": [], "pad": hex::encode(noise)});
        let at = now - 7200 + i * 60;
        let envelope = signed_in_ir(&key, "canary", at, 0.1, keys);
        let v = verify(&envelope).expect("verify");
        let id = v.id.to_string();
        let measured_at = vantage_aggregator::detect::format_time(at);
        assert!(common::queue_canary(
            &mut store,
            &id,
            &measured_at,
            &envelope
        ));
        ids.push(id);
    }
    ids
}

/// The ids of the envelopes an aggregator database holds, each checked against its signature.
fn stored_ids(db: &Path) -> Vec<String> {
    let (o, out, e) = aggregator(&["export", "--limit", "100000", "--db"], &[db]);
    assert!(o.status.success(), "{e}");
    let mut ids: Vec<String> = out
        .lines()
        .map(|l| verify(l).expect("stored envelope verifies").id.to_string())
        .collect();
    ids.sort();
    ids
}

fn lines_of(file: &Path) -> Vec<String> {
    let mut text = String::new();
    MultiGzDecoder::new(std::fs::File::open(file).expect("open"))
        .read_to_string(&mut text)
        .expect("inflate");
    text.lines().map(String::from).collect()
}

fn gzip(path: &Path, lines: &[String]) {
    let mut gz = GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        Compression::fast(),
    );
    gz.write_all((lines.join("\n") + "\n").as_bytes())
        .expect("write");
    gz.finish().expect("finish");
}

#[tokio::test]
async fn an_export_carried_out_is_ingested_relayed_and_refused_when_tampered() {
    let dir = tempdir("carry");
    let a = dir.join("probe-a");
    let mut ids = seed(&a, 0, 3, 16);
    ids.sort();

    // Export: three results, then an incremental export holds none of them.
    let one = dir.join("one.jsonl.gz");
    let (o, out, e) = probe(&a, &["export", "--out", one.to_str().expect("utf8")]);
    assert!(o.status.success(), "{e}");
    assert!(out.contains("exported 3 result(s)"), "{out}");
    assert!(!dir.join("one.jsonl.gz.partial").exists());
    let lines = lines_of(&one);
    assert_eq!(lines.len(), 4, "manifest and three envelopes");
    assert!(lines[0].contains("vantage_export_manifest"), "{}", lines[0]);
    let again = dir.join("again.jsonl.gz");
    let (o, out, e) = probe(&a, &["export", "--out", again.to_str().expect("utf8")]);
    assert!(o.status.success(), "{e}");
    assert!(out.contains("exported 0 result(s)"), "{out}");
    let (_, out, _) = probe(&a, &["status"]);
    assert!(out.contains('3'), "still queued: {out}");
    let all = dir.join("all.jsonl.gz");
    let (o, out, _) = probe(
        &a,
        &["export", "--all", "--out", all.to_str().expect("utf8")],
    );
    assert!(o.status.success() && out.contains("exported 3"), "{out}");

    // Ingest on an aggregator database: stored, verifiable, the same ids; twice changes nothing.
    let db = dir.join("agg.db");
    let db_arg = db.to_str().expect("utf8");
    let (o, out, e) = aggregator(&["ingest", "--db", db_arg], &[&one]);
    assert!(o.status.success(), "{out}{e}");
    assert!(out.contains("3 accepted, 0 duplicate, 0 refused"), "{out}");
    assert_eq!(stored_ids(&db), ids);
    let (o, out, _) = aggregator(&["ingest", "--db", db_arg], &[&one]);
    assert!(o.status.success());
    assert!(out.contains("0 accepted, 3 duplicate, 0 refused"), "{out}");

    // One byte changed in the second envelope (line 3): refused with its line, the rest kept.
    let mut bad = lines.clone();
    bad[2] = bad[2].replacen("\"total\":4", "\"total\":5", 1);
    assert_ne!(bad[2], lines[2]);
    let tampered = dir.join("tampered.jsonl.gz");
    gzip(&tampered, &bad);
    let db2 = dir.join("agg2.db");
    let (o, out, e) = aggregator(
        &["ingest", "--db", db2.to_str().expect("utf8")],
        &[&tampered],
    );
    assert_eq!(o.status.code(), Some(1), "{out}{e}");
    assert!(
        e.contains("tampered.jsonl.gz:3: refused: bad signature"),
        "{e}"
    );
    assert!(e.contains("manifest") && e.contains("SHA-256"), "{e}");
    assert!(out.contains("2 accepted, 0 duplicate, 1 refused"), "{out}");
    assert_eq!(stored_ids(&db2).len(), 2);

    // Truncated gzip: reported, what came before kept.
    let bytes = std::fs::read(&one).expect("read");
    let cut = dir.join("cut.jsonl.gz");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).expect("write");
    let db3 = dir.join("agg3.db");
    let (o, out, e) = aggregator(&["ingest", "--db", db3.to_str().expect("utf8")], &[&cut]);
    assert_eq!(o.status.code(), Some(1), "{out}{e}");
    assert!(e.contains("read to its end: no (after line"), "{e}");
    assert!(e.contains("incomplete deflate stream"), "{e}");
    assert!(
        out.contains("0 duplicate") && !out.contains(" 0 accepted"),
        "lines before the cut kept: {out}"
    );

    // Not gzip at all, a missing file, a manifest whose signature was changed.
    let plain = dir.join("plain.jsonl");
    std::fs::write(&plain, lines.join("\n")).expect("write");
    let (o, out, e) = aggregator(&["ingest", "--db", db3.to_str().expect("utf8")], &[&plain]);
    assert_eq!(o.status.code(), Some(1), "{out}{e}");
    assert!(
        e.contains("not a readable gzip file: invalid gzip header"),
        "{e}"
    );
    let missing = dir.join("missing.jsonl.gz");
    let (o, _, e) = aggregator(
        &["ingest", "--db", db3.to_str().expect("utf8")],
        &[&missing],
    );
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("cannot open") && e.contains("missing.jsonl.gz"),
        "{e}"
    );
    let mut forged = lines.clone();
    forged[0] = forged[0].replacen("\"count\":3", "\"count\":2", 1);
    let forged_file = dir.join("forged.jsonl.gz");
    gzip(&forged_file, &forged);
    let (o, out, e) = aggregator(&["ingest", "--db", db_arg], &[&forged_file]);
    assert_eq!(o.status.code(), Some(1), "{out}{e}");
    assert!(
        e.contains("line 1 is not a signed manifest: bad signature"),
        "{e}"
    );
    assert!(out.contains("0 accepted, 3 duplicate, 0 refused"), "{out}");
    let (o, _, e) = probe(&a, &["export", "--since", "yesterday", "--out", "x.gz"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(e.contains("--since \"yesterday\""), "{e}");

    // Another probe imports the file as relayed: twice changes nothing; a tampered file keeps
    // its good lines; the upload to a real aggregator stores them under their original ids.
    let b = dir.join("probe-b");
    let (o, _, e) = probe(&b, &["id"]);
    assert!(o.status.success(), "{e}");
    let (o, out, e) = probe(&b, &["import", one.to_str().expect("utf8")]);
    assert!(o.status.success(), "{out}{e}");
    assert!(
        out.contains("3 queued to relay, 0 already here, 0 refused"),
        "{out}"
    );
    let (o, out, _) = probe(&b, &["import", one.to_str().expect("utf8")]);
    assert!(o.status.success());
    assert!(
        out.contains("0 queued to relay, 3 already here, 0 refused"),
        "{out}"
    );
    let (o, out, e) = probe(&b, &["import", tampered.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(e.contains(":3: refused: bad signature"), "{e}");
    assert!(
        out.contains("0 queued to relay, 2 already here, 1 refused"),
        "{out}"
    );
    let (o, out, _) = probe(&b, &["results", "list", "--json"]);
    assert!(o.status.success());
    assert_eq!(out.matches("\"relayed\":true").count(), 3, "{out}");
    let (_, out, _) = probe(&b, &["results", "list"]);
    assert_eq!(out.matches("relayed canary").count(), 3, "{out}");
    let (server, _sdir, served_db) = fresh_aggregator("carry-serve").await;
    let base = server.base.clone();
    let b2 = b.clone();
    let (o, out, e) = tokio::task::spawn_blocking(move || {
        probe(&b2, &["upload", "--aggregator", &format!("{base}/")])
    })
    .await
    .expect("join");
    assert!(o.status.success(), "{out}{e}");
    drop(server);
    assert_eq!(stored_ids(&served_db), ids);
}

/// A drive that fills up: the export fails cleanly (no file, no partial file, nothing marked
/// exported) and the next export to a drive with room holds everything. Needs root for the
/// tmpfs; otherwise says so and checks the same through a directory that does not exist.
#[test]
fn an_export_to_a_full_drive_fails_cleanly_and_loses_nothing() {
    let dir = tempdir("carry-full");
    let a = dir.join("probe");
    seed(&a, 0, 12, 16 * 1024);
    let stick = dir.join("stick");
    std::fs::create_dir_all(&stick).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&stick)
        .status()
        .is_ok_and(|s| s.success());
    let target = if mounted {
        stick.join("out.jsonl.gz")
    } else {
        eprintln!("not root: no tmpfs; a missing directory stands in for the full drive");
        stick.join("missing").join("out.jsonl.gz")
    };
    let (o, out, e) = probe(&a, &["export", "--out", target.to_str().expect("utf8")]);
    let listing: Vec<_> = std::fs::read_dir(target.parent().expect("parent"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    if mounted {
        let _ = Command::new("umount").arg(&stick).status();
    }
    assert_eq!(o.status.code(), Some(2), "{out}{e}");
    if mounted {
        assert!(e.contains("No space left on device"), "{e}");
    }
    assert!(listing.is_empty(), "left behind: {listing:?}");
    let good = dir.join("good.jsonl.gz");
    let (o, out, e) = probe(&a, &["export", "--out", good.to_str().expect("utf8")]);
    assert!(o.status.success(), "{e}");
    assert!(out.contains("exported 12 result(s)"), "{out}");
    assert_eq!(lines_of(&good).len(), 13);
}
