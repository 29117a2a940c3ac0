//! `arrival.json` of an evidence bundle: by which route each envelope reached the aggregator
//! (docs/carry.md, "By which route evidence arrived"): uploaded by the probe that made it,
//! relayed by another probe (with that probe's key), carried in an export file, or imported
//! from OONI's data. A reader of a shutdown's bundle sees that its evidence came out while the
//! network was cut, and which way.
//!
//! Information only: the aggregator recorded the route, and nothing in the bundle signs it (a
//! relay's header is checked when the upload arrives and not kept), so `vantage verify` shows
//! it as a note and checks nothing of it, and reads bundles made before this file existed as
//! before (docs/transparency.md, "Evidence bundles").

use std::io::{self, Write};

use serde::Serialize;

/// What `arrival.json` says of itself, for a reader who opens it without the docs.
pub const NOTE: &str = "How each envelope reached the aggregator, as the aggregator recorded it (docs/carry.md): upload (the probe that made it sent it), relay (another probe sent it; relayed_by is that probe's key), file (an operator stored an export file), import (OONI's data). Information only: no signature in this bundle covers it.";

/// The route of one envelope, as the store gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Routed {
    /// The route's name (`upload`, `relay`, `file`, `import`).
    pub route: String,
    /// The relaying probe's key, for a relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relayed_by: Option<String>,
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'a str,
    #[serde(flatten)]
    routed: &'a Routed,
}

/// Streams `arrival.json`: the note, then one line per envelope (`id`, `route` and, for a
/// relay, `relayed_by`), in the bundle's order; an envelope whose route the store did not give
/// is left out (a row deleted while the bundle was planned).
pub fn write<'a>(
    w: &mut dyn Write,
    envelopes: impl Iterator<Item = (&'a str, Option<&'a Routed>)>,
) -> io::Result<()> {
    write!(
        w,
        "{{\n  \"note\": {},\n  \"envelopes\": [",
        serde_json::to_string(NOTE).map_err(io::Error::other)?
    )?;
    let mut first = true;
    for (id, routed) in envelopes {
        let Some(routed) = routed else { continue };
        w.write_all(if first { b"\n    " } else { b",\n    " })?;
        serde_json::to_writer(&mut *w, &Entry { id, routed }).map_err(io::Error::other)?;
        first = false;
    }
    w.write_all(b"\n  ]\n}\n")
}

/// In plain words, how the envelopes of a bundle arrived, to follow "This bundle holds ": `36
/// measurements: 30 uploaded by the probes that made them, 4 relayed by 1 other probe, 2
/// carried in an export file.`
pub fn words<'a>(routes: impl Iterator<Item = &'a Routed>) -> String {
    let mut counts = [0usize; 4];
    let mut relayers = std::collections::BTreeSet::new();
    let mut total = 0;
    for r in routes {
        total += 1;
        let slot = crate::store::Route::NAMES
            .iter()
            .position(|n| *n == r.route)
            .unwrap_or(0);
        counts[slot] += 1;
        if let Some(k) = &r.relayed_by {
            relayers.insert(k.as_str());
        }
    }
    let mut parts = Vec::new();
    if counts[0] > 0 {
        parts.push(format!(
            "{} uploaded by the probes that made them",
            counts[0]
        ));
    }
    if counts[1] > 0 {
        let by = match relayers.len() {
            1 => "1 other probe".to_string(),
            n => format!("{n} other probes"),
        };
        parts.push(format!("{} relayed by {by}", counts[1]));
    }
    if counts[2] > 0 {
        parts.push(format!("{} carried in an export file", counts[2]));
    }
    if counts[3] > 0 {
        parts.push(format!("{} imported from OONI's data", counts[3]));
    }
    match total {
        0 => "no measurement whose route is recorded.".into(),
        1 => format!("1 measurement: {}.", parts.join(", ")),
        n => format!("{n} measurements: {}.", parts.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(route: &str, by: Option<&str>) -> Routed {
        Routed {
            route: route.into(),
            relayed_by: by.map(str::to_string),
        }
    }

    #[test]
    fn each_envelope_is_listed_with_its_route_and_the_file_reads_as_json() {
        let (up, relay) = (routed("upload", None), routed("relay", Some("KEY+/=")));
        let mut out = Vec::new();
        write(
            &mut out,
            [("a", Some(&up)), ("b", Some(&relay)), ("gone", None)].into_iter(),
        )
        .expect("written");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["note"], NOTE);
        assert_eq!(
            v["envelopes"],
            serde_json::json!([
                {"id": "a", "route": "upload"},
                {"id": "b", "route": "relay", "relayed_by": "KEY+/="},
            ])
        );
        let mut empty = Vec::new();
        write(&mut empty, std::iter::empty()).expect("written");
        let v: serde_json::Value = serde_json::from_slice(&empty).expect("json");
        assert_eq!(v["envelopes"], serde_json::json!([]));
    }

    #[test]
    fn the_words_count_each_route_and_the_relaying_probes() {
        let all = [
            routed("upload", None),
            routed("upload", None),
            routed("relay", Some("k1")),
            routed("relay", Some("k2")),
            routed("relay", Some("k1")),
            routed("file", None),
            routed("something newer", None),
        ];
        assert_eq!(
            words(all.iter()),
            "7 measurements: 3 uploaded by the probes that made them, 3 relayed by 2 other probes, 1 carried in an export file."
        );
        assert_eq!(
            words([routed("import", None)].iter()),
            "1 measurement: 1 imported from OONI's data."
        );
        assert_eq!(
            words(std::iter::empty()),
            "no measurement whose route is recorded."
        );
    }
}
