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

/// signed-note's signature type byte of a C2SP tlog-cosignature/v1: Ed25519 over the
/// checkpoint with a timestamp. It goes into the key ID (and a witness's verifier key), so that
/// a cosignature cannot be taken for a plain Ed25519 note signature by the same key.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The prefix of a witness's default name: `witness.invalid/` and the first 16 hex digits of
/// the SHA-256 of its public key, as a log's origin is made (C2SP tlog-cosignature: the name
/// "SHOULD be a schema-less URL that identifies the cosigner"; `.invalid`, RFC 2606, says it
/// is no address to fetch from).
pub const WITNESS_NAME_PREFIX: &str = "witness.invalid/";

/// The longest timestamp a cosignature may carry (C2SP tlog-cosignature: "MUST NOT exceed
/// 2^63 - 1").
const MAX_TIMESTAMP: u64 = (1 << 63) - 1;

/// What is wrong with a witness key or a cosignature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    /// A witness key file or verifier key that is not one.
    #[error("witness key {key}: {reason}")]
    Key {
        /// The file, or the verifier key given (cut to 100 characters).
        key: String,
        /// Why.
        reason: String,
    },
    /// A checkpoint that is not a signed note.
    #[error("the checkpoint is not a signed note: {0}")]
    Note(String),
    /// A line that is not a note signature line.
    #[error("{line:?} is not a signature line (`— NAME BASE64`)")]
    Line {
        /// The line (cut to 100 characters).
        line: String,
    },
    /// A signature by a key that is not one of the witnesses configured.
    #[error("{name}+{id:08x} is not a witness this aggregator accepts")]
    UnknownWitness {
        /// The key name of the line.
        name: String,
        /// Its key ID.
        id: u32,
    },
    /// A cosignature line by a configured witness that does not verify.
    #[error(
        "the cosignature of {name} does not verify over this checkpoint (size {size}): {reason}"
    )]
    Invalid {
        /// The witness.
        name: String,
        /// The checkpoint's size.
        size: u64,
        /// Why.
        reason: String,
    },
}

fn cut(text: &str) -> String {
    text.chars().take(100).collect()
}

/// The message a cosignature/v1 signs (C2SP tlog-cosignature, "Ed25519 signed message"): the
/// line `cosignature/v1`, the line `time <timestamp>`, then the checkpoint's note text (its
/// lines before the blank line, each with its newline, without any signature).
pub fn cosigned_message(timestamp: u64, checkpoint_text: &[u8]) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(checkpoint_text);
    message
}

/// The key ID of a witness `name` with Ed25519 public key `public` (C2SP tlog-cosignature:
/// the first 4 bytes of SHA-256(name, newline, 0x04, key)).
fn witness_key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut encoded = vec![ALG_COSIGNATURE_V1];
    encoded.extend_from_slice(public);
    signed_note::key_id(name, &encoded)
}

/// The default name of the witness of `public` ([`WITNESS_NAME_PREFIX`]).
pub fn default_witness_name(public: &[u8; 32]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    format!(
        "{WITNESS_NAME_PREFIX}{}",
        &hex::encode(digest.as_ref())[..16]
    )
}

/// The text of a signed note: its lines before the blank line, each with its newline.
fn note_text(note: &str) -> Result<Vec<u8>, CosignatureError> {
    signed_note::Note::from_bytes(note.as_bytes())
        .map(|n| n.text().to_vec())
        .map_err(|e| CosignatureError::Note(e.to_string()))
}

/// A witness: its name and the Ed25519 key it cosigns checkpoints with
/// (`vantage-aggregator witness`).
pub struct WitnessKey {
    name: String,
    signing: ed25519_dalek::SigningKey,
    key_id: u32,
}

impl std::fmt::Debug for WitnessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WitnessKey({})", self.verifier_key())
    }
}

impl WitnessKey {
    /// The witness `name` (default: [`default_witness_name`]) with the Ed25519 secret key
    /// `seed`.
    pub fn from_seed(seed: &[u8; 32], name: Option<&str>) -> Result<WitnessKey, CosignatureError> {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = signing.verifying_key().to_bytes();
        let name = name.map_or_else(|| default_witness_name(&public), str::to_string);
        if !signed_note::is_key_name_valid(&name) {
            return Err(CosignatureError::Key {
                key: cut(&name),
                reason: "a witness name is not empty and has no spaces and no '+'".into(),
            });
        }
        Ok(WitnessKey {
            key_id: witness_key_id(&name, &public),
            name,
            signing,
        })
    }

