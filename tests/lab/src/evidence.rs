//! The shutdown's evidence bundle, as a researcher gets and checks it (`docs/transparency.md`,
//! "Evidence bundles"): fetched from the aggregator's route from a namespace that reaches it,
//! made again with `vantage-aggregator evidence` on the database, verified by the real
//! `vantage verify` in a namespace with no network at all, and opened to show that it holds the
//! failed canaries the lab's probes recorded while their uplink was cut.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::check::{Report, utc};
use crate::topology::{self, OFFLINE};

/// An envelope in a bundle is at most this large (`docs/transparency.md`: 16 MiB an envelope);
/// the lab reads no more of one whatever the zip's headers claim.
const MAX_ENVELOPE_BYTES: u64 = 16 << 20;

/// What the evidence checks need from the run.
pub struct Bundle {
    /// The run directory: the bundles and `vantage verify`'s output go here.
    pub dir: PathBuf,
    /// `vantage` (for `verify`).
    pub vantage: String,
    /// `vantage-aggregator` (for `evidence`).
    pub aggregator: String,
    /// This binary, which fetches the bundle inside a namespace (`vantage-lab fetch`).
    pub lab: String,
    /// The namespace the route is fetched from, and the aggregator's address seen from there.
    pub from_ns: &'static str,
    /// The aggregator's base URL, `http://ADDR:PORT`.
    pub url: String,
    /// The aggregator's database and detector settings, for the command.
    pub db: PathBuf,
    /// The `--detect-config` the aggregator runs with.
    pub detect: PathBuf,
    /// The aggregator's output, where `serve` prints its key.
    pub aggregator_log: PathBuf,
    /// The probes' namespaces and data directories, whose `identity.key` names their key.
    pub probes: Vec<(&'static str, PathBuf)>,
}

/// Runs every evidence check for the shutdown event `event` (a line of `timeline --json`) of
/// an uplink cut from `cut` to `back` (epoch seconds).
pub fn check_bundle(b: &Bundle, event: &Value, cut: f64, back: f64, report: &mut Report) {
    let started = Instant::now();
    checks(b, event, cut, back, report);
    eprintln!(
        "lab: evidence checks took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn checks(b: &Bundle, event: &Value, cut: f64, back: f64, report: &mut Report) {
    let Some(id) = event["id"].as_str() else {
        report.check(
            "evidence: the shutdown event has an id",
            Some(format!("no id in {event}")),
        );
        return;
    };
    let zip = b.dir.join(format!("evidence-{id}.zip"));
    let route = format!("/api/v1/timeline/{id}/evidence.zip");
    let fetched = fetch_in(b, &route, &zip);
    report.check(
        format!(
            "evidence: GET {route} from {} gives the shutdown's bundle",
            b.from_ns
        ),
        fetched.as_ref().err().map(|e| format!("{e:#}")),
    );
    if fetched.is_err() {
        return;
    }
    let from_route = match envelopes(&zip) {
        Ok(e) => e,
        Err(e) => {
            report.check(
                "evidence: the bundle is a zip of envelopes",
                Some(format!("{e:#}")),
            );
            return;
        }
    };

    // The same bundle from the command, on the database: the same envelopes byte for byte
    // (the checkpoint and the manifest's time may be later ones).
    let cmd_zip = b.dir.join(format!("evidence-{id}-command.zip"));
    let same = command_bundle(b, id, &cmd_zip).and_then(|()| {
        let from_command = envelopes(&cmd_zip)?;
        if from_command != from_route {
            let only_route = from_route.keys().filter(|k| !from_command.contains_key(*k));
            let only_cmd = from_command.keys().filter(|k| !from_route.contains_key(*k));
            bail!(
                "the route's {} envelopes and the command's {} differ (only in the route: {:?}; only from the command: {:?}; or the same names with other bytes)",
                from_route.len(),
                from_command.len(),
                only_route.take(3).collect::<Vec<_>>(),
                only_cmd.take(3).collect::<Vec<_>>()
            );
        }
        Ok(())
    });
    report.check(
        format!(
            "evidence: vantage-aggregator evidence {id} on the database holds the route's {} envelopes byte for byte",
            from_route.len()
        ),
        same.err().map(|e| format!("{e:#}")),
    );

    let offline = aggregator_key(&b.aggregator_log).and_then(|key| verify_offline(b, &zip, &key));
    let (verified, other_key) = match offline {
        Ok(o) => (o.verified, o.other_key),
        Err(e) => (Err(anyhow!("{e:#}")), Err(e)),
    };
    let seconds = verified.as_ref().map_or(0.0, |v| v.seconds);
    report.check(
        format!(
            "evidence: vantage verify {} --log-key KEY exits 0 in {OFFLINE} (only lo, down){}",
            zip.file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
            verified
                .as_ref()
                .map_or(String::new(), |v| format!(": {}", v.summary))
        ),
        verified.as_ref().err().map(|e| format!("{e:#}")),
    );
    report.check(
        format!(
            "evidence: with a key that is not the aggregator's it fails offline{}",
            other_key
                .as_ref()
                .map_or(String::new(), |said| format!(" ({said})"))
        ),
        other_key.as_ref().err().map(|e| format!("{e:#}")),
    );

    let probes = match probe_keys(&b.probes) {
        Ok(p) => p,
        Err(e) => {
            report.check("evidence: the probes' keys", Some(format!("{e:#}")));
            return;
        }
    };
    let want = event["probes"].as_u64().unwrap_or(0) as usize;
    let tally = tally(&from_route, &probes, cut, back);
    report.check(
        format!(
            "evidence: the bundle holds the failed canaries of the cut ({} to {}): {}",
            utc(cut),
            utc(back),
            tally.describe(&b.probes)
        ),
        tally.failure(&b.probes, want),
    );

    let kib = std::fs::metadata(&zip)
        .map_or(0, |m| m.len())
        .div_ceil(1024);
    let line = format!(
        "evidence bundle of the shutdown: {} envelopes, {kib} KiB, verified offline in {seconds:.1} s",
        from_route.len()
    );
    eprintln!("lab: {line}");
    report.check(
        line,
        (verified.is_ok() && seconds > 30.0)
            .then(|| "verification took longer than the lab's 30 s budget".to_string()),
    );
}

/// Fetches `route` from the aggregator into `out`, from inside the probe's namespace.
fn fetch_in(b: &Bundle, route: &str, out: &Path) -> Result<()> {
    topology::run_in(
        b.from_ns,
        &[
            &b.lab,
            "fetch",
            &format!("{}{route}", b.url),
            "--out",
            &out.display().to_string(),
            "--within-secs",
            "60",
        ],
    )?;
    Ok(())
}

/// `vantage-aggregator evidence ID --out FILE` on the aggregator's database, as its operator
/// would run it.
fn command_bundle(b: &Bundle, id: &str, out: &Path) -> Result<()> {
    topology::run(
        &b.aggregator,
        &[
            "evidence",
            id,
            "--out",
            &out.display().to_string(),
            "--db",
            &b.db.display().to_string(),
            "--detect-config",
            &b.detect.display().to_string(),
        ],
    )?;
    Ok(())
}

/// The aggregator's public key as `serve` publishes it: the line "test lists are signed with
/// key KEY" of its output (the key `vantage verify --log-key` takes, `docs/transparency.md`).
pub fn aggregator_key(log: &Path) -> Result<String> {
    const SAID: &str = "test lists are signed with key ";
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    text.lines()
        .find_map(|l| l.split_once(SAID).map(|(_, k)| k.trim().to_string()))
        .filter(|k| !k.is_empty())
        .with_context(|| format!("{} never printed its key ({SAID}...)", log.display()))
}

/// What `vantage verify` said.
struct Verified {
    /// Its last line (`verified: all N checks hold`), without the file's path.
    summary: String,
    /// How long it took.
    seconds: f64,
}

/// The two runs of `vantage verify` in the offline namespace.
struct Offline {
    /// With the aggregator's key: must exit 0.
    verified: Result<Verified>,
    /// With another key: must exit 1, what it said (so that a pass is not a verifier that
    /// accepts anything).
    other_key: Result<String>,
}

/// Runs `vantage verify ZIP --log-key KEY` in a namespace of its own that has only `lo`, down:
/// whatever the bundle needs, it cannot fetch. Then again with a key that is not the
/// aggregator's, which must fail. The namespace is removed afterwards (and by
/// `vantage-lab cleanup` if the run dies first: its name has the lab's prefix).
fn verify_offline(b: &Bundle, zip: &Path, key: &str) -> Result<Offline> {
    topology::run("ip", &["netns", "add", OFFLINE])?;
    let result = (|| {
        let links = topology::run("ip", &["-n", OFFLINE, "-o", "link", "show"])?;
        let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
        if names != ["lo"] || !links.contains("state DOWN") {
            bail!("{OFFLINE} is not offline: {}", links.trim());
        }
        let verified = run_verify(b, zip, key, "verify.out").and_then(|run| {
            if !run.ok {
                bail!("{}", run.detail);
            }
            Ok(Verified {
                summary: run.summary,
                seconds: run.seconds,
            })
        });
        let other = vantage_probe::envelope::Identity::generate()
            .context("making another key")?
            .public_key();
        let other_key = run_verify(b, zip, &other, "verify-other-key.out").and_then(|run| {
            if run.ok {
                bail!(
                    "exits 0 with a key that is not the aggregator's: {}",
                    run.summary
                );
            }
            Ok(run.summary)
        });
        Ok(Offline {
            verified,
            other_key,
        })
    })();
    let removed = topology::run("ip", &["netns", "del", OFFLINE]);
    let offline = result?;
    removed?;
    Ok(offline)
}

/// What one run of `vantage verify` said.
struct Run {
    /// It exited 0.
    ok: bool,
    /// How long it took.
    seconds: f64,
    /// Its summary line, without the file's path.
    summary: String,
    /// Its exit status, summary and first failing lines, and where the rest is.
    detail: String,
}

/// One `vantage verify ZIP --log-key KEY` in the offline namespace, its output saved as `save`
/// in the run directory.
fn run_verify(b: &Bundle, zip: &Path, key: &str, save: &str) -> Result<Run> {
    let started = Instant::now();
    let out = topology::netns_command(
        OFFLINE,
        &[
            b.vantage.as_str(),
            "verify",
            &zip.display().to_string(),
            "--log-key",
            key,
        ],
    )
    .output()
    .context("running vantage verify")?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let saved = b.dir.join(save);
    std::fs::write(&saved, format!("{stdout}{stderr}"))
        .with_context(|| format!("writing {}", saved.display()))?;
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("verified") || l.starts_with("NOT VERIFIED"))
        .map_or("no summary line", |l| {
            l.rsplit_once(" in /").map_or(l, |(s, _)| s).trim()
        })
        .to_string();
    let fails: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.starts_with("FAIL") || l.contains("error"))
        .take(3)
        .collect();
    let detail = format!(
        "{}: {summary}: {} (all of it in {})",
        out.status,
        fails.join(" | "),
        saved.display()
    );
    Ok(Run {
        ok: out.status.success(),
        seconds,
        summary,
        detail,
    })
}

