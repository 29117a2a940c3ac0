//! The lab run: builds the network, starts the servers, the aggregator and the probes' daemons
//! in their namespaces, measures every domain with the real `vantage run`, cuts the uplink, and
//! checks what a researcher would see: each domain's verdict and the aggregator's timeline.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::censor::{self, THROUGHPUT_PORT};
use crate::check::{
    Report, Timeline, check_shutdown, check_timeline, throttling_differs, utc, verdict_differs,
};
use crate::evidence;
use crate::scenario::{CONTROL_SNI, SITES, SNI_POLICE_KBPS, Site, THROTTLED_SNI, Technique};
use crate::topology::{
    self, AGGREGATOR, ISP_PROXY, ISP_RESOLVER, NET, NET_RESOLVER, PROBES, ROUTER,
};

/// The bins in which the aggregator records each probe's contacts (`signals::BIN_SECONDS`): a
/// gap inside one bin is invisible to it, so the lab's outage straddles a bin boundary.
const BIN_SECONDS: f64 = 300.0;

/// What the run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where logs, databases and the probes' data go.
    pub dir: PathBuf,
    /// The lab's binaries and the Vantage binaries beside them.
    pub bin_dir: PathBuf,
    /// Cut the uplink and check the shutdown event.
    pub shutdown: bool,
    /// Measure every scenario and check the verdicts and their events (else only the shutdown).
    pub measure: bool,
    /// How long the uplink stays down.
    pub outage: Duration,
    /// Leave this domain uncensored, so that its check fails (to test the lab's own cleanup).
    pub sabotage: Option<String>,
}

impl Plan {
    fn bin(&self, name: &str) -> String {
        self.bin_dir.join(name).display().to_string()
    }

    fn aggregator_url(&self) -> String {
        format!("http://{AGGREGATOR}:8080")
    }

    fn censored(&self) -> Vec<&'static Site> {
        SITES
            .iter()
            .filter(|s| self.sabotage.as_deref() != Some(s.domain))
            .collect()
    }
}