    /// The witness of the key file `path` (the base64 32-byte Ed25519 secret key and a
    /// newline, as the aggregator's own key file), created with a new key when missing.
    pub fn load_or_create(path: &Path, name: Option<&str>) -> Result<WitnessKey, CosignatureError> {
        let err = |reason: String| CosignatureError::Key {
            key: path.display().to_string(),
            reason,
        };
        vantage_probe::envelope::Identity::load_or_create(path).map_err(|e| err(e.to_string()))?;
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let seed: [u8; 32] = B64
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| err("not a base64 Ed25519 secret key".into()))?;
        Self::from_seed(&seed, name)
    }

    /// Its name, the cosignature lines' key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its verifier key, `NAME+KEYID+BASE64(0x04 || public key)` (C2SP signed-note's vkey
    /// with the cosignature/v1 type): what `serve --witness` is given.
    pub fn verifier_key(&self) -> String {
        let mut encoded = vec![ALG_COSIGNATURE_V1];
        encoded.extend_from_slice(self.signing.verifying_key().as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, B64.encode(&encoded))
    }

    /// The cosignature/v1 line of the checkpoint `note` at `timestamp` (seconds since the
    /// epoch): `— NAME BASE64(key ID || timestamp || signature)` and a newline.
    pub fn cosign(&self, note: &str, timestamp: u64) -> Result<String, CosignatureError> {
        use ed25519_dalek::Signer as _;
        let text = note_text(note)?;
        let timestamp = timestamp.min(MAX_TIMESTAMP);
        let signature = self.signing.sign(&cosigned_message(timestamp, &text));
        let mut sig = timestamp.to_be_bytes().to_vec();
        sig.extend_from_slice(&signature.to_bytes());
        let line = signed_note::Signature::new(self.name.clone(), self.key_id, sig)
            .map_err(|e| CosignatureError::Note(e.to_string()))?;
        String::from_utf8(line.to_bytes()).map_err(|e| CosignatureError::Note(e.to_string()))
    }
}

/// A witness whose cosignatures are accepted (`serve --witness`), read from its verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessVerifier {
    name: String,
    public: [u8; 32],
    key_id: u32,
}

impl WitnessVerifier {
    /// Reads a verifier key as [`WitnessKey::verifier_key`] writes it, checking that its key
    /// ID is the one its name and key give.
    pub fn parse(vkey: &str) -> Result<WitnessVerifier, CosignatureError> {
        let bad = |reason: &str| CosignatureError::Key {
            key: cut(vkey),
            reason: reason.to_string(),
        };
        // The name and the hex key ID hold no '+'; the base64 may.
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not NAME+KEYID+BASE64"));
        };
        if !signed_note::is_key_name_valid(name) {
            return Err(bad("not a key name"));
        }
        let id = u32::from_str_radix(id, 16)
            .ok()
            .filter(|_| id.len() == 8)
            .ok_or_else(|| bad("the key ID is not 8 hex digits"))?;
        let encoded = B64
            .decode(encoded)
            .map_err(|_| bad("the key is not base64"))?;
        let public: [u8; 32] = match encoded.split_first() {
            Some((&ALG_COSIGNATURE_V1, rest)) => rest
                .try_into()
                .map_err(|_| bad("not a 32-byte Ed25519 key"))?,
            _ => return Err(bad("not a cosignature/v1 key (type 0x04)")),
        };
        ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| bad("not an Ed25519 public key"))?;
        if witness_key_id(name, &public) != id {
            return Err(bad("the key ID is not the one of this name and key"));
        }
        Ok(WitnessVerifier {
            name: name.to_string(),
            public,
            key_id: id,
        })
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `NAME+KEYID`: how the witness is told apart from another of the same name.
    pub fn id(&self) -> String {
        format!("{}+{:08x}", self.name, self.key_id)
    }
}

