//! The command line of `vantage-aggregator`: clap's definitions and one file per command,
//! each turning its arguments into calls of the library (`api`, `detect`, `ingest`, `store`).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vantage_aggregator::api::export::Format;
use vantage_aggregator::api::geo::{Geo, Mmdb, Prefixes};
use vantage_aggregator::api::listen::{ConnLimits, serve as serve_connections};
use vantage_aggregator::api::server::{AppState, SearchParams, ServerLimits, router};
use vantage_aggregator::api::throughput::ThroughputServer;
use vantage_aggregator::ingest::IngestConfig;
use vantage_aggregator::ingest::limits::{ByteBudget, KeyLimits, Slots};
use vantage_aggregator::ingest::score::{score_reader, write_summary};
use vantage_aggregator::store::{KeyState, Sqlite, Storage};
use vantage_probe::engine::{Resolver, TlsContext};
use vantage_probe::th::HelperConfig;
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::RuleSet;

/// `println!` that returns the write error instead of panicking, so that a closed pipe
/// (`vantage-aggregator keys list | head`) reaches [`main`], which ends quietly on it.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)
    };
}

mod compact;
mod detect;
mod evidence;
mod export;
mod import;
mod ingest;
mod keys;
mod migrate;
mod mirror;
mod query;
mod rescore;
mod score;
mod serve;
mod signals;
mod timeline;
mod witness;

/// Vantage aggregator: verifies and stores signed measurements from probes, scores them against
/// a control vantage point, and serves the shutdown and blocking timeline to researchers.
#[derive(Debug, Parser)]
#[command(name = "vantage-aggregator", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: ingest (POST /api/v1/measurements), the researcher API
    /// (GET /api/v1/measurements[/{id}]), whoami, the test helper (POST /api/v1/th), health.
    Serve(serve::ServeArgs),
    /// Search stored measurements, with the same filters as GET /api/v1/measurements.
    Query(query::QueryArgs),
    /// A network's signals in 5-minute bins: probes heard from, heartbeats, canary success,
    /// measurements and their anomaly ratio by layer (as `GET /api/v1/signals`).
    Signals(signals::SignalsArgs),
    /// List, allow or revoke probe keys.
    Keys(keys::KeysArgs),
    /// Store OONI measurements (JSONL, .jsonl.gz, or JSON documents) beside Vantage's, unsigned
    /// and marked as coming from OONI, so that both answer the same queries.
    ImportOoni(import::ImportArgs),
    /// The timeline: shutdown and blocking events, as a table, JSON lines (--json) or CSV
    /// (--csv), with the same filters as GET /api/v1/timeline.
    Timeline(timeline::TimelineArgs),
    /// Run the detectors now over stored signals and store the events (the server does this by
    /// itself every minute); --since reaches further back than the default lookback.
    Detect(detect::DetectArgs),
    /// Recompute every stored verdict with the current rules (after a rule or fingerprint change).
    Rescore(rescore::RescoreArgs),
    /// An event's evidence bundle as a zip: the event, every measurement behind it byte for
    /// byte with its inclusion proof against one signed checkpoint, the aggregator's key, the
    /// detector's settings, the signals around it and a report; `vantage verify` checks it.
    Evidence(evidence::EvidenceArgs),
    /// Witness another aggregator's transparency log: check that each new checkpoint extends
    /// the last one cosigned, then cosign it (C2SP tlog-cosignature) and submit the
    /// cosignature to the log; refuse, loudly and with exit status 3, when it does not.
    Witness(witness::WitnessArgs),
    /// Export matching measurements: JSONL (the stored envelopes, verifiable) or CSV.
    Export(export::ExportArgs),
    /// Compress every stored envelope now (the server does this by itself a minute after
    /// ingest). Envelopes read back byte for byte; only the space they take changes.
    Compact(compact::DbArgs),
    /// Copy every measurement (envelopes byte for byte), heartbeat, key and event from one
    /// store into another (sqlite:FILE, clickhouse://HOST:PORT/DB), then check that the copy
    /// answers as the source does, signals included; exits 1 on any difference.
    Migrate(migrate::MigrateArgs),
    /// Score OONI web_connectivity measurements (JSONL or one JSON document) and print one
    /// verdict per line: blocking, accessible, dns_consistency, confirmed, fingerprints, the
    /// rule set version, and OONI's own verdict from the input for comparison.
    Score(score::ScoreArgs),
    /// Keep a verified copy of another aggregator's transparency log and of its envelopes:
    /// each round checks its checkpoint's signature and consistency with the last one kept,
    /// reads the new leaves and stores each leaf's envelope once it verifies and is the
    /// leaf's; a fork or a rewritten log stops it, keeping everything (docs/transparency.md).
    Mirror(mirror::MirrorArgs),
    /// Store files written by `vantage export` (carried out by any means) with the same checks
    /// as an upload, and say per file what was accepted, duplicate or refused, and why.
    Ingest(ingest::IngestArgs),
}

pub(super) fn detect_config(
    path: Option<&PathBuf>,
) -> Result<vantage_aggregator::detect::DetectConfig> {
    match path {
        Some(p) => vantage_aggregator::detect::DetectConfig::read(p).map_err(anyhow::Error::msg),
        None => Ok(Default::default()),
    }
}

pub(super) fn fingerprints(dir: Option<&PathBuf>) -> Result<Fingerprints> {
    let mut set = Fingerprints::builtin();
    if let Some(dir) = dir {
        let (more, problems) = Fingerprints::load_dir(dir)?;
        for p in &problems {
            eprintln!("warning: {p} (row skipped)");
        }
        if more.is_empty() {
            bail!("no fingerprints in {}", dir.display());
        }
        set.extend(more);
    }
    Ok(set)
}

/// Whether `e` is a write to a reader that went away (EPIPE): the reader has all it wanted,
/// so the command ends quietly with success, as `cat` does when its reader closes.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    vantage_probe::init_logging("warn");
    let result = match cli.command {
        Command::Score(args) => score::score(&args),
        Command::Mirror(args) => mirror::mirror(&args),
        Command::Ingest(args) => ingest::ingest(&args),
        Command::Query(args) => query::query(&args),
        Command::Signals(args) => signals::signals(&args),
        Command::Timeline(args) => timeline::timeline(&args),
        Command::Detect(args) => detect::detect(&args),
        Command::Keys(args) => keys::keys(&args),
        Command::ImportOoni(args) => import::import_ooni(&args),
        Command::Rescore(args) => rescore::rescore(&args),
        Command::Export(args) => export::export(&args),
        Command::Evidence(args) => evidence::evidence(&args),
        Command::Witness(args) => witness::witness(&args),
        Command::Compact(args) => compact::compact(&args),
        Command::Migrate(args) => migrate::migrate(&args),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(serve::serve(args)))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
