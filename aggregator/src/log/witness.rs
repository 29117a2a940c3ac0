//! A witness of another aggregator's transparency log (`vantage-aggregator witness`,
//! `docs/transparency.md` "Witnesses"): run by another organisation, it fetches the log's
//! latest checkpoint, checks its signature by the log's key, checks that it extends the last
//! checkpoint this witness cosigned (a consistency proof computed from the log's tiles,
//! RFC 9162 section 2.1.4), and only then cosigns it (C2SP tlog-cosignature/v1) and submits
//! the cosignature to the log (`POST /log/cosignature`), which serves it with the checkpoint.
//!
//! It keeps what C2SP tlog-witness asks a witness to keep: the latest checkpoint it cosigned
//! for the log, in a state file written atomically (a temporary file in the same directory,
//! synced, then renamed over the old one) before the cosignature is given out. A checkpoint
//! that does not extend it (a fork, a deleted, altered or reordered leaf, a log that shrank)
//! is never cosigned: the round fails with [`WitnessError::Refused`], which names both
//! checkpoints, and both notes are kept as evidence in a file beside the state. The state is
//! left as it was, so that every later round refuses the rewritten log again.
//!
//! Every check is `vantage_probe::tlog`'s, the one implementation every verifier of the log
//! uses; the cosignature is `super::note`'s.

use std::path::{Path, PathBuf};

use url::Url;
use vantage_probe::engine::{EngineConfig, TlsContext, Trace, client};
use vantage_probe::tlog::{self, Checkpoint, HttpTiles, TlogError};

use super::note::{CosignatureError, WitnessKey, WitnessVerifier, cosignatures_on};

/// What a witness keeps of a log: the last checkpoint it cosigned, and the cosignature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// The checkpoint cosigned, as the log served it (its note included).
    pub checkpoint: Checkpoint,
    /// When it was cosigned, seconds since the epoch (the cosignature's timestamp).
    pub cosigned_at: u64,
    /// The cosignature line given.
    pub cosignature: String,
}

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// The checkpoint served was checked and cosigned, and the cosignature submitted.
    Cosigned {
        /// Its size.
        size: u64,
        /// The size of the checkpoint it was checked against (`None`: the first one this
        /// witness saw of the log, taken on trust).
        from: Option<u64>,
    },
    /// The checkpoint served is the one cosigned last, and the log serves it with this
    /// witness's cosignature: nothing to do.
    Unchanged {
        /// Its size.
        size: u64,
    },
    /// The checkpoint served is the one cosigned last, but without the cosignature: it was
    /// submitted again.
    Resubmitted {
        /// Its size.
        size: u64,
    },
}

/// Why a round cosigned nothing.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The log is not append-only: the checkpoint it serves does not extend the one this
    /// witness cosigned. Nothing is cosigned, now or later, until an operator looks.
    #[error(
        "REFUSED to cosign: {reason}\n  last cosigned: {old}\n  served now:    {new}\n  \
         both checkpoints are kept in {evidence}"
    )]
    Refused {
        /// The checkpoint last cosigned.
        old: Box<Checkpoint>,
        /// The checkpoint served now.
        new: Box<Checkpoint>,
        /// What the check found.
        reason: String,
        /// The file the evidence was written to.
        evidence: String,
    },
    /// The log could not be checked this round (unreachable, no checkpoint, a checkpoint not
    /// signed by its key, tiles that do not give the checkpoint's root).
    #[error("{log}: {source}")]
    Log {
        /// The log's base URL.
        log: String,
        /// What failed.
        source: TlogError,
    },
    /// The log serves no checkpoint (404: no log, or none published yet).
    #[error("{0}: the log serves no checkpoint (yet)")]
    NoCheckpoint(String),
    /// The state file could not be read or written.
    #[error("witness state {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The cosignature could not be made.
    #[error(transparent)]
    Cosign(#[from] CosignatureError),
    /// The log did not take the cosignature.
    #[error("submitting the cosignature to {url}: {reason}")]
    Submit {
        /// Where.
        url: String,
        /// Its answer, or why there was none.
        reason: String,
    },
}

