//! Naming a log and signing and checking its checkpoints (C2SP tlog-checkpoint signed notes,
//! `docs/transparency.md`): the origin and verifier key derived from the log's Ed25519 key, a
//! verified [`Checkpoint`], and the [`LogSigner`] the aggregator signs with.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};

use super::{ALG_ED25519, Hash, MAX_TREE_SIZE, ORIGIN_PREFIX, TlogError, b64, cut};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlog::tests::signer;

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
}
