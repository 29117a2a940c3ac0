//! The evaluation harness on a small plan, as CI can afford: the same scenarios and scoring as
//! `vantage-eval` (BENCHMARKS.md has the full run), so a change that breaks detection quality
//! fails here and not only in the benchmark.

use std::path::Path;

use vantage_aggregator::detect::DetectConfig;
use vantage_eval::score::{Plan, Report, scenarios};
use vantage_eval::sim::{Templates, simulate};
use vantage_eval::truth::Outages;

#[test]
fn a_small_plan_meets_the_detection_targets() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
    let list = Outages::read(&data.join("datasets/generated-outages.csv"))
        .expect("the outage list in tests/data");
    let templates =
        Templates::read(&data.join("ooni/webconnectivity")).expect("OONI's measurements");
    let plan = Plan {
        shutdowns: 6,
        blocks: 2,
        quiet_weeks: 0,
        throttles: 2,
        seed: 11,
        noise: Default::default(),
        attackers: 0,
    };
    let dir = std::env::temp_dir().join(format!("vantage-harness-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut report = Report::default();
    for (i, s) in scenarios(&plan, &list).iter().enumerate() {
        let db = dir.join(format!("{i}.db"));
        let outcome =
            simulate(s, &templates, &DetectConfig::default(), 3600, &db, false).expect("runs");
        report.add(&outcome);
    }
    std::fs::remove_dir_all(&dir).ok();
    let table = report.markdown();
    eprintln!("{table}");
    assert!(report.units >= 10, "too few shutdowns scored:\n{table}");
    assert_eq!(report.blocks, 2);
    assert_eq!(report.throttles, 2);
    assert!(report.passes(), "detection below its targets:\n{table}");
}
