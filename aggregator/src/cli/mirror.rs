//! `mirror`: a verified copy of another aggregator's transparency log and of the envelopes its
//! leaves stand for (`docs/transparency.md`, "Mirrors"), so that the data survives the loss or
//! capture of one operator.
//!
//! Each round fetches the source's checkpoint and checks its signature with the source's key,
//! then that it extends the last checkpoint kept (RFC 9162 section 2.1.4, computed from the
//! source's tiles), then reads the new leaves from the entry bundles, each checked against the
//! checkpoint's root, and fetches each leaf's envelope (`GET /api/v1/log/entry/{id}`, or
//! `/api/v1/measurements/{id}` from an aggregator without that route). An envelope is kept
//! only when its signature holds and its id and key are the leaf's; it is then stored through
//! the aggregator's own ingest into this mirror's database, as an upload would be, so that
//! `serve --db FILE` on the mirror answers the same measurements. Every check is
//! `vantage_probe::tlog`'s; nothing of the Merkle tree is computed here.
//!
//! What the mirror keeps of the source, beside the measurements and heartbeats, in tables of
//! its own in the same file: every checkpoint it accepted (`mirror_checkpoints`), every leaf
//! with what became of it (`mirror_leaves`: stored, or leaf only and why: an enrolment, whose
//! envelope carries a one-time token and is never served; withheld; refused), how far it got
//! (`mirror_source`), and any checkpoint it refused as not extending the last one
//! (`mirror_refused`: two checkpoints signed by one key that do not agree are the evidence of a
//! fork). A fork or a rewritten log stops the mirror with the reason; nothing mirrored is ever
//! deleted. A restart continues after the last leaf recorded.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rusqlite::{OptionalExtension, params};
use url::Url;
use vantage_aggregator::ingest::{self, IngestConfig, Origin, Status};
use vantage_aggregator::store::Storage;
use vantage_probe::engine::{EngineConfig, Trace, client};
use vantage_probe::tlog::{self, Checkpoint, HttpTiles, TlogError};

use super::*;

/// Leaves read from the entry bundles at a time: four full bundles. Each batch's tiles are
/// fetched afresh and dropped after, so a long catch-up holds one batch in memory.
const BATCH: u64 = 1024;

/// Envelopes fetched at once.
const IN_FLIGHT: usize = 8;

/// How often a long catch-up says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub(super) struct MirrorArgs {
    /// The aggregator to mirror: its base URL, as probes upload to it (http:// or https://).
    #[arg(long, value_name = "URL")]
    from: Url,

    /// The source's log key: its Ed25519 public key in base64 (what its `serve` prints as
    /// "test lists are signed with key ...") or its verifier key (ORIGIN+KEYID+BASE64).
    #[arg(long, value_name = "KEY")]
    log_key: String,

    /// This mirror's database (SQLite), created if missing; `serve --db FILE` serves what it
    /// holds.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,

    /// One round, then exit: 0 when every new leaf was stored or recorded as leaf only, 1 when
    /// an envelope was refused, 2 when the round could not be made (the source unreachable, a
    /// checkpoint not signed by --log-key), 3 when the source's log does not extend the one
    /// mirrored (without --once too).
    #[arg(long)]
    once: bool,

    /// Seconds between rounds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    every: u64,

    /// Leaves read in one round at most; the next round continues.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    max_entries: u64,

    /// Largest envelope fetched, in KiB (a larger one is refused).
    #[arg(long, value_name = "KIB", default_value_t = 1024)]
    max_envelope_kib: usize,

    /// Seconds one request to the source may take.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,

    /// Extra CA certificates (PEM) for an https source with a private CA.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// The source's public key, from its base64 or its verifier key.
fn public_key(text: &str) -> Result<[u8; 32]> {
    let text = text.trim();
    match B64.decode(text).ok().map(<[u8; 32]>::try_from) {
        Some(Ok(key)) => Ok(key),
        _ => tlog::public_of_verifier_key(text).map_err(|_| {
            anyhow::anyhow!(
                "--log-key {text:?} is neither the base64 of a 32-byte Ed25519 key nor a verifier \
                 key (ORIGIN+KEYID+BASE64)"
            )
        }),
    }
}

