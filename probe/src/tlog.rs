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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{HashReader, Tile, TileHashReader, TileReader};
use url::Url;

use crate::engine::{EngineConfig, TlsContext, Trace, client};

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

/// The origin of the log whose checkpoints `public` signs: `vantage.invalid/` and the first 16
/// hex digits of the SHA-256 of the 32-byte key, a stable name no other key shares.
pub fn origin_of(public: &[u8; 32]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    format!("{ORIGIN_PREFIX}{}", &hex::encode(digest.as_ref())[..16])
}

/// The signed-note verifier key of the log of `public`: `ORIGIN+KEYID+BASE64`, the key ID
/// being signed-note's (the first 4 bytes of SHA-256(origin, newline, 0x01, key)) and the
/// base64 that of 0x01 and the key. Go's `note.NewVerifier` reads it.
pub fn verifier_key(public: &[u8; 32]) -> String {
    let origin = origin_of(public);
    let mut encoded = vec![ALG_ED25519];
    encoded.extend_from_slice(public);
    let id = signed_note::key_id(&origin, &encoded);
    format!("{origin}+{id:08x}+{}", B64.encode(&encoded))
}

/// The public key in a verifier key string (as [`verifier_key`] writes it), with a check that
/// its name is the key's origin.
pub fn public_of_verifier_key(verifier_key: &str) -> Result<[u8; 32], TlogError> {
    let bad = || {
        TlogError::Key(format!(
            "{:?} is not a Vantage log's verifier key",
            cut(verifier_key)
        ))
    };
    // The name and the hex key ID hold no `+`; the base64 may.
    let mut parts = verifier_key.splitn(3, '+');
    let (Some(name), Some(_id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let encoded = B64.decode(encoded).map_err(|_| bad())?;
    let public: [u8; 32] = match encoded.split_first() {
        Some((&ALG_ED25519, rest)) => rest.try_into().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if name != origin_of(&public) || self::verifier_key(&public) != verifier_key {
        return Err(bad());
    }
    Ok(public)
}

/// A checkpoint whose signature by the log's key has been checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The origin line: the log's name.
    pub origin: String,
    /// The tree size it commits to.
    pub size: u64,
    /// The tree's root (RFC 6962 MTH), base64 in JSON.
    #[serde(with = "hash_b64")]
    pub root: Hash,
    /// The signed note, exactly as served (with any cosignatures).
    pub note: String,
}

impl Checkpoint {
    /// The root, base64, as the checkpoint writes it.
    pub fn root_b64(&self) -> String {
        b64(&self.root)
    }
}

impl std::fmt::Display for Checkpoint {
    /// `size N of ORIGIN (root BASE64)`: how an error line names a checkpoint.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "size {} of {} (root {})",
            self.size,
            self.origin,
            self.root_b64()
        )
    }
}

mod hash_b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    pub fn serialize<S: serde::Serializer>(hash: &super::Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(hash))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<super::Hash, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        B64.decode(text.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("not the base64 of a 32-byte hash"))
    }
}

/// Checks a checkpoint (C2SP tlog-checkpoint) signed note against the log's public key: its
/// signature by the key (other signature lines, e.g. witness cosignatures, are allowed and
/// ignored) and that its origin is [`origin_of`] the key.
pub fn verify_checkpoint(note: &str, public: &[u8; 32]) -> Result<Checkpoint, TlogError> {
    let bad = |reason: String| TlogError::Checkpoint(reason);
    let expected = origin_of(public);
    let verifier = StandardVerifier::new(&verifier_key(public))
        .map_err(|e| TlogError::Key(format!("{}: {e}", B64.encode(public))))?;
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|e| bad(e.to_string()))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| match e {
            signed_note::NoteError::UnverifiedNote => {
                bad(format!("it carries no signature by the key of {expected}"))
            }
            e => bad(e.to_string()),
        })?;
    let checkpoint =
        tlog_tiles::Checkpoint::from_bytes(parsed.text()).map_err(|e| bad(e.to_string()))?;
    if checkpoint.size() > MAX_TREE_SIZE {
        return Err(bad(format!(
            "a tree of {} leaves, more than any log ({MAX_TREE_SIZE})",
            checkpoint.size()
        )));
    }
    if checkpoint.origin() != expected {
        return Err(TlogError::WrongOrigin {
            origin: cut(checkpoint.origin()),
            expected,
        });
    }
    Ok(Checkpoint {
        origin: expected,
        size: checkpoint.size(),
        root: checkpoint.hash().0,
        note: note.to_string(),
    })
}

/// Signs checkpoints with a log's Ed25519 secret key. The aggregator's `log::note::LogKey`
/// wraps it, so what the aggregator signs is what [`verify_checkpoint`] checks.
pub struct LogSigner {
    origin: String,
    signer: StandardSigner,
    public: [u8; 32],
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogSigner({})", verifier_key(&self.public))
    }
}

impl LogSigner {
    /// The signer of the Ed25519 secret key `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Result<LogSigner, TlogError> {
        let public = *ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .as_bytes();
        let origin = origin_of(&public);
        let mut encoded = vec![ALG_ED25519];
        encoded.extend_from_slice(&public);
        let id = signed_note::key_id(&origin, &encoded);
        let mut secret = vec![ALG_ED25519];
        secret.extend_from_slice(seed);
        let signer = StandardSigner::new(&format!(
            "PRIVATE+KEY+{origin}+{id:08x}+{}",
            B64.encode(&secret)
        ))
        .map_err(|e| TlogError::Key(format!("{origin}: {e}")))?;
        Ok(LogSigner {
            origin,
            signer,
            public,
        })
    }

    /// The log's origin, which is also the key's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The signed checkpoint (a C2SP signed note) of a tree of `size` leaves whose root is
    /// `root`.
    pub fn sign(&self, size: u64, root: &Hash) -> Result<String, TlogError> {
        let err = |e: String| TlogError::Checkpoint(format!("signing size {size}: {e}"));
        let checkpoint =
            tlog_tiles::Checkpoint::new(&self.origin, size, tlog_tiles::Hash(*root), "")
                .map_err(|e| err(e.to_string()))?;
        let mut note = Note::new(&checkpoint.to_bytes(), &[]).map_err(|e| err(e.to_string()))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| err(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| err(e.to_string()))
    }
}

