//! The app tests (`vantage run --test whatsapp|telegram|signal|facebook_messenger`) against
//! loopback servers that fail the way censors make them fail: the real binary, a real UDP
//! DNS server, real TCP and TLS listeners, certificates made here. Each test asserts the OONI
//! keys a user would see and the verdict the aggregator's rules give. Nothing leaves loopback:
//! every name is answered by the DNS fixture with 127.0.0.1 (or NXDOMAIN, or an address no
//! test connects to).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tcp::closed_port;
use vantage_fixtures::tls::{TestCa, TlsFixture};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-apps-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

async fn vantage(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(VANTAGE)
            .args(&args)
            .env_remove("VANTAGE_AGGREGATOR")
            .env_remove("VANTAGE_PROBE_CC")
            .env_remove("VANTAGE_PROBE_ASN")
            .env_remove("VANTAGE_SOCKS5")
            .stdin(Stdio::null())
            .output()
            .expect("run vantage")
    })
    .await
    .expect("join")
}

/// The sections of an apps file; each test fills the one it measures, the rest point at
/// closed loopback ports and are not used.
struct Apps {
    whatsapp: String,
    telegram: String,
    signal: String,
    facebook: String,
}

impl Apps {
    fn new(ca_pem: &str) -> Apps {
        let closed = closed_port().port();
        Apps {
            whatsapp: format!("[whatsapp]\nendpoints = [\"e1.wa.test\"]\nports = [{closed}]\n"),
            telegram: format!("[telegram]\naccess_points = [\"127.0.0.1\"]\nports = [{closed}]\n"),
            signal: format!(
                "[signal]\nurls = [\"https://chat.signal.test:{closed}/\"]\nca_pem = [\"\"\"\n{ca_pem}\"\"\"]\n"
            ),
            facebook: String::new(),
        }
    }

    fn write(&self, path: &Path) {
        let text = format!(
            "{}\n{}\n{}\n{}\n",
            self.whatsapp, self.telegram, self.signal, self.facebook
        );
        std::fs::write(path, text).expect("write apps file");
    }
}

