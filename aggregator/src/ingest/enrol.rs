//! One-time enrolment tokens for `serve --require-enrolment` (README.md, "Upload protocol").
//!
//! Trust on first use suits an open network of volunteers; an operator who knows its probes can
//! instead hand each one a token. `vantage-aggregator keys token` makes tokens and stores only
//! their SHA-256; `vantage enrol TOKEN` sends the token inside an envelope signed by the probe's
//! key (`POST /api/v1/enrol`), which proves the sender holds the key being enrolled. The token is
//! then spent: the same token never enrols a second key.

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

use crate::ingest::{IngestConfig, control};
use crate::store::{DbError, Redeemed, Storage};

/// `test_name` of the signed enrolment request.
pub const ENROLMENT: &str = "enrolment";

/// Token errors.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The operating system gave no randomness.
    #[error("no randomness for a token")]
    Random,
    /// Storing it failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// SHA-256 of a token, as stored.
pub fn token_sha256(token: &str) -> String {
    hex(digest(&SHA256, token.trim().as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a token (128 random bits, hex) and stores its hash.
pub fn new_token(storage: &dyn Storage) -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Random)?;
    let token = format!("vt-{}", hex(&bytes));
    storage.add_token(&token_sha256(&token))?;
    Ok(token)
}

/// Handles a signed enrolment request: an envelope of a measurement with
/// `test_name: enrolment` and `test_keys.token`. `Ok(Err(reason))` when it is refused; the
/// reason never says whether a token exists for some other key beyond "already used".
pub fn enrol(
    storage: &dyn Storage,
    body: &str,
    config: &IngestConfig,
) -> Result<Result<String, String>, DbError> {
    let c = match control(body, ENROLMENT, config) {
        Ok(c) => c,
        Err(reason) => return Ok(Err(reason)),
    };
    let Some(token) = c
        .measurement
        .test_keys
        .get("token")
        .and_then(|t| t.as_str())
    else {
        return Ok(Err("malformed: test_keys.token is missing".into()));
    };
    // The enrolment's leaf is appended in the transaction that spends the token; its envelope
    // is not kept, since it carries the token (`docs/transparency.md`, "What is logged").
    let outcome = match storage.log() {
        Ok(log) => log.redeem_logged(&token_sha256(token), &c.key, &c.id)?.0,
        Err(_) => storage.redeem_token(&token_sha256(token), &c.key)?,
    };
    Ok(match outcome {
        Redeemed::Enrolled | Redeemed::AlreadyEnrolled => Ok(c.key),
        Redeemed::Spent => Err("token already used".into()),
        Redeemed::Unknown => Err("unknown token".into()),
        Redeemed::Revoked => Err("revoked key".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyState, Sqlite};

    #[test]
    fn a_token_enrols_one_key_once() {
        let dir = std::env::temp_dir().join(format!("vantage-enrol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let token = new_token(&db).expect("token");
        assert!(token.starts_with("vt-") && token.len() == 35, "{token}");
        let hash = token_sha256(&token);
        assert_eq!(
            db.redeem_token(&hash, "key-a").expect("redeem"),
            Redeemed::Enrolled
        );
        assert_eq!(
            db.key_state("key-a").expect("state"),
            Some(KeyState::Trusted)
        );
        assert_eq!(
            db.redeem_token(&hash, "key-a").expect("redeem"),
            Redeemed::AlreadyEnrolled
        );
        assert_eq!(
            db.redeem_token(&hash, "key-b").expect("redeem"),
            Redeemed::Spent
        );
        assert_eq!(db.key_state("key-b").expect("state"), None);
        assert_eq!(
            db.redeem_token(&token_sha256("vt-nope"), "key-b")
                .expect("redeem"),
            Redeemed::Unknown
        );
        db.set_key("key-c", KeyState::Revoked).expect("revoke");
        let other = new_token(&db).expect("token");
        assert_eq!(
            db.redeem_token(&token_sha256(&other), "key-c")
                .expect("redeem"),
            Redeemed::Revoked
        );
        assert_eq!(
            db.key_state("key-c").expect("state"),
            Some(KeyState::Revoked)
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
