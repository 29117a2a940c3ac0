//! The signed envelope (docs/architecture.md, "What probe and aggregator agree on"): one JSONL
//! line per measurement,
//!
//! ```text
//! {"v":1,"key":"<base64 Ed25519 public key>","sig":"<base64 signature>","measurement":{...}}
//! ```
//!
//! The signature covers the exact bytes of the `measurement` value as they stand in the line,
//! kept with serde_json's `RawValue`: nothing is re-serialised or canonicalised, so what was
//! signed is what is stored and what anyone can verify later. The measurement id is the lower-case
//! hex SHA-256 of the same bytes, which makes uploads idempotent. Verification uses
//! `verify_strict` (no weak keys, no malleable signatures) and happens before the measurement is
//! parsed at all.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Envelope format version.
pub const VERSION: u64 = 1;

/// Lower-case hex SHA-256 of a measurement's exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeasurementId(String);

impl MeasurementId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        MeasurementId(hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            bytes,
        )))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeasurementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not an envelope at all.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// A version we do not know.
    #[error("unsupported envelope version {0}")]
    Version(u64),
    /// The key is not a valid Ed25519 public key.
    #[error("invalid public key: {0}")]
    Key(String),
    /// The signature does not verify over the measurement's bytes.
    #[error("bad signature")]
    BadSignature,
    /// Creating or reading the key file failed.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A probe's signing identity.
pub struct Identity {
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public_key())
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Result<Self, EnvelopeError> {
        use ring::rand::SecureRandom as _;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| EnvelopeError::Key("no system randomness".into()))?;
        Ok(Identity {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads the key at `path`, creating it (mode 0600) on first use. Returns whether it was
    /// created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), EnvelopeError> {
        let err = |reason: String| EnvelopeError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let seed: [u8; 32] = B64
                    .decode(text.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| err("not a base64 Ed25519 secret key".into()))?;
                Ok((
                    Identity {
                        key: SigningKey::from_bytes(&seed),
                    },
                    false,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Self::generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(|e| err(e.to_string()))?;
                std::io::Write::write_all(
                    &mut file,
                    format!("{}\n", B64.encode(identity.key.to_bytes())).as_bytes(),
                )
                .and_then(|()| file.sync_all())
                .map_err(|e| err(e.to_string()))?;
                Ok((identity, true))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// The public key, base64, as it appears in envelopes.
    pub fn public_key(&self) -> String {
        B64.encode(self.key.verifying_key().to_bytes())
    }

    /// The Ed25519 signature of `message`, for proofs other than envelopes that name this
    /// probe (the relay header, `relay_proof`); each such message carries its own domain
    /// prefix so that it can never be taken for a measurement.
    pub(crate) fn sign_bytes(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Wraps a measurement, given as compact JSON, in a signed envelope line (without newline).
    pub fn seal(&self, measurement_json: &str) -> Result<(MeasurementId, String), EnvelopeError> {
        let raw = RawValue::from_string(measurement_json.to_string())
            .map_err(|e| EnvelopeError::Malformed(format!("measurement is not JSON: {e}")))?;
        if raw.get().contains('\n') {
            return Err(EnvelopeError::Malformed(
                "measurement must be compact JSON on one line".into(),
            ));
        }
        let sig = self.key.sign(raw.get().as_bytes());
        let line = format!(
            "{{\"v\":{VERSION},\"key\":\"{}\",\"sig\":\"{}\",\"measurement\":{}}}",
            self.public_key(),
            B64.encode(sig.to_bytes()),
            raw.get()
        );
        Ok((MeasurementId::of(raw.get().as_bytes()), line))
    }
}

/// A verified envelope, borrowing the line.
#[derive(Debug)]
pub struct Verified<'a> {
    /// SHA-256 of the measurement bytes.
    pub id: MeasurementId,
    /// The signer, base64.
    pub key: String,
    /// The measurement's exact bytes.
    pub measurement: &'a str,
}

#[derive(Deserialize)]
struct Wire<'a> {
    v: u64,
    key: String,
    sig: String,
    #[serde(borrow)]
    measurement: &'a RawValue,
}

/// The Ed25519 public key in `b64`, if it is one (and not a weak one).
pub fn parse_public_key(b64: &str) -> Option<VerifyingKey> {
    decode_key(b64).ok()
}

/// Checks one envelope line: its shape, then the signature over the raw measurement bytes.
pub fn verify(line: &str) -> Result<Verified<'_>, EnvelopeError> {
    Verifier::default().verify(line)
}

/// Verifies many envelopes, keeping each signer's decoded public key.
///
/// Decoding an Ed25519 key is a point decompression (a field square root), about a fifth of
/// the cost of a verification; an upload batch comes from one probe, so the aggregator decodes
/// its key once per batch instead of once per line.
#[derive(Default)]
pub struct Verifier {
    keys: std::collections::HashMap<String, VerifyingKey>,
}

impl Verifier {
    /// Keys kept at most; a body signed by more keys than this just decodes the rest each time.
    const MAX_KEYS: usize = 256;

    /// Checks one envelope line, like [`verify`].
    pub fn verify<'a>(&mut self, line: &'a str) -> Result<Verified<'a>, EnvelopeError> {
        let wire: Wire<'_> =
            serde_json::from_str(line).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if wire.v != VERSION {
            return Err(EnvelopeError::Version(wire.v));
        }
        let key = match self.keys.get(&wire.key) {
            Some(k) => *k,
            None => {
                let key = decode_key(&wire.key)?;
                if self.keys.len() < Self::MAX_KEYS {
                    self.keys.insert(wire.key.clone(), key);
                }
                key
            }
        };
        let sig_bytes: [u8; 64] = B64
            .decode(&wire.sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(EnvelopeError::BadSignature)?;
        let bytes = wire.measurement.get();
        key.verify_strict(bytes.as_bytes(), &Signature::from_bytes(&sig_bytes))
            .map_err(|_| EnvelopeError::BadSignature)?;
        Ok(Verified {
            id: MeasurementId::of(bytes.as_bytes()),
            key: wire.key,
            measurement: bytes,
        })
    }
}

