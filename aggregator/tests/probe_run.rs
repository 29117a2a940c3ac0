//! The volunteer's probe end to end: `vantage run` over hundreds of loopback URLs, a kill in the
//! middle of a run, and uploads to a server that fails before it works.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Behaviour, Ingest, start_aggregator, stored, tempdir, vantage};
use serde_json::Value;
use vantage_fixtures::http::{Handler, HttpFixture, Response};
use vantage_fixtures::tcp::{SilentListener, closed_port};
use vantage_fixtures::tls::{TestCa, TlsFixture};

const HEADER: &str = "url,category_code,category_description,date_added,source,notes\n";
const PROBE_NET: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn write_list(path: &Path, urls: &[String]) {
    let mut text = HEADER.to_string();
    for u in urls {
        text.push_str(&format!("{u},NEWS,News Media,2026-11-23,test,\n"));
    }
    std::fs::write(path, text).expect("write list");
}

fn vantage_cmd(data: &Path) -> Command {
    let mut cmd = Command::new(vantage());
    cmd.env("VANTAGE_DATA_DIR", data)
        .env_remove("VANTAGE_AGGREGATOR");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn run_over_two_hundred_urls_names_exactly_the_blocked_ones() {
    let dir = tempdir("run200");
    let data = dir.join("data");
    let ca = TestCa::new("Vantage Test CA");
    let ca_path = dir.join("ca.pem");
    ca.write_pem(&ca_path);
    let page: Handler =
        Arc::new(|req| Response::html(&format!("<title>Page {}</title>", req.path)));
    let open = HttpFixture::start(page.clone()).await;
    let http_censored = HttpFixture::censoring(PROBE_NET, page.clone()).await;
    let tls_censored = TlsFixture::censoring(&ca.leaf(&["127.0.0.1"]), PROBE_NET, page).await;
    let down = closed_port();

    let mut urls = Vec::new();
    let mut blocked: BTreeMap<String, &str> = BTreeMap::new();
    for i in 0..110 {
        urls.push(format!("http://127.0.0.1:{}/page/{i}", open.addr.port()));
    }
    for i in 0..40 {
        let u = format!(
            "http://127.0.0.1:{}/censored/{i}",
            http_censored.addr.port()
        );
        blocked.insert(u.clone(), "HTTP");
        urls.push(u);
    }
    for i in 0..35 {
        let u = format!("https://127.0.0.1:{}/sni/{i}", tls_censored.addr.port());
        blocked.insert(u.clone(), "TLS");
        urls.push(u);
    }
    for i in 0..15 {
        urls.push(format!("http://127.0.0.1:{}/gone/{i}", down.port()));
    }
    assert!(urls.len() >= 200);
    let list = dir.join("list.csv");
    write_list(&list, &urls);

    let server = tokio::task::spawn_blocking({
        let ca_path = ca_path.clone();
        move || start_aggregator(&ca_path)
    })
    .await
    .expect("join");
    let base = server.base.clone();
    let run = |extra: &'static [&'static str]| {
        let (data, list, ca_path, base) =
            (data.clone(), list.clone(), ca_path.clone(), base.clone());
        tokio::task::spawn_blocking(move || {
            vantage_cmd(&data)
                .args([
                    "run",
                    "--yes",
                    "--no-upload",
                    "--timeout",
                    "3",
                    "--concurrency",
                    "16",
                ])
                .arg("--list")
                .arg(&list)
                .arg("--aggregator")
                .arg(&base)
                .arg("--ca-file")
                .arg(&ca_path)
                .args(extra)
                .output()
                .expect("run vantage")
        })
    };

    let out = run(&[]).await.expect("join");
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\n{}",
        summary,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        summary.starts_with(&format!("Measured {} URLs", urls.len())),
        "{summary}"
    );
    assert!(
        summary.contains(&format!(
            "{} blocked, 110 accessible, 15 down for everyone",
            blocked.len()
        )),
        "{summary}"
    );
    let named: BTreeMap<String, &str> = summary
        .lines()
        .skip_while(|l| *l != "Blocked:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let url = parts.next().expect("url").to_string();
            let how = match parts.next() {
                Some("TLS") => "TLS",
                Some("HTTP") => "HTTP",
                other => panic!("unexpected layer {other:?} in {l:?}"),
            };
            (url, how)
        })
        .collect();
    assert_eq!(
        named, blocked,
        "the summary names exactly the blocked URLs and their layer"
    );

    // One stored result per URL.
    let rows = stored(&data);
    assert_eq!(rows.len(), urls.len());
    let inputs: BTreeSet<String> = rows.iter().map(|r| r.1.clone()).collect();
    assert_eq!(inputs, urls.iter().cloned().collect::<BTreeSet<_>>());

    // --json prints one parseable result per line.
    let out = run(&["--json", "--max", "30"]).await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 30);
    for v in &lines {
        assert_eq!(v["id"].as_str().map(str::len), Some(64));
        assert_eq!(v["rule_set"], "vantage-3");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_run_keeps_completed_results_and_uploads_each_exactly_once() {
    let dir = tempdir("kill");
    let data = dir.join("data");
    let silent = SilentListener::start().await;
    let urls: Vec<String> = (0..40)
        .map(|i| format!("http://127.0.0.1:{}/slow/{i}", silent.addr.port()))
        .collect();
    let list = dir.join("list.csv");
    write_list(&list, &urls);

    // Each measurement takes the 1 s timeout; kill after a few have completed.
    let printed = tokio::task::spawn_blocking({
        let (data, list) = (data.clone(), list.clone());
        move || {
            let mut child = vantage_cmd(&data)
                .args([
                    "run",
                    "--yes",
                    "--json",
                    "--no-upload",
                    "--timeout",
                    "1",
                    "--concurrency",
                    "4",
                    "--list",
                ])
                .arg(&list)
                .stdout(Stdio::piped())
                .spawn()
                .expect("start vantage run");
            let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
            let mut ids = Vec::new();
            let mut line = String::new();
            while ids.len() < 8 && reader.read_line(&mut line).expect("read") > 0 {
                let v: Value = serde_json::from_str(line.trim()).expect("json line");
                ids.push(v["id"].as_str().expect("id").to_string());
                line.clear();
            }
            child.kill().expect("SIGKILL");
            let _ = child.wait();
            ids
        }
    })
    .await
    .expect("join");
    assert_eq!(printed.len(), 8);

    let rows = stored(&data);
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert!(rows.len() < urls.len(), "the run was interrupted");
    for id in &printed {
        assert!(
            ids.contains(id),
            "{id} was reported but is not in the store"
        );
    }

    // A stored envelope verifies, and does not once a byte of it changes.
    let show = vantage_cmd(&data)
        .args(["results", "show", &printed[0][..12]])
        .output()
        .expect("show");
    assert!(show.status.success());
    let envelope = String::from_utf8(show.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    let verified = vantage_probe::envelope::verify(&envelope).expect("stored envelope verifies");
    assert_eq!(verified.id.as_str(), printed[0]);
    let tampered = envelope.replacen("\"web_connectivity\"", "\"web_connectivitx\"", 1);
    assert_ne!(tampered, envelope);
    assert!(vantage_probe::envelope::verify(&tampered).is_err());

    // Upload delivers each stored result exactly once, and a second upload sends nothing.
    let ingest = Ingest::default();
    let addr = ingest.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    for _ in 0..2 {
        let out = tokio::task::spawn_blocking({
            let data = data.clone();
            move || {
                vantage_cmd(&data)
                    .args(["upload", "--aggregator", &format!("http://{addr}/")])
                    .output()
                    .expect("upload")
            }
        })
        .await
        .expect("join");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let received = ingest.received.lock().expect("lock").clone();
    assert_eq!(received.len(), ids.len(), "each exactly once");
    assert_eq!(received.iter().cloned().collect::<BTreeSet<_>>(), ids);
    let status = vantage_cmd(&data).arg("status").output().expect("status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("waiting for upload: 0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_survives_refusal_errors_and_stalls() {
    let dir = tempdir("flaky");
    let data = dir.join("data");
    let site = HttpFixture::fixed(Response::html("<title>ok</title>")).await;
    let urls: Vec<String> = (0..12)
        .map(|i| format!("http://127.0.0.1:{}/{i}", site.addr.port()))
        .collect();
    let list = dir.join("list.csv");
    write_list(&list, &urls);
    let out = tokio::task::spawn_blocking({
        let (data, list) = (data.clone(), list.clone());
        move || {
            vantage_cmd(&data)
                .args(["run", "--yes", "--no-upload", "--list"])
                .arg(&list)
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
    let ids: BTreeSet<String> = stored(&data).into_iter().map(|r| r.0).collect();
    assert_eq!(ids.len(), 12);

    // Nothing listens yet: the first attempts are refused. Then the server answers 500, then
    // stalls past the upload timeout, then works.
    let port = closed_port();
    let upload = tokio::task::spawn_blocking({
        let data = data.clone();
        move || {
            vantage_cmd(&data)
                .args(["upload", "--aggregator", &format!("http://{port}/")])
                .args([
                    "--timeout",
                    "1",
                    "--retry-base-ms",
                    "200",
                    "--max-attempts",
                    "12",
                ])
                .output()
                .expect("upload")
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ingest = Ingest::default();
    ingest
        .script
        .lock()
        .expect("lock")
        .extend([Behaviour::Fail, Behaviour::Stall]);
    ingest.serve(port).await;
    let out = upload.await.expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Uploaded 12 results"), "{stdout}");
    let received = ingest.received.lock().expect("lock").clone();
    assert_eq!(received.len(), 12, "each stored once on the server");
    assert_eq!(received.into_iter().collect::<BTreeSet<_>>(), ids);
    assert!(
        *ingest.requests.lock().expect("lock") >= 3,
        "500 and the stall were retried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_go_through_a_socks5_proxy_and_whoami_locates_the_probe() {
    let dir = tempdir("socks");
    let data = dir.join("data");
    let site = HttpFixture::fixed(Response::html("<title>ok</title>")).await;
    let urls: Vec<String> = (0..3)
        .map(|i| format!("http://127.0.0.1:{}/{i}", site.addr.port()))
        .collect();
    let list = dir.join("list.csv");
    write_list(&list, &urls);
    let ingest = Ingest::default();
    let server = ingest.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let proxy = vantage_fixtures::socks::Socks5Proxy::start().await;

    // Without a proxy, the aggregator's whoami says where the probe is; uploads go direct.
    let out = tokio::task::spawn_blocking({
        let (data, list) = (data.clone(), list.clone());
        move || {
            vantage_cmd(&data)
                .args(["run", "--yes", "--json", "--list"])
                .arg(&list)
                .args(["--aggregator", &format!("http://{server}/")])
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
    let first: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("a result"),
    )
    .expect("json");
    assert_eq!(first["probe_cc"], "IT", "from whoami");
    let id = first["id"].as_str().expect("id").to_string();
    let show = vantage_cmd(&data)
        .args(["results", "show", &id])
        .output()
        .expect("show");
    let envelope = String::from_utf8(show.stdout).expect("utf-8");
    let m: Value = serde_json::from_str(
        vantage_probe::envelope::verify(envelope.trim())
            .expect("verify")
            .measurement,
    )
    .expect("measurement");
    assert_eq!(
        (m["probe_cc"].as_str(), m["probe_asn"].as_str()),
        (Some("IT"), Some("AS3269"))
    );
    assert_eq!(m["probe_ip"], "127.0.0.1");
    assert_eq!(ingest.received.lock().expect("lock").len(), 3);
    assert!(proxy.connects.lock().expect("lock").is_empty());

    // Through the proxy: the upload arrives, the proxy saw the aggregator's name, and the run
    // does not ask whoami (it would locate the proxy), so the pinned values are used.
    let out = tokio::task::spawn_blocking({
        let (data, list) = (data.clone(), list.clone());
        let proxy = proxy.addr.to_string();
        move || {
            vantage_cmd(&data)
                .args([
                    "run",
                    "--yes",
                    "--json",
                    "--probe-cc",
                    "DE",
                    "--probe-asn",
                    "AS3320",
                    "--list",
                ])
                .arg(&list)
                .args([
                    "--aggregator",
                    &format!("http://{server}/"),
                    "--socks5",
                    &proxy,
                ])
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
    let line: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("a result"),
    )
    .expect("json");
    assert_eq!(line["probe_cc"], "DE");
    assert_eq!(ingest.received.lock().expect("lock").len(), 6);
    assert_eq!(
        proxy.connects.lock().expect("lock").clone(),
        vec![server.to_string()],
        "one upload, through the proxy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_recorded_offline_reaches_the_networks_signals_once_uploaded() {
    let (server, dir, db) = common::fresh_aggregator("canary").await;
    let open = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let open_addr = open.local_addr().expect("addr");
    let closed = closed_port();
    let targets = dir.join("canaries.csv");
    std::fs::write(
        &targets,
        format!(
            "address,port,protocol,description\n{},{},tcp,open\n{},{},tcp,closed\n",
            open_addr.ip(),
            open_addr.port(),
            closed.ip(),
            closed.port()
        ),
    )
    .expect("targets");
    let data = dir.join("probe");
    let base = server.base.clone();
    let (summary, uploaded) = tokio::task::spawn_blocking({
        let (data, targets) = (data.clone(), targets.clone());
        move || {
            // Measured with no aggregator configured at all, as during a shutdown.
            let canary = vantage_cmd(&data)
                .args([
                    "canary",
                    "--probe-cc",
                    "IT",
                    "--probe-asn",
                    "AS64500",
                    "--targets",
                ])
                .arg(&targets)
                .output()
                .expect("canary");
            let upload = vantage_cmd(&data)
                .args(["upload", "--aggregator", &base])
                .output()
                .expect("upload");
            (canary, upload)
        }
    })
    .await
    .expect("join");
    assert!(
        String::from_utf8_lossy(&summary.stdout).contains(": 1 of 2 targets answered"),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    assert!(
        String::from_utf8_lossy(&uploaded.stdout).starts_with("Uploaded 1 results"),
        "{}",
        String::from_utf8_lossy(&uploaded.stderr)
    );
    let out = Command::new(common::AGGREGATOR)
        .args([
            "signals", "--cc", "IT", "--asn", "AS64500", "--json", "--db",
        ])
        .arg(&db)
        .output()
        .expect("signals");
    let bin: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert_eq!(bin["canary_success"], 0.5);
    assert_eq!(bin["probes"], 1);
    assert_eq!(bin["measurements"], 0);
    drop(open);
    drop(server);
}
