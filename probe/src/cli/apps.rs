//! `vantage run --test whatsapp|telegram|signal|facebook_messenger`: the app tests from the
//! command line (docs/apps.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use vantage_probe::apps::{self, App, AppsPlan};

use super::{Measuring, RunArgs, TestKind};

/// Options of the app tests.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "App tests (--test whatsapp|telegram|signal|facebook_messenger)")]
pub struct AppsArgs {
    /// The endpoints and pins of the app tests (TOML, as test-lists/apps.toml), instead of the
    /// built-in ones: for a lab or a test that serves them on its own hosts.
    #[arg(long, value_name = "FILE")]
    apps_file: Option<PathBuf>,
}

/// The plan of the app tests: the built-in data file, or `file`.
pub fn plan(file: Option<&std::path::Path>) -> Result<AppsPlan> {
    match file {
        None => Ok(AppsPlan::builtin()?),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the apps file {}", path.display()))?;
            Ok(AppsPlan::parse(&text, &path.display().to_string())?)
        }
    }
}

/// The app a `--test` value names, if it is an app test.
pub fn app_of(test: TestKind) -> Option<App> {
    match test {
        TestKind::Whatsapp => Some(App::Whatsapp),
        TestKind::Telegram => Some(App::Telegram),
        TestKind::Signal => Some(App::Signal),
        TestKind::FacebookMessenger => Some(App::FacebookMessenger),
        _ => None,
    }
}

pub async fn run(args: RunArgs, app: App) -> Result<ExitCode> {
    // Plan everything before touching the network.
    let dir = args.data.dir()?;
    let plan = plan(args.apps.apps_file.as_deref())?;
    let (engine, resolvers, tls) = args.engine.plan()?;
    let resolver = resolvers
        .first()
        .cloned()
        .context("no resolver configured")?;
    let mut probe = Measuring::open(&args, &dir, &engine, &tls).await?;
    let located = &probe.located;
    if !args.json {
        eprintln!("{}", located.describe(args.cc.as_deref()));
    }
    let mut result = apps::measure(app, &plan, &engine, &resolver, &tls).await?;
    result.measurement.probe_cc = located.cc;
    result.measurement.probe_asn = located.asn;
    let id = apps::keep(&result, &probe.identity, &mut probe.store)?;
    let tk = &result.measurement.test_keys;
    if args.json {
        // One line like web_connectivity's: the verdict, the id, and the test's own keys with
        // each step's failure string.
        let mut line = serde_json::to_value(&result.verdict).unwrap_or_default();
        if !line.is_object() {
            line = serde_json::json!({"test_name": app.test_name()});
        }
        line["id"] = id.as_str().into();
        line["test_keys"] = summary_keys(tk);
        outln!("{line}");
    } else {
        for l in summary(app, tk, result.verdict.as_ref()) {
            outln!("{l}");
        }
        outln!("Result {} kept in {}.", id.as_str(), dir.display());
    }
    probe.upload(&args, &engine, &tls).await?;
    Ok(ExitCode::SUCCESS)
}

/// The test's own keys and the failure of every step, without the raw records.
fn summary_keys(tk: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(map) = tk.as_object() {
        for (k, v) in map {
            if matches!(
                k.as_str(),
                "queries" | "tcp_connect" | "tls_handshakes" | "requests" | "network_events"
            ) {
                continue;
            }
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("steps".into(), serde_json::Value::Array(steps(tk)));
    serde_json::Value::Object(out)
}

/// Every recorded step, one object each: what, where, and its failure (null when it worked).
fn steps(tk: &serde_json::Value) -> Vec<serde_json::Value> {
    let arr = |k: &str| {
        tk.get(k)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for q in arr("queries") {
        out.push(
            serde_json::json!({"step": "dns", "target": q.get("hostname"),
            "query_type": q.get("query_type"), "failure": q.get("failure")}),
        );
    }
    for c in arr("tcp_connect") {
        let target = format!(
            "{}:{}",
            c.get("ip").and_then(|v| v.as_str()).unwrap_or(""),
            c.get("port")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        );
        out.push(serde_json::json!({"step": "tcp_connect", "target": target,
            "failure": c.get("status").and_then(|s| s.get("failure"))}));
    }
    for h in arr("tls_handshakes") {
        out.push(
            serde_json::json!({"step": "tls_handshake", "target": h.get("address"),
            "server_name": h.get("server_name"), "failure": h.get("failure")}),
        );
    }
    for r in arr("requests") {
        out.push(serde_json::json!({"step": "http", "target": r.get("request").and_then(|q| q.get("url")),
            "failure": r.get("failure")}));
    }
    out
}

/// The plain summary: the verdict, then each key a user looks at.
fn summary(
    app: App,
    tk: &serde_json::Value,
    verdict: Option<&vantage_probe::verdict::services::ServiceVerdict>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let head = match verdict.and_then(|v| v.blocking.as_ref()) {
        Some(vantage_probe::ooni::Blocking::Kind(layer)) => format!("BLOCKED ({layer})"),
        Some(vantage_probe::ooni::Blocking::Flag(false)) => "reachable".to_string(),
        _ => "cannot tell".to_string(),
    };
    lines.push(format!("{}: {head}", app.test_name()));
    if let Some(v) = verdict {
        for c in &v.checks {
            lines.push(format!("  {} {}: {}", c.name, c.outcome, c.why));
        }
    }
    if let Some(map) = tk.as_object() {
        for (k, v) in map {
            let own = k.starts_with(app.test_name().split('_').next().unwrap_or(""))
                || k.starts_with("registration_server")
                || k.starts_with("signal_backend");
            if own {
                lines.push(format!("  {k}: {v}"));
            }
        }
    }
    lines
}
