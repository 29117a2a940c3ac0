//! What crosses the wire between the probe and the aggregator, defined once for both: the
//! aggregator builds its answers with these types and the probe reads them with the same ones,
//! so the two cannot drift apart (README.md: "Upload protocol", the aggregator's routes, and
//! "Throttling" for the throughput server).
//!
//! The JSON is the one both sides have always spoken: field names, field order and the
//! omission of absent fields are part of the contract, and the tests at the bottom hold the
//! exact text the aggregator writes. Reading is lenient where an older or newer peer may
//! differ (a status this version does not know, an outcome without an id or a line number);
//! writing is exact.
//!
//! With the `utoipa` feature (the aggregator's build only) each type also describes itself as
//! an OpenAPI schema, for the aggregator's generated document; the probe's own build leaves it
//! out.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ooni::{Asn, CountryCode};

/// The answer to `POST /api/v1/measurements` (README.md, "Upload protocol"): one outcome per
/// line read, in line order, and why the request stopped early when it did.
///
/// ```text
/// {"results":[{"line":1,"id":"<hex>","status":"accepted"}, ...],"error":"...","incomplete":"..."}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct IngestAnswer {
    /// One outcome per line read. Lines the answer does not mention were not read.
    pub results: Vec<LineOutcome>,
    /// Why the body was not read to its end (too large, too slow, broken), next to a status
    /// other than 200; the outcomes are still those of the lines read before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the request held more lines than the aggregator reads from one: says which
    /// lines were not read, to be sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// What the aggregator did with one line of an upload (README.md, "Upload protocol"): accepted,
/// duplicate, or rejected with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct LineOutcome {
    /// The 1-based line of the body. The aggregator always numbers its outcomes; 0 (what a
    /// missing number reads as) names no line.
    #[serde(default)]
    pub line: u64,
    /// The measurement id, when the line was an envelope whose signature verified; `null`
    /// otherwise (the id is only known once the envelope verifies).
    #[serde(default)]
    pub id: Option<String>,
    /// What became of the line.
    pub status: Status,
    /// Why it was rejected: one short phrase, its first words saying the kind ("bad
    /// signature", "unknown key", "revoked key", "malformed: ...", "rate limited: ...", "time
    /// in the future ..."). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The measurement's leaf in the aggregator's transparency log (its position, from 0), for
    /// an accepted or duplicate line of an aggregator that keeps one. Absent otherwise, and
    /// from aggregators older than the log, which read and write answers without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_index: Option<u64>,
}

impl LineOutcome {
    /// A line refused for `reason`; `id` when its signature verified.
    pub fn rejected(line: u64, id: Option<String>, reason: String) -> LineOutcome {
        LineOutcome {
            line,
            id,
            status: Status::Rejected,
            reason: Some(reason),
            leaf_index: None,
        }
    }

    /// A line stored by this request (`new`) or already stored before it.
    pub fn stored(line: u64, id: String, new: bool) -> LineOutcome {
        LineOutcome {
            line,
            id: Some(id),
            status: if new {
                Status::Accepted
            } else {
                Status::Duplicate
            },
            reason: None,
            leaf_index: None,
        }
    }
}

/// The status of one line, written as the lowercase word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Status {
    /// Stored now.
    Accepted,
    /// Already stored (uploads are idempotent by id): the aggregator has it.
    Duplicate,
    /// Not stored; `reason` says why.
    Rejected,
    /// A status this version does not know, from a newer aggregator: read, so that the other
    /// outcomes of the answer still count, and then ignored (the line stays queued). Never
    /// written by this version.
    #[serde(other)]
    Unknown,
}

impl Status {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Duplicate => "duplicate",
            Status::Rejected => "rejected",
            Status::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `GET /api/v1/whoami` answers (README.md, the aggregator's routes): the caller's network
/// and country, which the aggregator looks up from the connection's address and then forgets.
/// `AS0` and `ZZ` when it does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// `AS<n>`.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "AS64500"))]
    pub probe_asn: Asn,
    /// Two letters.
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "IR"))]
    pub probe_cc: CountryCode,
}