/// A witness of one log.
pub struct Witness {
    log: Url,
    public: [u8; 32],
    key: WitnessKey,
    state: PathBuf,
    engine: EngineConfig,
    tls: TlsContext,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Witness({} of {})", self.key.name(), self.log)
    }
}

/// The most bytes of an answer to a submitted cosignature read.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Witness {
    /// The witness `key` of the log at `log` (the aggregator's base URL) whose checkpoints
    /// `public` signs, keeping its state in the file `state`, fetching with `tls`'s roots.
    pub fn new(
        log: &Url,
        public: [u8; 32],
        key: WitnessKey,
        state: &Path,
        tls: TlsContext,
    ) -> Self {
        let mut log = log.clone();
        // Routes are joined below the base: `http://host/agg` must read as `http://host/agg/`.
        if !log.path().ends_with('/') {
            let path = format!("{}/", log.path());
            log.set_path(&path);
        }
        Witness {
            log,
            public,
            key,
            state: state.to_path_buf(),
            engine: EngineConfig::default(),
            tls,
        }
    }

    /// The log's origin, derived from its key.
    pub fn origin(&self) -> String {
        tlog::origin_of(&self.public)
    }

    /// The state kept: the last checkpoint cosigned, if any.
    pub fn state(&self) -> Result<Option<State>, WitnessError> {
        read_state(&self.state)
    }

    fn log_error(&self, source: TlogError) -> WitnessError {
        WitnessError::Log {
            log: self.log.to_string(),
            source,
        }
    }

    /// One round: fetch, check, cosign and submit (see the module doc).
    pub async fn round(&self) -> Result<Round, WitnessError> {
        // A fresh tile cache each round: partial tiles grow with the log.
        let tiles = HttpTiles::new(&self.log, &self.engine, &self.tls, None);
        let note = tiles
            .checkpoint()
            .await
            .map_err(|e| self.log_error(e))?
            .ok_or_else(|| WitnessError::NoCheckpoint(self.log.to_string()))?;
        let new = tlog::verify_checkpoint(&note, &self.public).map_err(|e| self.log_error(e))?;
        let state = self.state()?;
        if let Some(last) = &state {
            if last.checkpoint.size == new.size && last.checkpoint.root == new.root {
                let mine = WitnessVerifier::parse(&self.key.verifier_key())?;
                if cosignatures_on(&note, &[mine]).is_ok_and(|c| !c.is_empty()) {
                    return Ok(Round::Unchanged { size: new.size });
                }
                self.submit(&last.cosignature, new.size).await?;
                return Ok(Round::Resubmitted { size: new.size });
            }
            let checked = tiles
                .run(|t| tlog::verify_consistency(&last.checkpoint, &new, t))
                .await;
            match checked {
                Ok(()) => {}
                Err(e @ (TlogError::Inconsistent { .. } | TlogError::OtherLog { .. })) => {
                    return Err(self.refuse(&last.checkpoint, &new, &e.to_string()));
                }
                Err(e) => return Err(self.log_error(e)),
            }
        }
        // Kept before it is given out (C2SP tlog-witness: "MUST persist the new checkpoint
        // before responding"), so that no later round can cosign a tree this one excludes.
        let timestamp = now();
        let cosignature = self.key.cosign(&note, timestamp)?;
        let size = new.size;
        write_state(
            &self.state,
            &State {
                checkpoint: new,
                cosigned_at: timestamp,
                cosignature: cosignature.clone(),
            },
        )?;
        self.submit(&cosignature, size).await?;
        Ok(Round::Cosigned {
            size,
            from: state.map(|s| s.checkpoint.size),
        })
    }

    /// Keeps both checkpoints in a file beside the state and says why nothing is cosigned.
    fn refuse(&self, old: &Checkpoint, new: &Checkpoint, reason: &str) -> WitnessError {
        let evidence = PathBuf::from(format!("{}.refused-{}.txt", self.state.display(), now()));
        let text = format!(
            "vantage-aggregator witness {} REFUSED to cosign a checkpoint of {} ({}):\n{reason}\n\n\
             The last checkpoint cosigned:\n{}\nThe checkpoint served, which does not extend it:\n{}",
            self.key.name(),
            self.log,
            self.origin(),
            old.note,
            new.note
        );
        let evidence = match std::fs::write(&evidence, text) {
            Ok(()) => evidence.display().to_string(),
            Err(e) => format!("(none: {}: {e})", evidence.display()),
        };
        WitnessError::Refused {
            old: Box::new(old.clone()),
            new: Box::new(new.clone()),
            reason: reason.to_string(),
            evidence,
        }
    }

    /// `POST /log/cosignature?size=N` with the line.
    async fn submit(&self, line: &str, size: u64) -> Result<(), WitnessError> {
        let url = self
            .log
            .join(&format!("log/cosignature?size={size}"))
            .map_err(|e| WitnessError::Submit {
                url: self.log.to_string(),
                reason: e.to_string(),
            })?;
        let fail = |reason: String| WitnessError::Submit {
            url: url.to_string(),
            reason,
        };
        let mut call = client::Call::post(
            &url,
            line.as_bytes().to_vec(),
            "text/plain",
            "application/json",
        );
        call.body_cap = MAX_ANSWER_BYTES;
        let reply = client::send(call, &self.engine, &self.tls, &Trace::new())
            .await
            .map_err(|e| fail(format!("{}: {e}", e.failure())))?;
        if reply.status == 200 {
            return Ok(());
        }
        let said = vantage_probe::printable::one_line(&String::from_utf8_lossy(&reply.body), 300);
        let hint = if reply.status == 403 {
            format!(
                " (start the aggregator with --witness {})",
                self.key.verifier_key()
            )
        } else {
            String::new()
        };
        Err(fail(format!("HTTP {}: {said}{hint}", reply.status)))
    }
}

