//! `compact`: every stored envelope compressed now. Also the `--db FILE` / `--store URL` pair
//! that every data command takes ([`DbArgs`]).

use super::*;
use vantage_aggregator::store::Location;

/// Where a command finds the data: `--db FILE` (one SQLite file, as always) or `--store URL`
/// (`sqlite:FILE` or `clickhouse://HOST:PORT/DB`, as for `serve --store`; see
/// `docs/architecture.md`). Exactly one of the two.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub(super) struct DbArgs {
    /// The database file (SQLite).
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
    /// Where the data is stored instead of --db: sqlite:FILE or clickhouse://HOST:PORT/DB (its
    /// HTTP interface), as for `serve --store`.
    #[arg(long, value_name = "URL")]
    store: Option<Location>,
}

impl DbArgs {
    /// The store named, `--db FILE` being `sqlite:FILE`.
    fn location(&self) -> Result<Location> {
        match (&self.db, &self.store) {
            (Some(path), None) => Ok(Location::Sqlite(path.clone())),
            (None, Some(location)) => Ok(location.clone()),
            // clap's group refuses both and neither; this is for a caller that bypassed it.
            _ => bail!("give one of --db FILE and --store URL"),
        }
    }

    /// Opens the store, creating an SQLite file or a ClickHouse database that is not there yet
    /// (as `serve` does). A `--db` file keeps the error it always had (the file's own); a
    /// `--store` names the store it could not open.
    pub(super) fn open(&self) -> Result<Arc<dyn Storage>> {
        match self.location()? {
            Location::Sqlite(path) if self.store.is_none() => Ok(Arc::new(Sqlite::open(&path)?)),
            location => location
                .open()
                .with_context(|| format!("cannot open the store {location}")),
        }
    }

    /// [`DbArgs::open`] for a command that only reads: an SQLite file that does not exist is
    /// an error rather than a new empty database, so a mistyped path is not answered with
    /// "nothing found".
    pub(super) fn open_existing(&self) -> Result<Arc<dyn Storage>> {
        if let Location::Sqlite(path) = self.location()?
            && !path.exists()
        {
            bail!("no database at {}", path.display());
        }
        self.open()
    }
}

pub(super) fn compact(args: &DbArgs) -> Result<ExitCode> {
    let db = args.open()?;
    let n = vantage_aggregator::store::compact::compact_all(db.as_ref(), Duration::ZERO)?;
    outln!("compacted {n} measurements")?;
    Ok(ExitCode::SUCCESS)
}
