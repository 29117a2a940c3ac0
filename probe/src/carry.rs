//! Evidence carried out by hand (`docs/carry.md`): a probe's signed envelopes written to one
//! file that anyone may carry (a USB stick, a neighbour's link) and that an aggregator stores
//! with the same checks as an upload.
//!
//! The file is gzip (RFC 1952) JSONL. Its first line is a manifest, itself a signed envelope
//! (`envelope.rs`) whose measurement is a [`Manifest`]: sealed with the probe's
//! [`Identity`] like any result, so [`crate::envelope::verify`] checks it. The envelope lines
//! follow exactly as the probe stored them; the manifest holds their SHA-256, so a carrier who
//! drops, adds or changes a line is seen, while every line still stands on its own signature.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use crate::envelope::{EnvelopeError, Identity, Verifier, verify};
use crate::store::{Relayed, Store, StoreError};

/// The export format's version.
pub const FORMAT: u64 = 1;

/// The manifest's `test_name`: no measurement has it, so an aggregator that is sent a manifest
/// as an upload refuses it instead of storing it.
pub const MANIFEST_TEST_NAME: &str = "vantage_export_manifest";

/// The longest line read from a file: the aggregator's own bound on an uploaded line
/// (`IngestConfig::max_line_bytes`, 1 MiB), so that a hostile file cannot make a reader hold
/// an unbounded line.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What the probe says about the envelopes that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_TEST_NAME`].
    pub test_name: String,
    /// [`FORMAT`].
    pub format: u64,
    /// The exporting probe's public key, base64, as in its envelopes.
    pub probe_key: String,
    /// How many envelope lines follow.
    pub count: u64,
    /// The earliest `measurement_start_time` among them (OONI's `YYYY-MM-DD HH:MM:SS`, UTC).
    pub first: Option<String>,
    /// The latest.
    pub last: Option<String>,
    /// Lower-case hex SHA-256 of the envelope lines that follow, each with its `\n`.
    pub sha256: String,
    /// When the file was written, unix seconds.
    pub created: i64,
}

/// Why a file could not be written or read at all.
#[derive(Debug, thiserror::Error)]
pub enum CarryError {
    /// Writing the export failed; the partial file was removed.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file being written.
        path: String,
        /// The I/O error (a full disk: "No space left on device"). Named `error`, not
        /// `source`: the message already holds it, and a source would print it twice.
        error: std::io::Error,
    },
    /// Opening the file failed.
    #[error("cannot open {path}: {error}")]
    Open {
        /// The file.
        path: String,
        /// Why (in the message; not a `source`, which would print it twice).
        error: std::io::Error,
    },
    /// The manifest could not be sealed.
    #[error("cannot sign the manifest: {0}")]
    Seal(EnvelopeError),
}

/// One stored result to export: its start time and its envelope line as stored.
#[derive(Debug, Clone)]
pub struct Item {
    /// The measurement id (SHA-256 of its bytes, hex).
    pub id: String,
    /// `measurement_start_time`.
    pub measured_at: String,
    /// The signed envelope line, without newline.
    pub envelope: String,
}

/// `FILE.partial`: where an export is written before it is renamed into place, so that a
/// reader never sees half a file under the final name.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

/// What the manifest says of the lines it comes before: a first pass over them, so that the
/// manifest can be written first without holding the lines ([`Summary::add`] each, in order).
#[derive(Clone)]
pub struct Summary {
    count: u64,
    first: Option<String>,
    last: Option<String>,
    digest: ring::digest::Context,
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            count: 0,
            first: None,
            last: None,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }
}

impl Summary {
    /// Counts one line, in the order the file holds it.
    pub fn add(&mut self, item: &Item) {
        self.count += 1;
        self.digest.update(item.envelope.as_bytes());
        self.digest.update(b"\n");
        if self.first.as_ref().is_none_or(|f| item.measured_at < *f) {
            self.first = Some(item.measured_at.clone());
        }
        if self.last.as_ref().is_none_or(|l| item.measured_at > *l) {
            self.last = Some(item.measured_at.clone());
        }
    }

