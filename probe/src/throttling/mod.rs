//! The `throttling` test: the same payload downloaded from the aggregator's throughput server
//! with a target's SNI and with a control SNI, interleaved and repeated, with goodput recorded
//! over time for each download (the method of "Throttling Twitter", Xue et al., IMC 2021;
//! README.md, "Throttling").
//!
//! A reachability test sees a throttled site load, eventually, and calls it accessible. Here
//! the only difference between two downloads is the name in the ClientHello, so a device that
//! slows one name down shows up as a ceiling on that download alone; [`score`] decides.
//!
//! The server is the aggregator's (`vantage-aggregator serve --throughput-listen`), which is not
//! the target: its certificate is pinned ([`CertPin`]) rather than checked against the SNI.
//!
//! Traffic is bounded before anything is sent: targets x repetitions x 2 downloads x the
//! payload size must fit the budget (default 2 MB), and a download also stops after
//! `max_download`, so a throttled one costs time, never more bytes.

pub mod passive;
pub mod score;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::tls::{CertPin, HandshakeSpec, handshake_pinned};
use crate::engine::{EngineConfig, TlsContext, Trace, tcp};
use crate::failure::{Failure, classify_io};
use crate::ooni::{Measurement, TcpConnect, TlsHandshake};

/// What `GET /api/v1/throughput` answers; defined with the other wire types.
pub use crate::wire::ServerInfo;
pub use score::{Assessment, Rules, Verdict};

/// `test_name`.
pub const THROTTLING: &str = "throttling";
/// `test_version`.
pub const THROTTLING_VERSION: &str = "0.1.0";
/// Request path of the throughput server: `GET /payload/<bytes>` answers that many bytes.
pub const PAYLOAD_PATH: &str = "/payload/";
/// The most a throughput server sends for one request.
pub const MAX_PAYLOAD_BYTES: u64 = 1 << 20;
/// Progress is sampled at most this often.
const SAMPLE_EVERY_MS: u64 = 50;

/// Where the throughput server is and the certificate it must present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// SHA-256 of its certificate.
    pub pin: CertPin,
}

/// The knobs of the test, with the defaults a daemon uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// SNI of the control downloads: a name no censor has reason to slow down.
    pub control_sni: String,
    /// Bytes per download.
    pub payload_bytes: u64,
    /// Target and control downloads per target.
    pub repetitions: u32,
    /// A download stops after this long, complete or not.
    pub max_download: Duration,
    /// Most bytes one run may download: 2 MB by default, so a volunteer on a metered link pays
    /// little for it (README.md, "Throttling").
    pub budget_bytes: u64,
    /// Scoring thresholds.
    pub rules: Rules,
}

impl Default for Settings {
    fn default() -> Self {
        // 160 kB x 2 x 3 repetitions = 960 kB per target, so two targets fit in 2 MB. At
        // Russia's 150 kbit/s a target download takes about 8.5 s: long enough to show a flat
        // ceiling, and max_download cuts it there.
        Settings {
            control_sni: "example.org".into(),
            payload_bytes: 160_000,
            repetitions: 3,
            max_download: Duration::from_secs(8),
            budget_bytes: 2_000_000,
            rules: Rules::default(),
        }
    }
}

/// A plan that cannot run, found before any packet is sent.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Nothing to measure.
    #[error("the throttling test needs at least one target name")]
    NoTargets,
    /// Not usable as an SNI.
    #[error("{name:?} is not a DNS name usable as an SNI")]
    BadName {
        /// The name.
        name: String,
    },
    /// Payload out of range.
    #[error("payload of {bytes} bytes: must be 16 kB to {MAX_PAYLOAD_BYTES} bytes")]
    Payload {
        /// Requested size.
        bytes: u64,
    },
    /// Repetitions out of range.
    #[error("{0} repetitions: must be 2 to 10, so that consistency can be judged")]
    Repetitions(u32),
    /// Over the traffic budget.
    #[error(
        "{targets} targets x {repetitions} repetitions x 2 downloads x {payload} bytes = {total} bytes, over the budget of {budget} bytes; measure fewer targets or lower the payload"
    )]
    Budget {
        /// Targets.
        targets: usize,
        /// Repetitions.
        repetitions: u32,
        /// Payload per download.
        payload: u64,
        /// Their product.
        total: u64,
        /// The budget.
        budget: u64,
    },
}

/// A checked plan: every target, the server and the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The throughput server.
    pub endpoint: Endpoint,
    /// Target SNIs, each its own measurement.
    pub targets: Vec<String>,
    /// The settings.
    pub settings: Settings,
}

