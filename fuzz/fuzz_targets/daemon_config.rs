//! The daemon's configuration: `vantage_probe::daemon::config::Config::parse` (TOML), then
//! `.plan()`, which checks every value and reads every file the configuration names.
//!
//! The files named are replaced, before `plan`, by files of this process's scratch directory
//! (a good canary list, a good test list, a file with no certificate) or by a path that does not
//! exist, chosen by the name's length: the fuzzer still reaches both the read and the error
//! paths, and never makes the target read whatever path it wrote (`/dev/zero` would never end).
//!
//! Invariants: never a panic; no plan without informed consent; every interval, the concurrency,
//! the budget and the canary timeout inside the ranges `plan` promises (`deploy/vantage.toml`);
//! the lists always include `global`.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vantage_probe::canary::BUILTIN_TARGETS;
use vantage_probe::daemon::config::Config;

/// The longest interval `plan` accepts (thirty days).
const MAX: Duration = Duration::from_secs(30 * 86_400);

struct Files {
    canaries: PathBuf,
    list: PathBuf,
    no_cert: PathBuf,
    missing: PathBuf,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = vantage_fuzz::scratch_dir();
        let files = Files {
            canaries: dir.join("canaries.csv"),
            list: dir.join("list.csv"),
            no_cert: dir.join("ca.pem"),
            missing: dir.join("missing"),
        };
        let write = |path: &Path, text: &str| std::fs::write(path, text).expect("write");
        write(&files.canaries, BUILTIN_TARGETS);
        write(
            &files.list,
            "url,category_code,category_description,date_added,source,notes\n\
             https://example.org/,NEWS,News Media,2025-01-01,vantage-fuzz,\n",
        );
        write(&files.no_cert, "not a certificate\n");
        files
    })
}

/// A scratch file in place of `path`: `good` or the missing one, by the name's length.
fn sandboxed(path: &Path, good: &Path) -> PathBuf {
    let f = files();
    if path.as_os_str().len().is_multiple_of(2) {
        good.to_path_buf()
    } else {
        f.missing.clone()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(mut config) = Config::parse(text, path) else {
        return;
    };
    let f = files();
    if let Some(t) = &config.canary.targets {
        config.canary.targets = Some(sandboxed(t, &f.canaries));
    }
    for file in &mut config.lists.files {
        *file = sandboxed(file, &f.list);
    }
    if let Some(a) = &mut config.aggregator
        && let Some(ca) = &a.ca_file
    {
        a.ca_file = Some(sandboxed(ca, &f.no_cert));
    }
    let Ok(plan) = config.plan(path) else {
        return;
    };
    assert!(config.informed_consent, "a plan without informed consent");
    let s = &plan.schedule;
    for (name, d, min) in [
        ("canary", s.canary, 1),
        ("heartbeat", s.heartbeat, 1),
        ("run_jitter", s.run_jitter, 0),
        ("first_run", s.first_run, 0),
        ("refresh", s.refresh, 60),
        ("upload", s.upload, 1),
        ("upload_max_backoff", s.upload_max_backoff, 1),
    ] {
        assert!(
            d >= Duration::from_secs(min) && d <= MAX,
            "schedule.{name} = {d:?}"
        );
    }
    if let Some(run) = s.run {
        assert!(run >= Duration::from_secs(60) && run <= MAX, "run {run:?}");
        assert!(
            s.run_jitter < run,
            "jitter {:?} >= run {run:?}",
            s.run_jitter
        );
    }
    assert!((1..=64).contains(&plan.concurrency), "{}", plan.concurrency);
    assert!(plan.daily_bytes >= 1_000_000, "{}", plan.daily_bytes);
    assert!(
        plan.canary_engine.timeouts.tcp_connect <= s.canary,
        "canary timeout longer than its interval"
    );
    assert!(!plan.canary_targets.is_empty(), "no canary target");
    assert!(
        plan.lists.names.iter().any(|n| n == "global"),
        "no global list"
    );
    assert!(!plan.resolvers.is_empty(), "no resolver");
    if let Some(a) = &plan.aggregator {
        assert!(matches!(a.url.scheme(), "http" | "https"), "{}", a.url);
        assert!(a.url.path().ends_with('/'), "{}", a.url);
    }
});
