//! The web page at `/` in real headless Chromium, over three databases a person may meet:
//! an empty one (a fresh aggregator), a sparse one (two probes that do not know their country,
//! heard for six hours of a week, with a handful of anomalies) and a rich one (a simulated fleet
//! with a full shutdown and a category block). The aggregator serves each on loopback; the
//! tests read the DOM Chromium rendered (`--dump-dom`) for what a user sees, open shared links
//! (a URL with the view in it), drive back and forward through a same-origin frame, and save a
//! screenshot of each view under `target/web/`, printing the paths.
//!
//! Chromium comes from Debian's `chromium` package, installed by `tests/web/install-chromium.sh`
//! (which `tests/run.sh` calls). Without it these tests fail and say how to install it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vantage_aggregator::api::geo::Geo;
use vantage_aggregator::api::server::{AppState, router};
use vantage_aggregator::detect::blocking::Layer;
use vantage_aggregator::detect::{DetectConfig, Event, Kind, Scope, TimelineQuery};
use vantage_aggregator::ingest::IngestConfig;
use vantage_aggregator::store::{Sqlite, Storage};
use vantage_aggregator::{detect::signals::SignalQuery, store::model::BIN_SECONDS};
use vantage_eval::score::EPOCH;
use vantage_eval::sim::{Noise, Scenario, Templates, Truth, simulate};
use vantage_eval::truth::Reach;
use vantage_probe::engine::TlsContext;
use vantage_probe::th::HelperConfig;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the screenshots go: kept after the test, for a person to look at.
fn output_dir() -> PathBuf {
    let dir = workspace().join("target/web");
    std::fs::create_dir_all(&dir).expect("target/web");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// A scratch directory of one test (its database and Chromium profile).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `cmd`, killing it after `limit`; returns stdout.
fn run_with_limit(mut cmd: Command, limit: Duration) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if started.elapsed() > limit {
            child.kill().ok();
            child.wait().ok();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().expect("reader")
}

fn chromium(profile: &Path) -> Command {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromium"))
            .find(|p| p.is_file())
    });
    let Some(bin) = found else {
        panic!(
            "chromium is not installed: run `bash tests/web/install-chromium.sh` as root \
             (tests/run.sh does), or `apt-get install chromium`"
        );
    };
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

/// A page that opens the aggregator's page in a frame of the same origin and drives it as a
/// person would (follow a country link, click an event, back, back, forward), writing what the
/// frame showed after each step into `#log`, which `--dump-dom` then prints. Test-only: the
/// aggregator never serves it.
const HARNESS: &str = r#"<!doctype html><meta charset="utf-8"><title>harness</title>
<iframe id="f" style="width:1200px;height:900px"></iframe><pre id="log"></pre>
<script>
'use strict';
const f = document.getElementById('f');
const log = (line) => { document.getElementById('log').textContent += line + '\n'; };
const doc = () => f.contentDocument;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Waits until the frame's page says it is ready and `pred` holds.
async function until(what, pred) {
  for (let i = 0; i < 200; i++) {
    try { if (doc() && doc().body && doc().body.dataset.ready === '1' && pred()) return; } catch (_) {}
    await sleep(50);
  }
  throw new Error('timed out waiting for ' + what);
}
const where = () => f.contentWindow.location.search;
const seen = () => {
  const d = doc();
  const sel = d.querySelector('tbody tr.selected');
  return `url=${where()} landing=${!d.getElementById('landing').hidden} country=${!d.getElementById('country-view').hidden}` +
    ` selected=${sel ? sel.dataset.eventId : '-'} status=${d.getElementById('status').textContent}`;
};
(async () => {
  try {
    const params = new URLSearchParams(location.search);
    f.src = '/?since=' + params.get('since') + '&until=' + params.get('until');
    await until('landing', () => !doc().getElementById('landing').hidden && doc().querySelector('#landing a[data-cc]'));
    log('1 ' + seen());
    doc().querySelector('#landing a[data-cc="' + params.get('cc') + '"]').click();
    await until('country', () => !doc().getElementById('country-view').hidden);
    log('2 ' + seen());
    doc().querySelector('tbody tr[data-event-id="' + params.get('event') + '"]').click();
    await until('selection', () => doc().querySelector('tbody tr.selected'));
    log('3 ' + seen());
    f.contentWindow.history.back();
    await until('back to no selection', () => !where().includes('event=') && !doc().querySelector('tbody tr.selected'));
    log('4 ' + seen());
    f.contentWindow.history.back();
    await until('back to landing', () => !doc().getElementById('landing').hidden);
    log('5 ' + seen());
    f.contentWindow.history.forward();
    await until('forward to country', () => !doc().getElementById('country-view').hidden);
    log('6 ' + seen());
  } catch (e) {
    log('error ' + e.message);
  }
  document.body.dataset.done = '1';
})();
</script>"#;

