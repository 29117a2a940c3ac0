//! Builds a week of one daemon's results at the default plan (benches/carry_week.sh): a canary
//! round every minute (10,080) and a list run every six hours (28) of the URLs the templates
//! hold, each copied from a real measurement this probe made (`vantage canary`, `vantage run`
//! on loopback), moved to its own time, signed again with the probe's key and stored in a real
//! store, as the daemon would have stored it.
//!
//! Usage: carry_week TEMPLATE_DATA_DIR DATA_DIR

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use vantage_probe::envelope::{Identity, verify};
use vantage_probe::store::{NewResult, Store};

/// A week at the daemon's defaults (`deploy/vantage.toml`: a canary round a minute, a list
/// run every six hours).
const CANARY_ROUNDS: i64 = 7 * 24 * 60;
const LIST_RUNS: i64 = 7 * 4;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, templates, data] = args.as_slice() else {
        bail!("usage: carry_week TEMPLATE_DATA_DIR DATA_DIR");
    };
    let (templates, data) = (PathBuf::from(templates), PathBuf::from(data));
    let source = Store::open(&templates.join("vantage.db"))?;
    let mut canary = None;
    let mut pages = Vec::new();
    for r in source.list(10_000)? {
        let v = verify(&r.envelope).context("a template does not verify")?;
        let m: serde_json::Value = serde_json::from_str(v.measurement)?;
        if r.test_name == "canary" {
            canary = Some(m);
        } else {
            pages.push((m, r));
        }
    }
    let Some(canary) = canary else {
        bail!("no canary among the templates");
    };
    if pages.is_empty() {
        bail!("no list-run result among the templates");
    }
    std::fs::create_dir_all(&data)?;
    let (key, _) = Identity::load_or_create(&data.join("identity.key"))?;
    let mut store = Store::open(&data.join("vantage.db"))?;
    let start = 1_796_083_200i64; // 2026-12-01 00:00:00 UTC
    let stamp = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map(|d| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    d.year(),
                    u8::from(d.month()),
                    d.day(),
                    d.hour(),
                    d.minute(),
                    d.second()
                )
            })
            .unwrap_or_default()
    };
    let mut keep = |m: &mut serde_json::Value,
                    at: i64,
                    stored: Option<&vantage_probe::store::StoredResult>|
     -> Result<()> {
        m["measurement_start_time"] = stamp(at).into();
        m["test_start_time"] = stamp(at - at % 60).into();
        let (id, envelope) = key.seal(&m.to_string())?;
        store.insert(&NewResult {
            id: id.as_str(),
            input: stored.and_then(|s| s.input.as_deref()),
            test_name: stored.map_or("canary", |s| s.test_name.as_str()),
            measured_at: &stamp(at),
            blocking: stored.and_then(|s| s.blocking.as_deref()),
            accessible: stored.and_then(|s| s.accessible),
            confirmed: false,
            verdict: stored.map_or("{}", |s| s.verdict.as_str()),
            envelope: &envelope,
        })?;
        Ok(())
    };
    for round in 0..CANARY_ROUNDS {
        keep(&mut canary.clone(), start + round * 60, None)?;
    }
    for run in 0..LIST_RUNS {
        for (i, (m, stored)) in pages.iter().enumerate() {
            let at = start + run * 6 * 3600 + i64::try_from(i)? * 2;
            keep(&mut m.clone(), at, Some(stored))?;
        }
    }
    println!(
        "{} canary rounds and {} list runs of {} URLs: {} results",
        CANARY_ROUNDS,
        LIST_RUNS,
        pages.len(),
        CANARY_ROUNDS + LIST_RUNS * i64::try_from(pages.len())?
    );
    Ok(())
}