/// A base64 Ed25519 public key, refusing weak (small-order) keys, which would let one signature
/// verify for many messages.
pub(crate) fn decode_key(b64: &str) -> Result<VerifyingKey, EnvelopeError> {
    let key_bytes: [u8; 32] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EnvelopeError::Key("not 32 bytes of base64".into()))?;
    let key =
        VerifyingKey::from_bytes(&key_bytes).map_err(|e| EnvelopeError::Key(e.to_string()))?;
    if key.is_weak() {
        return Err(EnvelopeError::Key("weak key".into()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = r#"{"test_name":"web_connectivity","input":"https://example.org/","test_keys":{"blocking":false}}"#;

    #[test]
    fn sealed_line_verifies_with_the_id_of_the_exact_bytes() {
        let id = Identity::generate().expect("key");
        let (mid, line) = id.seal(M).expect("seal");
        let v = verify(&line).expect("verify");
        assert_eq!(v.measurement, M);
        assert_eq!(v.id, mid);
        assert_eq!(v.id, MeasurementId::of(M.as_bytes()));
        assert_eq!(v.key, id.public_key());
        assert_eq!(v.id.as_str().len(), 64);
    }

    #[test]
    fn a_verifier_with_cached_keys_still_refuses_forgeries() {
        let (alice, mallory) = (
            Identity::generate().expect("key"),
            Identity::generate().expect("key"),
        );
        let mut v = Verifier::default();
        let (_, good) = alice.seal(M).expect("seal");
        assert!(v.verify(&good).is_ok());
        // Alice's key is now cached: a line claiming it but signed by Mallory must still fail.
        let (_, by_mallory) = mallory.seal(M).expect("seal");
        let forged = by_mallory.replace(&mallory.public_key(), &alice.public_key());
        assert!(matches!(
            v.verify(&forged),
            Err(EnvelopeError::BadSignature)
        ));
        assert_eq!(
            v.verify(&by_mallory).expect("mallory's own").key,
            mallory.public_key()
        );
        assert!(v.verify(&good).is_ok());
    }

    #[test]
    fn changing_any_byte_of_the_measurement_breaks_the_signature() {
        let id = Identity::generate().expect("key");
        let (_, line) = id.seal(M).expect("seal");
        let start = line.find("\"measurement\":").expect("field") + 14;
        for i in [start + 2, start + 20, line.len() - 5] {
            let mut bytes = line.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let Ok(tampered) = String::from_utf8(bytes) else {
                continue;
            };
            match verify(&tampered) {
                Err(EnvelopeError::BadSignature | EnvelopeError::Malformed(_)) => {}
                other => panic!("byte {i} changed and got {other:?}"),
            }
        }
        // Re-serialising changes bytes too: whitespace is not ignored.
        let spaced = line.replace("\"input\":", "\"input\": ");
        assert_eq!(
            verify(&spaced).expect_err("spaced"),
            EnvelopeError::BadSignature
        );
    }

    #[test]
    fn forged_and_malformed_envelopes_are_refused() {
        let alice = Identity::generate().expect("key");
        let mallory = Identity::generate().expect("key");
        let (_, line) = alice.seal(M).expect("seal");
        let forged = line.replace(&alice.public_key(), &mallory.public_key());
        assert_eq!(
            verify(&forged).expect_err("forged"),
            EnvelopeError::BadSignature
        );
        assert!(matches!(
            verify("not json"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            verify(r#"{"v":1}"#),
            Err(EnvelopeError::Malformed(_))
        ));
        let v2 = line.replacen("\"v\":1", "\"v\":2", 1);
        assert_eq!(verify(&v2).expect_err("version"), EnvelopeError::Version(2));
        let short_key = line.replace(&alice.public_key(), "AAAA");
        assert!(matches!(verify(&short_key), Err(EnvelopeError::Key(_))));
        assert!(matches!(
            alice.seal("{\n}"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            alice.seal("nope"),
            Err(EnvelopeError::Malformed(_))
        ));
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("vantage-key-{}", std::process::id()));
        let path = dir.join("sub/identity.key");
        let _ = std::fs::remove_file(&path);
        let (first, created) = Identity::load_or_create(&path).expect("create");
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = Identity::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(first.public_key(), again.public_key());
        std::fs::write(&path, "garbage").expect("write");
        let err = Identity::load_or_create(&path).expect_err("garbage");
        assert!(
            err.to_string().contains("not a base64 Ed25519 secret key"),
            "{err}"
        );
    }
}
