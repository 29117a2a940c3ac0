//! Ingest of signed measurements (DESIGN "Aggregator", Ingest).
//!
//! Each line of a JSONL body gets one outcome: `accepted`, `duplicate`, or `rejected` with a
//! reason. The signature is checked on the line's raw bytes before the measurement is parsed at
//! all; only then is the key's standing looked up (trust on first use unless enrolment is
//! required; a revoked key is refused), the measurement parsed, its time checked, and its
//! verdict computed with the current rules. The accepted lines of a body are stored in one
//! transaction, each row whole, so a crash never leaves half a measurement.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use url::Url;
use vantage_probe::envelope::{EnvelopeError, Verifier, verify};
use vantage_probe::ooni::{Measurement, WEB_CONNECTIVITY, WebConnectivityMeasurement};
use vantage_probe::throttling::score::assess;
use vantage_probe::throttling::{Download, Role, Rules as ThrottlingRules, THROTTLING, Verdict};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::VANTAGE;
use vantage_probe::verdict::score;

use crate::db::{DbError, KeyState, Row, Storage};

/// Ingest limits.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Longest accepted line. A web_connectivity measurement is a few KB; a body capped at
    /// 512 KiB base64-encoded stays under 1 MiB.
    pub max_line_bytes: usize,
    /// How far in the future a measurement's start time may be (probe clocks drift).
    pub clock_skew: Duration,
    /// Refuse keys the operator has not allowed.
    pub require_enrolment: bool,
    /// Largest body, after decompression. 10,000 realistic measurements (about 7 KB each) fit;
    /// a gzip bomb does not.
    pub max_body_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_line_bytes: 1 << 20,
            clock_skew: Duration::from_secs(3600),
            require_enrolment: false,
            max_body_bytes: 128 << 20,
        }
    }
}

/// Where an upload or heartbeat came from, as far as the aggregator can tell. The connecting
/// address is looked up in the geolocation source (`--geoip`, `--prefixes`) and dropped; only
/// the network it belongs to travels on from here (DESIGN "Privacy and safety").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// (country, ASN) of the connecting address; `None` when the aggregator has no
    /// geolocation source or the source does not know the address.
    pub network: Option<(String, u32)>,
}

impl Origin {
    /// An origin that nothing can be checked against (a local import, no geolocation source).
    pub const UNKNOWN: Origin = Origin { network: None };

    /// The origin of a connection from a network the source placed in `cc` and `asn`; `AS0` or
    /// `ZZ` (what no source knows) is no network at all.
    pub fn observed(asn: u32, cc: &str) -> Origin {
        let known = asn != 0 && cc.len() == 2 && !cc.eq_ignore_ascii_case("ZZ");
        Origin {
            network: known.then(|| (cc.to_ascii_uppercase(), asn)),
        }
    }

    /// Whether a measurement claiming `cc` and `asn` came from inside that network.
    pub fn vouches_for(&self, cc: &str, asn: u32) -> bool {
        self.network
            .as_ref()
            .is_some_and(|(c, a)| *a == asn && c.eq_ignore_ascii_case(cc))
    }
}

/// The answer for one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineOutcome {
    /// 1-based line in the body.
    pub line: usize,
    /// The measurement id, when the line was a valid envelope.
    pub id: Option<String>,
    /// `accepted`, `duplicate` or `rejected`.
    pub status: &'static str,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn rejected(line: usize, id: Option<String>, reason: String) -> LineOutcome {
    LineOutcome {
        line,
        id,
        status: "rejected",
        reason: Some(reason),
    }
}

/// The envelope fields ingest needs from any measurement; `test_keys` is skipped unparsed, so a
/// non-web_connectivity measurement is never built into a JSON tree.
#[derive(serde::Deserialize)]
struct Head {
    test_name: String,
    measurement_start_time: String,
    probe_cc: vantage_probe::ooni::CountryCode,
    probe_asn: vantage_probe::ooni::Asn,
    #[serde(default)]
    input: Option<String>,
}

/// The header of a measurement, and the typed measurement when it is web_connectivity (which
/// must then parse as one).
fn parse(text: &str) -> Result<(Head, Option<WebConnectivityMeasurement>), serde_json::Error> {
    // Vantage and OONI write `"test_name":"web_connectivity"` compactly; a measurement written
    // otherwise still parses, through the slower path below.
    if text.contains("\"test_name\":\"web_connectivity\"")
        && let Ok(m) = serde_json::from_str::<WebConnectivityMeasurement>(text)
        && m.test_name == WEB_CONNECTIVITY
    {
        let head = Head {
            test_name: m.test_name.clone(),
            measurement_start_time: m.measurement_start_time.clone(),
            probe_cc: m.probe_cc,
            probe_asn: m.probe_asn,
            input: m.input.clone(),
        };
        return Ok((head, Some(m)));
    }
    let head: Head = serde_json::from_str(text)?;
    if head.test_name == WEB_CONNECTIVITY {
        let m = serde_json::from_str::<WebConnectivityMeasurement>(text)?;
        return Ok((head, Some(m)));
    }
    Ok((head, None))
}

