//! Evidence bundles end to end (`docs/transparency.md`, "Evidence bundles"): three probes'
//! signed web_connectivity measurements of news1.example, uploaded over HTTP to a real
//! `serve` on SQLite, DNS-blocked for twelve of forty-eight hours, become one blocking event
//! (`vantage-aggregator detect`); its bundle, fetched from the route and written by the
//! command, holds every measurement behind it byte for byte as the API serves it, and
//! `vantage verify` accepts it, also inside a network namespace with no network. Each way of
//! tampering with it (an envelope's byte, a deleted envelope, two proofs swapped, the
//! checkpoint, a leaf or a proof hash) makes `vantage verify` fail and name what, whether or
//! not the tamperer also rewrote the manifest.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{AGGREGATOR, http, start_aggregator_with, tempdir, vantage};
use serde_json::Value;
use vantage_aggregator::detect::format_time;
use vantage_probe::envelope::Identity;

const WEBC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/data/ooni/webconnectivity/"
);
const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

fn template(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{WEBC}{name}")).expect("template");
    serde_json::from_str(&text).expect("json")
}

/// A web_connectivity measurement of `https://news1.example/` made in IR / AS64500 at `at`,
/// DNS-blocked or not, sealed by `key`; `runtime` makes each one's bytes (and id) its own.
fn measurement(key: &Identity, blocked: bool, at: i64, runtime: f64) -> (String, String) {
    let mut m = template(if blocked {
        "generated-dnsBlockingNXDOMAIN.json"
    } else {
        "generated-successWithHTTPS.json"
    });
    m["input"] = "https://news1.example/".into();
    m["probe_cc"] = "IR".into();
    m["probe_asn"] = "AS64500".into();
    m["probe_ip"] = "127.0.0.1".into();
    m["measurement_start_time"] = format_time(at).into();
    m["test_start_time"] = format_time(at).into();
    m["test_runtime"] = runtime.into();
    let (id, line) = key.seal(&m.to_string()).expect("seal");
    (id.to_string(), line)
}

/// `probes` probes measuring news1.example every hour for 48 hours ending an hour ago, blocked
/// during hours 20..32, uploaded over HTTP; returns the ids of the blocked ones.
fn upload(base: &str, probes: usize, per_hour: usize) -> Vec<String> {
    let now = vantage_aggregator::store::now();
    let t0 = (now - 49 * 3600) / 3600 * 3600;
    let mut blocked = Vec::new();
    for p in 0..probes {
        let key = Identity::generate().expect("key");
        let mut lines = Vec::new();
        for h in 0..48 {
            for k in 0..per_hour {
                let at = t0 + h * 3600 + (p as i64 * 7 + k as i64 * 3) % 3000 + 60;
                let is_blocked = (20..32).contains(&h);
                let (id, line) = measurement(&key, is_blocked, at, p as f64 + k as f64 / 1000.0);
                if is_blocked {
                    blocked.push(id);
                }
                lines.push(line);
            }
        }
        for chunk in lines.chunks(500) {
            let body = chunk.join("\n");
            let (status, reply) = http(
                base,
                "POST",
                "/api/v1/measurements",
                NDJSON,
                body.as_bytes(),
            );
            assert_eq!(status, 200, "{reply}");
            assert_eq!(
                reply.matches("\"accepted\"").count(),
                chunk.len(),
                "{reply}"
            );
        }
    }
    blocked
}

/// Runs the aggregator's command line: (success, stdout, stderr).
fn aggregator(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(AGGREGATOR)
        .args(args)
        .output()
        .expect("run vantage-aggregator");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `vantage verify`: (exit code, stdout and stderr).
fn verify(zip: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(vantage())
        .arg("verify")
        .arg(zip)
        .args(extra)
        .output()
        .expect("run vantage verify");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A GET whose body is bytes: (status, head, body), a chunked body decoded.
fn get_bytes(base: &str, path: &str) -> (u16, String, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read");
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head");
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let mut body = reply[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").expect("size");
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .expect("hex size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
        body = out;
    }
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, body)
}

/// The entries of a zip, by name.
fn entries(zip: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip).expect("open")).expect("a zip");
    let mut out = BTreeMap::new();
    for i in 0..archive.len() {
        let mut f = archive.by_index(i).expect("entry");
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).expect("read");
        out.insert(f.name().expect("name").into_owned(), bytes);
    }
    out
}

