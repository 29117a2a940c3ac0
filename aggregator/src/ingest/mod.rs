//! Ingest of signed measurements (README.md, "Upload protocol" and the route
//! `POST /api/v1/measurements`).
//!
//! Each line of a JSONL body gets one outcome: `accepted`, `duplicate`, or `rejected` with a
//! reason. The signature is checked on the line's raw bytes before the measurement is parsed at
//! all; only then is the key's standing looked up (trust on first use unless enrolment is
//! required; a revoked key is refused), the measurement's nesting depth bounded, the measurement
//! parsed, every value that feeds signals and events range-checked, and its verdict computed
//! with the current rules.
//!
//! A body is taken a line at a time ([`Session`]), as the server inflates it, and stored in
//! batches of bounded size, each batch in one transaction and each row whole, so a crash never
//! leaves half a measurement and a large body never sits in memory at once. A key seen for the
//! first time is registered only by a line that passed every check, and only as many keys per
//! hour as the operator allows (`limits.rs`).

pub mod archive;
pub mod enrol;
pub mod limits;
pub mod maintain;
pub mod quic;
pub mod score;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use url::Url;
use vantage_probe::envelope::{EnvelopeError, Verifier, verify};
use vantage_probe::ooni::{Measurement, WEB_CONNECTIVITY, WebConnectivityMeasurement};
use vantage_probe::throttling::score::assess;
use vantage_probe::throttling::{Download, Role, Rules as ThrottlingRules, THROTTLING, Verdict};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::VANTAGE;
use vantage_probe::verdict::score;
use vantage_probe::verdict::services::{self, Meta, SERVICE_TESTS};

use crate::ingest::limits::{KeyLimits, Turns};
use crate::store::log::Stored;
use crate::store::{DbError, KeyState, Route, Row, Storage, StoredHeartbeat};

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
    /// Most non-empty lines taken from one body; the rest of the body is not read, and the
    /// answer says so (a probe sends those again in another request).
    pub max_lines: usize,
    /// Accepted lines are stored once this many bytes of them are waiting: the memory one
    /// upload holds besides the line being read.
    pub batch_bytes: usize,
    /// Per-key and new-key rate limits.
    pub limits: Arc<KeyLimits>,
    /// Turns at the processors, shared by every upload.
    pub turns: Arc<Turns>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_line_bytes: 1 << 20,
            clock_skew: Duration::from_secs(3600),
            require_enrolment: false,
            max_body_bytes: 128 << 20,
            max_lines: 20_000,
            batch_bytes: 2 << 20,
            limits: Arc::new(KeyLimits::unlimited()),
            turns: Arc::new(Turns::per_core()),
        }
    }
}

impl IngestConfig {
    /// The memory one upload may hold while it is ingested: a batch waiting to be stored (its
    /// lines, and the rows and verdicts made from them, about twice as much again), plus the
    /// longest line being read. The server reserves this from its byte budget.
    pub fn working_set_bytes(&self) -> usize {
        self.batch_bytes
            .saturating_mul(3)
            .saturating_add(self.max_line_bytes)
    }
}

/// Where an upload or heartbeat came from, as far as the aggregator can tell. The connecting
/// address is looked up in the geolocation source (`--geoip`, `--prefixes`) and dropped; only
/// the network it belongs to travels on from here (SECURITY.md, "What we protect").
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

/// The answer for one line: the wire type the probe reads it with.
pub use vantage_probe::wire::{LineOutcome, Status};

