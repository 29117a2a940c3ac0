//! Reading OONI's published measurements as a stream: one file at a time, one measurement at a
//! time, each as the bytes it has in the file.
//!
//! OONI publishes its archive as gzipped JSON Lines, one measurement per line (OONI spec
//! df-000-base, "Data format"), in trees by day, country and test (`raw/YYYYMMDD/HH/CC/TEST/`
//! in its S3 bucket, `jsonl/TEST/CC/YYYYMMDD/` in older copies). OONI's tools and tests also
//! hold single documents (indented) and arrays of them. [`each_measurement`] reads all three
//! from any reader with a bound on one measurement's size, so a file of any size is read in the
//! memory of its largest measurement; [`Walk`] lists a tree in sorted order, lazily, so a tree
//! of any number of files is never listed whole.
//!
//! The reports of ooniprobe 1.x (2012 to 2016) are YAML documents, one header and one entry per
//! input (OONI spec df-000-base, "YAML data format"); [`yaml_report`] names what such a file
//! is, so that it is refused with one message instead of one per line.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The default bound on one measurement's bytes (a line of JSONL, an element of an array, a
/// document). OONI's measurements are a few KB to a few hundred KB (web_connectivity keeps a
/// response body of at most 1 MiB, OONI spec ts-017-web-connectivity); a line longer than this
/// is skipped with its length, never held whole.
pub const MAX_MEASUREMENT_BYTES: usize = 16 << 20;

/// Where a measurement is in its file, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The 1-based line a JSONL measurement or a document starts on.
    Line(u64),
    /// The 0-based index of an element of a top-level JSON array.
    Element(u64),
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Line(n) => write!(f, "{n}"),
            At::Element(i) => write!(f, "[{i}]"),
        }
    }
}

/// Why a file could not be read to its end: not gzip, truncated, not JSON at all, a syntax
/// error an array or document cannot be resumed after. `at` is where, when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Unreadable {
    /// The measurement being read when it happened.
    pub at: Option<At>,
    /// What went wrong.
    pub reason: String,
}

impl Unreadable {
    fn new(at: Option<At>, reason: impl Into<String>) -> Self {
        Unreadable {
            at,
            reason: reason.into(),
        }
    }

    /// `SOURCE:AT: reason`, or `SOURCE: reason` when the place is not known.
    pub fn located(&self, source: &str) -> String {
        match self.at {
            Some(at) => format!("{source}:{at}: {}", self.reason),
            None => format!("{source}: {}", self.reason),
        }
    }
}

/// How [`each_measurement`] ended early.
#[derive(Debug)]
pub enum Stop<E> {
    /// The callback returned this error.
    Caller(E),
    /// The rest of the file could not be read.
    Unreadable(Unreadable),
}

impl<E> From<Unreadable> for Stop<E> {
    fn from(u: Unreadable) -> Self {
        Stop::Unreadable(u)
    }
}

/// How a file's measurements are laid out, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `*.jsonl`: one measurement per line, whatever the first line looks like.
    Lines,
    /// `*.json` or a name that says nothing: one document, an array, or JSONL, as the content
    /// shows.
    Any,
    /// `*.yaml`, `*.yamloo`: a report of ooniprobe 1.x.
    Yaml,
}

/// What a file name says: its layout and whether it is gzipped; `None` for a name an archive
/// import does not take (`*.jsonl`, `*.json`, `*.yaml`, `*.yamloo`, each optionally `.gz`).
pub fn kind_of(path: &Path) -> Option<(Layout, bool)> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let (stem, gz) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (name.as_str(), false),
    };
    let layout = if stem.ends_with(".jsonl") {
        Layout::Lines
    } else if stem.ends_with(".json") {
        Layout::Any
    } else if stem.ends_with(".yaml") || stem.ends_with(".yamloo") {
        Layout::Yaml
    } else {
        return None;
    };
    Some((layout, gz))
}

