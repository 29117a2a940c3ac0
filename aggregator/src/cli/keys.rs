//! `keys`: list, allow or revoke probe keys.

use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct KeysArgs {
    /// The database file (SQLite).
    #[arg(long, value_name = "FILE", global = true, conflicts_with = "store")]
    db: Option<PathBuf>,
    /// Where the data is stored instead of --db: sqlite:FILE or clickhouse://HOST:PORT/DB, as
    /// for `serve --store`.
    #[arg(long, value_name = "URL", global = true)]
    store: Option<vantage_aggregator::store::Location>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
    /// Every key seen or allowed, with its state.
    List,
    /// Trust a key (needed with --require-enrolment).
    Allow {
        /// The base64 public key, as `vantage id` prints it.
        key: String,
    },
    /// Refuse a key's later submissions.
    Revoke {
        /// The base64 public key.
        key: String,
    },
    /// Make one-time enrolment tokens (for `serve --require-enrolment`). Hand one to each probe
    /// operator, who runs `vantage enrol --aggregator URL TOKEN`. Only a hash is stored, so the
    /// tokens are shown once.
    Token {
        /// How many tokens.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
    },
}

pub(super) fn keys(args: &KeysArgs) -> Result<ExitCode> {
    // Not a clap group: a global argument may come after the subcommand
    // (`keys list --db FILE`), where a group of the parent command does not see it.
    let db: Arc<dyn Storage> = match (&args.db, &args.store) {
        (Some(path), _) => Arc::new(Sqlite::open(path)?),
        (None, Some(location)) => location
            .open()
            .with_context(|| format!("cannot open the store {location}"))?,
        (None, None) => bail!("--db FILE or --store URL is required"),
    };
    let valid = |key: &str| -> Result<()> {
        if vantage_probe::envelope::parse_public_key(key).is_none() {
            bail!("{key:?} is not a base64 Ed25519 public key");
        }
        Ok(())
    };
    match &args.command {
        KeysCommand::List => {
            for (key, state) in db.keys()? {
                outln!("{key} {state}")?;
            }
        }
        KeysCommand::Allow { key } => {
            valid(key)?;
            db.set_key(key, KeyState::Trusted)?;
            outln!("allowed {key}")?;
        }
        KeysCommand::Revoke { key } => {
            valid(key)?;
            db.set_key(key, KeyState::Revoked)?;
            outln!("revoked {key}: its later submissions will be refused")?;
        }
        KeysCommand::Token { count } => {
            for _ in 0..*count {
                outln!(
                    "{}",
                    vantage_aggregator::ingest::enrol::new_token(db.as_ref())?
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
