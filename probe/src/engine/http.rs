//! HTTP over the connection the engine made (df-001-httpt), with hyper's connection API.
//!
//! hyper's low-level client adds nothing of its own: no pool, no redirects, no extra headers. So
//! what we record is what went over the wire. The body is read frame by frame up to a cap
//! (OONI: 512 KiB) and a failure mid-body keeps what arrived before it; a body cut by the
//! deadline is marked so in `x_transfer` (`cut_at_deadline`, `cut_ms`), its samples up to the
//! cut kept (`docs/scoring.md`, "A page still arriving at the deadline").

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use regex::bytes::Regex;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use url::Url;

use super::Trace;
use crate::failure::{Operation, StepError};
use crate::ooni::{HttpRequest, HttpResponse, HttpTransaction, MaybeBinary};

/// Headers of a desktop Chrome, as OONI sends them (`model.HTTPHeaderUserAgent` and friends), so
/// that servers and middleboxes treat us as they treat a browser.
pub const BROWSER_HEADERS: [(&str, &str); 3] = [
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("Accept-Language", "en-US,en;q=0.9"),
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
    ),
];

/// The raw result of one exchange: what arrived, and the error that ended it, if any.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Status and headers, if they arrived.
    pub head: Option<http::response::Parts>,
    /// Body bytes received, up to the cap.
    pub body: Vec<u8>,
    /// Whether reading stopped at the cap.
    pub truncated: bool,
    /// What ended the exchange early.
    pub error: Option<StepError>,
    /// Timing and progress, once the response head arrived.
    pub transfer: Option<crate::ooni::Transfer>,
}

/// Sends `request` over `io` and reads the response within `timeout`.
pub async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
    peer: &str,
    timeout: Duration,
    body_cap: usize,
) -> Exchange
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let deadline = Instant::now() + timeout;
    let timed_out = || StepError::Timeout {
        op: Operation::HttpRoundTrip,
        target: peer.to_string(),
        after: timeout,
    };
    let hyper_error = |source: hyper::Error| StepError::Http {
        addr: peer.to_string(),
        source,
    };
    let mut out = Exchange::default();

    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(io));
    let (mut sender, conn) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            out.error = Some(hyper_error(e));
            return out;
        }
        Err(_) => {
            out.error = Some(timed_out());
            return out;
        }
    };
    let driver = tokio::spawn(conn);

    let sent = Instant::now();
    let ms = || u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
    let response: Response<Incoming> =
        match tokio::time::timeout_at(deadline, sender.send_request(request)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                out.error = Some(hyper_error(e));
                driver.abort();
                return out;
            }
            Err(_) => {
                out.error = Some(timed_out());
                driver.abort();
                return out;
            }
        };
    let (head, mut body) = response.into_parts();
    out.head = Some(head);
    let mut transfer = crate::ooni::Transfer {
        ttfb_ms: ms(),
        ..Default::default()
    };
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let room = body_cap.saturating_sub(out.body.len());
                    out.body.extend_from_slice(&data[..data.len().min(room)]);
                    transfer.record(ms(), out.body.len() as u64);
                    if data.len() > room {
                        out.truncated = true;
                        break;
                    }
                }
            }
            Ok(Some(Err(e))) => {
                out.error = Some(hyper_error(e));
                break;
            }
            Ok(None) => break,
            Err(_) => {
                // The body was cut by the deadline: what arrived, and when, is kept, so that a
                // page still arriving at a policer's rate is told from one that stalled.
                transfer.cut(ms());
                out.error = Some(timed_out());
                break;
            }
        }
    }
    driver.abort();
    transfer.finish(out.body.len() as u64);
    out.transfer = Some(transfer);
    out
}

/// One GET and its record; `next` is the redirect target, if the response is a redirect.
#[derive(Debug)]
pub struct Fetch {
    /// The record for `requests`.
    pub record: HttpTransaction,
    /// Why the fetch failed, if it did.
    pub error: Option<StepError>,
    /// Where a 3xx response points.
    pub next: Option<Result<Url, StepError>>,
}

/// Inputs of one GET.
#[derive(Debug, Clone)]
pub struct GetSpec<'a> {
    /// The URL requested.
    pub url: &'a Url,
    /// `ip:port` of the connection.
    pub peer: String,
    /// ALPN the TLS handshake negotiated, if any.
    pub alpn: Option<String>,
    /// Deadline for the whole exchange.
    pub timeout: Duration,
    /// Body cap.
    pub body_cap: usize,
    /// Tags for the record.
    pub tags: Option<Vec<String>>,
    /// Transaction id shared with the connection.
    pub transaction_id: i64,
}