fn rejected(line: usize, id: Option<String>, reason: String) -> LineOutcome {
    LineOutcome::rejected(line as u64, id, reason)
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
    probe_ip: Option<String>,
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
            probe_ip: Some(m.probe_ip.clone()),
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

/// The earliest start time accepted: 2012-01-01 00:00:00 UTC, before OONI's first
/// measurements and long before any Vantage probe. An older time can only be a broken clock
/// or a forgery, and would open bins nothing else reaches.
pub const EARLIEST_START_SECS: u64 = 1_325_376_000;

/// The deepest nesting of arrays and objects accepted in a measurement, for every test name.
/// OONI's measurements nest about eight deep (`test_keys.requests[].response.headers_list[]`);
/// this leaves room and keeps any later reader (scoring, rescore, exports, other tools) far
/// from its recursion limit.
pub const MAX_DEPTH: usize = 32;

/// The most targets a canary round may report: the probe's built-in set is nine, and an
/// operator's canary file is checked against the same bound on the probe.
pub const MAX_CANARY_TARGETS: u64 = 64;

/// The most downloads, and samples per download, a throttling measurement may hold: the test
/// makes six downloads (three repetitions of target and control) of at most eight seconds with
/// a sample every 50 ms.
const MAX_DOWNLOADS: usize = 64;
const MAX_SAMPLES: usize = 4096;

/// How deep arrays and objects nest in `json`, counted over its bytes without parsing it
/// (brackets inside strings do not count), stopping as soon as `limit` is passed.
pub fn nesting_exceeds(json: &str, limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The checks every measurement and control message passes, whatever its test name: the
/// probe's address is never in it, and its start time lies between [`EARLIEST_START_SECS`] and
/// now plus the clock-skew allowance.
fn check_head(
    measurement_start_time: &str,
    probe_ip: Option<&str>,
    latest: SystemTime,
) -> Result<(), String> {
    // `probe_ip` is always 127.0.0.1 (docs/architecture.md, "What probe and aggregator agree
    // on"); the probe scrubs its address. A
    // measurement carrying another one would be stored and republished by the API, so it is
    // refused rather than kept.
    if let Some(ip) = probe_ip
        && ip != "127.0.0.1"
    {
        return Err(
            "probe_ip: only 127.0.0.1 is accepted; the aggregator stores no probe address".into(),
        );
    }
    let earliest = SystemTime::UNIX_EPOCH + Duration::from_secs(EARLIEST_START_SECS);
    match start_time(measurement_start_time) {
        Some(t) if t > latest => Err("time in the future".into()),
        Some(t) if t < earliest => Err("time before 2012".into()),
        Some(_) => Ok(()),
        None => Err("malformed: measurement_start_time is not YYYY-MM-DD HH:MM:SS".into()),
    }
}

/// A canary's `test_keys.ok` and `.total`, when they are counts a canary round can have.
fn canary_counts(measurement: &str) -> Result<(u64, u64), String> {
    #[derive(serde::Deserialize)]
    struct Keys {
        ok: u64,
        total: u64,
    }
    #[derive(serde::Deserialize)]
    struct M {
        test_keys: Keys,
    }
    let m: M = serde_json::from_str(measurement).map_err(|e| format!("malformed: {e}"))?;
    let Keys { ok, total } = m.test_keys;
    if total == 0 || total > MAX_CANARY_TARGETS || ok > total {
        return Err(format!(
            "malformed: canary counts ok {ok} of {total} (0 <= ok <= total, 1 <= total <= {MAX_CANARY_TARGETS})"
        ));
    }
    Ok((ok, total))
}

/// Whether a line may go on: continue, or the body holds more lines than one request may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Send the next line.
    More,
    /// [`IngestConfig::max_lines`] lines were taken; read no further.
    Full,
}

/// One body's ingest, fed a line at a time as the body is read.
pub struct Session<'a> {
    storage: &'a dyn Storage,
    config: &'a IngestConfig,
    fingerprints: &'a Fingerprints,
    origin: &'a Origin,
    route: Route,
    latest: SystemTime,
    known: HashMap<String, Option<KeyState>>,
    verifier: Verifier,
    outcomes: Vec<LineOutcome>,
    rows: Vec<Row>,
    row_lines: Vec<usize>,
    waiting_bytes: usize,
    taken: usize,
}

