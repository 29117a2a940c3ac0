//! The bundle's `arrival.json` (docs/transparency.md, "Evidence bundles"): by which route the
//! aggregator says each envelope reached it (uploaded, relayed by another probe, carried in an
//! export file, imported from OONI's data; docs/carry.md). Nothing signed covers it, so
//! `vantage verify` says what it holds in one note and checks nothing of it: a bundle without
//! it (made before bundles carried it) or with a damaged one verifies as before.
//!
//! The note prints only counts and the route names this reader knows: a route name or a key is
//! whatever the file says, and a hostile bundle's text must not reach the reader's terminal.

use std::collections::{BTreeSet, HashSet};

use serde::Deserialize;

/// The routes this reader names, in the order the note lists them.
const ROUTES: [(&str, &str); 4] = [
    ("upload", "by upload"),
    ("relay", "relayed"),
    ("file", "by file"),
    ("import", "by import"),
];

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    id: String,
    #[serde(default)]
    route: String,
    #[serde(default)]
    relayed_by: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Arrival {
    envelopes: Vec<Entry>,
}

/// The note on `arrival.json` (its bytes, `None` when the bundle has none) for a bundle whose
/// envelopes are `envelopes`.
pub(super) fn note(bytes: Option<&[u8]>, envelopes: &HashSet<String>) -> String {
    const INFO: &str =
        "as the aggregator recorded it, in arrival.json; information only, no signature covers it";
    let Some(bytes) = bytes else {
        return "no arrival.json: this bundle does not say how its envelopes reached the \
                aggregator (bundles made before they did)"
            .into();
    };
    let arrival: Arrival = match serde_json::from_slice(bytes) {
        Ok(a) => a,
        // Where, not the parser's words, which may quote the file.
        Err(e) => {
            return format!(
                "arrival.json is not readable (line {}, column {}); nothing depends on it",
                e.line(),
                e.column()
            );
        }
    };
    let mut counts = [0usize; ROUTES.len()];
    let (mut unknown, mut strangers) = (0usize, 0usize);
    let mut relayers: BTreeSet<String> = BTreeSet::new();
    let mut listed: HashSet<&str> = HashSet::new();
    for e in &arrival.envelopes {
        if !envelopes.contains(&e.id) || !listed.insert(e.id.as_str()) {
            strangers += 1;
            continue;
        }
        match ROUTES.iter().position(|(name, _)| *name == e.route) {
            Some(i) => counts[i] += 1,
            None => unknown += 1,
        }
        if e.route == "relay"
            && let Some(k) = &e.relayed_by
        {
            relayers.insert(k.clone());
        }
    }
    let mut parts: Vec<String> = ROUTES
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|((name, words), n)| match (*name, relayers.len()) {
            ("relay", 1) => format!("{n} {words} by 1 probe"),
            ("relay", r) => format!("{n} {words} by {r} probes"),
            _ => format!("{n} {words}"),
        })
        .collect();
    if unknown > 0 {
        parts.push(format!("{unknown} by a route this vantage does not know"));
    }
    let unlisted = envelopes.len().saturating_sub(listed.len());
    if listed.is_empty() {
        parts.push("none of them is listed".into());
    } else if unlisted > 0 {
        parts.push(format!("{unlisted} not said"));
    }
    let mut text = format!(
        "of the {} envelopes: {} ({INFO})",
        envelopes.len(),
        parts.join(", ")
    );
    if strangers > 0 {
        text.push_str(&format!(
            "; {strangers} entries name no envelope of the bundle or one already named, ignored"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> HashSet<String> {
        (0..n).map(|i| format!("id{i}")).collect()
    }

    #[test]
    fn the_note_counts_each_route_and_the_relaying_probes() {
        let file = serde_json::json!({"note": "x", "envelopes": [
            {"id": "id0", "route": "upload"},
            {"id": "id1", "route": "relay", "relayed_by": "K1"},
            {"id": "id2", "route": "relay", "relayed_by": "K1"},
            {"id": "id3", "route": "file"},
        ]});
        let note = note(Some(file.to_string().as_bytes()), &ids(4));
        assert!(
            note.starts_with(
                "of the 4 envelopes: 1 by upload, 2 relayed by 1 probe, 1 by file (as the aggregator recorded it"
            ),
            "{note}"
        );
    }

    /// A hostile or damaged file changes nothing but the note, and none of its text reaches
    /// the terminal.
    #[test]
    fn what_the_file_says_is_counted_never_printed() {
        let hostile = "\u{1b}[2J<relay>";
        let file = serde_json::json!({"envelopes": [
            {"id": "id0", "route": hostile},
            {"id": "id1", "route": "relay", "relayed_by": hostile},
            {"id": "id1", "route": "upload"},
            {"id": hostile, "route": "upload"},
        ]});
        let note = note(Some(file.to_string().as_bytes()), &ids(3));
        assert!(
            !note.contains('\u{1b}') && !note.contains("<relay>"),
            "{note}"
        );
        assert!(
            note.contains(
                "of the 3 envelopes: 1 relayed by 1 probe, 1 by a route this vantage does not know, 1 not said"
            ),
            "{note}"
        );
        assert!(
            note.ends_with(
                "; 2 entries name no envelope of the bundle or one already named, ignored"
            ),
            "{note}"
        );

        assert!(note_of(b"not json").starts_with("arrival.json is not readable"));
        assert!(note_of(b"{\"envelopes\": 7}").starts_with("arrival.json is not readable"));
        assert!(
            note_of(b"{\"envelopes\": []}").contains("of the 2 envelopes: none of them is listed")
        );
        assert!(super::note(None, &ids(1)).starts_with("no arrival.json"));
    }

    fn note_of(bytes: &[u8]) -> String {
        note(Some(bytes), &ids(2))
    }
}
