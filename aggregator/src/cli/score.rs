//! `score`: verdicts of OONI's measurements (web_connectivity and the service tests), one a
//! line; errors name the line of JSONL (`FILE:LINE:`) or the element of an array (`FILE:[7]:`).

use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct ScoreArgs {
    /// Measurements to score (JSONL, a JSON document or an array of them; `.gz` is gunzipped);
    /// `-` reads standard input.
    file: String,

    /// Rule set: `vantage` (OONI's rules with Vantage's fixes) or `ooni` (OONI's classic rules).
    #[arg(long, default_value = "vantage", value_parser = ["vantage", "ooni"])]
    rules: String,

    /// A directory of fingerprint CSV files (OONI's format) to use besides Vantage's own.
    #[arg(long, value_name = "DIR")]
    fingerprints: Option<PathBuf>,

    /// Print counts instead of one line per measurement.
    #[arg(long)]
    summary: bool,
}

pub(super) fn score(args: &ScoreArgs) -> Result<ExitCode> {
    use vantage_aggregator::ingest::archive::{Layout, kind_of, open};
    let rules = RuleSet::by_name(&args.rules).context("unknown rule set")?;
    let fingerprints = fingerprints(args.fingerprints.as_ref())?;
    // Read as a stream: a file of any size is scored in the memory of its largest measurement.
    let (reader, layout, source): (Box<dyn std::io::BufRead>, Layout, String) = if args.file == "-"
    {
        (
            Box::new(std::io::BufReader::new(std::io::stdin())),
            Layout::Any,
            "<stdin>".to_string(),
        )
    } else {
        let path = std::path::Path::new(&args.file);
        let gz = path
            .extension()
            .is_some_and(|x| x.eq_ignore_ascii_case("gz"));
        let (layout, _) = kind_of(path).unwrap_or((Layout::Any, gz));
        let layout = if layout == Layout::Yaml {
            Layout::Any
        } else {
            layout
        };
        let reader = open(path, gz).with_context(|| format!("cannot read {}", args.file))?;
        (reader, layout, args.file.clone())
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let summary = score_reader(
        reader,
        layout,
        &source,
        &rules,
        &fingerprints,
        args.summary,
        &mut out,
        &mut stderr.lock(),
    )?;
    if args.summary {
        write_summary(&summary, &rules, &mut out)?;
    }
    out.flush()?;
    if summary.failed > 0 {
        eprintln!(
            "error: {} of {} measurements could not be scored",
            summary.failed,
            summary.failed + summary.scored + summary.no_verdict
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
