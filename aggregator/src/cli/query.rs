//! `query`: a search of stored measurements, as `GET /api/v1/measurements`.

use super::compact::DbArgs;
use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct QueryArgs {
    #[command(flatten)]
    store: DbArgs,
    /// Country code.
    #[arg(long)]
    cc: Option<String>,
    /// Network, e.g. AS3269.
    #[arg(long)]
    asn: Option<String>,
    /// Test name, e.g. web_connectivity.
    #[arg(long)]
    test_name: Option<String>,
    /// Host name of the measured URL.
    #[arg(long)]
    domain: Option<String>,
    /// Exact URL.
    #[arg(long)]
    input: Option<String>,
    /// Blocking: false, dns, tcp_ip, tls, http-failure, http-diff.
    #[arg(long)]
    blocking: Option<String>,
    /// Only confirmed (true) or unconfirmed (false) verdicts.
    #[arg(long)]
    confirmed: Option<bool>,
    /// Measured at or after, `YYYY-MM-DD[ HH:MM:SS]`.
    #[arg(long)]
    since: Option<String>,
    /// Measured before, `YYYY-MM-DD[ HH:MM:SS]`.
    #[arg(long)]
    until: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub(super) fn open_query(
    args: &QueryArgs,
) -> Result<(Arc<dyn Storage>, vantage_aggregator::store::Query)> {
    let params = SearchParams {
        cc: args.cc.clone(),
        asn: args.asn.clone(),
        test_name: args.test_name.clone(),
        domain: args.domain.clone(),
        input: args.input.clone(),
        blocking: args.blocking.clone(),
        confirmed: args.confirmed,
        since: args.since.clone(),
        until: args.until.clone(),
        cursor: None,
        limit: Some(args.limit),
    };
    let mut q = params.to_query().map_err(anyhow::Error::msg)?;
    q.limit = args.limit.max(1);
    Ok((args.store.open_existing()?, q))
}

pub(super) fn query(args: &QueryArgs) -> Result<ExitCode> {
    let (db, q) = open_query(args)?;
    let mut out = std::io::stdout().lock();
    for row in db.query(&q)? {
        writeln!(out, "{}", serde_json::to_string(&row)?)?;
    }
    Ok(ExitCode::SUCCESS)
}
