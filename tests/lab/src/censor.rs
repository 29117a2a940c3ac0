//! What the router does to each domain, as the iptables rules, tc classes and resolver settings
//! derived from the scenario table. Each technique is the real mechanism a censor uses, run by
//! the real kernel:
//!
//! - DNS: the ISP's resolver (dnsmasq) lies, NXDOMAIN or a blockpage address; an injector
//!   (`servers::inject`) forges answers from a raw socket.
//! - TCP: `DROP` (the connect times out) and `REJECT --reject-with tcp-reset`.
//! - TLS: the `string` match finds the SNI in the ClientHello, which travels in the clear
//!   (RFC 8446 §4.1.2, RFC 6066 §3), and answers it with a reset.
//! - HTTP: `DNAT` of the site's address to the ISP's filtering proxy, which reads the Host.
//! - Throttling: `htb` with a `u32` source-address filter on the links towards the probes; and
//!   for the throughput server a policer, `CONNMARK` on the ClientHello's SNI then `hashlimit`
//!   in bytes per second, because this kernel has neither the `fw` classifier nor `netem`
//!   (checked on the lab's kernel: `CONFIG_NET_ACT_POLICE`, `CONFIG_NET_CLS_FW` and
//!   `CONFIG_NET_SCH_NETEM` are not set).

use crate::scenario::{SITES, SNI_POLICE_KBPS, Site, THROTTLED_SNI, Technique};
use crate::topology::{self, AGGREGATOR, ISP_PROXY, NET_RESOLVER, ROUTER};

/// The throughput server's port on the aggregator's host.
pub const THROUGHPUT_PORT: u16 = 8443;

/// One command to run in the router namespace.
pub type Rule = Vec<String>;

fn rule(parts: &[&str]) -> Rule {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The iptables rules and tc settings for `sites`, in order.
pub fn router_rules(sites: &[&Site]) -> Vec<Rule> {
    let mut rules = Vec::new();
    for s in sites {
        let addr = s.addr().to_string();
        match s.technique {
            Technique::TcpDrop => rules.push(rule(&[
                "iptables", "-A", "FORWARD", "-d", &addr, "-j", "DROP",
            ])),
            Technique::TcpReset => rules.push(rule(&[
                "iptables",
                "-A",
                "FORWARD",
                "-p",
                "tcp",
                "-d",
                &addr,
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ])),
            Technique::SniReset => rules.push(rule(&[
                "iptables",
                "-A",
                "FORWARD",
                "-p",
                "tcp",
                "--dport",
                "443",
                "-m",
                "string",
                "--string",
                s.domain,
                "--algo",
                "bm",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ])),
            Technique::HostBlockpage | Technique::HostFilterPageSameSize => rules.push(rule(&[
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "-d",
                &addr,
                "--dport",
                "80",
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{ISP_PROXY}:80"),
            ])),
            Technique::Throttle(kbps) => {
                for i in 0..topology::PROBES.len() {
                    rules.extend(shape(&topology::probe_link(i), &addr, kbps));
                }
            }
            Technique::Police(kbps) => rules.push(crate::hygiene::police_rule(&addr, kbps)),
            // Done by the resolvers and the injector, not by rules.
            Technique::None
            | Technique::DnsNxdomain
            | Technique::DnsBogon(_)
            | Technique::DnsInjected(_) => {}
        }
    }
    // The throughput server: mark the connection whose ClientHello names the target, then drop
    // what exceeds the rate on it, in both directions.
    let police = format!("{}kb/s", SNI_POLICE_KBPS / 8);
    rules.push(rule(&[
        "iptables",
        "-t",
        "mangle",
        "-A",
        "FORWARD",
        "-p",
        "tcp",
        "-d",
        &AGGREGATOR.to_string(),
        "--dport",
        &THROUGHPUT_PORT.to_string(),
        "-m",
        "string",
        "--string",
        THROTTLED_SNI,
        "--algo",
        "bm",
        "-j",
        "CONNMARK",
        "--set-mark",
        "0x51",
    ]));
    rules.push(rule(&[
        "iptables",
        "-A",
        "FORWARD",
        "-m",
        "connmark",
        "--mark",
        "0x51",
        "-m",
        "hashlimit",
        "--hashlimit-name",
        "vl-sni",
        "--hashlimit-mode",
        "srcip,dstip",
        "--hashlimit-above",
        &police,
        "--hashlimit-burst",
        "64kb",
        "-j",
        "DROP",
    ]));
    rules
}

/// An htb root on `link` whose default class is unlimited, and a class at `kbps` that a `u32`
/// filter fills with packets from `src`.
fn shape(link: &str, src: &str, kbps: u32) -> Vec<Rule> {
    let rate = format!("{kbps}kbit");
    vec![
        rule(&[
            "tc", "qdisc", "add", "dev", link, "root", "handle", "1:", "htb", "default", "10",
            "r2q", "1000",
        ]),
        rule(&[
            "tc", "class", "add", "dev", link, "parent", "1:", "classid", "1:10", "htb", "rate",
            "1gbit",
        ]),
        rule(&[
            "tc", "class", "add", "dev", link, "parent", "1:", "classid", "1:20", "htb", "rate",
            &rate, "ceil", &rate,
        ]),
        rule(&[
            "tc",
            "filter",
            "add",
            "dev",
            link,
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            "1",
            "u32",
            "match",
            "ip",
            "src",
            &format!("{src}/32"),
            "flowid",
            "1:20",
        ]),
    ]
}

/// Applies the rules in the router.
pub fn apply(rules: &[Rule]) -> anyhow::Result<()> {
    for r in rules {
        let args: Vec<&str> = r.iter().map(String::as_str).collect();
        topology::run_in(ROUTER, &args)?;
    }
    Ok(())
}

/// dnsmasq arguments shared by both resolvers: no configuration file, no hosts file, no cache
/// (so that every query goes through the censor's logic and the injector sees it), in the
/// foreground, logging to stderr.
fn dnsmasq_common(listen: &str) -> Vec<String> {
    [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--cache-size=0",
        "--pid-file=",
        "--user=root",
        "--bind-interfaces",
        "--log-facility=-",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--listen-address={listen}"),
        "--port=53".to_string(),
    ])
    .collect()
}

