//! Evidence bundles (`docs/transparency.md`, "Evidence bundles"): one zip holding an event of
//! the timeline and everything needed to check it offline without trusting the aggregator:
//! every measurement behind it byte for byte as stored, each one's inclusion proof against one
//! signed checkpoint of the transparency log, the checkpoint and the aggregator's key, the
//! detector's configuration and rule set versions, the network's signals around the event, a
//! self-contained HTML report, and a manifest of SHA-256 hashes. `vantage verify` checks it.
//!
//! A bundle is made in two steps so that a server can refuse before it starts streaming:
//! [`plan`] finds the event, checks the stored log against its latest checkpoint and chooses
//! the measurements (every one behind the event, not only the 200 ids the event lists), and
//! [`write`] streams the zip a file at a time, keeping one envelope and one proof in memory.
//!
//! This layer reads the store, the log and the detectors' configuration and signals; the API
//! and the command line call it (`docs/architecture.md`).

pub mod arrival;
pub mod detector;
pub mod report;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::digest::{Context as Sha256, SHA256};
use serde::Serialize;
use tlog_tiles::Hash;

use crate::detect::DetectConfig;
use crate::detect::signals::{self, SignalBin, SignalQuery};
use crate::log::{LogError, Reader};
use crate::store::log::{LogStore, NoLog, StoredCheckpoint};
use crate::store::model::{
    Arrival, BIN_SECONDS, Event, Kind, Layer, Scope, TimelineEvent, TimelineQuery, Verification,
    format_time,
};
use crate::store::{DbError, Query, Storage};

/// The bundle format, named in `MANIFEST.json`; `vantage verify` reads this one.
pub const FORMAT: &str = "vantage-evidence-1";

/// At most this many measurements go into one bundle; a bundle that reached it says so in its
/// manifest and report. A blocking event of a week in one network rarely holds a tenth of it.
pub const MAX_ENVELOPES: usize = 100_000;

/// The signals in a bundle reach this far before the event's start and after its end, so that
/// a reader sees the network as it was before and after.
pub const SIGNAL_MARGIN_SECONDS: i64 = 6 * 3600;

/// Rows read from the store at a time while choosing the measurements.
const PAGE_ROWS: usize = 1000;

/// Rows of the evidence table in `report.html`; the rest are in the bundle's files.
pub const REPORT_ROWS: usize = 1000;

/// Why no bundle could be made.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// No event has this id.
    #[error("no event {0}")]
    UnknownEvent(String),
    /// The store keeps no transparency log, so nothing in a bundle could be proven.
    #[error("no evidence bundle: this aggregator keeps no transparency log ({})", .0.reason())]
    NoLog(NoLog),
    /// The log has published no checkpoint yet.
    #[error(
        "no evidence bundle yet: the transparency log has no checkpoint (one is published within 10 s of the server's start)"
    )]
    NoCheckpoint,
    /// A measurement the event names is newer than the latest checkpoint.
    #[error(
        "measurement {id} of the event (leaf {leaf_index}) is not in a checkpoint yet (the latest holds {size} leaves); retry in 10 s"
    )]
    Pending {
        /// The measurement.
        id: String,
        /// Its leaf.
        leaf_index: u64,
        /// The latest checkpoint's size.
        size: u64,
    },
    /// The store refused.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The stored log does not prove its own checkpoint, or a proof could not be made.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Writing the zip failed (the disk, or a client that went away).
    #[error("writing the evidence bundle: {0}")]
    Io(#[from] io::Error),
    /// The zip writer refused.
    #[error("writing the evidence bundle: {0}")]
    Zip(#[from] zip::result::ZipError),
}

/// What a bundle is made with besides the store: the aggregator's key and the detectors'
/// settings as the server runs them.
#[derive(Debug, Clone)]
pub struct Context {
    /// The aggregator's Ed25519 public key, which signs the log's checkpoints.
    pub public_key: [u8; 32],
    /// The detectors' configuration (`serve --detect-config`).
    pub config: DetectConfig,
    /// Which contacts count in the signals.
    pub verification: Verification,
    /// Now, epoch seconds: the end of an ongoing event.
    pub now: i64,
}

/// One measurement of a bundle.
#[derive(Debug, Clone)]
struct Item {
    id: String,
    /// Its leaf index and bytes, when the checkpoint holds it.
    leaf: Option<(u64, Vec<u8>)>,
    /// Why it has no leaf, when it has none.
    not_logged: Option<&'static str>,
    /// How it reached the aggregator, when the store said.
    routed: Option<arrival::Routed>,
}

/// A row of the report's evidence table.
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// Measurement id.
    pub id: String,
    /// `measured_at`.
    pub measured_at: String,
    /// Test name.
    pub test_name: String,
    /// URL or target.
    pub input: String,
    /// The stored verdict's `blocking`, or the canary's outcome.
    pub verdict: String,
    /// Leaf index, when logged.
    pub leaf_index: Option<u64>,
    /// How it reached the aggregator (information only, `arrival.json`).
    pub routed: Option<arrival::Routed>,
}

