//! The `vantage` subcommands. Arguments are turned into a validated plan before any network I/O.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use url::Url;
use vantage_probe::canary;
use vantage_probe::engine::{EngineConfig, Resolver, TlsContext};
use vantage_probe::envelope::Identity;
use vantage_probe::ooni::{Asn, Blocking, CountryCode};
use vantage_probe::run::{Finished, Offline, RunPlan, layer, offline, reason};
use vantage_probe::store::{ENROLLED, Requeue, Store};
use vantage_probe::test_lists::{Entry, ListChoice, TestList};
use vantage_probe::upload::{
    KeyTrust, LogReport, Rejection, UploadConfig, check_log, classify, fork_message,
    upload as upload_outbox,
};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::rules::VANTAGE;
use vantage_probe::verdict::{Finding, Verdict, score};
use vantage_probe::web_connectivity::{WebConnectivityPlan, measure as measure_one};

/// `println!` for the commands' output: a reader that went away (`vantage results list | head`)
/// ends the command quietly instead of a panic, as a closed pipe ends `cat` (POSIX `write()`,
/// EPIPE). The Rust runtime ignores SIGPIPE, and this workspace forbids the `unsafe` that
/// restoring it would take, so the error is handled where it surfaces.
macro_rules! outln {
    () => {
        $crate::cli::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::cli::write_line(format_args!($($arg)*))
    };
}

mod apps;
mod carry;
mod dnscheck;
mod quic;
mod relay;
mod run;

use run::{
    Measuring, held_note, list_for, locate, log_note, start_measuring, upload_after_run,
    upload_summary,
};
pub use run::{TestKind, run};
mod throttling;

pub use carry::{ExportArgs, ImportArgs, export, import};
pub use relay::{RelayArgs, relay};

/// Writes one line to stdout (see [`outln!`]). A closed pipe exits with status 0: the reader
/// has all it wanted. Any other write error (a full disk under a redirect) exits with 2, as
/// every other error of `vantage` does.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(2);
    }
}

/// Where Vantage keeps its key, its results and imported lists.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Data directory (default: $VANTAGE_DATA_DIR, else $XDG_DATA_HOME/vantage, else
    /// ~/.local/share/vantage).
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

impl DataArgs {
    fn dir(&self) -> Result<PathBuf> {
        data_dir(self.data_dir.as_ref())
    }
}

/// How the engine measures, shared by `measure` and `run`.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// Ask this DNS resolver over UDP (IP:PORT) instead of the system resolver. Every reply is
    /// recorded, including late duplicates an injector may have sent.
    #[arg(long, value_name = "IP:PORT")]
    resolver: Option<String>,

    /// Also resolve over DNS-over-HTTPS with this URL, e.g. https://1.1.1.1/dns-query
    #[arg(long, value_name = "URL")]
    doh: Option<String>,

    /// Extra trusted CA certificates (PEM), in addition to Mozilla's roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,

    /// Deadline in seconds for each TCP connect, TLS handshake and HTTP exchange.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,

    /// Deadline in seconds for each DNS lookup.
    #[arg(long, value_name = "SECS", default_value_t = 4.0)]
    dns_timeout: f64,
}

#[derive(Debug, clap::Args)]
pub struct MeasureArgs {
    /// The URL to measure, e.g. https://example.org/
    url: String,

    #[command(flatten)]
    engine: EngineArgs,

    /// Ask this test helper (OONI's protocol, e.g. http://aggregator:8080/api/v1/th) to measure
    /// the same URL from an uncensored network, for comparison.
    #[arg(long, value_name = "URL")]
    th: Option<String>,

    /// Print the measurement on one line (JSONL) instead of indented.
    #[arg(long)]
    compact: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Which test to run: `web-connectivity` measures each URL of the list; `throttling`
    /// compares download speeds with a target's name and a control name against the
    /// aggregator's throughput server (see the "Throttling test" options).
    #[arg(long, value_enum, default_value_t = TestKind::WebConnectivity)]
    test: TestKind,

    #[command(flatten)]
    throttling: throttling::ThrottlingArgs,

    #[command(flatten)]
    apps: apps::AppsArgs,

    #[command(flatten)]
    dnscheck: dnscheck::DnscheckArgs,

    /// Measure the URLs of this list (Citizen Lab CSV format).
    #[arg(long, value_name = "FILE", conflicts_with = "cc")]
    list: Option<PathBuf>,

