//! The measurements of `benches/evidence.sh`: a blocking event of `BLOCKED` measurements.
//! Five probes of AS64500 (IR) measure `https://news1.example/` ten times an hour for 60 hours
//! ending an hour ago, DNS-blocked during hours 30 to 50 less what `BLOCKED` leaves out; every
//! measurement is a real OONI web_connectivity measurement (the repository's templates) signed
//! by its probe and posted over HTTP to a running `vantage-aggregator serve`, as probes upload.
//! Prints the number of measurements posted on its last line.
//!
//! Usage: cargo run --release --example evidence_bench -- ADDR BLOCKED FIXTURE_DIR

use std::io::{Read, Write};

use vantage_probe::envelope::Identity;

const PROBES: i64 = 5;
const PER_HOUR: i64 = 10;
const HOURS: i64 = 60;
const BLOCKED_FROM: i64 = 30;

fn template(dir: &str, name: &str) -> serde_json::Value {
    let path = format!("{dir}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn post(addr: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST /api/v1/measurements HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    reply
}

fn format_time(secs: i64) -> String {
    vantage_aggregator::detect::format_time(secs)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, blocked, dir) = match &args[..] {
        [_, a, b, d] => (a.clone(), b.parse::<i64>().expect("BLOCKED"), d.clone()),
        _ => {
            eprintln!("usage: evidence_bench ADDR BLOCKED FIXTURE_DIR");
            std::process::exit(2);
        }
    };
    let most = PROBES * PER_HOUR * (HOURS - BLOCKED_FROM - 10);
    assert!(
        (1..=most).contains(&blocked),
        "BLOCKED is 1 to {most} with this plan"
    );
    let ok = template(&dir, "generated-successWithHTTPS.json");
    let dns = template(&dir, "generated-dnsBlockingNXDOMAIN.json");
    let now = vantage_aggregator::store::now();
    let t0 = (now - (HOURS + 1) * 3600) / 3600 * 3600;
    let keys: Vec<Identity> = (0..PROBES)
        .map(|_| Identity::generate().expect("key"))
        .collect();
    let mut lines: Vec<String> = Vec::new();
    let mut left = blocked;
    for h in 0..HOURS {
        for (p, key) in keys.iter().enumerate() {
            for k in 0..PER_HOUR {
                let at = t0 + h * 3600 + (p as i64 * 360 + k * 30) % 3600;
                let is_blocked = h >= BLOCKED_FROM && left > 0;
                if is_blocked {
                    left -= 1;
                }
                let mut m = if is_blocked { dns.clone() } else { ok.clone() };
                m["input"] = "https://news1.example/".into();
                m["probe_cc"] = "IR".into();
                m["probe_asn"] = "AS64500".into();
                m["probe_ip"] = "127.0.0.1".into();
                m["measurement_start_time"] = format_time(at).into();
                m["test_start_time"] = format_time(at).into();
                m["test_runtime"] = (h as f64 + k as f64 / 100.0).into();
                lines.push(key.seal(&m.to_string()).expect("seal").1);
            }
        }
    }
    for chunk in lines.chunks(500) {
        let reply = post(&addr, &chunk.join("\n"));
        assert!(
            reply.starts_with("HTTP/1.1 200")
                && reply.matches("\"accepted\"").count() == chunk.len(),
            "{}",
            reply.chars().take(500).collect::<String>()
        );
    }
    println!("{}", lines.len());
}
