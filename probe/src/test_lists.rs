//! Test lists in the Citizen Lab CSV format (`citizenlab/test-lists`, its `lists/*.csv`):
//! `url,category_code,category_description,date_added,source,notes`.
//!
//! The header must be exactly that, so a file of another kind is refused rather than half-read.
//! A bad row (wrong number of fields, a URL that cannot be measured) is reported with its file and
//! line and skipped; the rest of the list is still usable, because one typo in a volunteer's list
//! should not stop a measurement run. Citizen Lab's lists are CC BY-NC-SA 4.0: Vantage reads the
//! format and does not ship their lists.

use std::collections::BTreeSet;
use std::path::Path;

use url::Url;

/// The header of a Citizen Lab list.
pub const HEADER: [&str; 6] = [
    "url",
    "category_code",
    "category_description",
    "date_added",
    "source",
    "notes",
];

/// Lists compiled into the binary: (name, CSV text), from the repository's `test-lists/`.
/// They are what a probe measures when it has no list of its own, and what the aggregator
/// serves (signed) and checks a country's blocking against when its operator gives none.
pub const BUILTIN_LISTS: [(&str, &str); 4] = [
    ("global", include_str!("../../test-lists/global.csv")),
    ("ir", include_str!("../../test-lists/ir.csv")),
    ("ru", include_str!("../../test-lists/ru.csv")),
    ("tr", include_str!("../../test-lists/tr.csv")),
];

/// The built-in list called `name`.
pub fn builtin_list(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    BUILTIN_LISTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// A problem with a list, naming the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// The file could not be read.
    #[error("{file}: cannot read: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The file is not UTF-8.
    #[error("{file}:{line}: invalid UTF-8")]
    Utf8 {
        /// The file.
        file: String,
        /// 1-based line of the first invalid byte.
        line: usize,
    },
    /// The first line is not the Citizen Lab header.
    #[error("{file}:1: not a test list: the first line must be {}", HEADER.join(","))]
    Header {
        /// The file.
        file: String,
    },
    /// A list asked for by a name that cannot name a list.
    #[error("{name:?} is not a test list name: use a two-letter country code or global")]
    Name {
        /// The name as given.
        name: String,
    },
    /// One row is unusable and was skipped.
    #[error("{file}:{line}: {reason}")]
    Row {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One URL of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The URL, as written in the list.
    pub url: String,
    /// Citizen Lab category code, e.g. `NEWS`, `HUMR`.
    pub category_code: String,
    /// Its description.
    pub category_description: String,
    /// When it was added.
    pub date_added: String,
    /// Who added it.
    pub source: String,
    /// Free notes.
    pub notes: String,
    /// 1-based line in its file.
    pub line: usize,
}

/// A parsed list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestList {
    /// Usable entries, in file order.
    pub entries: Vec<Entry>,
}