/// Opens `path` as a buffered stream of its content, gunzipped when `gz` (every member, as
/// `gzip -d` does with concatenated files, RFC 1952 section 2.2).
pub fn open(path: &Path, gz: bool) -> io::Result<Box<dyn BufRead>> {
    let mut file = BufReader::with_capacity(256 << 10, File::open(path)?);
    // RFC 1952 section 2.3.1: every member starts with ID1 ID2 = 1f 8b. Checked here so that a
    // short file that is not gzip is not taken for a truncated one.
    if gz && !file.fill_buf()?.starts_with(b"\x1f\x8b") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not gzip: it does not start with gzip's magic bytes (1f 8b)",
        ));
    }
    Ok(if gz {
        Box::new(BufReader::with_capacity(
            256 << 10,
            flate2::bufread::MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(file)
    })
}

/// The reason for an error while reading: a gzip stream that ends early or is not gzip gets
/// words a user recognises; anything else keeps the system's message.
pub fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    if text.starts_with("not gzip") {
        text
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("truncated: the data ends in the middle ({text})")
    } else if text.contains("gzip header") {
        format!("not gzip ({text})")
    } else if text.contains("deflate") {
        format!("corrupt gzip ({text})")
    } else {
        format!("cannot read: {text}")
    }
}

/// Reads every measurement of `reader`, calling `each` with where it is and its bytes as they
/// are in the file (a line without its newline, an element or document as written), or why
/// it cannot be one (too long, not UTF-8, a line that is not JSON). Returns early when `each`
/// fails, or when the rest cannot be read ([`Unreadable`]); whatever `each` was given before
/// stays given.
///
/// The layout is taken from the content unless `layout` is [`Layout::Lines`]: a file whose
/// first character is `[` is an array, read an element at a time; one whose first line is a
/// whole JSON value is JSONL; otherwise it is a document (or several, one after another).
/// Anything that does not start with `{` or `[` is not JSON, and the file is unreadable.
pub fn each_measurement<R, E, F>(
    mut reader: R,
    layout: Layout,
    max: usize,
    mut each: F,
) -> Result<(), Stop<E>>
where
    R: BufRead,
    F: FnMut(At, Result<&str, String>) -> Result<(), E>,
{
    let mut skipped_lines = 0u64;
    let first = skip_blank(&mut reader, &mut skipped_lines)
        .map_err(|e| Unreadable::new(None, io_reason(&e)))?;
    let Some(first) = first else {
        return Ok(());
    };
    if first != b'{' && first != b'[' {
        return Err(Unreadable::new(None, not_json_start(&mut reader)).into());
    }
    if first == b'[' && layout != Layout::Lines {
        return each_element(reader, max, &mut each);
    }
    let mut buf = Vec::new();
    let mut line_no = skipped_lines + 1;
    if layout != Layout::Lines {
        // One line decides between JSONL and an indented document.
        let got = bounded_line(&mut reader, &mut buf, max)
            .map_err(|e| Unreadable::new(Some(At::Line(line_no)), io_reason(&e)))?;
        if let Some(Line::Whole) = got
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&buf)
            && e.is_eof()
        {
            let start = std::mem::take(&mut buf);
            return each_document(start, reader, skipped_lines, max, &mut each);
        }
        deliver(got, &buf, line_no, max, &mut each).map_err(Stop::Caller)?;
        line_no += 1;
    }
    loop {
        let got = bounded_line(&mut reader, &mut buf, max)
            .map_err(|e| Unreadable::new(Some(At::Line(line_no)), io_reason(&e)))?;
        if got.is_none() {
            return Ok(());
        }
        deliver(got, &buf, line_no, max, &mut each).map_err(Stop::Caller)?;
        line_no += 1;
    }
}

/// Gives one line to `each`, unless it is blank.
fn deliver<E, F>(got: Option<Line>, buf: &[u8], n: u64, max: usize, each: &mut F) -> Result<(), E>
where
    F: FnMut(At, Result<&str, String>) -> Result<(), E>,
{
    let at = At::Line(n);
    match got {
        None => Ok(()),
        Some(Line::TooLong(len)) => each(
            at,
            Err(format!(
                "longer than the bound of {max} bytes ({len} bytes); skipped unread"
            )),
        ),
        Some(Line::Whole) => match std::str::from_utf8(buf) {
            Ok(text) if text.trim().is_empty() => Ok(()),
            Ok(text) => each(at, Ok(text)),
            Err(e) => each(at, Err(format!("not UTF-8: {e}"))),
        },
    }
}