/// Writes `files` as a zip at `to`; with `reseal`, first rewrites `MANIFEST.json` to the
/// files' new hashes and sizes (and drops the files that are gone), as a careful tamperer
/// would.
fn write_zip(to: &Path, mut files: BTreeMap<String, Vec<u8>>, dir: &str, reseal: bool) {
    if reseal {
        let name = format!("{dir}/MANIFEST.json");
        let mut manifest: Value = serde_json::from_slice(&files[&name]).expect("manifest");
        let mut listed = Vec::new();
        for (path, bytes) in &files {
            let Some(rel) = path.strip_prefix(&format!("{dir}/")) else {
                continue;
            };
            if rel == "MANIFEST.json" {
                continue;
            }
            let sha = ring::digest::digest(&ring::digest::SHA256, bytes);
            listed.push(serde_json::json!({
                "path": rel, "sha256": hex::encode(sha.as_ref()), "bytes": bytes.len(),
            }));
        }
        manifest["files"] = Value::Array(listed);
        files.insert(name, serde_json::to_vec_pretty(&manifest).expect("json"));
    }
    let mut zip = zip::ZipWriter::new(std::fs::File::create(to).expect("create"));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in files {
        zip.start_file(name, options).expect("start");
        zip.write_all(&bytes).expect("write");
    }
    zip.finish().expect("finish");
}

/// The aggregator's public key, from its key file (`serve` creates `DB.key`).
fn public_key(db: &Path) -> String {
    let text = std::fs::read_to_string(format!("{}.key", db.display())).expect("key file");
    let b64 = base64::engine::general_purpose::STANDARD;
    let seed: [u8; 32] = b64
        .decode(text.trim())
        .expect("base64")
        .try_into()
        .expect("32 bytes");
    b64.encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    )
}

