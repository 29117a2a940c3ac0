//! `witness`: cosign another aggregator's checkpoints after checking that each extends the
//! last one cosigned (`vantage_aggregator::log::witness`; docs/transparency.md "Witnesses").

use super::*;
use vantage_aggregator::log::note::WitnessKey;
use vantage_aggregator::log::witness::{Round, Witness, WitnessError};

/// Exit status of a refusal: the log is not append-only (0: fine, 2: any other error).
const REFUSED: u8 = 3;

#[derive(Debug, clap::Args)]
pub(super) struct WitnessArgs {
    /// The witness's Ed25519 key file (base64 secret key), created on first use.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,

    /// The witness's name, its cosignatures' key name (a schema-less URL, e.g.
    /// witness.example.org/w1); default: witness.invalid/ and 16 hex digits of its key's
    /// SHA-256.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Print the witness's verifier key (what `serve --witness` takes) and exit.
    #[arg(long)]
    print_key: bool,

    /// The aggregator whose log to witness: its base URL (http://HOST:PORT or https://...).
    #[arg(long, value_name = "URL", required_unless_present = "print_key")]
    log: Option<url::Url>,

    /// The aggregator's public key: the base64 key `serve` prints ("test lists are signed with
    /// key ..."), or its log's verifier key (ORIGIN+KEYID+BASE64).
    #[arg(long, value_name = "KEY", required_unless_present = "print_key")]
    log_key: Option<String>,

    /// Where the last checkpoint cosigned is kept (JSON, replaced atomically). Keep it: it is
    /// what every later checkpoint is checked against.
    #[arg(long, value_name = "FILE", required_unless_present = "print_key")]
    state: Option<PathBuf>,

    /// Seconds between rounds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    every: u64,

    /// One round, then exit (0: cosigned or nothing new, 3: refused, 2: could not check).
    #[arg(long)]
    once: bool,

    /// Extra CA certificates (PEM) to trust for an https aggregator.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// The log's public key from the base64 key or its verifier key.
fn log_public(key: &str) -> Result<[u8; 32]> {
    use base64::Engine as _;
    let key = key.trim();
    // A verifier key starts with the origin, whose '.' no base64 holds.
    if let Some(public) = base64::engine::general_purpose::STANDARD
        .decode(key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    {
        return Ok(public);
    }
    vantage_probe::tlog::public_of_verifier_key(key).with_context(|| {
        format!("--log-key {key:?} is neither a base64 Ed25519 public key nor a verifier key")
    })
}

pub(super) fn witness(args: &WitnessArgs) -> Result<ExitCode> {
    let key = WitnessKey::load_or_create(&args.key, args.name.as_deref())?;
    if args.print_key {
        outln!("{}", key.verifier_key())?;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(log), Some(log_key), Some(state)) = (&args.log, &args.log_key, &args.state) else {
        bail!("--log, --log-key and --state are needed");
    };
    let public = log_public(log_key)?;
    let roots = match &args.ca_file {
        Some(p) => TlsContext::load_pem(p)?,
        None => Vec::new(),
    };
    let witness = Witness::new(log, public, key, state, TlsContext::new(roots)?);
    eprintln!(
        "vantage-aggregator witness: witnessing {} ({}) as {}",
        log,
        witness.origin(),
        args.key.display()
    );
    let every = Duration::from_secs(args.every.max(1));
    let once = args.once;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async move {
            let mut last_error = String::new();
            loop {
                match witness.round().await {
                    Ok(round) => {
                        last_error.clear();
                        match round {
                            Round::Cosigned { size, from } => outln!(
                                "cosigned checkpoint {size}{}",
                                from.map_or(" (the first seen of this log)".into(), |f| {
                                    format!(", consistent with {f}")
                                })
                            )?,
                            Round::Resubmitted { size } => {
                                outln!("submitted the cosignature of checkpoint {size} again")?;
                            }
                            Round::Unchanged { size } => {
                                if once {
                                    outln!("checkpoint {size} is already cosigned")?;
                                }
                            }
                        }
                        std::io::stdout().flush()?;
                    }
                    Err(e @ WitnessError::Refused { .. }) => {
                        eprintln!("vantage-aggregator witness: {e}");
                        return Ok(ExitCode::from(REFUSED));
                    }
                    Err(e) if once => return Err(e.into()),
                    Err(e) => {
                        let said = e.to_string();
                        if said != last_error {
                            eprintln!("vantage-aggregator witness: nothing cosigned: {said}");
                            last_error = said;
                        }
                    }
                }
                if once {
                    return Ok(ExitCode::SUCCESS);
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = serve::shutdown_signal() => return Ok(ExitCode::SUCCESS),
                }
            }
        })
}
