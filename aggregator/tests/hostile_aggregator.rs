//! The real `vantage` binary against a hostile aggregator on loopback: a small HTTP server
//! written here, on real sockets, that serves signed test lists with names meant to escape the
//! data directory, unsigned and re-signed lists, and answers uploads with 503s, truncated
//! answers, false "bad signature" verdicts and "unknown key" for every line. Then the real
//! aggregator, which requires enrolment, gets every result after `vantage enrol`.
//!
//! What a volunteer must be able to count on (SECURITY.md, "a malicious aggregator"): nothing is
//! written outside the data directory, lists nobody trusted are never used, and nothing measured
//! is lost whatever the aggregator answers.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::{AGGREGATOR, http, serve, stored, tempdir, vantage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_probe::envelope::{Identity, verify};
use vantage_probe::test_lists::{SIGNED_LISTS_KIND, SignedLists};

const HEADER: &str = "url,category_code,category_description,date_added,source,notes\n";

/// How the hostile server answers the next upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    /// 503 with `Retry-After`, as a busy aggregator.
    Busy,
    /// 429 with `Retry-After`, as a rate limit.
    TooMany,
    /// 200 with the first half of a valid answer.
    Truncated,
    /// 200 with an outcome for the first line only ("unknown key").
    FirstOnly,
    /// 200, every line "bad signature" (a lie: the lines verify).
    BadSignature,
    /// 200, every line "unknown key" (the default).
    UnknownKey,
}

/// The hostile aggregator's state: the test-list document it serves, its script of upload
/// answers, and every request it got (`METHOD /path`).
#[derive(Default)]
struct Hostile {
    lists: Mutex<String>,
    script: Mutex<VecDeque<Upload>>,
    requests: Mutex<Vec<String>>,
}

impl Hostile {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    fn uploads(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| *r == "POST /api/v1/measurements")
            .count()
    }

    fn serve_lists(&self, document: String) {
        *self.lists.lock().expect("lock") = document;
    }

    fn script(&self, steps: &[Upload]) {
        self.script.lock().expect("lock").extend(steps);
    }

    /// The answer to one request.
    fn answer(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, String) {
        self.requests
            .lock()
            .expect("lock")
            .push(format!("{method} {path}"));
        let json = || vec![("Content-Type".to_string(), "application/json".to_string())];
        if method == "GET" && path.starts_with("/api/v1/test-lists/") {
            return (200, json(), self.lists.lock().expect("lock").clone());
        }
        if method != "POST" || path != "/api/v1/measurements" {
            return (404, json(), r#"{"error":"not found"}"#.into());
        }
        let step = self
            .script
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Upload::UnknownKey);
        let wait = |status| {
            let mut h = json();
            h.push(("Retry-After".into(), "1".into()));
            (status, h, r#"{"error":"busy, retry later"}"#.to_string())
        };
        let text = String::from_utf8_lossy(body);
        let lines: Vec<(usize, String)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                (
                    i + 1,
                    verify(l)
                        .expect("the probe sends valid lines")
                        .id
                        .to_string(),
                )
            })
            .collect();
        let outcome = |(line, id): &(usize, String), reason: &str| serde_json::json!({"line": line, "id": id, "status": "rejected", "reason": reason});
        let results: Vec<serde_json::Value> = match step {
            Upload::Busy => return wait(503),
            Upload::TooMany => return wait(429),
            Upload::FirstOnly => lines
                .iter()
                .take(1)
                .map(|l| outcome(l, "unknown key"))
                .collect(),
            Upload::UnknownKey | Upload::Truncated => {
                lines.iter().map(|l| outcome(l, "unknown key")).collect()
            }
            // As the real aggregator says it: without an id, by line number.
            Upload::BadSignature => lines
                .iter()
                .map(|(line, _)| {
                    serde_json::json!({"line": line, "id": null, "status": "rejected",
                        "reason": "bad signature"})
                })
                .collect(),
        };
        let mut answer = serde_json::json!({ "results": results }).to_string();
        if step == Upload::Truncated {
            answer.truncate(answer.len() / 2);
        }
        (200, json(), answer)
    }

    /// Serves on a fresh loopback port; one request per connection.
    async fn start(self: &Arc<Self>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = self.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let Some((method, path, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    let (status, headers, body) = state.answer(&method, &path, &body);
                    let mut reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        reply.push_str(&format!("{k}: {v}\r\n"));
                    }
                    reply.push_str("\r\n");
                    reply.push_str(&body);
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        addr
    }
}

