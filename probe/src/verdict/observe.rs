//! What a measurement shows, reduced to the facts the rules look at.
//!
//! OONI's v0.5 classic analysis (`webconnectivitylte/analysisclassic.go`) looks only at entries
//! tagged `classic` (the system-resolver lookup and the main redirect chain), sorts them by
//! descending `depth`, within a depth HTTP before TLS before TCP before DNS, successes before
//! failures, and lets the first entry decide. Measurements without a `classic` tag anywhere (OONI
//! v0.4 and older, and v0.5 before 0.5.28 tagged its entries) are read whole: every entry counts.
//!
//! Older generations are read from what they wrote (ts-017, df-001-httpt, df-002-dnst): a lookup
//! without `engine` is `unknown` (ooniprobe 2.x used the system resolver); a measurement whose
//! steps end without a failure but that carries a top-level `http_experiment_failure` failed at
//! its HTTP step, even when no request was recorded; a control that reports nothing (`{}`) is no
//! control.

use std::net::{IpAddr, SocketAddr};

use crate::ooni::{ControlResponse, HttpTransaction, WebConnectivityMeasurement};

/// Start of the `control_failure` a control that reports nothing is read with.
pub const EMPTY_CONTROL: &str = "unknown_failure: test helper control empty";

/// The step that decides, with what the probe saw there.
#[derive(Debug, Clone)]
pub enum Decisive<'a> {
    /// An HTTP response arrived without error.
    HttpOk(&'a HttpTransaction),
    /// The HTTP exchange failed.
    HttpFailed(&'a HttpTransaction),
    /// The HTTP step failed with this `http_experiment_failure`, and no failed request says
    /// so (no request was recorded, or none failed).
    HttpStepFailed(String),
    /// A TLS handshake succeeded but no HTTP followed.
    TlsOk,
    /// TLS handshakes failed; the first failing endpoint.
    TlsFailed(String),
    /// A TCP connect succeeded but nothing followed.
    TcpOk,
    /// TCP connects failed; the first failing endpoint.
    TcpFailed(String),
    /// A DNS lookup succeeded but nothing followed.
    DnsOk,
    /// The lookup failed, with this failure.
    DnsFailed(String),
    /// Nothing to look at.
    Nothing,
}

/// The facts of one measurement.
#[derive(Debug, Clone)]
pub struct Observations<'a> {
    /// Whether the measurement is read whole (no entry is tagged `classic`).
    pub whole: bool,
    /// The deciding step.
    pub decisive: Decisive<'a>,
    /// The control, if the helper answered and measured the site.
    pub control: Option<&'a ControlResponse>,
    /// Why there is no usable control: the measurement's `control_failure`, or why the
    /// helper's answer measured nothing of the site ([`crate::th::unusable`]).
    pub control_failure: Option<String>,
    /// Addresses the probe's classic lookups at depth 0 returned.
    pub probe_addrs: Vec<IpAddr>,
    /// Addresses where a TLS handshake with the URL's host as SNI succeeded.
    pub tls_valid_addrs: Vec<IpAddr>,
    /// The host of the measured URL.
    pub host: String,
    /// Each classic, non-DoH lookup at depth 0 that counts: its query type, its addresses and
    /// its failure.
    pub dns_lookups: Vec<(String, Vec<IpAddr>, Option<String>)>,
}

fn depth(tags: Option<&Vec<String>>) -> u32 {
    tags.into_iter()
        .flatten()
        .find_map(|t| t.strip_prefix("depth=")?.parse().ok())
        .unwrap_or(0)
}

fn is_classic(tags: Option<&Vec<String>>) -> bool {
    tags.is_some_and(|t| t.iter().any(|x| x == "classic"))
}

/// Whether an entry counts: it is `classic`, or nothing in the measurement is.
fn classic(whole: bool, tags: Option<&Vec<String>>) -> bool {
    whole || is_classic(tags)
}

/// Whether a lookup failure counts: OONI ignores `dns_no_answer` for AAAA (many sites have no
/// IPv6) and DoH failures (a blocked DoH server says nothing about the site; ooni/probe#2274).
fn counts(query_type: &str, engine: &str, failure: &str) -> bool {
    !(engine == "doh" || (query_type == "AAAA" && failure == "dns_no_answer"))
}

