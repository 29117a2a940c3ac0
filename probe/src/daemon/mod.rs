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
//!
//! This file holds what the tasks share and the main loop that starts them, answers signals
//! and reloads the configuration; the measuring tasks and their daily traffic budget are in
//! `measure.rs`, the tasks that talk to the aggregator (heartbeats, uploads, refresh) in
//! `uplink.rs`.

pub mod carry;
pub mod config;
mod measure;
pub mod notify;
mod uplink;

pub use config::{Config, ConfigError, Plan, load};

use measure::{apps, canaries, dnscheck, quic, runs, throttling};
use uplink::{heartbeats, refresh, uploads};

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::envelope::{EnvelopeError, Identity};
use crate::ooni::{Asn, CountryCode, ooni_timestamp};
use crate::store::{Store, StoreError};

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
}