impl TestList {
    /// Reads a list from a file. `Err` when the file as a whole is unusable; row problems come
    /// back beside the list.
    pub fn read(path: &Path) -> Result<(TestList, Vec<ListError>), ListError> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ListError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&file, &bytes)
    }

    /// Parses a list's bytes; `file` names it in errors.
    pub fn parse(file: &str, bytes: &[u8]) -> Result<(TestList, Vec<ListError>), ListError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ListError::Utf8 {
            file: file.to_string(),
            line: bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = with_header(text, &HEADER).ok_or_else(|| ListError::Header {
            file: file.to_string(),
        })?;
        let mut list = TestList::default();
        let mut problems = Vec::new();
        let mut lines = LineCounter::new(text);
        for record in reader.records() {
            let row = |line: u64, reason: String| ListError::Row {
                file: file.to_string(),
                line: usize::try_from(line).unwrap_or(usize::MAX),
                reason,
            };
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    problems.push(row(lines.line_of(e.position()), e.to_string()));
                    continue;
                }
            };
            let line = lines.line_of(record.position());
            if record.len() != HEADER.len() {
                problems.push(row(
                    line,
                    format!("expected {} fields, found {}", HEADER.len(), record.len()),
                ));
                continue;
            }
            let field = |i: usize| record.get(i).unwrap_or_default().trim().to_string();
            let url = field(0);
            if let Err(reason) = measurable(&url) {
                problems.push(row(line, reason));
                continue;
            }
            list.entries.push(Entry {
                url,
                category_code: field(1),
                category_description: field(2),
                date_added: field(3),
                source: field(4),
                notes: field(5),
                line: usize::try_from(line).unwrap_or(usize::MAX),
            });
        }
        Ok((list, problems))
    }

    /// Keeps the entries in `categories` (all when empty), without repeated URLs, at most `max`.
    pub fn select(&self, categories: &[String], max: Option<usize>) -> Vec<Entry> {
        let wanted: BTreeSet<String> = categories.iter().map(|c| c.to_ascii_uppercase()).collect();
        let mut seen = BTreeSet::new();
        self.entries
            .iter()
            .filter(|e| wanted.is_empty() || wanted.contains(&e.category_code.to_ascii_uppercase()))
            .filter(|e| seen.insert(e.url.clone()))
            .take(max.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }
}

/// The line each record of a CSV text starts on. The csv reader's own `Position::line` is
/// where it began reading the record, which is before the blank lines it skips and before the
/// `\n` of the `\r\n` that ended the row above: one line early or more (and it counts no lone
/// `\r`, which also ends a row). This counts the line breaks before the record's first byte
/// instead, going forward only, since records come in order.
pub(crate) struct LineCounter<'a> {
    bytes: &'a [u8],
    at: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        LineCounter {
            bytes: text.as_bytes(),
            at: 0,
            line: 1,
        }
    }

    /// The 1-based line of the record at `pos`; 0 when the reader gave no position.
    pub(crate) fn line_of(&mut self, pos: Option<&csv::Position>) -> u64 {
        let Some(pos) = pos else {
            return 0;
        };
        let mut start = usize::try_from(pos.byte())
            .unwrap_or(usize::MAX)
            .clamp(self.at, self.bytes.len());
        while self
            .bytes
            .get(start)
            .is_some_and(|b| matches!(b, b'\r' | b'\n'))
        {
            start += 1;
        }
        // A row ends at `\n`, `\r\n` or a lone `\r` (the csv reader's default terminator).
        let breaks = (self.at..start)
            .filter(|&i| match self.bytes[i] {
                b'\n' => true,
                b'\r' => self.bytes.get(i + 1) != Some(&b'\n'),
                _ => false,
            })
            .count();
        self.line += u64::try_from(breaks).unwrap_or(u64::MAX);
        self.at = start;
        self.line
    }
}

/// A CSV reader over `text` if its first line is exactly `header` (fields trimmed); rows may
/// have other lengths, so the caller can report them rather than fail the file. Shared by the
/// test-list and fingerprint readers, which both refuse a file of another kind outright.
pub(crate) fn with_header<'a>(text: &'a str, header: &[&str]) -> Option<csv::Reader<&'a [u8]>> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let ok = reader
        .headers()
        .is_ok_and(|h| h.iter().map(str::trim).eq(header.iter().copied()));
    ok.then_some(reader)
}