/// The aggregator's router on loopback over the database at `db`, plus the test's harness.
struct Served {
    _runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    storage: Arc<Sqlite>,
    profile: PathBuf,
}

fn serve(db: &Path, dir: &Path) -> Served {
    let storage = Arc::new(Sqlite::open(db).expect("db"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState::new(
        HelperConfig::default(),
        TlsContext::new(Vec::new()).expect("tls"),
        storage.clone(),
        IngestConfig::default(),
        Geo::Unknown,
    );
    let app = router(state).route(
        "/harness",
        axum::routing::get(|| async { axum::response::Html(HARNESS) }),
    );
    runtime.spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Served {
        _runtime: runtime,
        addr,
        storage,
        profile: dir.join("profile"),
    }
}

impl Served {
    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// The DOM Chromium rendered for `path_and_query`, without its scripts: the page's own
    /// code holds many of the strings the tests look for, and must not satisfy them.
    fn raw_dom(&self, path_and_query: &str) -> String {
        let mut dump = chromium(&self.profile);
        dump.arg("--dump-dom").arg(self.url(path_and_query));
        let mut dom = run_with_limit(dump, Duration::from_secs(90));
        while let Some(start) = dom.find("<script>") {
            let end = dom[start..]
                .find("</script>")
                .map_or(dom.len(), |e| start + e + "</script>".len());
            dom.replace_range(start..end, "");
        }
        dom
    }

    /// The DOM after the page has loaded and rendered `path_and_query`.
    fn dom(&self, path_and_query: &str) -> String {
        let dom = self.raw_dom(path_and_query);
        assert!(
            dom.contains("data-ready=\"1\""),
            "page never finished: {dom}"
        );
        dom
    }

    /// A screenshot of `path_and_query`, saved as `target/web/<name>.png`; prints its path.
    fn screenshot(&self, path_and_query: &str, name: &str, height: u32) -> PathBuf {
        let shot = output_dir().join(format!("{name}.png"));
        let _ = std::fs::remove_file(&shot);
        let mut cmd = chromium(&self.profile);
        cmd.arg(format!("--window-size=1280,{height}"))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(self.url(path_and_query));
        run_with_limit(cmd, Duration::from_secs(90));
        let png = std::fs::read(&shot).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        assert!(
            png.len() > 20_000,
            "screenshot suspiciously small: {}",
            png.len()
        );
        eprintln!("screenshot: {}", shot.display());
        shot
    }
}

/// The opening tag of the element whose opening tag contains `needle`.
fn tag<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in {dom}"));
    let start = dom[..=at].rfind('<').expect("tag start");
    let end = at + dom[at..].find('>').expect("tag end");
    &dom[start..=end]
}

/// Every opening tag containing `needle`.
fn tags<'a>(dom: &'a str, needle: &'a str) -> Vec<&'a str> {
    dom.match_indices(needle)
        .map(|(at, _)| {
            let start = dom[..=at].rfind('<').expect("tag start");
            let end = at + dom[at..].find('>').expect("tag end");
            &dom[start..=end]
        })
        .collect()
}

/// The value of attribute `name` in the opening tag `tag`.
fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=\"");
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let end = at + tag[at..].find('"').expect("attribute end");
    &tag[at..end]
}

