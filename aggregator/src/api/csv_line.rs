//! One CSV record as a line of text, written by the `csv` crate (RFC 4180 quoting: a field
//! holding a comma, a quote or a line break is quoted, and its quotes doubled), so that no value
//! a client stored, such as a URL with a comma or a quote, can shift another column. Shared by
//! every CSV this project writes: the measurement export and the timeline's CSV.
//!
//! A text cell that a spreadsheet would run as a formula (OWASP "CSV Injection": one starting
//! with `=`, `+`, `-`, `@`, a tab, a carriage return or a line feed) is written with a single
//! quote `'` before it, the OWASP advice, so that a target or category any probe can submit
//! opens as text. Numbers this aggregator formats itself are [`Cell::Number`] and never
//! prefixed: a negative number is a number. README.md, "Timeline" and the export, says the same.

use std::borrow::Cow;

use crate::store::Route;
use crate::store::model::{Arrival, TimelineEvent};

/// One field of a CSV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell<'a> {
    /// Text that came from stored data (or might): guarded by [`formula_guard`].
    Text(Cow<'a, str>),
    /// A number or a boolean this aggregator formatted itself: written as it is.
    Number(String),
}

impl<'a> Cell<'a> {
    /// A text cell borrowing `text`.
    pub fn text(text: &'a str) -> Cell<'a> {
        Cell::Text(Cow::Borrowed(text))
    }

    /// A text cell owning `text`.
    pub fn owned(text: String) -> Cell<'static> {
        Cell::Text(Cow::Owned(text))
    }

    /// A number cell.
    pub fn number(value: impl ToString) -> Cell<'static> {
        Cell::Number(value.to_string())
    }
}

/// The first characters that make a spreadsheet read a cell as a formula (OWASP "CSV
/// Injection"); a line feed too, which some spreadsheets skip before reading on.
const FORMULA_STARTS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\n'];

/// `text` with a `'` before it when a spreadsheet would run it as a formula; as it is else.
pub fn formula_guard(text: &str) -> Cow<'_, str> {
    if text.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `fields` as one CSV record, without its line ending; every [`Cell::Text`] passes through
/// [`formula_guard`]. The one writer of every CSV line in the project.
pub fn csv_line(fields: &[Cell<'_>]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let guarded = fields.iter().map(|cell| match cell {
        Cell::Text(text) => formula_guard(text),
        Cell::Number(n) => Cow::Borrowed(n.as_str()),
    });
    // Writing to memory cannot fail, and every record here has its own field count.
    let line = writer
        .write_record(guarded.map(|c| c.into_owned()))
        .ok()
        .and_then(|()| writer.into_inner().ok())
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if text.ends_with('\n') {
        text.pop();
    }
    text
}

/// The CSV header of [`csv_row`]. The `arrival_` columns came last, after the event's own, so
/// that a reader of the older columns by position reads them as before: how many of its
/// evidence measurements came by each route ([`Route::NAMES`], in that order), the distinct
/// probes that relayed them, how many were received before the event ended, and when the first
/// and the last were received (docs/carry.md, "By which route evidence arrived").
pub const CSV_HEADER: &str = "id,cc,asn,asns,kind,scope,layer,category,targets,start,end,status,suspected,confidence,probes,evidence,rate_kbps,arrival_upload,arrival_relay,arrival_file,arrival_import,arrival_relayers,arrival_while_ongoing,arrival_first,arrival_last";

/// The `arrival_` fields of [`CSV_HEADER`]: numbers and times the aggregator wrote, never a
/// string a client sent, so nothing stored from one client reaches a spreadsheet cell here. A
/// route name this aggregator does not know (a newer one's row) counts as an upload, the route
/// that claims nothing, as [`Route::from_columns`] reads it.
fn arrival_fields(arrival: &[Arrival]) -> [String; 8] {
    let mut counts = [0u64; Route::NAMES.len()];
    let (mut relayers, mut while_ongoing) = (0u64, 0u64);
    let (mut first, mut last): (Option<&str>, Option<&str>) = (None, None);
    for a in arrival {
        // `NAMES[0]` is `upload`.
        let slot = Route::NAMES.iter().position(|n| *n == a.route).unwrap_or(0);
        counts[slot] = counts[slot].saturating_add(a.count);
        relayers = relayers.saturating_add(a.relayers);
        while_ongoing = while_ongoing.saturating_add(a.while_ongoing);
        // `YYYY-MM-DD HH:MM:SS` orders as text.
        first = Some(first.map_or(a.first.as_str(), |f| f.min(a.first.as_str())));
        last = Some(last.map_or(a.last.as_str(), |l| l.max(a.last.as_str())));
    }
    let [upload, relay, file, import] = counts.map(|n| n.to_string());
    [
        upload,
        relay,
        file,
        import,
        relayers.to_string(),
        while_ongoing.to_string(),
        first.unwrap_or_default().to_string(),
        last.unwrap_or_default().to_string(),
    ]
}

