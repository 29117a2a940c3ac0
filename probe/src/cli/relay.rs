//! `vantage relay`: serve the upload API to the probes of this network and forward what they
//! send to the aggregator by this machine's way out (`vantage_probe::relay`, docs/carry.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use vantage_probe::engine::EngineConfig;
use vantage_probe::envelope::Identity;
use vantage_probe::relay::{MAX_CONNECTIONS, RelayConfig, serve};
use vantage_probe::route::MAX_ROUTES;
use vantage_probe::upload::{Relayer, Route, UploadConfig};

use super::{DataArgs, STORE_FILE, tls_context};

/// `vantage relay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// The address to serve on, e.g. 0.0.0.0:8787; the other probes list
    /// `http://THIS-HOST:8787/` as an upload route.
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,
    /// Where to forward: the aggregator's URL, or `"URL via IP:PORT"` through a SOCKS5 proxy
    /// such as Tor. Repeat for more routes, tried in order.
    #[arg(long = "aggregator", value_name = "URL[ via IP:PORT]", required = true)]
    aggregators: Vec<String>,
    /// Extra trusted CA certificates (PEM) for the aggregator.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Envelopes held for forwarding at most (1 to 100000000); beyond it uploads are answered
    /// 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    max_queue: u64,
    /// Connections served at once (1 to 4096); more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections: usize,
    /// The largest upload body read, in KiB (1 to 65536); a gzip body may inflate to as much
    /// and no more. Larger is answered 413.
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    max_body_kib: usize,
    /// Lines read from one upload at most (1 to 100000); the rest are answered `incomplete`,
    /// and the probe sends them again.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    max_lines: usize,
    /// Seconds a client has to send a request's head (1 to 600).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    header_seconds: u64,
    /// Seconds a client has to send a request's body (1 to 3600); a slower one is answered 408.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    body_seconds: u64,
    /// How often to try forwarding when nothing new arrives, in seconds (1 to 86400).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    forward_seconds: u64,
    #[command(flatten)]
    data: DataArgs,
}

/// A numeric option's allowed values and why they stop there: zero would refuse every upload
/// or spin, and past the top a typo would hold the machine's memory, descriptors or clients.
struct Bound {
    flag: &'static str,
    max: u64,
    unit: &'static str,
}

/// The bounds, checked before the data directory, the key or a socket is touched.
const BOUNDS: &[Bound] = &[
    Bound {
        flag: "--max-queue",
        max: 100_000_000,
        unit: "envelopes",
    },
    Bound {
        flag: "--max-connections",
        max: MAX_CONNECTIONS as u64,
        unit: "connections",
    },
    // A body is held whole (and a gzip one inflated) in memory.
    Bound {
        flag: "--max-body-kib",
        max: 65_536,
        unit: "KiB",
    },
    Bound {
        flag: "--max-lines",
        max: 100_000,
        unit: "lines",
    },
    Bound {
        flag: "--header-seconds",
        max: 600,
        unit: "seconds",
    },
    Bound {
        flag: "--body-seconds",
        max: 3_600,
        unit: "seconds",
    },
    Bound {
        flag: "--forward-seconds",
        max: 86_400,
        unit: "seconds",
    },
];

/// Refuses a value of `flag` outside 1..=its bound, with the unit and the range.
fn check(flag: &str, value: u64) -> Result<()> {
    let Some(b) = BOUNDS.iter().find(|b| b.flag == flag) else {
        bail!("{flag}: no bound is known for this option");
    };
    if !(1..=b.max).contains(&value) {
        bail!("{flag} {value}: must be 1 to {} ({})", b.max, b.unit);
    }
    Ok(())
}

/// What the relay will do, every option checked: nothing is opened before this succeeds.
struct Plan {
    routes: Vec<Route>,
    every: Duration,
    max_queue: u64,
    max_connections: usize,
    max_body_bytes: usize,
    max_lines: usize,
    header_timeout: Duration,
    body_timeout: Duration,
}

fn plan(args: &RelayArgs) -> Result<Plan> {
    if args.aggregators.len() > MAX_ROUTES {
        bail!(
            "{} --aggregator routes; at most {MAX_ROUTES} (each failing one costs a timeout)",
            args.aggregators.len()
        );
    }
    let usize_value = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    check("--max-queue", args.max_queue)?;
    check("--max-connections", usize_value(args.max_connections))?;
    check("--max-body-kib", usize_value(args.max_body_kib))?;
    check("--max-lines", usize_value(args.max_lines))?;
    check("--header-seconds", args.header_seconds)?;
    check("--body-seconds", args.body_seconds)?;
    check("--forward-seconds", args.forward_seconds)?;
    let routes = args
        .aggregators
        .iter()
        .map(|a| Route::parse_spec(a).with_context(|| format!("--aggregator {a:?}")))
        .collect::<Result<Vec<_>>>()?;
    if routes.is_empty() {
        bail!("--aggregator is required");
    }
    Ok(Plan {
        routes,
        every: Duration::from_secs(args.forward_seconds),
        max_queue: args.max_queue,
        max_connections: args.max_connections,
        max_body_bytes: args.max_body_kib * 1024,
        max_lines: args.max_lines,
        header_timeout: Duration::from_secs(args.header_seconds),
        body_timeout: Duration::from_secs(args.body_seconds),
    })
}

/// Runs the relay until SIGINT or SIGTERM.
pub async fn relay(args: RelayArgs) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    let plan = plan(&args)?;
    let routes = plan.routes;
    let Some(first) = routes.first() else {
        bail!("--aggregator is required");
    };
    let dir = args.data.dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (identity, _) = Identity::load_or_create(&dir.join("identity.key"))?;
    let key = identity.public_key();
    let mut upload = UploadConfig::new(first.url.clone());
    upload.routes = routes.clone();
    upload.relayer = Some(Relayer(Arc::new(identity)));
    // One try per round: the relay's own loop backs off between rounds, from the forwarding
    // interval (at most 5 s) up to ten of them (at most 10 min).
    let every = plan.every;
    upload.max_attempts = 1;
    upload.backoff = every.min(Duration::from_secs(5));
    upload.max_backoff = (every * 10).min(Duration::from_secs(600));
    let mut config = RelayConfig::new(dir.join(STORE_FILE), upload);
    config.max_queue = plan.max_queue;
    config.max_connections = plan.max_connections;
    config.max_body_bytes = plan.max_body_bytes;
    config.max_lines = plan.max_lines;
    config.header_timeout = plan.header_timeout;
    config.body_timeout = plan.body_timeout;
    config.forward_every = every;
    let tls = tls_context(args.ca_file.as_deref())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("listening address")?;
    let shown: Vec<String> = routes.iter().map(ToString::to_string).collect();
    outln!(
        "relaying on http://{local}/ to {}; relay key {key}; queue in {}",
        shown.join(", then "),
        dir.join(STORE_FILE).display()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("signals")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("signals")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    serve(listener, config, EngineConfig::default(), tls, stop_rx).await?;
    tracing::info!("relay stopped");
    Ok(ExitCode::SUCCESS)
}
