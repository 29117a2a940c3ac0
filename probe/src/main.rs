//! `vantage`: the volunteer's probe.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Vantage measures Internet censorship and shutdowns from where you are.
#[derive(Debug, Parser)]
#[command(name = "vantage", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure a test list once: a progress bar, a plain summary of what is blocked and how, every
    /// result signed and kept in the local store, and uploaded unless told not to.
    Run(Box<cli::RunArgs>),
    /// Measure one URL in detail and print the measurement as OONI-format JSON.
    ///
    /// Every step is recorded separately: DNS answers (with late, possibly injected, replies),
    /// TCP connects to each address, TLS handshakes with the peer certificates, and the HTTP
    /// response (status, headers, title, body hash), following redirects one by one.
    ///
    /// The JSON goes to stdout; one line on stderr says the outcome and why, e.g.
    /// `http://example.org/: undetermined: no control: no test helper was asked; here:
    /// dns_nxdomain_error`. Nothing is stored or uploaded.
    ///
    /// Exit status: 0 when the URL was measured, whatever the outcome (blocked, a failed
    /// lookup or connection, no control: these are results, recorded in the JSON); 2 when
    /// nothing could be measured (a bad URL or option, an unreadable --ca-file).
    Measure(cli::MeasureArgs),
    /// Send the results waiting in the local store to the aggregator.
    Upload(cli::UploadArgs),
    /// Send one signed heartbeat ("this probe is alive") to the aggregator, to check a setup.
    Heartbeat(cli::HeartbeatArgs),
    /// Check once whether this network reaches the Internet at all, and keep the signed result.
    ///
    /// Asks anycast resolvers and root servers a DNS question and connects to anycast addresses,
    /// all by IP: it needs no DNS and no aggregator, so it keeps recording during a shutdown.
    /// The result waits in the local store for `vantage upload` like any other.
    Canary(cli::CanaryArgs),
    /// Enrol this probe's key with a one-time token from the aggregator's operator.
    ///
    /// Needed only for aggregators that refuse unknown keys (`serve --require-enrolment`); open
    /// aggregators trust a key on first use. The token is sent signed by this probe's key.
    Enrol(cli::EnrolArgs),
    /// List stored results, or show one.
    Results(cli::ResultsArgs),
    /// Show this probe's key, how many results wait for upload, and the last upload.
    Status(cli::DataArgs),
    /// Manage test lists.
    Lists(cli::ListsArgs),
    /// Run unattended (a Raspberry Pi under systemd): canaries every minute, heartbeats, list
    /// runs every few hours, uploads with backoff; keeps measuring and queueing offline.
    ///
    /// Logs go to stderr (the journal under systemd; RUST_LOG=debug for more). SIGTERM stops it
    /// within seconds without losing a completed measurement; SIGHUP reloads the configuration.
    Daemon(cli::DaemonArgs),
    /// Show this probe's public key, creating its signing key on first use.
    ///
    /// Every result is signed with this key so that nobody can forge or alter it on the way.
    /// The key is pseudonymous: it is not linked to you unless you share it.
    Id(cli::DataArgs),
    /// Check an evidence bundle offline: every file against its manifest, every measurement's
    /// signature, every inclusion proof against the bundle's signed checkpoint, the
    /// checkpoint's signature, and every verdict recomputed with the rules the bundle names.
    ///
    /// The bundle is the zip an aggregator gives for an event (`vantage-aggregator evidence`,
    /// or "Evidence bundle (zip)" on its web page). Nothing is fetched: it works with no network
    /// at all. One line per check, then a summary.
    ///
    /// Exit status: 0 when every check holds; 1 when any fails; 2 when the file is not a
    /// readable bundle (not a zip, truncated, too large, no manifest) or --log-key is not a key.
    Verify(VerifyArgs),
    /// Write the results waiting for upload (or all, --all) to one file that anyone can carry
    /// out of a shutdown: gzip JSONL of the signed envelopes as stored, after a manifest this
    /// probe signs (its key, count, time range, SHA-256 of the lines). A second export holds
    /// only what the first did not; the results stay queued until an aggregator accepts them.
    ///
    /// Exit status: 0 when the file was written; 2 on any error (a full disk), in which case
    /// no file is left and nothing is marked exported.
    Export(cli::ExportArgs),
    /// Queue another probe's export file to be uploaded from here, as relayed: each envelope
    /// keeps its own signature (this probe signs nothing of theirs) and is checked before it
    /// is kept; a tampered line is refused with its line number, the good ones kept.
    ///
    /// Exit status: 0 when every line and the manifest checked; 1 when anything was refused or
    /// the file ends early (what verified is kept); 2 when nothing could be read.
    Import(cli::ImportArgs),
    /// Serve the upload API to the other probes of this network and forward what they send to
    /// the aggregator by this machine's way out (satellite, a cross-border link, Tor): they
    /// list http://THIS-HOST:PORT/ as an upload route.
    ///
    /// Each envelope is checked (its own signature, its shape) and queued in this machine's
    /// store as relayed, answered as the aggregator would (accepted means queued here), and
    /// forwarded with its original signature, under this machine's relay header, whenever an
    /// aggregator answers. Heartbeats and whoami are not relayed. Bounded: body size, lines
    /// per request, connections, queue (503 with Retry-After when full).
    Relay(cli::RelayArgs),
}

