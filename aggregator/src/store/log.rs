//! What a store keeps of the transparency log (`docs/transparency.md`): the leaves, the Merkle
//! tree's stored hashes and the checkpoints published, appended in the same transaction as the
//! measurements they stand for, so that a stored signed measurement always has a leaf and a
//! leaf always a measurement.
//!
//! The tree and its hashes are those of RFC 6962 section 2.1, kept in the order of Crosby and
//! Wallach's "stored hash index" (`tlog_tiles::stored_hash_index`, a port of Go's
//! `golang.org/x/mod/sumdb/tlog`), from which the C2SP tlog-tiles tiles and RFC 9162 inclusion
//! proofs are read (`crate::log`).

use super::{DbError, Redeemed, Row, StoredHeartbeat};

/// Bytes of one leaf: the measurement id (the SHA-256 of the signed measurement's exact bytes)
/// then the signer's Ed25519 public key.
pub const LEAF_BYTES: usize = vantage_probe::tlog::LEAF_BYTES;

/// The leaf of a signed measurement: its id, 64 hex digits, as 32 bytes, followed by the 32
/// bytes of the signer's base64 Ed25519 public key (`docs/transparency.md`, "Leaves"). `None`
/// when either is not what a verified envelope has (ingest stores no such row).
pub fn leaf(id: &str, key: &str) -> Option<[u8; LEAF_BYTES]> {
    // The one definition of a leaf, shared with every verifier of the log.
    vantage_probe::tlog::leaf(id, key).ok()
}

/// The leaf of a row to store: signed rows (with a probe key) have one, OONI imports none.
pub fn row_leaf(row: &Row) -> Option<[u8; LEAF_BYTES]> {
    row.probe_key.as_deref().and_then(|key| leaf(&row.id, key))
}

/// What storing one row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Stored now (false: it was already stored).
    pub new: bool,
    /// Its leaf in the log: appended now for a new signed row, the earlier one for a duplicate;
    /// `None` for a row without a leaf (an unsigned import, or one stored without the log).
    pub leaf_index: Option<u64>,
}

/// A published checkpoint, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The tree size it commits to.
    pub size: u64,
    /// The tree's root hash (RFC 6962 MTH) at that size.
    pub root: [u8; 32],
    /// The signed note (C2SP tlog-checkpoint), exactly as served.
    pub note: String,
    /// When it was published, seconds since the epoch.
    pub published_at: i64,
}

/// What a leaf stands for: the three kinds of signed envelope the aggregator accepts
/// (`docs/transparency.md`, "What is logged").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A measurement (`POST /api/v1/measurements`).
    Measurement,
    /// A heartbeat (`POST /api/v1/heartbeat`).
    Heartbeat,
    /// An enrolment (`POST /api/v1/enrol`), whose envelope carries the one-time token.
    Enrolment,
}

impl EntryKind {
    /// Its name, as stored and as the entry route says it.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Measurement => "measurement",
            EntryKind::Heartbeat => "heartbeat",
            EntryKind::Enrolment => "enrolment",
        }
    }

    /// The kind named `name` ([`EntryKind::as_str`]).
    pub fn parse(name: &str) -> Option<EntryKind> {
        [
            EntryKind::Measurement,
            EntryKind::Heartbeat,
            EntryKind::Enrolment,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// A logged envelope, as `GET /api/v1/log/entry/{id}` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its leaf's index.
    pub leaf_index: u64,
    /// What it is.
    pub kind: EntryKind,
    /// The envelope byte for byte; `None` for an enrolment, whose envelope carries its
    /// one-time token and is therefore not kept (only its leaf is).
    pub envelope: Option<String>,
}

/// Why a store keeps no transparency log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLog {
    /// This kind of store has none.
    NotInThisStore,
    /// The server was started with `serve --no-log`.
    Disabled,
}

impl NoLog {
    /// The reason, as the log routes give it.
    pub fn reason(self) -> &'static str {
        match self {
            NoLog::NotInThisStore => "this kind of store has none",
            NoLog::Disabled => "it was started with --no-log",
        }
    }
}

