//! `vantage run`, and how every measuring command starts and ends: the consent, where the
//! machine is ([`Located`]), the probe's key and store ([`Measuring`], also used by the apps,
//! dnscheck and QUIC commands), the list, the measurements with their progress, the summary,
//! and the upload that follows.

use super::*;

pub(super) fn list_for(args: &RunArgs, dir: &Path) -> Result<Vec<Entry>> {
    let mut choice = ListChoice {
        categories: args.categories.clone(),
        max: args.max,
        ..ListChoice::default()
    };
    match &args.list {
        Some(path) => choice.files.push(path.clone()),
        None => {
            let cc = args.cc.as_deref().unwrap_or("global").to_ascii_lowercase();
            choice.names = vec![cc, "global".to_string()];
        }
    }
    let loaded = choice.load(dir)?;
    for p in &loaded.skipped {
        eprintln!("warning: {p} (skipped)");
    }
    if let Some(name) = loaded.missing.first() {
        bail!(
            "no test list for {:?}: import one with `vantage lists import {name}.csv` or use --list FILE",
            name.to_ascii_uppercase()
        );
    }
    if loaded.entries.is_empty() {
        bail!("nothing to measure: the list is empty or no URL has the chosen categories");
    }
    Ok(loaded.entries)
}

const CONSENT: &str = "\
Vantage measures whether websites and apps are blocked where you are, and records evidence of it.

What it does: it connects to the sites on a test list (news, human rights, social media, ...)
from your connection, as a browser would, and records what happened (DNS answers, connections,
pages). Results are signed with a key kept on this computer.

What is shared: if you upload, the results go to the aggregator you chose and may be published.
Your IP address is never written into a result, but your network (ISP) and country are.

Risks: anyone watching your connection (your ISP, your employer, your government) can see that
you visited these sites, and running a censorship measurement tool may be illegal or dangerous
where you live. OONI's guidance on the risks applies to Vantage too.

Do you understand and want to continue? [y/N] ";

/// Asks for informed consent once per data directory (as OONI does).
fn consent(dir: &Path, yes: bool) -> Result<()> {
    let marker = dir.join("consent");
    if marker.exists() {
        return Ok(());
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "vantage run needs your informed consent: run it once in a terminal, or pass --yes"
            );
        }
        eprint!("{CONSENT}");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            bail!("not measuring: consent was not given");
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&marker, "consent given\n")
        .with_context(|| format!("cannot write {}", marker.display()))
}

/// What a test's run holds once its own plan is made: the aggregator to upload to, the probe's
/// key and store, and the country and network its results carry.
pub(super) struct Measuring {
    aggregator: Option<Url>,
    pub(super) identity: Identity,
    pub(super) store: Store,
    pub(super) located: Located,
}

impl Measuring {
    /// Parses the aggregator and the pinned network (a bad one is refused before the key is
    /// created), asks for consent, opens the key and the store, and locates the probe.
    pub(super) async fn open(
        args: &RunArgs,
        dir: &Path,
        engine: &EngineConfig,
        tls: &TlsContext,
    ) -> Result<Measuring> {
        let aggregator = args.aggregator.as_deref().map(aggregator_url).transpose()?;
        let pinned_cc = args.probe_cc.as_deref().map(str::parse).transpose()?;
        let pinned_asn = args.probe_asn.as_deref().map(str::parse).transpose()?;
        let (identity, store) = start_measuring(dir, args.yes)?;
        let located = locate(
            pinned_cc,
            pinned_asn,
            aggregator.as_ref(),
            args.socks5.is_some(),
            engine,
            tls,
        )
        .await;
        Ok(Measuring {
            aggregator,
            identity,
            store,
            located,
        })
    }

    /// The upload at the end of the run, unless `--no-upload` or no aggregator.
    pub(super) async fn upload(
        mut self,
        args: &RunArgs,
        engine: &EngineConfig,
        tls: &TlsContext,
    ) -> Result<()> {
        if let (Some(url), false) = (self.aggregator, args.no_upload) {
            upload_after_run(url, args.socks5, args.json, &mut self.store, engine, tls).await?;
        }
        Ok(())
    }
}

/// What a measuring run needs once the plan is made: consent (asked once), the probe's key and
/// its store.
pub(super) fn start_measuring(dir: &Path, yes: bool) -> Result<(Identity, Store)> {
    consent(dir, yes)?;
    let key = dir.join("identity.key");
    let (identity, created) = Identity::load_or_create(&key)?;
    if created {
        eprintln!(
            "created this probe's signing key in {} (`vantage id` shows its public half)",
            key.display()
        );
    }
    Ok((identity, open_store(dir)?))
}

