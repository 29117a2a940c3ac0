//! `score`: verdicts of OONI web_connectivity measurements, one a line.

use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct ScoreArgs {
    /// Measurements to score; `-` reads standard input.
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
    let rules = RuleSet::by_name(&args.rules).context("unknown rule set")?;
    let fingerprints = fingerprints(args.fingerprints.as_ref())?;
    let mut raw = Vec::new();
    let source = if args.file == "-" {
        std::io::stdin()
            .read_to_end(&mut raw)
            .context("cannot read standard input")?;
        "<stdin>".to_string()
    } else {
        raw = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file))?;
        args.file.clone()
    };
    let text = String::from_utf8(raw).with_context(|| format!("{source} is not UTF-8 text"))?;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = stdout.lock();
    let summary = score_text(
        &text,
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
            summary.failed + summary.scored
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
