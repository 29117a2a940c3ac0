//! Evaluation harness for Vantage's timeline (BENCHMARKS.md, "Timeline detection quality"):
//! simulated fleets
//! ([`sim`]), ground truth drawn from IODA's investigated outages ([`truth`]), scenarios and
//! scores ([`score`]).

#![warn(missing_docs)]

pub mod score;
pub mod sim;
pub mod throttle;
pub mod truth;
