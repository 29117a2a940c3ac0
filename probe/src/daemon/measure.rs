//! The daemon's measuring tasks (canary rounds, list runs, and the throttling, app, dnscheck
//! and QUIC tests when configured), and the daily traffic budget that all but the canaries
//! share (`budget.daily_megabytes`).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Control, DaemonError, Shared, Wake, jitter, now_text, unix_now};
use crate::canary;
use crate::ooni::CountryCode;
use crate::run::{RunPlan, run as run_list};
use crate::store::Store;
use crate::verdict::{Finding, Verdict};

/// Connectivity canaries, with or without a network.
pub(super) async fn canaries(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut store = shared.store()?;
    let mut last: Option<Instant> = None;
    if !shared.located(&mut ctl).await {
        return Ok(());
    }
    loop {
        let plan = ctl.plan();
        let next = last.map_or_else(Instant::now, |l| l + plan.schedule.canary);
        match ctl.until(Some(next)).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let started = Instant::now();
        last = Some(started);
        let round = canary::measure(&plan.canary_targets, &plan.canary_engine, &plan.tls);
        let Some(mut m) = ctl.unless_stopped(round).await else {
            return Ok(());
        };
        (m.probe_cc, m.probe_asn) = shared.location();
        let (ok, total) = (m.test_keys.ok, m.test_keys.total);
        match canary::keep(&m, &shared.identity, &mut store) {
            Ok(id) => {
                tracing::info!(
                    id = id.as_str(),
                    at = m.measurement_start_time,
                    "canary: {ok} of {total} targets answered"
                );
                let _ = store.set_meta(
                    "last_canary",
                    &format!(
                        "{} UTC, {ok} of {total} targets answered",
                        m.measurement_start_time
                    ),
                );
            }
            Err(e) => tracing::error!("canary round not kept: {e}"),
        }
    }
}

/// Traffic spent by list runs on UTC day `day`, as kept in the store (`day:bytes`).
fn spent(store: &Store, day: u64) -> u64 {
    store
        .meta("budget")
        .ok()
        .flatten()
        .and_then(|v| {
            let (d, b) = v.split_once(':')?;
            (d.parse::<u64>().ok()? == day).then(|| b.parse().ok())?
        })
        .unwrap_or(0)
}

/// Held while the budget is read and written back: list runs and throttling tests charge it
/// from connections of their own, and two finishing at once must not both add to the same old
/// figure.
static BUDGET: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Adds `bytes` to the traffic spent on UTC day `day`. Read again here, not carried from the
/// start of the work: list runs and throttling tests charge the same budget, and either may
/// have finished in between.
fn charge(store: &Store, day: u64, bytes: u64) {
    let _held = BUDGET
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = store.set_meta("budget", &format!("{day}:{}", spent(store, day) + bytes));
}

