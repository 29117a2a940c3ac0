//! Checking an evidence bundle offline (`vantage verify`; the format is in
//! `docs/transparency.md`, "Evidence bundles"): a zip of one directory that an aggregator
//! made of one event of its timeline. Nothing here touches the network, and nothing in the
//! bundle is taken on trust except what the reader is told to compare:
//!
//! - every file's SHA-256 and size against `MANIFEST.json`, and no file outside it;
//! - the checkpoint's signature by the aggregator's key ([`crate::tlog::verify_checkpoint`]):
//!   the key given with `--log-key`, or else the bundle's own `aggregator.pub`, which the
//!   reader is told to compare with the key the aggregator publishes;
//! - every envelope's Ed25519 signature ([`crate::envelope::verify`]) and that its file is
//!   named by its id;
//! - every envelope's leaf (its id and key, [`crate::tlog::leaf`]) and its RFC 9162 inclusion
//!   proof against that one checkpoint ([`crate::tlog::verify_inclusion`]);
//! - every envelope's verdict recomputed from its measurement with the rule set the bundle
//!   names (`crate::verdict`): a blocking event's measurements are anomalies on its layer for
//!   one of its targets in its network; a shutdown's are failed canary rounds in its networks
//!   during it;
//! - every measurement the event lists is in the bundle.
//!
//! How each envelope reached the aggregator (`arrival.json`, [`arrival`]) is information the
//! aggregator recorded and nothing signs: it is shown in a note, never checked.
//!
//! A damaged bundle (not a zip, truncated, an entry larger than any bundle holds, too many
//! entries, not one directory, no manifest) is an error, not a list of checks; reads are
//! bounded whatever the zip's headers claim.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Seek};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::Value;

use crate::envelope;
use crate::ooni::{Blocking, WEB_CONNECTIVITY, WebConnectivityMeasurement};
use crate::printable::printable;
use crate::tlog::{self, Checkpoint};
use crate::verdict::fingerprints::Fingerprints;
use crate::verdict::rules::{OONI, RuleSet, VANTAGE};
use crate::verdict::services::{self, Meta, SERVICE_TESTS};

mod arrival;

/// The bundle format this reader knows, as `MANIFEST.json` names it.
pub const FORMAT: &str = "vantage-evidence-1";

/// The most entries a bundle may have: the aggregator's cap of 100,000 envelopes and its
/// nine other files, with room for directory entries.
pub const MAX_ENTRIES: usize = 100_000 + 64;

/// The most bytes one envelope may have uncompressed (an aggregator takes lines of at most a
/// few MiB).
pub const MAX_ENVELOPE_BYTES: u64 = 16 << 20;

/// The most bytes any other file may have uncompressed: `proofs.json` of 100,000 envelopes is
/// about 120 MiB.
pub const MAX_FILE_BYTES: u64 = 512 << 20;

/// The most bytes read from a whole bundle, uncompressed: a zip bomb stops here.
pub const MAX_TOTAL_BYTES: u64 = 8 << 30;

/// Why a bundle could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be opened.
    #[error("{path}: {error}")]
    Open {
        /// The file.
        path: String,
        /// Why (in the message; not a `source`, which would print it twice).
        error: io::Error,
    },
    /// Not a zip, or a damaged one (truncated, a broken central directory).
    #[error("{path}: not a readable zip (is it truncated or damaged?): {reason}")]
    NotZip {
        /// The file.
        path: String,
        /// The zip reader's words.
        reason: String,
    },
    /// More entries than a bundle has.
    #[error("{path}: {entries} entries, more than an evidence bundle holds ({MAX_ENTRIES})")]
    TooManyEntries {
        /// The file.
        path: String,
        /// Entries found.
        entries: usize,
    },
    /// An entry larger than any bundle's, or the bundle larger than any.
    #[error("{entry}: more than {limit} bytes uncompressed, larger than an evidence bundle holds")]
    TooLarge {
        /// The entry (or `the bundle`).
        entry: String,
        /// The limit.
        limit: u64,
    },
    /// Not the one directory a bundle is.
    #[error("not an evidence bundle: {0}")]
    Layout(String),
    /// An entry that could not be read (a bad CRC, a broken deflate stream).
    #[error("{entry}: cannot be read: {reason}")]
    Entry {
        /// The entry.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The manifest is missing or not one this reader knows.
    #[error("MANIFEST.json: {0}")]
    Manifest(String),
    /// `--log-key` is not a key.
    #[error("--log-key: {0}")]
    LogKey(String),
}

