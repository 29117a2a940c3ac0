//! Test lists from the aggregator (`GET /api/v1/test-lists/{cc}`): the signed document
//! checked against the pinned (or given, or first-seen over HTTPS) aggregator key and written
//! to the data directory (`vantage lists fetch`, README "Measuring a list: `vantage run`").

use url::Url;

use crate::engine::{EngineConfig, TlsContext, Trace, client};
use crate::ooni::CountryCode;
use crate::test_lists::{SignedListError, WriteError};

/// Test lists fetched from the aggregator and kept in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedLists {
    /// The aggregator key that signed them, now pinned in `aggregator.key`.
    pub key: String,
    /// How that key came to be trusted.
    pub trust: KeyTrust,
    /// Each list kept: name, URL rows, file written.
    pub files: Vec<(String, usize, std::path::PathBuf)>,
}

/// Why the key that signed fetched lists was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTrust {
    /// It is the key pinned by an earlier fetch.
    Pinned,
    /// The operator gave it (`--aggregator-key`, the daemon's `aggregator.key`); it is pinned
    /// now if it was not already.
    Given {
        /// Whether it replaced another pinned key or none.
        newly_pinned: bool,
    },
    /// Seen for the first time over HTTPS, trusted on first use and pinned.
    FirstUse,
}

