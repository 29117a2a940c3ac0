//! The signed test-list document the probe fetches (`GET /api/v1/test-lists/{cc}`):
//! `vantage_probe::test_lists::SignedLists::verify`, on the input as it came (envelope parsing
//! and signature checks), and on the input sealed with the fixed test key as the payload (the
//! document parser and every list inside, behind a valid signature).
//!
//! Invariants: never a panic; a document is accepted only from the pinned key, with the right
//! `kind`, with every list named `global` or by a two-letter lower-case country code (a name is
//! a file name in the data directory) and parsing; a payload signed by the pinned key is refused
//! only for its content or a list's name, never for its envelope or signer; a document signed by
//! the right key is refused when another key is pinned.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_probe::test_lists::{
    SIGNED_LISTS_KIND, SignedListError, SignedLists, TestList, is_list_name,
};

/// A valid Ed25519 public key (of the secret 0x55 repeated) that signed nothing here.
const OTHER_KEY: &str = "xoImN8fTEOxXYnvgC6JZ0lN0n0qvZERwz/vlOjX3MkI=";

fn check_accepted(lists: &SignedLists) {
    assert_eq!(lists.kind, SIGNED_LISTS_KIND, "accepted another kind");
    for (name, text) in &lists.lists {
        assert!(is_list_name(name), "accepted a list named {name:?}");
        assert!(
            TestList::parse(name, text.as_bytes()).is_ok(),
            "accepted a list that does not parse: {name:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let text = vantage_fuzz::text(data);
    let key = vantage_fuzz::identity().public_key();

    if let Ok(lists) = SignedLists::verify(&text, &key) {
        check_accepted(&lists);
    }

    let Some(line) = vantage_fuzz::seal(&text) else {
        return;
    };
    match SignedLists::verify(&line, &key) {
        Ok(lists) => {
            check_accepted(&lists);
            match SignedLists::verify(&line, OTHER_KEY) {
                Err(SignedListError::WrongKey { found, .. }) => assert_eq!(found, key),
                other => panic!("another pinned key: {other:?}"),
            }
        }
        Err(SignedListError::Content(_) | SignedListError::Name { .. }) => {}
        Err(other) => panic!("refused a payload signed by the pinned key for {other}"),
    }
});