impl<'a> Session<'a> {
    /// A session storing into `storage`.
    pub fn new(
        storage: &'a dyn Storage,
        config: &'a IngestConfig,
        fingerprints: &'a Fingerprints,
        origin: &'a Origin,
    ) -> Self {
        Session {
            storage,
            config,
            fingerprints,
            origin,
            route: Route::Upload,
            latest: SystemTime::now() + config.clock_skew,
            known: HashMap::new(),
            verifier: Verifier::default(),
            outcomes: Vec::new(),
            rows: Vec::new(),
            row_lines: Vec::new(),
            waiting_bytes: 0,
            taken: 0,
        }
    }

    /// Records the rows of this body as having arrived by `route` (an upload unless said
    /// otherwise). A measurement already stored keeps the route it first came by.
    pub fn with_route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// Takes line `n` (1-based) of the body.
    pub fn line(&mut self, n: usize, line: &str) -> Result<Flow, DbError> {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return Ok(Flow::More);
        }
        self.taken += 1;
        if line.len() > self.config.max_line_bytes {
            self.outcomes.push(rejected(
                n,
                None,
                format!("too large: {} bytes", line.len()),
            ));
        } else if let Some(row) = {
            let _turn = self.config.turns.take();
            self.check(n, line)?
        } {
            self.waiting_bytes += line.len();
            self.rows.push(row);
            self.row_lines.push(n);
            if self.waiting_bytes >= self.config.batch_bytes {
                self.flush()?;
            }
        }
        Ok(if self.taken >= self.config.max_lines {
            Flow::Full
        } else {
            Flow::More
        })
    }

    /// Refuses line `n` for a reason found before it could be read as text (longer than
    /// [`IngestConfig::max_line_bytes`], not UTF-8); the reader never holds such a line whole.
    pub fn refuse(&mut self, n: usize, reason: String) -> Flow {
        self.taken += 1;
        self.outcomes.push(rejected(n, None, reason));
        if self.taken >= self.config.max_lines {
            Flow::Full
        } else {
            Flow::More
        }
    }

    /// The row line `n` makes, or `None` with its rejection recorded.
    fn check(&mut self, n: usize, line: &str) -> Result<Option<Row>, DbError> {
        let verified = match self.verifier.verify(line) {
            Ok(v) => v,
            Err(EnvelopeError::BadSignature) => {
                self.outcomes
                    .push(rejected(n, None, "bad signature".into()));
                return Ok(None);
            }
            Err(e) => {
                self.outcomes
                    .push(rejected(n, None, format!("malformed: {e}")));
                return Ok(None);
            }
        };
        let id = verified.id.to_string();
        let refuse = |outcomes: &mut Vec<LineOutcome>, reason: String| {
            outcomes.push(rejected(n, Some(id.clone()), reason));
            Ok(None)
        };
        // Batches come from one probe: look each key up once per body.
        let state = match self.known.get(&verified.key) {
            Some(state) => *state,
            None => {
                let state = self.storage.key_state(&verified.key)?;
                self.known.insert(verified.key.clone(), state);
                state
            }
        };
        let new_key = match state {
            Some(KeyState::Revoked) => return refuse(&mut self.outcomes, "revoked key".into()),
            None if self.config.require_enrolment => {
                return refuse(&mut self.outcomes, "unknown key".into());
            }
            None => true,
            Some(KeyState::Trusted) => {
                if let Err(e) = self.config.limits.take_line(&verified.key) {
                    return refuse(&mut self.outcomes, e.to_string());
                }
                false
            }
        };
        if nesting_exceeds(verified.measurement, MAX_DEPTH) {
            return refuse(
                &mut self.outcomes,
                format!("malformed: nested deeper than {MAX_DEPTH} levels"),
            );
        }
        // A web_connectivity measurement is parsed once, into the typed model that scoring
        // needs, and its header taken from there; anything else only into `Head`.
        let (generic, typed) = match parse(verified.measurement) {
            Ok(parsed) => parsed,
            Err(e) => return refuse(&mut self.outcomes, format!("malformed: {e}")),
        };
        if let Err(reason) = check_head(
            &generic.measurement_start_time,
            generic.probe_ip.as_deref(),
            self.latest,
        ) {
            return refuse(&mut self.outcomes, reason);
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
            network_verified: self
                .origin
                .vouches_for(generic.probe_cc.as_str(), generic.probe_asn.0),
            route: self.route.clone(),
        };
        if let Some(m) = typed {
            apply_verdict(&mut row, &m, self.fingerprints);
        } else if row.test_name == "canary" {
            // Whether most canary targets answered: the probe was online (see `outage.rs`).
            match canary_counts(verified.measurement) {
                Ok((ok, total)) => row.accessible = Some(ok.saturating_mul(2) >= total),
                Err(reason) => return refuse(&mut self.outcomes, reason),
            }
        } else if row.test_name == THROTTLING
            && let Err(reason) = apply_throttling(&mut row, verified.measurement)
        {
            return refuse(&mut self.outcomes, reason);
        } else if row.test_name == vantage_probe::quic::QUIC
            && let Err(reason) = quic::apply_quic(&mut row, verified.measurement)
        {
            return refuse(&mut self.outcomes, reason);
        } else if SERVICE_TESTS.contains(&row.test_name.as_str()) {
            // Parsed whole only here: these verdicts read `test_keys` and the envelope's
            // version and date. A measurement whose JSON is not an object is stored unscored,
            // as any test name without rules is.
            if let Ok(m) = serde_json::from_str::<serde_json::Value>(verified.measurement) {
                let (test_name, input) = (row.test_name.clone(), row.input.clone());
                let keys = m.get("test_keys").unwrap_or(&serde_json::Value::Null);
                apply_service_with(&mut row, &test_name, input.as_deref(), keys, &Meta::of(&m));
            }
        }
        if new_key {
            // Registered only now, by a line that passed every check, and within the hour's
            // allowance of new keys.
            if let Err(e) = self.config.limits.take_new_key() {
                return refuse(&mut self.outcomes, e.to_string());
            }
            self.storage.set_key(&verified.key, KeyState::Trusted)?;
            self.known
                .insert(verified.key.clone(), Some(KeyState::Trusted));
            if let Err(e) = self.config.limits.take_line(&verified.key) {
                return refuse(&mut self.outcomes, e.to_string());
            }
        }
        Ok(Some(row))
    }

    /// Stores the rows waiting, in one transaction, appending the new ones to the store's
    /// transparency log in it when the store keeps one; each outcome carries its leaf
    /// (`docs/transparency.md`).
    fn flush(&mut self) -> Result<(), DbError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let stored: Vec<Stored> = match self.storage.log() {
            Ok(log) => log.insert_logged(&self.rows)?,
            Err(_) => self
                .storage
                .insert(&self.rows)?
                .into_iter()
                .map(|new| Stored {
                    new,
                    leaf_index: None,
                })
                .collect(),
        };
        for ((row, n), s) in self
            .rows
            .drain(..)
            .zip(self.row_lines.drain(..))
            .zip(stored)
        {
            let mut outcome = LineOutcome::stored(n as u64, row.id, s.new);
            outcome.leaf_index = s.leaf_index;
            self.outcomes.push(outcome);
        }
        self.waiting_bytes = 0;
        Ok(())
    }

    /// Stores what is left and returns every line's outcome, in line order.
    pub fn finish(mut self) -> Result<Vec<LineOutcome>, DbError> {
        self.flush()?;
        let mut outcomes = std::mem::take(&mut self.outcomes);
        outcomes.sort_by_key(|o| o.line);
        Ok(outcomes)
    }
}

