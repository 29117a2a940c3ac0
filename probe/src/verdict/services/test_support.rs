//! Helpers shared by the unit tests of every family: build `test_keys` entries and read a
//! verdict as it is stored.

use serde_json::{Value, json};

use super::{ServiceVerdict, score_service};
use crate::ooni::Blocking;

/// `(blocking, accessible)` as stored: `"false"`, a layer, or `"null"`.
pub(super) fn short(v: &ServiceVerdict) -> (String, Option<bool>) {
    let b = match &v.blocking {
        None => "null".to_string(),
        Some(Blocking::Flag(f)) => f.to_string(),
        Some(Blocking::Kind(k)) => k.clone(),
    };
    (b, v.accessible)
}

pub(super) fn dbg(v: &ServiceVerdict) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub(super) fn layer(test: &str, input: Option<&str>, tk: Value) -> String {
    let v = score_service(test, input, &tk).expect("scored");
    short(&v).0
}

pub(super) fn connect(ip: &str, port: u16, failure: Option<&str>) -> Value {
    json!({"ip": ip, "port": port, "status": {"success": failure.is_none(), "failure": failure}})
}

pub(super) fn query(host: &str, ips: &[&str], failure: Option<&str>) -> Value {
    let answers: Vec<Value> = ips.iter().map(|ip| json!({"ipv4": ip})).collect();
    json!({"hostname": host, "failure": failure, "answers": answers})
}

pub(super) fn request(url: &str, failure: Option<&str>) -> Value {
    json!({"request": {"url": url}, "failure": failure, "response": {"code": 200}})
}

pub(super) fn whatsapp_keys(
    web: Option<&str>,
    register: Option<&str>,
    endpoints_ok: bool,
) -> Value {
    json!({
        "queries": [query("e1.whatsapp.net", &["157.240.1.53"], None),
                    query("web.whatsapp.com", &["157.240.1.60"], None),
                    query("v.whatsapp.net", &["157.240.1.61"], None)],
        "tcp_connect": [connect("157.240.1.53", 5222, (!endpoints_ok).then_some("generic_timeout_error")),
                        connect("157.240.1.53", 443, (!endpoints_ok).then_some("generic_timeout_error")),
                        connect("157.240.1.60", 443, None),
                        connect("157.240.1.61", 443, None)],
        "tls_handshakes": [{"server_name": "web.whatsapp.com", "failure": web.filter(|f| f.starts_with("ssl_") || *f == "connection_reset")},
                           {"server_name": "v.whatsapp.net", "failure": null}],
        "requests": [request("https://web.whatsapp.com/", web),
                     request("https://v.whatsapp.net/v2/register", register)],
    })
}
