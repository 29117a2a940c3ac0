//! Bodies as streams, so that no request holds a whole body in memory: an upload is read a line
//! at a time as it arrives (and inflates), an export is sent a chunk at a time as it is read from
//! the store.
//!
//! Both run on a blocking thread (SQLite, inflate and signature checks are CPU work) joined to
//! the connection by a bounded channel of chunks: a slow client slows its own worker down and
//! holds no more than the channel's few chunks.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

use crate::ingest::{Flow, Session};
use crate::store::DbError;

/// Chunks in flight between a connection and its worker.
pub const CHANNEL_CHUNKS: usize = 4;

/// The body of a request, as the worker reads it: chunks from the connection, or the reason the
/// connection stopped sending them.
pub struct ChunkReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl ChunkReader {
    /// Reads what the other end of `rx` sends.
    pub fn new(rx: mpsc::Receiver<Result<Bytes, String>>) -> Self {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(reason)) => return Err(io::Error::other(reason)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// How reading an upload ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every line was read.
    Complete,
    /// The session took as many lines as one request may; the rest was not read.
    Full,
}

/// Why reading an upload stopped early. The lines read before it are stored and answered.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The body could not be read: the client stopped sending, broke the gzip stream, or was too
    /// slow.
    #[error("{0}")]
    Body(io::Error),
    /// The body (after decompression) is larger than the limit.
    #[error("body larger than {0} bytes once decompressed")]
    TooLarge(usize),
    /// Storing failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Feeds every line of `body` to `session`, holding at most `max_line` bytes of a line (a
/// longer one is skipped as it streams past and answered "too large") and reading at most
/// `max_total` bytes.
pub fn ingest_lines(
    body: impl Read,
    session: &mut Session<'_>,
    max_line: usize,
    max_total: usize,
) -> Result<Ended, StreamError> {
    let mut reader = BufReader::with_capacity(64 * 1024, body);
    let mut line: Vec<u8> = Vec::new();
    // The length of a line too long to keep, while the rest of it streams past.
    let mut skipped: Option<usize> = None;
    let (mut n, mut total) = (0usize, 0usize);
    loop {
        let buf = reader.fill_buf().map_err(StreamError::Body)?;
        // A run of empty lines between two lines is skipped in one step: a body of nothing but
        // newlines costs a scan of its bytes, not a call per line.
        let blank = buf.iter().take_while(|&&b| b == b'\n').count();
        if blank > 0 && line.is_empty() && skipped.is_none() {
            n += blank;
            total = total.saturating_add(blank);
            if total > max_total {
                return Err(StreamError::TooLarge(max_total));
            }
            reader.consume(blank);
            continue;
        }
        let eof = buf.is_empty();
        let (part, used, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), eof),
        };
        total = total.saturating_add(used);
        if total > max_total {
            return Err(StreamError::TooLarge(max_total));
        }
        match skipped.as_mut() {
            Some(len) => *len += part.len(),
            None if line.len() + part.len() > max_line => skipped = Some(line.len() + part.len()),
            None => line.extend_from_slice(part),
        }
        reader.consume(used);
        if complete && !(eof && line.is_empty() && skipped.is_none()) {
            n += 1;
            let flow = match skipped.take() {
                Some(len) => session.refuse(n, format!("too large: {len} bytes")),
                None => match std::str::from_utf8(&line) {
                    Ok(text) => session.line(n, text)?,
                    Err(_) => session.refuse(n, "malformed: the line is not UTF-8".into()),
                },
            };
            line.clear();
            if flow == Flow::Full {
                return Ok(Ended::Full);
            }
        }
        if eof {
            return Ok(Ended::Complete);
        }
    }
}

/// The writing end of an export: buffers output into chunks and hands them to the connection,
/// waiting while the client reads the ones before. Fails with `BrokenPipe` once the client has
/// gone, which stops the export.
pub struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

/// Size of one chunk of an export.
const CHUNK_BYTES: usize = 64 * 1024;

