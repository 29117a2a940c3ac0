//! Operator jobs on the database: importing OONI's measurements (a text, or files and trees as
//! OONI publishes its archive) and rescoring history.
//!
//! An imported measurement is stored as the bytes it has in its file (a JSONL line without its
//! newline, an array's element or a document as written) and its id is the SHA-256 of those
//! bytes, so the same measurement imported twice, from the same file or another copy, is
//! stored once. It is scored with the current rules: web_connectivity with
//! [`vantage_probe::verdict::score`], OONI's service tests with
//! [`vantage_probe::verdict::services`]; other tests are stored with no verdict.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;
use vantage_probe::envelope::{MeasurementId, verify};
use vantage_probe::ooni::{WEB_CONNECTIVITY, WebConnectivityMeasurement};
use vantage_probe::verdict::fingerprints::Fingerprints;
use vantage_probe::verdict::services::{Meta, SERVICE_TESTS};

use crate::ingest::archive::{self, At, Layout, Stop, Walk};
use crate::ingest::{MAX_DEPTH, apply_service_with, apply_verdict, nesting_exceeds};
use crate::store::{DbError, ImportedFile, Row, Storage};

/// What an import of one text did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// New rows.
    pub stored: usize,
    /// Already there.
    pub duplicate: usize,
    /// Problems, as `SOURCE:LINE: reason` (`SOURCE:[INDEX]: reason` in an array).
    pub problems: Vec<String>,
}

/// The fields of OONI's base format an import needs, each allowed to be missing or null (OONI
/// spec df-000-base: consumers must expect any field to be); `test_keys` stays unparsed until a
/// rule needs it.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default)]
    test_name: Option<String>,
    #[serde(default)]
    measurement_start_time: Option<String>,
    #[serde(default)]
    probe_cc: Option<String>,
    #[serde(default)]
    probe_asn: Option<serde_json::Value>,
    #[serde(default)]
    input: Option<serde_json::Value>,
    #[serde(default, borrow)]
    test_keys: Option<&'a RawValue>,
    #[serde(default)]
    test_version: Option<String>,
    #[serde(default)]
    annotations: Option<serde_json::Value>,
}

impl Head<'_> {
    /// What the service rules read besides the test keys: the test's version and date, and the
    /// engine that ran it (`services::Meta`).
    fn meta(&self) -> Meta {
        let annotation = |k: &str| {
            self.annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        Meta {
            test_version: self.test_version.clone(),
            measurement_start_time: self.measurement_start_time.clone(),
            engine_name: annotation("engine_name"),
            engine_version: annotation("engine_version"),
        }
    }
}

/// One measurement made into a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The row to store.
    pub row: Row,
    /// Why a web_connectivity measurement has no verdict, when its test keys could not be read
    /// (it is stored anyway, and `rescore` scores it once they can be).
    pub unscored: Option<String>,
}