/// Checks, scores and stores every line of `body` (at most [`IngestConfig::max_lines`] of them).
pub fn ingest(
    storage: &dyn Storage,
    body: &str,
    config: &IngestConfig,
    fingerprints: &Fingerprints,
    origin: &Origin,
) -> Result<Vec<LineOutcome>, DbError> {
    let mut session = Session::new(storage, config, fingerprints, origin);
    for (i, line) in body.lines().enumerate() {
        if session.line(i + 1, line)? == Flow::Full {
            break;
        }
    }
    session.finish()
}

/// The route of an upload whose `vantage-relay` header verified, signed by `by`: `relay` by
/// that key while the key is in good standing as its own measurements would be (trusted, or
/// never seen where keys are taken on first use), else `upload`, the route that claims nothing
/// (docs/carry.md, "The relayer's standing"). Only the attribution depends on it: each envelope
/// is still judged on its own signature and its own signer's standing, so a good measurement is
/// never refused for who carried it. A relayer seen first here is not registered: only a
/// measurement of its own registers a key, within the new-key limit.
pub fn relay_route(
    storage: &dyn Storage,
    config: &IngestConfig,
    by: String,
) -> Result<Route, DbError> {
    let refused = match storage.key_state(&by)? {
        Some(KeyState::Trusted) => None,
        None if !config.require_enrolment => None,
        Some(KeyState::Revoked) => Some("revoked"),
        None => Some("not enrolled"),
    };
    Ok(match refused {
        None => Route::Relay { by },
        Some(why) => {
            tracing::warn!("an upload relayed by {by} is stored as an upload: the key is {why}");
            Route::Upload
        }
    })
}

