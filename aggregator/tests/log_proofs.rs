//! The probe's side of the transparency log end to end (docs/transparency.md, "The probe"):
//! the real `vantage` uploads to the real `vantage-aggregator serve`, keeps the leaf of each
//! result, and on its next round proves every one included against a checkpoint whose
//! signature and consistency it checked; `vantage status` says so. Then the operator rebuilds
//! the log: the aggregator is stopped and another `serve` starts on the same address with the
//! same key and a fresh database into which the same measurements were uploaded with one
//! deleted, one replaced, or two in another order. The probe's next round reports the fork on
//! stderr naming both checkpoints, `vantage upload` fails, `vantage status` shows it, and every
//! stored result is still there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{AGGREGATOR, Server, fresh_aggregator, signed_in_ir, start_aggregator_on, vantage};
use vantage_probe::envelope::Identity;
use vantage_probe::store::{NewResult, Store};

/// Results the probe uploads.
const COUNT: usize = 20;

const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

/// `COUNT` canary rounds signed by `key`, a minute apart, a day ago: (id, envelope line).
fn measurements(key: &Identity, count: usize, offset: i64) -> Vec<(String, String)> {
    let start = vantage_aggregator::store::now() - 86_400 + offset;
    (0..count)
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

/// A probe data directory holding `signed` as measured results waiting for upload, with the
/// probe's key in it.
fn probe_with(data: &Path, signed: &[(String, String)]) {
    let mut store = Store::open(&data.join("vantage.db")).expect("probe store");
    for (id, line) in signed {
        store
            .insert(&NewResult {
                id,
                input: None,
                test_name: "canary",
                measured_at: "2026-11-30 00:00:00",
                blocking: None,
                accessible: Some(true),
                confirmed: false,
                verdict: "{}",
                envelope: line,
            })
            .expect("stored");
    }
}

/// Runs `vantage ARGS` with the data directory `data`, off the async runtime.
async fn vantage_in(data: &Path, args: &[&str]) -> Output {
    let (data, args): (PathBuf, Vec<String>) = (
        data.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        Command::new(vantage())
            .env("VANTAGE_DATA_DIR", &data)
            .env_remove("VANTAGE_AGGREGATOR")
            .env_remove("VANTAGE_SOCKS5")
            .args(&args)
            .output()
            .expect("vantage")
    })
    .await
    .expect("join")
}

