//! `migrate --from LOCATION --to LOCATION`: every measurement (its envelope byte for byte and
//! its newest verdict), heartbeat, probe key and event of one store copied into another, then
//! checked against the source.
//!
//! # How it copies
//! Page by page through the [`Storage`] trait, so any store can be the source or the
//! destination (SQLite to ClickHouse is the move `docs/architecture.md` describes when one
//! machine is not enough; SQLite to SQLite costs nothing and is how the command is tested
//! without a server), and no store is ever held in memory: measurements in id order
//! ([`Storage::rows_page`]) through [`Storage::insert_received`], heartbeats in (key, time) order through
//! [`Storage::record_heartbeats`], keys with their standing through [`Storage::set_key`], and each
//! country's events through [`Storage::replace_events`]. The signals are not copied: both
//! stores derive them from the measurements and heartbeats (SQLite adds them up at insert,
//! ClickHouse groups them at read time), so they are checked instead.
//!
//! Running it again is safe: both stores skip a measurement or heartbeat they already hold,
//! keys and events are set to the source's, and a measurement already copied whose verdict
//! changed since (a `rescore` of the source) gets the source's verdict.
//!
//! # How it checks
//! The destination must answer as the source does: the same number of measurements, each one
//! equal field by field with its envelope byte for byte and received at the same time (one
//! page of the source, then the same ids asked of the destination, [`Storage::rows_of`]); the same heartbeats per country; the
//! same keys and standings; the same events per country; and the same signals
//! ([`Storage::probe_bins`] and who vouches for whom, [`Storage::vouches`]) on every day of
//! every country the data touches. Any difference is named on stderr and the command exits
//! with status 1 (2 is an error that stopped it).
//!
//! Each heartbeat keeps when it reached the source (`StoredHeartbeat::received_at`): one that
//! was in flight counts at its arrival there (docs/detection.md, "When a heartbeat shows a
//! probe connected"), and so it must here, or its probe's signals, and the shutdowns they
//! decide, would differ. Each measurement keeps its route and when it reached the source
//! ([`Storage::received_of`]): an event's timeline says when its evidence arrived and how much
//! of it while the event went on (docs/carry.md), and a copy stamped with the migrate's clock
//! would show a shutdown's evidence arriving after it.
//!
//! What is not copied: enrolment tokens (a destination's operator issues new ones), the
//! detectors' lease, and when each key was first and last seen (the destination's clock).

use std::collections::{BTreeMap, BTreeSet};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vantage_aggregator::detect::format_time;
use vantage_aggregator::store::model::{BIN_SECONDS, Kind, ProbeBin, TimelineQuery, bin_of};
use vantage_aggregator::store::{Location, Row};

use super::*;

/// Bins in a day: the signals are compared a run of days at a time.
const BINS_PER_DAY: i64 = 86_400 / BIN_SECONDS;

/// At most this many consecutive days of one country are compared in one question.
const DAYS_PER_CHECK: i64 = 7;

/// How many differences are named before the rest are only counted.
const SHOWN_DIFFERENCES: usize = 20;

/// The widest time range an event can have: far beyond any real time, and within what both
/// stores' SQL reads as an integer literal (±2^53, exact in a double).
const ALL_TIME: (i64, i64) = (-(1 << 53), 1 << 53);

/// Every kind of event, whose stored set the copy replaces per country.
const KINDS: [Kind; 3] = [Kind::Shutdown, Kind::Blocking, Kind::Throttling];

#[derive(Debug, clap::Args)]
pub(super) struct MigrateArgs {
    /// The store to copy: sqlite:FILE (which must exist) or clickhouse://HOST:PORT/DB.
    #[arg(long, value_name = "LOCATION")]
    from: Location,
    /// The store to copy into, created if missing: sqlite:FILE or clickhouse://HOST:PORT/DB.
    /// Stop every `serve` on it first: its detectors would replace the events being copied.
    #[arg(long, value_name = "LOCATION")]
    to: Location,
    /// Measurements (and heartbeats) per page: each page is read, written and checked at once.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    page: u64,
    /// Only compare the two stores; copy nothing.
    #[arg(long)]
    check_only: bool,
}

/// What the copy found and did.
#[derive(Debug, Default)]
struct Copied {
    measurements: u64,
    new_measurements: u64,
    verdicts_updated: u64,
    heartbeats: u64,
    new_heartbeats: u64,
    keys: usize,
    events: usize,
    /// Countries and the days (since the epoch) of their measurements and heartbeats: where
    /// events and signals are compared.
    days: BTreeMap<String, BTreeSet<i64>>,
}