impl signed_note::Verifier for WitnessVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    /// `sig` is a `timestamped_signature` (C2SP tlog-cosignature): the timestamp, 8 bytes big
    /// endian, then the 64-byte Ed25519 signature of [`cosigned_message`].
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Some((timestamp, signature)) = split_timestamped(sig) else {
            return false;
        };
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.public) else {
            return false;
        };
        key.verify_strict(
            &cosigned_message(timestamp, msg),
            &ed25519_dalek::Signature::from_bytes(&signature),
        )
        .is_ok()
    }
}

/// A `timestamped_signature`'s timestamp and Ed25519 signature; `None` when it is not 72
/// bytes or its timestamp exceeds 2^63 - 1.
fn split_timestamped(sig: &[u8]) -> Option<(u64, [u8; 64])> {
    let (timestamp, signature) = sig.split_first_chunk::<8>()?;
    let timestamp = u64::from_be_bytes(*timestamp);
    (timestamp <= MAX_TIMESTAMP).then_some(())?;
    Some((timestamp, signature.try_into().ok()?))
}

/// A cosignature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    /// The witness, `NAME+KEYID` ([`WitnessVerifier::id`]).
    pub witness: String,
    /// When the witness cosigned, seconds since the epoch.
    pub timestamp: u64,
    /// The signature line, with its newline.
    pub line: String,
}

/// Checks `lines` (note signature lines, each with its newline or not) as cosignatures of the
/// checkpoint `note` by `witnesses`: each must be by one of them (name and key ID) and verify.
/// The checkpoint's own signature is not checked here: it is the stored or served one.
pub fn verify_cosignatures(
    note: &str,
    lines: &str,
    witnesses: &[WitnessVerifier],
) -> Result<Vec<Cosignature>, CosignatureError> {
    let text = note_text(note)?;
    let size = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.lines().nth(1))
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut out: Vec<Cosignature> = Vec::new();
    for line in lines.lines().filter(|l| !l.is_empty()) {
        let sig = signed_note::Signature::from_bytes(line.as_bytes())
            .map_err(|_| CosignatureError::Line { line: cut(line) })?;
        let Some(witness) = witnesses
            .iter()
            .find(|w| w.name == sig.name() && w.key_id == sig.id())
        else {
            return Err(CosignatureError::UnknownWitness {
                name: cut(sig.name()),
                id: sig.id(),
            });
        };
        let invalid = |reason: &str| CosignatureError::Invalid {
            name: witness.name.clone(),
            size,
            reason: reason.to_string(),
        };
        let Some((timestamp, _)) = split_timestamped(sig.signature()) else {
            return Err(invalid(
                "not a timestamp of at most 2^63 - 1 and a 64-byte signature",
            ));
        };
        if !signed_note::Verifier::verify(witness, &text, sig.signature()) {
            return Err(invalid("the Ed25519 signature is wrong"));
        }
        out.retain(|c| c.witness != witness.id());
        out.push(Cosignature {
            witness: witness.id(),
            timestamp,
            line: format!("{line}\n"),
        });
    }
    Ok(out)
}

