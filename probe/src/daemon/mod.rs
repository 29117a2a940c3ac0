//! `vantage daemon`: the unattended probe (README.md, "Unattended: `vantage daemon`").
//!
//! Nine tasks share one signing key and one local store, each with its own connection to it
//! (SQLite in WAL mode serialises their short writes):
//!
//! - **canaries** every minute, with or without a network: a failed round recorded during a
//!   shutdown is the evidence the aggregator reconstructs the shutdown from when it arrives;
//! - **heartbeats** every minute to the aggregator; the first one that gets through after a
//!   failure means connectivity is back, and triggers an upload at once. Neither the first
//!   heartbeat nor the first canary round goes before the daemon knows its network
//!   ([`refresh`]);
//! - **list runs** every six hours with jitter, within a daily traffic budget;
//! - **throttling tests** of a few configured targets, every six hours, in the same budget;
//! - **app tests** (`[apps]`, docs/apps.md), daily when configured, in the same budget;
//! - **resolver checks** (`[dnscheck]`, docs/dnscheck.md) and **QUIC tests** (`[quic]`,
//!   docs/quic.md), daily when enabled, in the same budget;
//! - **refresh** of where the probe is (whoami) and of the signed test lists, daily;
//! - **uploads** of the outbox, oldest first, with exponential backoff while the aggregator
//!   cannot be reached (never sooner than a `Retry-After` asks), so nothing recorded offline
//!   is lost or sent twice. Results the aggregator holds back for a reason that can change are
//!   kept ([`crate::upload`]) and sent again when their time comes, and all of them at once
//!   after an enrolment: when `vantage enrol` marks the store, or when heartbeats refused for
//!   an unknown or revoked key start to get through.
//!
//! Every result is in the store, with its outbox row, before the daemon logs it, so a kill at
//! any moment loses nothing completed (the store's `synchronous=FULL`). SIGTERM and SIGINT
//! stop the tasks, abandoning measurements in flight; SIGHUP re-reads the configuration and
//! keeps the running one if the new file is invalid. Under systemd the daemon reports
//! readiness, reloads, stopping and watchdog keep-alives ([`notify`]).

pub mod carry;
pub mod config;
pub mod notify;

