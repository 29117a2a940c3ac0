//! `vantage run --test throttling`: the throttling test from the command line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use vantage_probe::engine::tls::CertPin;
use vantage_probe::throttling::{self, Endpoint, Plan, Settings, Verdict};

use super::{RunArgs, aggregator_url, list_for, locate, start_measuring, upload_after_run};

/// Citizen Lab's category code for social networking, where the sites censors throttle (Twitter
/// in Russia, 2021) are listed.
const SOCIAL_CATEGORY: &str = "GRP";
/// Targets taken from the list when none is named: two fit the default budget.
const DEFAULT_TARGETS: usize = 2;

/// Options of `--test throttling`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Throttling test (--test throttling)")]
pub struct ThrottlingArgs {
    /// A target name, sent as the SNI; repeat for several. Default: the first two hosts of the
    /// list's social networking category (GRP).
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,

    /// The control name: one no censor has reason to slow down.
    #[arg(long, value_name = "NAME", default_value = "example.org")]
    control_sni: String,

    /// Bytes per download.
    #[arg(long, value_name = "BYTES", default_value_t = 160_000)]
    payload_bytes: u64,

    /// Target and control downloads per target.
    #[arg(long, value_name = "N", default_value_t = 3)]
    repetitions: u32,

    /// A download stops after this many seconds, complete or not.
    #[arg(long, value_name = "SECS", default_value_t = 8)]
    max_download_secs: u64,

    /// The most the test may download in all; a plan over it is refused before it starts.
    #[arg(long, value_name = "BYTES", default_value_t = 2_000_000)]
    traffic_budget: u64,

    /// A target slower than this fraction of the control counts as throttled (with a flat
    /// ceiling, in most repetitions).
    #[arg(long, value_name = "RATIO", default_value_t = 0.3)]
    ratio: f64,

    /// The throughput server's address. Default: the aggregator's host, at the port
    /// `GET /api/v1/throughput` gives.
    #[arg(long, value_name = "IP:PORT", requires = "throughput_pin")]
    throughput: Option<SocketAddr>,

    /// SHA-256 (hex) of the throughput server's certificate. Default: the one the aggregator
    /// publishes.
    #[arg(long, value_name = "HEX", requires = "throughput")]
    throughput_pin: Option<CertPin>,
}

impl ThrottlingArgs {
    fn settings(&self) -> Result<Settings> {
        if !(self.ratio > 0.0 && self.ratio < 1.0) {
            bail!("--ratio must be between 0 and 1, not {}", self.ratio);
        }
        if self.max_download_secs == 0 || self.max_download_secs > 60 {
            bail!("--max-download-secs must be 1 to 60");
        }
        let mut s = Settings {
            control_sni: self.control_sni.clone(),
            payload_bytes: self.payload_bytes,
            repetitions: self.repetitions,
            max_download: Duration::from_secs(self.max_download_secs),
            budget_bytes: self.traffic_budget,
            ..Settings::default()
        };
        s.rules.ratio = self.ratio;
        Ok(s)
    }
}

/// Hosts of the list's social networking entries, in list order, without repeats.
fn default_targets(args: &RunArgs, dir: &std::path::Path) -> Result<Vec<String>> {
    let mut hosts: Vec<String> = Vec::new();
    for e in list_for(args, dir)? {
        if e.category_code != SOCIAL_CATEGORY {
            continue;
        }
        let host = url::Url::parse(&e.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string));
        if let Some(h) = host
            && h.parse::<std::net::IpAddr>().is_err()
            && !hosts.contains(&h)
        {
            hosts.push(h);
        }
        if hosts.len() == DEFAULT_TARGETS {
            break;
        }
    }
    if hosts.is_empty() {
        bail!(
            "no targets: name them with --target NAME, or choose a list with social networking (GRP) entries"
        );
    }
    Ok(hosts)
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    // Plan everything before touching the network.
    let dir = args.data.dir()?;
    let t = &args.throttling;
    let settings = t.settings()?;
    let targets = if t.targets.is_empty() {
        default_targets(&args, &dir)?
    } else {
        t.targets.clone()
    };
    let (engine, _, tls) = args.engine.plan()?;
    let aggregator = args.aggregator.as_deref().map(aggregator_url).transpose()?;
    let pinned_cc = args.probe_cc.as_deref().map(str::parse).transpose()?;
    let pinned_asn = args.probe_asn.as_deref().map(str::parse).transpose()?;
    let given = t
        .throughput
        .zip(t.throughput_pin)
        .map(|(addr, pin)| Endpoint { addr, pin });
    if given.is_none() && aggregator.is_none() {
        bail!(
            "the throttling test needs the aggregator's throughput server: give --aggregator URL, or --throughput IP:PORT and --throughput-pin HEX"
        );
    }
    let placeholder = Endpoint {
        addr: ([0, 0, 0, 0], 0).into(),
        pin: CertPin([0; 32]),
    };
    let mut plan = Plan::new(given.unwrap_or(placeholder), targets, settings)?;
    let (identity, mut store) = start_measuring(&dir, args.yes)?;

    if given.is_none() {
        let url = aggregator.as_ref().context("aggregator")?;
        plan.endpoint = throttling::locate_server(url, &engine, &tls)
            .await
            .map_err(|e| anyhow::anyhow!("cannot find the throughput server: {e}"))?;
    }
    let located = locate(
        pinned_cc,
        pinned_asn,
        aggregator.as_ref(),
        args.socks5.is_some(),
        &engine,
        &tls,
    )
    .await;
    let (probe_cc, probe_asn) = (located.cc, located.asn);
    if !args.json {
        eprintln!("{}", located.describe(args.cc.as_deref()));
        eprintln!(
            "Throttling test against {}: {} target(s), {} repetitions, at most {} bytes.",
            plan.endpoint.addr,
            plan.targets.len(),
            plan.settings.repetitions,
            plan.max_traffic_bytes()
        );
    }
    for target in plan.targets.clone() {
        let mut m = throttling::measure(&plan, &target, &engine, &tls).await;
        m.probe_cc = probe_cc;
        m.probe_asn = probe_asn;
        let id = throttling::keep(&m, &identity, &mut store)?;
        let a = &m.test_keys.throttling;
        if args.json {
            let mut line = serde_json::to_value(a).unwrap_or_default();
            line["input"] = target.clone().into();
            line["id"] = id.as_str().into();
            outln!("{line}");
        } else {
            let head = match (a.verdict, a.ceiling_kbps) {
                (Verdict::Throttled, Some(kbps)) => format!("THROTTLED at about {kbps:.0} kbit/s"),
                (v, _) => v.as_str().replace('_', " "),
            };
            outln!("{target}: {head} ({})", a.reason);
        }
    }
    if let (Some(url), false) = (aggregator, args.no_upload) {
        upload_after_run(url, args.socks5, args.json, &mut store, &engine, &tls).await?;
    }
    Ok(ExitCode::SUCCESS)
}