    /// How many lines were counted.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Writes `items` to `path` (through `path.partial`, renamed when complete and synced) with a
/// manifest signed by `identity`. On any error the partial file is removed and `path` is left
/// as it was.
pub fn write_export(
    path: &Path,
    identity: &Identity,
    items: &[Item],
    created: i64,
) -> Result<Manifest, CarryError> {
    let mut summary = Summary::default();
    items.iter().for_each(|i| summary.add(i));
    write_rows(path, identity, created, summary, &mut |each| {
        items.iter().try_for_each(&mut *each)
    })
}

/// A source of an export's lines: called with a function, it calls that function with each
/// line in order and stops at the first error.
pub type Rows<'a, E> = dyn FnMut(&mut dyn FnMut(&Item) -> Result<(), E>) -> Result<(), E> + 'a;

/// Writes an export whose lines `rows` hands, one at a time, to the function it is given:
/// the same lines, in the same order, as `summary` counted (a second pass over the store, in
/// the same snapshot). The file is the manifest line then the lines, gzip, through
/// `path.partial`; on any error, the source's (`E`) or the file's, the partial file is
/// removed and `path` is left as it was.
pub fn write_rows<E: From<CarryError>>(
    path: &Path,
    identity: &Identity,
    created: i64,
    summary: Summary,
    rows: &mut Rows<'_, E>,
) -> Result<Manifest, E> {
    let manifest = Manifest {
        test_name: MANIFEST_TEST_NAME.into(),
        format: FORMAT,
        probe_key: identity.public_key(),
        count: summary.count,
        first: summary.first,
        last: summary.last,
        sha256: hex::encode(summary.digest.finish()),
        created,
    };
    let json = serde_json::to_string(&manifest)
        .map_err(|e| CarryError::Seal(EnvelopeError::Malformed(e.to_string())))?;
    let (_, sealed) = identity.seal(&json).map_err(CarryError::Seal)?;
    let partial = partial_path(path);
    let failed = |error| {
        E::from(CarryError::Write {
            path: path.display().to_string(),
            error,
        })
    };
    let written = write_file(&partial, &sealed, rows, &failed)
        .and_then(|()| std::fs::rename(&partial, path).map_err(&failed));
    match written {
        Ok(()) => {
            // The rename reaches the drive only when its directory is synced (fsync(2),
            // "calling fsync() on a file descriptor for the directory is also needed"): a
            // stick pulled right after the export must hold the file. Some file systems refuse
            // to sync a directory; the file itself is synced already.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
            Ok(manifest)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn write_file<E>(
    partial: &Path,
    manifest: &str,
    rows: &mut Rows<'_, E>,
    failed: &dyn Fn(std::io::Error) -> E,
) -> Result<(), E> {
    let file = std::fs::File::create(partial).map_err(failed)?;
    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    gz.write_all(manifest.as_bytes()).map_err(failed)?;
    gz.write_all(b"\n").map_err(failed)?;
    rows(&mut |item| {
        gz.write_all(item.envelope.as_bytes())
            .and_then(|()| gz.write_all(b"\n"))
            .map_err(failed)
    })?;
    let file = gz
        .finish()
        .and_then(|w| w.into_inner().map_err(std::io::IntoInnerError::into_error))
        .map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// What reading a carried file found.
#[derive(Debug, Default)]
pub struct Carried {
    /// The manifest, when the first line is one whose signature verifies.
    pub manifest: Option<Manifest>,
    /// What is wrong with the manifest (missing, bad signature, wrong key, hash or count
    /// mismatch), if anything. The envelopes are still each checked on their own.
    pub manifest_problems: Vec<String>,
    /// How many envelope lines verified (each was handed to the caller as it was read).
    pub good: usize,
    /// Whether the caller stopped the reading before the end (the manifest's count and hash
    /// are then not checked).
    pub stopped: bool,
    /// Lines refused: (line number, reason).
    pub refused: Vec<(usize, String)>,
    /// Why reading stopped before the end (a truncated gzip, a read error), if it did; the
    /// lines read before are kept.
    pub truncated: Option<String>,
}

impl Carried {
    /// Whether everything checked: the manifest, every line, the whole file.
    pub fn clean(&self) -> bool {
        self.manifest.is_some()
            && self.manifest_problems.is_empty()
            && self.refused.is_empty()
            && self.truncated.is_none()
            && !self.stopped
    }
}

/// Reads and checks a carried file: the manifest's signature, each envelope's signature, and
/// the manifest's count and hash against the lines read. Nothing here trusts the carrier.
///
/// Each envelope that verifies is handed to `each` (its 1-based line number and the line) as
/// it is read, so that a file of any size is read in the memory of one line; `each` returns
/// `false` to stop.
pub fn read_export(
    path: &Path,
    each: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Carried, CarryError> {
    let file = std::fs::File::open(path).map_err(|error| CarryError::Open {
        path: path.display().to_string(),
        error,
    })?;
    Ok(read_from(
        BufReader::new(MultiGzDecoder::new(BufReader::new(file))),
        each,
    ))
}

/// [`read_export`] over an already-inflated reader.
pub fn read_from(mut reader: impl BufRead, each: &mut dyn FnMut(usize, &str) -> bool) -> Carried {
    let mut out = Carried::default();
    let mut verifier = Verifier::default();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut lines = 0u64;
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf);
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                out.truncated = Some(if n == 1 {
                    format!("not a readable gzip file: {e}")
                } else {
                    format!("after line {}: {e}", n - 1)
                });
                break;
            }
        }
        if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
            out.refused
                .push((n, format!("longer than {MAX_LINE_BYTES} bytes")));
            // Skip the rest of the line.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                match (&mut reader).take(1 << 16).read_until(b'\n', &mut rest) {
                    Ok(0) => break,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                    Err(e) => {
                        out.truncated = Some(format!("in line {n}: {e}"));
                        return finish(out, digest, lines);
                    }
                }
            }
            lines += 1;
            continue;
        }
        let complete = buf.last() == Some(&b'\n');
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim_end_matches('\n').trim_end_matches('\r'),
            Err(_) => {
                if n > 1 {
                    digest.update(&buf);
                    lines += 1;
                }
                out.refused.push((n, "not UTF-8".into()));
                continue;
            }
        };
        if n == 1 {
            read_manifest(text, &mut out);
            continue;
        }
        if text.trim().is_empty() {
            continue;
        }
        digest.update(text.as_bytes());
        digest.update(b"\n");
        lines += 1;
        if !complete {
            out.refused.push((n, "cut off: no end of line".into()));
            continue;
        }
        match verifier.verify(text) {
            Ok(_) => {
                out.good += 1;
                if !each(n, text) {
                    out.stopped = true;
                    break;
                }
            }
            Err(EnvelopeError::BadSignature) => out.refused.push((n, "bad signature".into())),
            Err(e) => out.refused.push((n, e.to_string())),
        }
    }
    finish(out, digest, lines)
}

