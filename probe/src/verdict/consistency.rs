//! DNS consistency: does what the probe's resolver said agree with the control?
//!
//! OONI v0.5 (`minipipeline/analysis.go`, `webconnectivitylte/analysisclassic.go`; research
//! `ooni.md` 3.3): a successful lookup is *valid* if its addresses intersect the control's or
//! share an ASN with them (ASN 0 ignored). Both sides failing is an *expected* failure, whatever
//! the exact strings (a helper that answered no address failed too); the probe failing alone is
//! *unexpected*. A control without a DNS part judges nothing. Any invalid lookup or unexpected
//! failure makes the result `inconsistent`.
//!
//! Vantage adds two rules. An address on which a TLS handshake with the right SNI succeeded is
//! valid, because only the real site holds a certificate for that name: this removes the CDN and
//! geo-DNS false positives OONI documents (ooni/probe#1523, #1735, #2456). And an answer that
//! differs from a later duplicate answer to the same query is injection (ts-017 E003).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::observe::Observations;
use crate::ooni::WebConnectivityMeasurement;

/// OONI's three values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// The probe's DNS agrees with the control.
    Consistent,
    /// It does not.
    Inconsistent,
}

impl Consistency {
    /// OONI's string.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Consistent => "consistent",
            Consistency::Inconsistent => "inconsistent",
        }
    }
}

/// Which validity tests apply.
#[derive(Debug, Clone, Copy)]
pub struct ConsistencyRules {
    /// An address with a successful TLS handshake for the host is valid.
    pub tls_proves_address: bool,
}

/// Computes `dns_consistency`; `None` when there is no control, the control reported no lookup,
/// or there is no lookup to judge.
pub fn dns_consistency(obs: &Observations<'_>, rules: ConsistencyRules) -> Option<Consistency> {
    let control = obs.control?;
    let th_dns = control.dns()?;
    let th_addrs: BTreeSet<IpAddr> = control
        .addrs()
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let asn_of = |ip: &IpAddr| -> u32 {
        control
            .ip_info
            .as_ref()
            .and_then(|info| info.get(&ip.to_string()))
            .map_or(0, |i| i.asn)
    };
    let th_asns: BTreeSet<u32> = th_addrs.iter().map(asn_of).filter(|a| *a != 0).collect();
    let th_failed = th_dns.failure.is_some();

    let mut valid = 0;
    let mut invalid = 0;
    let mut expected_failures = 0;
    let mut unexpected_failures = 0;
    for (addrs, failure) in &obs.dns_lookups {
        match failure {
            Some(_) => {
                // A helper that answered no address failed to resolve as well: OONI's helper
                // writes its `dns_no_answer` so (research `ooni.md` 2.2), and ooniprobe 2.x's
                // helper wrote NXDOMAIN so. Both failing is an expected failure, whatever the
                // strings (research `ooni.md` 3.3).
                if th_failed || th_addrs.is_empty() {
                    expected_failures += 1;
                } else {
                    unexpected_failures += 1;
                }
            }
            None if addrs.is_empty() => {}
            None => {
                let ok = addrs.iter().any(|a| th_addrs.contains(a))
                    || addrs.iter().any(|a| {
                        let asn = asn_of(a);
                        asn != 0 && th_asns.contains(&asn)
                    })
                    || (rules.tls_proves_address
                        && addrs.iter().any(|a| obs.tls_valid_addrs.contains(a)));
                if ok {
                    valid += 1;
                } else {
                    invalid += 1;
                }
            }
        }
    }
    if invalid > 0 || unexpected_failures > 0 {
        Some(Consistency::Inconsistent)
    } else if valid > 0 || expected_failures > 0 {
        Some(Consistency::Consistent)
    } else {
        None
    }
}

/// Whether a UDP query got a later answer whose addresses differ from the first one's: two
/// different answers to one query mean someone on the path answered too (ts-017 E003).
pub fn injected_answers(m: &WebConnectivityMeasurement) -> bool {
    let tk = &m.test_keys;
    let addrs = |q: &crate::ooni::DnsQuery| -> BTreeSet<String> {
        q.answers
            .iter()
            .flatten()
            .filter_map(|a| a.ipv4.clone().or_else(|| a.ipv6.clone()))
            .collect()
    };
    tk.x_dns_duplicate_responses.iter().flatten().any(|late| {
        tk.queries.iter().flatten().any(|first| {
            first.engine() == late.engine()
                && first.resolver_address == late.resolver_address
                && first.query_type == late.query_type
                && first.hostname == late.hostname
                && !addrs(late).is_empty()
                && addrs(first) != addrs(late)
        })
    })
}
