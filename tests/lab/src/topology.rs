//! The lab's network: namespaces, veth pairs, addresses and routes, and their removal.
//!
//! ```text
//!  vl-probe1 (45.66.1.2) ──┐                        ┌─ vl-net: the "Internet"
//!                          ├─ vl-router ── uplink ──┤   sites 45.67.1.x, aggregator 45.67.2.1,
//!  vl-probe2 (45.66.2.2) ──┘  resolver 45.66.0.53   └─  resolver 45.67.3.53
//!                             blockpage proxy 45.66.0.80
//! ```
//!
//! Every veth is created with both ends inside lab namespaces, so the host's own interfaces are
//! never touched; deleting the namespaces deletes the links, their addresses, routes, qdiscs and
//! iptables rules with them. The addresses are outside every bogon range (`probe/src/engine/
//! bogon.rs`) so that the probe treats the lab's Internet as public; nothing routes beyond the
//! namespaces, so no packet ever leaves the machine.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Every lab namespace's name starts with this, so that a cleanup finds leftovers of any run.
pub const PREFIX: &str = "vl-";
/// The router: the censoring ISP's border.
pub const ROUTER: &str = "vl-router";
/// The lab's Internet: web servers, a resolver, the aggregator.
pub const NET: &str = "vl-net";
/// The probes' namespaces: homes on the censored ISP.
pub const PROBES: [&str; 2] = ["vl-probe1", "vl-probe2"];

/// A namespace with no network (only `lo`, left down) in which the lab verifies the shutdown's
/// evidence bundle offline; made and removed by `evidence.rs`.
pub const OFFLINE: &str = "vl-offline";

/// Where the sites live (`.x` per site, on `vl-net`'s loopback).
pub const SITES_NET: Ipv4Addr = Ipv4Addr::new(45, 67, 1, 0);
/// The aggregator's address.
pub const AGGREGATOR: Ipv4Addr = Ipv4Addr::new(45, 67, 2, 1);
/// The lab Internet's resolver (dnsmasq).
pub const NET_RESOLVER: Ipv4Addr = Ipv4Addr::new(45, 67, 3, 53);
/// A distant resolver (`vantage-lab slow-dns`) relaying to [`NET_RESOLVER`] with a delay.
pub const SLOW_RESOLVER: Ipv4Addr = Ipv4Addr::new(45, 67, 3, 54);
/// The ISP's resolver (dnsmasq in the router), which the probes use.
pub const ISP_RESOLVER: Ipv4Addr = Ipv4Addr::new(45, 66, 0, 53);
/// The ISP's filtering proxy for plain HTTP, in the router.
pub const ISP_PROXY: Ipv4Addr = Ipv4Addr::new(45, 66, 0, 80);
/// The router's uplink interface (in `vl-router`), taken down for the shutdown.
pub const UPLINK: &str = "vl-up";
/// The ISP's prefix, which the aggregator maps to AS64500 in IR.
pub const ISP_PREFIX: &str = "45.66.0.0/16";

/// A probe namespace's address.
pub fn probe_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(45, 66, i as u8 + 1, 2)
}

/// The router's interface towards probe `i`.
pub fn probe_link(i: usize) -> String {
    format!("vl-p{}", i + 1)
}

/// A command that runs `args` (a program and its arguments) inside namespace `ns`, with no
/// input: every process the lab starts in a namespace starts from here.
pub fn netns_command<S: AsRef<std::ffi::OsStr>>(ns: &str, args: &[S]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// Runs `args` (a command and its arguments) inside namespace `ns`, failing with its stderr.
pub fn run_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Runs a command on the host, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("cannot start {program} (is it installed? tests/lab/run.sh installs it)")
        })?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the namespaces, links, addresses and routes. On error, whatever was made is left for