/// What goes into a bundle, chosen before anything is written.
#[derive(Debug)]
pub struct Plan {
    /// The event, as the timeline gives it.
    pub event: Event,
    /// The checkpoint every proof is against.
    pub checkpoint: StoredCheckpoint,
    items: Vec<Item>,
    described: Vec<Described>,
    /// Whether [`MAX_ENVELOPES`] cut the measurements short.
    pub truncated: bool,
    /// Measurements newer than the checkpoint, left out (none of them named by the event).
    pub newer_than_checkpoint: usize,
    /// How the evidence the event lists arrived, per route, as the timeline says it.
    pub arrival: Vec<Arrival>,
    context: Context,
}

impl Plan {
    /// Measurements in the bundle.
    pub fn envelopes(&self) -> usize {
        self.items.len()
    }

    /// Of those, the ones not in the log (unsigned OONI imports, rows stored with `--no-log`).
    pub fn not_logged(&self) -> usize {
        self.items.iter().filter(|i| i.leaf.is_none()).count()
    }

    /// The bundle's one directory, and the file name a download suggests (`.zip` added).
    pub fn directory(&self) -> String {
        directory(&self.event.id)
    }
}

/// The directory inside the zip of the bundle of event `id`.
pub fn directory(event_id: &str) -> String {
    format!("evidence-{event_id}")
}

/// Whether `id` looks like an event id (16 hex digits), so a route can refuse others unread.
pub fn is_event_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The stored event `id`.
pub fn find_event(storage: &dyn Storage, id: &str) -> Result<Option<Event>, DbError> {
    let id = id.to_ascii_lowercase();
    Ok(storage
        .timeline(&TimelineQuery {
            since: i64::MIN,
            until: i64::MAX,
            ..TimelineQuery::default()
        })?
        .into_iter()
        .find(|e| e.id == id))
}

/// The stored `blocking` values (JSON text) of an anomaly on `layer`.
fn blocking_values(layer: Layer) -> &'static [&'static str] {
    match layer {
        Layer::Dns => &["\"dns\""],
        Layer::Tcp => &["\"tcp_ip\""],
        Layer::Tls => &["\"tls\""],
        Layer::Http => &["\"http-failure\"", "\"http-diff\""],
    }
}

/// The networks an event covers: its own, a regional one's list, or (`None`) the country.
fn networks(event: &Event) -> Vec<Option<u32>> {
    let number = |a: &str| a.trim_start_matches("AS").parse::<u32>().ok();
    match (event.scope, &event.entity.asn) {
        (Scope::Full, _) => vec![None],
        (_, Some(asn)) => vec![number(asn)],
        _ if !event.entity.asns.is_empty() => event.entity.asns.iter().map(|a| number(a)).collect(),
        _ => vec![None],
    }
}

/// Every row matching `q`, a page at a time, passed to `each` until it returns false.
fn each_row(
    storage: &dyn Storage,
    q: &Query,
    mut each: impl FnMut(crate::store::Found) -> Result<bool, DbError>,
) -> Result<(), DbError> {
    let mut page = q.clone();
    page.limit = PAGE_ROWS;
    loop {
        let rows = storage.query(&page)?;
        let full = rows.len() == page.limit;
        let next = rows.last().map(|r| r.cursor.clone());
        for row in rows {
            if !each(row)? {
                return Ok(());
            }
        }
        match next {
            Some(cursor) if full => page.after = Some(cursor),
            _ => return Ok(()),
        }
    }
}