/// The tests `vantage run` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TestKind {
    /// DNS, TCP, TLS and HTTP reachability of each URL (OONI's web_connectivity).
    WebConnectivity,
    /// Goodput with a target SNI against a control SNI (IMC 2021's method).
    Throttling,
    /// WhatsApp's endpoints, registration service and web client (OONI's whatsapp).
    Whatsapp,
    /// Telegram's data centres and web client (OONI's telegram).
    Telegram,
    /// Signal's backend, checked against Signal's own CA (OONI's signal).
    Signal,
    /// Facebook Messenger's endpoints, checked against Facebook's network (OONI's
    /// facebook_messenger).
    #[value(name = "facebook_messenger", alias = "facebook-messenger")]
    FacebookMessenger,
    /// Reachability and answers of well-known DoH and DoT resolvers (OONI's dnscheck).
    Dnscheck,
    /// A QUIC handshake beside the TCP/TLS one for each https URL: is QUIC blocked where
    /// TCP works (docs/quic.md)?
    Quic,
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    if args.test == TestKind::Throttling {
        return throttling::run(args).await;
    }
    if let Some(app) = apps::app_of(args.test) {
        return apps::run(args, app).await;
    }
    if args.test == TestKind::Dnscheck {
        return dnscheck::run(args).await;
    }
    if args.test == TestKind::Quic {
        return quic::run(args).await;
    }
    // Plan everything before touching the network.
    let dir = args.data.dir()?;
    let entries = list_for(&args, &dir)?;
    let (engine, resolvers, tls) = args.engine.plan()?;
    let aggregator = args.aggregator.as_deref().map(aggregator_url).transpose()?;
    let pinned_cc: Option<CountryCode> = args.probe_cc.as_deref().map(str::parse).transpose()?;
    let pinned_asn: Option<Asn> = args.probe_asn.as_deref().map(str::parse).transpose()?;
    if args.concurrency == 0 || args.concurrency > 256 {
        bail!("--concurrency must be between 1 and 256");
    }
    let test_helper = aggregator
        .as_ref()
        .map(|a| a.join("api/v1/th"))
        .transpose()?;
    let (identity, mut store) = start_measuring(&dir, args.yes)?;
    let located = locate(
        pinned_cc,
        pinned_asn,
        aggregator.as_ref(),
        args.socks5.is_some(),
        &engine,
        &tls,
    )
    .await;
    let plan = RunPlan {
        entries,
        concurrency: args.concurrency,
        engine: engine.clone(),
        resolvers,
        test_helper,
        probe_cc: located.cc,
        probe_asn: located.asn,
    };

    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(plan.entries.len() as u64);
    if args.json || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(PROGRESS)
            .map(|style| style.with_key("left", time_left))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Redrawn twice a second, so that the time so far and the estimate move while a slow site
    // holds every measurement up, and the bar shows before the first result.
    bar.enable_steady_tick(Duration::from_millis(500));
    let json = args.json;
    // The steps' failures are in the stored measurement: a second connection reads each back.
    let reader = json.then(|| open_store(&dir)).transpose()?;
    let finished = vantage_probe::run::run(&plan, &tls, &identity, &mut store, |done| {
        if json {
            let mut line = serde_json::to_value(&done.verdict).unwrap_or_default();
            line["id"] = done.id.as_str().into();
            line["failures"] = reader
                .as_ref()
                .and_then(|r| stored_test_keys(r, done.id.as_str()))
                .map_or(serde_json::Value::Null, |k| step_failures(&k));
            outln!("{line}");
        }
        bar.set_message(done.verdict.input.clone().unwrap_or_default());
        bar.inc(1);
        std::ops::ControlFlow::Continue(())
    })
    .await?;
    bar.finish_and_clear();
    if !json {
        let tagged = located.describe(args.cc.as_deref());
        print_summary(&finished, started.elapsed(), &dir, &tagged);
    } else if let Some(o) = offline(
        finished
            .iter()
            .map(|f| (f.reach, f.control_failure.as_deref())),
    ) {
        // The JSON lines on stdout stay JSON; the warning goes where a person still sees it.
        eprintln!("warning: {}", offline_line(o));
    }

    if let (Some(url), false) = (aggregator, args.no_upload) {
        upload_after_run(url, args.socks5, json, &mut store, &engine, &tls).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The test keys of the stored result `id`, or `None` when it cannot be read back.
fn stored_test_keys(store: &Store, id: &str) -> Option<serde_json::Value> {
    let found = store.find(id).ok()?.into_iter().find(|r| r.id == id)?;
    let verified = vantage_probe::envelope::verify(&found.envelope).ok()?;
    let mut m: serde_json::Value = serde_json::from_str(verified.measurement).ok()?;
    Some(m["test_keys"].take())
}

/// Each step's failure in a `vantage run --json` line, as OONI's strings (df-007), so that a
/// reader sees where a measurement failed without opening it: `dns` is the
/// `dns_experiment_failure`; `tcp` the failure of the connects and `tls` of the handshakes,
/// when none of them succeeded (an IPv6 address unreachable beside an IPv4 one that answered
/// is no failure of the step); `http` the `http_experiment_failure`. `null` for a step that
/// succeeded or did not run.
fn step_failures(keys: &serde_json::Value) -> serde_json::Value {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    // The first failure of a step's attempts, when none of them succeeded.
    let step = |list: &serde_json::Value,
                failure: &dyn Fn(&serde_json::Value) -> Option<String>| {
        let attempts = list.as_array()?;
        let failures: Vec<Option<String>> = attempts.iter().map(failure).collect();
        if failures.iter().any(Option::is_none) {
            return None;
        }
        failures.into_iter().flatten().next()
    };
    serde_json::json!({
        "dns": text(&keys["dns_experiment_failure"]),
        "tcp": step(&keys["tcp_connect"], &|c| text(&c["status"]["failure"])),
        "tls": step(&keys["tls_handshakes"], &|t| text(&t["failure"])),
        "http": text(&keys["http_experiment_failure"]),
    })
}

/// The upload at the end of `vantage run`; what cannot be sent stays queued.
pub(super) async fn upload_after_run(
    url: Url,
    socks5: Option<SocketAddr>,
    json: bool,
    store: &mut Store,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<()> {
    let mut config = UploadConfig::new(url);
    config.socks5 = socks5;
    let report = upload_outbox(store, &config, engine, tls).await?;
    if !json {
        outln!("{}", upload_summary(&report));
    }
    held_note(&report);
    if let Some(e) = report.error {
        eprintln!("warning: upload stopped: {e}; `vantage upload` will retry");
        return Ok(());
    }
    let dir = store.dir();
    let log = check_log(store, &config, None, &dir, engine, tls).await?;
    log_note(&log, json);
    Ok(())
}

/// Says what a round of checking the transparency log found: a fork or a checkpoint that does
/// not verify loudly on stderr, a summary on stdout (unless `quiet`). True when a human must
/// look (`vantage upload` then exits non-zero).
pub(super) fn log_note(log: &LogReport, quiet: bool) -> bool {
    if let Some(key) = &log.pinned_now {
        eprintln!(
            "note: trusting the aggregator's key {key} on first use (over HTTPS) to check its \
             transparency log, and pinning it; compare it with the key its operator publishes"
        );
    }
    for fork in &log.forks {
        eprintln!("error: {}", fork_message(fork));
    }
    if let Some(failure) = &log.failure {
        eprintln!("error: transparency log: {failure}");
    }
    if let Some(e) = &log.error {
        eprintln!("note: transparency log not checked this time: {e}");
    }
    if !quiet && let Some(c) = &log.checkpoint {
        outln!(
            "Transparency log: {} results proven included now, {} awaiting proof (checkpoint {} \
             of {}).",
            log.proven,
            log.awaiting,
            c.size,
            c.origin
        );
    }
    log.alarming()
}

/// The line every upload prints.
pub(super) fn upload_summary(report: &vantage_probe::upload::UploadReport) -> String {
    let held = if report.held > 0 {
        format!(", {} held", report.held)
    } else {
        String::new()
    };
    format!(
        "Uploaded {} results ({} already there, {} refused{held}); {} waiting.",
        report.accepted, report.duplicate, report.rejected, report.remaining
    )
}

/// What to do about results the aggregator held back.
pub(super) fn held_note(report: &vantage_probe::upload::UploadReport) {
    if report.key_refused {
        eprintln!(
            "note: the aggregator does not accept this probe's key yet; the results are kept and \
             are sent again after `vantage enrol TOKEN` (a token from the aggregator's operator)"
        );
    } else if report.held > 0 {
        eprintln!(
            "note: {} results were held back by the aggregator and are kept; `vantage status` \
             says why, `vantage upload --retry-rejected` sends them again",
            report.held
        );
    }
}

/// The progress bar of `vantage run`: time so far, URLs done, rate and time left (indicatif's
/// template keys; `per_sec:1` is one decimal; `left` is [`time_left`]).
const PROGRESS: &str =
    "{elapsed_precise} {bar:30} {pos}/{len} URLs, {per_sec:1}, {left}  {wide_msg}";

/// indicatif's estimate, except before the first result, when it has nothing to go on and
/// would say "0s".
fn time_left(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = if state.pos() == 0 {
        write!(w, "time left not known yet")
    } else {
        write!(w, "about {:#} left", indicatif::HumanDuration(state.eta()))
    };
}

/// Where a country or network written into results came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// `--probe-cc` / `--probe-asn` (or their environment variables).
    Given,
    /// The aggregator's whoami: the address it saw this connection come from.
    Whoami,
    /// Not known, and why.
    Unknown(String),
}

/// The country and network written into every result of a run, and where each came from.
#[derive(Debug, Clone)]
pub(super) struct Located {
    pub(super) cc: CountryCode,
    pub(super) asn: Asn,
    cc_from: Source,
    asn_from: Source,
}

impl Located {
    /// One line for the summary: which country and network the results carry and why, so
    /// that `ZZ`/`AS0` (OONI's "unknown", df-000) is never a silent default; `list_cc` is
    /// `--cc`, which chooses a list, not the country: when it differs from a country nobody
    /// gave, the line says so.
    pub(super) fn describe(&self, list_cc: Option<&str>) -> String {
        let said = |from: &Source, flag: &str| match from {
            Source::Given => format!("given with {flag}"),
            Source::Whoami => "as the aggregator sees this connection".to_string(),
            Source::Unknown(why) => format!("unknown: {why}"),
        };
        let mut line = if self.cc_from == self.asn_from {
            let flags = "--probe-cc and --probe-asn";
            format!(
                "Results are tagged country {} and network {} ({}).",
                self.cc.as_str(),
                self.asn,
                said(&self.cc_from, flags)
            )
        } else {
            format!(
                "Results are tagged country {} ({}) and network {} ({}).",
                self.cc.as_str(),
                said(&self.cc_from, "--probe-cc"),
                self.asn,
                said(&self.asn_from, "--probe-asn")
            )
        };
        if let Some(cc) = list_cc
            && self.cc_from != Source::Given
            && !cc.eq_ignore_ascii_case(self.cc.as_str())
        {
            let cc = cc.to_ascii_uppercase();
            line.push_str(&format!(
                "\n--cc {cc} chose the test list, not your country: add --probe-cc {cc} if you are \
                 measuring from there."
            ));
        }
        line
    }
}

/// Country and network for measurements: pinned values first, then the aggregator's whoami
/// (not through a proxy, which would locate the proxy), else unknown (`ZZ`, `AS0`).
pub(super) async fn locate(
    cc: Option<CountryCode>,
    asn: Option<Asn>,
    aggregator: Option<&Url>,
    proxied: bool,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Located {
    let mut unknown = String::new();
    let asked = match aggregator {
        _ if cc.is_some() && asn.is_some() => None,
        Some(_) if proxied => {
            eprintln!(
                "note: uploads go through a proxy, so the aggregator cannot tell where you are; \
                 pin --probe-cc and --probe-asn"
            );
            unknown =
                "uploads go through a proxy, which the aggregator would locate instead".to_string();
            None
        }
        Some(url) => match vantage_probe::upload::whoami(url, engine, tls).await {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("note: cannot ask the aggregator where you are ({e}); using unknown");
                unknown = format!("the aggregator could not be asked ({e})");
                None
            }
        },
        None => {
            unknown = "no aggregator was asked where this machine is".to_string();
            None
        }
    };
    let from = |given: bool, found: bool| {
        if given {
            Source::Given
        } else if found {
            Source::Whoami
        } else if unknown.is_empty() {
            Source::Unknown("the aggregator could not place this connection".to_string())
        } else {
            Source::Unknown(unknown.clone())
        }
    };
    let asked_cc = asked
        .as_ref()
        .map(|w| w.probe_cc)
        .filter(|c| *c != CountryCode::UNKNOWN);
    let asked_asn = asked
        .as_ref()
        .map(|w| w.probe_asn)
        .filter(|a| *a != Asn::default());
    Located {
        cc_from: from(cc.is_some(), asked_cc.is_some()),
        asn_from: from(asn.is_some(), asked_asn.is_some()),
        cc: cc.or(asked_cc).unwrap_or(CountryCode::UNKNOWN),
        asn: asn.or(asked_asn).unwrap_or_default(),
    }
}

/// What the summary says when [`offline`] finds no sign of a network: one line, with what to
/// do, instead of a count of undetermined results and advice to add a control.
fn offline_line(o: Offline) -> &'static str {
    match o {
        Offline::HelperUnreachable => {
            "This machine seems to be offline: no lookup succeeded and the test helper could not \
             be reached; check the connection and run again."
        }
        Offline::NoHelper => {
            "This machine seems to be offline: no lookup succeeded and no site or test helper \
             could be reached; check the connection and run again."
        }
    }
}

