//! Blockpage and DNS-injection fingerprints in OONI's CSV format (`ooni/blocking-fingerprints`,
//! its `fingerprints_http.csv` and `fingerprints_dns.csv`): `name,scope,other_names,location_found,pattern_type,pattern,
//! confidence_no_fp,expected_countries,source,exp_url,notes`.
//!
//! A match of a blocking fingerprint (scope `nat`, `isp`, `prod`, `inst`) from a probe in one of
//! its expected countries turns an anomaly into a *confirmed* block. Scope `fp` marks a page that
//! looks odd but is not censorship (a CDN challenge, a site's own geo-block), and suppresses the
//! anomaly. Unlike OONI's fastpath, `pattern_type` is honoured for bodies too.

use std::path::Path;

use base64::Engine as _;
use regex::Regex;

use crate::ooni::{CountryCode, MaybeBinary, WebConnectivityMeasurement};

/// The fingerprints Vantage ships (`probe/data/fingerprints.csv`): facts about known blockpage
/// addresses and wording, written for this project.
pub const BUILTIN_CSV: &str = include_str!("../../data/fingerprints.csv");

/// The header every fingerprint file starts with.
pub const HEADER: [&str; 11] = [
    "name",
    "scope",
    "other_names",
    "location_found",
    "pattern_type",
    "pattern",
    "confidence_no_fp",
    "expected_countries",
    "source",
    "exp_url",
    "notes",
];

/// Errors reading a fingerprint file.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    /// The file could not be read.
    #[error("cannot read fingerprints from {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The header is not OONI's.
    #[error("{file}: not a fingerprint file: header must be {}", HEADER.join(","))]
    Header {
        /// The file.
        file: String,
    },
    /// A row is malformed; the rest of the file is still used.
    #[error("{file}:{line}: {reason}")]
    Row {
        /// The file.
        file: String,
        /// 1-based line.
        line: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Where a fingerprint looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// DNS answers (addresses or CNAMEs).
    Dns,
    /// The HTTP body.
    Body,
    /// One HTTP response header, lower-case name.
    Header(String),
}

/// How the pattern is compared.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// Equal.
    Full(String),
    /// Starts with.
    Prefix(String),
    /// Contains.
    Contains(String),
    /// Matches the regular expression.
    Regexp(Regex),
}

impl Pattern {
    fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Full(p) => text == p,
            Pattern::Prefix(p) => text.starts_with(p.as_str()),
            Pattern::Contains(p) => text.contains(p.as_str()),
            Pattern::Regexp(r) => r.is_match(text),
        }
    }
}

/// One fingerprint.
#[derive(Debug, Clone)]
pub struct Fingerprint {
    /// Its name, e.g. `ooni.ir_4`.
    pub name: String,
    /// `nat`, `isp`, `prod`, `inst`, `vbw`, `fp`, ...
    pub scope: String,
    /// Where it looks.
    pub location: Location,
    /// What it looks for.
    pub pattern: Pattern,
    /// Countries where a match confirms a block; empty means anywhere.
    pub expected_countries: Vec<String>,
}

impl Fingerprint {
    /// Whether this fingerprint marks a known false positive.
    pub fn is_false_positive(&self) -> bool {
        self.scope == "fp"
    }

    /// Whether a match from a probe in `cc` confirms a block: a blocking scope (not the vague
    /// `vbw`, not `fp`) and, when the fingerprint names countries, one of them.
    pub fn confirms_in(&self, cc: CountryCode) -> bool {
        matches!(self.scope.as_str(), "nat" | "isp" | "prod" | "inst")
            && (self.expected_countries.is_empty()
                || self.expected_countries.iter().any(|c| c == cc.as_str()))
    }
}

/// A fingerprint that matched a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Fingerprint name.
    pub name: String,
    /// Its scope.
    pub scope: String,
    /// Whether it is DNS evidence (else HTTP).
    pub dns: bool,
    /// Whether it confirms a block for this probe's country.
    pub confirmed: bool,
}

/// A set of fingerprints.
#[derive(Debug, Clone, Default)]
pub struct Fingerprints {
    all: Vec<Fingerprint>,
}

impl Fingerprints {
    /// The fingerprints Vantage ships.
    pub fn builtin() -> Self {
        let (set, errors) = Self::parse("builtin fingerprints", BUILTIN_CSV)
            .unwrap_or_else(|_| (Fingerprints::default(), Vec::new()));
        debug_assert!(errors.is_empty(), "{errors:?}");
        set
    }

    /// Number of fingerprints.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Adds every fingerprint of `other`.
    pub fn extend(&mut self, other: Fingerprints) {
        self.all.extend(other.all);
    }

