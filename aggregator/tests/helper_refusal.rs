//! A control that refused to measure is no control: three pages served normally on loopback,
//! measured with `vantage run` through a real aggregator whose test helper refuses private
//! addresses (as deployed), are undetermined, with the helper's reason, on the probe and in the
//! aggregator's store; through a lab aggregator (`--th-allow-private`) they are accessible.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{AGGREGATOR, Server, http, spawn_server, tempdir, vantage};
use serde_json::Value;
use vantage_fixtures::http::{Handler, HttpFixture, Response};
use vantage_probe::envelope::{Identity, verify};

/// `vantage-aggregator serve` on a fresh database, with `extra` arguments. The helper connects
/// from 127.0.0.2 so that, when it may connect to loopback at all, it comes from another
/// address than the probe.
fn serve(db: &Path, extra: &[&str]) -> Server {
    let mut serve = Command::new(AGGREGATOR);
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--th-local-addr",
            "127.0.0.2",
        ])
        .args(["--th-timeout", "3", "--db"])
        .arg(db)
        .args(extra);
    spawn_server(serve)
}

/// `vantage run` over `list` through the aggregator at `base`, uploading there: (exit
/// success, stdout, stderr).
fn run(data: &Path, list: &Path, base: &str) -> (bool, String, String) {
    let out = Command::new(vantage())
        .env("VANTAGE_DATA_DIR", data)
        .env_remove("VANTAGE_AGGREGATOR")
        .args(["run", "--yes", "--timeout", "3", "--list"])
        .arg(list)
        .args(["--aggregator", base])
        .output()
        .expect("run vantage");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The aggregator's stored rows for `urls`, from its search API: input -> row.
fn stored_rows(base: &str, urls: &[String]) -> Vec<Value> {
    let (status, body) = http(base, "GET", "/api/v1/measurements?limit=100", &[], b"");
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).expect("json");
    let rows: Vec<Value> = page["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| urls.iter().any(|u| r["input"] == u.as_str()))
        .cloned()
        .collect();
    assert_eq!(rows.len(), urls.len(), "one stored row per page: {body}");
    rows
}

/// The measurement the aggregator stored under `id`, verified.
fn stored_measurement(base: &str, id: &str) -> Value {
    let (status, body) = http(base, "GET", &format!("/api/v1/measurements/{id}"), &[], b"");
    assert_eq!(status, 200, "{body}");
    let verified = verify(body.trim()).expect("stored envelope verifies");
    serde_json::from_str(verified.measurement).expect("measurement")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_helper_that_refuses_private_addresses_leaves_loopback_pages_undetermined() {
    let dir = tempdir("helper-refusal");
    let page: Handler =
        Arc::new(|req| Response::html(&format!("<title>Page {}</title><p>news</p>", req.path)));
    let site = HttpFixture::start(page).await;
    let urls: Vec<String> = (1..=3)
        .map(|i| format!("http://127.0.0.1:{}/page/{i}", site.addr.port()))
        .collect();
    let list = dir.join("list.csv");
    let mut text = String::from("url,category_code,category_description,date_added,source,notes\n");
    for u in &urls {
        text.push_str(&format!("{u},NEWS,News Media,2026-11-23,test,\n"));
    }
    std::fs::write(&list, text).expect("write list");

    // As deployed: the helper refuses private addresses.
    let public = {
        let db = dir.join("public.db");
        tokio::task::spawn_blocking(move || serve(&db, &[]))
            .await
            .expect("join")
    };
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let (data, list, base) = (dir.join("probe-a"), list.clone(), public.base.clone());
        move || run(&data, &list, &base)
    })
    .await
    .expect("join");
    println!(
        "--- vantage run through an aggregator without --th-allow-private ---\n{stdout}{stderr}"
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Measured 3 URLs") && stdout.contains(": 0 blocked, 0 accessible"),
        "{stdout}"
    );
    assert!(stdout.contains("3 undetermined"), "{stdout}");
    assert!(!stdout.contains("Blocked:"), "{stdout}");
    // The reason: the helper's own words, as it refused.
    assert!(
        stdout.contains("does not connect to private or other non-public addresses"),
        "{stdout}"
    );

    let rows = tokio::task::spawn_blocking({
        let (base, urls) = (public.base.clone(), urls.clone());
        move || stored_rows(&base, &urls)
    })
    .await
    .expect("join");
    for row in &rows {
        assert_eq!(row["blocking"], Value::Null, "stored verdict: {row}");
        assert_eq!(row["accessible"], Value::Null, "stored verdict: {row}");
        let id = row["id"].as_str().expect("id").to_string();
        let base = public.base.clone();
        let m = tokio::task::spawn_blocking(move || stored_measurement(&base, &id))
            .await
            .expect("join");
        let failure = m["test_keys"]["control_failure"]
            .as_str()
            .unwrap_or_default();
        assert!(
            failure.starts_with("unknown_failure: test helper refused (HTTP 403): ")
                && failure.contains("127.0.0.1"),
            "{failure}"
        );
        assert_eq!(m["test_keys"]["requests"][0]["response"]["code"], 200);
    }
    // A probe from before this check uploads what that helper used to answer: its refusal as
    // the site's HTTP failure, no control_failure. Ingest scores it undetermined all the same.
    let id = rows[0]["id"].as_str().expect("id").to_string();
    let mut old = tokio::task::spawn_blocking({
        let base = public.base.clone();
        move || stored_measurement(&base, &id)
    })
    .await
    .expect("join");
    let old_url = format!("http://127.0.0.1:{}/page/old", site.addr.port());
    old["input"] = Value::String(old_url.clone());
    old["test_keys"]["control_failure"] = Value::Null;
    old["test_keys"]["control"] = serde_json::json!({
        "tcp_connect": {},
        "tls_handshake": {},
        "http_request": {"body_length": -1, "failure": "dns_lookup_error", "title": "",
                         "headers": {}, "status_code": -1},
        "dns": {"failure": null, "addrs": ["127.0.0.1"]},
        "ip_info": {"127.0.0.1": {"asn": 0, "flags": 7}}
    });
    let (_, line) = Identity::generate()
        .expect("key")
        .seal(&old.to_string())
        .expect("seal");
    let (status, reply) = tokio::task::spawn_blocking({
        let base = public.base.clone();
        move || {
            http(
                &base,
                "POST",
                "/api/v1/measurements",
                &[("Content-Type", "application/x-ndjson")],
                line.as_bytes(),
            )
        }
    })
    .await
    .expect("join");
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"accepted\""), "{reply}");
    let row = tokio::task::spawn_blocking({
        let base = public.base.clone();
        move || stored_rows(&base, &[old_url])
    })
    .await
    .expect("join");
    assert_eq!(row[0]["blocking"], Value::Null, "{}", row[0]);
    assert_eq!(row[0]["accessible"], Value::Null, "{}", row[0]);
    drop(public);

    // A lab's aggregator lets its helper measure loopback: the same pages are accessible.
    let lab = {
        let db = dir.join("lab.db");
        tokio::task::spawn_blocking(move || serve(&db, &["--th-allow-private"]))
            .await
            .expect("join")
    };
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let (data, list, base) = (dir.join("probe-b"), list.clone(), lab.base.clone());
        move || run(&data, &list, &base)
    })
    .await
    .expect("join");
    println!("--- vantage run through an aggregator with --th-allow-private ---\n{stdout}{stderr}");
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(": 0 blocked, 3 accessible"), "{stdout}");
    assert!(stdout.contains("0 undetermined"), "{stdout}");
    let rows = tokio::task::spawn_blocking({
        let (base, urls) = (lab.base.clone(), urls.clone());
        move || stored_rows(&base, &urls)
    })
    .await
    .expect("join");
    for row in &rows {
        assert_eq!(row["blocking"], false, "stored verdict: {row}");
        assert_eq!(row["accessible"], true, "stored verdict: {row}");
    }
    drop(lab);
}
