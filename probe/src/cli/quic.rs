//! `vantage run --test quic`: for each `https` URL of the list, a QUIC handshake beside the TCP
//! connect and TLS handshake to the same address and name (`vantage_probe::quic`,
//! `docs/quic.md`). Each URL's measurement is signed and kept like web_connectivity's, then
//! uploaded with them.

use std::process::ExitCode;

use anyhow::{Result, bail};
use vantage_probe::quic::{self, Plan, QuicMeasurement, Verdict};

use super::{Measuring, RunArgs, list_for};

/// The `https` URLs of the list, one per host and port (QUIC is a property of the host, not
/// of the path), in list order; the others are counted.
fn https_urls(urls: impl IntoIterator<Item = String>) -> (Vec<String>, usize) {
    let mut seen = std::collections::HashSet::new();
    let (mut kept, mut skipped) = (Vec::new(), 0);
    for u in urls {
        match url::Url::parse(u.trim()) {
            Ok(p) if p.scheme() == "https" && p.host_str().is_some() => {
                let key = (p.host_str().unwrap_or_default().to_string(), p.port());
                if seen.insert(key) {
                    kept.push(u.trim().to_string());
                }
            }
            _ => skipped += 1,
        }
    }
    (kept, skipped)
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    // Plan everything before touching the network.
    let dir = args.data.dir()?;
    let entries = list_for(&args, &dir)?;
    let (urls, skipped) = https_urls(entries.into_iter().map(|e| e.url));
    if urls.is_empty() {
        bail!(
            "no https URL in the list to measure over QUIC ({skipped} other entries); choose a list with https URLs"
        );
    }
    if args.concurrency == 0 || args.concurrency > 256 {
        bail!("--concurrency must be between 1 and 256");
    }
    let (engine, resolvers, tls) = args.engine.plan()?;
    let plans = urls
        .iter()
        .map(|u| Plan::new(u, &resolvers, engine.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut probe = Measuring::open(&args, &dir, &engine, &tls).await?;
    let located = &probe.located;
    if !args.json {
        eprintln!("{}", located.describe(args.cc.as_deref()));
        eprintln!(
            "QUIC test: {} host(s) over QUIC and TCP/TLS{}.",
            plans.len(),
            if skipped > 0 {
                format!(" ({skipped} entries without an https URL left out)")
            } else {
                String::new()
            }
        );
    }

    let run_started = vantage_probe::ooni::ooni_timestamp(std::time::SystemTime::now());
    let mut queue = plans.into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    let spawn = |tasks: &mut tokio::task::JoinSet<QuicMeasurement>, plan: Plan| {
        let tls = tls.clone();
        tasks.spawn(async move { quic::measure(&plan, &tls).await });
    };
    for plan in queue.by_ref().take(args.concurrency) {
        spawn(&mut tasks, plan);
    }
    let mut counts = [0usize; 5];
    while let Some(joined) = tasks.join_next().await {
        if let Some(plan) = queue.next() {
            spawn(&mut tasks, plan);
        }
        let mut m = match joined {
            Ok(m) => m,
            Err(e) => {
                eprintln!("warning: a QUIC measurement did not finish: {e}");
                continue;
            }
        };
        m.test_start_time = Some(run_started.clone());
        m.probe_cc = located.cc;
        m.probe_asn = located.asn;
        let id = quic::keep(&m, &probe.identity, &mut probe.store)?;
        let a = &m.test_keys.assessment;
        counts[a.verdict as usize] += 1;
        let input = m.input.clone().unwrap_or_default();
        if args.json {
            let mut line = serde_json::to_value(a).unwrap_or_default();
            line["input"] = input.into();
            line["id"] = id.as_str().into();
            outln!("{line}");
        } else {
            let head = match a.verdict {
                Verdict::QuicBlocked => "QUIC BLOCKED".to_string(),
                v => v.as_str().replace('-', " "),
            };
            outln!("{input}: {head} ({})", a.reason);
        }
    }
    if !args.json {
        let [ok, quic_blocked, tcp_blocked, host_blocked, dns] = counts;
        outln!(
            "{ok} accessible over QUIC, {quic_blocked} QUIC blocked (TCP/TLS works), \
             {host_blocked} unreachable on both, {tcp_blocked} TCP/TLS only failing, {dns} not resolved"
        );
    }
    probe.upload(&args, &engine, &tls).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_once_per_host() {
        let (kept, skipped) = https_urls(
            [
                "https://a.example/x",
                "http://b.example/",
                "https://a.example/y",
                "https://a.example:8443/",
                "ftp://c.example/",
                "not a url",
            ]
            .map(String::from),
        );
        assert_eq!(kept, ["https://a.example/x", "https://a.example:8443/"]);
        assert_eq!(skipped, 3);
    }
}
