#!/usr/bin/env python3
"""A generated outage list with the statistics of IODA's investigated outages.

The evaluation (tests/eval: `vantage-eval`, tests/eval/tests/harness.rs) draws shutdown
schedules from a list of real outages: how long they lasted, what time of day they began and how
far they reached (tests/eval/src/truth.rs). IODA's list of investigated outages (Bischof et al.,
"Destination Unreachable: Characterizing Internet Outages and Shutdowns", SIGCOMM 2023; the
InetIntel/internet_outages repository) states no licence, so it is not copied here. Instead:

    make_outages.py derive IODA.csv > outage-distributions.csv
        reduces the list to counts: for each reach (country, region, network) the histogram of
        durations and of start minutes of the day, and, for the descriptive columns (country,
        the three IODA signals, cause, confirmation), the histogram of values; plus how many rows
        are unusable and why. No row of the list survives, only how often each value occurs.

    make_outages.py generate outage-distributions.csv > generated-outages.csv
        writes a list with IODA's columns, header and time format in which every histogram
        above holds exactly (so the median duration, the reach mix and the start-hour
        distribution are IODA's), but each row pairs values drawn independently: no row is a
        real outage. Dates are drawn uniformly over 2018-2021, the list's years; IDs, regions
        and networks (private-use ASNs, RFC 6996) are made up.

Both steps are deterministic (seed 19); tests/data/SOURCES.md says which files they made.
`derive` parses times exactly as tests/eval/src/truth.rs does, so the counts of usable and
unusable rows it records are the ones the evaluation would see.
"""

import csv
import io
import random
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]
REACHES = ["Country", "Region", "Network"]
# The descriptive columns whose value histograms are kept, by index in the list.
DESCRIPTIVE = {3: "country", 4: "bgp", 5: "ap", 6: "ibr", 10: "cause",
               11: "confirmation", 12: "manually_verified"}
SEED = 19


