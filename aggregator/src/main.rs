//! `vantage-aggregator`: collects signed measurements from probes and builds the timeline.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::sync::Arc;
use vantage_aggregator::score::{score_text, write_summary};

use vantage_aggregator::export::Format;
use vantage_aggregator::geo::{Geo, Mmdb, Prefixes};
use vantage_aggregator::ingest::IngestConfig;
use vantage_aggregator::limits::{ByteBudget, KeyLimits, Slots};
use vantage_aggregator::listen::{ConnLimits, serve as serve_connections};
use vantage_aggregator::server::{AppState, SearchParams, ServerLimits, router};
use vantage_aggregator::store::{KeyState, Sqlite, Storage};
use vantage_aggregator::throughput::ThroughputServer;
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
    Serve(ServeArgs),
    /// Search stored measurements, with the same filters as GET /api/v1/measurements.
    Query(QueryArgs),
    /// A network's signals in 5-minute bins: probes heard from, heartbeats, canary success,
    /// measurements and their anomaly ratio by layer (as `GET /api/v1/signals`).
    Signals(SignalsArgs),
    /// List, allow or revoke probe keys.
    Keys(KeysArgs),
    /// Store OONI measurements (JSONL, .jsonl.gz, or JSON documents) beside Vantage's, unsigned
    /// and marked as coming from OONI, so that both answer the same queries.
    ImportOoni(ImportArgs),
    /// The timeline: shutdown and blocking events, as a table, JSON lines (--json) or CSV
    /// (--csv), with the same filters as GET /api/v1/timeline.
    Timeline(TimelineArgs),
    /// Run the detectors now over stored signals and store the events (the server does this by
    /// itself every minute); --since reaches further back than the default lookback.
    Detect(DetectArgs),
    /// Recompute every stored verdict with the current rules (after a rule or fingerprint change).
    Rescore(RescoreArgs),
    /// Export matching measurements: JSONL (the stored envelopes, verifiable) or CSV.
    Export(ExportArgs),
    /// Compress every stored envelope now (the server does this by itself a minute after
    /// ingest). Envelopes read back byte for byte; only the space they take changes.
    Compact(DbArgs),
    /// Score OONI web_connectivity measurements (JSONL or one JSON document) and print one
    /// verdict per line: blocking, accessible, dns_consistency, confirmed, fingerprints, the
    /// rule set version, and OONI's own verdict from the input for comparison.
    Score(ScoreArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The database file (SQLite), created if missing.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,

    /// A MaxMind DB file for whoami (GeoLite2-ASN/-Country/-City, DB-IP ASN/Country Lite).
    /// Repeat it to give an ASN file and a country file; each answer comes from the first file
    /// that has it. Without --geoip or --prefixes whoami answers AS0 and ZZ.
    #[arg(long, value_name = "FILE.mmdb", conflicts_with = "prefixes")]
    geoip: Vec<PathBuf>,

    /// A CSV of `prefix,asn,cc` lines for whoami, instead of --geoip.
    #[arg(long, value_name = "FILE.csv")]
    prefixes: Option<PathBuf>,

    /// Refuse measurements from keys not allowed with `keys allow` or enrolled with a one-time
    /// token from `keys token` (default: trust on first use).
    #[arg(long)]
    require_enrolment: bool,

    /// The aggregator's signing key (created on first use); default: the database path + `.key`.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,

    /// Operator test lists (`<cc>.csv`, `global.csv`) served before the built-in ones.
    #[arg(long, value_name = "DIR")]
    lists: Option<PathBuf>,

    /// Largest upload body in MiB, after decompression (413 beyond it).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    max_body_mib: usize,

    /// Decompressed upload bytes in flight across all uploads, in MiB. Each upload reserves what
    /// it may hold (7 MiB for a large or compressed body) before it is read; when the budget is
    /// spent, uploads are answered 503 with Retry-After and probes send them later.
    #[arg(long, value_name = "MIB", default_value_t = 96)]
    upload_budget_mib: usize,

    /// Lines one key may have accepted per hour (0: no limit). Further lines are refused as
    /// "rate limited" and stay queued on the probe for later.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    lines_per_key_hour: u64,

    /// Keys that may be registered on first use per hour (0: no limit); with
    /// --require-enrolment, keys come only from tokens instead.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    new_keys_per_hour: u64,

    /// Connections open at once; more are closed as they arrive.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,

    /// Connections open at once from one address (for IPv6, one /64).
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections_per_source: usize,

    /// Exports streaming at once; more are answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_exports: usize,

    /// Seconds any request may take; an upload's body must arrive within three quarters of it.
    /// A connection on which nothing moves for 60 s, or whose request head takes 10 s, is closed.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    request_timeout_secs: u64,

    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. Without it
    /// the server speaks plain HTTP, for use behind a TLS-terminating proxy or on loopback.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Also run the throughput server for the probes' throttling test on this address (TLS, with
    /// a self-signed certificate kept beside the database, which probes pin; see
    /// `GET /api/v1/throughput`). Off by default: each test downloads up to 2 MB.
    #[arg(long, value_name = "ADDR")]
    throughput_listen: Option<SocketAddr>,

    /// The test helper resolves names with this DNS server over UDP instead of the system's.
    #[arg(long, value_name = "IP:PORT")]
    th_resolver: Option<SocketAddr>,

    /// The test helper connects from this local address.
    #[arg(long, value_name = "IP")]
    th_local_addr: Option<IpAddr>,

    /// Let the test helper connect to private and other bogon addresses. Only for labs: on a
    /// public server this lets anyone probe the operator's own network.
    #[arg(long)]
    th_allow_private: bool,

    /// Detection thresholds (TOML; absent keys keep their defaults, which are documented in
    /// the source with the research they come from). See README "Timeline".
    #[arg(long, value_name = "FILE")]
    detect_config: Option<PathBuf>,

    /// Run the shutdown and blocking detectors this often, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    detect_every: u64,

    /// Extra CA certificates (PEM) the test helper trusts.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,

    /// The test helper's deadline in seconds for each connect, handshake and HTTP exchange.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    th_timeout: u64,
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// Country code.
    #[arg(long)]
    cc: Option<String>,
    /// Network, e.g. AS3269.
    #[arg(long)]
    asn: Option<String>,
    /// Test name, e.g. web_connectivity.
    #[arg(long)]
    test_name: Option<String>,
    /// Host name of the measured URL.
    #[arg(long)]
    domain: Option<String>,
    /// Exact URL.
    #[arg(long)]
    input: Option<String>,
    /// Blocking: false, dns, tcp_ip, tls, http-failure, http-diff.
    #[arg(long)]
    blocking: Option<String>,
    /// Only confirmed (true) or unconfirmed (false) verdicts.
    #[arg(long)]
    confirmed: Option<bool>,
    /// Measured at or after, `YYYY-MM-DD[ HH:MM:SS]`.
    #[arg(long)]
    since: Option<String>,
    /// Measured before, `YYYY-MM-DD[ HH:MM:SS]`.
    #[arg(long)]
    until: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// Files to import.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RescoreArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// A directory of fingerprint CSV files to use besides Vantage's own.
    #[arg(long, value_name = "DIR")]
    fingerprints: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// `jsonl` (stored envelopes) or `csv` (one row of columns per measurement).
    #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
    format: String,
    #[command(flatten)]
    filters: QueryArgs,
}

