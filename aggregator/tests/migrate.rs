//! `vantage-aggregator migrate` end to end: an SQLite store filled through the real ingest
//! (signed heartbeats and canaries of five probes, one network dark for an hour, some contacts
//! from inside their network, a revoked key) and a detection pass, copied by the real binary
//! into a real ClickHouse server and into another SQLite file; the copies are then read through
//! the stores as the API reads them, down to a heartbeat that was in flight across a bin's
//! start, which keeps its arrival and its bin, and a shutdown's evidence that came out while
//! it went on, which keeps its arrival times. Running it twice, a verdict changed at the
//! source, a tampered copy, and bad locations are each checked for what the user sees.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{AGGREGATOR, tempdir};
use vantage_aggregator::detect::format_time;
use vantage_aggregator::ingest::Origin;
use vantage_aggregator::store::model::{BIN_SECONDS, Event, TimelineEvent, TimelineQuery};
use vantage_aggregator::store::{
    KeyState, Location, Row, Sqlite, Storage, StoredHeartbeat, timeline_with_arrivals,
};
use vantage_fixtures::clickhouse::Server;
use vantage_probe::envelope::Identity;

/// Three hours of five probes of AS64500, dark for the middle hour (the canaries they recorded
/// offline uploaded when back); the first two probes connect from inside their network. Then
/// the last probe's key is revoked and the detectors run; the shutdown's evidence is dated as
/// having reached the store while it went on ([`plant_arrivals`]). Last, a sixth probe's heartbeat of
/// AS64501 that was in flight across a bin's start: signed 3 s before it, received 4 s into
/// it, so it shows its probe connected in the later bin. Returns the file, the events and that
/// heartbeat.
fn seed(dir: &Path) -> (PathBuf, Vec<Event>, StoredHeartbeat) {
    let path = dir.join("source.db");
    let db = Sqlite::open(&path).expect("db");
    let now = vantage_aggregator::store::now();
    let t0 = (now - 3 * 3600) / 60 * 60;
    let (cut, back) = (t0 + 3600, t0 + 7200);
    let probes: Vec<(Identity, Origin)> = (0..5)
        .map(|p| {
            let origin = if p < 2 {
                Origin::observed(64500, "IR")
            } else {
                Origin::UNKNOWN
            };
            (Identity::generate().expect("key"), origin)
        })
        .collect();
    common::seed_probes(&db, &probes, t0, now, cut, back);
    let last_key = probes.last().map(|(key, _)| key.public_key());
    let revoked = last_key.expect("five keys");
    db.set_key(&revoked, KeyState::Revoked).expect("revoke");
    common::detect_ir(&db, now);
    let events = db.timeline(&everything()).expect("timeline");
    assert!(
        events.iter().any(|e| e.kind.as_str() == "shutdown"),
        "the seed has a shutdown to copy: {events:?}"
    );
    plant_arrivals(&path, &events, cut, back);
    let bin_start = (now - 900) / BIN_SECONDS * BIN_SECONDS;
    let late = StoredHeartbeat {
        key: Identity::generate().expect("key").public_key(),
        cc: "IR".into(),
        asn: 64501,
        sent_at: format_time(bin_start - 3),
        verified: false,
        received_at: Some(bin_start + 4),
    };
    assert_eq!(
        db.record_heartbeats(std::slice::from_ref(&late))
            .expect("record"),
        1
    );
    assert_eq!(
        late_bins(&db, &late),
        [bin_start / BIN_SECONDS],
        "the source counts it at its arrival"
    );
    (path, events, late)
}