fn is_hidden(dom: &str, id: &str) -> bool {
    let t = tag(dom, &format!("id=\"{id}\""));
    t.contains(" hidden") || t.contains(" hidden=")
}

fn templates() -> Templates {
    Templates::read(&workspace().join("tests/data/ooni/webconnectivity"))
        .expect("OONI templates in tests/data")
}

fn quiet() -> Noise {
    Noise {
        flaps_per_day: 0.0,
        reboots_per_day: 0.0,
        laptop_share: 0.0,
        stray_anomalies: 0.0,
        mover: false,
        ..Noise::default()
    }
}

#[test]
fn an_empty_database_shows_that_nothing_has_arrived_not_zero() {
    let dir = scratch("empty");
    let db = dir.join("empty.db");
    drop(Sqlite::open(&db).expect("fresh db"));
    let served = serve(&db, &dir);

    // The landing view: no country, nothing to list, and it says why.
    let dom = served.dom("/");
    assert!(
        dom.contains("No measurements yet: no probe has uploaded anything to this aggregator."),
        "landing status: {dom}"
    );
    assert!(!is_hidden(&dom, "landing"), "landing not shown");
    assert!(is_hidden(&dom, "country-view"), "country view shown");
    assert!(
        is_hidden(&dom, "quiet-box"),
        "an empty list of quiet countries"
    );
    served.screenshot("/", "empty-landing", 600);

    // A shared link to a country nobody measured: the whole range is "no data", no line at 0.
    let link = "/?cc=IR&since=2026-01-05&until=2026-01-12";
    let dom = served.dom(link);
    assert!(
        dom.contains("0 events in Iran (IR), 2026-01-05 to 2026-01-12"),
        "status: {dom}"
    );
    assert!(dom.contains("IR — Iran (no data)"), "picker: {dom}");
    let gaps = tags(&dom, "class=\"no-data\"");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (attr(gaps[0], "data-from"), attr(gaps[0], "data-to")),
        ("2026-01-05 00:00", "2026-01-12 00:00")
    );
    assert!(!dom.contains("probes-run"), "a probes line with no data");
    assert!(!dom.contains("anomaly-point"), "an anomaly with no data");
    served.screenshot(link, "empty-country", 1000);

    // Links a person may mistype or tamper with. Garbage falls back to the landing view and
    // the default range, with nothing of it shown back as markup.
    let dom = served.dom(
        "/?cc=%3Cb%3Ex%3C/b%3E&since=2026-02-30&until=yesterday&asn=foo&kind=bad&event=..%2F..",
    );
    assert!(!is_hidden(&dom, "landing"), "garbage cc: not the landing");
    assert!(!dom.contains("<b>x</b>"), "the cc was inserted as markup");
    assert!(
        !tag(&dom, "id=\"status\"").contains("error"),
        "an error for a link that only has bad parts: {dom}"
    );
    // A reversed range says what is wrong instead of asking the API.
    let dom = served.dom("/?cc=IR&since=2026-01-07&until=2026-01-05");
    assert!(
        dom.contains("“Since” must be before “until”."),
        "reversed range: {dom}"
    );
    assert!(tag(&dom, "id=\"status\"").contains("class=\"error\""));
    // An event that is not in the view is named, not silently dropped.
    let dom = served.dom("/?cc=IR&since=2026-01-05&until=2026-01-07&event=0123abcd");
    assert!(
        dom.contains("Event 0123abcd is not in this range or country."),
        "missing event: {dom}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_sparse_database_shows_gaps_points_and_explains_zz() {
    let dir = scratch("sparse");
    let db = dir.join("sparse.db");
    // Two probes that have not learned their country (ZZ), heard for six hours on Jan 7
    // only; NEWS is blocked by DNS for the last four, so a few list runs find anomalies.
    let from = EPOCH + 2 * 86_400 + 8 * 3600;
    let scenario = Scenario {
        cc: "ZZ".into(),
        networks: vec![(64510, 2)],
        from,
        to: from + 6 * 3600,
        truth: vec![Truth::Block {
            asn: 64510,
            category: "NEWS".into(),
            layer: Layer::Dns,
            start: from + 2 * 3600,
            end: from + 6 * 3600,
        }],
        noise: quiet(),
        seed: 11,
        attackers: 0,
    };
    simulate(
        &scenario,
        &templates(),
        &DetectConfig::default(),
        3600,
        &db,
        true,
    )
    .expect("simulation");
    let served = serve(&db, &dir);
    let (since, until) = (EPOCH, EPOCH + 7 * 86_400);

    // The anomalous (half-hour bucket, layer) pairs the page should draw as points: a week is
    // drawn in half-hour buckets (at most 600 over the width).
    let bins = vantage_aggregator::detect::signals::query(
        &*served.storage,
        &SignalQuery {
            cc: "ZZ".into(),
            asn: None,
            from_bin: since / BIN_SECONDS,
            to_bin: until / BIN_SECONDS,
        },
        Default::default(),
    )
    .expect("signals");
    assert!(!bins.is_empty(), "the simulation left no signals");
    let mut expected = BTreeSet::new();
    for b in &bins {
        let at = vantage_aggregator::store::model::parse_time(&b.start).expect("bin start");
        if let Some(r) = &b.anomaly_ratio {
            for (layer, v) in [
                ("dns", r.dns),
                ("tcp", r.tcp),
                ("tls", r.tls),
                ("http", r.http),
            ] {
                if v > 0.0 {
                    expected.insert((at - at.rem_euclid(1800), layer));
                }
            }
        }
    }
    assert!(
        (1..=12).contains(&expected.len()),
        "not a sparse handful of anomalies: {expected:?}"
    );

    let link = "/?cc=ZZ&since=2026-01-05&until=2026-01-12";
    let dom = served.dom(link);
    // The name beside the code, and ZZ explained.
    assert!(
        dom.contains("in the unknown country (ZZ), 2026-01-05 to 2026-01-12"),
        "status: {dom}"
    );
    assert!(!is_hidden(&dom, "zz-note"), "ZZ not explained: {dom}");
    assert!(
        dom.contains("is the unknown country: probes that have not yet learned where"),
        "explanation: {dom}"
    );
    // Days without data are gaps, hatched, before and after the six hours.
    let gaps = tags(&dom, "class=\"no-data\"");
    let spans: Vec<(&str, &str)> = gaps
        .iter()
        .map(|t| (attr(t, "data-from"), attr(t, "data-to")))
        .collect();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0].0, "2026-01-05 00:00");
    assert!(spans[0].1.starts_with("2026-01-07 0"), "{spans:?}");
    assert!(spans[1].0.starts_with("2026-01-07 1"), "{spans:?}");
    assert_eq!(spans[1].1, "2026-01-12 00:00");
    // The probes line covers only the hours with data, and never drops to 0 (no probe was cut off).
    let runs = tags(&dom, "class=\"probes-run\"");
    assert!(!runs.is_empty(), "no probes line: {dom}");
    for run in &runs {
        assert!(attr(run, "data-from") >= spans[0].1, "{run}");
        assert!(attr(run, "data-to") <= spans[1].0, "{run}");
        assert_ne!(attr(run, "data-min"), "0", "probes drawn as 0: {run}");
    }
    // Each anomalous bucket is a point of its layer's colour.
    let points: BTreeSet<(String, String)> = tags(&dom, "class=\"anomaly-point ")
        .iter()
        .map(|t| {
            let layer = attr(t, "class").trim_start_matches("anomaly-point layer-");
            (attr(t, "data-t").to_string(), layer.to_string())
        })
        .collect();
    let want: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(t, l)| {
            let t = vantage_aggregator::detect::format_time(*t);
            (t[..16].to_string(), l.to_string())
        })
        .collect();
    assert_eq!(points, want, "anomaly points");
    served.screenshot(link, "sparse-zz", 800);

    // The landing view lists ZZ (with or without events) and explains it there too.
    let dom = served.dom("/?since=2026-01-05&until=2026-01-12");
    assert!(
        dom.contains("ZZ — unknown country"),
        "ZZ not listed on the landing view: {dom}"
    );
    assert!(!is_hidden(&dom, "zz-note"), "ZZ not explained on landing");
    served.screenshot("/?since=2026-01-05&until=2026-01-12", "sparse-landing", 600);
    std::fs::remove_dir_all(&dir).ok();
}

