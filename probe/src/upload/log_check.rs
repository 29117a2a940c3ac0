//! One round of checking the aggregator's transparency log from the probe
//! (`docs/transparency.md`, "The probe"): the checkpoint, its consistency with the one kept,
//! and the inclusion proofs of uploaded results.

use crate::engine::{EngineConfig, TlsContext, Trace, client};
use crate::store::{Store, StoreError};

use super::{PIN_FILE, UploadConfig, clean_reason};

/// Proofs asked for in one round at most: a round stays short, and the rest wait for the
/// next one (results are proven a few rounds after a large backlog is uploaded).
pub const PROOFS_PER_ROUND: usize = 200;

/// What one round of checking the aggregator's transparency log found
/// (`docs/transparency.md`, "The probe").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogReport {
    /// The aggregator keeps no log (404 on `/log/checkpoint`): its results are not logged.
    pub no_log: bool,
    /// The verified checkpoint the round ended on.
    pub checkpoint: Option<crate::tlog::Checkpoint>,
    /// The aggregator's key was trusted on first use now and pinned: the key.
    pub pinned_now: Option<String>,
    /// Inclusion proofs fetched and verified now.
    pub proven: u64,
    /// Results with a leaf still without a proof.
    pub awaiting: u64,
    /// New evidence that the log is not append-only, each already kept in the store.
    pub forks: Vec<crate::store::LogFork>,
    /// The log could not be trusted this round for a reason that is not a network's: its
    /// checkpoint does not verify with the aggregator's key.
    pub failure: Option<String>,
    /// The round could not finish for now (unreachable, busy); the next one tries again.
    pub error: Option<String>,
}

impl LogReport {
    /// Whether a human must look: a fork, a rewrite, or a checkpoint that does not verify.
    pub fn alarming(&self) -> bool {
        !self.forks.is_empty() || self.failure.is_some()
    }
}

/// The first three lines of a checkpoint (origin, size, root) on one line, to name it in a
/// message; anything else is shown cut and without control characters.
pub fn describe_note(note: &str) -> String {
    let mut lines = note.lines();
    match (lines.next(), lines.next(), lines.next()) {
        (Some(origin), Some(size), Some(root)) if size.bytes().all(|b| b.is_ascii_digit()) => {
            format!("size {size} of {origin} (root {root})")
        }
        _ => clean_reason(Some(note)),
    }
}

/// The loud message of a fork, naming both checkpoints.
pub fn fork_message(fork: &crate::store::LogFork) -> String {
    format!(
        "the aggregator's transparency log is not append-only: {}\n  earlier checkpoint: {}\n  \
         later checkpoint:   {}\n  both are kept in the local store as evidence; no result was \
         deleted or sent again because of it",
        fork.reason,
        describe_note(&fork.old_note),
        describe_note(&fork.new_note)
    )
}

/// The key that signs the aggregator's checkpoints: the one given (`aggregator.key`), else the
/// one pinned in `data_dir/aggregator.key` (by `vantage lists fetch`), else, over HTTPS only,
/// the key that signs its test lists now, trusted on first use (and pinned by the caller once
/// a checkpoint verifies with it). Over plain HTTP a first use is refused, as for test lists:
/// anyone on the way could answer. `Ok((key, first_use))`.
async fn log_key(
    config: &UploadConfig,
    given: Option<&str>,
    data_dir: &std::path::Path,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<([u8; 32], bool), String> {
    let decode = |text: &str, what: &str| -> Result<[u8; 32], String> {
        crate::envelope::parse_public_key(text.trim())
            .map(|k| k.to_bytes())
            .ok_or_else(|| format!("{what} {text:?} is not a base64 Ed25519 public key"))
    };
    if let Some(given) = given {
        return decode(given, "the aggregator key").map(|k| (k, false));
    }
    let pin = data_dir.join(PIN_FILE);
    if let Ok(text) = std::fs::read_to_string(&pin) {
        let what = format!("the pinned key in {}", pin.display());
        return decode(text.trim(), &what).map(|k| (k, false));
    }
    if config.aggregator.scheme() != "https" {
        return Err(format!(
            "no aggregator key is pinned, and {} is plain HTTP, where the key cannot be \
             trusted on first use. Pin the key the aggregator's operator publishes: \
             `vantage lists fetch --aggregator-key KEY ...` (daemon: `key = \"KEY\"` under \
             [aggregator])",
            config.aggregator
        ));
    }
    let url = config
        .aggregator
        .join("api/v1/test-lists/zz")
        .map_err(|e| e.to_string())?;
    let mut call = client::Call::get(&url, "application/json");
    call.timeout = config.timeout;
    call.body_cap = 16 << 20;
    call.socks5 = config.socks5;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| format!("{url}: {}", e.failure()))?;
    if reply.status != 200 {
        return Err(format!(
            "{url}: HTTP {} (no key to check the log with)",
            reply.status
        ));
    }
    let line = String::from_utf8_lossy(&reply.body);
    let key = crate::envelope::verify(line.trim())
        .map_err(|e| format!("{url}: {e}"))?
        .key;
    decode(&key, "the key seen").map(|k| (k, true))
}

