//! `import-ooni`: OONI measurements stored beside Vantage's, from files or whole archive trees
//! (`ingest::maintain::import_tree`).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vantage_aggregator::ingest::archive::{MAX_MEASUREMENT_BYTES, Walk};
use vantage_aggregator::ingest::maintain::{TreeOptions, TreeReport, Watch, import_tree};
use vantage_aggregator::store::Location;

use super::*;

const HELP: &str = "\
PATHS are files or directory trees. A tree is walked in sorted order and its measurement files
are taken whatever its layout: OONI's archive (raw/YYYYMMDD/HH/CC/TESTNAME/*.jsonl.gz), its
older jsonl/TESTNAME/CC/YYYYMMDD/ copies, or any other. Files taken: *.jsonl (one measurement
per line), *.json (one document, an array of them, or JSONL), and *.yaml / *.yamloo, each
optionally gzipped (.gz). A file named on its own is read whatever its name.

Each measurement is stored as the bytes it has in its file (a JSONL line without its newline,
an element or document as written), unsigned and marked as OONI's, under the SHA-256 of those
bytes: the same measurement imported again is stored once. web_connectivity and OONI's
service tests (whatsapp, telegram, signal, facebook_messenger, tor, dnscheck, ...) are scored
with the current rules; other tests (ndt, dash, psiphon, ...) are stored with no verdict.

Streamed: a file is gunzipped and read a line at a time, a measurement longer than
--max-measurement-bytes is skipped without being held, and rows are stored in transactions of
a few thousand, so memory does not grow with the archive.

Resumable: a file read to its end is recorded in the store (its path relative to the tree
given, its size, and its measurements per test name) and skipped by the next import, unless
--again. A file that stopped early (a truncated gzip, corrupt data) is not recorded and is
read again by the next import; what it held before the break is stored, once.

Refused, one message per file: a .gz that is not gzip, a truncated gzip, content that is not
JSON, and the YAML reports of ooniprobe 1.x (2012 to 2016), which predate OONI's JSON format.
Skipped, as FILE:LINE: reason (FILE:[INDEX]: reason in an array): a line that is not JSON, not
a measurement (no test_name or measurement_start_time), or longer than the bound.

Output: a progress bar on standard error when it is a terminal (files done, measurements, and
measurements per second); each skipped measurement and refused file on standard error as it
is met; and a summary on standard output: files imported / skipped as already imported /
refused, measurements stored / already there / skipped, and the same per test name.

--dry-run reads, parses and scores everything and stores nothing (no --db needed): a check of
an archive before importing it, and the bound on the import's speed.

Exit status: 0 when every measurement was imported or was already there; 1 when anything was
skipped or refused; 2 when an error stopped the import (the store, the command line).";

#[derive(Debug, clap::Args)]
#[command(after_long_help = HELP)]
pub(super) struct ImportArgs {
    /// The database file (SQLite).
    #[arg(long, value_name = "FILE", conflicts_with = "store")]
    db: Option<PathBuf>,
    /// Where the data is stored instead of --db: sqlite:FILE or clickhouse://HOST:PORT/DB.
    #[arg(long, value_name = "URL")]
    store: Option<Location>,
    /// Read, parse and score every measurement, but store nothing (no --db or --store needed).
    #[arg(long)]
    dry_run: bool,
    /// Read files again even when the store records them as imported (after an upgrade that
    /// reads what an older version skipped).
    #[arg(long)]
    again: bool,
    /// The longest measurement read, in bytes; a longer line is skipped unread.
    #[arg(long, value_name = "BYTES", default_value_t = MAX_MEASUREMENT_BYTES)]
    max_measurement_bytes: usize,
    /// Files and directory trees to import.
    #[arg(required = true, value_name = "PATHS")]
    paths: Vec<PathBuf>,
}

