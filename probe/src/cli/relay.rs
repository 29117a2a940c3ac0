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
    /// Envelopes held for forwarding at most; beyond it uploads are answered 503 with
    /// Retry-After.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    max_queue: u64,
    /// Connections served at once; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections: usize,
    /// The largest upload body read, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 4096)]
    max_body_kib: usize,
    /// How often to try forwarding when nothing new arrives, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    forward_seconds: u64,
    #[command(flatten)]
    data: DataArgs,
}

/// Runs the relay until SIGINT or SIGTERM.
pub async fn relay(args: RelayArgs) -> Result<ExitCode> {
    use tokio::signal::unix::{SignalKind, signal};
    if args.aggregators.len() > MAX_ROUTES {
        bail!(
            "{} --aggregator routes; at most {MAX_ROUTES} (each failing one costs a timeout)",
            args.aggregators.len()
        );
    }
    if !(1..=MAX_CONNECTIONS).contains(&args.max_connections) {
        bail!(
            "--max-connections {} is outside 1..={MAX_CONNECTIONS}",
            args.max_connections
        );
    }
    let routes = args
        .aggregators
        .iter()
        .map(|a| Route::parse_spec(a).with_context(|| format!("--aggregator {a:?}")))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = routes.first() else {
        bail!("--aggregator is required");
    };
    if !(1..=65_536).contains(&args.max_body_kib) {
        bail!("--max-body-kib {} is outside 1..=65536", args.max_body_kib);
    }
    let dir = args.data.dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (identity, _) = Identity::load_or_create(&dir.join("identity.key"))?;
    let key = identity.public_key();
    let mut upload = UploadConfig::new(first.url.clone());
    upload.routes = routes.clone();
    upload.relayer = Some(Relayer(Arc::new(identity)));
    // One try per round: the relay's own loop backs off between rounds, from the forwarding
    // interval (at most 5 s) up to ten of them (at most 10 min).
    let every = Duration::from_secs(args.forward_seconds.clamp(1, 86_400));
    upload.max_attempts = 1;
    upload.backoff = every.min(Duration::from_secs(5));
    upload.max_backoff = (every * 10).min(Duration::from_secs(600));
    let mut config = RelayConfig::new(dir.join(STORE_FILE), upload);
    config.max_queue = args.max_queue;
    config.max_connections = args.max_connections;
    config.max_body_bytes = args.max_body_kib * 1024;
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