impl Plan {
    /// Checks names, ranges and the traffic budget.
    pub fn new(
        endpoint: Endpoint,
        targets: Vec<String>,
        settings: Settings,
    ) -> Result<Plan, PlanError> {
        if targets.is_empty() {
            return Err(PlanError::NoTargets);
        }
        for name in targets.iter().chain([&settings.control_sni]) {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
                || name.parse::<std::net::IpAddr>().is_ok()
            {
                return Err(PlanError::BadName { name: name.clone() });
            }
        }
        if !(16_000..=MAX_PAYLOAD_BYTES).contains(&settings.payload_bytes) {
            return Err(PlanError::Payload {
                bytes: settings.payload_bytes,
            });
        }
        if !(2..=10).contains(&settings.repetitions) {
            return Err(PlanError::Repetitions(settings.repetitions));
        }
        let plan = Plan {
            endpoint,
            targets,
            settings,
        };
        let total = plan.max_traffic_bytes();
        if total > plan.settings.budget_bytes {
            return Err(PlanError::Budget {
                targets: plan.targets.len(),
                repetitions: plan.settings.repetitions,
                payload: plan.settings.payload_bytes,
                total,
                budget: plan.settings.budget_bytes,
            });
        }
        Ok(plan)
    }

    /// The most this plan downloads (payloads; headers and handshakes add a few kB).
    pub fn max_traffic_bytes(&self) -> u64 {
        self.targets.len() as u64
            * u64::from(self.settings.repetitions)
            * 2
            * self.settings.payload_bytes
    }
}

/// Finds the aggregator's throughput server: its port and pin from `GET /api/v1/throughput`,
/// on the aggregator's own host. Asked directly, never through a proxy: the test itself must
/// cross the local network, and so must the answer about where to run it.
pub async fn locate_server(
    aggregator: &url::Url,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<Endpoint, String> {
    let info = crate::upload::throughput(aggregator, engine, tls).await?;
    let pin: CertPin = info
        .cert_sha256
        .parse()
        .map_err(|e| format!("the aggregator published a bad pin: {e}"))?;
    let host = aggregator
        .host_str()
        .ok_or("the aggregator URL has no host")?
        .trim_matches(['[', ']']);
    let addr = tokio::net::lookup_host((host, info.port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    Ok(Endpoint { addr, pin })
}

/// Which side of the comparison a download is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// With the target's SNI.
    #[default]
    Target,
    /// With the control SNI.
    Control,
}

/// One download and how it progressed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Download {
    /// The SNI sent.
    pub sni: String,
    /// Target or control.
    pub role: Role,
    /// Which repetition.
    pub repetition: u32,
    /// Seconds since the measurement began.
    pub t0: f64,
    /// Time to the first body byte, ms after the request was sent.
    pub ttfb_ms: Option<u64>,
    /// Time to the last body byte, ms after the request was sent.
    pub ttlb_ms: Option<u64>,
    /// Body bytes received.
    pub bytes: u64,
    /// Whether the whole payload arrived before `max_download`.
    pub complete: bool,
    /// OONI failure string, when the download failed.
    pub failure: Option<String>,
    /// `[ms after the request, body bytes so far]`, at most every 50 ms.
    pub samples: Vec<(u64, u64)>,
}

/// `test_keys` of a throttling measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThrottlingKeys {
    /// The throughput server's address.
    pub server: String,
    /// The pin its certificate matched.
    pub server_cert_sha256: String,
    /// The control SNI.
    pub control_sni: String,
    /// Bytes asked for in each download.
    pub payload_bytes: u64,
    /// The per-download time limit.
    pub max_download_ms: u64,
    /// Every download, in the order they ran.
    pub downloads: Vec<Download>,
    /// df-005-tcpconnect.
    pub tcp_connect: Vec<TcpConnect>,
    /// df-006-tlshandshake.
    pub tls_handshakes: Vec<TlsHandshake>,
    /// The probe's own scoring (the aggregator scores again).
    pub throttling: Assessment,
    /// OONI-style summary: `"throttling"` when throttled, `false` otherwise.
    pub blocking: serde_json::Value,
    /// Whether the target downloads at all.
    pub accessible: bool,
}

/// A throttling measurement.
pub type ThrottlingMeasurement = Measurement<ThrottlingKeys>;

