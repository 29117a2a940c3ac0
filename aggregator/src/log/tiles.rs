//! C2SP tlog-tiles paths and bytes: `tile/<L>/<N>[.p/<W>]` (hashes of level `L`, tiles of
//! height 8) and `tile/entries/<N>[.p/<W>]` (entry bundles). `<L>` is 0 to 63 without leading
//! zeros; `<N>` is written in 3-digit groups, all but the last prefixed with `x`
//! (1234067 is `x001/x234/067`); `<W>`, for a partial tile only, is 1 to 255 without leading
//! zeros. A path is read only in its one canonical spelling, so that each tile has one
//! address (and one cache entry).
//!
//! A tile's hashes are read from the stored hashes through `tlog_tiles::Tile::read_data`; an
//! entry bundle is each leaf prefixed with its length as a big-endian uint16.

use tlog_tiles::Tile;

use super::{LogError, Reader, TILE_HEIGHT};
use crate::store::log::LogStore;

/// Hashes, or entries, per full tile.
pub const TILE_WIDTH: u32 = 1 << TILE_HEIGHT;

/// The longest tile path read (past `tile/`): `entries/` and 7 groups and `.p/255` are 43.
const MAX_PATH: usize = 64;

/// A tile path that is not one C2SP tlog-tiles defines, or not in its canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tile/{path}: {reason}")]
pub struct BadTilePath {
    /// The path after `tile/`, cut to its first 64 bytes.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One tile of the log: hashes of a level, or a bundle of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePath {
    /// The level; `None` for an entry bundle.
    pub level: Option<u8>,
    /// The tile's index within its level.
    pub index: u64,
    /// Hashes or entries in it: [`TILE_WIDTH`] for a full tile, fewer for a partial one.
    pub width: u32,
}

/// A decimal number with no sign and no leading zero, as the spec writes `<L>` and `<W>`.
fn plain_number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 3
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// Parses the part of a tile path after `tile/`.
pub fn parse(path: &str) -> Result<TilePath, BadTilePath> {
    let bad = |reason| BadTilePath {
        path: path.chars().take(MAX_PATH).collect(),
        reason,
    };
    if path.len() > MAX_PATH {
        return Err(bad("longer than any tile path"));
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    let level = match parts.first() {
        Some(&"entries") => None,
        Some(l) => match plain_number(l) {
            Some(l) if l <= 63 => Some(u8::try_from(l).map_err(|_| bad("level above 63"))?),
            _ => {
                return Err(bad(
                    "the level is 0 to 63 without leading zeros, or `entries`",
                ));
            }
        },
        None => return Err(bad("empty")),
    };
    parts.remove(0);
    let mut width = TILE_WIDTH;
    if parts.len() >= 2 && parts[parts.len() - 2].ends_with(".p") {
        let w = parts.pop().and_then(plain_number);
        width = match w {
            Some(w) if (1..u64::from(TILE_WIDTH)).contains(&w) => {
                u32::try_from(w).map_err(|_| bad("width"))?
            }
            _ => {
                return Err(bad(
                    "a partial tile's width is 1 to 255 without leading zeros",
                ));
            }
        };
        let last = parts.len() - 1;
        parts[last] = parts[last].trim_end_matches(".p");
    }
    if parts.is_empty() || parts.len() > 7 {
        return Err(bad("the index is 1 to 7 groups of 3 digits"));
    }
    let mut index: u64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let digits = if i + 1 < parts.len() {
            part.strip_prefix('x')
                .ok_or_else(|| bad("every group of the index but the last starts with x"))?
        } else {
            part
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the index is written in groups of 3 digits"));
        }
        let group: u64 = digits.parse().map_err(|_| bad("digits"))?;
        index = index
            .checked_mul(1000)
            .and_then(|n| n.checked_add(group))
            .ok_or_else(|| bad("the index is beyond any log"))?;
    }
    let tile = TilePath {
        level,
        index,
        width,
    };
    // One spelling per tile: `x000/005` is `005`.
    if tile.path() != path {
        return Err(bad("not the canonical spelling of this tile"));
    }
    Ok(tile)
}

impl TilePath {
    /// Whether it is a full tile, which never changes (a partial one is replaced by wider
    /// ones, and at last by the full one).
    pub fn is_full(&self) -> bool {
        self.width == TILE_WIDTH
    }

    /// `tlog_tiles`' tile (Go's `tile/H/L/N` with height 8, `data` for entries).
    fn tile(&self) -> Tile {
        Tile::new(
            TILE_HEIGHT,
            self.level.unwrap_or(0),
            self.index,
            self.width,
            self.level.is_none(),
        )
    }