/// Dates the shutdown's evidence as if it had come out while the shutdown went on (its first
/// failed canary received 10 minutes into the cut, the rest 10 minutes after it), hours before
/// any copy is made. Only waiting through a real cut would make it so through the API, so the
/// stored column is set in the file; the source's timeline then shows it as a reader would.
fn plant_arrivals(path: &Path, events: &[Event], cut: i64, back: i64) {
    let shutdown = events
        .iter()
        .find(|e| e.kind.as_str() == "shutdown")
        .expect("a shutdown");
    let (first, rest) = shutdown.evidence.split_first().expect("evidence");
    let c = rusqlite::Connection::open(path).expect("open the file");
    let mut set = c
        .prepare("UPDATE measurements SET received_at = ?1 WHERE id = ?2")
        .expect("statement");
    assert_eq!(set.execute((cut + 600, first)).expect("date"), 1);
    for id in rest {
        assert_eq!(set.execute((back + 600, id)).expect("date"), 1);
    }
    drop(set);
    drop(c);
    let db = Sqlite::open(path).expect("db");
    let shown = arrivals(&db);
    let shown = shown
        .iter()
        .find(|e| e.event.id == shutdown.id)
        .expect("the shutdown");
    assert!(shown.arrived_while_ongoing, "{shown:?}");
    assert_eq!(
        shown.arrival.iter().map(|a| a.first.as_str()).min(),
        Some(format_time(cut + 600).as_str()),
        "{shown:?}"
    );
}

/// IR's events with how their evidence arrived, as the timeline shows them.
fn arrivals(db: &dyn Storage) -> Vec<TimelineEvent> {
    timeline_with_arrivals(db, &everything()).expect("timeline")
}

/// When each of `rows` reached `db`, as it stored it.
fn received(db: &dyn Storage, rows: &[Row]) -> BTreeMap<String, i64> {
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.chunks(200)
        .flat_map(|page| db.received_of(page).expect("received"))
        .collect()
}

/// The bins in which `beat`'s probe shows connected, as the signals read them.
fn late_bins(db: &dyn Storage, beat: &StoredHeartbeat) -> Vec<i64> {
    db.probe_bins("IR", Some(beat.asn), 0, 1 << 40)
        .expect("bins")
        .into_iter()
        .filter(|b| b.key == beat.key && b.online)
        .map(|b| b.bin)
        .collect()
}

/// `beat` as `db` holds it (`heartbeats_page`), with when it reached the store.
fn stored_beat(db: &dyn Storage, beat: &StoredHeartbeat) -> Option<StoredHeartbeat> {
    let mut after: Option<(String, String)> = None;
    loop {
        let page = db
            .heartbeats_page(after.as_ref().map(|(k, s)| (k.as_str(), s.as_str())), 500)
            .expect("page");
        let last = page.last().map(|b| (b.key.clone(), b.sent_at.clone()))?;
        if let Some(b) = page.into_iter().find(|b| b.key == beat.key) {
            return Some(b);
        }
        after = Some(last);
    }
}

fn everything() -> TimelineQuery {
    TimelineQuery {
        cc: Some("IR".into()),
        asn: None,
        since: 0,
        until: i64::MAX / 2,
        kind: None,
    }
}

