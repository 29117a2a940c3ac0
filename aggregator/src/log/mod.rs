//! The transparency log (`docs/transparency.md`): an append-only Merkle tree (RFC 6962 section
//! 2.1) of every signed measurement the aggregator accepted, published as C2SP tlog-tiles with
//! checkpoints (C2SP tlog-checkpoint) signed by the aggregator's key, so that anyone can check
//! that a measurement is in the log and, later, that nothing was dropped or rewritten.
//!
//! The store appends the leaves and their hashes in the transaction that stores the
//! measurements (`store::log`); this layer reads them: it computes roots and inclusion proofs
//! (RFC 9162 section 2.1.3) with `tlog_tiles`, serves tiles ([`tiles`]), and signs and stores a
//! checkpoint whenever the tree has grown ([`publish`], run by `serve` every
//! [`PUBLISH_EVERY`]). Before signing it checks that the stored hashes still give the root of
//! the last checkpoint: a database altered underneath stops the log rather than being signed.

pub mod note;
pub mod tiles;
pub mod witness;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use tlog_tiles::{Hash, HashReader};

use crate::store::log::{LogStore, StoredCheckpoint};
use crate::store::{DbError, Storage, now};

pub use note::LogKey;

/// Tiles are 8 levels of the tree high (C2SP tlog-tiles: 256 hashes a tile).
pub const TILE_HEIGHT: u8 = 8;

/// How often `serve` publishes a checkpoint while entries arrive: well within the 10 seconds
/// after which an accepted measurement is provably in the log.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);

/// What the log could not do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The store refused.
    #[error(transparent)]
    Db(#[from] DbError),
    /// `tlog_tiles` refused (a proof or root it could not compute or check).
    #[error("{op}: {source}")]
    Tree {
        /// What was being computed.
        op: String,
        /// Why.
        source: tlog_tiles::Error,
    },
    /// The signing key could not be read.
    #[error("log key {path}: {reason}")]
    Key {
        /// The key file (or the origin, for a key given as bytes).
        path: String,
        /// Why.
        reason: String,
    },
    /// A checkpoint could not be signed.
    #[error("signing the checkpoint of size {size}: {reason}")]
    Sign {
        /// Its tree size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// A checkpoint does not verify.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The stored tree no longer gives what a signed checkpoint says it held.
    #[error(
        "the log was altered: its stored hashes give the tree of size {size} the root {computed}, \
         but the checkpoint signed for that size says {signed}"
    )]
    Altered {
        /// The checkpoint's size.
        size: u64,
        /// The root signed.
        signed: String,
        /// The root the stored hashes give now.
        computed: String,
    },
    /// A stored hash is not the one its leaves give.
    #[error("the log was altered: {0}")]
    Rewritten(String),
    /// The stored tree holds fewer leaves than a signed checkpoint.
    #[error(
        "the log was altered: it holds {leaves} leaves, fewer than the {size} of its last checkpoint"
    )]
    Shrunk {
        /// Leaves now.
        leaves: u64,
        /// The checkpoint's size.
        size: u64,
    },
}

/// Reads stored hashes for `tlog_tiles`, keeping the store's error aside (the trait's error
/// type cannot carry it).
pub(crate) struct Reader<'a> {
    log: &'a dyn LogStore,
    failed: RefCell<Option<DbError>>,
}

impl HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        match self.log.hashes(indexes) {
            Ok(h) => Ok(h.into_iter().map(Hash).collect()),
            Err(e) => {
                *self.failed.borrow_mut() = Some(e);
                Err(tlog_tiles::Error::IndexesNotInTree)
            }
        }
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(log: &'a dyn LogStore) -> Self {
        Reader {
            log,
            failed: RefCell::new(None),
        }
    }

    /// `result` of a `tlog_tiles` call that read through this reader, with the store's error
    /// when that is why it failed.
    pub(crate) fn result<T>(
        self,
        result: Result<T, tlog_tiles::Error>,
        op: impl FnOnce() -> String,
    ) -> Result<T, LogError> {
        result.map_err(|source| match self.failed.into_inner() {
            Some(e) => LogError::Db(e),
            None => LogError::Tree { op: op(), source },
        })
    }
}

/// The root of the log's first `size` leaves.
pub fn root(log: &dyn LogStore, size: u64) -> Result<Hash, LogError> {
    let reader = Reader::new(log);
    let root = tlog_tiles::tree_hash(size, &reader);
    reader.result(root, || format!("root of size {size}"))
}