/// A signed control message (heartbeat, enrolment) that passed its checks.
pub struct Control {
    /// The signer's base64 public key.
    pub key: String,
    /// The SHA-256 of the signed measurement bytes, hex: its id, and the first half of its
    /// transparency log leaf (`docs/transparency.md`, "Leaves").
    pub id: String,
    /// The envelope, as received less surrounding white space: what the log's entry route
    /// serves for a heartbeat.
    pub envelope: String,
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
    if nesting_exceeds(verified.measurement, MAX_DEPTH) {
        return Err(format!("malformed: nested deeper than {MAX_DEPTH} levels"));
    }
    let m: Measurement<serde_json::Value> =
        serde_json::from_str(verified.measurement).map_err(|e| format!("malformed: {e}"))?;
    if m.test_name != test_name {
        return Err(format!("test_name is {:?}, not {test_name}", m.test_name));
    }
    check_head(
        &m.measurement_start_time,
        Some(&m.probe_ip),
        SystemTime::now() + config.clock_skew,
    )?;
    Ok(Control {
        key: verified.key,
        id: verified.id.to_string(),
        envelope: line.to_string(),
        measurement: m,
    })
}

/// Checks and records a heartbeat: one envelope whose measurement has `test_name: heartbeat`.
/// A new one is appended to the transparency log, with its envelope, in the transaction that
/// records it, when the store keeps a log (`docs/transparency.md`, "What is logged").
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
        None => {
            if let Err(e) = config.limits.take_new_key() {
                return Ok(Err(e.to_string()));
            }
            storage.set_key(&c.key, KeyState::Trusted)?;
        }
        Some(KeyState::Trusted) => {}
    }
    if let Err(e) = config.limits.take_line(&c.key) {
        return Ok(Err(e.to_string()));
    }
    let m = &c.measurement;
    let beat = StoredHeartbeat {
        key: c.key.clone(),
        cc: m.probe_cc.as_str().to_string(),
        asn: m.probe_asn.0,
        sent_at: m.measurement_start_time.clone(),
        verified: origin.vouches_for(m.probe_cc.as_str(), m.probe_asn.0),
        received_at: None,
    };
    match storage.log() {
        Ok(log) => {
            log.heartbeat_logged(&beat, &c.id, &c.envelope)?;
        }
        Err(_) => {
            storage.heartbeat(&beat.key, &beat.cc, beat.asn, &beat.sent_at, beat.verified)?;
        }
    }
    Ok(Ok(()))
}

/// Scores a measurement of one of OONI's service tests
/// ([`vantage_probe::verdict::services::SERVICE_TESTS`]) into `row`: its target becomes the
/// row's domain, so that the blocking detector sees "whatsapp" as it sees a host. Returns
/// whether the test name is one of them.
///
/// The rules that depend on the test's version and date (`services::BROKEN_VERSIONS`) need
/// [`apply_service_with`]; here only the row's `measured_at` is known.
pub fn apply_service(
    row: &mut Row,
    test_name: &str,
    input: Option<&str>,
    test_keys: &serde_json::Value,
) -> bool {
    let meta = Meta {
        measurement_start_time: Some(row.measured_at.clone()),
        ..Meta::default()
    };
    apply_service_with(row, test_name, input, test_keys, &meta)
}

