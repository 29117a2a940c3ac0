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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Daemon(_));
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