/// The signer of a stored envelope, read without verifying (the bundle's reader verifies).
fn signer(envelope: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key {
        key: String,
    }
    serde_json::from_str::<Key>(envelope).ok().map(|k| k.key)
}

/// The measurements behind `event`, the ids it lists first, at most [`MAX_ENVELOPES`]; the
/// bool says whether the cap cut them short.
///
/// - A blocking event: every measurement of its network and targets in its span whose stored
///   verdict is an anomaly on its layer (`detect/blocking.rs` counts exactly these).
/// - A shutdown: every failed canary round in its networks during its span signed by one of its
///   probes (the signers of the canaries it lists), as `detect::failed_canaries` chose them
///   before keeping 200.
/// - A throttling event: the measurements it lists.
fn choose(storage: &dyn Storage, event: &Event, now: i64) -> Result<Chosen, DbError> {
    let mut ids: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut described: Vec<Described> = Vec::new();
    let mut routes: HashMap<String, arrival::Routed> = HashMap::new();
    let mut truncated = false;
    for id in &event.evidence {
        if seen.insert(id.clone()) {
            ids.push(id.clone());
        }
    }
    let since = Some(event.start.clone());
    // `until` is exclusive; an event's end is its last measurement, which belongs to it.
    let until = Some(format_time(event.end_secs().unwrap_or(now) + 1));
    let mut add =
        |row: crate::store::Found, ids: &mut Vec<String>, seen: &mut HashSet<String>| -> bool {
            if ids.len() >= MAX_ENVELOPES {
                truncated = true;
                return false;
            }
            if seen.insert(row.id.clone()) {
                if described.len() < REPORT_ROWS {
                    described.push(describe(&row));
                }
                routes.insert(
                    row.id.clone(),
                    arrival::Routed {
                        route: row.route.clone(),
                        relayed_by: row.relayed_by.clone(),
                    },
                );
                ids.push(row.id);
            }
            true
        };
    match (event.kind, event.layer) {
        (Kind::Blocking, Some(layer)) => {
            'targets: for target in &event.targets {
                for asn in networks(event) {
                    for blocking in blocking_values(layer) {
                        let q = Query {
                            cc: Some(event.entity.cc.clone()),
                            asn,
                            domain: Some(target.clone()),
                            blocking: Some((*blocking).to_string()),
                            since: since.clone(),
                            until: until.clone(),
                            ..Query::default()
                        };
                        let mut more = true;
                        each_row(storage, &q, |row| {
                            more = add(row, &mut ids, &mut seen);
                            Ok(more)
                        })?;
                        if !more {
                            break 'targets;
                        }
                    }
                }
            }
        }
        (Kind::Shutdown, _) => {
            let listed: Vec<&str> = event.evidence.iter().map(String::as_str).collect();
            let keys: HashSet<String> = storage
                .rows_of(&listed)?
                .into_iter()
                .filter_map(|r| r.probe_key)
                .collect();
            'networks: for asn in networks(event) {
                let q = Query {
                    cc: Some(event.entity.cc.clone()),
                    asn,
                    test_name: Some("canary".into()),
                    since: since.clone(),
                    until: until.clone(),
                    ..Query::default()
                };
                let mut more = true;
                each_row(storage, &q, |row| {
                    if row.accessible != Some(false) || seen.contains(&row.id) {
                        return Ok(true);
                    }
                    let ours = storage
                        .envelope(&row.id)?
                        .and_then(|e| signer(&e))
                        .is_some_and(|k| keys.contains(&k));
                    if ours {
                        more = add(row, &mut ids, &mut seen);
                    }
                    Ok(more)
                })?;
                if !more {
                    break 'networks;
                }
            }
        }
        _ => {}
    }
    // The listed ones that the queries did not describe (a throttling event's, or rows whose
    // verdict a rescore changed since), described from their rows.
    let described_ids: HashSet<String> = described.iter().map(|d| d.id.clone()).collect();
    let missing: Vec<&str> = event
        .evidence
        .iter()
        .map(String::as_str)
        .filter(|id| !described_ids.contains(*id))
        .collect();
    let mut room = REPORT_ROWS.saturating_sub(described.len());
    for row in storage.rows_of(&missing)? {
        let routed = arrival::Routed {
            route: row.route.name().to_string(),
            relayed_by: row.route.relayed_by().map(str::to_string),
        };
        routes.insert(row.id.clone(), routed.clone());
        if room == 0 {
            continue;
        }
        room -= 1;
        described.push(Described {
            id: row.id.clone(),
            measured_at: row.measured_at.clone(),
            test_name: row.test_name.clone(),
            input: row.input.clone().or(row.domain.clone()).unwrap_or_default(),
            verdict: verdict_text(row.blocking.as_deref(), &row.test_name, row.accessible),
            leaf_index: None,
            routed: Some(routed),
        });
    }
    Ok(Chosen {
        ids,
        described,
        routes,
        truncated,
    })
}

