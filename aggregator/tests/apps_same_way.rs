//! OONI's own measurements of WhatsApp, Telegram and Signal and Vantage's of the same outcome
//! are scored and detected the same way: the real `vantage run --test APP` against loopback
//! hosts makes a measurement of each outcome OONI's archive holds (reachable, and the real
//! blocked one: WhatsApp's names sinkholed in JP, Telegram's web client timing out in RU,
//! Signal's names NXDOMAIN in IR), and the real `vantage-aggregator score` gives both the same
//! rule set, verdict and rule, reading keys of the same JSON type in both. Then two probes'
//! blocked WhatsApp runs uploaded to a real `serve` make a service event on their own, and OONI's
//! imported measurement of the same network and hour joins that event as its own voter.
//!
//! On loopback every address is a bogon (RFC 6890 reserves 127.0.0.0/8), so a reachable app is
//! measured here under names that are not the app's: the scorer then reads the probe's summary
//! keys (OONI spec ts-018 "whatsapp_endpoints_status", ts-020 "telegram_web_status"), as it
//! does for OONI's measurements without requests. Under the app's own names a loopback answer
//! is exactly a resolver's sinkhole, which is what the blocked WhatsApp case uses.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{AGGREGATOR, serve, stored, tempdir, vantage};
use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{HttpFixture, Response};
use vantage_fixtures::tcp::{SilentListener, closed_port};
use vantage_fixtures::tls::{TestCa, TlsFixture};

const REAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/ooni/real/");

/// whatsapp 0.9.0, JP: every WhatsApp name answered 0.0.0.0, registration and web fail TLS.
const OONI_WHATSAPP_BLOCKED: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221105223930.168194_JP_whatsapp_e3e891f975f0d5ef_full-true.json";
/// whatsapp 0.9.0, US: everything reachable.
const OONI_WHATSAPP_OK: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110103854.762862_US_whatsapp_cb48f652956e71e0_full-true.json";
/// telegram, RU: the data centres answer, the web client times out.
const OONI_TELEGRAM_BLOCKED: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221109225810.435617_RU_telegram_ecbc73cacd8ea566_full-true.json";
/// telegram, US: everything reachable.
const OONI_TELEGRAM_OK: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20221110102858.395748_US_telegram_b2b51fffce62b986_full-true.json";
/// signal 0.2.0, IR: NXDOMAIN for Signal's names.
const OONI_SIGNAL_BLOCKED: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20210415084230.511612_IR_signal_ed269d082953bf2e_full-true.json";
/// signal, BR: the backend reachable.
const OONI_SIGNAL_OK: &str = "ooni_explorer__tests_e2e_fixtures_measurement_meta_measurement_meta__measurement_uid-20210414233242.034345_BR_signal_390dca674022005a_full-true.json";

fn ooni(file: &str) -> Value {
    let text = std::fs::read_to_string(format!("{REAL}{file}")).expect("real measurement");
    serde_json::from_str(&text).expect("json")
}

/// The real `vantage-aggregator score` of one measurement: its one verdict line.
fn score(dir: &Path, name: &str, m: &Value) -> Value {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, m.to_string()).expect("write measurement");
    let out = Command::new(AGGREGATOR)
        .arg("score")
        .arg(&path)
        .output()
        .expect("run score");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: {stdout}");
    serde_json::from_str(lines[0]).expect("a verdict is JSON")
}

/// The JSON type of a value, as a word.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The test keys each app's rules read (`probe/src/verdict/services/apps.rs`).
fn keys_read(test: &str) -> &'static [&'static str] {
    match test {
        "whatsapp" => &[
            "queries",
            "tcp_connect",
            "requests",
            "registration_server_status",
            "registration_server_failure",
            "whatsapp_endpoints_status",
            "whatsapp_web_status",
            "whatsapp_web_failure",
        ],
        "telegram" => &[
            "queries",
            "tcp_connect",
            "requests",
            "telegram_web_status",
            "telegram_web_failure",
            "telegram_tcp_blocking",
            "telegram_http_blocking",
        ],
        "signal" => &[
            "requests",
            "signal_backend_status",
            "signal_backend_failure",
        ],
        other => panic!("no keys for {other}"),
    }
}

/// The fields the rules read inside the records of `queries`, `tcp_connect` and `requests`.
const RECORD_FIELDS: &[(&str, &[&str])] = &[
    ("queries", &["/hostname", "/answers"]),
    ("tcp_connect", &["/ip", "/status/success"]),
    ("requests", &["/request/url"]),
];

