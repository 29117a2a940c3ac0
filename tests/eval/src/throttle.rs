//! Simulated throttling tests: what a probe's `vantage run --test throttling` would record on a
//! home link, with or without a policer on the target's name.
//!
//! Each measurement is three repetitions of a target and a control download, as the probe makes
//! them (`vantage_probe::throttling`), with progress sampled every 100 ms. The link has its own
//! speed (5 to 50 Mbit/s) that varies from download to download. Noise that is not throttling:
//! - a slow link: now and then everything is slow, target and control alike, and erratic;
//! - congestion: one download of the target slows down for a while, unevenly;
//! - a partial slowdown: a target repetition that is slow, even flat, once.
//!
//! Throttling: every target download is held at the policer's rate, give or take 5%.

use serde_json::{Value, json};
use vantage_probe::throttling::{Download, Role};

use crate::sim::Rng;

/// Bytes per download, as the probe's default.
const PAYLOAD: u64 = 160_000;
/// The probe's per-download time limit, ms.
const MAX_MS: u64 = 8_000;
/// Sampling step of the simulation, ms.
const STEP_MS: u64 = 100;

/// How noisy the simulated links are.
#[derive(Debug, Clone)]
pub struct LinkNoise {
    /// Share of measurements taken while the whole link is slow and erratic.
    pub slow_link: f64,
    /// Share of target downloads slowed unevenly by congestion.
    pub congestion: f64,
}

impl Default for LinkNoise {
    fn default() -> Self {
        LinkNoise {
            slow_link: 0.05,
            congestion: 0.05,
        }
    }
}

/// A download whose rate at each step, in kbit/s, comes from `kbps`.
fn download(sni: &str, role: Role, repetition: u32, mut kbps: impl FnMut(u64) -> f64) -> Download {
    let ttfb = 40;
    let mut samples = Vec::new();
    let mut bytes = 0.0_f64;
    let mut t = ttfb;
    while t < MAX_MS && (bytes as u64) < PAYLOAD {
        bytes = (bytes + kbps(t) * 1000.0 / 8.0 * STEP_MS as f64 / 1000.0).min(PAYLOAD as f64);
        t += STEP_MS;
        samples.push((t, bytes as u64));
    }
    let last = samples.last().copied().unwrap_or((ttfb, 0));
    Download {
        sni: sni.to_string(),
        role,
        repetition,
        t0: f64::from(repetition) * 10.0,
        ttfb_ms: Some(ttfb),
        ttlb_ms: Some(last.0),
        bytes: last.1,
        complete: last.1 >= PAYLOAD,
        failure: None,
        samples,
    }
}

/// The `test_keys.downloads` of one throttling measurement of `host`; `policer` is the
/// throttled rate in kbit/s when the host is throttled.
pub fn downloads(
    rng: &mut Rng,
    host: &str,
    link_kbps: f64,
    policer: Option<f64>,
    noise: &LinkNoise,
) -> Vec<Download> {
    let slow_link = rng.unit() < noise.slow_link;
    let mut out = Vec::new();
    for repetition in 0..3 {
        // Each download sees the link a little differently.
        let mut link = link_kbps * (0.7 + 0.6 * rng.unit());
        if slow_link {
            link = 200.0 + 400.0 * rng.unit();
        }
        let wobble = rng.next_u64();
        let erratic = move |t: u64, base: f64| {
            // Swings of up to ±60% every half second.
            let k = ((t / 500).wrapping_mul(wobble | 1) >> 7) % 1000;
            base * (0.4 + 1.2 * k as f64 / 1000.0)
        };
        let control = download("example.org", Role::Control, repetition, |t| {
            if slow_link { erratic(t, link) } else { link }
        });
        let target = match policer {
            Some(rate) => {
                let jitter = rng.next_u64();
                download(host, Role::Target, repetition, move |t| {
                    let k = ((t / STEP_MS).wrapping_mul(jitter | 1) >> 9) % 100;
                    rate * (0.95 + 0.1 * k as f64 / 100.0)
                })
            }
            None if rng.unit() < noise.congestion => {
                let share = 0.05 + 0.2 * rng.unit();
                download(host, Role::Target, repetition, |t| erratic(t, link * share))
            }
            None => download(host, Role::Target, repetition, |t| {
                if slow_link { erratic(t, link) } else { link }
            }),
        };
        // The probe alternates the order.
        if repetition % 2 == 0 {
            out.extend([target, control]);
        } else {
            out.extend([control, target]);
        }
    }
    out
}

/// The probe gives up on a page after this long, ms (a throttled page is then cut short; its
/// rate is still what it read over the time it read).
const PAGE_MAX_MS: u64 = 10_000;

/// Body bytes of `host`'s page: fixed per host, 48 to 400 kB, as real pages differ.
pub fn page_bytes(host: &str) -> u64 {
    let h = host.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    48_000 + h % 352_000
}

