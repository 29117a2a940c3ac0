//! Detection hygiene: cases that make a detector see what is not there, or miss what is.
//!
//! - A filter page of exactly the real page's byte length, in no fingerprint table: OONI's
//!   classic rules call it the same page (same status, body lengths in proportion); Vantage's
//!   `http-different-page` must call it `http-diff` by its title and text alone
//!   (`docs/scoring.md`, "A different page of the same length").
//! - A large page on a policed path, cut by the probe's deadline while still arriving: throttled
//!   at the policer's rate (`http-body-throttled`), not an HTTP failure (`docs/scoring.md`,
//!   "A page still arriving at the deadline").
//! - No phantom: the daemons start with no pinned network and learn it from whoami
//!   (`docs/detection.md`, "The daemon"); over a whole run no event may name the unknown
//!   network (ZZ, AS0), and every event on the timeline must be one a scenario caused.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use crate::check::{Report, Timeline};
use crate::scenario::{BLOCKPAGE, POLICE_KBPS, SITES, Site, THROTTLED_SNI, Technique, page};

/// The filter page's words: none of them is a word of the real page's title (so its body does
/// not carry the site's content) and no fingerprint of any table matches them.
const FILTER_HEAD: &str = "<html><head><title>Access restricted</title></head><body>\
<p>Not reachable from your connection.</p>";
const FILTER_TAIL: &str = "</body></html>";

/// The page the ISP's proxy serves instead of `host`'s, when it filters that host.
pub fn filter_page(host: &str) -> Option<String> {
    let site = SITES.iter().find(|s| s.domain.eq_ignore_ascii_case(host))?;
    match site.technique {
        Technique::HostBlockpage => Some(BLOCKPAGE.to_string()),
        Technique::HostFilterPageSameSize => Some(same_size_filter_page(site.domain)),
        _ => None,
    }
}

/// The filter page padded with spaces (which add no word) to exactly the byte length of the
/// real page of `domain`; at least the filter's own text when the real page is shorter.
pub fn same_size_filter_page(domain: &str) -> String {
    let want = page(domain).len();
    let mut body = FILTER_HEAD.to_string();
    while body.len() + FILTER_TAIL.len() < want {
        body.push(' ');
    }
    body.push_str(FILTER_TAIL);
    body
}