/// What [`bounded_line`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// The line, without its newline (`\n` or `\r\n`), is in the buffer.
    Whole,
    /// The line was longer than the bound; it was read past, never held, and this is its
    /// length.
    TooLong(u64),
}

/// Reads one line into `buf` (cleared first) unless it is longer than `max` bytes; `None` at
/// the end of the stream.
fn bounded_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<Line>> {
    buf.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = r.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(Line::Whole));
    }
    if buf.len() <= max {
        // The last line, without a newline.
        return Ok(Some(Line::Whole));
    }
    let mut len = buf.len() as u64;
    buf.clear();
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                len += i as u64;
                r.consume(i + 1);
                break;
            }
            None => {
                let n = chunk.len();
                len += n as u64;
                r.consume(n);
            }
        }
    }
    Ok(Some(Line::TooLong(len)))
}

/// Skips whitespace (and a UTF-8 byte order mark), counting the newlines; the first other
/// byte, left unread, or `None` at the end.
fn skip_blank<R: BufRead>(r: &mut R, newlines: &mut u64) -> io::Result<Option<u8>> {
    let bom = b"\xEF\xBB\xBF";
    if r.fill_buf()?.starts_with(bom) {
        r.consume(bom.len());
    }
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(None);
        }
        let mut i = 0;
        while i < chunk.len() && chunk[i].is_ascii_whitespace() {
            *newlines += u64::from(chunk[i] == b'\n');
            i += 1;
        }
        if i < chunk.len() {
            let b = chunk[i];
            r.consume(i);
            return Ok(Some(b));
        }
        r.consume(i);
    }
}

/// Why content that starts with neither `{` nor `[` is not JSON, naming what it looks like.
fn not_json_start<R: BufRead>(r: &mut R) -> String {
    let head: Vec<u8> = match r.fill_buf() {
        Ok(chunk) => chunk.iter().take(16).copied().collect(),
        Err(e) => return io_reason(&e),
    };
    if head.starts_with(b"---") || head.starts_with(b"#") {
        "not JSON: it starts as a YAML document does (ooniprobe 1.x wrote YAML reports)".into()
    } else if head.starts_with(b"\x1f\x8b") {
        "not JSON: it is gzip-compressed, but its name does not end in .gz".into()
    } else {
        let shown: String = head
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    (b as char).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect();
        format!("not JSON: a measurement starts with {{ or [, this starts with \"{shown}\"")
    }
}

/// A reader that counts what passes and refuses to give more than `max` bytes since the last
/// mark: the bound on one element or document, which serde_json would otherwise buffer whole.
struct Metered<R> {
    inner: R,
    since_mark: Rc<Cell<u64>>,
    newlines: Rc<Cell<u64>>,
    max: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.since_mark.get() > self.max {
            return Err(io::Error::other(format!(
                "longer than the bound of {} bytes; the rest of the file is not read",
                self.max
            )));
        }
        let n = self.inner.read(buf)?;
        self.since_mark.set(self.since_mark.get() + n as u64);
        let lines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        self.newlines.set(self.newlines.get() + lines);
        Ok(n)
    }
}

/// The reason of a serde_json error met while reading an array or documents.
fn json_reason(e: &serde_json::Error) -> String {
    if e.is_io() {
        // serde_json's text for an I/O error is the error's own.
        let text = e.to_string();
        if text.contains("longer than the bound") {
            text
        } else {
            io_reason(&io::Error::new(
                if e.is_eof() {
                    io::ErrorKind::UnexpectedEof
                } else {
                    io::ErrorKind::Other
                },
                text,
            ))
        }
    } else if e.is_eof() {
        format!("truncated: the JSON ends in the middle ({e})")
    } else {
        format!("not JSON: {e}")
    }
}

