//! Where the tiles of a log come from and how they are named: the [`TileSource`] trait and its
//! map and directory sources, C2SP tlog-tiles paths ([`tile_path`]), the reader `tlog_tiles`
//! reads tiles through, and [`StaticLog`], a whole log held in memory.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use tlog_tiles::{HashReader, Tile, TileReader};

use super::{Hash, MAX_TILE_BYTES, TILE_HEIGHT, TILE_WIDTH, TlogError, b64};

/// Where tiles come from: an HTTP client against `<base>/log/` ([`HttpTiles`](super::HttpTiles)), a directory
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
/// even after one failed, so that [`HttpTiles`](super::HttpTiles) learns all it has to fetch in one round.
pub(super) struct Reader<'a> {
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
    pub(super) fn new(source: &'a dyn TileSource) -> Self {
        Reader {
            source,
            failed: std::cell::RefCell::new(None),
        }
    }

    /// The error of a `tlog_tiles` call that read through this reader: the source's when that
    /// is why it failed, [`TlogError::BadTiles`] when the tiles do not give the tree's root.
    pub(super) fn error(
        &self,
        e: tlog_tiles::Error,
        size: u64,
        root: &Hash,
        op: &str,
    ) -> TlogError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
