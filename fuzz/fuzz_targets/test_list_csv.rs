//! Test lists in the Citizen Lab CSV format: `vantage_probe::test_lists::TestList::parse`, then
//! `select` as a run does.
//!
//! Invariants: never a panic; a list is returned only when the header is Citizen Lab's; every
//! entry kept is a URL the engine can measure (http or https with a host) on a line after the
//! header, in file order, on the line it names (lines end at `\n`, `\r\n` or a lone `\r`, as
//! for the csv reader); every skipped row names a line after the header; `select` never repeats
//! a URL and keeps to its cap.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_probe::test_lists::{ListError, TestList};

/// The lines of `text`, as an editor shows them.
fn lines(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    while i < b.len() {
        if b[i] == b'\n' || b[i] == b'\r' {
            out.push(&text[start..i]);
            if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            start = i + 1;
        }
        i += 1;
    }
    out.push(&text[start..]);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok((list, problems)) = TestList::parse("fuzz.csv", data) else {
        return;
    };
    let text = std::str::from_utf8(data).expect("a parsed list is UTF-8");
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = lines(text);
    let mut last = 1;
    for e in &list.entries {
        let url = url::Url::parse(&e.url)
            .unwrap_or_else(|err| panic!("line {}: kept {:?}: {err}", e.line, e.url));
        assert!(matches!(url.scheme(), "http" | "https"), "kept {:?}", e.url);
        assert!(url.host().is_some(), "kept {:?} without a host", e.url);
        assert!(
            e.line > last,
            "entries in file order after the header: {e:?}"
        );
        last = e.line;
        // A quoted field's value is not its text; an unquoted one is, trimmed.
        if !e.url.contains(['"', '\r', '\n']) {
            assert!(
                lines
                    .get(e.line - 1)
                    .is_some_and(|l| l.trim_start().starts_with('"') || l.contains(&e.url)),
                "{:?} is not on line {}",
                e.url,
                e.line
            );
        }
    }
    for p in &problems {
        match p {
            ListError::Row { line, .. } => assert!(*line >= 2, "{p}"),
            other => panic!("a row problem that is not a row: {other}"),
        }
    }
    let all = list.select(&[], None);
    let mut urls: Vec<&str> = all.iter().map(|e| e.url.as_str()).collect();
    urls.sort_unstable();
    let n = urls.len();
    urls.dedup();
    assert_eq!(urls.len(), n, "select repeats no URL");
    assert!(
        list.select(&[], Some(2)).len() <= 2,
        "select keeps to its cap"
    );
    if let Some(first) = list.entries.first() {
        let same = list.select(std::slice::from_ref(&first.category_code), None);
        assert!(!same.is_empty(), "a category in the list selects something");
    }
});
