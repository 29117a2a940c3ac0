//! DNS consistency: does what the probe's resolver said agree with the control?
//!
//! OONI v0.5 (`minipipeline/analysis.go`, `webconnectivitylte/analysisclassic.go` in
//! `ooni/probe-cli`): a successful lookup is *valid* if its addresses intersect the control's or
//! share an ASN with them (ASN 0 ignored). Both sides failing is an *expected* failure, whatever
//! the exact strings (a helper that answered no address failed too); the probe failing alone is
//! *unexpected*. A control without a DNS part judges nothing. Any invalid lookup or unexpected
//! failure makes the result `inconsistent`.
//!
//! Vantage adds rules. An address on which a TLS handshake with the right SNI succeeded is
//! valid, because only the real site holds a certificate for that name: this removes the CDN and
//! geo-DNS false positives OONI documents (ooni/probe#1523, #1735, #2456). And an answer that
//! differs from a later duplicate answer to the same query is injection (ts-017 E003). From
//! `vantage-2`, a failed AAAA lookup (REFUSED, NXDOMAIN, no answer) beside an A answer that
//! matches the control does not make the result inconsistent.

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
    /// A failed AAAA lookup is left out when an A lookup returned valid addresses.
    pub aaaa_failure_beside_valid_a: bool,
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
    let mut valid_a = 0;
    let mut aaaa_failures = 0;
    for (query_type, addrs, failure) in &obs.dns_lookups {
        match failure {
            // Vantage: a resolver that refuses AAAA queries, or answers NXDOMAIN or nothing
            // for them alone, says nothing about the site when its A answer is the control's;
            // many sites have no IPv6 and many resolvers mishandle AAAA (RFC 4074). Counted
            // apart, and left out below if an A answer was valid.
            Some(_) if rules.aaaa_failure_beside_valid_a && query_type == "AAAA" => {
                aaaa_failures += 1;
            }
            Some(_) => {
                // A helper that answered no address failed to resolve as well: OONI's helper
                // writes its `dns_no_answer` so (`internal/oohelperd/`), and ooniprobe 2.x's
                // helper wrote NXDOMAIN so. Both failing is an expected failure, whatever the
                // strings (`analysisclassic.go`).
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
                    if query_type != "AAAA" {
                        valid_a += 1;
                    }
                } else {
                    invalid += 1;
                }
            }
        }
    }
    // Without a valid A answer, the AAAA failures count as any failure.
    if valid_a == 0 && aaaa_failures > 0 {
        if th_failed || th_addrs.is_empty() {
            expected_failures += aaaa_failures;
        } else {
            unexpected_failures += aaaa_failures;
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

#[cfg(test)]
mod tests {
    use crate::ooni::{Blocking, DnsQuery, WebConnectivityMeasurement};
    use crate::verdict::fingerprints::Fingerprints;
    use crate::verdict::{rules, score};

    /// OONI's generated measurement of a site whose TCP connect times out while the helper
    /// connects: `tcp_ip`.
    const TCP_BLOCKED: &str = include_str!(
        "../../../tests/data/ooni/webconnectivity/generated-tcpBlockingConnectTimeout.json"
    );

    /// The measurement with its classic lookups replaced by an A lookup returning `a` (the
    /// control's address is 93.184.216.34) and an AAAA lookup failing with `aaaa`.
    fn with_lookups(a: Result<&str, &str>, aaaa: &str) -> WebConnectivityMeasurement {
        let mut m: WebConnectivityMeasurement =
            serde_json::from_str(TCP_BLOCKED).expect("the fixture parses");
        let queries = m.test_keys.queries.as_mut().expect("queries");
        let classic = queries
            .iter()
            .find(|q| q.engine() == "getaddrinfo")
            .expect("a classic lookup")
            .clone();
        queries.retain(|q| q.engine() != "getaddrinfo");
        let mut q_a: DnsQuery = classic.clone();
        q_a.query_type = "A".into();
        match a {
            Ok(ip) => {
                if let Some(ans) = q_a.answers.as_mut().and_then(|a| a.first_mut()) {
                    ans.ipv4 = Some(ip.into());
                }
            }
            Err(failure) => {
                q_a.answers = None;
                q_a.failure = Some(failure.into());
            }
        }
        let mut q_aaaa = classic;
        q_aaaa.query_type = "AAAA".into();
        q_aaaa.answers = None;
        q_aaaa.failure = Some(aaaa.into());
        queries.push(q_a);
        queries.push(q_aaaa);
        m
    }

    #[test]
    fn a_failed_aaaa_beside_a_matching_a_leaves_dns_consistent() {
        let fp = Fingerprints::builtin();
        for aaaa in [
            "dns_refused_error",
            "dns_server_misbehaving",
            "dns_nxdomain_error",
            "dns_no_answer",
        ] {
            let m = with_lookups(Ok("93.184.216.34"), aaaa);
            let v = score(&m, &rules::VANTAGE, &fp);
            assert_eq!(v.dns_consistency, Some("consistent"), "{aaaa}: {v:?}");
            assert_eq!(v.blocking, Some(Blocking::Kind("tcp_ip".into())), "{aaaa}");
            assert_eq!(v.rule, "tcp-blocked", "{aaaa}");
            // OONI's classic rules ignore only `dns_no_answer` for AAAA.
            let ooni = score(&m, &rules::OONI, &fp);
            if aaaa == "dns_no_answer" {
                assert_eq!(ooni.rule, "tcp-blocked", "{aaaa}: {ooni:?}");
            } else {
                assert_eq!(ooni.dns_consistency, Some("inconsistent"), "{aaaa}");
                assert_eq!(ooni.rule, "tcp-blocked+inconsistent-dns", "{aaaa}");
                assert_eq!(
                    v.ooni_rules_blocking,
                    Some(Some(Blocking::Kind("dns".into())))
                );
            }
        }
    }

    #[test]
    fn a_failed_aaaa_still_counts_without_a_matching_a() {
        let fp = Fingerprints::builtin();
        // The A answer is another network's address: inconsistent, as before.
        let m = with_lookups(Ok("10.10.34.35"), "dns_refused_error");
        let v = score(&m, &rules::VANTAGE, &fp);
        assert_eq!(v.dns_consistency, Some("inconsistent"), "{v:?}");
        assert_eq!(v.blocking, Some(Blocking::Kind("dns".into())));
        // The A lookup failed too: the AAAA failure is one more unexpected failure.
        let m = with_lookups(Err("dns_refused_error"), "dns_refused_error");
        let v = score(&m, &rules::VANTAGE, &fp);
        assert_eq!(v.dns_consistency, Some("inconsistent"), "{v:?}");
        assert_eq!(v.blocking, Some(Blocking::Kind("dns".into())));
    }
}