/// One round of checking the aggregator's transparency log (`docs/transparency.md`, "The
/// probe"): fetches `/log/checkpoint` and checks its signature with the aggregator's key
/// ([`log_key`]); checks that it extends the checkpoint kept last (from `/log/tile/...`) and
/// keeps it; then fetches, checks and keeps the inclusion proofs of up to
/// [`PROOFS_PER_ROUND`] results that have a leaf and no proof. A probe with no leaf and no
/// checkpoint kept asks nothing. A fork or rewrite is kept in
/// the store with both checkpoints and returned in [`LogReport::forks`]; nothing is deleted or
/// sent again because of it. An aggregator without a log is no error ([`LogReport::no_log`]).
pub async fn check_log(
    store: &mut Store,
    config: &UploadConfig,
    given_key: Option<&str>,
    data_dir: &std::path::Path,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<LogReport, StoreError> {
    use crate::store::LogFork;
    use crate::tlog::{self, HttpTiles, ProofAnswer, TlogError};

    let mut report = LogReport::default();
    // Nothing to prove and no checkpoint to hold the log to (an aggregator older than the
    // log, or without one, gives no leaf): no request.
    if store.unproven(1)?.is_empty() && store.log_status()?.checkpoint.is_none() {
        return Ok(report);
    }
    let http = HttpTiles::new(&config.aggregator, engine, tls, config.socks5);
    let note = match http.checkpoint().await {
        Ok(Some(note)) => note,
        Ok(None) => {
            report.no_log = true;
            return Ok(report);
        }
        Err(e) => {
            report.error = Some(e.to_string());
            report.awaiting = store.unproven(usize::MAX)?.len() as u64;
            return Ok(report);
        }
    };
    let (key, first_use) = match log_key(config, given_key, data_dir, engine, tls).await {
        Ok(k) => k,
        Err(e) => {
            report.error = Some(e);
            report.awaiting = store.unproven(usize::MAX)?.len() as u64;
            return Ok(report);
        }
    };
    let mut current = match tlog::verify_checkpoint(&note, &key) {
        Ok(c) => c,
        Err(e) => {
            report.failure = Some(format!(
                "the checkpoint {} does not verify with the aggregator's key {}: {e}",
                describe_note(&note),
                base64_key(&key)
            ));
            return Ok(report);
        }
    };
    if first_use {
        let pinned = base64_key(&key);
        if let Err(e) = crate::test_lists::replace_files(
            data_dir,
            &[(PIN_FILE.to_string(), format!("{pinned}\n").as_bytes())],
        ) {
            tracing::warn!("cannot pin the aggregator's key: {e}");
        }
        report.pinned_now = Some(pinned);
    }
    let fork = |old: &str, new: &str, reason: String| LogFork {
        origin: current_origin(&note),
        old_note: old.to_string(),
        new_note: new.to_string(),
        reason,
        seen_at: unix_now(),
    };
    // Keeps evidence of a fork; says whether it is new.
    let alarm = |store: &Store, report: &mut LogReport, f: LogFork| -> Result<(), StoreError> {
        if store.add_fork(&f)? {
            report.forks.push(f);
        }
        Ok(())
    };

    // The checkpoint served must extend the one kept last.
    let previous = store.latest_checkpoint(&current.origin)?.map(|(c, _)| c);
    if let Some(old) = &previous {
        match http
            .run(|t| tlog::verify_consistency(old, &current, t))
            .await
        {
            Ok(()) => {}
            Err(e @ TlogError::Inconsistent { .. }) => {
                alarm(
                    store,
                    &mut report,
                    fork(&old.note, &current.note, finding(&e)),
                )?;
            }
            Err(e) => {
                // Not known either way (a tile could not be fetched): the checkpoint is not
                // kept, so the next round checks it again.
                report.error = Some(format!(
                    "consistency of checkpoint {} with {} not checked: {e}",
                    current.size, old.size
                ));
                report.awaiting = store.unproven(usize::MAX)?.len() as u64;
                return Ok(report);
            }
        }
    }
    // Kept in every case: after a fork, both checkpoints are the evidence, and the next
    // checkpoint is checked against this one.
    store.add_checkpoint(&current)?;

    for want in store.unproven(PROOFS_PER_ROUND)? {
        store.mark_asked(&want.id)?;
        let answer = match http.proof(&want.id).await {
            Ok(a) => a,
            Err(e) => {
                report.error = Some(e.to_string());
                break;
            }
        };
        let proof = match answer {
            ProofAnswer::Proof(p) => p,
            ProofAnswer::Later(_) => break,
            ProofAnswer::NotLogged(why) => {
                let reason = format!(
                    "measurement {} was given leaf {} when it was uploaded, and the log now says \
                     it does not hold it ({})",
                    want.id,
                    want.leaf_index,
                    clean_reason(Some(&why))
                );
                alarm(
                    store,
                    &mut report,
                    fork(&current.note, &current.note, reason),
                )?;
                continue;
            }
        };
        // The leaf must be this result's: its id and the key that signed it.
        let leaf = crate::envelope::verify(&want.envelope)
            .ok()
            .and_then(|v| tlog::leaf(&want.id, &v.key).ok());
        let Some(leaf) = leaf else {
            tracing::warn!("stored result {} has no leaf of its own", want.id);
            continue;
        };
        let proof_checkpoint = match tlog::verify_checkpoint(&proof.checkpoint, &key) {
            Ok(c) => c,
            Err(e) => {
                report.failure = Some(format!(
                    "the checkpoint of the proof of {} does not verify with the aggregator's \
                     key: {e}",
                    want.id
                ));
                break;
            }
        };
        if proof_checkpoint != current {
            // A newer checkpoint (or, from a forked log, another one): it must extend the one
            // this round checked, or be extended by it.
            let (old, new) = if proof_checkpoint.size >= current.size {
                (&current, &proof_checkpoint)
            } else {
                (&proof_checkpoint, &current)
            };
            match http.run(|t| tlog::verify_consistency(old, new, t)).await {
                Ok(()) => {}
                Err(e @ TlogError::Inconsistent { .. }) => {
                    alarm(store, &mut report, fork(&old.note, &new.note, finding(&e)))?;
                    store.add_checkpoint(&proof_checkpoint)?;
                    continue;
                }
                Err(e) => {
                    report.error = Some(e.to_string());
                    break;
                }
            }
            store.add_checkpoint(&proof_checkpoint)?;
            if proof_checkpoint.size > current.size {
                current = proof_checkpoint.clone();
            }
        }
        let checked = if proof.leaf != leaf {
            Err(format!(
                "the log's leaf {} for measurement {} is not its id and key",
                proof.leaf_index, want.id
            ))
        } else if proof.leaf_index != want.leaf_index {
            Err(format!(
                "measurement {} was given leaf {} when it was uploaded, and the log now has it \
                 at leaf {}",
                want.id, want.leaf_index, proof.leaf_index
            ))
        } else if proof.tree_size != proof_checkpoint.size {
            Err(format!(
                "the proof of {} says tree size {} but its checkpoint is of size {}",
                want.id, proof.tree_size, proof_checkpoint.size
            ))
        } else {
            tlog::verify_inclusion(&leaf, proof.leaf_index, &proof.hashes, &proof_checkpoint)
                .map_err(|e| format!("measurement {}: {e}", want.id))
        };
        match checked {
            Ok(()) => {
                store.record_proof(&want.id, &proof.hashes, &proof_checkpoint)?;
                report.proven += 1;
            }
            Err(reason) => alarm(
                store,
                &mut report,
                fork(&current.note, &proof_checkpoint.note, reason),
            )?,
        }
    }
    report.checkpoint = Some(current);
    report.awaiting = store.unproven(usize::MAX)?.len() as u64;
    Ok(report)
}

/// What a failed consistency check found, for a message that names both checkpoints itself.
fn finding(e: &crate::tlog::TlogError) -> String {
    match e {
        crate::tlog::TlogError::Inconsistent { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}

/// The origin line of a checkpoint.
fn current_origin(note: &str) -> String {
    note.lines().next().unwrap_or_default().to_string()
}

fn base64_key(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Delivery;
    use crate::upload::tests::{lines, queue, serve};

    #[tokio::test]
    async fn proofs_are_checked_and_a_bad_proof_or_a_lost_leaf_is_kept_as_a_fork() {
        use crate::tlog::{LogSigner, StaticLog, leaf};
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let dir = std::env::temp_dir().join(format!("vantage-loground-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut store = Store::open(&dir.join("vantage.db")).expect("store");
        let sent = lines(5);
        let probe_key = crate::envelope::verify(&sent[0].1).expect("line").key;
        for (id, line) in &sent {
            queue(&mut store, id, line, Some(true));
        }
        let accepted: Vec<(String, Delivery)> = sent
            .iter()
            .map(|(id, _)| (id.clone(), Delivery::Accepted))
            .collect();
        store.record_outcomes(&accepted).expect("outcomes");
        // Result 4 was told leaf 9 at upload; the log holds it at 4.
        let mut given: Vec<(String, u64)> = sent
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i as u64))
            .collect();
        given[4].1 = 9;
        store.record_leaves(&given).expect("leaves");
        let leaves: Vec<[u8; 64]> = sent
            .iter()
            .map(|(id, _)| leaf(id, &probe_key).expect("leaf"))
            .collect();
        let log = StaticLog::from_leaves(&leaves).expect("log");
        let signer = LogSigner::from_seed(&[3; 32]).expect("key");
        let note = signer.sign(log.size, &log.root).expect("sign");
        let (ids, tiles, served) = (
            sent.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            log.tiles.clone(),
            note.clone(),
        );
        let proofs: Vec<Vec<String>> = (0..5)
            .map(|i| {
                let mut p = log.prove(i, log.size).expect("proof");
                if i == 1 {
                    p[0][0] ^= 1;
                }
                p.iter().map(|h| b64(h)).collect()
            })
            .collect();
        let leaves_b64: Vec<String> = leaves.iter().map(|l| b64(l)).collect();
        let base = serve(move |path| {
            if path == "/log/checkpoint" {
                return (200, served.clone().into_bytes());
            }
            if let Some(t) = path.strip_prefix("/log/") {
                return tiles.get(t).map_or((404, Vec::new()), |b| (200, b.clone()));
            }
            let Some(i) = path
                .strip_prefix("/api/v1/log/proof/")
                .and_then(|id| ids.iter().position(|x| x == id))
            else {
                return (404, Vec::new());
            };
            if i == 2 {
                return (404, br#"{"error":"not in the log"}"#.to_vec());
            }
            let body = serde_json::json!({
                "id": ids[i], "leaf_index": i, "leaf": leaves_b64[i], "tree_size": 5,
                "checkpoint": served, "inclusion_proof": proofs[i],
            });
            (200, body.to_string().into_bytes())
        })
        .await;
        let config = UploadConfig::new(base);
        let engine = EngineConfig::default();
        let tls = TlsContext::new(Vec::new()).expect("tls");
        // Without a pinned key, over plain HTTP: not checked, and nothing kept.
        let report = check_log(&mut store, &config, None, &dir, &engine, &tls)
            .await
            .expect("round");
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no aggregator key is pinned"))
        );
        assert_eq!(
            (report.proven, report.awaiting, report.alarming()),
            (0, 5, false)
        );
        // With another key: the checkpoint does not verify, loudly, and is kept nowhere.
        let other = LogSigner::from_seed(&[4; 32]).expect("key");
        let report = check_log(
            &mut store,
            &config,
            Some(&b64(other.public())),
            &dir,
            &engine,
            &tls,
        )
        .await
        .expect("round");
        assert!(
            report
                .failure
                .as_deref()
                .is_some_and(|f| f.contains("does not verify")),
            "{report:?}"
        );
        assert!(report.alarming());
        assert_eq!(store.log_status().expect("status").checkpoint, None);
        // Pinned: two proven; the bent proof, the lost leaf and the moved leaf kept as forks.
        std::fs::write(dir.join(PIN_FILE), format!("{}\n", b64(signer.public()))).expect("pin");
        let report = check_log(&mut store, &config, None, &dir, &engine, &tls)
            .await
            .expect("round");
        assert_eq!((report.proven, report.awaiting), (2, 3), "{report:?}");
        let reasons: Vec<&str> = report.forks.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("is not proven in the tree of size 5")),
            "{reasons:?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.contains("the log now says it does not hold it")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains(
                "was given leaf 9 when it was uploaded, and the log now has it at leaf 4"
            )),
            "{reasons:?}"
        );
        let status = store.log_status().expect("status");
        assert_eq!((status.proven, status.forks.len()), (2, 3));
        assert_eq!(status.checkpoint.map(|c| c.0.note), Some(note));
        // The same findings again are not new: reported once.
        let report = check_log(&mut store, &config, None, &dir, &engine, &tls)
            .await
            .expect("round");
        assert!(report.forks.is_empty(), "{report:?}");
        assert_eq!(store.list(10).expect("list").len(), 5, "nothing deleted");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_checkpoint_is_named_by_its_first_lines() {
        assert_eq!(
            describe_note("vantage.invalid/ab\n12\nROOT=\n\n— sig\n"),
            "size 12 of vantage.invalid/ab (root ROOT=)"
        );
        assert_eq!(describe_note("\u{1b}[2J junk"), "[2J junk");
    }
}
