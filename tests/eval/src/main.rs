//! `vantage-eval`: simulates probe fleets through shutdowns and blocking drawn from a list of
//! outages with the statistics of IODA's investigated outages (`--outages`), feeds what they sign to the aggregator, and scores the timeline
//! against the truth (BENCHMARKS.md, "Timeline detection quality").

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use vantage_aggregator::detect::DetectConfig;
use vantage_eval::score::{Plan, Report, scenarios};
use vantage_eval::sim::{Noise, Templates, Truth, simulate};
use vantage_eval::truth::Outages;

/// Score Vantage's shutdown and blocking detection on simulated fleets.
#[derive(Debug, Parser)]
#[command(name = "vantage-eval", version, about, long_about)]
struct Args {
    /// Shutdown scenarios (three networks of 6 to 10 probes each).
    #[arg(long, default_value_t = 120)]
    shutdowns: usize,
    /// Blocking scenarios (a category blocked on one layer in one of two networks).
    #[arg(long, default_value_t = 40)]
    blocks: usize,
    /// Quiet weeks (four networks, noise only).
    #[arg(long, default_value_t = 8)]
    quiet_weeks: usize,
    /// Throttling scenarios (one host held to 100 to 400 kbit/s in one of two networks).
    #[arg(long, default_value_t = 40)]
    throttles: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run the detectors every this many simulated seconds (and every minute during the half
    /// hour after each shutdown begins).
    #[arg(long, default_value_t = 900)]
    tick_seconds: i64,
    /// Detection thresholds (TOML), as for `vantage-aggregator serve --detect-config`.
    #[arg(long, value_name = "FILE")]
    detect_config: Option<PathBuf>,
    /// Outages in the format of IODA's investigated outages (CSV): by default the list generated
    /// with IODA's statistics (tests/data/SOURCES.md); IODA's own file reads as well.
    #[arg(long, default_value = "tests/data/datasets/generated-outages.csv")]
    outages: PathBuf,
    /// OONI's web_connectivity measurements, used as templates.
    #[arg(long, default_value = "tests/data/ooni/webconnectivity")]
    ooni: PathBuf,
    /// Where the scenario databases go while they run.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// Home-link outages per probe per day (mean 5 minutes each).
    #[arg(long, default_value_t = 3.0)]
    flaps_per_day: f64,
    /// Reboots per probe per day.
    #[arg(long, default_value_t = 0.5)]
    reboots_per_day: f64,
    /// Share of probes that are laptops, switched off at night.
    #[arg(long, default_value_t = 0.2)]
    laptop_share: f64,
    /// Share of measurements with an anomaly that is not censorship.
    #[arg(long, default_value_t = 0.02)]
    stray_anomalies: f64,
    /// Run only the scenarios of one kind (shutdown, block or quiet), drawn as in the whole
    /// plan, to look into one kind's figures; print each false event.
    #[arg(long, value_parser = ["shutdown", "block", "quiet", "throttle"])]
    only: Option<String>,
    /// Leave out the active throttling test, to score the passive signal (web_connectivity
    /// pages' goodput) alone.
    #[arg(long)]
    passive_only: bool,
    /// Fake probes attacking each scenario: fresh keys elsewhere that keep dark networks
    /// "online" during real shutdowns, and fake a shutdown and a block in quiet networks. At
    /// most as many as the scenario's real probes (a larger number means that many).
    #[arg(long, default_value_t = 0, value_name = "K")]
    attackers: usize,
    /// Run as `serve` without a geolocation source: nobody's origin is known and every claim
    /// of a network counts. By default the aggregator checks them, as `serve --prefixes` does.
    #[arg(long)]
    no_verification: bool,
    /// Parallel scenarios.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    let mut config = match &args.detect_config {
        Some(p) => DetectConfig::read(p).map_err(anyhow::Error::msg)?,
        None => DetectConfig::default(),
    };
    config.require_verified_network = !args.no_verification;
    let list = Outages::read(&args.outages)?;
    let templates = Templates::read(&args.ooni)?;
    let plan = Plan {
        shutdowns: args.shutdowns,
        blocks: args.blocks,
        quiet_weeks: args.quiet_weeks,
        throttles: args.throttles,
        seed: args.seed,
        noise: Noise {
            flaps_per_day: args.flaps_per_day,
            reboots_per_day: args.reboots_per_day,
            laptop_share: args.laptop_share,
            stray_anomalies: args.stray_anomalies,
            active_throttling: !args.passive_only,
            ..Noise::default()
        },
        attackers: args.attackers,
    };
    let mut all = scenarios(&plan, &list);
    if let Some(kind) = &args.only {
        all.retain(|s| match s.truth.first() {
            Some(Truth::Shutdown { .. }) => kind == "shutdown",
            Some(Truth::Block { .. }) => kind == "block",
            Some(Truth::Throttle { .. }) => kind == "throttle",
            None => kind == "quiet",
        });
    }
    eprintln!(
        "vantage-eval: {} outages usable from {} ({} unparsed, {} ending before they begin); {} scenarios",
        list.rows.len(),
        args.outages.display(),
        list.unparsed,
        list.not_positive,
        all.len()
    );
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let report = Mutex::new(Report::default());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(s) = all.get(i) else { return };
                    let db = args
                        .work_dir
                        .join(format!("vantage-eval-{}-{i}.db", std::process::id()));
                    match simulate(s, &templates, &config, args.tick_seconds, &db, false)
                        .with_context(|| format!("scenario {} ({})", i, s.cc))
                    {
                        Ok(o) => {
                            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                            r.add(&o);
                            eprint!(
                                "\rvantage-eval: {}/{} scenarios, {:.0} s",
                                i + 1,
                                all.len(),
                                started.elapsed().as_secs_f64()
                            );
                        }
                        Err(e) => {
                            *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    eprintln!();
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let report = report.into_inner().unwrap_or_else(|e| e.into_inner());
    println!("{}", report.markdown());
    println!(
        "{} shutdown, {} blocking, {} quiet and {} throttling scenarios, seed {}, {} attackers a scenario at most, network claims {}, in {:.0} s",
        plan.shutdowns,
        plan.blocks,
        plan.quiet_weeks,
        plan.throttles,
        plan.seed,
        plan.attackers,
        if args.no_verification {
            "unchecked"
        } else {
            "verified"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(if report.passes() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
