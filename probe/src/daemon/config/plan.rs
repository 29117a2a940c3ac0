//! Checking a [`Config`] into a [`Plan`]: every value in range, every address parsed and every
//! file it names read now, before the daemon opens a socket, so that nothing fails later for a
//! reason the file could have shown. The opt-in tests' sections are checked in `optional.rs`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::{AggregatorPlan, Config, ConfigError, MAX_SECONDS, Plan, Schedule};
use crate::canary;
use crate::engine::{EngineConfig, Resolver, TlsContext};
use crate::ooni::{Asn, CountryCode};
use crate::test_lists::{ListChoice, TestList};
use crate::upload::UploadConfig;

impl Config {
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
