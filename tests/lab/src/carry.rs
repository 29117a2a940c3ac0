//! Evidence carried out of the shutdown while it goes on (docs/carry.md): by a neighbour with a
//! link of its own, and on a stick.
//!
//! ```text
//!  vl-probe2 ── vl-router ──(uplink: cut)── vl-net (aggregator 45.67.2.1)
//!                  │                          │
//!  vl-nbr (45.66.3.2) ──── satellite link ────┘  45.68.0.1 - 45.68.0.2, untouched by the cut
//! ```
//!
//! - **Relay.** The neighbour `vl-nbr` is a home on the same ISP with a second way out (a
//!   satellite dish, say) that the cut does not touch, and runs `vantage relay`. The second
//!   probe's daemon lists its upload routes in order, the aggregator first and the relay
//!   second, so its uploads go through the relay while the uplink is down, and reach the
//!   aggregator under the relay's header: stored as `relay`, by the relay's key.
//! - **File.** After the canaries of the cut's first minute have failed, `vantage export`
//!   runs in the first probe's home on its daemon's data directory while the daemon runs; the
//!   file is copied on the host (the stick) and `vantage-aggregator ingest` stores it in the
//!   running aggregator's database: stored as `file`.
//!
//! Before the uplink is back the timeline must show the shutdown confirmed by those failed
//! canaries, with both routes in its `arrival`; after it, the event keeps them and adds the
//! first probe's later canaries, which its daemon uploads itself once the link is back.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::check::{Report, Timeline, utc};
use crate::topology::{self, NET, PROBES, ROUTER};

/// The neighbour's namespace: removed with the others (its name has the lab's prefix).
pub const NEIGHBOUR: &str = "vl-nbr";
/// The probe whose daemon uploads through the neighbour's relay when the aggregator is
/// unreachable (an index into [`PROBES`]).
pub const RELAYING: usize = 1;
/// The probe whose export is carried on a stick.
pub const CARRIED: usize = 0;
/// The relay's process name (its output is `relay.log` in the run directory).
pub const RELAY_NAME: &str = "relay";
/// What the relay prints once it listens.
pub const RELAY_READY: &str = "relaying on";

/// The router's interface towards the neighbour.
const LAN_LINK: &str = "vl-p3";
/// The neighbour's own way out, and its end in the lab's Internet.
const SAT_LINK: &str = "vl-sat";
const SAT_PEER: &str = "sat0";
/// The neighbour's address on the ISP.
const NEIGHBOUR_ADDR: Ipv4Addr = Ipv4Addr::new(45, 66, 3, 2);
/// The satellite link's two ends: outside the ISP's prefix, so the aggregator knows the relay's
/// connecting address as no network (a relayed upload is vouched for by nothing but its
/// envelopes and the relay header).
const SAT_NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(45, 68, 0, 1);
const SAT_NET: Ipv4Addr = Ipv4Addr::new(45, 68, 0, 2);
const RELAY_PORT: u16 = 8787;
/// How far into the cut the export is made, at most: the canaries of its first minute have
/// failed by then, and the rest of the 150-second cut leaves the detector time to show what
/// the file brought. A shorter cut exports after a third of it.
const EXPORT_AFTER: f64 = 50.0;
/// The check before the restore gives up this long before it.
const MARGIN: f64 = 5.0;

