//! Ingest benchmark (BENCHMARKS.md): pre-signed, realistic web_connectivity measurements posted
//! over HTTP to a running `vantage-aggregator serve`, beside the bound of the same run: Ed25519
//! verifications per second times cores, and SQLite inserts per second of the same rows.
//!
//! Usage: cargo run --release --example ingest_bench -- ADDR COUNT FIXTURE_DIR

use std::io::{Read, Write};
use std::time::Instant;

use vantage_aggregator::store::{Row, Sqlite, Storage};
use vantage_probe::envelope::{Identity, Verifier, verify};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, count, fixtures) = match &args[..] {
        [_, a, c, f] => (a.clone(), c.parse::<usize>().expect("COUNT"), f.clone()),
        _ => {
            eprintln!("usage: ingest_bench ADDR COUNT FIXTURE_DIR");
            std::process::exit(2);
        }
    };
    // Realistic bodies: OONI's own measurements of 2 to 8 KB, made unique by their input.
    let mut templates: Vec<serde_json::Value> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|v| (2000..=8192).contains(&v.to_string().len()))
        .collect();
    templates.sort_by_key(|v| v.to_string());
    let id = Identity::generate().expect("key");
    let lines: Vec<String> = (0..count)
        .map(|n| {
            let mut v = templates[n % templates.len()].clone();
            v["input"] = format!("http://www.example.com/bench/{n}").into();
            id.seal(&v.to_string()).expect("seal").1
        })
        .collect();
    let mean = lines.iter().map(String::len).sum::<usize>() / lines.len();

    // Bound 1: verifications per second on one core, times the cores. The signer's key is
    // decoded once, as ingest does per batch: this is the cost of the signature check itself.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut verifier = Verifier::default();
    let t = Instant::now();
    for l in &lines {
        verifier.verify(l).expect("verifies");
    }
    let verify_rate = count as f64 / t.elapsed().as_secs_f64() * cores as f64;

    // Bound 2: SQLite inserts per second of the same rows, in batches of 1,000.
    let dir = std::env::temp_dir().join(format!("vantage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = Sqlite::open(&dir.join("bound.db")).expect("db");
    let rows: Vec<Row> = lines
        .iter()
        .map(|l| {
            let v = verify(l).expect("verifies");
            Row {
                id: v.id.to_string(),
                source: "vantage".into(),
                probe_key: Some(v.key.clone()),
                probe_cc: "IT".into(),
                probe_asn: 137,
                test_name: "web_connectivity".into(),
                input: None,
                domain: Some("www.example.com".into()),
                measured_at: "2024-02-12 20:33:47".into(),
                blocking: Some("false".into()),
                accessible: Some(true),
                confirmed: false,
                rule_set: Some("vantage-1".into()),
                verdict: Some("{}".into()),
                envelope: l.clone(),
                network_verified: false,
                route: vantage_aggregator::store::Route::Upload,
            }
        })
        .collect();
    let t = Instant::now();
    for chunk in rows.chunks(1000) {
        db.insert(chunk).expect("insert");
    }
    let insert_rate = count as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    // The run: batches of 1,000 lines over HTTP from several probes at once (VANTAGE_BENCH_
    // UPLOADERS, default 8), so the server always has a request ready while it answers one.
    let uploaders: usize = std::env::var("VANTAGE_BENCH_UPLOADERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(8);
    let batches: Vec<String> = lines.chunks(1000).map(|c| c.join("\n")).collect();
    let t = Instant::now();
    let accepted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..uploaders)
            .map(|w| {
                let (batches, addr) = (&batches, &addr);
                s.spawn(move || {
                    let mut ok = 0;
                    for b in batches.iter().skip(w).step_by(uploaders) {
                        let mut sock = std::net::TcpStream::connect(addr).expect("connect");
                        write!(
                            sock,
                            "POST /api/v1/measurements HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
                            b.len()
                        )
                        .expect("write");
                        sock.write_all(b.as_bytes()).expect("write");
                        let mut reply = String::new();
                        sock.read_to_string(&mut reply).expect("read");
                        ok += reply.matches("\"accepted\"").count();
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker")).sum()
    });
    let secs = t.elapsed().as_secs_f64();
    let rate = accepted as f64 / secs;
    let bound = verify_rate.min(insert_rate);
    println!("measurements: {count}, mean envelope {mean} bytes, accepted {accepted}");
    println!("ingest over HTTP: {rate:.0} measurements/s ({secs:.1} s, {uploaders} uploaders)");
    println!(
        "bound: verify {verify_rate:.0}/s ({cores} cores), sqlite insert {insert_rate:.0}/s -> {bound:.0}/s"
    );
    println!("ingest / bound = {:.2}", rate / bound);
}
