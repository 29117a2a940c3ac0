//! Checking a Vantage transparency log (`docs/transparency.md`) from the outside: the one
//! implementation that the probe, `vantage verify`, the witness, the mirror and the aggregator
//! itself use to read leaves, checkpoints, inclusion proofs, consistency and entries. Nothing
//! of the Merkle tree is written by hand here: the tree arithmetic is the maintained
//! `tlog_tiles` crate (a port of Go's `golang.org/x/mod/sumdb/tlog`) and the notes are
//! `signed_note` (a port of `sumdb/note`).
//!
//! What it offers:
//!
//! - [`leaf`]: the 64-byte leaf of a signed measurement (its id, then its signer's key).
//! - [`origin_of`], [`verifier_key`]: a log's name and signed-note verifier key, both derived
//!   from the aggregator's Ed25519 public key alone; [`LogSigner`] signs checkpoints with the
//!   secret key (the aggregator's `log::note::LogKey` is a wrapper around it).
//! - [`verify_checkpoint`]: a C2SP tlog-checkpoint signed note, checked against the public
//!   key, gives a [`Checkpoint`]. Other signature lines (witness cosignatures) are allowed and
//!   ignored.
//! - [`verify_inclusion`]: an RFC 9162 section 2.1.3.2 inclusion proof against a checkpoint.
//! - [`verify_consistency`]: a later checkpoint extends an earlier one. The consistency proof
//!   is computed here from the later tree's tiles (as Go's `sumdb` client does), each tile
//!   first checked against the later checkpoint's root, and then checked against the earlier
//!   root (RFC 9162 section 2.1.4). A fork, a rewritten, deleted or reordered leaf, a log of
//!   the same size with another root and a log that shrank are all
//!   [`TlogError::Inconsistent`].
//! - [`entries`]: the leaves of a range, read from the entry bundles, each checked against the
//!   checkpoint's root (for mirrors and witnesses).
//!
//! Tiles come from a [`TileSource`], which is synchronous because `tlog_tiles` reads tiles
//! synchronously. Sources: a map (`BTreeMap<String, Vec<u8>>` or `HashMap`, e.g. the tiles of
//! a [`StaticLog`] in a test, or of an evidence bundle), a directory ([`DirTiles`]) and
//! HTTP(S) ([`HttpTiles`]). `HttpTiles` fetches with the probe's own client
//! (`crate::engine::client`: TLS with the probe's roots, a SOCKS5 proxy if uploads use one),
//! and bridges the synchronous trait to the asynchronous client by running a check in
//! rounds: [`HttpTiles::run`] runs the check against the tiles fetched so far; each tile the
//! check asks for and does not have yet is noted and answered with
//! [`TlogError::TileNotFetched`]; the noted tiles are then fetched (at most
//! [`MAX_TILE_BYTES`] each, a bounded number a run) and the check runs again, until it needs
//! nothing more. A consistency check needs one or two rounds, [`entries`] two or three.
//! `HttpTiles` also fetches the checkpoint ([`HttpTiles::checkpoint`]) and a measurement's
//! inclusion proof ([`HttpTiles::proof`]).
//!
//! Tile paths are C2SP tlog-tiles' ([`tile_path`]): tiles are 8 levels high, so a full tile
//! holds 256 hashes (or 256 entries); `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`.

mod checkpoint;
mod http;
mod proof;
mod tiles;