fn read_manifest(text: &str, out: &mut Carried) {
    let verified = match verify(text) {
        Ok(v) => v,
        Err(e) => {
            out.manifest_problems
                .push(format!("line 1 is not a signed manifest: {e}"));
            return;
        }
    };
    match serde_json::from_str::<Manifest>(verified.measurement) {
        Ok(m) if m.test_name == MANIFEST_TEST_NAME && m.format == FORMAT => {
            if m.probe_key != verified.key {
                out.manifest_problems.push(format!(
                    "manifest names key {} but is signed by {}",
                    m.probe_key, verified.key
                ));
            }
            out.manifest = Some(m);
        }
        Ok(m) => out.manifest_problems.push(format!(
            "line 1 is not a format {FORMAT} manifest ({} format {})",
            m.test_name, m.format
        )),
        Err(e) => out
            .manifest_problems
            .push(format!("line 1 is not a manifest: {e}")),
    }
}

fn finish(mut out: Carried, digest: ring::digest::Context, lines: u64) -> Carried {
    if let Some(m) = out.manifest.as_ref().filter(|_| !out.stopped) {
        if m.count != lines {
            out.manifest_problems.push(format!(
                "the manifest counts {} lines, the file holds {lines}",
                m.count
            ));
        }
        let sha = hex::encode(digest.finish());
        if sha != m.sha256 {
            out.manifest_problems.push(format!(
                "the lines' SHA-256 is {sha}, the manifest says {}",
                m.sha256
            ));
        }
    }
    out
}

