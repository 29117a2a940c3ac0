//! The lab's scenarios as data: one test domain per censorship technique, where it lives on the
//! lab's "Internet", how the router censors it, and the verdict a probe must reach.
//!
//! The expected verdicts name the rule of the `vantage` rule set that decides
//! (`probe/src/verdict/rules.rs`) and the blocking type OONI's web_connectivity would report
//! (ts-017: `dns`, `tcp_ip`, `http-failure`, `http-diff`; Vantage adds `tls`).

use std::net::Ipv4Addr;

/// How the router (the censoring ISP) treats a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Technique {
    /// Left alone: a control.
    None,
    /// The ISP's resolver answers NXDOMAIN.
    DnsNxdomain,
    /// The ISP's resolver answers this address (a national blockpage's, and a bogon).
    DnsBogon(Ipv4Addr),
    /// An injector in the router sees the query and races this forged answer ahead of the
    /// resolver's real one.
    DnsInjected(Ipv4Addr),
    /// Packets to the site's address are dropped: the connect times out.
    TcpDrop,
    /// Connects to the site's address are answered with a TCP reset.
    TcpReset,
    /// An iptables string match on the name in the TLS ClientHello (the SNI) answers the
    /// ClientHello with a TCP reset.
    SniReset,
    /// Plain-HTTP connections to the site's address go to a filtering proxy in the router, which
    /// reads the Host header and serves the national blockpage for this domain (the two-stage
    /// design of the UK's Cleanfeed and many national filters).
    HostBlockpage,
    /// Traffic from the site's address to the probes is shaped to this many kbit/s (tc htb with
    /// a u32 filter on the source address).
    Throttle(u32),
    /// As [`Technique::HostBlockpage`], but the filter page is padded to the real page's exact
    /// byte length and matches no fingerprint (`hygiene::filter_page`): only its title and
    /// text tell it from the site.
    HostFilterPageSameSize,
    /// Traffic from the site's address is policed to this many kbit/s: what exceeds the rate
    /// is dropped, not queued (`hashlimit` in the router, `hygiene::police_rule`).
    Police(u32),
}

/// Blocking types and rule ids as the probe writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// `None` for `blocking: false`, else the blocking type.
    pub blocking: Option<&'static str>,
    /// The deciding rule's id as the verdict states it (`Verdict.rule`), with its suffix when
    /// a fingerprint or DNS consistency overrode the rule.
    pub rule: &'static str,
    /// Whether a blockpage or DNS fingerprint for IR must confirm the block.
    pub confirmed: bool,
    /// Whether the passive throttling signal must mark the page as far slower than the
    /// helper's copy (`goodput.below_control`).
    pub slow: bool,
    /// Whether the aggregator's timeline must hold a blocking event for the domain.
    pub event: bool,
}

/// One test domain of the lab.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    /// Its name; the lab's DNS serves it, the lab CA's certificate covers it.
    pub domain: &'static str,
    /// Last octet of its address in the lab's Internet (`SITES_NET`.x).
    pub host: u8,
    /// `http` or `https`: the URL the test list holds.
    pub scheme: &'static str,
    /// What the router does to it.
    pub technique: Technique,
    /// What a probe behind the router must see.
    pub expect: Expect,
}

impl Site {
    /// The site's address on the lab's Internet.
    pub fn addr(&self) -> Ipv4Addr {
        let [a, b, c, _] = crate::topology::SITES_NET.octets();
        Ipv4Addr::new(a, b, c, self.host)
    }

    /// The URL the test list holds.
    pub fn url(&self) -> String {
        format!("{}://{}/", self.scheme, self.domain)
    }
}

const fn blocked(kind: &'static str, rule: &'static str, confirmed: bool) -> Expect {
    Expect {
        blocking: Some(kind),
        rule,
        confirmed,
        slow: false,
        event: true,
    }
}

/// A page held to a rate: the body still arriving when the probe's deadline cut it.
const fn throttled(rule: &'static str) -> Expect {
    Expect {
        blocking: Some("throttling"),
        rule,
        confirmed: false,
        slow: true,
        event: false,
    }
}

