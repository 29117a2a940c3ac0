//! `vantage-aggregator ... | head`: a command whose reader goes away ends quietly, with status
//! 0 and nothing on stderr, instead of a panic and a backtrace.

use std::process::{Command, Output, Stdio};

const AGGREGATOR: &str = env!("CARGO_BIN_EXE_vantage-aggregator");

/// Runs `vantage-aggregator args` with a stdout whose reader has already gone away.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(AGGREGATOR)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .output()
        .expect("run vantage-aggregator")
}

#[test]
fn commands_end_quietly_when_their_reader_goes_away() {
    let dir = std::env::temp_dir().join(format!("vantage-closed-pipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("agg.db").to_string_lossy().into_owned();
    let key = "yopTa4oGKJCTOD/Gk514AV2U3cjj073KKmVJJwOM5n4=";
    let out = Command::new(AGGREGATOR)
        .args(["keys", "allow", key, "--db", &db])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        vec!["keys", "token", "--count", "3", "--db", &db],
        vec!["keys", "list", "--db", &db],
    ] {
        let out = with_closed_stdout(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err, "", "{args:?}");
    }
    // Other errors still say what went wrong.
    let out = with_closed_stdout(&["query", "--db", &dir.join("none.db").to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: no database at "));
}