/// Whether `t` is OONI's `YYYY-MM-DD HH:MM:SS` (df-000-base, `measurement_start_time`), the
/// form every time column and signal bin is read in.
fn is_ooni_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// The row of one OONI measurement, `raw` being its bytes as received; `Err` with the reason
/// it cannot be stored (not JSON, not a measurement, no time or test name).
pub fn row_of(raw: &str, fingerprints: &Fingerprints) -> Result<Imported, String> {
    if nesting_exceeds(raw, MAX_DEPTH) {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let head: Head<'_> = serde_json::from_str(raw).map_err(|e| {
        if e.is_data() {
            format!("not an OONI measurement: {e}")
        } else {
            format!("not JSON: {e}")
        }
    })?;
    let meta = head.meta();
    let test_name = head
        .test_name
        .filter(|n| !n.is_empty())
        .ok_or("not an OONI measurement: no test_name")?;
    let measured_at = head
        .measurement_start_time
        .ok_or("not an OONI measurement: no measurement_start_time")?;
    if !is_ooni_time(&measured_at) {
        return Err(format!(
            "measurement_start_time {measured_at:?} is not YYYY-MM-DD HH:MM:SS"
        ));
    }
    // Unknown country and network are OONI's ZZ and AS0 (df-000-base).
    let probe_cc = head
        .probe_cc
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        .map_or_else(|| "ZZ".to_string(), |c| c.to_ascii_uppercase());
    let probe_asn = match &head.probe_asn {
        Some(serde_json::Value::String(s)) => s
            .trim_start_matches("AS")
            .trim_start_matches("as")
            .parse()
            .ok(),
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => Some(0),
    }
    .unwrap_or(0);
    let input = head
        .input
        .as_ref()
        .and_then(|i| i.as_str())
        .map(str::to_string);
    let mut row = Row {
        id: MeasurementId::of(raw.as_bytes()).to_string(),
        source: "ooni".into(),
        probe_key: None,
        probe_cc,
        probe_asn,
        domain: input
            .as_deref()
            .and_then(|i| Url::parse(i).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase)),
        input,
        test_name,
        measured_at,
        blocking: None,
        accessible: None,
        confirmed: false,
        rule_set: None,
        verdict: None,
        envelope: raw.to_string(),
        network_verified: false,
        route: crate::store::Route::Import,
    };
    let mut unscored = None;
    if row.test_name == WEB_CONNECTIVITY {
        match serde_json::from_str::<WebConnectivityMeasurement>(raw) {
            Ok(m) => apply_verdict(&mut row, &m, fingerprints),
            Err(e) => unscored = Some(format!("stored without a verdict: {e}")),
        }
    } else if SERVICE_TESTS.contains(&row.test_name.as_str()) {
        score_service_row(&mut row, head.test_keys, &meta);
    }
    Ok(Imported { row, unscored })
}

/// Scores a row of one of OONI's service tests from its `test_keys` (missing keys read as
/// null, which the rules take as "nothing measured").
fn score_service_row(row: &mut Row, test_keys: Option<&RawValue>, meta: &Meta) {
    let keys = test_keys
        .and_then(|k| serde_json::from_str(k.get()).ok())
        .unwrap_or(serde_json::Value::Null);
    let (name, input) = (row.test_name.clone(), row.input.clone());
    apply_service_with(row, &name, input.as_deref(), &keys, meta);
}

/// Stores OONI measurements (JSONL, one document, or an array) as unsigned rows marked `ooni`,
/// scored with the current rules. The id is the SHA-256 of each measurement's bytes as they
/// are in `text`, so importing the same data twice stores it once.
pub fn import_ooni(
    storage: &dyn Storage,
    source: &str,
    text: &str,
    fingerprints: &Fingerprints,
) -> Result<ImportReport, DbError> {
    let mut report = ImportReport::default();
    let mut rows = Vec::new();
    let read = archive::each_measurement(
        text.as_bytes(),
        Layout::Any,
        text.len().max(1),
        |at, item| {
            let problem = |reason: String| format!("{source}:{at}: {reason}");
            match item.and_then(|raw| row_of(raw, fingerprints)) {
                Ok(imported) => rows.push(imported.row),
                Err(reason) => report.problems.push(problem(reason)),
            }
            Ok::<(), DbError>(())
        },
    );
    match read {
        Ok(()) => {}
        Err(Stop::Caller(e)) => return Err(e),
        Err(Stop::Unreadable(u)) => report.problems.push(u.located(source)),
    }
    for added in storage.insert(&rows)? {
        if added {
            report.stored += 1;
        } else {
            report.duplicate += 1;
        }
    }
    Ok(report)
}

/// How an archive import runs.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// Read, parse and score, but store nothing and record nothing.
    pub dry_run: bool,
    /// Read files even when the store records them as imported.
    pub again: bool,
    /// The bound on one measurement's bytes ([`archive::MAX_MEASUREMENT_BYTES`]).
    pub max_measurement_bytes: usize,
    /// Rows stored per transaction.
    pub batch_rows: usize,
    /// Bytes of measurements stored per transaction, whatever their number.
    pub batch_bytes: usize,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            dry_run: false,
            again: false,
            max_measurement_bytes: archive::MAX_MEASUREMENT_BYTES,
            batch_rows: 1_000,
            batch_bytes: 8 << 20,
        }
    }
}

