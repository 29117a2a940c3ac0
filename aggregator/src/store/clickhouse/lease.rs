//! Enrolment tokens and the detector lease without transactions: insert, then read back who
//! came first.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::super::DbError;
use super::ClickHouse;
use super::client::quote;

/// How long a node waits after recording an attempt to spend a token before reading which
/// attempt came first: longer than the second of the server's clock that orders attempts,
/// plus the time an insert takes to land, so that every attempt stamped no later than this
/// one is visible by then (see [`Storage::redeem_token`](super::super::Storage::redeem_token)).
pub(super) const REDEEM_SETTLE: Duration = Duration::from_millis(1500);

/// The name of the detector lease in the `lease` table.
const DETECTOR_LEASE: &str = "detector";

impl ClickHouse {
    /// The key that spent a token first, if any: the earliest attempt by the server's clock,
    /// then by the node's, then the smaller key, so every node reads the same one.
    pub(super) fn first_redeemer(&self, token_sha256: &str) -> Result<Option<String>, DbError> {
        #[derive(Deserialize)]
        struct K {
            key: String,
        }
        Ok(self
            .rows::<K>(
                "reading who spent a token",
                &format!(
                    "SELECT key FROM token_redemptions WHERE token_sha256 = {}
                     ORDER BY at, used_at, key LIMIT 1",
                    quote(token_sha256)
                ),
            )?
            .into_iter()
            .next()
            .map(|k| k.key))
    }

    /// Takes or renews the detector lease for `node` at `now` (seconds): true when `node`
    /// holds it now, false when another node renewed it within the last `ttl_seconds`.
    ///
    /// Each call that may hold it records (`node`, `now`); the holder is the latest record
    /// (ties to the greater node name). Without transactions, two nodes that both find the
    /// lease expired both record, and one reading back before the other's record lands
    /// believes it holds the lease for that pass, as the other does: at worst two detector
    /// passes run at once once. That is acceptable because a pass replaces the events of its
    /// window with what the stored measurements show, so two passes over the same data write
    /// the same events; from the next call on, every node reads the same holder.
    pub fn try_lease(&self, node: &str, now: i64, ttl_seconds: i64) -> Result<bool, DbError> {
        self.try_lease_named(DETECTOR_LEASE, node, now, ttl_seconds)
    }

    /// [`ClickHouse::try_lease`] for the lease `name` (the detectors', the log's).
    pub(super) fn try_lease_named(
        &self,
        name: &str,
        node: &str,
        now: i64,
        ttl_seconds: i64,
    ) -> Result<bool, DbError> {
        #[derive(Serialize, Deserialize)]
        struct L {
            name: String,
            node: String,
            at: i64,
        }
        let holder = |this: &Self| -> Result<Option<L>, DbError> {
            Ok(this
                .rows::<L>(
                    "reading a lease",
                    &format!(
                        "SELECT name, node, at FROM lease WHERE name = {}
                         ORDER BY at DESC, node DESC LIMIT 1",
                        quote(name)
                    ),
                )?
                .into_iter()
                .next())
        };
        let current = holder(self)?;
        if let Some(l) = &current
            && l.node != node
            && now.saturating_sub(l.at) <= ttl_seconds
        {
            return Ok(false);
        }
        self.insert_rows(
            "taking a lease",
            "lease",
            &[L {
                name: name.into(),
                node: node.into(),
                at: now,
            }],
        )?;
        if current.as_ref().is_some_and(|l| l.node == node) {
            return Ok(true);
        }
        Ok(holder(self)?.is_some_and(|l| l.node == node))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;

    #[test]
    fn a_token_is_spent_once_even_through_two_nodes() {
        let server = server();
        let one = ClickHouse::open(&server.url("v")).expect("node 1");
        let two = ClickHouse::open(&server.url("v")).expect("node 2");
        one.add_token("t1").expect("token");
        assert_eq!(
            two.redeem_token("nope", "a").expect("redeem"),
            Redeemed::Unknown
        );
        assert_eq!(
            two.redeem_token("t1", "a").expect("redeem"),
            Redeemed::Enrolled
        );
        assert_eq!(one.key_state("a").expect("state"), Some(KeyState::Trusted));
        assert_eq!(
            one.redeem_token("t1", "a").expect("retry"),
            Redeemed::AlreadyEnrolled
        );
        assert_eq!(
            one.redeem_token("t1", "b").expect("redeem"),
            Redeemed::Spent
        );
        assert_eq!(one.key_state("b").expect("state"), None);
        one.set_key("r", KeyState::Revoked).expect("revoke");
        one.add_token("t2").expect("token");
        assert_eq!(
            two.redeem_token("t2", "r").expect("redeem"),
            Redeemed::Revoked
        );
        assert_eq!(one.key_state("r").expect("state"), Some(KeyState::Revoked));
        // Eight keys try one token at once through two nodes: one is enrolled.
        one.add_token("t3").expect("token");
        let one = std::sync::Arc::new(one);
        let two = std::sync::Arc::new(two);
        let tries: Vec<_> = (0..8)
            .map(|i| {
                let node = if i % 2 == 0 { one.clone() } else { two.clone() };
                std::thread::spawn(move || node.redeem_token("t3", &format!("k{i}")))
            })
            .collect();
        let outcomes: Vec<Redeemed> = tries
            .into_iter()
            .map(|t| t.join().expect("thread").expect("redeem"))
            .collect();
        let enrolled = outcomes
            .iter()
            .filter(|o| **o == Redeemed::Enrolled)
            .count();
        assert_eq!(enrolled, 1, "{outcomes:?}");
        let trusted = one.keys().expect("keys");
        assert_eq!(
            trusted.iter().filter(|(k, _)| k.starts_with('k')).count(),
            1,
            "{trusted:?}"
        );
    }

    #[test]
    fn the_detector_lease_is_taken_renewed_and_taken_over_after_its_ttl() {
        let server = server();
        let a = ClickHouse::open(&server.url("v")).expect("node a");
        let b = ClickHouse::open(&server.url("v")).expect("node b");
        assert!(a.try_lease("a", 1000, 60).expect("take"));
        assert!(!b.try_lease("b", 1010, 60).expect("held"));
        assert!(a.try_lease("a", 1050, 60).expect("renew"));
        assert!(!b.try_lease("b", 1100, 60).expect("renewed at 1050"));
        // a stops renewing; 61 s after its last renewal b takes over.
        assert!(!b.try_lease("b", 1110, 60).expect("exactly the ttl"));
        assert!(b.try_lease("b", 1111, 60).expect("take over"));
        assert!(
            !a.try_lease("a", 1120, 60)
                .expect("a is back but b holds it")
        );
        assert!(b.try_lease("b", 1150, 60).expect("renew"));
    }
}