/// Reads one HTTP/1.1 request with a `Content-Length` body: (method, path, body).
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((method, path, buf[head_end..head_end + length].to_vec()))
}

/// A test-list document with `lists`, signed by `signer` (what `GET /api/v1/test-lists/{cc}`
/// answers).
fn signed_lists(signer: &Identity, lists: &[(&str, &str)]) -> String {
    let doc = SignedLists {
        kind: SIGNED_LISTS_KIND.into(),
        cc: "ir".into(),
        generated_at: "2026-11-23 00:00:00".into(),
        lists: lists
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
    };
    let json = serde_json::to_string(&doc).expect("json");
    signer.seal(&json).expect("seal").1
}

fn list(host: &str) -> String {
    format!("{HEADER}https://{host}/,NEWS,News Media,2026-11-23,test,\n")
}

/// `vantage` with these arguments, off the async runtime, without the caller's environment
/// choosing an aggregator or a data directory.
async fn probe(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(vantage())
            .args(&args)
            .env_remove("VANTAGE_AGGREGATOR")
            .env_remove("VANTAGE_DATA_DIR")
            .env_remove("VANTAGE_SOCKS5")
            .output()
            .expect("run vantage")
    })
    .await
    .expect("join")
}

fn args(items: &[&str], data: &Path) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.push("--data-dir".into());
    v.push(data.display().to_string());
    v
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `path` with `..` and `.` resolved by name, as the kernel would resolve them without links.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every file under `root` with its contents: what a refused fetch must leave exactly as it was.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read");
                out.insert(path, bytes);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_from_a_hostile_aggregator_write_nothing_outside_the_data_directory() {
    let root = tempdir("hostile-lists");
    let data = root.join("probe").join("data");
    let aggregator = Identity::generate().expect("key");
    let key = aggregator.public_key();
    let hostile = Arc::new(Hostile::default());
    let base = format!("http://{}/", hostile.start().await);
    let fetch = |extra: &[&str]| {
        let mut a = vec!["lists", "fetch", "--cc", "IR", "--aggregator", &base];
        a.extend_from_slice(extra);
        args(&a, &data)
    };

    // (c) First use over plain HTTP without a key: refused before asking, saying how to pin.
    hostile.serve_lists(signed_lists(
        &aggregator,
        &[
            ("ir", &list("genuine-ir.example")),
            ("global", &list("genuine-global.example")),
        ],
    ));
    let out = probe(fetch(&[])).await;
    let (_, err) = text(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("is plain HTTP and no aggregator key is pinned")
            && err.contains("--aggregator-key KEY"),
        "{err}"
    );
    assert!(
        hostile.requests().is_empty(),
        "nothing asked: {:?}",
        hostile.requests()
    );
    assert!(!data.join("lists").exists() && !data.join("aggregator.key").exists());

    // A key that is not an Ed25519 public key is refused as such.
    let out = probe(fetch(&["--aggregator-key", "BASE64..."])).await;
    let (_, err) = text(&out);
    assert!(
        !out.status.success() && err.contains("\"BASE64...\" is not a base64 Ed25519 public key"),
        "{err}"
    );

    // With the operator's key: accepted, and pinned.
    let out = probe(fetch(&["--aggregator-key", &key])).await;
    let (said, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("pinned the aggregator's key {key}")),
        "{err}"
    );
    assert!(said.contains("fetched ir (1 lines)"), "{said}");
    assert_eq!(
        std::fs::read_to_string(data.join("lists/ir.csv")).expect("ir"),
        list("genuine-ir.example")
    );
    assert_eq!(
        std::fs::read_to_string(data.join("aggregator.key"))
            .expect("pin")
            .trim(),
        key
    );

    // (a) A correctly signed document whose list names point elsewhere: refused whole, naming
    // the name, and not one file anywhere changes. The absolute names include one inside this
    // test's directory, which the probe's user can write, so a write would show.
    let escape_abs = root.join("abs").join("x").display().to_string();
    let bad_names = [
        "../../x",
        "/abs/x",
        escape_abs.as_str(),
        "..",
        "g lobal",
        "GLOBAL",
    ];
    // Where the old code would have written each one: `lists/<name>.csv`.
    let would_be: Vec<PathBuf> = bad_names
        .iter()
        .map(|n| lexical(&data.join("lists").join(format!("{n}.csv"))))
        .collect();
    assert!(would_be.contains(&root.join("probe/x.csv")));
    assert!(would_be.contains(&root.join("abs/x.csv")));
    let before = snapshot(&root);
    for name in bad_names {
        hostile.serve_lists(signed_lists(
            &aggregator,
            &[
                ("ir", &list("hostile-ir.example")),
                (name, &list("hostile.example")),
            ],
        ));
        let out = probe(fetch(&[])).await;
        let (_, err) = text(&out);
        for path in &would_be {
            assert!(!path.exists(), "{name:?} wrote {}", path.display());
        }
        assert!(!Path::new("/abs/x.csv").exists());
        assert_eq!(snapshot(&root), before, "{name:?} changed a file");
        assert!(!out.status.success(), "{name:?} accepted: {err}");
        assert_eq!(out.status.code(), Some(2));
        assert!(
            err.contains(&format!(
                "test lists refused: {name:?} is not a list name (only global or a two-letter \
                 lower-case country code); nothing was written"
            )),
            "{name:?}: {err}"
        );
    }
    // The data directory holds only what the good fetch put there, and no temporary file.
    let mut kept: Vec<String> = snapshot(&data)
        .keys()
        .map(|p| p.strip_prefix(&data).expect("inside").display().to_string())
        .collect();
    kept.sort();
    assert_eq!(kept, ["aggregator.key", "lists/global.csv", "lists/ir.csv"]);

    // (b) An unsigned document, and one signed by another key: refused with what is wrong, the
    // lists fetched before untouched and still the ones a run uses.
    let bare = serde_json::json!({"kind": SIGNED_LISTS_KIND, "cc": "ir",
        "generated_at": "2026-11-23 00:00:00", "lists": {"ir": list("unsigned.example")}});
    let impostor = Identity::generate().expect("key");
    let cases = [
        (
            bare.to_string(),
            "test lists refused: the document is not signed".to_string(),
        ),
        (
            signed_lists(&impostor, &[("ir", &list("resigned.example"))]),
            format!(
                "test lists refused: signed by {}, but the aggregator's key is {key}",
                impostor.public_key()
            ),
        ),
    ];
    for (document, want) in cases {
        hostile.serve_lists(document);
        let out = probe(fetch(&[])).await;
        let (_, err) = text(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&want), "{err}");
        assert_eq!(snapshot(&root), before, "a refused document changed a file");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("lists/ir.csv")).expect("ir"),
        list("genuine-ir.example")
    );
}

