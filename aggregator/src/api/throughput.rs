//! The throughput server for the probe's `throttling` test (`serve --throughput-listen ADDR`).
//!
//! A probe downloads the same payload from here twice, once with a target's SNI and once with a
//! control SNI (IMC 2021, "Throttling Twitter"; README.md, "Throttling"). The server must
//! therefore answer whatever name is asked for with its one certificate; probes pin that
//! certificate (its SHA-256, published by `GET /api/v1/throughput`) instead of checking names.
//!
//! The certificate is self-signed, made on first start and kept beside the database
//! (`<db>.throughput.crt`, `<db>.throughput.key`), so the pin stays the same across restarts.
//!
//! Protocol: after the handshake the client sends `GET /payload/<bytes> HTTP/1.1` and headers;
//! the server answers 200 with that many random (incompressible) bytes, at most
//! [`MAX_PAYLOAD_BYTES`], and closes. Anything else gets a 400 and the connection is closed.
//!
//! Resources (see [`Limits`]): the server serves a bounded number of connections at once, and a
//! bounded number from any one source, so that a few idle sockets cannot lock every probe out
//! of the test. A connection over its source's cap is closed as soon as it is accepted. At the
//! global cap, a new connection takes the place of the oldest one that has not sent its request
//! yet (as the aggregator's own accept loop does, `listen.rs`); only when every connection is
//! busy downloading is the new one closed. Every step has a deadline (handshake, request, each
//! write), so a connection that stops making progress gives its slot back within seconds.
//! Source addresses are counted in memory only, while their connections last; they are never
//! logged or stored.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use vantage_probe::engine::tls::CertPin;
use vantage_probe::throttling::{MAX_PAYLOAD_BYTES, PAYLOAD_PATH, ServerInfo};

use crate::api::admission::Slots;
use crate::api::tls::{TlsError, server_config};

/// Random bytes repeated to make a payload.
const BLOCK_BYTES: usize = 64 * 1024;
/// Bytes handed to TLS per write, so that [`Limits::stall`] measures progress in small steps.
const WRITE_BYTES: usize = 16 * 1024;

/// How many connections the server holds and for how long each may go without progress.
///
/// The probe downloads one payload at a time over a fresh connection, finishes its handshake and
/// sends its request within a round trip or two, and stops reading after its
/// `Settings::max_download` (8 s; `vantage_probe::throttling`). Everything here is several times
/// what such a probe needs, and short enough that a connection doing nothing gives its slot back
/// within seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once. Each costs a payload's worth of upload bandwidth, so a few
    /// dozen probes at a time is what a small server can measure fairly. At the cap a new
    /// connection evicts the oldest one still in its handshake or request, or is closed at once
    /// when there is none.
    pub connections: usize,
    /// Connections served at once from one source: an IPv4 address, or an IPv6 /64, the
    /// smallest prefix a single subscriber is usually given (RFC 6177 section 3), so that one
    /// host cannot take every slot by cycling through its own addresses. Probes behind one
    /// carrier-grade NAT share an address, and each runs one download at a time, so a few are
    /// enough; `connections / per_source` sources are needed to fill the server.
    pub per_source: usize,
    /// From accept to the end of the TLS handshake.
    pub handshake: Duration,
    /// From the end of the handshake to the end of the request head.
    pub request: Duration,
    /// Longest wait for one write of [`WRITE_BYTES`] (or the close) to be taken by the
    /// connection: a client that stops reading is dropped after this.
    pub stall: Duration,
    /// Longest time to send one whole answer.
    pub send: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 64,
            per_source: 4,
            handshake: Duration::from_secs(5),
            request: Duration::from_secs(5),
            stall: Duration::from_secs(10),
            send: Duration::from_secs(30),
        }
    }
}