/// Checks an RFC 9162 section 2.1.3.2 inclusion proof: `proof` (from the leaf's sibling up)
/// leads from `leaf` at `index` to the checkpoint's root.
pub fn verify_inclusion(
    leaf: &[u8],
    index: u64,
    proof: &[Hash],
    checkpoint: &Checkpoint,
) -> Result<(), TlogError> {
    let bad = |reason: &str| TlogError::Inclusion {
        index,
        size: checkpoint.size,
        reason: reason.to_string(),
    };
    if index >= checkpoint.size {
        return Err(bad("the leaf is past the end of the tree"));
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(bad("the proof is longer than any tree's"));
    }
    let proof: Vec<tlog_tiles::Hash> = proof.iter().copied().map(tlog_tiles::Hash).collect();
    tlog_tiles::check_record(
        &proof,
        checkpoint.size,
        tlog_tiles::Hash(checkpoint.root),
        index,
        tlog_tiles::record_hash(leaf),
    )
    .map_err(|_| bad("the proof does not lead from this leaf to the checkpoint's root"))
}

/// Where tiles come from: an HTTP client against `<base>/log/` ([`HttpTiles`]), a directory
/// ([`DirTiles`]), a map. `path` is the C2SP tlog-tiles path, e.g. `tile/0/x001/234.p/7` or
/// `tile/entries/000` ([`tile_path`]). A source may give a wider tile than the partial one
/// asked for (C2SP allows the full tile in its place); the extra is ignored.
pub trait TileSource {
    /// The bytes of the tile at `path`.
    fn tile(&self, path: &str) -> Result<Vec<u8>, TlogError>;
}

impl TileSource for BTreeMap<String, Vec<u8>> {
    fn tile(&self, path: &str) -> Result<Vec<u8>, TlogError> {
        self.get(path).cloned().ok_or_else(|| TlogError::Tile {
            path: path.to_string(),
            reason: "not there".into(),
        })
    }
}

impl TileSource for HashMap<String, Vec<u8>> {
    fn tile(&self, path: &str) -> Result<Vec<u8>, TlogError> {
        self.get(path).cloned().ok_or_else(|| TlogError::Tile {
            path: path.to_string(),
            reason: "not there".into(),
        })
    }
}

/// Tiles in a directory, at their paths below it (`DIR/tile/0/000`, as a static tlog-tiles
/// server would hold them).
#[derive(Debug, Clone)]
pub struct DirTiles(pub PathBuf);

impl TileSource for DirTiles {
    fn tile(&self, path: &str) -> Result<Vec<u8>, TlogError> {
        let err = |reason: String| TlogError::Tile {
            path: path.to_string(),
            reason,
        };
        if path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(err("not a tile path".into()));
        }
        let file = self.0.join(path);
        let len = std::fs::metadata(&file)
            .map_err(|e| err(format!("{}: {e}", file.display())))?
            .len();
        if len > MAX_TILE_BYTES as u64 {
            return Err(err(format!("{len} bytes, more than any tile")));
        }
        std::fs::read(&file).map_err(|e| err(format!("{}: {e}", file.display())))
    }
}

/// The C2SP tlog-tiles path of a tile: `tile/<L>/<N>[.p/<W>]` for hashes of level `L` (a tile
/// level, each 8 tree levels), `tile/entries/<N>[.p/<W>]` for an entry bundle (`level`
/// `None`). `<N>` is written in groups of 3 digits, all but the last prefixed with `x`;
/// `.p/<W>` marks a partial tile of `W` < 256 hashes or entries.
pub fn tile_path(level: Option<u8>, index: u64, width: u32) -> String {
    let mut n = index;
    let mut digits = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        digits = format!("x{:03}/{digits}", n % 1000);
    }
    let partial = if width >= TILE_WIDTH {
        String::new()
    } else {
        format!(".p/{width}")
    };
    match level {
        Some(l) => format!("tile/{l}/{digits}{partial}"),
        None => format!("tile/entries/{digits}{partial}"),
    }
}

/// `tlog_tiles`' tile reader over a [`TileSource`], keeping the source's first error aside
/// (`tlog_tiles`' error type cannot carry it). It asks the source for every tile of a batch
/// even after one failed, so that [`HttpTiles`] learns all it has to fetch in one round.
struct Reader<'a> {
    source: &'a dyn TileSource,
    failed: std::cell::RefCell<Option<TlogError>>,
}

impl TileReader for Reader<'_> {
    fn height(&self) -> u8 {
        TILE_HEIGHT
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(tiles.len());
        let mut failed = None;
        for t in tiles {
            let path = tile_path(Some(t.level()), t.level_index(), t.width());
            let want = t.width() as usize * tlog_tiles::HASH_SIZE;
            match self.source.tile(&path) {
                Ok(mut data) if data.len() >= want => {
                    data.truncate(want);
                    out.push(data);
                }
                Ok(data) => {
                    failed.get_or_insert(TlogError::Tile {
                        path,
                        reason: format!("{} bytes, not the {want} of its hashes", data.len()),
                    });
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) => {
                self.failed.borrow_mut().get_or_insert(e);
                Err(tlog_tiles::Error::InvalidTile)
            }
            None => Ok(out),
        }
    }

    fn save_tiles(&self, _tiles: &[Tile], _data: &[Vec<u8>]) {}
}

impl<'a> Reader<'a> {
    fn new(source: &'a dyn TileSource) -> Self {
        Reader {
            source,
            failed: std::cell::RefCell::new(None),
        }
    }

    /// The error of a `tlog_tiles` call that read through this reader: the source's when that
    /// is why it failed, [`TlogError::BadTiles`] when the tiles do not give the tree's root.
    fn error(&self, e: tlog_tiles::Error, size: u64, root: &Hash, op: &str) -> TlogError {
        if let Some(failed) = self.failed.borrow_mut().take() {
            return failed;
        }
        match e {
            tlog_tiles::Error::InconsistentTile => TlogError::BadTiles {
                size,
                root: b64(root),
            },
            e => TlogError::Tree {
                op: op.to_string(),
                reason: e.to_string(),
            },
        }
    }
}