    /// Its path after `tile/`, in C2SP's spelling.
    pub fn path(&self) -> String {
        // Go's path, `tile/8/<L or data>/<N>[.p/<W>]`, differs only in its first two parts.
        let go = self.tile().path();
        let rest = go.splitn(4, '/').nth(3).unwrap_or_default();
        match self.level {
            Some(l) => format!("{l}/{rest}"),
            None => format!("entries/{rest}"),
        }
    }

    /// How many leaves the log must hold for this tile to exist; `None` beyond any log.
    pub fn leaves_needed(&self) -> Option<u64> {
        let last = self
            .index
            .checked_mul(u64::from(TILE_WIDTH))?
            .checked_add(u64::from(self.width))?;
        let span = u64::from(TILE_WIDTH).checked_pow(u32::from(self.level.unwrap_or(0)))?;
        last.checked_mul(span)
    }

    /// Its bytes in a log of `size` leaves; `None` when the log is not that large yet.
    pub fn read(&self, log: &dyn LogStore, size: u64) -> Result<Option<Vec<u8>>, LogError> {
        match self.leaves_needed() {
            Some(needed) if needed <= size => {}
            _ => return Ok(None),
        }
        if self.level.is_none() {
            let first = self.index * u64::from(TILE_WIDTH);
            let leaves = log.leaves(first, u64::from(self.width))?;
            let mut bundle = Vec::with_capacity(leaves.iter().map(|l| l.len() + 2).sum());
            for leaf in leaves {
                let len = u16::try_from(leaf.len()).map_err(|_| LogError::Tree {
                    op: format!("entry bundle {}", self.path()),
                    source: tlog_tiles::Error::InvalidTile,
                })?;
                bundle.extend_from_slice(&len.to_be_bytes());
                bundle.extend_from_slice(&leaf);
            }
            return Ok(Some(bundle));
        }
        let reader = Reader::new(log);
        let data = self.tile().read_data(&reader);
        reader
            .result(data, || format!("tile {}", self.path()))
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_read_in_their_one_spelling() {
        let t = |level, index, width| TilePath {
            level,
            index,
            width,
        };
        for (path, tile) in [
            ("0/000", t(Some(0), 0, 256)),
            ("0/001.p/5", t(Some(0), 1, 5)),
            ("2/x001/x234/067", t(Some(2), 1_234_067, 256)),
            ("2/x001/x234/067.p/255", t(Some(2), 1_234_067, 255)),
            ("63/999", t(Some(63), 999, 256)),
            ("entries/000.p/1", t(None, 0, 1)),
            ("entries/x001/000", t(None, 1000, 256)),
            (
                "0/x018/x446/x744/x073/x709/x551/615",
                t(Some(0), u64::MAX, 256),
            ),
        ] {
            assert_eq!(parse(path), Ok(tile), "{path}");
            assert_eq!(tile.path(), path);
        }
    }

    #[test]
    fn nonsense_and_other_spellings_are_refused() {
        for path in [
            "",
            "/",
            "0",
            "0/",
            "00/000",
            "01/000",
            "64/000",
            "256/000",
            "-1/000",
            "+0/000",
            "x/000",
            "data/000",
            "Entries/000",
            "0/0",
            "0/0000",
            "0/00a",
            "0/x000/005",
            "0/001/002",
            "0/x1/002",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/05",
            "0/000.p/",
            "0/000.p",
            "0/000.q/5",
            "0/000/.p/5",
            "0/000.p/5/6",
            "0/x018/x446/x744/x073/x709/x551/616",
            "0/x001/x001/x001/x001/x001/x001/x001/001",
            "0/000?x=1",
            "0/../000",
            "0/٠٠٠",
        ] {
            assert!(parse(path).is_err(), "{path:?} was read");
        }
        let long = format!("0/{}000", "x000/".repeat(100));
        assert_eq!(
            parse(&long).expect_err("long").reason,
            "longer than any tile path"
        );
    }

    #[test]
    fn a_tile_exists_once_the_log_holds_every_leaf_under_it() {
        let t = |level, index, width| TilePath {
            level,
            index,
            width,
        };
        assert_eq!(t(Some(0), 0, 1).leaves_needed(), Some(1));
        assert_eq!(t(Some(0), 1, 256).leaves_needed(), Some(512));
        assert_eq!(t(Some(1), 0, 3).leaves_needed(), Some(768));
        assert_eq!(t(None, 2, 10).leaves_needed(), Some(522));
        assert_eq!(t(Some(8), 0, 1).leaves_needed(), None, "past 2^64");
        assert_eq!(t(Some(0), u64::MAX, 256).leaves_needed(), None);
    }
}
