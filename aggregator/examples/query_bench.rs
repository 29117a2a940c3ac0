//! Query benchmark (BENCHMARKS.md, "Aggregator queries with 10 million stored measurements"):
//! search latency with millions of stored
//! measurements.
//!
//! `fill STORE COUNT FIXTURE_DIR` (STORE: a file, `sqlite:FILE` or `clickhouse://HOST:PORT/DB`)
//! stores COUNT signed web_connectivity measurements through the
//! aggregator's own ingest (signature check, scoring, insert) and compaction, made from OONI's
//! measurements of 2 to 8 KB: 40 countries of very different sizes (the i-th has weight 1/i),
//! 50 networks each, 20,000 domains, 1,000 probes each uploading batches of 1,000, spread over
//! one year.
//!
//! `query ADDR COUNT` then asks a running `vantage-aggregator serve` COUNT searches of each kind,
//! by country and time range (1, 7 or 30 days) and by domain, and prints p50, p95 and p99.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vantage_aggregator::ingest::{IngestConfig, Origin, Status, ingest};
use vantage_aggregator::store::Location;
use vantage_aggregator::store::compact::compact_all;
use vantage_probe::envelope::Identity;
use vantage_probe::verdict::fingerprints::Fingerprints;

const COUNTRIES: [&str; 40] = [
    "IR", "RU", "TR", "CN", "IN", "BR", "US", "ID", "PK", "EG", "MM", "VE", "ET", "BY", "UA", "KZ",
    "VN", "TH", "SA", "AE", "NG", "KE", "UG", "TZ", "SD", "IQ", "SY", "CU", "ZW", "BD", "LK", "PH",
    "MY", "DZ", "MA", "TN", "JO", "AZ", "TM", "UZ",
];
const NETWORKS: u32 = 50;
const DOMAINS: usize = 20_000;
const PROBES: usize = 1_000;
const BATCH: usize = 1_000;
/// 2025-11-23 00:00:00 UTC.
const START: i64 = 1_763_856_000;
const YEAR_SECS: i64 = 365 * 86_400;

/// A cheap deterministic mix (splitmix64), so runs are repeatable without a random crate.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Country index with weight 1/(i+1).
fn country(r: u64) -> usize {
    let total: f64 = (1..=COUNTRIES.len()).map(|i| 1.0 / i as f64).sum();
    let mut x = (r % 1_000_000) as f64 / 1_000_000.0 * total;
    for i in 0..COUNTRIES.len() {
        x -= 1.0 / (i + 1) as f64;
        if x <= 0.0 {
            return i;
        }
    }
    COUNTRIES.len() - 1
}

fn timestamp(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).expect("time");
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(&f).expect("format")
}

fn fill(store: &str, count: usize, fixtures: &str) {
    let mut templates: Vec<serde_json::Value> = std::fs::read_dir(fixtures)
        .expect("fixtures")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|v| v["test_name"] == "web_connectivity")
        .filter(|v| (2000..=8192).contains(&v.to_string().len()))
        .collect();
    templates.sort_by_key(|v| v.to_string());
    let probes: Vec<Identity> = (0..PROBES)
        .map(|_| Identity::generate().expect("key"))
        .collect();
    let location: Location = store
        .parse()
        .expect("STORE: a file, sqlite:FILE or clickhouse://");
    let db = location.open().expect("store");
    let db = &*db;
    let config = IngestConfig::default();
    let fingerprints = Fingerprints::builtin();
    let next = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let started = Instant::now();
    let step = YEAR_SECS / i64::try_from(count.max(1)).expect("count");
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let first = next.fetch_add(BATCH, Ordering::Relaxed);
                    if first >= count {
                        break;
                    }
                    // One upload comes from one probe.
                    let probe = &probes[(first / BATCH) % PROBES];
                    let mut body = String::new();
                    for n in first..(first + BATCH).min(count) {
                        let r = mix(n as u64);
                        let c = country(r);
                        let mut v = templates[n % templates.len()].clone();
                        let domain = mix(r) as usize % DOMAINS;
                        v["input"] = format!("https://www.site{domain}.example/").into();
                        v["probe_cc"] = COUNTRIES[c].into();
                        let asn =
                            10_000 + c as u32 * 100 + (mix(r ^ 1) % u64::from(NETWORKS)) as u32;
                        v["probe_asn"] = format!("AS{asn}").into();
                        let t = timestamp(START + step.max(1) * n as i64);
                        v["measurement_start_time"] = t.into();
                        body.push_str(&probe.seal(&v.to_string()).expect("seal").1);
                        body.push('\n');
                    }
                    let outcomes = ingest(db, &body, &config, &fingerprints, &Origin::UNKNOWN)
                        .expect("ingest");
                    let ok = outcomes
                        .iter()
                        .filter(|o| o.status == Status::Accepted)
                        .count();
                    assert_eq!(
                        ok,
                        outcomes.len(),
                        "{:?}",
                        outcomes.iter().find(|o| o.status != Status::Accepted)
                    );
                    let done = accepted.fetch_add(ok, Ordering::Relaxed) + ok;
                    if done % 100_000 < BATCH {
                        compact_all(db, Duration::ZERO).expect("compact");
                        eprintln!(
                            "{done} stored ({:.0}/s)",
                            done as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                }
            });
        }
    });
    compact_all(db, Duration::ZERO).expect("compact");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "filled {} measurements in {secs:.0} s ({:.0}/s, ingest and compaction)",
        accepted.load(Ordering::Relaxed),
        accepted.load(Ordering::Relaxed) as f64 / secs
    );
}

fn get(addr: &str, path: &str) -> (Duration, String) {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    let took = t.elapsed();
    assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
    (took, reply)
}

fn percentiles(name: &str, mut times: Vec<Duration>, rows: usize) {
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{name}: {} queries, p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.0} rows per answer",
        times.len(),
        p(0.50).as_secs_f64() * 1e3,
        p(0.95).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        p(1.0).as_secs_f64() * 1e3,
        rows as f64 / times.len() as f64
    );
}

fn query(addr: &str, count: usize) {
    let day = 86_400;
    let mut by_cc = Vec::new();
    let mut by_domain = Vec::new();
    let (mut cc_rows, mut domain_rows) = (0, 0);
    for i in 0..count {
        let r = mix(0xfeed ^ i as u64);
        let c = COUNTRIES[country(r)];
        let days = [1, 7, 30][i % 3];
        let since = START + (mix(r ^ 3) as i64).rem_euclid(YEAR_SECS - days * day);
        let path = format!(
            "/api/v1/measurements?cc={c}&since={}&until={}",
            timestamp(since).replace(' ', "%20"),
            timestamp(since + days * day).replace(' ', "%20")
        );
        let (t, reply) = get(addr, &path);
        cc_rows += reply.matches("\"id\":").count();
        by_cc.push(t);
        let d = mix(r ^ 4) as usize % DOMAINS;
        let (t, reply) = get(
            addr,
            &format!("/api/v1/measurements?domain=www.site{d}.example"),
        );
        domain_rows += reply.matches("\"id\":").count();
        by_domain.push(t);
    }
    percentiles("by country and time range", by_cc, cc_rows);
    percentiles("by domain", by_domain, domain_rows);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match &args[1..] {
        [mode, store, count, fixtures] if mode == "fill" => {
            fill(store, count.parse().expect("COUNT"), fixtures);
        }
        [mode, addr, count] if mode == "query" => query(addr, count.parse().expect("COUNT")),
        _ => {
            eprintln!("usage: query_bench fill STORE COUNT FIXTURE_DIR | query ADDR COUNT");
            std::process::exit(2);
        }
    }
}