/// What `GET /api/v1/throughput` answers: the throughput server's port (on the aggregator's
/// host) and the certificate the probe pins for the throttling test (README.md, "Throttling").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ServerInfo {
    /// TCP port of the throughput server.
    pub port: u16,
    /// Hex SHA-256 of its certificate.
    pub cert_sha256: String,
    /// The largest payload it sends.
    pub max_payload_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ingest answer as the aggregator wrote it before these types (captured from
    /// `vantage-aggregator serve`: two malformed lines; then an accepted, a duplicate and a
    /// refused line in the shape its code wrote them, `reason` left out when absent).
    const INGEST: &str = concat!(
        r#"{"results":["#,
        r#"{"line":1,"id":null,"status":"rejected","reason":"malformed: malformed envelope: expected value at line 1 column 1"},"#,
        r#"{"line":2,"id":null,"status":"rejected","reason":"malformed: malformed envelope: missing field `v` at line 1 column 7"},"#,
        r#"{"line":3,"id":"5f0c2a","status":"accepted"},"#,
        r#"{"line":4,"id":"77aa01","status":"duplicate"},"#,
        r#"{"line":5,"id":"77aa02","status":"rejected","reason":"unknown key"}"#,
        r#"]}"#
    );

    /// A request cut at the line limit, as the aggregator wrote it (captured, shortened to its
    /// last outcome).
    const INCOMPLETE: &str = concat!(
        r#"{"results":[{"line":20000,"id":null,"status":"rejected","reason":"malformed: malformed envelope: expected value at line 1 column 1"}],"#,
        r#""incomplete":"at most 20000 lines are read from one request: lines after line 20000 were not read; send them again"}"#
    );

    /// A body larger than `--max-body-mib 1`, as the aggregator wrote it (captured; its 413
    /// still carries the outcomes of the lines read).
    const TOO_LARGE: &str = concat!(
        r#"{"results":[{"line":1,"id":null,"status":"rejected","reason":"malformed: malformed envelope: expected value at line 1 column 1"}],"#,
        r#""error":"body larger than 1048576 bytes"}"#
    );

    /// whoami, captured from `vantage-aggregator serve` with no geolocation source, and with
    /// a prefix table.
    const WHOAMI: &[&str] = &[
        r#"{"probe_asn":"AS0","probe_cc":"ZZ"}"#,
        r#"{"probe_asn":"AS64500","probe_cc":"IT"}"#,
    ];

    #[test]
    fn todays_answers_parse_and_are_written_back_byte_for_byte() {
        for text in [INGEST, INCOMPLETE, TOO_LARGE] {
            let answer: IngestAnswer = serde_json::from_str(text).expect(text);
            assert_eq!(serde_json::to_string(&answer).expect("write"), text);
        }
        let answer: IngestAnswer = serde_json::from_str(INGEST).expect("ingest");
        let statuses: Vec<Status> = answer.results.iter().map(|o| o.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Rejected,
                Status::Rejected,
                Status::Accepted,
                Status::Duplicate,
                Status::Rejected
            ]
        );
        assert_eq!(answer.results[0].id, None);
        assert_eq!(answer.results[4].reason.as_deref(), Some("unknown key"));
        assert_eq!((answer.error, answer.incomplete), (None, None));

        for text in WHOAMI {
            let who: WhoAmI = serde_json::from_str(text).expect(text);
            assert_eq!(serde_json::to_string(&who).expect("write"), *text);
        }
        let who: WhoAmI = serde_json::from_str(WHOAMI[1]).expect("whoami");
        assert_eq!((who.probe_asn, who.probe_cc.as_str()), (Asn(64500), "IT"));
    }

    #[test]
    fn an_answer_built_as_the_aggregator_builds_it_reads_back_the_same() {
        let built = IngestAnswer {
            results: vec![
                LineOutcome::rejected(1, None, "bad signature".into()),
                LineOutcome::stored(2, "ab12".into(), true),
                LineOutcome::stored(3, "cd34".into(), false),
                LineOutcome::rejected(4, Some("ef56".into()), "revoked key".into()),
            ],
            error: Some("the body did not arrive in time: timed out".into()),
            incomplete: None,
        };
        let text = serde_json::to_string(&built).expect("write");
        assert_eq!(
            text,
            concat!(
                r#"{"results":[{"line":1,"id":null,"status":"rejected","reason":"bad signature"},"#,
                r#"{"line":2,"id":"ab12","status":"accepted"},{"line":3,"id":"cd34","status":"duplicate"},"#,
                r#"{"line":4,"id":"ef56","status":"rejected","reason":"revoked key"}],"#,
                r#""error":"the body did not arrive in time: timed out"}"#
            )
        );
        let back: IngestAnswer = serde_json::from_str(&text).expect("read");
        assert_eq!(back, built);

        let info = ServerInfo {
            port: 8443,
            cert_sha256: "ab".repeat(32),
            max_payload_bytes: 1 << 20,
        };
        let text = serde_json::to_string(&info).expect("write");
        assert_eq!(
            text,
            format!(
                r#"{{"port":8443,"cert_sha256":"{}","max_payload_bytes":1048576}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(
            serde_json::from_str::<ServerInfo>(&text).expect("read"),
            info
        );
    }

    #[test]
    fn reading_tolerates_what_a_newer_or_older_peer_may_send() {
        // A status this version does not know, an outcome without id or line, an extra field.
        let answer: IngestAnswer = serde_json::from_str(
            r#"{"results":[{"line":1,"id":"ab","status":"deferred","until":"tomorrow"},{"status":"accepted"}],"next":1}"#,
        )
        .expect("lenient");
        assert_eq!(answer.results[0].status, Status::Unknown);
        assert_eq!(answer.results[1].line, 0, "no line");
        assert_eq!(answer.results[1].id, None);
        // What is not an answer at all is refused.
        for bad in [
            r#"{}"#,
            r#"{"results":{}}"#,
            r#"{"results":[{"line":1}]}"#,
            r#"{"results":[{"line":-1,"status":"accepted"}]}"#,
            r#"{"results":[{"line":1,"status":7}]}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<IngestAnswer>(bad).is_err(), "{bad}");
        }
        for bad in [
            r#"{"probe_asn":"ASx","probe_cc":"IT"}"#,
            r#"{"probe_asn":"AS64500","probe_cc":"ITA"}"#,
            r#"{"probe_asn":"AS64500"}"#,
        ] {
            assert!(serde_json::from_str::<WhoAmI>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_leaf_index_is_written_only_when_there_is_one_and_read_when_absent() {
        let mut logged = LineOutcome::stored(2, "ab12".into(), true);
        logged.leaf_index = Some(41);
        let text = serde_json::to_string(&logged).expect("write");
        assert_eq!(
            text,
            r#"{"line":2,"id":"ab12","status":"accepted","leaf_index":41}"#
        );
        assert_eq!(
            serde_json::from_str::<LineOutcome>(&text).expect("read"),
            logged
        );
        // An older aggregator's outcome has none; an older probe ignores the field.
        let old: LineOutcome =
            serde_json::from_str(r#"{"line":2,"id":"ab12","status":"accepted"}"#).expect("old");
        assert_eq!(old.leaf_index, None);
        for bad in [r#""41""#, "-1", "1.5"] {
            let text = format!(r#"{{"line":2,"status":"accepted","leaf_index":{bad}}}"#);
            assert!(
                serde_json::from_str::<LineOutcome>(&text).is_err(),
                "{text}"
            );
        }
    }
}