impl Copied {
    fn touch(&mut self, cc: &str, time: &str) {
        let days = self.days.entry(cc.to_string()).or_default();
        if let Some(bin) = bin_of(time) {
            days.insert(bin.div_euclid(BINS_PER_DAY));
        }
    }
}

/// The differences found, the first [`SHOWN_DIFFERENCES`] of them in words.
#[derive(Debug, Default)]
struct Differences {
    shown: Vec<String>,
    count: usize,
}

impl Differences {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.shown.len() < SHOWN_DIFFERENCES {
            self.shown.push(what);
        }
    }
}

pub(super) fn migrate(args: &MigrateArgs) -> Result<ExitCode> {
    refuse_same(&args.from, &args.to)?;
    if let Location::Sqlite(path) = &args.from
        && !path.is_file()
    {
        bail!(
            "--from {}: no database there (migrate does not create its source)",
            args.from
        );
    }
    let from = args
        .from
        .open()
        .with_context(|| format!("cannot open the source {}", args.from))?;
    let to = args
        .to
        .open()
        .with_context(|| format!("cannot open the destination {}", args.to))?;
    let page = usize::try_from(args.page).unwrap_or(1000);

    let mut copied = Copied::default();
    let total = from
        .measurement_count()
        .with_context(|| format!("counting the measurements of {}", args.from))?;
    if args.check_only {
        survey(from.as_ref(), page, &mut copied)?;
    } else {
        copy(from.as_ref(), to.as_ref(), page, total, &mut copied)?;
    }
    let mut diff = Differences::default();
    check(from.as_ref(), to.as_ref(), page, total, &copied, &mut diff)?;

    let countries = copied.days.len();
    let days: usize = copied.days.values().map(BTreeSet::len).sum();
    let verb = if args.check_only {
        "compared"
    } else {
        "migrated"
    };
    outln!("{verb} {} -> {}", args.from, args.to)?;
    if args.check_only {
        outln!("measurements: {}", copied.measurements)?;
        outln!("heartbeats: {}", copied.heartbeats)?;
    } else {
        outln!(
            "measurements: {} ({} new, {} already there, {} verdicts brought up to date)",
            copied.measurements,
            copied.new_measurements,
            copied.measurements - copied.new_measurements,
            copied.verdicts_updated
        )?;
        outln!(
            "heartbeats: {} ({} new)",
            copied.heartbeats,
            copied.new_heartbeats
        )?;
    }
    outln!("keys: {}", copied.keys)?;
    outln!("events: {}", copied.events)?;
    outln!("signals compared on {days} days of {countries} countries")?;
    if diff.count == 0 {
        outln!(
            "verified: every measurement byte for byte with its arrival; heartbeats per country, keys, events and signals equal"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "error: {} differs from {}: {} difference(s)",
        args.to, args.from, diff.count
    );
    for d in &diff.shown {
        eprintln!("  {d}");
    }
    if diff.count > diff.shown.len() {
        eprintln!("  ... and {} more", diff.count - diff.shown.len());
    }
    Ok(ExitCode::from(1))
}

/// Refuses a copy of a store into itself: the same ClickHouse address, or the same SQLite file
/// under two names (compared once both are resolved, when the destination exists).
fn refuse_same(from: &Location, to: &Location) -> Result<()> {
    let same = match (from, to) {
        (Location::Sqlite(a), Location::Sqlite(b)) => {
            a == b
                || matches!(
                    (std::fs::canonicalize(a), std::fs::canonicalize(b)),
                    (Ok(a), Ok(b)) if a == b
                )
        }
        (Location::ClickHouse(a), Location::ClickHouse(b)) => {
            a.trim_end_matches('/') == b.trim_end_matches('/')
        }
        _ => false,
    };
    if same {
        bail!("--from and --to are the same store ({from}): nothing to migrate");
    }
    Ok(())
}

/// A bar on stderr (drawn only on a terminal) of `total` items.
fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// The verdict columns of a row, which a later `rescore` may change.
fn verdict_of(
    r: &Row,
) -> (
    &Option<String>,
    Option<bool>,
    bool,
    &Option<String>,
    &Option<String>,
) {
    (
        &r.blocking,
        r.accessible,
        r.confirmed,
        &r.rule_set,
        &r.verdict,
    )
}

/// Copies everything from `from` into `to`.
fn copy(
    from: &dyn Storage,
    to: &dyn Storage,
    page: usize,
    total: u64,
    copied: &mut Copied,
) -> Result<()> {
    for (key, state) in from.keys().context("reading the source's keys")? {
        let state = if state == "revoked" {
            KeyState::Revoked
        } else {
            KeyState::Trusted
        };
        to.set_key(&key, state)
            .with_context(|| format!("copying key {key}"))?;
        copied.keys += 1;
    }

    let progress = bar(total, "measurements");
    let mut after: Option<String> = None;
    loop {
        let rows = from
            .rows_page(after.as_deref(), page)
            .context("reading measurements from the source")?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let received = from
            .received_of(&ids)
            .context("reading when the source received its measurements")?;
        let added = to
            .insert_received(&rows, &received)
            .context("writing measurements to the destination")?;
        // Rows the destination already held (a second run): bring their verdicts up to date.
        let old: Vec<&Row> = rows
            .iter()
            .zip(&added)
            .filter(|(_, new)| !**new)
            .map(|(r, _)| r)
            .collect();
        if !old.is_empty() {
            let ids: Vec<&str> = old.iter().map(|r| r.id.as_str()).collect();
            let held: BTreeMap<String, Row> = to
                .rows_of(&ids)
                .context("reading measurements back from the destination")?
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect();
            for r in old {
                if held
                    .get(&r.id)
                    .is_some_and(|h| verdict_of(h) != verdict_of(r))
                {
                    to.update_verdict(r)
                        .with_context(|| format!("updating the verdict of {}", r.id))?;
                    copied.verdicts_updated += 1;
                }
            }
        }
        for r in &rows {
            copied.touch(&r.probe_cc, &r.measured_at);
        }
        let n = rows.len() as u64;
        copied.measurements += n;
        copied.new_measurements += added.iter().filter(|a| **a).count() as u64;
        progress.inc(n);
    }
    progress.finish_and_clear();

    let progress = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    progress.set_message("heartbeats");
    let mut after: Option<(String, String)> = None;
    loop {
        let beats = from
            .heartbeats_page(after.as_ref().map(|(k, s)| (k.as_str(), s.as_str())), page)
            .context("reading heartbeats from the source")?;
        let Some(last) = beats.last() else { break };
        after = Some((last.key.clone(), last.sent_at.clone()));
        copied.new_heartbeats +=
            to.record_heartbeats(&beats)
                .context("writing heartbeats to the destination")? as u64;
        for h in &beats {
            copied.touch(&h.cc, &h.sent_at);
        }
        copied.heartbeats += beats.len() as u64;
        progress.inc(beats.len() as u64);
    }
    progress.finish_and_clear();

    for cc in event_countries(from, copied)? {
        let events = from
            .timeline(&all_events(&cc))
            .with_context(|| format!("reading the events of {cc}"))?;
        if events.is_empty() {
            continue;
        }
        to.replace_events(&cc, ALL_TIME.0, &KINDS, &events)
            .with_context(|| format!("writing the events of {cc}"))?;
        copied.events += events.len();
    }
    Ok(())
}

/// What [`copy`] learns of the source on its way, without copying: for `--check-only`.
fn survey(from: &dyn Storage, page: usize, copied: &mut Copied) -> Result<()> {
    copied.keys = from.keys().context("reading the source's keys")?.len();
    let mut after: Option<String> = None;
    while let Some(last) = {
        let rows = from
            .rows_page(after.as_deref(), page)
            .context("reading measurements from the source")?;
        for r in &rows {
            copied.touch(&r.probe_cc, &r.measured_at);
        }
        copied.measurements += rows.len() as u64;
        rows.last().map(|r| r.id.clone())
    } {
        after = Some(last);
    }
    let mut after: Option<(String, String)> = None;
    while let Some(last) = {
        let beats = from
            .heartbeats_page(after.as_ref().map(|(k, s)| (k.as_str(), s.as_str())), page)
            .context("reading heartbeats from the source")?;
        for h in &beats {
            copied.touch(&h.cc, &h.sent_at);
        }
        copied.heartbeats += beats.len() as u64;
        beats.last().map(|h| (h.key.clone(), h.sent_at.clone()))
    } {
        after = Some(last);
    }
    for cc in event_countries(from, copied)? {
        copied.events += from
            .timeline(&all_events(&cc))
            .with_context(|| format!("reading the events of {cc}"))?
            .len();
    }
    Ok(())
}

/// The countries whose events are copied and compared: those of the data, and those the
/// source lists (events are stored by country in upper case, as the detectors name them).
fn event_countries(from: &dyn Storage, copied: &Copied) -> Result<BTreeSet<String>> {
    let mut ccs: BTreeSet<String> = copied
        .days
        .keys()
        .map(|cc| cc.to_ascii_uppercase())
        .collect();
    for (cc, _, _) in from.countries().context("listing the source's countries")? {
        ccs.insert(cc.to_ascii_uppercase());
    }
    Ok(ccs)
}

fn all_events(cc: &str) -> TimelineQuery {
    TimelineQuery {
        cc: Some(cc.to_string()),
        asn: None,
        since: ALL_TIME.0,
        until: ALL_TIME.1,
        kind: None,
    }
}

/// The fields in which two rows of one id differ.
fn differing_fields(a: &Row, b: &Row) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),*) => { $( if a.$f != b.$f { out.push(stringify!($f)); } )* };
    }
    cmp!(
        envelope,
        source,
        probe_key,
        probe_cc,
        probe_asn,
        test_name,
        input,
        domain,
        measured_at,
        blocking,
        accessible,
        confirmed,
        rule_set,
        verdict,
        network_verified,
        route
    );
    out
}

