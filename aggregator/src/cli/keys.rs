//! `keys`: list, allow or revoke probe keys.

use super::*;

#[derive(Debug, clap::Args)]
pub(super) struct KeysArgs {
    /// The database file.
    #[arg(long, value_name = "FILE", global = true)]
    db: Option<PathBuf>,
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
    let path = args.db.as_ref().context("--db FILE is required")?;
    let db = Sqlite::open(path)?;
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
                outln!("{}", vantage_aggregator::ingest::enrol::new_token(&db)?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
