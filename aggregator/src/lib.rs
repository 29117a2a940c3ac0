//! The Vantage aggregator: verified ingest of signed measurements, scoring against a control,
//! the shutdown and blocking timeline, and the researcher API.
//!
//! It builds on the probe library: its test helper measures with the probe's engine, as OONI's
//! helper uses OONI's engine, and it scores with the probe library's rules (docs/architecture.md,
//! "What probe and aggregator agree on").

#![warn(missing_docs)]

pub mod api;
pub mod detect;
pub mod evidence;
pub mod ingest;
pub mod log;
pub mod store;
