//! `report.html` of an evidence bundle: one self-contained page (inline CSS, an inline SVG
//! chart, no script and nothing fetched, so it opens offline and shows the same thing in ten
//! years) that says in plain words what happened, shows the network's signals around it and
//! the measurements behind it, and how to check all of it with `vantage verify`.

use std::fmt::Write as _;

use crate::detect::signals::SignalBin;
use crate::store::model::{Event, Kind, Layer, Scope, parse_time};

use super::{Described, MAX_ENVELOPES, REPORT_ROWS};

/// What the report shows.
#[derive(Debug)]
pub struct Report<'a> {
    /// The event.
    pub event: &'a Event,
    /// The signals around it.
    pub bins: &'a [SignalBin],
    /// The first [`REPORT_ROWS`] measurements.
    pub evidence: &'a [Described],
    /// Measurements in the bundle.
    pub envelopes: usize,
    /// Of those, not in the log.
    pub not_logged: usize,
    /// Whether [`MAX_ENVELOPES`] cut them short.
    pub truncated: bool,
    /// Measurements newer than the checkpoint, left out.
    pub newer_than_checkpoint: usize,
    /// How the evidence arrived, in words (information only: `arrival.json`).
    pub arrival: &'a str,
    /// The checkpoint's tree size.
    pub checkpoint_size: u64,
    /// The aggregator's key, base64.
    pub public_key: &'a str,
    /// Its signed-note verifier key.
    pub verifier_key: &'a str,
    /// The bundle's file name.
    pub file_name: &'a str,
    /// When the bundle was made.
    pub made_at: &'a str,
}

/// `&`, `<`, `>`, `"` and `'` as HTML character references.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The "arrived by" cell of a measurement: its route, and for a relay the relaying probe's key
/// (escaped: the store gave it, the page must not take it as markup).
fn routed_cell(routed: Option<&super::arrival::Routed>) -> String {
    match routed {
        None => String::new(),
        Some(r) => match &r.relayed_by {
            Some(key) => format!("{} by <code>{}</code>", escape(&r.route), escape(key)),
            None => escape(&r.route),
        },
    }
}

/// What a blocking layer means, for someone who does not read packet captures.
fn layer_words(layer: Layer) -> &'static str {
    match layer {
        Layer::Dns => {
            "at the DNS layer: the network's resolvers answered with wrong addresses or none, while the test helper outside resolved the site"
        }
        Layer::Tcp => {
            "at the TCP layer: connections to the site's addresses failed, while the test helper outside connected"
        }
        Layer::Tls => {
            "at the TLS layer: the secure handshake with the site was cut or tampered with, while the test helper outside completed it"
        }
        Layer::Http => {
            "at the HTTP layer: the page failed to load or came back different from the one the test helper outside received"
        }
    }
}

fn place(event: &Event) -> String {
    let cc = &event.entity.cc;
    match (event.scope, &event.entity.asn) {
        (Scope::Full, _) => format!("every monitored network of {cc}"),
        (Scope::Regional, _) => format!("the networks {} of {cc}", event.entity.asns.join(", ")),
        (_, Some(asn)) => format!("network {asn} of {cc}"),
        (_, None) => cc.clone(),
    }
}

fn span(event: &Event) -> String {
    match &event.end {
        Some(end) => format!("from {} to {end} UTC", event.start),
        None => format!(
            "since {} UTC (still ongoing when this bundle was made)",
            event.start
        ),
    }
}