/// The router's policer for one address: packets from `addr` beyond `kbps` are dropped, per
/// (source, destination) pair so that each probe has its own bucket. hashlimit counts bytes of
/// whole IP packets and its unit `b/s` is bytes (iptables-extensions(8)); the kernel has no tc
/// `police` action here (`CONFIG_NET_ACT_POLICE` is not set). The burst is one second at the rate, the least
/// hashlimit accepts: a small one keeps TCP close to the rate instead of a large first gulp.
pub fn police_rule(addr: &str, kbps: u32) -> Vec<String> {
    let bytes_per_sec = u64::from(kbps) * 1000 / 8;
    [
        "iptables",
        "-A",
        "FORWARD",
        "-p",
        "tcp",
        "-s",
        addr,
        "-m",
        "hashlimit",
        "--hashlimit-name",
        &format!("vl-police-{}", addr.rsplit('.').next().unwrap_or("x")),
        "--hashlimit-mode",
        "srcip,dstip",
        "--hashlimit-above",
        &format!("{bytes_per_sec}b/s"),
        "--hashlimit-burst",
        &format!("{bytes_per_sec}b"),
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The goodput a TCP transfer can have through a policer of `kbps` counting whole IP packets:
/// each full segment of 1,500 bytes carries 1,448 bytes of payload (20 bytes of IP header, 20
/// of TCP and 12 of timestamps, RFC 7323); the ACKs go the other way and are not policed.
pub fn policed_goodput_kbps(kbps: u32) -> f64 {
    f64::from(kbps) * 1448.0 / 1500.0
}

/// How far the measured rate may be from the policer's.
pub const RATE_TOLERANCE: f64 = 0.3;

/// The policed site's rate in each probe's `vantage run` (`run{i}.out` in `dir`): throttled,
/// with `goodput.probe_kbps` within [`RATE_TOLERANCE`] of [`POLICE_KBPS`]. The verdict itself
/// is checked with the others (`check::verdict_differs`); this line prints the rate.
pub fn check_policed_rates(dir: &Path, report: &mut Report) {
    let Some(site) = SITES
        .iter()
        .find(|s| matches!(s.technique, Technique::Police(_)))
    else {
        return;
    };
    for i in 1..=crate::topology::PROBES.len() {
        let out = std::fs::read_to_string(dir.join(format!("run{i}.out"))).unwrap_or_default();
        let line = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["input"] == site.url().as_str());
        let (what, failure) = rate_differs(site, line.as_ref());
        report.check(format!("run{i}: {what}"), failure);
    }
}

fn rate_differs(site: &Site, v: Option<&Value>) -> (String, Option<String>) {
    let police = f64::from(POLICE_KBPS);
    let rate = v.and_then(|v| v["goodput"]["probe_kbps"].as_f64());
    let what = format!(
        "{} at {} kbit/s, policer {police:.0} kbit/s (at most {:.1} of goodput through it), \
         within {:.0}%",
        site.domain,
        rate.map_or("?".into(), |r| format!("{r:.1}")),
        policed_goodput_kbps(POLICE_KBPS),
        RATE_TOLERANCE * 100.0
    );
    let failure = match (v, rate) {
        (None, _) => Some("no verdict".to_string()),
        (Some(v), _) if v["blocking"] != "throttling" => Some(format!(
            "blocking {} (expected \"throttling\")",
            v["blocking"]
        )),
        (Some(v), Some(r)) if (r - police).abs() <= RATE_TOLERANCE * police => {
            (v["goodput"]["cut_at_deadline"] != true)
                .then(|| format!("goodput {} not cut at the deadline", v["goodput"]))
        }
        (Some(v), _) => Some(format!("goodput {}", v["goodput"])),
    };
    (what, failure)
}

/// The events a run may make: `(kind, target)` for blocking and throttling events. A shutdown
/// is expected when the run cut the uplink, and [`crate::check::check_shutdown`] requires
/// exactly one.
pub fn expected_targets(measured: bool) -> BTreeSet<(&'static str, String)> {
    if !measured {
        return BTreeSet::new();
    }
    let blocking = SITES
        .iter()
        .filter(|s| s.expect.event)
        .map(|s| s.domain.to_string())
        .chain(crate::apps::CASES.iter().map(|c| c.test.to_string()))
        .chain([
            format!("quic:{}", crate::quic::BLOCKED_NAME),
            format!("dnscheck:{}", crate::dnscheck::BLOCKED_NAME),
        ])
        .map(|t| ("blocking", t));
    blocking
        .chain([("throttling", THROTTLED_SNI.to_string())])
        .collect()
}

/// What is wrong with the whole timeline `events` (every country, every kind): an event that
/// names the unknown network, a shutdown when none was caused, or an event none of the run's
/// scenarios explains.
pub fn phantoms(
    events: &[Value],
    expected: &BTreeSet<(&'static str, String)>,
    shutdown: bool,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for e in events {
        let entity = &e["entity"];
        let unknown_network = entity["cc"] == "ZZ"
            || entity["asn"] == "AS0"
            || entity["asns"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "AS0"));
        if unknown_network {
            wrong.push(format!("names the unknown network: {}", short(e)));
            continue;
        }
        let kind = e["kind"].as_str().unwrap_or("");
        let explained = match kind {
            "shutdown" => shutdown && entity["asn"] == "AS64500" && entity["cc"] == "IR",
            "blocking" | "throttling" => e["targets"].as_array().is_some_and(|ts| {
                !ts.is_empty()
                    && ts.iter().all(|t| {
                        t.as_str()
                            .is_some_and(|t| expected.contains(&(kind, t.to_string())))
                    })
            }),
            _ => false,
        };
        if !explained {
            wrong.push(format!("no scenario made it: {}", short(e)));
        }
    }
    wrong
}

/// An event in a few words: kind, network, layer, targets, times.
fn short(e: &Value) -> String {
    format!(
        "{} {} {} {} {} {}..{}{}",
        e["kind"].as_str().unwrap_or("?"),
        e["entity"]["cc"].as_str().unwrap_or("?"),
        e["entity"]["asn"].as_str().unwrap_or("-"),
        e["layer"].as_str().unwrap_or("-"),
        e["targets"],
        e["start"].as_str().unwrap_or("?"),
        e["end"].as_str().unwrap_or("ongoing"),
        if e["suspected"] == true {
            " suspected"
        } else {
            ""
        }
    )
}

/// Every event the aggregator holds, of every country and kind.
fn all_events(timeline: &Timeline) -> Result<Vec<Value>> {
    let out = crate::topology::run(
        &timeline.bin,
        &[
            "timeline",
            "--db",
            &timeline.db.display().to_string(),
            "--json",
        ],
    )?;
    Ok(out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// How long the no-phantom check watches the timeline after the other checks: the detectors run
/// every two seconds, so a late event has several passes to appear.
const WATCH: Duration = Duration::from_secs(12);

/// The daemons learned their network (their logs say `this probe is in IR AS64500`, their
/// configuration pins none), and over the whole run no event names ZZ or AS0 and every event is
/// one of `expected` or the shutdown. Prints every event found (`lab: events: ...`, which
/// `tests/lab/repeat.sh` reads).
pub fn check_no_phantom(
    timeline: &Timeline,
    dir: &Path,
    expected: &BTreeSet<(&'static str, String)>,
    shutdown: bool,
    report: &mut Report,
) -> Result<()> {
    for i in 1..=crate::topology::PROBES.len() {
        let config =
            std::fs::read_to_string(dir.join(format!("probe{i}.toml"))).unwrap_or_default();
        let log = std::fs::read_to_string(dir.join(format!("daemon{i}.log"))).unwrap_or_default();
        let failure = if config.contains("[network]") {
            Some("its configuration pins a network".to_string())
        } else if !log.contains("this probe is in IR AS64500") {
            Some("its log never says \"this probe is in IR AS64500\"".to_string())
        } else {
            None
        };
        report.check(
            format!("daemon{i}: no pinned network, learned IR AS64500 from whoami"),
            failure,
        );
    }
    let started = Instant::now();
    let mut events = all_events(timeline)?;
    while started.elapsed() < WATCH && phantoms(&events, expected, shutdown).is_empty() {
        std::thread::sleep(Duration::from_secs(2));
        events = all_events(timeline)?;
    }
    let list: Vec<String> = events.iter().map(short).collect();
    eprintln!("lab: events: {} [{}]", events.len(), list.join("; "));
    let wrong = phantoms(&events, expected, shutdown);
    report.check(
        format!(
            "timeline: {} event(s) in all, none naming ZZ or AS0, each one a scenario made",
            events.len()
        ),
        (!wrong.is_empty()).then(|| wrong.join("; ")),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_probe::ooni::{ControlHttpRequest, HttpResponse, WebConnectivityMeasurement};
    use vantage_probe::verdict::fingerprints::Fingerprints;
    use vantage_probe::verdict::http_diff::compare_at;

    const HOST: &str = "samesize.lab";

    fn response(body: &str) -> HttpResponse {
        serde_json::from_value(serde_json::json!({
            "body": body,
            "body_is_truncated": false,
            "code": 200,
            "headers": {"Content-Type": "text/html; charset=utf-8",
                        "Content-Length": body.len().to_string()},
        }))
        .expect("response")
    }

    fn control(body: &str) -> ControlHttpRequest {
        let title = body
            .split_once("<title>")
            .and_then(|(_, t)| t.split_once("</title>"))
            .map(|(t, _)| t.to_string());
        serde_json::from_value(serde_json::json!({
            "body_length": body.len(),
            "failure": null,
            "title": title,
            "headers": {"Content-Type": "text/html; charset=utf-8",
                        "Content-Length": body.len().to_string()},
            "status_code": 200,
        }))
        .expect("control")
    }

    #[test]
    fn the_filter_page_has_the_real_pages_length_and_is_another_page() {
        let real = page(HOST);
        let filter = filter_page(HOST).expect("the proxy filters it");
        assert_eq!(filter.len(), real.len());
        assert_ne!(filter, real);
        let diff = compare_at(HOST, &response(&filter), &control(&real));
        // OONI's classic rule: same status, lengths in proportion: the same page.
        assert!(diff.same_page(), "{diff:?}");
        // Vantage's: another title and no word of the site's title in the body.
        assert!(diff.different_page(), "{diff:?}");
        assert!(!diff.same_page_vantage(), "{diff:?}");
        // The real page against itself stays the same page, so the check can fail.
        let same = compare_at(HOST, &response(&real), &control(&real));
        assert!(
            !same.different_page() && same.same_page_vantage(),
            "{same:?}"
        );
        // The other filtered host keeps Iran's page, and an unfiltered one gets none.
        assert_eq!(filter_page("blockpage.lab").as_deref(), Some(BLOCKPAGE));
        assert_eq!(filter_page("neighbour.lab"), None);
    }

    #[test]
    fn no_fingerprint_of_any_table_matches_the_filter_page() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/ooni");
        let text = std::fs::read_to_string(
            dir.join("webconnectivity/generated-httpDiffWithConsistentDNS.json"),
        )
        .expect("a measurement with an HTTP response");
        let mut fps = Fingerprints::builtin();
        let (ooni, errors) = Fingerprints::load_dir(&dir.join("fingerprints")).expect("tables");
        assert!(!ooni.is_empty());
        assert_eq!(errors.len(), 0, "{errors:?}");
        fps.extend(ooni);
        let with_body = |body: &str| -> WebConnectivityMeasurement {
            let mut v: Value = serde_json::from_str(&text).expect("json");
            v["test_keys"]["requests"][0]["response"]["body"] = Value::from(body);
            serde_json::from_value(v).expect("measurement")
        };
        let filter = same_size_filter_page(HOST);
        let names: Vec<String> = fps
            .matches(&with_body(&filter))
            .into_iter()
            .filter(|m| !m.dns)
            .map(|m| m.name)
            .collect();
        assert!(names.is_empty(), "{names:?}");
        // Iran's page is recognised by the same code, so the check can fail.
        assert!(
            fps.matches(&with_body(BLOCKPAGE))
                .iter()
                .any(|m| m.name.contains("peyvandha")),
        );
    }

    #[test]
    fn the_policer_holds_bytes_per_second_and_goodput_sits_below_it() {
        let rule = police_rule("45.67.1.12", 128).join(" ");
        assert!(rule.contains("-s 45.67.1.12"), "{rule}");
        assert!(rule.contains("--hashlimit-above 16000b/s"), "{rule}");
        assert!(rule.contains("--hashlimit-burst 16000b "), "{rule}");
        let g = policed_goodput_kbps(128);
        assert!(g > 123.0 && g < 124.0, "{g}");
        assert!((g - 128.0).abs() < RATE_TOLERANCE * 128.0);
    }

    #[test]
    fn a_rate_is_judged_against_the_policer() {
        let site = SITES
            .iter()
            .find(|s| matches!(s.technique, Technique::Police(_)))
            .expect("a policed site");
        let v = |blocking: &str, kbps: f64| {
            serde_json::json!({"blocking": blocking,
                "goodput": {"probe_kbps": kbps, "cut_at_deadline": true}})
        };
        assert_eq!(rate_differs(site, Some(&v("throttling", 121.0))).1, None);
        for (bad, why) in [
            (v("throttling", 60.0), "goodput"),
            (v("throttling", 400.0), "goodput"),
            (v("http-failure", 121.0), "blocking"),
        ] {
            let failure = rate_differs(site, Some(&bad)).1.expect("differs");
            assert!(failure.contains(why), "{failure}");
        }
        assert!(rate_differs(site, None).1.is_some());
    }

    #[test]
    fn only_the_scenarios_events_pass_and_the_unknown_network_never() {
        let event = |kind: &str, cc: &str, asn: &str, targets: &[&str]| {
            serde_json::json!({"kind": kind, "entity": {"cc": cc, "asn": asn},
                "targets": targets, "start": "2026-12-01 06:00:00"})
        };
        let expected = expected_targets(true);
        let good = [
            event("shutdown", "IR", "AS64500", &[]),
            event("blocking", "IR", "AS64500", &["samesize.lab"]),
            event("blocking", "IR", "AS64500", &["quic:quic-blocked.lab"]),
            event("throttling", "IR", "AS64500", &[THROTTLED_SNI]),
        ];
        assert_eq!(phantoms(&good, &expected, true), Vec::<String>::new());
        for (bad, needle) in [
            (event("shutdown", "ZZ", "AS0", &[]), "unknown network"),
            (event("shutdown", "IR", "AS0", &[]), "unknown network"),
            (
                event("blocking", "IR", "AS64500", &["control.lab"]),
                "no scenario",
            ),
            (
                event("blocking", "IR", "AS64500", &["policed.lab"]),
                "no scenario",
            ),
            (
                event("throttling", "IR", "AS64500", &["throttled.lab"]),
                "no scenario",
            ),
            (
                event(
                    "blocking",
                    "IR",
                    "AS64500",
                    &["samesize.lab", "control.lab"],
                ),
                "no scenario",
            ),
            (event("blocking", "IR", "AS64500", &[]), "no scenario"),
        ] {
            let wrong = phantoms(&[bad], &expected, true);
            assert!(wrong.len() == 1 && wrong[0].contains(needle), "{wrong:?}");
        }
        // Without the cut, a shutdown is a phantom; without measurements, so is any block.
        let wrong = phantoms(&good[..1], &expected, false);
        assert!(wrong[0].contains("no scenario"), "{wrong:?}");
        assert_eq!(
            phantoms(&good[1..2], &expected_targets(false), true).len(),
            1
        );
    }
}
