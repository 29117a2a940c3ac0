//! Text from a file or the network made safe to print on a terminal. A string a bundle, an
//! aggregator or a test list chose (an event id, a rejection reason, a URL) could otherwise
//! carry terminal control sequences: ECMA-48 CSI (`ESC [`, or the one-byte C1 `U+009B`) that
//! clear the screen or move the cursor, OSC 8 hyperlinks (`ESC ] 8 ; ; URL BEL`) that show one
//! text and open another, a bell. Every such string goes through [`printable`] before it is
//! printed: control characters (all of C0, DEL and C1, ECMA-48 section 5) are shown as Rust
//! writes them (`\u{1b}`), and the length is bounded so that one string cannot flood the
//! screen.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The most characters of one string printed; the rest is counted, not shown.
pub const MAX_PRINTED_CHARS: usize = 4096;

/// Whether `c` is a control character a terminal may act on: C0 (`U+0000`-`U+001F`, tab and
/// line feed included, since no caller prints a string from outside over several lines), DEL
/// (`U+007F`) and C1 (`U+0080`-`U+009F`), which `char::is_control` is exactly (Unicode's
/// general category Cc); and the bidirectional embeddings, overrides and isolates
/// (`U+202A`-`U+202E`, `U+2066`-`U+2069`, Unicode Standard Annex 9), which make a line read in
/// another order than it is written (CVE-2021-42574, "Trojan Source").
fn is_terminal_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` on one line for a stored reason or an error message: every control character a
/// space, at most `max` characters, trimmed. For text a person reads within a sentence, where
/// [`printable`]'s escapes would only get in the way.
pub fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if is_terminal_control(c) { ' ' } else { c })
        .take(max)
        .collect();
    line.trim().to_string()
}

/// `text` with every control character written as `\u{..}` and at most
/// [`MAX_PRINTED_CHARS`] characters of it, followed by how many more there were. Borrowed
/// when nothing needs changing, as ordinary text.
pub fn printable(text: &str) -> Cow<'_, str> {
    printable_within(text, MAX_PRINTED_CHARS)
}

/// [`printable`] with a bound of `max` characters of `text`.
pub fn printable_within(text: &str, max: usize) -> Cow<'_, str> {
    let cut = text.char_indices().nth(max).map(|(at, _)| at);
    let shown = cut.map_or(text, |at| &text[..at]);
    if cut.is_none() && !shown.contains(is_terminal_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(shown.len() + 16);
    for c in shown.chars() {
        if is_terminal_control(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    if let Some(at) = cut {
        let more = text[at..].chars().count();
        let _ = write!(out, "... ({more} more characters)");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_are_shown_and_a_line_stays_one_line() {
        let trojan = "access\u{202e}deliberately\u{2066}";
        assert_eq!(printable(trojan), "access\\u{202e}deliberately\\u{2066}");
        assert_eq!(
            one_line(" refused:\x1b[2J\nnext\u{202e}line\t", 100),
            "refused: [2J next line"
        );
        assert_eq!(one_line("abcdef", 3), "abc");
    }

    #[test]
    fn ordinary_text_is_borrowed_as_it_is() {
        for text in [
            "",
            "a.example",
            "évènement 0123 ok: «x»",
            "tab-free \\ text",
        ] {
            assert!(
                matches!(printable(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
    }

    /// An OSC 8 link, a screen clear, a bell, C1's one-byte CSI and DEL all come out as
    /// visible escapes with no control character left, and the text around them as it was.
    #[test]
    fn every_control_character_is_shown_escaped() {
        let hostile = "\x1b]8;;http://evil\x07click\x1b]8;;\x07 \x1b[2J\u{9b}31m\x7f\r\n\t\0";
        let shown = printable(hostile);
        assert!(!shown.contains(|c: char| c.is_control()), "{shown}");
        assert_eq!(
            shown,
            "\\u{1b}]8;;http://evil\\u{7}click\\u{1b}]8;;\\u{7} \\u{1b}[2J\\u{9b}31m\\u{7f}\\u{d}\\u{a}\\u{9}\\u{0}"
        );
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let c = char::from_u32(c).expect("a char");
            assert!(!printable(&c.to_string()).contains(c), "{:x}", u32::from(c));
        }
        assert_eq!(printable("\u{a0}x"), "\u{a0}x", "no-break space is text");
    }

    #[test]
    fn a_long_string_is_cut_and_says_how_much_is_left_out() {
        let long = "é".repeat(MAX_PRINTED_CHARS + 10);
        let shown = printable(&long);
        assert!(shown.starts_with(&"é".repeat(MAX_PRINTED_CHARS)));
        assert!(
            shown.ends_with("... (10 more characters)"),
            "{} bytes",
            shown.len()
        );
        assert_eq!(
            printable_within("ab\x1bcd", 3),
            "ab\\u{1b}... (2 more characters)"
        );
        assert_eq!(
            printable(&"x".repeat(MAX_PRINTED_CHARS)).len(),
            MAX_PRINTED_CHARS
        );
    }
}
