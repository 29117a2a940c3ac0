//! What the fuzz targets share: a fixed signing key, so that a fuzzed measurement or test-list
//! document can be sealed into an envelope whose signature verifies and the parser behind the
//! signature gets the input (a random line almost never carries a valid Ed25519 signature), and
//! a scratch directory for the files the targets need.
//!
//! The key is public on purpose: it signs nothing but fuzz inputs. `seeds/make_seeds.py` signs
//! the seed corpus's envelopes with the same key.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vantage_probe::envelope::Identity;

/// The test key's 32-byte Ed25519 secret (the bytes 1 to 32), base64, as a probe's key file
/// holds it (`vantage_probe::envelope::Identity::load_or_create`).
pub const TEST_SECRET_KEY_B64: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// A directory of this process's own, under `$TMPDIR` (`run.sh` points that at its scratch
/// directory and removes it afterwards).
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vantage-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        dir
    })
}

/// The fixed test identity, loaded through the probe's own key-file reader.
pub fn identity() -> &'static Identity {
    static ID: OnceLock<Identity> = OnceLock::new();
    ID.get_or_init(|| {
        let path = scratch_dir().join("identity.key");
        std::fs::write(&path, format!("{TEST_SECRET_KEY_B64}\n")).expect("write the test key");
        let (identity, created) = Identity::load_or_create(&path).expect("load the test key");
        assert!(!created, "the test key was written just before");
        identity
    })
}

/// `text` sealed with the test key as one envelope line, when it is JSON (what
/// `Identity::seal` accepts). Line breaks are JSON whitespace outside strings and invalid inside
/// them, so turning them into spaces keeps every input's meaning and lets an indented document
/// be sealed too.
pub fn seal(text: &str) -> Option<String> {
    let one_line = text.replace(['\n', '\r'], " ");
    identity().seal(&one_line).ok().map(|(_, line)| line)
}

/// The fuzz input as text: UTF-8 as it is, anything else with replacement characters. The
/// server refuses a body that is not UTF-8 before any parser sees it, so invalid bytes would
/// only waste an execution; replaced, every input reaches the parser.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
