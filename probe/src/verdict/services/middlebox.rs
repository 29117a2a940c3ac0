//! The middlebox tests: http_header_field_manipulation (OONI spec ts-006) and
//! http_invalid_request_line (ts-007), where OONI's helper echoes what it received and any
//! difference from what was sent is tampering on the path (`http-diff`).

use serde_json::Value;

use super::{Layer, Outcome, arr};

/// http_header_field_manipulation (OONI spec ts-006), as OONI's fastpath scores it: the test
/// helper echoes the headers it received in a JSON body (`headers_dict`); any difference from
/// the headers sent (apart from `Connection: close`), no body, or a body that is not that JSON
/// is a middlebox's tampering (`http-diff`). No request or no response: unknown.
pub(super) fn header_field_manipulation(tk: &Value) -> Outcome {
    let Some(first) = arr(tk, "requests").next() else {
        return Outcome::Unknown("no request".into());
    };
    let Some(response) = first.get("response").filter(|r| r.is_object()) else {
        return Outcome::Unknown("no response".into());
    };
    let Some(body) = body_text(response.get("body")) else {
        return Outcome::Blocked(Layer::HttpDiff, "the response has no body".into());
    };
    let echoed = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v.get("headers_dict").and_then(Value::as_object).cloned());
    let Some(echoed) = echoed else {
        return Outcome::Blocked(
            Layer::HttpDiff,
            "the response is not the helper's echo".into(),
        );
    };
    let mut received: Vec<(String, String)> = echoed
        .iter()
        .filter_map(|(k, v)| first_value(v).map(|v| (k.clone(), v)))
        .collect();
    let mut sent = header_pairs(first.get("request").and_then(|r| r.get("headers")));
    for list in [&mut received, &mut sent] {
        list.retain(|(k, v)| !(k == "Connection" && v == "close"));
        list.sort();
        list.dedup();
    }
    if received == sent {
        Outcome::Ok(format!("{} headers echoed unchanged", sent.len()))
    } else {
        let changed = received
            .iter()
            .filter(|h| !sent.contains(h))
            .chain(sent.iter().filter(|h| !received.contains(h)))
            .count();
        Outcome::Blocked(Layer::HttpDiff, format!("{changed} header changes"))
    }
}

/// A header value: a string, or the first of a list (`headers_dict` and legacy lists).
fn first_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The request's headers as pairs: a map (the Go engine), or a list of `[name, value]` or
/// `[name, [values]]` (ooniprobe 1.x and measurement-kit; OONI spec df-001-httpt).
fn header_pairs(headers: Option<&Value>) -> Vec<(String, String)> {
    match headers {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| first_value(v).map(|v| (k.clone(), v)))
            .collect(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|pair| {
                let name = pair.get(0).and_then(Value::as_str)?;
                Some((name.to_string(), first_value(pair.get(1)?)?))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A body as text: a string, or `{"format": "base64", "data": ...}` (OONI spec df-001-httpt,
/// "MaybeBinaryData").
fn body_text(body: Option<&Value>) -> Option<String> {
    use base64::Engine as _;
    match body? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) if o.get("format").and_then(Value::as_str) == Some("base64") => {
            let data = o.get("data").and_then(Value::as_str)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

/// http_invalid_request_line (OONI spec ts-007), as OONI's fastpath scores it: the helper
/// echoes each request line; any line received that is not the one sent is tampering. The
/// probe's `tampering` key is not read (OONI's fastpath ignores it too: a probe bug set it
/// wrongly). Nothing sent and nothing received: unknown.
pub(super) fn invalid_request_line(tk: &Value) -> Outcome {
    let sent: Vec<&Value> = arr(tk, "sent").collect();
    let received: Vec<&Value> = arr(tk, "received").collect();
    if sent.is_empty() && received.is_empty() {
        return Outcome::Unknown("nothing sent or received".into());
    }
    let changed = sent
        .iter()
        .zip(received.iter())
        .filter(|(s, r)| s != r)
        .count();
    if changed > 0 {
        Outcome::Blocked(
            Layer::HttpDiff,
            format!(
                "{changed} of {} request lines came back changed",
                sent.len()
            ),
        )
    } else {
        Outcome::Ok(format!("{} request lines echoed unchanged", sent.len()))
    }
}

#[cfg(test)]
mod tests {
    use crate::verdict::services::test_support::layer;
    use serde_json::{Value, json};

    #[test]
    fn middleboxes_tampering_with_headers_and_request_lines() {
        let hhfm = |body: Value, sent: Value| json!({"requests": [{"request": {"headers": sent}, "response": {"body": body, "code": 200}}]});
        let sent = json!({"AccEpT": "text/html", "hoSt": "abc.com"});
        let echo = json!(
            r#"{"headers_dict": {"AccEpT": ["text/html"], "hoSt": ["abc.com"], "Connection": ["close"]}}"#
        );
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(echo, sent.clone())
            ),
            "false"
        );
        // A proxy normalised the capitalisation.
        let lowered = json!(r#"{"headers_dict": {"accept": ["text/html"], "host": ["abc.com"]}}"#);
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(lowered, sent.clone())
            ),
            "http-diff"
        );
        // A block page instead of the echo, and no body.
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(json!("<html>blocked</html>"), sent.clone())
            ),
            "http-diff"
        );
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(Value::Null, sent.clone())
            ),
            "http-diff"
        );
        // The body as base64, and the headers as ooniprobe 1.x's list of [name, [value]].
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(r#"{"headers_dict": {"AccEpT": ["text/html"], "hoSt": ["abc.com"]}}"#);
        let legacy = json!([["AccEpT", ["text/html"]], ["hoSt", ["abc.com"]]]);
        assert_eq!(
            layer(
                "http_header_field_manipulation",
                None,
                hhfm(json!({"format": "base64", "data": b64}), legacy)
            ),
            "false"
        );
        // The helper never answered: nothing to compare.
        let tk = json!({"failure": "generic_timeout_error", "requests": [{"request": {"headers": sent}, "response": null}]});
        assert_eq!(layer("http_header_field_manipulation", None, tk), "null");

        let lines = json!({"sent": ["GET / HTTP/1.1\r\n", "XXX / HTTP/1.1\r\n"],
                           "received": ["GET / HTTP/1.1\r\n", "XXX / HTTP/1.1\r\n"], "tampering": true});
        // The probe's `tampering` flag is not read: the lines are.
        assert_eq!(layer("http_invalid_request_line", None, lines), "false");
        let lines = json!({"sent": ["GET / HTTP/1.1\r\n", "XXX / HTTP/1.1\r\n"],
                           "received": ["GET / HTTP/1.1\r\n", "HTTP/1.1 400 Bad Request\r\n"]});
        assert_eq!(layer("http_invalid_request_line", None, lines), "http-diff");
    }
}
