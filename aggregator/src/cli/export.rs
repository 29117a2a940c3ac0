//! `export`: matching measurements as JSONL (the verifiable envelopes) or CSV.

use super::query::{QueryArgs, open_query};
use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct ExportArgs {
    /// `jsonl` (stored envelopes) or `csv` (one row of columns per measurement).
    #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
    format: String,
    #[command(flatten)]
    filters: QueryArgs,
}

pub(super) fn export(args: &ExportArgs) -> Result<ExitCode> {
    let (db, q) = open_query(&args.filters)?;
    let format = Format::parse(&args.format).context("--format is jsonl or csv")?;
    let mut out = std::io::stdout().lock();
    vantage_aggregator::api::export::export(db.as_ref(), &q, format, &mut out)?;
    Ok(ExitCode::SUCCESS)
}