/// An inclusion proof of one measurement against the latest checkpoint.
#[derive(Debug, Clone)]
pub struct Proof {
    /// Its leaf's index.
    pub leaf_index: u64,
    /// Its leaf's bytes.
    pub leaf: Vec<u8>,
    /// The checkpoint it proves against.
    pub checkpoint: StoredCheckpoint,
    /// The RFC 9162 inclusion path, from the leaf's sibling up.
    pub hashes: Vec<Hash>,
}

/// What the log can say of a measurement.
#[derive(Debug, Clone)]
pub enum Proven {
    /// It has no leaf: not stored, unsigned (an OONI import), or stored without the log.
    NotLogged,
    /// Its leaf is later than the latest checkpoint (`None`: none published yet); the next one
    /// holds it.
    Pending {
        /// Its leaf's index; `None` for an entry a store's sequencer has not integrated yet
        /// ([`LogStore::queued`]), which has no index until it is.
        leaf_index: Option<u64>,
        /// The latest checkpoint's size.
        checkpoint_size: Option<u64>,
    },
    /// Proven.
    Included(Proof),
}

/// The inclusion proof of measurement `id` against the latest checkpoint, checked before it is
/// given (`tlog_tiles::check_record`): a proof that does not verify means the stored tree was
/// altered, and is an error here rather than an answer.
pub fn prove(log: &dyn LogStore, id: &str) -> Result<Proven, LogError> {
    let Some((leaf_index, leaf)) = log.leaf_of(id)? else {
        // Stored but not yet integrated by the store's sequencer: no leaf yet.
        if log.queued(id)? {
            return Ok(Proven::Pending {
                leaf_index: None,
                checkpoint_size: log.latest_checkpoint()?.map(|c| c.size),
            });
        }
        return Ok(Proven::NotLogged);
    };
    if leaf.get(..32).map(hex::encode).as_deref() != Some(id) {
        return Err(LogError::Rewritten(format!(
            "leaf {leaf_index} is not measurement {id}'s"
        )));
    }
    let checkpoint = match log.latest_checkpoint()? {
        Some(c) if leaf_index < c.size => c,
        other => {
            return Ok(Proven::Pending {
                leaf_index: Some(leaf_index),
                checkpoint_size: other.map(|c| c.size),
            });
        }
    };
    let reader = Reader::new(log);
    let proof = tlog_tiles::prove_record(checkpoint.size, leaf_index, &reader);
    let hashes = reader.result(proof, || {
        format!("proof of leaf {leaf_index} in {}", checkpoint.size)
    })?;
    tlog_tiles::check_record(
        &hashes,
        checkpoint.size,
        Hash(checkpoint.root),
        leaf_index,
        tlog_tiles::record_hash(&leaf),
    )
    .map_err(|_| LogError::Altered {
        size: checkpoint.size,
        signed: Hash(checkpoint.root).to_string(),
        computed: format!("a path that does not lead there from leaf {leaf_index}"),
    })?;
    Ok(Proven::Included(Proof {
        leaf_index,
        leaf,
        checkpoint,
        hashes,
    }))
}

/// Checks the stored tree against the latest checkpoint: it holds at least as many leaves, and
/// its hashes still give the root signed. Returns that checkpoint.
pub fn check(log: &dyn LogStore) -> Result<Option<StoredCheckpoint>, LogError> {
    let Some(latest) = log.latest_checkpoint()? else {
        return Ok(None);
    };
    let leaves = log.tree_size()?;
    if leaves < latest.size {
        return Err(LogError::Shrunk {
            leaves,
            size: latest.size,
        });
    }
    let computed = root(log, latest.size)?;
    if computed.0 != latest.root {
        return Err(LogError::Altered {
            size: latest.size,
            signed: Hash(latest.root).to_string(),
            computed: computed.to_string(),
        });
    }
    Ok(Some(latest))
}

/// Leaves read at a time by [`audit`].
const AUDIT_CHUNK: u64 = 4096;

