//! `vantage`: the volunteer's probe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use url::Url;
use vantage_probe::engine::{EngineConfig, Resolver, TlsContext};
use vantage_probe::web_connectivity::{WebConnectivityPlan, measure};

/// Vantage measures Internet censorship and shutdowns from where you are.
#[derive(Debug, Parser)]
#[command(name = "vantage", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure one URL in detail and print the measurement as OONI-format JSON.
    ///
    /// Every step is recorded separately: DNS answers (with late, possibly injected, replies),
    /// TCP connects to each address, TLS handshakes with the peer certificates, and the HTTP
    /// response (status, headers, title, body hash), following redirects one by one.
    Measure(MeasureArgs),
    /// Show this probe's public key, creating its signing key on first use.
    ///
    /// Every result is signed with this key so that nobody can forge or alter it on the way.
    /// The key is pseudonymous: it is not linked to you unless you share it.
    Id(IdArgs),
}

#[derive(Debug, clap::Args)]
struct IdArgs {
    /// Where Vantage keeps its key and results (default: $VANTAGE_DATA_DIR, else
    /// $XDG_DATA_HOME/vantage, else ~/.local/share/vantage).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// The data directory: the flag, `VANTAGE_DATA_DIR`, `XDG_DATA_HOME/vantage`, or
/// `~/.local/share/vantage` (XDG Base Directory defaults).
fn data_dir(flag: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.clone());
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("VANTAGE_DATA_DIR") {
        return Ok(dir);
    }
    if let Some(dir) = env("XDG_DATA_HOME") {
        return Ok(dir.join("vantage"));
    }
    match env("HOME") {
        Some(home) => Ok(home.join(".local/share/vantage")),
        None => bail!("cannot find a data directory: set --data-dir or VANTAGE_DATA_DIR"),
    }
}

#[derive(Debug, clap::Args)]
struct MeasureArgs {
    /// The URL to measure, e.g. https://example.org/
    url: String,

    /// Ask this DNS resolver over UDP (IP:PORT) instead of the system resolver. Every reply is
    /// recorded, including late duplicates an injector may have sent.
    #[arg(long, value_name = "IP:PORT")]
    resolver: Option<String>,

    /// Also resolve over DNS-over-HTTPS with this URL, e.g. https://1.1.1.1/dns-query
    #[arg(long, value_name = "URL")]
    doh: Option<String>,

    /// Ask this test helper (OONI's protocol, e.g. http://aggregator:8080/api/v1/th) to measure
    /// the same URL from an uncensored network, for comparison.
    #[arg(long, value_name = "URL")]
    th: Option<String>,

    /// Extra trusted CA certificates (PEM), in addition to Mozilla's roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,

    /// Deadline in seconds for each TCP connect, TLS handshake and HTTP exchange.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,

    /// Deadline in seconds for each DNS lookup.
    #[arg(long, value_name = "SECS", default_value_t = 4.0)]
    dns_timeout: f64,

    /// Print the measurement on one line (JSONL) instead of indented.
    #[arg(long)]
    compact: bool,
}

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 3600.0) {
        bail!("{flag} must be a number of seconds between 0 and 3600, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Turns arguments into a validated plan, before any network I/O.
fn plan(args: &MeasureArgs) -> Result<(WebConnectivityPlan, TlsContext)> {
    let mut config = EngineConfig::default();
    let timeout = seconds(args.timeout, "--timeout")?;
    config.timeouts.tcp_connect = timeout;
    config.timeouts.tls_handshake = timeout;
    config.timeouts.http = timeout;
    config.timeouts.dns = seconds(args.dns_timeout, "--dns-timeout")?;

    let mut resolvers = Vec::new();
    match &args.resolver {
        Some(r) => {
            let addr: SocketAddr = r
                .parse()
                .with_context(|| format!("--resolver {r:?} is not an IP:PORT address"))?;
            resolvers.push(Resolver::Udp(addr));
        }
        None => resolvers.push(Resolver::System),
    }
    if let Some(d) = &args.doh {
        let url = Url::parse(d).with_context(|| format!("--doh {d:?} is not a URL"))?;
        if url.scheme() != "https" {
            bail!("--doh {d:?} must be an https:// URL");
        }
        resolvers.push(Resolver::Doh(url));
    }
    let extra_roots = match &args.ca_file {
        Some(path) => TlsContext::load_pem(path)?,
        None => Vec::new(),
    };
    let tls = TlsContext::new(extra_roots)?;
    let mut plan = WebConnectivityPlan::new(&args.url, resolvers, config)?;
    if let Some(th) = &args.th {
        let url = Url::parse(th).with_context(|| format!("--th {th:?} is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("--th {th:?} must be an http:// or https:// URL");
        }
        plan = plan.with_test_helper(url);
    }
    Ok((plan, tls))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Id(args) => {
            let path = data_dir(args.data_dir.as_ref())?.join("identity.key");
            let (identity, created) = vantage_probe::envelope::Identity::load_or_create(&path)?;
            if created {
                eprintln!("created a new signing key in {}", path.display());
            }
            println!("{}", identity.public_key());
            Ok(())
        }
        Command::Measure(args) => {
            let (plan, tls) = plan(&args)?;
            let measurement = measure(&plan, &tls).await;
            let json = if args.compact {
                serde_json::to_string(&measurement)
            } else {
                serde_json::to_string_pretty(&measurement)
            }
            .context("cannot serialise the measurement")?;
            println!("{json}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vantage_probe::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
