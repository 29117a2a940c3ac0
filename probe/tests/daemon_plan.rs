//! `vantage daemon` runs the resolvers check (`[dnscheck]`) and the QUIC test (`[quic]`) on its
//! schedule, keeps their signed results and charges them to the daily traffic budget. The real
//! binary, a DNS fixture, loopback ports only (the canary targets are overridden so that nothing
//! leaves the machine).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_fixtures::dns::{Behaviour, DnsFixture};
use vantage_fixtures::tcp::closed_port;

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

/// The daemon, its stderr collected; killed on drop.
struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = Command::new(VANTAGE)
            .args(["daemon", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("VANTAGE_AGGREGATOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start vantage daemon");
        let log = common::collect_stderr(&mut child);
        Daemon { child, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    fn wait_for(&self, needle: &str, within: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(l) = self.log().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                started.elapsed() < within,
                "no {needle:?} in the daemon's log within {within:?}:\n{}",
                self.log().join("\n")
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

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_runs_dnscheck_and_quic_and_charges_the_budget() {
    let dir = std::env::temp_dir().join(format!("vantage-daemon-plan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let dns = DnsFixture::start(vec![(
        "quic.test",
        Behaviour::Answer(vec![[127, 0, 0, 1].into()]),
    )])
    .await;
    // A DoT resolver whose port is closed, and a host with neither TCP nor UDP on its port:
    // both fail at once on loopback, with OONI's connection_refused.
    let closed = closed_port();
    let resolvers = dir.join("resolvers.toml");
    std::fs::write(
        &resolvers,
        format!("[[resolver]]\nurl = \"dot://{closed}/\"\nsni = \"dot.test\"\n"),
    )
    .expect("resolvers");
    let list = dir.join("quic.csv");
    std::fs::write(
        &list,
        format!(
            "url,category_code,category_description,date_added,source,notes\n\
             https://quic.test:{}/,NEWS,News,2026,test,\n",
            closed.port()
        ),
    )
    .expect("list");
    let canaries = dir.join("canaries.csv");
    std::fs::write(
        &canaries,
        format!(
            "address,port,protocol,description\n127.0.0.1,{},tcp,loopback\n",
            closed.port()
        ),
    )
    .expect("canaries");
    let data = dir.join("data");
    let config = dir.join("vantage.toml");
    std::fs::write(
        &config,
        format!(
            "informed_consent = true\ndata_dir = {data:?}\n\
             [network]\ncc = \"IR\"\nasn = \"AS64500\"\n\
             [lists]\nfetch = false\n\
             [schedule]\nrun_seconds = 0\nfirst_run_seconds = 0\n\
             [canary]\ntargets = {canaries:?}\ntimeout_seconds = 1\n\
             [engine]\nresolver = \"{}\"\ntimeout_seconds = 2\ndns_timeout_seconds = 2\n\
             [dnscheck]\nenabled = true\nfile = {resolvers:?}\n\
             [quic]\nenabled = true\nfile = {list:?}\n",
            dns.addr
        ),
    )
    .expect("config");

    let daemon = Daemon::start(&config);
    let dot = daemon.wait_for(&format!("dnscheck dot://{closed}"), Duration::from_secs(60));
    assert!(dot.contains("id="), "{dot}");
    let quic = daemon.wait_for("QUIC test of https://quic.test", Duration::from_secs(60));
    assert!(quic.contains("host-blocked"), "{quic}");
    drop(daemon);

    // Both kept, signed, waiting for an aggregator, with their verdicts.
    let out = Command::new(VANTAGE)
        .args(["results", "list", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .expect("results list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let input = |i: &str| rows.iter().find(|r| r["input"] == i).cloned();
    let dot_row = input(&format!("dot://{closed}/")).expect("the dnscheck result");
    assert_eq!(dot_row["blocking"], "tcp_ip", "{dot_row}");
    assert_eq!(dot_row["upload"], "pending");
    let quic_row =
        input(&format!("https://quic.test:{}/", closed.port())).expect("the QUIC result");
    assert_eq!(quic_row["upload"], "pending", "{quic_row}");

    // The budget holds today's charge: at least the two measurements' JSON.
    let db = rusqlite::Connection::open(data.join("vantage.db")).expect("store");
    let budget: String = db
        .query_row("SELECT value FROM meta WHERE key = 'budget'", [], |r| {
            r.get(0)
        })
        .expect("a budget row");
    let (_, bytes) = budget.split_once(':').expect("day:bytes");
    let bytes: u64 = bytes.parse().expect("bytes");
    assert!(bytes > 1_000, "charged {bytes} bytes");
    let _ = std::fs::remove_dir_all(&dir);
}