/// Checks the whole stored tree against the latest checkpoint from its leaves up: every stored
/// hash is recomputed from the leaves (RFC 6962 section 2.1) and compared, and the root of the
/// leaves is compared with the root signed. [`check`] reads only the roots of the complete
/// subtrees, so a leaf rewritten with its leaf hash escapes it; this does not. It reads the
/// whole log (a few seconds a million leaves). Returns the checkpoint checked.
pub fn audit(log: &dyn LogStore) -> Result<Option<StoredCheckpoint>, LogError> {
    let Some(latest) = check(log)? else {
        return Ok(None);
    };
    // The roots of the complete subtrees so far, left to right: (level, index in level, hash).
    let mut stack: Vec<(u8, u64, Hash)> = Vec::new();
    let mut n = 0;
    while n < latest.size {
        let leaves = log.leaves(n, AUDIT_CHUNK.min(latest.size - n))?;
        let mut computed: Vec<(u64, Hash)> = Vec::with_capacity(leaves.len() * 2);
        for leaf in &leaves {
            let (mut level, mut index, mut h) = (0u8, n, tlog_tiles::record_hash(leaf));
            computed.push((tlog_tiles::stored_hash_index(0, n), h));
            while let Some(&(l, _, left)) = stack.last() {
                if l != level {
                    break;
                }
                stack.pop();
                h = tlog_tiles::node_hash(left, h);
                level += 1;
                index >>= 1;
                computed.push((tlog_tiles::stored_hash_index(level, index), h));
            }
            stack.push((level, index, h));
            n += 1;
        }
        let indexes: Vec<u64> = computed.iter().map(|(i, _)| *i).collect();
        for ((i, want), got) in computed.iter().zip(log.hashes(&indexes)?) {
            if want.0 != got {
                let (level, at) = tlog_tiles::split_stored_hash_index(*i);
                return Err(LogError::Rewritten(format!(
                    "stored hash {i} (level {level}, node {at}) is not the hash of its leaves"
                )));
            }
        }
    }
    let mut roots = stack.iter().rev().map(|(_, _, h)| *h);
    let leaves_root = match roots.next() {
        Some(last) => roots.fold(last, |right, left| tlog_tiles::node_hash(left, right)),
        None => tlog_tiles::EMPTY_HASH,
    };
    if leaves_root.0 != latest.root {
        return Err(LogError::Altered {
            size: latest.size,
            signed: Hash(latest.root).to_string(),
            computed: leaves_root.to_string(),
        });
    }
    Ok(Some(latest))
}

/// Signs and stores a checkpoint of the whole tree when it has grown since the latest one (or
/// none was published: the first is published even for an empty log, so that the checkpoint
/// route always has one). Refuses when [`check`] fails. Returns the new checkpoint.
pub fn publish(log: &dyn LogStore, key: &LogKey) -> Result<Option<StoredCheckpoint>, LogError> {
    let latest = check(log)?;
    let size = log.tree_size()?;
    if latest.as_ref().is_some_and(|c| c.size >= size) {
        return Ok(None);
    }
    let root = root(log, size)?;
    let checkpoint = StoredCheckpoint {
        size,
        root: root.0,
        note: key.sign(size, root)?,
        published_at: now(),
    };
    log.add_checkpoint(&checkpoint)?;
    Ok(Some(checkpoint))
}