    /// Parses a CSV file's text. A bad header is an error; a bad row is reported and skipped.
    pub fn parse(
        file: &str,
        text: &str,
    ) -> Result<(Fingerprints, Vec<FingerprintError>), FingerprintError> {
        let mut reader = crate::test_lists::with_header(text, &HEADER)
            .ok_or_else(|| FingerprintError::Header { file: file.into() })?;
        let mut set = Fingerprints::default();
        let mut errors = Vec::new();
        let mut lines = crate::test_lists::LineCounter::new(text);
        for record in reader.records() {
            let row_error = |line: u64, reason: String| FingerprintError::Row {
                file: file.into(),
                line,
                reason,
            };
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let line = lines.line_of(e.position());
                    errors.push(row_error(line, e.to_string()));
                    continue;
                }
            };
            let line = lines.line_of(record.position());
            match Self::row(&record) {
                Ok(fp) => set.all.push(fp),
                Err(reason) => errors.push(row_error(line, reason)),
            }
        }
        Ok((set, errors))
    }

    fn row(record: &csv::StringRecord) -> Result<Fingerprint, String> {
        if record.len() != HEADER.len() {
            return Err(format!(
                "expected {} fields, found {}",
                HEADER.len(),
                record.len()
            ));
        }
        let field = |i: usize| record.get(i).unwrap_or_default().trim();
        let name = field(0);
        if name.is_empty() {
            return Err("empty name".into());
        }
        let location = match field(3) {
            "dns" => Location::Dns,
            "body" => Location::Body,
            l => match l.strip_prefix("header.") {
                Some(h) if !h.is_empty() => Location::Header(h.to_ascii_lowercase()),
                _ => return Err(format!("unknown location_found {l:?}")),
            },
        };
        let raw = record.get(5).unwrap_or_default().to_string();
        if raw.is_empty() {
            return Err("empty pattern".into());
        }
        let pattern = match field(4) {
            "full" => Pattern::Full(raw),
            "prefix" => Pattern::Prefix(raw),
            "contains" => Pattern::Contains(raw),
            "regexp" => Pattern::Regexp(compile(&raw)?),
            t => return Err(format!("unknown pattern_type {t:?}")),
        };
        Ok(Fingerprint {
            name: name.into(),
            scope: field(1).into(),
            location,
            pattern,
            expected_countries: field(7)
                .split(',')
                .map(|c| c.trim().to_ascii_uppercase())
                .filter(|c| !c.is_empty())
                .collect(),
        })
    }

    /// Reads one CSV file.
    pub fn load_file(
        path: &Path,
    ) -> Result<(Fingerprints, Vec<FingerprintError>), FingerprintError> {
        let text = std::fs::read_to_string(path).map_err(|source| FingerprintError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Reads every `*.csv` file of a directory (e.g. OONI's `fingerprints_dns.csv` and
    /// `fingerprints_http.csv`).
    pub fn load_dir(dir: &Path) -> Result<(Fingerprints, Vec<FingerprintError>), FingerprintError> {
        let read_err = |source| FingerprintError::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "csv"))
            .collect();
        paths.sort();
        let mut set = Fingerprints::default();
        let mut errors = Vec::new();
        for path in paths {
            let (more, errs) = Self::load_file(&path)?;
            set.extend(more);
            errors.extend(errs);
        }
        Ok((set, errors))
    }

    /// Every fingerprint that matches the measurement's DNS answers or HTTP responses.
    pub fn matches(&self, m: &WebConnectivityMeasurement) -> Vec<Match> {
        let tk = &m.test_keys;
        let answers: Vec<&str> = tk
            .queries
            .iter()
            .flatten()
            .chain(tk.x_dns_duplicate_responses.iter().flatten())
            .flat_map(|q| q.answers.iter().flatten())
            .flat_map(|a| [a.ipv4.as_deref(), a.ipv6.as_deref(), a.hostname.as_deref()])
            .flatten()
            .collect();
        let responses: Vec<_> = tk
            .requests
            .iter()
            .flatten()
            .filter_map(|r| r.response.as_ref())
            .collect();
        let bodies: Vec<String> = responses
            .iter()
            .filter_map(|r| r.body.as_ref().map(text_of))
            .collect();
        let mut out: Vec<Match> = Vec::new();
        for fp in &self.all {
            let hit = match &fp.location {
                Location::Dns => answers
                    .iter()
                    .any(|a| fp.pattern.matches(a.trim_end_matches('.'))),
                Location::Body => bodies.iter().any(|b| fp.pattern.matches(b)),
                Location::Header(name) => responses.iter().any(|r| {
                    r.header_pairs()
                        .into_iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                        .any(|(_, v)| fp.pattern.matches(&text_of(v)))
                }),
            };
            if hit && !out.iter().any(|m| m.name == fp.name) {
                out.push(Match {
                    name: fp.name.clone(),
                    scope: fp.scope.clone(),
                    dns: fp.location == Location::Dns,
                    confirmed: fp.confirms_in(m.probe_cc),
                });
            }
        }
        out
    }
}

