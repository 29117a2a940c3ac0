//! The daemon's configuration: a TOML file (documented in `deploy/vantage.toml`), read and
//! checked into a [`Plan`] before the daemon opens a socket. Every key has a default except the
//! aggregator's URL; unknown keys are refused, so a misspelt key is an error rather than a
//! setting silently ignored on a machine nobody watches.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::canary::{self, Target};
use crate::engine::{EngineConfig, Resolver, TlsContext};
use crate::ooni::{Asn, CountryCode};
use crate::test_lists::{ListChoice, TestList};
use crate::upload::UploadConfig;

/// Where the packaged configuration lives.
pub const DEFAULT_CONFIG: &str = "/etc/vantage/vantage.toml";

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The host read what running a censorship probe risks, and agreed (OONI asks the same of
    /// every volunteer before the first measurement).
    pub informed_consent: bool,
    /// Key, local store and fetched lists.
    pub data_dir: PathBuf,
    /// Without it the daemon measures and keeps everything locally.
    pub aggregator: Option<AggregatorSection>,
    /// Pinned country and network.
    pub network: NetworkSection,
    /// What list runs measure.
    pub lists: ListsSection,
    /// How often each task runs.
    pub schedule: ScheduleSection,
    /// How much the daemon may use of the connection.
    pub budget: BudgetSection,
    /// The connectivity canary.
    pub canary: CanarySection,
    /// Measurement deadlines and resolver.
    pub engine: EngineSection,
    /// The throttling test.
    pub throttling: ThrottlingSection,
    /// The app tests (docs/apps.md).
    pub apps: AppsSection,
    /// The encrypted-DNS resolvers check (docs/dnscheck.md).
    pub dnscheck: DnscheckSection,
    /// The QUIC handshake test (docs/quic.md).
    pub quic: QuicSection,
    /// Upload routes, tried in order (docs/carry.md, "Upload routes").
    pub upload: UploadSection,
    /// Exports written to a drive that appears at a mount point (docs/carry.md).
    pub carry: super::carry::CarrySection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            informed_consent: false,
            data_dir: PathBuf::from("/var/lib/vantage"),
            aggregator: None,
            network: NetworkSection::default(),
            lists: ListsSection::default(),
            schedule: ScheduleSection::default(),
            budget: BudgetSection::default(),
            canary: CanarySection::default(),
            engine: EngineSection::default(),
            throttling: ThrottlingSection::default(),
            apps: AppsSection::default(),
            dnscheck: DnscheckSection::default(),
            quic: QuicSection::default(),
            upload: UploadSection::default(),
            carry: super::carry::CarrySection::default(),
        }
    }
}

/// `[upload]`: the routes uploads are tried by, in order; without it, `aggregator.url`
/// (through `aggregator.proxy` when set) is the only one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSection {
    /// `{ url = "...", proxy = "IP:PORT" }` each: the aggregator, the aggregator through Tor,
    /// a `vantage relay` on the local network.
    pub routes: Vec<RouteSection>,
}

/// One upload route as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// The aggregator's or a relay's base URL.
    pub url: String,
    /// A SOCKS5 proxy (`IP:PORT`, Tor's is 127.0.0.1:9050) to reach it through.
    #[serde(default)]
    pub proxy: Option<String>,
}

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

/// `[aggregator]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorSection {
    /// Base URL: uploads, heartbeats, the test helper, whoami and signed lists.
    pub url: String,
    /// Extra CA roots (PEM), for the aggregator and for measurements.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// SOCKS5 proxy (e.g. Tor) for uploads and heartbeats; measurements never use it.
    #[serde(default)]
    pub proxy: Option<String>,
    /// The aggregator's published key (base64 Ed25519), for signed test lists. Without it the
    /// key pinned by an earlier fetch is used, else the key seen on the first fetch is trusted
    /// and pinned, but only over https://: over plain HTTP the lists are refused until it is
    /// set.
    #[serde(default)]
    pub key: Option<String>,
}

/// `[network]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Country code written into measurements.
    pub cc: Option<String>,
    /// `AS<n>` written into measurements.
    pub asn: Option<String>,
}