/// Whether `name` can name a list: `global`, or a country code as two lower-case ASCII
/// letters (ISO 3166-1 alpha-2, as `GET /api/v1/test-lists/{cc}` and the built-in lists use
/// them). A list name becomes a file name in the data directory (`lists/<name>.csv`), and the
/// names inside a fetched document are chosen by the aggregator, so nothing else is accepted:
/// no separator, no `..`, no upper case, no space.
pub fn is_list_name(name: &str) -> bool {
    name == "global" || (name.len() == 2 && name.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Why files could not be put in place.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {reason}")]
pub struct WriteError {
    /// The file (or temporary file) being written.
    pub path: String,
    /// Why (in the message, not as a source, so that a chain of errors does not say it twice).
    pub reason: std::io::Error,
}

/// Puts each `(file name, bytes)` in `dir` (created if needed): every file is first written
/// in full to a new temporary file in `dir` and flushed to disk, and only when all of them are
/// written are they renamed over their targets, each rename atomic (POSIX `rename(2)`). So a
/// failure leaves every target either as it was or complete, never half-written, and no
/// temporary file behind. A rename replaces a symbolic link at the target rather than writing
/// through it. File names must be plain names (no separator, no leading dot); anything else is
/// refused before anything is written.
pub fn replace_files(
    dir: &Path,
    files: &[(String, &[u8])],
) -> Result<Vec<std::path::PathBuf>, WriteError> {
    use std::io::Write as _;
    let fail = |path: &Path, reason: std::io::Error| WriteError {
        path: path.display().to_string(),
        reason,
    };
    for (name, _) in files {
        let plain = Path::new(name).file_name() == Some(std::ffi::OsStr::new(name.as_str()));
        if !plain || name.starts_with('.') {
            return Err(fail(
                &dir.join(name),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain file name"),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e))?;
    let mut temps: Vec<(std::path::PathBuf, std::path::PathBuf)> = Vec::new();
    let cleanup = |temps: &[(std::path::PathBuf, std::path::PathBuf)]| {
        for (temp, _) in temps {
            let _ = std::fs::remove_file(temp);
        }
    };
    // A random part, so that a temporary file left by a process killed mid-write (whose id may
    // come again) never blocks a later write.
    let mut nonce = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| fail(dir, std::io::Error::other("no randomness for a file name")))?;
    let nonce = hex::encode(nonce);
    for (n, (name, bytes)) in files.iter().enumerate() {
        let temp = dir.join(format!(".{name}.{nonce}.{n}.tmp"));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            });
        match written {
            Ok(()) => temps.push((temp, dir.join(name))),
            Err(e) => {
                // A temporary file create_new refused is someone else's: leave it.
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = std::fs::remove_file(&temp);
                }
                cleanup(&temps);
                return Err(fail(&temp, e));
            }
        }
    }
    let mut done = Vec::new();
    for (i, (temp, target)) in temps.iter().enumerate() {
        if let Err(e) = std::fs::rename(temp, target) {
            cleanup(&temps[i..]);
            return Err(fail(target, e));
        }
        done.push(target.clone());
    }
    // The renames themselves reach the disk with the directory.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(done)
}

/// `kind` of a signed test-list payload.
pub const SIGNED_LISTS_KIND: &str = "vantage-test-lists";

/// What `GET /api/v1/test-lists/{cc}` signs: list name (`ir`, `global`) to CSV text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedLists {
    /// Always [`SIGNED_LISTS_KIND`], so no other signed document can pass for lists.
    pub kind: String,
    /// The country asked for.
    pub cc: String,
    /// When the aggregator signed it.
    pub generated_at: String,
    /// Name to Citizen Lab CSV text.
    pub lists: std::collections::BTreeMap<String, String>,
}

/// Why fetched lists were refused.
#[derive(Debug, thiserror::Error)]
pub enum SignedListError {
    /// Not a signed envelope at all (a bare document, or not JSON).
    #[error("test lists refused: the document is not signed ({0})")]
    Unsigned(String),
    /// The signature does not verify, or the envelope is broken.
    #[error("test lists refused: {0}")]
    Envelope(crate::envelope::EnvelopeError),
    /// Signed by a key other than the aggregator's.
    #[error("test lists refused: signed by {found}, but the aggregator's key is {expected}")]
    WrongKey {
        /// The pinned key.
        expected: String,
        /// The signer.
        found: String,
    },
    /// A list inside has a name that cannot name a list (see [`is_list_name`]).
    #[error(
        "test lists refused: {name:?} is not a list name (only global or a two-letter lower-case country code); nothing was written"
    )]
    Name {
        /// The name, as the document has it.
        name: String,
    },
    /// Not a test-list document, or a list inside does not parse.
    #[error("test lists refused: {0}")]
    Content(String),
}

