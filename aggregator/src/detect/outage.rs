//! Shutdown detection from probe contact (README.md, "Timeline: shutdowns, blocking and
//! throttling").
//!
//! A probe shows it is connected whenever it reaches us: a heartbeat, or a canary round in
//! which most targets answered (recorded even when it cannot upload). It shows it is cut off when a
//! canary round fails, which it records offline and uploads later. Between two "up" contacts
//! more than [`OutageConfig::min_gap_seconds`] apart a probe was disconnected; after its last
//! contact it is disconnected once it has been silent [`OutageConfig::silence_seconds`].
//!
//! One probe dropping is a flaky home link. Many probes of one network dropping *together* is
//! an outage: that is Disco's burst of disconnections (Shah et al., PAM 2017;
//! `InternetHealthReport/disco`), here with a fixed window instead of Kleinberg's automaton,
//! because our probes report every minute rather than on RIPE Atlas's irregular schedule. The
//! event opens as *suspected* as soon as the silence is long enough, before any probe can tell
//! us more, and is *confirmed* when the probes' offline queues arrive with the canaries that
//! failed during the gap. So the event is reconstructed even though nothing arrived during it.
//!
//! Each probe key is one probe: its contacts are kept one row per bin, so however many
//! heartbeats or canaries it sends it is alive or not once per bin, and it counts for a network
//! only when [`admitted`] (with a geolocation source, only with verified contact in that
//! network; `signals::Admit`). So fake probes elsewhere can neither keep a dark network
//! "online" nor make a healthy one look dark.
//!
//! A probe that falls silent in one network while it shows connectivity in another has moved,
//! not disconnected ([`Whereabouts`]): its silence there is no gap. A fleet that changes
//! network together (a national ISP renumbering, a VPN switched on, every probe of a new
//! deployment learning where it is) is then not a burst of disconnections.
//!
//! This module is pure: the caller loads contacts (see `mod.rs`) and stores what it finds.

use std::collections::HashMap;

use serde::Deserialize;

use super::signals::Admit;
use crate::store::model::BIN_SECONDS;
pub use crate::store::model::{Contact, ProbeContacts};

/// Thresholds of the shutdown detector. Every default cites where it comes from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutageConfig {
    /// A probe silent this long after its last contact counts as disconnected while the
    /// silence lasts. 150 s is two and a half heartbeat intervals (the daemon's default is one
    /// every 60 s, README.md "Unattended: `vantage daemon`"): two lost heartbeats in a row, not
    /// one.
    pub silence_seconds: i64,
    /// A gap that closed sooner than this is dropped: Disco ignores disconnections followed by
    /// a reconnection within 300 s (`discoProbesWindow = 300` in
    /// `InternetHealthReport/disco-kafka`).
    pub min_gap_seconds: i64,
    /// Disconnections belong to one burst when they start within this window. In a real cut
    /// every probe's last contact falls within one heartbeat interval of it; three intervals
    /// allow for jitter while keeping independent flaky links from adding up.
    pub burst_seconds: i64,
    /// A probe counts as live if it made contact this long before the burst: IODA's active
    /// probing and Disco both compare against recently active probes, so a laptop switched
    /// off for the night does not count as a probe that went dark at midnight.
    pub live_seconds: i64,
    /// At least this many live probes in a network for a verdict: fewer cannot tell a cut from
    /// a few home links failing (disco-kafka's `minimumProbesInUnit` is 5).
    pub min_probes: usize,
    /// Share of live probes that must drop together. IODA's critical threshold for active
    /// probing is a value below 50 % of its baseline (IODA's documented active-probing
    /// thresholds: warning below 80 %, critical below 50 %).
    pub min_share: f64,
    /// A probe with disconnections in more than this many of the last [`Self::noisy_bins`]
    /// 8-hour bins is too noisy to count (Disco: "more than 14 of 21", §3).
    pub noisy_max_bins: usize,
    /// See [`Self::noisy_max_bins`].
    pub noisy_bins: usize,
    /// When fewer than half of the probes are back but those that are came back together and
    /// nobody else followed for this long, the outage is over for the network and the others
    /// are off for their own reasons (a laptop switched off for the night during the outage
    /// would otherwise keep it open until morning). An hour: longer than any reconnection
    /// wave of one cut, short enough to close the event the same night.
    pub settle_seconds: i64,
}

