//! The test helper's request (`POST /api/v1/th`): the bytes parsed into
//! `vantage_probe::ooni::ControlRequest` as the server parses them, then every check the helper
//! makes before it touches the network (`vantage_probe::th::plan_for`). Nothing here opens a
//! socket: `plan_for` only validates, and `answer`, which measures, is never called.
//!
//! Invariants: never a panic; a request listing more than `MAX_TCP_CONNECT` endpoints is
//! refused; a planned request measures an http or https URL with a host; every probe endpoint
//! kept is one the request listed, parsed as `IP:port`, once.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vantage_probe::ooni::ControlRequest;
use vantage_probe::th::{HelperConfig, MAX_TCP_CONNECT, plan_for};

fn config() -> &'static HelperConfig {
    static CONFIG: OnceLock<HelperConfig> = OnceLock::new();
    CONFIG.get_or_init(HelperConfig::default)
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ControlRequest>(data) else {
        return;
    };
    let listed = request.tcp_connect.as_deref().unwrap_or_default();
    let Ok((plan, endpoints)) = plan_for(&request, config()) else {
        return;
    };
    assert!(
        listed.len() <= MAX_TCP_CONNECT,
        "planned {} endpoints",
        listed.len()
    );
    let url = plan.url();
    assert!(matches!(url.scheme(), "http" | "https"), "planned {url}");
    assert!(url.host().is_some(), "planned {url} without a host");
    assert!(
        endpoints.len() <= listed.len(),
        "more endpoints than listed"
    );
    for (i, e) in endpoints.iter().enumerate() {
        assert!(!endpoints[..i].contains(e), "endpoint {e} kept twice");
        assert!(
            listed
                .iter()
                .any(|l| l.parse::<SocketAddr>().ok() == Some(*e)),
            "endpoint {e} was not in the request"
        );
    }
});