/// `[lists]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListsSection {
    /// Country lists; default the located country. The global list is always measured too.
    pub countries: Vec<String>,
    /// Extra list files.
    pub files: Vec<PathBuf>,
    /// Category codes to keep; all when empty.
    pub categories: Vec<String>,
    /// At most this many URLs per run; 0 for no limit.
    pub max_urls: usize,
    /// Refresh lists from the aggregator on the refresh schedule.
    pub fetch: bool,
}

impl Default for ListsSection {
    fn default() -> Self {
        ListsSection {
            countries: Vec::new(),
            files: Vec::new(),
            categories: Vec::new(),
            max_urls: 0,
            fetch: true,
        }
    }
}

/// `[schedule]`, all in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSection {
    /// Canary rounds, every minute by default (README.md, "Unattended: `vantage daemon`"), so a
    /// shutdown's start and end are known to the minute.
    pub canary_seconds: u64,
    /// Heartbeats, every minute by default while online (README.md, the same table); the
    /// aggregator's shutdown detector
    /// counts a probe as silent after two and a half of these.
    pub heartbeat_seconds: u64,
    /// List runs; 0 switches them off (canaries and heartbeats only).
    pub run_seconds: u64,
    /// Each run is moved by a random amount up to this, either way, so that probes installed
    /// together do not all measure (and load the test helper) at the same moment.
    pub run_jitter_seconds: u64,
    /// The first list run after start.
    pub first_run_seconds: u64,
    /// Lists and whoami refresh.
    pub refresh_seconds: u64,
    /// Outbox upload, when nothing else triggers one.
    pub upload_seconds: u64,
    /// Upload backoff cap.
    pub upload_max_backoff_seconds: u64,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            canary_seconds: 60,
            heartbeat_seconds: 60,
            run_seconds: 6 * 3600,
            run_jitter_seconds: 1800,
            first_run_seconds: 300,
            refresh_seconds: 86_400,
            upload_seconds: 300,
            upload_max_backoff_seconds: 1800,
        }
    }
}

/// `[budget]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSection {
    /// List-run measurements at once.
    pub concurrency: usize,
    /// List runs pause for the rest of the UTC day after this much traffic.
    pub daily_megabytes: u64,
    /// At most this much of each page is downloaded.
    pub body_cap_kilobytes: usize,
}

impl Default for BudgetSection {
    fn default() -> Self {
        BudgetSection {
            concurrency: 4,
            daily_megabytes: 200,
            body_cap_kilobytes: 512,
        }
    }
}

/// `[canary]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanarySection {
    /// Target list; default the built-in anycast resolvers and root servers.
    pub targets: Option<PathBuf>,
    /// Deadline for each DNS answer and TCP connect.
    pub timeout_seconds: u64,
}

impl Default for CanarySection {
    fn default() -> Self {
        CanarySection {
            targets: None,
            timeout_seconds: 5,
        }
    }
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// TCP connect, TLS handshake and HTTP exchange deadline.
    pub timeout_seconds: u64,
    /// DNS lookup deadline.
    pub dns_timeout_seconds: u64,
    /// A UDP resolver (`IP:PORT`) instead of the system's.
    pub resolver: Option<String>,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            timeout_seconds: 10,
            dns_timeout_seconds: 4,
            resolver: None,
        }
    }
}

/// A configuration that cannot be used. Each names the file, and the key when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a key unknown or of the wrong type (the message has line and column).
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value out of range or a file it names that cannot be used.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The key, e.g. `schedule.canary_seconds`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// The aggregator, checked.
#[derive(Debug, Clone)]
pub struct AggregatorPlan {
    /// Base URL ending in `/`.
    pub url: Url,
    /// Upload settings (proxy included).
    pub upload: UploadConfig,
    /// Pinned key for signed lists.
    pub key: Option<String>,
}