/// The progress bar (drawn only on a terminal) and the problems, printed as they come.
struct Progress {
    bar: Option<ProgressBar>,
    measurements: u64,
    started: Instant,
}

impl Progress {
    fn new(paths: &[PathBuf]) -> Progress {
        let started = Instant::now();
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                measurements: 0,
                started,
            };
        }
        // Counting the files first (names only) gives the bar its length.
        let total: u64 = paths
            .iter()
            .map(|p| {
                if p.is_dir() {
                    Walk::new(p).filter(Result::is_ok).count() as u64
                } else {
                    1
                }
            })
            .sum();
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} files, {wide_msg}",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress {
            bar: Some(bar),
            measurements: 0,
            started,
        }
    }

    fn show(&self) {
        if let Some(bar) = &self.bar {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} measurements, {:.0}/s",
                self.measurements,
                self.measurements as f64 / secs
            ));
        }
    }
}

impl Watch for Progress {
    fn file(&mut self, path: &Path) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} measurements: {}",
                self.measurements,
                path.display()
            ));
        }
    }

    fn measurements(&mut self, n: u64) {
        self.measurements += n;
        if self.measurements.is_multiple_of(500) {
            self.show();
        }
    }

    fn file_done(&mut self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
        self.show();
    }

    fn problem(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

pub(super) fn import_ooni(args: &ImportArgs) -> Result<ExitCode> {
    let db: Option<Arc<dyn Storage>> = match (&args.db, &args.store, args.dry_run) {
        (_, _, true) => None,
        (Some(path), None, false) => Some(Arc::new(Sqlite::open(path)?)),
        (None, Some(location), false) => Some(
            location
                .open()
                .with_context(|| format!("cannot open the store {location}"))?,
        ),
        _ => bail!("give --db FILE or --store URL (or --dry-run to store nothing)"),
    };
    let options = TreeOptions {
        dry_run: args.dry_run,
        again: args.again,
        max_measurement_bytes: args.max_measurement_bytes,
        ..TreeOptions::default()
    };
    let mut progress = Progress::new(&args.paths);
    let report = import_tree(
        db.as_deref(),
        &args.paths,
        &options,
        &Fingerprints::builtin(),
        &mut progress,
    )?;
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let secs = progress.started.elapsed().as_secs_f64();
    write_report(&report, args.dry_run, secs, &mut std::io::stdout().lock())?;
    Ok(if report.complete() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The summary on standard output.
fn write_report(
    r: &TreeReport,
    dry_run: bool,
    secs: f64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "files: {} imported, {} skipped as already imported, {} refused",
        r.files_imported, r.files_done_before, r.files_refused
    )?;
    let unscored = if r.unscored > 0 {
        format!(
            " ({} web_connectivity without a verdict: its test keys could not be read)",
            r.unscored
        )
    } else {
        String::new()
    };
    if dry_run {
        writeln!(
            out,
            "measurements: {} read and scored, {} skipped{unscored} (dry run: nothing stored)",
            r.read, r.skipped
        )?;
    } else {
        writeln!(
            out,
            "measurements: {} stored, {} already there, {} skipped{unscored}",
            r.stored, r.duplicate, r.skipped
        )?;
    }
    for (name, c) in &r.by_test.0 {
        if dry_run {
            writeln!(out, "  {name}: {} read", c.read)?;
        } else {
            writeln!(
                out,
                "  {name}: {} stored, {} already there",
                c.stored, c.duplicate
            )?;
        }
    }
    let secs = secs.max(1e-3);
    writeln!(
        out,
        "read {:.1} MB of files in {secs:.1} s: {:.0} measurements/s, {:.2} MB/s",
        r.file_bytes as f64 / 1e6,
        r.read as f64 / secs,
        r.file_bytes as f64 / 1e6 / secs
    )?;
    if !r.complete() {
        writeln!(
            out,
            "not complete: the skipped measurements and refused files are listed on standard error"
        )?;
    }
    Ok(())
}