const fn reachable(rule: &'static str, slow: bool) -> Expect {
    Expect {
        blocking: None,
        rule,
        confirmed: false,
        slow,
        event: false,
    }
}

/// The address Iran's national filter page is served from (fingerprint
/// `vantage.ir_dns_peyvandha_1` in `probe/data/fingerprints.csv`).
pub const PEYVANDHA_1: Ipv4Addr = Ipv4Addr::new(10, 10, 34, 34);
/// Its second address (`vantage.ir_dns_peyvandha_2`), used by the injector.
pub const PEYVANDHA_2: Ipv4Addr = Ipv4Addr::new(10, 10, 34, 35);

/// The rate the throttled site is shaped to, in kbit/s.
pub const THROTTLE_KBPS: u32 = 400;

/// Every domain of the lab. The probes measure them all; the router censors each its own way.
pub const SITES: &[Site] = &[
    Site {
        domain: "control.lab",
        host: 1,
        scheme: "https",
        technique: Technique::None,
        expect: reachable("https-page", false),
    },
    Site {
        domain: "control-http.lab",
        host: 2,
        scheme: "http",
        technique: Technique::None,
        expect: reachable("http-same-page", false),
    },
    Site {
        domain: "nxdomain.lab",
        host: 3,
        scheme: "http",
        technique: Technique::DnsNxdomain,
        expect: blocked("dns", "dns-blocked", false),
    },
    Site {
        domain: "bogon.lab",
        host: 4,
        scheme: "http",
        technique: Technique::DnsBogon(PEYVANDHA_1),
        expect: blocked("dns", "dns-bogon-answer", true),
    },
    Site {
        domain: "injected.lab",
        host: 5,
        scheme: "http",
        technique: Technique::DnsInjected(PEYVANDHA_2),
        expect: blocked("dns", "dns-injected-answers", true),
    },
    Site {
        domain: "tcp-drop.lab",
        host: 6,
        scheme: "https",
        technique: Technique::TcpDrop,
        expect: blocked("tcp_ip", "tcp-blocked", false),
    },
    Site {
        domain: "tcp-reset.lab",
        host: 7,
        scheme: "https",
        technique: Technique::TcpReset,
        expect: blocked("tcp_ip", "tcp-blocked", false),
    },
    Site {
        domain: "sni-reset.lab",
        host: 8,
        scheme: "https",
        technique: Technique::SniReset,
        expect: blocked("tls", "tls-interference", false),
    },
    Site {
        domain: "blockpage.lab",
        host: 9,
        scheme: "http",
        technique: Technique::HostBlockpage,
        // OONI's classic rules call the page the same as the helper's (same status, same header
        // names, content-length among them). Vantage's rules do not let a header every server
        // sends make two pages match (docs/scoring.md), so the page differs from the control's,
        // and the IR blockpage fingerprint confirms it.
        expect: blocked("http-diff", "http-different-page", true),
    },
    // Same address as blockpage.lab: the proxy decides by Host, so this one passes.
    Site {
        domain: "neighbour.lab",
        host: 9,
        scheme: "http",
        technique: Technique::None,
        expect: reachable("http-same-page", false),
    },
    Site {
        domain: "throttled.lab",
        host: 10,
        scheme: "http",
        technique: Technique::Throttle(THROTTLE_KBPS),
        expect: reachable("http-same-page", true),
    },
    // A filter page of exactly the real page's length, in no fingerprint table: the title and
    // text alone make it another page (docs/scoring.md, "A different page of the same length").
    Site {
        domain: "samesize.lab",
        host: 11,
        scheme: "http",
        technique: Technique::HostFilterPageSameSize,
        expect: blocked("http-diff", "http-different-page", false),
    },
    // A large page on a policed path, measured with a deadline far shorter than its download:
    // the body is cut while still arriving, at the policer's pace (docs/scoring.md, "A page
    // still arriving at the deadline").
    Site {
        domain: "policed.lab",
        host: 12,
        scheme: "http",
        technique: Technique::Police(POLICE_KBPS),
        expect: throttled("http-body-throttled"),
    },
];