fn aggregator(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(AGGREGATOR).args(args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn migrate(from: &str, to: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec!["migrate", "--from", from, "--to", to];
    args.extend_from_slice(extra);
    aggregator(&args)
}

/// Every stored row of a store, in id order, a page at a time.
fn all_rows(db: &dyn Storage) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    loop {
        let page = db
            .rows_page(out.last().map(|r| r.id.as_str()), 97)
            .expect("page");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The summary's line that starts with `label`.
fn line<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{stdout}"))
}

#[test]
fn sqlite_to_clickhouse_moves_everything_and_checks_it() {
    let server = Server::start()
        .expect("clickhouse-server (install it with: sudo bash tests/clickhouse.sh)");
    let dir = tempdir("migrate-ch");
    let (source, events, late) = seed(&dir);
    let from = format!("sqlite:{}", source.display());
    let to = server.url("moved");
    let lite = Sqlite::open(&source).expect("source");
    let rows = all_rows(&lite);
    let n = rows.len();
    let keys = lite.keys().expect("keys");
    let beats = lite.heartbeat_count("IR").expect("beats");
    let (source_received, source_arrivals) = (received(&lite, &rows), arrivals(&lite));
    assert_eq!(source_received.len(), n);
    drop(lite);

    // A small page, so that the copy and the check take many pages.
    let (code, out, err) = migrate(&from, &to, &["--page", "50"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(
        line(&out, "measurements:"),
        format!("measurements: {n} ({n} new, 0 already there, 0 verdicts brought up to date)")
    );
    assert_eq!(
        line(&out, "heartbeats:"),
        format!("heartbeats: {beats} ({beats} new)")
    );
    assert_eq!(line(&out, "keys:"), format!("keys: {}", keys.len()));
    assert_eq!(line(&out, "events:"), format!("events: {}", events.len()));
    assert!(
        out.contains("verified: every measurement byte for byte"),
        "{out}"
    );

    // Read through the ClickHouse store as the API does.
    let ch = to
        .parse::<Location>()
        .expect("location")
        .open()
        .expect("open");
    for r in [&rows[0], &rows[n / 2], &rows[n - 1]] {
        assert_eq!(
            ch.envelope(&r.id).expect("envelope").as_deref(),
            Some(r.envelope.as_str()),
            "{}",
            r.id
        );
    }
    assert_eq!(all_rows(ch.as_ref()), rows);
    assert_eq!(ch.timeline(&everything()).expect("timeline"), events);
    // Each measurement keeps when it reached the source, so the shutdown's evidence still
    // came out while it went on.
    assert_eq!(arrivals(ch.as_ref()), source_arrivals);
    assert_eq!(received(ch.as_ref(), &rows), source_received);
    let mut copied_keys = ch.keys().expect("keys");
    let mut source_keys = keys.clone();
    copied_keys.sort();
    source_keys.sort();
    assert_eq!(copied_keys, source_keys);
    assert!(
        copied_keys.iter().any(|(_, s)| s == "revoked"),
        "{copied_keys:?}"
    );
    assert_eq!(ch.heartbeat_count("IR").expect("beats"), beats);
    // The heartbeat that was in flight keeps its arrival, and counts in the same bin.
    assert_eq!(stored_beat(ch.as_ref(), &late).as_ref(), Some(&late));
    assert_eq!(
        late_bins(ch.as_ref(), &late),
        late_bins(&Sqlite::open(&source).expect("source"), &late)
    );

    // Again: nothing new, and still equal.
    let (code, out, err) = migrate(&from, &to, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(
        line(&out, "measurements:"),
        format!("measurements: {n} (0 new, {n} already there, 0 verdicts brought up to date)")
    );
    assert_eq!(
        line(&out, "heartbeats:"),
        format!("heartbeats: {beats} (0 new)")
    );
    assert_eq!(all_rows(ch.as_ref()).len(), n, "no measurement twice");

    // A measurement only the copy has is a difference.
    let mut extra = rows[0].clone();
    extra.id = "f".repeat(64);
    extra.envelope = "{\"extra\":true}".into();
    ch.insert(&[extra]).expect("insert");
    let (code, out, err) = migrate(&from, &to, &["--check-only"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert_eq!(line(&out, "measurements:"), format!("measurements: {n}"));
    assert!(
        err.contains(&format!(
            "the source holds {n} measurements, the destination {}",
            n + 1
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sqlite_to_sqlite_copies_brings_verdicts_up_to_date_and_names_differences() {
    let dir = tempdir("migrate-lite");
    let (source, events, late) = seed(&dir);
    let dest = dir.join("copy.db");
    let (from, to) = (
        format!("sqlite:{}", source.display()),
        format!("sqlite:{}", dest.display()),
    );
    let (code, out, err) = migrate(&from, &to, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("verified:"), "{out}");

    let lite = Sqlite::open(&source).expect("source");
    let rows = all_rows(&lite);
    let copy = Sqlite::open(&dest).expect("copy");
    assert_eq!(all_rows(&copy), rows);
    assert_eq!(copy.timeline(&everything()).expect("timeline"), events);
    // Each measurement keeps when it reached the source, so the shutdown's evidence still
    // came out while it went on.
    assert_eq!(arrivals(&copy), arrivals(&lite));
    assert_eq!(received(&copy, &rows), received(&lite, &rows));
    // The signals of the dark hour are the source's, bin by bin.
    let bins = |db: &dyn Storage| {
        let mut v = db.probe_bins("IR", None, 0, 1 << 40).expect("bins");
        v.sort_by(|a, b| (a.bin, &a.key).cmp(&(b.bin, &b.key)));
        v
    };
    let source_bins = bins(&lite);
    assert!(
        source_bins.iter().any(|b| !b.online),
        "the dark hour is in the signals"
    );
    assert_eq!(bins(&copy), source_bins);
    // The heartbeat that was in flight keeps its arrival, and counts in the same bin.
    assert_eq!(stored_beat(&copy, &late).as_ref(), Some(&late));
    assert_eq!(late_bins(&copy, &late), late_bins(&lite, &late));

    // A verdict changed at the source after the copy (a rescore) reaches the copy on the next
    // run.
    let mut rescored = rows[0].clone();
    rescored.blocking = Some("\"dns\"".into());
    rescored.verdict = Some("{\"rescored\":true}".into());
    lite.update_verdict(&rescored).expect("rescore");
    drop(copy);
    let (code, out, err) = migrate(&from, &to, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        line(&out, "measurements:").ends_with("1 verdicts brought up to date)"),
        "{out}"
    );
    let copy = Sqlite::open(&dest).expect("copy");
    assert_eq!(
        copy.rows_of(&[rescored.id.as_str()]).expect("row"),
        vec![rescored.clone()]
    );

    // A copy whose verdict was changed behind the source's back is named, field by field.
    let mut tampered = rescored.clone();
    tampered.blocking = Some("false".into());
    copy.update_verdict(&tampered).expect("tamper");
    // And a key revoked only in the copy.
    let (key, _) = lite
        .keys()
        .expect("keys")
        .into_iter()
        .find(|(_, state)| state == "trusted")
        .expect("a trusted key");
    copy.set_key(&key, KeyState::Revoked).expect("revoke");
    drop(copy);
    // And a measurement dated in the copy as received later than it was (as a copy made
    // before migrate kept arrivals has them all).
    let late_id = &rows[1].id;
    let c = rusqlite::Connection::open(&dest).expect("open the copy");
    let (at,): (i64,) = c
        .query_row(
            "SELECT received_at FROM measurements WHERE id = ?1",
            [late_id],
            |r| Ok((r.get(0)?,)),
        )
        .expect("received");
    c.execute(
        "UPDATE measurements SET received_at = ?1 WHERE id = ?2",
        (at + 3600, late_id),
    )
    .expect("date");
    drop(c);
    let (code, out, err) = migrate(&from, &to, &["--check-only"]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains(&format!("measurement {} differs in blocking", rescored.id)),
        "{err}"
    );
    assert!(
        err.contains(&format!("key {key} is revoked, not trusted")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "measurement {late_id} was received at {} in the source, {} here",
            format_time(at),
            format_time(at + 3600)
        )),
        "{err}"
    );
    // The tampered verdict moved the copy's signals too (an anomaly less in its bin).
    assert!(err.contains("the signals of IR differ from bin"), "{err}");
    assert!(err.contains("4 difference(s)"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_locations_are_refused_clearly_and_nothing_is_created() {
    let dir = tempdir("migrate-bad");
    let missing = dir.join("missing.db");
    let created = dir.join("created.db");
    let to = format!("sqlite:{}", created.display());

    let (code, _, err) = migrate(&format!("sqlite:{}", missing.display()), &to, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no database there"), "{err}");
    assert!(!missing.exists(), "the missing source was created");
    assert!(!created.exists(), "the destination was created for nothing");

    // Nothing listens on port 1 of loopback.
    let (code, _, err) = migrate("clickhouse://127.0.0.1:1/x", &to, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("cannot open the source clickhouse://127.0.0.1:1/x")
            && err.contains("cannot reach the server"),
        "{err}"
    );
    assert!(!created.exists(), "the destination was created for nothing");

    let source = dir.join("source.db");
    drop(Sqlite::open(&source).expect("source"));
    let same = format!("sqlite:{}", source.display());
    let also_same = format!("sqlite:{}/./source.db", dir.display());
    let (code, _, err) = migrate(&same, &also_same, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the same store"), "{err}");

    let (code, _, err) = migrate(&same, "http://127.0.0.1:8123/x", &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("the stores are sqlite:FILE and clickhouse://"),
        "{err}"
    );

    let (code, _, err) = migrate(&same, &to, &["--page", "0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--page"), "{err}");
    assert!(!created.exists(), "the destination was created for nothing");
    std::fs::remove_dir_all(&dir).ok();
}