/// The header fields the store keeps for a relayed result.
#[derive(Deserialize)]
struct Head {
    test_name: String,
    measurement_start_time: String,
    #[serde(default)]
    input: Option<String>,
}

/// Checks one envelope another probe signed, before this probe keeps it to send on: its
/// signature first (nothing else is read from a line that fails it), then the measurement
/// fields the store keeps. `vantage import` and `vantage relay` take envelopes with this
/// check and no other. The error is the reason in the aggregator's words ("bad signature",
/// "malformed: ..."), which a probe's uploader reads ([`crate::upload::classify`]).
pub fn check_relayed(line: &str, verifier: &mut Verifier) -> Result<Relayed, String> {
    let v = match verifier.verify(line) {
        Ok(v) => v,
        Err(EnvelopeError::BadSignature) => return Err("bad signature".into()),
        Err(e) => return Err(format!("malformed: {e}")),
    };
    let head: Head = serde_json::from_str(v.measurement)
        .map_err(|e| format!("malformed: not a measurement: {e}"))?;
    Ok(Relayed {
        id: v.id.to_string(),
        test_name: head.test_name,
        measured_at: head.measurement_start_time,
        input: head.input,
        envelope: line.to_string(),
    })
}

/// Why an export to a file did not complete. Nothing is marked exported in any of these.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The local store could not be read or marked.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file could not be written (the partial file was removed).
    #[error(transparent)]
    Carry(#[from] CarryError),
    /// The file read back is not what was written; it was removed.
    #[error(
        "{path}: the file read back does not match what was written ({problem}); it was \
         removed and nothing is marked exported"
    )]
    ReadBack {
        /// The file.
        path: String,
        /// The first difference found.
        problem: String,
    },
}

/// Which results an export holds ([`Store::each_exportable`]).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Every stored result, not only those no export holds yet.
    pub all: bool,
    /// Only those measured at or after this time (OONI's `YYYY-MM-DD HH:MM:SS`).
    pub since: Option<String>,
    /// Write nothing when there is nothing to export (the daemon's `[carry]`); `vantage
    /// export` writes an empty file, which still says who exported it and when.
    pub skip_empty: bool,
}