/// What became of a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// Its envelope was stored: a measurement or a heartbeat; `new` false when the mirror had
    /// it already (a round cut short and run again).
    Stored { kind: &'static str, new: bool },
    /// Leaf only: an enrolment, whose envelope carries a one-time token and is never served.
    Enrolment,
    /// Leaf only: the source did not give its envelope.
    Withheld(String),
    /// Leaf only: the envelope given is not the leaf's, does not verify, or this store would
    /// not take it.
    Refused(String),
}

impl Fate {
    /// Its name in `mirror_leaves.kind`.
    fn kind(&self) -> &'static str {
        match self {
            Fate::Stored { kind, .. } => kind,
            Fate::Enrolment => "enrolment",
            Fate::Withheld(_) => "withheld",
            Fate::Refused(_) => "refused",
        }
    }

    fn reason(&self) -> Option<&str> {
        match self {
            Fate::Withheld(r) | Fate::Refused(r) => Some(r),
            _ => None,
        }
    }
}

/// What the source answered for one leaf's envelope.
#[derive(Debug)]
enum Fetched {
    /// The envelope, with the kind the source names (`X-Vantage-Entry`).
    Envelope { body: String, heartbeat: bool },
    /// 403 from the entry route: an enrolment.
    Enrolment,
    /// Neither route has it.
    Withheld(String),
    /// Longer than the bound.
    TooLarge(usize),
}

/// The source aggregator over HTTP(S), with the probe's own client (its TLS roots, bounded
/// bodies, timeouts).
#[derive(Clone)]
struct Source {
    base: Url,
    engine: EngineConfig,
    tls: TlsContext,
    timeout: Duration,
    max_envelope: usize,
}

impl Source {
    fn tiles(&self) -> HttpTiles {
        HttpTiles::new(&self.base, &self.engine, &self.tls, None)
    }

    async fn get(&self, path: &str) -> Result<client::Reply> {
        let url = self
            .base
            .join(path)
            .with_context(|| format!("{}{path}", self.base))?;
        let mut call = client::Call::get(&url, "application/json, application/x-ndjson");
        call.timeout = self.timeout;
        call.body_cap = self.max_envelope + 1;
        client::send(call, &self.engine, &self.tls, &Trace::new())
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {}: {e}", e.failure()))
    }

    /// The envelope of the leaf whose measurement id is `id`. `Err` for an answer that says
    /// nothing of the envelope (a network failure, a 5xx): the round stops and the next one
    /// asks again.
    async fn envelope(&self, id: &str) -> Result<Fetched> {
        let reply = self.get(&format!("api/v1/log/entry/{id}")).await?;
        let (reply, heartbeat) = match reply.status {
            200 => {
                let kind = reply
                    .headers
                    .get("x-vantage-entry")
                    .and_then(|v| v.to_str().ok());
                let heartbeat = kind == Some("heartbeat");
                (reply, heartbeat)
            }
            403 => return Ok(Fetched::Enrolment),
            // An aggregator older than the entry route, or a leaf whose envelope it did not
            // keep: a measurement's is also at the research route.
            404 => {
                let reply = self.get(&format!("api/v1/measurements/{id}")).await?;
                match reply.status {
                    200 => (reply, false),
                    404 => return Ok(Fetched::Withheld("the source answers 404".into())),
                    s => bail!("GET api/v1/measurements/{id}: HTTP {s}"),
                }
            }
            s => bail!("GET api/v1/log/entry/{id}: HTTP {s}"),
        };
        if reply.body.len() > self.max_envelope {
            return Ok(Fetched::TooLarge(reply.body.len()));
        }
        match String::from_utf8(reply.body) {
            Ok(body) => Ok(Fetched::Envelope { body, heartbeat }),
            Err(_) => Ok(Fetched::Withheld("the envelope served is not UTF-8".into())),
        }
    }
}

