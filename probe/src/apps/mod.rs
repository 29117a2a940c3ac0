//! The app tests: WhatsApp (OONI spec ts-018), Telegram (ts-020), Signal (ts-029) and Facebook
//! Messenger (ts-019), as OONI's probes run them, in OONI's format (docs/apps.md).
//!
//! What the four share is here: the data file of endpoints and pins (`test-lists/apps.toml`),
//! parsed and validated into an [`AppsPlan`] before any network I/O; a [`Session`] whose steps
//! (a lookup, a connect, a GET over TCP or TLS) are the engine's, so that each failure is the
//! engine's OONI failure string (df-007-errors) and each step is recorded in `queries`,
//! `tcp_connect`, `tls_handshakes` and `requests` (df-002, df-005, df-006, df-001); and the
//! measurement envelope and its verdict, read with the aggregator's own rules
//! ([`crate::verdict::services`]), so that the volunteer sees what the aggregator will decide.

pub mod facebook_messenger;
pub mod signal;
pub mod telegram;
pub mod whatsapp;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use url::{Host, Url};

use crate::engine::{EngineConfig, Resolver, TlsContext, Trace, dns, http as http_step, tcp, tls};
use crate::envelope::{Identity, MeasurementId};
use crate::ooni::{DnsQuery, HttpTransaction, Measurement, TcpConnect, TlsHandshake};
use crate::run::RunError;
use crate::store::Store;
use crate::verdict::services::{
    FACEBOOK_ENDPOINTS, FACEBOOK_NETBLOCKS, ServiceVerdict, TELEGRAM_URLS, WHATSAPP_URLS,
    score_service,
};

/// The data file compiled into the binary.
pub const BUILTIN_APPS: &str = include_str!("../../../test-lists/apps.toml");

/// ALPN offered: the engine speaks HTTP/1.1 on the connection it made.
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// The four apps, in the order they are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum App {
    /// OONI spec ts-018.
    Whatsapp,
    /// OONI spec ts-020.
    Telegram,
    /// OONI spec ts-029.
    Signal,
    /// OONI spec ts-019.
    FacebookMessenger,
}

impl App {
    /// Every app.
    pub const ALL: [App; 4] = [
        App::Whatsapp,
        App::Telegram,
        App::Signal,
        App::FacebookMessenger,
    ];

    /// OONI's `test_name`.
    pub fn test_name(self) -> &'static str {
        match self {
            App::Whatsapp => "whatsapp",
            App::Telegram => "telegram",
            App::Signal => "signal",
            App::FacebookMessenger => "facebook_messenger",
        }
    }

    /// The `test_version` written: the version of OONI's test whose keys and steps we follow.
    pub fn test_version(self) -> &'static str {
        match self {
            App::Whatsapp => whatsapp::TEST_VERSION,
            App::Telegram => telegram::TEST_VERSION,
            App::Signal => signal::TEST_VERSION,
            App::FacebookMessenger => facebook_messenger::TEST_VERSION,
        }
    }
}

impl std::str::FromStr for App {
    type Err = String;
    fn from_str(s: &str) -> Result<App, String> {
        App::ALL
            .into_iter()
            .find(|a| a.test_name() == s)
            .ok_or_else(|| {
                format!("unknown app {s:?}: one of whatsapp, telegram, signal, facebook_messenger")
            })
    }
}

