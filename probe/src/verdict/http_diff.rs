//! Comparing the probe's final page with the control's (OONI `minipipeline/httpdiff.go`,
//! `webconnectivitylte/analysishttpdiff.go`; research `ooni.md` 3.3).
//!
//! Every probe generation is compared from what it wrote: ooniprobe 2.x and measurement-kit wrote
//! no `body_is_truncated` (so the body is whole, df-001-httpt), bodies that are not UTF-8 as
//! `{"format":"base64","data":...}`, and headers only as the map `headers`; a response that never
//! came may have no `code`; a helper may leave out `title` and `headers`.

use std::collections::BTreeSet;

use crate::engine::http::title;
use crate::ooni::{ControlHttpRequest, HttpResponse, MaybeBinary};

/// OONI's `bodyProportionFactor`.
pub const BODY_PROPORTION_FACTOR: f64 = 0.7;

/// Headers every site sends, left out of `headers_match` (OONI's list).
const COMMON_HEADERS: [&str; 25] = [
    "date",
    "content-type",
    "server",
    "cache-control",
    "vary",
    "set-cookie",
    "location",
    "expires",
    "x-powered-by",
    "content-encoding",
    "last-modified",
    "accept-ranges",
    "pragma",
    "x-frame-options",
    "etag",
    "x-content-type-options",
    "age",
    "via",
    "p3p",
    "x-xss-protection",
    "content-language",
    "cf-ray",
    "strict-transport-security",
    "link",
    "x-varnish",
];

/// The four comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HttpDiff {
    /// `min(a/b, b/a)` of the body lengths, when both are known and positive.
    pub body_proportion: Option<f64>,
    /// `body_proportion > 0.7`.
    pub body_length_match: Option<bool>,
    /// Equal codes; `None` when they differ and the control's is not 2xx.
    pub status_code_match: Option<bool>,
    /// The uncommon header names share at least one name.
    pub headers_match: Option<bool>,
    /// No long title word appears in only one of the titles; `None` when either title has no
    /// long word (ts-017).
    pub title_match: Option<bool>,
}

impl HttpDiff {
    /// OONI's rule: same status, and the same body length, uncommon headers or title.
    pub fn same_page(&self) -> bool {
        self.status_code_match == Some(true)
            && (self.body_length_match == Some(true)
                || self.headers_match == Some(true)
                || self.title_match == Some(true))
    }
}

fn body_len(r: &HttpResponse) -> Option<i64> {
    if r.truncated() {
        return None;
    }
    if let Some(n) = r.x_body_length {
        return i64::try_from(n).ok();
    }
    match r.body.as_ref()? {
        MaybeBinary::Text(t) => i64::try_from(t.len()).ok(),
        MaybeBinary::Binary(b) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(&b.data)
                .ok()
                .and_then(|v| i64::try_from(v.len()).ok())
        }
    }
}

fn title_words(t: &str) -> BTreeSet<String> {
    t.split(' ')
        .map(str::to_lowercase)
        .filter(|w| w.len() >= 5)
        .collect()
}

/// Compares the probe's response with the control's.
pub fn compare(probe: &HttpResponse, control: &ControlHttpRequest) -> HttpDiff {
    let mut diff = HttpDiff::default();
    if let Some(p) = body_len(probe) {
        let c = control.body_length;
        if p > 0 && c > 0 {
            #[allow(clippy::cast_precision_loss)]
            let (p, c) = (p as f64, c as f64);
            let proportion = (p / c).min(c / p);
            diff.body_proportion = Some(proportion);
            diff.body_length_match = Some(proportion > BODY_PROPORTION_FACTOR);
        }
    }
    diff.status_code_match = if probe.status() == control.status_code {
        Some(true)
    } else if (200..300).contains(&control.status_code) {
        Some(false)
    } else {
        None
    };
    let uncommon = |names: &mut dyn Iterator<Item = String>| -> BTreeSet<String> {
        names
            .map(|n| n.to_ascii_lowercase())
            .filter(|n| !COMMON_HEADERS.contains(&n.as_str()))
            .collect()
    };
    let probe_headers = uncommon(&mut probe.headers.keys().cloned());
    let control_headers = uncommon(&mut control.headers.iter().flat_map(|h| h.keys().cloned()));
    diff.headers_match = Some(
        probe_headers
            .intersection(&control_headers)
            .next()
            .is_some(),
    );
    let probe_title = probe
        .x_title
        .clone()
        .or_else(|| match probe.body.as_ref()? {
            MaybeBinary::Text(t) => title(t.as_bytes()),
            MaybeBinary::Binary(_) => None,
        })
        .unwrap_or_default();
    let control_title = control.title.as_deref().unwrap_or_default();
    let (a, b) = (title_words(&probe_title), title_words(control_title));
    // ts-017 "title_match": only when both titles have long words; `null` otherwise, so that two
    // pages without a title (a blockpage and a page whose helper copy has none) do not match.
    diff.title_match =
        (!a.is_empty() && !b.is_empty()).then(|| a.symmetric_difference(&b).next().is_none());
    diff
}
