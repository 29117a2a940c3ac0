//! The app scenarios: WhatsApp, Telegram, Signal and Facebook Messenger as the probe's app tests
//! (`vantage run --test whatsapp|telegram|signal|facebook_messenger`, docs/apps.md) see them,
//! pointed at the lab's hosts by an apps file the lab writes (`--apps-file`).
//!
//! Each app has one thing the router censors, the way censors block the app (OONI specs ts-018,
//! ts-020, ts-029, ts-019), and one thing it leaves alone, as a control:
//!
//! - WhatsApp: its chat endpoint's address is dropped; the registration server and the web
//!   client, on another address, are left alone.
//! - Telegram: its data centre's address is dropped; the web client is left alone.
//! - Signal: its service is reset on its SNI (the `string` match of [`Technique::SniReset`]); its
//!   certificate comes from the lab's CA, which the apps file gives as Signal's pin.
//! - Facebook Messenger: the ISP's resolver answers one endpoint's name with a bogon; the other
//!   endpoint resolves, inside the netblock the apps file declares as Facebook's, and connects.
//!
//! The app tests decide on all endpoints together (ts-018: `whatsapp_endpoints_status` is
//! `blocked` when every endpoint is; ts-020: `telegram_tcp_blocking` when no data centre
//! connects), so the controls of WhatsApp and Telegram are their web checks, not a second
//! endpoint: a second, reachable endpoint would make the app reachable.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::Value;

use crate::check::{Report, Timeline};
use crate::scenario::PEYVANDHA_1;

/// Last octets, on the lab's Internet (`SITES_NET`), of the apps' hosts.
const WHATSAPP_ENDPOINT: u8 = 21;
const WHATSAPP_WEB: u8 = 22;
const TELEGRAM_DC: u8 = 23;
const TELEGRAM_WEB: u8 = 24;
const SIGNAL: u8 = 25;
const SIGNAL_STORAGE: u8 = 26;
/// Facebook's hosts live in [`FACEBOOK_NET`], which the apps file declares as Facebook's.
const FACEBOOK_API: u8 = 33;
const FACEBOOK_GRAPH: u8 = 34;
/// The last octet and length of Facebook's netblock in the lab.
const FACEBOOK_NET: (u8, u8) = (32, 28);

/// The WhatsApp chat endpoint's name: the scorer knows the endpoints as `eN.whatsapp.net`
/// (`probe/src/verdict/services/apps.rs`), so the lab's resolver serves that name.
pub const WHATSAPP_ENDPOINT_NAME: &str = "e1.whatsapp.net";
const WHATSAPP_WEB_NAME: &str = "whatsapp-web.lab";
const TELEGRAM_WEB_NAME: &str = "telegram-web.lab";
/// The name Signal's service is reset on.
pub const SIGNAL_NAME: &str = "chat.signal.lab";
const SIGNAL_UPTIME_NAME: &str = "uptime.signal.lab";
/// Signal's second service, left alone: its handshake is checked against the pin alone.
const SIGNAL_STORAGE_NAME: &str = "storage.signal.lab";
/// Facebook's endpoint the ISP's resolver lies about.
pub const FACEBOOK_BLOCKED_NAME: &str = "b-api.facebook.lab";
const FACEBOOK_CONTROL_NAME: &str = "b-graph.facebook.lab";

fn addr(host: u8) -> Ipv4Addr {
    let [a, b, c, _] = crate::topology::SITES_NET.octets();
    Ipv4Addr::new(a, b, c, host)
}

/// The apps' addresses on the lab's Internet.
pub fn addrs() -> Vec<Ipv4Addr> {
    [
        WHATSAPP_ENDPOINT,
        WHATSAPP_WEB,
        TELEGRAM_DC,
        TELEGRAM_WEB,
        SIGNAL,
        SIGNAL_STORAGE,
        FACEBOOK_API,
        FACEBOOK_GRAPH,
    ]
    .into_iter()
    .map(addr)
    .collect()
}

/// The names the lab's CA certificate must cover: Signal's services.
pub const TLS_NAMES: &[&str] = &[SIGNAL_NAME, SIGNAL_STORAGE_NAME];

/// `--host-record` and `--local` arguments for the Internet's resolver: every app name's real
/// address, and authority over `whatsapp.net` so that no query for it leaves the lab.
pub fn net_resolver_args() -> Vec<String> {
    let mut args = vec!["--local=/whatsapp.net/".to_string()];
    for (name, host) in [
        (WHATSAPP_ENDPOINT_NAME, WHATSAPP_ENDPOINT),
        (WHATSAPP_WEB_NAME, WHATSAPP_WEB),
        (TELEGRAM_WEB_NAME, TELEGRAM_WEB),
        (SIGNAL_NAME, SIGNAL),
        (SIGNAL_UPTIME_NAME, SIGNAL),
        (SIGNAL_STORAGE_NAME, SIGNAL_STORAGE),
        (FACEBOOK_BLOCKED_NAME, FACEBOOK_API),
        (FACEBOOK_CONTROL_NAME, FACEBOOK_GRAPH),
    ] {
        args.push(format!("--host-record={name},{}", addr(host)));
    }
    args
}