/// The envelopes of a bundle: `envelopes/<id>.json` (by id) and their bytes.
fn envelopes(zip: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let file = std::fs::File::open(zip).with_context(|| format!("opening {}", zip.display()))?;
    let mut archive =
        zip::ZipArchive::new(file).with_context(|| format!("{}: not a zip", zip.display()))?;
    let mut found = BTreeMap::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .with_context(|| format!("{}: entry {i}", zip.display()))?;
        let name = entry
            .name()
            .with_context(|| format!("{}: entry {i} has no readable name", zip.display()))?
            .to_string();
        let Some(id) = name
            .split_once("/envelopes/")
            .and_then(|(_, f)| f.strip_suffix(".json"))
            .map(str::to_string)
        else {
            continue;
        };
        let mut bytes = Vec::new();
        entry
            .take(MAX_ENVELOPE_BYTES + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: reading {name}", zip.display()))?;
        if bytes.len() as u64 > MAX_ENVELOPE_BYTES {
            bail!(
                "{}: {name} is larger than an envelope can be",
                zip.display()
            );
        }
        found.insert(id, bytes);
    }
    Ok(found)
}

/// Each probe's public key (base64, as envelopes name it), from its data directory.
fn probe_keys(probes: &[(&str, PathBuf)]) -> Result<BTreeMap<String, String>> {
    let mut keys = BTreeMap::new();
    for (ns, data) in probes {
        let path = data.join("identity.key");
        if !path.is_file() {
            bail!("{ns} has no key at {}", path.display());
        }
        let (identity, _) = vantage_probe::envelope::Identity::load_or_create(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        keys.insert(identity.public_key(), ns.to_string());
    }
    Ok(keys)
}

/// What a bundle's envelopes are, for the shutdown of the lab.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    /// Failed canaries measured during the cut, per probe namespace.
    during: BTreeMap<String, usize>,
    /// Failed canaries of the lab's probes measured outside the cut (the event's edges).
    outside: usize,
    /// Envelopes that are not a failed canary of a lab probe, and why (the first few).
    foreign: Vec<String>,
    /// How many envelopes were foreign.
    foreign_count: usize,
}

