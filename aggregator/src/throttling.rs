//! The throttling detector: a target held to a flat low ceiling in one network, measurement
//! after measurement (issue 8; the verdicts come from `ingest::apply_throttling`).
//!
//! One throttling measurement already compares the target with a control several times over,
//! so a single throttled verdict is strong evidence. The detector still asks for
//! `min_measurements` of them (by default two, from any probes of the network) before it opens
//! an event, so that one probe's bad afternoon is not a timeline entry. As for blocking, start
//! and end are the first and last measurements in which the evidence holds: `min_clean` clean
//! measurements in a row of the same target in the same network end the event (one alone may
//! be a probe whose own link was slow for both downloads), and so does a silence longer than
//! `max_gap_hours`.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, params};
use serde::Deserialize;

use crate::events::{Entity, Event, Kind, Scope, format_time};

/// Thresholds of the throttling detector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlingConfig {
    /// Throttled measurements an event needs.
    pub min_measurements: usize,
    /// Throttled measurements further apart than this start a new event: the daemon tests
    /// every few hours, so a longer silence means nobody was looking.
    pub max_gap_hours: i64,
    /// Clean measurements in a row that end an event.
    pub min_clean: usize,
}

impl Default for ThrottlingConfig {
    fn default() -> Self {
        ThrottlingConfig {
            min_measurements: 2,
            max_gap_hours: 12,
            min_clean: 2,
        }
    }
}

/// One scored throttling measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The network.
    pub asn: u32,
    /// The target host.
    pub domain: String,
    /// Epoch seconds.
    pub at: i64,
    /// `Some(true)` throttled, `Some(false)` clean, `None` undetermined or failed.
    pub throttled: Option<bool>,
    /// The estimated ceiling, when throttled.
    pub kbps: Option<f64>,
    /// The probe's key.
    pub probe: String,
    /// The measurement id.
    pub id: String,
}

/// A throttling episode found in the observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The network.
    pub asn: u32,
    /// The target.
    pub domain: String,
    /// First throttled measurement.
    pub start: i64,
    /// Last throttled measurement, once it is over.
    pub end: Option<i64>,
    /// Median of the measured ceilings.
    pub kbps: Option<f64>,
    /// Throttled measurements in the episode.
    pub measurements: usize,
    /// Distinct probes with a throttled measurement.
    pub probes: usize,
    /// The throttled measurements.
    pub evidence: Vec<String>,
}

/// Runs of throttled verdicts per network and target.
pub fn detect(obs: &[Observation], now: i64, config: &ThrottlingConfig) -> Vec<Finding> {
    let mut groups: BTreeMap<(u32, &str), Vec<&Observation>> = BTreeMap::new();
    for o in obs {
        if o.throttled.is_some() {
            groups
                .entry((o.asn, o.domain.as_str()))
                .or_default()
                .push(o);
        }
    }
    let gap = config.max_gap_hours * 3600;
    let mut out = Vec::new();
    for ((asn, domain), mut g) in groups {
        g.sort_by_key(|o| o.at);
        let mut run: Vec<&Observation> = Vec::new();
        let mut close = |run: &mut Vec<&Observation>, ended: bool| {
            if run.len() >= config.min_measurements.max(1) {
                let mut rates: Vec<f64> = run.iter().filter_map(|o| o.kbps).collect();
                rates.sort_by(f64::total_cmp);
                let kbps = (!rates.is_empty()).then(|| rates[rates.len() / 2]);
                let probes: BTreeSet<&str> = run.iter().map(|o| o.probe.as_str()).collect();
                let start = run[0].at;
                let last = run[run.len() - 1].at;
                out.push(Finding {
                    asn,
                    domain: domain.to_string(),
                    start,
                    end: ended.then_some(last),
                    kbps,
                    measurements: run.len(),
                    probes: probes.len(),
                    evidence: run.iter().map(|o| o.id.clone()).take(200).collect(),
                });
            }
            run.clear();
        };
        let mut clean = 0usize;
        for o in g {
            let last = run.last().map(|r| r.at);
            match (o.throttled, last) {
                (Some(true), Some(l)) if o.at - l > gap => {
                    close(&mut run, true);
                    clean = 0;
                    run.push(o);
                }
                (Some(true), _) => {
                    clean = 0;
                    run.push(o);
                }
                (Some(false), Some(_)) => {
                    clean += 1;
                    if clean >= config.min_clean.max(1) {
                        close(&mut run, true);
                        clean = 0;
                    }
                }
                _ => {}
            }
        }
        let ended = run.last().is_some_and(|l| now - l.at > gap);
        close(&mut run, ended);
    }
    out
}