/// Reads a top-level array an element at a time.
fn each_element<R, E, F>(reader: R, max: usize, each: &mut F) -> Result<(), Stop<E>>
where
    R: BufRead,
    F: FnMut(At, Result<&str, String>) -> Result<(), E>,
{
    let since_mark = Rc::new(Cell::new(0));
    let metered = Metered {
        inner: reader,
        since_mark: since_mark.clone(),
        newlines: Rc::new(Cell::new(0)),
        max: max as u64,
    };
    let mut de = serde_json::Deserializer::from_reader(metered);
    let index = Cell::new(0u64);
    let mut stopped = None;
    let seed = Elements {
        each,
        since_mark: &since_mark,
        index: &index,
        stopped: &mut stopped,
    };
    let result = seed.deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = stopped {
        return Err(Stop::Caller(e));
    }
    result.map_err(|e| {
        // An error after the last element (the closing bracket, trailing text) has no element.
        let at = Some(At::Element(index.get()));
        Stop::Unreadable(Unreadable::new(at, json_reason(&e)))
    })
}

/// The visitor that hands each element of an array to the callback as it is read.
struct Elements<'a, E, F> {
    each: &'a mut F,
    since_mark: &'a Cell<u64>,
    index: &'a Cell<u64>,
    stopped: &'a mut Option<E>,
}

impl<'de, E, F> DeserializeSeed<'de> for Elements<'_, E, F>
where
    F: FnMut(At, Result<&str, String>) -> Result<(), E>,
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E, F> Visitor<'de> for Elements<'_, E, F>
where
    F: FnMut(At, Result<&str, String>) -> Result<(), E>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of measurements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.since_mark.set(0);
            let Some(raw) = seq.next_element::<Box<RawValue>>()? else {
                return Ok(());
            };
            let i = self.index.get();
            if let Err(e) = (self.each)(At::Element(i), Ok(raw.get())) {
                *self.stopped = Some(e);
                return Err(A::Error::custom("stopped by the caller"));
            }
            self.index.set(i + 1);
        }
    }
}

/// Reads one document after another (most files hold one, indented), `start` being the bytes
/// of the first line already read.
fn each_document<R, E, F>(
    start: Vec<u8>,
    rest: R,
    skipped_lines: u64,
    max: usize,
    each: &mut F,
) -> Result<(), Stop<E>>
where
    R: BufRead,
    F: FnMut(At, Result<&str, String>) -> Result<(), E>,
{
    let since_mark = Rc::new(Cell::new(0));
    let newlines = Rc::new(Cell::new(0u64));
    let metered = Metered {
        inner: io::Cursor::new(start)
            .chain(io::Cursor::new(b"\n"))
            .chain(rest),
        since_mark: since_mark.clone(),
        newlines: newlines.clone(),
        max: max as u64,
    };
    let mut stream = serde_json::Deserializer::from_reader(metered).into_iter::<Box<RawValue>>();
    loop {
        let started = 1 + skipped_lines + newlines.get();
        match stream.next() {
            None => return Ok(()),
            Some(Ok(raw)) => {
                // The document ends on the line read so far; it starts as many lines earlier
                // as it spans.
                let spans = raw.get().bytes().filter(|&b| b == b'\n').count() as u64;
                let line = (1 + skipped_lines + newlines.get()).saturating_sub(spans);
                each(At::Line(line.max(started)), Ok(raw.get())).map_err(Stop::Caller)?;
                since_mark.set(0);
            }
            Some(Err(e)) => {
                let at = if e.line() > 0 {
                    At::Line(skipped_lines + e.line() as u64)
                } else {
                    At::Line(started)
                };
                return Err(Unreadable::new(Some(at), json_reason(&e)).into());
            }
        }
    }
}