/// What [`choose`] found: the ids in the bundle's order, the report's rows, each id's route
/// as the store gave it, and whether [`MAX_ENVELOPES`] cut them short.
struct Chosen {
    ids: Vec<String>,
    described: Vec<Described>,
    routes: HashMap<String, arrival::Routed>,
    truncated: bool,
}

fn verdict_text(blocking: Option<&str>, test_name: &str, accessible: Option<bool>) -> String {
    if test_name == "canary" {
        return match accessible {
            Some(false) => "failed".into(),
            Some(true) => "online".into(),
            None => String::new(),
        };
    }
    match blocking {
        Some(b) => b.trim_matches('"').to_string(),
        None => "undetermined".into(),
    }
}

fn describe(row: &crate::store::Found) -> Described {
    let blocking = row.blocking.as_ref().map(|b| match b.as_str() {
        Some(s) => format!("\"{s}\""),
        None => b.to_string(),
    });
    Described {
        id: row.id.clone(),
        measured_at: row.measured_at.clone(),
        test_name: row.test_name.clone(),
        input: row.input.clone().unwrap_or_default(),
        verdict: verdict_text(blocking.as_deref(), &row.test_name, row.accessible),
        leaf_index: None,
        routed: Some(arrival::Routed {
            route: row.route.clone(),
            relayed_by: row.relayed_by.clone(),
        }),
    }
}

/// Finds event `id` and chooses what its bundle holds, against the log's latest checkpoint
/// (checked first against the stored tree, as `serve` checks it before signing: an altered log
/// gives no bundle). Fails before anything is written: an unknown event, a store without a log,
/// or a measurement the event names that no checkpoint holds yet.
pub fn plan(storage: &dyn Storage, id: &str, context: Context) -> Result<Plan, EvidenceError> {
    let event = find_event(storage, id)?.ok_or_else(|| EvidenceError::UnknownEvent(id.into()))?;
    let log = storage.log().map_err(EvidenceError::NoLog)?;
    let checkpoint = crate::log::check(log)?.ok_or(EvidenceError::NoCheckpoint)?;
    let Chosen {
        ids,
        mut described,
        mut routes,
        truncated,
    } = choose(storage, &event, context.now)?;
    let listed: HashSet<&str> = event.evidence.iter().map(String::as_str).collect();
    let mut items = Vec::with_capacity(ids.len());
    let mut newer = 0;
    for id in ids {
        let item = match log.leaf_of(&id)? {
            Some((leaf_index, _)) if leaf_index >= checkpoint.size => {
                if listed.contains(id.as_str()) {
                    return Err(EvidenceError::Pending {
                        id,
                        leaf_index,
                        size: checkpoint.size,
                    });
                }
                newer += 1;
                continue;
            }
            Some((leaf_index, leaf)) => Item {
                routed: routes.remove(&id),
                id,
                leaf: Some((leaf_index, leaf)),
                not_logged: None,
            },
            None => Item {
                routed: routes.remove(&id),
                id,
                leaf: None,
                not_logged: Some(
                    "not logged: an unsigned OONI import, or stored with serve --no-log",
                ),
            },
        };
        items.push(item);
    }
    let leaves: std::collections::HashMap<&str, u64> = items
        .iter()
        .filter_map(|i| i.leaf.as_ref().map(|(n, _)| (i.id.as_str(), *n)))
        .collect();
    for d in &mut described {
        d.leaf_index = leaves.get(d.id.as_str()).copied();
    }
    let kept: HashSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
    described.retain(|d| kept.contains(d.id.as_str()));
    described.sort_by(|x, y| (&x.measured_at, &x.id).cmp(&(&y.measured_at, &y.id)));
    let arrival = storage.arrivals(&event.evidence, event.end_secs())?;
    Ok(Plan {
        event,
        checkpoint,
        items,
        described,
        truncated,
        newer_than_checkpoint: newer,
        arrival,
        context,
    })
}