/// A country's scored throttling measurements since `from`.
pub fn load(c: &Connection, cc: &str, from: i64) -> rusqlite::Result<Vec<Observation>> {
    let mut stmt = c.prepare_cached(
        "SELECT probe_asn, domain, unixepoch(measured_at), blocking, verdict, probe_key, id
         FROM measurements WHERE probe_cc = ?1 AND measured_at >= ?2
         AND test_name = 'throttling' AND domain IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![cc, format_time(from)], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (asn, domain, at, blocking, verdict, probe, id) = row?;
        let Some(at) = at else { continue };
        let throttled = match blocking.as_deref() {
            Some("\"throttling\"") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let kbps = verdict
            .as_deref()
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
            .and_then(|v| v["ceiling_kbps"].as_f64());
        out.push(Observation {
            asn,
            domain,
            at,
            throttled,
            kbps,
            probe: probe.unwrap_or_default(),
            id,
        });
    }
    Ok(out)
}

/// Throttling events of a country over `[from, now]`.
pub fn events(
    c: &Connection,
    cc: &str,
    from: i64,
    now: i64,
    config: &ThrottlingConfig,
) -> rusqlite::Result<Vec<Event>> {
    let obs = load(c, cc, from)?;
    Ok(detect(&obs, now, config)
        .into_iter()
        .map(|f| Event {
            id: String::new(),
            entity: Entity {
                cc: cc.to_string(),
                asn: Some(format!("AS{}", f.asn)),
                asns: Vec::new(),
            },
            kind: Kind::Throttling,
            scope: Scope::Service,
            layer: None,
            category: None,
            targets: vec![f.domain],
            start: format_time(f.start),
            end: f.end.map(format_time),
            status: if f.end.is_some() { "ended" } else { "ongoing" }.into(),
            suspected: false,
            // Half from how often it was seen (four times is plenty), half from how many
            // probes saw it (two independent ones rule out one probe's own link).
            confidence: ((f.measurements.min(4) as f64 / 8.0 + f.probes.min(2) as f64 / 4.0)
                * 100.0)
                .round()
                / 100.0,
            probes: f.probes,
            evidence: f.evidence,
            rate_kbps: f.kbps.map(|k| k.round()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(at_h: i64, throttled: Option<bool>, probe: &str) -> Observation {
        Observation {
            asn: 64500,
            domain: "twitter.com".into(),
            at: at_h * 3600,
            throttled,
            kbps: throttled.and_then(|t| t.then_some(150.0)),
            probe: probe.into(),
            id: format!("m{at_h}{probe}"),
        }
    }

    #[test]
    fn a_run_of_throttled_verdicts_is_one_episode_ended_by_a_clean_one() {
        let o = vec![
            obs(1, Some(false), "a"),
            obs(3, Some(true), "a"),
            obs(4, None, "b"),
            obs(5, Some(true), "b"),
            obs(7, Some(true), "a"),
            obs(9, Some(false), "b"),
        ];
        let f = detect(&o, 100 * 3600, &ThrottlingConfig::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].start, f[0].end), (3 * 3600, Some(7 * 3600)));
        assert_eq!(f[0].kbps, Some(150.0));
        assert_eq!(f[0].probes, 2);
        assert_eq!(f[0].evidence.len(), 3);
    }

    #[test]
    fn one_clean_verdict_inside_an_episode_does_not_split_it_two_end_it() {
        let o = vec![
            obs(1, Some(true), "a"),
            obs(2, Some(true), "b"),
            obs(3, Some(false), "c"),
            obs(4, Some(true), "a"),
            obs(5, Some(false), "a"),
            obs(6, Some(false), "b"),
        ];
        let f = detect(&o, 7 * 3600, &ThrottlingConfig::default());
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].start, f[0].end), (3600, Some(4 * 3600)));
        // One clean verdict at the end: still ongoing.
        let f = detect(&o[..5], 6 * 3600, &ThrottlingConfig::default());
        assert_eq!(f[0].end, None);
    }

    #[test]
    fn one_throttled_verdict_alone_or_a_long_silence_splits_or_drops() {
        let config = ThrottlingConfig::default();
        // One stray verdict between clean ones: no event.
        let o = vec![
            obs(1, Some(false), "a"),
            obs(2, Some(true), "a"),
            obs(3, Some(false), "a"),
        ];
        assert!(detect(&o, 10 * 3600, &config).is_empty());
        // Two runs 20 h apart are two events; the last is ongoing while recent.
        let o = vec![
            obs(1, Some(true), "a"),
            obs(2, Some(true), "a"),
            obs(22, Some(true), "a"),
            obs(23, Some(true), "b"),
        ];
        let f = detect(&o, 24 * 3600, &config);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].end, Some(2 * 3600));
        assert_eq!(f[1].end, None);
    }
}
