//! The web page at `/` in real headless Chromium (issue 6, step 5): a simulated fleet seeds a
//! database with a full shutdown and a category block, the aggregator serves it on loopback,
//! and the test reads what Chromium rendered and saves a screenshot to
//! `target/web/timeline.png`.
//!
//! Chromium comes from Debian's `chromium` package, installed by `tests/web/install-chromium.sh`
//! (which `tests/run.sh` calls). Without it this test fails and says how to install it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vantage_aggregator::blocking::Layer;
use vantage_aggregator::db::{Sqlite, Storage};
use vantage_aggregator::events::{DetectConfig, Kind, Scope, TimelineQuery};
use vantage_aggregator::geo::Geo;
use vantage_aggregator::ingest::IngestConfig;
use vantage_aggregator::server::{AppState, router};
use vantage_eval::score::EPOCH;
use vantage_eval::sim::{Noise, Scenario, Templates, Truth, simulate};
use vantage_eval::truth::Reach;
use vantage_probe::engine::TlsContext;
use vantage_probe::th::HelperConfig;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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

#[test]
fn the_page_shows_the_seeded_shutdown_and_block_with_their_evidence() {
    let dir = std::env::temp_dir().join(format!("vantage-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db_path = dir.join("timeline.db");

    // A day and a half of two networks of six probes: NEWS blocked by DNS in one network
    // from 14:00, and then the whole country cut off for three hours the next morning.
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
        noise: Noise {
            flaps_per_day: 0.0,
            reboots_per_day: 0.0,
            laptop_share: 0.0,
            stray_anomalies: 0.0,
            mover: false,
            ..Noise::default()
        },
        seed: 7,
        attackers: 0,
    };
    let templates = Templates::read(&workspace().join("../shared/ooni/webconnectivity"))
        .expect("OONI templates beside the repository");
    simulate(
        &scenario,
        &templates,
        &DetectConfig::default(),
        6 * 3600,
        &db_path,
        true,
    )
    .expect("simulation");

    // What the detectors stored: the page must show exactly these.
    let storage = Arc::new(Sqlite::open(&db_path).expect("db"));
    let events = storage
        .timeline(&TimelineQuery {
            cc: Some("IR".into()),
            since: EPOCH,
            until: day2 + 86_400,
            ..Default::default()
        })
        .expect("timeline");
    let shutdown = events
        .iter()
        .find(|e| e.kind == Kind::Shutdown)
        .unwrap_or_else(|| panic!("no shutdown in {events:#?}"));
    let block = events
        .iter()
        .find(|e| e.kind == Kind::Blocking)
        .unwrap_or_else(|| panic!("no block in {events:#?}"));
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(shutdown.scope, Scope::Full);
    assert!(!shutdown.suspected && !shutdown.evidence.is_empty());
    assert_eq!(
        (block.category.as_deref(), block.layer),
        (Some("NEWS"), Some(Layer::Dns))
    );

    // The aggregator's router on loopback.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = AppState::new(
        HelperConfig::default(),
        TlsContext::new(Vec::new()).expect("tls"),
        storage,
        IngestConfig::default(),
        Geo::Unknown,
    );
    runtime.spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let url = format!(
        "http://{addr}/?cc=IR&since=2026-01-05&until=2026-01-07&event={}",
        shutdown.id
    );
    let mut dump = chromium(&dir.join("profile"));
    dump.arg("--dump-dom").arg(&url);
    let dom = run_with_limit(dump, Duration::from_secs(90));
    assert!(
        dom.contains("data-ready=\"1\""),
        "page never finished: {dom}"
    );
    assert!(dom.contains("2 events in IR"), "status line missing: {dom}");
    for e in [shutdown, block] {
        let row = format!("<tr data-event-id=\"{}\"", e.id);
        let bar = format!("data-event-id=\"{}\"", e.id);
        assert!(dom.contains(&row), "no table row for {}", e.id);
        assert!(
            dom.matches(&bar).count() >= 2,
            "no chart bar for {}: {dom}",
            e.id
        );
    }
    assert!(dom.contains("news1.example"), "block targets missing");
    // The selected shutdown's evidence: its failed canaries, each a link to the envelope.
    for id in shutdown.evidence.iter().take(3) {
        assert!(
            dom.contains(&format!("data-id=\"{id}\"")),
            "evidence {id} not listed"
        );
    }

    let shot = workspace().join("target/web/timeline.png");
    std::fs::create_dir_all(shot.parent().expect("parent")).expect("dir");
    let _ = std::fs::remove_file(&shot);
    let mut screenshot = chromium(&dir.join("profile"));
    screenshot
        .arg("--window-size=1280,1100")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url);
    run_with_limit(screenshot, Duration::from_secs(90));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 30_000,
        "screenshot suspiciously small: {}",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    std::fs::remove_dir_all(&dir).ok();
}