#[derive(Debug, clap::Args)]
struct TimelineArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// Country code; default: every country.
    #[arg(long)]
    cc: Option<String>,
    /// Events touching one network, e.g. AS197207.
    #[arg(long)]
    asn: Option<String>,
    /// From `YYYY-MM-DD[ HH:MM:SS]` (UTC); default: seven days before --until.
    #[arg(long)]
    since: Option<String>,
    /// Until `YYYY-MM-DD[ HH:MM:SS]` (UTC); default: now.
    #[arg(long)]
    until: Option<String>,
    /// shutdown, blocking or throttling.
    #[arg(long)]
    kind: Option<String>,
    /// One JSON object per event instead of a table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header line.
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, clap::Args)]
struct DetectArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// One country; default: every country with signals in the window.
    #[arg(long)]
    cc: Option<String>,
    /// Recompute from `YYYY-MM-DD[ HH:MM:SS]` (UTC); default: the configured lookback (8 days).
    #[arg(long)]
    since: Option<String>,
    /// Detection thresholds (TOML), as for `serve --detect-config`.
    #[arg(long, value_name = "FILE")]
    detect_config: Option<PathBuf>,
    /// Operator test lists (categories of targets), as for `serve --lists`.
    #[arg(long, value_name = "DIR")]
    lists: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SignalsArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// Country code.
    #[arg(long)]
    cc: String,
    /// One network, e.g. AS197207; default: the whole country.
    #[arg(long)]
    asn: Option<String>,
    /// From `YYYY-MM-DD[ HH:MM:SS]` (UTC); default: a day before --until.
    #[arg(long)]
    since: Option<String>,
    /// Until `YYYY-MM-DD[ HH:MM:SS]` (UTC); default: now. At most 31 days after --since.
    #[arg(long)]
    until: Option<String>,
    /// One JSON object per bin instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct DbArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
}