/// Counts of one test name.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    /// Read and made into a row (stored or not).
    pub read: u64,
    /// Stored for the first time.
    pub stored: u64,
    /// Already stored.
    pub duplicate: u64,
}

/// The most test names counted apart; the rest are counted together under
/// [`OTHER_TEST_NAMES`], so that a file of made-up names cannot grow the counts without bound.
pub const MAX_TEST_NAMES: usize = 256;

/// Where test names beyond [`MAX_TEST_NAMES`] are counted.
pub const OTHER_TEST_NAMES: &str = "(other test names)";

/// Counts per test name, bounded by [`MAX_TEST_NAMES`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ByTest(pub BTreeMap<String, TestCounts>);

impl ByTest {
    fn entry(&mut self, name: &str) -> &mut TestCounts {
        let key = if self.0.contains_key(name) || self.0.len() < MAX_TEST_NAMES {
            name
        } else {
            OTHER_TEST_NAMES
        };
        self.0.entry(key.to_string()).or_default()
    }
}

/// What an archive import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeReport {
    /// Files read to their end (and recorded, unless a dry run).
    pub files_imported: u64,
    /// Files skipped because the store records them as imported already.
    pub files_done_before: u64,
    /// Files refused or not read to their end (YAML, not gzip, truncated, not JSON).
    pub files_refused: u64,
    /// Measurements made into rows.
    pub read: u64,
    /// Rows stored for the first time.
    pub stored: u64,
    /// Rows already stored.
    pub duplicate: u64,
    /// Lines, elements or documents that could not be made into a row.
    pub skipped: u64,
    /// web_connectivity measurements stored without a verdict.
    pub unscored: u64,
    /// Bytes read from the files (compressed, as they are on disk).
    pub file_bytes: u64,
    /// Counts per test name.
    pub by_test: ByTest,
}

impl TreeReport {
    /// Whether everything was imported or already there: nothing skipped or refused.
    pub fn complete(&self) -> bool {
        self.skipped == 0 && self.files_refused == 0
    }
}

/// What an archive import tells its user as it goes: the CLI draws a progress bar and prints
/// each problem once, so that no list of them is kept.
pub trait Watch {
    /// A file is about to be read.
    fn file(&mut self, _path: &Path) {}
    /// `n` more measurements were read.
    fn measurements(&mut self, _n: u64) {}
    /// A file was finished (imported, skipped as done, or refused).
    fn file_done(&mut self) {}
    /// A skipped measurement (`FILE:LINE: reason`, `FILE:[INDEX]: reason`), a refused file
    /// (`FILE: reason`), or a note (`FILE:LINE: stored without a verdict: ...`).
    fn problem(&mut self, text: &str);
}

/// Imports the files named and every measurement file of the trees named (walked in sorted
/// order, [`archive::Walk`]), streamed: one measurement at a time, stored in transactions of
/// at most [`TreeOptions::batch_rows`] rows. A file read to its end is recorded in the store
/// with its size and what it held, and skipped by the next import; a file that stopped early
/// (truncated, corrupt) is not, so the next import reads it again (its rows already stored are
/// then duplicates). `storage` is `None` for a dry run.
///
/// Two threads share the work: this one reads, parses and scores, and hands each batch of
/// rows to another that stores it, so that parsing the next batch and committing the last one
/// overlap (on two cores, about the time of the slower of the two instead of their sum). At
/// most one batch waits between them, so memory stays bounded.
pub fn import_tree(
    storage: Option<&dyn Storage>,
    roots: &[PathBuf],
    options: &TreeOptions,
    fingerprints: &Fingerprints,
    watch: &mut dyn Watch,
) -> Result<TreeReport, DbError> {
    let storage = storage.filter(|_| !options.dry_run);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ToStore>(1);
        let sink = storage.map(|s| scope.spawn(move || store_batches(s, rx)));
        let mut reader = Reader {
            storage,
            tx: sink.as_ref().map(|_| tx),
            options,
            fingerprints,
            watch,
            report: TreeReport::default(),
        };
        let read = reader.roots(roots);
        let Reader { tx, mut report, .. } = reader;
        drop(tx);
        if let Some(sink) = sink {
            let stored = sink
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            report.stored = stored.stored;
            report.duplicate = stored.duplicate;
            for (name, c) in stored.by_test.0 {
                let counts = report.by_test.0.entry(name).or_default();
                counts.stored = c.stored;
                counts.duplicate = c.duplicate;
            }
        }
        // The store's error, when it stopped, is the one to report (the reader only saw that
        // it had gone).
        read.map(|()| report)
    })
}

