//! The checks of a log's tree against its checkpoints: inclusion of a leaf (RFC 9162 section
//! 2.1.3.2), consistency of a later tree with an earlier one (section 2.1.4), and the leaves of a
//! range read from the entry bundles, each checked against the root.

use tlog_tiles::TileHashReader;

use super::tiles::Reader;
use super::{
    Checkpoint, Hash, MAX_ENTRIES_AT_ONCE, MAX_PROOF_HASHES, TILE_WIDTH, TileSource, TlogError,
    tile_path,
};

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

/// Checks that the tree of `new` extends the tree of `old` (RFC 9162 section 2.1.4), with a
/// consistency proof computed from `new`'s tiles, each checked against `new`'s root. `Ok` when
/// `old`'s tree is a prefix of `new`'s. [`TlogError::Inconsistent`] for a fork, a rewritten,
/// deleted or reordered leaf, a checkpoint of the same size with another root, and a smaller
/// one (a shrunk log); [`TlogError::BadTiles`] when the tiles served are not those of `new`;
/// [`TlogError::OtherLog`] for checkpoints of two logs. Both checkpoints must have been
/// verified ([`verify_checkpoint`](super::verify_checkpoint)).
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;

    use super::*;
    use crate::tlog::tests::{checkpoint, signer};
    use crate::tlog::{LogSigner, MAX_TREE_SIZE, StaticLog, leaf};

    fn leaves(n: u8) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                leaf(&format!("{i:02x}").repeat(32), &B64.encode([i; 32]))
                    .expect("leaf")
                    .to_vec()
            })
            .collect()
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
}
