//! Upload routes (docs/carry.md, "Upload routes"): the ways a probe can reach an aggregator's
//! `POST /api/v1/measurements`, tried in order for each upload: the aggregator directly, the
//! same through a SOCKS5 proxy (Tor), a relay on the local network with another way out
//! (`vantage relay`, which serves the same API). The first that answers carries the upload.
//!
//! Every route speaks the same wire (`crate::wire`), so an answer means the same whichever
//! route gave it: a relay's `accepted` is "queued at the relay", and the relay answers for it
//! from then on. What moves an upload to the next route is a failure of the route itself (no
//! connection, a stall, HTTP 5xx or 429, an answer that is not the API's); a verdict about the
//! bytes (a line rejected) is the same on every route and does not.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use url::Url;

use crate::envelope::Identity;

/// The most routes an upload is tried by: more is a mistake rather than a plan, since each
/// failing one costs a timeout before the next is tried.
pub const MAX_ROUTES: usize = 8;

/// One way to the aggregator's upload API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Base URL (ending in `/`) of an aggregator or of a relay.
    pub url: Url,
    /// A SOCKS5 proxy to connect through (Tor's is 127.0.0.1:9050); the host name goes to it
    /// unresolved (`crate::engine::client`).
    pub socks5: Option<SocketAddr>,
}

/// Why a route given in a configuration or on the command line cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not a URL.
    #[error("{url:?} is not a URL: {reason}")]
    Url {
        /// What was given.
        url: String,
        /// The parser's reason.
        reason: String,
    },
    /// A URL this probe cannot upload to.
    #[error("{url:?} must be an http:// or https:// URL with a host")]
    Scheme {
        /// What was given.
        url: String,
    },
    /// A proxy that is not an address.
    #[error("proxy {proxy:?} is not an IP:PORT address (Tor's is 127.0.0.1:9050)")]
    Proxy {
        /// What was given.
        proxy: String,
    },
}

impl Route {
    /// Checks `url` (and `proxy`, `IP:PORT`) before any connection is made.
    pub fn parse(url: &str, proxy: Option<&str>) -> Result<Route, RouteError> {
        let mut parsed = Url::parse(url.trim()).map_err(|e| RouteError::Url {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(RouteError::Scheme {
                url: url.to_string(),
            });
        }
        if !parsed.path().ends_with('/') {
            let p = format!("{}/", parsed.path());
            parsed.set_path(&p);
        }
        let socks5 = proxy
            .map(|p| {
                p.trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| RouteError::Proxy {
                        proxy: p.to_string(),
                    })
            })
            .transpose()?;
        Ok(Route {
            url: parsed,
            socks5,
        })
    }

    /// A route as written on the command line: `URL`, or `URL via IP:PORT` through a SOCKS5
    /// proxy.
    pub fn parse_spec(spec: &str) -> Result<Route, RouteError> {
        match spec.split_once(" via ") {
            Some((url, proxy)) => Route::parse(url, Some(proxy)),
            None => Route::parse(spec, None),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.socks5 {
            Some(p) => write!(f, "{} through SOCKS5 {p}", self.url),
            None => write!(f, "{}", self.url),
        }
    }
}

/// The key that signs the relay header of relayed results' uploads (`crate::relay_proof`):
/// this probe's own.
#[derive(Clone)]
pub struct Relayer(pub Arc<Identity>);

impl fmt::Debug for Relayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Relayer({})", self.0.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Route {
        fn with_url(mut self, url: &str) -> Route {
            self.url = Url::parse(url).expect("url");
            self
        }
    }

    #[test]
    fn routes_are_checked_before_any_connection() {
        let r = Route::parse("https://agg.example/v", Some("127.0.0.1:9050")).expect("route");
        assert_eq!(r.url.as_str(), "https://agg.example/v/");
        assert_eq!(
            r.to_string(),
            "https://agg.example/v/ through SOCKS5 127.0.0.1:9050"
        );
        assert_eq!(
            Route::parse(" http://relay.lan:8787 ", None)
                .expect("relay")
                .to_string(),
            "http://relay.lan:8787/"
        );
        assert_eq!(
            Route::parse_spec("https://agg.example via 127.0.0.1:9050").expect("spec"),
            r.clone().with_url("https://agg.example/")
        );
        for (url, proxy, want) in [
            ("relay.lan:8787", None, "must be an http:// or https:// URL"),
            (
                "ftp://agg.example/",
                None,
                "must be an http:// or https:// URL",
            ),
            ("not a url", None, "is not a URL"),
            (
                "https://agg.example/",
                Some("localhost:9050"),
                "not an IP:PORT",
            ),
            (
                "https://agg.example/",
                Some("socks5h://127.0.0.1:9050"),
                "not an IP:PORT",
            ),
        ] {
            let err = Route::parse(url, proxy).expect_err(url).to_string();
            assert!(err.contains(want), "{url} {proxy:?}: {err}");
        }
    }
}