/// The state in `path`; `None` when there is no file yet.
pub fn read_state(path: &Path) -> Result<Option<State>, WitnessError> {
    let err = |reason: String| WitnessError::State {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| err(format!("not a witness state: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Writes `state` to `path` atomically: a crash leaves the old state or the new one, never a
/// mix (a temporary file in the same directory, synced to disk, renamed over `path`, and the
/// directory synced so that the rename itself is durable).
pub fn write_state(path: &Path, state: &State) -> Result<(), WitnessError> {
    use std::io::Write as _;
    let err = |reason: String| WitnessError::State {
        path: path.display().to_string(),
        reason,
    };
    let json = serde_json::to_vec_pretty(state).map_err(|e| err(e.to_string()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| err("not a file name".into()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file =
        std::fs::File::create(&tmp).map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    file.write_all(&json)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(|e| err(format!("{}: {e}", tmp.display())))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_replaced_whole_and_read_back() {
        let dir = std::env::temp_dir().join(format!("vantage-witness-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        assert_eq!(read_state(&path).expect("none yet"), None);
        let key = super::super::LogKey::from_seed(&[3; 32]).expect("key");
        let public = ed25519_dalek::SigningKey::from_bytes(&[3; 32])
            .verifying_key()
            .to_bytes();
        let note = key.sign(0, tlog_tiles::EMPTY_HASH).expect("sign");
        let checkpoint = tlog::verify_checkpoint(&note, &public).expect("verifies");
        let state = State {
            checkpoint,
            cosigned_at: 7,
            cosignature: "— w x\n".into(),
        };
        write_state(&path, &state).expect("write");
        write_state(&path, &state).expect("write over");
        assert_eq!(read_state(&path).expect("read"), Some(state));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(read_state(&path), Err(WitnessError::State { .. })));
        std::fs::remove_dir_all(&dir).ok();
    }
}
