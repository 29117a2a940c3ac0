//! Test lists in the Citizen Lab CSV format (`citizenlab/test-lists`; `research/ooni.md` 6):
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
        for record in reader.records() {
            let row = |line: u64, reason: String| ListError::Row {
                file: file.to_string(),
                line: usize::try_from(line).unwrap_or(usize::MAX),
                reason,
            };
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    problems.push(row(e.position().map_or(0, |p| p.line()), e.to_string()));
                    continue;
                }
            };
            let line = record.position().map_or(0, |p| p.line());
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
    /// The signature does not verify, or the envelope is broken.
    #[error("test lists refused: {0}")]
    Envelope(#[from] crate::envelope::EnvelopeError),
    /// Signed by a key other than the aggregator's.
    #[error("test lists refused: signed by {found}, but the aggregator's key is {expected}")]
    WrongKey {
        /// The pinned key.
        expected: String,
        /// The signer.
        found: String,
    },
    /// Not a test-list document, or a list inside does not parse.
    #[error("test lists refused: {0}")]
    Content(String),
}

impl SignedLists {
    /// Verifies `line` (signature first, then the signer against `aggregator_key`) and its
    /// content; every list inside must parse.
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
    /// name. A file that cannot be used at all is an error; a bad row is skipped and reported.
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
            if !names.contains(&name) {
                names.push(name);
            }
        }
        for name in names {
            let imported = data_dir.join("lists").join(format!("{name}.csv"));
            if imported.exists() {
                take(TestList::read(&imported)?);
            } else if let Some(text) = crate::run::builtin_list(&name) {
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
    fn missing_file_is_a_clear_error() {
        let err = TestList::read(Path::new("/nonexistent/list.csv")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/list.csv: cannot read:")
        );
    }
}