/// Why a data file cannot be used. Found before any network I/O.
pub type AppsFileError = crate::data_file::DataFileError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    whatsapp: Option<RawWhatsapp>,
    telegram: Option<RawTelegram>,
    signal: Option<RawSignal>,
    facebook_messenger: Option<RawFacebook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWhatsapp {
    endpoints: Option<Vec<String>>,
    ports: Option<Vec<u16>>,
    registration_url: Option<String>,
    web_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    access_points: Option<Vec<String>>,
    ports: Option<Vec<u16>>,
    web_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignal {
    urls: Option<Vec<String>>,
    uptime_host: Option<String>,
    ca_pem: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFacebook {
    port: Option<u16>,
    endpoints: Option<Vec<RawEndpoint>>,
    netblocks: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    host: String,
}

/// WhatsApp's endpoints and URLs (ts-018).
#[derive(Debug, Clone)]
pub struct WhatsappPlan {
    /// The chat endpoints' host names.
    pub endpoints: Vec<String>,
    /// The ports each endpoint is tried on.
    pub ports: Vec<u16>,
    /// The registration service.
    pub registration_url: Url,
    /// The web client.
    pub web_url: Url,
}

/// Telegram's data centres and web client (ts-020).
#[derive(Debug, Clone)]
pub struct TelegramPlan {
    /// The data centres' addresses.
    pub access_points: Vec<IpAddr>,
    /// The ports each is tried on.
    pub ports: Vec<u16>,
    /// The web client.
    pub web_url: Url,
}

/// Signal's backend and its own roots (ts-029).
#[derive(Debug, Clone)]
pub struct SignalPlan {
    /// The backend URLs.
    pub urls: Vec<Url>,
    /// Looked up and recorded, never judged (ts-029).
    pub uptime_host: String,
    /// Signal's root certificates.
    pub roots: Vec<CertificateDer<'static>>,
}

/// Facebook Messenger's endpoints and Facebook's address space (ts-019).
#[derive(Debug, Clone)]
pub struct FacebookPlan {
    /// `(name, host)`: `name` makes the keys `facebook_<name>_dns_consistent` and `_reachable`.
    pub endpoints: Vec<(String, String)>,
    /// The port connected to.
    pub port: u16,
    /// Facebook's netblocks: an answer inside them is consistent.
    pub netblocks: Vec<(IpAddr, u8)>,
}

impl FacebookPlan {
    /// Whether `ip` is in Facebook's address space.
    pub fn is_facebook(&self, ip: IpAddr) -> bool {
        self.netblocks
            .iter()
            .any(|(net, len)| in_netblock(ip, *net, *len))
    }
}

fn in_netblock(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Every app's endpoints, validated.
#[derive(Debug, Clone)]
pub struct AppsPlan {
    /// WhatsApp.
    pub whatsapp: WhatsappPlan,
    /// Telegram.
    pub telegram: TelegramPlan,
    /// Signal.
    pub signal: SignalPlan,
    /// Facebook Messenger.
    pub facebook: FacebookPlan,
}

impl AppsPlan {
    /// The built-in data file's plan.
    pub fn builtin() -> Result<AppsPlan, AppsFileError> {
        AppsPlan::parse(BUILTIN_APPS, "test-lists/apps.toml (built in)")
    }

    /// Reads and validates `text`; `source_name` names it in errors. A section or field left
    /// out keeps the scorer's table where it has one (the URLs of WhatsApp and Telegram,
    /// Facebook's endpoints and netblocks), and is an error where it has none.
    pub fn parse(text: &str, source_name: &str) -> Result<AppsPlan, AppsFileError> {
        let raw: RawFile = crate::data_file::parse_toml(text, source_name)?;
        let bad = |field: String, reason: String| AppsFileError::Field {
            source_name: source_name.to_string(),
            field,
            reason,
        };
        let url = |field: &str, s: &str| -> Result<Url, AppsFileError> {
            let u = Url::parse(s).map_err(|e| bad(field.into(), format!("{s:?}: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                return Err(bad(
                    field.into(),
                    format!("{s:?}: an http or https URL with a host is needed"),
                ));
            }
            Ok(u)
        };
        let ports = |field: &str, p: Option<Vec<u16>>| -> Result<Vec<u16>, AppsFileError> {
            let p = p.ok_or_else(|| bad(field.into(), "missing".into()))?;
            if p.is_empty() || p.contains(&0) {
                return Err(bad(field.into(), "one or more ports, none 0".into()));
            }
            Ok(p)
        };
        let host = |field: String, h: &str| -> Result<String, AppsFileError> {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if ok {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(bad(field, format!("{h:?} is not a host name")))
            }
        };
        let scorer_url = |checks: &[crate::verdict::services::UrlCheck], name: &str| {
            checks
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.urls.first())
                .map(|u| u.to_string())
                .unwrap_or_default()
        };

        let w = raw.whatsapp.unwrap_or_default();
        let endpoints = w
            .endpoints
            .ok_or_else(|| bad("whatsapp.endpoints".into(), "missing".into()))?;
        if endpoints.is_empty() {
            return Err(bad("whatsapp.endpoints".into(), "empty".into()));
        }
        let whatsapp = WhatsappPlan {
            endpoints: endpoints
                .iter()
                .enumerate()
                .map(|(i, h)| host(format!("whatsapp.endpoints[{i}]"), h))
                .collect::<Result<_, _>>()?,
            ports: ports("whatsapp.ports", w.ports)?,
            registration_url: url(
                "whatsapp.registration_url",
                &w.registration_url
                    .unwrap_or_else(|| scorer_url(WHATSAPP_URLS, "registration")),
            )?,
            web_url: url(
                "whatsapp.web_url",
                &w.web_url
                    .unwrap_or_else(|| scorer_url(WHATSAPP_URLS, "web")),
            )?,
        };

        let t = raw.telegram.unwrap_or_default();
        let aps = t
            .access_points
            .ok_or_else(|| bad("telegram.access_points".into(), "missing".into()))?;
        if aps.is_empty() {
            return Err(bad("telegram.access_points".into(), "empty".into()));
        }
        let telegram = TelegramPlan {
            access_points: aps
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<IpAddr>().map_err(|_| {
                        bad(
                            format!("telegram.access_points[{i}]"),
                            format!("{a:?} is not an IP address"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            ports: ports("telegram.ports", t.ports)?,
            web_url: url(
                "telegram.web_url",
                &t.web_url
                    .unwrap_or_else(|| scorer_url(TELEGRAM_URLS, "web")),
            )?,
        };

        let s = raw.signal.unwrap_or_default();
        let urls = s
            .urls
            .ok_or_else(|| bad("signal.urls".into(), "missing".into()))?;
        if urls.is_empty() {
            return Err(bad("signal.urls".into(), "empty".into()));
        }
        let mut roots = Vec::new();
        for (i, pem) in s
            .ca_pem
            .ok_or_else(|| bad("signal.ca_pem".into(), "missing".into()))?
            .iter()
            .enumerate()
        {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(format!("signal.ca_pem[{i}]"), format!("not PEM: {e}")))?;
            if certs.is_empty() {
                return Err(bad(
                    format!("signal.ca_pem[{i}]"),
                    "holds no certificate".into(),
                ));
            }
            roots.extend(certs);
        }
        if roots.is_empty() {
            return Err(bad("signal.ca_pem".into(), "empty".into()));
        }
        let signal = SignalPlan {
            urls: urls
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let u = url(&format!("signal.urls[{i}]"), u)?;
                    if u.scheme() != "https" {
                        return Err(bad(
                            format!("signal.urls[{i}]"),
                            "Signal's backend is measured over https only".into(),
                        ));
                    }
                    Ok(u)
                })
                .collect::<Result<_, _>>()?,
            uptime_host: host(
                "signal.uptime_host".into(),
                s.uptime_host.as_deref().unwrap_or("uptime.signal.org"),
            )?,
            roots,
        };

        let f = raw.facebook_messenger.unwrap_or_default();
        let endpoints = match f.endpoints {
            None => FACEBOOK_ENDPOINTS
                .iter()
                .map(|(n, h)| (n.to_string(), h.to_string()))
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                for (i, e) in list.iter().enumerate() {
                    if e.name.is_empty()
                        || !e
                            .name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        return Err(bad(
                            format!("facebook_messenger.endpoints[{i}].name"),
                            format!("{:?}: lower-case letters, digits and _ only", e.name),
                        ));
                    }
                    out.push((
                        e.name.clone(),
                        host(format!("facebook_messenger.endpoints[{i}].host"), &e.host)?,
                    ));
                }
                if out.is_empty() {
                    return Err(bad("facebook_messenger.endpoints".into(), "empty".into()));
                }
                out
            }
        };
        let netblocks = match f.netblocks {
            None => FACEBOOK_NETBLOCKS
                .iter()
                .filter_map(|(n, l)| Some((n.parse().ok()?, *l)))
                .collect(),
            Some(list) => {
                list.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let field = format!("facebook_messenger.netblocks[{i}]");
                        let (net, len) = s
                            .split_once('/')
                            .ok_or_else(|| bad(field.clone(), format!("{s:?}: ADDRESS/LENGTH")))?;
                        let net: IpAddr = net.parse().map_err(|_| {
                            bad(field.clone(), format!("{net:?} is not an address"))
                        })?;
                        let max = if net.is_ipv4() { 32 } else { 128 };
                        let len: u8 =
                            len.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
                                bad(field, format!("{len:?}: a length up to {max}"))
                            })?;
                        Ok((net, len))
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let facebook = FacebookPlan {
            endpoints,
            port: f.port.filter(|p| *p != 0).unwrap_or(443),
            netblocks,
        };
        Ok(AppsPlan {
            whatsapp,
            telegram,
            signal,
            facebook,
        })
    }
}

/// Everything the steps of one measurement recorded, in order.
#[derive(Debug, Default)]
struct Records {
    queries: Vec<DnsQuery>,
    tcp_connect: Vec<TcpConnect>,
    tls_handshakes: Vec<TlsHandshake>,
    requests: Vec<HttpTransaction>,
}

/// One measurement's steps: the engine's, recorded as they happen. Shared by concurrent checks.
#[derive(Debug)]
pub struct Session {
    config: EngineConfig,
    resolver: Resolver,
    tls: TlsContext,
    trace: Trace,
    records: Mutex<Records>,
    resolved: Mutex<HashMap<String, Result<Vec<IpAddr>, String>>>,
    only_roots: Option<OnlyRoots>,
}

/// A chain check against these roots alone, after the engine's handshake: the engine trusts
/// Mozilla's roots besides the ones it is given, and Signal's backend must be Signal's own CA
/// (ts-029), so a certificate from any public CA is refused too.
#[derive(Debug, Clone)]
pub struct OnlyRoots(Arc<rustls::client::WebPkiServerVerifier>);

impl OnlyRoots {
    /// A check against `roots` and nothing else.
    pub fn new(
        roots: &[CertificateDer<'static>],
    ) -> Result<OnlyRoots, crate::engine::TlsSetupError> {
        let mut store = rustls::RootCertStore::empty();
        for cert in roots {
            store
                .add(cert.clone())
                .map_err(|e| crate::engine::TlsSetupError::Config(format!("root rejected: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| crate::engine::TlsSetupError::Config(e.to_string()))?;
        Ok(OnlyRoots(verifier))
    }

    /// Checks the chain a handshake presented for `name`; the error is rustls's, which the
    /// engine turns into OONI's string (`ssl_unknown_authority`, ...).
    fn check(&self, chain: &[CertificateDer<'_>], name: &str) -> Result<(), rustls::Error> {
        use rustls::client::danger::ServerCertVerifier as _;
        let (end, intermediates) = chain
            .split_first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        self.0
            .verify_server_cert(
                end,
                intermediates,
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map(|_| ())
    }
}

/// The HTTP methods the app tests send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// A connection ready for HTTP.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Session {
    /// A session whose TLS handshakes are checked against `tls`'s roots.
    pub fn new(config: EngineConfig, resolver: Resolver, tls: TlsContext) -> Arc<Session> {
        Self::with_only_roots(config, resolver, tls, None)
    }

    /// A session whose handshakes must also chain to `only_roots` alone.
    pub fn with_only_roots(
        config: EngineConfig,
        resolver: Resolver,
        tls: TlsContext,
        only_roots: Option<OnlyRoots>,
    ) -> Arc<Session> {
        Arc::new(Session {
            config,
            resolver,
            tls,
            trace: Trace::new(),
            records: Mutex::new(Records::default()),
            resolved: Mutex::new(HashMap::new()),
            only_roots,
        })
    }

    fn record(&self, f: impl FnOnce(&mut Records)) {
        if let Ok(mut r) = self.records.lock() {
            f(&mut r);
        }
    }

    /// Looks `host` up once per session (a literal address needs no lookup); the failure is
    /// OONI's string.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(known) = self.resolved.lock().ok().and_then(|c| c.get(host).cloned()) {
            return known;
        }
        let lookup = dns::lookup(
            &self.resolver,
            host,
            &self.config,
            &self.tls,
            &self.trace,
            None,
        )
        .await;
        let result = match lookup.error {
            Some(e) if lookup.addrs.is_empty() => Err(e.failure().to_string()),
            _ if lookup.addrs.is_empty() => Err("dns_no_answer".to_string()),
            _ => Ok(lookup.addrs.clone()),
        };
        self.record(|r| r.queries.extend(lookup.queries));
        if let Ok(mut c) = self.resolved.lock() {
            c.insert(host.to_string(), result.clone());
        }
        result
    }

    /// Connects to `addr`; the connection is closed at once. `None` when it worked, else
    /// OONI's failure string.
    pub async fn connect(&self, addr: SocketAddr) -> Option<String> {
        let (_, result) = self.open_tcp(addr).await;
        result.err()
    }

    async fn open_tcp(&self, addr: SocketAddr) -> (i64, Result<TcpStream, String>) {
        let tid = self.trace.transaction();
        let (record, result) = tcp::connect(
            addr,
            self.config.local_addr,
            &self.trace,
            self.config.timeouts.tcp_connect,
            None,
            tid,
        )
        .await;
        self.record(|r| r.tcp_connect.push(record));
        (tid, result.map_err(|e| e.failure().to_string()))
    }

    /// GETs `url` as OONI's urlgetter does: resolve, then each address in turn until one
    /// connects (and, for https, completes the handshake with the URL's host as SNI), then
    /// the request. `None` when a response arrived whatever its status, else the failure of
    /// the step that stopped it (the last address's, when none worked).
    pub async fn fetch(&self, url: &Url) -> Option<String> {
        self.request(url, Method::Get).await
    }

    /// As [`Session::fetch`], with an empty POST: what OONI's telegram test sends to the data
    /// centres (ts-020, "Telegram access points check").
    pub async fn post(&self, url: &Url) -> Option<String> {
        self.request(url, Method::Post).await
    }

    async fn request(&self, url: &Url, method: Method) -> Option<String> {
        let t0 = self.secs();
        let (failure, peer, recorded) = self.fetch_steps(url, method).await;
        if let (Some(f), false) = (&failure, recorded) {
            self.failed_request(url, method, f, t0, peer);
        }
        failure
    }

    /// The steps of [`Session::fetch`]: the failure (`None` when a response arrived), the
    /// last address tried, and whether the request was sent (and so is recorded).
    async fn fetch_steps(
        &self,
        url: &Url,
        method: Method,
    ) -> (Option<String>, Option<SocketAddr>, bool) {
        let host = match url.host() {
            Some(Host::Domain(d)) => d.to_string(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            None => return (Some("unknown_failure: no host".into()), None, false),
        };
        let addrs = match self.resolve(&host).await {
            Ok(a) => a,
            Err(f) => return (Some(f), None, false),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let mut failure = (Some("unknown_failure: no address".to_string()), None, false);
        for ip in addrs {
            let addr = SocketAddr::new(ip, port);
            let (tid, stream) = self.open_tcp(addr).await;
            let stream = match stream {
                Ok(s) => s,
                Err(f) => {
                    failure = (Some(f), Some(addr), false);
                    continue;
                }
            };
            let (conn, alpn) = if url.scheme() == "https" {
                let spec = tls::HandshakeSpec {
                    server_name: &host,
                    addr,
                    alpn: ALPN,
                    timeout: self.config.timeouts.tls_handshake,
                    tags: None,
                    transaction_id: tid,
                };
                let mut hs = tls::handshake(&self.tls, stream, spec, &self.trace).await;
                let alpn = Some(hs.record.negotiated_protocol.clone()).filter(|p| !p.is_empty());
                if let (Some(only), Ok(s)) = (&self.only_roots, &hs.result) {
                    let chain = s.get_ref().1.peer_certificates().unwrap_or_default();
                    if let Err(source) = only.check(chain, &host) {
                        let e = crate::failure::StepError::Tls { addr, source };
                        hs.record.failure = Some(e.failure().to_string());
                        hs.result = Err(e);
                    }
                }
                self.record(|r| r.tls_handshakes.push(hs.record));
                match hs.result {
                    Ok(s) => (Conn::Tls(Box::new(s)), alpn),
                    Err(e) => {
                        failure = (Some(e.failure().to_string()), Some(addr), false);
                        continue;
                    }
                }
            } else {
                (Conn::Plain(stream), None)
            };
            let spec = http_step::GetSpec {
                url,
                peer: addr.to_string(),
                alpn,
                timeout: self.config.timeouts.http,
                body_cap: self.config.body_cap_bytes,
                tags: None,
                transaction_id: tid,
            };
            let fetch = match (conn, method) {
                (Conn::Plain(s), Method::Get) => http_step::get(s, spec, &self.trace).await,
                (Conn::Tls(s), Method::Get) => http_step::get(*s, spec, &self.trace).await,
                (Conn::Plain(s), Method::Post) => self.post_on(s, spec).await,
                (Conn::Tls(s), Method::Post) => self.post_on(*s, spec).await,
            };
            let f = fetch.error.as_ref().map(|e| e.failure().to_string());
            self.record(|r| r.requests.push(fetch.record));
            // A response was had from this address: OONI's urlgetter stops here. A failure
            // during the exchange is in the request already.
            return (f, None, true);
        }
        failure
    }

    /// An empty POST over `io` with the browser's headers, recorded as [`http_step::get`]
    /// records a GET (df-001-httpt), through the engine's [`http_step::exchange`].
    async fn post_on<IO>(&self, io: IO, spec: http_step::GetSpec<'_>) -> http_step::Fetch
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let url = spec.url;
        let mut headers: Vec<(String, String)> = http_step::BROWSER_HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        headers.insert(2, ("Host".into(), http_step::host_header(url)));
        headers.push(("Content-Length".into(), "0".into()));
        let mut builder = http::Request::post(http_step::origin_form(url));
        for (k, v) in &headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let t0 = self.secs();
        let exchange = match builder.body(http_body_util::Full::new(bytes::Bytes::new())) {
            Ok(request) => {
                http_step::exchange(io, request, &spec.peer, spec.timeout, spec.body_cap).await
            }
            Err(e) => http_step::Exchange {
                error: Some(crate::failure::StepError::BadRedirect {
                    location: format!("{url}: {e}"),
                }),
                ..http_step::Exchange::default()
            },
        };
        let response = exchange.head.as_ref().map(|head| {
            let list: Vec<(String, String)> = head
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let map: Map<String, Value> = list
                .iter()
                .rev()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            json!({
                "body": crate::ooni::MaybeBinary::from_bytes(&exchange.body),
                "body_is_truncated": exchange.truncated,
                "code": head.status.as_u16(),
                "headers": map,
                "headers_list": list,
                "x_body_length": exchange.body.len(),
                "x_body_sha256": http_step::sha256_hex(&exchange.body),
            })
        });
        let record = json!({
            "network": "tcp",
            "address": spec.peer,
            "alpn": spec.alpn,
            "failure": exchange.error.as_ref().map(|e| e.failure().to_string()),
            "request": {
                "body": "",
                "body_is_truncated": false,
                "headers": headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
                "headers_list": headers,
                "method": "POST",
                "url": url.to_string(),
                "x_transport": "tcp",
            },
            "response": response,
            "t0": t0,
            "t": self.secs(),
            "transaction_id": spec.transaction_id,
        });
        let record = serde_json::from_value::<HttpTransaction>(record).unwrap_or_else(|e| {
            tracing::warn!("cannot record the POST to {url}: {e}");
            HttpTransaction {
                network: Some("tcp".into()),
                address: None,
                alpn: None,
                failure: Some(format!("unknown_failure: {e}")),
                request: crate::ooni::HttpRequest {
                    body: None,
                    body_is_truncated: None,
                    headers_list: None,
                    headers: Default::default(),
                    method: "POST".into(),
                    tor: None,
                    x_transport: None,
                    url: url.to_string(),
                    extra: Map::new(),
                },
                response: None,
                t0: Some(t0),
                t: None,
                tags: None,
                transaction_id: Some(spec.transaction_id),
                extra: Map::new(),
            }
        });
        http_step::Fetch {
            record,
            error: exchange.error,
            next: None,
        }
    }

    /// A request that never got to be sent, recorded with the failure of the step that
    /// stopped it, as OONI's urlgetter records it (df-001-httpt: `failure`, `response` null),
    /// so that a reader finds the URL's failure in `requests` whatever the step.
    fn failed_request(
        &self,
        url: &Url,
        method: Method,
        failure: &str,
        t0: f64,
        peer: Option<SocketAddr>,
    ) {
        let record = json!({
            "network": "tcp",
            "address": peer.map(|p| p.to_string()),
            "failure": failure,
            "request": {
                "body": "",
                "body_is_truncated": false,
                "headers": {},
                "headers_list": [],
                "method": method.as_str(),
                "url": url.to_string(),
                "x_transport": "tcp",
            },
            "response": null,
            "t0": t0,
            "t": self.secs(),
        });
        if let Ok(tx) = serde_json::from_value::<HttpTransaction>(record) {
            self.record(|r| r.requests.push(tx));
        }
    }

    /// The records, as `test_keys` entries shared by the four tests (OONI's urlgetter keys;
    /// `network_events` is not recorded, so it is null as df-008 allows).
    fn keys(&self) -> Map<String, Value> {
        let r = match self.records.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => Records::default(),
        };
        let mut m = Map::new();
        m.insert("agent".into(), json!("redirect"));
        m.insert("failed_operation".into(), Value::Null);
        m.insert("failure".into(), Value::Null);
        m.insert("network_events".into(), Value::Null);
        m.insert("queries".into(), json!(r.queries));
        m.insert("requests".into(), json!(r.requests));
        m.insert("tcp_connect".into(), json!(r.tcp_connect));
        m.insert("tls_handshakes".into(), json!(r.tls_handshakes));
        m
    }

    /// Whether a recorded connect to an endpoint `wanted(ip, port)` accepts succeeded.
    pub fn connected_to(&self, wanted: impl Fn(&str, u16) -> bool) -> bool {
        self.records.lock().is_ok_and(|r| {
            r.tcp_connect
                .iter()
                .any(|c| c.status.success && wanted(&c.ip, c.port))
        })
    }

    /// Seconds since the session started.
    fn secs(&self) -> f64 {
        self.trace.clock.secs()
    }
}

/// One app's finished measurement and its verdict.
#[derive(Debug, Clone)]
pub struct AppResult {
    /// The app.
    pub app: App,
    /// The OONI measurement (`test_keys` as the spec names them).
    pub measurement: Measurement<Value>,
    /// The aggregator's rules applied to it.
    pub verdict: Option<ServiceVerdict>,
}

/// Runs one app's test. Network failures are results: they are in the measurement.
pub async fn measure(
    app: App,
    plan: &AppsPlan,
    config: &EngineConfig,
    resolver: &Resolver,
    tls: &TlsContext,
) -> Result<AppResult, crate::engine::TlsSetupError> {
    let started = SystemTime::now();
    // Signal's backend is checked against Signal's own roots alone (ts-029): the engine's
    // handshake with them added, then the chain against them only.
    let (tls, only_roots) = match app {
        App::Signal => (
            TlsContext::new(plan.signal.roots.clone())?,
            Some(OnlyRoots::new(&plan.signal.roots)?),
        ),
        _ => (tls.clone(), None),
    };
    let session = Session::with_only_roots(config.clone(), resolver.clone(), tls, only_roots);
    let own = match app {
        App::Whatsapp => whatsapp::measure(&plan.whatsapp, &session).await,
        App::Telegram => telegram::measure(&plan.telegram, &session).await,
        App::Signal => signal::measure(&plan.signal, &session).await,
        App::FacebookMessenger => facebook_messenger::measure(&plan.facebook, &session).await,
    };
    let mut test_keys = session.keys();
    test_keys.extend(own);
    let test_keys = Value::Object(test_keys);
    let verdict = score_service(app.test_name(), None, &test_keys);
    let mut m = Measurement::vantage(app.test_name(), app.test_version(), test_keys);
    m.measurement_start_time = crate::ooni::ooni_timestamp(started);
    m.test_start_time = Some(m.measurement_start_time.clone());
    m.test_runtime = session.secs();
    // df-000: an input-less test writes `"input": null`.
    m.extra.insert("input".into(), Value::Null);
    Ok(AppResult {
        app,
        measurement: m,
        verdict,
    })
}

/// Traffic a result cost, roughly, for the daemon's daily budget: the response bodies
/// received plus the signed result, which is uploaded once.
pub fn traffic_bytes(result: &AppResult) -> u64 {
    let bodies: u64 = result
        .measurement
        .test_keys
        .get("requests")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r.get("response")?.get("x_body_length")?.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let result_bytes = serde_json::to_string(&result.measurement)
        .map(|s| s.len() as u64)
        .unwrap_or(0);
    bodies + result_bytes
}

/// Signs and stores a result, with its outbox row, as the other tests do ([`crate::run::keep`]).
pub fn keep(
    result: &AppResult,
    identity: &Identity,
    store: &mut Store,
) -> Result<MeasurementId, RunError> {
    crate::run::keep_service(
        &result.measurement,
        None,
        result.app.test_name(),
        result.verdict.as_ref(),
        identity,
        store,
    )
}

/// `"ok"` or `"blocked"`, as the spec's `*_status` keys say.
fn status(failure: &Option<String>) -> &'static str {
    if failure.is_some() { "blocked" } else { "ok" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_file_is_valid_and_uses_the_scorers_tables() {
        let plan = AppsPlan::builtin().expect("built-in apps.toml");
        assert_eq!(plan.whatsapp.endpoints.len(), 16);
        assert_eq!(plan.whatsapp.ports, [443, 5222]);
        assert_eq!(
            plan.whatsapp.registration_url.as_str(),
            "https://v.whatsapp.net/v2/register"
        );
        assert_eq!(plan.telegram.access_points.len(), 6);
        assert_eq!(plan.telegram.web_url.as_str(), "https://web.telegram.org/");
        assert_eq!(plan.signal.urls.len(), 4);
        assert_eq!(plan.signal.roots.len(), 2);
        assert_eq!(plan.facebook.endpoints.len(), FACEBOOK_ENDPOINTS.len());
        assert!(
            plan.facebook
                .is_facebook("157.240.1.35".parse().expect("ip"))
        );
        assert!(
            !plan
                .facebook
                .is_facebook("10.10.34.36".parse().expect("ip"))
        );
    }

    #[test]
    fn bad_files_name_the_field_or_line() {
        let err = |text: &str| AppsPlan::parse(text, "x.toml").expect_err(text).to_string();
        let base = BUILTIN_APPS;
        let e = err(&base.replace("\"149.154.175.50\"", "\"149.154.175\""));
        assert!(e.contains("telegram.access_points[0]"), "{e}");
        let e = err(&base.replace("ports = [443, 5222]", "ports = []"));
        assert!(e.contains("whatsapp.ports"), "{e}");
        let e = err(&base.replace("\"e3.whatsapp.net\"", "\"e3 whatsapp\""));
        assert!(e.contains("whatsapp.endpoints[2]"), "{e}");
        let e = err(&base.replace("https://chat.signal.org/", "http://chat.signal.org/"));
        assert!(e.contains("signal.urls[1]"), "{e}");
        let e = err(&base.replace("MIID7z", "@@@"));
        assert!(e.contains("signal.ca_pem[0]"), "{e}");
        let e = err(&format!("{base}\nnetblocks = [\"157.240.0.0/40\"]\n"));
        assert!(e.contains("facebook_messenger.netblocks[0]"), "{e}");
        // An unknown field and a syntax error: toml's message names the line.
        let e = err(&base.replace("[facebook_messenger]", "[facebook_messenger]\nprot = 1"));
        assert!(e.contains("prot") && e.contains("line"), "{e}");
        let e = err("[whatsapp\n");
        assert!(e.contains("x.toml") && e.contains("line 1"), "{e}");
    }

    /// A certificate the engine's context trusts (its CA added, as Mozilla's are) is still
    /// refused when it does not chain to the only roots: Signal's pin.
    #[tokio::test]
    async fn only_roots_refuse_a_chain_the_context_trusts() {
        use vantage_fixtures::http::Response;
        use vantage_fixtures::tls::{TestCa, TlsFixture};
        let public = TestCa::new("A public CA");
        let signal = TestCa::new("Signal CA");
        let root = |ca: &TestCa| {
            CertificateDer::pem_slice_iter(ca.pem().as_bytes())
                .next()
                .expect("one")
                .expect("pem")
        };
        let server = TlsFixture::fixed(&public.leaf(&["127.0.0.1"]), Response::html("x")).await;
        let url = Url::parse(&format!("https://127.0.0.1:{}/", server.addr.port())).expect("url");
        let ctx = TlsContext::new(vec![root(&public)]).expect("ctx");
        let fetch = |only: Option<OnlyRoots>| {
            let session = Session::with_only_roots(
                EngineConfig::default(),
                Resolver::System,
                ctx.clone(),
                only,
            );
            let url = url.clone();
            async move {
                let f = session.fetch(&url).await;
                let keys = session.keys();
                (f, keys)
            }
        };
        // The context alone accepts it.
        let (f, _) = fetch(None).await;
        assert_eq!(f, None);
        // Pinned to Signal's CA: refused, in the handshake's record and the request's.
        let only = OnlyRoots::new(&[root(&signal)]).expect("only");
        let (f, keys) = fetch(Some(only)).await;
        assert_eq!(f.as_deref(), Some("ssl_unknown_authority"));
        assert_eq!(
            keys["tls_handshakes"][0]["failure"],
            json!("ssl_unknown_authority")
        );
        assert_eq!(
            keys["requests"][0]["failure"],
            json!("ssl_unknown_authority")
        );
        // Pinned to the server's own CA: accepted.
        let only = OnlyRoots::new(&[root(&public)]).expect("only");
        let (f, _) = fetch(Some(only)).await;
        assert_eq!(f, None);
    }

    #[test]
    fn netblocks_contain_their_addresses_only() {
        let v4 = "157.240.0.0".parse().expect("ip");
        assert!(in_netblock("157.240.255.1".parse().expect("ip"), v4, 16));
        assert!(!in_netblock("157.241.0.1".parse().expect("ip"), v4, 16));
        assert!(in_netblock("1.2.3.4".parse().expect("ip"), v4, 0));
        let v6 = "2a03:2880::".parse().expect("ip");
        assert!(in_netblock("2a03:2880:f00::1".parse().expect("ip"), v6, 32));
        assert!(!in_netblock("157.240.0.1".parse().expect("ip"), v6, 0));
    }
}
