//! `detector.json` of an evidence bundle: which detector made the event, with every threshold
//! it ran with (`DetectConfig`, the TOML of `serve --detect-config`, here as JSON with the
//! same names), and the rule set versions that gave the verdicts it counted, which
//! `vantage verify` recomputes (`vantage_probe::verdict::rules`, `verdict::services`).

use serde_json::{Value, json};

use crate::detect::DetectConfig;
use crate::store::model::{Event, Kind};

/// The rule set versions a verifier recomputes verdicts with: web_connectivity's (the
/// aggregator scores with Vantage's rules at ingest) and OONI's service tests'.
pub fn rule_sets() -> Value {
    json!({
        "web_connectivity": vantage_probe::verdict::rules::VANTAGE.version,
        "services": vantage_probe::verdict::services::RULE_SET,
    })
}

/// The detector configuration as JSON, with the TOML file's names and layout.
pub fn config(c: &DetectConfig) -> Value {
    let o = &c.outage;
    let b = &c.blocking;
    let t = &c.throttling;
    json!({
        "lookback_hours": c.lookback_hours,
        "recent_hours": c.recent_hours,
        "full_every": c.full_every,
        "require_verified_network": c.require_verified_network,
        "verified_window_hours": c.verified_window_hours,
        "outage": {
            "silence_seconds": o.silence_seconds,
            "min_gap_seconds": o.min_gap_seconds,
            "burst_seconds": o.burst_seconds,
            "live_seconds": o.live_seconds,
            "min_probes": o.min_probes,
            "min_share": o.min_share,
            "noisy_max_bins": o.noisy_max_bins,
            "noisy_bins": o.noisy_bins,
            "settle_seconds": o.settle_seconds,
        },
        "blocking": {
            "bin_seconds": b.bin_seconds,
            "window_bins": b.window_bins,
            "history_bins": b.history_bins,
            "min_history_bins": b.min_history_bins,
            "min_measurements": b.min_measurements,
            "min_category_measurements": b.min_category_measurements,
            "min_probes": b.min_probes,
            "min_ratio": b.min_ratio,
            "min_rise": b.min_rise,
            "min_bins": b.min_bins,
        },
        "throttling": {
            "min_measurements": t.min_measurements,
            "max_gap_hours": t.max_gap_hours,
            "min_clean": t.min_clean,
            "passive_min_measurements": t.passive_min_measurements,
            "passive_spread": t.passive_spread,
            "baseline_days": t.baseline_days,
            "baseline_min": t.baseline_min,
            "baseline_drop": t.baseline_drop,
        },
    })
}

/// `detector.json` of the bundle of `event`.
pub fn describe(event: &Event, c: &DetectConfig) -> Value {
    let (detector, source, reads) = match event.kind {
        Kind::Shutdown => (
            "outage",
            "aggregator/src/detect/outage.rs",
            "probes falling silent together and the failed canary rounds they queued offline; its thresholds are `outage`",
        ),
        Kind::Blocking => (
            "blocking",
            "aggregator/src/detect/blocking.rs",
            "each verdict's anomaly layer, per target, network and hour, against a week's baseline; its thresholds are `blocking`",
        ),
        Kind::Throttling => (
            "throttling",
            "aggregator/src/detect/throttling.rs",
            "throttling verdicts and page goodput against the target's baseline; its thresholds are `throttling`",
        ),
    };
    json!({
        "detector": detector,
        "source": source,
        "reads": reads,
        "rule_sets": rule_sets(),
        "fingerprints": "the built-in set (probe/data/fingerprints.csv) and any the operator added with --fingerprints",
        "config": config(c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON carries the file's own names: turned back into TOML it reads as the same
    /// configuration, and `DetectConfig::read` refuses any name it does not know.
    #[test]
    fn the_configuration_reads_back_as_the_same_settings() {
        let mut c = DetectConfig {
            lookback_hours: 100,
            ..DetectConfig::default()
        };
        c.blocking.min_probes = 3;
        c.outage.min_share = 0.25;
        c.throttling.baseline_days = 9;
        let value = config(&c);
        let toml = toml_of(&value);
        let path =
            std::env::temp_dir().join(format!("vantage-detector-{}.toml", std::process::id()));
        std::fs::write(&path, toml).expect("write");
        let back = DetectConfig::read(&path).expect("reads back");
        let _ = std::fs::remove_file(&path);
        assert_eq!(back, c);
    }

    /// Every field of the configuration, as its `Debug` names them, is in the JSON: a field
    /// added to a detector's thresholds and forgotten here fails this.
    #[test]
    fn every_threshold_is_in_the_json() {
        let debug = format!("{:?}", DetectConfig::default());
        let value = config(&DetectConfig::default());
        let mut keys = Vec::new();
        for (k, v) in value.as_object().expect("object") {
            keys.push(k.clone());
            if let Some(t) = v.as_object() {
                keys.extend(t.keys().cloned());
            }
        }
        let mut fields = 0;
        for word in debug.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
            if let Some(name) = word.strip_suffix(':') {
                fields += 1;
                assert!(
                    keys.iter().any(|k| k == name),
                    "{name} is not in detector.json"
                );
            }
        }
        assert!(fields >= 30, "only {fields} fields read from {debug}");
    }

    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        }
    }

    fn toml_of(v: &Value) -> String {
        let mut top = String::new();
        let mut tables = String::new();
        for (k, v) in v.as_object().expect("object") {
            match v.as_object() {
                Some(t) => {
                    tables.push_str(&format!("[{k}]\n"));
                    for (k, v) in t {
                        tables.push_str(&format!("{k} = {}\n", scalar(v)));
                    }
                }
                None => top.push_str(&format!("{k} = {}\n", scalar(v))),
            }
        }
        top + &tables
    }
}
