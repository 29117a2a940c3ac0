//! Ingest end to end: the probe uploads to the real aggregator, researchers query it, and bad
//! submissions get their documented answer without anything partial being stored.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use common::{AGGREGATOR, fresh_aggregator, http, serve, tempdir, vantage};
use serde_json::Value;
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tls::TestCa;
use vantage_probe::envelope::Identity;

/// The media types the routes require.
const JSON: &[(&str, &str)] = &[("Content-Type", "application/json")];
const NDJSON: &[(&str, &str)] = &[("Content-Type", "application/x-ndjson")];

/// A compact, realistic measurement: OONI's own successWithHTTP with a unique input.
fn measurement(n: usize) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/ooni/webconnectivity/generated-successWithHTTP.json");
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    v["input"] = format!("http://www.example.com/page/{n}").into();
    serde_json::to_string(&v).expect("compact")
}

fn query(db: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(AGGREGATOR)
        .args(["query", "--limit", "100000", "--db"])
        .arg(db)
        .args(args)
        .output()
        .expect("query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// Verifies an envelope without the project's own code: the signature over the bytes between
/// `"measurement":` and the closing brace, the id their SHA-256.
fn independent_check(line: &str) -> String {
    let key_b64 = line
        .split("\"key\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("key");
    let sig_b64 = line
        .split("\"sig\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("sig");
    let start = line.find("\"measurement\":").expect("measurement") + "\"measurement\":".len();
    let bytes = &line.as_bytes()[start..line.len() - 1];
    let b64 = base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = b64
        .decode(key_b64)
        .expect("b64")
        .try_into()
        .expect("32 bytes");
    let sig: [u8; 64] = b64
        .decode(sig_b64)
        .expect("b64")
        .try_into()
        .expect("64 bytes");
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .expect("key")
        .verify_strict(bytes, &ed25519_dalek::Signature::from_bytes(&sig))
        .expect("signature verifies");
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_uploads_and_researchers_find_exactly_those_measurements() {
    let dir = tempdir("ingest-e2e");
    let ca = TestCa::new("CA");
    let ca_path = dir.join("ca.pem");
    ca.write_pem(&ca_path);
    let db = dir.join("agg.db");
    let site = HttpFixture::fixed(Response::html("<title>ok</title>")).await;
    let urls: Vec<String> = (0..20)
        .map(|i| format!("http://127.0.0.1:{}/item/{i}", site.addr.port()))
        .collect();
    let list = dir.join("list.csv");
    let mut text = "url,category_code,category_description,date_added,source,notes\n".to_string();
    for u in &urls {
        text.push_str(&format!("{u},NEWS,News,2026-11-23,test,\n"));
    }
    std::fs::write(&list, text).expect("list");
    let prefixes = dir.join("prefixes.csv");
    std::fs::write(&prefixes, "prefix,asn,cc\n127.0.0.0/8,64500,IT\n").expect("prefixes");

    let server = serve(
        &ca_path,
        &db,
        &["--prefixes", prefixes.to_str().expect("utf-8")],
    )
    .await;
    let base = server.base.clone();
    let data = dir.join("probe");
    let out = tokio::task::spawn_blocking({
        let (data, list, base) = (data.clone(), list.clone(), base.clone());
        move || {
            Command::new(vantage())
                .env_remove("VANTAGE_AGGREGATOR")
                .args(["run", "--yes", "--json", "--timeout", "3", "--list"])
                .arg(&list)
                .args(["--aggregator", &base, "--data-dir"])
                .arg(&data)
                .output()
                .expect("run")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe_ids: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    assert_eq!(probe_ids.len(), 20);

    // Exactly those measurements, located by whoami's prefix table, with their verdicts.
    let rows = query(&db, &["--cc", "IT"]);
    let ids: BTreeSet<String> = rows
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, probe_ids);
    for r in &rows {
        assert_eq!(r["probe_asn"], "AS64500");
        assert_eq!(r["blocking"], false, "{r}");
        assert_eq!(r["accessible"], true);
        assert_eq!(r["rule_set"], "vantage-3");
    }
    assert_eq!(query(&db, &["--domain", "127.0.0.1"]).len(), 20);
    assert!(query(&db, &["--cc", "IR"]).is_empty());

    // Compressed at rest (as the server does a minute after ingest), envelopes still come back
    // byte for byte: the served envelope verifies with a check written here, and its id is the
    // one asked for.
    let size_before = std::fs::metadata(&db).expect("db").len();
    let out = Command::new(AGGREGATOR)
        .args(["compact", "--db"])
        .arg(&db)
        .output()
        .expect("compact");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "compacted 20 measurements",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&db).expect("db").len() <= size_before);
    let id = ids.iter().next().expect("an id").clone();
    let (status, body) = common::get_measurement(&base, &id).await;
    assert_eq!(status, 200);
    assert_eq!(independent_check(body.trim()), id);

    // The HTTP search pages with a cursor.
    let (status, page) = http(
        &base,
        "GET",
        "/api/v1/measurements?cc=IT&limit=15",
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&page).expect("json");
    assert_eq!(page["results"].as_array().map(Vec::len), Some(15));
    let next = page["next"].as_str().expect("next cursor").to_string();
    let (_, rest) = http(
        &base,
        "GET",
        &format!("/api/v1/measurements?cc=IT&limit=15&cursor={next}"),
        &[],
        b"",
    );
    let rest: Value = serde_json::from_str(&rest).expect("json");
    assert_eq!(rest["results"].as_array().map(Vec::len), Some(5));
    assert_eq!(rest["next"], Value::Null);
    // Pages are in time order and together hold every measurement once.
    let mut paged: Vec<&Value> = page["results"].as_array().expect("page").iter().collect();
    paged.extend(rest["results"].as_array().expect("rest"));
    let times: Vec<&str> = paged
        .iter()
        .filter_map(|r| r["measured_at"].as_str())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let paged_ids: BTreeSet<String> = paged
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(paged_ids, ids);
    let (status, body) = http(&base, "GET", "/api/v1/measurements?cursor=abc", &[], b"");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(r#"cursor \"abc\" is not one this server gave"#),
        "{body}"
    );

    // Bulk export over HTTP: every envelope verifies; the CSV has a row per measurement.
    let (status, jsonl) = http(&base, "GET", "/api/v1/export?format=jsonl&cc=IT", &[], b"");
    assert_eq!(status, 200);
    let exported: BTreeSet<String> = jsonl.lines().map(independent_check).collect();
    assert_eq!(exported, ids);
    let (status, csv) = http(&base, "GET", "/api/v1/export?format=csv&cc=IT", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 21, "header and 20 rows");
    assert!(csv.starts_with("id,source,probe_cc,probe_asn"));
    let (status, _) = http(&base, "GET", "/api/v1/export?format=xml", &[], b"");
    assert_eq!(status, 400);
    let (status, some) = http(
        &base,
        "GET",
        "/api/v1/export?format=csv&limit=5&confirmed=false",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{some}");
    assert_eq!(some.lines().count(), 6, "header and 5 rows");
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_submissions_get_their_answer_and_nothing_partial_is_stored() {
    let (server, _, db) = fresh_aggregator("ingest-bad").await;
    let base = server.base.clone();
    let alice = Identity::generate().expect("key");
    let mallory = Identity::generate().expect("key");
    let post = |body: String| {
        let base = base.clone();
        move || {
            http(
                &base,
                "POST",
                "/api/v1/measurements",
                &[("Content-Type", "application/x-ndjson")],
                body.as_bytes(),
            )
        }
    };
    let outcomes = |body: &str| -> Vec<Value> {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        v["results"].as_array().expect("results").clone()
    };

    let (id1, good) = alice.seal(&measurement(1)).expect("seal");
    let forged = good.replace(&alice.public_key(), &mallory.public_key());
    let flipped = good.replacen("www.example.com/page/1", "www.example.com/page/7", 1);
    let body = [
        good.as_str(),
        forged.as_str(),
        flipped.as_str(),
        "{not json",
        good.as_str(),
    ]
    .join("\n");
    let (status, reply) = tokio::task::spawn_blocking(post(body)).await.expect("join");
    assert_eq!(status, 200, "{reply}");
    let o = outcomes(&reply);
    let statuses: Vec<(&str, Option<&str>)> = o
        .iter()
        .map(|x| (x["status"].as_str().unwrap_or(""), x["reason"].as_str()))
        .collect();
    assert_eq!(statuses[0], ("accepted", None));
    assert_eq!(statuses[1], ("rejected", Some("bad signature")));
    assert_eq!(statuses[2], ("rejected", Some("bad signature")));
    assert_eq!(statuses[3].0, "rejected");
    assert!(
        statuses[3].1.is_some_and(|r| r.starts_with("malformed")),
        "{statuses:?}"
    );
    assert_eq!(statuses[4], ("duplicate", None), "a replayed id");
    assert_eq!(o[0]["id"], id1.as_str());

    // A revoked key's later submissions are refused.
    let out = Command::new(AGGREGATOR)
        .args(["keys", "revoke", &alice.public_key(), "--db"])
        .arg(&db)
        .output()
        .expect("keys");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, later) = alice.seal(&measurement(2)).expect("seal");
    let (_, reply) = tokio::task::spawn_blocking(post(later))
        .await
        .expect("join");
    assert_eq!(outcomes(&reply)[0]["reason"], "revoked key");

    // An oversized body is refused whole (the default limit is 128 MiB).
    let big = "x".repeat((128 << 20) + 1);
    let (status, _) = tokio::task::spawn_blocking(post(big)).await.expect("join");
    assert_eq!(status, 413);

    // 10,000 lines, one of them bad: 9,999 stored, one rejected.
    let bob = Identity::generate().expect("key");
    let mut lines: Vec<String> = (100..10_100)
        .map(|n| bob.seal(&measurement(n)).expect("seal").1)
        .collect();
    lines[5000] = lines[5000].replacen("page/5100", "page/5101", 1);
    let (status, reply) = tokio::task::spawn_blocking(post(lines.join("\n")))
        .await
        .expect("join");
    assert_eq!(status, 200);
    let o = outcomes(&reply);
    assert_eq!(o.len(), 10_000);
    assert_eq!(
        o.iter().filter(|x| x["status"] == "accepted").count(),
        9_999
    );
    assert_eq!(o[5000]["status"], "rejected");
    assert_eq!(o[5000]["line"], 5001);

    // Nothing partial: exactly the accepted ones are stored, and the server still serves.
    assert_eq!(query(&db, &[]).len(), 1 + 9_999);
    let (status, health) = http(&base, "GET", "/api/v1/health", &[], b"");
    assert_eq!(status, 200, "{health}");
    let (status, _) = http(
        &base,
        "GET",
        &format!("/api/v1/measurements/{}", "0".repeat(64)),
        &[],
        b"",
    );
    assert_eq!(status, 404);
    let (status, _) = http(&base, "GET", "/api/v1/measurements/nothex", &[], b"");
    assert_eq!(status, 400);
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_bodies_are_accepted_and_bombs_refused() {
    use flate2::{Compression, write::GzEncoder};
    let (server, _, db) = fresh_aggregator("ingest-gzip").await;
    let gzip = |data: &[u8]| {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).expect("gzip");
        enc.finish().expect("gzip")
    };
    let id = Identity::generate().expect("key");
    let lines: Vec<String> = (0..3)
        .map(|n| id.seal(&measurement(n)).expect("seal").1)
        .collect();
    let body = gzip(lines.join("\n").as_bytes());
    let headers = [
        ("Content-Encoding", "gzip"),
        ("Content-Type", "application/x-ndjson"),
    ];
    let (status, reply) = http(
        &server.base,
        "POST",
        "/api/v1/measurements",
        &headers,
        &body,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply.matches("\"accepted\"").count(), 3, "{reply}");

    // A body of two gzip members (RFC 1952 section 2.2, what `cat a.gz b.gz` or a compressor
    // flushing per batch gives): the lines of the second member are read, not dropped silently.
    let more: Vec<String> = (3..5)
        .map(|n| id.seal(&measurement(n)).expect("seal").1)
        .collect();
    let mut members = gzip(format!("{}\n", more[0]).as_bytes());
    members.extend(gzip(more[1].as_bytes()));
    let (status, reply) = http(
        &server.base,
        "POST",
        "/api/v1/measurements",
        &headers,
        &members,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply.matches("\"accepted\"").count(), 2, "{reply}");

    // 200 MB of zeros compress to about 200 KB: refused once decompression passes the limit.
    let bomb = gzip(&vec![b'0'; 200 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (status, reply) = http(
        &server.base,
        "POST",
        "/api/v1/measurements",
        &headers,
        &bomb,
    );
    assert_eq!(status, 413, "{reply}");
    assert!(reply.contains("once decompressed"), "{reply}");
    assert_eq!(query(&db, &[]).len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_and_metrics() {
    let (server, dir, db) = fresh_aggregator("heartbeat").await;
    let base = server.base.clone();
    let data = dir.join("probe");
    let out = tokio::task::spawn_blocking({
        let (base, data) = (base.clone(), data.clone());
        move || {
            Command::new(vantage())
                .args([
                    "heartbeat",
                    "--probe-cc",
                    "IT",
                    "--aggregator",
                    &base,
                    "--data-dir",
                ])
                .arg(&data)
                .output()
                .expect("heartbeat")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "heartbeat delivered"
    );

    // The heartbeat shows in the country's signals for the last day (the default range).
    let (status, signals) = http(&base, "GET", "/api/v1/signals?cc=it", &[], b"");
    assert_eq!(status, 200, "{signals}");
    let signals: Value = serde_json::from_str(&signals).expect("json");
    assert_eq!(signals["bin_seconds"], 300);
    let bins = signals["bins"].as_array().expect("bins");
    assert_eq!(bins.len(), 1, "{signals}");
    assert_eq!(
        (bins[0]["probes"].as_i64(), bins[0]["heartbeats"].as_i64()),
        (Some(1), Some(1))
    );
    let (status, body) = http(
        &base,
        "GET",
        "/api/v1/signals?cc=IT&since=2026-01-01&until=2026-03-01",
        &[],
        b"",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 31 days per request"), "{body}");

    // The same from the command line, as a table and as JSON.
    let signals = |extra: &[&str]| {
        Command::new(AGGREGATOR)
            .args(["signals", "--cc", "IT", "--db"])
            .arg(&db)
            .args(extra)
            .output()
            .expect("signals")
    };
    let out = signals(&[]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("bin (UTC)") && lines[0].ends_with("http"),
        "{table}"
    );
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[2..],
        ["1", "1", "1", "-", "0", "-", "-", "-", "-"],
        "{table}"
    );
    let out = signals(&["--json"]);
    let bin: Value = serde_json::from_slice(&out.stdout).expect("one JSON bin");
    assert_eq!(bin["heartbeats"], 1);
    let out = signals(&["--since", "2026-01-01", "--until", "2026-03-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: at most 31 days per request"
    );

    // A forged heartbeat and a measurement posing as one are refused.
    let alice = Identity::generate().expect("key");
    let mallory = Identity::generate().expect("key");
    let (_, line) = alice.seal(&measurement(1)).expect("seal");
    let (status, body) = http(&base, "POST", "/api/v1/heartbeat", JSON, line.as_bytes());
    assert_eq!(status, 400);
    assert!(body.contains("not heartbeat"), "{body}");
    let forged = line.replace(&alice.public_key(), &mallory.public_key());
    let (status, body) = http(&base, "POST", "/api/v1/heartbeat", JSON, forged.as_bytes());
    assert_eq!(
        (status, body.contains("bad signature")),
        (400, true),
        "{body}"
    );

    // /metrics counts it all.
    let (_, reply) = http(
        &base,
        "POST",
        "/api/v1/measurements",
        NDJSON,
        format!("{line}\n{forged}\n{line}\n").as_bytes(),
    );
    assert!(reply.contains("accepted"));
    let (status, metrics) = http(&base, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    for want in [
        "vantage_heartbeats_total 1",
        "vantage_ingest_lines_total{outcome=\"accepted\"} 1",
        "vantage_ingest_lines_total{outcome=\"duplicate\"} 1",
        "vantage_ingest_rejected_total{reason=\"bad signature\"} 1",
        "vantage_ingest_seconds_count 1",
    ] {
        assert!(metrics.contains(want), "{want} missing from:\n{metrics}");
    }
    let size: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vantage_store_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("store size");
    assert!(size > 0);
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_matches_the_routes() {
    let (server, _, _) = fresh_aggregator("openapi").await;
    let base = server.base.clone();
    let (status, doc) = http(&base, "GET", "/api/v1/openapi.json", &[], b"");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).expect("OpenAPI is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Vantage aggregator");
    // Generated from the handlers and their types: the document says what each route takes
    // and answers, not only that it exists.
    let search = &doc["paths"]["/api/v1/measurements"]["get"];
    let names: BTreeSet<&str> = search["parameters"]
        .as_array()
        .expect("search parameters")
        .iter()
        .map(|p| {
            assert_eq!(p["in"], "query", "{p}");
            p["name"].as_str().expect("name")
        })
        .collect();
    for want in [
        "cc", "asn", "domain", "blocking", "since", "until", "cursor", "limit",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    let page = &search["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(page, "#/components/schemas/SearchAnswer");
    let schemas = &doc["components"]["schemas"];
    let found = &schemas["Found"]["properties"];
    for field in [
        "id",
        "probe_cc",
        "probe_asn",
        "measured_at",
        "blocking",
        "confirmed",
    ] {
        assert!(found.get(field).is_some(), "Found.{field} missing: {found}");
    }
    assert!(found.get("cursor").is_none(), "cursor is not sent: {found}");
    assert_eq!(
        schemas["Status"]["enum"],
        serde_json::json!(["accepted", "duplicate", "rejected", "unknown"]),
        "a line's status as the wire writes it"
    );
    let signals = &doc["paths"]["/api/v1/signals"]["get"]["parameters"];
    let cc = signals
        .as_array()
        .expect("signals parameters")
        .iter()
        .find(|p| p["name"] == "cc")
        .expect("cc");
    assert_eq!(cc["required"], true, "{cc}");
    let upload = &doc["paths"]["/api/v1/measurements"]["post"];
    assert!(
        upload["requestBody"]["content"]["application/x-ndjson"].is_object(),
        "{upload}"
    );
    for status in ["200", "400", "408", "413", "415", "503"] {
        assert!(
            upload["responses"][status].is_object(),
            "{status}: {upload}"
        );
    }
    let id = &doc["paths"]["/api/v1/measurements/{id}"]["get"]["parameters"][0];
    assert_eq!(
        (&id["name"], &id["in"]),
        (&"id".into(), &"path".into()),
        "{id}"
    );
    // Every schema a route names is in the document.
    let text = doc.to_string();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("#/components/schemas/") {
        rest = &rest[i + "#/components/schemas/".len()..];
        let name = &rest[..rest.find('"').expect("end of $ref")];
        assert!(
            schemas.get(name).is_some(),
            "{name} is named but not defined"
        );
    }
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, methods) in paths {
        for method in methods.as_object().expect("methods").keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
            // Served: any answer but "no such route" (an empty 404) or "wrong method" (405).
            let concrete = path.replace("{id}", &"0".repeat(64)).replace("{cc}", "ir");
            let body: &[u8] = if method == "post" { b"{}" } else { b"" };
            let (status, reply) = tokio::task::spawn_blocking({
                let (base, m, c) = (base.clone(), method.to_uppercase(), concrete.clone());
                move || http(&base, &m, &c, &[("Content-Type", "application/json")], body)
            })
            .await
            .expect("join");
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                status != 404 || reply.contains("error"),
                "{method} {path} is not served"
            );
        }
    }
    // And nothing served is undocumented: these are all the routes the server has.
    let served: BTreeSet<String> = [
        "GET /api/v1/health",
        "GET /api/v1/whoami",
        "GET /api/v1/throughput",
        "POST /api/v1/th",
        "POST /api/v1/measurements",
        "GET /api/v1/measurements",
        "GET /api/v1/measurements/{id}",
        "POST /api/v1/heartbeat",
        "POST /api/v1/enrol",
        "GET /api/v1/signals",
        "GET /api/v1/timeline",
        "GET /api/v1/countries",
        "GET /",
        "GET /metrics",
        "GET /api/v1/openapi.json",
        "GET /api/v1/test-lists/{cc}",
        "GET /api/v1/export",
        "GET /log/checkpoint",
        "GET /log/tile/{path}",
        "GET /api/v1/log/proof/{id}",
        "GET /api/v1/log/entry/{id}",
        "POST /log/cosignature",
        "GET /api/v1/timeline/{id}/evidence.zip",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, served);
    let (status, _) = http(&base, "GET", "/api/v1/nope", &[], b"");
    assert_eq!(status, 404, "an unknown route is a 404");
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_use_test_lists_only_when_the_aggregator_signed_them() {
    let dir = tempdir("lists");
    let ca_path = dir.join("ca.pem");
    TestCa::new("CA").write_pem(&ca_path);
    let db = dir.join("agg.db");
    let operator = dir.join("operator-lists");
    std::fs::create_dir_all(&operator).expect("dir");
    let ir = "url,category_code,category_description,date_added,source,notes\nhttps://operator.example/,NEWS,News,2026-11-23,op,\n";
    std::fs::write(operator.join("ir.csv"), ir).expect("write");
    let server = serve(
        &ca_path,
        &db,
        &["--lists", operator.to_str().expect("utf-8")],
    )
    .await;
    let base = server.base.clone();
    let key = Identity::load_or_create(&dir.join("agg.db.key"))
        .expect("aggregator key")
        .0
        .public_key();
    let fetch = |data: std::path::PathBuf, aggregator: String, extra: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(vantage())
                .args([
                    "lists",
                    "fetch",
                    "--cc",
                    "IR",
                    "--aggregator",
                    &aggregator,
                    "--data-dir",
                ])
                .arg(&data)
                .args(&extra)
                .output()
                .expect("fetch")
        })
    };

    // First use over plain HTTP, with no key given: anyone on the way could have signed the
    // lists, so nothing is trusted or written.
    let data = dir.join("probe");
    let out = fetch(data.clone(), base.clone(), vec![])
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--aggregator-key KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.join("lists").exists());

    // With the key the operator publishes: it is pinned, the operator's list and the built-in
    // global one are kept.
    let out = fetch(
        data.clone(),
        base.clone(),
        vec!["--aggregator-key".into(), key.clone()],
    )
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(data.join("lists/ir.csv")).expect("ir"),
        ir
    );
    assert!(
        std::fs::read_to_string(data.join("lists/global.csv"))
            .expect("global")
            .contains("wikipedia")
    );
    assert_eq!(
        std::fs::read_to_string(data.join("aggregator.key"))
            .expect("pin")
            .trim(),
        key
    );

    // A key other than the one given is refused, and nothing is written.
    let other = Identity::generate().expect("key").public_key();
    let fresh = dir.join("probe2");
    let out = fetch(
        fresh.clone(),
        base.clone(),
        vec!["--aggregator-key".into(), other.clone()],
    )
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("but the aggregator's key is {other}"))
    );
    assert!(!fresh.join("lists").exists());

    // An impostor serving a tampered copy is refused by a probe that pinned the real key.
    let (_, genuine) = http(&base, "GET", "/api/v1/test-lists/ir", &[], b"");
    let tampered = genuine.replacen("operator.example", "attacker.example", 1);
    assert_ne!(tampered, genuine);
    let impostor = HttpFixture::fixed(Response {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: tampered.into_bytes(),
    })
    .await;
    let out = fetch(data.clone(), format!("http://{}/", impostor.addr), vec![])
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("test lists refused: bad signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(data.join("lists/ir.csv")).expect("ir"),
        ir,
        "the good list is kept"
    );
    drop(server);
}

/// `vantage` with a data directory, run off the async runtime.
async fn probe_says(data: &Path, args: &[&str]) -> (bool, String, String) {
    let (data, args) = (
        data.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(vantage())
            .args(&args)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .expect("vantage")
    })
    .await
    .expect("join");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn with_required_enrolment_a_one_time_token_admits_exactly_one_probe() {
    let dir = tempdir("enrol");
    let ca = dir.join("ca.pem");
    TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let server = serve(&ca, &db, &["--require-enrolment"]).await;
    let base = server.base.clone();
    let (alice, bob) = (dir.join("alice"), dir.join("bob"));

    // Before enrolment the aggregator refuses the probe.
    let (ok, _, err) = probe_says(&alice, &["heartbeat", "--aggregator", &base]).await;
    assert!(!ok && err.contains("unknown key"), "{err}");

    let out = Command::new(AGGREGATOR)
        .args(["keys", "token", "--count", "2", "--db"])
        .arg(&db)
        .output()
        .expect("keys token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1]);
    // Only hashes are stored: the database file does not contain the tokens.
    let file = std::fs::read(&db).expect("db");
    let wal = std::fs::read(db.with_extension("db-wal")).unwrap_or_default();
    for t in &tokens {
        for bytes in [&file, &wal] {
            assert!(
                !bytes.windows(t.len()).any(|w| w == t.as_bytes()),
                "token stored in clear"
            );
        }
    }

    let (ok, out, err) = probe_says(&alice, &["enrol", "--aggregator", &base, &tokens[0]]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("enrolled "), "{out}");
    let (ok, out, err) = probe_says(&alice, &["heartbeat", "--aggregator", &base]).await;
    assert!(ok && out == "heartbeat delivered", "{out} {err}");

    // The same token does not admit a second probe; a made-up one admits nobody.
    let (ok, _, err) = probe_says(&bob, &["enrol", "--aggregator", &base, &tokens[0]]).await;
    assert!(
        !ok && err.contains("HTTP 403") && err.contains("token already used"),
        "{err}"
    );
    let (ok, _, err) = probe_says(&bob, &["enrol", "--aggregator", &base, "vt-00000000"]).await;
    assert!(!ok && err.contains("unknown token"), "{err}");
    let (ok, _, err) = probe_says(&bob, &["heartbeat", "--aggregator", &base]).await;
    assert!(!ok && err.contains("unknown key"), "{err}");
    let (ok, _, _) = probe_says(&bob, &["enrol", "--aggregator", &base, &tokens[1]]).await;
    assert!(ok, "the second token admits bob");

    let out = Command::new(AGGREGATOR)
        .args(["keys", "list", "--db"])
        .arg(&db)
        .output()
        .expect("keys list");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listed.lines().filter(|l| l.ends_with(" trusted")).count(),
        2,
        "{listed}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_https_with_the_operators_certificate() {
    let dir = tempdir("tls-serve");
    let ca = TestCa::new("Aggregator CA");
    let ca_pem = dir.join("ca.pem");
    ca.write_pem(&ca_pem);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    ca.leaf(&["127.0.0.1"]).write_pem(&cert, &key);
    let db = dir.join("agg.db");

    // A missing key file is refused before the server listens, naming the file.
    let out = Command::new(AGGREGATOR)
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(dir.join("missing.pem"))
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read a private key from") && err.contains("missing.pem"),
        "{err}"
    );
    // --tls-cert alone is a usage error.
    let out = Command::new(AGGREGATOR)
        .args(["serve", "--db", "x.db", "--tls-cert", "c.pem"])
        .output()
        .expect("serve");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));

    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = serve(&ca_pem, &db, &["--tls-cert", &cert, "--tls-key", &key]).await;
    let base = server.base.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let data = dir.join("probe");
    let ca_arg = ca_pem.display().to_string();

    // Without the operator's CA the probe refuses the certificate; with it, it delivers.
    let (ok, _, err) = probe_says(&data, &["heartbeat", "--aggregator", &base]).await;
    assert!(!ok && err.contains("ssl_unknown_authority"), "{err}");
    let (ok, out, err) = probe_says(
        &data,
        &["heartbeat", "--aggregator", &base, "--ca-file", &ca_arg],
    )
    .await;
    assert!(ok && out == "heartbeat delivered", "{out} {err}");

    // Plain HTTP to the HTTPS port gets no HTTP answer, and the server keeps serving.
    let plain = base.replace("https://", "http://");
    let (status, _) =
        tokio::task::spawn_blocking(move || http(&plain, "GET", "/api/v1/health", &[], b""))
            .await
            .expect("join");
    assert_eq!(status, 0);
    let (ok, _, err) = probe_says(
        &data,
        &["heartbeat", "--aggregator", &base, "--ca-file", &ca_arg],
    )
    .await;
    assert!(
        ok,
        "the server still serves after a plain-HTTP client: {err}"
    );
    drop(server);
}