/// A report of ooniprobe 1.x (YAML), described from its header: the test, and the software
/// that wrote it, read from the first lines (`test_name:`, `software_name:`,
/// `software_version:`); `None` parts are left out.
pub fn yaml_report(reader: impl BufRead) -> String {
    let (mut test, mut software, mut version) = (None, None, None);
    // The header is the first document, a few dozen lines; its keys are at the top level.
    for line in reader.split(b'\n').take(200) {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        let field = |key: &str| {
            line.strip_prefix(key)
                .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
                .filter(|v| !v.is_empty() && v != "null")
        };
        test = test.or_else(|| field("test_name:"));
        software = software.or_else(|| field("software_name:"));
        version = version.or_else(|| field("software_version:"));
        if line.trim() == "..." {
            break;
        }
    }
    let mut what = String::from("a YAML report of ooniprobe 1.x");
    match (test, software, version) {
        (Some(t), Some(s), Some(v)) => what.push_str(&format!(" ({t}, by {s} {v})")),
        (Some(t), _, _) => what.push_str(&format!(" ({t})")),
        _ => {}
    }
    format!(
        "{what}: refused, since only OONI's JSON measurements (data format 0.2.0, OONI spec \
         df-000-base) are imported; OONI's archive holds these reports converted to JSON"
    )
}

/// The files of a tree, in sorted order (by name at every level), read a directory at a time:
/// the files named as [`kind_of`] takes them, and nothing else. A directory reached through a
/// symbolic link is not followed (a link to a parent would never end); a linked file is read.
pub struct Walk {
    stack: Vec<std::vec::IntoIter<PathBuf>>,
}

impl Walk {
    /// The files under `root`.
    pub fn new(root: &Path) -> Self {
        Walk {
            stack: vec![vec![root.to_path_buf()].into_iter()],
        }
    }
}

