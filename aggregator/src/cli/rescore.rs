//! `rescore`: every stored verdict again with the current rules.

use super::compact::DbArgs;
use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct RescoreArgs {
    #[command(flatten)]
    store: DbArgs,
    /// A directory of fingerprint CSV files to use besides Vantage's own.
    #[arg(long, value_name = "DIR")]
    fingerprints: Option<PathBuf>,
}

pub(super) fn rescore(args: &RescoreArgs) -> Result<ExitCode> {
    let db = args.store.open()?;
    let n = vantage_aggregator::ingest::maintain::rescore(
        db.as_ref(),
        &fingerprints(args.fingerprints.as_ref())?,
    )?;
    outln!(
        "rescored {n} measurements with {}",
        vantage_probe::verdict::rules::VANTAGE.version
    )?;
    Ok(ExitCode::SUCCESS)
}
