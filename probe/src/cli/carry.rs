//! `vantage export` and `vantage import`: signed results carried out by hand, on a stick or
//! through a neighbour (`vantage_probe::carry`, `docs/carry.md`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use vantage_probe::carry::{self, Selection, check_relayed, read_export};
use vantage_probe::envelope::{Identity, Verifier};
use vantage_probe::store::Relayed;

use super::{DataArgs, open_store};

/// `vantage export`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// The file to write (gzip JSONL); written as FILE.partial and renamed when complete.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Only results measured at or after this time (UTC): YYYY-MM-DD, "YYYY-MM-DD HH:MM:SS"
    /// or YYYY-MM-DDTHH:MM:SSZ.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Every stored result, sent or not and exported before or not.
    #[arg(long)]
    all: bool,
}

/// `vantage import`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    data: DataArgs,
    /// A file written by `vantage export` on another probe.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// `TIME` as OONI writes `measurement_start_time` (`YYYY-MM-DD HH:MM:SS`), which the store
/// compares as text.
fn ooni_time(text: &str) -> Result<String> {
    let t = text.trim().trim_end_matches('Z').replacen('T', " ", 1);
    let t = if t.len() == 10 {
        format!("{t} 00:00:00")
    } else {
        t
    };
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(&t, format)
        .with_context(|| format!("--since {text:?}: not YYYY-MM-DD[ HH:MM:SS]"))?;
    Ok(t)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Writes the export, then marks its results exported; a failed write marks nothing.
pub fn export(args: &ExportArgs) -> Result<ExitCode> {
    let since = args.since.as_deref().map(ooni_time).transpose()?;
    let dir = args.data.dir()?;
    let (identity, _) = Identity::load_or_create(&dir.join("identity.key"))?;
    let mut store = open_store(&dir)?;
    let selection = Selection {
        all: args.all,
        since,
        skip_empty: false,
    };
    let Some(manifest) = carry::export(&mut store, &identity, &args.out, &selection, unix_now())?
    else {
        bail!("nothing was written");
    };
    outln!(
        "exported {} result(s) to {} ({} to {}); they stay queued for upload",
        manifest.count,
        args.out.display(),
        manifest.first.as_deref().unwrap_or("-"),
        manifest.last.as_deref().unwrap_or("-"),
    );
    outln!("sha256 of the envelopes: {}", manifest.sha256);
    Ok(ExitCode::SUCCESS)
}

/// Envelopes queued per transaction: a few MB of envelopes, one sync of the store.
const BATCH: usize = 500;

/// Stores `batch` and empties it: (new, already stored).
fn flush(
    store: &mut vantage_probe::store::Store,
    batch: &mut Vec<Relayed>,
) -> Result<(u64, u64), vantage_probe::store::StoreError> {
    let added = store.insert_relayed(batch)?;
    let known = batch.len() as u64 - added;
    batch.clear();
    Ok((added, known))
}

/// Queues every envelope of the file whose signature verifies, as relayed; reports the rest.
pub fn import(args: &ImportArgs) -> Result<ExitCode> {
    let dir = args.data.dir()?;
    let mut store = open_store(&dir)?;
    let mut refused = Vec::new();
    let (mut added, mut known) = (0u64, 0u64);
    let mut failed = None;
    let mut batch = Vec::new();
    let mut verifier = Verifier::default();
    let carried = read_export(&args.file, &mut |n, line| {
        match check_relayed(line, &mut verifier) {
            Ok(r) => batch.push(r),
            Err(reason) => {
                refused.push((n, reason));
                return true;
            }
        }
        if batch.len() >= BATCH {
            match flush(&mut store, &mut batch) {
                Ok((a, k)) => (added, known) = (added + a, known + k),
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
    let (a, k) = flush(&mut store, &mut batch)?;
    (added, known) = (added + a, known + k);
    if let Some(m) = &carried.manifest {
        outln!(
            "manifest: probe {}, {} result(s), {} to {}",
            m.probe_key,
            m.count,
            m.first.as_deref().unwrap_or("-"),
            m.last.as_deref().unwrap_or("-")
        );
    }
    for p in &carried.manifest_problems {
        eprintln!("{}: manifest: {p}", args.file.display());
    }
    refused.extend(carried.refused.iter().cloned());
    refused.sort();
    for (n, reason) in &refused {
        eprintln!("{}:{n}: refused: {reason}", args.file.display());
    }
    if let Some(t) = &carried.truncated {
        eprintln!(
            "{}: read to its end: no ({t}); the lines before were kept",
            args.file.display()
        );
    }
    outln!(
        "{}: {added} queued to relay, {known} already here, {} refused",
        args.file.display(),
        refused.len()
    );
    if carried.good == 0 && carried.manifest.is_none() {
        bail!("{}: no signed results in the file", args.file.display());
    }
    let clean = carried.manifest.is_some()
        && carried.manifest_problems.is_empty()
        && refused.is_empty()
        && carried.truncated.is_none();
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
