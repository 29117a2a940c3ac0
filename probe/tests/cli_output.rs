//! What `vantage` shows a person: the run's summary offline and online, the country and network
//! it tags results with and why, `measure`'s outcome line and exit status, the paged results
//! list, times in one format, and a quiet end when the reader of its output goes away. Every
//! test runs the real binary against servers on 127.0.0.1 only (a `--resolver` on loopback
//! answers every lookup, so nothing is asked of the system's resolver).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::http::{HttpFixture, Response};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

const HEADER: &str = "url,category_code,category_description,date_added,source,notes\n";

/// `vantage args`, with none of the environment variables that would change its defaults.
async fn vantage(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
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

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-output-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

/// Writes a test list of `urls` at `path`.
fn write_list(path: &Path, urls: &[String]) {
    let mut text = String::from(HEADER);
    for u in urls {
        text.push_str(&format!("{u},NEWS,News Media,2026-01-01,test,\n"));
    }
    std::fs::write(path, text).expect("write list");
}

/// A loopback resolver that answers NXDOMAIN for every name of `names`: what a machine
/// without a network gets from its resolver, without asking any resolver beyond loopback.
async fn failing_resolver(names: &[&str]) -> DnsFixture {
    DnsFixture::start(names.iter().map(|n| (*n, Behaviour::NxDomain)).collect()).await
}

/// A data directory whose imported `ir` and `global` lists hold only names that `dns` fails,
/// so that `--cc IR` measures them and nothing else.
async fn offline_setup(name: &str) -> (PathBuf, String, DnsFixture) {
    let names = ["news.example", "rights.example", "forum.example"];
    let dns = failing_resolver(&names).await;
    let dir = temp_dir(name);
    let data = dir.join("data").to_string_lossy().into_owned();
    for (file, hosts) in [("ir.csv", &names[..2]), ("global.csv", &names[2..])] {
        let path = dir.join(file);
        let urls: Vec<String> = hosts.iter().map(|h| format!("http://{h}/")).collect();
        write_list(&path, &urls);
        let p = path.to_string_lossy().into_owned();
        let out = vantage(&["lists", "import", &p, "--data-dir", &data]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    (dir, data, dns)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_run_says_so_and_which_country_it_recorded() {
    let (_dir, data, dns) = offline_setup("offline").await;
    let resolver = dns.addr.to_string();
    let out = vantage(&[
        "run",
        "--yes",
        "--no-upload",
        "--cc",
        "IR",
        "--resolver",
        &resolver,
        "--data-dir",
        &data,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with("Measured 3 URLs in")
            && lines[0]
                .ends_with(": 0 blocked, 0 accessible, 0 down for everyone, 3 undetermined."),
        "{shown}"
    );
    assert_eq!(
        lines[1],
        "This machine seems to be offline: no lookup succeeded and no site or test helper could \
         be reached; check the connection and run again.",
        "{shown}"
    );
    assert_eq!(
        lines[2],
        "Results are tagged country ZZ and network AS0 (unknown: no aggregator was asked where \
         this machine is).",
        "{shown}"
    );
    assert_eq!(
        lines[3],
        "--cc IR chose the test list, not your country: add --probe-cc IR if you are measuring \
         from there.",
        "{shown}"
    );
    assert_eq!(lines[4], format!("Results are stored in {data}."));
    assert_eq!(lines.len(), 5, "{shown}");
    // An offline machine is not told that an aggregator would decide its results.
    assert!(!shown.contains("--aggregator"), "{shown}");

    // With --json, stdout stays one JSON object per result and the warning goes to stderr.
    let out = vantage(&[
        "run",
        "--yes",
        "--no-upload",
        "--cc",
        "IR",
        "--json",
        "--resolver",
        &resolver,
        "--data-dir",
        &data,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        stderr(&out).contains("warning: This machine seems to be offline: no lookup succeeded"),
        "{}",
        stderr(&out)
    );

    // What was recorded is what was said.
    let listed = vantage(&["results", "list", "--json", "--data-dir", &data]).await;
    let first: Value =
        serde_json::from_str(stdout(&listed).lines().next().expect("a result")).expect("json");
    let id = first["id"].as_str().expect("id");
    let shown = vantage(&["results", "show", id, "--data-dir", &data]).await;
    let envelope = stdout(&shown);
    assert!(
        envelope.contains(r#""probe_cc":"ZZ""#) && envelope.contains(r#""probe_asn":"AS0""#),
        "{envelope}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_helper_offline_is_named_and_given_countries_are_said_so() {
    let (_dir, data, dns) = offline_setup("helper").await;
    let resolver = dns.addr.to_string();
    // A port nothing listens on: the aggregator and its test helper cannot be reached.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let aggregator = format!("http://{}/", closed.local_addr().expect("addr"));
    drop(closed);
    let out = vantage(&[
        "run",
        "--yes",
        "--no-upload",
        "--cc",
        "IR",
        "--probe-cc",
        "ir",
        "--probe-asn",
        "AS12880",
        "--aggregator",
        &aggregator,
        "--resolver",
        &resolver,
        "--data-dir",
        &data,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains(
            "\nThis machine seems to be offline: no lookup succeeded and the test helper could \
             not be reached; check the connection and run again.\n"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "\nResults are tagged country IR and network AS12880 (given with --probe-cc and \
             --probe-asn).\n"
        ),
        "{shown}"
    );
    assert!(!shown.contains("chose the test list"), "{shown}");

    // Only the country given: the network is unknown, and the line says why for each.
    let out = vantage(&[
        "run",
        "--yes",
        "--no-upload",
        "--cc",
        "IR",
        "--probe-cc",
        "DE",
        "--resolver",
        &resolver,
        "--data-dir",
        &data,
    ])
    .await;
    assert!(
        stdout(&out).contains(
            "\nResults are tagged country DE (given with --probe-cc) and network AS0 (unknown: \
             no aggregator was asked where this machine is).\n"
        ),
        "{}",
        stdout(&out)
    );
}

/// An aggregator on loopback that says where this machine is (whoami) and whose test helper
/// fails with 503, serving `pages` pages besides: the results are undetermined for a reason
/// that is not the machine's connection.
async fn aggregator_with_failing_helper() -> HttpFixture {
    HttpFixture::start(Arc::new(|req| match req.path.as_str() {
        "/api/v1/whoami" => Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: br#"{"probe_cc":"IR","probe_asn":"AS12880"}"#.to_vec(),
        },
        "/api/v1/th" => Response {
            status: 503,
            headers: vec![],
            body: b"overloaded".to_vec(),
        },
        _ => Response::html("<html><head><title>News</title></head><body>news</body></html>"),
    }))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connected_run_says_where_the_country_came_from_and_why_results_are_undetermined() {
    let server = aggregator_with_failing_helper().await;
    let dir = temp_dir("online");
    let data = dir.join("data").to_string_lossy().into_owned();
    let list = dir.join("pages.csv");
    let base = format!("http://127.0.0.1:{}", server.addr.port());
    write_list(&list, &[format!("{base}/news"), format!("{base}/rights")]);
    let l = list.to_string_lossy().into_owned();
    let out = vantage(&[
        "run",
        "--yes",
        "--no-upload",
        "--list",
        &l,
        "--aggregator",
        &base,
        "--data-dir",
        &data,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(shown.contains("2 undetermined."), "{shown}");
    assert!(!shown.contains("offline"), "pages answered: {shown}");
    let why: Vec<&str> = shown
        .lines()
        .skip_while(|l| *l != "Undetermined, and why:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(why.len(), 1, "{shown}");
    assert!(
        why[0].starts_with("  2  no usable control from the test helper: "),
        "{shown}"
    );
    assert!(
        shown.contains(
            "\nResults are tagged country IR and network AS12880 (as the aggregator sees this \
             connection).\n"
        ),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn measure_prints_its_outcome_on_stderr_and_exits_by_whether_it_measured() {
    let page = HttpFixture::fixed(Response::html(
        "<html><head><title>News</title></head><body>news</body></html>",
    ))
    .await;
    let url = format!("http://127.0.0.1:{}/", page.addr.port());
    let out = vantage(&["measure", &url]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let m: Value = serde_json::from_slice(&out.stdout).expect("the measurement on stdout");
    assert_eq!(m["input"], url.as_str());
    assert_eq!(
        stderr(&out),
        format!("{url}: undetermined: no control: no test helper was asked (--th URL asks one)\n")
    );

    // A failure measured is a result, not an error: exit 0, and the line says what failed.
    let dns = failing_resolver(&["gone.example"]).await;
    let resolver = dns.addr.to_string();
    let out = vantage(&[
        "measure",
        "http://gone.example/",
        "--resolver",
        &resolver,
        "--compact",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1);
    assert_eq!(
        stderr(&out),
        "http://gone.example/: undetermined: no control: no test helper was asked; here: \
         dns_nxdomain_error (--th URL asks one)\n"
    );

    // Nothing measured: exit 2, one line, nothing on stdout.
    let out = vantage(&["measure", "ftp://example.org/"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    // The choice is written where a person looks for it.
    let out = vantage(&["measure", "--help"]).await;
    // Wrapped to the terminal's width: compared word by word.
    let help = stdout(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for part in [
        "Exit status: 0 when the URL was measured, whatever the outcome (blocked, a failed lookup",
        "2 when nothing could be measured (a bad URL or option",
    ] {
        assert!(help.contains(part), "{help}");
    }
}

/// A data directory with `n` results measured from pages on loopback.
async fn stored_results(name: &str, n: usize) -> String {
    let server = HttpFixture::fixed(Response::html("<html><body>page</body></html>")).await;
    let dir = temp_dir(name);
    let data = dir.join("data").to_string_lossy().into_owned();
    let list = dir.join("pages.csv");
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://127.0.0.1:{}/{i}", server.addr.port()))
        .collect();
    write_list(&list, &urls);
    let l = list.to_string_lossy().into_owned();
    let out = vantage(&[
        "run",
        "--yes",
        "--no-upload",
        "--list",
        &l,
        "--concurrency",
        "16",
        "--data-dir",
        &data,
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn results_list_pages_and_says_undetermined_and_when_it_stopped() {
    let data = stored_results("list", 52).await;
    let out = vantage(&["results", "list", "--data-dir", &data]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert_eq!(shown.lines().count(), 50, "{shown}");
    assert!(!shown.contains("null"), "{shown}");
    for line in shown.lines() {
        // id, time (UTC), verdict, upload state, URL
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 7, "{line}");
        assert_eq!(fields[3], "UTC", "{line}");
        assert_eq!(fields[4], "undetermined", "{line}");
        assert_eq!(fields[5], "pending", "{line}");
    }
    assert_eq!(
        stderr(&out),
        "50 of 52 shown, newest first; --all for every one, --limit N for more\n"
    );

    let out = vantage(&["results", "list", "--all", "--data-dir", &data]).await;
    assert_eq!(stdout(&out).lines().count(), 52);
    assert_eq!(stderr(&out), "", "nothing left unsaid");
    let out = vantage(&["results", "list", "--limit", "3", "--data-dir", &data]).await;
    assert_eq!(stdout(&out).lines().count(), 3);
    assert!(
        stderr(&out).starts_with("3 of 52 shown"),
        "{}",
        stderr(&out)
    );
    // JSON lines stay JSON lines: the note goes to stderr.
    let out = vantage(&["results", "list", "--json", "--data-dir", &data]).await;
    for line in stdout(&out).lines() {
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(v["blocking"], Value::Null);
    }
    assert!(stderr(&out).starts_with("50 of 52 shown"));

    let empty = temp_dir("empty")
        .join("data")
        .to_string_lossy()
        .into_owned();
    let out = vantage(&["results", "list", "--data-dir", &empty]).await;
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr(&out),
        "no results stored yet: `vantage run` measures and stores them\n"
    );
}

/// Runs `vantage args` with a stdout whose reader has already gone away, as after
/// `vantage ... | head` once `head` has exited.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(VANTAGE)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .output()
        .expect("run vantage")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_ends_quietly_when_its_reader_goes_away() {
    let data = stored_results("pipe", 3).await;
    let page = HttpFixture::fixed(Response::html("<html><body>page</body></html>")).await;
    let url = format!("http://127.0.0.1:{}/", page.addr.port());
    let commands: Vec<Vec<&str>> = vec![
        vec!["results", "list", "--data-dir", &data],
        vec!["results", "list", "--json", "--data-dir", &data],
        vec!["status", "--data-dir", &data],
        vec!["id", "--data-dir", &data],
        vec!["measure", &url],
    ];
    for args in commands {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            with_closed_stdout(&a)
        })
        .await
        .expect("join");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_prints_the_last_upload_as_a_utc_time() {
    let data = stored_results("status", 1).await;
    let out = vantage(&["status", "--data-dir", &data]).await;
    assert!(
        stdout(&out).contains("\nlast upload: never\n"),
        "{}",
        stdout(&out)
    );
    // The store keeps the last upload as a Unix time; an upload sets it. 1796028092 s after
    // the epoch is 2026-11-30 08:41:32 UTC.
    let db = rusqlite::Connection::open(Path::new(&data).join("vantage.db")).expect("store");
    db.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_upload', '1796028092')",
        [],
    )
    .expect("set");
    drop(db);
    let out = vantage(&["status", "--data-dir", &data]).await;
    let shown = stdout(&out);
    assert!(
        shown.contains("\nlast upload: 2026-11-30 08:41:32 UTC\n"),
        "{shown}"
    );
    // The same format as the results list's times.
    let out = vantage(&["results", "list", "--data-dir", &data]).await;
    let line = stdout(&out);
    let time: Vec<&str> = line.split_whitespace().skip(1).take(3).collect();
    assert_eq!(time[2], "UTC", "{line}");
    assert_eq!(time[0].len(), "2026-11-30".len(), "{line}");
    assert_eq!(time[1].len(), "13:21:32".len(), "{line}");
}
