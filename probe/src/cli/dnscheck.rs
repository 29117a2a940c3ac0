//! `vantage run --test dnscheck`: whether well-known DoH and DoT resolvers work from here
//! (OONI's dnscheck, docs/dnscheck.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use vantage_probe::dnscheck::{self, DEFAULT_DOMAIN, DnscheckResult, Target};
use vantage_probe::ooni::Blocking;

use super::{Measuring, RunArgs};

/// Options of `--test dnscheck`.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "DNS resolver check (--test dnscheck)")]
pub struct DnscheckArgs {
    /// The name each resolver is asked for (A and AAAA).
    #[arg(long = "domain", value_name = "NAME", default_value = DEFAULT_DOMAIN)]
    dnscheck_domain: String,

    /// The resolvers to check (TOML, as test-lists/resolvers.toml), instead of the built-in
    /// list of well-known DoH and DoT resolvers.
    #[arg(long, value_name = "FILE")]
    resolvers_file: Option<PathBuf>,
}

/// The resolvers of `file`, or the built-in list.
pub fn targets(file: Option<&std::path::Path>) -> Result<Vec<Target>> {
    match file {
        None => Ok(dnscheck::builtin()?),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the resolvers file {}", path.display()))?;
            Ok(dnscheck::parse_resolvers(
                &text,
                &path.display().to_string(),
            )?)
        }
    }
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    // Plan everything before touching the network.
    let dir = args.data.dir()?;
    let targets = targets(args.dnscheck.resolvers_file.as_deref())?;
    let domain = args.dnscheck.dnscheck_domain.trim().to_string();
    dnscheck::check_domain(&domain).map_err(|e| anyhow!("--domain: {e}"))?;
    let (engine, resolvers, tls) = args.engine.plan()?;
    // The bootstrap uses the engine's normal DNS: the system resolver, or --resolver.
    let bootstrap = resolvers
        .first()
        .cloned()
        .context("no resolver configured")?;
    let mut probe = Measuring::open(&args, &dir, &engine, &tls).await?;
    let located = &probe.located;
    if !args.json {
        eprintln!("{}", located.describe(args.cc.as_deref()));
        eprintln!(
            "Checking {} resolvers with a lookup of {domain}.",
            targets.len()
        );
    }
    let (mut working, mut blocked, mut unknown) = (0, 0, 0);
    for target in &targets {
        let mut result = dnscheck::measure(target, &domain, &engine, &bootstrap, &tls).await;
        result.measurement.probe_cc = located.cc;
        result.measurement.probe_asn = located.asn;
        let id = dnscheck::keep(&result, &probe.identity, &mut probe.store)?;
        match result.verdict.as_ref().and_then(|v| v.accessible) {
            Some(true) => working += 1,
            Some(false) => blocked += 1,
            None => unknown += 1,
        }
        if args.json {
            let mut line = json_line(&result);
            line["id"] = id.as_str().into();
            outln!("{line}");
        } else {
            for line in summary(&result) {
                outln!("{line}");
            }
        }
    }
    if !args.json {
        outln!(
            "Checked {} resolvers: {working} working, {blocked} blocked, {unknown} undetermined.",
            targets.len()
        );
    }
    probe.upload(&args, &engine, &tls).await?;
    Ok(ExitCode::SUCCESS)
}

/// `accessible`, `blocked (LAYER)` or `undetermined`, as the verdict says.
fn verdict_word(result: &DnscheckResult) -> String {
    let v = result.verdict.as_ref();
    match (
        v.and_then(|v| v.blocking.as_ref()),
        v.and_then(|v| v.accessible),
    ) {
        (Some(Blocking::Kind(layer)), _) => format!("BLOCKED ({layer})"),
        (_, Some(true)) => "working".into(),
        _ => "undetermined".into(),
    }
}

/// The plain summary of one resolver: its verdict, then each step that failed.
fn summary(result: &DnscheckResult) -> Vec<String> {
    let t = &result.target;
    let operator = t
        .operator
        .as_deref()
        .map(|o| format!(" [{o}]"))
        .unwrap_or_default();
    let mut lines = vec![format!("{}{operator}: {}", t.input, verdict_word(result))];
    if let Some(f) = &result.bootstrap_failure {
        lines.push(format!("  bootstrap: {f}"));
    }
    if result.lookups.is_empty() {
        lines.push("  no address to try".into());
    }
    for l in &result.lookups {
        match (&l.failure, &l.failed_operation) {
            (None, _) => {
                let answers: Vec<String> = l.answers.iter().map(ToString::to_string).collect();
                lines.push(format!("  {}: answered {}", l.endpoint, answers.join(", ")));
            }
            (Some(f), op) => lines.push(format!(
                "  {}: {} failed: {f}",
                l.endpoint,
                op.as_deref().unwrap_or("lookup")
            )),
        }
    }
    lines
}

/// One `--json` line: the resolver, its verdict, and each step's failure string.
fn json_line(result: &DnscheckResult) -> Value {
    let lookups: Vec<Value> = result
        .lookups
        .iter()
        .map(|l| {
            let step = |key: &str| -> Vec<Value> {
                l.keys[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|r| {
                                r.get("status")
                                    .and_then(|s| s.get("failure"))
                                    .or_else(|| r.get("failure"))
                                    .cloned()
                                    .unwrap_or(Value::Null)
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            json!({
                "endpoint": l.endpoint,
                "failure": l.failure,
                "failed_operation": l.failed_operation,
                "answers": l.answers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "tcp_connect": step("tcp_connect"),
                "tls_handshakes": step("tls_handshakes"),
                "queries": step("queries"),
            })
        })
        .collect();
    let v = result.verdict.as_ref();
    json!({
        "test_name": "dnscheck",
        "input": result.target.input,
        "accessible": v.and_then(|v| v.accessible),
        "blocking": v.and_then(|v| v.blocking.clone()),
        "bootstrap_failure": result.bootstrap_failure,
        "lookups": lookups,
    })
}
