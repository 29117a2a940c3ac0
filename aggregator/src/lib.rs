//! The Vantage aggregator: verified ingest of signed measurements, scoring against a control,
//! the shutdown and blocking timeline, and the researcher API.
//!
//! It builds on the probe library: its test helper measures with the probe's engine, as OONI's
//! helper uses OONI's engine, and it scores with the probe library's rules (DESIGN "Aggregator").

#![warn(missing_docs)]

pub mod admission;
pub mod csv_line;
pub mod detect;
pub mod enrol;
pub mod export;
pub mod geo;
pub mod ingest;
pub mod limits;
pub mod listen;
pub mod maintain;
pub mod score;
pub mod server;
pub mod store;
pub mod stream;
pub mod throughput;
pub mod tls;