impl Default for OutageConfig {
    fn default() -> Self {
        OutageConfig {
            silence_seconds: 150,
            min_gap_seconds: 300,
            burst_seconds: 180,
            live_seconds: 3600,
            min_probes: 5,
            min_share: 0.5,
            noisy_max_bins: 14,
            noisy_bins: 21,
            settle_seconds: 3600,
        }
    }
}

/// A time one probe was disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    probe: usize,
    start: i64,
    end: Option<i64>,
    failed_rounds: u32,
}

/// Disconnections of one network that happened together.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkOutage {
    /// The network.
    pub asn: u32,
    /// Median last contact of the probes that dropped.
    pub start: i64,
    /// When half of them were back; `None` while fewer are.
    pub end: Option<i64>,
    /// Keys of the probes that dropped.
    pub probes: Vec<String>,
    /// Live probes of the network when it happened.
    pub live: usize,
    /// How many of the dropped probes reported failed canaries during their gap.
    pub confirming: usize,
}

impl NetworkOutage {
    /// Only silence so far: no probe's offline canaries confirm it yet.
    pub fn suspected(&self) -> bool {
        self.confirming * 2 < self.probes.len()
    }
}

const NOISY_BIN_SECONDS: i64 = 8 * 3600;

/// Where each probe key showed connectivity, in every network loaded: so that a probe silent
/// in one network but heard from in another is seen to have moved rather than gone dark.
///
/// A key is one probe (docs/detection.md), and it cannot be in two places at once: an up
/// contact elsewhere during its silence means it reached us from there. Only up contacts
/// count (a failed canary recorded offline says where the probe believed it was, not that it
/// was connected), and only those the caller admitted for their network, so a key claiming a
/// network it was never verified in moves nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Whereabouts {
    up: HashMap<String, Vec<(String, u32, i64, i64)>>,
}

impl Whereabouts {
    /// Adds the up contacts of `probes`, a network of country `cc`.
    pub fn add(&mut self, cc: &str, probes: &[ProbeContacts]) {
        for p in probes {
            let seen = self.up.entry(p.key.clone()).or_default();
            seen.extend(
                p.contacts
                    .iter()
                    .filter_map(|c| c.up)
                    .map(|(first, last)| (cc.to_ascii_uppercase(), p.asn, first, last)),
            );
        }
    }

    /// Whether `key` showed connectivity in a network other than (`cc`, `asn`) at some moment
    /// after `from` and not after `to`.
    pub fn elsewhere(&self, key: &str, (cc, asn): (&str, u32), from: i64, to: i64) -> bool {
        self.up.get(key).is_some_and(|seen| {
            seen.iter().any(|(c, a, first, last)| {
                (*a != asn || !c.eq_ignore_ascii_case(cc)) && *last > from && *first <= to
            })
        })
    }
}

/// The gaps of one probe: between up contacts, and after the last one when it is silent.
fn gaps(index: usize, p: &ProbeContacts, now: i64, config: &OutageConfig) -> Vec<Gap> {
    let mut out = Vec::new();
    let mut last: Option<(i64, i64)> = None; // (bin, last up)
    let mut failed = 0;
    for c in &p.contacts {
        failed += c.down;
        let Some((first, last_up)) = c.up else {
            continue;
        };
        if let Some((_, prev)) = last
            && first - prev >= config.silence_seconds
        {
            out.push(Gap {
                probe: index,
                start: prev,
                end: Some(first),
                failed_rounds: failed,
            });
        }
        last = Some((c.bin, last_up));
        failed = c.down;
    }
    if let Some((_, prev)) = last
        && now - prev >= config.silence_seconds
    {
        out.push(Gap {
            probe: index,
            start: prev,
            end: None,
            failed_rounds: failed,
        });
    }
    out
}

/// The probes that count for their network: each contact is kept only when `admit` admits the
/// probe's key for the network at the end of the contact's bin (a verified heartbeat later in
/// the same bin vouches for it), and a probe left with no contact is dropped.
pub fn admitted(probes: Vec<ProbeContacts>, admit: &Admit) -> Vec<ProbeContacts> {
    if *admit == Admit::Everyone {
        return probes;
    }
    probes
        .into_iter()
        .filter_map(|mut p| {
            p.contacts.retain(|c| {
                let end = c.bin.saturating_mul(BIN_SECONDS) + BIN_SECONDS - 1;
                admit.counts(Some(&p.key), p.asn, end)
            });
            (!p.contacts.is_empty()).then_some(p)
        })
        .collect()
}

