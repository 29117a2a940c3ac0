//! One HTTP request over a connection the engine makes itself: DNS-over-HTTPS queries, calls
//! to a test helper, uploads and whoami. Going through our own steps, rather than a client
//! library, means a failure here is classified exactly like one in a measurement.
//!
//! Uploads may go through a SOCKS5 proxy (RFC 1928), e.g. Tor's: the host name is sent to the
//! proxy unresolved (address type 3), so no DNS query for the aggregator leaves the probe.
//! Measurements never use the proxy; they must see the network as it is.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use url::Url;

use super::{EngineConfig, TlsContext, Trace, dns, http as http_step, tcp, tls};
use crate::failure::{Operation, StepError};

/// What to send.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// `GET`, `POST`, ...
    pub method: Method,
    /// Where to.
    pub url: &'a Url,
    /// Request body and its `Content-Type`.
    pub body: Option<(Vec<u8>, &'a str)>,
    /// `Accept` header.
    pub accept: &'a str,
    /// Deadline for the HTTP exchange (connect and handshake have their own).
    pub timeout: Duration,
    /// Largest response body read.
    pub body_cap: usize,
    /// SOCKS5 proxy to connect through.
    pub socks5: Option<SocketAddr>,
    /// Further request headers (an upload's relay header, `crate::relay_proof`).
    pub headers: Vec<(&'static str, String)>,
}

impl<'a> Call<'a> {
    /// A POST of `body`.
    pub fn post(url: &'a Url, body: Vec<u8>, content_type: &'a str, accept: &'a str) -> Self {
        Call {
            method: Method::POST,
            url,
            body: Some((body, content_type)),
            accept,
            timeout: Duration::from_secs(30),
            body_cap: 1 << 20,
            socks5: None,
            headers: Vec::new(),
        }
    }

    /// A GET.
    pub fn get(url: &'a Url, accept: &'a str) -> Self {
        Call {
            method: Method::GET,
            url,
            body: None,
            accept,
            timeout: Duration::from_secs(30),
            body_cap: 1 << 20,
            socks5: None,
            headers: Vec::new(),
        }
    }
}

/// Status code and body of the response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers (`Retry-After` on a 429 or 503 tells the uploader how long to wait).
    pub headers: http::HeaderMap,
    /// Body, up to the cap.
    pub body: Vec<u8>,
}

/// Sends `call`, trying each address of the URL's host in turn until one connects (or through
/// the proxy, which resolves the name itself).
pub async fn send(
    call: Call<'_>,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
) -> Result<Reply, StepError> {
    let url = call.url;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(443);
    let mut last_error = None;
    let routes: Vec<Route> = match call.socks5 {
        Some(proxy) => vec![Route::Socks5(proxy)],
        None => match host.parse::<IpAddr>() {
            Ok(ip) => vec![Route::Direct(SocketAddr::new(ip, port))],
            Err(_) => dns::resolve_system(host, config.timeouts.dns, trace)
                .await?
                .into_iter()
                .map(|ip| Route::Direct(SocketAddr::new(ip, port)))
                .collect(),
        },
    };
    for route in routes {
        let (addr, stream) = match route {
            Route::Direct(addr) => {
                let (_, stream) = tcp::connect(
                    addr,
                    config.local_addr,
                    trace,
                    config.timeouts.tcp_connect,
                    None,
                    0,
                )
                .await;
                (addr, stream)
            }
            Route::Socks5(proxy) => {
                let stream = tokio::time::timeout(
                    config.timeouts.tcp_connect,
                    socks5_connect(proxy, host, port),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(StepError::Timeout {
                        op: Operation::Connect,
                        target: proxy.to_string(),
                        after: config.timeouts.tcp_connect,
                    })
                });
                (proxy, stream)
            }
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let (body, content_type) = call.body.clone().unwrap_or_default();
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(http_step::origin_form(url))
            .header("Host", http_step::host_header(url))
            .header("Accept", call.accept)
            .header("User-Agent", concat!("vantage/", env!("CARGO_PKG_VERSION")));
        if call.body.is_some() {
            builder = builder.header("Content-Type", content_type);
        }
        for (name, value) in &call.headers {
            builder = builder.header(*name, value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| StepError::Io {
                op: Operation::HttpRoundTrip,
                target: url.to_string(),
                source: std::io::Error::other(e),
            })?;
        let peer = addr.to_string();
        let exchange = if url.scheme() == "https" {
            let spec = tls::HandshakeSpec {
                server_name: host,
                addr,
                alpn: &[b"http/1.1"],
                timeout: config.timeouts.tls_handshake,
                tags: None,
                transaction_id: 0,
            };
            match tls::handshake(tls_ctx, stream, spec, trace).await.result {
                Ok(s) => http_step::exchange(s, request, &peer, call.timeout, call.body_cap).await,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            }
        } else {
            http_step::exchange(stream, request, &peer, call.timeout, call.body_cap).await
        };
        if let Some(e) = exchange.error {
            return Err(e);
        }
        let (status, headers) = exchange
            .head
            .map(|h| (h.status.as_u16(), h.headers))
            .unwrap_or_default();
        return Ok(Reply {
            status,
            headers,
            body: exchange.body,
        });
    }
    Err(last_error.unwrap_or_else(|| StepError::Getaddrinfo {
        host: host.to_string(),
        kind: crate::failure::GaiError::NoData,
        code: 0,
    }))
}

enum Route {
    Direct(SocketAddr),
    Socks5(SocketAddr),
}

/// RFC 1928: no authentication, then CONNECT to `host:port` by name.
async fn socks5_connect(proxy: SocketAddr, host: &str, port: u16) -> Result<TcpStream, StepError> {
    let io = |source: std::io::Error| StepError::Io {
        op: Operation::Connect,
        target: proxy.to_string(),
        source,
    };
    let refused = |why: String| io(std::io::Error::other(format!("SOCKS5 proxy {why}")));
    let mut s = TcpStream::connect(proxy).await.map_err(io)?;
    s.write_all(&[5, 1, 0]).await.map_err(io)?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await.map_err(io)?;
    if choice != [5, 0] {
        return Err(refused("requires authentication we do not offer".into()));
    }
    let name = host.as_bytes();
    let len = u8::try_from(name.len()).map_err(|_| refused("host name too long".into()))?;
    let mut request = vec![5, 1, 0, 3, len];
    request.extend_from_slice(name);
    request.extend_from_slice(&port.to_be_bytes());
    s.write_all(&request).await.map_err(io)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.map_err(io)?;
    if head[1] != 0 {
        return Err(refused(format!(
            "refused the connection (reply {})",
            head[1]
        )));
    }
    // Skip the bound address: IPv4, a name, or IPv6, then the port.
    let skip = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l).await.map_err(io)?;
            usize::from(l[0])
        }
        t => return Err(refused(format!("sent address type {t}"))),
    };
    let mut rest = vec![0u8; skip + 2];
    s.read_exact(&mut rest).await.map_err(io)?;
    Ok(s)
}