/// An export as `vantage export` and the daemon's `[carry]` both make it: the results
/// selected are written to `path` ([`write_export`]), the file is read back and checked as a
/// reader would ([`read_export`]: a failing drive can accept writes and return something
/// else), and only then are they marked exported. `None` when `skip_empty` and there was
/// nothing to write.
pub fn export(
    store: &mut Store,
    identity: &Identity,
    path: &Path,
    selection: &Selection,
    created: i64,
) -> Result<Option<Manifest>, ExportError> {
    let (all, since) = (selection.all, selection.since.as_deref());
    // Two passes over the same snapshot, one row in memory at a time: the manifest, which
    // comes first in the file, counts and hashes the lines; then the lines are written. The
    // snapshot stays open while a slow stick is written; the daemon goes on storing results
    // meanwhile (WAL), which the next export holds.
    let written = store.snapshot(|store| {
        let mut summary = Summary::default();
        let upto = store.each_exportable(all, since, None, &mut |item| {
            summary.add(item);
            Ok::<_, ExportError>(())
        })?;
        if summary.count() == 0 && selection.skip_empty {
            return Ok(None);
        }
        let manifest = write_rows::<ExportError>(path, identity, created, summary, &mut |each| {
            store.each_exportable(all, since, upto, each).map(|_| ())
        })?;
        Ok::<_, ExportError>(Some((manifest, upto)))
    })?;
    let Some((manifest, upto)) = written else {
        return Ok(None);
    };
    let back = read_export(path, &mut |_, _| true)?;
    if !back.clean() || back.good as u64 != manifest.count {
        let _ = std::fs::remove_file(path);
        let problem = back
            .manifest_problems
            .first()
            .cloned()
            .or(back.truncated.clone())
            .or(back.refused.first().map(|(n, r)| format!("line {n}: {r}")))
            .unwrap_or_else(|| format!("{} of {} lines", back.good, manifest.count));
        return Err(ExportError::ReadBack {
            path: path.display().to_string(),
            problem,
        });
    }
    if let Some(upto) = upto {
        store.mark_exported(all, since, upto)?;
    }
    Ok(Some(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(identity: &Identity, n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| {
                let (id, envelope) = identity
                    .seal(&format!(
                        "{{\"test_name\":\"x\",\"measurement_start_time\":\"2026-01-0{} 00:00:00\"}}",
                        i + 1
                    ))
                    .expect("seal");
                Item {
                    id: id.to_string(),
                    measured_at: format!("2026-01-0{} 00:00:00", i + 1),
                    envelope,
                }
            })
            .collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vantage-carry-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn round_trip_then_tamper_and_truncate() {
        let dir = temp("round");
        let path = dir.join("out.jsonl.gz");
        let id = Identity::generate().expect("id");
        let m = write_export(&path, &id, &items(&id, 3), 0).expect("write");
        assert_eq!(m.count, 3);
        assert_eq!(m.first.as_deref(), Some("2026-01-01 00:00:00"));
        assert!(!partial_path(&path).exists());
        let mut seen = Vec::new();
        let read = read_export(&path, &mut |n, _| {
            seen.push(n);
            true
        })
        .expect("read");
        assert!(read.clean(), "{read:?}");
        assert_eq!((read.good, seen), (3, vec![2, 3, 4]));

        // One byte changed in line 3 (the second envelope).
        let mut text = String::new();
        MultiGzDecoder::new(std::fs::File::open(&path).expect("open"))
            .read_to_string(&mut text)
            .expect("inflate");
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[2] = lines[2].replacen("2026-01-02", "2026-01-03", 1);
        let tampered = lines.join("\n") + "\n";
        let read = read_from(tampered.as_bytes(), &mut |_, _| true);
        assert_eq!(read.good, 2);
        assert_eq!(read.refused, vec![(3, "bad signature".to_string())]);
        assert!(read.manifest_problems[0].contains("SHA-256"), "{read:?}");

        // Truncated gzip: an error, the lines before kept.
        let bytes = std::fs::read(&path).expect("read");
        let cut = dir.join("cut.gz");
        std::fs::write(&cut, &bytes[..bytes.len() - 12]).expect("write");
        let read = read_export(&cut, &mut |_, _| true).expect("read");
        assert!(read.truncated.is_some(), "{read:?}");
        assert!(!read.clean());
    }

    /// A store of `n` results from a fixed key, with the outbox states an export skips
    /// scattered among them: every 7th accepted, every 11th rejected. Their start times are
    /// out of rowid order, so the manifest's first and last are not the first and last rows.
    fn store_of(dir: &Path, n: usize) -> (Store, Identity) {
        let key = dir.join("identity.key");
        std::fs::write(&key, "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n").expect("key");
        let (identity, created) = Identity::load_or_create(&key).expect("identity");
        assert!(!created);
        let mut store = Store::open(&dir.join("vantage.db")).expect("store");
        let batch: Vec<Relayed> = (0..n)
            .map(|i| {
                let at = format!(
                    "2026-11-{:02} {:02}:{:02}:00",
                    1 + (i * 7919) % 28,
                    (i * 31) % 24,
                    i % 60
                );
                let body = "x".repeat(i % 300);
                let (id, envelope) = identity
                    .seal(&format!(
                        "{{\"test_name\":\"web_connectivity\",\"measurement_start_time\":\"{at}\",\"input\":\"https://example.org/{i}\",\"body\":\"{body}\"}}"
                    ))
                    .expect("seal");
                Relayed {
                    id: id.to_string(),
                    test_name: "web_connectivity".into(),
                    measured_at: at,
                    input: Some(format!("https://example.org/{i}")),
                    envelope,
                }
            })
            .collect();
        assert_eq!(store.insert_relayed(&batch).expect("insert"), n as u64);
        let outcomes: Vec<(String, crate::store::Delivery)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let d = if i % 7 == 3 {
                    crate::store::Delivery::Accepted
                } else if i % 11 == 5 {
                    crate::store::Delivery::Rejected {
                        reason: "bad signature".into(),
                    }
                } else {
                    return None;
                };
                Some((r.id.clone(), d))
            })
            .collect();
        store.record_outcomes(&outcomes).expect("outcomes");
        (store, identity)
    }

    fn sha256_of(path: &Path) -> String {
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            &std::fs::read(path).expect("read"),
        ))
    }

    /// The exported file, byte for byte, is the one the export wrote when it held every row in
    /// memory (the hash below is of that version's file for the same store, key and time), for
    /// more rows than one page of the store's reading; the next incremental export is empty.
    #[test]
    fn an_export_of_many_pages_is_the_same_file_as_before() {
        let dir = temp("pages");
        let (mut store, identity) = store_of(&dir, 1000);
        let path = dir.join("week.jsonl.gz");
        let manifest = export(
            &mut store,
            &identity,
            &path,
            &Selection::default(),
            1_796_000_000,
        )
        .expect("export")
        .expect("written");
        // 1000 rows, 143 accepted, 78 rejected of which 13 were accepted already.
        assert_eq!(manifest.count, 1000 - 143 - (91 - 13));
        assert_eq!(manifest.first.as_deref(), Some("2026-11-01 00:00:00"));
        assert_eq!(manifest.last.as_deref(), Some("2026-11-27 22:58:00"));
        assert_eq!(
            sha256_of(&path),
            "84d1c49bd2af9a82eda6c0c59d8ba1f9c3782e49b6cb167ceadb1a3f6c893e5f"
        );
        let read = read_export(&path, &mut |_, _| true).expect("read");
        assert!(
            read.clean() && read.good as u64 == manifest.count,
            "{read:?}"
        );

        // Marked exported: nothing new for the next export, and --all still holds them all.
        let again = Selection {
            skip_empty: true,
            ..Selection::default()
        };
        let next = dir.join("next.jsonl.gz");
        assert!(
            export(&mut store, &identity, &next, &again, 0)
                .expect("again")
                .is_none()
        );
        assert!(!next.exists());
        let all = Selection {
            all: true,
            ..Selection::default()
        };
        let m = export(&mut store, &identity, &next, &all, 0)
            .expect("all")
            .expect("written");
        assert_eq!(m.count, 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = temp("fail");
        let path = dir.join("missing").join("out.gz");
        let id = Identity::generate().expect("id");
        let err = write_export(&path, &id, &items(&id, 1), 0).expect_err("no dir");
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert!(!partial_path(&path).exists());
    }
}
