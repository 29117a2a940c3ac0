//! The Vantage probe library: a measurement engine that observes DNS, TCP, TLS and HTTP step by
//! step, OONI's data format, and the `web_connectivity` test.
//!
//! The aggregator uses this library too, as its control vantage point, in the same way OONI's
//! test helper uses OONI's engine (DESIGN "Shape of the repository").

#![warn(missing_docs)]

pub mod engine;
pub mod failure;
pub mod ooni;
pub mod th;
pub mod verdict;
pub mod web_connectivity;

pub use failure::{Failure, Operation, StepError};
