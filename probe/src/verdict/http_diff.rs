//! Comparing the probe's final page with the control's (OONI `minipipeline/httpdiff.go`,
//! `webconnectivitylte/analysishttpdiff.go` in `ooni/probe-cli`).
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

/// Headers that every server sends whatever the page, so that their presence on both sides
/// says nothing about whether the probe got the control's page: Vantage's rules leave them
/// out of `headers_match` besides OONI's list (`docs/scoring.md`, "Headers every server
/// sends"). A censor's filter page served by a transparent proxy carries them as the real
/// site does; OONI's list lacks the framing ones, so any two responses with a body "matched".
/// Each with the reason.
pub const EVERY_SERVER_SENDS: [(&str, &str); 8] = [
    (
        "content-length",
        "the body's length in framing, sent with any body not chunked (RFC 9110 8.6, RFC 9112 6.3)",
    ),
    (
        "transfer-encoding",
        "chunked framing, sent with any body whose length is not known in advance (RFC 9112 6.1)",
    ),
    (
        "connection",
        "hop-by-hop connection options, about the connection and not the page (RFC 9110 7.6.1)",
    ),
    (
        "keep-alive",
        "hop-by-hop parameters of a persistent connection (RFC 9112 9.3, RFC 9110 7.6.1)",
    ),
    (
        "proxy-connection",
        "a non-standard hop-by-hop header sent by proxies, a censor's among them (RFC 9112 9.6)",
    ),
    (
        "upgrade",
        "a hop-by-hop offer of another protocol (RFC 9110 7.8)",
    ),
    (
        "trailer",
        "framing: names the fields after a chunked body (RFC 9110 6.6.2)",
    ),
    (
        "content-range",
        "framing of a partial response, about the bytes and not the page (RFC 9110 14.4)",
    ),
];

/// Below this Jaccard similarity of their word sets two titles are different
/// ([`HttpDiff::title_similarity`]).
pub const TITLE_SIMILARITY_FACTOR: f64 = 0.5;

/// Below this share of the control title's words found in the probe's body, the body does not
/// carry the site's content ([`HttpDiff::control_title_in_body`]).
pub const TITLE_IN_BODY_FACTOR: f64 = 0.5;

/// At most this many bytes of the probe's body are read for words: the test stays cheap on a
/// large page, and a blockpage is small.
pub const MAX_BODY_SCAN: usize = 256 * 1024;

/// The comparisons.
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
    /// The same, also leaving out [`EVERY_SERVER_SENDS`] (Vantage's rules).
    pub site_headers_match: Option<bool>,
    /// No long title word appears in only one of the titles; `None` when either title has no
    /// long word (ts-017).
    pub title_match: Option<bool>,
    /// Jaccard similarity of the titles' word sets (words of two or more letters or digits,
    /// lower-cased), when the control's page has a title; a probe's page without one is 0.
    pub title_similarity: Option<f64>,
    /// The share of the control title's words (those not in the URL's host name, which a
    /// blockpage may repeat, unless the title has no other) found anywhere in the probe's whole
    /// body; `None` when the body is cut, binary or absent. The helper returns no text of its page
    /// (ts-017's control answer: length, title, headers, status), so this is the probe's
    /// content compared with what the probe knows of the control's.
    pub control_title_in_body: Option<f64>,
    /// The control fetched its page (no failure, a 2xx status).
    pub control_page_ok: bool,
}

impl HttpDiff {
    /// OONI's rule: same status, and the same body length, uncommon headers or title.
    pub fn same_page(&self) -> bool {
        self.status_code_match == Some(true)
            && (self.body_length_match == Some(true)
                || self.headers_match == Some(true)
                || self.title_match == Some(true))
    }

    /// Whether the probe's page differs from the control's in both title and content: the
    /// control fetched its page, the titles' similarity is below [`TITLE_SIMILARITY_FACTOR`] and
    /// the probe's body carries less than [`TITLE_IN_BODY_FACTOR`] of the control title's words.
    /// Then no matching length or header makes it the same page (Vantage's rules,
    /// `docs/scoring.md` "A different page of the same length").
    pub fn different_page(&self) -> bool {
        self.control_page_ok
            && self
                .title_similarity
                .is_some_and(|s| s < TITLE_SIMILARITY_FACTOR)
            && self
                .control_title_in_body
                .is_some_and(|s| s < TITLE_IN_BODY_FACTOR)
    }