/// Setting up the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ThroughputError {
    /// Creating or writing the certificate failed.
    #[error("cannot create the throughput certificate {path}: {reason}")]
    Create {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The stored certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding the port failed.
    #[error("cannot listen for throughput tests on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A bound throughput server, ready to run.
pub struct ThroughputServer {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pin: CertPin,
    block: Arc<Vec<u8>>,
    limits: Limits,
}

impl ThroughputServer {
    /// Loads (or makes, on first use) the certificate beside `db` and binds `addr`.
    pub async fn bind(
        addr: std::net::SocketAddr,
        db: &Path,
    ) -> Result<ThroughputServer, ThroughputError> {
        let (cert, key) = files(db);
        if !cert.exists() || !key.exists() {
            create(&cert, &key)?;
        }
        let config = server_config(&cert, &key)?;
        let first = CertificateDer::pem_file_iter(&cert)
            .ok()
            .and_then(|mut it| it.next())
            .and_then(Result::ok)
            .ok_or_else(|| TlsError::Cert {
                path: cert.display().to_string(),
                reason: "no CERTIFICATE block".into(),
            })?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ThroughputError::Listen { addr, source })?;
        let mut block = vec![0u8; BLOCK_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut block)
            .map_err(|_| ThroughputError::Create {
                path: "payload".into(),
                reason: "no system randomness".into(),
            })?;
        Ok(ThroughputServer {
            listener,
            acceptor: TlsAcceptor::from(config),
            pin: CertPin::of(first.as_ref()),
            block: Arc::new(block),
            limits: Limits::default(),
        })
    }

    /// The same server with other limits (tests use short deadlines).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where it listens.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// What `GET /api/v1/throughput` publishes.
    pub fn info(&self) -> io::Result<ServerInfo> {
        Ok(ServerInfo {
            port: self.local_addr()?.port(),
            cert_sha256: self.pin.to_string(),
            max_payload_bytes: MAX_PAYLOAD_BYTES,
        })
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        let slots = Arc::new(Slots::new(self.limits.connections, self.limits.per_source));
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("throughput accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Over a cap: dropping the socket closes it at once. The address is not logged.
            let slot = match slots.take(peer.ip()) {
                Ok(slot) => slot,
                Err(full) => {
                    tracing::debug!("throughput connection refused: {full}");
                    continue;
                }
            };
            let (acceptor, block, limits) =
                (self.acceptor.clone(), self.block.clone(), self.limits);
            tokio::spawn(async move {
                let served = serve_one(tcp, acceptor, &block, &limits, || slot.busy());
                tokio::select! {
                    result = served => {
                        if let Err(e) = result {
                            tracing::debug!("throughput connection: {e}");
                        }
                    }
                    () = slot.evicted() => {
                        tracing::debug!("throughput connection closed to make room for a new one");
                    }
                }
                drop(slot);
            });
        }
    }
}

/// `<db>.throughput.crt` and `<db>.throughput.key`.
fn files(db: &Path) -> (PathBuf, PathBuf) {
    let base = db.display().to_string();
    (
        PathBuf::from(format!("{base}.throughput.crt")),
        PathBuf::from(format!("{base}.throughput.key")),
    )
}

fn create(cert: &Path, key: &Path) -> Result<(), ThroughputError> {
    let fail = |path: &Path, reason: String| ThroughputError::Create {
        path: path.display().to_string(),
        reason,
    };
    let pair = rcgen::KeyPair::generate().map_err(|e| fail(key, e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec!["throughput.vantage.invalid".to_string()])
        .map_err(|e| fail(cert, e.to_string()))?;
    let made = params
        .self_signed(&pair)
        .map_err(|e| fail(cert, e.to_string()))?;
    write_private(key, pair.serialize_pem().as_bytes()).map_err(|e| fail(key, e.to_string()))?;
    std::fs::write(cert, made.pem()).map_err(|e| fail(cert, e.to_string()))?;
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Serves one connection, every step under its deadline in `limits`; calls `on_request` once
/// the request head has arrived.
async fn serve_one<IO>(
    io: IO,
    acceptor: TlsAcceptor,
    block: &[u8],
    limits: &Limits,
    on_request: impl FnOnce(),
) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let timed_out = |what: &str| io::Error::new(io::ErrorKind::TimedOut, what.to_string());
    let mut tls = tokio::time::timeout(limits.handshake, acceptor.accept(io))
        .await
        .map_err(|_| timed_out("handshake"))??;
    let head = tokio::time::timeout(limits.request, read_head(&mut tls))
        .await
        .map_err(|_| timed_out("request"))??;
    on_request();
    let stall = limits.stall;
    let bytes = match parse_request(&head) {
        Ok(n) => n,
        Err(reason) => {
            let body = format!("{reason}\n");
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return tokio::time::timeout(stall, async {
                tls.write_all(reply.as_bytes()).await?;
                tls.shutdown().await
            })
            .await
            .map_err(|_| timed_out("send stalled"))?;
        }
    };
    let send = async {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {bytes}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        );
        tokio::time::timeout(stall, tls.write_all(head.as_bytes()))
            .await
            .map_err(|_| timed_out("send stalled"))??;
        let mut left = usize::try_from(bytes).unwrap_or(usize::MAX);
        while left > 0 {
            let n = left.min(block.len()).min(WRITE_BYTES);
            tokio::time::timeout(stall, tls.write_all(&block[..n]))
                .await
                .map_err(|_| timed_out("send stalled"))??;
            left -= n;
        }
        tokio::time::timeout(stall, tls.shutdown())
            .await
            .map_err(|_| timed_out("send stalled"))?
    };
    tokio::time::timeout(limits.send, send)
        .await
        .map_err(|_| timed_out("send"))?
}