/// The RFC 9162 inclusion proof of leaf `index` in the tree of `checkpoint`, checked against
/// its root before it is given (as `crate::log::prove` checks the proofs it serves).
fn prove_at(
    log: &dyn LogStore,
    index: u64,
    leaf: &[u8],
    checkpoint: &StoredCheckpoint,
) -> Result<Vec<Hash>, LogError> {
    let reader = Reader::new(log);
    let proof = tlog_tiles::prove_record(checkpoint.size, index, &reader);
    let hashes = reader.result(proof, || {
        format!("proof of leaf {index} in {}", checkpoint.size)
    })?;
    tlog_tiles::check_record(
        &hashes,
        checkpoint.size,
        Hash(checkpoint.root),
        index,
        tlog_tiles::record_hash(leaf),
    )
    .map_err(|_| LogError::Altered {
        size: checkpoint.size,
        signed: Hash(checkpoint.root).to_string(),
        computed: format!("a path that does not lead there from leaf {index}"),
    })?;
    Ok(hashes)
}

/// One file of the manifest.
#[derive(Debug, Clone, Serialize)]
struct FileEntry {
    path: String,
    sha256: String,
    bytes: u64,
}

/// `MANIFEST.json`.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    format: &'static str,
    made_at: String,
    event: &'a str,
    aggregator_key: String,
    checkpoint_size: u64,
    envelopes: usize,
    not_logged: usize,
    max_envelopes: usize,
    truncated: bool,
    newer_than_checkpoint_left_out: usize,
    files: Vec<FileEntry>,
}

/// The signed-note verifier key of the aggregator's public key (`docs/transparency.md`,
/// "Checkpoints"), as `vantage_probe::tlog` derives it for every checker.
pub fn verifier_key(public: &[u8; 32]) -> String {
    vantage_probe::tlog::verifier_key(public)
}

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Envelopes in the bundle.
    pub envelopes: usize,
    /// Of those, not in the log.
    pub not_logged: usize,
    /// Whether [`MAX_ENVELOPES`] cut them short.
    pub truncated: bool,
    /// Envelopes that vanished from the store between the plan and the writing (none unless
    /// rows were deleted meanwhile).
    pub vanished: usize,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<'a, W: Write> {
    inner: &'a mut W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hash.update(&data[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The zip being written and its manifest so far.
struct Bundle<W: Write> {
    zip: zip::ZipWriter<zip::write::StreamWriter<W>>,
    dir: String,
    files: Vec<FileEntry>,
}

impl<W: Write> Bundle<W> {
    /// Adds file `path` (below the bundle's directory), its bytes written by `body`.
    fn file(
        &mut self,
        path: &str,
        body: impl FnOnce(&mut dyn Write) -> Result<(), EvidenceError>,
    ) -> Result<(), EvidenceError> {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644);
        self.zip
            .start_file(format!("{}/{path}", self.dir), options)?;
        let mut hashing = Hashing {
            inner: &mut self.zip,
            hash: Sha256::new(&SHA256),
            bytes: 0,
        };
        body(&mut hashing)?;
        let (hash, bytes) = (hashing.hash.finish(), hashing.bytes);
        self.files.push(FileEntry {
            path: path.to_string(),
            sha256: hex::encode(hash.as_ref()),
            bytes,
        });
        Ok(())
    }
}