impl<'a> Observations<'a> {
    /// Reads the facts of `m`. With `check_control`, a control that measured nothing of the
    /// site ([`crate::th::unusable`]) counts as none even when the measurement does not say so;
    /// without, only the measurement's `control_failure` does, as in OONI's analysis.
    pub fn of(m: &'a WebConnectivityMeasurement, check_control: bool) -> Self {
        let tk = &m.test_keys;
        let queries = tk.queries.as_deref().unwrap_or_default();
        let tcp = tk.tcp_connect.as_deref().unwrap_or_default();
        let tls = tk.tls_handshakes.as_deref().unwrap_or_default();
        let requests = tk.requests.as_deref().unwrap_or_default();
        // `whole`: no entry is tagged classic, so every entry counts.
        let whole = !(queries.iter().any(|q| is_classic(q.tags.as_ref()))
            || tcp.iter().any(|t| is_classic(t.tags.as_ref()))
            || tls.iter().any(|t| is_classic(t.tags.as_ref()))
            || requests.iter().any(|r| is_classic(r.tags.as_ref())));
        let host = m
            .input
            .as_deref()
            .and_then(|i| url::Url::parse(i).ok())
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .unwrap_or_default();

        // (depth, kind order, failed, decisive): sorted, the first decides.
        let mut entries: Vec<(u32, u8, bool, Decisive<'a>)> = Vec::new();
        for r in requests.iter().filter(|r| classic(whole, r.tags.as_ref())) {
            let d = if r.failure.is_none() {
                Decisive::HttpOk(r)
            } else {
                Decisive::HttpFailed(r)
            };
            entries.push((depth(r.tags.as_ref()), 0, r.failure.is_some(), d));
        }
        for h in tls.iter().filter(|h| classic(whole, h.tags.as_ref())) {
            let d = match &h.failure {
                None => Decisive::TlsOk,
                Some(_) => Decisive::TlsFailed(h.address.clone().unwrap_or_default()),
            };
            entries.push((depth(h.tags.as_ref()), 1, h.failure.is_some(), d));
        }
        for t in tcp.iter().filter(|t| classic(whole, t.tags.as_ref())) {
            let d = match &t.status.failure {
                None => Decisive::TcpOk,
                Some(_) => Decisive::TcpFailed(endpoint(&t.ip, t.port)),
            };
            entries.push((depth(t.tags.as_ref()), 2, t.status.failure.is_some(), d));
        }
        for q in queries.iter().filter(|q| classic(whole, q.tags.as_ref())) {
            let d = match &q.failure {
                None => Decisive::DnsOk,
                Some(f) if counts(&q.query_type, q.engine(), f) => Decisive::DnsFailed(f.clone()),
                Some(_) => continue,
            };
            entries.push((depth(q.tags.as_ref()), 3, q.failure.is_some(), d));
        }
        entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut decisive = entries
            .into_iter()
            .next()
            .map_or(Decisive::Nothing, |e| e.3);
        // The steps recorded end without a failure, yet the measurement says its HTTP step
        // failed: a probe that wrote the failure only at the top (ts-017's
        // `http_experiment_failure`), or that recorded no request for it. Only for measurements
        // read whole; a classic-tagged one records its HTTP failures in `requests`.
        if whole
            && matches!(
                decisive,
                Decisive::TlsOk | Decisive::TcpOk | Decisive::DnsOk | Decisive::Nothing
            )
            && let Some(failure) = &tk.http_experiment_failure
        {
            decisive = Decisive::HttpStepFailed(failure.clone());
        }

        let mut probe_addrs = Vec::new();
        for q in queries
            .iter()
            .filter(|q| classic(whole, q.tags.as_ref()) && depth(q.tags.as_ref()) == 0)
        {
            for ip in q
                .answers
                .iter()
                .flatten()
                .filter_map(crate::ooni::DnsAnswer::ip)
            {
                if !probe_addrs.contains(&ip) {
                    probe_addrs.push(ip);
                }
            }
        }
        let tls_valid_addrs = tls
            .iter()
            .filter(|h| h.failure.is_none() && h.server_name.eq_ignore_ascii_case(&host))
            .filter_map(|h| h.address.as_deref()?.parse::<SocketAddr>().ok())
            .map(|a| a.ip())
            .collect();
        // A control is used only when the helper measured: `control_failure` (recorded by the
        // probe) or an answer that measured nothing of the site (checked here too, for
        // measurements from probes that did not check) leaves none, so the helper's refusal or
        // failure is never read as the site's (`docs/scoring.md`).
        // An answer that reports nothing at all cannot be compared, whatever the rules.
        let control_failure = tk.control_failure.clone().or_else(|| {
            let control = tk.control.as_ref()?;
            if control.is_empty() {
                return Some(format!(
                    "{EMPTY_CONTROL}: it reported no lookup, connect or page"
                ));
            }
            check_control
                .then(|| crate::th::unusable(control))
                .flatten()
        });
        let control = if control_failure.is_none() {
            tk.control.as_ref()
        } else {
            None
        };
        let dns_lookups = queries
            .iter()
            .filter(|q| {
                classic(whole, q.tags.as_ref())
                    && depth(q.tags.as_ref()) == 0
                    && q.engine() != "doh"
            })
            .filter(|q| {
                q.failure
                    .as_deref()
                    .is_none_or(|f| counts(&q.query_type, q.engine(), f))
            })
            .map(|q| {
                let addrs = q
                    .answers
                    .iter()
                    .flatten()
                    .filter_map(crate::ooni::DnsAnswer::ip)
                    .collect();
                (q.query_type.clone(), addrs, q.failure.clone())
            })
            .collect();
        Observations {
            control_failure,
            dns_lookups,
            whole,
            decisive,
            control,
            probe_addrs,
            tls_valid_addrs,
            host,
        }
    }
}

/// `ip:port`, with brackets for IPv6, as the control's endpoint keys are written.
pub fn endpoint(ip: &str, port: u16) -> String {
    match ip.parse::<IpAddr>() {
        Ok(addr) => SocketAddr::new(addr, port).to_string(),
        Err(_) => format!("{ip}:{port}"),
    }
}