/// What one line of the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The check holds.
    Ok,
    /// The check fails.
    Fail,
    /// Not a check: what the reader must know (which key was used, what is left out).
    Note,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Held, failed, or a note.
    pub status: Status,
    /// What was checked (`manifest`, `checkpoint`, `envelope <id>`, ...).
    pub check: String,
    /// What was found.
    pub detail: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            Status::Ok => "ok  ",
            Status::Fail => "FAIL",
            Status::Note => "note",
        };
        // Both may hold strings from the bundle: a hostile one must not drive the terminal.
        write!(
            f,
            "{status} {}: {}",
            printable(&self.check),
            printable(&self.detail)
        )
    }
}

/// The counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Checks that hold.
    pub held: usize,
    /// Checks that fail.
    pub failed: usize,
    /// Envelopes read.
    pub envelopes: usize,
}

/// The key `--log-key` gives: the base64 of the aggregator's 32-byte Ed25519 public key (as
/// `serve` prints it: "test lists are signed with key ..."), or its signed-note verifier key
/// (`ORIGIN+KEYID+BASE64`, as `serve` prints it for the log).
pub fn parse_log_key(text: &str) -> Result<[u8; 32], BundleError> {
    let text = text.trim();
    if text.contains('+') && text.contains('/') && text.starts_with(tlog::ORIGIN_PREFIX) {
        return tlog::public_of_verifier_key(text).map_err(|e| BundleError::LogKey(e.to_string()));
    }
    B64.decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            BundleError::LogKey(format!(
                "{text:?} is neither the base64 of a 32-byte Ed25519 key nor a verifier key"
            ))
        })
}

#[derive(Debug, Deserialize)]
struct ManifestFile {
    path: String,
    sha256: String,
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    format: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    made_at: String,
    #[serde(default)]
    truncated: bool,
    #[serde(default)]
    max_envelopes: u64,
    #[serde(default)]
    newer_than_checkpoint_left_out: u64,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Deserialize)]
struct ProofsCheckpoint {
    size: u64,
    root: String,
}

#[derive(Debug, Deserialize)]
struct ProofEntry {
    id: String,
    #[serde(default)]
    leaf_index: Option<u64>,
    #[serde(default)]
    leaf: Option<String>,
    #[serde(default)]
    inclusion_proof: Vec<String>,
    #[serde(default)]
    not_logged: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Proofs {
    checkpoint: ProofsCheckpoint,
    proofs: Vec<ProofEntry>,
}

/// What the event claims, as `event.json` holds it (the timeline API's event).
#[derive(Debug, Default, Deserialize)]
struct Event {
    #[serde(default)]
    id: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    entity: Entity,
    #[serde(default)]
    layer: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    evidence: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Entity {
    #[serde(default)]
    cc: String,
    #[serde(default)]
    asn: Option<String>,
    #[serde(default)]
    asns: Vec<String>,
}

/// The zip and what has been read of it.
struct Zip<R: Read + Seek> {
    archive: zip::ZipArchive<R>,
    dir: String,
    read: u64,
}

impl<R: Read + Seek> Zip<R> {
    /// The bytes of `name` (below the bundle's directory), at most `limit` of them whatever the
    /// zip's headers say; `None` when there is no such entry.
    fn read(&mut self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, BundleError> {
        let full = format!("{}/{name}", self.dir);
        let index = match self.archive.index_for_name(&full) {
            Some(i) => i,
            None => return Ok(None),
        };
        self.read_index(index, &full, limit).map(Some)
    }

    fn read_index(&mut self, index: usize, full: &str, limit: u64) -> Result<Vec<u8>, BundleError> {
        let entry_err = |reason: String| BundleError::Entry {
            entry: full.to_string(),
            reason,
        };
        let file = self
            .archive
            .by_index(index)
            .map_err(|e| entry_err(e.to_string()))?;
        if file.size() > limit {
            return Err(BundleError::TooLarge {
                entry: full.to_string(),
                limit,
            });
        }
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| entry_err(e.to_string()))?;
        if bytes.len() as u64 > limit {
            return Err(BundleError::TooLarge {
                entry: full.to_string(),
                limit,
            });
        }
        self.read += bytes.len() as u64;
        if self.read > MAX_TOTAL_BYTES {
            return Err(BundleError::TooLarge {
                entry: "the bundle".into(),
                limit: MAX_TOTAL_BYTES,
            });
        }
        Ok(bytes)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The checks, reporting each line as it is found.
struct Checker<'a> {
    out: &'a mut dyn FnMut(&Line),
    summary: Summary,
}

impl Checker<'_> {
    fn line(&mut self, status: Status, check: impl Into<String>, detail: impl Into<String>) {
        match status {
            Status::Ok => self.summary.held += 1,
            Status::Fail => self.summary.failed += 1,
            Status::Note => {}
        }
        (self.out)(&Line {
            status,
            check: check.into(),
            detail: detail.into(),
        });
    }

    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.line(Status::Ok, check, detail);
    }