/// Reads up to the blank line ending the request head (at most 8 KiB).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the request ended",
            ));
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > 8 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head over 8 KiB",
            ));
        }
    }
}

/// The payload size asked for by `GET /payload/<bytes> HTTP/1.x`.
fn parse_request(head: &[u8]) -> Result<u64, String> {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| "request line is not UTF-8".to_string())?;
    let mut parts = line.split(' ');
    let (Some("GET"), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("expected GET {PAYLOAD_PATH}<bytes> HTTP/1.1"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported version {version:?}"));
    }
    let n: u64 = path
        .strip_prefix(PAYLOAD_PATH)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("expected {PAYLOAD_PATH}<bytes>, got {path:?}"))?;
    if n == 0 || n > MAX_PAYLOAD_BYTES {
        return Err(format!("payload must be 1 to {MAX_PAYLOAD_BYTES} bytes"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_and_bounded() {
        assert_eq!(
            parse_request(b"GET /payload/160000 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(160_000)
        );
        for (bad, want) in [
            (&b"POST /payload/1 HTTP/1.1\r\n\r\n"[..], "expected GET"),
            (b"GET /payload/x HTTP/1.1\r\n\r\n", "expected /payload/"),
            (b"GET /payload/0 HTTP/1.1\r\n\r\n", "1 to 1048576"),
            (b"GET /payload/1048577 HTTP/1.1\r\n\r\n", "1 to 1048576"),
            (b"GET /payload/5 SPDY/3\r\n\r\n", "unsupported version"),
            (b"\xff\xfe\r\n\r\n", "not UTF-8"),
            (b"GET /payload/5 HTTP/1.1 extra\r\n\r\n", "expected GET"),
        ] {
            let err = parse_request(bad).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
    }

    #[tokio::test]
    async fn the_certificate_is_made_once_and_its_pin_is_stable() {
        let dir = std::env::temp_dir().join(format!("vantage-tput-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("agg.db");
        let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
        let a = ThroughputServer::bind(any, &db).await.expect("first");
        let b = ThroughputServer::bind(any, &db).await.expect("second");
        assert_eq!(a.pin, b.pin);
        let (_, key) = files(&db);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A damaged certificate is an error naming the file, and is not replaced.
        let (cert, _) = files(&db);
        std::fs::write(&cert, "garbage").expect("write");
        let err = ThroughputServer::bind(any, &db)
            .await
            .err()
            .expect("damaged");
        assert!(err.to_string().contains("throughput.crt"), "{err}");
        assert_eq!(std::fs::read_to_string(&cert).expect("read"), "garbage");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A server on 127.0.0.1 with `limits`, running until the test ends; (address, pin).
    async fn start(limits: Limits, name: &str) -> (std::net::SocketAddr, CertPin) {
        let dir = std::env::temp_dir().join(format!("vantage-tput-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let server = ThroughputServer::bind(([127, 0, 0, 1], 0).into(), &dir.join("agg.db"))
            .await
            .expect("bind")
            .with_limits(limits);
        let (addr, pin) = (server.local_addr().expect("addr"), server.pin);
        tokio::spawn(server.run());
        (addr, pin)
    }

    /// A TCP connection to `to` from `from`.
    async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((from, 0).into()).expect("bind source");
        socket.connect(to).await.expect("connect")
    }

    /// How long until the server closes `s`, which sends nothing; None if not within `wait`.
    async fn closed_after(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<Duration> {
        let t0 = std::time::Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match tokio::time::timeout(wait, s.read(&mut buf)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(t0.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The probe's pinned TLS handshake to the server at `addr` over `tcp`, with `sni`.
    async fn pinned_handshake(
        tcp: tokio::net::TcpStream,
        addr: std::net::SocketAddr,
        sni: &str,
        pin: CertPin,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        use vantage_probe::engine::tls::{HandshakeSpec, handshake_pinned};
        let ctx = vantage_probe::engine::TlsContext::new(vec![]).expect("tls context");
        let spec = HandshakeSpec {
            server_name: sni,
            addr,
            alpn: &[b"http/1.1"],
            timeout: Duration::from_secs(5),
            tags: None,
            transaction_id: 1,
        };
        let trace = vantage_probe::engine::Trace::new();
        handshake_pinned(&ctx, tcp, spec, pin, &trace)
            .await
            .result
            .expect("pinned handshake")
    }

    /// Downloads `bytes` from the server from 127.0.0.1 as the probe does; the bytes received.
    async fn download(addr: std::net::SocketAddr, pin: CertPin, bytes: u64) -> usize {
        let tcp = connect_from([127, 0, 0, 1], addr).await;
        let mut tls = pinned_handshake(tcp, addr, "twitter.com", pin).await;
        tls.write_all(format!("GET /payload/{bytes} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("request");
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut reply)).await;
        let head_end = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response head");
        assert!(reply.starts_with(b"HTTP/1.1 200 OK"), "{reply:?}");
        reply.len() - head_end - 4
    }

    const SHORT: Limits = Limits {
        connections: 4,
        per_source: 2,
        handshake: Duration::from_millis(400),
        request: Duration::from_millis(400),
        stall: Duration::from_millis(400),
        send: Duration::from_secs(5),
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_sockets_from_one_source_cannot_lock_others_out() {
        let (addr, pin) = start(SHORT, "idle").await;
        let mut idle = Vec::new();
        for _ in 0..6 {
            idle.push(connect_from([127, 0, 0, 2], addr).await);
        }
        // The source's two slots are taken; its other connections are closed at once.
        let mut closed_at_once = 0;
        for s in idle.iter_mut().skip(2) {
            if closed_after(s, Duration::from_millis(200)).await.is_some() {
                closed_at_once += 1;
            }
        }
        assert_eq!(closed_at_once, 4, "over the per-source cap");
        // Another source still downloads while those two sit idle.
        assert_eq!(download(addr, pin, 100_000).await, 100_000);
        // The two idle ones are closed by the handshake deadline, not before.
        for s in idle.iter_mut().take(2) {
            let after = closed_after(s, Duration::from_secs(3))
                .await
                .expect("closed by the handshake deadline");
            assert!(after <= Duration::from_millis(1500), "{after:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_the_cap_a_probe_takes_the_place_of_the_oldest_idle_socket() {
        let limits = Limits {
            // Long enough that no deadline frees a slot during the test.
            handshake: Duration::from_secs(5),
            ..SHORT
        };
        let (addr, pin) = start(limits, "full").await;
        // Every slot held by idle sockets from two sources, oldest first.
        let mut held = Vec::new();
        for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
            for _ in 0..2 {
                held.push(connect_from(source, addr).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let t0 = std::time::Instant::now();
        assert_eq!(download(addr, pin, 20_000).await, 20_000);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        // The oldest idle socket made room; the others are still open.
        closed_after(&mut held[0], Duration::from_millis(500))
            .await
            .expect("the oldest idle socket was closed");
        for s in &mut held[1..] {
            assert_eq!(closed_after(s, Duration::from_millis(300)).await, None);
        }
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_handshake_or_request_deadline() {
        let dir = std::env::temp_dir().join(format!("vantage-tput-silent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let server = ThroughputServer::bind(([127, 0, 0, 1], 0).into(), &dir.join("agg.db"))
            .await
            .expect("bind");
        let (listener, acceptor, block) = (server.listener, server.acceptor, server.block);
        let addr = listener.local_addr().expect("addr");
        // No ClientHello.
        let _client = connect_from([127, 0, 0, 1], addr).await;
        let (tcp, _) = listener.accept().await.expect("accept");
        let t0 = std::time::Instant::now();
        let err = serve_one(tcp, acceptor.clone(), &block, &SHORT, || ())
            .await
            .expect_err("silent");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "handshake");
        assert!(t0.elapsed() < Duration::from_secs(2));
        // A handshake, then no request.
        let client = tokio::spawn(async move {
            let tcp = connect_from([127, 0, 0, 1], addr).await;
            let tls = pinned_handshake(tcp, addr, "x.example", server.pin).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(tls);
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let err = serve_one(tcp, acceptor, &block, &SHORT, || ())
            .await
            .expect_err("no request");
        assert_eq!(err.to_string(), "request");
        client.abort();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_stall_deadline() {
        let dir = std::env::temp_dir().join(format!("vantage-tput-stall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let server = ThroughputServer::bind(([127, 0, 0, 1], 0).into(), &dir.join("agg.db"))
            .await
            .expect("bind");
        let (listener, acceptor, block) = (server.listener, server.acceptor, server.block);
        let addr = listener.local_addr().expect("addr");
        let pin = server.pin;
        let client = tokio::spawn(async move {
            // Small buffers on both ends, so the kernel cannot take the whole payload for us.
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("rcvbuf");
            let tcp = socket.connect(addr).await.expect("connect");
            let mut tls = pinned_handshake(tcp, addr, "x.example", pin).await;
            tls.write_all(format!("GET /payload/{MAX_PAYLOAD_BYTES} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .expect("request");
            // ... and never read.
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(tls);
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        socket2::SockRef::from(&tcp)
            .set_send_buffer_size(4096)
            .expect("sndbuf");
        let t0 = std::time::Instant::now();
        let err = serve_one(tcp, acceptor, &block, &SHORT, || ())
            .await
            .expect_err("stalled");
        assert_eq!(err.to_string(), "send stalled");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        client.abort();
        std::fs::remove_dir_all(&dir).ok();
    }
}