impl ChunkWriter {
    /// A writer whose chunks `body` (the receiving end) sends.
    pub fn new() -> (ChunkWriter, ChannelBody) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (
            ChunkWriter {
                tx,
                buf: Vec::with_capacity(CHUNK_BYTES),
            },
            ChannelBody(rx),
        )
    }

    fn send(&mut self, item: Result<Bytes, io::Error>) -> io::Result<()> {
        self.tx
            .blocking_send(item)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Ends the body with an error, so the client sees a broken transfer rather than a short
    /// export that looks complete.
    pub fn fail(mut self, reason: String) {
        let _ = self.send(Err(io::Error::other(reason)));
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.send(Ok(chunk))
    }
}

/// A response body fed by a [`ChunkWriter`].
pub struct ChannelBody(mpsc::Receiver<Result<Bytes, io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestConfig, Origin};
    use crate::store::Sqlite;
    use vantage_probe::verdict::fingerprints::Fingerprints;

    fn lines_of(body: &[u8], max_line: usize, max_lines: usize) -> (Result<Ended, String>, String) {
        let dir = std::env::temp_dir().join(format!(
            "vantage-stream-{}-{}",
            std::process::id(),
            body.len()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let config = IngestConfig {
            max_lines,
            ..IngestConfig::default()
        };
        let fingerprints = Fingerprints::builtin();
        let mut session = Session::new(&db, &config, &fingerprints, &Origin::UNKNOWN);
        let ended = ingest_lines(body, &mut session, max_line, 1 << 20).map_err(|e| e.to_string());
        let outcomes = session.finish().expect("finish");
        let _ = std::fs::remove_dir_all(&dir);
        let summary = outcomes
            .iter()
            .map(|o| {
                format!(
                    "{}:{}",
                    o.line,
                    o.reason.as_deref().unwrap_or(o.status.as_str())
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        (ended, summary)
    }

    #[test]
    fn lines_are_numbered_blank_ones_skipped_and_long_ones_refused_without_being_kept() {
        let long = "x".repeat(100);
        let body = format!("{{}}\n\n{long}\nnot json\r\n\u{0}");
        let (ended, summary) = lines_of(body.as_bytes(), 50, 100);
        assert_eq!(ended, Ok(Ended::Complete));
        assert!(summary.starts_with("1:malformed"), "{summary}");
        assert!(summary.contains("3:too large: 100 bytes"), "{summary}");
        assert!(summary.contains("4:malformed"), "{summary}");
        assert!(summary.contains("5:malformed"), "{summary}");
        assert!(!summary.contains("2:"), "{summary}");
    }

    #[test]
    fn invalid_utf8_refuses_its_line_only_and_the_line_cap_stops_reading() {
        let (ended, summary) = lines_of(b"\xff\xfe\n{}\n{}\n{}\n", 50, 100);
        assert_eq!(ended, Ok(Ended::Complete));
        assert!(
            summary.starts_with("1:malformed: the line is not UTF-8"),
            "{summary}"
        );
        let (ended, summary) = lines_of(b"{}\n\n{}\n{}\n{}\n", 50, 2);
        assert_eq!(ended, Ok(Ended::Full));
        assert!(
            summary.starts_with("1:") && summary.contains(" 3:"),
            "{summary}"
        );
        assert!(!summary.contains(" 4:"), "line 4 was not read: {summary}");
    }

    #[test]
    fn a_body_over_the_limit_stops_with_an_error() {
        let dir = std::env::temp_dir().join(format!("vantage-stream-big-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = Sqlite::open(&dir.join("agg.db")).expect("open");
        let config = IngestConfig::default();
        let fingerprints = Fingerprints::builtin();
        let mut session = Session::new(&db, &config, &fingerprints, &Origin::UNKNOWN);
        let body = vec![b'\n'; 10_000];
        let result = ingest_lines(&body[..], &mut session, 100, 4096);
        assert!(matches!(result, Err(StreamError::TooLarge(4096))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