/// Runs one app test with `--json`; returns the JSON line, the stored measurement and the
/// plain summary of a second run (same settings).
async fn run(test: &str, name: &str, apps: &Apps, dns: &DnsFixture, ca: &TestCa) -> (Value, Value) {
    let dir = temp_dir(name);
    let file = dir.join("apps.toml");
    apps.write(&file);
    let ca_file = dir.join("ca.pem");
    ca.write_pem(&ca_file);
    let out = vantage(vec![
        "run".into(),
        "--test".into(),
        test.into(),
        "--apps-file".into(),
        file.display().to_string(),
        "--resolver".into(),
        dns.addr.to_string(),
        "--ca-file".into(),
        ca_file.display().to_string(),
        "--timeout".into(),
        "3".into(),
        "--dns-timeout".into(),
        "2".into(),
        "--probe-cc".into(),
        "ZZ".into(),
        "--probe-asn".into(),
        "AS0".into(),
        "--json".into(),
        "--yes".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    // The stored, signed measurement: `vantage results show` prints its envelope.
    let id = line["id"].as_str().expect("id").to_string();
    let shown = vantage(vec![
        "results".into(),
        "show".into(),
        id,
        "--data-dir".into(),
        dir.join("data").display().to_string(),
    ])
    .await;
    let shown_text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.status.success(),
        "show: {shown_text} {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let m = measurement_in(&shown_text);
    assert_eq!(m["test_name"], test);
    assert!(
        m["input"].is_null() && m.get("input").is_some(),
        "input null: {m}"
    );
    (line, m)
}

/// The measurement in `vantage show`'s output (its JSON object).
fn measurement_in(text: &str) -> Value {
    let start = text.find('{').expect("a JSON object in show's output");
    let end = text.rfind('}').expect("end of the object");
    let v: Value = serde_json::from_str(&text[start..=end]).expect("show prints JSON");
    v.get("measurement").cloned().unwrap_or(v)
}

/// Checks that `ours` has every `test_keys` field of the spec's example measurement
/// (`tests/data/ooni/spec/<spec>.json`, copied from OONI's spec with its licence,
/// tests/data/SOURCES.md) with the same JSON type, a `null` on either side matching any type
/// (df-000: consumers must expect null); and the envelope's fields likewise.
fn same_shape_as_spec(spec: &str, ours: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/ooni/spec")
        .join(format!("{spec}.json"));
    let text = std::fs::read_to_string(&path).expect("spec example");
    let example: Value = serde_json::from_str(&text).expect("spec example is JSON");
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let compare = |what: &str, theirs: &Value, mine: &Value, skip: &[&str]| {
        let theirs = theirs.as_object().expect("object");
        for (k, v) in theirs {
            if skip.contains(&k.as_str()) {
                continue;
            }
            let m = mine
                .get(k)
                .unwrap_or_else(|| panic!("{spec}: {what}.{k} is missing from {mine}"));
            let (a, b) = (kind(v), kind(m));
            assert!(
                a == b || a == "null" || b == "null",
                "{spec}: {what}.{k} is {b} here, {a} in the spec's example"
            );
        }
    };
    // OONI's `socksproxy` is the proxy OONI's probe was told to use (none here).
    compare(
        "test_keys",
        &example["test_keys"],
        &ours["test_keys"],
        &["socksproxy"],
    );
    // Fields of OONI's envelope that Vantage leaves out on purpose: OONI's report id, the
    // resolver's network and the templates' versions (df-000 makes them optional), and the
    // fields of ooniprobe 2.x, whose example ts-019 still shows.
    compare(
        "measurement",
        &example,
        ours,
        &[
            "test_keys",
            "report_id",
            "resolver_asn",
            "resolver_ip",
            "resolver_network_name",
            "probe_network_name",
            "extensions",
            "test_helpers",
            "id",
            "input_hashes",
            "options",
            "probe_city",
        ],
    );
}

fn blocking(line: &Value) -> String {
    line["blocking"].to_string().trim_matches('"').to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn whatsapp_reachable_then_endpoints_refused_then_web_reset_then_nxdomain() {
    let ca = TestCa::new("Apps Test CA");
    let leaf = ca.leaf(&["v.wa.test", "web.wa.test"]);
    let https = TlsFixture::fixed(&leaf, Response::html("<title>WhatsApp</title>")).await;
    let reset_on_hello = TlsFixture::censoring(
        &leaf,
        LOOPBACK.into(),
        std::sync::Arc::new(|_| Response::html("x")),
    )
    .await;
    let chat = HttpFixture::fixed(Response::html("")).await;
    let closed = closed_port().port();
    let dns = DnsFixture::start(vec![
        ("e1.wa.test", Behaviour::Answer(vec![LOOPBACK])),
        ("e2.wa.test", Behaviour::Answer(vec![LOOPBACK])),
        ("v.wa.test", Behaviour::Answer(vec![LOOPBACK])),
        ("web.wa.test", Behaviour::Answer(vec![LOOPBACK])),
        ("e1.whatsapp.net", Behaviour::NxDomain),
        ("e2.whatsapp.net", Behaviour::NxDomain),
    ])
    .await;
    let section = |ports: &str, web_port: u16, endpoints: &str| {
        format!(
            "[whatsapp]\nendpoints = [{endpoints}]\nports = [{ports}]\n\
             registration_url = \"https://v.wa.test:{}/v2/register\"\n\
             web_url = \"https://web.wa.test:{web_port}/\"\n",
            https.addr.port()
        )
    };
    let mut apps = Apps::new(&ca.pem());

    // Everything answers (one port of each endpoint is closed: the other one is enough).
    apps.whatsapp = section(
        &format!("{}, {closed}", chat.addr.port()),
        https.addr.port(),
        "\"e1.wa.test\", \"e2.wa.test\"",
    );
    let (line, m) = run("whatsapp", "wa-ok", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["whatsapp_endpoints_status"], "ok", "{tk}");
    assert_eq!(tk["whatsapp_endpoints_blocked"], serde_json::json!([]));
    assert_eq!(
        tk["whatsapp_endpoints_dns_inconsistent"],
        serde_json::json!([])
    );
    assert_eq!(tk["registration_server_status"], "ok");
    assert_eq!(tk["registration_server_failure"], Value::Null);
    assert_eq!(tk["whatsapp_web_status"], "ok");
    assert_eq!(tk["whatsapp_web_failure"], Value::Null);
    assert_eq!(m["test_version"], "0.10.0");
    same_shape_as_spec("ts-018-whatsapp", &m);
    assert_eq!(blocking(&line), "false", "{line}");
    // The closed port's connects are recorded with OONI's failure string.
    let refused = tk["tcp_connect"]
        .as_array()
        .expect("tcp_connect")
        .iter()
        .filter(|c| c["status"]["failure"] == "connection_refused")
        .count();
    assert_eq!(refused, 2, "{tk}");

    // Every endpoint refuses on every port: the app cannot reach its servers.
    apps.whatsapp = section(
        &closed.to_string(),
        https.addr.port(),
        "\"e1.wa.test\", \"e2.wa.test\"",
    );
    let (line, m) = run("whatsapp", "wa-tcp", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["whatsapp_endpoints_status"], "blocked");
    assert_eq!(
        tk["whatsapp_endpoints_blocked"],
        serde_json::json!(["e1.wa.test", "e2.wa.test"])
    );
    assert_eq!(blocking(&line), "tcp_ip", "{line}");
    assert!(
        line["test_keys"]["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["failure"] == "connection_refused")),
        "{line}"
    );

    // The web client's ClientHello is answered with a reset (SNI filtering).
    apps.whatsapp = section(
        &chat.addr.port().to_string(),
        reset_on_hello.addr.port(),
        "\"e1.wa.test\"",
    );
    let (line, m) = run("whatsapp", "wa-web", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["whatsapp_web_status"], "blocked");
    assert_eq!(tk["whatsapp_web_failure"], "connection_reset", "{tk}");
    assert_eq!(tk["registration_server_status"], "ok");
    assert_eq!(tk["whatsapp_endpoints_status"], "ok");
    assert_ne!(blocking(&line), "false", "{line}");

    // The endpoints' real names answered NXDOMAIN: blocked at DNS.
    apps.whatsapp = section(
        &chat.addr.port().to_string(),
        https.addr.port(),
        "\"e1.whatsapp.net\", \"e2.whatsapp.net\"",
    );
    let (line, m) = run("whatsapp", "wa-dns", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["whatsapp_endpoints_status"], "blocked");
    // Both queries (A and AAAA) of both endpoints say NXDOMAIN, in OONI's words.
    let endpoint_failures: Vec<&Value> = tk["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .filter(|q| {
            q["hostname"]
                .as_str()
                .is_some_and(|h| h.ends_with(".whatsapp.net"))
        })
        .map(|q| &q["failure"])
        .collect();
    assert_eq!(endpoint_failures.len(), 4, "{tk}");
    assert!(
        endpoint_failures.iter().all(|f| *f == "dns_nxdomain_error"),
        "{endpoint_failures:?}"
    );
    assert_eq!(blocking(&line), "dns", "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_data_centres_answer_then_refuse() {
    let ca = TestCa::new("Apps Test CA");
    let leaf = ca.leaf(&["web.telegram.org"]);
    let web = TlsFixture::fixed(&leaf, Response::html("<title>Telegram Web</title>")).await;
    // The data centre is another loopback address, so that its connects are not the web
    // client's (the rules leave out the addresses web.telegram.org resolved to).
    let dc = HttpFixture::start_on(
        (Ipv4Addr::new(127, 0, 0, 2), 0).into(),
        std::sync::Arc::new(|_| Response::html("")),
    )
    .await;
    let dns = DnsFixture::start(vec![(
        "web.telegram.org",
        Behaviour::Answer(vec![LOOPBACK]),
    )])
    .await;
    let mut apps = Apps::new(&ca.pem());
    let section = |port: u16| {
        format!(
            "[telegram]\naccess_points = [\"127.0.0.2\"]\nports = [{port}]\n\
             web_url = \"https://web.telegram.org:{}/\"\n",
            web.addr.port()
        )
    };

    apps.telegram = section(dc.addr.port());
    let (line, m) = run("telegram", "tg-ok", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["telegram_tcp_blocking"], false, "{tk}");
    assert_eq!(tk["telegram_http_blocking"], false);
    assert_eq!(tk["telegram_web_status"], "ok");
    assert_eq!(tk["telegram_web_failure"], Value::Null);
    assert_eq!(m["test_version"], "0.3.0");
    same_shape_as_spec("ts-020-telegram", &m);
    // The data centre got an empty POST, as OONI sends it, and answered.
    let dc_request = tk["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .find(|r| r["request"]["url"] == format!("http://127.0.0.2:{}/", dc.addr.port()))
        .cloned()
        .expect("the data centre's request");
    assert_eq!(dc_request["request"]["method"], "POST", "{dc_request}");
    assert_eq!(dc_request["response"]["code"], 200, "{dc_request}");
    assert_eq!(dc_request["failure"], Value::Null);
    assert_eq!(blocking(&line), "false", "{line}");

    // The data centre's port is closed: blocked by TCP/IP, the web client still works.
    apps.telegram = section(closed_port().port());
    let (line, m) = run("telegram", "tg-tcp", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["telegram_tcp_blocking"], true, "{tk}");
    assert_eq!(tk["telegram_http_blocking"], true);
    assert_eq!(tk["telegram_web_status"], "ok");
    assert_eq!(blocking(&line), "tcp_ip", "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signal_checked_against_its_own_ca_only() {
    // The CA the file pins for Signal, and another one the probe trusts for everything else
    // (--ca-file): a certificate of the latter is not Signal's.
    let signal_ca = TestCa::new("Signal Test CA");
    let other_ca = TestCa::new("Other Test CA");
    let good = TlsFixture::fixed(&signal_ca.leaf(&["127.0.0.1"]), Response::html("ok")).await;
    let mitm = TlsFixture::fixed(&other_ca.leaf(&["127.0.0.1"]), Response::html("x")).await;
    let reset = TlsFixture::censoring(
        &signal_ca.leaf(&["127.0.0.1"]),
        LOOPBACK.into(),
        std::sync::Arc::new(|_| Response::html("x")),
    )
    .await;
    // The backend by address: a name would resolve to loopback, which the rules rightly call
    // a bogon (DNS blocking) before they look at the handshake.
    let dns = DnsFixture::start(vec![("uptime.signal.org", Behaviour::NxDomain)]).await;
    let mut apps = Apps::new(&signal_ca.pem());
    let section = |port: u16| {
        format!(
            "[signal]\nurls = [\"https://127.0.0.1:{port}/\"]\nca_pem = [\"\"\"\n{}\"\"\"]\n",
            signal_ca.pem()
        )
    };

    apps.signal = section(good.addr.port());
    let (line, m) = run("signal", "sig-ok", &apps, &dns, &other_ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["signal_backend_status"], "ok", "{tk}");
    assert_eq!(tk["signal_backend_failure"], Value::Null);
    assert_eq!(m["test_version"], "0.2.5");
    same_shape_as_spec("ts-029-signal", &m);
    assert_eq!(blocking(&line), "false", "{line}");
    // uptime.signal.org was looked up and its failure changed nothing.
    assert!(
        tk["queries"]
            .as_array()
            .is_some_and(|q| q.iter().any(|q| q["hostname"] == "uptime.signal.org"))
    );

    apps.signal = section(mitm.addr.port());
    let (line, m) = run("signal", "sig-mitm", &apps, &dns, &other_ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["signal_backend_status"], "blocked");
    assert_eq!(
        tk["signal_backend_failure"], "ssl_unknown_authority",
        "{tk}"
    );
    assert_eq!(blocking(&line), "tls", "{line}");

    apps.signal = section(reset.addr.port());
    let (line, m) = run("signal", "sig-reset", &apps, &dns, &other_ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["signal_backend_failure"], "connection_reset", "{tk}");
    assert_eq!(blocking(&line), "tls", "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn facebook_messenger_consistent_then_bogon_then_unreachable() {
    let ca = TestCa::new("Apps Test CA");
    let server = HttpFixture::fixed(Response::html("")).await;
    // Facebook's real names, answered here: 127.0.0.0/8 is "Facebook's network" for this
    // test, and b-api's bogon answer is outside it (and never connected to).
    let names = [
        "stun.fbsbx.com",
        "b-api.facebook.com",
        "b-graph.facebook.com",
        "edge-mqtt.facebook.com",
        "external.xx.fbcdn.net",
        "scontent.xx.fbcdn.net",
        "star.c10r.facebook.com",
    ];
    let table = |bogon: bool| {
        names
            .iter()
            .map(|n| {
                let ip = if bogon && *n == "b-api.facebook.com" {
                    Ipv4Addr::new(10, 10, 34, 36)
                } else {
                    LOOPBACK
                };
                (*n, Behaviour::Answer(vec![ip]))
            })
            .collect::<Vec<_>>()
    };
    let mut apps = Apps::new(&ca.pem());
    let section =
        |port: u16| format!("[facebook_messenger]\nport = {port}\nnetblocks = [\"127.0.0.0/8\"]\n");

    let dns = DnsFixture::start(table(false)).await;
    apps.facebook = section(server.addr.port());
    let (line, m) = run("facebook_messenger", "fb-ok", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["facebook_dns_blocking"], false, "{tk}");
    assert_eq!(tk["facebook_tcp_blocking"], false);
    assert_eq!(tk["facebook_b_api_dns_consistent"], true);
    assert_eq!(tk["facebook_b_api_reachable"], true);
    assert_eq!(tk["facebook_stun_dns_consistent"], true);
    assert_eq!(tk["facebook_stun_reachable"], Value::Null);
    assert_eq!(m["test_version"], "0.4.0");
    same_shape_as_spec("ts-019-facebook-messenger", &m);
    assert_eq!(blocking(&line), "false", "{line}");

    let bogus = DnsFixture::start(table(true)).await;
    let (line, m) = run("facebook_messenger", "fb-dns", &apps, &bogus, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["facebook_dns_blocking"], true, "{tk}");
    assert_eq!(tk["facebook_b_api_dns_consistent"], false);
    assert_eq!(tk["facebook_b_api_reachable"], Value::Null);
    assert!(
        !tk["tcp_connect"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["ip"] == "10.10.34.36")),
        "never connects to an inconsistent answer: {tk}"
    );
    assert_eq!(blocking(&line), "dns", "{line}");

    apps.facebook = section(closed_port().port());
    let (line, m) = run("facebook_messenger", "fb-tcp", &apps, &dns, &ca).await;
    let tk = &m["test_keys"];
    assert_eq!(tk["facebook_tcp_blocking"], true, "{tk}");
    assert_eq!(tk["facebook_b_graph_reachable"], false);
    assert_eq!(blocking(&line), "tcp_ip", "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_apps_file_is_refused_before_any_traffic_and_the_summary_is_plain() {
    let dir = temp_dir("bad-file");
    let ca = TestCa::new("Apps Test CA");
    // The resolver given here is a closed port: the refusal comes before any lookup.
    let resolver = format!("127.0.0.1:{}", closed_port().port());
    let file = dir.join("apps.toml");
    let mut apps = Apps::new(&ca.pem());
    apps.telegram = "[telegram]\naccess_points = [\"149.154.175\"]\nports = [80]\n".into();
    apps.write(&file);
    let args = |test: &str, file: &Path, json: bool| {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--test".into(),
            test.into(),
            "--apps-file".into(),
            file.display().to_string(),
            "--resolver".into(),
            resolver.clone(),
            "--probe-cc".into(),
            "ZZ".into(),
            "--probe-asn".into(),
            "AS0".into(),
            "--yes".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let out = vantage(args("telegram", &file, true)).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains("telegram.access_points[0]") && stderr.contains("not an IP address"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // Refused before the store was even opened: nothing was measured or kept.
    assert!(!dir.join("data").join("vantage.db").exists());
    // A line of TOML that is not TOML: the message names the line.
    std::fs::write(&file, "[whatsapp]\nendpoints = [\"e1.wa.test\"\n").expect("write");
    let out = vantage(args("whatsapp", &file, false)).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains("line"), "{stderr}");
    let out = vantage(args("whatsapp", &dir.join("missing.toml"), false)).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("cannot read the apps file") && stderr.contains("missing.toml"),
        "{stderr}"
    );

    // The plain summary: the verdict in words and the test's keys. WhatsApp's endpoint answers
    // NXDOMAIN from a resolver that is there.
    let dns = DnsFixture::start(vec![("e1.wa.test", Behaviour::NxDomain)]).await;
    apps = Apps::new(&ca.pem());
    apps.write(&file);
    let mut a = args("whatsapp", &file, false);
    let i = a.iter().position(|s| *s == resolver).expect("resolver arg");
    a[i] = dns.addr.to_string();
    a.extend([
        "--timeout".into(),
        "2".into(),
        "--dns-timeout".into(),
        "2".into(),
    ]);
    let out = vantage(a).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("whatsapp: BLOCKED ("), "{stdout}");
    assert!(
        stdout.contains("whatsapp_endpoints_status: \"blocked\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("whatsapp_endpoints_blocked: [\"e1.wa.test\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("Result "), "{stdout}");
}
