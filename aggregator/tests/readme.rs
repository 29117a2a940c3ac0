//! The README's commands, run as a reader would run them, as far as they run offline.
//!
//! Every command in a `sh` block of README.md must be listed in [`COMMANDS`], either with the way
//! this test runs it (the real binaries, a data directory and a database of its own, loopback
//! only) or with the place that checks it instead (root, systemd, the lab). A command added to the
//! README without an entry here, or an entry whose command left the README, fails the test, so the
//! README cannot drift from what works.
//!
//! The commands are run as written except for what keeps every packet on loopback: DNS goes to
//! a resolver fixture on 127.0.0.1 that has no upstream and refuses every name (`--resolver` for
//! the probe, `--th-resolver` for the aggregator's helper), as a resolver of a machine without
//! a network would, and the aggregator listens on a free port rather than 8080.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{AGGREGATOR, http, spawn_server, tempdir, vantage};
use vantage_fixtures::dns::DnsFixture;

/// A resolver on loopback that knows no name.
async fn resolver_without_upstream() -> DnsFixture {
    DnsFixture::start(Vec::new()).await
}

/// How this test meets a README command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Run here, by the test of that name below.
    Run(&'static str),
    /// Checked elsewhere, for the reason given.
    Elsewhere(&'static str),
}

/// Every command of the README's `sh` blocks (without its trailing comment) and how it is met.
const COMMANDS: &[(&str, How)] = &[
    (
        "cargo run --release --bin vantage -- run --cc IR --no-upload",
        How::Run("the_first_command_measures_offline_and_says_so"),
    ),
    (
        "bash tests/run.sh",
        How::Elsewhere("it is the command that runs this test"),
    ),
    (
        "cargo install --locked --path probe",
        How::Run("the_install_commands_name_packages_with_those_binaries"),
    ),
    (
        "cargo install --locked --path aggregator",
        How::Run("the_install_commands_name_packages_with_those_binaries"),
    ),
    (
        "vantage-aggregator serve --db vantage.db --listen 127.0.0.1:8080",
        How::Run("a_probe_pointed_at_a_local_aggregator_uploads_to_it"),
    ),
    (
        "vantage run --cc IR --aggregator http://127.0.0.1:8080",
        How::Run("a_probe_pointed_at_a_local_aggregator_uploads_to_it"),
    ),
    (
        "sudo vantage daemon --check --config /etc/vantage/vantage.toml",
        How::Run("the_packaged_configuration_passes_the_check_once_edited"),
    ),
    (
        "sudo systemctl enable --now vantage",
        How::Elsewhere("systemd: deploy/check.sh installs the package and verifies the unit"),
    ),
    (
        "sudo -u vantage vantage status --data-dir /var/lib/vantage",
        How::Run("the_first_command_measures_offline_and_says_so"),
    ),
    (
        "sudo bash tests/lab/run.sh",
        How::Elsewhere("root and network namespaces: tests/run.sh runs it as its last step"),
    ),
    (
        "sudo target/debug/vantage-lab run",
        How::Elsewhere("root and network namespaces: tests/lab/run.sh runs it"),
    ),
    (
        "sudo target/debug/vantage-lab run --no-shutdown",
        How::Elsewhere(
            "root and network namespaces: the lab's quick run, a subset of the full one",
        ),
    ),
    (
        "sudo target/debug/vantage-lab cleanup",
        How::Elsewhere("root: tests/lab/run.sh cleans up before and after each run"),
    ),
    (
        "target/debug/vantage-lab leftovers",
        How::Elsewhere("tests/lab/run.sh checks that nothing is left after its runs"),
    ),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The commands of the README's `sh` blocks, trailing `# comments` removed.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).expect("README.md");
    let mut commands = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        let fence = line.trim_start();
        if let Some(lang) = fence.strip_prefix("```") {
            in_sh = !in_sh && matches!(lang.trim(), "sh" | "bash" | "shell");
            continue;
        }
        if in_sh {
            let command = line.split(" #").next().unwrap_or_default().trim();
            if !command.is_empty() && !command.starts_with('#') {
                commands.push(command.to_string());
            }
        }
    }
    commands
}

fn how(command: &str) -> How {
    COMMANDS
        .iter()
        .find(|(c, _)| *c == command)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("README command {command:?} is not listed in COMMANDS"))
}

#[test]
fn every_readme_command_is_run_here_or_checked_elsewhere() {
    let commands = readme_commands();
    assert!(
        commands.len() >= COMMANDS.len(),
        "the README has {} commands",
        commands.len()
    );
    for command in &commands {
        how(command);
    }
    for (listed, _) in COMMANDS {
        assert!(
            commands.iter().any(|c| c == listed),
            "{listed:?} is listed here but no longer in the README"
        );
    }
}