/// The signals of the event's network (the country, for a shutdown of several networks) from
/// [`SIGNAL_MARGIN_SECONDS`] before it to as long after, at most the 31 days one signals
/// request covers, in the shape of `GET /api/v1/signals`.
fn signals_of(
    storage: &dyn Storage,
    event: &Event,
    context: &Context,
) -> Result<(serde_json::Value, Vec<SignalBin>), DbError> {
    let asn = match (event.scope, &event.entity.asn) {
        (Scope::Full | Scope::Regional, _) => None,
        (_, a) => a
            .as_deref()
            .and_then(|a| a.trim_start_matches("AS").parse().ok()),
    };
    let from = event.start_secs() - SIGNAL_MARGIN_SECONDS;
    let to = (event.end_secs().unwrap_or(context.now) + SIGNAL_MARGIN_SECONDS)
        .min(context.now.max(event.start_secs()) + BIN_SECONDS)
        .min(from + 31 * 86_400);
    let q = SignalQuery {
        cc: event.entity.cc.clone(),
        asn,
        from_bin: from.div_euclid(BIN_SECONDS),
        to_bin: (to + BIN_SECONDS - 1).div_euclid(BIN_SECONDS),
    };
    let bins = signals::query(storage, &q, context.verification)?;
    let json = serde_json::json!({
        "cc": q.cc,
        "asn": asn.map(|a| format!("AS{a}")),
        "since": format_time(q.from_bin * BIN_SECONDS),
        "until": format_time(q.to_bin * BIN_SECONDS),
        "bin_seconds": BIN_SECONDS,
        "bins": bins,
    });
    Ok((json, bins))
}