/// Compiles a fingerprint's regular expression. OONI's are Python's `re`, where a `{` that does
/// not start a valid repetition is a literal brace (`{"msg":.*"id":`); Rust's regex refuses those,
/// so a pattern that fails is retried with its braces escaped.
fn compile(raw: &str) -> Result<Regex, String> {
    Regex::new(raw).or_else(|e| {
        Regex::new(&raw.replace('{', r"\{").replace('}', r"\}"))
            .map_err(|_| format!("bad regexp {raw:?}: {e}"))
    })
}

/// Text of a body or header value; base64 bodies are decoded (lossily) first.
fn text_of(value: &MaybeBinary) -> String {
    match value {
        MaybeBinary::Text(t) => t.clone(),
        MaybeBinary::Binary(b) => base64::engine::general_purpose::STANDARD
            .decode(&b.data)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_file_parses_cleanly() {
        let (set, errors) = Fingerprints::parse("builtin", BUILTIN_CSV).expect("header");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(set.len(), Fingerprints::builtin().len());
        assert!(set.len() >= 10);
    }

    #[test]
    fn bad_rows_are_reported_and_skipped() {
        let text = format!(
            "{}\nok,nat,,body,contains,blocked,5,IR,x,,\nbad,nat,,body,regexp,([,5,,x,,\nshort,nat\nnoloc,nat,,pigeon,full,x,5,,x,,\n",
            HEADER.join(",")
        );
        let (set, errors) = Fingerprints::parse("t.csv", &text).expect("header");
        assert_eq!(set.len(), 1);
        let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("t.csv:3: bad regexp"), "{msgs:?}");
        assert!(
            msgs[1].starts_with("t.csv:4: expected 11 fields"),
            "{msgs:?}"
        );
        assert!(
            msgs[2].starts_with("t.csv:5: unknown location_found"),
            "{msgs:?}"
        );
    }

    #[test]
    fn blank_lines_and_windows_line_endings_do_not_shift_line_numbers() {
        // Line 1 header, 2 good, 3 blank, 4 bad regexp, 5 blank, 6 too short; CRLF throughout.
        let text = format!(
            "{}\r\nok,nat,,body,contains,blocked,5,IR,x,,\r\n\r\nbad,nat,,body,regexp,([,5,,x,,\r\n\r\nshort,nat\r\n",
            HEADER.join(",")
        );
        let (set, errors) = Fingerprints::parse("w.csv", &text).expect("header");
        assert_eq!(set.len(), 1);
        let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("w.csv:4: bad regexp"), "{msgs:?}");
        assert!(
            msgs[1].starts_with("w.csv:6: expected 11 fields"),
            "{msgs:?}"
        );
    }

    #[test]
    fn python_style_literal_braces_are_accepted() {
        let r = compile(r#"{"msg":.*"id":"#).expect("compiles as Python would");
        assert!(r.is_match(r#"{"msg":"blocked","id":7}"#));
        assert!(compile("a{2}").expect("quantifier").is_match("xaax"));
    }

    #[test]
    fn wrong_header_is_refused() {
        let err = Fingerprints::parse("x.csv", "url,category_code\n").expect_err("header");
        assert!(err.to_string().starts_with("x.csv: not a fingerprint file"));
    }

    #[test]
    fn confirmation_depends_on_scope_and_country() {
        let (set, _) = Fingerprints::parse(
            "t",
            &format!(
                "{}\na,nat,,dns,full,1.2.3.4,5,IR,x,,\nb,vbw,,dns,full,1.2.3.4,5,,x,,\nc,isp,,dns,full,1.2.3.4,5,,x,,\n",
                HEADER.join(",")
            ),
        )
        .expect("parse");
        let ir: CountryCode = "IR".parse().expect("cc");
        let it: CountryCode = "IT".parse().expect("cc");
        assert!(set.all[0].confirms_in(ir));
        assert!(!set.all[0].confirms_in(it));
        assert!(!set.all[1].confirms_in(ir), "vague wording never confirms");
        assert!(set.all[2].confirms_in(it), "no country list: anywhere");
    }
}
