//! `compact`: every stored envelope compressed now.

use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct DbArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
}

pub(super) fn compact(args: &DbArgs) -> Result<ExitCode> {
    let db = Sqlite::open(&args.db)?;
    let n = vantage_aggregator::store::compact::compact_all(&db, Duration::ZERO)?;
    outln!("compacted {n} measurements")?;
    Ok(ExitCode::SUCCESS)
}