/// Measures one target: `repetitions` pairs of downloads, target and control in alternating
/// order so that neither always runs on a warmer path.
pub async fn measure(
    plan: &Plan,
    target: &str,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> ThrottlingMeasurement {
    let started = Instant::now();
    let start_time = crate::ooni::ooni_timestamp(std::time::SystemTime::now());
    let trace = Trace::new();
    let s = &plan.settings;
    let mut downloads = Vec::new();
    let mut tcp_connect = Vec::new();
    let mut tls_handshakes = Vec::new();
    for repetition in 0..s.repetitions {
        let mut order = [(target, Role::Target), (&s.control_sni, Role::Control)];
        if repetition % 2 == 1 {
            order.reverse();
        }
        for (sni, role) in order {
            let (d, tcp, hs) = download(plan, sni, role, repetition, engine, tls, &trace).await;
            downloads.push(d);
            tcp_connect.push(tcp);
            tls_handshakes.extend(hs);
        }
    }
    let (t, c): (Vec<Download>, Vec<Download>) = downloads
        .iter()
        .cloned()
        .partition(|d| d.role == Role::Target);
    let assessment = score::assess(&t, &c, &s.rules);
    let keys = ThrottlingKeys {
        server: plan.endpoint.addr.to_string(),
        server_cert_sha256: plan.endpoint.pin.to_string(),
        control_sni: s.control_sni.clone(),
        payload_bytes: s.payload_bytes,
        max_download_ms: u64::try_from(s.max_download.as_millis()).unwrap_or(u64::MAX),
        blocking: match assessment.verdict {
            Verdict::Throttled => "throttling".into(),
            _ => false.into(),
        },
        accessible: t.iter().any(|d| d.failure.is_none()),
        downloads,
        tcp_connect,
        tls_handshakes,
        throttling: assessment,
    };
    let mut m = Measurement::vantage(THROTTLING, THROTTLING_VERSION, keys);
    m.input = Some(target.to_string());
    m.measurement_start_time = start_time;
    m.test_runtime = started.elapsed().as_secs_f64();
    m.test_helpers = Some(serde_json::json!({
        "throughput": {"address": plan.endpoint.addr.to_string(), "type": "tls"}
    }));
    m
}

/// One download over a fresh connection.
async fn download(
    plan: &Plan,
    sni: &str,
    role: Role,
    repetition: u32,
    engine: &EngineConfig,
    tls: &TlsContext,
    trace: &Trace,
) -> (Download, TcpConnect, Option<TlsHandshake>) {
    let addr = plan.endpoint.addr;
    let mut d = Download {
        sni: sni.to_string(),
        role,
        repetition,
        t0: trace.clock.secs(),
        ..Download::default()
    };
    let tx = trace.transaction();
    let (tcp, stream) = tcp::connect(
        addr,
        engine.local_addr,
        trace,
        engine.timeouts.tcp_connect,
        None,
        tx,
    )
    .await;
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            d.failure = Some(e.failure().to_string());
            return (d, tcp, None);
        }
    };
    let spec = HandshakeSpec {
        server_name: sni,
        addr,
        alpn: &[b"http/1.1"],
        timeout: engine.timeouts.tls_handshake,
        tags: None,
        transaction_id: tx,
    };
    let hs = handshake_pinned(tls, stream, spec, plan.endpoint.pin, trace).await;
    let stream = match hs.result {
        Ok(s) => s,
        Err(e) => {
            d.failure = Some(e.failure().to_string());
            return (d, tcp, Some(hs.record));
        }
    };
    receive(stream, &mut d, plan, engine).await;
    (d, tcp, Some(hs.record))
}