/// The rate the policed site's path is held to, in kbit/s (1,000 bit/s, as `tc` and the
/// probe's goodput count).
pub const POLICE_KBPS: u32 = 128;

/// The policed site's page: 1 MiB takes 65 s at [`POLICE_KBPS`], far beyond the lab's 5 s
/// HTTP deadline, so the probe never has all of it.
pub const POLICED_PAGE_BYTES: usize = 1024 * 1024;

/// The name the probes' active throttling test sends as its target SNI; the router polices
/// connections whose ClientHello carries it.
pub const THROTTLED_SNI: &str = "sni-throttled.lab";
/// The throughput policer's rate, in kbit/s.
pub const SNI_POLICE_KBPS: u32 = 512;
/// The control SNI of the active test; left alone.
pub const CONTROL_SNI: &str = "control.lab";

/// The body size of the throttled site's page: large enough for the passive signal (32 KiB,
/// `probe/src/throttling/passive.rs`), small enough to arrive within the probe's deadline at
/// [`THROTTLE_KBPS`].
pub const LARGE_PAGE_BYTES: usize = 96 * 1024;

/// The page a site serves: its name, so that the probe's and the helper's copies agree, and
/// padding for the throttled one.
pub fn page(domain: &str) -> String {
    let mut body = format!(
        "<html><head><title>{domain}</title></head><body><h1>Welcome to {domain}</h1>\
         <p>A site of the Vantage censorship lab.</p>"
    );
    let size = SITES
        .iter()
        .find(|s| s.domain == domain)
        .map_or(0, |s| match s.technique {
            Technique::Throttle(_) => LARGE_PAGE_BYTES,
            Technique::Police(_) => POLICED_PAGE_BYTES,
            _ => 0,
        });
    while body.len() < size {
        body.push_str("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n");
    }
    body.push_str("</body></html>");
    body
}

/// The national filter page the router's proxy serves: it frames the filter's site, as Iran's
/// does, which the probe's `vantage.ir_body_peyvandha` fingerprint recognises.
pub const BLOCKPAGE: &str = "<html><head><meta http-equiv=\"Content-Type\" \
content=\"text/html; charset=utf-8\"><title>M1-6</title></head><body>\
<iframe src=\"http://10.10.34.34?type=Invalid Site&policy=MainPolicy\" style=\"width: 100%; \
height: 100%\" scrolling=\"no\" marginwidth=\"0\" marginheight=\"0\" frameborder=\"0\" \
vspace=\"0\" hspace=\"0\"></iframe><a href=\"https://peyvandha.ir\">peyvandha.ir</a></body></html>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_technique_has_a_domain_and_the_domains_are_distinct() {
        let mut names: Vec<&str> = SITES.iter().map(|s| s.domain).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SITES.len());
        for t in [
            Technique::DnsNxdomain,
            Technique::DnsBogon(PEYVANDHA_1),
            Technique::DnsInjected(PEYVANDHA_2),
            Technique::TcpDrop,
            Technique::TcpReset,
            Technique::SniReset,
            Technique::HostBlockpage,
            Technique::Throttle(THROTTLE_KBPS),
            Technique::HostFilterPageSameSize,
            Technique::Police(POLICE_KBPS),
        ] {
            assert!(SITES.iter().any(|s| s.technique == t), "{t:?}");
        }
    }

    #[test]
    fn the_throttled_page_is_large_enough_for_the_passive_signal_and_others_are_small() {
        assert!(page("throttled.lab").len() >= LARGE_PAGE_BYTES);
        assert!(page("policed.lab").len() >= POLICED_PAGE_BYTES);
        assert!(page("control.lab").len() < 1024);
    }

    #[test]
    fn addresses_that_block_by_address_are_not_shared_with_controls() {
        for s in SITES.iter().filter(|s| {
            matches!(
                s.technique,
                Technique::TcpDrop
                    | Technique::TcpReset
                    | Technique::Throttle(_)
                    | Technique::Police(_)
            )
        }) {
            assert_eq!(SITES.iter().filter(|o| o.host == s.host).count(), 1);
        }
    }
}