    fn fail(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.line(Status::Fail, check, detail);
    }

    fn note(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.line(Status::Note, check, detail);
    }
}

/// The one directory every entry is in.
fn directory<R: Read + Seek>(archive: &zip::ZipArchive<R>) -> Result<String, BundleError> {
    let mut dir: Option<String> = None;
    for name in archive.file_names() {
        let name = name.map_err(|e| BundleError::Layout(format!("an entry's name: {e}")))?;
        let (first, rest) = name.split_once('/').ok_or_else(|| {
            BundleError::Layout(format!("{name:?} is not inside the bundle's directory"))
        })?;
        if first.is_empty() || first == ".." || rest.split('/').any(|p| p == "..") {
            return Err(BundleError::Layout(format!("{name:?} is not a plain path")));
        }
        match &dir {
            None => dir = Some(first.to_string()),
            Some(d) if d == first => {}
            Some(d) => {
                return Err(BundleError::Layout(format!(
                    "entries in two directories, {d:?} and {first:?}"
                )));
            }
        }
    }
    dir.ok_or_else(|| BundleError::Layout("the zip is empty".into()))
}

/// Whether `name` is an id: 64 lower-case hex digits.
fn is_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The layer a stored verdict's `blocking` names, as events name it.
fn layer_of(blocking: &Option<Blocking>) -> Option<&'static str> {
    match blocking {
        Some(Blocking::Kind(k)) => match k.as_str() {
            "dns" => Some("dns"),
            "tcp_ip" => Some("tcp"),
            "tls" => Some("tls"),
            "http-failure" | "http-diff" => Some("http"),
            _ => None,
        },
        _ => None,
    }
}

fn blocking_text(blocking: &Option<Blocking>) -> String {
    match blocking {
        Some(Blocking::Kind(k)) => k.clone(),
        Some(Blocking::Flag(f)) => f.to_string(),
        None => "undetermined".into(),
    }
}

/// What the verdicts are recomputed with.
struct Rules {
    web: Option<RuleSet>,
    web_name: String,
    services: String,
    fingerprints: Fingerprints,
}

