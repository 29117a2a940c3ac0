//! Fake probes against the detectors, on two small scenarios CI can afford (BENCHMARKS.md has
//! the full plan): keys elsewhere that keep a dark country "online" through a real shutdown,
//! and keys that fake a shutdown and a block in a quiet one. With network claims checked, as
//! `serve --prefixes` checks them, the timeline is the one the same fleets give without any
//! attacker; unchecked, the attack works, which is what makes this test able to fail.

use std::path::{Path, PathBuf};

use vantage_aggregator::detect::DetectConfig;
use vantage_eval::score::{EPOCH, Report};
use vantage_eval::sim::{Noise, Scenario, Templates, Truth, simulate};
use vantage_eval::truth::Reach;

fn scenarios(attackers: usize) -> Vec<Scenario> {
    let start = EPOCH + 4 * 3600;
    vec![
        // Three networks of six probes, all cut off for two hours.
        Scenario {
            cc: "AA".into(),
            networks: vec![(64500, 6), (64501, 6), (64502, 6)],
            from: EPOCH,
            to: start + 4 * 3600,
            truth: vec![Truth::Shutdown {
                asns: vec![64500, 64501, 64502],
                reach: Reach::Country,
                start,
                end: start + 2 * 3600,
            }],
            noise: Noise::default(),
            seed: 3,
            attackers,
        },
        // Two quiet networks for two days: the attackers fake a cut of one at hour 36 and a
        // block in the other from hour 40.
        Scenario {
            cc: "AB".into(),
            networks: vec![(64500, 6), (64501, 6)],
            from: EPOCH,
            to: EPOCH + 48 * 3600,
            truth: Vec::new(),
            noise: Noise::default(),
            seed: 4,
            attackers,
        },
    ]
}

fn run(attackers: usize, verified: bool, templates: &Templates, dir: &Path) -> Report {
    let config = DetectConfig {
        require_verified_network: verified,
        ..DetectConfig::default()
    };
    let mut report = Report::default();
    for (i, s) in scenarios(attackers).iter().enumerate() {
        let db = dir.join(format!("{attackers}-{verified}-{i}.db"));
        report.add(&simulate(s, templates, &config, 900, &db, false).expect("runs"));
    }
    report
}

/// The table without the submission counts (the attackers' are in them).
fn figures(r: &Report) -> String {
    r.markdown()
        .lines()
        .filter(|l| !l.contains("submissions") && !l.contains("from attackers"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn attackers_elsewhere_change_nothing_once_network_claims_are_checked() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let templates =
        Templates::read(&data.join("ooni/webconnectivity")).expect("OONI's measurements");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("vantage-attackers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (clean, attacked, unchecked) = std::thread::scope(|scope| {
        let clean = scope.spawn(|| run(0, true, &templates, &dir));
        let attacked = scope.spawn(|| run(100, true, &templates, &dir));
        let unchecked = run(100, false, &templates, &dir);
        (
            clean.join().expect("clean run"),
            attacked.join().expect("attacked run"),
            unchecked,
        )
    });
    std::fs::remove_dir_all(&dir).ok();
    eprintln!(
        "without attackers:\n{}\nwith, checked:\n{}\nwith, unchecked:\n{}",
        clean.markdown(),
        attacked.markdown(),
        unchecked.markdown()
    );
    // 18 and 12 attackers, as many as each scenario's real probes.
    assert!(attacked.attacker_submissions > 10_000);
    assert_eq!(clean.units, 3, "every network of the cut scored");
    assert_eq!((clean.found, clean.false_events), (3, 0));
    assert_eq!(figures(&attacked), figures(&clean));
    // Unchecked, the same attackers hide the real cut and invent events in the quiet country.
    assert!(
        unchecked.found < unchecked.units,
        "{}",
        unchecked.markdown()
    );
    assert!(
        unchecked.detected_units > unchecked.detected_true,
        "a shutdown invented: {}",
        unchecked.markdown()
    );
    assert!(
        unchecked.blocking_events.0 > unchecked.blocking_events.1,
        "a block invented: {}",
        unchecked.markdown()
    );
}
