//! What the lab checks, as a researcher would see it: each domain's verdict from `vantage run`,
//! the active throttling test's verdict, and the aggregator's timeline (blocking, throttling and
//! shutdown events).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::scenario::{SITES, SNI_POLICE_KBPS, Site, THROTTLED_SNI};
use crate::topology;

/// One line of the report.
#[derive(Debug)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// What was expected and what was seen, when they differ.
    pub failure: Option<String>,
}

/// The outcome of a run: every check, passed or not.
#[derive(Debug, Default)]
pub struct Report {
    /// In order.
    pub checks: Vec<Check>,
}

/// Set when a signal stops the run: the lab is being removed under the run's feet, and what it
/// would report from then on is noise.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Report {
    pub fn check(&mut self, what: impl Into<String>, failure: Option<String>) {
        let what = what.into();
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        match &failure {
            None => eprintln!("lab: ok    {what}"),
            Some(f) => eprintln!("lab: FAIL  {what}: {f}"),
        }
        self.checks.push(Check { what, failure });
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.failure.is_none())
    }
}

/// A time for the report, `YYYY-MM-DD HH:MM:SS` UTC as the timeline writes it.
pub fn utc(t: f64) -> String {
    vantage_aggregator::detect::format_time(t as i64)
}

/// What differs between the expected verdict for `site` and the probe's line `v`.
pub fn verdict_differs(site: &Site, v: &Value) -> Option<String> {
    let e = site.expect;
    let blocking = match e.blocking {
        None => Value::Bool(false),
        Some(kind) => Value::from(kind),
    };
    let rule = v["rule"].as_str().unwrap_or("");
    let slow = v["goodput"]["below_control"].as_bool().unwrap_or(false);
    let mut wrong = Vec::new();
    if v["blocking"] != blocking {
        wrong.push(format!("blocking {} (expected {blocking})", v["blocking"]));
    }
    if rule != e.rule {
        wrong.push(format!("rule {rule} (expected {})", e.rule));
    }
    if v["confirmed"].as_bool() != Some(e.confirmed) {
        wrong.push(format!(
            "confirmed {} (expected {})",
            v["confirmed"], e.confirmed
        ));
    }
    if slow != e.slow {
        wrong.push(format!(
            "goodput {} (expected below_control {})",
            v["goodput"], e.slow
        ));
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// The active test's verdict: throttled, at a ceiling near the policer's rate.
pub fn throttling_differs(v: &Value) -> Option<String> {
    let ceiling = v["ceiling_kbps"].as_f64();
    let police = f64::from(SNI_POLICE_KBPS);
    match (v["verdict"].as_str(), ceiling) {
        (Some("throttled"), Some(k)) if k > police * 0.4 && k < police * 1.6 => None,
        _ => Some(format!(
            "verdict {} at {:?} kbit/s (expected throttled near {police})",
            v["verdict"], ceiling
        )),
    }
}

/// The aggregator's timeline, read with `vantage-aggregator timeline` from its database (the
/// server runs in a namespace the host cannot reach; the database is a file).
pub struct Timeline {
    /// The `vantage-aggregator` binary.
    pub bin: String,
    /// The aggregator's database.
    pub db: PathBuf,
}

impl Timeline {
    /// The events of one kind in IR.
    pub(crate) fn events(&self, kind: &str) -> Result<Vec<Value>> {
        let out = topology::run(
            &self.bin,
            &[
                "timeline",
                "--db",
                &self.db.display().to_string(),
                "--cc",
                "IR",
                "--kind",
                kind,
                "--json",
            ],
        )?;
        Ok(out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// One confirmed shutdown event for AS64500 whose start and end are within two minutes of the
/// cut and the restore; returns it when there is one (its evidence bundle is checked next).
/// `alive` fails when a lab process has died, which would make waiting pointless.
pub fn check_shutdown(
    timeline: &Timeline,
    cut: f64,
    back: f64,
    report: &mut Report,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<Option<Value>> {
    let started = Instant::now();
    let events = loop {
        let events = timeline.events("shutdown")?;
        if events
            .iter()
            .any(|e| e["status"] == "ended" && e["suspected"] == false)
        {
            break events;
        }
        if started.elapsed() > Duration::from_secs(90) {
            break events;
        }
        alive()?;
        std::thread::sleep(Duration::from_secs(1));
    };
    let within = |field: &str, truth: f64, e: &Value| -> bool {
        e[field]
            .as_str()
            .and_then(parse_utc)
            .is_some_and(|t| (t - truth).abs() <= 120.0)
    };
    let failure = match events.as_slice() {
        [e] if e["status"] == "ended"
            && e["suspected"] == false
            && e["entity"]["asn"] == "AS64500"
            && within("start", cut, e)
            && within("end", back, e) =>
        {
            None
        }
        _ => Some(format!(
            "expected one confirmed, ended event from about {} to {}; got {}",
            utc(cut),
            utc(back),
            compact(&events)
        )),
    };
    let seen = events.first().map_or(String::new(), |e| {
        format!(
            "; event {} to {}",
            e["start"].as_str().unwrap_or("?"),
            e["end"].as_str().unwrap_or("ongoing")
        )
    });
    report.check(
        format!(
            "timeline: one shutdown of AS64500, cut {} to {}{seen}",
            utc(cut),
            utc(back)
        ),
        failure.clone(),
    );
    Ok(events.first().filter(|_| failure.is_none()).cloned())
}

fn parse_utc(s: &str) -> Option<f64> {
    vantage_aggregator::store::model::parse_time(s).map(|t| t as f64)
}

/// The timeline's layer for a verdict's blocking type (`aggregator/src/blocking.rs`, `Layer`).
fn layer_of(blocking: &str) -> &'static str {
    match blocking {
        "dns" => "dns",
        "tcp_ip" => "tcp",
        "tls" => "tls",
        _ => "http",
    }
}

fn compact(events: &[Value]) -> String {
    let short: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}..{} suspected={}",
                e["kind"],
                e["layer"],
                e["status"],
                e["targets"],
                e["start"],
                e["end"],
                e["suspected"]
            )
        })
        .collect();
    format!("{} event(s) [{}]", events.len(), short.join(", "))
}

/// Blocking events for the blocked domains and none for the others; a throttling event for the
/// policed SNI. The server's detectors run every two seconds; this waits up to a minute for
/// the expected events (and then for nothing more).
pub fn check_timeline(timeline: &Timeline, report: &mut Report) -> Result<()> {
    let expected: BTreeSet<&str> = SITES
        .iter()
        .filter(|s| s.expect.event)
        .map(|s| s.domain)
        .chain([THROTTLED_SNI])
        .collect();
    let targets = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .flat_map(|e| e["targets"].as_array().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect()
    };
    let started = Instant::now();
    let (blocking, throttling) = loop {
        let blocking = timeline.events("blocking")?;
        let throttling = timeline.events("throttling")?;
        let mut found = targets(&blocking);
        found.extend(targets(&throttling));
        if expected.iter().all(|d| found.contains(*d))
            || started.elapsed() > Duration::from_secs(60)
        {
            break (blocking, throttling);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    for s in SITES {
        let events: Vec<&Value> = blocking
            .iter()
            .filter(|e| {
                e["targets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == s.domain))
            })
            .collect();
        let layer = s.expect.blocking.map(layer_of);
        let failure = match (s.expect.event, events.as_slice()) {
            (false, []) => None,
            (true, [e]) if e["layer"].as_str() == layer => None,
            _ => Some(format!(
                "expected {}; {}",
                layer.map_or("no blocking event".to_string(), |l| format!(
                    "one blocking event at layer {l}"
                )),
                compact(&blocking)
            )),
        };
        let what = if s.expect.event {
            "a blocking event"
        } else {
            "no blocking event"
        };
        report.check(format!("timeline: {} has {what}", s.domain), failure);
    }
    let failure = (targets(&throttling) != BTreeSet::from([THROTTLED_SNI.to_string()]))
        .then(|| compact(&throttling));
    report.check(
        format!("timeline: a throttling event for {THROTTLED_SNI} and no other"),
        failure,
    );
    Ok(())
}

/// The service event one blocked host must make (QUIC to one host, one encrypted resolver),
/// and the controls that must be in none.
#[derive(Debug, Clone)]
pub struct HostEvent {
    /// The event's one target: the host with its test named (`quic:quic-blocked.lab`).
    pub target: String,
    /// Its layer on the timeline (`tcp`).
    pub layer: &'static str,
    /// The blocked host's results, one per probe: exactly the event's evidence.
    pub blocked: Vec<String>,
    /// The controls' targets: in no event.
    pub controls: Vec<String>,
    /// The controls' results, one per probe and control: in no event's evidence.
    pub control_ids: Vec<String>,
}

impl HostEvent {
    /// What differs between `events` (the blocking timeline) and what must be seen.
    pub fn differs(&self, events: &[Value]) -> Option<String> {
        let probes = topology::PROBES.len();
        let names = |e: &Value, t: &str| {
            e["targets"]
                .as_array()
                .is_some_and(|ts| ts.iter().any(|x| x == t))
        };
        let holds = |e: &Value, id: &str| {
            e["evidence"]
                .as_array()
                .is_some_and(|ev| ev.iter().any(|x| x == id))
        };
        if self.blocked.len() != probes || self.control_ids.len() != probes * self.controls.len() {
            return Some(format!(
                "expected one result per probe and host; blocked {:?}, controls {:?}",
                self.blocked, self.control_ids
            ));
        }
        let mut wrong = Vec::new();
        let mine: Vec<&Value> = events.iter().filter(|e| names(e, &self.target)).collect();
        match mine.as_slice() {
            [e] => {
                let mut evidence: Vec<&str> = e["evidence"]
                    .as_array()
                    .map(|ev| ev.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                evidence.sort_unstable();
                let mut blocked: Vec<&str> = self.blocked.iter().map(String::as_str).collect();
                blocked.sort_unstable();
                if e["targets"].as_array().map(Vec::len) != Some(1) {
                    wrong.push(format!(
                        "targets {} (expected [{}])",
                        e["targets"], self.target
                    ));
                }
                if e["layer"] != self.layer {
                    wrong.push(format!("layer {} (expected {})", e["layer"], self.layer));
                }
                if e["entity"]["asn"] != "AS64500" {
                    wrong.push(format!("network {} (expected AS64500)", e["entity"]["asn"]));
                }
                if evidence != blocked {
                    wrong.push(format!("evidence {evidence:?} (expected {blocked:?})"));
                }
            }
            _ => wrong.push(format!(
                "expected one blocking event for {}; {}",
                self.target,
                compact(events)
            )),
        }
        for e in events {
            if let Some(c) = self.controls.iter().find(|c| names(e, c)) {
                wrong.push(format!(
                    "an event names the control {c}: {}",
                    compact(std::slice::from_ref(e))
                ));
            }
            if let Some(id) = self.control_ids.iter().find(|id| holds(e, id)) {
                wrong.push(format!(
                    "an event holds the control's result {id}: {}",
                    e["targets"]
                ));
            }
        }
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

/// Waits up to `within` for the event `want` describes (the detector runs every two seconds),
/// then checks it and that no event names or holds a control.
pub fn check_host_event(
    timeline: &Timeline,
    want: &HostEvent,
    within: Duration,
    report: &mut Report,
) -> Result<()> {
    let started = Instant::now();
    let events = loop {
        let events = timeline.events("blocking")?;
        if want.differs(&events).is_none() || started.elapsed() > within {
            break events;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    report.check(
        format!(
            "timeline: one {} event for {} from its results alone, none for {}",
            want.layer,
            want.target,
            want.controls.join(", ")
        ),
        want.differs(&events),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_compared_field_by_field() {
        let site = SITES
            .iter()
            .find(|s| s.domain == "sni-reset.lab")
            .expect("site");
        let right =
            serde_json::json!({"blocking": "tls", "rule": "tls-interference", "confirmed": false});
        assert_eq!(verdict_differs(site, &right), None);
        let wrong = serde_json::json!({"blocking": "dns", "rule": "tls-interference+inconsistent-dns", "confirmed": false});
        let why = verdict_differs(site, &wrong).expect("differs");
        assert!(
            why.contains("blocking \"dns\"")
                && why.contains("rule tls-interference+inconsistent-dns"),
            "{why}"
        );
    }

    #[test]
    fn a_host_event_must_rest_on_the_blocked_results_alone() {
        let want = HostEvent {
            target: "quic:b.lab".into(),
            layer: "tcp",
            blocked: vec!["b1".into(), "b2".into()],
            controls: vec!["quic:ok.lab".into()],
            control_ids: vec!["c1".into(), "c2".into()],
        };
        let event = |targets: &[&str], evidence: &[&str]| {
            serde_json::json!({"kind": "blocking", "layer": "tcp", "targets": targets,
                "evidence": evidence, "entity": {"cc": "IR", "asn": "AS64500"}})
        };
        assert_eq!(want.differs(&[event(&["quic:b.lab"], &["b2", "b1"])]), None);
        for (events, needle) in [
            (vec![], "expected one blocking event"),
            (vec![event(&["quic:b.lab"], &["b1"])], "evidence"),
            (
                vec![event(&["quic:b.lab"], &["b1", "b2", "c1"])],
                "control's result c1",
            ),
            (
                vec![
                    event(&["quic:b.lab"], &["b1", "b2"]),
                    event(&["quic:ok.lab"], &[]),
                ],
                "names the control quic:ok.lab",
            ),
            (
                vec![event(&["quic"], &["b1", "b2"])],
                "expected one blocking event",
            ),
        ] {
            let why = want.differs(&events).expect("differs");
            assert!(why.contains(needle), "{needle}: {why}");
        }
        let missing = HostEvent {
            blocked: vec!["b1".into()],
            ..want
        };
        let why = missing
            .differs(&[event(&["quic:b.lab"], &["b1"])])
            .expect("a probe's result is missing");
        assert!(why.contains("one result per probe"), "{why}");
    }

    #[test]
    fn the_active_test_must_find_the_policer_near_its_rate() {
        let near = serde_json::json!({"verdict": "throttled", "ceiling_kbps": 488.0});
        assert_eq!(throttling_differs(&near), None);
        for v in [
            serde_json::json!({"verdict": "not_throttled", "ceiling_kbps": null}),
            serde_json::json!({"verdict": "throttled", "ceiling_kbps": 5000.0}),
        ] {
            assert!(throttling_differs(&v).is_some(), "{v}");
        }
    }
}
