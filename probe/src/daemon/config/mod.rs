//! The daemon's configuration: a TOML file (documented in `deploy/vantage.toml`), read and
//! checked into a [`Plan`] before the daemon opens a socket. Every key has a default except the
//! aggregator's URL; unknown keys are refused, so a misspelt key is an error rather than a
//! setting silently ignored on a machine nobody watches.
//!
//! This file holds the types: the file as written (its sections) and the [`Plan`] it is checked
//! into, with the entry points [`Config::read`], [`Config::parse`] and [`load`]. `plan.rs` checks
//! a [`Config`] into a [`Plan`]; `optional.rs` holds the sections of the tests that are off
//! unless configured (throttling, apps, dnscheck, QUIC) and their checks.

mod optional;
mod plan;

pub use optional::{
    AppsRunPlan, AppsSection, DnscheckRunPlan, DnscheckSection, QuicRunPlan, QuicSection,
    ThrottlingPlan, ThrottlingSection,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::canary::Target;
use crate::engine::{EngineConfig, Resolver, TlsContext};
use crate::ooni::{Asn, CountryCode};
use crate::test_lists::ListChoice;
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
}

/// Reads, parses and checks a configuration file.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    Config::read(path)?.plan(path)
}
