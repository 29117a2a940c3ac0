//! The daemon's tasks that talk to the aggregator: heartbeats (what "online" means to the
//! other tasks), uploads of the outbox with the transparency log's check after each, and the
//! refresh of where the probe is and of the signed test lists.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{Control, DaemonError, Plan, Shared, Wake, config};
use crate::ooni::{Asn, CountryCode};
use crate::store::Store;
use crate::upload;

/// Heartbeats; their success or failure is what "online" means to the other tasks.
pub(super) async fn heartbeats(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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
pub(super) async fn uploads(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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
pub(super) async fn refresh(shared: Arc<Shared>, mut ctl: Control) -> Result<(), DaemonError> {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use tokio::sync::{Notify, watch};

    use super::*;
    use crate::envelope::Identity;

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
}
