//! The sections of the tests a daemon runs only when configured (throttling, the app tests,
//! the encrypted-DNS resolvers check and QUIC), and their checks, which read and validate every
//! file they name as the matching `vantage run` options do.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{Config, ConfigError, MAX_SECONDS};
use crate::engine::{EngineConfig, Resolver};
use crate::test_lists::TestList;

/// `[dnscheck]`: the DoH and DoT resolvers check (OONI's dnscheck, ts-028), off unless
/// `enabled`. Each run costs about 20 kB per resolver (docs/dnscheck.md, "Cost").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnscheckSection {
    /// Run it.
    pub enabled: bool,
    /// How often, in seconds (with the list runs' jitter); daily by default.
    pub every_seconds: u64,
    /// The resolvers, instead of the built-in `test-lists/resolvers.toml`.
    pub file: Option<PathBuf>,
    /// The name each resolver is asked for.
    pub domain: String,
}

impl Default for DnscheckSection {
    fn default() -> Self {
        DnscheckSection {
            enabled: false,
            every_seconds: 86_400,
            file: None,
            domain: crate::dnscheck::DEFAULT_DOMAIN.to_string(),
        }
    }
}

/// The resolvers check, checked: the resolvers, the name and how often.
#[derive(Debug, Clone)]
pub struct DnscheckRunPlan {
    /// The resolvers, in the file's order.
    pub targets: Vec<crate::dnscheck::Target>,
    /// The name looked up.
    pub domain: String,
    /// Interval.
    pub every: Duration,
}

/// `[quic]`: a QUIC handshake beside the TCP/TLS one for each https host of a list, off unless
/// `enabled`. Each host costs a few kilobytes per run (docs/quic.md, "Cost").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicSection {
    /// Run it.
    pub enabled: bool,
    /// How often, in seconds (with the list runs' jitter); daily by default.
    pub every_seconds: u64,
    /// A test list (the CSV of `test-lists/`) whose https URLs are measured, instead of the
    /// built-in global list.
    pub file: Option<PathBuf>,
    /// At most this many hosts (0: all of them).
    pub max_hosts: usize,
}

impl Default for QuicSection {
    fn default() -> Self {
        QuicSection {
            enabled: false,
            every_seconds: 86_400,
            file: None,
            max_hosts: 0,
        }
    }
}

/// The QUIC test, checked: one plan per https host, and how often.
#[derive(Debug, Clone)]
pub struct QuicRunPlan {
    /// One URL per host and port, in the list's order.
    pub plans: Vec<crate::quic::Plan>,
    /// Interval.
    pub every: Duration,
}

/// `[apps]`: the app tests (OONI's whatsapp, telegram, signal, facebook_messenger), off while
/// `tests` is empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsSection {
    /// Which apps, by OONI's test name, e.g. `["whatsapp", "signal"]`.
    pub tests: Vec<String>,
    /// How often, in seconds (with the list runs' jitter); daily by default.
    pub every_seconds: u64,
    /// The endpoints and pins, instead of the built-in `test-lists/apps.toml`.
    pub file: Option<PathBuf>,
}

impl Default for AppsSection {
    fn default() -> Self {
        AppsSection {
            tests: Vec::new(),
            every_seconds: 86_400,
            file: None,
        }
    }
}

/// The app tests, checked: which apps, their endpoints, and how often.
#[derive(Debug, Clone)]
pub struct AppsRunPlan {
    /// The apps, in the order given.
    pub apps: Vec<crate::apps::App>,
    /// Their endpoints and pins.
    pub plan: crate::apps::AppsPlan,
    /// Interval.
    pub every: Duration,
}

/// `[throttling]`: the throttling test against the aggregator's throughput server, for a few
/// targets (off while `targets` is empty).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottlingSection {
    /// Names sent as the SNI, e.g. `twitter.com`.
    pub targets: Vec<String>,
    /// How often, in seconds (with the list runs' jitter).
    pub every_seconds: u64,
    /// The control name.
    pub control_sni: String,
    /// Bytes per download.
    pub payload_bytes: u64,
    /// Target and control downloads per target.
    pub repetitions: u32,
    /// A download stops after this long.
    pub max_download_seconds: u64,
    /// The most one test may download, in bytes.
    pub budget_bytes: u64,
    /// Slower than this fraction of the control counts as throttled.
    pub ratio: f64,
}

impl Default for ThrottlingSection {
    fn default() -> Self {
        let s = crate::throttling::Settings::default();
        ThrottlingSection {
            targets: Vec::new(),
            every_seconds: 21_600,
            control_sni: s.control_sni,
            payload_bytes: s.payload_bytes,
            repetitions: s.repetitions,
            max_download_seconds: s.max_download.as_secs(),
            budget_bytes: s.budget_bytes,
            ratio: s.rules.ratio,
        }
    }
}

