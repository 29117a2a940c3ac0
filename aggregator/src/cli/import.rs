//! `import-ooni`: OONI measurements stored beside Vantage's.

use super::compact::DbArgs;
use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct ImportArgs {
    #[command(flatten)]
    store: DbArgs,
    /// Files to import.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub(super) fn import_ooni(args: &ImportArgs) -> Result<ExitCode> {
    let db = args.store.open()?;
    let fps = Fingerprints::builtin();
    let mut failed = false;
    for path in &args.files {
        let text =
            vantage_aggregator::ingest::maintain::read_text(path).map_err(anyhow::Error::msg)?;
        let report = vantage_aggregator::ingest::maintain::import_ooni(
            db.as_ref(),
            &path.display().to_string(),
            &text,
            &fps,
        )?;
        for p in &report.problems {
            eprintln!("{p}");
        }
        failed |= !report.problems.is_empty();
        outln!(
            "{}: {} stored, {} already there, {} skipped",
            path.display(),
            report.stored,
            report.duplicate,
            report.problems.len()
        )?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