/// The ISP resolver's lie: Facebook's API name is the national blockpage's bogon.
pub fn isp_resolver_args() -> Vec<String> {
    vec![format!("--address=/{FACEBOOK_BLOCKED_NAME}/{PEYVANDHA_1}")]
}

/// The router's rules: WhatsApp's endpoint and Telegram's data centre dropped, Signal reset on
/// its SNI (RFC 6066 §3: the name travels in the clear in the ClientHello).
pub fn router_rules() -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut rules = Vec::new();
    for host in [WHATSAPP_ENDPOINT, TELEGRAM_DC] {
        rules.push(s(&[
            "iptables",
            "-A",
            "FORWARD",
            "-d",
            &addr(host).to_string(),
            "-j",
            "DROP",
        ]));
    }
    rules.push(s(&[
        "iptables",
        "-A",
        "FORWARD",
        "-p",
        "tcp",
        "--dport",
        "443",
        "-m",
        "string",
        "--string",
        SIGNAL_NAME,
        "--algo",
        "bm",
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]));
    rules
}

/// The apps file (docs/apps.md, "The data file") pointing every app at the lab's hosts, with
/// the lab's CA as Signal's pin.
pub fn apps_file(ca_pem: &str) -> String {
    format!(
        "[whatsapp]\n\
         endpoints = [{WHATSAPP_ENDPOINT_NAME:?}]\n\
         ports = [443, 5222]\n\
         registration_url = \"http://{WHATSAPP_WEB_NAME}/\"\n\
         web_url = \"http://{WHATSAPP_WEB_NAME}/\"\n\
         \n\
         [telegram]\n\
         access_points = [\"{dc}\"]\n\
         ports = [80, 443]\n\
         web_url = \"http://{TELEGRAM_WEB_NAME}/\"\n\
         \n\
         [signal]\n\
         urls = [\"https://{SIGNAL_NAME}/\", \"https://{SIGNAL_STORAGE_NAME}/\"]\n\
         uptime_host = {SIGNAL_UPTIME_NAME:?}\n\
         ca_pem = [{ca_pem:?}]\n\
         \n\
         [facebook_messenger]\n\
         endpoints = [\n\
         \x20   {{ name = \"b_api\", host = {FACEBOOK_BLOCKED_NAME:?} }},\n\
         \x20   {{ name = \"b_graph\", host = {FACEBOOK_CONTROL_NAME:?} }},\n\
         ]\n\
         netblocks = [\"{net}/{len}\"]\n\
         port = 443\n",
        dc = addr(TELEGRAM_DC),
        net = addr(FACEBOOK_NET.0),
        len = FACEBOOK_NET.1,
    )
}

/// One app test and what a probe behind the router must report.
pub struct AppCase {
    /// `--test` and the measurement's `test_name`; the blocking event's target.
    pub test: &'static str,
    /// Test keys that must hold these values: the censored part and the control.
    pub keys: &'static [(&'static str, &'static str)],
    /// Steps (`test_keys.steps`: step, target) that must have worked: controls the keys do not
    /// name.
    pub worked: &'static [(&'static str, &'static str)],
    /// The verdict's blocking type, and the timeline event's layer.
    pub blocking: &'static str,
    pub layer: &'static str,
}

/// Every app case of the lab.
pub const CASES: &[AppCase] = &[
    AppCase {
        test: "whatsapp",
        keys: &[
            ("whatsapp_endpoints_status", "\"blocked\""),
            ("whatsapp_endpoints_blocked", "[\"e1.whatsapp.net\"]"),
            // The control: the registration server and the web client are left alone.
            ("registration_server_status", "\"ok\""),
            ("whatsapp_web_status", "\"ok\""),
        ],
        worked: &[],
        blocking: "tcp_ip",
        layer: "tcp",
    },
    AppCase {
        test: "telegram",
        keys: &[
            ("telegram_tcp_blocking", "true"),
            // The control: the web client is left alone.
            ("telegram_web_status", "\"ok\""),
        ],
        worked: &[],
        blocking: "tcp_ip",
        layer: "tcp",
    },
    AppCase {
        test: "signal",
        keys: &[
            ("signal_backend_status", "\"blocked\""),
            ("signal_backend_failure", "\"connection_reset\""),
        ],
        // The control: the service the router leaves alone, its chain checked against the pin.
        worked: &[
            ("tls_handshake", "45.67.1.26:443"),
            ("http", "https://storage.signal.lab/"),
        ],
        blocking: "tls",
        layer: "tls",
    },
    AppCase {
        test: "facebook_messenger",
        keys: &[
            ("facebook_dns_blocking", "true"),
            ("facebook_b_api_dns_consistent", "false"),
            // The control: the endpoint the resolver does not lie about, inside the netblock.
            ("facebook_b_graph_dns_consistent", "true"),
            ("facebook_b_graph_reachable", "true"),
        ],
        worked: &[],
        blocking: "dns",
        layer: "dns",
    },
];

