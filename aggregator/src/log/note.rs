//! The log's name and signature: checkpoints (C2SP tlog-checkpoint) are signed notes (C2SP
//! signed-note) signed with the aggregator's own Ed25519 key, the one `serve --key` names and
//! test lists are signed with (`vantage_probe::envelope::Identity`).
//!
//! The origin, the checkpoint's first line and the key's name, is derived from the key alone:
//! `vantage.invalid/` and the first 16 hex digits of the SHA-256 of the 32-byte public key. It
//! is a stable name that no other log shares without the same key, and `.invalid` (RFC 2606)
//! says it is no address to fetch from. The key ID is signed-note's: the first 4 bytes of
//! SHA-256(name, newline, 0x01, public key).
//!
//! One key signs two kinds of message: test lists (an envelope's signature covers JSON) and
//! checkpoints (whose text starts with the origin line, never JSON), so neither signature can
//! be taken for the other.
//!
//! The names, the signing and the checking are `vantage_probe::tlog`'s, the module every
//! verifier of the log uses (the probe, `vantage verify`, witnesses, mirrors): one
//! implementation, so the aggregator cannot sign what they would read differently.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tlog_tiles::{Checkpoint, Hash};
use vantage_probe::tlog::{self, LogSigner};

use super::LogError;

/// The prefix of every Vantage log's origin.
pub use vantage_probe::tlog::ORIGIN_PREFIX;

/// The origin of the log whose checkpoints `public` signs (`vantage_probe::tlog`, which every
/// verifier of the log uses too).
pub use vantage_probe::tlog::origin_of;

/// The aggregator's log identity: its origin and the key that signs its checkpoints. The
/// signing is `vantage_probe::tlog::LogSigner`'s, so what is signed here is what the probe,
/// `vantage verify`, witnesses and mirrors check, with one implementation.
pub struct LogKey {
    signer: LogSigner,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey({})", self.verifier_key)
    }
}

impl LogKey {
    /// The log identity of the Ed25519 secret key `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Result<LogKey, LogError> {
        let signer = LogSigner::from_seed(seed).map_err(|e| LogError::Key {
            path: "(a key given as bytes)".into(),
            reason: e.to_string(),
        })?;
        Ok(LogKey {
            verifier_key: tlog::verifier_key(signer.public()),
            signer,
        })
    }

    /// The log identity of the key file `path`, as `Identity::load_or_create` writes it (the
    /// base64 32-byte Ed25519 secret key and a newline).
    pub fn load(path: &Path) -> Result<LogKey, LogError> {
        let err = |reason: String| LogError::Key {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let seed: [u8; 32] = B64
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| err("not a base64 Ed25519 secret key".into()))?;
        Self::from_seed(&seed)
    }

    /// The checkpoints' origin line, which is also the key's name.
    pub fn origin(&self) -> &str {
        self.signer.origin()
    }

    /// The signed-note verifier key, `<origin>+<key id>+<base64 of 0x01 and the public key>`,
    /// which a verifier is given to check checkpoints (Go's `note.NewVerifier` reads it).
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The signed checkpoint of a tree of `size` leaves whose root is `root`.
    pub fn sign(&self, size: u64, root: Hash) -> Result<String, LogError> {
        self.signer.sign(size, &root.0).map_err(|e| LogError::Sign {
            size,
            reason: e.to_string(),
        })
    }
}

/// Checks a signed checkpoint against a verifier key: its signature, and that its origin is the
/// key's name (`vantage_probe::tlog::verify_checkpoint`). Returns the checkpoint.
pub fn verify(note: &str, verifier_key: &str) -> Result<Checkpoint, LogError> {
    let bad = |e: tlog::TlogError| LogError::Checkpoint(e.to_string());
    let public = tlog::public_of_verifier_key(verifier_key).map_err(bad)?;
    let checked = tlog::verify_checkpoint(note, &public).map_err(bad)?;
    Checkpoint::new(&checked.origin, checked.size, Hash(checked.root), "")
        .map_err(|e| LogError::Checkpoint(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_a_note_signed_by_the_key_named_by_its_origin() {
        let key = LogKey::from_seed(&[7; 32]).expect("key");
        assert!(key.origin().starts_with(ORIGIN_PREFIX));
        assert_eq!(key.origin().len(), ORIGIN_PREFIX.len() + 16);
        let note = key.sign(3, tlog_tiles::EMPTY_HASH).expect("sign");
        let mut lines = note.lines();
        assert_eq!(lines.next(), Some(key.origin()));
        assert_eq!(lines.next(), Some("3"));
        assert_eq!(
            lines.next(),
            Some("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        );
        assert_eq!(lines.next(), Some(""));
        let signature = lines.next().expect("a signature line");
        assert!(
            signature.starts_with(&format!("— {} ", key.origin())),
            "{signature}"
        );
        assert_eq!(lines.next(), None);
        let checkpoint = verify(&note, key.verifier_key()).expect("verifies");
        assert_eq!(
            (checkpoint.size(), *checkpoint.hash()),
            (3, tlog_tiles::EMPTY_HASH)
        );
        // The same key file gives the same log.
        assert_eq!(
            LogKey::from_seed(&[7; 32]).expect("key").verifier_key(),
            key.verifier_key()
        );
    }

    #[test]
    fn an_altered_checkpoint_or_another_key_does_not_verify() {
        let key = LogKey::from_seed(&[7; 32]).expect("key");
        let other = LogKey::from_seed(&[8; 32]).expect("key");
        let note = key.sign(3, tlog_tiles::EMPTY_HASH).expect("sign");
        assert!(verify(&note, other.verifier_key()).is_err());
        let grown = note.replacen("\n3\n", "\n4\n", 1);
        assert!(verify(&grown, key.verifier_key()).is_err());
        assert!(verify("not a note", key.verifier_key()).is_err());
        assert!(verify(&note, "not a key").is_err());
    }

    #[test]
    fn a_key_file_that_is_not_a_key_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("vantage-logkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bad.key");
        std::fs::write(&path, "AQID\n").expect("write");
        let e = LogKey::load(&path).expect_err("refused");
        assert!(e.to_string().contains("bad.key"), "{e}");
        std::fs::write(&path, format!("{}\n", B64.encode([7u8; 32]))).expect("write");
        let loaded = LogKey::load(&path).expect("a key");
        let made = LogKey::from_seed(&[7; 32]).expect("key");
        assert_eq!(loaded.verifier_key(), made.verifier_key());
        assert!(LogKey::load(&dir.join("missing.key")).is_err());
    }
}