/// The rich database: a day and a half of two networks of six probes in Iran, NEWS blocked by
/// DNS in one network from 14:00, and then the whole country cut off for three hours the next
/// morning. Returns the stored shutdown and block.
fn rich(db: &Path) -> (Event, Event) {
    let day2 = EPOCH + 86_400;
    let scenario = Scenario {
        cc: "IR".into(),
        networks: vec![(64500, 6), (64501, 6)],
        from: EPOCH,
        to: day2 + 16 * 3600,
        truth: vec![
            Truth::Block {
                asn: 64500,
                category: "NEWS".into(),
                layer: Layer::Dns,
                start: EPOCH + 14 * 3600,
                end: day2 + 10 * 3600,
            },
            Truth::Shutdown {
                asns: vec![64500, 64501],
                reach: Reach::Country,
                start: day2 + 4 * 3600,
                end: day2 + 7 * 3600,
            },
        ],
        noise: quiet(),
        seed: 7,
        attackers: 0,
    };
    simulate(
        &scenario,
        &templates(),
        &DetectConfig::default(),
        6 * 3600,
        db,
        true,
    )
    .expect("simulation");

    // What the detectors stored: the page must show exactly these.
    let storage = Sqlite::open(db).expect("db");
    let events = storage
        .timeline(&TimelineQuery {
            cc: Some("IR".into()),
            since: EPOCH,
            until: day2 + 86_400,
            ..Default::default()
        })
        .expect("timeline");
    assert_eq!(events.len(), 2, "{events:#?}");
    let shutdown = events
        .iter()
        .find(|e| e.kind == Kind::Shutdown)
        .unwrap_or_else(|| panic!("no shutdown in {events:#?}"))
        .clone();
    let block = events
        .iter()
        .find(|e| e.kind == Kind::Blocking)
        .unwrap_or_else(|| panic!("no block in {events:#?}"))
        .clone();
    assert_eq!(shutdown.scope, Scope::Full);
    assert!(!shutdown.suspected && !shutdown.evidence.is_empty());
    assert_eq!(
        (block.category.as_deref(), block.layer),
        (Some("NEWS"), Some(Layer::Dns))
    );
    (shutdown, block)
}

