//! Read latency under ingest (BENCHMARKS.md): how long a researcher's search
//! (`GET /api/v1/measurements`) takes while probes upload as fast as they can.
//!
//! Usage: `read_under_ingest ADDR SECONDS FIXTURE_DIR [UPLOADERS] [BATCH]` against a running
//! `vantage-aggregator serve` on loopback (started with `--lines-per-key-hour 0`: this measures
//! the store, not the rate limit).
//!
//! 1. Preload: each uploader sends 4 batches, so the searches have rows to page through.
//! 2. Idle: 100 searches, one every 20 ms, nothing else running: the baseline.
//! 3. Load: UPLOADERS (default 50) probes, each its own key, post BATCH-line (default 100)
//!    signed batches back to back for SECONDS, while one researcher asks five searches a second,
//!    by country and by domain in turn (`limit=100`, the web page's page size).
//!
//! It prints p50/p95/p99 of each phase's search latency (the whole exchange: connect, request,
//! answer read to the end) and the lines per second accepted under load. Bodies are OONI's own
//! web_connectivity measurements of 2 to 8 KB, made unique by their input; each uploader signs
//! its lines as it goes, as a probe does. A 503 (upload budget spent) is retried after 100 ms
//! and counted. Only the given (loopback) addresses are ever contacted.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vantage_probe::envelope::Identity;

/// Spread of the inputs over hosts, so that a search by domain finds a share of the rows.
const HOSTS: usize = 50;
/// The host searched by domain.
const SEARCHED_HOST: &str = "site7.example";
/// Batches each uploader sends before anything is measured.
const PRELOAD_BATCHES: usize = 4;

/// One HTTP/1.1 exchange on a fresh connection: the status and the body.
fn exchange(addr: &str, head: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut sock = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(120)))?;
    sock.write_all(head.as_bytes())?;
    sock.write_all(body)?;
    let mut reply = String::new();
    sock.read_to_string(&mut reply)
        .with_context(|| format!("read the answer of {addr}"))?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {:?}", reply.get(..80)))?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// A search; its latency, or why it failed.
fn search(addr: &str, query: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let (status, body) = exchange(
        addr,
        &format!(
            "GET /api/v1/measurements?{query} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        ),
        b"",
    )?;
    let took = t.elapsed();
    if status != 200 {
        bail!("search {query}: status {status}: {}", body.trim());
    }
    Ok(took)
}

/// Latency percentiles of `samples`, in milliseconds, as one line.
fn percentiles(name: &str, mut samples: Vec<Duration>, failed: usize) -> String {
    if samples.is_empty() {
        return format!("{name}: no search answered ({failed} failed)");
    }
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    format!(
        "{name}: {} searches, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms, failed {failed}",
        samples.len(),
        at(0.50),
        at(0.95),
        at(0.99),
        samples[samples.len() - 1].as_secs_f64() * 1000.0
    )
}

/// One probe: a key and the measurement bodies it varies.
struct Uploader<'a> {
    id: Identity,
    n: usize,
    templates: &'a [String],
    batch: usize,
}