/// The `x_transfer` records of one web_connectivity page load, at the probe and at the test
/// helper: the passive signal. The probe's page comes at its link's rate of the moment (or the
/// whole link's slow spell, `slow_link`, shared by every page of a list run), slowed on this
/// page alone by congestion now and then as the active test's target downloads are, or held
/// at the policer's rate. The helper sits in a data centre: 40 to 100 Mbit/s.
pub fn page_transfers(
    rng: &mut Rng,
    bytes: u64,
    link_kbps: f64,
    slow_link: bool,
    policer: Option<f64>,
    noise: &LinkNoise,
) -> (Value, Value) {
    let link = if slow_link {
        200.0 + 400.0 * rng.unit()
    } else {
        link_kbps * (0.7 + 0.6 * rng.unit())
    };
    let probe = match policer {
        Some(rate) => rate * (0.95 + 0.1 * rng.unit()),
        None if rng.unit() < noise.congestion => link * (0.05 + 0.2 * rng.unit()),
        None => link,
    };
    let helper = 40_000.0 + 60_000.0 * rng.unit();
    (transfer(rng, bytes, probe), transfer(rng, bytes, helper))
}

/// An `x_transfer` record of `bytes` at `kbps`, as `vantage_probe::ooni::Transfer` samples it.
fn transfer(rng: &mut Rng, bytes: u64, kbps: f64) -> Value {
    let ttfb = 30 + rng.range(0, 200) as u64;
    let full_ms = ((bytes as f64 * 8.0 / kbps).round() as u64).max(1);
    let ms = full_ms.min(PAGE_MAX_MS);
    let read = bytes * ms / full_ms;
    let mut samples = Vec::new();
    let mut t = STEP_MS;
    while t < ms && samples.len() < 63 {
        samples.push((ttfb + t, read * t / ms));
        t += STEP_MS;
    }
    samples.push((ttfb + ms, read));
    json!({ "ttfb_ms": ttfb, "ttlb_ms": ttfb + ms, "samples": samples })
}

/// A throttling measurement as `vantage` writes it.
pub fn measurement(cc: &str, asn: u32, at: i64, host: &str, downloads: Vec<Download>) -> Value {
    let mut m = serde_json::to_value(vantage_probe::ooni::Measurement::vantage(
        vantage_probe::throttling::THROTTLING,
        vantage_probe::throttling::THROTTLING_VERSION,
        json!({ "downloads": downloads, "payload_bytes": PAYLOAD, "control_sni": "example.org" }),
    ))
    .unwrap_or_default();
    m["input"] = host.into();
    m["probe_cc"] = cc.into();
    m["probe_asn"] = format!("AS{asn}").into();
    m["measurement_start_time"] = vantage_aggregator::detect::format_time(at).into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_probe::throttling::{Rules, Verdict, score::assess};

    fn verdicts(policer: Option<f64>, noise: &LinkNoise, n: usize) -> Vec<(Verdict, Option<f64>)> {
        let mut rng = Rng::new(5);
        (0..n)
            .map(|_| {
                let link = 5_000.0 + 45_000.0 * rng.unit();
                let d = downloads(&mut rng, "grp1.example", link, policer, noise);
                let (t, c): (Vec<_>, Vec<_>) = d.into_iter().partition(|d| d.role == Role::Target);
                let a = assess(&t, &c, &Rules::default());
                (a.verdict, a.ceiling_kbps)
            })
            .collect()
    }

    #[test]
    fn a_policer_is_throttling_at_its_rate_and_noise_alone_rarely_is() {
        let noise = LinkNoise::default();
        let throttled = verdicts(Some(150.0), &noise, 100);
        let hits = throttled
            .iter()
            .filter(|(v, _)| *v == Verdict::Throttled)
            .count();
        assert!(hits >= 90, "{hits} of 100 throttled");
        for (_, kbps) in throttled.iter().filter(|(v, _)| *v == Verdict::Throttled) {
            let k = kbps.expect("ceiling");
            assert!((k - 150.0).abs() < 15.0, "{k}");
        }
        let clean = verdicts(None, &noise, 200);
        let false_hits = clean
            .iter()
            .filter(|(v, _)| *v == Verdict::Throttled)
            .count();
        assert!(
            false_hits <= 4,
            "{false_hits} of 200 clean measurements throttled"
        );
    }

    #[test]
    fn policed_pages_arrive_at_the_policers_rate_and_the_helper_far_faster() {
        let mut rng = Rng::new(7);
        let noise = LinkNoise::default();
        let rate = |v: Value| {
            let t: vantage_probe::ooni::Transfer = serde_json::from_value(v).expect("transfer");
            t.kbps().expect("rate")
        };
        for bytes in [48_000, 200_000, 400_000] {
            let (probe, helper) =
                page_transfers(&mut rng, bytes, 20_000.0, false, Some(150.0), &noise);
            let k = rate(probe);
            assert!((k - 150.0).abs() <= 10.0, "{bytes}: {k}");
            // A quick read is timed as 50 ms: a lower bound, still far above the probe.
            assert!(rate(helper) >= 7_000.0, "{bytes}");
        }
        // A slow spell of the whole link: a few hundred kbit/s, policer or not.
        let (probe, _) = page_transfers(&mut rng, 200_000, 20_000.0, true, None, &noise);
        assert!(rate(probe) < 700.0);
    }
}