/// Intervals, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Canary rounds.
    pub canary: Duration,
    /// Heartbeats.
    pub heartbeat: Duration,
    /// List runs; `None` when switched off.
    pub run: Option<Duration>,
    /// Largest shift of a run either way.
    pub run_jitter: Duration,
    /// First run after start.
    pub first_run: Duration,
    /// Lists and whoami refresh.
    pub refresh: Duration,
    /// Upload tick.
    pub upload: Duration,
    /// Upload backoff cap.
    pub upload_max_backoff: Duration,
}

/// Everything the daemon needs, validated: nothing here can fail at run time for a reason the
/// file could have shown.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Data directory.
    pub data_dir: PathBuf,
    /// The aggregator, if any.
    pub aggregator: Option<AggregatorPlan>,
    /// Pinned country.
    pub cc: Option<CountryCode>,
    /// Pinned network.
    pub asn: Option<Asn>,
    /// Lists of each run; `names` holds the configured countries and `global`. When no country
    /// is configured the located one is added at run time.
    pub lists: ListChoice,
    /// Whether countries were configured (else the located country is measured).
    pub countries_configured: bool,
    /// Fetch lists from the aggregator.
    pub fetch_lists: bool,
    /// Intervals.
    pub schedule: Schedule,
    /// List-run measurements at once.
    pub concurrency: usize,
    /// Daily traffic budget of list runs, in bytes.
    pub daily_bytes: u64,
    /// Canary targets.
    pub canary_targets: Vec<Target>,
    /// Engine settings of canary rounds.
    pub canary_engine: EngineConfig,
    /// Engine settings of list runs.
    pub engine: EngineConfig,
    /// Resolvers of list runs.
    pub resolvers: Vec<Resolver>,
    /// Trusted roots (Mozilla's plus the configured ones).
    pub tls: TlsContext,
    /// The throttling test, when targets are configured.
    pub throttling: Option<ThrottlingPlan>,
    /// The app tests, when some are configured.
    pub apps: Option<AppsRunPlan>,
    /// The resolvers check, when enabled.
    pub dnscheck: Option<DnscheckRunPlan>,
    /// The QUIC test, when enabled.
    pub quic: Option<QuicRunPlan>,
    /// Exports to a drive at a mount point, when `[carry] path` is set.
    pub carry: Option<super::carry::CarryPlan>,
}

/// The longest interval accepted: thirty days. Longer is almost certainly a typo (milliseconds
/// written as seconds) on a machine nobody watches.
const MAX_SECONDS: u64 = 30 * 86_400;