/// Streams the bundle of `plan` into `out` as a zip of one directory ([`Plan::directory`]):
/// `event.json`, `detector.json`, `checkpoint.txt`, `aggregator.pub`, `envelopes/<id>.json`,
/// `proofs.json`, `signals.json`, `report.html` and `MANIFEST.json` last, with the SHA-256 and
/// size of every other file. Holds one envelope and one proof in memory at a time.
pub fn write<W: Write>(
    storage: &dyn Storage,
    plan: &Plan,
    out: W,
) -> Result<Written, EvidenceError> {
    let log = storage.log().map_err(EvidenceError::NoLog)?;
    let event = &plan.event;
    let mut b = Bundle {
        zip: zip::ZipWriter::new_stream(out),
        dir: plan.directory(),
        files: Vec::new(),
    };
    let pretty = |w: &mut dyn Write, v: &dyn erased::Json| -> Result<(), EvidenceError> {
        v.write_pretty(w)?;
        w.write_all(b"\n")?;
        Ok(())
    };
    // As `GET /api/v1/timeline` gives it: with how its evidence arrived.
    let timed = TimelineEvent::new(event.clone(), plan.arrival.clone());
    b.file("event.json", |w| pretty(w, &timed))?;
    let detector = detector::describe(event, &plan.context.config);
    b.file("detector.json", |w| pretty(w, &detector))?;
    b.file("checkpoint.txt", |w| {
        w.write_all(plan.checkpoint.note.as_bytes())?;
        Ok(())
    })?;
    let public = B64.encode(plan.context.public_key);
    let verifier = verifier_key(&plan.context.public_key);
    b.file("aggregator.pub", |w| {
        writeln!(w, "{public}")?;
        writeln!(w, "{verifier}")?;
        Ok(())
    })?;
    let mut vanished: HashSet<&str> = HashSet::new();
    for item in &plan.items {
        let Some(envelope) = storage.envelope(&item.id)? else {
            vanished.insert(item.id.as_str());
            continue;
        };
        // As `GET /api/v1/measurements/{id}` gives it: the stored line and a newline.
        b.file(&format!("envelopes/{}.json", item.id), |w| {
            w.write_all(envelope.as_bytes())?;
            w.write_all(b"\n")?;
            Ok(())
        })?;
    }
    b.file("proofs.json", |w| {
        let cp = &plan.checkpoint;
        write!(
            w,
            "{{\n  \"checkpoint\": {{\"origin\": {}, \"size\": {}, \"root\": \"{}\"}},\n  \"proofs\": [",
            serde_json::to_string(&vantage_probe::tlog::origin_of(&plan.context.public_key))
                .map_err(io::Error::other)?,
            cp.size,
            B64.encode(cp.root)
        )?;
        let mut first = true;
        for item in plan
            .items
            .iter()
            .filter(|i| !vanished.contains(i.id.as_str()))
        {
            let entry = match (&item.leaf, item.not_logged) {
                (Some((index, leaf)), _) => {
                    let hashes = prove_at(log, *index, leaf, cp)?;
                    serde_json::json!({
                        "id": item.id,
                        "leaf_index": index,
                        "leaf": B64.encode(leaf),
                        "inclusion_proof": hashes.iter().map(|h| B64.encode(h.0)).collect::<Vec<_>>(),
                    })
                }
                (None, reason) => serde_json::json!({
                    "id": item.id,
                    "not_logged": reason.unwrap_or("not logged"),
                }),
            };
            w.write_all(if first { b"\n    " } else { b",\n    " })?;
            serde_json::to_writer(&mut *w, &entry).map_err(io::Error::other)?;
            first = false;
        }
        w.write_all(b"\n  ]\n}\n")?;
        Ok(())
    })?;
    let kept = || {
        plan.items
            .iter()
            .filter(|i| !vanished.contains(i.id.as_str()))
    };
    b.file("arrival.json", |w| {
        arrival::write(w, kept().map(|i| (i.id.as_str(), i.routed.as_ref())))?;
        Ok(())
    })?;
    let arrival_words = format!(
        "{} This bundle holds {}",
        timed.arrival_words(),
        arrival::words(kept().filter_map(|i| i.routed.as_ref()))
    );
    let (signals_json, bins) = signals_of(storage, event, &plan.context)?;
    b.file("signals.json", |w| pretty(w, &signals_json))?;
    let envelopes = plan.items.len() - vanished.len();
    let html = report::html(&report::Report {
        event,
        bins: &bins,
        evidence: &plan.described,
        envelopes,
        not_logged: plan.not_logged(),
        truncated: plan.truncated,
        newer_than_checkpoint: plan.newer_than_checkpoint,
        arrival: &arrival_words,
        checkpoint_size: plan.checkpoint.size,
        public_key: &public,
        verifier_key: &verifier,
        file_name: &format!("{}.zip", plan.directory()),
        made_at: &format_time(plan.context.now),
    });
    b.file("report.html", |w| {
        w.write_all(html.as_bytes())?;
        Ok(())
    })?;
    let manifest = Manifest {
        format: FORMAT,
        made_at: format_time(plan.context.now),
        event: &event.id,
        aggregator_key: public.clone(),
        checkpoint_size: plan.checkpoint.size,
        envelopes,
        not_logged: plan.not_logged(),
        max_envelopes: MAX_ENVELOPES,
        truncated: plan.truncated,
        newer_than_checkpoint_left_out: plan.newer_than_checkpoint,
        files: std::mem::take(&mut b.files),
    };
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    b.zip
        .start_file(format!("{}/MANIFEST.json", b.dir), options)?;
    serde_json::to_writer_pretty(&mut b.zip, &manifest).map_err(io::Error::other)?;
    b.zip.write_all(b"\n")?;
    let mut out = b.zip.finish()?.into_inner();
    out.flush()?;
    Ok(Written {
        envelopes,
        not_logged: plan.not_logged(),
        truncated: plan.truncated,
        vanished: vanished.len(),
    })
}

/// Pretty JSON of any serialisable value behind a `dyn` (the bundle's files are written through
/// one closure type).
mod erased {
    use std::io::{self, Write};