/// Compares the destination with the source; every difference goes into `diff`.
fn check(
    from: &dyn Storage,
    to: &dyn Storage,
    page: usize,
    total: u64,
    copied: &Copied,
    diff: &mut Differences,
) -> Result<()> {
    let held = to
        .measurement_count()
        .context("counting the destination's measurements")?;
    if held != total {
        diff.add(format!(
            "the source holds {total} measurements, the destination {held}"
        ));
    }

    let progress = bar(total, "checking");
    let mut after: Option<String> = None;
    loop {
        let rows = from
            .rows_page(after.as_deref(), page)
            .context("reading measurements from the source")?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id.clone());
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let copies: BTreeMap<String, Row> = to
            .rows_of(&ids)
            .context("reading measurements from the destination")?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for r in &rows {
            match copies.get(&r.id) {
                None => diff.add(format!("measurement {} is missing", r.id)),
                Some(c) if c != r => diff.add(format!(
                    "measurement {} differs in {}",
                    r.id,
                    differing_fields(r, c).join(", ")
                )),
                Some(_) => {}
            }
        }
        // When each reached its store: what an event's arrival is read from.
        let [a, b] = [from, to].map(|s| s.received_of(&ids));
        let (a, b) = (
            a.context("reading when the source received its measurements")?,
            b.context("reading when the destination received its measurements")?,
        );
        for (id, at) in &a {
            if let Some(here) = b.get(id).filter(|here| *here != at) {
                diff.add(format!(
                    "measurement {id} was received at {} in the source, {} here",
                    format_time(*at),
                    format_time(*here)
                ));
            }
        }
        progress.inc(rows.len() as u64);
    }
    progress.finish_and_clear();

    let source_keys: BTreeMap<String, String> = from
        .keys()
        .context("reading the source's keys")?
        .into_iter()
        .collect();
    let dest_keys: BTreeMap<String, String> = to
        .keys()
        .context("reading the destination's keys")?
        .into_iter()
        .collect();
    for (key, state) in &source_keys {
        match dest_keys.get(key) {
            None => diff.add(format!("key {key} is missing")),
            Some(s) if s != state => diff.add(format!("key {key} is {s}, not {state}")),
            Some(_) => {}
        }
    }
    for key in dest_keys.keys().filter(|k| !source_keys.contains_key(*k)) {
        diff.add(format!("key {key} is not in the source"));
    }

    for cc in copied.days.keys() {
        let [a, b] = [from, to].map(|s| s.heartbeat_count(cc));
        let (a, b) = (
            a.with_context(|| format!("counting the source's heartbeats of {cc}"))?,
            b.with_context(|| format!("counting the destination's heartbeats of {cc}"))?,
        );
        if a != b {
            diff.add(format!("{cc} has {a} heartbeats in the source, {b} here"));
        }
    }

    for cc in event_countries(from, copied)? {
        let q = all_events(&cc);
        let mut a = from
            .timeline(&q)
            .with_context(|| format!("reading the source's events of {cc}"))?;
        let mut b = to
            .timeline(&q)
            .with_context(|| format!("reading the destination's events of {cc}"))?;
        a.sort_by(|x, y| x.id.cmp(&y.id));
        b.sort_by(|x, y| x.id.cmp(&y.id));
        if a != b {
            let ids = |v: &[vantage_aggregator::store::model::Event]| {
                v.iter().map(|e| e.id.clone()).collect::<Vec<_>>().join(",")
            };
            diff.add(format!(
                "the events of {cc} differ: [{}] in the source, [{}] here",
                ids(&a),
                ids(&b)
            ));
        }
    }

    for (cc, days) in &copied.days {
        for (first, last) in runs(days) {
            check_signals(from, to, cc, first, last, diff)?;
        }
    }
    Ok(())
}