/// A store's transparency log. Reads see committed transactions only, so a tree size and the
/// hashes read after it always agree (the log only grows).
pub trait LogStore: Send + Sync {
    /// Stores `rows` as [`super::Storage::insert`] does, appending each new signed row to the
    /// log in the same transaction; says for each row whether it was new and its leaf.
    fn insert_logged(&self, rows: &[Row]) -> Result<Vec<Stored>, DbError>;
    /// Records a heartbeat as [`super::Storage::heartbeat`] does and, when it is new, appends
    /// its leaf (`id`: the SHA-256 of the envelope's signed measurement bytes, hex) and keeps
    /// its `envelope` bytes, all in one transaction. A duplicate is not appended and gets the
    /// leaf it already has (none when it was recorded without the log).
    fn heartbeat_logged(
        &self,
        beat: &StoredHeartbeat,
        id: &str,
        envelope: &str,
    ) -> Result<Stored, DbError>;
    /// Spends an enrolment token as [`super::Storage::redeem_token`] does and, when that
    /// enrols the key now, appends the enrolment's leaf (`id` as for a heartbeat) in the same
    /// transaction. Its envelope is not kept: it carries the token.
    fn redeem_logged(
        &self,
        token_sha256: &str,
        key: &str,
        id: &str,
    ) -> Result<(Redeemed, Option<u64>), DbError>;
    /// The logged envelope whose id is `id`, of any kind.
    fn entry(&self, id: &str) -> Result<Option<Entry>, DbError>;
    /// Leaves committed: the size of the tree.
    fn tree_size(&self) -> Result<u64, DbError>;
    /// The stored hashes at `indexes` (`tlog_tiles::stored_hash_index` order), each present.
    fn hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, DbError>;
    /// The leaves `[from, from + count)`, each present.
    fn leaves(&self, from: u64, count: u64) -> Result<Vec<Vec<u8>>, DbError>;
    /// The leaf of the envelope `id` (a measurement, a heartbeat, an enrolment): its index and
    /// bytes.
    fn leaf_of(&self, id: &str) -> Result<Option<(u64, Vec<u8>)>, DbError>;
    /// Whether `id` was stored to be logged and awaits its leaf: a store whose leaves are
    /// appended by a sequencer after the fact (ClickHouse) says so until it is integrated, so
    /// that a proof asked meanwhile is "not yet" rather than "not in the log".
    fn queued(&self, _id: &str) -> Result<bool, DbError> {
        Ok(false)
    }
    /// A round of the store's sequencer, run before each publication: a store that appends
    /// leaves after the fact (ClickHouse) integrates what was stored since the last round.
    /// Returns whether this node may publish the checkpoint (false: another node holds the
    /// log's lease). A store that appends in the transaction that stores has nothing to do.
    fn sequence(&self) -> Result<bool, DbError> {
        Ok(true)
    }
    /// The newest checkpoint published.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, DbError>;
    /// Records a checkpoint just signed.
    fn add_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), DbError>;
    /// The checkpoint published for tree size `size`, if one was.
    fn checkpoint_of(&self, size: u64) -> Result<Option<StoredCheckpoint>, DbError>;
    /// Keeps a witness's cosignature `line` (C2SP tlog-cosignature, checked by the caller) of
    /// the checkpoint of `size`: one per witness (`NAME+KEYID`) and checkpoint, a later
    /// timestamp replacing an earlier one. Returns whether it was kept (false: one at least as
    /// recent is already there).
    fn add_cosignature(
        &self,
        size: u64,
        witness: &str,
        timestamp: u64,
        line: &str,
    ) -> Result<bool, DbError>;
    /// The cosignature lines kept for the checkpoint of `size`, each with its newline, in the
    /// order of the witnesses' ids.
    fn cosignatures(&self, size: u64) -> Result<Vec<String>, DbError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_is_the_id_then_the_key() {
        let id = "ab".repeat(32);
        let key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
        let l = leaf(&id, key).expect("a leaf");
        assert_eq!(&l[..32], &[0xab; 32]);
        assert_eq!(l[32..], (1..=32).collect::<Vec<u8>>()[..]);
        assert_eq!(leaf(&id[2..], key), None, "31 bytes of id");
        assert_eq!(leaf("zz".repeat(32).as_str(), key), None, "not hex");
        assert_eq!(leaf(&id, "AQID"), None, "3 bytes of key");
        assert_eq!(leaf(&id, "not base64!"), None);
    }

    #[test]
    fn each_kind_reads_back_from_its_name() {
        for k in [
            EntryKind::Measurement,
            EntryKind::Heartbeat,
            EntryKind::Enrolment,
        ] {
            assert_eq!(EntryKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EntryKind::parse("Heartbeat"), None);
    }
}
