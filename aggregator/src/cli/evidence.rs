//! `evidence`: an event's evidence bundle, written to a zip file (`docs/transparency.md`,
//! "Evidence bundles"); the same bundle as `GET /api/v1/timeline/{id}/evidence.zip`.

use super::*;
use vantage_aggregator::evidence::{self, Context as BundleContext};
use vantage_aggregator::store::Location;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("where").required(true).args(["db", "store"])))]
pub(super) struct EvidenceArgs {
    /// The event's id (16 hex digits), as the timeline gives it.
    event: String,
    /// Where to write the bundle (a zip).
    #[arg(long, value_name = "FILE.zip")]
    out: PathBuf,
    /// The database file (SQLite).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Where the data is stored instead of --db: sqlite:FILE or clickhouse://HOST:PORT/DB.
    #[arg(long, value_name = "URL", conflicts_with = "db")]
    store: Option<Location>,
    /// The aggregator's signing key, as for `serve --key` (only its public half goes into the
    /// bundle); default: the database path + `.key`.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Detection thresholds (TOML), as given to `serve --detect-config`: the bundle names them.
    #[arg(long, value_name = "FILE")]
    detect_config: Option<PathBuf>,
}

/// The public half of the Ed25519 key file `path` (base64 of the 32-byte secret, as
/// `serve` writes it); the file must exist: a bundle names the key that signs the log.
fn public_key(path: &std::path::Path) -> Result<[u8; 32]> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the aggregator's key {}", path.display()))?;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{}: not a base64 Ed25519 secret key", path.display()))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes())
}

pub(super) fn evidence(args: &EvidenceArgs) -> Result<ExitCode> {
    if !evidence::is_event_id(&args.event) {
        bail!("{:?} is not an event id (16 hex digits)", args.event);
    }
    let location = match (&args.db, &args.store) {
        (Some(path), None) => Location::Sqlite(path.clone()),
        (None, Some(location)) => location.clone(),
        _ => bail!("give one of --db FILE and --store URL"),
    };
    let key_path = match (&args.key, &location) {
        (Some(key), _) => key.clone(),
        (None, Location::Sqlite(path)) => PathBuf::from(format!("{}.key", path.display())),
        (None, Location::ClickHouse(_)) => bail!("--store clickhouse://... needs --key FILE"),
    };
    if let Location::Sqlite(path) = &location
        && !path.exists()
    {
        bail!("no database at {}", path.display());
    }
    let config = detect_config(args.detect_config.as_ref())?;
    let context = BundleContext {
        public_key: public_key(&key_path)?,
        verification: config.verification(),
        config,
        now: vantage_aggregator::store::now(),
    };
    let storage = location
        .open()
        .with_context(|| format!("cannot open the store {location}"))?;
    let plan = evidence::plan(storage.as_ref(), &args.event, context)?;
    // Written beside the target and renamed, so that a bundle that fails half-way leaves
    // nothing that looks like one.
    let partial = PathBuf::from(format!("{}.partial", args.out.display()));
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let written =
        evidence::write(storage.as_ref(), &plan, std::io::BufWriter::new(file)).and_then(|w| {
            std::fs::rename(&partial, &args.out)?;
            Ok(w)
        });
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e).with_context(|| format!("cannot write {}", args.out.display()));
        }
    };
    let bytes = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    eprintln!(
        "vantage-aggregator: wrote {} ({bytes} bytes): event {}, {} measurements ({} not in the log), proofs against the checkpoint of {} entries",
        args.out.display(),
        plan.event.id,
        written.envelopes,
        written.not_logged,
        plan.checkpoint.size
    );
    if written.truncated {
        eprintln!(
            "vantage-aggregator: the event has more than {} measurements; the bundle holds the first {}",
            evidence::MAX_ENVELOPES,
            evidence::MAX_ENVELOPES
        );
    }
    if plan.newer_than_checkpoint > 0 {
        eprintln!(
            "vantage-aggregator: {} measurements newer than the checkpoint were left out",
            plan.newer_than_checkpoint
        );
    }
    Ok(ExitCode::SUCCESS)
}