/// Whether a log check failed because the source's log is not the one mirrored (a fork, a
/// rewritten, deleted or reordered leaf, a smaller log, another log), which stops the mirror
/// for good, or for a reason the next round may not meet again (a request that did not get
/// through, tiles that do not give the checkpoint's root), as the witness does.
fn is_misbehaviour(e: &TlogError) -> bool {
    matches!(
        e,
        TlogError::Inconsistent { .. } | TlogError::OtherLog { .. }
    )
}

/// How a round ended early.
#[derive(Debug)]
enum Stop {
    /// The source's log does not extend the one mirrored: stop for good (exit status 3).
    Misbehaving(anyhow::Error),
    /// Something did not get through: the next round tries again.
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Failed(e.into())
    }
}

/// The mirror's own record of the source, in tables of its own beside the store's.
struct State {
    c: rusqlite::Connection,
}

impl State {
    const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS mirror_source (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            origin TEXT NOT NULL,
            log_key TEXT NOT NULL,
            url TEXT NOT NULL,
            next_leaf INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS mirror_checkpoints (
            size INTEGER PRIMARY KEY,
            root BLOB NOT NULL,
            note TEXT NOT NULL,
            fetched_at INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS mirror_leaves (
            idx INTEGER PRIMARY KEY,
            leaf BLOB NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT
        );
        CREATE TABLE IF NOT EXISTS mirror_refused (
            fetched_at INTEGER NOT NULL,
            note TEXT NOT NULL,
            reason TEXT NOT NULL
        );";

    /// Opens the mirror's record in `db` (already created by the store), for the log of
    /// `public` at `url`; refuses a file that mirrors another log.
    fn open(db: &Path, public: &[u8; 32], url: &Url) -> Result<State> {
        let c = rusqlite::Connection::open(db).with_context(|| format!("open {}", db.display()))?;
        c.busy_timeout(Duration::from_secs(30))?;
        c.execute_batch(Self::SCHEMA)
            .with_context(|| format!("{}: the mirror's tables", db.display()))?;
        let origin = tlog::origin_of(public);
        let found: Option<(String, String)> = c
            .query_row("SELECT origin, url FROM mirror_source", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match found {
            Some((o, _)) if o != origin => bail!(
                "{} mirrors the log {o}, not {origin} (the log of --log-key): use another --db",
                db.display()
            ),
            Some((_, u)) if u != url.as_str() => {
                eprintln!("vantage-aggregator mirror: the source moved from {u} to {url}");
                c.execute("UPDATE mirror_source SET url = ?1", [url.as_str()])?;
            }
            Some(_) => {}
            None => {
                c.execute(
                    "INSERT INTO mirror_source (one, origin, log_key, url, next_leaf)
                     VALUES (1, ?1, ?2, ?3, 0)",
                    params![origin, B64.encode(public), url.as_str()],
                )?;
            }
        }
        Ok(State { c })
    }

    /// The first leaf not recorded yet.
    fn next(&self) -> Result<u64> {
        let n: i64 = self
            .c
            .query_row("SELECT next_leaf FROM mirror_source", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The largest checkpoint kept, its signature checked again.
    fn kept(&self, public: &[u8; 32]) -> Result<Option<Checkpoint>> {
        let note: Option<String> = self
            .c
            .query_row(
                "SELECT note FROM mirror_checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        note.map(|n| tlog::verify_checkpoint(&n, public))
            .transpose()
            .context("the last checkpoint kept no longer verifies")
    }

    fn keep(&self, cp: &Checkpoint) -> Result<()> {
        self.c.execute(
            "INSERT OR IGNORE INTO mirror_checkpoints (size, root, note, fetched_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                i64::try_from(cp.size)?,
                &cp.root[..],
                cp.note,
                vantage_aggregator::store::now()
            ],
        )?;
        Ok(())
    }

    fn refuse(&self, note: &str, reason: &str) -> Result<()> {
        self.c.execute(
            "INSERT INTO mirror_refused (fetched_at, note, reason) VALUES (?1, ?2, ?3)",
            params![vantage_aggregator::store::now(), note, reason],
        )?;
        Ok(())
    }

    /// Records leaves `[from, from + fates.len())` and moves on past them, in one transaction.
    fn record(&mut self, from: u64, leaves: &[Vec<u8>], fates: &[Fate]) -> Result<()> {
        let tx = self.c.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT OR REPLACE INTO mirror_leaves (idx, leaf, kind, reason)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for ((n, leaf), fate) in (from..).zip(leaves).zip(fates) {
                insert.execute(params![i64::try_from(n)?, leaf, fate.kind(), fate.reason()])?;
            }
        }
        let next = from + u64::try_from(leaves.len())?;
        tx.execute(
            "UPDATE mirror_source SET next_leaf = ?1",
            [i64::try_from(next)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Leaves recorded, by what became of them.
    fn totals(&self) -> Result<Vec<(String, u64)>> {
        let mut s = self
            .c
            .prepare("SELECT kind, count(*) FROM mirror_leaves GROUP BY kind ORDER BY kind")?;
        let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            r.map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
                .map_err(anyhow::Error::from)
        })
        .collect()
    }
}

/// Checks that `body` is the envelope of `leaf`: its signature holds, and the id of its
/// measurement bytes and its key are the leaf's two halves (`docs/transparency.md`, "Leaves").
/// Returns the envelope as one line.
fn check_envelope<'a>(leaf: &[u8], body: &'a str) -> Result<&'a str, String> {
    let line = body.trim();
    if line.contains('\n') {
        return Err("the envelope is not one line".into());
    }
    let verified = vantage_probe::envelope::verify(line)
        .map_err(|e| format!("the envelope does not verify: {e}"))?;
    let made = tlog::leaf(verified.id.as_str(), &verified.key).map_err(|e| e.to_string())?;
    if made[..] != *leaf {
        return Err(format!(
            "the envelope is not the leaf's: it is measurement {} signed by {}, the leaf names {} \
             signed by {}",
            verified.id,
            verified.key,
            hex::encode(leaf.get(..32).unwrap_or_default()),
            B64.encode(leaf.get(32..).unwrap_or_default())
        ));
    }
    Ok(line)
}

/// What a round did.
#[derive(Debug, Default)]
struct Round {
    /// The checkpoint read and accepted.
    checkpoint: u64,
    /// Leaves `[from, to)` recorded.
    from: u64,
    to: u64,
    measurements: u64,
    heartbeats: u64,
    already: u64,
    enrolments: u64,
    withheld: u64,
    refused: u64,
}

/// Everything a round needs.
struct Mirror {
    source: Source,
    public: [u8; 32],
    store: Arc<dyn Storage>,
    state: State,
    max_entries: u64,
    ingest: IngestConfig,
    fingerprints: Fingerprints,
}

impl Mirror {
    /// One round: the checkpoint, its consistency with the last kept, then up to
    /// `max_entries` new leaves and their envelopes.
    async fn round(&mut self) -> Result<Round, Stop> {
        let tiles = self.source.tiles();
        let note = tiles.checkpoint().await?.ok_or_else(|| {
            Stop::Failed(anyhow::anyhow!(
                "{}log/checkpoint: 404, the source keeps no transparency log",
                self.source.base
            ))
        })?;
        let new = tlog::verify_checkpoint(&note, &self.public).map_err(|e| {
            Stop::Failed(anyhow::anyhow!(
                "the checkpoint {} serves is not its log's: {e}",
                self.source.base
            ))
        })?;
        let target = match self.state.kept(&self.public)? {
            Some(old) => match tiles.run(|t| tlog::verify_consistency(&old, &new, t)).await {
                Ok(()) if new.size > old.size => {
                    self.state.keep(&new)?;
                    new
                }
                Ok(()) => old,
                Err(e) if is_misbehaviour(&e) => {
                    self.state.refuse(&note, &e.to_string())?;
                    return Err(Stop::Misbehaving(anyhow::anyhow!(
                        "the log at {} is not the log this mirror holds: {e}",
                        self.source.base
                    )));
                }
                Err(e) => return Err(e.into()),
            },
            None => {
                self.state.keep(&new)?;
                new
            }
        };
        let mut round = Round {
            checkpoint: target.size,
            ..Round::default()
        };
        let from = self.state.next()?;
        let end = target.size.min(from.saturating_add(self.max_entries));
        round.from = from;
        round.to = from;
        let (started, mut said) = (Instant::now(), Instant::now());
        let mut next = from;
        while next < end {
            let stop = ((next / BATCH + 1) * BATCH).min(end);
            // Fresh tiles for each batch: memory stays bounded however long the catch-up.
            let tiles = self.source.tiles();
            let leaves = tiles
                .run(|t| tlog::entries(&target, next, stop, t))
                .await
                .map_err(|e| {
                    if is_misbehaviour(&e) {
                        Stop::Misbehaving(anyhow::anyhow!(
                            "the entries {} serves are not its log's: {e}",
                            self.source.base
                        ))
                    } else {
                        Stop::Failed(e.into())
                    }
                })?;
            let fates = self.copy(next, &leaves).await?;
            for (n, fate) in (next..).zip(&fates) {
                match fate {
                    Fate::Stored { kind, new: true } if *kind == "heartbeat" => {
                        round.heartbeats += 1
                    }
                    Fate::Stored { new: true, .. } => round.measurements += 1,
                    Fate::Stored { new: false, .. } => round.already += 1,
                    Fate::Enrolment => round.enrolments += 1,
                    Fate::Withheld(_) => round.withheld += 1,
                    Fate::Refused(why) => {
                        round.refused += 1;
                        eprintln!("vantage-aggregator mirror: leaf {n} refused: {why}");
                    }
                }
            }
            self.state.record(next, &leaves, &fates)?;
            next = stop;
            round.to = next;
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                eprintln!(
                    "vantage-aggregator mirror: leaf {next} of {} ({:.1}%), {:.0} leaves/s",
                    target.size,
                    next as f64 * 100.0 / target.size.max(1) as f64,
                    (next - from) as f64 / started.elapsed().as_secs_f64().max(1e-3)
                );
            }
        }
        Ok(round)
    }

    /// Fetches, checks and stores the envelopes of `leaves` (leaf `first` onwards), in order.
    async fn copy(&self, first: u64, leaves: &[Vec<u8>]) -> Result<Vec<Fate>, Stop> {
        // Fetched a few at a time, kept in leaf order.
        let mut fetched: Vec<Option<Fetched>> = (0..leaves.len()).map(|_| None).collect();
        let mut tasks = tokio::task::JoinSet::new();
        let mut queue = leaves.iter().enumerate();
        loop {
            while tasks.len() < IN_FLIGHT {
                let Some((i, leaf)) = queue.next() else {
                    break;
                };
                if leaf.len() != tlog::LEAF_BYTES {
                    fetched[i] = Some(Fetched::Withheld(format!(
                        "a leaf of {} bytes is not a Vantage leaf",
                        leaf.len()
                    )));
                    continue;
                }
                let (source, id) = (self.source.clone(), hex::encode(&leaf[..32]));
                tasks.spawn(async move { (i, source.envelope(&id).await) });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            let (i, answer) = done.map_err(|e| Stop::Failed(e.into()))?;
            let answer = answer.map_err(|e| {
                Stop::Failed(e.context(format!("the envelope of leaf {}", first + i as u64)))
            })?;
            fetched[i] = Some(answer);
        }
        // Stored in leaf order; consecutive measurements in one transaction.
        let mut fates: Vec<Option<Fate>> = (0..leaves.len()).map(|_| None).collect();
        let mut waiting: Vec<(usize, String)> = Vec::new();
        for (i, (leaf, answer)) in leaves.iter().zip(fetched).enumerate() {
            let fate = match answer {
                Some(Fetched::Envelope { body, heartbeat }) => match check_envelope(leaf, &body) {
                    Ok(line) if heartbeat => {
                        self.store_measurements(&mut waiting, &mut fates)?;
                        Some(self.store_heartbeat(line)?)
                    }
                    Ok(line) => {
                        waiting.push((i, line.to_string()));
                        None
                    }
                    Err(why) => Some(Fate::Refused(why)),
                },
                Some(Fetched::Enrolment) => Some(Fate::Enrolment),
                Some(Fetched::Withheld(why)) => Some(Fate::Withheld(why)),
                Some(Fetched::TooLarge(n)) => Some(Fate::Refused(format!(
                    "the envelope is larger than {} bytes ({n} read)",
                    self.source.max_envelope
                ))),
                None => Some(Fate::Withheld("not fetched".into())),
            };
            if fate.is_some() {
                fates[i] = fate;
            }
        }
        self.store_measurements(&mut waiting, &mut fates)?;
        Ok(fates
            .into_iter()
            .map(|f| f.unwrap_or_else(|| Fate::Refused("not stored".into())))
            .collect())
    }

    /// Stores the measurements waiting through ingest (signature, scoring, the store's own
    /// log), in one transaction.
    fn store_measurements(
        &self,
        waiting: &mut Vec<(usize, String)>,
        fates: &mut [Option<Fate>],
    ) -> Result<(), Stop> {
        if waiting.is_empty() {
            return Ok(());
        }
        let body = waiting
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let outcomes = ingest::ingest(
            &*self.store,
            &body,
            &self.ingest,
            &self.fingerprints,
            &Origin::UNKNOWN,
        )?;
        for ((i, _), outcome) in waiting.drain(..).zip(outcomes) {
            fates[i] = Some(match outcome.status {
                Status::Accepted => Fate::Stored {
                    kind: "measurement",
                    new: true,
                },
                Status::Duplicate => Fate::Stored {
                    kind: "measurement",
                    new: false,
                },
                _ => Fate::Refused(format!(
                    "this store refused it: {}",
                    outcome.reason.unwrap_or_default()
                )),
            });
        }
        Ok(())
    }

    /// Stores a heartbeat through ingest; whether it is new shows in this store's own log,
    /// which a new heartbeat grows by one leaf.
    fn store_heartbeat(&self, line: &str) -> Result<Fate, Stop> {
        let before = self.store.log().ok().map(|l| l.tree_size()).transpose()?;
        Ok(
            match ingest::heartbeat(&*self.store, line, &self.ingest, &Origin::UNKNOWN)? {
                Ok(()) => {
                    let after = self.store.log().ok().map(|l| l.tree_size()).transpose()?;
                    Fate::Stored {
                        kind: "heartbeat",
                        new: after != before,
                    }
                }
                Err(reason) => Fate::Refused(format!("this store refused it: {reason}")),
            },
        )
    }
}

fn summary(r: &Round, totals: &[(String, u64)]) -> String {
    let mut text = format!(
        "mirror: checkpoint of {} leaves verified; leaves {}..{} read: {} measurements and {} \
         heartbeats stored, {} already here, leaf only: {} enrolments, {} withheld, {} refused",
        r.checkpoint,
        r.from,
        r.to,
        r.measurements,
        r.heartbeats,
        r.already,
        r.enrolments,
        r.withheld,
        r.refused
    );
    let all: Vec<String> = totals.iter().map(|(k, n)| format!("{k} {n}")).collect();
    if !all.is_empty() {
        text.push_str(&format!("; leaves mirrored by kind: {}", all.join(", ")));
    }
    text
}

pub(super) fn mirror(args: &MirrorArgs) -> Result<ExitCode> {
    let public = public_key(&args.log_key)?;
    let mut base = args.from.clone();
    if !matches!(base.scheme(), "http" | "https") {
        bail!("--from {base}: not an http:// or https:// URL");
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let roots = match &args.ca_file {
        Some(p) => TlsContext::load_pem(p)?,
        None => Vec::new(),
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let mut engine = EngineConfig::default();
    engine.timeouts.tcp_connect = timeout;
    engine.timeouts.tls_handshake = timeout;
    engine.timeouts.http = timeout;
    let source = Source {
        base: base.clone(),
        engine,
        tls: TlsContext::new(roots)?,
        timeout,
        max_envelope: args.max_envelope_kib.saturating_mul(1024),
    };
    let store: Arc<dyn Storage> =
        Arc::new(Sqlite::open(&args.db).with_context(|| format!("open {}", args.db.display()))?);
    let state = State::open(&args.db, &public, &base)?;
    let mut mirror = Mirror {
        source,
        public,
        store,
        state,
        max_entries: args.max_entries.max(1),
        ingest: IngestConfig {
            max_line_bytes: args.max_envelope_kib.saturating_mul(1024),
            ..IngestConfig::default()
        },
        fingerprints: Fingerprints::builtin(),
    };
    eprintln!(
        "vantage-aggregator mirror: the log {} at {base} into {}",
        tlog::origin_of(&public),
        args.db.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        loop {
            match mirror.round().await {
                Ok(r) => {
                    let totals = mirror.state.totals()?;
                    outln!("{}", summary(&r, &totals))?;
                    if args.once {
                        return Ok(if r.refused > 0 {
                            ExitCode::from(1)
                        } else {
                            ExitCode::SUCCESS
                        });
                    }
                }
                Err(Stop::Misbehaving(e)) => {
                    let kept = mirror.state.next().unwrap_or(0);
                    eprintln!(
                        "vantage-aggregator mirror: {e:#}\nthe mirror stopped, keeping the {kept} \
                         leaves it has and everything it stored (nothing is deleted); the refused \
                         checkpoint is kept in mirror_refused"
                    );
                    return Ok(ExitCode::from(3));
                }
                Err(Stop::Failed(e)) if args.once => return Err(e),
                Err(Stop::Failed(e)) => {
                    eprintln!("vantage-aggregator mirror: round failed, trying again: {e:#}");
                }
            }
            tokio::time::sleep(Duration::from_secs(args.every.max(1))).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_key_is_read_as_base64_or_as_a_verifier_key() {
        let public = [7u8; 32];
        assert_eq!(public_key(&B64.encode(public)).expect("base64"), public);
        assert_eq!(
            public_key(&tlog::verifier_key(&public)).expect("verifier key"),
            public
        );
        for bad in ["", "AQID", "not a key at all", "vantage.invalid/00+00+AQID"] {
            assert!(public_key(bad).is_err(), "{bad:?} was read");
        }
    }

    #[test]
    fn an_envelope_is_kept_only_when_it_verifies_and_is_the_leaf_s() {
        let key = vantage_probe::envelope::Identity::generate().expect("key");
        let (id, line) = key.seal(r#"{"test_name":"canary"}"#).expect("seal");
        let leaf = tlog::leaf(id.as_str(), &key.public_key()).expect("leaf");
        assert_eq!(
            check_envelope(&leaf, &format!("{line}\n")),
            Ok(line.as_str())
        );
        // Another measurement by the same key is not this leaf's.
        let (_, other) = key.seal(r#"{"test_name":"canary","n":1}"#).expect("seal");
        let e = check_envelope(&leaf, &other).expect_err("another's");
        assert!(e.contains("is not the leaf's"), "{e}");
        // A byte changed in the signed measurement breaks the signature.
        let changed = line.replacen("canary", "canarz", 1);
        assert_ne!(changed, line);
        let e = check_envelope(&leaf, &changed).expect_err("changed");
        assert!(e.contains("does not verify"), "{e}");
        assert!(check_envelope(&leaf, "not json").is_err());
        assert!(check_envelope(&leaf, &format!("{line}\n{line}")).is_err());
    }
}