impl Config {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.display().to_string(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Checks every value and reads every file named, so that the daemon never fails later
    /// for a reason the file could have shown.
    pub fn plan(&self, path: &Path) -> Result<Plan, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            path: path.display().to_string(),
            key,
            reason,
        };
        if !self.informed_consent {
            return Err(invalid(
                "informed_consent",
                "must be true: running a censorship probe can be risky where it runs (see \
                 deploy/vantage.toml); set it once the host has read and accepted the risks"
                    .into(),
            ));
        }
        let secs = |key: &'static str, value: u64, min: u64| {
            if value < min || value > MAX_SECONDS {
                Err(invalid(
                    key,
                    format!("{value} is outside {min}..={MAX_SECONDS} seconds"),
                ))
            } else {
                Ok(Duration::from_secs(value))
            }
        };
        let s = &self.schedule;
        let schedule = Schedule {
            canary: secs("schedule.canary_seconds", s.canary_seconds, 1)?,
            heartbeat: secs("schedule.heartbeat_seconds", s.heartbeat_seconds, 1)?,
            run: match s.run_seconds {
                0 => None,
                n => Some(secs("schedule.run_seconds", n, 60)?),
            },
            run_jitter: secs("schedule.run_jitter_seconds", s.run_jitter_seconds, 0)?,
            first_run: secs("schedule.first_run_seconds", s.first_run_seconds, 0)?,
            refresh: secs("schedule.refresh_seconds", s.refresh_seconds, 60)?,
            upload: secs("schedule.upload_seconds", s.upload_seconds, 1)?,
            upload_max_backoff: secs(
                "schedule.upload_max_backoff_seconds",
                s.upload_max_backoff_seconds,
                1,
            )?,
        };
        if let Some(run) = schedule.run
            && schedule.run_jitter >= run
        {
            return Err(invalid(
                "schedule.run_jitter_seconds",
                "must be shorter than schedule.run_seconds".into(),
            ));
        }

        let b = &self.budget;
        if !(1..=64).contains(&b.concurrency) {
            return Err(invalid(
                "budget.concurrency",
                format!("{} is outside 1..=64", b.concurrency),
            ));
        }
        if b.daily_megabytes == 0 {
            return Err(invalid(
                "budget.daily_megabytes",
                "must be at least 1; to switch list runs off set schedule.run_seconds = 0".into(),
            ));
        }
        if !(16..=16_384).contains(&b.body_cap_kilobytes) {
            return Err(invalid(
                "budget.body_cap_kilobytes",
                format!("{} is outside 16..=16384", b.body_cap_kilobytes),
            ));
        }

        let e = &self.engine;
        let mut engine = EngineConfig::default();
        let timeout = secs("engine.timeout_seconds", e.timeout_seconds, 1)?;
        engine.timeouts.tcp_connect = timeout;
        engine.timeouts.tls_handshake = timeout;
        engine.timeouts.http = timeout;
        engine.timeouts.dns = secs("engine.dns_timeout_seconds", e.dns_timeout_seconds, 1)?;
        engine.body_cap_bytes = b.body_cap_kilobytes * 1024;
        let resolvers = match &e.resolver {
            Some(r) => vec![Resolver::Udp(r.parse().map_err(|_| {
                invalid(
                    "engine.resolver",
                    format!("{r:?} is not an IP:PORT address"),
                )
            })?)],
            None => vec![Resolver::System],
        };

        let c = &self.canary;
        let canary_targets = match &c.targets {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|err| {
                    invalid(
                        "canary.targets",
                        format!("cannot read {}: {err}", file.display()),
                    )
                })?;
                canary::parse_targets(&text, &file.display().to_string())
            }
            None => canary::parse_targets(canary::BUILTIN_TARGETS, "built-in canaries"),
        }
        .map_err(|err| invalid("canary.targets", err.to_string()))?;
        let mut canary_engine = EngineConfig::default();
        let canary_timeout = secs("canary.timeout_seconds", c.timeout_seconds, 1)?;
        canary_engine.timeouts.dns = canary_timeout;
        canary_engine.timeouts.tcp_connect = canary_timeout;
        if canary_timeout > schedule.canary {
            return Err(invalid(
                "canary.timeout_seconds",
                "must not be longer than schedule.canary_seconds, or rounds would fall behind"
                    .into(),
            ));
        }

        let n = &self.network;
        let cc =
            n.cc.as_deref()
                .map(str::parse::<CountryCode>)
                .transpose()
                .map_err(|err| invalid("network.cc", err.to_string()))?;
        let asn = n
            .asn
            .as_deref()
            .map(str::parse::<Asn>)
            .transpose()
            .map_err(|err| invalid("network.asn", err.to_string()))?;

        let l = &self.lists;
        let mut names = Vec::new();
        for country in &l.countries {
            let code: CountryCode = country
                .parse()
                .map_err(|err| invalid("lists.countries", format!("{country:?}: {err}")))?;
            names.push(code.as_str().to_ascii_lowercase());
        }
        names.push("global".to_string());
        for file in &l.files {
            let (list, _) =
                TestList::read(file).map_err(|err| invalid("lists.files", err.to_string()))?;
            if list.entries.is_empty() {
                return Err(invalid(
                    "lists.files",
                    format!("{}: no usable URL", file.display()),
                ));
            }
        }
        if let Some(bad) = l
            .categories
            .iter()
            .find(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(invalid(
                "lists.categories",
                format!("{bad:?} is not a category code such as NEWS or HUMR"),
            ));
        }
        let lists = ListChoice {
            files: l.files.clone(),
            names,
            categories: l.categories.clone(),
            max: (l.max_urls > 0).then_some(l.max_urls),
        };

        let mut extra_roots = Vec::new();
        let aggregator = match &self.aggregator {
            None => None,
            Some(a) => {
                let mut url = Url::parse(&a.url)
                    .map_err(|err| invalid("aggregator.url", format!("{:?}: {err}", a.url)))?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(invalid(
                        "aggregator.url",
                        format!("{:?} must be an http:// or https:// URL", a.url),
                    ));
                }
                if !url.path().ends_with('/') {
                    let p = format!("{}/", url.path());
                    url.set_path(&p);
                }
                if let Some(file) = &a.ca_file {
                    extra_roots = TlsContext::load_pem(file)
                        .map_err(|err| invalid("aggregator.ca_file", err.to_string()))?;
                }
                let mut upload = UploadConfig::new(url.clone());
                upload.socks5 = a
                    .proxy
                    .as_deref()
                    .map(|p| {
                        p.parse::<SocketAddr>().map_err(|_| {
                            invalid(
                                "aggregator.proxy",
                                format!("{p:?} is not an IP:PORT address"),
                            )
                        })
                    })
                    .transpose()?;
                upload.routes = self.routes(&invalid)?;
                upload.max_attempts = 1;
                upload.timeout = Duration::from_secs(30);
                upload.backoff = Duration::from_secs(5).min(schedule.upload_max_backoff);
                upload.max_backoff = schedule.upload_max_backoff;
                if let Some(key) = &a.key
                    && crate::envelope::parse_public_key(key.trim()).is_none()
                {
                    return Err(invalid(
                        "aggregator.key",
                        format!("{key:?} is not a base64 Ed25519 public key"),
                    ));
                }
                Some(AggregatorPlan {
                    url,
                    upload,
                    key: a.key.as_ref().map(|k| k.trim().to_string()),
                })
            }
        };
        let tls = TlsContext::new(extra_roots)
            .map_err(|err| invalid("aggregator.ca_file", err.to_string()))?;
        let throttling = self.throttling_plan(aggregator.is_some(), &invalid)?;
        let apps = self.apps_plan(&invalid)?;
        let dnscheck = self.dnscheck_plan(&invalid)?;
        let quic = self.quic_plan(&resolvers, &engine, &invalid)?;
        if aggregator.is_none() && !self.upload.routes.is_empty() {
            return Err(invalid(
                "upload.routes",
                "routes carry uploads to an aggregator: set [aggregator] url too (heartbeats, \
                 whoami and test lists go there)"
                    .into(),
            ));
        }
        let carry = self.carry.plan(&self.data_dir, &invalid)?;

        Ok(Plan {
            data_dir: self.data_dir.clone(),
            aggregator,
            cc,
            asn,
            lists,
            countries_configured: !l.countries.is_empty(),
            fetch_lists: l.fetch,
            schedule,
            concurrency: b.concurrency,
            daily_bytes: b.daily_megabytes.saturating_mul(1_000_000),
            canary_targets,
            canary_engine,
            engine,
            resolvers,
            tls,
            throttling,
            apps,
            dnscheck,
            quic,
            carry,
        })
    }

    /// Checks `[upload] routes`, in order, before any connection.
    fn routes(
        &self,
        invalid: &impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<Vec<crate::route::Route>, ConfigError> {
        let routes = &self.upload.routes;
        use crate::route::MAX_ROUTES;
        if routes.len() > MAX_ROUTES {
            return Err(invalid(
                "upload.routes",
                format!("{} routes; at most {MAX_ROUTES}", routes.len()),
            ));
        }
        routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                crate::route::Route::parse(&r.url, r.proxy.as_deref())
                    .map_err(|e| invalid("upload.routes", format!("route {}: {e}", i + 1)))
            })
            .collect()
    }

    /// Checks `[dnscheck]`: an interval, the name, and the resolvers file, read and validated
    /// now as `vantage run --test dnscheck --resolvers-file` does.
    fn dnscheck_plan(
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
    fn quic_plan(
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
    fn apps_plan(
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
    fn throttling_plan(
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

/// Reads, parses and checks a configuration file.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    Config::read(path)?.plan(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, ConfigError> {
        Config::parse(text, Path::new("test.toml"))?.plan(Path::new("test.toml"))
    }

    #[test]
    fn the_shipped_example_is_valid_once_consent_is_given() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/vantage.toml");
        let text = std::fs::read_to_string(&path).expect("deploy/vantage.toml");
        let err = plan(&text).expect_err("consent is off in the example");
        assert!(
            err.to_string().contains("informed_consent: must be true"),
            "{err}"
        );
        let text = text.replace("informed_consent = false", "informed_consent = true");
        let p = plan(&text).expect("example");
        assert_eq!(p.data_dir, Path::new("/var/lib/vantage"));
        assert_eq!(p.schedule.canary, Duration::from_secs(60));
        assert_eq!(p.schedule.run, Some(Duration::from_secs(21_600)));
        assert_eq!(p.concurrency, 4);
        assert!(p.aggregator.is_some());
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

    #[test]
    fn a_published_aggregator_key_is_kept_trimmed() {
        let key = crate::envelope::Identity::generate()
            .expect("key")
            .public_key();
        let p = plan(&format!(
            "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\nkey = \" {key} \""
        ))
        .expect("valid key");
        assert_eq!(p.aggregator.expect("aggregator").key, Some(key));
    }

    #[test]
    fn defaults_follow_the_design() {
        let p = plan("informed_consent = true").expect("minimal");
        assert_eq!(p.schedule.canary, Duration::from_secs(60));
        assert_eq!(p.schedule.heartbeat, Duration::from_secs(60));
        assert_eq!(p.schedule.run, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(p.lists.names, ["global"]);
        assert!(p.aggregator.is_none());
        assert_eq!(p.daily_bytes, 200_000_000);
        assert_eq!(p.engine.body_cap_bytes, 512 * 1024);
        assert_eq!(p.throttling, None);
        let p = plan(
            "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\n[throttling]\ntargets = [\"twitter.com\"]",
        )
        .expect("throttling");
        let t = p.throttling.expect("on");
        assert_eq!(t.every, Duration::from_secs(21_600));
        assert_eq!(t.settings, crate::throttling::Settings::default());
    }

    #[test]
    fn upload_routes_are_kept_in_order_and_default_to_the_aggregator() {
        let p = plan("informed_consent = true\n[aggregator]\nurl = \"https://agg.example\"\nproxy = \"127.0.0.1:9050\"")
            .expect("single");
        let a = p.aggregator.expect("aggregator");
        assert!(a.upload.routes.is_empty());
        assert_eq!(
            a.upload
                .upload_routes()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["https://agg.example/ through SOCKS5 127.0.0.1:9050"]
        );
        let p = plan(concat!(
            "informed_consent = true\n[aggregator]\nurl = \"https://agg.example\"\n[upload]\n",
            "routes = [{ url = \"https://agg.example\" }, ",
            "{ url = \"https://agg.example\", proxy = \"127.0.0.1:9050\" }, ",
            "{ url = \"http://relay.lan:8787\" }]"
        ))
        .expect("routes");
        let routes: Vec<String> = p
            .aggregator
            .expect("aggregator")
            .upload
            .upload_routes()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            routes,
            [
                "https://agg.example/",
                "https://agg.example/ through SOCKS5 127.0.0.1:9050",
                "http://relay.lan:8787/"
            ]
        );
        assert!(p.carry.is_none(), "off unless a path is set");
        let p =
            plan("informed_consent = true\n[carry]\npath = \"/media/vantage/\"").expect("carry");
        let c = p.carry.expect("on");
        assert_eq!(c.path, Path::new("/media/vantage"));
        assert_eq!(c.every, Duration::from_secs(5));
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let cases = [
            (
                "informed_consent = true\ncanary_seconds = 5",
                "unknown field `canary_seconds`",
            ),
            (
                "informed_consent = true\n[schedule]\ncanary_secs = 5",
                "unknown field `canary_secs`",
            ),
            (
                "informed_consent = true\n[schedule]\ncanary_seconds = 0",
                "test.toml: schedule.canary_seconds: 0 is outside 1..=2592000 seconds",
            ),
            (
                "informed_consent = true\n[schedule]\ncanary_seconds = -5",
                "invalid value",
            ),
            (
                "informed_consent = true\n[schedule]\nrun_seconds = 600\nrun_jitter_seconds = 600",
                "schedule.run_jitter_seconds: must be shorter than schedule.run_seconds",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"ftp://x/\"",
                "aggregator.url: \"ftp://x/\" must be an http:// or https:// URL",
            ),
            (
                "informed_consent = true\n[aggregator]\nproxy = \"127.0.0.1:9050\"",
                "missing field `url`",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\nproxy = \"tor\"",
                "aggregator.proxy: \"tor\" is not an IP:PORT address",
            ),
            (
                "informed_consent = true\n[network]\ncc = \"IRN\"",
                "network.cc:",
            ),
            (
                "informed_consent = true\n[throttling]\ntargets = [\"twitter.com\"]",
                "throttling.targets: the throttling test needs the aggregator's throughput server",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\n[throttling]\ntargets = [\"a.example\", \"b.example\", \"c.example\"]",
                "throttling: 3 targets x 3 repetitions x 2 downloads x 160000 bytes = 2880000 bytes, over the budget of 2000000 bytes",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\n[throttling]\ntargets = [\"x.example\"]\nratio = 3",
                "throttling.ratio: 3 must be between 0 and 1",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\n[throttling]\ntargets = [\"10.0.0.1\"]",
                "is not a DNS name usable as an SNI",
            ),
            (
                "informed_consent = true\n[network]\nasn = \"AS-1\"",
                "network.asn:",
            ),
            (
                "informed_consent = true\n[lists]\ncategories = [\"NEWS; DROP\"]",
                "lists.categories: \"NEWS; DROP\" is not a category code",
            ),
            (
                "informed_consent = true\n[lists]\nfiles = [\"/nonexistent.csv\"]",
                "lists.files:",
            ),
            (
                "informed_consent = true\n[budget]\nconcurrency = 0",
                "budget.concurrency: 0 is outside 1..=64",
            ),
            (
                "informed_consent = true\n[budget]\ndaily_megabytes = 0",
                "budget.daily_megabytes: must be at least 1",
            ),
            (
                "informed_consent = true\n[canary]\ntimeout_seconds = 61",
                "canary.timeout_seconds: must not be longer than schedule.canary_seconds",
            ),
            (
                "informed_consent = true\n[canary]\ntargets = \"/nonexistent\"",
                "canary.targets: cannot read /nonexistent",
            ),
            (
                "informed_consent = true\n[engine]\nresolver = \"8.8.8.8\"",
                "engine.resolver:",
            ),
            (
                "informed_consent = true\n[upload]\nroutes = [{ url = \"http://a/\" }]",
                "upload.routes: routes carry uploads to an aggregator: set [aggregator] url too",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\n[upload]\nroutes = [{ url = \"http://a/\" }, { url = \"relay.lan:8787\" }]",
                "upload.routes: route 2: \"relay.lan:8787\" must be an http:// or https:// URL",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\n[upload]\nroutes = [{ url = \"http://a/\", proxy = \"tor\" }]",
                "upload.routes: route 1: proxy \"tor\" is not an IP:PORT address",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\n[upload]\nroutes = [{ uri = \"http://a/\" }]",
                "unknown field `uri`",
            ),
            (
                "informed_consent = true\n[carry]\npath = \"media/vantage\"",
                "carry.path: \"media/vantage\" must be an absolute path",
            ),
            (
                "informed_consent = true\n[carry]\npath = \"/media/vantage\"\ncheck_seconds = 0",
                "carry.check_seconds: 0 is outside 1..=3600",
            ),
            (
                "informed_consent = tru",
                "test.toml: TOML parse error at line 1",
            ),
            (
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\nkey = \"BASE64...\"",
                "test.toml: aggregator.key: \"BASE64...\" is not a base64 Ed25519 public key",
            ),
            (
                // 32 bytes of base64, but not a point on the curve.
                "informed_consent = true\n[aggregator]\nurl = \"http://a/\"\nkey = \"AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"",
                "aggregator.key:",
            ),
        ];
        for (text, want) in cases {
            let err = plan(text).expect_err(text);
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }
    }
}
