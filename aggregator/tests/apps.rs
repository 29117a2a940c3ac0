//! The app tests end to end: the real `vantage run --test whatsapp|telegram|signal` against
//! loopback hosts named in an apps file (a UDP DNS fixture answers their names, certificates are
//! made here), uploading to the real `serve`, whose own rules score each result on arrival; the
//! stored verdicts are read back through the measurements API by test and layer.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fresh_aggregator, http, vantage};
use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tcp::closed_port;
use vantage_fixtures::tls::{TestCa, TlsFixture};

/// The stored results of a search, as (test_name, blocking, accessible).
fn search(base: &str, filters: &str) -> Vec<(String, Value, Value)> {
    let (status, body) = http(
        base,
        "GET",
        &format!("/api/v1/measurements?{filters}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{filters}: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["test_name"].as_str().unwrap_or_default().to_string(),
                r["blocking"].clone(),
                r["accessible"].clone(),
            )
        })
        .collect()
}

/// Runs `vantage run --test TEST` with `apps` and uploads to `base`; returns its JSON line.
async fn run(
    test: &str,
    apps: &Path,
    dns: &DnsFixture,
    ca: &Path,
    data: &Path,
    base: &str,
) -> Value {
    let mut cmd = Command::new(vantage());
    cmd.args(["run", "--test", test, "--yes", "--json"])
        .arg("--apps-file")
        .arg(apps)
        .args(["--resolver", &dns.addr.to_string()])
        .arg("--ca-file")
        .arg(ca)
        .args(["--timeout", "3", "--dns-timeout", "2"])
        .args(["--probe-cc", "UG", "--probe-asn", "AS64500"])
        .args(["--aggregator", base])
        .arg("--data-dir")
        .arg(data);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run vantage");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line: {stdout}\n{stderr}"));
    serde_json::from_str(line).expect("json line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn app_results_are_uploaded_and_scored_by_the_aggregator() {
    let (server, dir, _db) = fresh_aggregator("apps").await;
    let ca = TestCa::new("apps CA");
    let ca_path = dir.join("apps-ca.pem");
    ca.write_pem(&ca_path);
    let signal_ca = TestCa::new("Signal CA");
    let leaf = ca.leaf(&["web.wa.test", "v.wa.test", "web.telegram.org", "127.0.0.1"]);
    let https = TlsFixture::fixed(&leaf, Response::html("<title>ok</title>")).await;
    // Telegram's data centre on another loopback address than its web client.
    let dc = HttpFixture::start_on(
        ([127, 0, 0, 2], 0).into(),
        std::sync::Arc::new(|_| Response::html("")),
    )
    .await;
    let closed = closed_port().port();
    let dns = DnsFixture::start(vec![
        ("e1.wa.test", Behaviour::Answer(vec![[127, 0, 0, 1].into()])),
        ("e2.wa.test", Behaviour::Answer(vec![[127, 0, 0, 1].into()])),
        ("v.wa.test", Behaviour::Answer(vec![[127, 0, 0, 1].into()])),
        (
            "web.wa.test",
            Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
        ),
        (
            "web.telegram.org",
            Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
        ),
        ("uptime.signal.org", Behaviour::NxDomain),
    ])
    .await;
    let port = https.addr.port();
    // WhatsApp's endpoints all refuse; Telegram works; Signal's backend shows a certificate
    // of another CA than Signal's.
    let apps = dir.join("apps.toml");
    std::fs::write(
        &apps,
        format!(
            "[whatsapp]\nendpoints = [\"e1.wa.test\", \"e2.wa.test\"]\nports = [{closed}]\n\
             registration_url = \"https://v.wa.test:{port}/v2/register\"\n\
             web_url = \"https://web.wa.test:{port}/\"\n\n\
             [telegram]\naccess_points = [\"127.0.0.2\"]\nports = [{}]\n\
             web_url = \"https://web.telegram.org:{port}/\"\n\n\
             [signal]\nurls = [\"https://127.0.0.1:{port}/\"]\nca_pem = [\"\"\"\n{}\"\"\"]\n",
            dc.addr.port(),
            signal_ca.pem()
        ),
    )
    .expect("write apps file");
    let data = dir.join("probe");
    let base = server.base.clone();

    let wa = run("whatsapp", &apps, &dns, &ca_path, &data, &base).await;
    assert_eq!(wa["blocking"], "tcp_ip", "{wa:#}");
    assert_eq!(wa["test_keys"]["whatsapp_endpoints_status"], "blocked");
    let tg = run("telegram", &apps, &dns, &ca_path, &data, &base).await;
    assert_eq!(tg["blocking"], false, "{tg:#}");
    let sig = run("signal", &apps, &dns, &ca_path, &data, &base).await;
    assert_eq!(sig["blocking"], "tls", "{sig:#}");
    assert_eq!(
        sig["test_keys"]["signal_backend_failure"],
        "ssl_unknown_authority"
    );

    // Stored by the aggregator with the verdict its own rules give, searchable by test and
    // layer.
    let b = base.clone();
    let rows =
        tokio::task::spawn_blocking(move || search(&b, "test_name=whatsapp&blocking=tcp_ip"))
            .await
            .expect("join");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].2, Value::Bool(false));
    let b = base.clone();
    let rows = tokio::task::spawn_blocking(move || search(&b, "test_name=telegram"))
        .await
        .expect("join");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0].1, &rows[0].2),
        (&Value::Bool(false), &Value::Bool(true))
    );
    let b = base.clone();
    let rows = tokio::task::spawn_blocking(move || search(&b, "test_name=signal&blocking=tls"))
        .await
        .expect("join");
    assert_eq!(rows.len(), 1, "{rows:?}");
    // Nothing else was stored as blocked by TCP/IP: Telegram and Signal are not.
    let b = base.clone();
    let rows = tokio::task::spawn_blocking(move || search(&b, "blocking=tcp_ip"))
        .await
        .expect("join");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "whatsapp");
}