/// What the reading thread hands the storing one.
enum ToStore {
    /// Rows to store in one transaction.
    Rows(Vec<Row>),
    /// The end of a file: its record when it was read to its end (its `stored` and
    /// `duplicate` are the storing thread's to fill), `None` when it stopped early.
    FileEnd(Option<ImportedFile>),
}

/// What the storing thread counted.
#[derive(Default)]
struct StoreCounts {
    stored: u64,
    duplicate: u64,
    by_test: ByTest,
}

/// Stores batches as they come and records each finished file once its rows are committed.
fn store_batches(
    storage: &dyn Storage,
    rx: std::sync::mpsc::Receiver<ToStore>,
) -> Result<StoreCounts, DbError> {
    let mut counts = StoreCounts::default();
    let (mut file_stored, mut file_duplicate) = (0, 0);
    for message in rx {
        match message {
            ToStore::Rows(rows) => {
                let added = storage.insert(&rows)?;
                for (row, new) in rows.iter().zip(added) {
                    let c = counts.by_test.entry(&row.test_name);
                    if new {
                        c.stored += 1;
                        counts.stored += 1;
                        file_stored += 1;
                    } else {
                        c.duplicate += 1;
                        counts.duplicate += 1;
                        file_duplicate += 1;
                    }
                }
            }
            ToStore::FileEnd(record) => {
                if let Some(mut f) = record {
                    f.stored = file_stored;
                    f.duplicate = file_duplicate;
                    storage.record_imported_file(&f)?;
                }
                (file_stored, file_duplicate) = (0, 0);
            }
        }
    }
    Ok(counts)
}

/// The reading side of [`import_tree`].
struct Reader<'a> {
    /// Where finished files are looked up; `None` in a dry run.
    storage: Option<&'a dyn Storage>,
    /// To the storing thread; `None` in a dry run.
    tx: Option<std::sync::mpsc::SyncSender<ToStore>>,
    options: &'a TreeOptions,
    fingerprints: &'a Fingerprints,
    watch: &'a mut dyn Watch,
    report: TreeReport,
}

/// Why the reading stopped before the end.
enum Halt {
    /// The storing thread stopped, on a store error its result carries.
    SinkGone,
    /// The store failed to answer this thread.
    Store(DbError),
}