/// List runs, within the daily traffic budget.
pub(super) async fn runs(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut store = shared.store()?;
    let mut next = Instant::now() + ctl.plan().schedule.first_run;
    loop {
        let plan = ctl.plan();
        let at = plan.schedule.run.map(|_| next);
        match ctl.until(at).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(every) = plan.schedule.run else {
            continue;
        };
        let started = Instant::now();
        next = jitter(started + every, plan.schedule.run_jitter);
        let day = unix_now() / 86_400;
        let already = spent(&store, day);
        if already >= plan.daily_bytes {
            let midnight = Duration::from_secs(86_400 - unix_now() % 86_400);
            next = jitter(
                started + midnight + plan.schedule.run_jitter,
                plan.schedule.run_jitter,
            );
            tracing::info!(
                "list run skipped: today's traffic budget ({} MB) is used",
                plan.daily_bytes / 1_000_000
            );
            continue;
        }
        let (cc, asn) = shared.location();
        let mut lists = plan.lists.clone();
        if !plan.countries_configured && cc != CountryCode::UNKNOWN {
            lists.names.insert(0, cc.as_str().to_ascii_lowercase());
        }
        let loaded = match lists.load(&plan.data_dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("list run skipped: {e}");
                continue;
            }
        };
        for problem in &loaded.skipped {
            tracing::warn!("{problem} (skipped)");
        }
        if !loaded.missing.is_empty() {
            tracing::info!("no test list for {:?}", loaded.missing);
        }
        if loaded.entries.is_empty() {
            tracing::warn!("list run skipped: no URL to measure");
            continue;
        }
        let run_plan = RunPlan {
            entries: loaded.entries,
            concurrency: plan.concurrency,
            engine: plan.engine.clone(),
            resolvers: plan.resolvers.clone(),
            test_helper: plan
                .aggregator
                .as_ref()
                .and_then(|a| a.url.join("api/v1/th").ok()),
            probe_cc: cc,
            probe_asn: asn,
        };
        tracing::info!("list run: {} URLs", run_plan.entries.len());
        let left = plan.daily_bytes - already;
        let mut used = 0u64;
        let mut tally = Tally::default();
        let outcome = {
            let on_result = |done: &crate::run::Finished| {
                let v = &done.verdict;
                let what = tally.count(v);
                tracing::info!(
                    id = done.id.as_str(),
                    "measured {}: {what}",
                    v.input.as_deref().unwrap_or("?")
                );
                used += done.bytes;
                if used >= left {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            };
            let work = run_list(
                &run_plan,
                &plan.tls,
                &shared.identity,
                &mut store,
                on_result,
            );
            ctl.unless_stopped(work).await
        };
        charge(&store, day, used);
        match outcome {
            None => return Ok(()),
            Some(Err(e)) => tracing::error!("list run stopped: {e}"),
            Some(Ok(done)) => {
                let summary = tally.summary(done.len(), used, started.elapsed());
                if used >= left {
                    tracing::info!("list run stopped at today's traffic budget: {summary}");
                } else {
                    tracing::info!("list run: {summary}");
                }
                let _ = store.set_meta("last_run", &format!("{}, {summary}", now_text()));
                shared.results.notify_one();
            }
        }
    }
}

/// What a list run found so far, for its log lines and its `last_run` line (which `vantage
/// status` shows). A throttled page (blocking type [`crate::verdict::THROTTLING`]) loads,
/// slowly: no layer refuses it, so it is counted apart and never as blocked (docs/scoring.md),
/// as `vantage run`'s summary does.
#[derive(Debug, Default)]
struct Tally {
    blocked: usize,
    throttled: usize,
}

impl Tally {
    /// Counts one page's verdict and says it in words for the page's log line.
    fn count(&mut self, v: &Verdict) -> String {
        match v.finding() {
            Finding::Throttled => self.throttled += 1,
            Finding::Blocked(_) => self.blocked += 1,
            _ => {}
        }
        match v.finding() {
            Finding::Blocked(_) => format!(
                "blocked ({})",
                v.blocking
                    .as_ref()
                    .and_then(crate::run::layer)
                    .unwrap_or("?")
            ),
            f => f.word().into(),
        }
    }

    /// The run's line: `measured` pages, `used` bytes, in `took`. Throttled pages are counted
    /// only when there are some, so the line of most runs stays as it was.
    fn summary(&self, measured: usize, used: u64, took: Duration) -> String {
        let throttled = match self.throttled {
            0 => String::new(),
            n => format!("{n} throttled, "),
        };
        format!(
            "{measured} URLs measured, {} blocked, {throttled}{:.1} MB, {} s",
            self.blocked,
            used as f64 / 1e6,
            took.as_secs()
        )
    }
}