/// Waits until the log's checkpoint holds at least `size` entries.
fn checkpoint_of(base: &str, size: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http(base, "GET", "/log/checkpoint", &[], b"");
        let held = body
            .lines()
            .nth(1)
            .and_then(|l| l.parse::<u64>().ok())
            .unwrap_or(0);
        if status == 200 && held >= size {
            return;
        }
        assert!(Instant::now() < deadline, "no checkpoint of {size}: {body}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The one blocking event of IR after `detect`, as `timeline --json` gives it.
fn blocking_event(db: &str) -> Value {
    let (ok, out, err) = aggregator(&["detect", "--db", db, "--cc", "IR"]);
    assert!(ok, "{err}");
    let since = format_time(vantage_aggregator::store::now() - 4 * 86_400);
    let (ok, out2, err) = aggregator(&[
        "timeline", "--db", db, "--cc", "IR", "--kind", "blocking", "--since", &since, "--json",
    ]);
    assert!(ok, "{err}");
    let events: Vec<Value> = out2
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(events.len(), 1, "{out}{out2}");
    events[0].clone()
}

fn set(files: &mut BTreeMap<String, Vec<u8>>, name: &str, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&files[name]).expect("json");
    f(&mut v);
    files.insert(
        name.to_string(),
        serde_json::to_vec_pretty(&v).expect("json"),
    );
}

/// A tampered copy of `zip` (with and without the manifest rewritten) must fail
/// `vantage verify`, printing `raw` and `resealed` respectively (and nothing must pass).
fn tampered(
    zip: &Path,
    dir: &str,
    what: &str,
    change: impl Fn(&mut BTreeMap<String, Vec<u8>>),
    raw: &[String],
    resealed: &[String],
) {
    for (reseal, expected) in [(false, raw), (true, resealed)] {
        let mut files = entries(zip);
        change(&mut files);
        let to = zip.with_file_name(format!(
            "{}-{}.zip",
            what.replace(' ', "-"),
            if reseal { "resealed" } else { "raw" }
        ));
        write_zip(&to, files, dir, reseal);
        let (code, out) = verify(&to, &[]);
        assert_eq!(code, 1, "{what} (resealed: {reseal}) must fail:\n{out}");
        assert!(
            !out.contains(|c: char| c.is_control() && c != '\n'),
            "{what} (resealed: {reseal}) printed a control character:\n{out:?}"
        );
        assert!(out.contains("NOT VERIFIED"), "{what}: {out}");
        for e in expected {
            assert!(
                out.contains(e.as_str()),
                "{what} (resealed: {reseal}): expected {e:?} in:\n{out}"
            );
        }
    }
}

#[test]
fn a_blocking_events_bundle_verifies_offline_and_names_every_tampering() {
    let dir = tempdir("evidence");
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let db_arg = db.to_str().expect("utf-8");
    let server = start_aggregator_with(&ca, &db, &[]);
    let base = server.base.clone();
    let blocked = upload(&base, 3, 1);
    assert_eq!(blocked.len(), 36);
    checkpoint_of(&base, 144);
    let event = blocking_event(db_arg);
    let id = event["id"].as_str().expect("id").to_string();
    assert_eq!(event["layer"], "dns", "{event}");
    assert_eq!(
        event["targets"],
        serde_json::json!(["news1.example"]),
        "{event}"
    );

    // From the route: a zip, named for the event, refused for a bad or unknown id.
    let (status, head, from_route) =
        get_bytes(&base, &format!("/api/v1/timeline/{id}/evidence.zip"));
    assert_eq!(status, 200, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: application/zip"), "{head}");
    assert!(
        lower.contains(&format!("filename=\"evidence-{id}.zip\"")),
        "{head}"
    );
    let (status, body) = http(
        &base,
        "GET",
        "/api/v1/timeline/00000000000000ff/evidence.zip",
        &[],
        b"",
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no event 00000000000000ff"), "{body}");
    let (status, body) = http(&base, "GET", "/api/v1/timeline/nope/evidence.zip", &[], b"");
    assert_eq!(status, 400, "{body}");
    let (_, openapi) = http(&base, "GET", "/api/v1/openapi.json", &[], b"");
    assert!(
        openapi.contains("/api/v1/timeline/{id}/evidence.zip"),
        "the route is in the OpenAPI document"
    );
    let (_, page) = http(&base, "GET", "/", &[], b"");
    assert!(
        page.contains("Evidence bundle (zip)"),
        "the web page links it"
    );

    // From the command line: the same files.
    let cli_zip = dir.join("from-cli.zip");
    let (ok, _, err) = aggregator(&[
        "evidence",
        &id,
        "--out",
        cli_zip.to_str().expect("utf-8"),
        "--db",
        db_arg,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("36 measurements (0 not in the log)"), "{err}");
    let (ok, _, err) = aggregator(&[
        "evidence",
        "00000000000000ff",
        "--out",
        dir.join("none.zip").to_str().expect("utf-8"),
        "--db",
        db_arg,
    ]);
    assert!(!ok && err.contains("no event 00000000000000ff"), "{err}");
    assert!(!dir.join("none.zip").exists() && !dir.join("none.zip.partial").exists());

    let route_zip = dir.join("from-route.zip");
    std::fs::write(&route_zip, &from_route).expect("write");
    let from_cli = entries(&cli_zip);
    let routed = entries(&route_zip);
    let bundle_dir = format!("evidence-{id}");
    assert_eq!(
        from_cli.keys().collect::<Vec<_>>(),
        routed.keys().collect::<Vec<_>>(),
        "the route and the command make the same files"
    );
    for name in [
        "event.json",
        "proofs.json",
        "checkpoint.txt",
        "aggregator.pub",
        "arrival.json",
    ] {
        let name = format!("{bundle_dir}/{name}");
        assert_eq!(from_cli[&name], routed[&name], "{name}");
    }
    // Every envelope is there, byte for byte as the API serves it.
    let envelopes: Vec<&String> = from_cli
        .keys()
        .filter(|n| n.starts_with(&format!("{bundle_dir}/envelopes/")))
        .collect();
    assert_eq!(envelopes.len(), 36, "{envelopes:?}");
    for m in &blocked {
        let name = format!("{bundle_dir}/envelopes/{m}.json");
        let (status, served) = http(&base, "GET", &format!("/api/v1/measurements/{m}"), &[], b"");
        assert_eq!(status, 200);
        assert_eq!(
            from_cli
                .get(&name)
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            Some(served),
            "{name}"
        );
    }
    let report =
        String::from_utf8_lossy(&from_cli[&format!("{bundle_dir}/report.html")]).into_owned();
    assert!(
        report.contains("news1.example was blocked in network AS64500 of IR"),
        "{report}"
    );
    assert!(report.contains("<svg"), "an inline chart");
    assert!(report.contains(&format!("vantage verify evidence-{id}.zip --log-key")));
    // How each envelope arrived, as information: every one uploaded by its probe.
    let arrival: Value =
        serde_json::from_slice(&from_cli[&format!("{bundle_dir}/arrival.json")]).expect("json");
    let routes: BTreeMap<String, String> = arrival["envelopes"]
        .as_array()
        .expect("envelopes")
        .iter()
        .map(|e| {
            assert!(e.get("relayed_by").is_none(), "{e}");
            (
                e["id"].as_str().expect("id").to_string(),
                e["route"].as_str().expect("route").to_string(),
            )
        })
        .collect();
    assert_eq!(routes.len(), 36, "{arrival}");
    assert!(routes.values().all(|r| r == "upload"), "{arrival}");
    assert!(blocked.iter().all(|m| routes.contains_key(m)));
    let event_json: Value =
        serde_json::from_slice(&from_cli[&format!("{bundle_dir}/event.json")]).expect("json");
    assert_eq!(event_json["arrival"][0]["route"], "upload", "{event_json}");
    assert_eq!(
        event_json["arrival"][0]["count"].as_u64(),
        Some(event_json["evidence"].as_array().expect("evidence").len() as u64),
        "{event_json}"
    );
    assert!(
        report.contains(
            "This bundle holds 36 measurements: 36 uploaded by the probes that made them."
        ),
        "{report}"
    );
    assert!(report.contains("<td>upload</td>"), "{report}");

    // vantage verify: everything holds, with the bundle's key or the one given.
    let key = public_key(&db);
    for zip in [&cli_zip, &route_zip] {
        let (code, out) = verify(zip, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("no --log-key given"), "{out}");
        assert!(out.contains(&key), "the fingerprint to compare: {out}");
        assert!(!out.contains("FAIL"), "{out}");
        assert_eq!(out.matches("ok   verdict ").count(), 36, "{out}");
        assert_eq!(out.matches("ok   inclusion ").count(), 36, "{out}");
        assert!(
            out.contains("note arrival: of the 36 envelopes: 36 by upload (as the aggregator recorded it, in arrival.json; information only"),
            "{out}"
        );
        assert!(
            out.contains(
                ": blocked (dns) on the event's layer dns, recomputed with rule set vantage-3"
            ),
            "{out}"
        );
    }
    let (code, out) = verify(&cli_zip, &["--log-key", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("is the --log-key given"), "{out}");
    assert!(out.contains("verified: all "), "{out}");
    let other = Identity::generate().expect("key").public_key();
    let (code, out) = verify(&cli_zip, &["--log-key", &other]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("not the --log-key given, {other}")),
        "{out}"
    );
    assert!(out.contains("FAIL checkpoint: checkpoint.txt"), "{out}");
    let (code, out) = verify(&cli_zip, &["--log-key", "not a key"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("error: --log-key"), "{out}");

    offline(&cli_zip);

    // A bundle made before bundles said how their envelopes arrived: no arrival.json, the
    // manifest without it, and event.json without `arrival`. It verifies as before.
    let older = dir.join("older.zip");
    let mut files = entries(&cli_zip);
    files.remove(&format!("{bundle_dir}/arrival.json"));
    set(&mut files, &format!("{bundle_dir}/event.json"), |e| {
        let e = e.as_object_mut().expect("an object");
        e.remove("arrival");
        e.remove("arrived_while_ongoing");
    });
    write_zip(&older, files, &bundle_dir, true);
    let (code, out) = verify(&older, &["--log-key", &key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified: all "), "{out}");
    assert!(out.contains("note arrival: no arrival.json"), "{out}");

    // Damaged files are errors, not checks.
    let truncated = dir.join("truncated.zip");
    let bytes = std::fs::read(&cli_zip).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let (code, out) = verify(&truncated, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a readable zip"), "{out}");
    let (code, out) = verify(&dir.join("agg.db.key"), &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not a readable zip"), "{out}");

    // Tampering, each named.
    let proofs_name = format!("{bundle_dir}/proofs.json");
    let proofs: Value = serde_json::from_slice(&from_cli[&proofs_name]).expect("proofs");
    let first = proofs["proofs"][0]["id"].as_str().expect("id").to_string();
    let second = proofs["proofs"][1]["id"].as_str().expect("id").to_string();
    let first_file = format!("envelopes/{first}.json");
    let manifest_says = |file: &str| format!("FAIL file {file}: ");

    tampered(
        &cli_zip,
        &bundle_dir,
        "envelope altered",
        |files| {
            let name = format!("{bundle_dir}/{first_file}");
            let text = String::from_utf8(files[&name].clone()).expect("utf-8");
            // One byte of the measurement: the network it claims.
            files.insert(name, text.replacen("AS64500", "AS64501", 1).into_bytes());
        },
        &[
            manifest_says(&first_file),
            format!("FAIL envelope {first}: bad signature"),
        ],
        &[format!("FAIL envelope {first}: bad signature")],
    );
    // A manifest naming its event with terminal escapes (an OSC 8 link, a screen clear): each
    // is printed as a visible escape, and the mismatch with event.json still fails.
    let hostile = "\x1b]8;;http://evil\x07click\x1b]8;;\x07\x1b[2J";
    tampered(
        &cli_zip,
        &bundle_dir,
        "manifest event with escapes",
        |files| {
            set(files, &format!("{bundle_dir}/MANIFEST.json"), |m| {
                m["event"] = hostile.into();
            });
        },
        &[
            format!("FAIL event: event.json is event \"{id}\", the manifest's is"),
            "of event \\u{1b}]8;;http://evil\\u{7}click\\u{1b}]8;;\\u{7}\\u{1b}[2J, made".into(),
        ],
        &[format!(
            "FAIL event: event.json is event \"{id}\", the manifest's is"
        )],
    );
    tampered(
        &cli_zip,
        &bundle_dir,
        "envelope deleted",
        |files| {
            files.remove(&format!("{bundle_dir}/{first_file}"));
        },
        &[format!(
            "FAIL file {first_file}: in the manifest, not in the bundle"
        )],
        &[
            format!("FAIL proof {first}: proofs.json proves {first}, but the bundle has no"),
            format!("lists measurement {first}, which has no envelope in the bundle"),
        ],
    );
    tampered(
        &cli_zip,
        &bundle_dir,
        "proofs swapped",
        |files| {
            set(files, &proofs_name, |p| {
                let a = p["proofs"][0].clone();
                let b = p["proofs"][1].clone();
                for k in ["leaf_index", "inclusion_proof"] {
                    p["proofs"][0][k] = b[k].clone();
                    p["proofs"][1][k] = a[k].clone();
                }
            });
        },
        &[manifest_says("proofs.json")],
        &[
            format!("FAIL inclusion {first}: leaf"),
            format!("FAIL inclusion {second}: leaf"),
            "the proof does not lead from this leaf to the checkpoint's root".into(),
        ],
    );
    tampered(
        &cli_zip,
        &bundle_dir,
        "checkpoint altered",
        |files| {
            let name = format!("{bundle_dir}/checkpoint.txt");
            let text = String::from_utf8(files[&name].clone()).expect("utf-8");
            let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
            let size: u64 = lines[1].parse().expect("size");
            lines[1] = (size + 1).to_string();
            files.insert(name, lines.join("\n").into_bytes());
        },
        &[manifest_says("checkpoint.txt")],
        &["FAIL checkpoint: checkpoint.txt: checkpoint does not verify".into()],
    );
    tampered(
        &cli_zip,
        &bundle_dir,
        "proof hash altered",
        |files| {
            set(files, &proofs_name, |p| {
                let h = p["proofs"][0]["inclusion_proof"][0]
                    .as_str()
                    .expect("hash")
                    .to_string();
                let flipped = if h.starts_with('A') { "B" } else { "A" };
                p["proofs"][0]["inclusion_proof"][0] = format!("{flipped}{}", &h[1..]).into();
            });
        },
        &[manifest_says("proofs.json")],
        &[format!(
            "FAIL inclusion {first}: leaf {} is not proven",
            proofs["proofs"][0]["leaf_index"]
        )],
    );
    tampered(
        &cli_zip,
        &bundle_dir,
        "leaf altered",
        |files| {
            set(files, &proofs_name, |p| {
                p["proofs"][0]["leaf"] = p["proofs"][1]["leaf"].clone();
            });
        },
        &[manifest_says("proofs.json")],
        &[format!(
            "FAIL inclusion {first}: the leaf in proofs.json is not this envelope's id and key"
        )],
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// `vantage verify` inside a fresh network namespace: no interface but `lo`, which stays down.
/// It needs root (`ip netns`); `tests/run.sh` and CI run as root, where this must not be
/// skipped.
fn offline(zip: &Path) {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the offline check needs root (ip netns), and CI runs as root"
        );
        eprintln!("skipped: verifying inside a network namespace needs root (ip netns)");
        return;
    }
    let ns = format!("vantage-evidence-{}", std::process::id());
    let run = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("run ip");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = run(&["netns", "add", &ns]);
    assert!(ok, "ip netns add: {out}");
    let (_, links) = run(&["-n", &ns, "-o", "link"]);
    let vantage: PathBuf = vantage();
    let verified = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&vantage)
        .arg("verify")
        .arg(zip)
        .output()
        .expect("ip netns exec");
    let (deleted, out) = run(&["netns", "del", &ns]);
    assert!(deleted, "ip netns del: {out}");
    assert_eq!(links.lines().count(), 1, "only lo: {links}");
    assert!(links.contains("lo:") && links.contains("DOWN"), "{links}");
    let text = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(text.contains("verified: all "), "{text}");
}

/// Five probes of AS64500 go dark for an hour and upload the canaries they recorded offline
/// when they are back (`common::seed_probes`, through the real ingest): the shutdown's bundle
/// holds every failed canary round of the cut, each checked by `vantage verify` as a failed
/// canary of the event's network during it.
#[test]
fn a_shutdowns_bundle_holds_every_failed_canary_of_the_cut_and_verifies() {
    let dir = tempdir("evidence-shutdown");
    let now = vantage_aggregator::store::now();
    let t0 = (now - 3 * 3600) / 60 * 60;
    let (cut, back) = (t0 + 3600, t0 + 7200);
    let db = dir.join("agg.db");
    {
        let store = vantage_aggregator::store::Sqlite::open(&db).expect("db");
        let probes: Vec<(Identity, vantage_aggregator::ingest::Origin)> = (0..5)
            .map(|_| {
                (
                    Identity::generate().expect("key"),
                    vantage_aggregator::ingest::Origin::UNKNOWN,
                )
            })
            .collect();
        common::seed_probes(&store, &probes, t0, now, cut, back);
    }
    let db_arg = db.to_str().expect("utf-8");
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    // `serve` publishes a checkpoint of everything stored within 10 s of its start (not before
    // its first answer: a loaded machine answers a GET first).
    let server = start_aggregator_with(&ca, &db, &["--detect-every", "3600"]);
    checkpoint_of(&server.base, 1);
    let (_, checkpoint) = http(&server.base, "GET", "/log/checkpoint", &[], b"");
    let size: u64 = checkpoint
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("a checkpoint");
    assert!(size > 0, "{checkpoint}");
    let since = format_time(t0 - 3600);
    let (ok, _, err) = aggregator(&["detect", "--db", db_arg, "--since", &since]);
    assert!(ok, "{err}");
    let (ok, out, err) = aggregator(&[
        "timeline", "--db", db_arg, "--cc", "IR", "--kind", "shutdown", "--since", &since, "--json",
    ]);
    assert!(ok, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(events.len(), 1, "{out}");
    let event = &events[0];
    let id = event["id"].as_str().expect("id");

    // Every failed canary of the five probes during the event, from the search API.
    let (start, end) = (
        event["start"].as_str().expect("start").to_string(),
        event["end"].as_str().expect("an ended cut").to_string(),
    );
    let until = format_time(vantage_aggregator::store::model::parse_time(&end).expect("time") + 1);
    let (status, body) = http(
        &server.base,
        "GET",
        &format!(
            "/api/v1/measurements?cc=IR&test_name=canary&limit=1000&since={}&until={}",
            start.replace(' ', "%20"),
            until.replace(' ', "%20")
        ),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let found: Value = serde_json::from_str(&body).expect("json");
    let failed: Vec<String> = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["accessible"] == false)
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert!(
        failed.len() >= 50,
        "an hour of five probes' rounds: {}",
        failed.len()
    );

    let zip = dir.join(format!("evidence-{id}.zip"));
    let (ok, _, err) = aggregator(&[
        "evidence",
        id,
        "--out",
        zip.to_str().expect("utf-8"),
        "--db",
        db_arg,
    ]);
    assert!(ok, "{err}");
    let files = entries(&zip);
    let mut held: Vec<String> = files
        .keys()
        .filter_map(|n| n.strip_prefix(&format!("evidence-{id}/envelopes/")))
        .map(|n| n.trim_end_matches(".json").to_string())
        .collect();
    held.sort();
    let mut wanted = failed.clone();
    wanted.sort();
    assert_eq!(
        held, wanted,
        "the bundle holds exactly the cut's failed canaries"
    );
    let (code, out) = verify(&zip, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("ok   verdict ").count(), failed.len(), "{out}");
    assert!(
        out.contains(": failed, 0 of 4 targets answered, during the event"),
        "{out}"
    );
    let report =
        String::from_utf8_lossy(&files[&format!("evidence-{id}/report.html")]).into_owned();
    assert!(
        report.contains("Network AS64500 of IR lost its connection to the Internet from"),
        "{report}"
    );
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
