//! `vantage-aggregator`: collects signed measurements from probes and builds the timeline.

use clap::Parser;

/// Vantage aggregator: verifies and stores signed measurements from probes, scores them against
/// a control vantage point, and serves the shutdown and blocking timeline to researchers.
///
/// Ingest, the test helper, the timeline and the researcher API arrive in later releases.
#[derive(Debug, Parser)]
#[command(name = "vantage-aggregator", version, about, long_about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "vantage-aggregator {} (OONI data format {}): no subcommands yet; see --help",
        env!("CARGO_PKG_VERSION"),
        vantage_aggregator::engine_version()
    );
}