#[derive(Debug, clap::Args)]
struct KeysArgs {
    /// The database file.
    #[arg(long, value_name = "FILE", global = true)]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Every key seen or allowed, with its state.
    List,
    /// Trust a key (needed with --require-enrolment).
    Allow {
        /// The base64 public key, as `vantage id` prints it.
        key: String,
    },
    /// Refuse a key's later submissions.
    Revoke {
        /// The base64 public key.
        key: String,
    },
    /// Make one-time enrolment tokens (for `serve --require-enrolment`). Hand one to each probe
    /// operator, who runs `vantage enrol --aggregator URL TOKEN`. Only a hash is stored, so the
    /// tokens are shown once.
    Token {
        /// How many tokens.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
    },
}

#[derive(Debug, clap::Args)]
struct ScoreArgs {
    /// Measurements to score; `-` reads standard input.
    file: String,

    /// Rule set: `vantage` (OONI's rules with Vantage's fixes) or `ooni` (OONI's classic rules).
    #[arg(long, default_value = "vantage", value_parser = ["vantage", "ooni"])]
    rules: String,

    /// A directory of fingerprint CSV files (OONI's format) to use besides Vantage's own.
    #[arg(long, value_name = "DIR")]
    fingerprints: Option<PathBuf>,

    /// Print counts instead of one line per measurement.
    #[arg(long)]
    summary: bool,
}

