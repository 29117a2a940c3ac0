//! The relay header: which probe relayed an upload (docs/carry.md, "The relay header").
//!
//! A probe that relays results it did not measure (`vantage import`, `vantage relay`) sends
//! them to `POST /api/v1/measurements` with one extra header,
//!
//! ```text
//! vantage-relay: v1.<base64 Ed25519 public key>.<base64 signature>
//! ```
//!
//! where the signature is the relaying probe's, over `"vantage-relay-v1\n"` followed by the 32
//! bytes of the SHA-256 of the exact request body (the bytes on the wire, compressed when the
//! body is gzip). The aggregator then records the upload's route as `relay` and the relayer's
//! key, and never the address it came from.
//!
//! The header only proves WHICH probe relayed the batch, so that nobody can claim to have
//! relayed what another probe carried, nor pin a relay on a probe that did not. It vouches for
//! nothing inside the body: each envelope still stands on its own signature
//! ([`crate::envelope`]; README, "Upload protocol"), and the relayer signs nothing of theirs. The domain prefix keeps this signature
//! from ever being taken for a measurement's, which is signed over JSON text.
//!
//! Defined here once, in the probe's crate, for the probe that signs and the aggregator that
//! verifies.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::Signature;

use crate::envelope::{Identity, decode_key};

/// The HTTP header that carries the proof (lower case, as HTTP/2 sends header names).
pub const RELAY_HEADER: &str = "vantage-relay";

/// The version this build writes and reads, the first field of the header's value.
pub const VERSION: &str = "v1";

/// What the signature covers, before the body's digest: the name and version of the proof.
const DOMAIN: &[u8] = b"vantage-relay-v1\n";

/// The longest header value read. A v1 value is 135 bytes (2 + 1 + 44 + 1 + 88); anything far
/// longer is refused before it is split or decoded.
pub const MAX_HEADER_LEN: usize = 256;

/// The relaying probe's public key, base64, as it appears in envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RelayerKey(String);

impl RelayerKey {
    /// The base64 key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The base64 key, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RelayerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a relay header was refused. The aggregator answers 400 with this text and stores
/// nothing of the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayProofError {
    /// Longer than [`MAX_HEADER_LEN`].
    #[error("{RELAY_HEADER} header: too long ({len} bytes, at most {MAX_HEADER_LEN})")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not `version.key.signature`, or not text.
    #[error("{RELAY_HEADER} header: malformed: {0}")]
    Malformed(&'static str),
    /// A version this build does not read.
    #[error("{RELAY_HEADER} header: unsupported version {0:?} (this aggregator reads {VERSION})")]
    Version(String),
    /// The key is not a valid (or is a weak) Ed25519 public key.
    #[error("{RELAY_HEADER} header: bad key: {0}")]
    BadKey(String),
    /// The signature is not the named key's over this body.
    #[error("{RELAY_HEADER} header: bad signature: not made by the named key over this body")]
    BadSignature,
}

/// A parsed header, checked in its form and key, whose signature is still to be checked
/// against the body: an aggregator can refuse a malformed header before it reads the body.
#[derive(Debug, Clone)]
pub struct RelayProof {
    key: RelayerKey,
    verifying: ed25519_dalek::VerifyingKey,
    signature: Signature,
}

impl RelayProof {
    /// Reads a header value: bounded, three dot-separated fields, the known version, a valid
    /// key and a 64-byte signature.
    pub fn parse(value: &str) -> Result<RelayProof, RelayProofError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(RelayProofError::TooLong { len: value.len() });
        }
        let mut fields = value.trim().split('.');
        let (Some(version), Some(key), Some(sig), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(RelayProofError::Malformed(
                "expected three fields, version.key.signature",
            ));
        };
        if version != VERSION {
            return Err(RelayProofError::Version(version.chars().take(16).collect()));
        }
        let verifying = decode_key(key).map_err(|e| RelayProofError::BadKey(e.to_string()))?;
        let sig: [u8; 64] = B64.decode(sig).ok().and_then(|b| b.try_into().ok()).ok_or(
            RelayProofError::Malformed("the signature is not 64 bytes of base64"),
        )?;
        Ok(RelayProof {
            key: RelayerKey(key.to_string()),
            verifying,
            signature: Signature::from_bytes(&sig),
        })
    }

    /// The key the header names (not yet proven to have signed anything).
    pub fn claimed_key(&self) -> &RelayerKey {
        &self.key
    }

    /// Checks the signature against the SHA-256 of the body (for a reader that hashed the
    /// body as it streamed in).
    pub fn verify_digest(self, body_sha256: &[u8; 32]) -> Result<RelayerKey, RelayProofError> {
        self.verifying
            .verify_strict(&message(body_sha256), &self.signature)
            .map_err(|_| RelayProofError::BadSignature)?;
        Ok(self.key)
    }

    /// Checks the signature against the body.
    pub fn verify(self, body: &[u8]) -> Result<RelayerKey, RelayProofError> {
        self.verify_digest(&sha256(body))
    }
}