/// `vantage status` for a data directory.
async fn status(data: &Path) -> String {
    let out = probe(args(&["status"], data)).await;
    let (said, err) = text(&out);
    assert!(out.status.success(), "{err}");
    said
}

/// Canary targets on loopback that answer a TCP connect at once.
async fn loopback_targets(path: &Path) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    std::fs::write(
        path,
        format!(
            "address,port,protocol,description\n{},{},tcp,loopback target\n",
            addr.ip(),
            addr.port()
        ),
    )
    .expect("targets");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_an_aggregator_refuses_are_kept_and_all_arrive_after_enrolment() {
    let root = tempdir("hostile-upload");
    let data = root.join("data");
    let targets = root.join("canaries.csv");
    loopback_targets(&targets).await;
    let targets_arg = targets.display().to_string();
    for _ in 0..5 {
        let out = probe(args(
            &["canary", "--targets", &targets_arg, "--timeout", "2"],
            &data,
        ))
        .await;
        assert!(out.status.success(), "{}", text(&out).1);
    }
    let measured: Vec<String> = stored(&data).into_iter().map(|(id, _)| id).collect();
    assert_eq!(measured.len(), 5);
    let everything_kept = |data: PathBuf, measured: Vec<String>| async move {
        let mut now: Vec<String> = stored(&data).into_iter().map(|(id, _)| id).collect();
        let mut want = measured;
        now.sort();
        want.sort();
        assert_eq!(now, want, "a result was lost");
    };

    let hostile = Arc::new(Hostile::default());
    let base = format!("http://{}/", hostile.start().await);
    let upload = |extra: &[&str]| {
        let mut a = vec!["upload", "--aggregator", &base, "--max-attempts", "1"];
        a.extend_from_slice(extra);
        args(&a, &data)
    };

    // A 503 and a 429 with Retry-After, then an answer cut in half: nothing is answered for
    // any line, so everything stays queued.
    hostile.script(&[Upload::Busy, Upload::TooMany, Upload::Truncated]);
    // The probe reads the wait asked for (Retry-After: 1) from the answer.
    for want in [
        "HTTP 503 and asks to wait 1 s",
        "HTTP 429 and asks to wait 1 s",
        "not the expected JSON",
    ] {
        let out = probe(upload(&[])).await;
        let (said, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}{err}");
        assert!(err.contains(want), "{err}");
        assert!(status(&data).await.contains("waiting for upload: 5"));
    }
    assert_eq!(hostile.uploads(), 3);

    // An answer for the first line only, then a 503: the other four stay queued.
    hostile.script(&[Upload::FirstOnly, Upload::Busy]);
    let out = probe(upload(&[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out).1);
    let said = status(&data).await;
    assert!(said.contains("waiting for upload: 4"), "{said}");
    assert!(
        said.contains("held back by the aggregator, kept to send again: 1"),
        "{said}"
    );

    // "unknown key" for every line: held, with the reason, and the volunteer told what to do.
    let out = probe(upload(&[])).await;
    let (said, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        said.trim(),
        "Uploaded 0 results (0 already there, 0 refused, 4 held); 0 waiting."
    );
    assert!(err.contains("`vantage enrol TOKEN`"), "{err}");
    let said = status(&data).await;
    assert!(said.contains("waiting for upload: 0"), "{said}");
    assert!(
        said.contains("held back by the aggregator, kept to send again: 5"),
        "{said}"
    );
    assert!(said.contains("\n  5  unknown key\n"), "{said}");
    assert!(
        said.contains("sent again after `vantage enrol TOKEN`"),
        "{said}"
    );
    assert!(!said.contains("refused for good"), "{said}");

    // A plain upload does not send them again: the aggregator is not hammered.
    let uploads = hostile.uploads();
    let out = probe(upload(&[])).await;
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(hostile.uploads(), uploads, "held results were resent");

    // --retry-rejected sends them; a false "bad signature" for lines that verify here does
    // not take them out of the outbox either.
    hostile.script(&[Upload::BadSignature]);
    let out = probe(upload(&["--retry-rejected"])).await;
    let (said, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(hostile.uploads(), uploads + 1);
    assert!(said.contains("0 refused, 5 held"), "{said}");
    let said = status(&data).await;
    assert!(said.contains("\n  5  bad signature\n"), "{said}");
    assert!(!said.contains("refused for good"), "{said}");
    everything_kept(data.clone(), measured.clone()).await;

    // The real aggregator, which requires enrolment, refuses the key too: still held.
    let real_dir = root.join("aggregator");
    std::fs::create_dir_all(&real_dir).expect("dir");
    let ca = real_dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = real_dir.join("agg.db");
    let real = serve(&ca, &db, &["--require-enrolment"]).await;
    let real_base = real.base.clone();
    let out = probe(args(
        &["upload", "--aggregator", &real_base, "--retry-rejected"],
        &data,
    ))
    .await;
    let (said, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(said.contains("0 refused, 5 held"), "{said}");
    assert!(status(&data).await.contains("\n  5  unknown key\n"));

    // The operator's token; `vantage enrol` sends everything held.
    let db_arg = db.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(AGGREGATOR)
            .args(["keys", "token", "--db"])
            .arg(&db_arg)
            .output()
            .expect("keys token")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", text(&out).1);
    let token = text(&out).0.trim().to_string();
    let out = probe(args(&["enrol", "--aggregator", &real_base, &token], &data)).await;
    let (said, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(said.starts_with("enrolled "), "{said}");
    assert!(
        said.contains("Uploaded 5 results (0 already there, 0 refused); 0 waiting."),
        "{said}"
    );
    let said = status(&data).await;
    assert!(said.contains("waiting for upload: 0"), "{said}");
    assert!(!said.contains("held back"), "{said}");

    // The aggregator has every measurement, byte for byte.
    for id in &measured {
        let (code, body) = http(
            &real_base,
            "GET",
            &format!("/api/v1/measurements/{id}"),
            &[],
            b"",
        );
        assert_eq!(code, 200, "{id}: {body}");
        let envelope = verify(body.trim()).expect("the stored envelope verifies");
        assert_eq!(envelope.id.as_str(), id);
    }
    everything_kept(data.clone(), measured).await;
    drop(real);
}

/// Each stored result's id and upload state, as `vantage results list --json` shows them.
async fn upload_states(data: &Path) -> BTreeMap<String, String> {
    let out = probe(args(
        &["results", "list", "--json", "--limit", "100000"],
        data,
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    text(&out)
        .0
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["id"].as_str().expect("id").to_string(),
                v["upload"].as_str().expect("upload").to_string(),
            )
        })
        .collect()
}

/// A running `vantage daemon`, its log in a file; killed on drop.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 200 ms until it is true, for at most `secs` seconds.
async fn eventually<F, Fut>(secs: u64, what: &str, daemon: &Daemon, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(
            std::time::Instant::now() < until,
            "{what} within {secs} s; the daemon's log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_sends_what_was_held_once_its_key_is_accepted() {
    let root = tempdir("hostile-daemon");
    let data = root.join("data");
    let targets = root.join("canaries.csv");
    loopback_targets(&targets).await;
    let ca = root.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = root.join("agg.db");
    let real = serve(&ca, &db, &["--require-enrolment"]).await;
    let config = root.join("vantage.toml");
    std::fs::write(
        &config,
        format!(
            "informed_consent = true\ndata_dir = {data:?}\n\
             [aggregator]\nurl = {:?}\n\
             [network]\ncc = \"IT\"\nasn = \"AS3269\"\n\
             [lists]\nfetch = false\n\
             [schedule]\ncanary_seconds = 1\nheartbeat_seconds = 1\nrun_seconds = 0\n\
             upload_seconds = 1\nupload_max_backoff_seconds = 1\n\
             [canary]\ntargets = {targets:?}\ntimeout_seconds = 1\n",
            real.base
        ),
    )
    .expect("config");
    let log = root.join("daemon.log");
    let daemon = Daemon {
        child: Command::new(vantage())
            .args(["daemon", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start vantage daemon"),
        log,
    };

    // The aggregator does not know the key: results are held, none lost, none dropped.
    eventually(30, "three results held for the key", &daemon, || async {
        status(&data).await.contains("  unknown key")
            && upload_states(&data)
                .await
                .values()
                .filter(|s| *s == "held")
                .count()
                >= 3
    })
    .await;
    assert!(
        daemon.log().contains("refuses this probe's key"),
        "{}",
        daemon.log()
    );
    let held: Vec<String> = upload_states(&data)
        .await
        .into_iter()
        .filter(|(_, s)| s == "held")
        .map(|(id, _)| id)
        .collect();
    assert!(
        upload_states(&data).await.values().all(|s| s != "rejected"),
        "nothing refused for good"
    );

    // The operator trusts the key (as an enrolment does): the next heartbeat gets through and
    // the daemon sends everything it held, without being asked.
    let key = status(&data)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("key: ").map(str::to_string))
        .expect("key");
    let db_arg = db.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(AGGREGATOR)
            .args(["keys", "allow", &key, "--db"])
            .arg(&db_arg)
            .output()
            .expect("keys allow")
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", text(&out).1);
    eventually(30, "every held result accepted", &daemon, || async {
        let states = upload_states(&data).await;
        held.iter()
            .all(|id| states.get(id).map(String::as_str) == Some("accepted"))
    })
    .await;
    assert!(
        daemon.log().contains("accepts this probe's key now"),
        "{}",
        daemon.log()
    );
    for id in &held {
        let (code, body) = http(
            &real.base,
            "GET",
            &format!("/api/v1/measurements/{id}"),
            &[],
            b"",
        );
        assert_eq!(code, 200, "{id}: {body}");
    }
    drop(daemon);
    drop(real);
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_check_says_which_key_lists_must_be_signed_by() {
    let root = tempdir("hostile-check");
    let key = Identity::generate().expect("key").public_key();
    let check = |url: &str, key: Option<&str>| {
        let config = root.join("vantage.toml");
        let key = key.map_or(String::new(), |k| format!("key = {k:?}\n"));
        std::fs::write(
            &config,
            format!(
                "informed_consent = true\ndata_dir = {:?}\n[aggregator]\nurl = {url:?}\n{key}",
                root.join("data")
            ),
        )
        .expect("config");
        vec![
            "daemon".to_string(),
            "--check".to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ]
    };
    let line = |out: Output| {
        assert!(out.status.success(), "{}", text(&out).1);
        text(&out)
            .0
            .lines()
            .find(|l| l.starts_with("test lists: "))
            .expect("a test lists line")
            .to_string()
    };
    let said = line(probe(check("http://127.0.0.1:9/", None)).await);
    assert!(
        said.contains("NOT fetched: the aggregator is plain HTTP"),
        "{said}"
    );
    let said = line(probe(check("http://127.0.0.1:9/", Some(&key))).await);
    assert!(
        said.contains(&format!("signed by the configured key {key}")),
        "{said}"
    );
    let said = line(probe(check("https://127.0.0.1:9/", None)).await);
    assert!(said.contains("trusted on first use over HTTPS"), "{said}");
    // A key that is not one stops the daemon before it starts (EX_CONFIG).
    let out = probe(check("http://127.0.0.1:9/", Some("BASE64..."))).await;
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out)
            .1
            .contains("aggregator.key: \"BASE64...\" is not a base64 Ed25519 public key"),
        "{}",
        text(&out).1
    );
}
