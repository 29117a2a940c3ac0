//! Witnesses end to end (docs/transparency.md "Witnesses"): the real `serve` on loopback
//! accepting a witness's cosignatures (`--witness`), the real `vantage-aggregator witness`
//! cosigning successive checkpoints after checking each extends the last, the cosignatures
//! served with the checkpoint and verified by our code and by the independent Python verifier
//! (`log_verify.py --witness`); then the log rewritten (a new database under the same key on
//! the same address, with a measurement deleted, altered, or two reordered): the witness
//! refuses to cosign, says why with both checkpoints, keeps the evidence and exits 3.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{AGGREGATOR, Server, signed_in_ir, start_aggregator_on, tempdir};
use serde_json::Value;
use vantage_aggregator::log::note::{WitnessKey, WitnessVerifier, cosignatures_on};
use vantage_probe::envelope::Identity;

/// The witness's name in these tests.
const NAME: &str = "witness.example/w1";

/// `n` canary rounds signed by `key`, the `i`th `start + i` minutes after a day ago, tagged
/// `tag` so that two calls give different measurements.
fn canaries(key: &Identity, start: usize, n: usize, tag: u64) -> Vec<String> {
    let day_ago = vantage_aggregator::store::now() - 86_400;
    (start..start + n)
        .map(|i| {
            signed_in_ir(
                key,
                "canary",
                day_ago + i64::try_from(i).expect("small") * 60,
                0.5,
                serde_json::json!({"ok": 4, "total": 4, "checks": [], "tag": tag}),
            )
        })
        .collect()
}