/// The lab Internet's resolver: every domain's real address.
pub fn net_resolver() -> Vec<String> {
    let mut args = dnsmasq_common(&NET_RESOLVER.to_string());
    // Authoritative for the lab's zone: a name without an AAAA record gets an empty NOERROR
    // answer, not REFUSED for want of an upstream.
    args.push("--local=/lab/".to_string());
    for s in SITES {
        args.push(format!("--host-record={},{}", s.domain, s.addr()));
    }
    args.push(format!("--host-record={THROTTLED_SNI},{AGGREGATOR}"));
    args.extend(crate::apps::net_resolver_args());
    args.extend(crate::quic::net_resolver_args());
    args.extend(crate::dnscheck::net_resolver_args());
    args
}

/// The ISP's resolver: lies for the DNS-censored domains in `sites`, forwards the rest to the
/// Internet's resolver.
pub fn isp_resolver(sites: &[&Site]) -> Vec<String> {
    let mut args = dnsmasq_common(&topology::ISP_RESOLVER.to_string());
    args.push(format!("--server={NET_RESOLVER}"));
    args.extend(crate::apps::isp_resolver_args());
    for s in sites {
        match s.technique {
            // An empty address: NXDOMAIN for the name and everything under it (dnsmasq(8)).
            Technique::DnsNxdomain => args.push(format!("--address=/{}/", s.domain)),
            Technique::DnsBogon(ip) => args.push(format!("--address=/{}/{ip}", s.domain)),
            // The real answer comes from afar; the injector's is sent at once.
            Technique::DnsInjected(_) => args.push(format!(
                "--server=/{}/{}",
                s.domain,
                topology::SLOW_RESOLVER
            )),
            _ => {}
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<&'static Site> {
        SITES.iter().collect()
    }

    #[test]
    fn controls_get_no_rule_and_censored_addresses_get_theirs() {
        let rules = router_rules(&all());
        let text: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        for s in SITES {
            let mentioned = text.iter().any(|r| {
                r.contains(&format!(" {} ", s.addr()))
                    || r.contains(&format!(" {}/32 ", s.addr()))
                    || r.contains(s.domain)
            });
            let by_address = matches!(
                s.technique,
                Technique::TcpDrop
                    | Technique::TcpReset
                    | Technique::HostBlockpage
                    | Technique::Throttle(_)
            );
            if by_address || s.technique == Technique::SniReset {
                assert!(mentioned, "no rule for {}", s.domain);
            }
            if s.technique == Technique::None
                && !SITES
                    .iter()
                    .any(|o| o.host == s.host && o.technique != Technique::None)
            {
                assert!(!mentioned, "a rule touches the control {}", s.domain);
            }
        }
    }

    #[test]
    fn a_sabotaged_site_gets_no_rule() {
        let without: Vec<&Site> = SITES
            .iter()
            .filter(|s| s.domain != "tcp-drop.lab")
            .collect();
        let text = router_rules(&without).concat().join(" ");
        let drop = SITES
            .iter()
            .find(|s| s.domain == "tcp-drop.lab")
            .map(|s| s.addr().to_string());
        assert!(!text.contains(&drop.unwrap_or_default()));
    }

    #[test]
    fn the_isp_resolver_lies_only_for_dns_censored_names() {
        let args = isp_resolver(&all()).join(" ");
        assert!(args.contains("--address=/nxdomain.lab/ "));
        assert!(args.contains("--address=/bogon.lab/10.10.34.34"));
        assert!(!args.contains("control.lab"));
        let net = net_resolver().join(" ");
        assert!(net.contains("--host-record=control.lab,45.67.1.1"));
    }
}
