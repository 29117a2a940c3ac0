//! Bulk exports: the stored envelopes as JSONL (anyone can verify each line), or one CSV row of
//! columns per measurement. Used by `vantage-aggregator export` and `GET /api/v1/export`.

use std::io::{self, Write};

use crate::api::csv_line::{Cell, csv_line};
use crate::store::{DbError, Query, Storage};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Stored envelopes, one per line.
    Jsonl,
    /// Columns, with a header line.
    Csv,
}

impl Format {
    /// `jsonl` or `csv`.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// Export errors.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Writing the output failed.
    #[error("cannot write the export: {0}")]
    Io(#[from] io::Error),
}

/// The CSV header.
pub const CSV_HEADER: &str = "id,source,probe_cc,probe_asn,test_name,input,measured_at,blocking,accessible,confirmed,rule_set";

/// Rows read from storage at a time: an export holds one page, however many rows it has.
const PAGE_ROWS: usize = 500;

/// Writes up to `q.limit` measurements matching `q` in `format`, a page at a time; returns
/// how many.
pub fn export(
    storage: &dyn Storage,
    q: &Query,
    format: Format,
    out: &mut dyn Write,
) -> Result<usize, ExportError> {
    if format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut page = q.clone();
    let mut written = 0;
    while written < q.limit {
        page.limit = PAGE_ROWS.min(q.limit - written);
        let rows = storage.query(&page)?;
        write_rows(storage, &rows, format, out)?;
        written += rows.len();
        match rows.last() {
            Some(last) if rows.len() == page.limit => page.after = Some(last.cursor.clone()),
            _ => break,
        }
    }
    Ok(written)
}

/// `envelope` on one line. Signed envelopes are compact already; an OONI measurement imported
/// from an indented document is stored as received, with its line breaks. In JSON a raw line
/// break can only stand between tokens (RFC 8259 section 7: inside a string it must be
/// escaped), so writing it as a space keeps the document the same value on one JSONL line.
fn one_line(envelope: &str) -> std::borrow::Cow<'_, str> {
    if envelope.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(envelope.replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(envelope)
    }
}

fn write_rows(
    storage: &dyn Storage,
    rows: &[crate::store::Found],
    format: Format,
    out: &mut dyn Write,
) -> Result<(), ExportError> {
    for row in rows {
        match format {
            Format::Jsonl => {
                if let Some(envelope) = storage.envelope(&row.id)? {
                    writeln!(out, "{}", one_line(&envelope))?;
                }
            }
            Format::Csv => {
                let blocking = row
                    .blocking
                    .as_ref()
                    .map(|b| b.as_str().map_or(b.to_string(), str::to_string))
                    .unwrap_or_default();
                // Every string a probe sent is a text cell, guarded against formulas.
                let line = csv_line(&[
                    Cell::text(&row.id),
                    Cell::text(row.source.as_str()),
                    Cell::text(&row.probe_cc),
                    Cell::text(&row.probe_asn),
                    Cell::text(&row.test_name),
                    Cell::text(row.input.as_deref().unwrap_or_default()),
                    Cell::text(&row.measured_at),
                    Cell::owned(blocking),
                    Cell::Number(row.accessible.map(|a| a.to_string()).unwrap_or_default()),
                    Cell::number(row.confirmed),
                    Cell::text(row.rule_set.as_deref().unwrap_or_default()),
                ]);
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_indented_document_is_exported_as_one_line_with_the_same_value() {
        let indented = "{\r\n  \"a\": \"x\\ny\",\n  \"b\": [1,\n 2]\n}";
        let line = one_line(indented);
        assert!(!line.contains(['\n', '\r']), "{line}");
        let before: serde_json::Value = serde_json::from_str(indented).expect("json");
        let after: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(before, after);
        assert!(matches!(
            one_line("{\"a\":1}"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