impl From<crate::envelope::EnvelopeError> for SignedListError {
    fn from(e: crate::envelope::EnvelopeError) -> Self {
        match e {
            crate::envelope::EnvelopeError::Malformed(why) => SignedListError::Unsigned(why),
            e => SignedListError::Envelope(e),
        }
    }
}

impl SignedLists {
    /// Verifies `line` (signature first, then the signer against `aggregator_key`) and its
    /// content: every list must have a list name ([`is_list_name`]) and parse. One bad list
    /// refuses the whole document, so a probe never keeps half of what an aggregator sent.
    pub fn verify(line: &str, aggregator_key: &str) -> Result<SignedLists, SignedListError> {
        let verified = crate::envelope::verify(line.trim())?;
        if verified.key != aggregator_key {
            return Err(SignedListError::WrongKey {
                expected: aggregator_key.to_string(),
                found: verified.key,
            });
        }
        let lists: SignedLists = serde_json::from_str(verified.measurement)
            .map_err(|e| SignedListError::Content(e.to_string()))?;
        if lists.kind != SIGNED_LISTS_KIND {
            return Err(SignedListError::Content(format!(
                "kind is {:?}",
                lists.kind
            )));
        }
        if let Some(name) = lists.lists.keys().find(|n| !is_list_name(n)) {
            return Err(SignedListError::Name { name: name.clone() });
        }
        for (name, text) in &lists.lists {
            TestList::parse(name, text.as_bytes())
                .map_err(|e| SignedListError::Content(e.to_string()))?;
        }
        Ok(lists)
    }
}

/// The lists a run measures, before any network I/O: files given by path, and lists by name
/// (`ir`, `global`), each from the data directory's `lists/` (imported or fetched) or else
/// compiled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListChoice {
    /// List files (Citizen Lab CSV).
    pub files: Vec<std::path::PathBuf>,
    /// List names, lower-case country codes or `global`.
    pub names: Vec<String>,
    /// Category codes to keep; all when empty.
    pub categories: Vec<String>,
    /// At most this many URLs.
    pub max: Option<usize>,
}

/// What [`ListChoice::load`] found.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The URLs to measure, without repeats.
    pub entries: Vec<Entry>,
    /// Rows skipped, each with its file and line.
    pub skipped: Vec<ListError>,
    /// Names with neither an imported nor a built-in list.
    pub missing: Vec<String>,
}

impl ListChoice {
    /// Reads the chosen lists; `data_dir/lists/<name>.csv` replaces the built-in list of that
    /// name. A file that cannot be used at all is an error, and so is a name that is not a list
    /// name ([`is_list_name`]), which would otherwise point outside `lists/`; a bad row is
    /// skipped and reported.
    pub fn load(&self, data_dir: &Path) -> Result<Loaded, ListError> {
        let mut all = TestList::default();
        let mut loaded = Loaded::default();
        let mut take = |(list, problems): (TestList, Vec<ListError>)| {
            all.entries.extend(list.entries);
            loaded.skipped.extend(problems);
        };
        for path in &self.files {
            take(TestList::read(path)?);
        }
        let mut names: Vec<String> = Vec::new();
        for name in &self.names {
            let name = name.to_ascii_lowercase();
            if !is_list_name(&name) {
                return Err(ListError::Name { name });
            }
            if !names.contains(&name) {
                names.push(name);
            }
        }
        for name in names {
            let imported = data_dir.join("lists").join(format!("{name}.csv"));
            if imported.exists() {
                take(TestList::read(&imported)?);
            } else if let Some(text) = builtin_list(&name) {
                take(TestList::parse(&name, text.as_bytes())?);
            } else {
                loaded.missing.push(name);
            }
        }
        loaded.entries = all.select(&self.categories, self.max);
        Ok(loaded)
    }
}

