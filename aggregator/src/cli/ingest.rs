//! `ingest FILE...`: export files a probe wrote (`vantage export`, `docs/carry.md`) that reached
//! the operator by any means, stored with the same checks as an upload (`ingest::Session`).

use vantage_aggregator::ingest::{Flow, Origin, Session, Status};
use vantage_aggregator::store::Route;
use vantage_probe::carry::read_export;
use vantage_probe::wire::LineOutcome;

use super::compact::DbArgs;
use super::*;

const HELP: &str = "\
Each FILE is what `vantage export` wrote: gzip JSONL, a manifest signed by the probe (its key,
the number of results, their time range, the SHA-256 of the lines) and then the probe's signed
envelopes as it stored them. The carrier is not trusted: every envelope is checked and stored
exactly as an upload is (signature, key standing, shape, times, verdict), and the manifest's
signature, count and hash are checked against the lines. A tampered line is refused with its
line number and reason while the others are stored; a file that ends early (a truncated gzip)
is reported and the lines before the break are stored. Storing a file again changes nothing
(its results are duplicates).

Output: per file, one line per refused line (FILE:LINE: reason) on standard error, then
FILE: N accepted, N duplicate, N refused on standard output.

Each stored measurement is recorded as having arrived by file (a measurement an upload already
brought keeps its route). It may run on the database of a running `serve`: each waits for the
other's transaction rather than failing, and both append to the same transparency log.

Exit status: 0 when every file checked whole; 1 when anything was refused, a manifest did not
match, or a file ended early; 2 when a store or a file could not be opened.";

#[derive(Debug, clap::Args)]
#[command(after_long_help = HELP)]
pub(super) struct IngestArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Enrolled keys only, as `serve --require-enrolment`.
    #[arg(long)]
    require_enrolment: bool,
    /// Files written by `vantage export`.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub(super) fn ingest(args: &IngestArgs) -> Result<ExitCode> {
    let db = args.db.open()?;
    let fingerprints = fingerprints(None)?;
    let config = IngestConfig {
        require_enrolment: args.require_enrolment,
        ..IngestConfig::default()
    };
    // A file carries no connecting address: nothing vouches for the network a measurement
    // claims (`Origin`), exactly as for an upload from an address no geolocation source knows.
    let origin = Origin::UNKNOWN;
    let mut clean = true;
    for file in &args.files {
        let name = file.display();
        let mut outcomes: Vec<LineOutcome> = Vec::new();
        // Recorded as having come by file (docs/carry.md): a measurement an upload already
        // brought keeps its route.
        let mut session =
            Session::new(db.as_ref(), &config, &fingerprints, &origin).with_route(Route::File);
        let mut failed = None;
        // Each line is stored as it is read: a file of any size takes the memory of one
        // upload (`IngestConfig::working_set_bytes`).
        let carried = read_export(file, &mut |n, line| {
            let full = match session.line(n, line) {
                Ok(flow) => flow == Flow::Full,
                Err(e) => {
                    failed = Some(e);
                    return false;
                }
            };
            if full {
                let next = Session::new(db.as_ref(), &config, &fingerprints, &origin)
                    .with_route(Route::File);
                match std::mem::replace(&mut session, next).finish() {
                    Ok(done) => outcomes.extend(done),
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        outcomes.extend(session.finish()?);
        let mut refused: Vec<(u64, String)> = carried
            .refused
            .iter()
            .map(|(n, r)| (*n as u64, r.clone()))
            .collect();
        let (mut accepted, mut duplicate) = (0u64, 0u64);
        for o in &outcomes {
            match o.status {
                Status::Accepted => accepted += 1,
                Status::Duplicate => duplicate += 1,
                _ => refused.push((o.line, o.reason.clone().unwrap_or_default())),
            }
        }
        refused.sort();
        match &carried.manifest {
            Some(m) => outln!(
                "{name}: manifest of probe {}: {} result(s), {} to {}",
                m.probe_key,
                m.count,
                m.first.as_deref().unwrap_or("-"),
                m.last.as_deref().unwrap_or("-")
            )?,
            None => clean = false,
        }
        for p in &carried.manifest_problems {
            eprintln!("{name}: manifest: {p}");
        }
        for (n, reason) in &refused {
            eprintln!("{name}:{n}: refused: {reason}");
        }
        if let Some(t) = &carried.truncated {
            eprintln!("{name}: read to its end: no ({t}); the lines before were taken");
        }
        outln!(
            "{name}: {accepted} accepted, {duplicate} duplicate, {} refused",
            refused.len()
        )?;
        clean &= carried.manifest_problems.is_empty()
            && refused.is_empty()
            && carried.truncated.is_none();
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
