//! The daemon's `[carry]` (docs/carry.md) with the real binary and real drives: small tmpfs
//! mounts made inside a mount namespace of the test's own (`unshare -m`, so nothing leaks to the
//! host), first one too small (ENOSPC), then one with room. The daemon and the script that
//! mounts share that namespace; the test reads the drive through `/proc/PID/root`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vantage_probe::carry::read_export;
use vantage_probe::envelope::Identity;
use vantage_probe::store::{NewResult, Store};

const VANTAGE: &str = env!("CARGO_BIN_EXE_vantage");

/// What the namespace does, step by step; each step waits for a file the test creates.
const SCRIPT: &str = r#"
set -e
dir=$1; stick=$2
wait_for() { while [ ! -e "$dir/$1" ]; do sleep 0.1; done; }
"$VANTAGE_BIN" daemon --config "$dir/vantage.toml" &
pid=$!
wait_for small
mount -t tmpfs -o size=64k tmpfs "$stick"
wait_for out
umount "$stick"
wait_for big
mount -t tmpfs -o size=4m tmpfs "$stick"
wait_for stop
kill -TERM $pid
wait $pid
"#;

struct Namespace {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Namespace {
    fn count(&self, needle: &str) -> usize {
        let log = self.log.lock().expect("log");
        log.iter().filter(|l| l.contains(needle)).count()
    }

    /// The first line of the daemon's log holding `needle`, once one is there.
    fn wait_for(&self, needle: &str, within: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(line) = self
                .log
                .lock()
                .expect("log")
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                started.elapsed() < within,
                "no {needle:?} in the daemon's log within {within:?}:\n{}",
                self.log.lock().expect("log").join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `path` as the processes of the namespace see it.
    fn inside(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.child.id()))
            .join(path.strip_prefix("/").expect("absolute"))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stores `n` results with incompressible padding, signed by the probe's key.
fn seed(data: &Path, n: usize) {
    std::fs::create_dir_all(data).expect("data dir");
    let (key, _) = Identity::load_or_create(&data.join("identity.key")).expect("key");
    let mut store = Store::open(&data.join("vantage.db")).expect("store");
    for i in 0..n {
        let mut noise = [0u8; 300];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut noise)
            .expect("random");
        let at = format!("2026-11-30 {:02}:{:02}:00", i / 60 % 24, i % 60);
        let m = serde_json::json!({
            "test_name": "canary", "measurement_start_time": at,
            "test_keys": {"pad": hex::encode(noise)},
        });
        let (id, envelope) = key.seal(&m.to_string()).expect("seal");
        store
            .insert(&NewResult {
                id: id.as_str(),
                input: None,
                test_name: "canary",
                measured_at: &at,
                blocking: None,
                accessible: Some(false),
                confirmed: false,
                verdict: "{}",
                envelope: &envelope,
            })
            .expect("insert");
    }
}

#[test]
fn the_daemon_carries_to_a_drive_that_appears_and_a_full_one_loses_nothing() {
    if !Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        // Not root (or no unshare): the same export code is checked on a full tmpfs by
        // aggregator/tests/carry.rs when it can mount, and here nothing can be mounted.
        eprintln!("cannot make a mount namespace here: the daemon's [carry] is not exercised");
        return;
    }
    let dir = std::env::temp_dir().join(format!("vantage-daemon-carry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    let stick = dir.join("stick");
    std::fs::create_dir_all(&stick).expect("mount point");
    seed(&data, 600);
    let canaries = dir.join("canaries.csv");
    // Port 9 on loopback: nothing listens, the round fails at once and stays on loopback.
    std::fs::write(
        &canaries,
        "address,port,protocol,description\n127.0.0.1,9,tcp,x\n",
    )
    .expect("targets");
    std::fs::write(
        dir.join("vantage.toml"),
        format!(
            "informed_consent = true\ndata_dir = {data:?}\n\
             [schedule]\ncanary_seconds = 3600\nrun_seconds = 0\n\
             [canary]\ntargets = {canaries:?}\ntimeout_seconds = 1\n\
             [carry]\npath = {stick:?}\ncheck_seconds = 1\n"
        ),
    )
    .expect("config");
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh"])
        .arg(&dir)
        .arg(&stick)
        .env("VANTAGE_BIN", VANTAGE)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    let log = common::collect_stderr(&mut child);
    let ns = Namespace { child, log };
    let go = |step: &str| std::fs::write(dir.join(step), "").expect("step");
    ns.wait_for("daemon started", Duration::from_secs(20));
    // No drive yet: the mount point is a plain directory, and nothing is written there.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ns.count("carried") + ns.count("carry to"), 0);
    assert_eq!(std::fs::read_dir(&stick).expect("dir").count(), 0);

    // A drive too small: the export fails cleanly, once, and says why.
    go("small");
    let line = ns.wait_for("carry to", Duration::from_secs(30));
    assert!(line.contains("No space left on device"), "{line}");
    assert!(line.contains("nothing is marked exported"), "{line}");
    let left: Vec<_> = std::fs::read_dir(ns.inside(&stick))
        .expect("the drive")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left on the full drive: {left:?}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ns.count("carry to"), 1, "a full drive is not tried again");
    assert_eq!(ns.count("carried"), 0);

    // Taken out, and a drive with room put in: everything is carried, and verifies.
    go("out");
    ns.wait_for("was taken out", Duration::from_secs(30));
    go("big");
    let line = ns.wait_for("carried", Duration::from_secs(60));
    let count: usize = line
        .split("carried ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(count >= 600, "the 600 seeded and any canary since: {line}");
    let name = line
        .rsplit('/')
        .next()
        .expect("file name")
        .trim()
        .to_string();
    assert!(
        name.starts_with("vantage-") && name.ends_with(".jsonl.gz"),
        "{line}"
    );
    let file = ns.inside(&stick).join(&name);
    let read = read_export(&file, &mut |_, _| true).expect("read the drive");
    assert!(read.clean(), "{read:?}");
    assert_eq!(read.good, count);
    // Nothing new while it stays in: not written again.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ns.count("carried"), 1);
    go("stop");
    ns.wait_for("stopped", Duration::from_secs(20));
    drop(ns);

    // Marked exported only once the good drive held them: an incremental export is empty.
    let store = Store::open(&data.join("vantage.db")).expect("store");
    let mut new = 0;
    store
        .each_exportable(false, None, None, &mut |_| {
            new += 1;
            Ok::<_, vantage_probe::store::StoreError>(())
        })
        .expect("exportable");
    assert!(
        new <= 1,
        "at most a canary measured after the export: {new}"
    );
    assert!(
        store.status().expect("status").pending as usize >= count,
        "still queued"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