/// The cosignatures by `witnesses` that a served checkpoint `note` carries (its signature
/// lines by other keys, the log's own among them, are left aside). An invalid cosignature by
/// one of them is an error: a checkpoint is not served with one.
pub fn cosignatures_on(
    note: &str,
    witnesses: &[WitnessVerifier],
) -> Result<Vec<Cosignature>, CosignatureError> {
    let signatures = note
        .rsplit_once("\n\n")
        .map(|(_, sigs)| sigs)
        .ok_or_else(|| CosignatureError::Note("no blank line before the signatures".into()))?;
    let ours: String = signatures
        .lines()
        .filter(|l| {
            signed_note::Signature::from_bytes(l.as_bytes()).is_ok_and(|s| {
                witnesses
                    .iter()
                    .any(|w| w.name == s.name() && w.key_id == s.id())
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    verify_cosignatures(note, &ours, witnesses)
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
    #[test]
    fn a_cosignature_is_ed25519_over_the_c2sp_message_and_only_a_configured_witness_s_counts() {
        let log = LogKey::from_seed(&[7; 32]).expect("key");
        let note = log.sign(3, tlog_tiles::EMPTY_HASH).expect("sign");
        let witness = WitnessKey::from_seed(&[5; 32], None).expect("witness");
        assert!(witness.name().starts_with(WITNESS_NAME_PREFIX));
        let line = witness.cosign(&note, 1_679_315_147).expect("cosign");
        assert!(
            line.starts_with(&format!("— {} ", witness.name())),
            "{line}"
        );
        assert!(line.ends_with('\n'));
        // The signed message is C2SP's: two lines, then the checkpoint's text.
        let text = note.split_once("\n\n").expect("a blank line").0;
        let message = cosigned_message(1_679_315_147, format!("{text}\n").as_bytes());
        assert!(
            String::from_utf8(message.clone())
                .expect("utf-8")
                .starts_with(&format!(
                    "cosignature/v1\ntime 1679315147\n{}\n3\n",
                    log.origin()
                ))
        );
        let raw = B64
            .decode(line.trim_end().rsplit_once(' ').expect("base64").1)
            .expect("base64");
        assert_eq!(raw.len(), 4 + 8 + 64);
        assert_eq!(raw[4..12], 1_679_315_147u64.to_be_bytes());
        let public = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
        let signature = ed25519_dalek::Signature::from_bytes(&raw[12..].try_into().expect("64"));
        public
            .verify_strict(&message, &signature)
            .expect("Ed25519 over the message");
        // Read back from its verifier key, it verifies; the served note carries it.
        let verifier = WitnessVerifier::parse(&witness.verifier_key()).expect("vkey");
        let found =
            verify_cosignatures(&note, &line, std::slice::from_ref(&verifier)).expect("verifies");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].timestamp, 1_679_315_147);
        let served = format!("{note}{line}");
        assert_eq!(
            cosignatures_on(&served, std::slice::from_ref(&verifier)).expect("on the note"),
            found
        );
        verify(&served, log.verifier_key()).expect("the log's signature still verifies");
        // Another checkpoint, another witness, an altered line: refused, each saying why.
        let other = log.sign(4, tlog_tiles::EMPTY_HASH).expect("sign");
        let e = verify_cosignatures(&other, &line, std::slice::from_ref(&verifier))
            .expect_err("another checkpoint");
        assert!(
            matches!(e, CosignatureError::Invalid { size: 4, .. }),
            "{e}"
        );
        let stranger = WitnessKey::from_seed(&[6; 32], None).expect("witness");
        let e = verify_cosignatures(
            &note,
            &stranger.cosign(&note, 1).expect("cosign"),
            std::slice::from_ref(&verifier),
        )
        .expect_err("not configured");
        assert!(matches!(e, CosignatureError::UnknownWitness { .. }), "{e}");
        let e = verify_cosignatures(&note, "— x", std::slice::from_ref(&verifier))
            .expect_err("not a line");
        assert!(matches!(e, CosignatureError::Line { .. }), "{e}");
        // The same key under another name is another witness, whose key ID differs.
        let renamed = WitnessKey::from_seed(&[5; 32], Some("example.org/w2")).expect("witness");
        assert!(
            verify_cosignatures(
                &note,
                &renamed.cosign(&note, 1).expect("cosign"),
                &[verifier]
            )
            .is_err()
        );
    }

    #[test]
    fn a_witness_verifier_key_is_read_only_when_it_is_one() {
        let witness = WitnessKey::from_seed(&[5; 32], Some("example.org/w1")).expect("witness");
        let vkey = witness.verifier_key();
        assert!(vkey.starts_with("example.org/w1+"), "{vkey}");
        let parsed = WitnessVerifier::parse(&vkey).expect("parses");
        assert_eq!(parsed.name(), "example.org/w1");
        let log = LogKey::from_seed(&[7; 32]).expect("key");
        for bad in [
            "",
            "example.org/w1",
            log.verifier_key(),
            &vkey.replacen("example.org/w1", "example.org/w9", 1),
            &vkey.replacen('+', "+0", 1),
            &format!("{}+00000000+{}", "n", B64.encode([4u8; 33])),
        ] {
            assert!(WitnessVerifier::parse(bad).is_err(), "{bad:?}");
        }
        assert!(WitnessKey::from_seed(&[5; 32], Some("has space")).is_err());
        assert!(WitnessKey::from_seed(&[5; 32], Some("has+plus")).is_err());
    }
}