impl Rules {
    fn of(detector: &Value) -> Rules {
        let web_name = detector["rule_sets"]["web_connectivity"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Rules {
            web: [OONI, VANTAGE].into_iter().find(|s| s.version == web_name),
            web_name,
            services: detector["rule_sets"]["services"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            fingerprints: Fingerprints::builtin(),
        }
    }
}

/// The time of `YYYY-MM-DD HH:MM:SS` (UTC) as comparable text: the format sorts as it reads.
fn in_span(at: &str, start: &str, end: Option<&str>) -> bool {
    at >= start && end.is_none_or(|e| at <= e)
}

impl Event {
    /// Whether measurements of network `asn` (`AS<n>`) belong to this event's place.
    fn covers(&self, cc: &str, asn: &str) -> bool {
        cc == self.entity.cc
            && match (self.scope.as_str(), &self.entity.asn) {
                ("full", _) => true,
                (_, Some(a)) => a == asn,
                _ => self.entity.asns.is_empty() || self.entity.asns.iter().any(|a| a == asn),
            }
    }
}

/// Recomputes the verdict of one measurement and says whether it is what the event claims.
fn check_verdict(c: &mut Checker<'_>, id: &str, measurement: &str, event: &Event, rules: &Rules) {
    let check = format!("verdict {id}");
    let value: Value = match serde_json::from_str(measurement) {
        Ok(v) => v,
        Err(e) => return c.fail(check, format!("the measurement is not JSON: {e}")),
    };
    let text = |k: &str| value[k].as_str().unwrap_or_default().to_string();
    let (test_name, cc, asn, at) = (
        text("test_name"),
        text("probe_cc"),
        text("probe_asn"),
        text("measurement_start_time"),
    );
    if !event.covers(&cc, &asn) {
        return c.fail(
            check,
            format!(
                "measured in {asn} of {cc}, outside the event's place ({} {})",
                event.entity.cc,
                event
                    .entity
                    .asn
                    .clone()
                    .unwrap_or_else(|| event.entity.asns.join(" "))
            ),
        );
    }
    if !in_span(&at, &event.start, event.end.as_deref()) {
        return c.fail(
            check,
            format!(
                "measured at {at}, outside the event ({} to {})",
                event.start,
                event.end.as_deref().unwrap_or("now")
            ),
        );
    }
    match event.kind.as_str() {
        "blocking" => {
            let want = event.layer.as_deref().unwrap_or_default();
            let (target, blocking, rule_set) = if test_name == WEB_CONNECTIVITY {
                let Some(set) = &rules.web else {
                    return c.fail(
                        check,
                        format!(
                            "the bundle names web_connectivity rule set {:?}, which this vantage does not have (it has {} and {})",
                            rules.web_name, OONI.version, VANTAGE.version
                        ),
                    );
                };
                let m: WebConnectivityMeasurement = match serde_json::from_str(measurement) {
                    Ok(m) => m,
                    Err(e) => {
                        return c.fail(check, format!("not a web_connectivity measurement: {e}"));
                    }
                };
                let v = crate::verdict::score(&m, set, &rules.fingerprints);
                let host = url::Url::parse(&text("input"))
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                    .unwrap_or_default();
                (host, v.blocking, set.version.to_string())
            } else if SERVICE_TESTS.contains(&test_name.as_str()) {
                let input = value["input"].as_str();
                let keys = value.get("test_keys").unwrap_or(&Value::Null);
                let Some(v) =
                    services::score_service_with(&test_name, input, keys, &Meta::of(&value))
                else {
                    return c.fail(check, format!("no rules for {test_name}"));
                };
                if v.rule_set != rules.services {
                    return c.fail(
                        check,
                        format!(
                            "the bundle names service rule set {:?}, this vantage has {}",
                            rules.services, v.rule_set
                        ),
                    );
                }
                (v.target, v.blocking, v.rule_set.to_string())
            } else {
                return c.fail(
                    check,
                    format!("{test_name} has no blocking verdict: it is no evidence of blocking"),
                );
            };
            if !event
                .targets
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&target))
            {
                return c.fail(
                    check,
                    format!(
                        "measures {target}, not one of the event's targets ({})",
                        event.targets.join(", ")
                    ),
                );
            }
            match layer_of(&blocking) {
                Some(layer) if layer == want => c.ok(
                    check,
                    format!(
                        "{test_name} of {target} in {asn} at {at}: blocked ({}) on the event's layer {want}, recomputed with rule set {rule_set}",
                        blocking_text(&blocking)
                    ),
                ),
                _ => c.fail(
                    check,
                    format!(
                        "{test_name} of {target}: recomputed with rule set {rule_set} the verdict is {}, not blocking on the event's layer {want}",
                        blocking_text(&blocking)
                    ),
                ),
            }
        }
        "shutdown" => {
            if test_name != "canary" {
                return c.fail(
                    check,
                    format!("{test_name}: a shutdown's evidence is failed canary rounds"),
                );
            }
            let keys = &value["test_keys"];
            match (keys["ok"].as_u64(), keys["total"].as_u64()) {
                (Some(ok), Some(total)) if ok <= total && ok.saturating_mul(2) < total => c.ok(
                    check,
                    format!(
                        "canary in {asn} at {at}: failed, {ok} of {total} targets answered, during the event"
                    ),
                ),
                (Some(ok), Some(total)) if ok <= total => c.fail(
                    check,
                    format!(
                        "canary in {asn} at {at}: {ok} of {total} targets answered: the probe was online"
                    ),
                ),
                _ => c.fail(check, "canary without valid ok and total counts"),
            }
        }
        kind => c.note(
            check,
            format!("{kind} verdicts are not recomputed by this version of vantage verify"),
        ),
    }
}