impl Reader<'_> {
    fn send(&self, message: ToStore) -> Result<(), Halt> {
        match &self.tx {
            Some(tx) => tx.send(message).map_err(|_| Halt::SinkGone),
            None => Ok(()),
        }
    }

    fn roots(&mut self, roots: &[PathBuf]) -> Result<(), DbError> {
        for root in roots {
            match self.root(root) {
                Ok(()) => {}
                // The storing thread's error is returned by `import_tree`.
                Err(Halt::SinkGone) => return Ok(()),
                Err(Halt::Store(e)) => return Err(e),
            }
        }
        Ok(())
    }

    fn root(&mut self, root: &Path) -> Result<(), Halt> {
        let meta = match std::fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                self.report.files_refused += 1;
                self.watch
                    .problem(&format!("{}: cannot read: {e}", root.display()));
                return Ok(());
            }
        };
        if !meta.is_dir() {
            // A file named on the command line is taken whatever its name, and recorded by the
            // path given.
            let (layout, gz) = archive::kind_of(root).unwrap_or((
                Layout::Any,
                root.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("gz")),
            ));
            return self.file(root, &root.display().to_string(), layout, gz);
        }
        for entry in Walk::new(root) {
            let path = match entry {
                Ok(p) => p,
                Err((dir, e)) => {
                    self.report.files_refused += 1;
                    self.watch
                        .problem(&format!("{}: cannot list: {e}", dir.display()));
                    continue;
                }
            };
            let Some((layout, gz)) = archive::kind_of(&path) else {
                continue;
            };
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            self.file(&path, &relative, layout, gz)?;
        }
        Ok(())
    }

    fn refuse(&mut self, shown: &str, reason: &str) {
        self.report.files_refused += 1;
        self.watch.problem(&format!("{shown}: {reason}"));
        self.watch.file_done();
    }

    /// Reads one file; `name` is what it is recorded as.
    fn file(&mut self, path: &Path, name: &str, layout: Layout, gz: bool) -> Result<(), Halt> {
        self.watch.file(path);
        let shown = path.display().to_string();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if layout == Layout::Yaml {
            let why = match archive::open(path, gz) {
                Ok(r) => archive::yaml_report(r),
                Err(e) => archive::io_reason(&e),
            };
            self.refuse(&shown, &why);
            return Ok(());
        }
        // The store is read from this thread too (SQLite answers from a reader beside the
        // writer).
        if let Some(storage) = self.storage
            && !self.options.again
            && storage
                .imported_file(name, size)
                .map_err(Halt::Store)?
                .is_some()
        {
            self.report.files_done_before += 1;
            self.watch.file_done();
            return Ok(());
        }
        let reader = match archive::open(path, gz) {
            Ok(r) => r,
            Err(e) => {
                self.refuse(&shown, &archive::io_reason(&e));
                return Ok(());
            }
        };
        self.report.file_bytes += size;
        let mut file = ImportedFile {
            path: name.to_string(),
            size,
            ..ImportedFile::default()
        };
        let mut file_tests: BTreeMap<String, u64> = BTreeMap::new();
        let (mut rows, mut bytes) = (Vec::new(), 0usize);
        let options = self.options;
        let fingerprints = self.fingerprints;
        let read = archive::each_measurement(
            reader,
            layout,
            options.max_measurement_bytes,
            |at: At, item| {
                match item.and_then(|raw| row_of(raw, fingerprints)) {
                    Ok(imported) => {
                        if let Some(note) = imported.unscored {
                            self.report.unscored += 1;
                            self.watch.problem(&format!("{shown}:{at}: {note}"));
                        }
                        let row = imported.row;
                        self.report.read += 1;
                        self.report.by_test.entry(&row.test_name).read += 1;
                        file.measurements += 1;
                        if file_tests.len() < MAX_TEST_NAMES
                            || file_tests.contains_key(&row.test_name)
                        {
                            *file_tests.entry(row.test_name.clone()).or_default() += 1;
                        }
                        bytes += row.envelope.len();
                        rows.push(row);
                        self.watch.measurements(1);
                        if rows.len() >= options.batch_rows || bytes >= options.batch_bytes {
                            bytes = 0;
                            self.send(ToStore::Rows(std::mem::take(&mut rows)))?;
                        }
                    }
                    Err(reason) => {
                        self.report.skipped += 1;
                        file.skipped += 1;
                        self.watch.problem(&format!("{shown}:{at}: {reason}"));
                    }
                }
                Ok::<(), Halt>(())
            },
        );
        // What was read before a truncation is stored either way.
        if !rows.is_empty() {
            self.send(ToStore::Rows(rows))?;
        }
        match read {
            Ok(()) => {
                self.report.files_imported += 1;
                file.tests = serde_json::to_string(&file_tests).unwrap_or_default();
                self.send(ToStore::FileEnd(Some(file)))?;
            }
            Err(Stop::Caller(gone)) => return Err(gone),
            Err(Stop::Unreadable(u)) => {
                self.send(ToStore::FileEnd(None))?;
                let place = match u.at {
                    Some(At::Line(n)) => format!(" at line {n}"),
                    Some(At::Element(i)) => format!(" at element [{i}]"),
                    None => String::new(),
                };
                let kept = if file.measurements > 0 {
                    format!(
                        "; the {} measurements before it were read",
                        file.measurements
                    )
                } else {
                    String::new()
                };
                self.report.files_refused += 1;
                self.watch.problem(&format!(
                    "{shown}: {}{place}{kept}; not recorded as imported, so the next import reads it again",
                    u.reason
                ));
            }
        }
        self.watch.file_done();
        Ok(())
    }
}