/// The `vantage run --test APP` arguments after the common ones.
pub fn run_args(case: &AppCase, apps_file: &Path) -> Vec<String> {
    vec![
        "--test".into(),
        case.test.into(),
        "--apps-file".into(),
        apps_file.display().to_string(),
    ]
}

/// What differs between `case` and the probe's JSON line `v`: the verdict's test and blocking
/// type, the test keys, and the result's id (it was kept and signed for upload).
pub fn differs(case: &AppCase, v: &Value) -> Option<String> {
    let mut why = Vec::new();
    if v["test_name"] != case.test {
        why.push(format!("test_name {}", v["test_name"]));
    }
    if v["blocking"] != case.blocking {
        why.push(format!(
            "blocking {} (expected {:?}), rule {}",
            v["blocking"], case.blocking, v["rule"]
        ));
    }
    for (key, want) in case.keys {
        let got = &v["test_keys"][*key];
        if serde_json::from_str::<Value>(want).ok().as_ref() != Some(got) {
            why.push(format!("{key} {got} (expected {want})"));
        }
    }
    for (step, target) in case.worked {
        let ok = v["test_keys"]["steps"].as_array().is_some_and(|steps| {
            steps
                .iter()
                .any(|s| s["step"] == *step && s["target"] == *target && s["failure"].is_null())
        });
        if !ok {
            why.push(format!("no {step} to {target} that worked"));
        }
    }
    if !v["id"].is_string() {
        why.push(format!("no result id: {}", v["id"]));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The timeline: each app has one blocking event for AS64500 on its layer. Waits up to
/// `within` for the detector to make them.
pub fn check_timeline(
    timeline: &Timeline,
    dir: &Path,
    within: std::time::Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let of = |events: &[Value], test: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| {
                e["targets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == test))
            })
            .cloned()
            .collect()
    };
    let blocking = loop {
        let blocking = timeline.events("blocking")?;
        if CASES.iter().all(|c| !of(&blocking, c.test).is_empty()) || started.elapsed() > within {
            break blocking;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    for case in CASES {
        let events = of(&blocking, case.test);
        // The probes' results, uploaded: the event's evidence names them.
        let ids: Vec<String> = (1..=crate::topology::PROBES.len())
            .filter_map(|i| std::fs::read_to_string(dir.join(format!("{}{i}.out", case.test))).ok())
            .flat_map(|out| {
                out.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter_map(|v| v["id"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect();
        let failure = match events.as_slice() {
            [e] if e["layer"] == case.layer
                && e["entity"]["asn"] == "AS64500"
                && e["probes"].as_u64() == Some(crate::topology::PROBES.len() as u64)
                && ids.len() == crate::topology::PROBES.len()
                && ids.iter().all(|id| {
                    e["evidence"]
                        .as_array()
                        .is_some_and(|ev| ev.iter().any(|x| x == id.as_str()))
                }) =>
            {
                None
            }
            _ => Some(format!(
                "expected one event at layer {} in AS64500 from every probe, its evidence the \
                 probes' results {ids:?}; got {}",
                case.layer,
                serde_json::to_string(&events).unwrap_or_default()
            )),
        };
        report.check(
            format!("timeline: {} has a blocking event", case.test),
            failure,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apps_file_parses_and_facebooks_hosts_are_in_its_netblock() {
        let text = apps_file("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
        assert!(text.contains("access_points = [\"45.67.1.23\"]"), "{text}");
        assert!(text.contains("netblocks = [\"45.67.1.32/28\"]"), "{text}");
        let base = u32::from(addr(FACEBOOK_NET.0));
        let mask = u32::MAX << (32 - FACEBOOK_NET.1);
        for h in [FACEBOOK_API, FACEBOOK_GRAPH] {
            assert_eq!(u32::from(addr(h)) & mask, base, "{h}");
        }
    }

    #[test]
    fn app_addresses_are_not_the_web_sites_and_controls_get_no_rule() {
        let sites: Vec<Ipv4Addr> = crate::scenario::SITES.iter().map(|s| s.addr()).collect();
        for a in addrs() {
            assert!(!sites.contains(&a), "{a}");
        }
        let rules = router_rules().concat().join(" ");
        for control in [WHATSAPP_WEB, TELEGRAM_WEB, FACEBOOK_GRAPH] {
            assert!(!rules.contains(&addr(control).to_string()), "{control}");
        }
        assert!(rules.contains(SIGNAL_NAME));
    }

    #[test]
    fn a_verdict_is_compared_key_by_key() {
        let case = &CASES[1];
        let right = serde_json::json!({"test_name": "telegram", "blocking": "tcp_ip", "id": "x",
            "test_keys": {"telegram_tcp_blocking": true, "telegram_web_status": "ok"}});
        assert_eq!(differs(case, &right), None);
        let wrong = serde_json::json!({"test_name": "telegram", "blocking": null, "id": "x",
            "test_keys": {"telegram_tcp_blocking": false, "telegram_web_status": "ok"}});
        let why = differs(case, &wrong).expect("differs");
        assert!(why.contains("telegram_tcp_blocking false"), "{why}");
    }
}
