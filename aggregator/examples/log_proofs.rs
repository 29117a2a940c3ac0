//! The transparency log at 10 million entries (BENCHMARKS.md, `docs/transparency.md`): how
//! large and how fast inclusion proofs, consistency proofs and tiles are, and what the log
//! costs on disk. Run by `benches/log_proofs.sh`.
//!
//! - `fill DB COUNT [MAX_GB]` appends COUNT synthetic signed measurements to a fresh SQLite
//!   store through its own append path (`LogStore::insert_logged`, the call ingest makes), in
//!   transactions of 50,000, and stops early if the file would grow past MAX_GB (default 5).
//!   The ids are SHA-256 of the row number, the keys 1,000 synthetic probes, the envelopes a
//!   few bytes: the log's part does not depend on them. To keep 10 million entries near 5 GB
//!   it drops the four search indexes of `measurements` (by country, domain, time, network;
//!   about 140 bytes a row), which the log neither reads nor writes.
//! - `measure DB` publishes a checkpoint of the whole tree and measures, from the store:
//!   1,000 inclusion proofs of random leaves (`log::prove`, what the proof route runs, and its
//!   JSON answer), 1,000 RFC 9162 consistency proofs from a random size in the upper half to
//!   the whole tree (from the stored hashes, and as a tile-reading client computes them: how
//!   many tiles it fetches), 1,000 reads of random tiles of each kind, and the bytes on disk.
//! - `http ADDR COUNT` asks a running `vantage-aggregator serve` on that store COUNT proofs
//!   and COUNT tiles over HTTP (the routes as a client sees them).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tlog_tiles::{Hash, HashReader, Tile, TileHashReader, TileReader};
use vantage_aggregator::api::log::ProofAnswer;
use vantage_aggregator::log::tiles::{self, TILE_WIDTH, TilePath};
use vantage_aggregator::log::{LogKey, Proven, TILE_HEIGHT};
use vantage_aggregator::store::log::LogStore;
use vantage_aggregator::store::{Row, Sqlite};

/// Rows stored per transaction while filling.
const BATCH: u64 = 50_000;
/// Synthetic probes signing the measurements.
const PROBES: u64 = 1_000;
/// Samples of each measurement.
const SAMPLES: usize = 1_000;

/// A cheap deterministic mix (splitmix64), so runs are repeatable without a random crate.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The id of synthetic measurement `n`: SHA-256 of its number, as ingest names a measurement
/// by the SHA-256 of its bytes.
fn id(n: u64) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        &n.to_be_bytes(),
    ))
}

fn probe_key(p: u64) -> String {
    let seed = format!("probe {p}");
    B64.encode(ring::digest::digest(&ring::digest::SHA256, seed.as_bytes()))
}

fn row(n: u64, keys: &[String]) -> Row {
    let key = &keys[usize::try_from(mix(n) % PROBES).unwrap_or(0)];
    let second = n % 86_400;
    Row {
        id: id(n),
        source: "vantage".into(),
        probe_key: Some(key.clone()),
        probe_cc: "IR".into(),
        probe_asn: 44_244,
        test_name: "web_connectivity".into(),
        input: None,
        domain: None,
        measured_at: format!(
            "2026-11-30 {:02}:{:02}:{:02}",
            second / 3600,
            second / 60 % 60,
            second % 60
        ),
        blocking: None,
        accessible: Some(true),
        confirmed: false,
        rule_set: None,
        verdict: None,
        envelope: format!("{{\"n\":{n}}}"),
        network_verified: false,
        route: vantage_aggregator::store::Route::Upload,
    }
}