/// Publishes checkpoints every `every` for as long as the server runs (`serve`). A failure is
/// reported once, when it first happens or changes, not every round.
pub async fn run(storage: Arc<dyn Storage>, key: Arc<LogKey>, every: Duration) {
    let mut last_error = String::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (storage, key) = (storage.clone(), key.clone());
        let published = tokio::task::spawn_blocking(move || match storage.log() {
            Ok(log) => match log.sequence() {
                Ok(true) => publish(log, &key).map_err(|e| e.to_string()),
                Ok(false) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Err(_) => Ok(None),
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match published {
            Ok(_) => last_error.clear(),
            Err(e) if e != last_error => {
                eprintln!("vantage-aggregator: no checkpoint published: {e}");
                last_error = e;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Row, Sqlite};

    fn row(n: u8) -> Row {
        use base64::Engine as _;
        Row {
            id: format!("{n:02x}").repeat(32),
            source: "vantage".into(),
            probe_key: Some(base64::engine::general_purpose::STANDARD.encode([n; 32])),
            probe_cc: "IT".into(),
            probe_asn: 3269,
            test_name: "canary".into(),
            input: None,
            domain: None,
            measured_at: "2026-01-01 00:00:00".into(),
            blocking: None,
            accessible: Some(true),
            confirmed: false,
            rule_set: None,
            verdict: None,
            envelope: format!("{{\"n\":{n}}}"),
            network_verified: false,
            route: crate::store::Route::Upload,
        }
    }

    fn store(name: &str) -> (Sqlite, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("vantage-logmod-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agg.db");
        (Sqlite::open(&path).expect("open"), path)
    }

    #[test]
    fn checkpoints_are_published_when_the_tree_grows_and_proofs_verify_against_them() {
        let (db, _) = store("publish");
        let key = LogKey::from_seed(&[9; 32]).expect("key");
        let empty = publish(&db, &key).expect("publish").expect("the first");
        assert_eq!((empty.size, empty.root), (0, tlog_tiles::EMPTY_HASH.0));
        assert!(
            publish(&db, &key).expect("publish").is_none(),
            "nothing new"
        );
        let rows: Vec<Row> = (1..=5).map(row).collect();
        db.insert_logged(&rows).expect("insert");
        assert!(matches!(
            prove(&db, &rows[4].id).expect("prove"),
            Proven::Pending {
                leaf_index: Some(4),
                checkpoint_size: Some(0)
            }
        ));
        let cp = publish(&db, &key).expect("publish").expect("grown");
        assert_eq!(cp.size, 5);
        assert_eq!(audit(&db).expect("intact").map(|c| c.size), Some(5));
        let verified = note::verify(&cp.note, key.verifier_key()).expect("signed");
        assert_eq!(verified.hash().0, cp.root);
        for (i, r) in rows.iter().enumerate() {
            let Proven::Included(p) = prove(&db, &r.id).expect("prove") else {
                panic!("{i} not proven");
            };
            assert_eq!(p.leaf_index, i as u64);
            tlog_tiles::check_record(
                &p.hashes,
                5,
                *verified.hash(),
                p.leaf_index,
                tlog_tiles::record_hash(&p.leaf),
            )
            .expect("the proof verifies");
        }
        assert!(matches!(
            prove(&db, &"0".repeat(64)).expect("prove"),
            Proven::NotLogged
        ));
    }

    /// Overwrites stored hash `(level, k)` in the file, as someone with the file but not the
    /// key could.
    fn overwrite_hash(c: &rusqlite::Connection, level: u8, k: u64, hash: [u8; 32]) {
        let leaf = i64::try_from(((k + 1) << level) - 1).expect("small");
        let mut row: Vec<u8> = c
            .query_row(
                "SELECT hashes FROM log_leaves WHERE idx = ?1",
                [leaf],
                |r| r.get(0),
            )
            .expect("a row");
        let at = usize::from(level) * 32;
        row[at..at + 32].copy_from_slice(&hash);
        c.execute(
            "UPDATE log_leaves SET hashes = ?1 WHERE idx = ?2",
            rusqlite::params![row, leaf],
        )
        .expect("alter");
    }

    #[test]
    fn an_altered_hash_or_a_deleted_leaf_stops_the_log() {
        let (db, path) = store("altered");
        let key = LogKey::from_seed(&[9; 32]).expect("key");
        let rows: Vec<Row> = (1..=6).map(row).collect();
        db.insert_logged(&rows).expect("insert");
        publish(&db, &key).expect("publish").expect("a checkpoint");
        // An operator rewrites leaf 2 and its leaf hash in the file, without the key.
        let c = rusqlite::Connection::open(&path).expect("open");
        let forged =
            crate::store::log::leaf(&"ee".repeat(32), &rows[0].probe_key.clone().expect("key"))
                .expect("leaf");
        c.execute(
            "UPDATE log_leaves SET leaf = ?1 WHERE idx = 2",
            rusqlite::params![&forged[..]],
        )
        .expect("alter");
        overwrite_hash(&c, 0, 2, tlog_tiles::record_hash(&forged).0);
        // The roots of the complete subtrees are untouched, so the cheap check passes; the
        // audit from the leaves and every proof through leaf 2 do not.
        check(&db).expect("the frontier is intact");
        let e = audit(&db).expect_err("caught");
        assert!(matches!(e, LogError::Rewritten(_)), "{e}");
        assert!(e.to_string().contains("level 1, node 1"), "{e}");
        assert!(matches!(
            prove(&db, &rows[3].id),
            Err(LogError::Altered { .. })
        ));
        let e = prove(&db, &rows[2].id).expect_err("not its leaf");
        assert!(e.to_string().contains("leaf 2 is not measurement"), "{e}");
        // Rewriting the hashes above it too moves the root away from the one signed.
        overwrite_hash(&c, 2, 0, [0; 32]);
        let e = check(&db).expect_err("caught");
        assert!(matches!(e, LogError::Altered { size: 6, .. }), "{e}");
        assert!(publish(&db, &key).is_err(), "an altered log is not signed");
        // Deleting the last leaf shrinks the log below its checkpoint.
        c.execute("DELETE FROM log_leaves WHERE idx = 5", [])
            .expect("delete");
        let e = check(&db).expect_err("caught");
        assert!(matches!(e, LogError::Shrunk { leaves: 5, size: 6 }), "{e}");
    }
}