#[test]
fn a_rich_database_lists_iran_and_a_shared_link_opens_the_same_view() {
    let dir = scratch("rich");
    let db = dir.join("rich.db");
    let (shutdown, block) = rich(&db);
    let served = serve(&db, &dir);

    // The landing view: Iran, by name, with its two events, linking to its view.
    let landing = "/?since=2026-01-05&until=2026-01-07";
    let dom = served.dom(landing);
    assert!(!is_hidden(&dom, "landing"), "landing not shown");
    assert!(
        dom.contains("1 country with events from 2026-01-05 to 2026-01-07: 2 events"),
        "landing status: {dom}"
    );
    let row = tag(&dom, "<tr data-cc=\"IR\"");
    assert_eq!(row, "<tr data-cc=\"IR\">");
    let link = tag(&dom, "<a href=\"http");
    assert!(
        attr(link, "href").ends_with("/?cc=IR&amp;since=2026-01-05&amp;until=2026-01-07"),
        "{link}"
    );
    assert!(
        dom.contains(">IR — Iran</a>"),
        "name beside the code: {dom}"
    );
    assert!(is_hidden(&dom, "zz-note"), "ZZ explained with no ZZ listed");
    served.screenshot(landing, "rich-landing", 600);

    // A shared link: country, range and the selected shutdown, as another person would open it.
    let shared = format!(
        "/?cc=IR&since=2026-01-05&until=2026-01-07&event={}",
        shutdown.id
    );
    let dom = served.dom(&shared);
    assert!(
        is_hidden(&dom, "landing"),
        "landing shown for a country link"
    );
    assert!(
        dom.contains("2 events in Iran (IR), 2026-01-05 to 2026-01-07"),
        "status line missing: {dom}"
    );
    assert!(dom.contains("<title>IR — Iran — Vantage</title>"), "title");
    for e in [&shutdown, &block] {
        let bar = format!("data-event-id=\"{}\"", e.id);
        assert!(
            dom.contains(&format!("<tr data-event-id=\"{}\"", e.id)),
            "no table row for {}",
            e.id
        );
        assert!(
            dom.matches(&bar).count() >= 2,
            "no chart bar for {}: {dom}",
            e.id
        );
    }
    assert_eq!(
        tag(&dom, &format!("<tr data-event-id=\"{}\"", shutdown.id)),
        format!("<tr data-event-id=\"{}\" class=\"selected\">", shutdown.id),
        "the linked event is not the selected one"
    );
    assert!(dom.contains("<dt>Country</dt><dd>IR — Iran</dd>"), "{dom}");
    // How its evidence arrived: the fleet uploaded it, after the shutdown had ended.
    let arrived = tag_text(&dom, "<dt>Evidence arrived</dt><dd>");
    assert!(
        arrived.starts_with(&format!("{} by upload (", shutdown.evidence.len()))
            && !arrived.contains("while the shutdown went on"),
        "{arrived}"
    );
    assert!(dom.contains("news1.example"), "block targets missing");
    // The selected shutdown's evidence: its failed canaries, each a link to the envelope.
    for id in shutdown.evidence.iter().take(3) {
        assert!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "evidence {id} not listed"
        );
    }
    // The shutdown is a real zero (probes heard, none online); after the fleet's last upload
    // (Jan 6, 16:00) there is no data, drawn as a gap, not as zero.
    let runs = tags(&dom, "class=\"probes-run\"");
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(attr(runs[0], "data-min"), "0", "the shutdown is not at 0");
    let gaps: Vec<(&str, &str)> = tags(&dom, "class=\"no-data\"")
        .iter()
        .map(|t| (attr(t, "data-from"), attr(t, "data-to")))
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].0.starts_with("2026-01-06 16:0"), "{gaps:?}");
    assert_eq!(gaps[0].1, "2026-01-07 00:00");
    assert!(
        dom.contains("anomaly-point layer-dns"),
        "the block's DNS anomalies are not drawn"
    );
    served.screenshot(&shared, "rich-shutdown", 1100);

    // Back and forward: landing -> Iran -> the shutdown, then back twice and forward once.
    let dom = served.raw_dom(&format!(
        "/harness?since=2026-01-05&until=2026-01-07&cc=IR&event={}",
        shutdown.id
    ));
    let log = dom
        .split("<pre id=\"log\">")
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no log: {dom}"));
    assert!(
        dom.contains("data-done=\"1\""),
        "the harness did not finish: {log}"
    );
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 6, "the harness stopped early: {log}");
    let range = "since=2026-01-05&amp;until=2026-01-07";
    let country = format!("url=?cc=IR&amp;{range} landing=false country=true selected=-");
    let selected = format!(
        "url=?cc=IR&amp;{range}&amp;event={0} landing=false country=true selected={0}",
        shutdown.id
    );
    let landing_seen = format!("url=?{range} landing=true country=false selected=-");
    assert!(lines[0].starts_with(&format!("1 {landing_seen}")), "{log}");
    assert!(lines[1].starts_with(&format!("2 {country}")), "{log}");
    assert!(lines[2].starts_with(&format!("3 {selected}")), "{log}");
    assert!(lines[3].starts_with(&format!("4 {country}")), "{log}");
    assert!(lines[4].starts_with(&format!("5 {landing_seen}")), "{log}");
    assert!(lines[5].starts_with(&format!("6 {country}")), "{log}");
    assert!(lines[5].contains("2 events in Iran (IR)"), "{log}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The text right after `open` in `dom`, up to the next tag.
fn tag_text<'a>(dom: &'a str, open: &str) -> &'a str {
    let start = dom.find(open).map_or(dom.len(), |i| i + open.len());
    let rest = &dom[start..];
    &rest[..rest.find('<').unwrap_or(rest.len())]
}