/// The header value by which the probe `key` says it relays `body`, the exact bytes it sends.
pub fn relay_header(key: &Identity, body: &[u8]) -> String {
    let signature = key.sign_bytes(&message(&sha256(body)));
    format!("{VERSION}.{}.{}", key.public_key(), B64.encode(signature))
}

/// Checks a header value against the body it came with: the key of the probe that relayed it.
pub fn verify_relay_header(value: &str, body: &[u8]) -> Result<RelayerKey, RelayProofError> {
    RelayProof::parse(value)?.verify(body)
}

/// SHA-256 of `body`.
pub fn sha256(body: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn message(body_sha256: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + 32);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(body_sha256);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"{\"v\":1,\"key\":\"k\",\"sig\":\"s\",\"measurement\":{}}\n";

    #[test]
    fn round_trip_names_the_relaying_probe() {
        let relayer = Identity::generate().expect("a key");
        let value = relay_header(&relayer, BODY);
        assert!(value.starts_with("v1."), "{value}");
        assert!(value.len() <= MAX_HEADER_LEN, "{}", value.len());
        let key = verify_relay_header(&value, BODY).expect("ok");
        assert_eq!(key.as_str(), relayer.public_key());
        // Reading the digest streamed in gives the same answer.
        let key = RelayProof::parse(&value)
            .expect("ok")
            .verify_digest(&sha256(BODY))
            .expect("ok");
        assert_eq!(key.as_str(), relayer.public_key());
    }

    #[test]
    fn altered_body_is_refused() {
        let relayer = Identity::generate().expect("a key");
        let value = relay_header(&relayer, BODY);
        let mut other = BODY.to_vec();
        other.push(b'\n');
        assert_eq!(
            verify_relay_header(&value, &other),
            Err(RelayProofError::BadSignature)
        );
        assert_eq!(
            verify_relay_header(&value, b""),
            Err(RelayProofError::BadSignature)
        );
    }

    #[test]
    fn another_key_cannot_claim_the_relay() {
        // A header whose key is swapped for another probe's: the signature is not that key's.
        let relayer = Identity::generate().expect("a key");
        let other = Identity::generate().expect("a key");
        let value = relay_header(&relayer, BODY);
        let forged = value.replace(&relayer.public_key(), &other.public_key());
        assert_eq!(
            verify_relay_header(&forged, BODY),
            Err(RelayProofError::BadSignature)
        );
        // A signature with one bit flipped.
        let sig = value.rsplit('.').next().expect("ok");
        let mut bytes = B64.decode(sig).expect("ok");
        bytes[10] ^= 1;
        let flipped = format!("v1.{}.{}", relayer.public_key(), B64.encode(bytes));
        assert_eq!(
            verify_relay_header(&flipped, BODY),
            Err(RelayProofError::BadSignature)
        );
        // The envelope's own signature over the body's text is not a relay proof.
        let (_, line) = relayer.seal("{}").expect("ok");
        assert!(verify_relay_header(&line, b"{}").is_err());
    }

    #[test]
    fn garbage_gets_a_clear_reason() {
        let relayer = Identity::generate().expect("a key");
        let key = relayer.public_key();
        let sig = B64.encode([7u8; 64]);
        let cases: &[(&str, &str)] = &[
            ("", "malformed"),
            ("v1", "malformed"),
            ("v1.abc", "malformed"),
            ("v1.a.b.c", "malformed"),
            ("\u{e9}t\u{e9}", "malformed"),
            ("v2.x.y", "unsupported version \"v2\""),
            ("v1.not-base64!.xx", "bad key"),
            ("v1.AAAA.xx", "bad key"),
            // The identity point: a weak key that would verify many messages.
            (
                "v1.AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=.xx",
                "bad key",
            ),
        ];
        for (value, want) in cases {
            let err = verify_relay_header(value, BODY)
                .expect_err("refused")
                .to_string();
            assert!(
                err.starts_with("vantage-relay header: "),
                "{value:?}: {err}"
            );
            assert!(err.contains(want), "{value:?}: {err}");
        }
        let short_sig = format!("v1.{key}.{}", B64.encode([1u8; 10]));
        let err = verify_relay_header(&short_sig, BODY).expect_err("refused");
        assert!(err.to_string().contains("64 bytes"), "{err}");
        let wrong_sig = format!("v1.{key}.{sig}");
        assert_eq!(
            verify_relay_header(&wrong_sig, BODY),
            Err(RelayProofError::BadSignature)
        );
    }

    #[test]
    fn huge_value_is_refused_unread() {
        let huge = format!("v1.{}", "A".repeat(1 << 20));
        assert_eq!(
            verify_relay_header(&huge, BODY),
            Err(RelayProofError::TooLong { len: huge.len() })
        );
        let just_over = "v".repeat(MAX_HEADER_LEN + 1);
        assert!(matches!(
            RelayProof::parse(&just_over),
            Err(RelayProofError::TooLong { .. })
        ));
    }
}