/// Throttling tests of the configured targets against the aggregator's throughput server,
/// counted in the daily traffic budget with the list runs.
pub(super) async fn throttling(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut store = shared.store()?;
    let mut next = Instant::now() + ctl.plan().schedule.first_run;
    loop {
        let plan = ctl.plan();
        let at = plan.throttling.as_ref().map(|_| next);
        match ctl.until(at).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let (Some(t), Some(aggregator)) = (plan.throttling.clone(), plan.aggregator.clone()) else {
            continue;
        };
        let started = Instant::now();
        next = jitter(started + t.every, plan.schedule.run_jitter.min(t.every / 2));
        let day = unix_now() / 86_400;
        let already = spent(&store, day);
        let cost = t.targets.len() as u64
            * u64::from(t.settings.repetitions)
            * 2
            * t.settings.payload_bytes;
        if already + cost > plan.daily_bytes {
            tracing::info!("throttling test skipped: today's traffic budget is used");
            continue;
        }
        let found = crate::throttling::locate_server(&aggregator.url, &plan.engine, &plan.tls);
        let endpoint = match ctl.unless_stopped(found).await {
            None => return Ok(()),
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                tracing::warn!("throttling test skipped: no throughput server: {e}");
                continue;
            }
        };
        let test = match crate::throttling::Plan::new(endpoint, t.targets, t.settings) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("throttling test skipped: {e}");
                continue;
            }
        };
        let (cc, asn) = shared.location();
        let mut used = 0u64;
        for target in &test.targets {
            let work = crate::throttling::measure(&test, target, &plan.engine, &plan.tls);
            let Some(mut m) = ctl.unless_stopped(work).await else {
                return Ok(());
            };
            m.probe_cc = cc;
            m.probe_asn = asn;
            used += m.test_keys.downloads.iter().map(|d| d.bytes).sum::<u64>();
            let a = &m.test_keys.throttling;
            match crate::throttling::keep(&m, &shared.identity, &mut store) {
                Ok(id) => tracing::info!(
                    id = id.as_str(),
                    "throttling test of {target}: {} ({})",
                    a.verdict.as_str(),
                    a.reason
                ),
                Err(e) => tracing::error!("throttling result of {target} not kept: {e}"),
            }
        }
        charge(&store, day, used);
        shared.results.notify_one();
    }
}

/// The app tests (docs/apps.md), counted in the daily traffic budget with the list runs: each
/// costs what its responses brought plus its signed result, a few tens of kilobytes.
pub(super) async fn apps(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut store = shared.store()?;
    let mut next = Instant::now() + ctl.plan().schedule.first_run;
    loop {
        let plan = ctl.plan();
        let at = plan.apps.as_ref().map(|_| next);
        match ctl.until(at).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(a) = plan.apps.clone() else {
            continue;
        };
        let Some(resolver) = plan.resolvers.first().cloned() else {
            continue;
        };
        let started = Instant::now();
        next = jitter(started + a.every, plan.schedule.run_jitter.min(a.every / 2));
        let day = unix_now() / 86_400;
        if spent(&store, day) >= plan.daily_bytes {
            tracing::info!("app tests skipped: today's traffic budget is used");
            continue;
        }
        let (cc, asn) = shared.location();
        let mut used = 0u64;
        for app in &a.apps {
            let work = crate::apps::measure(*app, &a.plan, &plan.engine, &resolver, &plan.tls);
            let result = match ctl.unless_stopped(work).await {
                None => return Ok(()),
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    tracing::error!("{} test not run: {e}", app.test_name());
                    continue;
                }
            };
            let mut result = result;
            result.measurement.probe_cc = cc;
            result.measurement.probe_asn = asn;
            used += crate::apps::traffic_bytes(&result);
            match crate::apps::keep(&result, &shared.identity, &mut store) {
                Ok(id) => tracing::info!(
                    id = id.as_str(),
                    "{} test: {}",
                    app.test_name(),
                    result
                        .verdict
                        .as_ref()
                        .map(|v| v.rule.as_str())
                        .unwrap_or("not scored")
                ),
                Err(e) => tracing::error!("{} result not kept: {e}", app.test_name()),
            }
        }
        charge(&store, day, used);
        shared.results.notify_one();
    }
}

