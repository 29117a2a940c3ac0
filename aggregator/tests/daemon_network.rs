//! `vantage daemon` learns its network before it says anything: the real daemon, started
//! before its aggregator can answer, sends no heartbeat and records no canary until the real
//! `serve` (placing 127.0.0.0/8 in IR AS64500 with `--prefixes`) tells it where it is, so the
//! aggregator never hears it claim the unknown network; when the aggregator later places it in
//! another network, the daemon says so in its log and its heartbeats follow
//! (`docs/detection.md`, "The daemon").

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, start_aggregator_on, tempdir, vantage};

/// A running `vantage daemon`, its stderr collected line by line; killed on drop.
struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = Command::new(vantage())
            .args(["daemon", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vantage daemon");
        let log = common::collect_stderr(&mut child);
        Daemon { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    fn wait_for(&self, needle: &str, within: Duration) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < within,
                "no {needle:?} in the daemon's log within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(probe_cc, probe_asn)` of every heartbeat the aggregator stored, oldest first.
fn heartbeats(db: &Path) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(db).expect("open aggregator db");
    let mut stmt = conn
        .prepare("SELECT probe_cc, probe_asn FROM heartbeats ORDER BY sent_at")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

/// `vantage-aggregator serve` on `listen`, placing every loopback address in IR `asn`.
fn serve(dir: &Path, listen: &str, asn: u32) -> Server {
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        vantage_fixtures::tls::TestCa::new("CA").write_pem(&ca);
    }
    let prefixes = dir.join(format!("prefixes{asn}.csv"));
    std::fs::write(&prefixes, format!("prefix,asn,cc\n127.0.0.0/8,{asn},IR\n")).expect("csv");
    let prefixes = prefixes.to_str().expect("utf-8").to_string();
    start_aggregator_on(
        listen,
        &ca,
        &dir.join("agg.db"),
        &["--prefixes", &prefixes, "--detect-every", "3600"],
    )
}

#[test]
fn the_daemon_learns_its_network_before_its_first_heartbeat_and_reports_a_move() {
    let dir = tempdir("daemon-network");
    // An address for the aggregator, free until it starts.
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    // One canary target that answers every connect.
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let target_addr = target.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in target.incoming() {
            drop(conn);
        }
    });
    let targets = dir.join("canaries.csv");
    std::fs::write(
        &targets,
        format!(
            "address,port,protocol,description\n{},{},tcp,loopback target\n",
            target_addr.ip(),
            target_addr.port()
        ),
    )
    .expect("targets");
    let data = dir.join("probe");
    let config = dir.join("probe.toml");
    std::fs::write(
        &config,
        format!(
            "informed_consent = true\ndata_dir = {data:?}\n\
             [aggregator]\nurl = \"http://{listen}\"\n\
             [lists]\nfetch = false\n\
             [schedule]\ncanary_seconds = 1\nheartbeat_seconds = 1\nrun_seconds = 0\n\
             refresh_seconds = 86400\nupload_seconds = 1\nupload_max_backoff_seconds = 1\n\
             [canary]\ntargets = {targets:?}\ntimeout_seconds = 1\n"
        ),
    )
    .expect("config");
    let daemon = Daemon::start(&config);

    // Nobody to ask where it is: it says why it waits, and neither beats nor measures.
    daemon.wait_for(
        "no heartbeat or canary until it answers",
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!daemon.log().contains("canary: "), "{}", daemon.log());

    // The aggregator comes up: the daemon asks again within a heartbeat interval, and its very
    // first heartbeat carries the answer.
    let server = serve(&dir, &listen, 64500);
    daemon.wait_for("this probe is in IR AS64500", Duration::from_secs(20));
    daemon.wait_for("canary: 1 of 1 targets answered", Duration::from_secs(20));
    let db = dir.join("agg.db");
    let started = Instant::now();
    while heartbeats(&db).len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let beats = heartbeats(&db);
    assert_eq!(beats[0], ("IR".to_string(), 64500), "{beats:?}");
    assert!(
        beats.iter().all(|b| *b == ("IR".to_string(), 64500)),
        "{beats:?}"
    );

    // The connection is lost, and when it is back the aggregator places loopback in AS64501
    // (as after a laptop changed network): the daemon asks again at once, says so, and its
    // heartbeats carry the new network.
    drop(server);
    daemon.wait_for("aggregator unreachable", Duration::from_secs(20));
    let _server = serve(&dir, &listen, 64501);
    daemon.wait_for(
        "this probe's network changed from IR AS64500 to IR AS64501",
        Duration::from_secs(20),
    );
    let started = Instant::now();
    while !heartbeats(&db).contains(&("IR".to_string(), 64501)) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Never, at any moment, the unknown network.
    assert!(
        heartbeats(&db)
            .iter()
            .all(|(cc, asn)| cc == "IR" && *asn != 0),
        "{:?}",
        heartbeats(&db)
    );
}
