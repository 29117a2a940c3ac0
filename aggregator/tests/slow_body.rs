//! A page held to a policer's rate is throttled, not an HTTP failure; a page that stopped is
//! still a failure. On loopback, with the real binaries: a large page behind a relay that paces
//! the probe's connections (from 127.0.0.1) to 16 KiB/s while the test helper (from 127.0.0.2)
//! gets it at full speed, and a page whose server sends its head and 40 kB to the probe and then
//! nothing. `vantage run --json --timeout 5` measures both through a lab aggregator
//! (`--th-allow-private`) and uploads them; the probe's JSON lines, its stored measurements and
//! the aggregator's stored verdicts must all say the same (`docs/scoring.md`, "A page still
//! arriving at the deadline").

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use common::{AGGREGATOR, Server, spawn_server, tempdir, vantage};
use serde_json::Value;
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::throttle::ThrottleRelay;
use vantage_probe::envelope::verify;

/// The policer's rate: 128 kbit/s in KiB, 16 KiB/s.
const POLICED_BPS: u64 = 131_072;

/// A page far larger than 16 KiB/s brings in the probe's 5 s.
fn large_page() -> Response {
    let body = format!(
        "<html><title>A large page</title>{}</html>",
        "<p>news of the day</p>".repeat(20_000)
    );
    Response::html(&body)
}

/// `vantage-aggregator serve` on a fresh database whose helper may measure loopback, from
/// 127.0.0.2, so that the probe's policer does not slow it down.
fn serve(db: &Path) -> Server {
    let mut serve = Command::new(AGGREGATOR);
    serve
        .args(["serve", "--listen", "127.0.0.1:0", "--th-allow-private"])
        .args(["--th-local-addr", "127.0.0.2", "--th-timeout", "5", "--db"])
        .arg(db);
    spawn_server(serve)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policed_page_is_throttled_with_its_rate_and_a_stalled_one_is_a_failure() {
    let dir = tempdir("slow-body");
    let probe: IpAddr = [127, 0, 0, 1].into();
    let site = HttpFixture::fixed(large_page()).await;
    let policed = ThrottleRelay::for_peer(site.addr, probe, POLICED_BPS).await;
    let stalled = HttpFixture::stalling(probe, large_page(), 40_000).await;
    let slow_url = format!("http://127.0.0.1:{}/", policed.addr.port());
    let stopped_url = format!("http://127.0.0.1:{}/", stalled.addr.port());
    let list = dir.join("list.csv");
    let mut text = String::from("url,category_code,category_description,date_added,source,notes\n");
    for u in [&slow_url, &stopped_url] {
        text.push_str(&format!("{u},NEWS,News Media,2026-12-01,test,\n"));
    }
    std::fs::write(&list, text).expect("write list");
    let db = dir.join("agg.db");
    let server = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || serve(&db))
            .await
            .expect("join")
    };

    let data = dir.join("probe");
    let out = {
        let (data, list, base) = (data.clone(), list.clone(), server.base.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(vantage())
                .env("VANTAGE_DATA_DIR", &data)
                .env_remove("VANTAGE_AGGREGATOR")
                .args(["run", "--yes", "--json", "--timeout", "5", "--list"])
                .arg(&list)
                .args(["--aggregator", &base])
                .output()
                .expect("run vantage")
        })
        .await
        .expect("join")
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let line = |url: &str| -> Value {
        lines
            .iter()
            .find(|l| l["input"] == url)
            .cloned()
            .unwrap_or_else(|| panic!("no line for {url}: {stdout}"))
    };
    let expected_kbps = POLICED_BPS as f64 / 1000.0;

    // The probe's line: throttled, with the rate of the cut body, within 30% of the policer's.
    let slow = line(&slow_url);
    println!("{slow}");
    assert_eq!(slow["blocking"], "throttling", "{slow:#}");
    assert_eq!(slow["accessible"], true, "{slow:#}");
    assert_eq!(slow["rule"], "http-body-throttled", "{slow:#}");
    assert_eq!(slow["rule_set"], "vantage-3", "{slow:#}");
    assert_eq!(
        slow["failures"]["http"], "generic_timeout_error",
        "{slow:#}"
    );
    assert_eq!(slow["goodput"]["cut_at_deadline"], true, "{slow:#}");
    let kbps = slow["goodput"]["probe_kbps"].as_f64().expect("rate");
    assert!(
        (kbps - expected_kbps).abs() <= 0.3 * expected_kbps,
        "{kbps} kbit/s behind a {expected_kbps} kbit/s policer: {slow:#}"
    );
    assert_eq!(slow["goodput"]["below_control"], true, "{slow:#}");

    // The stalled page: a failure, as before, and no rate.
    let stopped = line(&stopped_url);
    println!("{stopped}");
    assert_eq!(stopped["blocking"], "http-failure", "{stopped:#}");
    assert_eq!(stopped["rule"], "http-failure", "{stopped:#}");
    assert_eq!(stopped["failures"]["http"], "generic_timeout_error");
    assert!(stopped.get("goodput").is_none(), "{stopped:#}");

    // The aggregator scored the uploads the same and stored the rate where its throttling
    // detector reads it; the measurements carry the cut.
    let conn = rusqlite::Connection::open(&db).expect("open aggregator db");
    for (url, blocking, cut_rate) in [
        (&slow_url, "\"throttling\"", true),
        (&stopped_url, "\"http-failure\"", false),
    ] {
        let (id, stored_blocking, rule_set, stored_kbps): (String, String, String, Option<f64>) =
            conn.query_row(
                "SELECT id, blocking, rule_set, json_extract(verdict, '$.goodput.probe_kbps')
                 FROM measurements WHERE input = ?1",
                [url],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap_or_else(|e| panic!("stored row for {url}: {e}"));
        assert_eq!(stored_blocking, blocking, "{url}");
        assert_eq!(rule_set, "vantage-3");
        match stored_kbps {
            Some(k) => {
                assert!(cut_rate, "{url} has a rate: {k}");
                assert!((k - expected_kbps).abs() <= 0.3 * expected_kbps, "{k}");
            }
            None => assert!(!cut_rate, "{url} has no rate"),
        }
        let (status, body) = common::get_measurement(&server.base, &id).await;
        assert_eq!(status, 200, "{body}");
        let verified = verify(body.trim()).expect("stored envelope verifies");
        let m: Value = serde_json::from_str(verified.measurement).expect("measurement");
        let request = &m["test_keys"]["requests"][0];
        assert_eq!(request["failure"], "generic_timeout_error", "{url}");
        let response = &request["response"];
        assert_eq!(response["body_is_truncated"], false, "{url}");
        let transfer = &response["x_transfer"];
        assert_eq!(transfer["cut_at_deadline"], true, "{url}: {transfer}");
        let cut = transfer["cut_ms"].as_u64().expect("cut time");
        assert!((4_000..6_000).contains(&cut), "{url}: cut at {cut} ms");
        let last = transfer["samples"]
            .as_array()
            .and_then(|s| s.last())
            .cloned()
            .expect("samples");
        // The stalled page's last byte came seconds before the cut; the policed one's did not.
        let silence = cut - last[0].as_u64().expect("ms");
        if cut_rate {
            assert!(silence < 1_000, "{url}: {transfer}");
        } else {
            assert!(silence > 3_000, "{url}: {transfer}");
            assert_eq!(last[1], 40_000, "{url}: {transfer}");
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
