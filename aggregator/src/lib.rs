//! The Vantage aggregator: verified ingest of signed measurements, scoring against a control,
//! the shutdown and blocking timeline, and the researcher API.
//!
//! This crate is a skeleton for now; it builds on the probe library, whose engine will serve as
//! the control vantage point (DESIGN "Aggregator").

#![warn(missing_docs)]

/// The probe library version this aggregator was built with, reported by `--version` so an
/// operator can tell which engine their control vantage point runs.
pub fn engine_version() -> &'static str {
    vantage_probe::ooni::DATA_FORMAT_VERSION
}