/// Checks the bundle at `path`, reporting each line to `out` as it is found; returns the
/// counts. `log_key`: the aggregator's key as published (see [`parse_log_key`]).
pub fn verify(
    path: &Path,
    log_key: Option<&str>,
    out: &mut dyn FnMut(&Line),
) -> Result<Summary, BundleError> {
    let shown = path.display().to_string();
    let given_key = log_key.map(parse_log_key).transpose()?;
    let file = std::fs::File::open(path).map_err(|error| BundleError::Open {
        path: shown.clone(),
        error,
    })?;
    let archive =
        zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| BundleError::NotZip {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if archive.len() > MAX_ENTRIES {
        return Err(BundleError::TooManyEntries {
            path: shown,
            entries: archive.len(),
        });
    }
    let dir = directory(&archive)?;
    let mut zip = Zip {
        archive,
        dir,
        read: 0,
    };
    let manifest: Manifest = match zip.read("MANIFEST.json", MAX_FILE_BYTES)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| BundleError::Manifest(format!("not a manifest: {e}")))?,
        None => {
            return Err(BundleError::Manifest(format!(
                "no {}/MANIFEST.json: not an evidence bundle",
                zip.dir
            )));
        }
    };
    if manifest.format != FORMAT {
        return Err(BundleError::Manifest(format!(
            "format {:?}; this vantage reads {FORMAT}",
            manifest.format
        )));
    }
    let mut c = Checker {
        out,
        summary: Summary::default(),
    };
    c.note(
        "bundle",
        format!(
            "{}/ of event {}, made {} UTC, {} files in its manifest",
            zip.dir,
            manifest.event,
            manifest.made_at,
            manifest.files.len()
        ),
    );
    if manifest.truncated {
        c.note(
            "bundle",
            format!(
                "the event had more measurements than a bundle holds; this one holds the first {}",
                manifest.max_envelopes
            ),
        );
    }
    if manifest.newer_than_checkpoint_left_out > 0 {
        c.note(
            "bundle",
            format!(
                "{} measurements newer than the checkpoint were left out",
                manifest.newer_than_checkpoint_left_out
            ),
        );
    }

    // The key, and the checkpoint it signed.
    let bundle_key: Option<[u8; 32]> = zip
        .read("aggregator.pub", 64 << 10)?
        .and_then(|b| {
            String::from_utf8(b)
                .ok()?
                .lines()
                .next()
                .map(str::to_string)
        })
        .and_then(|line| parse_log_key(&line).ok());
    let key = match (given_key, bundle_key) {
        (Some(given), Some(inside)) if given == inside => {
            c.ok(
                "key",
                format!(
                    "the bundle's aggregator.pub is the --log-key given, {} ({})",
                    B64.encode(given),
                    tlog::verifier_key(&given)
                ),
            );
            Some(given)
        }
        (Some(given), inside) => {
            c.fail(
                "key",
                format!(
                    "the bundle's aggregator.pub is {}, not the --log-key given, {}",
                    inside.map_or("missing or not a key".into(), |k| B64.encode(k)),
                    B64.encode(given)
                ),
            );
            Some(given)
        }
        (None, Some(inside)) => {
            c.note(
                "key",
                format!(
                    "no --log-key given: the checkpoint is checked with the bundle's own key, {} \
                     (verifier key {}); compare it with the key the aggregator publishes, or give --log-key",
                    B64.encode(inside),
                    tlog::verifier_key(&inside)
                ),
            );
            Some(inside)
        }
        (None, None) => {
            c.fail(
                "key",
                "aggregator.pub is missing or not an Ed25519 key, and no --log-key was given",
            );
            None
        }
    };
    let note = zip
        .read("checkpoint.txt", 64 << 10)?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let checkpoint: Option<Checkpoint> = match (key, note) {
        (Some(key), Some(note)) => match tlog::verify_checkpoint(&note, &key) {
            Ok(cp) => {
                c.ok(
                    "checkpoint",
                    format!("checkpoint.txt is signed by the aggregator's key: {cp}"),
                );
                Some(cp)
            }
            Err(e) => {
                c.fail("checkpoint", format!("checkpoint.txt: {e}"));
                None
            }
        },
        (_, None) => {
            c.fail("checkpoint", "no checkpoint.txt in the bundle");
            None
        }
        (None, Some(_)) => {
            c.fail("checkpoint", "no key to check checkpoint.txt with");
            None
        }
    };

    // The proofs, all against that checkpoint.
    let mut proofs: HashMap<String, ProofEntry> = HashMap::new();
    match zip.read("proofs.json", MAX_FILE_BYTES)? {
        None => c.fail("proofs", "no proofs.json in the bundle"),
        Some(bytes) => match serde_json::from_slice::<Proofs>(&bytes) {
            Err(e) => c.fail("proofs", format!("proofs.json is not readable: {e}")),
            Ok(p) => {
                if let Some(cp) = &checkpoint {
                    if p.checkpoint.size == cp.size && p.checkpoint.root == cp.root_b64() {
                        c.ok(
                            "proofs",
                            format!(
                                "proofs.json is against the signed checkpoint (size {})",
                                cp.size
                            ),
                        );
                    } else {
                        c.fail(
                            "proofs",
                            format!(
                                "proofs.json is against size {} root {}, not the signed checkpoint's size {} root {}",
                                p.checkpoint.size,
                                p.checkpoint.root,
                                cp.size,
                                cp.root_b64()
                            ),
                        );
                    }
                }
                for entry in p.proofs {
                    if proofs.contains_key(&entry.id) {
                        c.fail(format!("proof {}", entry.id), "listed twice in proofs.json");
                        continue;
                    }
                    proofs.insert(entry.id.clone(), entry);
                }
            }
        },
    }
    let event: Event = match zip.read("event.json", MAX_FILE_BYTES)? {
        Some(bytes) => match serde_json::from_slice(&bytes) {
            Ok(e) => e,
            Err(e) => {
                c.fail("event", format!("event.json is not an event: {e}"));
                Event::default()
            }
        },
        None => {
            c.fail("event", "no event.json in the bundle");
            Event::default()
        }
    };
    if !manifest.event.is_empty() && event.id != manifest.event {
        c.fail(
            "event",
            format!(
                "event.json is event {:?}, the manifest's is {:?}",
                event.id, manifest.event
            ),
        );
    }
    let detector: Value = zip
        .read("detector.json", MAX_FILE_BYTES)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let rules = Rules::of(&detector);
    if detector.is_null() {
        c.fail(
            "detector",
            "no readable detector.json: the rule sets are unknown",
        );
    }

    // Every file against the manifest, and every envelope in full, one entry at a time.
    let listed: BTreeMap<&str, &ManifestFile> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut envelopes: HashSet<String> = HashSet::new();
    let prefix = format!("{}/", zip.dir);
    for index in 0..zip.archive.len() {
        let Some(Ok(full)) = zip
            .archive
            .name_for_index(index)
            .map(|n| n.map(|n| n.into_owned()))
        else {
            continue;
        };
        let Some(rel) = full.strip_prefix(&prefix).map(str::to_string) else {
            continue;
        };
        if rel.is_empty() || rel.ends_with('/') || rel == "MANIFEST.json" {
            continue;
        }
        let envelope_id = rel
            .strip_prefix("envelopes/")
            .and_then(|n| n.strip_suffix(".json"))
            .map(str::to_string);
        let limit = if envelope_id.is_some() {
            MAX_ENVELOPE_BYTES
        } else {
            MAX_FILE_BYTES
        };
        let bytes = zip.read_index(index, &full, limit)?;
        if !seen.insert(rel.clone()) {
            c.fail(format!("file {rel}"), "in the zip twice");
            continue;
        }
        match listed.get(rel.as_str()) {
            None => c.fail(format!("file {rel}"), "not in the manifest"),
            Some(m) => {
                let sha = sha256_hex(&bytes);
                if sha == m.sha256 && bytes.len() as u64 == m.bytes {
                    c.ok(
                        format!("file {rel}"),
                        format!("{} bytes, SHA-256 as in the manifest", m.bytes),
                    );
                } else {
                    c.fail(
                        format!("file {rel}"),
                        format!(
                            "{} bytes with SHA-256 {sha}; the manifest says {} bytes with SHA-256 {}",
                            bytes.len(),
                            m.bytes,
                            m.sha256
                        ),
                    );
                }
            }
        }
        if let Some(name) = envelope_id {
            c.summary.envelopes += 1;
            check_envelope(
                &mut c,
                &name,
                &bytes,
                &proofs,
                checkpoint.as_ref(),
                &event,
                &rules,
            );
            envelopes.insert(name);
        }
    }
    for f in &manifest.files {
        if !seen.contains(&f.path) {
            c.fail(
                format!("file {}", f.path),
                "in the manifest, not in the bundle",
            );
        }
    }
    let mut unmatched: Vec<&String> = proofs
        .keys()
        .filter(|id| !envelopes.contains(*id))
        .collect();
    unmatched.sort();
    for id in unmatched {
        c.fail(
            format!("proof {id}"),
            format!("proofs.json proves {id}, but the bundle has no envelopes/{id}.json"),
        );
    }
    let mut missing = 0;
    for id in &event.evidence {
        if !envelopes.contains(id) {
            missing += 1;
            c.fail(
                format!("event {}", event.id),
                format!("lists measurement {id}, which has no envelope in the bundle"),
            );
        }
    }
    if missing == 0 && !event.evidence.is_empty() {
        c.ok(
            format!("event {}", event.id),
            format!(
                "every one of the {} measurements it lists is in the bundle",
                event.evidence.len()
            ),
        );
    }
    let routes = zip.read("arrival.json", MAX_FILE_BYTES)?;
    c.note("arrival", arrival::note(routes.as_deref(), &envelopes));
    Ok(c.summary)
}

