//! Operator jobs and the aggregator's promises under stress: OONI import, rescoring, no stored
//! client address, and a kill in the middle of an ingest.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{AGGREGATOR, tempdir};
use serde_json::Value;
use vantage_fixtures::mmdb::{MmdbWriter, asn_record, country_record};
use vantage_probe::envelope::{Identity, verify};

fn agg(args: &[&str], db: &Path) -> (bool, String, String) {
    let out = Command::new(AGGREGATOR)
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file of the repository's test data (tests/data/SOURCES.md).
fn data(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data")
        .join(path)
}

#[test]
fn import_ooni_then_query_by_country_and_domain_and_rescore() {
    let dir = tempdir("import");
    let db = dir.join("agg.db");
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(data("ooni/webconnectivity"))
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 56);
    let mut cmd = Command::new(AGGREGATOR);
    cmd.args(["import-ooni", "--db"]).arg(&db).args(&files);
    let out = cmd.output().expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let example = files
        .iter()
        .filter(|f| {
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(f).expect("read")).expect("json");
            v["input"].as_str().is_some_and(|i| {
                url::Url::parse(i)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_string))
                    == Some("www.example.com".into())
            })
        })
        .count();
    let (ok, it, _) = agg(&["query", "--cc", "IT", "--limit", "1000"], &db);
    assert!(ok);
    assert_eq!(it.lines().count(), 56, "all of them are from Italy");
    let (_, by_domain, _) = agg(
        &["query", "--domain", "www.example.com", "--limit", "1000"],
        &db,
    );
    assert_eq!(by_domain.lines().count(), example);
    for line in by_domain.lines() {
        let v: Value = serde_json::from_str(line).expect("json");
        assert_eq!(v["source"], "ooni");
        assert_eq!(v["rule_set"], "vantage-3");
    }

    // Importing again skips the file as done; read again (--again), it stores nothing twice.
    let again = |flags: &[&str]| {
        let out = Command::new(AGGREGATOR)
            .args(["import-ooni", "--db"])
            .arg(&db)
            .args(flags)
            .arg(&files[0])
            .output()
            .expect("import");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = again(&[]);
    assert!(
        out.starts_with("files: 0 imported, 1 skipped as already imported, 0 refused"),
        "{out}"
    );
    let out = again(&["--again"]);
    assert!(
        out.contains("measurements: 0 stored, 1 already there, 0 skipped"),
        "{out}"
    );

    // A new fingerprint, then rescore: the matching pages become confirmed.
    let (_, before, _) = agg(&["query", "--confirmed", "true", "--limit", "1000"], &db);
    assert_eq!(before.lines().count(), 0);
    let fps = dir.join("fps");
    std::fs::create_dir_all(&fps).expect("dir");
    std::fs::write(
        fps.join("extra.csv"),
        "name,scope,other_names,location_found,pattern_type,pattern,confidence_no_fp,expected_countries,source,exp_url,notes\n\
         test.it_default_page,nat,,body,contains,<title>Default Web Page</title>,5,IT,test,,\n",
    )
    .expect("write");
    let (ok, out, err) = agg(
        &["rescore", "--fingerprints", fps.to_str().expect("utf-8")],
        &db,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("rescored 56 measurements"), "{out}");
    let (_, after, _) = agg(&["query", "--confirmed", "true", "--limit", "1000"], &db);
    assert!(
        after.lines().count() > 0,
        "rescoring applied the new fingerprint"
    );

    // Bad input is reported with its line and the rest imported.
    let bad = dir.join("bad.jsonl");
    let good = std::fs::read_to_string(&files[1]).expect("read");
    let good: Value = serde_json::from_str(&good).expect("json");
    std::fs::write(&bad, format!("{{oops\n{good}\n")).expect("write");
    let out = Command::new(AGGREGATOR)
        .args(["import-ooni", "--db"])
        .arg(&db)
        .arg(&bad)
        .output()
        .expect("import");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{}:1: not JSON", bad.display()))
    );
}

/// Starts the aggregator with its log in a file, at debug level.
fn serve_logged(db: &Path, log: &Path, geo: &[&Path]) -> (std::process::Child, String) {
    let mut child = Command::new(AGGREGATOR)
        .env("RUST_LOG", "debug")
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args(geo.iter().flat_map(|p| ["--geoip".as_ref(), p.as_os_str()]))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("serve");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("listen line");
    let base = line
        .trim()
        .trim_start_matches("vantage-aggregator listening on http://")
        .to_string();
    (child, base)
}

/// One request from a chosen local address.
fn request_from(local: [u8; 4], server: &str, head: &str, body: &[u8]) -> String {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((local, 0)).into())
        .expect("bind");
    let addr: SocketAddr = server.parse().expect("addr");
    socket.connect(&addr.into()).expect("connect");
    let mut s: std::net::TcpStream = socket.into();
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(body).expect("body");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

fn measurement(n: usize) -> String {
    let mut v: Value = serde_json::from_str(
        &std::fs::read_to_string(data("ooni/webconnectivity/generated-successWithHTTP.json"))
            .expect("read"),
    )
    .expect("json");
    v["input"] = format!("http://www.example.com/item/{n}").into();
    v.to_string()
}