/// The throttling test, checked: the targets and settings of a [`crate::throttling::Plan`]
/// whose server is found at run time.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottlingPlan {
    /// Targets.
    pub targets: Vec<String>,
    /// Settings.
    pub settings: crate::throttling::Settings,
    /// Interval.
    pub every: Duration,
}

impl Config {
    /// Checks `[dnscheck]`: an interval, the name, and the resolvers file, read and validated
    /// now as `vantage run --test dnscheck --resolvers-file` does.
    pub(super) fn dnscheck_plan(
        &self,
        invalid: &impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<Option<DnscheckRunPlan>, ConfigError> {
        let d = &self.dnscheck;
        if !d.enabled {
            return Ok(None);
        }
        if d.every_seconds < 3_600 || d.every_seconds > MAX_SECONDS {
            return Err(invalid(
                "dnscheck.every_seconds",
                format!("{} must be between 3600 and {MAX_SECONDS}", d.every_seconds),
            ));
        }
        let domain = d.domain.trim().trim_end_matches('.').to_string();
        crate::dnscheck::check_domain(&domain)
            .map_err(|e| invalid("dnscheck.domain", format!("{:?}: {e}", d.domain)))?;
        let targets = match &d.file {
            None => crate::dnscheck::builtin(),
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| invalid("dnscheck.file", format!("{}: {e}", file.display())))?;
                crate::dnscheck::parse_resolvers(&text, &file.display().to_string())
            }
        }
        .map_err(|e| invalid("dnscheck.file", e.to_string()))?;
        if targets.is_empty() {
            return Err(invalid("dnscheck.file", "no resolver in the file".into()));
        }
        Ok(Some(DnscheckRunPlan {
            targets,
            domain,
            every: Duration::from_secs(d.every_seconds),
        }))
    }

    /// Checks `[quic]`: an interval and the list, whose https URLs (one per host and port, as
    /// `vantage run --test quic` takes them) must be at least one.
    pub(super) fn quic_plan(
        &self,
        resolvers: &[Resolver],
        engine: &EngineConfig,
        invalid: &impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<Option<QuicRunPlan>, ConfigError> {
        let q = &self.quic;
        if !q.enabled {
            return Ok(None);
        }
        if q.every_seconds < 3_600 || q.every_seconds > MAX_SECONDS {
            return Err(invalid(
                "quic.every_seconds",
                format!("{} must be between 3600 and {MAX_SECONDS}", q.every_seconds),
            ));
        }
        let (list, name) = match &q.file {
            None => {
                let text = crate::test_lists::builtin_list("global").unwrap_or_default();
                let (list, _) = TestList::parse("global", text.as_bytes())
                    .map_err(|e| invalid("quic.file", e.to_string()))?;
                (list, "the built-in global list".to_string())
            }
            Some(file) => {
                let (list, _) =
                    TestList::read(file).map_err(|e| invalid("quic.file", e.to_string()))?;
                (list, file.display().to_string())
            }
        };
        let mut seen = std::collections::HashSet::new();
        let mut plans = Vec::new();
        for entry in &list.entries {
            let Ok(url) = Url::parse(entry.url.trim()) else {
                continue;
            };
            let Some(host) = url.host_str() else {
                continue;
            };
            if url.scheme() != "https" || !seen.insert((host.to_string(), url.port())) {
                continue;
            }
            if q.max_hosts > 0 && plans.len() == q.max_hosts {
                break;
            }
            plans.push(
                crate::quic::Plan::new(&entry.url, resolvers, engine.clone())
                    .map_err(|e| invalid("quic.file", format!("{name}: {e}")))?,
            );
        }
        if plans.is_empty() {
            return Err(invalid(
                "quic.file",
                format!("{name}: no https URL to measure over QUIC"),
            ));
        }
        Ok(Some(QuicRunPlan {
            plans,
            every: Duration::from_secs(q.every_seconds),
        }))
    }

    /// Checks `[apps]`: known test names, an interval, and the data file, read and validated
    /// now as `vantage run --apps-file` does.
    pub(super) fn apps_plan(
        &self,
        invalid: &impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<Option<AppsRunPlan>, ConfigError> {
        let a = &self.apps;
        if a.tests.is_empty() {
            return Ok(None);
        }
        let mut apps = Vec::new();
        for t in &a.tests {
            let app: crate::apps::App = t.parse().map_err(|e| invalid("apps.tests", e))?;
            if !apps.contains(&app) {
                apps.push(app);
            }
        }
        if a.every_seconds < 3_600 || a.every_seconds > MAX_SECONDS {
            return Err(invalid(
                "apps.every_seconds",
                format!("{} must be between 3600 and {MAX_SECONDS}", a.every_seconds),
            ));
        }
        let plan = match &a.file {
            None => crate::apps::AppsPlan::builtin(),
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| invalid("apps.file", format!("{}: {e}", file.display())))?;
                crate::apps::AppsPlan::parse(&text, &file.display().to_string())
            }
        }
        .map_err(|e| invalid("apps.file", e.to_string()))?;
        Ok(Some(AppsRunPlan {
            apps,
            plan,
            every: Duration::from_secs(a.every_seconds),
        }))
    }

    /// Checks `[throttling]` with the same rules as `vantage run --test throttling`.
    pub(super) fn throttling_plan(
        &self,
        have_aggregator: bool,
        invalid: &dyn Fn(&'static str, String) -> ConfigError,
    ) -> Result<Option<ThrottlingPlan>, ConfigError> {
        let t = &self.throttling;
        if t.targets.is_empty() {
            return Ok(None);
        }
        if !have_aggregator {
            return Err(invalid(
                "throttling.targets",
                "the throttling test needs the aggregator's throughput server: set [aggregator] url"
                    .into(),
            ));
        }
        if t.every_seconds < 600 || t.every_seconds > MAX_SECONDS {
            return Err(invalid(
                "throttling.every_seconds",
                format!("{} is out of range (600 to {MAX_SECONDS})", t.every_seconds),
            ));
        }
        if !(t.ratio > 0.0 && t.ratio < 1.0) {
            return Err(invalid(
                "throttling.ratio",
                format!("{} must be between 0 and 1", t.ratio),
            ));
        }
        if t.max_download_seconds == 0 || t.max_download_seconds > 60 {
            return Err(invalid(
                "throttling.max_download_seconds",
                format!("{} is out of range (1 to 60)", t.max_download_seconds),
            ));
        }
        let mut settings = crate::throttling::Settings {
            control_sni: t.control_sni.clone(),
            payload_bytes: t.payload_bytes,
            repetitions: t.repetitions,
            max_download: Duration::from_secs(t.max_download_seconds),
            budget_bytes: t.budget_bytes,
            ..crate::throttling::Settings::default()
        };
        settings.rules.ratio = t.ratio;
        // The server is found at run time; check everything else now.
        let placeholder = crate::throttling::Endpoint {
            addr: ([0, 0, 0, 0], 0).into(),
            pin: crate::engine::tls::CertPin([0; 32]),
        };
        crate::throttling::Plan::new(placeholder, t.targets.clone(), settings.clone())
            .map_err(|err| invalid("throttling", err.to_string()))?;
        Ok(Some(ThrottlingPlan {
            targets: t.targets.clone(),
            settings,
            every: Duration::from_secs(t.every_seconds),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Plan;
    use super::*;

    fn plan(text: &str) -> Result<Plan, ConfigError> {
        Config::parse(text, Path::new("test.toml"))?.plan(Path::new("test.toml"))
    }

    #[test]
    fn app_tests_are_off_by_default_and_checked_when_on() {
        let p = plan("informed_consent = true").expect("minimal");
        assert!(p.apps.is_none());
        let p = plan(
            "informed_consent = true\n[apps]\ntests = [\"whatsapp\", \"signal\", \"whatsapp\"]",
        )
        .expect("apps");
        let a = p.apps.expect("on");
        assert_eq!(
            a.apps,
            [crate::apps::App::Whatsapp, crate::apps::App::Signal]
        );
        assert_eq!(a.every, Duration::from_secs(86_400));
        assert_eq!(a.plan.whatsapp.endpoints.len(), 16);
        for (text, want) in [
            ("tests = [\"skype\"]", "apps.tests: unknown app \"skype\""),
            (
                "tests = [\"telegram\"]\nevery_seconds = 60",
                "apps.every_seconds: 60",
            ),
            (
                "tests = [\"telegram\"]\nfile = \"/nonexistent/apps.toml\"",
                "apps.file: /nonexistent/apps.toml",
            ),
        ] {
            let err = plan(&format!("informed_consent = true\n[apps]\n{text}"))
                .expect_err(text)
                .to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn dnscheck_is_off_by_default_then_daily_over_the_builtin_resolvers() {
        let p = plan("informed_consent = true").expect("valid");
        assert!(p.dnscheck.is_none());
        let p = plan("informed_consent = true\n[dnscheck]\nenabled = true").expect("on");
        let d = p.dnscheck.expect("on");
        assert_eq!(d.every, Duration::from_secs(86_400));
        assert_eq!(d.domain, crate::dnscheck::DEFAULT_DOMAIN);
        let builtin = crate::dnscheck::builtin().expect("built-in resolvers");
        assert_eq!(d.targets.len(), builtin.len());
        assert!(d.targets.len() >= 2, "{}", d.targets.len());

        // A file of its own, read now, and a trailing dot on the name dropped.
        let dir = std::env::temp_dir().join(format!("vantage-cfg-dnscheck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("resolvers.toml");
        std::fs::write(
            &file,
            "[[resolver]]\nurl = \"dot://127.0.0.1:853/\"\nsni = \"dot.test\"\n",
        )
        .expect("write");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[resolver]]\nurl = \"udp://127.0.0.1:53/\"\n").expect("write");
        let p = plan(&format!(
            "informed_consent = true\n[dnscheck]\nenabled = true\nfile = {:?}\ndomain = \"example.net.\"",
            file.display().to_string()
        ))
        .expect("own file");
        let d = p.dnscheck.expect("on");
        assert_eq!(d.targets.len(), 1);
        assert_eq!(d.domain, "example.net");

        for (text, want) in [
            (
                "every_seconds = 60",
                "dnscheck.every_seconds: 60 must be between 3600",
            ),
            ("domain = \"a..b\"", "dnscheck.domain: \"a..b\""),
            (
                "file = \"/nonexistent/resolvers.toml\"",
                "dnscheck.file: /nonexistent/resolvers.toml",
            ),
            (
                &format!("file = {:?}", bad.display().to_string()),
                "dnscheck.file: ",
            ),
        ] {
            let err = plan(&format!(
                "informed_consent = true\n[dnscheck]\nenabled = true\n{text}"
            ))
            .expect_err(text)
            .to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        // Switched off, its other keys are still parsed but not checked.
        assert!(
            plan("informed_consent = true\n[dnscheck]\nevery_seconds = 60")
                .expect("off")
                .dnscheck
                .is_none()
        );
        let err = plan("informed_consent = true\n[dnscheck]\nenable = true")
            .expect_err("misspelt key")
            .to_string();
        assert!(err.contains("enable"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn quic_is_off_by_default_then_daily_over_the_https_hosts_of_a_list() {
        let p = plan("informed_consent = true").expect("valid");
        assert!(p.quic.is_none());
        let p = plan("informed_consent = true\n[quic]\nenabled = true").expect("on");
        let q = p.quic.expect("on");
        assert_eq!(q.every, Duration::from_secs(86_400));
        assert!(!q.plans.is_empty());
        assert!(q.plans.iter().all(|p| p.url().scheme() == "https"));

        let dir = std::env::temp_dir().join(format!("vantage-cfg-quic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let head = "url,category_code,category_description,date_added,source,notes\n";
        let list = dir.join("list.csv");
        std::fs::write(
            &list,
            format!(
                "{head}https://a.test/,NEWS,News,2024,x,\nhttps://a.test/other,NEWS,News,2024,x,\n\
                 http://b.test/,NEWS,News,2024,x,\nhttps://c.test:8443/,NEWS,News,2024,x,\n\
                 https://d.test/,NEWS,News,2024,x,\n"
            ),
        )
        .expect("write");
        let plain = dir.join("plain.csv");
        std::fs::write(&plain, format!("{head}http://b.test/,NEWS,News,2024,x,\n")).expect("write");
        let section = |extra: &str, file: &Path| {
            format!(
                "informed_consent = true\n[quic]\nenabled = true\nfile = {:?}\n{extra}",
                file.display().to_string()
            )
        };
        // One per host and port; http left out; the cap keeps the first ones.
        let q = plan(&section("", &list)).expect("list").quic.expect("on");
        let urls: Vec<&str> = q.plans.iter().map(|p| p.url().as_str()).collect();
        assert_eq!(
            urls,
            ["https://a.test/", "https://c.test:8443/", "https://d.test/"]
        );
        let q = plan(&section("max_hosts = 2", &list))
            .expect("capped")
            .quic
            .expect("on");
        assert_eq!(q.plans.len(), 2);

        for (text, want) in [
            (
                section("every_seconds = 59", &list),
                "quic.every_seconds: 59",
            ),
            (section("", &plain), "no https URL to measure over QUIC"),
            (
                section("", Path::new("/nonexistent/list.csv")),
                "quic.file: ",
            ),
        ] {
            let err = plan(&text).expect_err(&text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