fn said(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits (up to 15 s) for the aggregator at `base` to publish a checkpoint of `size` leaves.
async fn checkpoint_of(base: &str, size: usize) -> String {
    let base = base.to_string();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let (status, body) = common::http(&base, "GET", "/log/checkpoint", &[], b"");
            if status == 200 && body.lines().nth(1) == Some(size.to_string().as_str()) {
                return body;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no checkpoint of {size}: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .expect("join")
}

/// Uploads `lines` straight to the aggregator, as an operator rebuilding its log would.
fn upload_lines(base: &str, lines: &[String]) {
    let (status, body) = common::http(
        base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        lines.join("\n").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("rejected"), "{body}");
}

/// The same key file, a fresh database, the same address: the operator's rebuilt log.
async fn rebuilt(listen: &str, dir: &Path, name: &str, key: &Path, lines: &[String]) -> Server {
    let db = dir.join(format!("{name}.db"));
    let (listen, ca, key_arg) = (
        listen.to_string(),
        dir.join("ca.pem"),
        key.to_string_lossy().into_owned(),
    );
    let server = tokio::task::spawn_blocking(move || {
        // The port was just freed by the stopped aggregator; give it a few tries.
        let start = Instant::now();
        loop {
            let attempt = std::panic::catch_unwind(|| {
                start_aggregator_on(&listen, &ca, &db, &["--key", &key_arg])
            });
            match attempt {
                Ok(server) => return server,
                Err(e) if start.elapsed() > Duration::from_secs(10) => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    })
    .await
    .expect("join");
    upload_lines(&server.base, lines);
    checkpoint_of(&server.base, lines.len()).await;
    server
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_proves_its_results_included_and_reports_a_rebuilt_log_loudly() {
    assert!(Path::new(AGGREGATOR).exists());
    let (server, dir, _db) = fresh_aggregator("log-proofs").await;
    let base = server.base.clone();
    let listen = base.trim_start_matches("http://").to_string();
    let key_file = dir.join("agg.db.key");
    let aggregator_key = Identity::load_or_create(&key_file)
        .expect("the aggregator's key")
        .0
        .public_key();

    let data = dir.join("probe");
    std::fs::create_dir_all(&data).expect("dir");
    let (probe, _) = Identity::load_or_create(&data.join("identity.key")).expect("probe key");
    let signed = measurements(&probe, COUNT, 0);
    probe_with(&data, &signed);

    // Before a key is pinned, a plain-HTTP aggregator's log is not trusted on first use: the
    // upload goes through and the log waits, saying why.
    let out = vantage_in(&data, &["upload", "--aggregator", &base]).await;
    let (stdout, stderr) = said(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with(&format!("Uploaded {COUNT} results")),
        "{stdout}"
    );
    assert!(
        stderr
            .contains("note: transparency log not checked this time: no aggregator key is pinned"),
        "{stderr}"
    );
    let out = vantage_in(&data, &["status"]).await;
    let (status, _) = said(&out);
    assert!(
        status.contains(&format!(
            "transparency log: 0 of {COUNT} uploaded results proven included; {COUNT} awaiting proof"
        )),
        "{status}"
    );

    // The key its operator publishes, pinned as for test lists.
    let out = vantage_in(
        &data,
        &[
            "lists",
            "fetch",
            "--aggregator",
            &base,
            "--cc",
            "IR",
            "--aggregator-key",
            &aggregator_key,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", said(&out).1);

    // Once a checkpoint holds them, the next round proves every one.
    let first = checkpoint_of(&base, COUNT).await;
    let out = vantage_in(&data, &["upload", "--aggregator", &base]).await;
    let (stdout, stderr) = said(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!(
            "Transparency log: {COUNT} results proven included now, 0 awaiting proof (checkpoint {COUNT} of vantage.invalid/"
        )),
        "{stdout}\n{stderr}"
    );
    let out = vantage_in(&data, &["status"]).await;
    let (status, _) = said(&out);
    let origin = first.lines().next().expect("origin").to_string();
    assert!(
        status.contains(&format!(
            "transparency log: {COUNT} of {COUNT} uploaded results proven included (checkpoint {COUNT} of {origin}, "
        )),
        "{status}"
    );
    assert!(!status.contains("awaiting"), "{status}");
    assert!(!status.contains("FORK"), "{status}");
    // Each stored proof leads from the result's leaf to the checkpoint's root.
    let checkpoint = vantage_probe::tlog::verify_checkpoint(
        &first,
        &vantage_probe::envelope::parse_public_key(&aggregator_key)
            .expect("key")
            .to_bytes(),
    )
    .expect("the checkpoint verifies");
    {
        let store = Store::open(&data.join("vantage.db")).expect("store");
        for (id, _) in &signed {
            let (index, proof, size) = store.proof(id).expect("read").expect("a proof");
            assert_eq!(size, checkpoint.size);
            let leaf = vantage_probe::tlog::leaf(id, &probe.public_key()).expect("leaf");
            vantage_probe::tlog::verify_inclusion(&leaf, index, &proof, &checkpoint)
                .expect("the stored proof verifies");
        }
    }
    // A round with nothing new changes nothing and says nothing alarming.
    let out = vantage_in(&data, &["upload", "--aggregator", &base]).await;
    assert!(out.status.success(), "{}", said(&out).1);
    assert!(!said(&out).1.contains("error"), "{}", said(&out).1);

    // Three copies of the probe as it is now, one for each way the operator rebuilds the log.
    let lines: Vec<String> = signed.iter().map(|(_, l)| l.clone()).collect();
    let stranger = Identity::generate().expect("another probe");
    let extra: Vec<String> = measurements(&stranger, 2, 7)
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    let mut deleted = lines.clone();
    deleted.remove(5);
    deleted.push(extra[0].clone());
    let mut replaced = lines.clone();
    replaced[7] = extra[0].clone();
    replaced.push(extra[1].clone());
    let mut reordered = lines.clone();
    reordered.swap(3, 4);
    reordered.push(extra[1].clone());
    let cases = [
        (
            "deleted",
            deleted,
            "two trees of the same size with different roots",
        ),
        ("replaced", replaced, "are not the earlier tree"),
        ("reordered", reordered, "are not the earlier tree"),
    ];
    for (name, _, _) in &cases {
        copy_dir(&data, &dir.join(format!("probe-{name}")));
    }
    drop(server);

    for (name, rebuilt_lines, why) in cases {
        let server = rebuilt(&listen, &dir, name, &key_file, &rebuilt_lines).await;
        assert_eq!(server.base, base, "the same address");
        let copy = dir.join(format!("probe-{name}"));
        let out = vantage_in(&copy, &["upload", "--aggregator", &base]).await;
        let (_, stderr) = said(&out);
        eprintln!("vantage upload against the {name} log said:\n{stderr}");
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains("error: the aggregator's transparency log is not append-only"),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(why), "{name}: {stderr}");
        // Both checkpoints are named: the one the probe kept, and the rebuilt log's.
        assert!(
            stderr.contains(&format!(
                "earlier checkpoint: size {COUNT} of {origin} (root {})",
                checkpoint.root_b64()
            )),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "later checkpoint:   size {} of {origin}",
                rebuilt_lines.len()
            )),
            "{name}: {stderr}"
        );
        // `vantage status` keeps showing it, and nothing the probe measured is gone.
        let out = vantage_in(&copy, &["status"]).await;
        let (status, _) = said(&out);
        eprintln!("vantage status then said:\n{status}");
        assert!(
            status.contains("TRANSPARENCY LOG FORK: the aggregator's log was seen not to be append-only 1 time(s)"),
            "{name}: {status}"
        );
        assert!(status.contains(&format!("results: {COUNT}\n")), "{status}");
        let store = Store::open(&copy.join("vantage.db")).expect("store");
        assert_eq!(store.list(1000).expect("list").len(), COUNT, "{name}");
        let log = store.log_status().expect("log status");
        assert_eq!(log.proven, COUNT as u64, "{name}: the old proofs are kept");
        assert_eq!(log.forks.len(), 1, "{name}");
        drop(store);
        // The fork is reported once; the next round follows the rebuilt log from the
        // checkpoint it kept, and status still shows the fork.
        let out = vantage_in(&copy, &["upload", "--aggregator", &base]).await;
        assert!(out.status.success(), "{name}: {}", said(&out).1);
        let out = vantage_in(&copy, &["status"]).await;
        assert!(said(&out).0.contains("TRANSPARENCY LOG FORK"), "{name}");
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn results_uploaded_to_an_aggregator_without_a_log_are_not_logged() {
    let dir = common::tempdir("no-log-probe");
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let server = common::serve(&ca, &dir.join("agg.db"), &["--no-log"]).await;
    let data = dir.join("probe");
    std::fs::create_dir_all(&data).expect("dir");
    let (probe, _) = Identity::load_or_create(&data.join("identity.key")).expect("probe key");
    probe_with(&data, &measurements(&probe, 3, 0));
    let out = vantage_in(&data, &["upload", "--aggregator", &server.base]).await;
    let (stdout, stderr) = said(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("Transparency log"), "{stdout}");
    assert!(!stderr.contains("transparency"), "{stderr}");
    let out = vantage_in(&data, &["status"]).await;
    let (status, _) = said(&out);
    assert!(
        status.contains("transparency log: 0 of 3 uploaded results proven included; 3 not logged"),
        "{status}"
    );
}