/// What `vantage run` prints at the end: the counts, whether the machine seems offline, what is
/// blocked, what is throttled, why the rest is undetermined, the country and network the
/// results are `tagged` with, and where they are kept.
fn print_summary(finished: &[Finished], took: Duration, dir: &Path, tagged: &str) {
    for line in summary(finished, took, dir, tagged) {
        outln!("{line}");
    }
}

/// The lines of [`print_summary`]. A throttled page (blocking type
/// [`vantage_probe::verdict::THROTTLING`]) loads, slowly: it is counted and listed apart from
/// the pages a layer refused (docs/scoring.md), never under "blocked".
fn summary(finished: &[Finished], took: Duration, dir: &Path, tagged: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut accessible = 0;
    let mut down = 0;
    let mut blocked = Vec::new();
    let mut throttled = Vec::new();
    // Undetermined results by why, most first: what the control lacked and what failed here.
    let mut unknown: Vec<(&str, usize)> = Vec::new();
    for f in finished {
        match f.verdict.finding() {
            Finding::Throttled => throttled.push(f),
            Finding::Blocked(_) => blocked.push(f),
            Finding::Accessible => accessible += 1,
            Finding::DownForEveryone => down += 1,
            Finding::Undetermined => match unknown.iter_mut().find(|(r, _)| *r == f.reason) {
                Some((_, n)) => *n += 1,
                None => unknown.push((&f.reason, 1)),
            },
        }
    }
    unknown.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    // Throttling is counted only when there is some: the line most runs print stays as it was.
    let throttled_count = match throttled.len() {
        0 => String::new(),
        n => format!("{n} throttled, "),
    };
    lines.push(format!(
        "Measured {} URLs in {:.1} s: {} blocked, {throttled_count}{} accessible, {} down for \
         everyone, {} undetermined.",
        finished.len(),
        took.as_secs_f64(),
        blocked.len(),
        accessible,
        down,
        unknown.iter().map(|(_, n)| n).sum::<usize>()
    ));
    let offline = offline(
        finished
            .iter()
            .map(|f| (f.reach, f.control_failure.as_deref())),
    );
    if let Some(o) = offline {
        lines.push(offline_line(o).to_string());
    }
    if !blocked.is_empty() {
        lines.push("Blocked:".into());
        blocked.sort_by(|a, b| a.verdict.input.cmp(&b.verdict.input));
        for f in blocked {
            let how = f.verdict.blocking.as_ref().and_then(layer).unwrap_or("?");
            let confirmed = if f.verdict.confirmed {
                format!(
                    ", confirmed blockpage ({})",
                    f.verdict.fingerprints.join(", ")
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "  {}  {how}{confirmed}",
                f.verdict.input.as_deref().unwrap_or("?")
            ));
        }
    }
    if !throttled.is_empty() {
        lines.push("Throttled (the page loads, held to a low rate):".into());
        throttled.sort_by(|a, b| a.verdict.input.cmp(&b.verdict.input));
        for f in throttled {
            lines.push(format!("  {}", f.verdict.input.as_deref().unwrap_or("?")));
        }
    }
    // Offline, every reason is the same missing network: the line above says it.
    if !unknown.is_empty() && offline.is_none() {
        lines.push("Undetermined, and why:".into());
        for (why, n) in &unknown {
            lines.push(format!("  {n}  {why}"));
        }
        if unknown
            .iter()
            .any(|(why, _)| why.starts_with("no control: no test helper"))
        {
            lines.push(
                "A control measurement decides them: use --aggregator URL to get one.".into(),
            );
        }
    }
    lines.push(tagged.to_string());
    lines.push(format!("Results are stored in {}.", dir.display()));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located(cc: &str, asn: &str, cc_from: Source, asn_from: Source) -> Located {
        Located {
            cc: cc.parse().expect("cc"),
            asn: asn.parse().expect("asn"),
            cc_from,
            asn_from,
        }
    }

    #[test]
    fn the_country_line_says_where_each_value_came_from() {
        let none = || Source::Unknown("no aggregator was asked where this machine is".into());
        assert_eq!(
            located("ZZ", "AS0", none(), none()).describe(Some("ir")),
            "Results are tagged country ZZ and network AS0 (unknown: no aggregator was asked \
             where this machine is).\n--cc IR chose the test list, not your country: add \
             --probe-cc IR if you are measuring from there."
        );
        // The list's country is the recorded one: nothing to explain.
        assert_eq!(
            located("IR", "AS12880", Source::Whoami, Source::Whoami).describe(Some("IR")),
            "Results are tagged country IR and network AS12880 (as the aggregator sees this \
             connection)."
        );
        // A country given differs from the list on purpose: no advice.
        assert_eq!(
            located("DE", "AS0", Source::Given, none()).describe(Some("IR")),
            "Results are tagged country DE (given with --probe-cc) and network AS0 (unknown: no \
             aggregator was asked where this machine is)."
        );
        assert_eq!(
            located("IR", "AS1", Source::Given, Source::Given).describe(None),
            "Results are tagged country IR and network AS1 (given with --probe-cc and \
             --probe-asn)."
        );
    }

    /// A finished measurement of `url` with the verdict `blocking`/`accessible`.
    fn finished(url: &str, blocking: Option<Blocking>, accessible: Option<bool>) -> Finished {
        use vantage_probe::verdict::{InputVerdict, Verdict, rules};
        Finished {
            id: vantage_probe::envelope::MeasurementId::of(url.as_bytes()),
            verdict: Verdict {
                input: Some(url.into()),
                probe_cc: "ZZ".into(),
                blocking,
                accessible,
                dns_consistency: None,
                confirmed: false,
                fingerprints: vec![],
                rule: "test".into(),
                rule_set: rules::VANTAGE.version,
                ooni_rules_blocking: None,
                control_failure: None,
                input_verdict: InputVerdict {
                    blocking: None,
                    accessible: None,
                    dns_consistency: None,
                },
                goodput: None,
            },
            bytes: 0,
            reach: vantage_probe::run::Reach {
                looked_up: true,
                resolved: true,
                connected: true,
            },
            control_failure: None,
            reason: "test".into(),
        }
    }

    #[test]
    fn a_throttled_page_is_counted_and_listed_apart_from_the_blocked_ones() {
        let kind = |k: &str| Some(Blocking::Kind(k.into()));
        let done = [
            finished("https://slow.example/", kind("throttling"), Some(true)),
            finished("https://dns.example/", kind("dns"), Some(false)),
            finished(
                "https://ok.example/",
                Some(Blocking::Flag(false)),
                Some(true),
            ),
        ];
        let lines = summary(
            &done,
            Duration::from_millis(1500),
            Path::new("/data"),
            "Results are tagged country ZZ.",
        );
        assert_eq!(
            lines,
            [
                "Measured 3 URLs in 1.5 s: 1 blocked, 1 throttled, 1 accessible, 0 down for \
                 everyone, 0 undetermined.",
                "Blocked:",
                "  https://dns.example/  DNS",
                "Throttled (the page loads, held to a low rate):",
                "  https://slow.example/",
                "Results are tagged country ZZ.",
                "Results are stored in /data.",
            ]
        );
        // Without a throttled page the line is the one users know.
        let lines = summary(&done[1..], Duration::ZERO, Path::new("/data"), "");
        assert_eq!(
            lines[0],
            "Measured 2 URLs in 0.0 s: 1 blocked, 1 accessible, 0 down for everyone, 0 \
             undetermined."
        );
        assert!(
            !lines.iter().any(|l| l.starts_with("Throttled")),
            "{lines:?}"
        );
        assert_eq!(verdict_word(&done[0].verdict), "throttled");
        assert_eq!(verdict_word(&done[1].verdict), "blocked");
    }
}