/// [`apply_service`] with the measurement's envelope fields (`Meta::of` the whole
/// measurement), so that a test version known to report wrongly is stored as undetermined.
pub fn apply_service_with(
    row: &mut Row,
    test_name: &str,
    input: Option<&str>,
    test_keys: &serde_json::Value,
    meta: &Meta,
) -> bool {
    let Some(v) = services::score_service_with(test_name, input, test_keys, meta) else {
        return false;
    };
    row.domain = Some(v.target.clone());
    row.blocking = v
        .blocking
        .as_ref()
        .and_then(|b| serde_json::to_string(b).ok());
    row.accessible = v.accessible;
    row.confirmed = false;
    row.rule_set = Some(v.rule_set.to_string());
    row.verdict = serde_json::to_string(&v).ok();
    true
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

/// Scores a throttling measurement again, here, from its downloads (scoring happens in the
/// aggregator; the probe's own verdict is for display: docs/architecture.md), with the probe
/// library's rules (`vantage_probe::throttling::score`). Its input is a bare host name, which is
/// also its domain. A measurement whose downloads cannot be read is kept unscored; one whose
/// downloads are more or longer than the test makes is refused (`Err` with the reason), since its
/// rates would feed throttling events.
pub fn apply_throttling(row: &mut Row, measurement: &str) -> Result<(), String> {
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
        return Ok(());
    };
    let downloads = part.test_keys.downloads;
    if downloads.len() > MAX_DOWNLOADS || downloads.iter().any(|d| d.samples.len() > MAX_SAMPLES) {
        return Err(format!(
            "malformed: a throttling measurement has at most {MAX_DOWNLOADS} downloads of {MAX_SAMPLES} samples"
        ));
    }
    let (target, control): (Vec<Download>, Vec<Download>) =
        downloads.into_iter().partition(|d| d.role == Role::Target);
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
    Ok(())
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

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(!nesting_exceeds(r#"{"a":[{"b":"[[[[[[[["}]}"#, 3));
        assert!(nesting_exceeds(r#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!nesting_exceeds(r#"{"a":"\"{{{{"}"#, 1));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(nesting_exceeds(&deep, MAX_DEPTH));
    }

    #[test]
    fn heads_carry_no_address_and_a_time_between_2012_and_now() {
        let latest = SystemTime::now();
        assert_eq!(
            check_head("2024-02-12 20:33:47", Some("127.0.0.1"), latest),
            Ok(())
        );
        assert_eq!(check_head("2024-02-12 20:33:47", None, latest), Ok(()));
        let ip = check_head("2024-02-12 20:33:47", Some("203.0.113.9"), latest);
        assert!(ip.is_err_and(|e| e.starts_with("probe_ip")));
        assert_eq!(
            check_head("2011-12-31 23:59:59", None, latest),
            Err("time before 2012".into())
        );
        assert_eq!(
            check_head("2999-01-01 00:00:00", None, latest),
            Err("time in the future".into())
        );
    }

    #[test]
    fn canary_counts_must_be_a_round_a_canary_can_have() {
        let m = |ok: &str, total: &str| format!(r#"{{"test_keys":{{"ok":{ok},"total":{total}}}}}"#);
        assert_eq!(canary_counts(&m("5", "9")), Ok((5, 9)));
        for (ok, total) in [
            ("9223372036854775807", "9223372036854775807"),
            ("-1", "9"),
            ("10", "9"),
            ("0", "0"),
            ("1", "65"),
            ("1.5", "9"),
        ] {
            assert!(canary_counts(&m(ok, total)).is_err(), "{ok} of {total}");
        }
    }
}
