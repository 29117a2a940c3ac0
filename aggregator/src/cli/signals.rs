//! `signals`: a network's signals in 5-minute bins, as `GET /api/v1/signals`.

use super::compact::DbArgs;
use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct SignalsArgs {
    #[command(flatten)]
    store: DbArgs,
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

pub(super) fn signals(args: &SignalsArgs) -> Result<ExitCode> {
    let params = vantage_aggregator::api::server::SignalParams {
        cc: Some(args.cc.clone()),
        asn: args.asn.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
    };
    let q = params
        .to_query(vantage_aggregator::store::now())
        .map_err(anyhow::Error::msg)?;
    let db = args.store.open()?;
    let mut out = std::io::stdout().lock();
    let bins = vantage_aggregator::detect::signals::query(db.as_ref(), &q, Default::default())?;
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