    /// Vantage's rule: same status, not a [`different_page`](Self::different_page), and the
    /// same body length, uncommon headers other than those [`EVERY_SERVER_SENDS`], or title.
    pub fn same_page_vantage(&self) -> bool {
        self.status_code_match == Some(true)
            && !self.different_page()
            && (self.body_length_match == Some(true)
                || self.site_headers_match == Some(true)
                || self.title_match == Some(true))
    }
}

/// Lower-cased words of two or more letters or digits.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let s = a.intersection(b).count() as f64 / union as f64;
    s
}

/// The probe's whole body as text, at most [`MAX_BODY_SCAN`] bytes of it.
fn body_text(r: &HttpResponse) -> Option<&str> {
    if r.truncated() {
        return None;
    }
    let MaybeBinary::Text(t) = r.body.as_ref()? else {
        return None;
    };
    let mut end = t.len().min(MAX_BODY_SCAN);
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    Some(&t[..end])
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
    compare_at("", probe, control)
}

/// Compares the probe's response with the control's for a URL whose host is `host`: the
/// host's words are left out of the control's title when looking for it in the probe's body,
/// since a blockpage often names the site it blocks.
pub fn compare_at(host: &str, probe: &HttpResponse, control: &ControlHttpRequest) -> HttpDiff {
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
    let mut shared = probe_headers.intersection(&control_headers);
    diff.headers_match = Some(shared.clone().next().is_some());
    diff.site_headers_match =
        Some(shared.any(|n| !EVERY_SERVER_SENDS.iter().any(|(every, _)| n == every)));
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

    diff.control_page_ok = control.failure.is_none() && (200..300).contains(&control.status_code);
    let control_words = words(control_title);
    if !control_words.is_empty() {
        diff.title_similarity = Some(jaccard(&words(&probe_title), &control_words));
        let host = words(host);
        let mut site_words: BTreeSet<&String> = control_words.difference(&host).collect();
        // A title that is only the site's name ("example.com"): its words are all there is.
        if site_words.is_empty() {
            site_words = control_words.iter().collect();
        }
        if let Some(body) = body_text(probe) {
            let body = words(body);
            #[allow(clippy::cast_precision_loss)]
            let share = site_words.iter().filter(|w| body.contains(**w)).count() as f64
                / site_words.len() as f64;
            diff.control_title_in_body = Some(share);
        }
    }
    diff
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ooni::{Blocking, WebConnectivityMeasurement};
    use crate::verdict::fingerprints::Fingerprints;
    use crate::verdict::{Verdict, rules, score};

    /// OONI's generated measurement of a site fetched alike by the probe and the helper.
    const SUCCESS: &str =
        include_str!("../../../tests/data/ooni/webconnectivity/generated-successWithHTTP.json");

    /// The real page: 818 bytes, its own title.
    fn real_page() -> String {
        let head = "<html><head><title>Daily Chronicle - Independent News</title></head><body>";
        let text = "<p>Parliament votes on the budget; the opposition walks out.</p>";
        let mut page = format!("{head}{text}");
        while page.len() < 818 - "</body></html>".len() {
            page.push(' ');
        }
        page.push_str("</body></html>");
        assert_eq!(page.len(), 818);
        page
    }

    /// The filter page the lab's transparent proxy served: 123 bytes, no fingerprint.
    fn blockpage(len: usize) -> String {
        let mut page = "<html><title>Access denied</title><body>This site is blocked by order of \
                        the authority.</body>"
            .to_string();
        while page.len() < len - "</html>".len() {
            page.push(' ');
        }
        page.push_str("</html>");
        assert_eq!(page.len(), len);
        page
    }

    fn headers(len: usize) -> BTreeMap<String, String> {
        [
            ("Content-Length", len.to_string()),
            ("Content-Type", "text/html".to_string()),
            ("Date", "Thu, 24 Aug 2023 14:35:29 GMT".to_string()),
            ("Server", "nginx".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The probe got `body`; the helper got the real page.
    fn measurement(body: &str) -> WebConnectivityMeasurement {
        let mut m: WebConnectivityMeasurement =
            serde_json::from_str(SUCCESS).expect("the fixture parses");
        let tk = &mut m.test_keys;
        let r = tk
            .requests
            .as_mut()
            .and_then(|r| r.first_mut())
            .and_then(|r| r.response.as_mut())
            .expect("the fixture has a response");
        r.body = Some(MaybeBinary::Text(body.to_string()));
        r.body_is_truncated = Some(false);
        r.headers = headers(body.len())
            .into_iter()
            .map(|(k, v)| (k, MaybeBinary::Text(v)))
            .collect();
        r.headers_list = None;
        let real = real_page();
        let c = tk
            .control
            .as_mut()
            .and_then(|c| c.http_request.as_mut())
            .expect("the fixture has a control page");
        c.body_length = i64::try_from(real.len()).expect("small");
        c.title = Some("Daily Chronicle - Independent News".into());
        c.headers = Some(headers(real.len()));
        m
    }

    fn verdict(body: &str, set: &rules::RuleSet) -> Verdict {
        score(&measurement(body), set, &Fingerprints::builtin())
    }

    #[test]
    fn an_unfingerprinted_blockpage_with_the_common_content_length_header_is_http_diff() {
        let page = blockpage(123);
        let v = verdict(&page, &rules::VANTAGE);
        assert_eq!(
            v.blocking,
            Some(Blocking::Kind("http-diff".into())),
            "{v:?}"
        );
        assert_eq!(v.accessible, Some(false));
        assert!(!v.confirmed, "no fingerprint knows it: {v:?}");
        assert_eq!(v.rule, "http-different-page");
        assert_eq!(v.rule_set, "vantage-3");
        // OONI's classic rules call it the same page, through `content-length` alone.
        assert_eq!(
            v.ooni_rules_blocking,
            Some(Some(Blocking::Flag(false))),
            "{v:?}"
        );
        let ooni = verdict(&page, &rules::OONI);
        assert_eq!(ooni.rule, "http-same-page");

        let control = measurement(&page).test_keys.control.expect("control");
        let http = control.http().expect("http");
        let resp = |m: &WebConnectivityMeasurement| {
            m.test_keys.requests.as_ref().expect("requests")[0]
                .response
                .clone()
                .expect("response")
        };
        let diff = compare_at("www.example.com", &resp(&measurement(&page)), http);
        assert_eq!(diff.body_length_match, Some(false));
        assert_eq!(diff.headers_match, Some(true), "OONI's list: {diff:?}");
        assert_eq!(diff.site_headers_match, Some(false), "{diff:?}");
        assert_eq!(diff.title_match, Some(false));
        assert_eq!(diff.title_similarity, Some(0.0));
        assert_eq!(diff.control_title_in_body, Some(0.0));
        assert!(diff.different_page() && !diff.same_page_vantage());
    }

    #[test]
    fn a_blockpage_of_the_real_pages_length_is_http_diff_and_the_real_page_is_accessible() {
        // Padded to the real page's length: OONI's length test matches.
        let v = verdict(&blockpage(818), &rules::VANTAGE);
        assert_eq!(
            v.blocking,
            Some(Blocking::Kind("http-diff".into())),
            "{v:?}"
        );
        assert_eq!(v.rule, "http-different-page");
        assert!(!v.confirmed);
        assert_eq!(
            verdict(&blockpage(818), &rules::OONI).rule,
            "http-same-page"
        );

        // The same page twice.
        for set in [&rules::VANTAGE, &rules::OONI] {
            let v = verdict(&real_page(), set);
            assert_eq!(v.blocking, Some(Blocking::Flag(false)), "{v:?}");
            assert_eq!(v.accessible, Some(true));
            assert_eq!(v.rule, "http-same-page");
        }
        // Today's edition of the page: another length and headline, the same site.
        let today = real_page().replace(
            "Parliament votes on the budget; the opposition walks out.",
            "Floods in the north: the chronicle's reporters on the ground.",
        );
        let v = verdict(&today, &rules::VANTAGE);
        assert_eq!(v.rule, "http-same-page", "{v:?}");
    }

    #[test]
    fn the_site_named_on_a_blockpage_does_not_make_it_the_site() {
        // The blockpage repeats the host; the control's title is mostly the host's words.
        let mut m = measurement(
            "<html><title>Blocked</title><body>Access to www.example.com is blocked.</body></html>",
        );
        if let Some(c) = m
            .test_keys
            .control
            .as_mut()
            .and_then(|c| c.http_request.as_mut())
        {
            c.title = Some("Example Domain".into());
        }
        let v = score(&m, &rules::VANTAGE, &Fingerprints::builtin());
        assert_eq!(v.rule, "http-different-page", "{v:?}");
    }

    #[test]
    fn a_title_that_is_only_the_host_name_is_looked_for_whole() {
        // The lab's sites are titled with their name; a blockpage of the page's size.
        let real = "<html><head><title>same-size.lab</title></head><body><h1>Welcome to \
                    same-size.lab</h1><p>A site of the Vantage censorship lab.</p></body></html>";
        let mut filter = "<html><title>Access denied</title><body>This site is blocked by order \
                          of the authority.</body></html>"
            .to_string();
        while filter.len() < real.len() {
            filter.insert(filter.len() - "</body></html>".len(), ' ');
        }
        assert_eq!(filter.len(), real.len());
        let mut m = measurement(&filter);
        let c = m
            .test_keys
            .control
            .as_mut()
            .and_then(|c| c.http_request.as_mut())
            .expect("control");
        c.title = Some("same-size.lab".into());
        c.body_length = i64::try_from(real.len()).expect("small");
        m.input = Some("http://same-size.lab/".into());
        let fp = Fingerprints::builtin();
        let v = score(&m, &rules::VANTAGE, &fp);
        assert_eq!(v.rule, "http-different-page", "{v:?}");
        assert_eq!(v.blocking, Some(Blocking::Kind("http-diff".into())));
        assert!(!v.confirmed);
        assert_eq!(score(&m, &rules::OONI, &fp).rule, "http-same-page");
        // The real page itself, under the same name, is the same page.
        let mut same = m.clone();
        if let Some(r) = same
            .test_keys
            .requests
            .as_mut()
            .and_then(|r| r.first_mut())
            .and_then(|r| r.response.as_mut())
        {
            r.body = Some(MaybeBinary::Text(real.to_string()));
        }
        let v = score(&same, &rules::VANTAGE, &fp);
        assert_eq!(v.rule, "http-same-page", "{v:?}");
    }

    #[test]
    fn what_cannot_be_compared_is_not_a_different_page() {
        let page = blockpage(818);
        let base = measurement(&page);
        let control = base.test_keys.control.clone().expect("control");
        let mut http = control.http().expect("http").clone();
        let resp = base.test_keys.requests.as_ref().expect("requests")[0]
            .response
            .clone()
            .expect("response");
        // A control page without a title: nothing to compare titles with.
        http.title = Some(String::new());
        let d = compare_at("www.example.com", &resp, &http);
        assert_eq!(d.title_similarity, None);
        assert!(!d.different_page() && d.same_page_vantage(), "{d:?}");
        // A body cut at the cap: the title's words may be in the part not kept.
        http.title = Some("Daily Chronicle - Independent News".into());
        let mut cut = resp.clone();
        cut.body_is_truncated = Some(true);
        let d = compare_at("www.example.com", &cut, &http);
        assert_eq!(d.control_title_in_body, None);
        assert!(!d.different_page(), "{d:?}");
        // A body that is not text (written as base64): no words to look for.
        let mut binary = resp.clone();
        binary.body = Some(
            serde_json::from_value(serde_json::json!({"format": "base64", "data": "AAEC"}))
                .expect("a binary body"),
        );
        let d = compare_at("www.example.com", &binary, &http);
        assert_eq!(d.control_title_in_body, None);
        assert!(!d.different_page(), "{d:?}");
        // A control that failed to fetch its page.
        http.failure = Some("connection_reset".into());
        assert!(!compare_at("www.example.com", &resp, &http).different_page());
        http.failure = None;
        http.status_code = 404;
        assert!(!compare_at("www.example.com", &resp, &http).different_page());
        // A body larger than the scan bound is read only so far, and never panics on a
        // character cut in two.
        let mut big = resp;
        big.body = Some(MaybeBinary::Text("é".repeat(MAX_BODY_SCAN)));
        http.status_code = 200;
        let d = compare_at("www.example.com", &big, &http);
        assert_eq!(d.control_title_in_body, Some(0.0));
    }
}
