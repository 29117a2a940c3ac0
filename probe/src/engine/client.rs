//! One HTTP POST over a connection the engine makes itself: for DNS-over-HTTPS queries and for
//! calls to a test helper. Going through our own steps, rather than a client library, means a
//! failure here is classified exactly like one in a measurement.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use url::Url;

use super::{EngineConfig, TlsContext, Trace, dns, http as http_step, tcp, tls};
use crate::failure::{Operation, StepError};

/// What to send.
#[derive(Debug, Clone)]
pub struct Post<'a> {
    /// Where to.
    pub url: &'a Url,
    /// Request body.
    pub body: Vec<u8>,
    /// `Content-Type` of the body.
    pub content_type: &'a str,
    /// `Accept` header.
    pub accept: &'a str,
    /// Deadline for the HTTP exchange (connect and handshake have their own).
    pub timeout: Duration,
    /// Largest response body read.
    pub body_cap: usize,
}

/// Status code and body of the response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body, up to the cap.
    pub body: Vec<u8>,
}

/// Sends `post`, trying each address of the URL's host in turn until one connects.
pub async fn post(
    post: Post<'_>,
    config: &EngineConfig,
    tls_ctx: &TlsContext,
    trace: &Trace,
) -> Result<Reply, StepError> {
    let url = post.url;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(443);
    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => dns::resolve_system(host, config.timeouts.dns, trace).await?,
    };
    let mut last_error = None;
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        let (_, stream) = tcp::connect(
            addr,
            config.local_addr,
            trace,
            config.timeouts.tcp_connect,
            None,
            0,
        )
        .await;
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let request = Request::post(http_step::origin_form(url))
            .header("Host", http_step::host_header(url))
            .header("Content-Type", post.content_type)
            .header("Accept", post.accept)
            .header("User-Agent", concat!("vantage/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(post.body.clone())))
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
                Ok(s) => http_step::exchange(s, request, &peer, post.timeout, post.body_cap).await,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            }
        } else {
            http_step::exchange(stream, request, &peer, post.timeout, post.body_cap).await
        };
        if let Some(e) = exchange.error {
            return Err(e);
        }
        let status = exchange.head.map(|h| h.status.as_u16()).unwrap_or(0);
        return Ok(Reply {
            status,
            body: exchange.body,
        });
    }
    Err(last_error.unwrap_or_else(|| StepError::Getaddrinfo {
        host: host.to_string(),
        kind: crate::failure::GaiError::NoData,
        code: 0,
    }))
}
