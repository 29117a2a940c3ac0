//! Silent-connection flood for `benches/attacks.sh` (BENCHMARKS.md, SECURITY.md).
//!
//! `flood hold ADDR COUNT FIRST SECONDS`: opens COUNT connections to ADDR that never send a byte,
//! spread over sources 127.0.FIRST.1 upwards (50 per source, under the server's per-source
//! cap), and for SECONDS keeps COUNT open by reopening each one the server closes, as an
//! attacker would.
//!
//! `flood health ADDR SECONDS`: asks `GET /api/v1/health` from 127.0.0.1 ten times a second for
//! SECONDS and prints the latency percentiles and how many requests failed.
//!
//! Only loopback addresses are ever used.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn connect(to: SocketAddr, source: &str) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    let from: SocketAddr = format!("{source}:0").parse().ok()?;
    socket.bind(&from.into()).ok()?;
    socket
        .connect_timeout(&to.into(), Duration::from_secs(2))
        .ok()?;
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

fn source(first: usize, i: usize) -> String {
    let n = i / 50;
    format!("127.0.{}.{}", first + n / 250, 1 + n % 250)
}

/// Whether the server closed this connection.
fn gone(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn hold(to: SocketAddr, count: usize, first: usize, seconds: u64) {
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut open: Vec<Option<TcpStream>> =
        (0..count).map(|i| connect(to, &source(first, i))).collect();
    let (mut reopened, mut peak) = (0usize, 0usize);
    while Instant::now() < end {
        let mut alive = 0;
        for (i, slot) in open.iter_mut().enumerate() {
            if slot.as_mut().is_none_or(gone) {
                *slot = connect(to, &source(first, i));
                reopened += 1;
            }
            alive += usize::from(slot.is_some());
        }
        peak = peak.max(alive);
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "flood: {count} silent connections held for {seconds} s, {reopened} reopened after the server closed them, at most {peak} connected at once"
    );
}

fn health(to: SocketAddr, seconds: u64) {
    let end = Instant::now() + Duration::from_secs(seconds);
    let (mut times, mut failed) = (Vec::new(), 0usize);
    while Instant::now() < end {
        let t = Instant::now();
        let ok = (|| -> std::io::Result<bool> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply.starts_with("HTTP/1.1 200"))
        })()
        .unwrap_or(false);
        if ok {
            times.push(t.elapsed());
        } else {
            failed += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    times.sort();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "health: {} answered, {failed} failed; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let to: SocketAddr = arg(2).parse().expect("ADDR is IP:PORT");
    assert!(to.ip().is_loopback(), "the flood targets loopback only");
    match arg(1) {
        "hold" => hold(
            to,
            arg(3).parse().expect("COUNT"),
            arg(4).parse().expect("FIRST"),
            arg(5).parse().expect("SECONDS"),
        ),
        "health" => health(to, arg(3).parse().expect("SECONDS")),
        _ => eprintln!("usage: flood hold ADDR COUNT FIRST SECONDS | flood health ADDR SECONDS"),
    }
}
