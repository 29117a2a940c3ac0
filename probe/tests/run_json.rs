//! `vantage run --json`: each line carries its steps' failures as OONI's strings (df-007), so a
//! reader sees where each measurement failed without opening it. The real binary measures three
//! URLs on loopback: a name its resolver answers NXDOMAIN, a port nothing listens on, and a page
//! that loads.

use std::process::{Command, Stdio};

use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{HttpFixture, Response};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

#[tokio::test(flavor = "multi_thread")]
async fn each_json_line_names_the_failure_of_each_step() {
    let page = HttpFixture::fixed(Response::html(
        "<html><title>A page</title><body>here</body></html>",
    ))
    .await;
    let dns = DnsFixture::start(vec![
        ("gone.example", Behaviour::NxDomain),
        (
            "site.example",
            Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
        ),
    ])
    .await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = std::env::temp_dir().join(format!("vantage-run-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let urls = [
        "http://gone.example/".to_string(),
        format!("http://127.0.0.1:{closed}/"),
        format!("http://site.example:{}/", page.addr.port()),
    ];
    let mut list = String::from("url,category_code,category_description,date_added,source,notes\n");
    for u in &urls {
        list.push_str(&format!("{u},NEWS,News Media,2026-01-01,test,\n"));
    }
    let list_path = dir.join("list.csv");
    std::fs::write(&list_path, list).expect("list");
    let data = dir.join("data");
    let (list_arg, data_arg, resolver) = (
        list_path.to_string_lossy().into_owned(),
        data.to_string_lossy().into_owned(),
        dns.addr.to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(VANTAGE)
            .args(["run", "--yes", "--no-upload", "--json", "--timeout", "3"])
            .args(["--list", &list_arg, "--resolver", &resolver])
            .args(["--data-dir", &data_arg])
            .env_remove("VANTAGE_AGGREGATOR")
            .env_remove("VANTAGE_PROBE_CC")
            .env_remove("VANTAGE_PROBE_ASN")
            .env_remove("VANTAGE_SOCKS5")
            .stdin(Stdio::null())
            .output()
            .expect("run vantage")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let line = |url: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["input"] == url)
            .unwrap_or_else(|| panic!("no line for {url}: {stdout}"))
    };
    // What the line had before is still there.
    for l in &lines {
        for key in ["id", "input", "blocking", "accessible", "rule", "rule_set"] {
            assert!(l.get(key).is_some(), "{key} missing: {l}");
        }
    }

    let gone = &line(&urls[0])["failures"];
    assert_eq!(gone["dns"], "dns_nxdomain_error", "{gone}");
    assert_eq!((&gone["tcp"], &gone["tls"]), (&Value::Null, &Value::Null));

    let refused = &line(&urls[1])["failures"];
    assert_eq!(refused["tcp"], "connection_refused", "{refused}");
    assert_eq!(refused["dns"], Value::Null, "{refused}");

    let loaded = &line(&urls[2])["failures"];
    assert_eq!(
        loaded,
        &serde_json::json!({"dns": null, "tcp": null, "tls": null, "http": null}),
        "{}",
        line(&urls[2])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
