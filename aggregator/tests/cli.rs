//! The real `vantage-aggregator` binary.

use std::process::Command;

#[test]
fn help_describes_the_aggregator() {
    let out = Command::new(env!("CARGO_BIN_EXE_vantage-aggregator"))
        .arg("--help")
        .output()
        .expect("run vantage-aggregator");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Vantage aggregator"), "{help}");
    assert!(help.contains("--version"), "{help}");
}

#[test]
fn unknown_arguments_are_rejected() {
    let out = Command::new(env!("CARGO_BIN_EXE_vantage-aggregator"))
        .arg("--no-such-flag")
        .output()
        .expect("run vantage-aggregator");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument '--no-such-flag'"));
}