/// The resolvers check (docs/dnscheck.md), counted in the daily traffic budget with the list
/// runs: each resolver costs its signed measurement, which records the handshakes' certificates
/// and the answers it got. Resolvers are checked `budget.concurrency` at once: where they are
/// all dropped, each address waits out the connect deadline, which one after another takes
/// minutes (docs/dnscheck.md, "Cost").
pub(super) async fn dnscheck(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut store = shared.store()?;
    let mut next = Instant::now() + ctl.plan().schedule.first_run;
    loop {
        let plan = ctl.plan();
        let at = plan.dnscheck.as_ref().map(|_| next);
        match ctl.until(at).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(d) = plan.dnscheck.clone() else {
            continue;
        };
        let Some(bootstrap) = plan.resolvers.first().cloned() else {
            continue;
        };
        let started = Instant::now();
        next = jitter(started + d.every, plan.schedule.run_jitter.min(d.every / 2));
        let day = unix_now() / 86_400;
        if spent(&store, day) >= plan.daily_bytes {
            tracing::info!("resolvers check skipped: today's traffic budget is used");
            continue;
        }
        let (cc, asn) = shared.location();
        let mut used = 0u64;
        let mut queue = d.targets.iter().cloned();
        let mut tasks = tokio::task::JoinSet::new();
        let spawn = |tasks: &mut tokio::task::JoinSet<_>, target: crate::dnscheck::Target| {
            let (engine, bootstrap, tls, domain) = (
                plan.engine.clone(),
                bootstrap.clone(),
                plan.tls.clone(),
                d.domain.clone(),
            );
            tasks.spawn(async move {
                crate::dnscheck::measure(&target, &domain, &engine, &bootstrap, &tls).await
            });
        };
        for target in queue.by_ref().take(plan.concurrency) {
            spawn(&mut tasks, target);
        }
        loop {
            let Some(joined) = ctl.unless_stopped(tasks.join_next()).await else {
                return Ok(());
            };
            let Some(joined) = joined else {
                break;
            };
            if let Some(target) = queue.next() {
                spawn(&mut tasks, target);
            }
            let mut result = match joined {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("a resolver check did not finish: {e}");
                    continue;
                }
            };
            result.measurement.probe_cc = cc;
            result.measurement.probe_asn = asn;
            used += serde_json::to_string(&result.measurement).map_or(0, |j| j.len() as u64);
            let input = &result.target.input;
            match crate::dnscheck::keep(&result, &shared.identity, &mut store) {
                Ok(id) => tracing::info!(
                    id = id.as_str(),
                    "dnscheck {input}: {}",
                    result
                        .verdict
                        .as_ref()
                        .map(|v| v.rule.as_str())
                        .unwrap_or("not scored")
                ),
                Err(e) => tracing::error!("dnscheck result of {input} not kept: {e}"),
            }
        }
        charge(&store, day, used);
        shared.results.notify_one();
    }
}