/// Why fetched test lists were not kept. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed or the answer is not a document.
    #[error("cannot fetch {url}: {reason}")]
    Fetch {
        /// What was asked for.
        url: String,
        /// Why.
        reason: String,
    },
    /// No key is pinned or given, and the aggregator is reached over plain HTTP, where anyone
    /// on the way could answer with lists signed by a key of their own.
    #[error(
        "test lists refused: {url} is plain HTTP and no aggregator key is pinned, so the key \
         that signed them cannot be trusted on first use (anyone on the way could have signed \
         them). Pin the key the aggregator's operator publishes: `vantage lists fetch \
         --aggregator-key KEY ...` (daemon: `key = \"KEY\"` under [aggregator]), or use an \
         https:// aggregator URL"
    )]
    FirstUseOverHttp {
        /// The URL asked.
        url: String,
    },
    /// A key given or pinned is not a base64 Ed25519 public key.
    #[error("{what} {key:?} is not a base64 Ed25519 public key")]
    BadKey {
        /// Where it came from: the option, or the pin file.
        what: String,
        /// What it holds.
        key: String,
    },
    /// The document does not verify or its content is refused.
    #[error(transparent)]
    Refused(#[from] SignedListError),
    /// The lists could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The file in the data directory that pins the aggregator's list-signing key.
pub const PIN_FILE: &str = "aggregator.key";

/// Downloads a country's list and the global one (`GET /api/v1/test-lists/{cc}`), checks the
/// aggregator's signature against `key` (else the key pinned in `data_dir/aggregator.key`, else,
/// only over HTTPS, the key seen now, trusted on first use and pinned), and writes each list
/// to `data_dir/lists/<name>.csv`, where it replaces the built-in list. Over plain HTTP a first
/// use is refused: the answer may come from anyone on the way. Nothing is written unless the
/// whole document verifies and every list in it has a list name and parses; the files are
/// replaced through temporary files and renames ([`crate::test_lists::replace_files`]).
pub async fn fetch_lists(
    aggregator: &Url,
    cc: CountryCode,
    key: Option<&str>,
    data_dir: &std::path::Path,
    engine: &EngineConfig,
    tls: &TlsContext,
) -> Result<FetchedLists, FetchError> {
    let url = aggregator
        .join(&format!(
            "api/v1/test-lists/{}",
            cc.as_str().to_ascii_lowercase()
        ))
        .map_err(|e| FetchError::Fetch {
            url: aggregator.to_string(),
            reason: e.to_string(),
        })?;
    let fetch_error = |reason: String| FetchError::Fetch {
        url: url.to_string(),
        reason,
    };
    let given = key.map(str::trim);
    if let Some(given) = given
        && crate::envelope::parse_public_key(given).is_none()
    {
        return Err(FetchError::BadKey {
            what: "the aggregator key".into(),
            key: given.to_string(),
        });
    }
    let pin = data_dir.join(PIN_FILE);
    let pinned = match std::fs::read_to_string(&pin) {
        Ok(text) => {
            let text = text.trim().to_string();
            if crate::envelope::parse_public_key(&text).is_none() {
                return Err(FetchError::BadKey {
                    what: format!("the pinned key in {}", pin.display()),
                    key: text.chars().take(100).collect(),
                });
            }
            Some(text)
        }
        Err(_) => None,
    };
    if given.is_none() && pinned.is_none() && url.scheme() != "https" {
        // Refused before asking: nothing from this answer could be trusted.
        return Err(FetchError::FirstUseOverHttp {
            url: url.to_string(),
        });
    }
    let mut call = client::Call::get(&url, "application/json");
    call.timeout = engine.timeouts.http;
    call.body_cap = 16 << 20;
    let reply = client::send(call, engine, tls, &Trace::new())
        .await
        .map_err(|e| fetch_error(e.failure().to_string()))?;
    if reply.status != 200 {
        return Err(fetch_error(format!("HTTP {}", reply.status)));
    }
    let line =
        String::from_utf8(reply.body).map_err(|_| fetch_error("the answer is not UTF-8".into()))?;
    let (expected, trust) = match (given, pinned) {
        (Some(given), pinned) => (
            given.to_string(),
            KeyTrust::Given {
                newly_pinned: pinned.as_deref() != Some(given),
            },
        ),
        (None, Some(pinned)) => (pinned, KeyTrust::Pinned),
        (None, None) => {
            let seen = crate::envelope::verify(line.trim())
                .map_err(SignedListError::from)?
                .key;
            (seen, KeyTrust::FirstUse)
        }
    };
    let lists = crate::test_lists::SignedLists::verify(&line, &expected)?;
    if trust != KeyTrust::Pinned {
        crate::test_lists::replace_files(
            data_dir,
            &[(PIN_FILE.to_string(), format!("{expected}\n").as_bytes())],
        )?;
    }
    let named: Vec<(String, &[u8])> = lists
        .lists
        .iter()
        .map(|(name, text)| (format!("{name}.csv"), text.as_bytes()))
        .collect();
    let written = crate::test_lists::replace_files(&data_dir.join("lists"), &named)?;
    let files = lists
        .lists
        .iter()
        .zip(written)
        .map(|((name, text), file)| (name.clone(), text.lines().count().saturating_sub(1), file))
        .collect();
    Ok(FetchedLists {
        key: expected,
        trust,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_first_use_over_plain_http_is_refused_before_asking() {
        let data = std::env::temp_dir().join(format!("vantage-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        // Nothing listens on port 9 here; asking would fail differently.
        let url = Url::parse("http://127.0.0.1:9/").expect("url");
        let tls = TlsContext::new(Vec::new()).expect("tls");
        let engine = EngineConfig::default();
        let ir: CountryCode = "IR".parse().expect("cc");
        let err = fetch_lists(&url, ir, None, &data, &engine, &tls)
            .await
            .expect_err("first use over http");
        assert!(matches!(err, FetchError::FirstUseOverHttp { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("--aggregator-key KEY"), "{text}");
        assert!(
            text.contains("`key = \"KEY\"` under [aggregator]"),
            "{text}"
        );
        assert!(!data.exists(), "nothing written");
        // A key that is not one is refused as such, also when pinned.
        let err = fetch_lists(&url, ir, Some("not-a-key"), &data, &engine, &tls)
            .await
            .expect_err("bad key");
        assert_eq!(
            err.to_string(),
            "the aggregator key \"not-a-key\" is not a base64 Ed25519 public key"
        );
        std::fs::create_dir_all(&data).expect("dir");
        std::fs::write(data.join(PIN_FILE), "garbage\n").expect("pin");
        let err = fetch_lists(&url, ir, None, &data, &engine, &tls)
            .await
            .expect_err("bad pin");
        assert!(err.to_string().contains("the pinned key in"), "{err}");
        // With a valid pinned key the request is made (and fails here: nothing listens).
        let key = crate::envelope::Identity::generate()
            .expect("key")
            .public_key();
        std::fs::write(data.join(PIN_FILE), format!("{key}\n")).expect("pin");
        let err = fetch_lists(&url, ir, None, &data, &engine, &tls)
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, FetchError::Fetch { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&data);
    }
}