/// [`cleanup`], which the caller runs in every case.
pub fn build() -> Result<()> {
    let all: Vec<&str> = [ROUTER, NET].into_iter().chain(PROBES).collect();
    for ns in &all {
        run("ip", &["netns", "add", ns])?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    }
    // The router's uplink to the Internet.
    run(
        "ip",
        &[
            "-n", ROUTER, "link", "add", UPLINK, "type", "veth", "peer", "name", "eth0", "netns",
            NET,
        ],
    )?;
    run_in(
        ROUTER,
        &["ip", "addr", "add", "45.67.0.1/24", "dev", UPLINK],
    )?;
    run_in(ROUTER, &["ip", "link", "set", UPLINK, "up"])?;
    run_in(NET, &["ip", "addr", "add", "45.67.0.2/24", "dev", "eth0"])?;
    run_in(NET, &["ip", "link", "set", "eth0", "up"])?;
    run_in(NET, &["ip", "route", "add", "default", "via", "45.67.0.1"])?;
    run_in(
        ROUTER,
        &["ip", "route", "add", "45.67.0.0/16", "via", "45.67.0.2"],
    )?;
    // The Internet's hosts, on its loopback.
    let mut net_addrs: Vec<Ipv4Addr> = crate::scenario::SITES.iter().map(|s| s.addr()).collect();
    net_addrs.extend(crate::apps::addrs());
    net_addrs.extend(crate::quic::addrs());
    net_addrs.extend(crate::dnscheck::addrs());
    net_addrs.extend([AGGREGATOR, NET_RESOLVER, SLOW_RESOLVER]);
    net_addrs.sort_unstable();
    net_addrs.dedup();
    for a in net_addrs {
        run_in(NET, &["ip", "addr", "add", &format!("{a}/32"), "dev", "lo"])?;
    }
    // The ISP's own services, on the router's loopback.
    for a in [ISP_RESOLVER, ISP_PROXY] {
        run_in(
            ROUTER,
            &["ip", "addr", "add", &format!("{a}/32"), "dev", "lo"],
        )?;
    }
    run_in(ROUTER, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
    // The probes' access links.
    for (i, ns) in PROBES.iter().enumerate() {
        let link = probe_link(i);
        let [a, b, c, _] = probe_addr(i).octets();
        run(
            "ip",
            &[
                "-n", ROUTER, "link", "add", &link, "type", "veth", "peer", "name", "eth0",
                "netns", ns,
            ],
        )?;
        run_in(
            ROUTER,
            &[
                "ip",
                "addr",
                "add",
                &format!("{a}.{b}.{c}.1/24"),
                "dev",
                &link,
            ],
        )?;
        run_in(ROUTER, &["ip", "link", "set", &link, "up"])?;
        run_in(
            ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{a}.{b}.{c}.2/24"),
                "dev",
                "eth0",
            ],
        )?;
        run_in(ns, &["ip", "link", "set", "eth0", "up"])?;
        run_in(
            ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("{a}.{b}.{c}.1"),
            ],
        )?;
    }
    Ok(())
}

/// Takes the router's uplink down (`up = false`) or brings it back: the shutdown.
pub fn set_uplink(up: bool) -> Result<()> {
    run_in(
        ROUTER,
        &["ip", "link", "set", UPLINK, if up { "up" } else { "down" }],
    )?;
    if up {
        // Bringing a link down drops the routes through it.
        let _ = run_in(
            ROUTER,
            &["ip", "route", "add", "45.67.0.0/16", "via", "45.67.0.2"],
        );
    }
    Ok(())
}

/// The lab namespaces that exist now (from any run).
pub fn namespaces() -> Vec<String> {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return Vec::new();
    };
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Removes everything any lab run made: kills the processes inside the lab namespaces (deleting
/// a namespace does not stop them), then deletes the namespaces, which takes their links,
/// rules and qdiscs along. Safe to run at any time, as often as wanted.
pub fn cleanup() -> Vec<String> {
    let mut problems = Vec::new();
    let found = namespaces();
    for ns in &found {
        if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
        }
    }
    for ns in &found {
        // A process may take a moment to die and release the namespace.
        let mut result = run("ip", &["netns", "del", ns]);
        for _ in 0..20 {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            result = run("ip", &["netns", "del", ns]);
        }
        if let Err(e) = result {
            problems.push(format!("{ns}: {e:#}"));
        }
    }
    problems
}

/// What the lab left on this machine: namespaces and links named like the lab's. Empty after
/// every run, passed or failed.
pub fn leftovers() -> Result<Vec<String>> {
    let mut left: Vec<String> = namespaces()
        .into_iter()
        .map(|n| format!("namespace {n}"))
        .collect();
    for line in run("ip", &["-o", "link", "show"])?.lines() {
        let name = line.split(": ").nth(1).unwrap_or("");
        if name.starts_with(PREFIX) {
            left.push(format!("link {name}"));
        }
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_addresses_are_public_so_the_probe_does_not_take_them_for_bogons() {
        // A lab address in a bogon range would turn every control into a "dns-bogon-answer".
        let mut all = vec![AGGREGATOR, NET_RESOLVER, ISP_RESOLVER, ISP_PROXY];
        all.extend((0..PROBES.len()).map(probe_addr));
        all.extend(crate::scenario::SITES.iter().map(|s| s.addr()));
        for a in all {
            assert!(!vantage_probe::engine::bogon::is_bogon(a.into()), "{a}");
        }
        assert!(vantage_probe::engine::bogon::is_bogon(
            crate::scenario::PEYVANDHA_1.into()
        ));
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        for name in [UPLINK.to_string(), probe_link(0), probe_link(1)] {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
