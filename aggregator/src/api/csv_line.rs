//! One CSV record as a line of text, written by the `csv` crate (RFC 4180 quoting: a field
//! holding a comma, a quote or a line break is quoted, and its quotes doubled), so that no value
//! a client stored, such as a URL with a comma or a quote, can shift another column. Shared by
//! the exports and the timeline's CSV.

use crate::store::model::Event;

/// `fields` as one CSV record, without its line ending.
pub fn csv_line<S: AsRef<[u8]>>(fields: &[S]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to memory cannot fail, and every record here has its own field count.
    let line = writer
        .write_record(fields)
        .ok()
        .and_then(|()| writer.into_inner().ok())
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if text.ends_with('\n') {
        text.pop();
    }
    text
}

/// The CSV header of [`csv_row`].
pub const CSV_HEADER: &str = "id,cc,asn,asns,kind,scope,layer,category,targets,start,end,status,suspected,confidence,probes,evidence,rate_kbps";

/// One event as a CSV line (lists joined with spaces).
pub fn csv_row(e: &Event) -> String {
    let fields = [
        e.id.clone(),
        e.entity.cc.clone(),
        e.entity.asn.clone().unwrap_or_default(),
        e.entity.asns.join(" "),
        e.kind.as_str().into(),
        serde_json::to_value(e.scope)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        e.layer.map(|l| l.as_str().to_string()).unwrap_or_default(),
        e.category.clone().unwrap_or_default(),
        e.targets.join(" "),
        e.start.clone(),
        e.end.clone().unwrap_or_default(),
        e.status.clone(),
        e.suspected.to_string(),
        e.confidence.to_string(),
        e.probes.to_string(),
        e.evidence.join(" "),
        e.rate_kbps.map(|r| r.to_string()).unwrap_or_default(),
    ];
    csv_line(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{Entity, Kind, Scope};

    #[test]
    fn fields_are_quoted_only_when_needed() {
        assert_eq!(csv_line(&["plain", "", "7"]), "plain,,7");
        assert_eq!(csv_line(&["a,b"]), "\"a,b\"");
        assert_eq!(csv_line(&["say \"hi\""]), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_line(&["two\nlines", "x"]), "\"two\nlines\",x");
        assert_eq!(csv_line(&["cr\rhere"]), "\"cr\rhere\"");
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let fields = ["http://x.example/?a=1,b=\"2\"", "", "line\r\nbreak", "é"];
        let line = csv_line(&fields);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let record = reader.records().next().expect("a record").expect("parses");
        assert_eq!(record.iter().collect::<Vec<_>>(), fields);
    }

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        let mut e = Event {
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
        };
        e.category = Some("NEWS, \"intl\"".into());
        let row = csv_row(&e);
        assert!(row.contains(",\"NEWS, \"\"intl\"\"\","), "{row}");
        assert_eq!(CSV_HEADER.split(',').count(), 17);
    }
}
