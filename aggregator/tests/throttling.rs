//! The throttling test end to end: the real aggregator's throughput server, a relay in front of
//! it that throttles one SNI (as a TSPU box did to Twitter in 2021), and the real `vantage run
//! --test throttling`. Loopback only.

mod common;

use std::process::Command;

use common::{fresh_aggregator, http, vantage};
use serde_json::Value;
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::throttle::ThrottleRelay;

/// The relay's rate for the throttled name, in bit/s.
const RATE_BPS: u64 = 400_000;

async fn throughput_info(base: &str) -> Value {
    let base = base.to_string();
    let (status, body) =
        tokio::task::spawn_blocking(move || http(&base, "GET", "/api/v1/throughput", &[], b""))
            .await
            .expect("join");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Runs the probe's throttling test through `relay` and returns its JSON lines.
async fn run_probe(
    data: &std::path::Path,
    base: &str,
    relay: std::net::SocketAddr,
    pin: &str,
) -> Vec<Value> {
    let mut cmd = Command::new(vantage());
    cmd.args(["run", "--test", "throttling", "--yes", "--json"])
        .args(["--target", "twitter.com", "--control-sni", "example.org"])
        .args(["--probe-cc", "RU", "--probe-asn", "AS64500"])
        .args(["--aggregator", base])
        .arg("--throughput")
        .arg(relay.to_string())
        .args(["--throughput-pin", pin])
        .arg("--data-dir")
        .arg(data);
    json_lines(cmd).await.1
}

/// Runs `cmd`, which must succeed, and returns its output and the JSON lines in it.
async fn json_lines(mut cmd: Command) -> (String, Vec<Value>) {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run vantage");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    (stdout, lines)
}

/// Polls the timeline until Russia's one throttling event has `status`.
async fn wait_for_event(base: &str, status: &str) -> Value {
    wait_for_event_of(base, "ru", status).await
}

/// Polls the timeline until `cc`'s one throttling event has `status`.
async fn wait_for_event_of(base: &str, cc: &str, status: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let b = base.to_string();
        let path = format!("/api/v1/timeline?cc={cc}&kind=throttling");
        let (code, body) = tokio::task::spawn_blocking(move || http(&b, "GET", &path, &[], b""))
            .await
            .expect("join");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let events = v["events"].as_array().cloned().unwrap_or_default();
        assert!(events.len() <= 1, "{events:#?}");
        if let Some(e) = events.first().filter(|e| e["status"] == status) {
            return e.clone();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no {status} throttling event: {events:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_throttling_one_sni_gives_a_verdict_with_its_rate_and_no_limit_gives_none() {
    let (server, dir, _db) = fresh_aggregator("throttling").await;
    // The aggregator was started without a throughput server: the probe is told so.
    let base = server.base.clone();
    let (status, body) =
        tokio::task::spawn_blocking(move || http(&base, "GET", "/api/v1/throughput", &[], b""))
            .await
            .expect("join");
    assert_eq!(status, 404);
    assert!(body.contains("--throughput-listen"), "{body}");
    drop(server);

    let ca = dir.join("ca.pem");
    let db = dir.join("agg2.db");
    let server = common::serve(
        &ca,
        &db,
        &["--throughput-listen", "127.0.0.1:0", "--detect-every", "1"],
    )
    .await;
    let info = throughput_info(&server.base).await;
    let port = u16::try_from(info["port"].as_u64().expect("port")).expect("port");
    let pin = info["cert_sha256"].as_str().expect("pin").to_string();
    assert_eq!(pin.len(), 64);
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // Throttled: the relay paces connections whose ClientHello names twitter.com.
    let relay = ThrottleRelay::start(upstream, "twitter.com", RATE_BPS).await;
    let lines = run_probe(&dir.join("probe-a"), &server.base, relay.addr, &pin).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let v = &lines[0];
    assert_eq!(v["input"], "twitter.com");
    assert_eq!(v["verdict"], "throttled", "{v:#}");
    let ceiling = v["ceiling_kbps"].as_f64().expect("ceiling") * 1000.0;
    let rate = RATE_BPS as f64;
    assert!(
        (ceiling - rate).abs() <= 0.25 * rate,
        "ceiling {ceiling} bit/s for a {rate} bit/s limit: {v:#}"
    );
    assert_eq!(v["pairs"].as_array().map(Vec::len), Some(3), "{v:#}");

    // The signed measurement reached the aggregator, with every download's progress.
    let id = v["id"].as_str().expect("id").to_string();
    let (status, body) = common::get_measurement(&server.base, &id).await;
    assert_eq!(status, 200, "{body}");
    let stored: Value = serde_json::from_str(&body).expect("json");
    let m = &stored["measurement"];
    assert_eq!(m["test_name"], "throttling");
    let downloads = m["test_keys"]["downloads"].as_array().expect("downloads");
    assert_eq!(downloads.len(), 6);
    for d in downloads {
        assert!(d["samples"].as_array().is_some_and(|s| s.len() >= 2), "{d}");
        assert!(d["ttfb_ms"].is_u64() && d["ttlb_ms"].is_u64(), "{d}");
    }

    // A second throttled measurement from the network opens a throttling event on the
    // timeline, with the estimated rate.
    let lines = run_probe(&dir.join("probe-a2"), &server.base, relay.addr, &pin).await;
    assert_eq!(lines[0]["verdict"], "throttled", "{:#}", lines[0]);
    let event = wait_for_event(&server.base, "ongoing").await;
    assert_eq!(
        event["targets"],
        serde_json::json!(["twitter.com"]),
        "{event:#}"
    );
    assert_eq!(event["entity"]["asn"], "AS64500");
    assert_eq!(event["scope"], "service");
    let rate_kbps = event["rate_kbps"].as_f64().expect("rate") * 1000.0;
    assert!(
        (rate_kbps - rate).abs() <= 0.25 * rate,
        "event rate {rate_kbps} for {rate}: {event:#}"
    );
    assert_eq!(event["evidence"].as_array().map(Vec::len), Some(2));

    // No limit: the relay throttles a name the probe does not send. Two clean measurements
    // in a row also end the event.
    let relay = ThrottleRelay::start(upstream, "nothing.example", RATE_BPS).await;
    for probe in ["probe-b", "probe-b2"] {
        let lines = run_probe(&dir.join(probe), &server.base, relay.addr, &pin).await;
        assert_eq!(lines[0]["verdict"], "not_throttled", "{:#}", lines[0]);
        assert!(lines[0]["ceiling_kbps"].is_null());
    }
    let event = wait_for_event(&server.base, "ended").await;
    assert_eq!(
        event["targets"],
        serde_json::json!(["twitter.com"]),
        "{event:#}"
    );

    // A wrong pin: the probe refuses the server rather than measure an impostor.
    let wrong = "00".repeat(32);
    let lines = run_probe(&dir.join("probe-c"), &server.base, upstream, &wrong).await;
    assert_eq!(lines[0]["verdict"], "undetermined", "{:#}", lines[0]);
}

#[test]
fn plans_over_budget_or_without_a_server_are_refused_before_any_traffic() {
    let dir = common::tempdir("throttling-plan");
    let run = |extra: &[&str]| {
        Command::new(vantage())
            .args(["run", "--test", "throttling", "--yes"])
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .expect("run")
    };
    let cases: [(&[&str], &str); 4] = [
        (
            &["--target", "twitter.com"],
            "needs the aggregator's throughput server",
        ),
        (
            &[
                "--target",
                "a.example",
                "--target",
                "b.example",
                "--target",
                "c.example",
                "--throughput",
                "127.0.0.1:9",
                "--throughput-pin",
                "00000000000000000000000000000000000000000000000000000000000000ff",
            ],
            "over the budget of 2000000 bytes",
        ),
        (
            &[
                "--target",
                "twitter.com",
                "--throughput",
                "127.0.0.1:9",
                "--throughput-pin",
                "abc",
            ],
            "not hex",
        ),
        (
            &[
                "--target",
                "twitter.com",
                "--ratio",
                "1.5",
                "--aggregator",
                "http://127.0.0.1:9/",
            ],
            "--ratio must be between 0 and 1",
        ),
    ];
    for (args, want) in cases {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Nothing was measured or stored.
    assert!(!dir.join("vantage.db").exists());
}

/// `vantage run` over `list` as a probe in Kazakhstan, uploading to `base`; returns the JSON
/// line of the measurement of `url`.
async fn run_list(
    data: &std::path::Path,
    base: &str,
    ca: &std::path::Path,
    list: &std::path::Path,
    url: &str,
) -> Value {
    let mut cmd = Command::new(vantage());
    cmd.args(["run", "--yes", "--json", "--timeout", "20"])
        .args(["--probe-cc", "KZ", "--probe-asn", "AS64501"])
        .args(["--aggregator", base])
        .arg("--ca-file")
        .arg(ca)
        .arg("--list")
        .arg(list)
        .arg("--data-dir")
        .arg(data);
    let (stdout, lines) = json_lines(cmd).await;
    assert_eq!(lines.len(), 2, "{stdout}");
    // Measurements are timed to the second; the next run must start in a later one, or its
    // pages could sort before the baseline they are judged against.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let line = lines.iter().find(|l| l["input"] == url);
    line.cloned()
        .unwrap_or_else(|| panic!("no {url}: {stdout}"))
}

/// The passive signal end to end: the real probe's web_connectivity over a page that a relay
/// slows down for the probe's address only (the helper connects from 127.0.0.2), after the
/// probe has measured the page at full speed a few times. The pages still load, and OONI's
/// rules call them accessible; the timeline shows throttling at the relay's rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_slowed_down_for_the_probe_alone_is_passive_throttling_on_the_timeline() {
    let (server, dir, _db) = fresh_aggregator("passive").await;
    drop(server);
    let ca = dir.join("ca.pem");
    let db = dir.join("agg2.db");
    let server = common::serve(&ca, &db, &["--detect-every", "1"]).await;
    // A 96 KiB page: 2 s at the relay's 400 kbit/s.
    let filler = "<p>news of the day</p>".repeat(96 * 1024 / 22);
    let page = HttpFixture::start(std::sync::Arc::new(move |_| {
        Response::html(&format!("<title>News</title>{filler}"))
    }))
    .await;
    let relay = ThrottleRelay::for_peer(page.addr, std::net::Ipv4Addr::LOCALHOST.into(), 0).await;
    // The list also has another page, straight from the site: a list run measures many, and
    // the aggregator reads a drop on every page at once as the probe's own link.
    let url = format!("http://127.0.0.1:{}/news", relay.addr.port());
    let list = dir.join("list.csv");
    std::fs::write(
        &list,
        format!(
            "url,category_code,category_description,date_added,source,notes\n\
             {url},NEWS,News Media,2026-11-29,test,\n\
             http://localhost:{}/other,NEWS,News Media,2026-11-29,test,\n",
            page.addr.port()
        ),
    )
    .expect("list");
    // Three probes of the network (each probe is one vote per target and hour, so one probe's
    // three slow loads within a minute would be a single vote).
    let probes: Vec<_> = (1..=3).map(|n| dir.join(format!("probe-{n}"))).collect();

    // Each probe's baseline: three loads at full speed.
    for data in &probes {
        for _ in 0..3 {
            let v = run_list(data, &server.base, &ca, &list, &url).await;
            assert_eq!(v["accessible"], true, "{v:#}");
        }
    }
    // The policer starts: one slow load by each probe, each still "accessible".
    relay.set_rate(RATE_BPS);
    for data in &probes {
        let v = run_list(data, &server.base, &ca, &list, &url).await;
        assert_eq!(v["accessible"], true, "{v:#}");
    }
    let event = wait_for_event_of(&server.base, "kz", "ongoing").await;
    assert_eq!(
        event["targets"],
        serde_json::json!(["127.0.0.1"]),
        "{event:#}"
    );
    assert_eq!(event["entity"]["asn"], "AS64501");
    assert_eq!(
        event["evidence"].as_array().map(Vec::len),
        Some(3),
        "{event:#}"
    );
    let rate = RATE_BPS as f64;
    let kbps = event["rate_kbps"].as_f64().expect("rate") * 1000.0;
    assert!(
        (kbps - rate).abs() <= 0.25 * rate,
        "event rate {kbps} bit/s for a {rate} bit/s limit: {event:#}"
    );
    // The stored verdict shows both rates: the helper's far above the probe's.
    let id = event["evidence"][0].as_str().expect("id").to_string();
    let conn = rusqlite::Connection::open(&db).expect("open aggregator db");
    let (below, control_kbps): (bool, f64) = conn
        .query_row(
            "SELECT json_extract(verdict, '$.goodput.below_control'),
                    json_extract(verdict, '$.goodput.control_kbps')
             FROM measurements WHERE id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("stored verdict");
    assert!(
        below && control_kbps > 4.0 * kbps / 1000.0,
        "{below} {control_kbps}"
    );

    // The limit lifts: two probes' loads at full speed end the event.
    relay.set_rate(0);
    for data in &probes[..2] {
        run_list(data, &server.base, &ca, &list, &url).await;
    }
    wait_for_event_of(&server.base, "kz", "ended").await;
}
