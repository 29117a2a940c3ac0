//! Verdicts of OONI's app, circumvention and middlebox tests, read from their own `test_keys`
//! as OONI's pipeline reads them (`whatsapp`, `telegram`, `signal`, `facebook_messenger`, `tor`,
//! `vanilla_tor`, `dnscheck`, `stunreachability`, `http_header_field_manipulation`,
//! `http_invalid_request_line`, `urlgetter`).
//!
//! Interface first; the rules follow.

use serde::Serialize;
use serde_json::Value;

use crate::ooni::Blocking;

/// The version of these rules, stored with every verdict they make.
pub const RULE_SET: &str = "ooni-services-1";

/// The test names scored here.
pub const SERVICE_TESTS: &[&str] = &[
    "whatsapp",
    "telegram",
    "signal",
    "facebook_messenger",
    "tor",
    "vanilla_tor",
    "dnscheck",
    "stunreachability",
    "http_header_field_manipulation",
    "http_invalid_request_line",
    "urlgetter",
];

/// A verdict on one measurement of a service test.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceVerdict {
    /// The test name.
    pub test_name: String,
    /// What was measured, as the blocking detector names its target: the service (`whatsapp`,
    /// `telegram`, ...) or, for tests with an input, the input's host.
    pub target: String,
    /// `false`, a blocking type in web_connectivity's words (`dns`, `tcp_ip`, `tls`,
    /// `http-failure`, `http-diff`), or `None` when the measurement cannot tell.
    pub blocking: Option<Blocking>,
    /// Whether the service was reachable; `None` when unknown.
    pub accessible: Option<bool>,
    /// The id of the rule that decided.
    pub rule: String,
    /// [`RULE_SET`].
    pub rule_set: &'static str,
}

/// Scores a measurement of one of [`SERVICE_TESTS`]; `None` for any other test name.
pub fn score_service(
    _test_name: &str,
    _input: Option<&str>,
    _test_keys: &Value,
) -> Option<ServiceVerdict> {
    None
}