    /// Measure this country's list plus the global one (imported lists first, then built-in).
    /// It chooses the list only: results are tagged with the country the aggregator sees you
    /// in, or --probe-cc.
    #[arg(long, value_name = "CC")]
    cc: Option<String>,

    /// Only URLs of this category code (e.g. NEWS, HUMR); repeat for several.
    #[arg(long = "category", value_name = "CODE")]
    categories: Vec<String>,

    /// At most this many URLs.
    #[arg(long, value_name = "N")]
    max: Option<usize>,

    /// Measurements at once. The default suits a home connection.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,

    /// The aggregator (e.g. https://vantage.example.org/): its test helper provides the
    /// control, and results are uploaded there.
    #[arg(long, value_name = "URL", env = "VANTAGE_AGGREGATOR")]
    aggregator: Option<String>,

    /// Keep results on this machine only; upload later with `vantage upload`.
    #[arg(long)]
    no_upload: bool,

    /// Upload through this SOCKS5 proxy, e.g. Tor at 127.0.0.1:9050. Measurements never use it.
    #[arg(long, value_name = "IP:PORT", env = "VANTAGE_SOCKS5")]
    socks5: Option<SocketAddr>,

    /// Print one JSON result per line instead of the summary.
    #[arg(long)]
    json: bool,

    /// Accept the informed-consent text without being asked (for unattended use).
    #[arg(long)]
    yes: bool,

    /// Country code to write into measurements (where you are, not which list: that is --cc).
    /// Default: asked of the aggregator (whoami), else ZZ (unknown).
    #[arg(long, value_name = "CC", env = "VANTAGE_PROBE_CC")]
    probe_cc: Option<String>,

    /// Network to write into measurements, e.g. AS3269. Default: asked of the aggregator
    /// (whoami), else AS0 (unknown).
    #[arg(long, value_name = "ASN", env = "VANTAGE_PROBE_ASN")]
    probe_asn: Option<String>,

    #[command(flatten)]
    engine: EngineArgs,

    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// Deadline in seconds for each upload request.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,

    /// Failed attempts in a row before giving up until next time.
    #[arg(long, value_name = "N", default_value_t = 8)]
    max_attempts: u32,

    /// First retry delay in milliseconds; it doubles after each failure (with jitter).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    retry_base_ms: u64,

    /// Also send again the results the aggregator refused for a reason that can change (a key
    /// not enrolled yet, a rate limit, a clock ahead), which are held rather than resent each
    /// time. `vantage status` shows how many are held and why.
    #[arg(long)]
    retry_rejected: bool,

    /// Upload by these routes, tried in order (the first that answers carries each request),
    /// instead of --aggregator directly: `URL` (the aggregator, or a `vantage relay` on this
    /// network), or `"URL via IP:PORT"` through a SOCKS5 proxy such as Tor. The transparency
    /// log is still checked at --aggregator.
    #[arg(long = "route", value_name = "URL[ via IP:PORT]")]
    routes: Vec<String>,

    #[command(flatten)]
    to: ControlArgs,
}

/// The aggregator, and how to reach it.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    /// The aggregator.
    #[arg(long, value_name = "URL", env = "VANTAGE_AGGREGATOR")]
    aggregator: String,
    /// Extra trusted CA certificates (PEM) for the aggregator.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Send through this SOCKS5 proxy, e.g. Tor at 127.0.0.1:9050.
    #[arg(long, value_name = "IP:PORT", env = "VANTAGE_SOCKS5")]
    socks5: Option<SocketAddr>,
    #[command(flatten)]
    data: DataArgs,
}

impl ControlArgs {
    /// The upload settings, TLS roots and this probe's key.
    fn plan(&self) -> Result<(UploadConfig, TlsContext, std::sync::Arc<Identity>)> {
        let mut config = UploadConfig::new(aggregator_url(&self.aggregator)?);
        config.socks5 = self.socks5;
        config.timeout = Duration::from_secs(10);
        let tls = tls_context(self.ca_file.as_deref())?;
        let (identity, _) = Identity::load_or_create(&self.data.dir()?.join("identity.key"))?;
        let identity = std::sync::Arc::new(identity);
        // Relayed results go with a relay header signed by this probe's key.
        config.relayer = Some(vantage_probe::upload::Relayer(identity.clone()));
        Ok((config, tls, identity))
    }
}