/// Consecutive days in runs of at most [`DAYS_PER_CHECK`]: (first, last).
fn runs(days: &BTreeSet<i64>) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &d in days {
        match out.last_mut() {
            Some((first, last)) if *last + 1 == d && d - *first < DAYS_PER_CHECK => *last = d,
            _ => out.push((d, d)),
        }
    }
    out
}

/// The signals of `cc` on days `[first, last]`: every probe key's row of every bin, and for
/// each of them whether a verified contact vouches for the key at the bin's start and end.
fn check_signals(
    from: &dyn Storage,
    to: &dyn Storage,
    cc: &str,
    first: i64,
    last: i64,
    diff: &mut Differences,
) -> Result<()> {
    let (from_bin, to_bin) = (first * BINS_PER_DAY, (last + 1) * BINS_PER_DAY);
    let bins = |s: &dyn Storage| -> Result<Vec<ProbeBin>> {
        let mut v = s
            .probe_bins(cc, None, from_bin, to_bin)
            .with_context(|| format!("reading the signals of {cc}"))?;
        v.sort_by(|a, b| (a.bin, a.asn, &a.key).cmp(&(b.bin, b.asn, &b.key)));
        Ok(v)
    };
    let (a, b) = (bins(from)?, bins(to)?);
    if a != b {
        let first_differing = a
            .iter()
            .zip(&b)
            .find(|(x, y)| x != y)
            .map(|(x, _)| x.bin)
            .or_else(|| a.get(b.len()).or(b.get(a.len())).map(|x| x.bin))
            .unwrap_or(from_bin);
        diff.add(format!(
            "the signals of {cc} differ from bin {first_differing} ({} rows in the source, {} here)",
            a.len(),
            b.len()
        ));
        return Ok(());
    }
    // Contacts of the day before count too: a window reaches back across midnight.
    let vouches = |s: &dyn Storage| {
        s.vouches(cc, None, first - 1, last)
            .with_context(|| format!("reading the verified contacts of {cc}"))
    };
    let (va, vb) = (vouches(from)?, vouches(to)?);
    for p in &a {
        let start = p.bin * BIN_SECONDS;
        for (at, window) in [
            (start, 0),
            (start + BIN_SECONDS - 1, 0),
            (start + BIN_SECONDS - 1, BIN_SECONDS),
            (start + BIN_SECONDS - 1, 86_400),
        ] {
            if va.vouch(&p.key, p.asn, at, window) != vb.vouch(&p.key, p.asn, at, window) {
                diff.add(format!(
                    "{cc}: whether key {} is vouched for in AS{} at bin {} differs",
                    p.key, p.asn, p.bin
                ));
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_grouped_in_runs_of_consecutive_days() {
        let days: BTreeSet<i64> = [1, 2, 3, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18].into();
        assert_eq!(runs(&days), [(1, 3), (5, 5), (10, 16), (17, 18)]);
        assert!(runs(&BTreeSet::new()).is_empty());
    }

    #[test]
    fn the_same_store_is_refused_under_two_spellings() {
        let dir = std::env::temp_dir().join(format!("vantage-migrate-same-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("a.db");
        std::fs::write(&file, b"").expect("file");
        let other = dir.join(".").join("a.db");
        let err = refuse_same(
            &Location::Sqlite(file.clone()),
            &Location::Sqlite(other.clone()),
        )
        .expect_err("one file");
        assert!(err.to_string().contains("the same store"), "{err}");
        let ch = |u: &str| Location::ClickHouse(u.into());
        assert!(refuse_same(&ch("clickhouse://h:1/db"), &ch("clickhouse://h:1/db/")).is_err());
        assert!(refuse_same(&ch("clickhouse://h:1/db"), &ch("clickhouse://h:1/db2")).is_ok());
        assert!(refuse_same(&Location::Sqlite(file), &ch("clickhouse://h:1/db")).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }
}