/// Whether probe `p` made contact within `[from, to]`.
fn contact_within(p: &ProbeContacts, from: i64, to: i64) -> bool {
    p.contacts
        .iter()
        .filter_map(|c| c.up)
        .any(|(first, last)| last >= from && first <= to)
}

/// Probes of one network that made contact within [`OutageConfig::live_seconds`] before `at`
/// (or during the burst window after it).
pub fn live(probes: &[ProbeContacts], at: i64, config: &OutageConfig) -> usize {
    probes
        .iter()
        .filter(|p| contact_within(p, at - config.live_seconds, at + config.burst_seconds))
        .count()
}

/// The ⌈n/2⌉-th smallest of `v` (a median that is always one of the values).
fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

/// Outages of one network, from its probes' contacts, as seen at `now`, with nothing known of
/// where its probes were heard from outside it ([`detect_in`] knows).
pub fn detect(probes: &[ProbeContacts], now: i64, config: &OutageConfig) -> Vec<NetworkOutage> {
    detect_in("", probes, &Whereabouts::default(), now, config)
}

/// Outages of one network of country `cc`, from its probes' contacts, as seen at `now`. A
/// probe's silence during which `seen` has it connected in another network is a move, not a
/// disconnection, and counts for nothing: neither in a burst nor as noise.
pub fn detect_in(
    cc: &str,
    probes: &[ProbeContacts],
    seen: &Whereabouts,
    now: i64,
    config: &OutageConfig,
) -> Vec<NetworkOutage> {
    let Some(asn) = probes.first().map(|p| p.asn) else {
        return Vec::new();
    };
    let all: Vec<Vec<Gap>> = probes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut g = gaps(i, p, now, config);
            g.retain(|g| !seen.elsewhere(&p.key, (cc, asn), g.start, g.end.unwrap_or(now)));
            g
        })
        .collect();
    // A gap counts while it is open, or once closed if it lasted past the debounce.
    let mut candidates: Vec<Gap> = all
        .iter()
        .flatten()
        .filter(|g| g.end.is_none_or(|e| e - g.start >= config.min_gap_seconds))
        .copied()
        .collect();
    candidates.sort_by_key(|g| (g.start, g.probe));

    let noisy = |probe: usize, at: i64| {
        let from = at - config.noisy_bins as i64 * NOISY_BIN_SECONDS;
        let mut bins: Vec<i64> = all[probe]
            .iter()
            .filter(|g| g.start >= from && g.start < at)
            .map(|g| g.start.div_euclid(NOISY_BIN_SECONDS))
            .collect();
        bins.dedup();
        bins.len() > config.noisy_max_bins
    };

    let mut out = Vec::new();
    let mut i = 0;
    while i < candidates.len() {
        let s = candidates[i].start;
        let burst_end = s + config.burst_seconds;
        let mut members: Vec<Gap> = Vec::new();
        let mut j = i;
        while j < candidates.len() && candidates[j].start <= burst_end {
            let g = candidates[j];
            if !noisy(g.probe, s) && !members.iter().any(|m| m.probe == g.probe) {
                members.push(g);
            }
            j += 1;
        }
        let live = probes
            .iter()
            .enumerate()
            .filter(|(k, p)| contact_within(p, s - config.live_seconds, burst_end) && !noisy(*k, s))
            .count();
        let needed = ((live as f64 * config.min_share).ceil() as usize).max(1);
        if live >= config.min_probes && members.len() >= needed {
            let n = members.len();
            let mut ends: Vec<i64> = members.iter().filter_map(|g| g.end).collect();
            ends.sort_unstable();
            // Disco closes an event once half of its probes are back (§3): the moment the
            // ⌈n/2⌉-th probe reconnected. Failing that, a wave of at least two probes back
            // together, with nobody following for `settle_seconds`, closes it at the wave.
            let end = if ends.len() * 2 >= n {
                Some(ends[n.div_ceil(2) - 1])
            } else {
                let wave: Vec<i64> = ends
                    .iter()
                    .copied()
                    .take_while(|e| ends.first().is_some_and(|a| e - a <= config.burst_seconds))
                    .collect();
                match ends.last() {
                    Some(&last) if wave.len() >= 2 && now - last >= config.settle_seconds => {
                        Some(wave[(wave.len() - 1) / 2])
                    }
                    _ => None,
                }
            };
            out.push(NetworkOutage {
                asn,
                start: median(members.iter().map(|g| g.start).collect()),
                end,
                probes: members
                    .iter()
                    .map(|g| probes[g.probe].key.clone())
                    .collect(),
                live,
                confirming: members.iter().filter(|g| g.failed_rounds > 0).count(),
            });
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIN: i64 = BIN_SECONDS;

    /// A probe heard every minute over `[from, to)` except during `gaps`, with failed canary
    /// rounds recorded inside the gaps when `canaries`.
    fn probe(key: &str, from: i64, to: i64, gaps: &[(i64, i64)], canaries: bool) -> ProbeContacts {
        let mut contacts: Vec<Contact> = Vec::new();
        let mut t = from;
        while t < to {
            let off = gaps.iter().any(|(a, b)| t >= *a && t < *b);
            let bin = t.div_euclid(BIN);
            if contacts.last().is_none_or(|c| c.bin != bin) {
                contacts.push(Contact {
                    bin,
                    up: None,
                    down: 0,
                });
            }
            let c = contacts.last_mut().expect("pushed");
            if off {
                c.down += u32::from(canaries);
            } else {
                c.up = Some(c.up.map_or((t, t), |(a, _)| (a, t)));
            }
            t += 60;
        }
        ProbeContacts {
            key: key.into(),
            asn: 64500,
            contacts,
        }
    }

    const T0: i64 = 1_700_000_000 / 3600 * 3600;

    #[test]
    fn a_network_going_dark_together_is_one_outage_with_its_window() {
        let (cut, back) = (T0 + 7200, T0 + 7200 + 5400);
        let fleet: Vec<ProbeContacts> = (0..6)
            .map(|i| {
                probe(
                    &format!("p{i}"),
                    T0 + i,
                    T0 + 4 * 3600,
                    &[(cut, back)],
                    true,
                )
            })
            .collect();
        let found = detect(&fleet, T0 + 4 * 3600, &OutageConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        let o = &found[0];
        assert!((o.start - cut).abs() <= 60, "start {} vs {cut}", o.start);
        assert!((o.end.expect("ended") - back).abs() <= 60);
        assert_eq!((o.probes.len(), o.live, o.suspected()), (6, 6, false));
    }

    #[test]
    fn silence_opens_a_suspected_outage_within_three_minutes() {
        let cut = T0 + 7200;
        let fleet = |now: i64| -> Vec<ProbeContacts> {
            (0..5)
                .map(|i| probe(&format!("p{i}"), T0, now, &[(cut, i64::MAX)], false))
                .collect()
        };
        let config = OutageConfig::default();
        assert!(detect(&fleet(cut + 60), cut + 60, &config).is_empty());
        let found = detect(&fleet(cut + 180), cut + 180, &config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].suspected() && found[0].end.is_none());
    }

    #[test]
    fn independent_flaps_reboots_and_too_few_probes_are_not_outages() {
        let config = OutageConfig::default();
        let end = T0 + 6 * 3600;
        // Each probe drops for 20 minutes, at a different hour.
        let flaky: Vec<ProbeContacts> = (0..6)
            .map(|i| {
                let a = T0 + 1800 + i * 3000;
                probe(&format!("p{i}"), T0, end, &[(a, a + 1200)], true)
            })
            .collect();
        assert!(detect(&flaky, end, &config).is_empty());
        // All reboot at once for three minutes: under the debounce.
        let reboot: Vec<ProbeContacts> = (0..6)
            .map(|i| probe(&format!("p{i}"), T0, end, &[(T0 + 7200, T0 + 7380)], false))
            .collect();
        assert!(detect(&reboot, end, &config).is_empty());
        // Four probes are too few for a verdict.
        let few: Vec<ProbeContacts> = (0..4)
            .map(|i| probe(&format!("p{i}"), T0, end, &[(T0 + 7200, T0 + 9000)], true))
            .collect();
        assert!(detect(&few, end, &config).is_empty());
    }

    #[test]
    fn probes_asleep_before_the_cut_do_not_count_as_live() {
        let (cut, back, end) = (T0 + 5 * 3600, T0 + 6 * 3600, T0 + 8 * 3600);
        let mut fleet: Vec<ProbeContacts> = (0..5)
            .map(|i| probe(&format!("up{i}"), T0, end, &[(cut, back)], true))
            .collect();
        // Five laptops switched off one by one hours before the cut stay off all along.
        fleet.extend(
            (0..5).map(|i| probe(&format!("off{i}"), T0, cut - 7200 - i * 1200, &[], false)),
        );
        let found = detect(&fleet, end, &OutageConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].probes.len(), found[0].live), (5, 5));
    }

    #[test]
    fn a_wave_back_closes_the_outage_once_nobody_follows_for_an_hour() {
        let (cut, back) = (T0 + 3600, T0 + 7200);
        // Two probes come back at the end; three were switched off during the outage.
        let mut fleet: Vec<ProbeContacts> = (0..2)
            .map(|i| probe(&format!("up{i}"), T0, T0 + 4 * 3600, &[(cut, back)], true))
            .collect();
        fleet.extend((0..3).map(|i| {
            probe(
                &format!("off{i}"),
                T0,
                T0 + 4 * 3600,
                &[(cut, i64::MAX)],
                true,
            )
        }));
        let config = OutageConfig::default();
        let open = detect(&fleet, back + 1800, &config);
        assert_eq!(open.len(), 1);
        assert_eq!(
            open[0].end, None,
            "half an hour on, it may still be a partial return"
        );
        let closed = detect(&fleet, back + 3 * 3600, &config);
        assert!(
            (closed[0].end.expect("closed") - back).abs() <= 60,
            "{closed:?}"
        );
    }

    /// Verified contacts of each real probe of `fleet` from inside its network: one day of
    /// them at the start of `fleet`'s contacts (the proxied or offline ones later inherit).
    fn vouched(fleet: &[ProbeContacts]) -> Admit {
        let mut vouches = crate::store::model::Vouches::default();
        for p in fleet {
            let first = p.contacts[0].up.map_or(0, |u| u.0);
            vouches.add(&p.key, p.asn, first, first + 60);
        }
        Admit::Verified {
            vouches,
            window: 7 * 86_400,
        }
    }

    #[test]
    fn fake_probes_claiming_a_dark_network_from_elsewhere_do_not_hide_its_outage() {
        let (cut, back, end) = (T0 + 7200, T0 + 7200 + 5400, T0 + 4 * 3600);
        let real: Vec<ProbeContacts> = (0..6)
            .map(|i| probe(&format!("p{i}"), T0 + i, end, &[(cut, back)], true))
            .collect();
        // Ten keys elsewhere beat "from" the network all along: none ever came from inside.
        let mut all = real.clone();
        all.extend((0..10).map(|i| probe(&format!("fake{i}"), T0, end, &[], false)));
        let config = OutageConfig::default();
        assert!(
            detect(&all, end, &config).is_empty(),
            "unchecked, the fakes outvote the real probes"
        );
        let admit = vouched(&real);
        let found = detect(&admitted(all, &admit), end, &config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].probes.len(), found[0].live), (6, 6));
    }

    #[test]
    fn fake_probes_going_dark_together_do_not_invent_an_outage() {
        let end = T0 + 4 * 3600;
        let real: Vec<ProbeContacts> = (0..6)
            .map(|i| probe(&format!("p{i}"), T0 + i, end, &[], false))
            .collect();
        // Eight keys elsewhere beat for an hour, then upload failed canaries and fall silent.
        let mut all = real.clone();
        all.extend((0..8).map(|i| probe(&format!("fake{i}"), T0, end, &[(T0 + 5400, end)], true)));
        let config = OutageConfig::default();
        assert_eq!(detect(&all, end, &config).len(), 1, "unchecked, they would");
        assert!(detect(&admitted(all, &vouched(&real)), end, &config).is_empty());
    }

    #[test]
    fn a_verified_probes_proxied_and_offline_contacts_still_count() {
        // Each probe was verified from inside its network in its first minute only; everything
        // later came through a proxy or was queued offline during the cut, and still counts:
        // the outage is found and confirmed by the canaries that failed.
        let (cut, back, end) = (T0 + 2 * 86_400, T0 + 2 * 86_400 + 5400, T0 + 3 * 86_400);
        let fleet: Vec<ProbeContacts> = (0..6)
            .map(|i| probe(&format!("p{i}"), T0 + i, end, &[(cut, back)], true))
            .collect();
        let kept = admitted(fleet.clone(), &vouched(&fleet));
        assert_eq!(kept, fleet);
        let found = detect(&kept, end, &OutageConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(!found[0].suspected());
        // Eight days on, the proxied contacts no longer count: no week-old check vouches.
        let late = admitted(
            fleet
                .iter()
                .map(|p| probe(&p.key, T0 + 8 * 86_400, T0 + 9 * 86_400, &[], false))
                .collect(),
            &vouched(&fleet),
        );
        assert!(late.is_empty(), "{late:?}");
    }

    /// `fleet` moved to network `asn` at `at`: each probe's contacts before `at` stay in the
    /// old network, and from `at` to `end` it is heard every minute in the new one.
    fn moved(fleet: &[ProbeContacts], asn: u32, at: i64, end: i64) -> Vec<ProbeContacts> {
        fleet
            .iter()
            .map(|p| ProbeContacts {
                asn,
                ..probe(&p.key, at, end, &[], false)
            })
            .collect()
    }

    #[test]
    fn a_fleet_moving_to_another_network_together_is_no_outage() {
        // Six probes in AS64500 until `at`, all heard from AS64501 within the same minute on.
        let (at, end) = (T0 + 7200, T0 + 4 * 3600);
        let before: Vec<ProbeContacts> = (0..6)
            .map(|i| probe(&format!("p{i}"), T0 + i, at, &[], false))
            .collect();
        let after = moved(&before, 64501, at + 30, end);
        let config = OutageConfig::default();
        // Blind to where they went, the old network looks like it went dark together.
        assert_eq!(detect(&before, end, &config).len(), 1);
        let mut seen = Whereabouts::default();
        seen.add("IR", &before);
        seen.add("IR", &after);
        assert!(detect_in("IR", &before, &seen, end, &config).is_empty());
        assert!(detect_in("IR", &after, &seen, end, &config).is_empty());
        // Heard from another country is elsewhere too; the same network of another country
        // number is another network.
        let mut abroad = Whereabouts::default();
        abroad.add("NL", &moved(&before, 64500, at + 30, end));
        assert!(detect_in("IR", &before, &abroad, end, &config).is_empty());
    }

    #[test]
    fn a_move_seen_only_after_the_probe_came_back_or_before_it_left_is_no_move() {
        // A real cut of AS64500 from `cut` to `back`: each probe was in AS64501 for a while a
        // day earlier and again after the cut. Neither visit falls inside the gap, so the
        // outage stands.
        let (cut, back, end) = (T0 + 86_400, T0 + 86_400 + 5400, T0 + 86_400 + 4 * 3600);
        let fleet: Vec<ProbeContacts> = (0..6)
            .map(|i| probe(&format!("p{i}"), T0 + i, end, &[(cut, back)], true))
            .collect();
        let mut seen = Whereabouts::default();
        seen.add("IR", &fleet);
        seen.add("IR", &moved(&fleet, 64501, T0 + 3600, T0 + 7200));
        seen.add("IR", &moved(&fleet, 64501, back + 600, back + 1200));
        let found = detect_in("IR", &fleet, &seen, end, &OutageConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].probes.len(), 6);
        // Failed canaries queued offline "in" another network say nothing of where it was.
        let mut offline = Whereabouts::default();
        offline.add(
            "IR",
            &fleet
                .iter()
                .map(|p| ProbeContacts {
                    asn: 64501,
                    contacts: vec![Contact {
                        bin: (cut + 600).div_euclid(BIN),
                        up: None,
                        down: 3,
                    }],
                    key: p.key.clone(),
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            detect_in("IR", &fleet, &offline, end, &OutageConfig::default()).len(),
            1
        );
    }

    #[test]
    fn half_the_fleet_moving_while_the_rest_goes_dark_leaves_the_dark_ones_an_outage() {
        // Ten probes: four move to AS64501 at the cut, six go dark with failed canaries. The
        // six are a majority of the ten live probes: an outage of six, not ten.
        let (cut, end) = (T0 + 7200, T0 + 4 * 3600);
        let fleet: Vec<ProbeContacts> = (0..10)
            .map(|i| probe(&format!("p{i}"), T0 + i, end, &[(cut, end)], i >= 4))
            .collect();
        let mut seen = Whereabouts::default();
        seen.add("IR", &fleet);
        seen.add("IR", &moved(&fleet[..4], 64501, cut + 60, end));
        let found = detect_in("IR", &fleet, &seen, end, &OutageConfig::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].probes.len(), found[0].live), (6, 10));
        assert!(found[0].probes.iter().all(|k| k.as_str() >= "p4"));
        assert!(!found[0].suspected());
    }

    #[test]
    fn canaries_that_answered_during_a_heartbeat_gap_mean_no_outage() {
        // Heartbeats stopped (the aggregator was unreachable) but canaries kept succeeding:
        // each probe's queue shows contact throughout.
        let end = T0 + 4 * 3600;
        let fleet: Vec<ProbeContacts> = (0..6)
            .map(|i| probe(&format!("p{i}"), T0, end, &[], false))
            .collect();
        assert!(detect(&fleet, end, &OutageConfig::default()).is_empty());
    }
}