    pub trait Json {
        fn write_pretty(&self, w: &mut dyn Write) -> io::Result<()>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write_pretty(&self, w: &mut dyn Write) -> io::Result<()> {
            serde_json::to_writer_pretty(w, self).map_err(io::Error::other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Entity;
    use crate::store::{Row, Sqlite};

    const T: i64 = 1_767_571_200;

    fn row(n: u32, key: Option<&str>) -> Row {
        let id = hex::encode(ring::digest::digest(&SHA256, &n.to_be_bytes()).as_ref());
        Row {
            id,
            source: if key.is_some() { "vantage" } else { "ooni" }.into(),
            probe_key: key.map(str::to_string),
            probe_cc: "IR".into(),
            probe_asn: 64500,
            test_name: "web_connectivity".into(),
            input: Some("https://a.example/".into()),
            domain: Some("a.example".into()),
            measured_at: format_time(T + i64::from(n)),
            blocking: Some("\"dns\"".into()),
            accessible: Some(false),
            confirmed: false,
            rule_set: Some("vantage-1".into()),
            verdict: None,
            envelope: format!("{{\"n\":{n}}}"),
            network_verified: false,
            route: crate::store::Route::Upload,
        }
    }

    fn event(evidence: &[&Row]) -> Event {
        Event {
            id: "0123456789abcdef".into(),
            entity: Entity {
                cc: "IR".into(),
                asn: Some("AS64500".into()),
                asns: Vec::new(),
            },
            kind: Kind::Blocking,
            scope: Scope::Service,
            layer: Some(Layer::Dns),
            category: None,
            targets: vec!["a.example".into()],
            start: format_time(T),
            end: Some(format_time(T + 100)),
            status: "ended".into(),
            suspected: false,
            confidence: 0.9,
            probes: 2,
            evidence: evidence.iter().map(|r| r.id.clone()).collect(),
            rate_kbps: None,
        }
    }

    fn context() -> Context {
        Context {
            public_key: [1; 32],
            config: DetectConfig::default(),
            verification: Verification::default(),
            now: T + 3600,
        }
    }

    /// What refuses a bundle, before a byte is written: an unknown event, a log without a
    /// checkpoint, a measurement the event names that no checkpoint holds yet. A measurement
    /// the event does not name and newer than the checkpoint is left out and counted; one
    /// without a leaf (an OONI import) is in the bundle as not logged.
    #[test]
    fn a_bundle_is_refused_until_the_checkpoint_holds_what_the_event_names() {
        let dir = std::env::temp_dir().join(format!("vantage-evidence-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let key = vantage_probe::envelope::Identity::generate()
            .expect("key")
            .public_key();
        let (a, b, import, late, named_late) = (
            row(1, Some(&key)),
            row(2, Some(&key)),
            row(3, None),
            row(4, Some(&key)),
            row(5, Some(&key)),
        );
        db.insert(&[a.clone(), b.clone(), import.clone()])
            .expect("insert");
        db.replace_events("IR", T - 86_400, &[Kind::Blocking], &[event(&[&a, &b])])
            .expect("event");

        let err = plan(&db, "00000000000000ff", context()).expect_err("unknown");
        assert!(matches!(err, EvidenceError::UnknownEvent(_)), "{err}");
        let err = plan(&db, "0123456789abcdef", context()).expect_err("no checkpoint");
        assert!(matches!(err, EvidenceError::NoCheckpoint), "{err}");

        let log_key = crate::log::LogKey::from_seed(&[7; 32]).expect("key");
        let log = db.log().expect("a log");
        crate::log::publish(log, &log_key).expect("publish");
        db.insert(std::slice::from_ref(&late)).expect("insert");
        let p = plan(&db, "0123456789abcdef", context()).expect("a plan");
        assert_eq!(p.checkpoint.size, 2);
        assert_eq!(p.envelopes(), 3, "a, b and the import");
        assert_eq!(p.not_logged(), 1, "the import");
        assert_eq!(p.newer_than_checkpoint, 1, "the late one, left out");
        assert!(!p.truncated);

        db.insert(std::slice::from_ref(&named_late))
            .expect("insert");
        db.replace_events(
            "IR",
            T - 86_400,
            &[Kind::Blocking],
            &[event(&[&a, &named_late])],
        )
        .expect("event");
        let err = plan(&db, "0123456789abcdef", context()).expect_err("pending");
        assert!(
            matches!(&err, EvidenceError::Pending { id, size: 2, .. } if *id == named_late.id),
            "{err}"
        );
        assert!(err.to_string().contains("retry in 10 s"), "{err}");

        crate::log::publish(log, &log_key).expect("publish");
        let p = plan(&db, "0123456789abcdef", context()).expect("a plan");
        assert_eq!((p.envelopes(), p.newer_than_checkpoint), (5, 0));
        let mut zip = Vec::new();
        let written = write(&db, &p, &mut zip).expect("written");
        assert_eq!(written.envelopes, 5);
        assert_eq!(&zip[..2], b"PK");
        std::fs::remove_dir_all(&dir).ok();
    }
}
