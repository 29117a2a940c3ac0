//! The real `vantage` binary, as a researcher runs it.

use std::process::{Command, Output};

use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{BLOCKPAGE, HttpFixture, Response};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

async fn vantage(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(VANTAGE)
            .args(&args)
            .output()
            .expect("run vantage")
    })
    .await
    .expect("join")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn measure_prints_a_valid_measurement() {
    let server = HttpFixture::fixed(Response::html(BLOCKPAGE)).await;
    let url = format!("http://127.0.0.1:{}/", server.addr.port());
    let out = vantage(&["measure", &url]).await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let m: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(m["test_name"], "web_connectivity");
    assert_eq!(m["input"], url);
    assert_eq!(m["probe_ip"], "127.0.0.1");
    let response = &m["test_keys"]["requests"][0]["response"];
    assert_eq!(response["code"], 200);
    assert_eq!(response["x_title"], "Access Denied");
    assert_eq!(m["test_keys"]["tcp_connect"][0]["status"]["success"], true);
    // And it reads back into the library's types.
    let _: vantage_probe::ooni::WebConnectivityMeasurement =
        serde_json::from_slice(&out.stdout).expect("typed");
}

#[tokio::test(flavor = "multi_thread")]
async fn measure_compact_is_one_line_and_uses_the_given_resolver() {
    let dns = DnsFixture::start(vec![("censored.test", Behaviour::NxDomain)]).await;
    let resolver = dns.addr.to_string();
    let out = vantage(&[
        "measure",
        "--compact",
        "--resolver",
        &resolver,
        "http://censored.test/",
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 1, "JSONL");
    let m: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        m["test_keys"]["dns_experiment_failure"],
        "dns_nxdomain_error"
    );
    assert_eq!(m["test_keys"]["queries"][0]["resolver_address"], resolver);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_one_line_error() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["measure", "not-a-url"],
            "error: invalid URL \"not-a-url\": relative URL without a base",
        ),
        (
            &["measure", "gopher://example.org/"],
            "error: unsupported URL scheme \"gopher\"",
        ),
        (
            &["measure", "--resolver", "8.8.8.8", "http://example.org/"],
            "error: --resolver \"8.8.8.8\" is not an IP:PORT address",
        ),
        (
            &[
                "measure",
                "--doh",
                "http://127.0.0.1/dns-query",
                "http://example.org/",
            ],
            "error: --doh \"http://127.0.0.1/dns-query\" must be an https:// URL",
        ),
        (
            &["measure", "--timeout", "0", "http://example.org/"],
            "error: --timeout must be a number of seconds between 0 and 3600, got 0",
        ),
        (
            &[
                "measure",
                "--ca-file",
                "/nonexistent/ca.pem",
                "http://example.org/",
            ],
            "error: cannot read CA certificates from /nonexistent/ca.pem",
        ),
    ];
    for (args, want) in cases {
        let out = vantage(args).await;
        assert!(!out.status.success(), "{args:?} should fail");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.starts_with(want), "{args:?}: {err:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn help_explains_measure() {
    let out = vantage(&["measure", "--help"]).await;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--resolver",
        "--doh",
        "--ca-file",
        "--timeout",
        "--dns-timeout",
        "--compact",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn id_creates_a_private_key_once_and_prints_the_same_public_key() {
    let dir = std::env::temp_dir().join(format!("vantage-id-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_string_lossy().into_owned();
    let first = vantage(&["id", "--data-dir", &d]).await;
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).starts_with("created a new signing key in "),
        "{}",
        stderr(&first)
    );
    let key = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert_eq!(key.len(), 44, "base64 of 32 bytes: {key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("identity.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = vantage(&["id", "--data-dir", &d]).await;
    assert!(again.status.success());
    assert!(stderr(&again).is_empty(), "no creation the second time");
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), key);

    std::fs::write(dir.join("identity.key"), "not a key").expect("corrupt");
    let bad = vantage(&["id", "--data-dir", &d]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("not a base64 Ed25519 secret key"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("identity.key")).expect("kept"),
        "not a key",
        "a bad key is never overwritten"
    );
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_broken_lists_naming_file_and_line() {
    let dir = temp_dir("lists");
    let data = dir.join("data").to_string_lossy().into_owned();
    let no_header = dir.join("noheader.csv");
    std::fs::write(&no_header, "https://example.org/,NEWS,News,2024,x,\n").expect("write");
    let mut bad_utf8 = b"url,category_code,category_description,date_added,source,notes\n".to_vec();
    bad_utf8.extend_from_slice(b"https://ex\xffample.org/,NEWS,News,2024,x,\n");
    let utf8 = dir.join("utf8.csv");
    std::fs::write(&utf8, bad_utf8).expect("write");
    let only_bad = dir.join("badurl.csv");
    std::fs::write(
        &only_bad,
        "url,category_code,category_description,date_added,source,notes\nnot a url,NEWS,News,2024,x,\n",
    )
    .expect("write");
    let cases = [
        (
            &no_header,
            format!("{}:1: not a test list", no_header.display()),
        ),
        (&utf8, format!("{}:2: invalid UTF-8", utf8.display())),
        (
            &only_bad,
            format!("{}:2: invalid URL \"not a url\"", only_bad.display()),
        ),
    ];
    for (path, want) in cases {
        let p = path.to_string_lossy().into_owned();
        let out = vantage(&[
            "run",
            "--yes",
            "--no-upload",
            "--data-dir",
            &data,
            "--list",
            &p,
        ])
        .await;
        assert_eq!(out.status.code(), Some(2), "{p}");
        assert!(stderr(&out).contains(&want), "{p}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    // Nothing was measured, so nothing was stored.
    let out = vantage(&["status", "--data-dir", &data]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("results: 0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn run_asks_for_consent_before_measuring() {
    let dir = temp_dir("consent");
    let data = dir.join("data").to_string_lossy().into_owned();
    let out = vantage(&["run", "--no-upload", "--data-dir", &data, "--cc", "IR"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: vantage run needs your informed consent: run it once in a terminal, or pass --yes"
    );
    assert!(
        !dir.join("data/vantage.db").exists(),
        "nothing measured or stored"
    );
    let out = vantage(&[
        "run",
        "--no-upload",
        "--yes",
        "--data-dir",
        &data,
        "--cc",
        "XX",
    ])
    .await;
    assert!(
        stderr(&out).contains("no test list for \"XX\""),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_import_checks_and_keeps_the_list() {
    let dir = temp_dir("import");
    let data = dir.join("data").to_string_lossy().into_owned();
    let list = dir.join("ir.csv");
    std::fs::write(
        &list,
        "url,category_code,category_description,date_added,source,notes\nhttp://127.0.0.1:9/,NEWS,News,2024,x,\nnope,NEWS,News,2024,x,\n",
    )
    .expect("write");
    let p = list.to_string_lossy().into_owned();
    let out = vantage(&["lists", "import", &p, "--data-dir", &data]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("imported 1 URLs"));
    assert!(
        stderr(&out).contains(&format!("{p}:3: invalid URL")),
        "{}",
        stderr(&out)
    );
    assert!(dir.join("data/lists/ir.csv").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_records_which_targets_answer_without_dns_or_aggregator() {
    let dns = DnsFixture::start(vec![(
        "a.root-servers.net",
        Behaviour::Answer(vec!["198.41.0.4".parse().expect("ip")]),
    )])
    .await;
    let silent_dns = vantage_fixtures::tcp::closed_port(); // nothing answers UDP there either
    let open = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let open_addr = open.local_addr().expect("addr");
    let closed = vantage_fixtures::tcp::closed_port();
    let dir = temp_dir("canary");
    let targets = dir.join("canaries.csv");
    std::fs::write(
        &targets,
        format!(
            "address,port,protocol,description\n{},{},dns,root\n{},{},dns,gone\n{},{},tcp,open\n{},{},tcp,closed\n",
            dns.addr.ip(),
            dns.addr.port(),
            silent_dns.ip(),
            silent_dns.port(),
            open_addr.ip(),
            open_addr.port(),
            closed.ip(),
            closed.port()
        ),
    )
    .expect("targets");
    let data = dir.join("data");
    let (t, d) = (targets.display().to_string(), data.display().to_string());
    let out = vantage(&[
        "canary",
        "--targets",
        &t,
        "--timeout",
        "1",
        "--probe-cc",
        "IT",
        "--data-dir",
        &d,
    ])
    .await;
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let head = lines.next().expect("summary");
    assert!(head.ends_with(": 2 of 4 targets answered"), "{text}");
    let failures: Vec<&str> = lines.collect();
    assert_eq!(failures.len(), 2, "{text}");
    assert!(
        failures[0].starts_with(&format!("  {silent_dns} dns: ")),
        "{text}"
    );
    assert_eq!(failures[1], format!("  {closed} tcp: connection_refused"));

    // Signed and kept for upload like any result.
    let id = head.split_whitespace().nth(1).expect("id");
    let shown = vantage(&["results", "show", id, "--data-dir", &d]).await;
    let line = String::from_utf8_lossy(&shown.stdout).into_owned();
    let v = vantage_probe::envelope::verify(line.trim()).expect("verifies");
    let m: Value = serde_json::from_str(v.measurement).expect("json");
    assert_eq!(m["test_name"], "canary");
    assert_eq!(m["probe_cc"], "IT");
    assert_eq!(m["test_keys"]["ok"], 2);
    assert_eq!(m["test_keys"]["checks"][2]["ok"], true);
    assert_eq!(
        m["test_keys"]["tcp_connect"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        m["test_keys"]["queries"]
            .as_array()
            .is_some_and(|q| !q.is_empty())
    );

    // A target given by name is refused before anything is measured.
    std::fs::write(
        &targets,
        "address,port,protocol,description\ndns.google,53,dns,x\n",
    )
    .expect("w");
    let out = vantage(&["canary", "--targets", &t, "--data-dir", &d]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(":2: the address must be an IP address (a canary uses no DNS)"),
        "{}",
        stderr(&out)
    );
    drop(open);
}

#[tokio::test(flavor = "multi_thread")]
async fn relay_and_upload_refuse_unbounded_options_before_doing_anything() {
    let dir = temp_dir("bounds");
    let data = dir.join("data").to_string_lossy().into_owned();
    let base = [
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data,
        "--aggregator",
        "http://127.0.0.1:9/",
    ];
    // Once a panic in the semaphore: now a clear refusal, for 0 and past the bound.
    for n in ["0", "4097", "4611686018427387904"] {
        let mut args = base.to_vec();
        args.extend(["--max-connections", n]);
        let out = vantage(&args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{n}: {err}");
        assert!(
            err.contains(&format!(
                "--max-connections {n}: must be 1 to 4096 (connections)"
            )),
            "{n}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let mut args = base.to_vec();
    for _ in 0..8 {
        args.extend(["--aggregator", "http://127.0.0.1:9/"]);
    }
    let out = vantage(&args).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("9 --aggregator routes; at most 8"), "{err}");
    let mut args = vec![
        "upload",
        "--aggregator",
        "http://127.0.0.1:9/",
        "--data-dir",
        &data,
    ];
    for _ in 0..9 {
        args.extend(["--route", "http://127.0.0.1:9/"]);
    }
    let out = vantage(&args).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("9 --route options; at most 8"), "{err}");
    assert!(
        !std::path::Path::new(&data).exists(),
        "nothing written before the options are checked"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