/// The network a measurement says it was made from.
#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
    /// Country code to report (default ZZ).
    #[arg(long, value_name = "CC", env = "VANTAGE_PROBE_CC")]
    probe_cc: Option<String>,
    /// Network to report, e.g. AS3269 (default AS0).
    #[arg(long, value_name = "ASN", env = "VANTAGE_PROBE_ASN")]
    probe_asn: Option<String>,
}

impl NetworkArgs {
    fn parse(&self) -> Result<(CountryCode, Asn)> {
        let cc: CountryCode = self.probe_cc.as_deref().unwrap_or("ZZ").parse()?;
        let asn: Asn = self.probe_asn.as_deref().unwrap_or("AS0").parse()?;
        Ok((cc, asn))
    }
}

#[derive(Debug, clap::Args)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    to: ControlArgs,
}

#[derive(Debug, clap::Args)]
pub struct CanaryArgs {
    /// Targets (`address,port,protocol,description` lines, addresses only); default: the
    /// built-in list of anycast resolvers, root servers and anycast HTTPS addresses.
    #[arg(long, value_name = "FILE")]
    targets: Option<PathBuf>,
    /// Deadline in seconds for each DNS answer and TCP connect.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// Print the measurement (OONI format) instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// The configuration file (TOML). Every key is documented in the packaged example,
    /// deploy/vantage.toml; the file is re-read on SIGHUP (`systemctl reload vantage`).
    #[arg(long, value_name = "FILE", default_value = vantage_probe::daemon::config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Check the configuration, print the schedule it gives, and exit without measuring.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, clap::Args)]
pub struct EnrolArgs {
    /// The token the operator made with `vantage-aggregator keys token`.
    token: String,
    #[command(flatten)]
    to: ControlArgs,
}

#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    #[command(subcommand)]
    command: Option<ResultsCommand>,

    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ResultsCommand {
    /// The most recent results, newest first, one per line (the default): id, time measured
    /// (UTC), verdict, upload state, URL. Says on stderr when more are stored than shown.
    List {
        /// How many.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Every stored result (overrides --limit).
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One result's signed envelope (a unique id prefix is enough).
    Show {
        /// The id or a prefix of it.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct ListsArgs {
    #[command(subcommand)]
    command: ListsCommand,

    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ListsCommand {
    /// Check a downloaded Citizen Lab list and keep a copy; `<cc>.csv` then replaces the
    /// built-in list for that country.
    Import {
        /// The CSV file.
        path: PathBuf,
    },
    /// Download a country's list and the global one from the aggregator, check the aggregator's
    /// signature, and keep them (they then replace the built-in lists).
    Fetch {
        /// The aggregator.
        #[arg(long, value_name = "URL", env = "VANTAGE_AGGREGATOR")]
        aggregator: String,
        /// Country code.
        #[arg(long, value_name = "CC")]
        cc: String,
        /// The aggregator's public key (base64 Ed25519) as its operator publishes it; it is
        /// pinned for later fetches. Without it, the key pinned earlier is used; with neither,
        /// the key seen on the first fetch is trusted and pinned, over https:// only.
        #[arg(long, value_name = "BASE64")]
        aggregator_key: Option<String>,
        /// Extra trusted CA certificates (PEM) for the aggregator.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
    },
}

/// The data directory: the flag, `VANTAGE_DATA_DIR`, `XDG_DATA_HOME/vantage`, or
/// `~/.local/share/vantage` (XDG Base Directory defaults).
pub fn data_dir(flag: Option<&PathBuf>) -> Result<PathBuf> {
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

fn seconds(value: f64, flag: &str) -> Result<Duration> {
    if !(value.is_finite() && value > 0.0 && value <= 3600.0) {
        bail!("{flag} must be a number of seconds between 0 and 3600, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

impl EngineArgs {
    fn plan(&self) -> Result<(EngineConfig, Vec<Resolver>, TlsContext)> {
        let mut config = EngineConfig::default();
        let timeout = seconds(self.timeout, "--timeout")?;
        config.timeouts.tcp_connect = timeout;
        config.timeouts.tls_handshake = timeout;
        config.timeouts.http = timeout;
        config.timeouts.dns = seconds(self.dns_timeout, "--dns-timeout")?;
        let mut resolvers = Vec::new();
        match &self.resolver {
            Some(r) => {
                let addr: SocketAddr = r
                    .parse()
                    .with_context(|| format!("--resolver {r:?} is not an IP:PORT address"))?;
                resolvers.push(Resolver::Udp(addr));
            }
            None => resolvers.push(Resolver::System),
        }
        if let Some(d) = &self.doh {
            let url = Url::parse(d).with_context(|| format!("--doh {d:?} is not a URL"))?;
            if url.scheme() != "https" {
                bail!("--doh {d:?} must be an https:// URL");
            }
            resolvers.push(Resolver::Doh(url));
        }
        let tls = tls_context(self.ca_file.as_deref())?;
        Ok((config, resolvers, tls))
    }
}

fn tls_context(ca_file: Option<&Path>) -> Result<TlsContext> {
    let extra_roots = match ca_file {
        Some(path) => TlsContext::load_pem(path)?,
        None => Vec::new(),
    };
    Ok(TlsContext::new(extra_roots)?)
}

fn http_url(value: &str, flag: &str) -> Result<Url> {
    let url = Url::parse(value).with_context(|| format!("{flag} {value:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{flag} {value:?} must be an http:// or https:// URL");
    }
    Ok(url)
}

/// The aggregator's base URL, with a trailing slash so paths join under it.
fn aggregator_url(value: &str) -> Result<Url> {
    let mut url = http_url(value, "--aggregator")?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

pub async fn measure(args: MeasureArgs) -> Result<ExitCode> {
    let (config, resolvers, tls) = args.engine.plan()?;
    let mut plan = WebConnectivityPlan::new(&args.url, resolvers, config)?;
    if let Some(th) = &args.th {
        plan = plan.with_test_helper(http_url(th, "--th")?);
    }
    let measurement = measure_one(&plan, &tls).await;
    let json = if args.compact {
        serde_json::to_string(&measurement)
    } else {
        serde_json::to_string_pretty(&measurement)
    }
    .context("cannot serialise the measurement")?;
    outln!("{json}");
    let verdict = score(&measurement, &VANTAGE, &Fingerprints::builtin());
    let mut why = reason(&measurement, &verdict);
    if args.th.is_none() && verdict.blocking.is_none() {
        why.push_str(" (--th URL asks one)");
    }
    eprintln!(
        "{}: {}: {why}",
        measurement.input.as_deref().unwrap_or(&args.url),
        verdict_word(&verdict)
    );
    Ok(ExitCode::SUCCESS)
}

/// The verdict in the words the summary uses.
fn verdict_word(verdict: &Verdict) -> &'static str {
    verdict.finding().word()
}

pub fn id(args: &DataArgs) -> Result<ExitCode> {
    let path = args.dir()?.join("identity.key");
    let (identity, created) = Identity::load_or_create(&path)?;
    if created {
        eprintln!("created a new signing key in {}", path.display());
    }
    outln!("{}", identity.public_key());
    Ok(ExitCode::SUCCESS)
}

/// The local store's file in the data directory.
const STORE_FILE: &str = "vantage.db";

fn open_store(dir: &Path) -> Result<Store> {
    Ok(Store::open(&dir.join(STORE_FILE))?)
}

pub async fn upload(args: UploadArgs) -> Result<ExitCode> {
    let most = vantage_probe::route::MAX_ROUTES;
    if args.routes.len() > most {
        bail!(
            "{} --route options; at most {most} (each failing one costs a timeout)",
            args.routes.len()
        );
    }
    let (mut config, tls, _) = args.to.plan()?;
    for spec in &args.routes {
        config.routes.push(
            vantage_probe::upload::Route::parse_spec(spec)
                .with_context(|| format!("--route {spec:?}"))?,
        );
    }
    config.timeout = Duration::from_secs(args.timeout.max(1));
    config.max_attempts = args.max_attempts.max(1);
    config.backoff = Duration::from_millis(args.retry_base_ms.max(1));
    let mut store = open_store(&args.to.data.dir()?)?;
    if args.retry_rejected {
        let again = store.requeue_held(Requeue::All)?;
        if again > 0 {
            eprintln!("sending again {again} results the aggregator held back");
        }
    }
    let engine = EngineConfig::default();
    let report = upload_outbox(&mut store, &config, &engine, &tls).await?;
    outln!("{}", upload_summary(&report));
    if let (false, Some(route)) = (args.routes.is_empty(), &report.route) {
        outln!("Sent by {route}.");
    }
    held_note(&report);
    if let Some(e) = report.error {
        eprintln!("error: upload stopped: {e}");
        return Ok(ExitCode::from(1));
    }
    // Then the transparency log: the checkpoint, its consistency with the last one kept, and
    // the proofs of what was uploaded. A fork fails the command; nothing is deleted for it.
    let dir = store.dir();
    let log = check_log(&mut store, &config, None, &dir, &engine, &tls).await?;
    if log_note(&log, false) {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn heartbeat(args: HeartbeatArgs) -> Result<ExitCode> {
    let (cc, asn) = args.network.parse()?;
    let (config, tls, identity) = args.to.plan()?;
    vantage_probe::upload::heartbeat(&identity, &config, cc, asn, &EngineConfig::default(), &tls)
        .await
        .map_err(|e| anyhow::anyhow!("heartbeat not delivered: {e}"))?;
    outln!("heartbeat delivered");
    Ok(ExitCode::SUCCESS)
}

pub async fn enrol(args: EnrolArgs) -> Result<ExitCode> {
    let token = args.token.trim();
    if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{:?} does not look like an enrolment token", args.token);
    }
    let (config, tls, identity) = args.to.plan()?;
    let engine = EngineConfig::default();
    vantage_probe::upload::enrol(&identity, &config, token, &engine, &tls)
        .await
        .map_err(|e| anyhow::anyhow!("not enrolled: {e}"))?;
    outln!("enrolled {}", identity.public_key());
    // What the aggregator held back before the enrolment goes now. The store is opened only
    // if there is one: enrolling measures nothing. A daemon sharing the data directory sees
    // the mark and does the same if it is running.
    let dir = args.to.data.dir()?;
    if !dir.join(STORE_FILE).exists() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = open_store(&dir)?;
    store.set_meta(ENROLLED, &unix_now().to_string())?;
    let again = store.requeue_held(Requeue::All)?;
    if again == 0 && store.status()?.pending == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    let report = upload_outbox(&mut store, &config, &engine, &tls).await?;
    outln!("{}", upload_summary(&report));
    held_note(&report);
    if let Some(e) = report.error {
        eprintln!("warning: upload stopped: {e}; `vantage upload` will retry");
    }
    Ok(ExitCode::SUCCESS)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn canary(args: CanaryArgs) -> Result<ExitCode> {
    let targets = match &args.targets {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            canary::parse_targets(&text, &path.display().to_string())?
        }
        None => canary::parse_targets(canary::BUILTIN_TARGETS, "built-in canaries")?,
    };
    let timeout = seconds(args.timeout, "--timeout")?;
    let (cc, asn) = args.network.parse()?;
    let mut engine = EngineConfig::default();
    engine.timeouts.dns = timeout;
    engine.timeouts.tcp_connect = timeout;
    let dir = args.data.dir()?;
    let (identity, _) = Identity::load_or_create(&dir.join("identity.key"))?;
    let mut store = open_store(&dir)?;
    let tls = tls_context(None)?;

    let mut m = canary::measure(&targets, &engine, &tls).await;
    m.probe_cc = cc;
    m.probe_asn = asn;
    let id = canary::keep(&m, &identity, &mut store)?;
    if args.json {
        outln!("{}", serde_json::to_string(&m)?);
        return Ok(ExitCode::SUCCESS);
    }
    let k = &m.test_keys;
    outln!(
        "canary {}: {} of {} targets answered",
        id.as_str(),
        k.ok,
        k.total
    );
    for c in k.checks.iter().filter(|c| !c.ok) {
        outln!(
            "  {} {}: {}",
            c.target,
            c.protocol.as_str(),
            c.failure.as_deref().unwrap_or("failed")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status for a configuration the daemon cannot run with: `EX_CONFIG` from BSD
/// `sysexits.h`. The systemd unit names it in `RestartPreventExitStatus=`, because restarting
/// cannot fix a file only the host can edit; every other failure is retried.
const EX_CONFIG: u8 = 78;

pub async fn daemon(args: DaemonArgs) -> Result<ExitCode> {
    let plan = match vantage_probe::daemon::load(&args.config) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EX_CONFIG));
        }
    };
    if args.check {
        let s = &plan.schedule;
        outln!("configuration {} is valid", args.config.display());
        outln!("data directory: {}", plan.data_dir.display());
        match &plan.aggregator {
            Some(a) => outln!(
                "aggregator: {}{}",
                a.url,
                a.upload
                    .socks5
                    .map_or(String::new(), |p| format!(" (uploads through SOCKS5 {p})"))
            ),
            None => outln!("aggregator: none (results stay on this machine)"),
        }
        outln!(
            "network: {} {}",
            plan.cc
                .as_ref()
                .map_or("located by the aggregator", |c| c.as_str()),
            plan.asn.map_or(String::new(), |a| a.to_string())
        );
        outln!(
            "canary: {} targets every {} s; heartbeat every {} s",
            plan.canary_targets.len(),
            s.canary.as_secs(),
            s.heartbeat.as_secs()
        );
        match s.run {
            Some(r) => outln!(
                "list runs: {:?} every {} s (jitter {} s, first after {} s), {} at once, {} MB a day",
                plan.lists.names,
                r.as_secs(),
                s.run_jitter.as_secs(),
                s.first_run.as_secs(),
                plan.concurrency,
                plan.daily_bytes / 1_000_000
            ),
            None => outln!("list runs: off"),
        }
        match &plan.throttling {
            Some(t) => outln!(
                "throttling tests: {:?} every {} s, at most {} bytes each",
                t.targets,
                t.every.as_secs(),
                t.targets.len() as u64
                    * u64::from(t.settings.repetitions)
                    * 2
                    * t.settings.payload_bytes
            ),
            None => outln!("throttling tests: off"),
        }
        outln!(
            "uploads: every {} s, backing off up to {} s",
            s.upload.as_secs(),
            s.upload_max_backoff.as_secs()
        );
        if let Some(a) = plan
            .aggregator
            .as_ref()
            .filter(|a| !a.upload.routes.is_empty())
        {
            let routes: Vec<String> = a.upload.routes.iter().map(ToString::to_string).collect();
            outln!("upload routes, in order: {}", routes.join(", then "));
        }
        match &plan.carry {
            Some(c) => outln!(
                "carry: an export to a drive mounted at {}, looked at every {} s",
                c.path.display(),
                c.every.as_secs()
            ),
            None => outln!("carry: off"),
        }
        if let Some(a) = plan.aggregator.as_ref().filter(|_| plan.fetch_lists) {
            outln!("test lists: {}", list_signer(a, &plan.data_dir));
        }
        return Ok(ExitCode::SUCCESS);
    }
    vantage_probe::daemon::run(args.config, plan).await?;
    Ok(ExitCode::SUCCESS)
}

/// Which key fetched test lists must be signed by, as `daemon --check` says it.
fn list_signer(a: &vantage_probe::daemon::config::AggregatorPlan, data_dir: &Path) -> String {
    let pinned = data_dir.join(vantage_probe::upload::PIN_FILE);
    match &a.key {
        Some(key) => format!("fetched daily, signed by the configured key {key}"),
        None if pinned.exists() => format!(
            "fetched daily, signed by the key pinned in {}",
            pinned.display()
        ),
        None if a.url.scheme() == "https" => {
            "fetched daily, signed by the key seen on the first fetch (trusted on first use over \
             HTTPS; set aggregator.key to the key its operator publishes)"
                .into()
        }
        None => "NOT fetched: the aggregator is plain HTTP and no key is pinned; set key = \
                 \"...\" under [aggregator] to the key its operator publishes"
            .into(),
    }
}

pub fn results(args: ResultsArgs) -> Result<ExitCode> {
    let store = open_store(&args.data.dir()?)?;
    match args.command.unwrap_or(ResultsCommand::List {
        limit: 50,
        all: false,
        json: false,
    }) {
        ResultsCommand::List { limit, all, json } => {
            let limit = if all { usize::MAX } else { limit };
            let rows = store.list(limit)?;
            for r in &rows {
                if json {
                    let line = serde_json::json!({
                        "id": r.id, "input": r.input, "measured_at": r.measured_at,
                        "blocking": r.blocking.as_deref().and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok()),
                        "accessible": r.accessible, "confirmed": r.confirmed, "upload": r.upload_state,
                        "upload_reason": r.upload_reason, "relayed": r.relayed,
                    });
                    outln!("{line}");
                } else {
                    outln!(
                        "{}  {} UTC  {:<18} {:<9} {}",
                        &r.id[..r.id.len().min(12)],
                        r.measured_at,
                        stored_verdict(r),
                        r.upload_state,
                        r.input.as_deref().unwrap_or("")
                    );
                }
            }
            let total = store.status()?.results;
            if (rows.len() as u64) < total {
                eprintln!(
                    "{} of {total} shown, newest first; --all for every one, --limit N for more",
                    rows.len()
                );
            } else if total == 0 {
                eprintln!("no results stored yet: `vantage run` measures and stores them");
            }
            Ok(ExitCode::SUCCESS)
        }
        ResultsCommand::Show { id } => {
            let found = store.find(&id)?;
            match found.as_slice() {
                [one] => {
                    outln!("{}", one.envelope);
                    Ok(ExitCode::SUCCESS)
                }
                [] => bail!("no result with id {id:?}"),
                _ => bail!("id {id:?} matches several results: give more of it"),
            }
        }
    }
}

/// A stored result's verdict in the words the run's summary uses: the blocking type, or
/// `accessible`, `down`, `undetermined` (OONI's `blocking: null`); a canary says whether most
/// of its targets answered (its `accessible`), other tests without a blocking value their name.
fn stored_verdict(r: &vantage_probe::store::StoredResult) -> String {
    if r.relayed {
        return format!("relayed {}", r.test_name);
    }
    let blocking = r
        .blocking
        .as_deref()
        .and_then(|b| serde_json::from_str::<Blocking>(b).ok());
    match (blocking, r.accessible) {
        (Some(Blocking::Kind(kind)), _) if r.confirmed => format!("{kind} (confirmed)"),
        (Some(Blocking::Kind(kind)), _) => kind,
        (Some(Blocking::Flag(false)), Some(true)) => "accessible".to_string(),
        (Some(Blocking::Flag(_)), _) => "down".to_string(),
        (None, Some(true)) if r.test_name == canary::CANARY => "canary: online".to_string(),
        (None, _) if r.test_name == canary::CANARY => "canary: cut off".to_string(),
        (None, _) if r.test_name != vantage_probe::ooni::WEB_CONNECTIVITY => r.test_name.clone(),
        (None, _) => "undetermined".to_string(),
    }
}

/// A Unix time as everything else prints times: OONI's UTC format (df-000), marked `UTC`.
fn utc(unix: &str) -> String {
    match unix.trim().parse::<u64>() {
        Ok(secs) => format!(
            "{} UTC",
            vantage_probe::ooni::ooni_timestamp(std::time::UNIX_EPOCH + Duration::from_secs(secs))
        ),
        Err(_) => unix.to_string(),
    }
}

/// The transparency log's lines of `vantage status` (`docs/transparency.md`, "The probe"): how
/// many uploaded results are proven included, against which checkpoint, and every fork or
/// rewrite seen, which stays shown: it is evidence, kept in the store.
fn transparency_status(store: &Store) -> Result<()> {
    let log = store.log_status()?;
    if !log.forks.is_empty() {
        outln!(
            "TRANSPARENCY LOG FORK: the aggregator's log was seen not to be append-only {} \
             time(s); the checkpoints are kept in the local store as evidence:",
            log.forks.len()
        );
        for fork in &log.forks {
            outln!(
                "  {}: {}",
                utc(&fork.seen_at.to_string()),
                fork_message(fork).replace("\n  ", "\n    ")
            );
        }
        outln!(
            "  (a proof kept from before a fork shows the result in the log as the earlier \
             checkpoint signed it)"
        );
    }
    if log.uploaded == 0 && log.checkpoint.is_none() {
        return Ok(());
    }
    let mut line = format!(
        "transparency log: {} of {} uploaded results proven included",
        log.proven, log.uploaded
    );
    if let Some((c, seen)) = &log.checkpoint {
        line.push_str(&format!(
            " (checkpoint {} of {}, {})",
            c.size,
            c.origin,
            utc(&seen.to_string())
        ));
    }
    let awaiting = log.logged.saturating_sub(log.proven);
    if awaiting > 0 {
        line.push_str(&format!("; {awaiting} awaiting proof"));
    }
    let not_logged = log.uploaded.saturating_sub(log.logged);
    if not_logged > 0 {
        line.push_str(&format!(
            "; {not_logged} not logged (the aggregator gave them no leaf: it keeps no log, or \
             is older than the log)"
        ));
    }
    outln!("{line}");
    Ok(())
}

pub fn status(args: &DataArgs) -> Result<ExitCode> {
    let dir = args.dir()?;
    let key = dir.join("identity.key");
    if key.exists() {
        let (identity, _) = Identity::load_or_create(&key)?;
        outln!("key: {}", identity.public_key());
    } else {
        outln!("key: none yet (created by the first `vantage run` or `vantage id`)");
    }
    let store = open_store(&dir)?;
    let status = store.status()?;
    outln!("results: {}", status.results);
    outln!("waiting for upload: {}", status.pending);
    if status.held > 0 {
        outln!(
            "held back by the aggregator, kept to send again: {}",
            status.held
        );
        for (reason, n) in &status.held_reasons {
            outln!("  {n}  {reason}");
        }
        let key = status
            .held_reasons
            .iter()
            .any(|(r, _)| classify(r) == Rejection::Key);
        if key {
            outln!(
                "  (sent again after `vantage enrol TOKEN`; or now with `vantage upload --retry-rejected`)"
            );
        } else {
            outln!(
                "  (sent again later by themselves; or now with `vantage upload --retry-rejected`)"
            );
        }
    }
    if status.rejected > 0 {
        outln!(
            "refused for good by the aggregator (kept here): {}",
            status.rejected
        );
        for (reason, n) in &status.rejected_reasons {
            outln!("  {n}  {reason}");
        }
    }
    outln!(
        "last upload: {}",
        status.last_upload.map_or("never".to_string(), |t| utc(&t))
    );
    if let Some(e) = status.last_error {
        outln!("last upload error: {e}");
    }
    transparency_status(&store)?;
    for (key, label) in [
        ("daemon", "daemon"),
        ("location", "network"),
        ("last_canary", "last canary"),
        ("last_run", "last list run"),
    ] {
        if let Some(value) = store.meta(key)? {
            outln!("{label}: {value}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn lists(args: ListsArgs) -> Result<ExitCode> {
    let data = args.data.dir()?;
    let dir = data.join("lists");
    match args.command {
        ListsCommand::Fetch {
            aggregator,
            cc,
            aggregator_key,
            ca_file,
        } => {
            let cc: CountryCode = cc.parse()?;
            let url = aggregator_url(&aggregator)?;
            if let Some(key) = &aggregator_key
                && vantage_probe::envelope::parse_public_key(key.trim()).is_none()
            {
                bail!("--aggregator-key {key:?} is not a base64 Ed25519 public key");
            }
            let tls = tls_context(ca_file.as_deref())?;
            let fetched = vantage_probe::upload::fetch_lists(
                &url,
                cc,
                aggregator_key.as_deref(),
                &data,
                &EngineConfig::default(),
                &tls,
            )
            .await?;
            match fetched.trust {
                KeyTrust::FirstUse => eprintln!(
                    "note: trusting the aggregator's key {} on first use (over HTTPS) and pinning it; compare it with the key its operator publishes",
                    fetched.key
                ),
                KeyTrust::Given { newly_pinned: true } => eprintln!(
                    "note: pinned the aggregator's key {} for later fetches",
                    fetched.key
                ),
                KeyTrust::Given { .. } | KeyTrust::Pinned => {}
            }
            for (name, rows, file) in &fetched.files {
                outln!("fetched {name} ({rows} lines) into {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        ListsCommand::Import { path } => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let (list, problems) = TestList::parse(&path.display().to_string(), &bytes)?;
            for p in &problems {
                eprintln!("warning: {p} (skipped)");
            }
            if list.entries.is_empty() {
                bail!("{}: no usable URL in the list", path.display());
            }
            let name = path
                .file_name()
                .context("the list path has no file name")?
                .to_string_lossy()
                .to_ascii_lowercase();
            // The bytes checked are the bytes kept, put in place whole or not at all.
            let target = vantage_probe::test_lists::replace_files(&dir, &[(name, &bytes)])?
                .into_iter()
                .next()
                .context("nothing written")?;
            outln!(
                "imported {} URLs from {} as {}",
                list.entries.len(),
                path.display(),
                target.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_print_as_utc_and_anything_else_as_it_is() {
        assert_eq!(utc("1796028092"), "2026-11-30 08:41:32 UTC");
        assert_eq!(utc("0"), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc("yesterday"), "yesterday");
        assert_eq!(utc("-5"), "-5");
    }
}