/// Parses OONI's `"YYYY-MM-DD HH:MM:SS"` (UTC).
fn start_time(text: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(text, format)
        .ok()
        .map(|t| SystemTime::from(t.assume_utc()))
}

/// Checks, scores and stores every line of `body`.
pub fn ingest(
    storage: &dyn Storage,
    body: &str,
    config: &IngestConfig,
    fingerprints: &Fingerprints,
    origin: &Origin,
) -> Result<Vec<LineOutcome>, DbError> {
    let mut outcomes = Vec::new();
    let mut rows = Vec::new();
    let mut row_lines = Vec::new();
    let latest = SystemTime::now() + config.clock_skew;
    let mut known: std::collections::HashMap<String, Option<KeyState>> =
        std::collections::HashMap::new();
    let mut verifier = Verifier::default();
    for (i, line) in body.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > config.max_line_bytes {
            outcomes.push(rejected(
                n,
                None,
                format!("too large: {} bytes", line.len()),
            ));
            continue;
        }
        let verified = match verifier.verify(line) {
            Ok(v) => v,
            Err(EnvelopeError::BadSignature) => {
                outcomes.push(rejected(n, None, "bad signature".into()));
                continue;
            }
            Err(e) => {
                outcomes.push(rejected(n, None, format!("malformed: {e}")));
                continue;
            }
        };
        let id = verified.id.to_string();
        // Batches come from one probe: look each key up once per body.
        let state = match known.get(&verified.key) {
            Some(state) => *state,
            None => {
                let mut state = storage.key_state(&verified.key)?;
                if state.is_none() && !config.require_enrolment {
                    storage.set_key(&verified.key, KeyState::Trusted)?;
                    state = Some(KeyState::Trusted);
                }
                known.insert(verified.key.clone(), state);
                state
            }
        };
        match state {
            Some(KeyState::Revoked) => {
                outcomes.push(rejected(n, Some(id), "revoked key".into()));
                continue;
            }
            None => {
                outcomes.push(rejected(n, Some(id), "unknown key".into()));
                continue;
            }
            Some(KeyState::Trusted) => {}
        }
        // A web_connectivity measurement is parsed once, into the typed model that scoring
        // needs, and its header taken from there; anything else only into `Head`.
        let (generic, typed) = match parse(verified.measurement) {
            Ok(parsed) => parsed,
            Err(e) => {
                outcomes.push(rejected(n, Some(id), format!("malformed: {e}")));
                continue;
            }
        };
        match start_time(&generic.measurement_start_time) {
            Some(t) if t <= latest => {}
            Some(_) => {
                outcomes.push(rejected(n, Some(id), "time in the future".into()));
                continue;
            }
            None => {
                outcomes.push(rejected(
                    n,
                    Some(id),
                    "malformed: measurement_start_time is not YYYY-MM-DD HH:MM:SS".into(),
                ));
                continue;
            }
        }
        let mut row = Row {
            id: id.clone(),
            source: "vantage".into(),
            probe_key: Some(verified.key.clone()),
            probe_cc: generic.probe_cc.to_string(),
            probe_asn: generic.probe_asn.0,
            test_name: generic.test_name.clone(),
            domain: generic
                .input
                .as_deref()
                .and_then(|i| Url::parse(i).ok())
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase)),
            input: generic.input.clone(),
            measured_at: generic.measurement_start_time.clone(),
            blocking: None,
            accessible: None,
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: line.to_string(),
            network_verified: origin.vouches_for(generic.probe_cc.as_str(), generic.probe_asn.0),
        };
        if let Some(m) = typed {
            apply_verdict(&mut row, &m, fingerprints);
        } else if row.test_name == "canary" {
            // Whether most canary targets answered: the probe was online (see `outage.rs`).
            row.accessible =
                crate::signals::canary_counts(line).map(|(ok, total)| total > 0 && ok * 2 >= total);
        } else if row.test_name == THROTTLING {
            apply_throttling(&mut row, verified.measurement);
        }
        rows.push(row);
        row_lines.push(n);
    }
    let added = storage.insert(&rows)?;
    for ((row, n), new) in rows.into_iter().zip(row_lines).zip(added) {
        outcomes.push(LineOutcome {
            line: n,
            id: Some(row.id),
            status: if new { "accepted" } else { "duplicate" },
            reason: None,
        });
    }
    outcomes.sort_by_key(|o| o.line);
    Ok(outcomes)
}

/// A signed control message (heartbeat, enrolment) that passed its checks.
pub struct Control {
    /// The signer's base64 public key.
    pub key: String,
    /// The measurement inside the envelope.
    pub measurement: Measurement<serde_json::Value>,
}