/// Checks that the tree of `new` extends the tree of `old` (RFC 9162 section 2.1.4), with a
/// consistency proof computed from `new`'s tiles, each checked against `new`'s root. `Ok` when
/// `old`'s tree is a prefix of `new`'s. [`TlogError::Inconsistent`] for a fork, a rewritten,
/// deleted or reordered leaf, a checkpoint of the same size with another root, and a smaller
/// one (a shrunk log); [`TlogError::BadTiles`] when the tiles served are not those of `new`;
/// [`TlogError::OtherLog`] for checkpoints of two logs. Both checkpoints must have been
/// verified ([`verify_checkpoint`]).
pub fn verify_consistency(
    old: &Checkpoint,
    new: &Checkpoint,
    tiles: &dyn TileSource,
) -> Result<(), TlogError> {
    if old.origin != new.origin {
        return Err(TlogError::OtherLog {
            old: old.origin.clone(),
            new: new.origin.clone(),
        });
    }
    let inconsistent = |reason: &str| TlogError::Inconsistent {
        old_size: old.size,
        old_root: old.root_b64(),
        new_size: new.size,
        new_root: new.root_b64(),
        reason: reason.to_string(),
    };
    if new.size < old.size {
        return Err(inconsistent("the log shrank"));
    }
    if new.size == old.size {
        return if new.root == old.root {
            Ok(())
        } else {
            Err(inconsistent(
                "two trees of the same size with different roots: a fork",
            ))
        };
    }
    if old.size == 0 {
        return if old.root == tlog_tiles::EMPTY_HASH.0 {
            Ok(())
        } else {
            Err(inconsistent(
                "the empty tree's root is not SHA-256 of nothing",
            ))
        };
    }
    let reader = Reader::new(tiles);
    let hashes = TileHashReader::new(new.size, tlog_tiles::Hash(new.root), &reader);
    let proof = tlog_tiles::prove_tree(new.size, old.size, &hashes).map_err(|e| {
        reader.error(
            e,
            new.size,
            &new.root,
            &format!("consistency proof {} -> {}", old.size, new.size),
        )
    })?;
    tlog_tiles::check_tree(
        &proof,
        new.size,
        tlog_tiles::Hash(new.root),
        old.size,
        tlog_tiles::Hash(old.root),
    )
    .map_err(|_| {
        inconsistent(
            "the first leaves of the later tree are not the earlier tree: a leaf was deleted, \
             altered or reordered, or the log forked",
        )
    })
}

