//! `vantage-aggregator`: collects signed measurements from probes and builds the timeline.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use vantage_aggregator::score::{score_text, write_summary};
use vantage_aggregator::server::{AppState, router};
use vantage_probe::engine::{Resolver, TlsContext};
use vantage_probe::th::HelperConfig;
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::RuleSet;

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
    /// Run the server: for now the test helper (POST /api/v1/th) and GET /api/v1/health.
    Serve(ServeArgs),
    /// Score OONI web_connectivity measurements (JSONL or one JSON document) and print one
    /// verdict per line: blocking, accessible, dns_consistency, confirmed, fingerprints, the
    /// rule set version, and OONI's own verdict from the input for comparison.
    Score(ScoreArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

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

    /// Extra CA certificates (PEM) the test helper trusts.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,

    /// The test helper's deadline in seconds for each connect, handshake and HTTP exchange.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    th_timeout: u64,
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
    let mut fingerprints = Fingerprints::builtin();
    if let Some(dir) = &args.fingerprints {
        let (more, problems) = Fingerprints::load_dir(dir)?;
        for p in &problems {
            eprintln!("warning: {p} (row skipped)");
        }
        if more.is_empty() {
            bail!("no fingerprints in {}", dir.display());
        }
        fingerprints.extend(more);
    }
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
    let state = AppState::new(helper, TlsContext::new(roots)?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    println!("vantage-aggregator listening on http://{local}");
    std::io::stdout().flush()?;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    eprintln!("vantage-aggregator: stopped");
    Ok(())
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    vantage_probe::init_logging();
    let result = match cli.command {
        Command::Score(args) => score(&args),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(serve(args)))
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
