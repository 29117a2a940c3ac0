//! One CSV record as a line of text, written by the `csv` crate (RFC 4180 quoting: a field
//! holding a comma, a quote or a line break is quoted, and its quotes doubled), so that no value
//! a client stored, such as a URL with a comma or a quote, can shift another column. Shared by
//! the exports and the timeline's CSV.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