/// Builds the neighbour: a home behind the ISP's router, with a link of its own to the lab's
/// Internet that the uplink cut does not touch. Run after `topology::build`.
pub fn build() -> Result<()> {
    topology::run("ip", &["netns", "add", NEIGHBOUR])?;
    topology::run("ip", &["-n", NEIGHBOUR, "link", "set", "lo", "up"])?;
    let [a, b, c, _] = NEIGHBOUR_ADDR.octets();
    let lan = |last: u8| format!("{a}.{b}.{c}.{last}");
    topology::run(
        "ip",
        &[
            "-n", ROUTER, "link", "add", LAN_LINK, "type", "veth", "peer", "name", "eth0", "netns",
            NEIGHBOUR,
        ],
    )?;
    let router_side = format!("{}/24", lan(1));
    topology::run_in(
        ROUTER,
        &["ip", "addr", "add", &router_side, "dev", LAN_LINK],
    )?;
    topology::run_in(ROUTER, &["ip", "link", "set", LAN_LINK, "up"])?;
    let home = format!("{NEIGHBOUR_ADDR}/24");
    topology::run_in(NEIGHBOUR, &["ip", "addr", "add", &home, "dev", "eth0"])?;
    topology::run_in(NEIGHBOUR, &["ip", "link", "set", "eth0", "up"])?;
    topology::run_in(
        NEIGHBOUR,
        &["ip", "route", "add", "default", "via", &lan(1)],
    )?;
    // The satellite link, and the Internet's hosts through it.
    topology::run(
        "ip",
        &[
            "-n", NEIGHBOUR, "link", "add", SAT_LINK, "type", "veth", "peer", "name", SAT_PEER,
            "netns", NET,
        ],
    )?;
    let (near, far) = (format!("{SAT_NEIGHBOUR}/30"), format!("{SAT_NET}/30"));
    topology::run_in(NEIGHBOUR, &["ip", "addr", "add", &near, "dev", SAT_LINK])?;
    topology::run_in(NEIGHBOUR, &["ip", "link", "set", SAT_LINK, "up"])?;
    topology::run_in(NET, &["ip", "addr", "add", &far, "dev", SAT_PEER])?;
    topology::run_in(NET, &["ip", "link", "set", SAT_PEER, "up"])?;
    topology::run_in(
        NEIGHBOUR,
        &[
            "ip",
            "route",
            "add",
            "45.67.0.0/16",
            "via",
            &SAT_NET.to_string(),
        ],
    )?;
    Ok(())
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sleep_until(t: f64) {
    let left = t - now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
}

/// The relay's URL, as the relaying probe lists it.
fn relay_url() -> String {
    format!("http://{NEIGHBOUR_ADDR}:{RELAY_PORT}/")
}

/// `vantage relay` in the neighbour's home, forwarding by its satellite link, with its key and
/// queue in `data`.
pub fn relay_args(vantage: &str, data: &Path, aggregator: &str) -> Vec<String> {
    [
        vantage,
        "relay",
        "--listen",
        &format!("{NEIGHBOUR_ADDR}:{RELAY_PORT}"),
        "--aggregator",
        aggregator,
        "--forward-seconds",
        "2",
        "--data-dir",
        &data.display().to_string(),
    ]
    .map(str::to_string)
    .to_vec()
}

/// The relaying probe's `[upload]` section: the aggregator directly, then the neighbour's relay.
pub fn upload_routes(aggregator: &str) -> String {
    format!(
        "[upload]\nroutes = [{{ url = {aggregator:?} }}, {{ url = {:?} }}]\n",
        relay_url()
    )
}

/// The relay's key, as it printed it once listening (`relay key KEY;`).
pub fn relay_key(log: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    text.split("relay key ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .map(|k| k.trim().to_string())
        .filter(|k| vantage_probe::envelope::parse_public_key(k).is_some())
        .with_context(|| format!("no relay key in {}", log.display()))
}

/// What the carrying during the cut needs.
pub struct Cut<'a> {
    /// The `vantage` binary.
    pub vantage: String,
    /// The run directory: the export is written there and "carried" to `stick/`.
    pub dir: &'a Path,
    /// The carried probe's data directory, which its daemon is using.
    pub data: PathBuf,
    /// The aggregator's timeline, and with it its binary and database.
    pub timeline: &'a Timeline,
    /// The relay's output, where it printed its key.
    pub relay_log: PathBuf,
}

/// During the cut, from `cut` to `back` (epoch seconds): exports the carried probe's queue,
/// ingests the file beside the running aggregator, and checks what the timeline shows before
/// the uplink is back. Every step is a line of the report; none stops the run.
pub fn during_cut(c: &Cut, cut: f64, back: f64, report: &mut Report) {
    let after = EXPORT_AFTER.min((back - cut) / 3.0);
    sleep_until(cut + after);
    let mut file_ids = Vec::new();
    let ns = PROBES[CARRIED];
    let file = c.dir.join(format!("export-{ns}.jsonl.gz"));
    let exported = topology::run_in(
        ns,
        &[
            &c.vantage,
            "export",
            "--out",
            &file.display().to_string(),
            "--data-dir",
            &c.data.display().to_string(),
        ],
    )
    .and_then(|out| {
        file_ids = failed_canaries(&file)?;
        Ok(out)
    });
    report.check(
        format!(
            "carry: vantage export in {ns} beside its running daemon, {:.0} s into the cut: {}",
            after,
            exported.as_ref().map_or(String::new(), |o| o
                .lines()
                .next()
                .unwrap_or("")
                .to_string())
        ),
        match &exported {
            Err(e) => Some(format!("{e:#}")),
            Ok(_) if file_ids.is_empty() => {
                Some("the file holds no failed canary of the cut".into())
            }
            Ok(_) => None,
        },
    );
    if exported.is_err() {
        return;
    }
    // The stick: a plain copy, on the host, to the aggregator's side.
    let stick = c.dir.join("stick");
    let copied = std::fs::create_dir_all(&stick)
        .and_then(|()| std::fs::copy(&file, stick.join(file.file_name().unwrap_or_default())))
        .map(|_| stick.join(file.file_name().unwrap_or_default()));
    let ingested = copied.map_err(anyhow::Error::from).and_then(|on_stick| {
        topology::run_in(
            NET,
            &[
                &c.timeline.bin,
                "ingest",
                "--db",
                &c.timeline.db.display().to_string(),
                &on_stick.display().to_string(),
            ],
        )
    });
    let said = ingested.as_ref().map_or(String::new(), |o| {
        o.lines().last().unwrap_or("").to_string()
    });
    report.check(
        format!(
            "carry: vantage-aggregator ingest of the copied file beside the running serve: {said}"
        ),
        match &ingested {
            Err(e) => Some(format!("{e:#}")),
            Ok(_) if !said.ends_with(" 0 duplicate, 0 refused") => {
                Some("expected every result accepted".into())
            }
            Ok(_) => None,
        },
    );
    let relay_key = relay_key(&c.relay_log);
    // The detector runs every two seconds: wait for what the routes brought, until just before
    // the restore.
    let events = loop {
        let events = c.timeline.events("shutdown").unwrap_or_default();
        let done = ongoing_differs(&events, &file_ids).is_none()
            && arrival_differs(&events, &["file", "relay"]).is_none();
        if done || now() > back - MARGIN {
            break events;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    report.check(
        format!(
            "carry: before the uplink is back ({}), the timeline shows the shutdown of AS64500 ongoing and confirmed by failed canaries, {} of them from the file",
            utc(back),
            file_ids.len()
        ),
        ongoing_differs(&events, &file_ids),
    );
    report.check(
        "carry: ... and its arrival shows the file and the relay while it went on",
        arrival_differs(&events, &["file", "relay"]),
    );
    let relayed = relay_key.and_then(|key| {
        let rows = canaries_since(c.timeline, cut)?;
        Ok((key, rows))
    });
    report.check(
        format!(
            "carry: {}'s canaries of the cut came through the relay in {NEIGHBOUR}, stored with the relay's key",
            PROBES[RELAYING]
        ),
        match &relayed {
            Err(e) => Some(format!("{e:#}")),
            Ok((key, rows)) => relayed_differs(rows, key),
        },
    );
}

/// After the restore: the ended event's arrival shows every route, the probe's own upload
/// included. Waits up to half a minute for the carried probe's queue to be uploaded.
pub fn check_after(timeline: &Timeline, report: &mut Report) {
    let started = Instant::now();
    let events = loop {
        let events = timeline.events("shutdown").unwrap_or_default();
        if arrival_differs(&events, &["file", "relay", "upload"]).is_none()
            || started.elapsed() > Duration::from_secs(30)
        {
            break events;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let words = events
        .first()
        .map(arrival_summary)
        .unwrap_or_else(|| "no event".into());
    report.check(
        format!("carry: after the restore, the shutdown's evidence arrived by upload, relay and file: {words}"),
        arrival_differs(&events, &["file", "relay", "upload"]),
    );
}

/// The failed canaries an export file holds (their measurement ids), checked as a reader does.
fn failed_canaries(file: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut bad = Vec::new();
    let carried = vantage_probe::carry::read_export(file, &mut |n, line| {
        match vantage_probe::envelope::verify(line) {
            Ok(v) => {
                let m: Value = serde_json::from_str(v.measurement).unwrap_or(Value::Null);
                if m["test_name"] == "canary" && m["test_keys"]["ok"].as_u64() == Some(0) {
                    ids.push(v.id.to_string());
                }
            }
            Err(e) => bad.push(format!("line {n}: {e}")),
        }
        true
    })
    .with_context(|| format!("reading {}", file.display()))?;
    if !carried.clean() || !bad.is_empty() {
        bail!(
            "{} does not read back whole: {:?} {:?} {bad:?}",
            file.display(),
            carried.manifest_problems,
            carried.truncated
        );
    }
    Ok(ids)
}

/// The stored canaries measured since `from`, as `vantage-aggregator query` shows them (with
/// their route and relayer).
fn canaries_since(timeline: &Timeline, from: f64) -> Result<Vec<Value>> {
    let out = topology::run(
        &timeline.bin,
        &[
            "query",
            "--db",
            &timeline.db.display().to_string(),
            "--cc",
            "IR",
            "--test-name",
            "canary",
            "--since",
            &utc(from.floor()),
            "--limit",
            "5000",
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// The one shutdown event of AS64500, ongoing and confirmed, whose evidence holds failed
/// canaries, some of them the file's.
fn ongoing_differs(events: &[Value], file_ids: &[String]) -> Option<String> {
    let [e] = events else {
        return Some(format!("expected one shutdown event; got {}", events.len()));
    };
    let evidence: Vec<&str> = e["evidence"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let from_file = evidence
        .iter()
        .filter(|id| file_ids.iter().any(|f| f == *id))
        .count();
    let mut wrong = Vec::new();
    if e["entity"]["asn"] != "AS64500" {
        wrong.push(format!("network {}", e["entity"]["asn"]));
    }
    if e["status"] != "ongoing" {
        wrong.push(format!("status {} (expected ongoing)", e["status"]));
    }
    if e["suspected"] != false {
        wrong.push(format!("suspected {} (expected confirmed)", e["suspected"]));
    }
    if evidence.is_empty() || from_file == 0 {
        wrong.push(format!(
            "{} evidence ids, {from_file} of them the file's failed canaries",
            evidence.len()
        ));
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// The one event's arrival has each of `routes`, each with evidence received while the event
/// went on, and the relayed part by one relay.
fn arrival_differs(events: &[Value], routes: &[&str]) -> Option<String> {
    let [e] = events else {
        return Some(format!("expected one shutdown event; got {}", events.len()));
    };
    let arrival = e["arrival"].as_array().cloned().unwrap_or_default();
    let mut wrong = Vec::new();
    for route in routes {
        match arrival.iter().find(|a| a["route"] == *route) {
            None => wrong.push(format!("no {route} route")),
            Some(a) => {
                if a["count"].as_u64().unwrap_or(0) == 0 {
                    wrong.push(format!("{route}: count {}", a["count"]));
                }
                // Only the carried routes must have come while the shutdown went on; the
                // probe's own upload comes after it, when the link is back.
                if *route != "upload" && a["while_ongoing"].as_u64().unwrap_or(0) == 0 {
                    wrong.push(format!("{route}: none while the shutdown went on"));
                }
                if *route == "relay" && a["relayers"] != 1 {
                    wrong.push(format!("relay: {} relayers (expected 1)", a["relayers"]));
                }
            }
        }
    }
    if e["arrived_while_ongoing"] != true {
        wrong.push("arrived_while_ongoing is not true".into());
    }
    (!wrong.is_empty()).then(|| format!("{}; arrival {}", wrong.join("; "), e["arrival"]))
}

/// Per route, how many and how many while it went on: `file 24 (24 during), ...`.
fn arrival_summary(e: &Value) -> String {
    let parts: Vec<String> = e["arrival"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    format!(
                        "{} {} ({} during)",
                        a["route"].as_str().unwrap_or("?"),
                        a["count"],
                        a["while_ongoing"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    parts.join(", ")
}

/// Relayed canaries exist, and every one names the relay's key as its relayer: a key, never
/// an address.
fn relayed_differs(rows: &[Value], relay_key: &str) -> Option<String> {
    let relayed: Vec<&Value> = rows.iter().filter(|r| r["route"] == "relay").collect();
    if relayed.is_empty() {
        let routes: std::collections::BTreeSet<String> =
            rows.iter().map(|r| r["route"].to_string()).collect();
        return Some(format!(
            "none of {} canaries since the cut is relayed (routes {routes:?})",
            rows.len()
        ));
    }
    let other: Vec<&Value> = relayed
        .iter()
        .copied()
        .filter(|r| r["relayed_by"] != relay_key)
        .collect();
    other.first().map(|r| {
        format!(
            "{} of {} relayed canaries name {} as relayer, not the relay's key {relay_key}",
            other.len(),
            relayed.len(),
            r["relayed_by"]
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: &str, suspected: bool, evidence: &[&str], arrival: Value) -> Value {
        let ongoing = arrival
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["while_ongoing"].as_u64() > Some(0)));
        serde_json::json!({"kind": "shutdown", "status": status, "suspected": suspected,
            "entity": {"cc": "IR", "asn": "AS64500"}, "evidence": evidence,
            "arrival": arrival, "arrived_while_ongoing": ongoing})
    }

    fn route(name: &str, count: u64, during: u64, relayers: u64) -> Value {
        serde_json::json!({"route": name, "count": count, "first": "2026-12-01 06:00:00",
            "last": "2026-12-01 06:01:00", "while_ongoing": during, "relayers": relayers})
    }

    #[test]
    fn before_the_restore_the_event_must_be_confirmed_by_the_carried_canaries() {
        let file = vec!["f1".to_string(), "f2".to_string()];
        let good = event(
            "ongoing",
            false,
            &["f1", "r1"],
            serde_json::json!([route("file", 1, 1, 0), route("relay", 1, 1, 1)]),
        );
        assert_eq!(ongoing_differs(std::slice::from_ref(&good), &file), None);
        assert_eq!(
            arrival_differs(std::slice::from_ref(&good), &["file", "relay"]),
            None
        );
        for (e, needle) in [
            (
                event("ongoing", true, &["f1"], serde_json::json!([])),
                "suspected",
            ),
            (
                event("ended", false, &["f1"], serde_json::json!([])),
                "status",
            ),
            (
                event("ongoing", false, &["r1"], serde_json::json!([])),
                "0 of them the file's",
            ),
        ] {
            let why = ongoing_differs(&[e], &file).expect("differs");
            assert!(why.contains(needle), "{needle}: {why}");
        }
        let why = ongoing_differs(&[good.clone(), good.clone()], &file).expect("two events");
        assert!(why.contains("expected one"), "{why}");
        for (arrival, needle) in [
            (
                serde_json::json!([route("file", 3, 3, 0)]),
                "no relay route",
            ),
            (
                serde_json::json!([route("file", 3, 0, 0), route("relay", 2, 2, 1)]),
                "file: none while",
            ),
            (
                serde_json::json!([route("file", 3, 3, 0), route("relay", 2, 2, 2)]),
                "2 relayers",
            ),
        ] {
            let e = event("ongoing", false, &["f1"], arrival);
            let why = arrival_differs(&[e], &["file", "relay"]).expect("differs");
            assert!(why.contains(needle), "{needle}: {why}");
        }
        // After the restore the probe's own upload comes after the end: it need not be during.
        let after = event(
            "ended",
            false,
            &["f1"],
            serde_json::json!([
                route("file", 3, 3, 0),
                route("relay", 2, 2, 1),
                route("upload", 9, 0, 0)
            ]),
        );
        assert_eq!(
            arrival_differs(&[after], &["file", "relay", "upload"]),
            None
        );
    }

    #[test]
    fn relayed_rows_must_name_the_relays_key_and_nothing_else() {
        let key = "A".repeat(43) + "=";
        let row = |route: &str, by: Option<&str>| {
            let mut r = serde_json::json!({"id": "x", "route": route});
            if let Some(by) = by {
                r["relayed_by"] = Value::from(by);
            }
            r
        };
        assert_eq!(
            relayed_differs(&[row("upload", None), row("relay", Some(&key))], &key),
            None
        );
        let why = relayed_differs(&[row("upload", None)], &key).expect("none relayed");
        assert!(why.contains("none of 1"), "{why}");
        let why = relayed_differs(&[row("relay", Some("45.68.0.1"))], &key).expect("an address");
        assert!(why.contains("45.68.0.1"), "{why}");
        let why = relayed_differs(&[row("relay", None)], &key).expect("no relayer");
        assert!(why.contains("1 of 1"), "{why}");
    }

    #[test]
    fn the_relaying_probe_lists_the_aggregator_first_and_the_daemon_reads_it() {
        let text = format!(
            "informed_consent = true\ndata_dir = \"/tmp/x\"\n[aggregator]\nurl = \"http://45.67.2.1:8080\"\n{}",
            upload_routes("http://45.67.2.1:8080")
        );
        let path = Path::new("probe2.toml");
        let plan = vantage_probe::daemon::config::Config::parse(&text, path)
            .and_then(|c| c.plan(path))
            .expect("the daemon takes it");
        let routes: Vec<String> = plan
            .aggregator
            .expect("aggregator")
            .upload
            .upload_routes()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(routes, ["http://45.67.2.1:8080/", "http://45.66.3.2:8787/"]);
    }

    #[test]
    fn the_relay_key_is_read_from_its_first_line() {
        let dir = std::env::temp_dir().join(format!("vantage-lab-carry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("relay.log");
        let key = vantage_probe::envelope::Identity::generate()
            .expect("key")
            .public_key();
        std::fs::write(
            &log,
            format!("relaying on http://45.66.3.2:8787/ to http://45.67.2.1:8080/; relay key {key}; queue in /x\n"),
        )
        .expect("write");
        assert_eq!(relay_key(&log).expect("key"), key);
        std::fs::write(&log, "relaying on x; relay key 45.68.0.1; queue in /x\n").expect("write");
        assert!(relay_key(&log).is_err(), "an address is not a key");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        for name in [LAN_LINK, SAT_LINK, SAT_PEER, NEIGHBOUR] {
            assert!(name.len() <= 15, "{name}");
        }
        assert!(!vantage_probe::engine::bogon::is_bogon(
            NEIGHBOUR_ADDR.into()
        ));
        assert!(!vantage_probe::engine::bogon::is_bogon(
            SAT_NEIGHBOUR.into()
        ));
        assert_ne!(topology::AGGREGATOR.octets()[..2], SAT_NET.octets()[..2]);
    }
}