fn score(args: &ScoreArgs) -> Result<ExitCode> {
    let rules = RuleSet::by_name(&args.rules).context("unknown rule set")?;
    let fingerprints = fingerprints(args.fingerprints.as_ref())?;
    let mut raw = Vec::new();
    let source = if args.file == "-" {
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("cannot read standard input")?;
        "<stdin>".to_string()
    } else {
        raw = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file))?;
        args.file.clone()
    };
    let text = String::from_utf8(raw).with_context(|| format!("{source} is not UTF-8 text"))?;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let summary = score_text(
        &text,
        &source,
        &rules,
        &fingerprints,
        args.summary,
        &mut out,
        &mut stderr.lock(),
    )?;
    if args.summary {
        write_summary(&summary, &rules, &mut out)?;
    }
    out.flush()?;
    if summary.failed > 0 {
        eprintln!(
            "error: {} of {} measurements could not be scored",
            summary.failed,
            summary.failed + summary.scored
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut helper = HelperConfig::default();
    let timeout = Duration::from_secs(args.th_timeout.max(1));
    helper.engine.timeouts.tcp_connect = timeout;
    helper.engine.timeouts.tls_handshake = timeout;
    helper.engine.timeouts.http = timeout;
    helper.engine.local_addr = args.th_local_addr;
    helper.engine.connect_to_bogons = args.th_allow_private;
    if let Some(r) = args.th_resolver {
        helper.resolvers = vec![Resolver::Udp(r)];
    }
    let roots = match &args.ca_file {
        Some(p) => TlsContext::load_pem(p)?,
        None => Vec::new(),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(vantage_aggregator::tls::server_config(cert, key)?),
        _ => None,
    };
    let geo = match &args.prefixes {
        Some(p) => Geo::Prefixes(Prefixes::load(p)?),
        None if args.geoip.is_empty() => Geo::Unknown,
        None => Geo::Mmdb(
            args.geoip
                .iter()
                .map(|p| {
                    let db = Mmdb::open(p)?;
                    eprintln!(
                        "vantage-aggregator: geolocation from {} ({})",
                        p.display(),
                        db.database_type()
                    );
                    Ok(db)
                })
                .collect::<Result<_, vantage_aggregator::geo::MmdbError>>()?,
        ),
    };
    let mut detect = detect_config(args.detect_config.as_ref())?;
    // With a geolocation source, a probe counts for a network only with verified contact in
    // it (`signals::Admit`), in the detectors and the signals alike.
    detect.require_verified_network |= !matches!(geo, Geo::Unknown);
    let detect = Arc::new(detect);
    let verification = detect.verification();
    let storage = Arc::new(Sqlite::open(&args.db)?);
    tokio::spawn(vantage_aggregator::store::compact::run(
        storage.clone(),
        Duration::from_secs(30),
    ));
    tokio::spawn(vantage_aggregator::detect::run(
        storage.clone(),
        Arc::new(vantage_aggregator::detect::categories(
            args.lists.as_deref(),
        )),
        detect,
        Duration::from_secs(args.detect_every.max(1)),
    ));
    let ingest = IngestConfig {
        require_enrolment: args.require_enrolment,
        max_body_bytes: args.max_body_mib.max(1) << 20,
        limits: Arc::new(KeyLimits::new(
            args.lines_per_key_hour,
            args.new_keys_per_hour,
        )),
        ..IngestConfig::default()
    };
    let request_timeout = Duration::from_secs(args.request_timeout_secs.max(4));
    let limits = ServerLimits {
        upload_budget: ByteBudget::new(args.upload_budget_mib.max(1) << 20),
        exports: Slots::new(args.max_exports),
        body_timeout: request_timeout * 3 / 4,
        request_timeout,
    };
    let connections = ConnLimits {
        max_connections: args.max_connections.max(1),
        max_per_source: args.max_connections_per_source.max(1),
        ..ConnLimits::default()
    };
    let key_path = args
        .key
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.key", args.db.display())));
    let (signer, _) = vantage_probe::envelope::Identity::load_or_create(&key_path)?;
    eprintln!(
        "vantage-aggregator: test lists are signed with key {}",
        signer.public_key()
    );
    let state = AppState::new(helper, TlsContext::new(roots)?, storage, ingest, geo)
        .with_limits(limits)
        .with_verification(verification)
        .with_db_path(args.db.clone())
        .with_test_lists(signer, args.lists.clone());
    let state = match args.throughput_listen {
        Some(addr) => {
            let server = ThroughputServer::bind(addr, &args.db).await?;
            let info = server.info()?;
            eprintln!(
                "vantage-aggregator: throughput server on {} (certificate sha256 {})",
                server.local_addr()?,
                info.cert_sha256
            );
            tokio::spawn(server.run());
            state.with_throughput(info)
        }
        None => state,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("vantage-aggregator listening on {scheme}://{local}");
    std::io::stdout().flush()?;
    serve_connections(listener, tls, router(state), connections, shutdown_signal()).await;
    eprintln!("vantage-aggregator: stopped");
    Ok(())
}

fn open_query(args: &QueryArgs) -> Result<(Sqlite, vantage_aggregator::store::Query)> {
    let params = SearchParams {
        cc: args.cc.clone(),
        asn: args.asn.clone(),
        test_name: args.test_name.clone(),
        domain: args.domain.clone(),
        input: args.input.clone(),
        blocking: args.blocking.clone(),
        confirmed: args.confirmed,
        since: args.since.clone(),
        until: args.until.clone(),
        cursor: None,
        limit: Some(args.limit),
    };
    let mut q = params.to_query().map_err(anyhow::Error::msg)?;
    q.limit = args.limit.max(1);
    if !args.db.exists() {
        bail!("no database at {}", args.db.display());
    }
    Ok((Sqlite::open(&args.db)?, q))
}

fn query(args: &QueryArgs) -> Result<ExitCode> {
    let (db, q) = open_query(args)?;
    let mut out = std::io::stdout().lock();
    for row in db.query(&q)? {
        writeln!(out, "{}", serde_json::to_string(&row)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn detect_config(path: Option<&PathBuf>) -> Result<vantage_aggregator::detect::DetectConfig> {
    match path {
        Some(p) => vantage_aggregator::detect::DetectConfig::read(p).map_err(anyhow::Error::msg),
        None => Ok(Default::default()),
    }
}

fn detect(args: &DetectArgs) -> Result<ExitCode> {
    let config = detect_config(args.detect_config.as_ref())?;
    let since = args
        .since
        .as_deref()
        .map(|t| {
            vantage_aggregator::store::model::parse_time(t)
                .with_context(|| format!("--since {t:?} is not YYYY-MM-DD[ HH:MM:SS]"))
        })
        .transpose()?;
    let categories = vantage_aggregator::detect::categories(args.lists.as_deref());
    let db = Sqlite::open(&args.db)?;
    let n = vantage_aggregator::detect::detect(
        &db,
        args.cc.as_deref(),
        vantage_aggregator::detect::Pass::Full(since),
        vantage_aggregator::store::now(),
        &categories,
        &config,
    )?;
    eprintln!("vantage-aggregator: {n} events in the window");
    Ok(ExitCode::SUCCESS)
}

fn timeline(args: &TimelineArgs) -> Result<ExitCode> {
    let params = vantage_aggregator::server::TimelineParams {
        cc: args.cc.clone(),
        asn: args.asn.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        kind: args.kind.clone(),
        format: None,
    };
    let q = params
        .to_query(vantage_aggregator::store::now())
        .map_err(anyhow::Error::msg)?;
    let db = Sqlite::open(&args.db)?;
    let events = db.timeline(&q)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        for e in &events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.csv {
        writeln!(out, "{}", vantage_aggregator::detect::CSV_HEADER)?;
        for e in &events {
            writeln!(out, "{}", vantage_aggregator::detect::csv_row(e))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<19}  {:<19}  {:<10}  {:<8}  {:<4}  {:<16}  {:>4}  {:>6}  {:>8}  what",
        "start (UTC)", "end", "kind", "scope", "cc", "network", "conf", "probes", "evidence"
    )?;
    for e in &events {
        let network = match (&e.entity.asn, e.entity.asns.is_empty()) {
            (Some(a), _) => a.clone(),
            (None, false) => e.entity.asns.join(","),
            (None, true) => "all".into(),
        };
        let what = match (&e.category, e.layer) {
            _ if e.kind == vantage_aggregator::detect::Kind::Throttling => format!(
                "{} throttled to about {} kbit/s",
                e.targets.join(" "),
                e.rate_kbps.map_or("?".into(), |r| format!("{r:.0}"))
            ),
            (Some(c), Some(l)) => format!("{c} on {} ({})", l.as_str(), e.targets.join(" ")),
            (None, Some(l)) => format!("{} on {}", e.targets.join(" "), l.as_str()),
            _ if e.suspected => "suspected: probes went silent together".into(),
            _ => "probes cut off; canaries failed".into(),
        };
        writeln!(
            out,
            "{:<19}  {:<19}  {:<10}  {:<8}  {:<4}  {:<16}  {:>3.0}%  {:>6}  {:>8}  {what}",
            e.start,
            e.end.as_deref().unwrap_or("ongoing"),
            e.kind.as_str(),
            serde_json::to_value(e.scope)?.as_str().unwrap_or(""),
            e.entity.cc,
            network,
            e.confidence * 100.0,
            e.probes,
            e.evidence.len(),
        )?;
    }
    if events.is_empty() {
        writeln!(out, "(no events in this period)")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn signals(args: &SignalsArgs) -> Result<ExitCode> {
    let params = vantage_aggregator::server::SignalParams {
        cc: Some(args.cc.clone()),
        asn: args.asn.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
    };
    let q = params
        .to_query(vantage_aggregator::store::now())
        .map_err(anyhow::Error::msg)?;
    let db = Sqlite::open(&args.db)?;
    let mut out = std::io::stdout().lock();
    let bins = vantage_aggregator::detect::signals::query(&db, &q, Default::default())?;
    if args.json {
        for bin in &bins {
            writeln!(out, "{}", serde_json::to_string(bin)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0));
    writeln!(
        out,
        "{:<19}  {:>6}  {:>6}  {:>10}  {:>6}  {:>12}  {:>5} {:>5} {:>5} {:>5}",
        "bin (UTC)",
        "probes",
        "online",
        "heartbeats",
        "canary",
        "measurements",
        "dns",
        "tcp",
        "tls",
        "http"
    )?;
    for b in &bins {
        let r = b.anomaly_ratio.as_ref();
        writeln!(
            out,
            "{:<19}  {:>6}  {:>6}  {:>10}  {:>6}  {:>12}  {:>5} {:>5} {:>5} {:>5}",
            b.start,
            b.probes,
            b.probes_online,
            b.heartbeats,
            pct(b.canary_success),
            b.measurements,
            pct(r.map(|r| r.dns)),
            pct(r.map(|r| r.tcp)),
            pct(r.map(|r| r.tls)),
            pct(r.map(|r| r.http)),
        )?;
    }
    if bins.is_empty() {
        writeln!(out, "(nothing heard from {} in this period)", q.cc)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn fingerprints(dir: Option<&PathBuf>) -> Result<Fingerprints> {
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

fn import_ooni(args: &ImportArgs) -> Result<ExitCode> {
    let db = Sqlite::open(&args.db)?;
    let fps = Fingerprints::builtin();
    let mut failed = false;
    for path in &args.files {
        let text = vantage_aggregator::maintain::read_text(path).map_err(anyhow::Error::msg)?;
        let report = vantage_aggregator::maintain::import_ooni(
            &db,
            &path.display().to_string(),
            &text,
            &fps,
        )?;
        for p in &report.problems {
            eprintln!("{p}");
        }
        failed |= !report.problems.is_empty();
        outln!(
            "{}: {} stored, {} already there, {} skipped",
            path.display(),
            report.stored,
            report.duplicate,
            report.problems.len()
        )?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn rescore(args: &RescoreArgs) -> Result<ExitCode> {
    let db = Sqlite::open(&args.db)?;
    let n = vantage_aggregator::maintain::rescore(&db, &fingerprints(args.fingerprints.as_ref())?)?;
    outln!(
        "rescored {n} measurements with {}",
        vantage_probe::verdict::rules::VANTAGE.version
    )?;
    Ok(ExitCode::SUCCESS)
}

fn export(args: &ExportArgs) -> Result<ExitCode> {
    let (db, q) = open_query(&args.filters)?;
    let format = Format::parse(&args.format).context("--format is jsonl or csv")?;
    let mut out = std::io::stdout().lock();
    vantage_aggregator::export::export(&db, &q, format, &mut out)?;
    Ok(ExitCode::SUCCESS)
}

fn compact(args: &DbArgs) -> Result<ExitCode> {
    let db = Sqlite::open(&args.db)?;
    let n = vantage_aggregator::store::compact::compact_all(&db, Duration::ZERO)?;
    outln!("compacted {n} measurements")?;
    Ok(ExitCode::SUCCESS)
}

fn keys(args: &KeysArgs) -> Result<ExitCode> {
    let path = args.db.as_ref().context("--db FILE is required")?;
    let db = Sqlite::open(path)?;
    let valid = |key: &str| -> Result<()> {
        if vantage_probe::envelope::parse_public_key(key).is_none() {
            bail!("{key:?} is not a base64 Ed25519 public key");
        }
        Ok(())
    };
    match &args.command {
        KeysCommand::List => {
            for (key, state) in db.keys()? {
                outln!("{key} {state}")?;
            }
        }
        KeysCommand::Allow { key } => {
            valid(key)?;
            db.set_key(key, KeyState::Trusted)?;
            outln!("allowed {key}")?;
        }
        KeysCommand::Revoke { key } => {
            valid(key)?;
            db.set_key(key, KeyState::Revoked)?;
            outln!("revoked {key}: its later submissions will be refused")?;
        }
        KeysCommand::Token { count } => {
            for _ in 0..*count {
                outln!("{}", vantage_aggregator::enrol::new_token(&db)?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// Whether `e` is a write to a reader that went away (EPIPE): the reader has all it wanted,
/// so the command ends quietly with success, as `cat` does when its reader closes.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vantage_probe::init_logging("warn");
    let result = match cli.command {
        Command::Score(args) => score(&args),
        Command::Query(args) => query(&args),
        Command::Signals(args) => signals(&args),
        Command::Timeline(args) => timeline(&args),
        Command::Detect(args) => detect(&args),
        Command::Keys(args) => keys(&args),
        Command::ImportOoni(args) => import_ooni(&args),
        Command::Rescore(args) => rescore(&args),
        Command::Export(args) => export(&args),
        Command::Compact(args) => compact(&args),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(serve(args)))
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