pub use checkpoint::{
    Checkpoint, LogSigner, origin_of, public_of_verifier_key, verifier_key, verify_checkpoint,
};
pub use http::{HttpTiles, InclusionProof, ProofAnswer};
pub use proof::{entries, verify_consistency, verify_inclusion};
pub use tiles::{DirTiles, StaticLog, TileSource, tile_path};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Bytes of one leaf: the measurement id (the SHA-256 of the signed measurement's exact bytes)
/// then the signer's Ed25519 public key (`docs/transparency.md`, "Leaves").
pub const LEAF_BYTES: usize = 64;

/// A SHA-256 hash: a leaf hash, a node or a tree's root (RFC 6962 section 2.1).
pub type Hash = [u8; 32];

/// The prefix of every Vantage log's origin; `.invalid` (RFC 2606) says it is a name, not an
/// address to fetch from.
pub const ORIGIN_PREFIX: &str = "vantage.invalid/";

/// Tiles are 8 levels of the tree high (C2SP tlog-tiles).
pub const TILE_HEIGHT: u8 = 8;

/// Hashes, or entries, in a full tile.
pub const TILE_WIDTH: u32 = 1 << TILE_HEIGHT;

/// The longest inclusion proof read: a tree of 2^64 leaves has proofs of 64 hashes.
pub const MAX_PROOF_HASHES: usize = 64;

/// The most bytes read of one tile: a full entry bundle of 256 Vantage leaves is 256 × 66
/// bytes; a hash tile 8 KiB.
pub const MAX_TILE_BYTES: usize = 256 * (2 + LEAF_BYTES) + 1024;

/// The largest tree size a checkpoint may claim: 2^48 leaves, far beyond any real log, and
/// small enough that no index arithmetic in `tlog_tiles` can overflow (a signed checkpoint of
/// 2^64 - 1 leaves would otherwise make it panic).
pub const MAX_TREE_SIZE: u64 = 1 << 48;

/// The most leaves [`entries`] reads at once.
pub const MAX_ENTRIES_AT_ONCE: u64 = 1 << 20;

/// The most bytes read of a checkpoint (with cosignatures) or a proof answer.
const MAX_NOTE_BYTES: usize = 64 * 1024;

/// signed-note's algorithm byte for Ed25519.
const ALG_ED25519: u8 = 1;

/// What a check found, or why it could not be made. Each variant names what was checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    /// The id or key of a measurement does not make a leaf.
    #[error("no leaf for measurement {id:?} and key {key:?}: {reason}")]
    Leaf {
        /// The id given (cut to 80 characters).
        id: String,
        /// The key given (cut to 80 characters).
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A public key is not an Ed25519 key, or a key string is not one.
    #[error("log key: {0}")]
    Key(String),
    /// A checkpoint is not a signed note of the key, or not a checkpoint.
    #[error("checkpoint does not verify: {0}")]
    Checkpoint(String),
    /// A checkpoint signed for another origin than the key's.
    #[error("checkpoint origin {origin:?} is not the key's log, {expected:?}")]
    WrongOrigin {
        /// The origin line.
        origin: String,
        /// `origin_of(key)`.
        expected: String,
    },
    /// An inclusion proof does not lead from the leaf to the checkpoint's root.
    #[error("leaf {index} is not proven in the tree of size {size}: {reason}")]
    Inclusion {
        /// The leaf's index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// Two checkpoints of different logs.
    #[error("checkpoints of two different logs: {old:?} and {new:?}")]
    OtherLog {
        /// The earlier checkpoint's origin.
        old: String,
        /// The later one's.
        new: String,
    },
    /// The later tree does not extend the earlier one: a fork, a rewritten, deleted or
    /// reordered leaf, another root for the same size, or a log that shrank.
    #[error(
        "the log is not append-only: checkpoint {new_size} (root {new_root}) does not extend \
         checkpoint {old_size} (root {old_root}): {reason}"
    )]
    Inconsistent {
        /// The earlier checkpoint's size.
        old_size: u64,
        /// Its root, base64.
        old_root: String,
        /// The later checkpoint's size.
        new_size: u64,
        /// Its root, base64.
        new_root: String,
        /// What was found.
        reason: String,
    },
    /// The tiles do not give the root of the checkpoint they were read for.
    #[error("the tiles served do not give the root {root} of checkpoint {size}")]
    BadTiles {
        /// The checkpoint's size.
        size: u64,
        /// Its root, base64.
        root: String,
    },
    /// A tile could not be had, or is not a tile.
    #[error("{path}: {reason}")]
    Tile {
        /// Its path (`tile/...`).
        path: String,
        /// Why.
        reason: String,
    },
    /// [`HttpTiles`] has not fetched this tile yet (see [`HttpTiles::run`]).
    #[error("{path}: not fetched yet")]
    TileNotFetched {
        /// Its path.
        path: String,
    },
    /// Entries asked for outside the tree, or more than [`MAX_ENTRIES_AT_ONCE`].
    #[error(
        "entries [{start}, {end}) cannot be read from the tree of size {size} (a range inside \
         it, of at most {MAX_ENTRIES_AT_ONCE} entries)"
    )]
    Range {
        /// First asked.
        start: u64,
        /// One past the last asked.
        end: u64,
        /// The tree's size.
        size: u64,
    },
    /// A request to the log's server failed, or its answer is not what the routes give.
    #[error("{url}: {reason}")]
    Http {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// `tlog_tiles` refused for another reason.
    #[error("{op}: {reason}")]
    Tree {
        /// What was being computed.
        op: String,
        /// `tlog_tiles`' error.
        reason: String,
    },
}

fn cut(text: &str) -> String {
    text.chars().take(80).collect()
}

fn b64(hash: &Hash) -> String {
    B64.encode(hash)
}

/// The leaf of a signed measurement: its id, 64 hex digits, as 32 bytes, followed by the 32
/// bytes of the signer's base64 Ed25519 public key (`docs/transparency.md`, "Leaves").
pub fn leaf(id_hex: &str, key_b64: &str) -> Result<[u8; LEAF_BYTES], TlogError> {
    let bad = |reason| TlogError::Leaf {
        id: cut(id_hex),
        key: cut(key_b64),
        reason,
    };
    let id: [u8; 32] = hex::decode(id_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the id is not 64 hex digits"))?;
    let key: [u8; 32] = B64
        .decode(key_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the key is not the base64 of 32 bytes"))?;
    let mut out = [0u8; LEAF_BYTES];
    out[..32].copy_from_slice(&id);
    out[32..].copy_from_slice(&key);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn signer() -> LogSigner {
        LogSigner::from_seed(&[7; 32]).expect("key")
    }

    /// A verified checkpoint of `log`, signed as the aggregator signs.
    pub(super) fn checkpoint(log: &StaticLog, key: &LogSigner) -> Checkpoint {
        let note = key.sign(log.size, &log.root).expect("sign");
        verify_checkpoint(&note, key.public()).expect("verifies")
    }

    #[test]
    fn a_leaf_is_the_id_then_the_key() {
        let id = "ab".repeat(32);
        let key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
        let l = leaf(&id, key).expect("a leaf");
        assert_eq!(&l[..32], &[0xab; 32]);
        assert_eq!(l[32..], (1..=32).collect::<Vec<u8>>()[..]);
        for (id, key) in [
            (&id[2..], key),
            ("zz".repeat(32).as_str(), key),
            (id.as_str(), "AQID"),
            (id.as_str(), "not base64!"),
        ] {
            let e = leaf(id, key).expect_err("no leaf");
            assert!(matches!(e, TlogError::Leaf { .. }), "{e}");
        }
    }
}