/// The plain-language summary of the event.
pub fn summary(event: &Event, envelopes: usize) -> String {
    let probes = match event.probes {
        1 => "1 probe".to_string(),
        n => format!("{n} probes"),
    };
    match event.kind {
        Kind::Shutdown => {
            let mut s = format!(
                "{} lost its connection to the Internet {}. {probes} in it went dark together; \
                 this bundle holds {envelopes} failed connectivity checks (canaries) that they \
                 recorded while cut off and uploaded afterwards.",
                capitalise(&place(event)),
                span(event)
            );
            if event.suspected {
                s.push_str(
                    " It is marked suspected: most probes only fell silent, and too few \
                     canaries confirm the cut yet.",
                );
            }
            s
        }
        Kind::Blocking => {
            let what = match &event.category {
                Some(c) => format!("sites of category {c} ({})", event.targets.join(", ")),
                None => event.targets.join(", "),
            };
            let how = event.layer.map(layer_words).unwrap_or("");
            format!(
                "{what} was blocked in {} {}, {how}. {envelopes} measurements from {probes} \
                 show it.",
                place(event),
                span(event)
            )
        }
        Kind::Throttling => format!(
            "{} was slowed down in {} {}{}. {envelopes} measurements from {probes} show it.",
            event.targets.join(", "),
            place(event),
            span(event),
            event
                .rate_kbps
                .map(|r| format!(", to about {r:.0} kbit/s"))
                .unwrap_or_default()
        ),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The anomaly ratio a chart shows: the event's layer, else the highest.
fn ratio(bin: &SignalBin, layer: Option<Layer>) -> Option<f64> {
    let r = bin.anomaly_ratio.as_ref()?;
    Some(match layer {
        Some(Layer::Dns) => r.dns,
        Some(Layer::Tcp) => r.tcp,
        Some(Layer::Tls) => r.tls,
        Some(Layer::Http) => r.http,
        None => r.dns.max(r.tcp).max(r.tls).max(r.http),
    })
}

/// An SVG chart of the signals: canary success and the anomaly ratio (0 to 1) and the probes
/// online (scaled to their highest), over time, with the event's span shaded.
pub fn chart(event: &Event, bins: &[SignalBin]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 220.0;
    const LEFT: f64 = 40.0;
    const TOP: f64 = 10.0;
    let times: Vec<i64> = bins.iter().filter_map(|b| parse_time(&b.start)).collect();
    let (Some(&t0), Some(&t1)) = (times.first(), times.last()) else {
        return "<p>No signals were recorded in this window.</p>".into();
    };
    let t1 = t1.max(t0 + 1);
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (W - LEFT - 10.0);
    let y = |v: f64| TOP + (1.0 - v.clamp(0.0, 1.0)) * (H - TOP - 30.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
         aria-label=\"Signals around the event\">"
    );
    let start = event.start_secs().clamp(t0, t1);
    let end = event.end_secs().unwrap_or(t1).clamp(t0, t1);
    let _ = write!(
        svg,
        "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fde2e1\"/>",
        x(start),
        (x(end) - x(start)).max(1.0),
        H - TOP - 30.0
    );
    for v in [0.0, 0.5, 1.0] {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ccc\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{v}</text>",
            W - 10.0,
            y(v),
            y(v),
            LEFT - 4.0,
            y(v) + 3.0
        );
    }
    let max_online = bins
        .iter()
        .map(|b| b.probes_online)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    type Value<'a> = Box<dyn Fn(&SignalBin) -> Option<f64> + 'a>;
    let series: [(&str, &str, Value); 3] = [
        ("#2a7d2a", "canary success", Box::new(|b| b.canary_success)),
        (
            "#c0392b",
            "anomaly ratio",
            Box::new(|b| ratio(b, event.layer)),
        ),
        (
            "#1f5fa8",
            "probes online (scaled)",
            Box::new(move |b| Some(b.probes_online as f64 / max_online)),
        ),
    ];
    for (i, (colour, name, value)) in series.iter().enumerate() {
        let points: Vec<String> = bins
            .iter()
            .filter_map(|b| Some((parse_time(&b.start)?, value(b)?)))
            .map(|(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        if !points.is_empty() {
            let _ = write!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            LEFT + i as f64 * 200.0,
            H - 12.0,
            LEFT + 14.0 + i as f64 * 200.0,
            H - 8.0,
            escape(name)
        );
    }
    let label = |t: i64, anchor: &str| {
        format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            H - 20.0,
            escape(&crate::store::model::format_time(t))
        )
    };
    svg.push_str(&label(t0, "start"));
    svg.push_str(&label(t1, "end"));
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;color:#222;line-height:1.45}h1{font-size:1.5rem}h2{font-size:1.15rem;\
margin-top:2rem}table{border-collapse:collapse;width:100%;font-size:.85rem}td,th{border:1px \
solid #ddd;padding:.25rem .4rem;text-align:left;vertical-align:top}th{background:#f3f3f3}\
code,pre{font-family:ui-monospace,monospace;font-size:.85rem;word-break:break-all}pre{background:\
#f6f6f6;padding:.6rem;white-space:pre-wrap}.note{color:#555;font-size:.9rem}";

/// The whole page.
pub fn html(r: &Report<'_>) -> String {
    let e = r.event;
    let mut page = String::new();
    let title = format!(
        "Evidence: {} in {} ({})",
        e.kind.as_str(),
        e.entity.cc,
        e.start
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let _ = write!(
        page,
        "<h2>What happened</h2>\n<p>{}</p>\n<p class=\"note\">Event <code>{}</code>, \
         {} scope, confidence {}, status {}. Made {} UTC from the aggregator's store; every \
         measurement below is signed by the probe that made it and proven to be in the \
         aggregator's transparency log (checkpoint of {} entries).</p>\n",
        escape(&summary(e, r.envelopes)),
        escape(&e.id),
        escape(&format!("{:?}", e.scope).to_lowercase()),
        e.confidence,
        escape(&e.status),
        escape(r.made_at),
        r.checkpoint_size
    );
    if r.truncated {
        let _ = writeln!(
            page,
            "<p><strong>This bundle holds the first {MAX_ENVELOPES} measurements only.</strong> \
             More exist; ask the aggregator for them by the event's span.</p>"
        );
    }
    if r.newer_than_checkpoint > 0 {
        let _ = writeln!(
            page,
            "<p class=\"note\">{} measurements arrived after the checkpoint and are left out; a \
             bundle made later holds them.</p>",
            r.newer_than_checkpoint
        );
    }
    if r.not_logged > 0 {
        let _ = writeln!(
            page,
            "<p class=\"note\">{} measurements are not in the transparency log (unsigned OONI \
             imports, or stored with the log turned off): their inclusion cannot be proven.</p>",
            r.not_logged
        );
    }
    let _ = write!(
        page,
        "<h2>Signals around the event</h2>\n{}\n<p class=\"note\">Five-minute bins of the \
         network, {} hours before and after (the shaded span is the event). The same bins are in \
         <code>signals.json</code>.</p>\n",
        chart(e, r.bins),
        super::SIGNAL_MARGIN_SECONDS / 3600
    );
    let _ = write!(
        page,
        "<h2>How the evidence arrived</h2>\n<p>{}</p>\n<p class=\"note\">As the aggregator \
         recorded it, for each measurement in <code>arrival.json</code>: uploaded by the probe \
         that made it, relayed by another probe (named by its key), carried in an export file, \
         or imported from OONI's data. Information only: no signature in this bundle covers it, \
         and <code>vantage verify</code> shows it without checking it.</p>\n",
        escape(r.arrival)
    );
    let _ = write!(
        page,
        "<h2>The evidence</h2>\n<p>{} measurements, each in <code>envelopes/&lt;id&gt;.json</code> \
         exactly as stored, with its inclusion proof in <code>proofs.json</code>.{}</p>\n\
         <table><thead><tr><th>measured (UTC)</th><th>test</th><th>target</th><th>verdict</th>\
         <th>arrived by</th><th>log entry</th><th>measurement id</th></tr></thead><tbody>\n",
        r.envelopes,
        if r.envelopes > r.evidence.len() {
            format!(
                " The first {} are listed here.",
                r.evidence.len().min(REPORT_ROWS)
            )
        } else {
            String::new()
        }
    );
    for d in r.evidence {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&d.measured_at),
            escape(&d.test_name),
            escape(&d.input),
            escape(&d.verdict),
            routed_cell(d.routed.as_ref()),
            d.leaf_index
                .map_or("not logged".to_string(), |i| i.to_string()),
            escape(&d.id)
        );
    }
    page.push_str("</tbody></table>\n");
    let _ = write!(
        page,
        "<h2>How to verify</h2>\n<p>With the Vantage probe's command line, offline:</p>\n\
         <pre>vantage verify {} --log-key {}</pre>\n<p>It checks the hash of every file against \
         <code>MANIFEST.json</code>, every measurement's signature and that its file is named by \
         its id, every inclusion proof against the checkpoint, the checkpoint's signature by the \
         aggregator's key, and recomputes every verdict with the rules named in \
         <code>detector.json</code>. It prints each check and exits with a non-zero status if \
         any fails.</p>\n<p>Compare the key with the one the aggregator publishes (it prints it \
         when it starts): <code>{}</code>, verifier key <code>{}</code>. Without \
         <code>--log-key</code>, <code>vantage verify</code> checks the checkpoint with the key \
         inside the bundle and says so.</p>\n</body></html>\n",
        escape(r.file_name),
        escape(r.public_key),
        escape(r.public_key),
        escape(r.verifier_key)
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::Entity;

    fn event() -> Event {
        Event {
            id: "0123456789abcdef".into(),
            entity: Entity {
                cc: "IR".into(),
                asn: Some("AS64500".into()),
                asns: Vec::new(),
            },
            kind: Kind::Blocking,
            scope: Scope::Service,
            layer: Some(Layer::Dns),
            category: None,
            targets: vec!["<b>x.example".into()],
            start: "2026-01-05 10:00:00".into(),
            end: None,
            status: "ongoing".into(),
            suspected: false,
            confidence: 0.9,
            probes: 3,
            evidence: Vec::new(),
            rate_kbps: None,
        }
    }

    #[test]
    fn the_page_fetches_nothing_and_escapes_what_it_shows() {
        let e = event();
        let relayed = Described {
            id: "ab".into(),
            routed: Some(super::super::arrival::Routed {
                route: "relay".into(),
                relayed_by: Some("<i>KEY+/=".into()),
            }),
            ..Described::default()
        };
        let page = html(&Report {
            event: &e,
            bins: &[],
            evidence: std::slice::from_ref(&relayed),
            envelopes: 7,
            not_logged: 0,
            truncated: false,
            newer_than_checkpoint: 0,
            arrival: "Evidence arrived: 2 by <upload>.",
            checkpoint_size: 10,
            public_key: "KEY",
            verifier_key: "VK",
            file_name: "evidence-0123456789abcdef.zip",
            made_at: "2026-01-05 12:00:00",
        });
        assert!(
            !page.contains("<b>x.example"),
            "a target is text, not markup"
        );
        assert!(page.contains("&lt;b&gt;x.example was blocked in network AS64500 of IR"));
        assert!(page.contains("Evidence arrived: 2 by &lt;upload&gt;."));
        assert!(
            page.contains("<td>relay by <code>&lt;i&gt;KEY+/=</code></td>"),
            "a relayer's key is text: {page}"
        );
        assert!(page.contains("vantage verify evidence-0123456789abcdef.zip --log-key KEY"));
        for fetch in ["src=", "href=", "@import", "url("] {
            assert!(!page.contains(fetch), "{fetch} in the page");
        }
    }

    #[test]
    fn a_shutdown_is_said_in_plain_words() {
        let mut e = event();
        e.kind = Kind::Shutdown;
        e.scope = Scope::Network;
        e.layer = None;
        e.end = Some("2026-01-05 11:00:00".into());
        e.suspected = true;
        let s = summary(&e, 12);
        assert!(
            s.starts_with(
                "Network AS64500 of IR lost its connection to the Internet from 2026-01-05 10:00:00 to 2026-01-05 11:00:00 UTC."
            ),
            "{s}"
        );
        assert!(s.contains("12 failed connectivity checks"), "{s}");
        assert!(s.contains("suspected"), "{s}");
    }
}
