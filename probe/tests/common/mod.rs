//! Helpers shared by the probe's end-to-end tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};

/// Collects a spawned process's stderr, line by line, into a log the test can read while the
/// process runs (the daemon's tests wait for a line to appear).
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("log").push(line);
        }
    });
    log
}