/// Sorts the envelopes: failed canary rounds (fewer than half of the targets answered, as the
/// shutdown detector counts them: `docs/transparency.md`, `vantage verify` step 6) of the lab's
/// probes (`keys`: key to namespace), measured within the cut `[cut, back]` or not.
fn tally(
    envelopes: &BTreeMap<String, Vec<u8>>,
    keys: &BTreeMap<String, String>,
    cut: f64,
    back: f64,
) -> Tally {
    let mut t = Tally::default();
    let foreign = |t: &mut Tally, why: String| {
        t.foreign_count += 1;
        if t.foreign.len() < 3 {
            t.foreign.push(why);
        }
    };
    for (id, bytes) in envelopes {
        let text = String::from_utf8_lossy(bytes);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let v = match vantage_probe::envelope::verify(line) {
            Ok(v) => v,
            Err(e) => {
                foreign(&mut t, format!("{id}: {e}"));
                continue;
            }
        };
        let Some(ns) = keys.get(&v.key) else {
            foreign(
                &mut t,
                format!("{id}: signed by {}, not a lab probe", v.key),
            );
            continue;
        };
        let m: Value = serde_json::from_str(v.measurement).unwrap_or(Value::Null);
        let keys = &m["test_keys"];
        let failed = matches!(
            (keys["ok"].as_u64(), keys["total"].as_u64()),
            (Some(ok), Some(total)) if ok <= total && ok * 2 < total
        );
        if m["test_name"] != "canary" || !failed {
            foreign(
                &mut t,
                format!(
                    "{id}: {} of {ns} with test_keys {keys}, not a failed canary",
                    m["test_name"]
                ),
            );
            continue;
        }
        let at = m["measurement_start_time"]
            .as_str()
            .and_then(vantage_aggregator::store::model::parse_time);
        // The measurement's time is in whole seconds: a round started in the second of the cut
        // counts.
        match at {
            Some(at) if at as f64 >= cut.floor() && at as f64 <= back => {
                *t.during.entry(ns.clone()).or_default() += 1;
            }
            Some(_) => t.outside += 1,
            None => foreign(&mut t, format!("{id}: no measurement_start_time")),
        }
    }
    t
}

