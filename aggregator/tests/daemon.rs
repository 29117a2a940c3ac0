//! `vantage daemon` end to end, with the real binaries on loopback: three daemons of one network
//! measure through an outage in which both their "Internet" (the canary targets) and the
//! aggregator go away, then hand in everything they recorded; the aggregator's timeline shows
//! the outage. Also: SIGTERM with measurements in flight, SIGKILL at random moments, SIGHUP and
//! the systemd notifications.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Server, http, start_aggregator_on, tempdir, vantage};
use serde_json::Value;
use vantage_aggregator::detect::format_time;
use vantage_aggregator::store::model::parse_time;
use vantage_fixtures::http::{Handler, HttpFixture, Response};
use vantage_fixtures::tcp::SilentListener;

const HEADER: &str = "url,category_code,category_description,date_added,source,notes\n";

/// A running `vantage daemon`, its stderr collected line by line; killed on drop.
struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(vantage());
        cmd.args(["daemon", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start vantage daemon");
        let log = common::collect_stderr(&mut child);
        Daemon { child, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    fn has(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    fn count(&self, needle: &str) -> usize {
        self.log().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until a log line contains `needle`.
    fn wait_for(&self, needle: &str, within: Duration) {
        self.wait_for_nth(needle, 1, within);
    }

    /// Waits until `n` log lines contain `needle`.
    fn wait_for_nth(&self, needle: &str, n: usize, within: Duration) {
        let started = Instant::now();
        while self.count(needle) < n {
            assert!(
                started.elapsed() < within,
                "no {needle:?} in the daemon's log within {within:?}:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the daemon has logged `n` stored results, or `within` has passed; the
    /// caller asserts.
    fn wait_for_ids(&self, n: usize, within: Duration) {
        let started = Instant::now();
        while self.logged_ids().len() < n && started.elapsed() < within {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{name}");
    }

    /// Sends SIGTERM and waits for the exit: (status, how long it took).
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the daemon ignored SIGTERM:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ids of the results the daemon said it stored (canaries and list-run results).
    fn logged_ids(&self) -> BTreeSet<String> {
        self.log()
            .iter()
            .filter(|l| l.contains("canary: ") || l.contains("measured "))
            .filter_map(|l| {
                let (_, rest) = l.split_once("id=\"")?;
                Some(rest.split('"').next()?.to_string())
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

async fn sleep_until(t: f64) {
    let d = t - unix_now();
    if d > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(d)).await;
    }
}

/// One stored result as `vantage results list --json` shows it.
#[derive(Debug, Clone)]
struct Local {
    id: String,
    measured_at: i64,
    accessible: Option<bool>,
    upload: String,
    canary: bool,
}

fn local_results(data: &Path) -> Vec<Local> {
    let out = Command::new(vantage())
        .args([
            "results",
            "list",
            "--json",
            "--limit",
            "1000000",
            "--data-dir",
        ])
        .arg(data)
        .output()
        .expect("vantage results");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            Local {
                id: v["id"].as_str().expect("id").to_string(),
                measured_at: parse_time(v["measured_at"].as_str().expect("time")).expect("time"),
                accessible: v["accessible"].as_bool(),
                upload: v["upload"].as_str().expect("state").to_string(),
                canary: v["input"].is_null(),
            }
        })
        .collect()
}

/// Canary targets the test can take down and bring back: TCP listeners on fixed ports that
/// accept and hang up, like anycast servers answering a connect.
struct Uplink {
    addrs: Vec<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Uplink {
    async fn new() -> Uplink {
        let mut up = Uplink {
            addrs: Vec::new(),
            tasks: Vec::new(),
        };
        for _ in 0..2 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            up.addrs.push(l.local_addr().expect("addr"));
            up.tasks.push(Self::serve(l));
        }
        up
    }

    fn serve(l: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let _ = l.accept().await;
            }
        })
    }

    /// Closes the listeners: connects are refused, as when the uplink is cut.
    async fn cut(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restore(&mut self) {
        for addr in self.addrs.clone() {
            let l = tokio::net::TcpListener::bind(addr).await.expect("rebind");
            self.tasks.push(Self::serve(l));
        }
    }

    fn targets(&self, path: &Path) {
        let mut text = "address,port,protocol,description\n".to_string();
        for a in &self.addrs {
            text.push_str(&format!("{},{},tcp,loopback target\n", a.ip(), a.port()));
        }
        std::fs::write(path, text).expect("targets");
    }
}

fn write_config(path: &Path, body: &str) {
    std::fs::write(path, format!("informed_consent = true\n{body}")).expect("config");
}

/// `(id, probe_key, measured_at)` of every canary the aggregator stored.
fn stored_canaries(db: &Path) -> Vec<(String, String, i64)> {
    let conn = rusqlite::Connection::open(db).expect("open aggregator db");
    let mut stmt = conn
        .prepare("SELECT id, probe_key, measured_at FROM measurements WHERE test_name = 'canary'")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })
    .expect("query")
    .map(|r| {
        let (id, key, at) = r.expect("row");
        (id, key, parse_time(&at).expect("time"))
    })
    .collect()
}

fn probe_key(data: &Path) -> String {
    let out = Command::new(vantage())
        .args(["id", "--data-dir"])
        .arg(data)
        .output()
        .expect("vantage id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn timeline(base: &str) -> Vec<Value> {
    let base = base.to_string();
    let (status, body) = tokio::task::spawn_blocking(move || {
        http(
            &base,
            "GET",
            "/api/v1/timeline?cc=ir&kind=shutdown",
            &[],
            b"",
        )
    })
    .await
    .expect("join");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_measure_through_an_outage_and_hand_in_everything_once() {
    let dir = tempdir("daemon-outage");
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    // Thresholds scaled to one-second heartbeats and a thirty-second outage; the defaults are
    // scaled to one-minute heartbeats and outages of five minutes or more.
    let detect = dir.join("detect.toml");
    std::fs::write(
        &detect,
        "[outage]\nsilence_seconds = 6\nmin_gap_seconds = 10\nburst_seconds = 10\n\
         live_seconds = 900\nmin_probes = 3\nsettle_seconds = 60\n",
    )
    .expect("detect config");
    let extra = [
        "--detect-every",
        "1",
        "--detect-config",
        detect.to_str().expect("utf-8"),
    ];
    let start = |listen: String| {
        let (ca, db) = (ca.clone(), db.clone());
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            start_aggregator_on(&listen, &ca, &db, &extra)
        })
    };
    let mut server: Option<Server> = Some(start("127.0.0.1:0".into()).await.expect("join"));
    let base = server.as_ref().expect("server").base.clone();
    let listen = base.trim_start_matches("http://").to_string();

    let mut uplink = Uplink::new().await;
    let targets = dir.join("canaries.csv");
    uplink.targets(&targets);
    let mut daemons = Vec::new();
    let mut datas = Vec::new();
    for p in 0..3 {
        let data = dir.join(format!("probe{p}"));
        let config = dir.join(format!("probe{p}.toml"));
        write_config(
            &config,
            &format!(
                "data_dir = {data:?}\n\
                 [aggregator]\nurl = {base:?}\n\
                 [network]\ncc = \"IR\"\nasn = \"AS64500\"\n\
                 [lists]\nfetch = false\n\
                 [schedule]\ncanary_seconds = 1\nheartbeat_seconds = 1\nrun_seconds = 0\n\
                 upload_seconds = 2\nupload_max_backoff_seconds = 2\n\
                 [canary]\ntargets = {targets:?}\ntimeout_seconds = 1\n"
            ),
        );
        daemons.push(Daemon::start(&config, &[]));
        datas.push(data);
    }
    for d in &daemons {
        d.wait_for("canary: 2 of 2 targets answered", Duration::from_secs(20));
    }

    // The outage straddles a 5-minute boundary: the aggregator keeps each probe's first and
    // last contact per 5-minute bin, so a gap inside one bin shorter than the bin is invisible
    // to it (as it should be with its default thresholds, where gaps under 5 minutes are
    // dropped anyway).
    let ready = unix_now() + 10.0;
    let boundary = ((ready + 15.0) / 300.0).ceil() * 300.0;
    let (cut, back) = (boundary - 15.0, boundary + 15.0);
    sleep_until(cut).await;
    uplink.cut().await;
    drop(server.take());
    let cut_at = unix_now();
    sleep_until(back).await;
    uplink.restore().await;
    server = Some(start(listen.clone()).await.expect("join"));
    let back_at = unix_now();
    for d in &daemons {
        d.wait_for("aggregator unreachable", Duration::from_secs(20));
        // Once at start, and again when the outage is over.
        d.wait_for_nth("aggregator reachable", 2, Duration::from_secs(20));
    }

    // The timeline shows the outage once the queued canaries confirm it.
    let started = Instant::now();
    let event = loop {
        let events = timeline(&base).await;
        let done = events.iter().find(|e| {
            e["status"] == "ended" && e["suspected"] == false && e["entity"]["asn"] == "AS64500"
        });
        if let Some(e) = done {
            break e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no confirmed, ended shutdown: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let start_t = parse_time(event["start"].as_str().expect("start")).expect("time") as f64;
    let end_t = parse_time(event["end"].as_str().expect("end")).expect("time") as f64;
    assert!(
        (start_t - cut_at).abs() <= 10.0 && (end_t - back_at).abs() <= 10.0,
        "event {} to {} for an outage from {} to {}",
        event["start"],
        event["end"],
        format_time(cut_at as i64),
        format_time(back_at as i64)
    );
    assert_eq!(event["probes"], 3, "{event:#?}");
    println!(
        "outage {} to {}; event {} to {}, {} evidence ids",
        format_time(cut_at as i64),
        format_time(back_at as i64),
        event["start"],
        event["end"],
        event["evidence"].as_array().map_or(0, Vec::len)
    );

    // SIGTERM under load: each stops within 5 s with status 0.
    for d in &mut daemons {
        let (status, took) = d.terminate();
        assert!(status.success(), "exit status {status}");
        assert!(took <= Duration::from_secs(5), "took {took:?}");
        assert!(d.has("stopped"));
    }

    // Canaries throughout the outage, with their real times, all failed; before and after,
    // they succeeded.
    let stored = stored_canaries(&db);
    let mut at_aggregator: BTreeMap<String, usize> = BTreeMap::new();
    for (id, _, _) in &stored {
        *at_aggregator.entry(id.clone()).or_default() += 1;
    }
    for (d, data) in daemons.iter().zip(&datas) {
        let local = local_results(data);
        let key = probe_key(data);
        let mut during: Vec<&Local> = local
            .iter()
            .filter(|r| r.canary && (r.measured_at as f64) > cut_at + 1.0)
            .filter(|r| (r.measured_at as f64) < back_at - 1.0)
            .collect();
        during.sort_by_key(|r| r.measured_at);
        assert!(
            during.len() >= 20,
            "only {} canaries recorded during a {:.0} s outage",
            during.len(),
            back_at - cut_at
        );
        assert!(
            during.iter().all(|r| r.accessible == Some(false)),
            "a canary succeeded while the uplink was cut"
        );
        let times: Vec<i64> = during.iter().map(|r| r.measured_at).collect();
        println!(
            "probe {key}: {} results, {} failed canaries during the outage",
            local.len(),
            during.len()
        );
        assert!(
            times.windows(2).all(|w| w[1] - w[0] <= 3),
            "a hole in the canaries: {times:?}"
        );
        assert!(
            local
                .iter()
                .filter(|r| r.canary && (r.measured_at as f64) < cut_at - 2.0)
                .all(|r| r.accessible == Some(true))
        );
        // Everything the daemon logged is stored locally, and everything it uploaded is at the
        // aggregator once, under this probe's key.
        let ids: BTreeSet<String> = local.iter().map(|r| r.id.clone()).collect();
        assert!(d.logged_ids().is_subset(&ids));
        let uploaded: Vec<&Local> = local.iter().filter(|r| r.upload != "pending").collect();
        assert!(
            local.len() - uploaded.len() <= 3,
            "{} results still waiting after the daemon stopped",
            local.len() - uploaded.len()
        );
        for r in &uploaded {
            assert_eq!(r.upload, "accepted", "{r:?}");
            assert_eq!(at_aggregator.get(&r.id), Some(&1), "{r:?}");
        }
        let theirs: BTreeSet<&String> = stored
            .iter()
            .filter(|(_, k, _)| *k == key)
            .map(|(id, _, _)| id)
            .collect();
        let ours: BTreeSet<&String> = uploaded.iter().map(|r| &r.id).collect();
        assert_eq!(theirs, ours, "the aggregator has exactly what was uploaded");
    }
    drop(server);
}

fn write_list(path: &Path, urls: &[String]) {
    let mut text = HEADER.to_string();
    for u in urls {
        text.push_str(&format!("{u},NEWS,News Media,2026-11-23,test,\n"));
    }
    std::fs::write(path, text).expect("list");
}

fn list_config(dir: &Path, name: &str, urls: &[String]) -> (PathBuf, PathBuf) {
    let data = dir.join(format!("{name}-data"));
    let list = dir.join(format!("{name}.csv"));
    write_list(&list, urls);
    let config = dir.join(format!("{name}.toml"));
    write_config(
        &config,
        &format!(
            "data_dir = {data:?}\n\
             [lists]\nfiles = [{list:?}]\n\
             [schedule]\ncanary_seconds = 1\nrun_seconds = 60\nrun_jitter_seconds = 0\n\
             first_run_seconds = 0\n\
             [canary]\ntargets = {:?}\ntimeout_seconds = 1\n\
             [budget]\nconcurrency = 4\n\
             [engine]\ntimeout_seconds = 20\n",
            dir.join("canaries.csv")
        ),
    );
    (config, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_measurements_in_flight_stops_within_five_seconds_losing_nothing() {
    let dir = tempdir("daemon-term");
    let uplink = Uplink::new().await;
    uplink.targets(&dir.join("canaries.csv"));
    let page: Handler = Arc::new(|req| Response::html(&format!("<title>{}</title>", req.path)));
    let open = HttpFixture::start(page).await;
    let silent = SilentListener::start().await;
    let mut urls: Vec<String> = (0..20)
        .map(|i| format!("http://127.0.0.1:{}/page/{i}", open.addr.port()))
        .collect();
    // These never answer: four measurements hang on them, twenty seconds each, at SIGTERM.
    urls.extend((0..8).map(|i| format!("http://{}/stall/{i}", silent.addr)));
    let (config, data) = list_config(&dir, "term", &urls);
    // The twenty pages come first in the list: once they are measured, the four workers are
    // on the stalled ones. Waiting for them (rather than a fixed two seconds, which a loaded
    // machine can spend on a handful of pages) makes sure of both.
    let mut daemon = tokio::task::spawn_blocking(move || {
        let d = Daemon::start(&config, &[]);
        d.wait_for_nth("measured http://127.0.0.1", 20, Duration::from_secs(60));
        d
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, took) = daemon.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(took <= Duration::from_secs(5), "SIGTERM took {took:?}");
    let logged = daemon.logged_ids();
    assert!(
        logged.len() >= 20,
        "{} results logged: {:#?}",
        logged.len(),
        daemon.log()
    );
    assert!(
        !daemon.has("/stall/"),
        "a stalled measurement cannot have completed"
    );
    let local: BTreeSet<String> = local_results(&data).into_iter().map(|r| r.id).collect();
    assert!(logged.is_subset(&local), "a completed measurement was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_completed() {
    let dir = tempdir("daemon-kill");
    let uplink = Uplink::new().await;
    uplink.targets(&dir.join("canaries.csv"));
    let page: Handler = Arc::new(|req| Response::html(&format!("<title>{}</title>", req.path)));
    let open = HttpFixture::start(page).await;
    let urls: Vec<String> = (0..400)
        .map(|i| format!("http://127.0.0.1:{}/page/{i}", open.addr.port()))
        .collect();
    let (config, data) = list_config(&dir, "kill", &urls);
    let mut all_logged = BTreeSet::new();
    // Four rounds at least; more (up to twelve) while fewer than twenty results were logged
    // in all, as on a loaded machine where a round of 0.3 s measures next to nothing. Every
    // round checks the same.
    for round in 0..12u32 {
        if round >= 4 && all_logged.len() >= 20 {
            break;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        // Somewhere between 0.3 s and 2.3 s into the run, wherever the daemon is.
        let after = Duration::from_millis(300 + u64::from(nanos % 2000));
        let config = config.clone();
        let (config, logged, killed) = tokio::task::spawn_blocking(move || {
            let mut d = Daemon::start(&config, &[]);
            d.wait_for("daemon started", Duration::from_secs(30));
            std::thread::sleep(after);
            d.child.kill().expect("SIGKILL");
            let status = d.child.wait().expect("wait");
            let log = d.log();
            let logged = d.logged_ids();
            (config, logged, (status, log))
        })
        .await
        .expect("join");
        drop(config);
        assert!(!killed.0.success(), "round {round}: the daemon was killed");
        let local: BTreeSet<String> = local_results(&data).into_iter().map(|r| r.id).collect();
        let lost: Vec<&String> = logged.difference(&local).collect();
        assert!(
            lost.is_empty(),
            "round {round}, killed after {after:?}: lost {lost:?}"
        );
        all_logged.extend(logged);
    }
    assert!(
        all_logged.len() >= 20,
        "the kills came before anything was measured: {}",
        all_logged.len()
    );
    let conn = rusqlite::Connection::open(data.join("vantage.db")).expect("store");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity");
    assert_eq!(check, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_and_systemd_hears_ready_watchdog_reload_and_stopping() {
    let dir = tempdir("daemon-notify");
    let uplink = Uplink::new().await;
    let targets = dir.join("canaries.csv");
    uplink.targets(&targets);
    let data = dir.join("data");
    let config = dir.join("vantage.toml");
    let body = move |canary: u32| {
        format!(
            "data_dir = {data:?}\n[schedule]\ncanary_seconds = {canary}\nrun_seconds = 0\n\
             [canary]\ntargets = {targets:?}\ntimeout_seconds = 1\n"
        )
    };
    write_config(&config, &body(30));
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    // Read like systemd does, all the time; the test then looks at what arrived, in order.
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = heard.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = socket.recv(&mut buf) {
            sink.lock()
                .expect("heard")
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    // Waits for a message containing `want` after position `*seen`, and moves past it.
    let next = move |seen: &mut usize, want: &str| {
        let started = Instant::now();
        loop {
            let all = heard.lock().expect("heard").clone();
            if let Some(i) = all.iter().skip(*seen).position(|m| m.contains(want)) {
                *seen += i + 1;
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no {want:?} from the daemon; heard {all:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let socket_str = socket_path.to_str().expect("utf-8").to_string();
    tokio::task::spawn_blocking(move || {
        let mut seen = 0;
        let mut d = Daemon::start(
            &config,
            &[("NOTIFY_SOCKET", &socket_str), ("WATCHDOG_USEC", "400000")],
        );
        next(&mut seen, "READY=1");
        // The watchdog is fed at half its interval.
        next(&mut seen, "WATCHDOG=1");
        next(&mut seen, "WATCHDOG=1");

        // A valid new file: reloaded, and rounds now come every second.
        write_config(&config, &body(1));
        d.signal("HUP");
        next(&mut seen, "RELOADING=1");
        next(&mut seen, "READY=1");
        d.wait_for("configuration reloaded", Duration::from_secs(30));
        // Two rounds within 15 s, where the old interval would take 30 s: asked until they
        // come, since a loaded machine can stretch a round of 1 s well past a second.
        let before = d.logged_ids().len();
        d.wait_for_ids(before + 2, Duration::from_secs(15));
        assert!(
            d.logged_ids().len() >= before + 2,
            "the new canary interval did not take effect"
        );

        // A broken file: refused, and the daemon goes on with the running configuration.
        std::fs::write(
            &config,
            "informed_consent = true\n[schedule]\ncanary_seconds = 0\n",
        )
        .expect("write");
        d.signal("HUP");
        next(&mut seen, "RELOADING=1");
        next(&mut seen, "READY=1");
        d.wait_for(
            "configuration not reloaded, the running one stays",
            Duration::from_secs(30),
        );
        assert!(d.has("schedule.canary_seconds: 0 is outside"));
        let before = d.logged_ids().len();
        d.wait_for_ids(before + 2, Duration::from_secs(15));
        assert!(d.logged_ids().len() >= before + 2, "canaries stopped");

        let (status, took) = d.terminate();
        assert!(status.success(), "exit status {status}");
        assert!(took <= Duration::from_secs(5), "SIGTERM took {took:?}");
        next(&mut seen, "STOPPING=1");
    })
    .await
    .expect("join");
}

#[test]
fn bad_configurations_are_refused_before_anything_starts() {
    let dir = tempdir("daemon-config");
    let cases = [
        (
            "informed_consent = false\n",
            "informed_consent: must be true",
        ),
        (
            "informed_consent = true\n[schedule]\ncanary_second = 5\n",
            "unknown field `canary_second`",
        ),
        (
            "informed_consent = true\n[aggregator]\nurl = \"ftp://x/\"\n",
            "must be an http:// or https:// URL",
        ),
        ("this is not toml", "TOML parse error"),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let config = dir.join(format!("bad{i}.toml"));
        let data = dir.join(format!("data{i}"));
        std::fs::write(&config, text).expect("write");
        let out = Command::new(vantage())
            .args(["daemon", "--config"])
            .arg(&config)
            .env("VANTAGE_DATA_DIR", &data)
            .output()
            .expect("run");
        // 78 (EX_CONFIG): systemd does not restart the unit until the file is fixed.
        assert_eq!(out.status.code(), Some(78), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{text}: {err}");
        assert!(
            err.contains(&format!("bad{i}.toml")),
            "names the file: {err}"
        );
    }
    let out = Command::new(vantage())
        .args(["daemon", "--config"])
        .arg(dir.join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    // --check prints the plan and measures nothing.
    let config = dir.join("ok.toml");
    let data = dir.join("ok-data");
    write_config(
        &config,
        &format!("data_dir = {data:?}\n[network]\ncc = \"IR\"\n"),
    );
    let out = Command::new(vantage())
        .args(["daemon", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("canary: 9 targets every 60 s"), "{text}");
    assert!(!data.exists(), "--check created the data directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_runs_the_throttling_test_on_its_schedule_and_uploads_it() {
    let dir = tempdir("daemon-throttling");
    let ca = dir.join("ca.pem");
    vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    let db = dir.join("agg.db");
    let server = common::serve(&ca, &db, &["--throughput-listen", "127.0.0.1:0"]).await;
    let base = server.base.clone();
    let data = dir.join("probe");
    let config = dir.join("probe.toml");
    write_config(
        &config,
        &format!(
            "data_dir = {data:?}\n\
             [aggregator]\nurl = {base:?}\n\
             [network]\ncc = \"RU\"\nasn = \"AS64500\"\n\
             [lists]\nfetch = false\n\
             [schedule]\nrun_seconds = 0\nfirst_run_seconds = 1\nupload_seconds = 1\n\
             [throttling]\ntargets = [\"twitter.com\"]\nevery_seconds = 600\n"
        ),
    );
    let mut daemon = Daemon::start(&config, &[]);
    // Straight to the aggregator's server, nothing throttles: a clean verdict.
    daemon.wait_for(
        "throttling test of twitter.com: not_throttled",
        Duration::from_secs(60),
    );
    let started = Instant::now();
    let stored = loop {
        let b = base.clone();
        let (status, body) = tokio::task::spawn_blocking(move || {
            http(
                &b,
                "GET",
                "/api/v1/measurements?test_name=throttling",
                &[],
                b"",
            )
        })
        .await
        .expect("join");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let rows = v["results"].as_array().cloned().unwrap_or_default();
        if !rows.is_empty() {
            break rows;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "not uploaded");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0]["input"], "twitter.com", "{:#}", stored[0]);
    let (status, _) = daemon.terminate();
    assert!(status.success());
    drop(server);
}