impl Iterator for Walk {
    /// A file, or a directory that could not be listed and why.
    type Item = Result<PathBuf, (PathBuf, io::Error)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let top = self.stack.last_mut()?;
            let Some(path) = top.next() else {
                self.stack.pop();
                continue;
            };
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => return Some(Err((path, e))),
            };
            if meta.is_dir() {
                match std::fs::read_dir(&path).and_then(|d| {
                    d.map(|e| e.map(|e| e.path()))
                        .collect::<io::Result<Vec<_>>>()
                }) {
                    Ok(mut entries) => {
                        entries.sort();
                        self.stack.push(entries.into_iter());
                    }
                    Err(e) => return Some(Err((path, e))),
                }
                continue;
            }
            let is_file = meta.is_file()
                || (meta.file_type().is_symlink()
                    && std::fs::metadata(&path).is_ok_and(|m| m.is_file()));
            if is_file && kind_of(&path).is_some() {
                return Some(Ok(path));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The items read: (where, text or reason).
    type Got = Vec<(String, Result<String, String>)>;

    /// Every item of `text` read as `layout`: (where, text or reason), and how it ended.
    fn read(text: &str, layout: Layout) -> (Got, Option<String>) {
        read_max(text, layout, 1 << 20)
    }

    fn read_max(text: &str, layout: Layout, max: usize) -> (Got, Option<String>) {
        let mut got = Vec::new();
        let end = each_measurement(text.as_bytes(), layout, max, |at, item| {
            got.push((at.to_string(), item.map(str::to_string)));
            Ok::<(), ()>(())
        });
        let end = match end {
            Ok(()) => None,
            Err(Stop::Unreadable(u)) => Some(u.located("f")),
            Err(Stop::Caller(())) => Some("caller".into()),
        };
        (got, end)
    }

    #[test]
    fn jsonl_lines_are_given_as_they_are_with_their_numbers() {
        let (got, end) = read("{\"a\": 1}\r\n\n{oops\n  {\"b\":2}  \n", Layout::Any);
        assert_eq!(end, None);
        assert_eq!(
            got,
            [
                ("1".into(), Ok("{\"a\": 1}".into())),
                ("3".into(), Ok("{oops".into())),
                ("4".into(), Ok("  {\"b\":2}  ".into())),
            ]
        );
    }

    #[test]
    fn an_array_is_read_an_element_at_a_time_with_its_index() {
        let (got, end) = read(" [ {\"a\":1},\n {\"b\" : [2]}, 3 ]", Layout::Any);
        assert_eq!(end, None);
        assert_eq!(
            got,
            [
                ("[0]".into(), Ok("{\"a\":1}".into())),
                ("[1]".into(), Ok("{\"b\" : [2]}".into())),
                ("[2]".into(), Ok("3".into())),
            ]
        );
        // A syntax error inside element 2 ends the array there, after 0 and 1.
        let (got, end) = read("[{\"a\":1},{\"b\":2},{\"c\":,}]", Layout::Any);
        assert_eq!(got.len(), 2);
        let end = end.expect("unreadable");
        assert!(end.starts_with("f:[2]: not JSON"), "{end}");
    }

    #[test]
    fn an_indented_document_keeps_its_bytes_and_starting_line() {
        let doc = "{\n  \"a\": 1,\n  \"b\": [\n    2\n  ]\n}";
        let (got, end) = read(&format!("\n\n{doc}\n"), Layout::Any);
        assert_eq!(end, None);
        assert_eq!(got, [("3".into(), Ok(doc.into()))]);
        // Two in a row.
        let (got, _) = read(&format!("{doc}\n{doc}\n"), Layout::Any);
        assert_eq!(
            got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
            ["1", "7"]
        );
        // Cut short: what was whole is given, then where it stopped.
        let (got, end) = read(&format!("{doc}\n{{\n  \"a\": "), Layout::Any);
        assert_eq!(got.len(), 1);
        let end = end.expect("unreadable");
        assert!(end.starts_with("f:8: truncated"), "{end}");
    }

    #[test]
    fn a_jsonl_file_is_lines_even_when_a_line_is_an_unfinished_document() {
        let (got, end) = read("{\n{\"a\":1}\n", Layout::Lines);
        assert_eq!(end, None);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("1".into(), Ok("{".into())));
    }

    #[test]
    fn a_long_line_is_skipped_unread_and_the_next_is_read() {
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        let (got, end) = read_max(&format!("{{}}\n{long}\n{{\"b\":1}}"), Layout::Lines, 64);
        assert_eq!(end, None);
        assert_eq!(got[0], ("1".into(), Ok("{}".into())));
        assert_eq!(got[1].0, "2");
        let reason = got[1].1.clone().expect_err("too long");
        assert!(reason.contains("108 bytes"), "{reason}");
        assert_eq!(got[2], ("3".into(), Ok("{\"b\":1}".into())));
        // In an array, an element past the bound ends the file.
        let (got, end) = read_max(&format!("[{{}},{long}]"), Layout::Any, 64);
        assert_eq!(got.len(), 1);
        let end = end.expect("unreadable");
        assert!(end.contains("longer than the bound"), "{end}");
    }

    #[test]
    fn what_is_not_json_is_refused_whole() {
        for (text, says) in [
            (&b"---\ntest_name: x\n"[..], "YAML"),
            (b"\x1f\x8b\x08", "gzip"),
            (b"PK\x03\x04 zip", "starts with \"PK\\x03\\x04"),
        ] {
            let end = each_measurement(text, Layout::Lines, 1 << 20, |_, _| Err(()));
            let Err(Stop::Unreadable(u)) = end else {
                panic!("{says}: {end:?}");
            };
            let end = u.located("f");
            assert!(
                end.starts_with("f: not JSON") && end.contains(says),
                "{end}"
            );
        }
        assert_eq!(read(" \n\n", Layout::Any), (vec![], None));
        let (got, _) = read("{\"a\":1}\n\u{fffd}\n", Layout::Lines);
        assert_eq!(got.len(), 2);
        let (got, _) = each_bytes(b"{\"a\":1}\n{\"b\":\"\xff\"}\n");
        assert!(got[1].1.as_ref().is_err_and(|e| e.starts_with("not UTF-8")));
    }

    fn each_bytes(bytes: &[u8]) -> (Got, bool) {
        let mut got = Vec::new();
        let end = each_measurement(bytes, Layout::Lines, 1 << 20, |at, item| {
            got.push((at.to_string(), item.map(str::to_string)));
            Ok::<(), ()>(())
        });
        (got, end.is_ok())
    }

    #[test]
    fn gzip_truncated_or_not_gzip_is_named() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for i in 0..2000 {
            writeln!(gz, "{{\"n\":{i},\"pad\":\"{}\"}}", "y".repeat(i % 50)).expect("write");
        }
        let whole = gz.finish().expect("gzip");
        let dir = std::env::temp_dir().join(format!("vantage-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cut = dir.join("cut.jsonl.gz");
        std::fs::write(&cut, &whole[..whole.len() / 2]).expect("write");
        let mut n = 0;
        let end = each_measurement(
            open(&cut, true).expect("open"),
            Layout::Lines,
            1 << 20,
            |_, item| {
                item.expect("whole lines only");
                n += 1;
                Ok::<(), ()>(())
            },
        );
        let Err(Stop::Unreadable(u)) = end else {
            panic!("a truncated file must not end well: {end:?}");
        };
        assert!(u.reason.starts_with("truncated"), "{u:?}");
        assert!(n > 0 && n < 2000, "{n}");
        for (bytes, says) in [
            (&b"{}"[..], "not gzip"),
            (b"{\"a\":1}\n{\"a\":2}\n", "not gzip"),
            (b"", "not gzip"),
        ] {
            let f = dir.join("plain.jsonl.gz");
            std::fs::write(&f, bytes).expect("write");
            let e = open(&f, true).err().expect("not gzip");
            assert!(io_reason(&e).starts_with(says), "{e}");
        }
        // gzip's header, then not deflate.
        let mut bad = whole[..10].to_vec();
        bad.extend_from_slice(&[0xff; 64]);
        let f = dir.join("bad.jsonl.gz");
        std::fs::write(&f, &bad).expect("write");
        let end = each_measurement(
            open(&f, true).expect("open"),
            Layout::Lines,
            1 << 20,
            |_, _| Ok::<(), ()>(()),
        );
        let Err(Stop::Unreadable(u)) = end else {
            panic!("corrupt gzip must not end well: {end:?}");
        };
        assert!(u.reason.starts_with("corrupt gzip"), "{u:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_names_say_layout_and_compression() {
        let k = |n: &str| kind_of(Path::new(n));
        assert_eq!(k("a/2024.jsonl.gz"), Some((Layout::Lines, true)));
        assert_eq!(k("x.JSON"), Some((Layout::Any, false)));
        assert_eq!(k("r.yamloo.gz"), Some((Layout::Yaml, true)));
        assert_eq!(k("r.yaml"), Some((Layout::Yaml, false)));
        assert_eq!(k("notes.txt"), None);
        assert_eq!(k("x.gz"), None);
    }

    #[test]
    fn a_tree_is_walked_in_sorted_order_taking_only_measurement_files() {
        let dir = std::env::temp_dir().join(format!("vantage-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in [
            "b/2/x.jsonl",
            "b/1/z.json.gz",
            "a.yaml",
            "c/readme.txt",
            "b/10.jsonl",
        ] {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
            std::fs::write(&p, "").expect("file");
        }
        let got: Vec<String> = Walk::new(&dir)
            .map(|p| {
                p.expect("listed")
                    .strip_prefix(&dir)
                    .expect("under")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            got,
            ["a.yaml", "b/1/z.json.gz", "b/10.jsonl", "b/2/x.jsonl"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_yaml_report_is_named_from_its_header() {
        let text = "###\n# OONI Probe Report\n---\noptions: {}\nsoftware_name: ooniprobe\n\
                    software_version: 0.0.7.1-alpha\ntest_name: DNS tamper\n...\n---\ninput: x\n";
        let why = yaml_report(text.as_bytes());
        assert!(
            why.starts_with(
                "a YAML report of ooniprobe 1.x (DNS tamper, by ooniprobe 0.0.7.1-alpha): refused"
            ),
            "{why}"
        );
    }
}