impl Tally {
    fn describe(&self, probes: &[(&str, PathBuf)]) -> String {
        let per: Vec<String> = probes
            .iter()
            .map(|(ns, _)| format!("{} of {ns}", self.during.get(*ns).copied().unwrap_or(0)))
            .collect();
        format!(
            "{} during it, {} more in the event's span outside it",
            per.join(", "),
            self.outside
        )
    }

    /// Every probe was cut: each must have failed canaries during the cut, at least as many
    /// probes as the event counts, and nothing else may be in the bundle.
    fn failure(&self, probes: &[(&str, PathBuf)], event_probes: usize) -> Option<String> {
        let mut wrong = Vec::new();
        for (ns, _) in probes {
            if self.during.get(*ns).copied().unwrap_or(0) == 0 {
                wrong.push(format!("no failed canary of {ns} during the cut"));
            }
        }
        if self.during.len() < event_probes.max(1) {
            wrong.push(format!(
                "failed canaries of {} probes during the cut, the event counts {event_probes}",
                self.during.len()
            ));
        }
        if self.foreign_count > 0 {
            wrong.push(format!(
                "{} envelopes are not failed canaries of the lab's probes: {}",
                self.foreign_count,
                self.foreign.join("; ")
            ));
        }
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

/// `vantage-lab fetch URL --out FILE`: a plain HTTP GET (the lab's aggregator speaks HTTP), run
/// inside a namespace that reaches the aggregator. A 503 (no checkpoint holds the event's
/// measurements yet, or every export slot is taken) or a refused connection is tried again
/// until `within`; any other answer but 200 is an error with the server's words.
pub fn fetch(url: &str, out: &Path, within: Duration) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("{url}: the host must be an address and a port"))?;
    let path = if path.is_empty() { "/" } else { path };
    let started = Instant::now();
    loop {
        let why = match get(addr, authority, path) {
            Ok((200, body)) => {
                let partial = PathBuf::from(format!("{}.partial", out.display()));
                std::fs::write(&partial, &body)
                    .with_context(|| format!("writing {}", partial.display()))?;
                std::fs::rename(&partial, out)
                    .with_context(|| format!("renaming to {}", out.display()))?;
                return Ok(());
            }
            Ok((503, body)) => format!("503: {}", String::from_utf8_lossy(&body).trim()),
            Ok((status, body)) => {
                bail!("{url}: {status}: {}", String::from_utf8_lossy(&body).trim())
            }
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > within {
            bail!("{url}: still {why} after {within:?}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The largest body `fetch` takes: far beyond the lab's bundle, well below what would hurt.
const MAX_BODY_BYTES: u64 = 256 << 20;

/// One `GET` with `Connection: close`: the status and the body (whole, or de-chunked).
fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // One write: a request sent in pieces may be answered (and closed) after the first one.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: vantage-lab\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending to {addr}"))?;
    let mut reader = BufReader::new(stream.take(MAX_BODY_BYTES + 64 * 1024));
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{addr}: not an HTTP answer: {status_line:?}"))?;
    let mut chunked = false;
    let mut length: Option<u64> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("{addr}: the answer ends inside its headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = u64::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .with_context(|| format!("{addr}: a bad chunk size {size:?}"))?;
            if size == 0 {
                break;
            }
            if body.len() as u64 + size > MAX_BODY_BYTES {
                bail!("{addr}: the body is larger than {MAX_BODY_BYTES} bytes");
            }
            let start = body.len();
            body.resize(start + size as usize, 0);
            reader.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else {
        let limit = length.unwrap_or(MAX_BODY_BYTES).min(MAX_BODY_BYTES);
        (&mut reader).take(limit).read_to_end(&mut body)?;
        if length.is_some_and(|l| body.len() as u64 != l) {
            bail!(
                "{addr}: the body ends after {} bytes of {length:?}",
                body.len()
            );
        }
    }
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    use vantage_probe::envelope::Identity;

    fn canary(who: &Identity, at: &str, ok: u64, total: u64) -> (String, Vec<u8>) {
        let m = serde_json::json!({
            "test_name": "canary",
            "measurement_start_time": at,
            "probe_asn": "AS64500",
            "probe_cc": "IR",
            "test_keys": {"ok": ok, "total": total},
        });
        let (id, line) = who.seal(&m.to_string()).expect("seal");
        (id.as_str().to_string(), format!("{line}\n").into_bytes())
    }

    fn secs(t: &str) -> f64 {
        vantage_aggregator::store::model::parse_time(t).expect("time") as f64
    }

    #[test]
    fn only_failed_canaries_of_the_lab_probes_during_the_cut_count() {
        let p1 = Identity::generate().expect("key");
        let p2 = Identity::generate().expect("key");
        let stranger = Identity::generate().expect("key");
        let keys = BTreeMap::from([
            (p1.public_key(), "vl-probe1".to_string()),
            (p2.public_key(), "vl-probe2".to_string()),
        ]);
        let probes = vec![
            ("vl-probe1", PathBuf::from("p1")),
            ("vl-probe2", PathBuf::from("p2")),
        ];
        let (cut, back) = (
            secs("2026-12-01 04:00:00") + 0.4,
            secs("2026-12-01 04:02:30"),
        );
        let mut bundle = BTreeMap::from([
            canary(&p1, "2026-12-01 04:00:00", 0, 2),
            canary(&p1, "2026-12-01 04:01:00", 0, 2),
            canary(&p2, "2026-12-01 04:02:30", 0, 2),
            canary(&p2, "2026-12-01 04:03:10", 0, 2),
        ]);
        let t = tally(&bundle, &keys, cut, back);
        assert_eq!(t.during.get("vl-probe1"), Some(&2));
        assert_eq!(t.during.get("vl-probe2"), Some(&1));
        assert_eq!(t.outside, 1);
        assert_eq!(t.failure(&probes, 2), None);
        assert!(
            t.describe(&probes)
                .contains("2 of vl-probe1, 1 of vl-probe2")
        );

        // The event counts more probes than the bundle shows.
        let why = t.failure(&probes, 3).expect("fails");
        assert!(why.contains("the event counts 3"), "{why}");

        // A probe that was online, a stranger's canary and an altered byte are not evidence.
        for (what, (id, bytes)) in [
            (
                "not a failed canary",
                canary(&p1, "2026-12-01 04:01:02", 1, 2),
            ),
            (
                "not a lab probe",
                canary(&stranger, "2026-12-01 04:01:04", 0, 2),
            ),
        ] {
            let mut b = bundle.clone();
            b.insert(id, bytes);
            let why = tally(&b, &keys, cut, back)
                .failure(&probes, 2)
                .expect("fails");
            assert!(why.contains(what), "{what}: {why}");
        }
        let (id, mut bytes) = canary(&p2, "2026-12-01 04:01:06", 0, 2);
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        bundle.insert(id, bytes);
        let why = tally(&bundle, &keys, cut, back)
            .failure(&probes, 2)
            .expect("fails");
        assert!(why.contains("1 envelopes are not failed canaries"), "{why}");

        // Only one probe's canaries during the cut.
        let only_one = BTreeMap::from([canary(&p1, "2026-12-01 04:01:00", 0, 2)]);
        let why = tally(&only_one, &keys, cut, back)
            .failure(&probes, 2)
            .expect("fails");
        assert!(why.contains("no failed canary of vl-probe2"), "{why}");
    }

    #[test]
    fn the_key_is_the_one_serve_prints() {
        let dir = std::env::temp_dir().join(format!("vantage-lab-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let log = dir.join("aggregator.log");
        std::fs::write(
            &log,
            "starting\nvantage-aggregator: test lists are signed with key AbC+/=\nmore\n",
        )
        .expect("write");
        assert_eq!(aggregator_key(&log).expect("key"), "AbC+/=");
        std::fs::write(&log, "vantage-aggregator: listening\n").expect("write");
        let err = aggregator_key(&log).expect_err("no key");
        assert!(err.to_string().contains("never printed its key"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A one-shot server on loopback answering `answers` in turn, one per connection.
    fn serve(answers: Vec<&'static [u8]>) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                // The whole request head, then the answer.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let _ = s.write_all(answer);
            }
        });
        addr
    }

    #[test]
    fn fetch_retries_a_503_and_reads_a_chunked_body() {
        let addr = serve(vec![
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nlater",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nPK\x03\r\n2\r\nzz\r\n0\r\n\r\n",
        ]);
        let dir = std::env::temp_dir().join(format!("vantage-lab-fetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = dir.join("b.zip");
        fetch(&format!("http://{addr}/x"), &out, Duration::from_secs(10)).expect("fetched");
        assert_eq!(std::fs::read(&out).expect("read"), b"PK\x03zz");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fetch_gives_up_on_a_404_with_the_servers_words_and_writes_nothing() {
        let addr = serve(vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\nno event 0123",
        ]);
        let dir = std::env::temp_dir().join(format!("vantage-lab-404-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let out = dir.join("b.zip");
        let err =
            fetch(&format!("http://{addr}/x"), &out, Duration::from_secs(10)).expect_err("404");
        assert!(err.to_string().contains("404: no event 0123"), "{err}");
        assert!(!out.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_truncated_body_is_an_error() {
        let addr = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nPK"]);
        let err = get(addr, "x", "/").expect_err("truncated");
        assert!(err.to_string().contains("ends after 2 bytes"), "{err}");
    }
}