impl Uploader<'_> {
    /// The next batch, freshly signed.
    fn next_batch(&mut self, who: usize) -> anyhow::Result<String> {
        let mut lines = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let n = self.n;
            self.n += 1;
            let template = &self.templates[(who + n) % self.templates.len()];
            let input = format!("http://site{}.example/bench/{who}/{n}", n % HOSTS);
            let body = template.replacen("@INPUT@", &input, 1);
            lines.push(self.id.seal(&body).context("seal")?.1);
        }
        Ok(lines.join("\n"))
    }

    /// Posts one batch until it is taken (a 503 is retried); the lines accepted and the 503s.
    fn upload(&mut self, addr: &str, who: usize) -> anyhow::Result<(usize, usize)> {
        let body = self.next_batch(who)?;
        let head = format!(
            "POST /api/v1/measurements HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\
             Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut busy = 0;
        loop {
            let (status, reply) = exchange(addr, &head, body.as_bytes())?;
            match status {
                200 => return Ok((reply.matches("\"accepted\"").count(), busy)),
                503 => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => bail!("upload: status {other}: {}", reply.trim()),
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: read_under_ingest ADDR[,ADDR...] SECONDS FIXTURE_DIR [UPLOADERS] [BATCH]";
    let (addr, seconds, fixtures) = match &args[..] {
        [_, a, s, f, ..] => (a.clone(), s.parse::<u64>().context(usage)?, f.clone()),
        _ => bail!(usage),
    };
    // Several addresses: nodes of one store (`serve --store clickhouse://`); uploader `who`
    // posts to node `who % n`, and searches go to the first.
    let nodes: Vec<String> = addr.split(',').map(String::from).collect();
    let addr = nodes[0].clone();
    let uploaders: usize = args.get(4).map_or(Ok(50), |v| v.parse()).context(usage)?;
    let batch: usize = args.get(5).map_or(Ok(100), |v| v.parse()).context(usage)?;
    if uploaders == 0 || batch == 0 {
        bail!("UPLOADERS and BATCH must be at least 1");
    }

    // OONI's web_connectivity measurements of 2 to 8 KB, with a placeholder for the input.
    let mut templates: Vec<String> = std::fs::read_dir(&fixtures)
        .with_context(|| format!("read {fixtures}"))?
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|v| v["test_name"] == "web_connectivity")
        .filter(|v| (2000..=8192).contains(&v.to_string().len()))
        .map(|mut v| {
            v["input"] = "@INPUT@".into();
            v.to_string()
        })
        .collect();
    templates.sort();
    let Some(cc) = templates
        .first()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| v["probe_cc"].as_str().map(String::from))
    else {
        bail!("no web_connectivity measurement of 2 to 8 KB in {fixtures}");
    };
    let searches = [
        format!("cc={cc}&limit=100"),
        format!("domain={SEARCHED_HOST}&limit=100"),
    ];

    let mut probes: Vec<Uploader<'_>> = (0..uploaders)
        .map(|_| {
            Ok(Uploader {
                id: Identity::generate().context("key")?,
                n: 0,
                templates: &templates,
                batch,
            })
        })
        .collect::<anyhow::Result<_>>()?;

    // 1. Preload.
    let t = Instant::now();
    let preloaded: usize = std::thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter_mut()
            .enumerate()
            .map(|(who, p)| {
                let addr = &nodes[who % nodes.len()];
                s.spawn(move || -> anyhow::Result<usize> {
                    let mut n = 0;
                    for _ in 0..PRELOAD_BATCHES {
                        n += p.upload(addr, who)?.0;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("an uploader panicked"))?
            })
            .sum::<anyhow::Result<usize>>()
    })?;
    println!(
        "preload: {preloaded} lines accepted in {:.1} s ({uploaders} uploaders, {batch}-line batches)",
        t.elapsed().as_secs_f64()
    );

    // 2. Idle baseline.
    let mut idle = Vec::new();
    let mut idle_failed = 0;
    for i in 0..100 {
        match search(&addr, &searches[i % 2]) {
            Ok(d) => idle.push(d),
            Err(e) => {
                idle_failed += 1;
                eprintln!("idle: {e:#}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // 3. Under load.
    let stop = AtomicBool::new(false);
    let accepted = AtomicUsize::new(0);
    let busy = AtomicUsize::new(0);
    let upload_errors = AtomicUsize::new(0);
    let started = Instant::now();
    let (loaded, loaded_failed, ingest_secs) = std::thread::scope(|s| {
        let workers: Vec<_> = probes
            .iter_mut()
            .enumerate()
            .map(|(who, p)| {
                let (addr, stop, accepted, busy, upload_errors) = (
                    &nodes[who % nodes.len()],
                    &stop,
                    &accepted,
                    &busy,
                    &upload_errors,
                );
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match p.upload(addr, who) {
                            Ok((n, b)) => {
                                accepted.fetch_add(n, Ordering::Relaxed);
                                busy.fetch_add(b, Ordering::Relaxed);
                            }
                            Err(e) => {
                                upload_errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("uploader {who}: {e:#}");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                })
            })
            .collect();
        let mut samples = Vec::new();
        let mut failed = 0;
        let deadline = started + Duration::from_secs(seconds);
        let mut i = 0;
        while Instant::now() < deadline {
            let next = Instant::now() + Duration::from_millis(200);
            match search(&addr, &searches[i % 2]) {
                Ok(d) => samples.push(d),
                Err(e) => {
                    failed += 1;
                    eprintln!("under load: {e:#}");
                }
            }
            i += 1;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = w.join();
        }
        (samples, failed, started.elapsed().as_secs_f64())
    });

    let accepted = accepted.into_inner();
    println!("{}", percentiles("idle", idle, idle_failed));
    println!("{}", percentiles("under load", loaded, loaded_failed));
    println!(
        "ingest under load: {accepted} lines in {ingest_secs:.1} s = {:.0} lines/s \
         ({uploaders} uploaders, {batch}-line batches, {} answered 503 and retried, {} failed)",
        accepted as f64 / ingest_secs,
        busy.into_inner(),
        upload_errors.into_inner()
    );
    Ok(())
}
