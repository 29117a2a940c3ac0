//! `rescore`: every stored verdict again with the current rules.

use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct RescoreArgs {
    /// The database file.
    #[arg(long, value_name = "FILE")]
    db: PathBuf,
    /// A directory of fingerprint CSV files to use besides Vantage's own.
    #[arg(long, value_name = "DIR")]
    fingerprints: Option<PathBuf>,
}

pub(super) fn rescore(args: &RescoreArgs) -> Result<ExitCode> {
    let db = Sqlite::open(&args.db)?;
    let n = vantage_aggregator::ingest::maintain::rescore(
        &db,
        &fingerprints(args.fingerprints.as_ref())?,
    )?;
    outln!(
        "rescored {n} measurements with {}",
        vantage_probe::verdict::rules::VANTAGE.version
    )?;
    Ok(ExitCode::SUCCESS)
}