/// Uploads `lines` in one request, in order; each must be accepted.
fn upload(base: &str, lines: &[String]) {
    let (status, body) = common::http(
        base,
        "POST",
        "/api/v1/measurements",
        &[("Content-Type", "application/x-ndjson")],
        lines.join("\n").as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    for r in answer["results"].as_array().expect("results") {
        assert_eq!(r["status"], "accepted", "{body}");
    }
}

/// The checkpoint served now.
fn checkpoint(base: &str) -> String {
    let (status, body) = common::http(base, "GET", "/log/checkpoint", &[], b"");
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (up to 20 s) for a checkpoint of `size` that `ready` accepts; returns it.
fn wait_for(base: &str, size: u64, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        // Before the first checkpoint (within 10 s of the start) the route answers 404.
        let (status, note) = common::http(base, "GET", "/log/checkpoint", &[], b"");
        if status == 200 && note.lines().nth(1) == Some(size.to_string().as_str()) && ready(&note) {
            return note;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no such checkpoint of {size} within 20 s; the latest ({status}):\n{note}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `vantage-aggregator witness` with these arguments after the common ones.
fn witness_cmd(dir: &Path, base: &str, log_key: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(AGGREGATOR);
    cmd.args(["witness", "--name", NAME, "--key"])
        .arg(dir.join("witness.key"))
        .args(["--log", base, "--log-key", log_key, "--state"])
        .arg(dir.join("witness.json"))
        .args(extra);
    cmd
}

/// The aggregator of `db` with the aggregator's key of `key`, on `listen`, accepting `vkey`.
fn aggregator(dir: &Path, listen: &str, db: &Path, key: &Path, vkey: &str) -> Server {
    let ca = dir.join("ca.pem");
    let key = key.to_str().expect("utf-8");
    start_aggregator_on(
        listen,
        &ca,
        db,
        &["--key", key, "--witness", vkey, "--no-detect"],
    )
}

/// The size of the checkpoint in the witness's state file.
fn state_size(dir: &Path) -> u64 {
    let state: Value =
        serde_json::from_slice(&std::fs::read(dir.join("witness.json")).expect("state"))
            .expect("json");
    state["checkpoint"]["size"].as_u64().expect("size")
}

/// The Python verifier's run on the served checkpoint with `--witness`: (success, report).
fn python_verifier(base: &str, public_key: &str, vkey: &str) -> (bool, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/log_verify.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--base",
            base,
            "--public-key",
            public_key,
            "--witness",
            vkey,
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 (tests/run.sh installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_witness_cosigns_successive_checkpoints_and_refuses_a_rewritten_log() {
    let dir = tempdir("witness");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&dir.join("ca.pem"));
    let out = Command::new(AGGREGATOR)
        .args(["witness", "--print-key", "--name", NAME, "--key"])
        .arg(dir.join("witness.key"))
        .output()
        .expect("witness --print-key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(vkey.starts_with(&format!("{NAME}+")), "{vkey}");
    let verifier = WitnessVerifier::parse(&vkey).expect("a witness verifier key");

    let (db, agg_key) = (dir.join("agg.db"), dir.join("agg.key"));
    let server = aggregator(&dir, "127.0.0.1:0", &db, &agg_key, &vkey);
    let base = server.base.clone();
    let listen = base.trim_start_matches("http://").to_string();
    let log_key = Identity::load_or_create(&agg_key)
        .expect("the aggregator's key")
        .0
        .public_key();
    let probe = Identity::generate().expect("key");
    let first = canaries(&probe, 0, 20, 0);
    let second = canaries(&probe, 20, 15, 0);
    upload(&base, &first);
    wait_for(&base, 20, |_| true);

    // The witness, running: it cosigns 20, then 35 once it is published.
    let mut running = witness_cmd(&dir, &base, &log_key, &["--every", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("witness");
    let cosigned = |note: &str| {
        cosignatures_on(note, std::slice::from_ref(&verifier)).is_ok_and(|c| c.len() == 1)
    };
    let at_20 = wait_for(&base, 20, cosigned);
    assert_eq!(state_size(&dir), 20);
    upload(&base, &second);
    let at_35 = wait_for(&base, 35, cosigned);
    assert_eq!(state_size(&dir), 35);
    let _ = running.kill();
    let _ = running.wait();
    let mut said = String::new();
    running
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut said)
        .expect("read");
    assert!(
        said.contains("cosigned checkpoint 20 (the first seen of this log)"),
        "{said}"
    );
    assert!(
        said.contains("cosigned checkpoint 35, consistent with 20"),
        "{said}"
    );

    // The cosignature is a line after the log's own; the log's signature still verifies, with
    // our code and independently.
    for note in [&at_20, &at_35] {
        let sigs: Vec<&str> = note.rsplit_once("\n\n").expect("sigs").1.lines().collect();
        assert_eq!(sigs.len(), 2, "{note}");
        assert!(sigs[1].starts_with(&format!("— {NAME} ")), "{note}");
        vantage_probe::tlog::verify_checkpoint(
            note,
            &<[u8; 32]>::try_from(
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &log_key)
                    .expect("base64"),
            )
            .expect("32 bytes"),
        )
        .expect("the log's signature verifies beside the cosignature");
    }
    // A proof is given against the checkpoint as it is served, cosignature included.
    let first_id = vantage_probe::envelope::verify(&first[0])
        .expect("signed")
        .id
        .to_string();
    let (status, proof) = common::http(
        &base,
        "GET",
        &format!("/api/v1/log/proof/{first_id}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{proof}");
    let proof: Value = serde_json::from_str(&proof).expect("json");
    assert_eq!(proof["checkpoint"], at_35.as_str());
    let (ok, report) = python_verifier(&base, &log_key, &vkey);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("ok cosigned by witness {NAME} at")),
        "{report}"
    );
    let stranger = WitnessKey::from_seed(&[9; 32], Some("stranger.example/w")).expect("key");
    let (ok, report) = python_verifier(&base, &log_key, &stranger.verifier_key());
    assert!(!ok && report.contains("FAIL cosignature: no cosignature by stranger.example/w"));

    // A key that is not the log's, or not a key: nothing cosigned, and why.
    let other = Identity::generate().expect("key").public_key();
    for (key, said) in [
        (other.as_str(), "checkpoint does not verify"),
        (
            "not-a-key",
            "neither a base64 Ed25519 public key nor a verifier key",
        ),
    ] {
        let out = witness_cmd(&dir, &base, key, &["--once"])
            .output()
            .expect("witness --once");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(said), "{err}");
    }
    assert_eq!(state_size(&dir), 35, "the state is untouched");

    // Run again, it has nothing to do; if the log lost the cosignature, it submits it again.
    let again = |what: &str| {
        let out = witness_cmd(&dir, &base, &log_key, &["--once"])
            .output()
            .expect("witness --once");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains(what), "{said}");
    };
    again("checkpoint 35 is already cosigned");
    rusqlite::Connection::open(&db)
        .expect("open")
        .execute("DELETE FROM log_cosignatures", [])
        .expect("delete");
    assert!(!cosigned(&checkpoint(&base)), "the log lost it");
    again("submitted the cosignature of checkpoint 35 again");
    assert_eq!(checkpoint(&base), at_35, "the same line is served again");

    // What else is submitted is refused, each with its reason.
    let mine = WitnessKey::load_or_create(&dir.join("witness.key"), Some(NAME)).expect("key");
    let now = u64::try_from(vantage_aggregator::store::now()).expect("after 1970");
    let post = |query: &str, body: &str| {
        common::http(
            &base,
            "POST",
            &format!("/log/cosignature{query}"),
            &[("Content-Type", "text/plain")],
            body.as_bytes(),
        )
    };
    let for_35 = mine.cosign(&at_35, now).expect("cosign");
    for (query, body, status, reason) in [
        (
            "",
            stranger.cosign(&at_35, now).expect("cosign"),
            403,
            "is not a witness this aggregator accepts",
        ),
        (
            "",
            "not a line\n".to_string(),
            400,
            "is not a signature line",
        ),
        (
            "?size=20",
            for_35.clone(),
            400,
            "does not verify over this checkpoint (size 20)",
        ),
        ("?size=21", for_35.clone(), 404, "no checkpoint of size 21"),
        (
            "",
            mine.cosign(&at_35, now + 3600).expect("cosign"),
            400,
            "in the future",
        ),
        ("", for_35.repeat(9), 400, "1 to 8 signature lines"),
        ("", "— x y\n".repeat(700), 413, "at most 4096 bytes"),
        ("", String::new(), 400, "1 to 8 signature lines"),
    ] {
        let (got, answer) = post(query, &body);
        assert_eq!(got, status, "{query} {answer}");
        assert!(answer.contains(reason), "{query}: {answer}");
    }
    // Its own again is taken, and the checkpoint still carries one line of it.
    let (got, answer) = post("", &for_35);
    assert_eq!(got, 200, "{answer}");
    assert!(answer.contains(&verifier.id()), "{answer}");
    let note = checkpoint(&base);
    assert_eq!(note.matches(&format!("— {NAME} ")).count(), 1, "{note}");
    drop(server);

    // The log rewritten under the same key, on the same address, from a fresh database: the
    // same 35 measurements with one deleted, one altered, or two reordered, and a few new ones
    // after them so that the log looks as if it had only grown.
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    let newer = canaries(&probe, 35, 3, 0);
    let altered = canaries(&probe, 10, 1, 1).remove(0);
    let mut rewrites: Vec<(&str, Vec<String>)> = Vec::new();
    let mut deleted = all.clone();
    deleted.remove(10);
    rewrites.push(("deleted", deleted));
    let mut changed = all.clone();
    changed[10] = altered;
    rewrites.push(("altered", changed));
    let mut reordered = all.clone();
    reordered.swap(10, 11);
    rewrites.push(("reordered", reordered));
    let kept_state = std::fs::read(dir.join("witness.json")).expect("state");
    for (what, mut lines) in rewrites {
        lines.extend(newer.iter().cloned());
        let size = lines.len() as u64;
        let db = dir.join(format!("{what}.db"));
        let server = aggregator(&dir, &listen, &db, &agg_key, &vkey);
        assert_eq!(server.base, base, "the same address");
        upload(&base, &lines);
        let served = wait_for(&base, size, |_| true);
        let out = witness_cmd(&dir, &base, &log_key, &["--once"])
            .output()
            .expect("witness --once");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{what}: {err}");
        assert!(err.contains("REFUSED to cosign"), "{what}: {err}");
        assert!(err.contains("does not extend"), "{what}: {err}");
        assert!(
            err.contains("last cosigned: size 35 of vantage.invalid/"),
            "{what}: {err}"
        );
        assert!(
            err.contains(&format!("served now:    size {size} of vantage.invalid/")),
            "{what}: {err}"
        );
        // The evidence: both checkpoints, as signed notes, in the file it names.
        let evidence = err
            .split("both checkpoints are kept in ")
            .nth(1)
            .expect("the evidence file")
            .trim();
        let kept = std::fs::read_to_string(evidence).expect("evidence");
        assert!(
            kept.contains(at_35.rsplit_once("\n\n").expect("text").0),
            "{kept}"
        );
        assert!(kept.contains(served.trim_end()), "{kept}");
        std::fs::remove_file(evidence).expect("remove");
        // Nothing was cosigned or submitted, and the state is what it was.
        assert_eq!(
            std::fs::read(dir.join("witness.json")).expect("state"),
            kept_state,
            "{what}"
        );
        assert!(!checkpoint(&base).contains(&format!("— {NAME} ")), "{what}");
        drop(server);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_witness_that_cannot_reach_the_log_cosigns_nothing_and_says_so() {
    let dir = tempdir("witness-unreachable");
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let key = Identity::generate().expect("key").public_key();
    let out = witness_cmd(&dir, &base, &key, &["--once"])
        .output()
        .expect("witness --once");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{base}/log/checkpoint")), "{err}");
    assert!(
        !dir.join("witness.json").exists(),
        "no state without a checkpoint"
    );
    // Without --log, --log-key and --state only --print-key runs.
    let out = Command::new(AGGREGATOR)
        .args(["witness", "--key"])
        .arg(dir.join("witness.key"))
        .output()
        .expect("witness");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log"));
    std::fs::remove_dir_all(&dir).ok();
}