/// Checks a single-envelope control message: size, signature, shape, `test_name`, and a start
/// time no later than now plus the clock-skew allowance. The key's standing is left to the
/// caller, since enrolment is exactly the message an unknown key may send.
/// `Err(reason)` when it is refused.
pub fn control(body: &str, test_name: &str, config: &IngestConfig) -> Result<Control, String> {
    let line = body.trim();
    if line.len() > config.max_line_bytes {
        return Err("too large".into());
    }
    let verified = match verify(line) {
        Ok(v) => v,
        Err(EnvelopeError::BadSignature) => return Err("bad signature".into()),
        Err(e) => return Err(format!("malformed: {e}")),
    };
    let m: Measurement<serde_json::Value> =
        serde_json::from_str(verified.measurement).map_err(|e| format!("malformed: {e}"))?;
    if m.test_name != test_name {
        return Err(format!("test_name is {:?}, not {test_name}", m.test_name));
    }
    match start_time(&m.measurement_start_time) {
        Some(t) if t <= SystemTime::now() + config.clock_skew => {}
        Some(_) => return Err("time in the future".into()),
        None => return Err("malformed: bad measurement_start_time".into()),
    }
    Ok(Control {
        key: verified.key,
        measurement: m,
    })
}

/// Checks and records a heartbeat: one envelope whose measurement has `test_name: heartbeat`.
/// `Ok(Err(reason))` when it is refused.
pub fn heartbeat(
    storage: &dyn Storage,
    body: &str,
    config: &IngestConfig,
    origin: &Origin,
) -> Result<Result<(), String>, DbError> {
    let c = match control(body, "heartbeat", config) {
        Ok(c) => c,
        Err(reason) => return Ok(Err(reason)),
    };
    match storage.key_state(&c.key)? {
        Some(KeyState::Revoked) => return Ok(Err("revoked key".into())),
        None if config.require_enrolment => return Ok(Err("unknown key".into())),
        None => storage.set_key(&c.key, KeyState::Trusted)?,
        Some(KeyState::Trusted) => {}
    }
    let m = &c.measurement;
    storage.heartbeat(
        &c.key,
        m.probe_cc.as_str(),
        m.probe_asn.0,
        &m.measurement_start_time,
        origin.vouches_for(m.probe_cc.as_str(), m.probe_asn.0),
    )?;
    Ok(Ok(()))
}

/// Scores `m` with the current rules into `row`.
pub fn apply_verdict(row: &mut Row, m: &WebConnectivityMeasurement, fingerprints: &Fingerprints) {
    let v = score(m, &VANTAGE, fingerprints);
    row.blocking = v
        .blocking
        .as_ref()
        .and_then(|b| serde_json::to_string(b).ok());
    row.accessible = v.accessible;
    row.confirmed = v.confirmed;
    row.rule_set = Some(v.rule_set.to_string());
    row.verdict = serde_json::to_string(&v).ok();
}

/// The rule set that scored a throttling measurement, stored with its verdict.
pub const THROTTLING_RULES: &str = "vantage-throttling-1";

/// Scores a throttling measurement again, here, from its downloads (DESIGN: scoring happens in
/// the aggregator; the probe's own verdict is for display), with the probe library's rules
/// (`vantage_probe::throttling::score`). Its input is a bare host name, which is also its
/// domain. A measurement whose downloads cannot be read is kept unscored.
pub fn apply_throttling(row: &mut Row, measurement: &str) {
    #[derive(serde::Deserialize)]
    struct Keys {
        downloads: Vec<Download>,
    }
    #[derive(serde::Deserialize)]
    struct Part {
        test_keys: Keys,
    }
    row.domain = row.input.as_deref().map(str::to_ascii_lowercase);
    let Ok(part) = serde_json::from_str::<Part>(measurement) else {
        return;
    };
    let (target, control): (Vec<Download>, Vec<Download>) = part
        .test_keys
        .downloads
        .into_iter()
        .partition(|d| d.role == Role::Target);
    let a = assess(&target, &control, &ThrottlingRules::default());
    row.blocking = match a.verdict {
        Verdict::Throttled => Some("\"throttling\"".into()),
        Verdict::NotThrottled => Some("false".into()),
        Verdict::Failed | Verdict::Undetermined => None,
    };
    row.accessible = match a.verdict {
        Verdict::Failed => Some(false),
        Verdict::Undetermined => None,
        Verdict::Throttled | Verdict::NotThrottled => Some(true),
    };
    row.rule_set = Some(THROTTLING_RULES.into());
    row.verdict = serde_json::to_string(&a).ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_parse_as_utc() {
        let t = start_time("2024-02-12 20:33:47").expect("parse");
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_secs();
        assert_eq!(secs, 1_707_770_027);
        assert!(start_time("2024-02-12T20:33:47Z").is_none());
    }
}