/// The QUIC test (docs/quic.md), counted in the daily traffic budget with the list runs: each
/// host costs its signed measurement (both handshakes, with their certificates). Hosts are
/// measured `budget.concurrency` at once, as list runs are: where UDP 443 is dropped, each host
/// waits out the handshake deadline, and one after another would take hosts x deadline.
pub(super) async fn quic(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut store = shared.store()?;
    let mut next = Instant::now() + ctl.plan().schedule.first_run;
    loop {
        let plan = ctl.plan();
        let at = plan.quic.as_ref().map(|_| next);
        match ctl.until(at).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(q) = plan.quic.clone() else {
            continue;
        };
        let started = Instant::now();
        next = jitter(started + q.every, plan.schedule.run_jitter.min(q.every / 2));
        let day = unix_now() / 86_400;
        if spent(&store, day) >= plan.daily_bytes {
            tracing::info!("QUIC test skipped: today's traffic budget is used");
            continue;
        }
        let (cc, asn) = shared.location();
        let run_started = crate::ooni::ooni_timestamp(std::time::SystemTime::now());
        let mut used = 0u64;
        let mut queue = q.plans.iter().cloned();
        let mut tasks = tokio::task::JoinSet::new();
        let spawn = |tasks: &mut tokio::task::JoinSet<_>, p: crate::quic::Plan| {
            let tls = plan.tls.clone();
            tasks.spawn(async move { crate::quic::measure(&p, &tls).await });
        };
        for p in queue.by_ref().take(plan.concurrency) {
            spawn(&mut tasks, p);
        }
        loop {
            let Some(joined) = ctl.unless_stopped(tasks.join_next()).await else {
                return Ok(());
            };
            let Some(joined) = joined else {
                break;
            };
            if let Some(p) = queue.next() {
                spawn(&mut tasks, p);
            }
            let mut m = match joined {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!("a QUIC measurement did not finish: {e}");
                    continue;
                }
            };
            let input = m.input.clone().unwrap_or_default();
            m.test_start_time = Some(run_started.clone());
            m.probe_cc = cc;
            m.probe_asn = asn;
            used += serde_json::to_string(&m).map_or(0, |j| j.len() as u64);
            match crate::quic::keep(&m, &shared.identity, &mut store) {
                Ok(id) => tracing::info!(
                    id = id.as_str(),
                    "QUIC test of {input}: {}",
                    m.test_keys.assessment.verdict.as_str()
                ),
                Err(e) => tracing::error!("QUIC result of {input} not kept: {e}"),
            }
        }
        charge(&store, day, used);
        shared.results.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ooni::Blocking;

    #[test]
    fn budget_charges_from_many_connections_at_once_all_count() {
        let dir = std::env::temp_dir().join(format!("vantage-budget-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("vantage.db");
        drop(Store::open(&path).expect("store"));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    let store = Store::open(&path).expect("store");
                    for _ in 0..50 {
                        charge(&store, 7, 1_000);
                    }
                });
            }
        });
        let store = Store::open(&path).expect("store");
        assert_eq!(spent(&store, 7), 200_000);
        // Another day starts from nothing.
        assert_eq!(spent(&store, 8), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_budget_resets_each_day() {
        let dir = std::env::temp_dir().join(format!("vantage-budget-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir.join("vantage.db")).expect("store");
        assert_eq!(spent(&store, 20_000), 0);
        store.set_meta("budget", "20000:1234").expect("meta");
        assert_eq!(spent(&store, 20_000), 1234);
        assert_eq!(spent(&store, 20_001), 0, "a new day starts at zero");
        // Two tasks charging in turn both count, whatever each read when it began.
        charge(&store, 20_000, 100);
        charge(&store, 20_000, 50);
        assert_eq!(spent(&store, 20_000), 1384);
        charge(&store, 20_001, 7);
        assert_eq!(
            spent(&store, 20_001),
            7,
            "charging a new day starts from zero"
        );
        store.set_meta("budget", "garbage").expect("meta");
        assert_eq!(spent(&store, 20_000), 0);
    }

    /// A verdict on `url` of `blocking`/`accessible`, the rest as any rule leaves it.
    fn verdict(url: &str, blocking: Option<Blocking>, accessible: Option<bool>) -> Verdict {
        use crate::verdict::{InputVerdict, rules};
        Verdict {
            input: Some(url.into()),
            probe_cc: "ZZ".into(),
            blocking,
            accessible,
            dns_consistency: None,
            confirmed: false,
            fingerprints: vec![],
            rule: "test".into(),
            rule_set: rules::VANTAGE.version,
            ooni_rules_blocking: None,
            control_failure: None,
            input_verdict: InputVerdict {
                blocking: None,
                accessible: None,
                dns_consistency: None,
            },
            goodput: None,
        }
    }

    #[test]
    fn a_list_run_counts_a_throttled_page_apart_from_the_blocked_ones() {
        let kind = |k: &str| Some(Blocking::Kind(k.into()));
        let mut tally = Tally::default();
        let words: Vec<String> = [
            verdict("https://slow.example/", kind("throttling"), Some(true)),
            verdict("https://dns.example/", kind("dns"), Some(false)),
            verdict(
                "https://ok.example/",
                Some(Blocking::Flag(false)),
                Some(true),
            ),
            verdict(
                "https://gone.example/",
                Some(Blocking::Flag(true)),
                Some(false),
            ),
            verdict("https://what.example/", None, None),
        ]
        .iter()
        .map(|v| tally.count(v))
        .collect();
        assert_eq!(
            words,
            [
                "throttled",
                "blocked (DNS)",
                "accessible",
                "down for everyone",
                "undetermined"
            ]
        );
        assert_eq!(
            tally.summary(5, 1_250_000, Duration::from_millis(12_900)),
            "5 URLs measured, 1 blocked, 1 throttled, 1.2 MB, 12 s"
        );
        // Without a throttled page the line is the one operators know.
        let mut tally = Tally::default();
        tally.count(&verdict("https://tls.example/", kind("tls"), Some(false)));
        assert_eq!(
            tally.summary(1, 0, Duration::ZERO),
            "1 URLs measured, 1 blocked, 0.0 MB, 0 s"
        );
    }
}
