//! `detect`: one detection pass now.

use super::compact::DbArgs;
use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct DetectArgs {
    #[command(flatten)]
    store: DbArgs,
    /// One country; default: every country with signals in the window.
    #[arg(long)]
    cc: Option<String>,
    /// Recompute from `YYYY-MM-DD[ HH:MM:SS]` (UTC); default: the configured lookback (8 days).
    #[arg(long)]
    since: Option<String>,
    /// Detection thresholds (TOML), as for `serve --detect-config`.
    #[arg(long, value_name = "FILE")]
    detect_config: Option<PathBuf>,
    /// Operator test lists (categories of targets), as for `serve --lists`.
    #[arg(long, value_name = "DIR")]
    lists: Option<PathBuf>,
}

pub(super) fn detect(args: &DetectArgs) -> Result<ExitCode> {
    let config = detect_config(args.detect_config.as_ref())?;
    let since = args
        .since
        .as_deref()
        .map(|t| {
            vantage_aggregator::store::model::parse_time(t)
                .with_context(|| format!("--since {t:?} is not YYYY-MM-DD[ HH:MM:SS]"))
        })
        .transpose()?;
    let categories = vantage_aggregator::detect::categories(args.lists.as_deref());
    let db = args.store.open()?;
    let n = vantage_aggregator::detect::detect(
        db.as_ref(),
        args.cc.as_deref(),
        vantage_aggregator::detect::Pass::Full(since),
        vantage_aggregator::store::now(),
        &categories,
        &config,
    )?;
    eprintln!("vantage-aggregator: {n} events in the window");
    Ok(ExitCode::SUCCESS)
}
