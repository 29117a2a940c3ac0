//! The Vantage probe library: a measurement engine that observes DNS, TCP, TLS and HTTP step by
//! step, OONI's data format, and the `web_connectivity` test.
//!
//! The aggregator uses this library too, as its control vantage point, in the same way OONI's
//! test helper uses OONI's engine (docs/architecture.md, "What probe and aggregator agree on").

#![warn(missing_docs)]

pub mod apps;
pub mod bundle;
pub mod canary;
pub mod carry;
pub mod daemon;
pub mod data_file;
pub mod dnscheck;
pub mod engine;
pub mod envelope;
pub mod failure;
pub mod migrate;
pub mod ooni;
pub mod printable;
pub mod quic;
pub mod relay;
pub mod relay_proof;
pub mod route;
pub mod run;
pub mod store;
pub mod test_lists;
pub mod th;
pub mod throttling;
pub mod tlog;
pub mod upload;
pub mod verdict;
pub mod web_connectivity;
pub mod wire;

pub use failure::{Failure, Operation, StepError};

/// Logs to stderr, at the level `RUST_LOG` asks for (else `default`, e.g. `warn`), for both
/// binaries; stdout is kept for results. Colour only on a terminal: under systemd, stderr goes
/// to the journal, which would keep the escape codes.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .init();
}