/// Processes started in the lab's namespaces; killed when dropped, whatever happened.
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Procs {
    fn start(&mut self, plan: &Plan, ns: &str, name: &str, args: &[String]) -> Result<PathBuf> {
        let log = plan.dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = topology::netns_command(ns, args)
            .env("RUST_LOG", "info")
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} in {ns}"))?;
        self.0.push((name.to_string(), child));
        Ok(log)
    }

    /// Fails if a process has exited: a server that died would make every later check fail
    /// for the wrong reason.
    fn check(&mut self, plan: &Plan) -> Result<()> {
        for (name, child) in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited ({status}); its log: {}",
                    plan.dir.join(format!("{name}.log")).display()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sleep_until(t: f64) {
    let left = t - now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
}

/// Waits until `log` holds `needle` `n` times.
fn wait_for_log(log: &Path, needle: &str, n: usize, within: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.matches(needle).count() >= n {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("{} never said {needle:?} within {within:?}", log.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the lab: builds it, runs it, removes it (also on error), and returns the report.
pub fn run(plan: &Plan) -> Result<Report> {
    preflight(plan)?;
    let leftovers = topology::cleanup();
    if !leftovers.is_empty() {
        bail!("cannot remove a previous run's leftovers: {leftovers:?}");
    }
    fresh_dir(&plan.dir)?;
    let result = {
        let mut procs = Procs::default();
        let report = run_inside(plan, &mut procs);
        drop(procs);
        report
    };
    let problems = topology::cleanup();
    if !problems.is_empty() {
        bail!("the lab could not remove everything it made: {problems:?}");
    }
    result
}

/// Marks a directory as the lab's own, so that a later run may empty it.
const MARKER: &str = ".vantage-lab";

/// Empties the run directory of an earlier run (its database would hold that run's events), but
/// refuses to touch a directory the lab did not make.
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} is not empty and not a lab directory; give another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by vantage-lab run\n")
        .with_context(|| format!("writing in {}", dir.display()))?;
    Ok(())
}

fn preflight(plan: &Plan) -> Result<()> {
    if topology::run("id", &["-u"])?.trim() != "0" {
        bail!("the lab needs root (network namespaces, iptables): run it with sudo or as root");
    }
    for tool in ["ip", "iptables", "tc", "dnsmasq"] {
        if topology::run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            bail!(
                "{tool} is missing: tests/lab/run.sh installs it (apt-get install iproute2 iptables dnsmasq-base)"
            );
        }
    }
    for bin in ["vantage", "vantage-aggregator"] {
        if !plan.bin_dir.join(bin).is_file() {
            bail!(
                "{} is missing: build the workspace first (cargo build --workspace)",
                plan.bin_dir.join(bin).display()
            );
        }
    }
    Ok(())
}

fn run_inside(plan: &Plan, procs: &mut Procs) -> Result<Report> {
    let t0 = Instant::now();
    topology::build().context("building the lab network")?;
    crate::carry::build().context("building the neighbour's home and link")?;
    eprintln!("lab: network built in {:.1} s", t0.elapsed().as_secs_f64());
    let dir = &plan.dir;
    let lab = std::env::current_exe()
        .context("finding vantage-lab")?
        .display()
        .to_string();

    let ca = start_internet(plan, procs, &lab)?;
    start_isp(plan, procs, &lab)?;
    let db = start_aggregator(plan, procs, &ca)?;
    let relay = crate::carry::relay_args(
        &plan.bin("vantage"),
        &dir.join("neighbour"),
        &plan.aggregator_url(),
    );
    let relay_log = procs.start(
        plan,
        crate::carry::NEIGHBOUR,
        crate::carry::RELAY_NAME,
        &relay,
    )?;
    wait_for_log(
        &relay_log,
        crate::carry::RELAY_READY,
        1,
        Duration::from_secs(20),
    )?;
    // Reachable from a probe, through the router: the network works.
    for target in [
        format!("{AGGREGATOR}:8080"),
        format!("{}:443", SITES[0].addr()),
    ] {
        topology::run_in(PROBES[0], &[&lab, "reach", &target, "--within-secs", "20"])
            .with_context(|| format!("{target} is not reachable from {}", PROBES[0]))?;
    }
    procs.check(plan)?;
    let datas = start_daemons(plan, procs)?;
    eprintln!(
        "lab: {} daemons measuring, {:.0} s in",
        PROBES.len(),
        t0.elapsed().as_secs_f64()
    );

    let mut report = Report::default();
    let timeline = Timeline {
        bin: plan.bin("vantage-aggregator"),
        db,
    };
    let list = dir.join("list.csv");
    std::fs::write(&list, test_list())?;
    // The outage straddles a bin boundary; the measurements go before it when there is time.
    let half = plan.outage.as_secs_f64() / 2.0;
    let schedule = || {
        let boundary = ((now() + 20.0 + half) / BIN_SECONDS).ceil() * BIN_SECONDS;
        (boundary - half, boundary + half)
    };
    let (mut cut, mut back) = schedule();
    let before = !plan.shutdown || cut - now() > 60.0;
    if before && plan.measure {
        measure(plan, procs, &datas, &list, &ca, &mut report)?;
        if now() > cut - 5.0 {
            (cut, back) = schedule();
        }
    }
    if plan.shutdown {
        eprintln!(
            "lab: cutting the uplink at {} for {:.0} s",
            utc(cut),
            plan.outage.as_secs_f64()
        );
        sleep_until(cut);
        topology::set_uplink(false)?;
        let cut_at = now();
        let carry = crate::carry::Cut {
            vantage: plan.bin("vantage"),
            dir,
            data: datas[crate::carry::CARRIED].clone(),
            timeline: &timeline,
            relay_log: relay_log.clone(),
        };
        crate::carry::during_cut(&carry, cut_at, back, &mut report);
        sleep_until(back);
        topology::set_uplink(true)?;
        let back_at = now();
        eprintln!("lab: uplink back at {}", utc(back_at));
        if !before && plan.measure {
            measure(plan, procs, &datas, &list, &ca, &mut report)?;
        }
        let event = check_shutdown(&timeline, cut_at, back_at, &mut report, &mut || {
            procs.check(plan)
        })?;
        crate::carry::check_after(&timeline, &mut report);
        match event {
            Some(_) if !plan.measure => {}
            Some(event) => {
                let bundle = evidence_bundle(plan, &lab, &timeline, &datas);
                evidence::check_bundle(&bundle, &event, cut_at, back_at, &mut report);
            }
            None => report.check(
                "evidence: the shutdown's bundle",
                Some("no shutdown event to take it of".into()),
            ),
        }
        procs.check(plan)?;
    }
    if plan.measure {
        check_timeline(&timeline, &mut report)?;
        crate::apps::check_timeline(&timeline, &plan.dir, Duration::from_secs(30), &mut report)?;
        crate::quic::check_timeline(&timeline, &plan.dir, &mut report)?;
        crate::dnscheck::check_timeline(&timeline, &plan.dir, &mut report)?;
    }
    let expected = crate::hygiene::expected_targets(plan.measure);
    crate::hygiene::check_no_phantom(&timeline, dir, &expected, plan.shutdown, &mut report)?;
    procs.check(plan)?;
    eprintln!("lab: done in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(report)
}

/// Where the shutdown's evidence bundle comes from and goes: fetched from the first probe's
/// home (a researcher's view through the ISP), made again from the aggregator's database.
fn evidence_bundle(
    plan: &Plan,
    lab: &str,
    timeline: &Timeline,
    datas: &[PathBuf],
) -> evidence::Bundle {
    evidence::Bundle {
        dir: plan.dir.clone(),
        vantage: plan.bin("vantage"),
        aggregator: plan.bin("vantage-aggregator"),
        lab: lab.to_string(),
        from_ns: PROBES[0],
        url: plan.aggregator_url(),
        db: timeline.db.clone(),
        detect: plan.dir.join(DETECT_FILE),
        aggregator_log: plan.dir.join(format!("{AGGREGATOR_NAME}.log")),
        probes: PROBES.iter().copied().zip(datas.iter().cloned()).collect(),
    }
}

/// The lab's Internet: its resolver, a distant resolver, the web sites (which make the CA whose
/// certificate this returns).
fn start_internet(plan: &Plan, procs: &mut Procs, lab: &str) -> Result<PathBuf> {
    let dir = &plan.dir;
    procs.start(plan, NET, "net-resolver", &censor::net_resolver())?;
    procs.start(
        plan,
        NET,
        "slow-resolver",
        &strings(&[
            lab,
            "slow-dns",
            "--listen",
            &format!("{}:53", topology::SLOW_RESOLVER),
            "--upstream",
            &format!("{NET_RESOLVER}:53"),
        ]),
    )?;
    let ca = dir.join("ca.pem");
    procs.start(
        plan,
        NET,
        "web",
        &[
            lab.to_string(),
            "web".into(),
            "--ca-out".into(),
            ca.display().to_string(),
        ],
    )?;
    let started = Instant::now();
    while !ca.exists() {
        procs.check(plan)?;
        if started.elapsed() > Duration::from_secs(20) {
            bail!("the web servers did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(ca)
}

/// The censoring ISP: its lying resolver, its filtering proxy, its injector, its rules.
fn start_isp(plan: &Plan, procs: &mut Procs, lab: &str) -> Result<()> {
    let dir = &plan.dir;
    let censored = plan.censored();
    procs.start(
        plan,
        ROUTER,
        "isp-resolver",
        &censor::isp_resolver(&censored),
    )?;
    let proxy_upstream = SITES
        .iter()
        .find(|s| s.technique == Technique::HostBlockpage)
        .map(|s| format!("{}:80", s.addr()))
        .context("no blockpage site")?;
    procs.start(
        plan,
        ROUTER,
        "isp-proxy",
        &[
            lab.to_string(),
            "proxy".into(),
            "--listen".into(),
            format!("{ISP_PROXY}:80"),
            "--upstream".into(),
            proxy_upstream,
        ],
    )?;
    if censored
        .iter()
        .any(|s| matches!(s.technique, Technique::DnsInjected(_)))
    {
        procs.start(
            plan,
            ROUTER,
            "isp-injector",
            &[
                lab.to_string(),
                "inject".into(),
                "--resolver".into(),
                ISP_RESOLVER.to_string(),
            ],
        )?;
    }
    // Each server says when it is ready; a probe must not query a resolver or an injector that
    // is still starting.
    for (name, ready) in [
        ("net-resolver", "started"),
        ("slow-resolver", "relaying"),
        ("isp-resolver", "started"),
        ("isp-proxy", "listening"),
        ("isp-injector", "watching"),
    ] {
        let log = dir.join(format!("{name}.log"));
        if log.exists() {
            wait_for_log(&log, ready, 1, Duration::from_secs(20))?;
        }
    }
    censor::apply(&censor::router_rules(&censored)).context("installing the censor's rules")?;
    censor::apply(&crate::apps::router_rules()).context("installing the censor's app rules")?;
    censor::apply(&crate::quic::router_rules()).context("installing the censor's QUIC rule")?;
    censor::apply(&crate::dnscheck::router_rules()).context("installing the censor's DoT rule")?;

    Ok(())
}

/// The aggregator's process name: its output is `AGGREGATOR_NAME.log` in the run directory,
/// where `serve` prints its key.
const AGGREGATOR_NAME: &str = "aggregator";
/// The detector settings the aggregator runs with, in the run directory.
const DETECT_FILE: &str = "detect.toml";

/// The aggregator, with its test helper and throughput server, in the lab's Internet; returns
/// its database.
fn start_aggregator(plan: &Plan, procs: &mut Procs, ca: &Path) -> Result<PathBuf> {
    let dir = &plan.dir;
    let db = dir.join("aggregator.db");
    let prefixes = dir.join("prefixes.csv");
    std::fs::write(&prefixes, format!("{},AS64500,IR\n", topology::ISP_PREFIX))?;
    let detect = dir.join(DETECT_FILE);
    std::fs::write(&detect, DETECT)?;
    procs.start(
        plan,
        NET,
        AGGREGATOR_NAME,
        &[
            plan.bin("vantage-aggregator"),
            "serve".into(),
            "--db".into(),
            db.display().to_string(),
            "--listen".into(),
            format!("{AGGREGATOR}:8080"),
            "--throughput-listen".into(),
            format!("{AGGREGATOR}:{THROUGHPUT_PORT}"),
            "--prefixes".into(),
            prefixes.display().to_string(),
            "--th-resolver".into(),
            format!("{NET_RESOLVER}:53"),
            "--ca-file".into(),
            ca.display().to_string(),
            "--th-timeout".into(),
            "5".into(),
            "--detect-every".into(),
            "2".into(),
            "--detect-config".into(),
            detect.display().to_string(),
        ],
    )?;
    Ok(db)
}

/// A daemon in each probe's home, measuring connectivity every two seconds; returns their data
/// directories once each has seen its canaries answer.
fn start_daemons(plan: &Plan, procs: &mut Procs) -> Result<Vec<PathBuf>> {
    let dir = &plan.dir;
    let canaries = dir.join("canaries.csv");
    std::fs::write(
        &canaries,
        SITES
            .iter()
            .filter(|s| s.technique == Technique::None)
            .take(2)
            .fold(
                "address,port,protocol,description\n".to_string(),
                |mut t, s| {
                    let port = if s.scheme == "https" { 443 } else { 80 };
                    t.push_str(&format!("{},{port},tcp,{}\n", s.addr(), s.domain));
                    t
                },
            ),
    )?;
    let mut daemon_logs = Vec::new();
    let mut datas = Vec::new();
    for (i, ns) in PROBES.iter().enumerate() {
        let data = dir.join(format!("probe{}", i + 1));
        let config = dir.join(format!("probe{}.toml", i + 1));
        let mut text = daemon_config(&data, &plan.aggregator_url(), &canaries);
        if i == crate::carry::RELAYING {
            text.push_str(&crate::carry::upload_routes(&plan.aggregator_url()));
        }
        std::fs::write(&config, text)?;
        let log = procs.start(
            plan,
            ns,
            &format!("daemon{}", i + 1),
            &[
                plan.bin("vantage"),
                "daemon".into(),
                "--config".into(),
                config.display().to_string(),
            ],
        )?;
        daemon_logs.push(log);
        datas.push(data);
    }
    for log in &daemon_logs {
        wait_for_log(
            log,
            "canary: 2 of 2 targets answered",
            1,
            Duration::from_secs(30),
        )?;
    }
    Ok(datas)
}

/// Thresholds scaled to the lab: heartbeats every 2 s instead of 60, a few measurements of
/// each target instead of a week of them.
const DETECT: &str = "\
[outage]
silence_seconds = 10
min_gap_seconds = 60
burst_seconds = 20
live_seconds = 900
min_probes = 2
settle_seconds = 120

[blocking]
bin_seconds = 60
window_bins = 30
min_measurements = 2
min_category_measurements = 2
min_probes = 2
min_bins = 1
";

fn daemon_config(data: &Path, aggregator: &str, canaries: &Path) -> String {
    format!(
        "informed_consent = true\n\
         data_dir = {data:?}\n\
         [aggregator]\nurl = {aggregator:?}\n\
         [lists]\nfetch = false\n\
         [schedule]\ncanary_seconds = 2\nheartbeat_seconds = 2\nrun_seconds = 0\n\
         upload_seconds = 2\nupload_max_backoff_seconds = 4\n\
         [canary]\ntargets = {canaries:?}\ntimeout_seconds = 1\n"
    )
}

fn test_list() -> String {
    let mut text = vantage_probe::test_lists::HEADER.join(",") + "\n";
    for s in SITES {
        text.push_str(&format!(
            "{},NEWS,News Media,2026-11-29,vantage-lab,\n",
            s.url()
        ));
    }
    text
}

/// Runs `vantage run` (every domain) and `vantage run --test throttling` in each probe's home,
/// both probes at once, and checks their verdicts.
fn measure(
    plan: &Plan,
    procs: &mut Procs,
    datas: &[PathBuf],
    list: &Path,
    ca: &Path,
    report: &mut Report,
) -> Result<()> {
    let t = Instant::now();
    let common = |data: &Path| {
        vec![
            "--aggregator".to_string(),
            plan.aggregator_url(),
            "--data-dir".into(),
            data.display().to_string(),
            "--yes".into(),
            "--json".into(),
        ]
    };
    let mut runs = Vec::new();
    let apps_file = plan.dir.join("apps.toml");
    let ca_pem =
        std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    std::fs::write(&apps_file, crate::apps::apps_file(&ca_pem))?;
    let quic_list = plan.dir.join("quic.csv");
    std::fs::write(&quic_list, crate::quic::test_list())?;
    let resolvers = plan.dir.join("resolvers.toml");
    std::fs::write(&resolvers, crate::dnscheck::resolvers_file())?;
    for (i, (ns, data)) in PROBES.iter().zip(datas).enumerate() {
        for case in crate::apps::CASES {
            let mut args = vec![plan.bin("vantage"), "run".into()];
            args.extend(crate::apps::run_args(case, &apps_file));
            args.extend(common(data));
            args.extend(strings(&[
                "--resolver",
                &format!("{ISP_RESOLVER}:53"),
                "--ca-file",
                &ca.display().to_string(),
                "--timeout",
                "3",
            ]));
            runs.push((format!("{}{}", case.test, i + 1), spawn_output(ns, &args)?));
        }
        let mut args = vec![
            plan.bin("vantage"),
            "run".into(),
            "--test".into(),
            "quic".into(),
            "--list".into(),
            quic_list.display().to_string(),
        ];
        args.extend(common(data));
        args.extend(strings(&[
            "--resolver",
            &format!("{ISP_RESOLVER}:53"),
            "--ca-file",
            &ca.display().to_string(),
            "--timeout",
            "3",
        ]));
        runs.push((format!("quic{}", i + 1), spawn_output(ns, &args)?));
        let mut args = vec![plan.bin("vantage"), "run".into()];
        args.extend(crate::dnscheck::run_args(&resolvers));
        args.extend(common(data));
        args.extend(strings(&[
            "--resolver",
            &format!("{ISP_RESOLVER}:53"),
            "--ca-file",
            &ca.display().to_string(),
            "--timeout",
            "3",
        ]));
        runs.push((format!("dnscheck{}", i + 1), spawn_output(ns, &args)?));
        let mut args = vec![
            plan.bin("vantage"),
            "run".into(),
            "--list".into(),
            list.display().to_string(),
        ];
        args.extend(common(data));
        args.extend(strings(&[
            "--resolver",
            &format!("{ISP_RESOLVER}:53"),
            "--ca-file",
            &ca.display().to_string(),
            "--timeout",
            "5",
        ]));
        runs.push((format!("run{}", i + 1), spawn_output(ns, &args)?));
        let mut args = vec![
            plan.bin("vantage"),
            "run".into(),
            "--test".into(),
            "throttling".into(),
        ];
        args.extend(common(data));
        args.extend(strings(&[
            "--target",
            THROTTLED_SNI,
            "--control-sni",
            CONTROL_SNI,
            // Well beyond the policer's 64 KiB burst, so that the ceiling shows.
            "--payload-bytes",
            "400000",
            "--traffic-budget",
            "3000000",
            "--max-download-secs",
            "10",
        ]));
        runs.push((format!("throttling{}", i + 1), spawn_output(ns, &args)?));
    }
    for (name, child) in runs {
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for {name}"))?;
        std::fs::write(plan.dir.join(format!("{name}.out")), &out.stdout)?;
        std::fs::write(plan.dir.join(format!("{name}.err")), &out.stderr)?;
        if !out.status.success() {
            report.check(
                format!("{name} exits 0"),
                Some(format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            );
            continue;
        }
        let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if name.starts_with("dnscheck") {
            for resolver in crate::dnscheck::names() {
                let v = lines
                    .iter()
                    .find(|v| crate::dnscheck::resolver_of(v) == Some(resolver));
                report.check(
                    format!("{name}: {resolver} (dnscheck)"),
                    v.map_or(Some("no verdict".into()), |v| {
                        crate::dnscheck::differs(resolver, v)
                    }),
                );
            }
        } else if name.starts_with("quic") {
            for host in [crate::quic::BLOCKED_NAME, crate::quic::CONTROL_NAME] {
                let v = lines.iter().find(|v| crate::quic::host_of(v) == Some(host));
                report.check(
                    format!("{name}: {host} (quic)"),
                    v.map_or(Some("no verdict".into()), |v| crate::quic::differs(host, v)),
                );
            }
        } else if let Some(case) = crate::apps::CASES.iter().find(|c| {
            name.strip_prefix(c.test)
                .is_some_and(|n| n.parse::<usize>().is_ok())
        }) {
            let v = lines.iter().find(|v| v["test_name"] == case.test);
            report.check(
                format!("{name}: {} ({})", case.test, case.blocking),
                v.map_or(Some("no verdict".into()), |v| crate::apps::differs(case, v)),
            );
        } else if name.starts_with("run") {
            for s in SITES {
                let v = lines.iter().find(|v| v["input"] == s.url().as_str());
                report.check(
                    format!("{name}: {} ({:?})", s.domain, s.technique),
                    v.map_or(Some("no verdict".into()), |v| verdict_differs(s, v)),
                );
            }
        } else {
            let v = lines.iter().find(|v| v["input"] == THROTTLED_SNI);
            report.check(
                format!("{name}: {THROTTLED_SNI} (SNI policer at {SNI_POLICE_KBPS} kbit/s)"),
                v.map_or(Some("no verdict".into()), throttling_differs),
            );
        }
    }
    crate::hygiene::check_policed_rates(&plan.dir, report);
    procs.check(plan)?;
    eprintln!("lab: measured in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

fn spawn_output(ns: &str, args: &[String]) -> Result<Child> {
    topology::netns_command(ns, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} in {ns}", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_directory_is_emptied_only_when_the_lab_made_it() {
        let base = std::env::temp_dir().join(format!("vantage-lab-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let theirs = base.join("theirs");
        std::fs::create_dir_all(&theirs).expect("mkdir");
        std::fs::write(theirs.join("notes.txt"), "keep me").expect("write");
        let err = fresh_dir(&theirs).expect_err("a foreign directory is refused");
        assert!(err.to_string().contains("not a lab directory"), "{err}");
        assert!(theirs.join("notes.txt").exists(), "nothing was deleted");

        let ours = base.join("ours");
        fresh_dir(&ours).expect("a new directory");
        std::fs::write(ours.join("aggregator.db"), "old run").expect("write");
        fresh_dir(&ours).expect("the lab's own directory");
        assert!(!ours.join("aggregator.db").exists(), "the old run is gone");
        assert!(ours.join(MARKER).exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