/// The leaves `[start, end)` of the tree of `checkpoint`, read from its entry bundles, each
/// checked against the checkpoint's root through the level-0 tiles (for mirrors and
/// witnesses). Reads every tile of the range at once: ask for ranges of a few thousand, at most
/// [`MAX_ENTRIES_AT_ONCE`].
pub fn entries(
    checkpoint: &Checkpoint,
    start: u64,
    end: u64,
    tiles: &dyn TileSource,
) -> Result<Vec<Vec<u8>>, TlogError> {
    if start > end || end > checkpoint.size || end - start > MAX_ENTRIES_AT_ONCE {
        return Err(TlogError::Range {
            start,
            end,
            size: checkpoint.size,
        });
    }
    if start == end {
        return Ok(Vec::new());
    }
    let reader = Reader::new(tiles);
    let hashes = TileHashReader::new(checkpoint.size, tlog_tiles::Hash(checkpoint.root), &reader);
    let indexes: Vec<u64> = (start..end)
        .map(|n| tlog_tiles::stored_hash_index(0, n))
        .collect();
    // Fetch every bundle of the range before failing, so that HttpTiles fetches them in the
    // same round as the hash tiles.
    let width = u64::from(TILE_WIDTH);
    let mut bundles = Vec::new();
    let mut failed = None;
    for n in start / width..=(end - 1) / width {
        let w = (checkpoint.size - n * width).min(width);
        let path = tile_path(None, n, w as u32);
        match tiles.tile(&path) {
            Ok(data) => bundles.push((n, w, path, data)),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let leaf_hashes = tlog_tiles::HashReader::read_hashes(&hashes, &indexes).map_err(|e| {
        reader.error(
            e,
            checkpoint.size,
            &checkpoint.root,
            &format!("leaf hashes [{start}, {end})"),
        )
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let leaf_hashes = leaf_hashes?;
    let mut out = Vec::with_capacity(indexes.len());
    for (n, w, path, data) in bundles {
        let bad = |reason: String| TlogError::Tile {
            path: path.clone(),
            reason,
        };
        let mut rest = &data[..];
        for i in 0..w {
            let index = n * width + i;
            let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                return Err(bad(format!("holds {i} entries, not {w}")));
            };
            let len = usize::from(u16::from_be_bytes(*len));
            if tail.len() < len {
                return Err(bad(format!("entry {index} is cut short")));
            }
            let (entry, tail) = tail.split_at(len);
            rest = tail;
            if !(start..end).contains(&index) {
                continue;
            }
            let Some(want) = usize::try_from(index - start)
                .ok()
                .and_then(|i| leaf_hashes.get(i))
            else {
                return Err(bad(format!("entry {index} has no leaf hash")));
            };
            if tlog_tiles::record_hash(entry) != *want {
                return Err(TlogError::Inconsistent {
                    old_size: checkpoint.size,
                    old_root: checkpoint.root_b64(),
                    new_size: checkpoint.size,
                    new_root: checkpoint.root_b64(),
                    reason: format!(
                        "entry {index} of {path} is not the leaf the tree holds at {index}"
                    ),
                });
            }
            out.push(entry.to_vec());
        }
    }
    Ok(out)
}

/// A whole log held in memory: its tiles (hash tiles and entry bundles, at their C2SP paths)
/// as a static tlog-tiles server would serve them for its current size, built from its leaves
/// with `tlog_tiles` (stored hashes, then tiles). For tests (a log to check, and to fork) and
/// for writing a log out as files.
#[derive(Debug, Clone)]
pub struct StaticLog {
    /// Leaves.
    pub size: u64,
    /// The tree's root.
    pub root: Hash,
    /// Every tile of the tree of `size`, by path.
    pub tiles: BTreeMap<String, Vec<u8>>,
    hashes: Vec<tlog_tiles::Hash>,
}

struct StoredHashes<'a>(&'a [tlog_tiles::Hash]);

impl HashReader for StoredHashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog_tiles::Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                usize::try_from(*i)
                    .ok()
                    .and_then(|i| self.0.get(i).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl StaticLog {
    /// The log of `leaves`, in order.
    pub fn from_leaves<L: AsRef<[u8]>>(leaves: &[L]) -> Result<StaticLog, TlogError> {
        let tree = |e: tlog_tiles::Error| TlogError::Tree {
            op: "building a static log".into(),
            reason: e.to_string(),
        };
        let mut hashes = Vec::new();
        for (n, leaf) in leaves.iter().enumerate() {
            let new = tlog_tiles::stored_hashes(n as u64, leaf.as_ref(), &StoredHashes(&hashes))
                .map_err(tree)?;
            hashes.extend(new);
        }
        let size = leaves.len() as u64;
        let root = tlog_tiles::tree_hash(size, &StoredHashes(&hashes))
            .map_err(tree)?
            .0;
        let mut tiles = BTreeMap::new();
        for t in Tile::new_tiles(TILE_HEIGHT, 0, size) {
            let data = t.read_data(&StoredHashes(&hashes)).map_err(tree)?;
            tiles.insert(tile_path(Some(t.level()), t.level_index(), t.width()), data);
        }
        for (n, chunk) in leaves.chunks(TILE_WIDTH as usize).enumerate() {
            let mut bundle = Vec::new();
            for leaf in chunk {
                let leaf = leaf.as_ref();
                let len = u16::try_from(leaf.len()).map_err(|_| TlogError::Tree {
                    op: "building a static log".into(),
                    reason: "a leaf longer than 65535 bytes".into(),
                })?;
                bundle.extend_from_slice(&len.to_be_bytes());
                bundle.extend_from_slice(leaf);
            }
            tiles.insert(tile_path(None, n as u64, chunk.len() as u32), bundle);
        }
        Ok(StaticLog {
            size,
            root,
            tiles,
            hashes,
        })
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (`size` up to
    /// [`StaticLog::size`]).
    pub fn prove(&self, index: u64, size: u64) -> Result<Vec<Hash>, TlogError> {
        tlog_tiles::prove_record(size, index, &StoredHashes(&self.hashes))
            .map(|p| p.into_iter().map(|h| h.0).collect())
            .map_err(|e| TlogError::Tree {
                op: format!("proof of leaf {index} in {size}"),
                reason: e.to_string(),
            })
    }
}

/// A measurement's inclusion proof as `GET /api/v1/log/proof/{id}` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The measurement id.
    pub id: String,
    /// Its leaf's index.
    pub leaf_index: u64,
    /// The leaf's bytes.
    pub leaf: Vec<u8>,
    /// The size of the tree the proof is against.
    pub tree_size: u64,
    /// The checkpoint the proof is against, as served (not yet verified).
    pub checkpoint: String,
    /// The RFC 9162 inclusion path, from the leaf's sibling up.
    pub hashes: Vec<Hash>,
}

/// What the log's server says of a measurement's proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofAnswer {
    /// The proof (still to be checked, [`verify_inclusion`]).
    Proof(InclusionProof),
    /// 404: the measurement is not in this log, or the server keeps no log.
    NotLogged(String),
    /// 503: not yet in a checkpoint, or the server is busy; ask again later.
    Later(Option<Duration>),
}

#[derive(serde::Deserialize)]
struct ProofWire {
    id: String,
    leaf_index: u64,
    leaf: String,
    tree_size: u64,
    checkpoint: String,
    inclusion_proof: Vec<String>,
}

/// Tiles, checkpoints and proofs of one aggregator's log over HTTP(S), with the probe's own
/// client. A check that needs tiles runs through [`HttpTiles::run`] (see the module doc).
/// Fetched tiles are kept for the life of the value (each is checked against a root every
/// time it is used, so keeping one is safe).
pub struct HttpTiles {
    base: Url,
    engine: EngineConfig,
    tls: TlsContext,
    socks5: Option<std::net::SocketAddr>,
    timeout: Duration,
    max_tiles: usize,
    fetched: Mutex<HashMap<String, Vec<u8>>>,
    wanted: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for HttpTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpTiles({})", self.base)
    }
}

/// Rounds of fetching a run makes before giving up: a check needs two or three.
const MAX_ROUNDS: usize = 8;

impl HttpTiles {
    /// The log of the aggregator at `aggregator` (its base URL, as uploads use it), fetched
    /// with `engine`'s timeouts and `tls`'s roots, through `socks5` if given (as uploads).
    pub fn new(
        aggregator: &Url,
        engine: &EngineConfig,
        tls: &TlsContext,
        socks5: Option<std::net::SocketAddr>,
    ) -> Self {
        HttpTiles {
            base: aggregator.clone(),
            engine: engine.clone(),
            tls: tls.clone(),
            socks5,
            timeout: Duration::from_secs(30),
            max_tiles: 4096,
            fetched: Mutex::new(HashMap::new()),
            wanted: Mutex::new(BTreeSet::new()),
        }
    }

    /// At most `n` tiles fetched by one [`HttpTiles::run`] (default 4096, 70 MiB at most).
    pub fn max_tiles(mut self, n: usize) -> Self {
        self.max_tiles = n;
        self
    }

    fn url(&self, path: &str) -> Result<Url, TlogError> {
        self.base.join(path).map_err(|e| TlogError::Http {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })
    }

    async fn get(&self, url: &Url, accept: &str, cap: usize) -> Result<client::Reply, TlogError> {
        let mut call = client::Call::get(url, accept);
        call.timeout = self.timeout;
        call.body_cap = cap + 1;
        call.socks5 = self.socks5;
        let reply = client::send(call, &self.engine, &self.tls, &Trace::new())
            .await
            .map_err(|e| TlogError::Http {
                url: url.to_string(),
                reason: format!("{}: {e}", e.failure()),
            })?;
        if reply.body.len() > cap {
            return Err(TlogError::Http {
                url: url.to_string(),
                reason: format!("the answer is longer than {cap} bytes"),
            });
        }
        Ok(reply)
    }

    /// `GET /log/checkpoint`: the latest checkpoint's note as served (not yet verified), or
    /// `None` when the server keeps no log (404).
    pub async fn checkpoint(&self) -> Result<Option<String>, TlogError> {
        let url = self.url("log/checkpoint")?;
        let reply = self.get(&url, "text/plain", MAX_NOTE_BYTES).await?;
        let bad = |reason: String| TlogError::Http {
            url: url.to_string(),
            reason,
        };
        match reply.status {
            200 => String::from_utf8(reply.body)
                .map(Some)
                .map_err(|_| bad("the checkpoint is not UTF-8".into())),
            404 => Ok(None),
            s => Err(bad(format!("HTTP {s}"))),
        }
    }

    /// `GET /api/v1/log/proof/{id}`: measurement `id`'s inclusion proof (not yet checked).
    pub async fn proof(&self, id: &str) -> Result<ProofAnswer, TlogError> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TlogError::Http {
                url: format!("{}api/v1/log/proof/{}", self.base, cut(id)),
                reason: "not a measurement id".into(),
            });
        }
        let url = self.url(&format!("api/v1/log/proof/{id}"))?;
        let reply = self.get(&url, "application/json", MAX_NOTE_BYTES).await?;
        let bad = |reason: String| TlogError::Http {
            url: url.to_string(),
            reason,
        };
        match reply.status {
            200 => {}
            404 => {
                let text = String::from_utf8_lossy(&reply.body);
                return Ok(ProofAnswer::NotLogged(
                    text.chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .take(200)
                        .collect(),
                ));
            }
            503 => {
                let wait = reply
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| crate::upload::retry_after(v, std::time::SystemTime::now()));
                return Ok(ProofAnswer::Later(wait));
            }
            s => return Err(bad(format!("HTTP {s}"))),
        }
        let wire: ProofWire =
            serde_json::from_slice(&reply.body).map_err(|e| bad(format!("not a proof: {e}")))?;
        if wire.id != id {
            return Err(bad(format!("a proof of {} instead", cut(&wire.id))));
        }
        if wire.inclusion_proof.len() > MAX_PROOF_HASHES {
            return Err(bad("a proof longer than any tree's".into()));
        }
        let leaf = B64
            .decode(&wire.leaf)
            .map_err(|_| bad("the leaf is not base64".into()))?;
        let hashes = wire
            .inclusion_proof
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b).ok())
                    .ok_or_else(|| bad("a proof hash is not the base64 of 32 bytes".into()))
            })
            .collect::<Result<Vec<Hash>, TlogError>>()?;
        Ok(ProofAnswer::Proof(InclusionProof {
            id: wire.id,
            leaf_index: wire.leaf_index,
            leaf,
            tree_size: wire.tree_size,
            checkpoint: wire.checkpoint,
            hashes,
        }))
    }

    /// Fetches one tile (`tile/...`) now. A partial tile the server no longer has (404) is
    /// read from the full tile in its place, as C2SP tlog-tiles allows.
    pub async fn fetch(&self, path: &str) -> Result<Vec<u8>, TlogError> {
        let url = self.url(&format!("log/{path}"))?;
        let reply = self
            .get(&url, "application/octet-stream", MAX_TILE_BYTES)
            .await?;
        match reply.status {
            200 => Ok(reply.body),
            404 if path.contains(".p/") => {
                let full = path.split(".p/").next().unwrap_or(path);
                let url = self.url(&format!("log/{full}"))?;
                let reply = self
                    .get(&url, "application/octet-stream", MAX_TILE_BYTES)
                    .await?;
                match reply.status {
                    200 => Ok(reply.body),
                    s => Err(TlogError::Tile {
                        path: path.to_string(),
                        reason: format!("{url}: HTTP {s}"),
                    }),
                }
            }
            s => Err(TlogError::Tile {
                path: path.to_string(),
                reason: format!("{url}: HTTP {s}"),
            }),
        }
    }

    /// Runs `check` (e.g. `|t| verify_consistency(&old, &new, t)`) against this log's tiles,
    /// fetching what it asks for between rounds, until it needs no tile it does not have.
    pub async fn run<T>(
        &self,
        check: impl Fn(&dyn TileSource) -> Result<T, TlogError>,
    ) -> Result<T, TlogError> {
        let mut fetched_now = 0;
        for _ in 0..MAX_ROUNDS {
            self.lock_wanted().clear();
            let result = check(self);
            let wanted = std::mem::take(&mut *self.lock_wanted());
            if wanted.is_empty() {
                return result;
            }
            fetched_now += wanted.len();
            if fetched_now > self.max_tiles {
                return Err(TlogError::Http {
                    url: self.base.to_string(),
                    reason: format!("the check needs more than {} tiles", self.max_tiles),
                });
            }
            for path in wanted {
                let data = self.fetch(&path).await?;
                self.lock_fetched().insert(path, data);
            }
        }
        Err(TlogError::Http {
            url: self.base.to_string(),
            reason: format!("the check still needed tiles after {MAX_ROUNDS} rounds"),
        })
    }

    fn lock_wanted(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_fetched(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl TileSource for HttpTiles {
    /// A tile fetched by an earlier round of [`HttpTiles::run`], else
    /// [`TlogError::TileNotFetched`] (and the tile is fetched before the next round).
    fn tile(&self, path: &str) -> Result<Vec<u8>, TlogError> {
        if let Some(data) = self.lock_fetched().get(path) {
            return Ok(data.clone());
        }
        self.lock_wanted().insert(path.to_string());
        Err(TlogError::TileNotFetched {
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u8) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                leaf(&format!("{i:02x}").repeat(32), &B64.encode([i; 32]))
                    .expect("leaf")
                    .to_vec()
            })
            .collect()
    }

    fn signer() -> LogSigner {
        LogSigner::from_seed(&[7; 32]).expect("key")
    }

    /// A verified checkpoint of `log`, signed as the aggregator signs.
    fn checkpoint(log: &StaticLog, key: &LogSigner) -> Checkpoint {
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

    #[test]
    fn a_checkpoint_signed_by_the_log_key_verifies_and_names_its_log() {
        let key = signer();
        let note = key.sign(3, &tlog_tiles::EMPTY_HASH.0).expect("sign");
        let mut lines = note.lines();
        assert_eq!(lines.next(), Some(key.origin()));
        assert_eq!(lines.next(), Some("3"));
        assert_eq!(
            lines.next(),
            Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        );
        assert_eq!(lines.next(), Some(""));
        assert!(
            lines
                .next()
                .is_some_and(|l| l.starts_with(&format!("— {} ", key.origin())))
        );
        let c = verify_checkpoint(&note, key.public()).expect("verifies");
        assert_eq!(
            (c.origin.as_str(), c.size, c.root, c.note.as_str()),
            (
                origin_of(key.public()).as_str(),
                3,
                tlog_tiles::EMPTY_HASH.0,
                note.as_str()
            )
        );
        assert!(c.origin.starts_with(ORIGIN_PREFIX));
        assert_eq!(c.origin.len(), ORIGIN_PREFIX.len() + 16);
        // The verifier key round-trips, and is refused when anything in it is changed.
        let vkey = verifier_key(key.public());
        assert!(vkey.starts_with(&format!("{}+", key.origin())));
        assert_eq!(public_of_verifier_key(&vkey), Ok(*key.public()));
        let other = verifier_key(LogSigner::from_seed(&[8; 32]).expect("k").public());
        let mine: Vec<&str> = vkey.splitn(3, '+').collect();
        let theirs: Vec<&str> = other.splitn(3, '+').collect();
        let swapped = format!("{}+{}+{}", mine[0], mine[1], theirs[2]);
        for bad in ["", "a+b+c", "not a key", swapped.as_str()] {
            assert!(public_of_verifier_key(bad).is_err(), "{bad:?}");
        }
        // A cosignature line by another key (a witness) is allowed and ignored.
        let witness = LogSigner::from_seed(&[9; 32]).expect("witness");
        let cosigned = format!(
            "{note}{}",
            witness
                .sign(3, &tlog_tiles::EMPTY_HASH.0)
                .expect("sign")
                .lines()
                .last()
                .map(|l| format!("{l}\n"))
                .expect("a line")
        );
        assert_eq!(cosigned.lines().count(), 6);
        let c = verify_checkpoint(&cosigned, key.public()).expect("still verifies");
        assert_eq!(c.note, cosigned);
        // JSON keeps the root as base64 and reads it back.
        let json = serde_json::to_string(&c).expect("json");
        assert!(json.contains("\"root\":\"47DEQpj8HBSa"), "{json}");
        assert_eq!(serde_json::from_str::<Checkpoint>(&json).expect("back"), c);
    }

    #[test]
    fn an_altered_checkpoint_or_one_of_another_key_does_not_verify() {
        let key = signer();
        let other = LogSigner::from_seed(&[8; 32]).expect("key");
        let note = key.sign(3, &[1; 32]).expect("sign");
        let e = verify_checkpoint(&note, other.public()).expect_err("another key");
        assert!(matches!(e, TlogError::Checkpoint(_)), "{e}");
        for altered in [
            note.replacen("\n3\n", "\n4\n", 1),
            note.replacen(&B64.encode([1u8; 32]), &B64.encode([2u8; 32]), 1),
            note.replacen(key.origin(), other.origin(), 1),
            "not a note".to_string(),
            String::new(),
        ] {
            assert_ne!(altered, note);
            let e = verify_checkpoint(&altered, key.public()).expect_err("altered");
            assert!(matches!(e, TlogError::Checkpoint(_)), "{e}");
        }
        // Signed by the key but for another origin: a name the key does not own.
        let mut forged = Note::new(
            &tlog_tiles::Checkpoint::new("example.com/log", 3, tlog_tiles::Hash([1; 32]), "")
                .expect("checkpoint")
                .to_bytes(),
            &[],
        )
        .expect("note");
        forged.add_sigs(&[&key.signer]).expect("sign");
        let forged = String::from_utf8(forged.to_bytes()).expect("utf-8");
        let e = verify_checkpoint(&forged, key.public()).expect_err("other origin");
        assert!(matches!(e, TlogError::WrongOrigin { .. }), "{e}");
        // A size no log has is refused before any arithmetic on it.
        let absurd = key.sign(u64::MAX, &[1; 32]).expect("sign");
        let e = verify_checkpoint(&absurd, key.public()).expect_err("absurd");
        assert!(e.to_string().contains("more than any log"), "{e}");
        assert!(
            verify_checkpoint(
                &key.sign(MAX_TREE_SIZE, &[1; 32]).expect("sign"),
                key.public()
            )
            .is_ok()
        );
    }

    #[test]
    fn an_inclusion_proof_verifies_and_a_changed_leaf_index_or_proof_does_not() {
        let key = signer();
        let all = leaves(70);
        let log = StaticLog::from_leaves(&all).expect("log");
        let cp = checkpoint(&log, &key);
        for i in [0u64, 1, 37, 63, 64, 69] {
            let proof = log.prove(i, log.size).expect("proof");
            verify_inclusion(&all[i as usize], i, &proof, &cp).expect("included");
        }
        let i = 37u64;
        let proof = log.prove(i, log.size).expect("proof");
        let leaf = &all[i as usize];
        let mut changed = leaf.clone();
        changed[5] ^= 1;
        let mut bent = proof.clone();
        bent[2][0] ^= 1;
        let short = proof[..proof.len() - 1].to_vec();
        let mut long = proof.clone();
        long.push([0; 32]);
        let (leaf, proof) = (leaf.as_slice(), proof.as_slice());
        let cases: Vec<(&[u8], u64, &[Hash])> = vec![
            (changed.as_slice(), i, proof),
            (all[36].as_slice(), i, proof),
            (leaf, i + 1, proof),
            (leaf, i - 1, proof),
            (leaf, log.size, proof),
            (leaf, u64::MAX, proof),
            (leaf, i, bent.as_slice()),
            (leaf, i, short.as_slice()),
            (leaf, i, long.as_slice()),
            (leaf, i, &[]),
        ];
        for (n, (l, index, p)) in cases.into_iter().enumerate() {
            let e = verify_inclusion(l, index, p, &cp).expect_err("not proven");
            assert!(
                matches!(e, TlogError::Inclusion { index: x, size: 70, .. } if x == index),
                "case {n}: {e}"
            );
        }
        // A proof against an earlier tree does not verify against the later root.
        let early = log.prove(i, 40).expect("proof");
        assert!(verify_inclusion(leaf, i, &early, &cp).is_err());
        let too_long = vec![[0u8; 32]; 65];
        assert!(verify_inclusion(leaf, i, &too_long, &cp).is_err());
    }

    #[test]
    fn a_tree_built_from_the_same_leaves_is_consistent_and_one_rewritten_is_not() {
        let key = signer();
        let all = leaves(200);
        let grown = StaticLog::from_leaves(&all[..]).expect("log");
        let grown_cp = checkpoint(&grown, &key);
        for old_size in [0usize, 1, 2, 3, 7, 8, 100, 199, 200] {
            let old = StaticLog::from_leaves(&all[..old_size]).expect("log");
            let old_cp = checkpoint(&old, &key);
            verify_consistency(&old_cp, &grown_cp, &grown.tiles)
                .unwrap_or_else(|e| panic!("{old_size}: {e}"));
        }
        // Across a full tile: the tree of 600 extends the trees of 256 and of 300.
        let many: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_be_bytes().repeat(16)).collect();
        let big = StaticLog::from_leaves(&many).expect("log");
        let big_cp = checkpoint(&big, &key);
        for old_size in [255usize, 256, 300, 512, 599] {
            let old = StaticLog::from_leaves(&many[..old_size]).expect("log");
            verify_consistency(&checkpoint(&old, &key), &big_cp, &big.tiles)
                .unwrap_or_else(|e| panic!("{old_size}: {e}"));
        }

        let old = StaticLog::from_leaves(&all[..100]).expect("log");
        let old_cp = checkpoint(&old, &key);
        // The operator rebuilt the log from the same measurements with one deleted, one
        // altered, or two in another order: each new tree is signed correctly and served
        // with its own tiles, and none extends the tree the probe saw.
        let mut deleted = all.clone();
        deleted.remove(40);
        let mut altered = all.clone();
        altered[40][3] ^= 1;
        let mut swapped = all.clone();
        swapped.swap(10, 11);
        let mut late_swap = all.clone();
        late_swap.swap(98, 99);
        let mut last_deleted = all.clone();
        last_deleted.remove(99);
        for (name, rebuilt) in [
            ("deleted", deleted),
            ("altered", altered),
            ("swapped", swapped),
            ("swapped last two", late_swap),
            ("last deleted", last_deleted),
        ] {
            let forked = StaticLog::from_leaves(&rebuilt).expect("log");
            let forked_cp = checkpoint(&forked, &key);
            let e = verify_consistency(&old_cp, &forked_cp, &forked.tiles).expect_err(name);
            assert!(
                matches!(e, TlogError::Inconsistent { old_size: 100, .. }),
                "{name}: {e}"
            );
            // The later tree itself verifies: its tiles give its root.
            entries(&forked_cp, 0, forked.size, &forked.tiles).expect("its own entries");
        }
        // Same size, another root: a fork. Smaller: a shrunk log.
        let mut other = all[..100].to_vec();
        other[0][0] ^= 1;
        let fork = StaticLog::from_leaves(&other).expect("log");
        let e =
            verify_consistency(&old_cp, &checkpoint(&fork, &key), &fork.tiles).expect_err("fork");
        assert!(e.to_string().contains("a fork"), "{e}");
        let small = StaticLog::from_leaves(&all[..99]).expect("log");
        let e = verify_consistency(&old_cp, &checkpoint(&small, &key), &small.tiles)
            .expect_err("shrunk");
        assert!(e.to_string().contains("the log shrank"), "{e}");
        // Tiles that are not the checkpoint's: refused as such, not taken for a fork.
        let forged_tiles = StaticLog::from_leaves(&all[..199]).expect("log").tiles;
        let e = verify_consistency(&old_cp, &grown_cp, &forged_tiles).expect_err("tiles");
        assert!(
            matches!(e, TlogError::BadTiles { .. } | TlogError::Tile { .. }),
            "{e}"
        );
        let mut bent = grown.tiles.clone();
        bent.get_mut("tile/0/000.p/200").expect("the tile")[0] ^= 1;
        let e = verify_consistency(&old_cp, &grown_cp, &bent).expect_err("tiles");
        assert!(matches!(e, TlogError::BadTiles { size: 200, .. }), "{e}");
        // Two logs.
        let other_key = LogSigner::from_seed(&[8; 32]).expect("key");
        let e = verify_consistency(&old_cp, &checkpoint(&grown, &other_key), &grown.tiles)
            .expect_err("two logs");
        assert!(matches!(e, TlogError::OtherLog { .. }), "{e}");
    }

    #[test]
    fn entries_are_read_from_the_bundles_and_checked_against_the_root() {
        let key = signer();
        let many: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_be_bytes().repeat(16)).collect();
        let log = StaticLog::from_leaves(&many).expect("log");
        let cp = checkpoint(&log, &key);
        assert_eq!(entries(&cp, 0, 600, &log.tiles).expect("all"), many);
        assert_eq!(
            entries(&cp, 250, 520, &log.tiles).expect("some"),
            many[250..520].to_vec()
        );
        assert!(entries(&cp, 5, 5, &log.tiles).expect("none").is_empty());
        assert!(matches!(
            entries(&cp, 10, 601, &log.tiles),
            Err(TlogError::Range { .. })
        ));
        assert!(matches!(
            entries(&cp, 10, 9, &log.tiles),
            Err(TlogError::Range { .. })
        ));
        let huge = Checkpoint {
            size: MAX_TREE_SIZE,
            ..cp.clone()
        };
        assert!(matches!(
            entries(&huge, 0, MAX_ENTRIES_AT_ONCE + 1, &log.tiles),
            Err(TlogError::Range { .. })
        ));
        // An entry rewritten in its bundle (but not in the hashes) is caught.
        let mut bent = log.tiles.clone();
        bent.get_mut("tile/entries/001").expect("the bundle")[2 + 66 * 3] ^= 1;
        let e = entries(&cp, 256, 300, &bent).expect_err("rewritten");
        assert!(e.to_string().contains("entry 259"), "{e}");
        entries(&cp, 0, 256, &bent).expect("the first bundle is intact");
        // A cut bundle is refused, not read past its end.
        let mut cut = log.tiles.clone();
        cut.get_mut("tile/entries/002.p/88")
            .expect("the bundle")
            .truncate(100);
        assert!(matches!(
            entries(&cp, 512, 600, &cut),
            Err(TlogError::Tile { .. })
        ));
        // A checkpoint of a smaller tree reads the partial tiles of its own width from a full
        // one (a server may serve the full tile in place of a partial one).
        let small = StaticLog::from_leaves(&many[..300]).expect("log");
        let small_cp = checkpoint(&small, &key);
        let mut widened: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (path, data) in &log.tiles {
            widened.insert(path.clone(), data.clone());
        }
        widened.insert(
            "tile/0/001.p/44".into(),
            log.tiles.get("tile/0/001").expect("full").clone(),
        );
        widened.insert(
            "tile/1/000.p/1".into(),
            log.tiles.get("tile/1/000.p/2").expect("wider").clone(),
        );
        widened.insert(
            "tile/entries/001.p/44".into(),
            log.tiles.get("tile/entries/001").expect("full").clone(),
        );
        assert_eq!(
            entries(&small_cp, 0, 300, &widened).expect("read"),
            many[..300].to_vec()
        );
    }

    #[test]
    fn tile_paths_are_c2sp_spellings() {
        assert_eq!(tile_path(Some(0), 0, 256), "tile/0/000");
        assert_eq!(tile_path(Some(0), 1, 5), "tile/0/001.p/5");
        assert_eq!(tile_path(Some(2), 1_234_067, 256), "tile/2/x001/x234/067");
        assert_eq!(tile_path(None, 1000, 256), "tile/entries/x001/000");
        assert_eq!(tile_path(None, 0, 1), "tile/entries/000.p/1");
        assert_eq!(
            tile_path(Some(0), u64::MAX, 256),
            "tile/0/x018/x446/x744/x073/x709/x551/615"
        );
        let dir = std::env::temp_dir().join(format!("vantage-tlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tile/0/000.p")).expect("dir");
        std::fs::write(dir.join("tile/0/000.p/1"), [1u8; 32]).expect("write");
        let tiles = DirTiles(dir.clone());
        assert_eq!(tiles.tile("tile/0/000.p/1").expect("read"), vec![1u8; 32]);
        assert!(tiles.tile("tile/0/001").is_err());
        assert!(tiles.tile("tile/../../etc/passwd").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A log served over HTTP on loopback by a minimal server holding a StaticLog: HttpTiles
    /// fetches what the checks ask for, in rounds.
    #[tokio::test]
    async fn http_tiles_fetch_what_a_check_needs() {
        use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
        let key = signer();
        let many: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().repeat(16)).collect();
        let log = StaticLog::from_leaves(&many).expect("log");
        let old = StaticLog::from_leaves(&many[..10]).expect("log");
        let cp = checkpoint(&log, &key);
        let old_cp = checkpoint(&old, &key);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = std::sync::Arc::new(log.tiles.clone());
        let note = cp.note.clone();
        let requests = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (served, note, seen) = (served.clone(), note.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    loop {
                        let mut h = String::new();
                        match stream.read_line(&mut h).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) if h == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    seen.lock().expect("lock").push(path.clone());
                    let (status, body) = match path.strip_prefix("/log/") {
                        Some("checkpoint") => ("200 OK", note.into_bytes()),
                        Some(p) => match served.get(p) {
                            Some(b) => ("200 OK", b.clone()),
                            None => ("404 Not Found", Vec::new()),
                        },
                        None => ("404 Not Found", Vec::new()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let s = stream.get_mut();
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        let base = Url::parse(&format!("http://{addr}/")).expect("url");
        let tls = TlsContext::new(Vec::new()).expect("tls");
        let http = HttpTiles::new(&base, &EngineConfig::default(), &tls, None);
        let note = http.checkpoint().await.expect("fetched").expect("a log");
        let fetched = verify_checkpoint(&note, key.public()).expect("verifies");
        assert_eq!(fetched, cp);
        http.run(|t| verify_consistency(&old_cp, &fetched, t))
            .await
            .expect("consistent");
        let got = http
            .run(|t| entries(&fetched, 250, 300, t))
            .await
            .expect("entries");
        assert_eq!(got, many[250..300].to_vec());
        let asked = requests.lock().expect("lock").clone();
        assert!(asked.contains(&"/log/tile/0/000".to_string()), "{asked:?}");
        assert!(
            asked.contains(&"/log/tile/entries/001.p/44".to_string()),
            "{asked:?}"
        );
        // A tile asked for twice is fetched once.
        let mut sorted = asked.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), asked.len(), "{asked:?}");
        // A tree the server does not have the tiles of fails with the tile's path.
        let bigger = StaticLog::from_leaves(&[many.clone(), many.clone()].concat()).expect("log");
        let e = http
            .run(|t| verify_consistency(&old_cp, &checkpoint(&bigger, &key), t))
            .await
            .expect_err("not served");
        assert!(e.to_string().contains("HTTP 404"), "{e}");
        // A proof asked of a server that has none: 404 is "not logged".
        let answer = http.proof(&"ab".repeat(32)).await.expect("an answer");
        assert!(matches!(answer, ProofAnswer::NotLogged(_)), "{answer:?}");
        assert!(http.proof("../../etc").await.is_err());
    }
}
