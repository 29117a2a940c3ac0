//! Ground truth drawn from a list of outages in the format of IODA's investigated outages: how
//! long outages lasted, what time of day they began, and how far they reached. The repository's
//! list, `tests/data/datasets/generated-outages.csv`, is generated with the statistics of IODA's
//! (durations, start times and reach; tests/data/SOURCES.md says how and why); `vantage-eval
//! --outages` reads IODA's own file as well.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// How far a real outage reached, from the list's "Scope" column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// `Country`.
    Country,
    /// `Region (<name>)`: some networks of the country.
    Region,
    /// `AS (<n>)`: one network.
    Network,
}

/// One usable row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// Seconds after midnight UTC it began.
    pub start_of_day: i64,
    /// End minus begin, seconds.
    pub duration: i64,
    /// Its scope.
    pub reach: Reach,
}

/// Rows read, and why the others were left out.
#[derive(Debug, Clone, Default)]
pub struct Outages {
    /// Usable rows.
    pub rows: Vec<Outage>,
    /// Rows whose times did not parse (empty, `N/A`, other formats).
    pub unparsed: usize,
    /// Rows whose end is not after their begin (mostly AM/PM slips in the list).
    pub not_positive: usize,
}

/// Parses `Wednesday, March 17, 2021, 4:40:00 PM` or `Sunday, May 27, 2018, 11:00 PM` into
/// seconds since the epoch (UTC, as the list's README says).
pub fn parse_time(text: &str) -> Option<i64> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [_, month_day, year, clock] = parts.as_slice() else {
        return None;
    };
    let (month, day) = month_day.split_once(' ')?;
    let month = time::Month::try_from(
        [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ]
        .iter()
        .position(|m| *m == month)? as u8
            + 1,
    )
    .ok()?;
    let (hms, meridiem) = clock.split_once(' ')?;
    let fields: Vec<&str> = hms.split(':').collect();
    let (h, m, s): (u8, u8, u8) = match fields.as_slice() {
        [h, m] => (h.parse().ok()?, m.parse().ok()?, 0),
        [h, m, s] => (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?),
        _ => return None,
    };
    if !(1..=12).contains(&h) {
        return None;
    }
    let h = match meridiem {
        "AM" => h % 12,
        "PM" => h % 12 + 12,
        _ => return None,
    };
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    let t = date.with_hms(h, m, s).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

impl Outages {
    /// Reads the list.
    pub fn read(path: &Path) -> Result<Outages> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut out = Outages::default();
        for record in reader.records() {
            let record = record.with_context(|| format!("reading {}", path.display()))?;
            let (Some(begin), Some(end), Some(scope)) =
                (record.get(1), record.get(2), record.get(7))
            else {
                out.unparsed += 1;
                continue;
            };
            let (Some(b), Some(e)) = (parse_time(begin), parse_time(end)) else {
                out.unparsed += 1;
                continue;
            };
            if e <= b {
                out.not_positive += 1;
                continue;
            }
            let reach = if scope.starts_with("AS") {
                Reach::Network
            } else if scope.starts_with("Region") {
                Reach::Region
            } else {
                Reach::Country
            };
            out.rows.push(Outage {
                start_of_day: b.rem_euclid(86_400),
                duration: e - b,
                reach,
            });
        }
        if out.rows.is_empty() {
            bail!("{}: no usable outage rows", path.display());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_time_formats_parse_as_utc() {
        assert_eq!(
            parse_time("Wednesday, March 17, 2021, 4:40:00 PM"),
            Some(1_615_999_200)
        );
        assert_eq!(
            parse_time("Sunday, May 27, 2018, 12:00 AM"),
            parse_time("Sunday, May 27, 2018, 12:00:00 AM")
        );
        assert_eq!(parse_time("7/28/2020  17:00:00 PM"), None);
        assert_eq!(parse_time("N/A"), None);
    }

    #[test]
    fn the_generated_list_keeps_iodas_statistics() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/datasets/generated-outages.csv");
        let list = Outages::read(&path).expect("the list in tests/data");
        // IODA's list, read by this code: 1,571 usable rows, 55 whose times do not parse and
        // 78 that end before they begin (tests/data/datasets/outage-distributions.csv).
        assert_eq!(
            (list.rows.len(), list.unparsed, list.not_positive),
            (1571, 55, 78)
        );
        let reach = |r: Reach| list.rows.iter().filter(|o| o.reach == r).count();
        assert_eq!(
            (
                reach(Reach::Country),
                reach(Reach::Region),
                reach(Reach::Network)
            ),
            (862, 642, 67)
        );
        let mut d: Vec<i64> = list.rows.iter().map(|o| o.duration).collect();
        d.sort_unstable();
        assert_eq!(d[d.len() / 2], 150 * 60, "median duration");
    }
}