/// Scores OONI's measurement and Vantage's and asserts the same verdict, and that every key
/// the rules read is in Vantage's measurement with the JSON type OONI's has.
fn same_way(dir: &Path, case: &str, theirs: &Value, ours: &Value) -> Value {
    let test = theirs["test_name"].as_str().expect("test_name");
    assert_eq!(ours["test_name"], test, "{case}");
    let (a, b) = (
        score(dir, &format!("{case}-ooni"), theirs),
        score(dir, &format!("{case}-vantage"), ours),
    );
    for field in ["test_name", "rule_set", "blocking", "accessible", "rule"] {
        assert_eq!(
            a[field], b[field],
            "{case}: {field}\nOONI: {a}\nVantage: {b}"
        );
    }
    let (tk_a, tk_b) = (&theirs["test_keys"], &ours["test_keys"]);
    for key in keys_read(test) {
        let Some(x) = tk_a.get(*key) else { continue };
        let y = tk_b
            .get(*key)
            .unwrap_or_else(|| panic!("{case}: Vantage's measurement has no {key}: {tk_b:#}"));
        assert_eq!(kind(x), kind(y), "{case}: {key}: OONI {x} / Vantage {y}");
    }
    // Within the records, every JSON type OONI's have for a field (other than null, which a
    // failed step writes) is one Vantage's have too; the records' order is the probes' own.
    for (key, fields) in RECORD_FIELDS {
        let records = |tk: &Value| -> Vec<Value> {
            tk.get(*key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let (xs, ys) = (records(tk_a), records(tk_b));
        if xs.is_empty() {
            continue;
        }
        assert!(!ys.is_empty(), "{case}: Vantage's {key} is empty: {tk_b:#}");
        for f in *fields {
            let kinds = |rs: &[Value]| -> BTreeSet<&'static str> {
                rs.iter()
                    .filter_map(|r| r.pointer(f))
                    .map(kind)
                    .filter(|k| *k != "null")
                    .collect()
            };
            let (kx, ky) = (kinds(&xs), kinds(&ys));
            assert!(
                kx.is_subset(&ky),
                "{case}: {key}{f}: OONI {kx:?} / Vantage {ky:?}"
            );
        }
    }
    b
}

/// `vantage run --test TEST --json` with `apps`, as a probe in IR / AS64500; uploads to
/// `aggregator` when given. Returns the measurement stored in `data`.
async fn run(
    test: &str,
    apps: &Path,
    dns: &DnsFixture,
    ca: &Path,
    data: &Path,
    aggregator: Option<&str>,
) -> Value {
    let mut cmd = Command::new(vantage());
    cmd.args(["run", "--test", test, "--yes", "--json"])
        .arg("--apps-file")
        .arg(apps)
        .args(["--resolver", &dns.addr.to_string()])
        .arg("--ca-file")
        .arg(ca)
        .args(["--timeout", "3", "--dns-timeout", "2"])
        .args(["--probe-cc", "IR", "--probe-asn", "AS64500"])
        .arg("--data-dir")
        .arg(data);
    if let Some(base) = aggregator {
        cmd.args(["--aggregator", base]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run vantage");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.lines().any(|l| l.starts_with('{')),
        "no JSON line: {stdout}\n{stderr}"
    );
    // The measurement as signed and stored (the JSON line is the summary a user reads).
    let (id, _) = stored(data).into_iter().next().expect("a stored result");
    let out = Command::new(vantage())
        .args(["results", "show", &id, "--data-dir"])
        .arg(data)
        .output()
        .expect("run vantage results show");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envelope: Value = serde_json::from_slice(&out.stdout).expect("an envelope is JSON");
    envelope["measurement"].clone()
}

/// Loopback stand-ins for the apps' hosts, reachable or blocked.
struct Hosts {
    dir: PathBuf,
    ca: PathBuf,
    dns: DnsFixture,
    ok_apps: PathBuf,
    blocked_apps: PathBuf,
    _fixtures: (
        TlsFixture,
        TlsFixture,
        TlsFixture,
        HttpFixture,
        SilentListener,
    ),
}

async fn hosts(name: &str) -> Hosts {
    let dir = tempdir(name);
    let ca = TestCa::new("apps CA");
    let ca_path = dir.join("apps-ca.pem");
    ca.write_pem(&ca_path);
    let signal_ca = TestCa::new("Signal CA");
    let leaf = ca.leaf(&["v.wa.test", "web.wa.test", "web.tg.test", "127.0.0.1"]);
    let https = TlsFixture::fixed(&leaf, Response::html("<title>ok</title>")).await;
    // A sinkhole's own server: a certificate for another name than the one asked for.
    let sinkhole = TlsFixture::fixed(&ca.leaf(&["sinkhole.test"]), Response::html("")).await;
    let signal = TlsFixture::fixed(
        &signal_ca.leaf(&["127.0.0.1", "textsecure-service.whispersystems.org"]),
        Response::html(""),
    )
    .await;
    let dc = HttpFixture::start_on(
        ([127, 0, 0, 2], 0).into(),
        std::sync::Arc::new(|_| Response::html("")),
    )
    .await;
    let silent = SilentListener::start().await;
    let lo = || Behaviour::Answer(vec![[127, 0, 0, 1].into()]);
    let dns = DnsFixture::start(vec![
        ("e1.wa.test", lo()),
        ("e2.wa.test", lo()),
        ("v.wa.test", lo()),
        ("web.wa.test", lo()),
        ("web.tg.test", lo()),
        ("uptime.signal.test", lo()),
        // The resolver of a network that sinkholes WhatsApp and refuses Signal's names.
        ("e1.whatsapp.net", lo()),
        ("e2.whatsapp.net", lo()),
        ("v.whatsapp.net", lo()),
        ("web.whatsapp.com", lo()),
        ("chat.signal.org", Behaviour::NxDomain),
        ("uptime.signal.org", Behaviour::NxDomain),
        // Signal's older name still answered in IR.
        ("textsecure-service.whispersystems.org", lo()),
    ])
    .await;
    let port = https.addr.port();
    let ok_apps = dir.join("ok.toml");
    std::fs::write(
        &ok_apps,
        format!(
            "[whatsapp]\nendpoints = [\"e1.wa.test\", \"e2.wa.test\"]\nports = [{port}]\n\
             registration_url = \"https://v.wa.test:{port}/v2/register\"\n\
             web_url = \"https://web.wa.test:{port}/\"\n\n\
             [telegram]\naccess_points = [\"127.0.0.2\"]\nports = [{}]\n\
             web_url = \"https://web.tg.test:{port}/\"\n\n\
             [signal]\nurls = [\"https://127.0.0.1:{}/\"]\nuptime_host = \"uptime.signal.test\"\n\
             ca_pem = [\"\"\"\n{}\"\"\"]\n",
            dc.addr.port(),
            signal.addr.port(),
            signal_ca.pem()
        ),
    )
    .expect("write apps file");
    let (sink, closed) = (sinkhole.addr.port(), closed_port().port());
    let sig = signal.addr.port();
    let blocked_apps = dir.join("blocked.toml");
    std::fs::write(
        &blocked_apps,
        format!(
            "[whatsapp]\nendpoints = [\"e1.whatsapp.net\", \"e2.whatsapp.net\"]\nports = [{closed}]\n\
             registration_url = \"https://v.whatsapp.net:{sink}/v2/register\"\n\
             web_url = \"https://web.whatsapp.com:{sink}/\"\n\n\
             [telegram]\naccess_points = [\"127.0.0.2\"]\nports = [{}]\n\
             web_url = \"https://web.tg.test:{}/\"\n\n\
             [signal]\nurls = [\"https://chat.signal.org:{sig}/\", \
             \"https://textsecure-service.whispersystems.org:{sig}/\"]\n\
             ca_pem = [\"\"\"\n{}\"\"\"]\n",
            dc.addr.port(),
            silent.addr.port(),
            signal_ca.pem()
        ),
    )
    .expect("write apps file");
    Hosts {
        dir,
        ca: ca_path,
        dns,
        ok_apps,
        blocked_apps,
        _fixtures: (https, sinkhole, signal, dc, silent),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ooni_and_vantage_app_measurements_get_the_same_verdicts() {
    let h = hosts("apps-same-way-score").await;
    let data = h.dir.join("probe");
    let cases = [
        ("whatsapp", OONI_WHATSAPP_OK, OONI_WHATSAPP_BLOCKED),
        ("telegram", OONI_TELEGRAM_OK, OONI_TELEGRAM_BLOCKED),
        ("signal", OONI_SIGNAL_OK, OONI_SIGNAL_BLOCKED),
    ];
    for (test, ok, blocked) in cases {
        let ours = run(
            test,
            &h.ok_apps,
            &h.dns,
            &h.ca,
            &data.join(format!("{test}-ok")),
            None,
        )
        .await;
        let v = same_way(&h.dir, &format!("{test}-ok"), &ooni(ok), &ours);
        assert_eq!(v["accessible"], true, "{test}: {v}");
        let ours = run(
            test,
            &h.blocked_apps,
            &h.dns,
            &h.ca,
            &data.join(format!("{test}-blocked")),
            None,
        )
        .await;
        let v = same_way(&h.dir, &format!("{test}-blocked"), &ooni(blocked), &ours);
        assert_eq!(v["accessible"], false, "{test}: {v}");
        assert_ne!(v["blocking"], false, "{test}: {v}");
    }
    std::fs::remove_dir_all(&h.dir).ok();
}

/// The lab's thresholds (`tests/lab/src/drive.rs`): minute bins, so that runs made a few
/// seconds apart are one window; two probes and two measurements make evidence.
const DETECT: &str = "[blocking]\nbin_seconds = 60\nwindow_bins = 30\nmin_measurements = 2\n\
                      min_category_measurements = 2\nmin_probes = 2\nmin_bins = 1\n";

/// `vantage-aggregator detect` then `timeline --json --kind blocking` for IR: the events.
fn detect_and_read(db: &Path, config: &Path) -> Vec<Value> {
    let detect = Command::new(AGGREGATOR)
        .arg("detect")
        .arg("--db")
        .arg(db)
        .arg("--detect-config")
        .arg(config)
        .args(["--cc", "IR"])
        .output()
        .expect("detect");
    assert!(
        detect.status.success(),
        "{}",
        String::from_utf8_lossy(&detect.stderr)
    );
    let now = vantage_aggregator::store::now();
    let fmt = vantage_aggregator::detect::format_time;
    let timeline = Command::new(AGGREGATOR)
        .arg("timeline")
        .arg("--db")
        .arg(db)
        .args(["--cc", "IR", "--kind", "blocking", "--json"])
        .args(["--since", &fmt(now - 86400), "--until", &fmt(now + 86400)])
        .output()
        .expect("timeline");
    let out = String::from_utf8_lossy(&timeline.stdout);
    assert!(
        timeline.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&timeline.stderr)
    );
    out.lines()
        .map(|l| serde_json::from_str(l).expect("an event is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vantage_makes_the_whatsapp_event_and_oonis_measurement_joins_it() {
    let h = hosts("apps-same-way-detect").await;
    let agg_ca = h.dir.join("ca.pem");
    TestCa::new("CA").write_pem(&agg_ca);
    let db = h.dir.join("agg.db");
    let config = h.dir.join("detect.toml");
    std::fs::write(&config, DETECT).expect("write detect config");
    let config_arg = config.to_str().expect("utf-8").to_string();
    let server = serve(&agg_ca, &db, &["--detect-config", &config_arg]).await;

    // Two probes (two keys, two data directories) in AS64500 find WhatsApp's names sinkholed,
    // and upload their signed results.
    for p in ["p1", "p2"] {
        let m = run(
            "whatsapp",
            &h.blocked_apps,
            &h.dns,
            &h.ca,
            &h.dir.join(p),
            Some(&server.base),
        )
        .await;
        assert_eq!(
            m["test_keys"]["whatsapp_endpoints_status"], "blocked",
            "{m:#}"
        );
        let uploaded = stored(&h.dir.join(p));
        assert_eq!(uploaded.len(), 1, "{uploaded:?}");
    }
    let events = detect_and_read(&db, &config);
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e["targets"], serde_json::json!(["whatsapp"]), "{e:#}");
    assert_eq!(e["layer"], "dns", "{e:#}");
    assert_eq!(e["probes"], 2, "{e:#}");
    assert_eq!(e["evidence"].as_array().map(Vec::len), Some(2), "{e:#}");
    assert!(e.to_string().contains("AS64500"), "{e}");

    // OONI's JP measurement, as OONI's archive would hold it for the same network and minute.
    let mut m = ooni(OONI_WHATSAPP_BLOCKED);
    m["probe_cc"] = "IR".into();
    m["probe_asn"] = "AS64500".into();
    m["measurement_start_time"] =
        vantage_aggregator::detect::format_time(vantage_aggregator::store::now()).into();
    m["report_id"] = "20261201T000000Z_whatsapp_IR_64500_n1_sameway".into();
    let file = h.dir.join("ooni-whatsapp.json");
    std::fs::write(&file, m.to_string()).expect("write");
    let import = Command::new(AGGREGATOR)
        .arg("import-ooni")
        .arg("--db")
        .arg(&db)
        .arg(&file)
        .output()
        .expect("import-ooni");
    let said = String::from_utf8_lossy(&import.stdout);
    assert!(
        import.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(said.contains("1 stored"), "{said}");

    // The same event, with OONI's measurement counted as one more voter and in the evidence.
    let after = detect_and_read(&db, &config);
    assert_eq!(after.len(), 1, "{after:#?}");
    let a = &after[0];
    assert_eq!(a["targets"], e["targets"], "{a:#}");
    assert_eq!(a["layer"], "dns", "{a:#}");
    assert_eq!(a["start"], e["start"], "{a:#}");
    assert_eq!(a["probes"], 3, "{a:#}");
    let evidence = a["evidence"].as_array().expect("evidence");
    assert_eq!(evidence.len(), 3, "{a:#}");
    for id in e["evidence"].as_array().expect("evidence") {
        assert!(evidence.contains(id), "{id} left out: {a:#}");
    }
    drop(server);
    std::fs::remove_dir_all(&h.dir).ok();
}
