//! `timeline`: the stored events, as `GET /api/v1/timeline`.

use super::compact::DbArgs;
use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct TimelineArgs {
    #[command(flatten)]
    store: DbArgs,
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

pub(super) fn timeline(args: &TimelineArgs) -> Result<ExitCode> {
    let params = vantage_aggregator::api::server::TimelineParams {
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
    let db = args.store.open()?;
    let mut out = std::io::stdout().lock();
    // Each event with how its evidence arrived: one grouped query per event.
    let events = vantage_aggregator::store::timeline_with_arrivals(db.as_ref(), &q)?;
    if args.csv {
        writeln!(out, "{}", vantage_aggregator::api::csv_line::CSV_HEADER)?;
        for e in &events {
            writeln!(out, "{}", vantage_aggregator::api::csv_line::csv_row(e))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        for e in &events {
            writeln!(out, "{}", serde_json::to_string(e)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<19}  {:<19}  {:<10}  {:<8}  {:<4}  {:<16}  {:>4}  {:>6}  {:>8}  what",
        "start (UTC)", "end", "kind", "scope", "cc", "network", "conf", "probes", "evidence"
    )?;
    for timed in &events {
        let e = &timed.event;
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
        writeln!(out, "{:<21}{}", "", timed.arrival_words())?;
    }
    if events.is_empty() {
        writeln!(out, "(no events in this period)")?;
    }
    Ok(ExitCode::SUCCESS)
}