/// A data directory where consent was already given: the prompt itself is driven in a terminal
/// by `probe/tests/first_run.rs`.
fn consented_data_dir(name: &str) -> PathBuf {
    let dir = tempdir(name).join("data");
    std::fs::create_dir_all(&dir).expect("data dir");
    std::fs::write(dir.join("consent"), "consent given\n").expect("consent marker");
    dir
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_command_measures_offline_and_says_so() {
    assert_eq!(
        how("cargo run --release --bin vantage -- run --cc IR --no-upload"),
        How::Run("the_first_command_measures_offline_and_says_so")
    );
    let data = consented_data_dir("readme-first");
    let dns = resolver_without_upstream().await;
    // `cargo run --release --bin vantage --` is the same program as the test build's binary.
    let out = Command::new(vantage())
        .args([
            "run",
            "--cc",
            "IR",
            "--no-upload",
            "--timeout",
            "3",
            "--resolver",
        ])
        .arg(dns.addr.to_string())
        .env("VANTAGE_DATA_DIR", &data)
        .env("HOME", data.parent().expect("home"))
        .stdin(Stdio::null())
        .output()
        .expect("run vantage");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("undetermined"), "{all}");
    assert!(
        all.contains("offline"),
        "no network here, and the summary must say so: {all}"
    );

    // `vantage status --data-dir DIR` then shows the probe's key and the results waiting.
    let out = Command::new(vantage())
        .args(["status", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run vantage status");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let key = Command::new(vantage())
        .args(["id", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run vantage id");
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    assert!(!key.is_empty() && stdout.contains(&key), "{stdout}");
    assert!(stdout.contains("waiting"), "{stdout}");
}

#[test]
fn the_install_commands_name_packages_with_those_binaries() {
    // `cargo install --path DIR` installs the binaries of the package in DIR; building them
    // again here would cost minutes, so the test checks what would be installed.
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    for (dir, binary) in [("probe", "vantage"), ("aggregator", "vantage-aggregator")] {
        let manifest = workspace().join(dir).join("Cargo.toml");
        let package = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
            .unwrap_or_else(|| panic!("no package at {dir}"));
        let bins: Vec<&str> = package["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .filter(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(bins, [binary], "cargo install --path {dir}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_pointed_at_a_local_aggregator_uploads_to_it() {
    let dir = tempdir("readme-aggregator");
    let db = dir.join("vantage.db");
    let dns = resolver_without_upstream().await;
    let mut serve = Command::new(AGGREGATOR);
    serve
        .args(["serve", "--db"])
        .arg(&db)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--th-timeout",
            "3",
            "--th-resolver",
        ])
        .arg(dns.addr.to_string());
    let server = spawn_server(serve);
    let base = server.base.clone();
    let (status, page) = http(&server.base, "GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "the web page: {page:.200}");

    let data = consented_data_dir("readme-probe");
    let out = Command::new(vantage())
        .args(["run", "--cc", "IR", "--timeout", "3", "--aggregator", &base])
        .arg("--resolver")
        .arg(dns.addr.to_string())
        .env("VANTAGE_DATA_DIR", &data)
        .stdin(Stdio::null())
        .output()
        .expect("run vantage");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Nothing is reachable offline, and nothing is called blocked for it.
    assert!(!stdout.contains("Blocked:"), "{stdout}");
    let (status, body) = http(
        &server.base,
        "GET",
        "/api/v1/measurements?limit=1000",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("json");
    let stored = page["results"].as_array().cloned().unwrap_or_default();
    assert!(
        !stored.is_empty(),
        "the run's results reached the aggregator: {body:.300}"
    );
    // Neither side could look a name up: no control, so nothing is blocked, nor down.
    for row in &stored {
        assert_eq!(row["blocking"], serde_json::Value::Null, "{row}");
    }
    assert!(
        stdout.contains(&format!("{} undetermined", stored.len())),
        "{stdout}"
    );
    // And a researcher finds them as undetermined.
    let (status, body) = http(
        &server.base,
        "GET",
        "/api/v1/measurements?blocking=null&limit=1000",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let undetermined: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        undetermined["results"].as_array().map_or(0, Vec::len),
        stored.len(),
        "{body:.300}"
    );
    drop(server);
}

#[test]
fn the_packaged_configuration_passes_the_check_once_edited() {
    // The package installs deploy/vantage.toml as /etc/vantage/vantage.toml; the README's
    // "Configure" step sets informed_consent and the aggregator's url before the check.
    let dir = tempdir("readme-daemon");
    let example =
        std::fs::read_to_string(workspace().join("deploy/vantage.toml")).expect("example config");
    assert!(example.contains("informed_consent = false"), "{example}");
    let edited = example.replace("informed_consent = false", "informed_consent = true");
    let config = dir.join("vantage.toml");
    std::fs::write(&config, edited).expect("write config");
    let out = Command::new(vantage())
        .args(["daemon", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("run vantage daemon --check");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.trim().is_empty(), "the plan is printed");

    // As shipped, without consent, the check refuses and says why.
    let out = Command::new(vantage())
        .args(["daemon", "--check", "--config"])
        .arg(workspace().join("deploy/vantage.toml"))
        .output()
        .expect("run vantage daemon --check");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("informed_consent"), "{stderr}");
}