/// Recomputes every stored verdict of web_connectivity and of OONI's service tests with the
/// current rules and `fingerprints`, after a rule or fingerprint change. Returns how many rows
/// were rescored.
pub fn rescore(storage: &dyn Storage, fingerprints: &Fingerprints) -> Result<usize, DbError> {
    let mut after = String::new();
    let mut done = 0;
    loop {
        let page = storage.page_for_rescore(&after, 500)?;
        let Some(last) = page.last() else { break };
        after = last.0.clone();
        for (id, source, stored) in page {
            // Signed rows hold the envelope; imported OONI rows hold the measurement itself.
            let text = if source == "ooni" {
                Some(stored.clone())
            } else {
                verify(&stored).ok().map(|v| v.measurement.to_string())
            };
            let Some(text) = text else { continue };
            let Ok(head) = serde_json::from_str::<Head<'_>>(&text) else {
                continue;
            };
            let mut row = Row {
                id,
                source,
                probe_key: None,
                probe_cc: String::new(),
                probe_asn: 0,
                test_name: head.test_name.clone().unwrap_or_default(),
                input: head
                    .input
                    .as_ref()
                    .and_then(|i| i.as_str())
                    .map(str::to_string),
                domain: None,
                measured_at: String::new(),
                blocking: None,
                accessible: None,
                confirmed: false,
                rule_set: None,
                verdict: None,
                envelope: String::new(),
                network_verified: false,
                route: crate::store::Route::Import,
            };
            if row.test_name == WEB_CONNECTIVITY {
                let Ok(m) = serde_json::from_str::<WebConnectivityMeasurement>(&text) else {
                    continue;
                };
                apply_verdict(&mut row, &m, fingerprints);
            } else if SERVICE_TESTS.contains(&row.test_name.as_str()) {
                score_service_row(&mut row, head.test_keys, &head.meta());
                if row.rule_set.is_none() {
                    continue;
                }
            } else if row.test_name == vantage_probe::quic::QUIC {
                if crate::ingest::quic::apply_quic(&mut row, &text).is_err()
                    || row.rule_set.is_none()
                {
                    continue;
                }
            } else {
                continue;
            }
            storage.update_verdict(&row)?;
            done += 1;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_keeps_the_bytes_and_takes_unknowns_as_ooni_does() {
        let raw = r#"{"test_name":"ndt", "measurement_start_time":"2022-11-10 10:50:28","probe_cc":null,"probe_asn":"AS3269","input":null,"test_keys":{}}"#;
        let r = row_of(raw, &Fingerprints::builtin()).expect("row").row;
        assert_eq!(r.envelope, raw);
        assert_eq!(r.id, MeasurementId::of(raw.as_bytes()).to_string());
        assert_eq!((r.probe_cc.as_str(), r.probe_asn), ("ZZ", 3269));
        assert_eq!(r.verdict, None);
        for (bad, says) in [
            ("3", "not an OONI measurement"),
            ("{\"test_name\":\"x\"}", "no measurement_start_time"),
            (
                r#"{"test_name":"x","measurement_start_time":"1354184239.0"}"#,
                "is not YYYY-MM-DD HH:MM:SS",
            ),
            ("{\"a\":", "not JSON"),
        ] {
            let why = row_of(bad, &Fingerprints::builtin()).expect_err(bad);
            assert!(why.contains(says), "{bad}: {why}");
        }
    }
}