def parse_time(text):
    """tests/eval/src/truth.rs `parse_time`: seconds since the epoch, or None."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4:
        return None
    _, month_day, year, clock = parts
    if " " not in month_day or " " not in clock:
        return None
    month, day = month_day.split(" ", 1)
    if month not in MONTHS:
        return None
    hms, meridiem = clock.split(" ", 1)
    fields = hms.split(":")
    try:
        if len(fields) == 2:
            h, m, s = int(fields[0]), int(fields[1]), 0
        elif len(fields) == 3:
            h, m, s = (int(f) for f in fields)
        else:
            return None
        if not all(f.isdigit() for f in fields) or not day.isdigit() or not year.isdigit():
            return None
        if not 1 <= h <= 12 or meridiem not in ("AM", "PM"):
            return None
        h = h % 12 + (12 if meridiem == "PM" else 0)
        t = datetime(int(year), MONTHS.index(month) + 1, int(day), h, m, s, tzinfo=timezone.utc)
    except ValueError:
        return None
    return int(t.timestamp())


def reach_of(scope):
    if scope.startswith("AS"):
        return "Network"
    if scope.startswith("Region"):
        return "Region"
    return "Country"


def derive(path):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    counts = Counter()
    for row in rows:
        for i, name in DESCRIPTIVE.items():
            counts[("value", name, row[i] if len(row) > i else "")] += 1
        if len(row) < 8:
            counts[("unusable", "", "unparsed")] += 1
            continue
        b, e = parse_time(row[1]), parse_time(row[2])
        if b is None or e is None:
            counts[("unusable", "", "unparsed")] += 1
            continue
        if e <= b:
            counts[("unusable", "", "not_positive")] += 1
            continue
        reach = reach_of(row[7])
        counts[("reach", reach, "")] += 1
        counts[("duration_minutes", reach, str((e - b) // 60))] += 1
        counts[("start_minute_of_day", reach, str(b % 86400 // 60))] += 1
        seconds = len(row[1].split(",")[-1].strip().split(" ")[0].split(":")) == 3
        counts[("time_format", "", "h:mm:ss" if seconds else "h:mm")] += 1
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["statistic", "group", "value", "count"])
    out.writerow(["columns", "", len(header), 1])
    for (stat, group, value), n in sorted(counts.items(), key=sort_key):
        out.writerow([stat, group, value, n])


def sort_key(item):
    (stat, group, value), _ = item
    return (stat, group, int(value) if value.isdigit() else 0, value)


def expand(histogram):
    return [value for value, n in sorted(histogram.items()) for _ in range(n)]


def fmt(t, seconds):
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    h = d.hour % 12 or 12
    clock = f"{h}:{d.minute:02}:{d.second:02}" if seconds else f"{h}:{d.minute:02}"
    return (f"{d.strftime('%A')}, {MONTHS[d.month - 1]} {d.day}, {d.year}, "
            f"{clock} {'PM' if d.hour >= 12 else 'AM'}")


def generate(path):
    hist = {}
    columns = 15
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["statistic"] == "columns":
                columns = int(row["value"])
                continue
            key = (row["statistic"], row["group"])
            hist.setdefault(key, Counter())[row["value"]] = int(row["count"])
    rng = random.Random(SEED)
    first = datetime(2018, 1, 1, tzinfo=timezone.utc).timestamp()
    days = (datetime(2022, 1, 1, tzinfo=timezone.utc).timestamp() - first) // 86400

    usable = []
    for reach in REACHES:
        durations = expand(hist.get(("duration_minutes", reach), Counter()))
        starts = expand(hist.get(("start_minute_of_day", reach), Counter()))
        rng.shuffle(durations)
        rng.shuffle(starts)
        for d, s in zip(durations, starts):
            usable.append((reach, int(d) * 60, int(s) * 60))
    formats = expand(hist.get(("time_format", ""), Counter()))
    rng.shuffle(formats)
    unusable = expand(hist.get(("unusable", ""), Counter()))
    kinds = [("usable", u) for u in usable] + [(u, None) for u in unusable]
    rng.shuffle(kinds)

    descriptive = {}
    for name in DESCRIPTIVE.values():
        values = expand(hist.get(("value", name), Counter()))
        rng.shuffle(values)
        descriptive[name] = values

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    header = ["ID", "Begin time", "End time", "Country", "IODA BGP visible by human",
              "IODA AP visible by human ", " IODA IBR visible by human",
              "Scope (based on granularity at which the outage appears in IODA)", "Region", "AS",
              "Cause", "Confirmation Status", "Manually verified", "Grafana URLs", "Notes"]
    w.writerow(header + [""] * (columns - len(header)))
    bad_forms = ["N/A", "", "{m}/{d}/{y}  {H}:{M:02}:00 PM"]
    for n, (kind, value) in enumerate(kinds):
        begin = first + rng.randrange(int(days)) * 86400
        if kind == "usable":
            reach, duration, start = value
            begin += start
            seconds = (formats.pop() if formats else "h:mm:ss") == "h:mm:ss"
            b, e = fmt(begin, seconds), fmt(begin + duration, seconds)
            note = "generated: not a real outage"
        elif kind == "not_positive":
            reach = rng.choice(REACHES)
            begin += rng.randrange(144) * 600
            # An AM/PM slip, as in the source list: the end lands half a day early.
            b = fmt(begin, True)
            e = fmt(begin - 12 * 3600 + rng.randrange(1, 36) * 600, True)
            note = "generated: end before begin, as some source rows"
        else:
            reach = rng.choice(REACHES)
            d = datetime.fromtimestamp(begin, tz=timezone.utc)
            form = bad_forms[n % len(bad_forms)]
            b = form.format(m=d.month, d=d.day, y=d.year, H=rng.randrange(12, 24),
                            M=rng.randrange(60))
            e = fmt(begin + 3600, True)
            note = "generated: a time the list's parser cannot read, as some source rows"
        scope, region, asn = "Country", "", ""
        if reach == "Region":
            region = f"Region {rng.randrange(1, 40)}"
            scope = f"Region ({region})"
        elif reach == "Network":
            asn = str(rng.randrange(64512, 65535))
            scope = f"AS ({asn})"
        row = [f"{rng.getrandbits(32):08X}", b, e]
        row += [descriptive[name].pop() if descriptive[name] else ""
                for name in ("country", "bgp", "ap", "ibr")]
        row += [scope, region, asn]
        row += [descriptive[name].pop() if descriptive[name] else ""
                for name in ("cause", "confirmation", "manually_verified")]
        row += ["", note]
        w.writerow(row + [""] * (columns - len(row)))
    sys.stdout.buffer.write(("\ufeff" + out.getvalue()).encode("utf-8"))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("derive", "generate"):
        sys.exit("usage: make_outages.py derive IODA.csv | generate outage-distributions.csv")
    (derive if sys.argv[1] == "derive" else generate)(sys.argv[2])


if __name__ == "__main__":
    main()