#[test]
fn no_trace_of_the_client_address_in_database_or_logs() {
    let dir = tempdir("privacy");
    let (db, log, asn_db, country_db) = (
        dir.join("agg.db"),
        dir.join("server.log"),
        dir.join("asn.mmdb"),
        dir.join("country.mmdb"),
    );
    // Geolocation from real MaxMind DB files: an ASN file and a country file, as GeoLite2 and
    // DB-IP ship them.
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    MmdbWriter::new("GeoLite2-ASN")
        .insert(ip("127.0.0.0"), 8, asn_record(64500, "Loopback Telecom"))
        .insert(ip("127.0.0.56"), 30, asn_record(64511, "Loopback Mobile"))
        .write(&asn_db);
    MmdbWriter::new("DBIP-Country-Lite")
        .insert(ip("127.0.0.0"), 8, country_record("IT"))
        .write(&country_db);
    let (mut child, base) = serve_logged(&db, &log, &[&asn_db, &country_db]);
    let client = [127, 0, 0, 57];
    let whoami = request_from(
        client,
        &base,
        &format!("GET /api/v1/whoami HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert!(
        whoami.ends_with("{\"probe_asn\":\"AS64511\",\"probe_cc\":\"IT\"}"),
        "{whoami}"
    );
    let id = Identity::generate().expect("key");
    let body: String = (0..5)
        .map(|n| id.seal(&measurement(n)).expect("seal").1 + "\n")
        .collect();
    let head = format!(
        "POST /api/v1/measurements HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let reply = request_from(client, &base, &head, body.as_bytes());
    assert_eq!(reply.matches("\"accepted\"").count(), 5, "{reply}");
    let beat = serde_json::json!({
        "data_format_version": "0.2.0", "input": null, "measurement_start_time": "2026-01-01 00:00:00",
        "probe_asn": "AS64500", "probe_cc": "IT", "probe_ip": "127.0.0.1", "software_name": "vantage",
        "software_version": "0", "test_keys": {}, "test_name": "heartbeat", "test_runtime": 0,
        "test_version": "0.1.0"
    });
    let (_, line) = id.seal(&beat.to_string()).expect("seal");
    let head = format!(
        "POST /api/v1/heartbeat HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        line.len()
    );
    let reply = request_from(client, &base, &head, line.as_bytes());
    assert!(reply.contains("\"status\":\"ok\""), "{reply}");
    // Read the files while the server still runs (the WAL is live), then after it stops.
    let needle = "127.0.0.57";
    let check = |when: &str| {
        for file in [
            db.clone(),
            dir.join("agg.db-wal"),
            dir.join("agg.db-shm"),
            log.clone(),
        ] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{when}: {} holds the client address",
                    file.display()
                );
            }
        }
    };
    check("while serving");
    let _ = child.kill();
    let _ = child.wait();
    check("after stopping");
    assert!(std::fs::metadata(&db).expect("db").len() > 0);
}

#[test]
fn killed_during_a_large_ingest_keeps_only_whole_measurements() {
    let dir = tempdir("killed-ingest");
    let (db, log) = (dir.join("agg.db"), dir.join("server.log"));
    let id = Identity::generate().expect("key");
    let lines: Vec<String> = (0..4000)
        .map(|n| id.seal(&measurement(n)).expect("seal").1)
        .collect();
    let body = lines.join("\n");
    let post = |base: &str| {
        let head = format!(
            "POST /api/v1/measurements HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        request_from([127, 0, 0, 1], base, &head, body.as_bytes())
    };

    let (mut child, base) = serve_logged(&db, &log, &[]);
    let sender = std::thread::spawn({
        let base = base.clone();
        let body = body.clone();
        move || {
            let head = format!(
                "POST /api/v1/measurements HTTP/1.1\r\nHost: {base}\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            request_from([127, 0, 0, 1], &base, &head, body.as_bytes())
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let _ = sender.join();

    // The database opens, and whatever it holds is whole: every stored envelope verifies. A
    // body is stored in batches as it is read, each batch in one transaction, so the kill may
    // leave any number of whole measurements, never part of one.
    let (ok, stored, err) = agg(&["export", "--format", "jsonl", "--limit", "100000"], &db);
    assert!(ok, "{err}");
    let before = stored.lines().count();
    for line in stored.lines() {
        verify(line).expect("a stored envelope is whole");
    }

    // Sending the batch again stores the rest, each exactly once.
    let (mut child, base) = serve_logged(&db, &log, &[]);
    let reply = post(&base);
    let accepted = reply.matches("\"accepted\"").count();
    let duplicate = reply.matches("\"duplicate\"").count();
    assert_eq!(
        accepted + duplicate,
        lines.len(),
        "{}",
        &reply[..reply.len().min(300)]
    );
    assert_eq!(duplicate, before);
    let _ = child.kill();
    let _ = child.wait();
    let (_, all, _) = agg(&["query", "--limit", "100000"], &db);
    assert_eq!(all.lines().count(), lines.len());
}