pub use config::{Config, ConfigError, Plan, load};

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::canary;
use crate::envelope::{EnvelopeError, Identity};
use crate::ooni::{Asn, Blocking, CountryCode, ooni_timestamp};
use crate::run::{RunPlan, run as run_list};
use crate::store::{Store, StoreError};
use crate::upload;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data directory cannot be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The signing key cannot be read or created.
    #[error(transparent)]
    Key(#[from] EnvelopeError),
    /// The local store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signal handlers cannot be installed.
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// What every task shares.
struct Shared {
    identity: Arc<Identity>,
    store_path: PathBuf,
    /// Country and network written into measurements.
    location: Mutex<(CountryCode, Asn)>,
    /// Whether the daemon has learnt where it is (or can never learn it): until then it sends
    /// no heartbeat and runs no canary round ([`refresh`] says when it is set).
    located: watch::Sender<bool>,
    /// Whether the last heartbeat got through.
    online: AtomicBool,
    /// Whether the last heartbeat was refused for this probe's key (unknown or revoked).
    key_refused: AtomicBool,
    /// Heartbeats refused for the key got through again: the key was enrolled (or restored),
    /// so everything held back for it goes now.
    key_accepted: AtomicBool,
    /// The aggregator answered again after it could not be reached: upload now.
    reachable: Notify,
    /// The same, for [`refresh`]: ask where the probe is now (a lost connection is when a
    /// laptop changes network or a VPN comes up).
    reconnected: Notify,
    /// A list run finished: upload soon.
    results: Notify,
}

impl Shared {
    fn location(&self) -> (CountryCode, Asn) {
        *self
            .location
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_location(&self, cc: CountryCode, asn: Asn) {
        *self
            .location
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (cc, asn);
    }

    fn store(&self) -> Result<Store, DaemonError> {
        Ok(Store::open(&self.store_path)?)
    }

    /// Waits until the daemon knows where it is; `false` when it stops first.
    async fn located(&self, ctl: &mut Control) -> bool {
        let mut located = self.located.subscribe();
        tokio::select! {
            biased;
            _ = ctl.stop.wait_for(|s| *s) => false,
            known = located.wait_for(|l| *l) => known.is_ok(),
        }
    }
}

/// Why a task woke up.
enum Wake {
    Due,
    Reload,
    Stop,
}

/// A task's view of the configuration and of the stop flag.
struct Control {
    plan: watch::Receiver<Arc<Plan>>,
    stop: watch::Receiver<bool>,
}

impl Control {
    fn plan(&mut self) -> Arc<Plan> {
        self.plan.borrow_and_update().clone()
    }

    /// Sleeps until `at`, unless the daemon stops or the configuration changes first.
    async fn until(&mut self, at: Option<Instant>) -> Wake {
        let sleep = async {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => Wake::Stop,
            changed = self.plan.changed() => match changed {
                Ok(()) => Wake::Reload,
                Err(_) => Wake::Stop,
            },
            () = sleep => Wake::Due,
        }
    }

    /// Runs `work` unless the daemon stops first (then `None`; the work is dropped, which
    /// abandons its sockets and its measurements in flight, never a store write).
    async fn unless_stopped<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => None,
            out = work => Some(out),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_text() -> String {
    format!("{} UTC", ooni_timestamp(SystemTime::now()))
}

/// A uniformly random shift in `-max..=max`, from the system's secure generator (a weak
/// generator seeded by boot time would give every Pi flashed from one image the same jitter).
fn jitter(base: Instant, max: Duration) -> Instant {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    let unit = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
    let shift = max.mul_f64(unit * 2.0);
    (base + shift).checked_sub(max).unwrap_or(base)
}

/// Connectivity canaries, with or without a network.
async fn canaries(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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

/// Heartbeats; their success or failure is what "online" means to the other tasks.
async fn heartbeats(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut last: Option<Instant> = None;
    let mut delivered = false;
    if !shared.located(&mut ctl).await {
        return Ok(());
    }
    loop {
        let plan = ctl.plan();
        let next = plan
            .aggregator
            .as_ref()
            .map(|_| last.map_or_else(Instant::now, |l| l + plan.schedule.heartbeat));
        match ctl.until(next).await {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(aggregator) = &plan.aggregator else {
            continue;
        };
        last = Some(Instant::now());
        let mut config = aggregator.upload.clone();
        config.timeout = config.timeout.min(plan.schedule.heartbeat);
        let (cc, asn) = shared.location();
        let beat = upload::heartbeat(&shared.identity, &config, cc, asn, &plan.engine, &plan.tls);
        let Some(sent) = ctl.unless_stopped(beat).await else {
            return Ok(());
        };
        match sent {
            Ok(()) => {
                if shared.key_refused.swap(false, Ordering::SeqCst) {
                    tracing::info!(
                        "the aggregator accepts this probe's key now: sending what it held back"
                    );
                    shared.key_accepted.store(true, Ordering::SeqCst);
                    shared.reachable.notify_one();
                }
                if !shared.online.swap(true, Ordering::SeqCst) {
                    tracing::info!("aggregator reachable: uploading what waits");
                    shared.reachable.notify_one();
                    if delivered {
                        shared.reconnected.notify_one();
                    }
                }
                delivered = true;
            }
            Err(e) => {
                if refuses_key(&e) && !shared.key_refused.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        "the aggregator refuses this probe's key ({e}): results are kept and \
                         sent after an enrolment (`vantage enrol TOKEN`, a token from its operator)"
                    );
                }
                if shared.online.swap(false, Ordering::SeqCst) {
                    tracing::warn!("aggregator unreachable ({e}): measuring and queueing");
                } else {
                    tracing::debug!("heartbeat not delivered: {e}");
                }
            }
        }
    }
}

/// Whether a heartbeat's failure says the aggregator refuses this probe's key (the reasons of
/// `upload::classify`'s [`upload::Rejection::Key`]).
fn refuses_key(error: &str) -> bool {
    error.contains("unknown key") || error.contains("revoked key")
}

/// Puts held results back in the outbox after an enrolment (`vantage enrol` changed the
/// store's mark since `seen`, or heartbeats refused for the key got through), and those whose
/// time has come. A store error is logged: the results stay held and the next round tries
/// again.
fn requeue(shared: &Shared, store: &Store, seen: &mut Option<String>) {
    let mark = store.meta(crate::store::ENROLLED).ok().flatten();
    let enrolled = mark != *seen || shared.key_accepted.swap(false, Ordering::SeqCst);
    *seen = mark;
    if enrolled {
        match store.requeue_held(crate::store::Requeue::All) {
            Ok(0) => {}
            Ok(n) => tracing::info!("enrolled: sending again {n} results held back before"),
            Err(e) => tracing::error!("held results not requeued: {e}"),
        }
    }
    if let Err(e) = store.requeue_held(crate::store::Requeue::Due) {
        tracing::error!("held results not requeued: {e}");
    }
}

/// The outbox: oldest first, backing off while the aggregator cannot be reached.
async fn uploads(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let mut store = shared.store()?;
    let mut failures: u32 = 0;
    // An enrolment made while the daemon was stopped was followed by `vantage enrol`'s own
    // upload; only a new one counts.
    let mut enrolled = store.meta(crate::store::ENROLLED)?;
    // At start: the backlog of an earlier run of the daemon.
    let mut next = Instant::now();
    loop {
        let plan = ctl.plan();
        let at = plan.aggregator.as_ref().map(|_| next);
        let wake = tokio::select! {
            biased;
            w = ctl.until(at) => w,
            () = shared.reachable.notified() => Wake::Due,
            () = shared.results.notified(), if failures == 0 => Wake::Due,
        };
        match wake {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(aggregator) = &plan.aggregator else {
            continue;
        };
        next = Instant::now() + plan.schedule.upload;
        requeue(&shared, &store, &mut enrolled);
        if store.status()?.pending == 0 {
            failures = 0;
        } else if !upload_round(
            &shared,
            &mut store,
            &plan,
            aggregator,
            &mut ctl,
            &mut failures,
            &mut next,
        )
        .await?
        {
            continue;
        }
        // Then the transparency log: each round checks the checkpoint against the last one
        // kept, and proves what was uploaded (`upload::check_log`).
        let check = upload::check_log(
            &mut store,
            &aggregator.upload,
            aggregator.key.as_deref(),
            &plan.data_dir,
            &plan.engine,
            &plan.tls,
        );
        let Some(log) = ctl.unless_stopped(check).await else {
            return Ok(());
        };
        match log {
            Ok(log) => log_round(&log),
            Err(e) => tracing::error!("transparency log not checked: the local store: {e}"),
        }
    }
}

/// What a round of checking the transparency log found, in the daemon's log: a fork or a
/// checkpoint that does not verify as an error (it stays in `vantage status`).
fn log_round(log: &upload::LogReport) {
    if let Some(key) = &log.pinned_now {
        tracing::warn!(
            "trusting the aggregator's key {key} on first use (over HTTPS) to check its \
             transparency log, and pinning it; compare it with the key its operator publishes \
             and set it as aggregator.key"
        );
    }
    for fork in &log.forks {
        tracing::error!("{}", upload::fork_message(fork));
    }
    if let Some(failure) = &log.failure {
        tracing::error!("transparency log: {failure}");
    }
    if let Some(e) = &log.error {
        tracing::info!("transparency log not checked this time: {e}");
    }
    if let Some(c) = &log.checkpoint
        && log.proven > 0
    {
        tracing::info!(
            "transparency log: {} results proven included in checkpoint {}; {} awaiting proof",
            log.proven,
            c.size,
            log.awaiting
        );
    }
}

/// One upload of the outbox; `false` when it failed (the next try is set in `next`).
async fn upload_round(
    shared: &Shared,
    store: &mut Store,
    plan: &Plan,
    aggregator: &config::AggregatorPlan,
    ctl: &mut Control,
    failures: &mut u32,
    next: &mut Instant,
) -> Result<bool, DaemonError> {
    {
        // Relayed results (imported, or taken by `vantage relay`) go with a relay header
        // signed by this probe's key.
        let mut config = aggregator.upload.clone();
        config.relayer = Some(upload::Relayer(shared.identity.clone()));
        let send = upload::upload(store, &config, &plan.engine, &plan.tls);
        let Some(report) = ctl.unless_stopped(send).await else {
            return Ok(false);
        };
        match report {
            Ok(r) if r.error.is_none() => {
                *failures = 0;
                tracing::info!(
                    "uploaded {} results ({} already there, {} refused, {} held; {} relayed for \
                     others) by {}; {} waiting",
                    r.accepted,
                    r.duplicate,
                    r.rejected,
                    r.held,
                    r.relayed,
                    r.route.as_deref().unwrap_or("-"),
                    r.remaining
                );
                if r.key_refused {
                    tracing::warn!(
                        "the aggregator does not accept this probe's key: results are held \
                         until it is enrolled (`vantage enrol TOKEN`)"
                    );
                }
                Ok(true)
            }
            Ok(r) => {
                *failures = failures.saturating_add(1);
                // Never sooner than the aggregator asked (RFC 9110 section 10.2.3), which
                // `upload` caps at a day.
                let delay = upload::backoff(&aggregator.upload, *failures)
                    .max(r.retry_after.unwrap_or_default());
                *next = Instant::now() + delay;
                tracing::warn!(
                    "upload failed ({}); {} waiting; next try in {} s",
                    r.error.unwrap_or_default(),
                    r.remaining,
                    delay.as_secs()
                );
                Ok(false)
            }
            Err(e) => {
                tracing::error!("upload stopped by the local store: {e}");
                Ok(false)
            }
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
async fn runs(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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
        let mut blocked = 0usize;
        let outcome = {
            let on_result = |done: &crate::run::Finished| {
                let v = &done.verdict;
                let what = match (&v.blocking, v.accessible) {
                    (Some(b @ Blocking::Kind(_)), _) => {
                        format!("blocked ({})", crate::run::layer(b).unwrap_or("?"))
                    }
                    (Some(Blocking::Flag(false)), Some(true)) => "accessible".into(),
                    (Some(Blocking::Flag(_)), _) => "down for everyone".into(),
                    (None, _) => "undetermined".into(),
                };
                tracing::info!(
                    id = done.id.as_str(),
                    "measured {}: {what}",
                    v.input.as_deref().unwrap_or("?")
                );
                used += done.bytes;
                blocked += usize::from(matches!(done.verdict.blocking, Some(Blocking::Kind(_))));
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
                let summary = format!(
                    "{} URLs measured, {blocked} blocked, {:.1} MB, {} s",
                    done.len(),
                    used as f64 / 1e6,
                    started.elapsed().as_secs()
                );
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

/// Throttling tests of the configured targets against the aggregator's throughput server,
/// counted in the daily traffic budget with the list runs.
async fn throttling(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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
async fn apps(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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
async fn dnscheck(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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
async fn quic(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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

/// Where the probe is, and the signed test lists.
///
/// The daemon's first heartbeat and canary round wait for the first answer of `whoami`
/// (`docs/detection.md`, "The daemon"): a probe that reported the unknown network first and
/// its own a minute later would look, to the aggregator, like a probe that left one network
/// for another. So the daemon is located once `whoami` answered (even "ZZ AS0": the
/// aggregator cannot tell, and asking again will not change that), or once it failed while a
/// network kept from an earlier run stands in (a probe restarted during a shutdown must keep
/// recording the canaries that prove it), or at once when the network is pinned, or uploads
/// go through a proxy (the aggregator would see the proxy), or there is no aggregator. Until
/// then it asks again every heartbeat interval. A later change of network is logged.
async fn refresh(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
    let store = shared.store()?;
    let mut next = Instant::now();
    let mut warned_proxy = false;
    let mut warned_unlocated = false;
    loop {
        let plan = ctl.plan();
        let at = plan.aggregator.as_ref().map(|_| next);
        // Back online after a loss of connection: where the probe is may have changed; the
        // lists have not.
        let (wake, lists_due) = tokio::select! {
            biased;
            w = ctl.until(at) => (w, true),
            () = shared.reconnected.notified(), if at.is_some() => (Wake::Due, false),
        };
        match wake {
            Wake::Stop => return Ok(()),
            Wake::Reload => continue,
            Wake::Due => {}
        }
        let Some(aggregator) = &plan.aggregator else {
            continue;
        };
        let mut ok = true;
        if (plan.cc.is_none() || plan.asn.is_none()) && aggregator.upload.socks5.is_some() {
            if !warned_proxy {
                tracing::warn!(
                    "uploads go through a proxy, so the aggregator cannot tell where this probe \
                     is: set network.cc and network.asn"
                );
                warned_proxy = true;
            }
        } else if plan.cc.is_none() || plan.asn.is_none() {
            let ask = upload::whoami(&aggregator.url, &plan.engine, &plan.tls);
            match ctl.unless_stopped(ask).await {
                None => return Ok(()),
                Some(Ok(w)) => {
                    let cc = plan.cc.unwrap_or(w.probe_cc);
                    let asn = plan.asn.unwrap_or(w.probe_asn);
                    let (was_cc, was_asn) = shared.location();
                    if (was_cc, was_asn) == (cc, asn) {
                        // Where it was.
                    } else if was_cc == CountryCode::UNKNOWN && was_asn == Asn(0) {
                        tracing::info!("this probe is in {} {asn}", cc.as_str());
                    } else {
                        tracing::warn!(
                            "this probe's network changed from {} {was_asn} to {} {asn}: \
                             what it measures from now on carries the new one",
                            was_cc.as_str(),
                            cc.as_str()
                        );
                    }
                    if cc == CountryCode::UNKNOWN || asn == Asn(0) {
                        tracing::warn!(
                            "the aggregator cannot tell where this probe is ({} {asn}): its \
                             heartbeats and canaries count for no network; set network.cc and \
                             network.asn",
                            cc.as_str()
                        );
                    }
                    shared.set_location(cc, asn);
                    let _ = store.set_meta("location", &format!("{} {asn}", cc.as_str()));
                    shared.located.send_replace(true);
                }
                Some(Err(e)) => {
                    ok = false;
                    let (cc, asn) = shared.location();
                    if cc != CountryCode::UNKNOWN && asn != Asn(0) {
                        tracing::warn!(
                            "cannot ask the aggregator where this probe is ({e}): still taking \
                             it for {} {asn}",
                            cc.as_str()
                        );
                        shared.located.send_replace(true);
                    } else if !warned_unlocated {
                        tracing::warn!(
                            "cannot ask the aggregator where this probe is ({e}): no heartbeat \
                             or canary until it answers"
                        );
                        warned_unlocated = true;
                    } else {
                        tracing::debug!("cannot ask the aggregator where this probe is: {e}");
                    }
                }
            }
        }
        if !*shared.located.borrow() {
            // Pinned, behind a proxy: nothing more to learn.
            let pinned = plan.cc.is_some() && plan.asn.is_some();
            if pinned || aggregator.upload.socks5.is_some() {
                shared.located.send_replace(true);
            }
        }
        if plan.fetch_lists && lists_due {
            let mut countries: Vec<String> = plan
                .lists
                .names
                .iter()
                .filter(|n| *n != "global")
                .cloned()
                .collect();
            if countries.is_empty() {
                countries.push(shared.location().0.as_str().to_string());
            }
            for country in countries {
                let Ok(cc) = country.to_ascii_uppercase().parse::<CountryCode>() else {
                    continue;
                };
                let fetch = upload::fetch_lists(
                    &aggregator.url,
                    cc,
                    aggregator.key.as_deref(),
                    &plan.data_dir,
                    &plan.engine,
                    &plan.tls,
                );
                match ctl.unless_stopped(fetch).await {
                    None => return Ok(()),
                    Some(Ok(f)) => {
                        if f.trust == upload::KeyTrust::FirstUse {
                            tracing::warn!(
                                "trusting the aggregator's key {} on first use (over HTTPS) \
                                 and pinning it; compare it with the key its operator \
                                 publishes and set it as aggregator.key",
                                f.key
                            );
                        }
                        for (name, rows, _) in &f.files {
                            tracing::info!("test list {name}: {rows} URLs");
                        }
                    }
                    Some(Err(e)) => {
                        ok = false;
                        tracing::warn!("test lists not refreshed: {e}");
                    }
                }
            }
        }
        // After a failure, try again within ten minutes rather than tomorrow; while the
        // daemon does not know where it is, at the next heartbeat.
        if !lists_due {
            continue;
        }
        let wait = if !*shared.located.borrow() {
            plan.schedule.refresh.min(plan.schedule.heartbeat)
        } else if ok {
            plan.schedule.refresh
        } else {
            plan.schedule.refresh.min(Duration::from_secs(600))
        };
        next = Instant::now() + wait;
    }
}

/// The location to start with: pinned values, else the last one found, else unknown.
fn first_location(plan: &Plan, store: &Store) -> (CountryCode, Asn) {
    let kept = store.meta("location").ok().flatten().and_then(|v| {
        let (cc, asn) = v.split_once(' ')?;
        Some((cc.parse::<CountryCode>().ok()?, asn.parse::<Asn>().ok()?))
    });
    (
        plan.cc
            .or(kept.map(|k| k.0))
            .unwrap_or(CountryCode::UNKNOWN),
        plan.asn.or(kept.map(|k| k.1)).unwrap_or_default(),
    )
}

/// Runs the daemon until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(config_path: PathBuf, plan: Plan) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};

    std::fs::create_dir_all(&plan.data_dir).map_err(|source| DaemonError::DataDir {
        path: plan.data_dir.display().to_string(),
        source,
    })?;
    let (identity, created) = Identity::load_or_create(&plan.data_dir.join("identity.key"))?;
    if created {
        tracing::info!("created a new signing key");
    }
    let store_path = plan.data_dir.join("vantage.db");
    let store = Store::open(&store_path)?;
    let location = first_location(&plan, &store);
    let _ = store.set_meta(
        "daemon",
        &format!("started {}, pid {}", now_text(), std::process::id()),
    );
    drop(store);
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    tracing::info!(
        key = identity.public_key(),
        data_dir = %plan.data_dir.display(),
        aggregator = plan.aggregator.as_ref().map(|a| a.url.as_str()),
        "daemon started: canary every {} s, list run every {}",
        plan.schedule.canary.as_secs(),
        plan.schedule
            .run
            .map_or("never".into(), |r| format!("{} s", r.as_secs())),
    );
    // Nothing to learn when the network is pinned or there is no aggregator to ask.
    let known = (plan.cc.is_some() && plan.asn.is_some()) || plan.aggregator.is_none();
    let shared = Arc::new(Shared {
        identity: Arc::new(identity),
        store_path,
        location: Mutex::new(location),
        located: watch::channel(known).0,
        online: AtomicBool::new(false),
        key_refused: AtomicBool::new(false),
        key_accepted: AtomicBool::new(false),
        reachable: Notify::new(),
        reconnected: Notify::new(),
        results: Notify::new(),
    });
    let (plan_tx, plan_rx) = watch::channel(Arc::new(plan));
    let (stop_tx, stop_rx) = watch::channel(false);
    let control = || Control {
        plan: plan_rx.clone(),
        stop: stop_rx.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(canaries(shared.clone(), control()));
    tasks.spawn(heartbeats(shared.clone(), control()));
    tasks.spawn(uploads(shared.clone(), control()));
    tasks.spawn(runs(shared.clone(), control()));
    tasks.spawn(throttling(shared.clone(), control()));
    tasks.spawn(apps(shared.clone(), control()));
    tasks.spawn(dnscheck(shared.clone(), control()));
    tasks.spawn(quic(shared.clone(), control()));
    tasks.spawn(refresh(shared.clone(), control()));
    tasks.spawn(carry::carry(shared.clone(), control()));

    let notifier = notify::Notifier::from_env();
    notifier.send("READY=1\nSTATUS=measuring");
    let mut watchdog = notify::watchdog_interval().map(tokio::time::interval);
    let failed = loop {
        let tick = async {
            match watchdog.as_mut() {
                Some(w) => {
                    w.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => break None,
            _ = interrupt.recv() => break None,
            _ = hangup.recv() => {
                notifier.send("RELOADING=1");
                reload(&config_path, &plan_tx, &shared);
                notifier.send("READY=1\nSTATUS=measuring");
            }
            () = tick => notifier.send("WATCHDOG=1"),
            Some(joined) = tasks.join_next() => match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Some(e),
                Err(e) => {
                    tracing::error!("a daemon task failed: {e}");
                }
            },
        }
    };
    notifier.send("STOPPING=1");
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    // Tasks stop at their next await; a store write in progress always completes first.
    let drained = tokio::time::timeout(Duration::from_secs(3), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("tasks did not stop within 3 s; abandoning them");
        tasks.abort_all();
    }
    match failed {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// SIGHUP: the new configuration replaces the running one only if it is valid as a whole.
fn reload(path: &std::path::Path, plan_tx: &watch::Sender<Arc<Plan>>, shared: &Shared) {
    let current = plan_tx.borrow().clone();
    match load(path) {
        Err(e) => tracing::error!("configuration not reloaded, the running one stays: {e}"),
        Ok(new) if new.data_dir != current.data_dir => tracing::error!(
            "configuration not reloaded: data_dir cannot change while the daemon runs; restart it"
        ),
        Ok(new) => {
            let (cc, asn) = shared.location();
            shared.set_location(new.cc.unwrap_or(cc), new.asn.unwrap_or(asn));
            if (new.cc.is_some() && new.asn.is_some()) || new.aggregator.is_none() {
                shared.located.send_replace(true);
            }
            tracing::info!(
                "configuration reloaded from {}: canary every {} s",
                path.display(),
                new.schedule.canary.as_secs()
            );
            let _ = plan_tx.send(Arc::new(new));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn shared(store_path: PathBuf) -> Shared {
        Shared {
            identity: Arc::new(Identity::generate().expect("key")),
            store_path,
            location: Mutex::new((CountryCode::UNKNOWN, Asn(0))),
            located: watch::channel(false).0,
            online: AtomicBool::new(false),
            key_refused: AtomicBool::new(false),
            key_accepted: AtomicBool::new(false),
            reachable: Notify::new(),
            reconnected: Notify::new(),
            results: Notify::new(),
        }
    }

    #[test]
    fn heartbeats_refused_for_the_key_are_told_apart() {
        assert!(refuses_key(
            "aggregator answered HTTP 400: {\"error\":\"unknown key\"}"
        ));
        assert!(refuses_key(
            "aggregator answered HTTP 400: {\"error\":\"revoked key\"}"
        ));
        assert!(!refuses_key("connection_refused"));
        assert!(!refuses_key("aggregator answered HTTP 503: busy"));
    }

    #[test]
    fn an_enrolment_sends_everything_held_and_time_sends_what_is_due() {
        let dir = std::env::temp_dir().join(format!("vantage-requeue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("vantage.db");
        let mut store = Store::open(&path).expect("store");
        for id in ["aa", "bb", "cc"] {
            store
                .insert(&crate::store::NewResult {
                    id,
                    input: None,
                    test_name: "canary",
                    measured_at: "2026-01-01 00:00:00",
                    blocking: None,
                    accessible: None,
                    confirmed: false,
                    verdict: "{}",
                    envelope: "{}",
                })
                .expect("insert");
        }
        let held = |reason: &str, after: Option<u64>| crate::store::Delivery::Held {
            reason: reason.into(),
            retry_after: after.map(Duration::from_secs),
        };
        store
            .record_outcomes(&[
                ("aa".into(), held("unknown key", None)),
                ("bb".into(), held("unknown key", None)),
                ("cc".into(), held("rate limited", Some(0))),
            ])
            .expect("record");
        let shared = shared(path.clone());
        let mut seen = store.meta(crate::store::ENROLLED).expect("meta");
        requeue(&shared, &store, &mut seen);
        assert_eq!(
            store.status().expect("status").pending,
            1,
            "only the due one"
        );
        // `vantage enrol` marks the store: everything held goes.
        store
            .set_meta(crate::store::ENROLLED, "1700000000")
            .expect("mark");
        requeue(&shared, &store, &mut seen);
        assert_eq!(store.status().expect("status").pending, 3);
        assert_eq!(seen.as_deref(), Some("1700000000"));
        // Heartbeats accepted again after refusals for the key count as an enrolment too.
        store
            .record_outcomes(&[("aa".into(), held("unknown key", None))])
            .expect("record");
        requeue(&shared, &store, &mut seen);
        assert_eq!(store.status().expect("status").held, 1, "no new enrolment");
        shared.key_accepted.store(true, Ordering::SeqCst);
        requeue(&shared, &store, &mut seen);
        assert_eq!(store.status().expect("status").held, 0);
        assert!(!shared.key_accepted.load(Ordering::SeqCst), "used once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let base = Instant::now() + Duration::from_secs(1000);
        let max = Duration::from_secs(100);
        let mut seen_early = false;
        let mut seen_late = false;
        for _ in 0..200 {
            let t = jitter(base, max);
            assert!(t + max >= base && t <= base + max);
            seen_early |= t < base;
            seen_late |= t > base;
        }
        assert!(seen_early && seen_late, "jitter goes both ways");
        assert_eq!(jitter(base, Duration::ZERO), base);
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
}
