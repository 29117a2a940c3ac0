//! The researcher API and the servers around it: routes (`server.rs`), exports, the web page,
//! the accept loop with its limits, the throughput server, TLS and geolocation of connecting
//! addresses. It reads through `detect` and `store` and hands uploads to `ingest`; nothing
//! below it imports it (`docs/architecture.md`).

pub mod admission;
pub mod csv_line;
pub mod evidence;
pub mod export;
pub mod geo;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod openapi;
pub mod server;
pub mod throughput;
pub mod tls;
mod upload;