/// The database file and its WAL, in bytes.
fn bytes_on_disk(db: &Path) -> u64 {
    let wal = db.with_extension(format!(
        "{}-wal",
        db.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    [db, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

fn fill(db_path: &Path, count: u64, max_gb: f64) -> Result<()> {
    if db_path.exists() {
        bail!(
            "{} exists: fill starts from a fresh file",
            db_path.display()
        );
    }
    let db = Sqlite::open(db_path).with_context(|| format!("open {}", db_path.display()))?;
    rusqlite::Connection::open(db_path)?.execute_batch(
        "DROP INDEX measurements_cc_time; DROP INDEX measurements_domain;
         DROP INDEX measurements_time; DROP INDEX measurements_asn_time;",
    )?;
    let keys: Vec<String> = (0..PROBES).map(probe_key).collect();
    let start = Instant::now();
    let mut n = 0;
    let mut reported = 0;
    while n < count {
        let rows: Vec<Row> = (n..count.min(n + BATCH)).map(|i| row(i, &keys)).collect();
        let stored = db.insert_logged(&rows).context("insert")?;
        if let Some(bad) = stored
            .iter()
            .zip(n..)
            .find(|(s, i)| s.leaf_index != Some(*i))
        {
            bail!("row {} got leaf {:?}", bad.1, bad.0.leaf_index);
        }
        n += rows.len() as u64;
        if n - reported >= 500_000 || n == count {
            reported = n;
            let bytes = bytes_on_disk(db_path);
            // The file alone: the WAL, as large as the largest transaction, does not grow.
            let file = std::fs::metadata(db_path).map(|m| m.len()).unwrap_or(bytes);
            let projected = file as f64 / n as f64 * count as f64 / 1e9;
            eprintln!(
                "fill: {n} leaves, {:.0} s, {:.0} leaves/s, {:.2} GB on disk (about {projected:.1} GB at {count})",
                start.elapsed().as_secs_f64(),
                n as f64 / start.elapsed().as_secs_f64(),
                bytes as f64 / 1e9
            );
            if n >= 1_000_000.min(count / 2) && projected > max_gb {
                bail!(
                    "stopped: {count} leaves would take about {projected:.1} GB, over {max_gb} GB"
                );
            }
        }
    }
    println!(
        "appended {count} leaves through the store's own append path in {:.0} s ({:.0} leaves/s, transactions of {BATCH})",
        start.elapsed().as_secs_f64(),
        count as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// p50, p95 and the largest of some durations, as text in milliseconds.
fn timing(mut d: Vec<Duration>) -> String {
    d.sort();
    let at = |q: usize| d[(d.len() * q / 100).min(d.len() - 1)].as_secs_f64() * 1e3;
    format!(
        "p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms",
        at(50),
        at(95),
        at(100)
    )
}

/// The least, the mean and the most of some sizes.
fn spread(v: &[usize]) -> String {
    let min = v.iter().min().copied().unwrap_or(0);
    let max = v.iter().max().copied().unwrap_or(0);
    let mean = v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    format!("{min} to {max}, mean {mean:.1}")
}

/// Stored hashes read straight from the store (what the aggregator computes proofs from).
struct Stored<'a>(&'a Sqlite);

impl HashReader for Stored<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0
            .hashes(indexes)
            .map(|v| v.into_iter().map(Hash).collect())
            .map_err(|_| tlog_tiles::Error::IndexesNotInTree)
    }
}

/// Tiles read from the store as the tile route serves them, counted: what a client that checks
/// consistency from the tiles (C2SP tlog-tiles) would fetch.
struct CountingTiles<'a> {
    db: &'a Sqlite,
    size: u64,
    fetched: RefCell<HashSet<String>>,
    bytes: Cell<usize>,
}

impl TileReader for CountingTiles<'_> {
    fn height(&self) -> u8 {
        TILE_HEIGHT
    }

    fn read_tiles(&self, wanted: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(wanted.len());
        for t in wanted {
            let path = TilePath {
                level: Some(t.level()),
                index: t.level_index(),
                width: t.width(),
            };
            let data = path
                .read(self.db, self.size)
                .ok()
                .flatten()
                .ok_or(tlog_tiles::Error::InvalidTile)?;
            if self.fetched.borrow_mut().insert(path.path()) {
                self.bytes.set(self.bytes.get() + data.len());
            }
            out.push(data);
        }
        Ok(out)
    }

    fn save_tiles(&self, _: &[Tile], _: &[Vec<u8>]) {}
}

/// The tile paths a client asks for most: full tiles of levels 0 and 1 and entry bundles,
/// picked at random among those the log holds, and the partial tiles at its right edge.
fn tile_paths(size: u64, samples: usize, seed: u64) -> Vec<(&'static str, String)> {
    let width = u64::from(TILE_WIDTH);
    let mut out = Vec::new();
    for (i, kind) in (0..samples).flat_map(|i| [(i, "level 0"), (i, "level 1"), (i, "entries")]) {
        let r = mix(seed ^ ((i as u64) << 8) ^ kind.len() as u64);
        let path = match kind {
            "level 0" => TilePath {
                level: Some(0),
                index: r % (size / width),
                width: TILE_WIDTH,
            },
            "level 1" => TilePath {
                level: Some(1),
                index: r % (size / width / width).max(1),
                width: TILE_WIDTH,
            },
            _ => TilePath {
                level: None,
                index: r % (size / width),
                width: TILE_WIDTH,
            },
        };
        out.push((kind, path.path()));
    }
    for level in 0..=2u8 {
        let span = width.pow(u32::from(level));
        let (index, w) = (size / span / width, size / span % width);
        if w > 0 {
            let path = TilePath {
                level: Some(level),
                index,
                width: u32::try_from(w).unwrap_or(TILE_WIDTH),
            };
            out.push(("partial", path.path()));
        }
    }
    out
}

fn measure(db_path: &Path) -> Result<()> {
    let db = Sqlite::open(db_path).with_context(|| format!("open {}", db_path.display()))?;
    let size = db.tree_size()?;
    if size < 2 * BATCH {
        bail!("the log holds {size} leaves: fill it first");
    }
    let bytes = bytes_on_disk(db_path);
    // The key `serve --db DB` signs with, so that `http` sees the same checkpoints.
    let key_path = std::path::PathBuf::from(format!("{}.key", db_path.display()));
    vantage_probe::envelope::Identity::load_or_create(&key_path)
        .with_context(|| format!("key {}", key_path.display()))?;
    let key = LogKey::load(&key_path)?;
    let t = Instant::now();
    let published = vantage_aggregator::log::publish(&db, &key)?;
    println!(
        "log of {size} leaves; checkpoint {} in {:.1} ms (the check of the last one and the root)",
        if published.is_some() {
            "signed"
        } else {
            "already signed"
        },
        t.elapsed().as_secs_f64() * 1e3
    );

    // Inclusion proofs, as the proof route makes and serves them.
    let (mut times, mut hashes, mut json) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..SAMPLES {
        let n = mix(s as u64) % size;
        let t = Instant::now();
        let Proven::Included(p) = vantage_aggregator::log::prove(&db, &id(n))? else {
            bail!("leaf {n} is not proven");
        };
        let answer = ProofAnswer {
            id: id(n),
            leaf_index: p.leaf_index,
            leaf: B64.encode(&p.leaf),
            tree_size: p.checkpoint.size,
            checkpoint: p.checkpoint.note.clone(),
            inclusion_proof: p.hashes.iter().map(|h| B64.encode(h.0)).collect(),
        };
        let body = serde_json::to_vec(&answer)?;
        times.push(t.elapsed());
        if p.leaf_index != n {
            bail!("measurement {n} has leaf {}", p.leaf_index);
        }
        hashes.push(p.hashes.len());
        json.push(body.len());
    }
    println!(
        "inclusion proof ({SAMPLES} random leaves, from the store, checked, as JSON): {}",
        timing(times)
    );
    println!(
        "  {} hashes ({} bytes of hashes); the JSON answer {} bytes, checkpoint included",
        spread(&hashes),
        spread(&hashes.iter().map(|h| h * 32).collect::<Vec<_>>()),
        spread(&json)
    );

    // Consistency proofs from a random size in the upper half to the whole tree.
    let root = Hash(
        db.latest_checkpoint()?
            .context("no checkpoint after publishing")?
            .root,
    );
    let stored = Stored(&db);
    let (mut times, mut hashes) = (Vec::new(), Vec::new());
    let (mut tile_times, mut tile_counts, mut tile_bytes) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..SAMPLES {
        let old = size / 2 + mix(s as u64 ^ 0xc0) % (size / 2);
        let old_root = tlog_tiles::tree_hash(old, &stored)?;
        let t = Instant::now();
        let proof = tlog_tiles::prove_tree(size, old, &stored)?;
        tlog_tiles::check_tree(&proof, size, root, old, old_root)?;
        times.push(t.elapsed());
        hashes.push(proof.len());
        if s % 10 == 0 {
            // As a client holding only the two checkpoints computes it from the tiles, each
            // checked against the new root (`tlog_tiles::TileHashReader`).
            let counting = CountingTiles {
                db: &db,
                size,
                fetched: RefCell::new(HashSet::new()),
                bytes: Cell::new(0),
            };
            let t = Instant::now();
            let reader = TileHashReader::new(size, root, &counting);
            let from_tiles = tlog_tiles::prove_tree(size, old, &reader)?;
            tlog_tiles::check_tree(&from_tiles, size, root, old, old_root)?;
            tile_times.push(t.elapsed());
            tile_counts.push(counting.fetched.borrow().len());
            tile_bytes.push(counting.bytes.get());
        }
    }
    println!(
        "consistency proof (RFC 9162, {SAMPLES} random old sizes in [{}, {size}) to {size}, from the stored hashes, checked): {}",
        size / 2,
        timing(times)
    );
    println!(
        "  {} hashes ({} bytes)",
        spread(&hashes),
        spread(&hashes.iter().map(|h| h * 32).collect::<Vec<_>>())
    );
    println!(
        "  computed by a client from the tiles ({} of them, every tile read checked against the new root): {}",
        tile_counts.len(),
        timing(tile_times)
    );
    println!(
        "  tiles fetched {}, bytes {}",
        spread(&tile_counts),
        spread(&tile_bytes)
    );

    // Tiles, as the tile route reads them (its path parsed, its bytes read).
    let mut by_kind: Vec<(&str, Vec<Duration>, Vec<usize>)> = Vec::new();
    for (kind, path) in tile_paths(size, SAMPLES, 7) {
        let t = Instant::now();
        let tile = tiles::parse(&path).map_err(anyhow::Error::msg)?;
        let data = tile
            .read(&db, size)?
            .with_context(|| format!("tile/{path} is not served"))?;
        let elapsed = t.elapsed();
        match by_kind.iter_mut().find(|(k, _, _)| *k == kind) {
            Some((_, times, sizes)) => {
                times.push(elapsed);
                sizes.push(data.len());
            }
            None => by_kind.push((kind, vec![elapsed], vec![data.len()])),
        }
    }
    for (kind, times, sizes) in by_kind {
        println!(
            "tile {kind} ({} reads from the store): {}; {} bytes",
            times.len(),
            timing(times),
            spread(&sizes)
        );
    }

    // Bytes on disk.
    let c =
        rusqlite::Connection::open_with_flags(db_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let pages: rusqlite::Result<i64> = c.query_row(
        "SELECT sum(pgsize) FROM dbstat WHERE name = 'log_leaves'",
        [],
        |r| r.get(0),
    );
    let payload: i64 = c.query_row(
        "SELECT sum(length(leaf) + length(hashes)) FROM log_leaves",
        [],
        |r| r.get(0),
    )?;
    println!(
        "on disk: {:.2} GB for {size} leaves and their measurements (without the four search indexes), {:.0} bytes an entry",
        bytes as f64 / 1e9,
        bytes as f64 / size as f64
    );
    match pages {
        Ok(pages) => println!(
            "  the log's table (log_leaves): {:.2} GB, {:.0} bytes an entry ({:.0} of them leaf and hashes)",
            pages as f64 / 1e9,
            pages as f64 / size as f64,
            payload as f64 / size as f64
        ),
        Err(_) => println!(
            "  the log's leaves and hashes: {:.0} bytes an entry (before SQLite's row and page overhead)",
            payload as f64 / size as f64
        ),
    }
    Ok(())
}

fn http(addr: &str, count: usize) -> Result<()> {
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let base = format!("http://{addr}");
    let mut checkpoint = agent
        .get(format!("{base}/log/checkpoint"))
        .call()
        .context("GET /log/checkpoint")?;
    let note = checkpoint.body_mut().read_to_string()?;
    let size: u64 = note
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .context("no size in the checkpoint")?;
    let (mut times, mut sizes) = (Vec::new(), Vec::new());
    for s in 0..count {
        let n = mix(s as u64 ^ 0x5eed) % size;
        let url = format!("{base}/api/v1/log/proof/{}", id(n));
        let t = Instant::now();
        let body = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?
            .body_mut()
            .read_to_vec()?;
        times.push(t.elapsed());
        sizes.push(body.len());
    }
    println!(
        "GET /api/v1/log/proof/{{id}} ({count} random leaves of {size}, one connection): {}; {} bytes",
        timing(times),
        spread(&sizes)
    );
    let mut times = Vec::new();
    let mut sizes = Vec::new();
    for (_, path) in tile_paths(size, count / 3, 11) {
        let url = format!("{base}/log/tile/{path}");
        let t = Instant::now();
        let body = agent
            .get(&url)
            .call()
            .with_context(|| format!("GET {url}"))?
            .body_mut()
            .read_to_vec()?;
        times.push(t.elapsed());
        sizes.push(body.len());
    }
    println!(
        "GET /log/tile/... ({} random full tiles of levels 0 and 1 and entry bundles, and the partial ones): {}; {} bytes",
        times.len(),
        timing(times),
        spread(&sizes)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: log_proofs fill DB COUNT [MAX_GB] | measure DB | http ADDR COUNT";
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["fill", db, count, ..] => fill(
            Path::new(db),
            count.parse().context("COUNT")?,
            args.get(3)
                .map_or(Ok(5.0), |g| g.parse())
                .context("MAX_GB")?,
        ),
        ["measure", db] => measure(Path::new(db)),
        ["http", addr, count] => http(addr, count.parse().context("COUNT")?),
        _ => bail!("{usage}"),
    }
}