/// `vantage verify`'s arguments.
#[derive(Debug, clap::Args)]
struct VerifyArgs {
    /// The bundle (a zip).
    #[arg(value_name = "FILE.zip")]
    bundle: std::path::PathBuf,
    /// The aggregator's public key as it publishes it: the base64 key its `serve` prints
    /// ("test lists are signed with key ...") or the log's verifier key
    /// (ORIGIN+KEYID+BASE64). Without it the checkpoint is checked with the key inside the
    /// bundle, and its fingerprint is printed to compare by hand.
    #[arg(long, value_name = "BASE64")]
    log_key: Option<String>,
}

/// Runs `vantage verify`: no network, only the file.
fn verify(args: &VerifyArgs) -> ExitCode {
    use std::io::Write as _;
    use vantage_probe::printable::printable;
    // Written, not printed: a reader that stops early (`vantage verify x.zip | head`) ends the
    // output, not the program with a panic.
    let mut stdout = std::io::stdout().lock();
    let mut report = |line: &vantage_probe::bundle::Line| {
        let _ = writeln!(stdout, "{line}");
    };
    let result = vantage_probe::bundle::verify(&args.bundle, args.log_key.as_deref(), &mut report);
    let mut stdout = std::io::stdout().lock();
    match result {
        Ok(s) if s.failed == 0 => {
            let _ = writeln!(
                stdout,
                "verified: all {} checks hold ({} measurements) in {}",
                s.held,
                s.envelopes,
                printable(&args.bundle.display().to_string())
            );
            ExitCode::SUCCESS
        }
        Ok(s) => {
            let _ = writeln!(
                stdout,
                "NOT VERIFIED: {} of {} checks fail ({} measurements) in {}",
                s.failed,
                s.failed + s.held,
                s.envelopes,
                printable(&args.bundle.display().to_string())
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            // Names an entry or quotes the manifest: strings the bundle chose.
            eprintln!("error: {}", printable(&e.to_string()));
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Daemon(_) | Command::Relay(_));
    // The daemon reports what it does at `info`; interactive commands only warn.
    vantage_probe::init_logging(if daemon { "info" } else { "warn" });
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if daemon {
        // Two workers are plenty for a probe that mostly waits, and keep its memory small on
        // a four-core Pi.
        builder.worker_threads(2);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => cli::run(*args).await,
            Command::Measure(args) => cli::measure(args).await,
            Command::Upload(args) => cli::upload(args).await,
            Command::Heartbeat(args) => cli::heartbeat(args).await,
            Command::Enrol(args) => cli::enrol(args).await,
            Command::Canary(args) => cli::canary(args).await,
            Command::Results(args) => cli::results(args),
            Command::Status(args) => cli::status(&args),
            Command::Lists(args) => cli::lists(args).await,
            Command::Id(args) => cli::id(&args),
            Command::Daemon(args) => cli::daemon(args).await,
            Command::Verify(args) => Ok(verify(&args)),
            Command::Export(args) => cli::export(&args),
            Command::Import(args) => cli::import(&args),
            Command::Relay(args) => cli::relay(args).await,
        }
    });
    // A lookup through the system resolver may still be running on a blocking thread; do not
    // let it hold up a stop that systemd expects within seconds.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
