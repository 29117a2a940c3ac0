//! A real clickhouse-server for the benchmark scripts (`benches/stores.sh`): started as the
//! tests start theirs (`vantage_fixtures::clickhouse::Server`: a fresh directory, free loopback
//! ports), it prints `clickhouse://127.0.0.1:PORT/` and the data directory on stdout, runs until
//! its standard input closes, then stops the server and removes the directory.
//!
//! Usage: clickhouse_server < FIFO   (close the FIFO's writer to stop it)

use std::io::{Read, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = vantage_fixtures::clickhouse::Server::start()?;
    let url = server.url("x");
    let base = url.trim_end_matches('x');
    let mut out = std::io::stdout().lock();
    writeln!(out, "{base}")?;
    writeln!(
        out,
        "{}",
        server
            .log_path()
            .parent()
            .map_or_else(String::new, |p| p.display().to_string())
    )?;
    out.flush()?;
    drop(out);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(server);
    Ok(())
}
