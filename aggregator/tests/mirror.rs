//! `vantage-aggregator mirror` end to end (docs/transparency.md, "Mirrors"): real `serve`
//! processes on loopback as the source, the real `mirror` command, SQLite files. A mirror
//! copies the log and its envelopes, then more, and `serve` on its database answers the same
//! ids with the same bytes; a source that rewrites its log (the same key and address, a fresh
//! database with one measurement deleted, or two reordered) stops the mirror, which keeps what
//! it has; an envelope served with a byte changed, or a checkpoint signed by another key, is
//! refused.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{AGGREGATOR, start_aggregator_on, start_aggregator_with, tempdir};
use vantage_aggregator::store::{Sqlite, Storage};
use vantage_probe::envelope::Identity;

const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

/// `count` canary rounds signed by `key`, the first at `from` seconds ago: (id, line).
fn canaries(key: &Identity, count: usize, from: i64) -> Vec<(String, String)> {
    let start = vantage_aggregator::store::now() - from;
    (0..count)
        .map(|i| {
            let line = common::signed_in_ir(
                key,
                "canary",
                start + i64::try_from(i).expect("small") * 60,
                0.5,
                serde_json::json!({"ok": 4, "total": 4, "checks": []}),
            );
            (id_of(&line), line)
        })
        .collect()
}

fn id_of(line: &str) -> String {
    vantage_probe::envelope::verify(line)
        .expect("signed")
        .id
        .to_string()
}

/// Uploads `lines`, each of which must be accepted.
fn upload(base: &str, lines: &[&(String, String)]) {
    let body: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let (status, answer) = common::http(
        base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        body.join("\n").as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer.matches("\"accepted\"").count(),
        lines.len(),
        "{answer}"
    );
}