/// The checks of one envelope file: its signature, its name, its leaf and inclusion proof, and
/// its verdict.
fn check_envelope(
    c: &mut Checker<'_>,
    name: &str,
    bytes: &[u8],
    proofs: &HashMap<String, ProofEntry>,
    checkpoint: Option<&Checkpoint>,
    event: &Event,
    rules: &Rules,
) {
    let check = format!("envelope {name}");
    let Ok(text) = std::str::from_utf8(bytes) else {
        return c.fail(check, "not UTF-8 text");
    };
    let line = text.strip_suffix('\n').unwrap_or(text);
    let verified = match envelope::verify(line) {
        Ok(v) => v,
        Err(e) => return c.fail(check, format!("{e}: not signed by the key it names")),
    };
    let id = verified.id.as_str();
    if !is_id(name) || id != name {
        return c.fail(
            check,
            format!("its measurement's id is {id}, not its file's name {name}"),
        );
    }
    c.ok(
        check,
        format!("signature by {} holds, file named by its id", verified.key),
    );
    let check = format!("inclusion {id}");
    match (proofs.get(id), checkpoint) {
        (None, _) => c.fail(check, "no proof in proofs.json"),
        (
            Some(ProofEntry {
                not_logged: Some(why),
                ..
            }),
            _,
        ) => c.fail(
            check,
            format!("{why}: its inclusion in the log cannot be proven"),
        ),
        (Some(_), None) => c.fail(check, "no verified checkpoint to prove it against"),
        (Some(p), Some(cp)) => {
            let leaf = match tlog::leaf(id, &verified.key) {
                Ok(l) => l,
                Err(e) => return c.fail(check, e.to_string()),
            };
            if p.leaf.as_deref() != Some(B64.encode(leaf).as_str()) {
                return c.fail(
                    check,
                    "the leaf in proofs.json is not this envelope's id and key",
                );
            }
            let hashes: Option<Vec<tlog::Hash>> = p
                .inclusion_proof
                .iter()
                .map(|h| B64.decode(h).ok().and_then(|b| b.try_into().ok()))
                .collect();
            let (Some(index), Some(hashes)) = (p.leaf_index, hashes) else {
                return c.fail(
                    check,
                    "proofs.json has no leaf index or a hash that is not base64 of 32 bytes",
                );
            };
            match tlog::verify_inclusion(&leaf, index, &hashes, cp) {
                Ok(()) => c.ok(
                    check,
                    format!(
                        "leaf {index} of {} leads to the signed checkpoint's root",
                        cp.size
                    ),
                ),
                Err(e) => c.fail(check, e.to_string()),
            }
        }
    }
    check_verdict(c, id, verified.measurement, event, rules);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_key_is_a_base64_key_or_a_verifier_key() {
        let public = [7u8; 32];
        let b64 = B64.encode(public);
        // Not every 32 bytes are a point; the base64 form is taken as bytes and compared.
        assert_eq!(parse_log_key(&b64).expect("base64"), public);
        let signer = tlog::LogSigner::from_seed(&[9u8; 32]).expect("signer");
        let vk = tlog::verifier_key(signer.public());
        assert_eq!(parse_log_key(&vk).expect("verifier key"), *signer.public());
        assert!(parse_log_key("AQID").is_err());
        assert!(parse_log_key("vantage.invalid/00+00+AQID").is_err());
    }

    #[test]
    fn a_file_that_is_not_a_zip_is_an_error_not_a_list_of_checks() {
        let path = std::env::temp_dir().join(format!("vantage-bundle-{}.zip", std::process::id()));
        std::fs::write(&path, b"PK\x03\x04 this is not really a zip").expect("write");
        let mut lines = Vec::new();
        let err = verify(&path, None, &mut |l| lines.push(l.clone())).expect_err("damaged");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(err, BundleError::NotZip { .. }), "{err}");
        assert!(err.to_string().contains("not a readable zip"), "{err}");
        assert!(lines.is_empty());
    }

    /// A zip bomb: an envelope that inflates past any envelope's size is refused as soon as
    /// the limit is read, whatever its header says.
    #[test]
    fn an_entry_that_inflates_past_the_limit_is_refused() {
        use std::io::Write as _;
        let path = std::env::temp_dir().join(format!("vantage-bomb-{}.zip", std::process::id()));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).expect("create"));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("evidence-x/MANIFEST.json", options)
            .expect("start");
        zip.write_all(format!("{{\"format\":\"{FORMAT}\",\"files\":[]}}").as_bytes())
            .expect("write");
        zip.start_file(
            format!("evidence-x/envelopes/{}.json", "a".repeat(64)),
            options,
        )
        .expect("start");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..=(MAX_ENVELOPE_BYTES >> 20) {
            zip.write_all(&zeros).expect("write");
        }
        zip.finish().expect("finish");
        let compressed = std::fs::metadata(&path).expect("size").len();
        let err = verify(&path, None, &mut |_| {}).expect_err("too large");
        let _ = std::fs::remove_file(&path);
        assert!(compressed < 1 << 20, "{compressed} bytes on disk");
        assert!(matches!(err, BundleError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("larger than an evidence bundle holds"),
            "{err}"
        );
    }

    /// A line quoting the bundle prints its control characters as visible escapes, and still
    /// says what failed.
    #[test]
    fn a_line_never_prints_a_control_character_from_the_bundle() {
        let hostile = "\x1b]8;;http://evil\x07click\x1b]8;;\x07\x1b[2J";
        let line = Line {
            status: Status::Fail,
            check: format!("envelope {hostile}"),
            detail: format!("of event {hostile}, made x"),
        };
        let shown = line.to_string();
        assert!(!shown.contains(['\x1b', '\x07']), "{shown:?}");
        assert_eq!(
            shown,
            "FAIL envelope \\u{1b}]8;;http://evil\\u{7}click\\u{1b}]8;;\\u{7}\\u{1b}[2J: \
             of event \\u{1b}]8;;http://evil\\u{7}click\\u{1b}]8;;\\u{7}\\u{1b}[2J, made x"
        );
    }

    #[test]
    fn times_compare_as_text() {
        assert!(in_span("2026-01-01 10:00:00", "2026-01-01 09:00:00", None));
        assert!(in_span(
            "2026-01-01 10:00:00",
            "2026-01-01 09:00:00",
            Some("2026-01-01 10:00:00")
        ));
        assert!(!in_span(
            "2026-01-01 10:00:01",
            "2026-01-01 09:00:00",
            Some("2026-01-01 10:00:00")
        ));
    }
}
