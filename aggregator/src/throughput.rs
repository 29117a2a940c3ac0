//! The throughput server for the probe's `throttling` test (`serve --throughput-listen ADDR`).
//!
//! A probe downloads the same payload from here twice, once with a target's SNI and once with a
//! control SNI (IMC 2021, "Throttling Twitter"; DESIGN "Tests the probe runs"). The server must
//! therefore answer whatever name is asked for with its one certificate; probes pin that
//! certificate (its SHA-256, published by `GET /api/v1/throughput`) instead of checking names.
//!
//! The certificate is self-signed, made on first start and kept beside the database
//! (`<db>.throughput.crt`, `<db>.throughput.key`), so the pin stays the same across restarts.
//!
//! Protocol: after the handshake the client sends `GET /payload/<bytes> HTTP/1.1` and headers;
//! the server answers 200 with that many random (incompressible) bytes, at most
//! [`MAX_PAYLOAD_BYTES`], and closes. Anything else gets a 400 and the connection is closed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use vantage_probe::engine::tls::CertPin;
use vantage_probe::throttling::{MAX_PAYLOAD_BYTES, PAYLOAD_PATH, ServerInfo};

use crate::tls::{HANDSHAKE_TIMEOUT, TlsError, server_config};

/// Connections served at once; more are closed at once. Each costs a payload's worth of upload
/// bandwidth, so a handful of probes at a time is what a small server can measure fairly.
const MAX_CONNECTIONS: usize = 64;
/// How long the client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one payload may take to send: the slowest throttled download a probe waits for
/// is far shorter.
const SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// Random bytes repeated to make a payload.
const BLOCK_BYTES: usize = 64 * 1024;

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
        })
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
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (tcp, _) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("throughput accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let (acceptor, block) = (self.acceptor.clone(), self.block.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_one(tcp, acceptor, &block).await {
                    tracing::debug!("throughput connection: {e}");
                }
                drop(permit);
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

async fn serve_one(tcp: TcpStream, acceptor: TlsAcceptor, block: &[u8]) -> io::Result<()> {
    let timed_out = |what: &str| io::Error::new(io::ErrorKind::TimedOut, what.to_string());
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| timed_out("handshake"))??;
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut tls))
        .await
        .map_err(|_| timed_out("request"))??;
    let bytes = match parse_request(&head) {
        Ok(n) => n,
        Err(reason) => {
            let body = format!("{reason}\n");
            let reply = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tls.write_all(reply.as_bytes()).await?;
            return tls.shutdown().await;
        }
    };
    let send = async {
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {bytes}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await?;
        let mut left = bytes as usize;
        while left > 0 {
            let n = left.min(block.len());
            tls.write_all(&block[..n]).await?;
            left -= n;
        }
        tls.shutdown().await
    };
    tokio::time::timeout(SEND_TIMEOUT, send)
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
}