/// Sends the request and reads the payload, sampling progress, until it is complete, fails or
/// `max_download` runs out.
async fn receive<S>(mut stream: S, d: &mut Download, plan: &Plan, engine: &EngineConfig)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let want = plan.settings.payload_bytes;
    let request = format!(
        "GET {PAYLOAD_PATH}{want} HTTP/1.1\r\nHost: {}\r\nUser-Agent: vantage/{}\r\nConnection: close\r\n\r\n",
        d.sni,
        env!("CARGO_PKG_VERSION")
    );
    let sent = Instant::now();
    match tokio::time::timeout(engine.timeouts.http, stream.write_all(request.as_bytes())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            d.failure = Some(classify_io(&e).to_string());
            return;
        }
        Err(_) => {
            d.failure = Some(Failure::GenericTimeoutError.to_string());
            return;
        }
    }
    let deadline = tokio::time::Instant::from_std(sent + plan.settings.max_download);
    let ms = |at: Instant| u64::try_from(at.duration_since(sent).as_millis()).unwrap_or(u64::MAX);
    let mut head: Vec<u8> = Vec::new();
    let mut in_body = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                // Out of time: a partial download is a result, not a failure, unless nothing
                // of the body ever came.
                if d.bytes == 0 {
                    d.failure = Some(Failure::GenericTimeoutError.to_string());
                }
                break;
            }
            Ok(Err(e)) => {
                d.failure = Some(classify_io(&e).to_string());
                break;
            }
            Ok(Ok(0)) => {
                if d.bytes < want {
                    d.failure = Some(Failure::EofError.to_string());
                }
                break;
            }
            Ok(Ok(n)) => n,
        };
        let now = Instant::now();
        let mut body = &buf[..n];
        if !in_body {
            head.extend_from_slice(body);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                if head.len() > 8 * 1024 {
                    d.failure = Some(Failure::unknown("response header too long").to_string());
                    return;
                }
                continue;
            };
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                d.failure = Some(
                    Failure::unknown(format!(
                        "throughput server answered {:?}",
                        String::from_utf8_lossy(line)
                    ))
                    .to_string(),
                );
                return;
            }
            in_body = true;
            let rest = head.split_off(end + 4);
            body = &[];
            if !rest.is_empty() {
                d.bytes += rest.len() as u64;
                d.ttfb_ms = Some(ms(now));
            }
        }
        if !body.is_empty() {
            d.ttfb_ms.get_or_insert(ms(now));
            d.bytes += body.len() as u64;
        }
        if d.bytes > 0 {
            let t = ms(now);
            d.ttlb_ms = Some(t);
            match d.samples.last_mut() {
                Some(last) if t < last.0 + SAMPLE_EVERY_MS && d.bytes < want => {}
                _ => d.samples.push((t, d.bytes.min(want))),
            }
        }
        if d.bytes >= want {
            d.bytes = want;
            d.complete = true;
            break;
        }
    }
    // The last sample is where the download ended.
    if let (Some(t), Some(last)) = (d.ttlb_ms, d.samples.last())
        && (last.0 != t || last.1 != d.bytes)
    {
        d.samples.push((t, d.bytes));
    }
}

/// Signs a measurement and keeps it in the local store, queued for upload, in one transaction.
pub fn keep(
    m: &ThrottlingMeasurement,
    identity: &crate::envelope::Identity,
    store: &mut crate::store::Store,
) -> Result<crate::envelope::MeasurementId, crate::run::RunError> {
    let blocking = m.test_keys.blocking.to_string();
    let verdict = serde_json::to_string(&m.test_keys.throttling)
        .map_err(|e| crate::envelope::EnvelopeError::Malformed(e.to_string()))?;
    let row = crate::store::NewResult {
        id: "",
        input: m.input.as_deref(),
        test_name: THROTTLING,
        measured_at: &m.measurement_start_time,
        blocking: Some(&blocking),
        accessible: Some(m.test_keys.accessible),
        confirmed: false,
        verdict: &verdict,
        envelope: "",
    };
    crate::run::keep(m, row, identity, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            addr: ([127, 0, 0, 1], 1).into(),
            pin: CertPin([7; 32]),
        }
    }

    #[test]
    fn plans_are_checked_before_any_traffic() {
        let ok = Plan::new(endpoint(), vec!["twitter.com".into()], Settings::default())
            .expect("default plan");
        assert_eq!(ok.max_traffic_bytes(), 960_000);
        let two = Plan::new(
            endpoint(),
            vec!["twitter.com".into(), "twimg.com".into()],
            Settings::default(),
        )
        .expect("two targets fit in 2 MB");
        assert!(two.max_traffic_bytes() <= 2_000_000);

        let cases: Vec<(Vec<&str>, Settings, &str)> = vec![
            (vec![], Settings::default(), "at least one target"),
            (vec!["not a name!"], Settings::default(), "not a DNS name"),
            (vec!["10.0.0.1"], Settings::default(), "not a DNS name"),
            (
                vec!["a.example", "b.example", "c.example"],
                Settings::default(),
                "over the budget of 2000000 bytes",
            ),
            (
                vec!["a.example"],
                Settings {
                    payload_bytes: 5_000_000,
                    ..Settings::default()
                },
                "payload of 5000000 bytes",
            ),
            (
                vec!["a.example"],
                Settings {
                    repetitions: 1,
                    ..Settings::default()
                },
                "1 repetitions",
            ),
        ];
        for (targets, settings, want) in cases {
            let err = Plan::new(
                endpoint(),
                targets.iter().map(|t| t.to_string()).collect(),
                settings,
            )
            .expect_err(want);
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn pins_parse_from_hex_and_refuse_anything_else() {
        let pin = CertPin::of(b"certificate");
        assert_eq!(pin.to_string().parse::<CertPin>(), Ok(pin));
        assert!(
            "abcd"
                .parse::<CertPin>()
                .expect_err("short")
                .contains("2 bytes")
        );
        assert!(
            "zz".repeat(32)
                .parse::<CertPin>()
                .expect_err("hex")
                .contains("not hex")
        );
    }
}