/// Waits up to 20 s for a checkpoint of `size` entries.
fn checkpoint_of(base: &str, size: u64) {
    let start = Instant::now();
    loop {
        let (status, text) = common::http(base, "GET", "/log/checkpoint", &[], b"");
        if status == 200 && text.lines().nth(1) == Some(size.to_string().as_str()) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no checkpoint of {size}: {status} {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The public key (base64) of the aggregator whose database is `db`.
fn public_key(db: &Path) -> String {
    let key = format!("{}.key", db.display());
    Identity::load_or_create(Path::new(&key))
        .expect("the aggregator's key")
        .0
        .public_key()
}

/// One round of `mirror` from `base` into `db`.
fn mirror(base: &str, key: &str, db: &Path) -> Output {
    mirror_with(base, key, db, &[])
}

fn mirror_with(base: &str, key: &str, db: &Path, extra: &[&str]) -> Output {
    Command::new(AGGREGATOR)
        .args(["mirror", "--once", "--from", base, "--log-key", key, "--db"])
        .arg(db)
        .args(extra)
        .output()
        .expect("run mirror")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `mirror_leaves` says of leaf `n`.
fn leaf_kind(db: &Path, n: i64) -> Option<String> {
    let c = rusqlite::Connection::open(db).expect("open");
    c.query_row("SELECT kind FROM mirror_leaves WHERE idx = ?1", [n], |r| {
        r.get(0)
    })
    .ok()
}

fn new_ca(dir: &Path) -> std::path::PathBuf {
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    ca
}

#[test]
fn a_mirror_copies_the_log_and_serve_on_its_database_answers_the_same_ids() {
    let dir = tempdir("mirror-copy");
    let ca = new_ca(&dir);
    let db = dir.join("source.db");
    let out = Command::new(AGGREGATOR)
        .args(["keys", "token", "--count", "1", "--db"])
        .arg(&db)
        .output()
        .expect("keys token");
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let source = start_aggregator_with(&ca, &db, &[]);
    let base = source.base.clone();
    let key = public_key(&db);

    // Leaf 0 an enrolment (leaf only: its envelope carries the token), leaf 1 a heartbeat,
    // then 300 measurements: more than one entry bundle.
    let probe = Identity::generate().expect("key");
    let now = vantage_aggregator::store::now();
    let enrolment = common::signed_in_ir(
        &probe,
        "enrolment",
        now - 7200,
        0.0,
        serde_json::json!({ "token": token }),
    );
    let beat = common::signed_in_ir(&probe, "heartbeat", now - 7100, 0.0, serde_json::json!({}));
    for (path, line) in [("/api/v1/enrol", &enrolment), ("/api/v1/heartbeat", &beat)] {
        let (status, answer) = common::http(
            &base,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            line.as_bytes(),
        );
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let all = canaries(&probe, 400, 86_400);
    upload(&base, &all[..300].iter().collect::<Vec<_>>());
    checkpoint_of(&base, 302);

    // A round reads at most --max-entries leaves; the next run continues after them.
    let mirror_db = dir.join("mirror.db");
    let out = mirror_with(&base, &key, &mirror_db, &["--max-entries", "150"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("leaves 0..150 read: 148 measurements and 1 heartbeats stored")
            && summary.contains("leaf only: 1 enrolments, 0 withheld, 0 refused"),
        "{}",
        text(&out)
    );
    let out = mirror(&base, &key, &mirror_db);
    assert!(out.status.success(), "{}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("leaves 150..302 read: 152 measurements and 0 heartbeats stored")
            && summary
                .contains("leaves mirrored by kind: enrolment 1, heartbeat 1, measurement 300"),
        "{}",
        text(&out)
    );
    assert_eq!(leaf_kind(&mirror_db, 0).as_deref(), Some("enrolment"));
    assert_eq!(leaf_kind(&mirror_db, 1).as_deref(), Some("heartbeat"));

    // More arrive; the next round reads only them, and a round with nothing new reads none.
    upload(&base, &all[300..].iter().collect::<Vec<_>>());
    checkpoint_of(&base, 402);
    let out = mirror(&base, &key, &mirror_db);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("leaves 302..402 read: 100 measurements and 0 heartbeats stored"),
        "{}",
        text(&out)
    );
    let out = mirror(&base, &key, &mirror_db);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("leaves 402..402 read: 0 measurements"),
        "{}",
        text(&out)
    );

    // A run cut short after storing envelopes but before recording their leaves finds them
    // again as already stored, and stores nothing twice.
    let c = rusqlite::Connection::open(&mirror_db).expect("open");
    c.execute_batch(
        "UPDATE mirror_source SET next_leaf = 302; DELETE FROM mirror_leaves WHERE idx >= 302;",
    )
    .expect("cut short");
    drop(c);
    let out = mirror(&base, &key, &mirror_db);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "leaves 302..402 read: 0 measurements and 0 heartbeats stored, 100 already here"
        ),
        "{}",
        text(&out)
    );

    // `serve` on the mirror's file answers every id with the source's bytes.
    let copy = start_aggregator_with(&ca, &mirror_db, &[]);
    for (id, _) in &all {
        let path = format!("/api/v1/measurements/{id}");
        let theirs = common::http(&base, "GET", &path, &[], b"");
        let ours = common::http(&copy.base, "GET", &path, &[], b"");
        assert_eq!(theirs.0, 200, "{path}");
        assert_eq!(ours, theirs, "{path}");
    }
    let path = format!("/api/v1/log/entry/{}", id_of(&beat));
    let (status, body) = common::http(&copy.base, "GET", &path, &[], b"");
    assert_eq!((status, body.as_str()), (200, beat.as_str()), "{path}");
    drop((copy, source));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_source_that_rewrites_its_log_stops_the_mirror_which_keeps_what_it_has() {
    let dir = tempdir("mirror-rewrite");
    let ca = new_ca(&dir);
    let first = dir.join("first.db");
    let source = start_aggregator_with(&ca, &first, &[]);
    let (base, key) = (source.base.clone(), public_key(&first));
    let listen = base.trim_start_matches("http://").to_string();
    let key_file = format!("{}.key", first.display());
    let probe = Identity::generate().expect("key");
    let all = canaries(&probe, 30, 86_400);
    upload(&base, &all[..20].iter().collect::<Vec<_>>());
    checkpoint_of(&base, 20);
    let mirror_db = dir.join("mirror.db");
    let out = mirror(&base, &key, &mirror_db);
    assert!(out.status.success(), "{}", text(&out));
    drop(source);

    let kept = |what: &str| {
        let db = Sqlite::open(&mirror_db).expect("open the mirror");
        for (id, line) in &all[..20] {
            assert_eq!(
                db.envelope(id).expect("read").as_deref(),
                Some(line.as_str()),
                "{what}: {id} is no longer mirrored"
            );
        }
        let c = rusqlite::Connection::open(&mirror_db).expect("open");
        let leaves: i64 = c
            .query_row("SELECT count(*) FROM mirror_leaves", [], |r| r.get(0))
            .expect("count");
        assert_eq!(leaves, 20, "{what}");
    };

    // The same operator, key and address, a fresh database: measurement 5 is gone and ten
    // more follow, so the log is larger than the one mirrored but does not extend it.
    let rewritten = dir.join("rewritten.db");
    let source = start_aggregator_on(&listen, &ca, &rewritten, &["--key", &key_file]);
    let without: Vec<_> = all.iter().enumerate().filter(|(i, _)| *i != 5).collect();
    upload(&base, &without.iter().map(|(_, m)| *m).collect::<Vec<_>>());
    checkpoint_of(&base, 29);
    let out = mirror(&base, &key, &mirror_db);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not the log this mirror holds")
            && stderr.contains("not append-only")
            && stderr.contains("the mirror stopped, keeping the 20 leaves"),
        "{}",
        text(&out)
    );
    kept("after a deletion");
    drop(source);

    // Again with the first twenty in another order: a tree of the same size, another root.
    let reordered = dir.join("reordered.db");
    let source = start_aggregator_on(&listen, &ca, &reordered, &["--key", &key_file]);
    let mut order: Vec<_> = all[..20].iter().collect();
    order.swap(3, 4);
    upload(&base, &order);
    checkpoint_of(&base, 20);
    let out = mirror(&base, &key, &mirror_db);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a fork"),
        "{}",
        text(&out)
    );
    kept("after a reordering");
    // Both refused checkpoints are kept: signed by one key, they are the evidence.
    let c = rusqlite::Connection::open(&mirror_db).expect("open");
    let refused: i64 = c
        .query_row("SELECT count(*) FROM mirror_refused", [], |r| r.get(0))
        .expect("count");
    assert_eq!(refused, 2);
    drop(source);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_envelope_served_with_a_byte_changed_or_a_checkpoint_of_another_key_is_refused() {
    let dir = tempdir("mirror-altered");
    let ca = new_ca(&dir);
    let db = dir.join("source.db");
    let source = start_aggregator_with(&ca, &db, &[]);
    let (base, key) = (source.base.clone(), public_key(&db));
    let probe = Identity::generate().expect("key");
    let all = canaries(&probe, 5, 86_400);
    upload(&base, &all.iter().collect::<Vec<_>>());
    checkpoint_of(&base, 5);
    let mirror_db = dir.join("mirror.db");

    // Another key than the source's: its checkpoint is refused and nothing is read.
    let stranger = Identity::generate().expect("key").public_key();
    let stranger_db = dir.join("stranger.db");
    let out = mirror(&base, &stranger, &stranger_db);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not its log's"),
        "{}",
        text(&out)
    );
    assert_eq!(leaf_kind(&stranger_db, 0), None);

    // The source serves measurement 2's envelope with one byte changed.
    let c = rusqlite::Connection::open(&db).expect("open the source");
    let changed = c
        .execute(
            "UPDATE envelopes_raw SET body = replace(body, '\"ok\":4', '\"ok\":3')
             WHERE seq = (SELECT seq FROM measurements WHERE id = ?1)",
            [&all[2].0],
        )
        .expect("alter");
    assert_eq!(changed, 1);
    drop(c);
    let (_, served) = common::http(
        &base,
        "GET",
        &format!("/api/v1/log/entry/{}", all[2].0),
        &[],
        b"",
    );
    assert!(served.contains("\"ok\":3"), "{served}");

    let out = mirror(&base, &key, &mirror_db);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("leaf 2 refused: the envelope does not verify"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 measurements and 0 heartbeats stored")
            && String::from_utf8_lossy(&out.stdout).contains("1 refused"),
        "{}",
        text(&out)
    );
    assert_eq!(leaf_kind(&mirror_db, 2).as_deref(), Some("refused"));
    let copy = Sqlite::open(&mirror_db).expect("open the mirror");
    for (i, (id, line)) in all.iter().enumerate() {
        let want = (i != 2).then_some(line.as_str());
        assert_eq!(copy.envelope(id).expect("read").as_deref(), want, "{i}");
    }
    drop(source);
    std::fs::remove_dir_all(&dir).ok();
}