/// Whether a list URL can be measured: http or https with a host.
fn measurable(url: &str) -> Result<(), String> {
    let parsed = Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "invalid URL {url:?}: only http and https can be measured"
        ));
    }
    if parsed.host().is_none() {
        return Err(format!("invalid URL {url:?}: no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "url,category_code,category_description,date_added,source,notes\n";

    #[test]
    fn builtin_lists_parse_cleanly() {
        for (name, text) in BUILTIN_LISTS {
            let (list, problems) = TestList::parse(name, text.as_bytes()).expect("list");
            assert!(problems.is_empty(), "{name}: {problems:?}");
            assert!(list.entries.len() >= 5, "{name}");
        }
        assert!(builtin_list("IR").is_some());
        assert!(builtin_list("zz").is_none());
    }

    #[test]
    fn good_list_is_read_in_order() {
        let text = format!(
            "{HEAD}https://example.org/,NEWS,News Media,2024-01-01,vantage,\nhttp://example.net/a,\"HUMR\",Human Rights Issues,2024-01-02,vantage,\"a, b\"\n"
        );
        let (list, problems) = TestList::parse("x.csv", text.as_bytes()).expect("list");
        assert!(problems.is_empty());
        assert_eq!(list.entries.len(), 2);
        assert_eq!(list.entries[1].notes, "a, b");
        assert_eq!(list.entries[1].line, 3);
    }

    #[test]
    fn missing_header_names_file_and_line() {
        let err = TestList::parse("cc.csv", b"https://example.org/,NEWS,News,2024,x,\n")
            .expect_err("no header");
        assert_eq!(
            err.to_string(),
            "cc.csv:1: not a test list: the first line must be url,category_code,category_description,date_added,source,notes"
        );
    }

    #[test]
    fn bad_url_and_short_row_are_skipped_with_their_line() {
        let text = format!(
            "{HEAD}https://ok.example/,NEWS,News,2024,x,\nnot a url,NEWS,News,2024,x,\nftp://files.example/,FILE,File,2024,x,\nhttps://short.example/,NEWS\n"
        );
        let (list, problems) = TestList::parse("l.csv", text.as_bytes()).expect("list");
        assert_eq!(list.entries.len(), 1);
        let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(
            msgs[0].starts_with("l.csv:3: invalid URL \"not a url\""),
            "{msgs:?}"
        );
        assert!(
            msgs[1].starts_with("l.csv:4: invalid URL \"ftp://files.example/\""),
            "{msgs:?}"
        );
        assert_eq!(msgs[2], "l.csv:5: expected 6 fields, found 2");
    }

    #[test]
    fn blank_lines_and_windows_line_endings_do_not_shift_line_numbers() {
        let text = format!(
            "{HEAD}https://ok.example/,NEWS,News,2024,x,\nnot a url,NEWS,News,2024,x,\n\nhttps://b.example/,NEWS,N,1,x,\n"
        );
        let crlf = text.replace('\n', "\r\n");
        let cr = text.replace('\n', "\r");
        for (kind, text) in [("LF", &text), ("CRLF", &crlf), ("CR", &cr)] {
            let (list, problems) = TestList::parse("w.csv", text.as_bytes()).expect(kind);
            let lines: Vec<usize> = list.entries.iter().map(|e| e.line).collect();
            assert_eq!(lines, [2, 5], "{kind}");
            assert_eq!(
                problems[0].to_string(),
                "w.csv:3: invalid URL \"not a url\": relative URL without a base",
                "{kind}"
            );
        }
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let mut bytes = format!("{HEAD}https://ok.example/,NEWS,News,2024,x,\n").into_bytes();
        bytes.extend_from_slice(b"https://bad.example/\xff,NEWS,News,2024,x,\n");
        let err = TestList::parse("u.csv", &bytes).expect_err("utf-8");
        assert_eq!(err.to_string(), "u.csv:3: invalid UTF-8");
    }

    #[test]
    fn select_filters_by_category_dedupes_and_caps() {
        let text = format!(
            "{HEAD}https://a.example/,NEWS,N,1,x,\nhttps://b.example/,HUMR,H,1,x,\nhttps://a.example/,NEWS,N,1,x,\nhttps://c.example/,news,N,1,x,\n"
        );
        let (list, _) = TestList::parse("s.csv", text.as_bytes()).expect("list");
        let news: Vec<String> = list
            .select(&["news".into()], None)
            .into_iter()
            .map(|e| e.url)
            .collect();
        assert_eq!(news, ["https://a.example/", "https://c.example/"]);
        assert_eq!(list.select(&[], Some(2)).len(), 2);
    }

    #[test]
    fn only_global_and_two_lower_case_letters_name_a_list() {
        for good in ["global", "ir", "zz", "us"] {
            assert!(is_list_name(good), "{good}");
        }
        for bad in [
            "",
            "i",
            "irn",
            "IR",
            "Ir",
            "GLOBAL",
            "Global",
            "g lobal",
            "..",
            ".",
            "../../x",
            "/abs/x",
            "i/",
            "/i",
            "ir\n",
            "ir\0",
            "i\u{e9}",
            "\u{131}r",
            "1r",
            "global.csv",
            "../global",
        ] {
            assert!(!is_list_name(bad), "{bad:?}");
        }
    }

    /// A test-list document with `lists`, signed by `signer`.
    fn signed(signer: &crate::envelope::Identity, lists: &[(&str, &str)]) -> String {
        let doc = SignedLists {
            kind: SIGNED_LISTS_KIND.into(),
            cc: "ir".into(),
            generated_at: "2026-11-23 00:00:00".into(),
            lists: lists
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
        };
        let json = serde_json::to_string(&doc).expect("json");
        signer.seal(&json).expect("seal").1
    }

    #[test]
    fn a_document_with_one_bad_list_name_is_refused_whole_naming_it() {
        let aggregator = crate::envelope::Identity::generate().expect("key");
        let key = aggregator.public_key();
        let list = format!("{HEAD}https://a.example/,NEWS,N,1,x,\n");
        let good = signed(&aggregator, &[("global", &list), ("ir", &list)]);
        let verified = SignedLists::verify(&good, &key).expect("good document");
        assert_eq!(verified.lists.len(), 2);
        for bad in [
            "../../x",
            "/abs/x",
            "..",
            "g lobal",
            "GLOBAL",
            "ir/../../x",
            "x\u{1b}[2J",
        ] {
            let line = signed(&aggregator, &[("global", &list), (bad, &list)]);
            let err = SignedLists::verify(&line, &key).expect_err(bad);
            assert!(
                matches!(&err, SignedListError::Name { name } if name == bad),
                "{err}"
            );
            let text = err.to_string();
            assert!(text.contains(&format!("{bad:?}")), "{text}");
            assert!(text.contains("nothing was written"), "{text}");
            assert!(
                !text.contains('\u{1b}'),
                "control characters are escaped: {text}"
            );
        }
    }

    #[test]
    fn unsigned_and_other_signers_documents_are_refused() {
        let aggregator = crate::envelope::Identity::generate().expect("key");
        let other = crate::envelope::Identity::generate().expect("key");
        let list = format!("{HEAD}https://a.example/,NEWS,N,1,x,\n");
        let resigned = signed(&other, &[("ir", &list)]);
        let err = SignedLists::verify(&resigned, &aggregator.public_key()).expect_err("other");
        assert_eq!(
            err.to_string(),
            format!(
                "test lists refused: signed by {}, but the aggregator's key is {}",
                other.public_key(),
                aggregator.public_key()
            )
        );
        let bare = serde_json::json!({"kind": SIGNED_LISTS_KIND, "cc": "ir",
            "generated_at": "x", "lists": {"ir": list}})
        .to_string();
        let err = SignedLists::verify(&bare, &aggregator.public_key()).expect_err("unsigned");
        assert!(
            err.to_string()
                .starts_with("test lists refused: the document is not signed"),
            "{err}"
        );
        // A signed document of another kind is not a list document.
        let (_, other_kind) = aggregator
            .seal(r#"{"kind":"heartbeat","cc":"ir","generated_at":"x","lists":{}}"#)
            .expect("seal");
        let err = SignedLists::verify(&other_kind, &aggregator.public_key()).expect_err("kind");
        assert!(err.to_string().contains("kind is \"heartbeat\""), "{err}");
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vantage-lists-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn lists_asked_by_a_name_outside_the_data_directory_are_refused() {
        let data = temp("load");
        let outside = data.join("x.csv");
        std::fs::write(&outside, format!("{HEAD}https://a.example/,NEWS,N,1,x,\n")).expect("x");
        let choice = ListChoice {
            names: vec!["../x".into()],
            ..ListChoice::default()
        };
        let err = choice.load(&data.join("data")).expect_err("traversal");
        assert_eq!(
            err.to_string(),
            "\"../x\" is not a test list name: use a two-letter country code or global"
        );
        // Upper case is read as the country it names.
        let choice = ListChoice {
            names: vec!["IR".into()],
            ..ListChoice::default()
        };
        assert!(!choice.load(&data).expect("ir").entries.is_empty());
    }

    #[test]
    fn files_are_replaced_whole_or_not_at_all() {
        let dir = temp("replace");
        let lists = dir.join("lists");
        replace_files(&lists, &[("ir.csv".into(), b"old ir")]).expect("first");
        // A target that is a symbolic link is replaced, never written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep me").expect("victim");
        std::os::unix::fs::symlink(&victim, lists.join("tr.csv")).expect("link");
        let written = replace_files(
            &lists,
            &[("ir.csv".into(), b"new ir"), ("tr.csv".into(), b"new tr")],
        )
        .expect("replace");
        assert_eq!(written, [lists.join("ir.csv"), lists.join("tr.csv")]);
        assert_eq!(
            std::fs::read_to_string(lists.join("ir.csv")).expect("ir"),
            "new ir"
        );
        assert_eq!(
            std::fs::read_to_string(lists.join("tr.csv")).expect("tr"),
            "new tr"
        );
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "keep me");
        assert!(!lists.join("tr.csv").is_symlink());

        // Names that are not plain file names: refused before anything is written.
        for bad in ["../x.csv", "/abs/x.csv", "a/b.csv", ".hidden", "..", ""] {
            let err = replace_files(&lists, &[("ru.csv".into(), b"ru"), (bad.into(), b"x")])
                .expect_err(bad);
            assert!(err.to_string().contains("not a plain file name"), "{err}");
            assert!(!lists.join("ru.csv").exists(), "{bad}: nothing written");
        }
        assert!(!dir.join("x.csv").exists() && !Path::new("/abs/x.csv").exists());

        // A rename that fails (the target is a directory) leaves no temporary file, and the
        // files before it in the same call are complete.
        std::fs::create_dir_all(lists.join("zz.csv")).expect("dir in the way");
        let err = replace_files(
            &lists,
            &[("ir.csv".into(), b"newer ir"), ("zz.csv".into(), b"zz")],
        )
        .expect_err("directory in the way");
        assert!(err.to_string().contains("zz.csv"), "{err}");
        let mut left: Vec<String> = std::fs::read_dir(&lists)
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["ir.csv", "tr.csv", "zz.csv"],
            "no temporary file left"
        );
        let ir = std::fs::read_to_string(lists.join("ir.csv")).expect("ir");
        assert!(ir == "new ir" || ir == "newer ir", "{ir}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = TestList::read(Path::new("/nonexistent/list.csv")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/list.csv: cannot read:")
        );
    }
}