/// One event with how its evidence arrived as a CSV line (lists joined with spaces).
pub fn csv_row(timed: &TimelineEvent) -> String {
    let e = &timed.event;
    let [
        upload,
        relay,
        file,
        import,
        relayers,
        while_ongoing,
        first,
        last,
    ] = arrival_fields(&timed.arrival);
    let fields = [
        Cell::text(&e.id),
        Cell::text(&e.entity.cc),
        Cell::text(e.entity.asn.as_deref().unwrap_or_default()),
        Cell::owned(e.entity.asns.join(" ")),
        Cell::text(e.kind.as_str()),
        Cell::owned(
            serde_json::to_value(e.scope)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        ),
        Cell::text(e.layer.map(|l| l.as_str()).unwrap_or_default()),
        Cell::text(e.category.as_deref().unwrap_or_default()),
        Cell::owned(e.targets.join(" ")),
        Cell::text(&e.start),
        Cell::text(e.end.as_deref().unwrap_or_default()),
        Cell::text(&e.status),
        Cell::number(e.suspected),
        Cell::number(e.confidence),
        Cell::number(e.probes),
        Cell::owned(e.evidence.join(" ")),
        Cell::Number(e.rate_kbps.map(|r| r.to_string()).unwrap_or_default()),
        Cell::Number(upload),
        Cell::Number(relay),
        Cell::Number(file),
        Cell::Number(import),
        Cell::Number(relayers),
        Cell::Number(while_ongoing),
        Cell::owned(first),
        Cell::owned(last),
    ];
    csv_line(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{Entity, Event, Kind, Scope};

    /// `fields` as text cells, each as a client might have stored it.
    fn texts(fields: &[&str]) -> String {
        csv_line(&fields.iter().map(|f| Cell::text(f)).collect::<Vec<_>>())
    }

    /// The fields of one CSV line as a CSV reader reads them.
    fn parse(line: &str) -> Vec<String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let record = reader.records().next().expect("a record").expect("parses");
        record.iter().map(str::to_string).collect()
    }

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(texts(&["plain", "", "7"]), "plain,,7");
        assert_eq!(texts(&["a,b"]), "\"a,b\"");
        assert_eq!(texts(&["say \"hi\""]), "\"say \"\"hi\"\"\"");
        assert_eq!(texts(&["two\nlines", "x"]), "\"two\nlines\",x");
        assert_eq!(texts(&["cr\rhere"]), "\"cr\rhere\"");
    }

    /// Every OWASP formula start gets a `'` in a text cell, kept through RFC 4180 quoting;
    /// the same characters inside a cell, a number (negative ones too) and a `'` already
    /// there are left alone.
    #[test]
    fn a_text_cell_a_spreadsheet_would_run_opens_as_text() {
        let hostile = [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("\n=1", "'\n=1"),
        ];
        for (stored, shown) in hostile {
            let line = texts(&[stored, "next"]);
            assert_eq!(parse(&line), [shown, "next"], "{stored:?} as {line:?}");
        }
        assert_eq!(texts(&["=1"]), "'=1", "no quoting a spreadsheet would need");
        assert_eq!(
            texts(&["=a,b"]),
            "\"'=a,b\"",
            "the quote is inside RFC 4180's"
        );
        for plain in ["a.example", "x=1", "a-b", "'=1", "é=", " =1"] {
            assert_eq!(texts(&[plain]), plain, "{plain:?} unchanged");
        }
        let numbers = csv_line(&[Cell::number(-3), Cell::number(-0.5), Cell::text("-0.5")]);
        assert_eq!(numbers, "-3,-0.5,'-0.5");
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let fields = ["http://x.example/?a=1,b=\"2\"", "", "line\r\nbreak", "é"];
        assert_eq!(parse(&texts(&fields)), fields);
    }

    fn event() -> Event {
        Event {
            id: "0123456789abcdef".into(),
            entity: Entity {
                cc: "IR".into(),
                asn: Some("AS64500".into()),
                asns: Vec::new(),
            },
            kind: Kind::Blocking,
            scope: Scope::Service,
            layer: None,
            category: None,
            targets: vec!["a.example".into()],
            start: "2026-01-05 00:00:00".into(),
            end: None,
            status: "ongoing".into(),
            suspected: false,
            confidence: 0.9,
            probes: 5,
            evidence: Vec::new(),
            rate_kbps: None,
        }
    }

    fn arrival(route: &str, count: u64, first: &str, last: &str, while_ongoing: u64) -> Arrival {
        Arrival {
            route: route.into(),
            count,
            first: first.into(),
            last: last.into(),
            while_ongoing,
            relayers: u64::from(route == "relay"),
        }
    }

    /// The fields of `line` as a CSV reader reads them, by the header's names.
    fn read(line: &str) -> std::collections::HashMap<String, String> {
        let text = format!("{CSV_HEADER}\n{line}\n");
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let names: Vec<String> = reader
            .headers()
            .expect("header")
            .iter()
            .map(str::to_string)
            .collect();
        let record = reader.records().next().expect("a record").expect("parses");
        assert!(reader.records().next().is_none(), "one record: {line}");
        names
            .into_iter()
            .zip(record.iter().map(str::to_string))
            .collect()
    }

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        let mut e = event();
        e.category = Some("NEWS, \"intl\"".into());
        let row = csv_row(&TimelineEvent::new(e, Vec::new()));
        assert!(row.contains(",\"NEWS, \"\"intl\"\"\","), "{row}");
        assert_eq!(CSV_HEADER.split(',').count(), 25);
        assert!(
            CSV_HEADER.starts_with(
                "id,cc,asn,asns,kind,scope,layer,category,targets,start,end,status,suspected,confidence,probes,evidence,rate_kbps,"
            ),
            "the older columns keep their places"
        );
        for name in Route::NAMES {
            assert!(CSV_HEADER.contains(&format!(",arrival_{name},")), "{name}");
        }
    }

    /// Per route, how much came; all of it summed; the first and last received; and a route
    /// name stored by something else (a newer aggregator, an edited database), however
    /// hostile, counts as an upload and never reaches the line.
    #[test]
    fn the_arrival_columns_count_each_route_and_carry_no_stored_string() {
        let hostile = "=HYPERLINK(\"http://x.example\"),\"\n\r";
        let timed = TimelineEvent::new(
            event(),
            vec![
                arrival("file", 2, "2026-01-05 00:20:00", "2026-01-05 00:21:00", 2),
                arrival("relay", 3, "2026-01-05 00:05:00", "2026-01-05 00:30:00", 1),
                arrival("upload", 4, "2026-01-05 00:10:00", "2026-01-05 02:00:00", 0),
                arrival(hostile, 1, "2026-01-05 00:01:00", "2026-01-05 00:01:00", 1),
            ],
        );
        let line = csv_row(&timed);
        assert!(
            !line.contains("HYPERLINK") && !line.contains('\n'),
            "{line}"
        );
        let f = read(&line);
        assert_eq!(f["arrival_upload"], "5", "4 and the unknown route's 1");
        assert_eq!(f["arrival_relay"], "3");
        assert_eq!(f["arrival_file"], "2");
        assert_eq!(f["arrival_import"], "0");
        assert_eq!(f["arrival_relayers"], "1");
        assert_eq!(f["arrival_while_ongoing"], "4");
        assert_eq!(f["arrival_first"], "2026-01-05 00:01:00");
        assert_eq!(f["arrival_last"], "2026-01-05 02:00:00");
        assert_eq!(f["rate_kbps"], "", "the older columns as before");

        let none = read(&csv_row(&TimelineEvent::new(event(), Vec::new())));
        assert_eq!(
            ["upload", "relay", "file", "import"].map(|r| none[&format!("arrival_{r}")].clone()),
            ["0", "0", "0", "0"].map(String::from)
        );
        assert_eq!(
            (
                none["arrival_first"].as_str(),
                none["arrival_last"].as_str()
            ),
            ("", "")
        );
    }
}