/// GETs `spec.url` over `io` with browser-like headers.
pub async fn get<IO>(io: IO, spec: GetSpec<'_>, trace: &Trace) -> Fetch
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let url = spec.url;
    let mut headers_list: Vec<(String, String)> = BROWSER_HEADERS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    headers_list.insert(2, ("Host".to_string(), host_header(url)));

    let mut builder = Request::get(origin_form(url));
    for (k, v) in &headers_list {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request_record = HttpRequest {
        body: Some(MaybeBinary::default()),
        body_is_truncated: Some(false),
        headers: headers_list
            .iter()
            .map(|(k, v)| (k.clone(), MaybeBinary::Text(v.clone())))
            .collect(),
        headers_list: Some(
            headers_list
                .into_iter()
                .map(|(k, v)| (k, MaybeBinary::Text(v)))
                .collect(),
        ),
        method: "GET".into(),
        tor: Some(serde_json::json!({"exit_ip": null, "exit_name": null, "is_tor": false})),
        x_transport: Some("tcp".into()),
        url: url.to_string(),
        extra: Map::new(),
    };

    let t0 = trace.clock.secs();
    let exchange = match builder.body(Full::new(Bytes::new())) {
        Ok(request) => exchange(io, request, &spec.peer, spec.timeout, spec.body_cap).await,
        Err(e) => Exchange {
            error: Some(StepError::BadRedirect {
                location: format!("{url}: {e}"),
            }),
            ..Exchange::default()
        },
    };
    let t = trace.clock.secs();

    let next = exchange
        .head
        .as_ref()
        .and_then(|head| redirect_target(url, head));
    let response = Some(response_record(&exchange));
    let record = HttpTransaction {
        network: Some("tcp".into()),
        address: Some(spec.peer),
        alpn: spec.alpn,
        failure: exchange.error.as_ref().map(|e| e.failure().to_string()),
        request: request_record,
        response,
        t0: Some(t0),
        t: Some(t),
        tags: spec.tags,
        transaction_id: Some(spec.transaction_id),
        extra: Map::new(),
    };
    Fetch {
        record,
        error: exchange.error,
        next,
    }
}

fn response_record(exchange: &Exchange) -> HttpResponse {
    let mut headers_list = Vec::new();
    let mut headers = BTreeMap::new();
    let mut code = 0;
    if let Some(head) = &exchange.head {
        code = i64::from(head.status.as_u16());
        for (name, value) in &head.headers {
            let name = canonical_header_name(name.as_str());
            let value = MaybeBinary::from_bytes(value.as_bytes());
            headers.insert(name.clone(), value.clone());
            headers_list.push((name, value));
        }
    }
    let received = exchange.head.is_some();
    HttpResponse {
        body: Some(MaybeBinary::from_bytes(&exchange.body)),
        body_is_truncated: Some(exchange.truncated),
        code: Some(code),
        headers_list: Some(headers_list),
        headers,
        x_body_length: received.then_some(exchange.body.len() as u64),
        x_body_sha256: received.then(|| sha256_hex(&exchange.body)),
        x_title: title(&exchange.body),
        x_transfer: exchange.transfer.clone(),
        extra: Map::<String, Value>::new(),
    }
}

/// The target of a redirect (RFC 9110 section 15.4), resolved against the current URL.
fn redirect_target(base: &Url, head: &http::response::Parts) -> Option<Result<Url, StepError>> {
    let redirect = matches!(
        head.status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !redirect {
        return None;
    }
    let location = head.headers.get(header::LOCATION)?;
    let raw = String::from_utf8_lossy(location.as_bytes()).into_owned();
    let bad = || StepError::BadRedirect {
        location: raw.clone(),
    };
    Some(match base.join(&raw) {
        Ok(next) if matches!(next.scheme(), "http" | "https") && next.host_str().is_some() => {
            Ok(next)
        }
        _ => Err(bad()),
    })
}

/// `Host` header value: the host, and the port when it is not the scheme's default.
pub fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// Path and query, as an HTTP/1.1 request target (RFC 9112 section 3.2.1).
pub fn origin_form(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// `content-type` to `Content-Type`, as Go's canonical form that OONI's data uses.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

static TITLE: LazyLock<Regex> = LazyLock::new(|| {
    // OONI's own expression (`internal/measurexlite/web.go`).
    Regex::new(r"(?i)<title>([^<]{1,512})</title>").expect("static regex compiles")
});

/// The page title, as OONI extracts it.
pub fn title(body: &[u8]) -> Option<String> {
    TITLE
        .captures(body)
        .and_then(|c| c.get(1))
        .map(|m| String::from_utf8_lossy(m.as_bytes()).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_is_extracted_case_insensitively() {
        assert_eq!(
            title(b"<html><TITLE>Access Denied</TITLE></html>").as_deref(),
            Some("Access Denied")
        );
        assert_eq!(title(b"<html><body>no title</body></html>"), None);
    }

    #[test]
    fn sha256_of_empty_body() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn request_target_and_host() {
        let url = Url::parse("http://example.org:8080/a/b?c=d").expect("url");
        assert_eq!(origin_form(&url), "/a/b?c=d");
        assert_eq!(host_header(&url), "example.org:8080");
        let url = Url::parse("https://example.org/").expect("url");
        assert_eq!(host_header(&url), "example.org");
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical_header_name("content-type"), "Content-Type");
        assert_eq!(canonical_header_name("x-cache"), "X-Cache");
    }

    /// One GET of `/` at `addr` with `timeout`, as web_connectivity makes it.
    async fn fetch(addr: std::net::SocketAddr, timeout: Duration) -> Exchange {
        let io = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = Request::get("/")
            .header("Host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .expect("request");
        exchange(io, request, &addr.to_string(), timeout, 512 * 1024).await
    }

    /// A 300 kB page, more than either server below sends before the deadline.
    fn large_page() -> vantage_fixtures::http::Response {
        let body = format!("<title>Large</title>{}", "<p>news</p>".repeat(30_000));
        vantage_fixtures::http::Response::html(&body)
    }

    #[tokio::test]
    async fn a_body_cut_by_the_deadline_keeps_its_progress_and_says_how_it_ended() {
        use crate::throttling::passive::{SteadyCut, steady_cut_kbps};
        use vantage_fixtures::http::HttpFixture;
        use vantage_fixtures::throttle::ThrottleRelay;
        let loopback: std::net::IpAddr = [127, 0, 0, 1].into();
        let site = HttpFixture::fixed(large_page()).await;
        // 16 KiB/s, paced: the page takes 18 s, the deadline is at 4.
        let policed = ThrottleRelay::for_peer(site.addr, loopback, 131_072).await;
        let stalled = HttpFixture::stalling(loopback, large_page(), 40_000).await;
        let (slow, stopped) = tokio::join!(
            fetch(policed.addr, Duration::from_secs(4)),
            fetch(stalled.addr, Duration::from_secs(4)),
        );
        for (what, x) in [("policed", &slow), ("stalled", &stopped)] {
            // OONI's fields say what happened: a timeout, not a cut at the cap.
            let e = x.error.as_ref().expect("timed out");
            assert_eq!(e.failure().to_string(), "generic_timeout_error", "{what}");
            assert!(!x.truncated, "{what}");
            let t = x.transfer.as_ref().expect("transfer");
            assert!(t.cut_at_deadline, "{what}: {t:?}");
            let cut = t.cut_ms.expect("cut time");
            assert!((3_900..5_000).contains(&cut), "{what}: cut at {cut} ms");
            assert_eq!(t.samples.last().map(|s| s.1), Some(x.body.len() as u64));
            let json = serde_json::to_value(response_record(x)).expect("json");
            assert_eq!(json["x_transfer"]["cut_at_deadline"], true, "{what}");
            assert_eq!(json["body_is_truncated"], false, "{what}");
        }
        let t = slow.transfer.as_ref().expect("transfer");
        let kbps = steady_cut_kbps(t, &SteadyCut::default()).expect("still arriving");
        assert!((kbps - 131.1).abs() < 0.3 * 131.1, "{kbps} kbit/s: {t:?}");
        let t = stopped.transfer.as_ref().expect("transfer");
        assert_eq!(stopped.body.len(), 40_000);
        assert_eq!(steady_cut_kbps(t, &SteadyCut::default()), None, "{t:?}");
        // A page that arrives whole is not cut.
        let whole = fetch(site.addr, Duration::from_secs(4)).await;
        assert!(whole.error.is_none());
        let t = whole.transfer.as_ref().expect("transfer");
        assert!(!t.cut_at_deadline && t.cut_ms.is_none(), "{t:?}");
    }

    fn head(status: u16, location: Option<&str>) -> http::response::Parts {
        let mut b = Response::builder().status(status);
        if let Some(l) = location {
            b = b.header("location", l);
        }
        b.body(()).expect("response").into_parts().0
    }

    #[test]
    fn redirects_resolve_relative_locations() {
        let base = Url::parse("http://example.org/a/b").expect("url");
        let next = redirect_target(&base, &head(302, Some("/c")))
            .expect("redirect")
            .expect("valid");
        assert_eq!(next.as_str(), "http://example.org/c");
        assert!(redirect_target(&base, &head(200, Some("/c"))).is_none());
        let bad = redirect_target(&base, &head(301, Some("ftp://example.org/")))
            .expect("redirect")
            .expect_err("bad scheme");
        assert_eq!(
            bad.failure().to_string(),
            "http_invalid_redirect_location_host"
        );
        let bad = redirect_target(&base, &head(301, Some("http://")))
            .expect("redirect")
            .expect_err("no host");
        assert_eq!(
            bad.failure().to_string(),
            "http_invalid_redirect_location_host"
        );
    }
}
